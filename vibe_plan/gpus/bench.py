"""Time one device's routed-expert FFN (gate/up GEMM, activation, down GEMM) over K experts at once.

The grouped GEMM is torch's `grouped_mm` where the torch build and device support it, else a loop of
per-expert matmuls; both compute the same thing and the choice is recorded in the profile.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from vibe_plan.artifacts.gpu_profile import ExpertShape
from vibe_plan.errors import VibeError
from vibe_plan.gpus.options import BACKENDS

CPU_FLUSH_BYTES = 64 << 20  # larger than the last-level cache slice a core sees on current servers
MAX_WEIGHT_COPIES = 16


def grouped_mm_fn() -> Callable | None:
    """The public op (torch 2.10+) or the private one it wraps (2.8+); None on older torch."""
    return getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)


class ExpertBench:
    """K experts' weights (with rotating copies to defeat the cache) and one input buffer."""

    def __init__(
        self,
        device: torch.device,
        shape: ExpertShape,
        experts: int,
        max_total_tokens: int,
        backend: str = "auto",
        seed: int = 0,
    ) -> None:
        self.device = device
        self.shape = shape
        self.experts = experts
        self.dtype = getattr(torch, shape.dtype)
        h, i = shape.hidden, shape.intermediate
        self.up_width = 2 * i if shape.gated else i  # gate and up fused in one GEMM, as engines do
        weight_bytes = experts * (self.up_width + i) * h * self.dtype.itemsize
        self.copies = max(1, min(MAX_WEIGHT_COPIES, math.ceil(flush_bytes(device) / weight_bytes)))
        gen = torch.Generator(device=device).manual_seed(seed)
        # Random weights: the speed of a dense GEMM does not depend on the values.
        self.w_up = [self._randn((experts, self.up_width, h), gen) for _ in range(self.copies)]
        self.w_down = [self._randn((experts, h, i), gen) for _ in range(self.copies)]
        # Room for the largest workload and for the backend trial, whatever --tokens and -k are.
        self.trial = trial_counts(experts)
        rows = max(1, max_total_tokens, sum(self.trial))
        self.x = self._randn((rows, h), gen, scale=1.0)
        self._offs: dict[tuple[int, ...], torch.Tensor] = {}
        self._next_copy = 0
        self.backend = self._pick_backend(backend)

    def _randn(self, size: tuple[int, ...], gen: torch.Generator, scale: float = 0.02):
        t = torch.empty(size, dtype=self.dtype, device=self.device)
        return t.normal_(0.0, scale, generator=gen)

    def _activation(self, h: torch.Tensor) -> torch.Tensor:
        if self.shape.gated:
            i = self.shape.intermediate
            return F.silu(h[:, :i]) * h[:, i:]
        return F.gelu(h)

    def rows_for(self, counts: Sequence[int]) -> int:
        """Input rows a call with `counts` reads; more than the buffer holds is refused, since a
        grouped GEMM would read past the buffer's end (slicing would silently clamp instead)."""
        total = sum(counts)
        if len(counts) != self.experts or min(counts, default=0) < 0 or total > len(self.x):
            raise ValueError(
                f"token counts {list(counts)[:8]} (sum {total}) do not fit the bench: "
                f"{self.experts} experts, {len(self.x)} input rows"
            )
        return total

    def _grouped(self, counts: Sequence[int], copy: int) -> torch.Tensor:
        x = self.x[: self.rows_for(counts)]
        offs = self._offs.get(tuple(counts))
        if offs is None:
            ends = torch.tensor(counts, dtype=torch.int64).cumsum(0).to(torch.int32)
            offs = self._offs.setdefault(tuple(counts), ends.to(self.device))
        mm = grouped_mm_fn()
        assert mm is not None
        h = mm(x, self.w_up[copy].transpose(1, 2), offs=offs)
        return mm(self._activation(h), self.w_down[copy].transpose(1, 2), offs=offs)

    def _loop(self, counts: Sequence[int], copy: int) -> torch.Tensor:
        total = self.rows_for(counts)
        out = torch.empty((total, self.shape.hidden), dtype=self.dtype, device=self.device)
        start = 0
        for e, n in enumerate(counts):
            if n == 0:
                continue  # an expert with no tokens reads no weights, as in grouped kernels
            h = torch.mm(self.x[start : start + n], self.w_up[copy][e].t())
            torch.mm(self._activation(h), self.w_down[copy][e].t(), out=out[start : start + n])
            start += n
        return out

    def run(self, counts: Sequence[int], copy: int | None = None) -> torch.Tensor:
        """One grouped expert FFN call; `counts[e]` tokens go to local expert e."""
        if copy is None:
            copy = self._next_copy
            self._next_copy = (copy + 1) % self.copies
        if self.backend == "grouped_mm":
            return self._grouped(counts, copy)
        return self._loop(counts, copy)

    def _pick_backend(self, requested: str) -> str:
        if requested not in BACKENDS:
            raise VibeError(f"--backend {requested!r}: use one of {', '.join(BACKENDS)}")
        # A trial on this device and dtype: also the check that the dtype is usable here at all.
        counts = self.trial
        try:
            reference = self._loop(counts, 0).float()
        except (RuntimeError, NotImplementedError) as e:
            raise VibeError(
                f"dtype {self.shape.dtype} does not run on {self.device} with torch "
                f"{torch.__version__} ({first_line(e)}); choose another --dtype"
            ) from None
        if requested == "loop":
            return "loop"
        problem = None
        if grouped_mm_fn() is None:
            problem = f"torch {torch.__version__} has no grouped_mm"
        else:
            try:
                got = self._grouped(counts, 0).float()
                err = (got - reference).abs().max().item()
                tol = 0.05 * max(1e-3, reference.abs().max().item())
                if not err <= tol:
                    problem = f"grouped_mm disagrees with per-expert matmuls (max error {err:.3g})"
            except (RuntimeError, NotImplementedError) as e:
                problem = f"grouped_mm unsupported here ({first_line(e)})"
        if problem is None:
            return "grouped_mm"
        if requested == "grouped_mm":
            raise VibeError(f"--backend grouped_mm on {self.device}: {problem}; use --backend auto")
        return "loop"


def trial_counts(experts: int) -> list[int]:
    """Tokens per expert in the backend trial: uneven, some experts empty (a grouped kernel must
    skip them), at least one token in all; at most 8 per expert, so the buffer grows little."""
    counts = [min(3 + e, 8) if e % 3 else 0 for e in range(experts)]
    counts[-1] = max(counts[-1], 1)
    return counts


def flush_bytes(device: torch.device) -> int:
    """Bytes of weights to cycle through so each call streams them from memory, not from cache."""
    if device.type == "cuda":
        # 4x L2: streaming that much through an LRU-like cache leaves nothing of it for the next
        # call, as in serving, where other layers' weights pass through L2 between MoE layers.
        l2 = int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50 << 20))
        return 4 * l2
    return CPU_FLUSH_BYTES


def memory_needed(shape: ExpertShape, experts: int, copies: int, max_total_tokens: int) -> int:
    size = getattr(torch, shape.dtype).itemsize
    h, i = shape.hidden, shape.intermediate
    up = 2 * i if shape.gated else i
    weights = copies * experts * (up + i) * h
    rows = max(max_total_tokens, sum(trial_counts(experts)))
    acts = rows * (2 * h + up + i)  # input, output, up projection, activation
    return int(1.2 * size * (weights + acts))


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


class Timer:
    """Per-sample device time: CUDA events on a GPU, perf_counter on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._cpu_us: list[float] = []
        self.spin_cycles = 0
        self.cycles_per_us = 0.0
        if self.cuda:
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            torch.cuda._sleep(1_000_000)
            e.record()
            e.synchronize()
            self.cycles_per_us = 1e6 / max(1e-3, s.elapsed_time(e) * 1000.0)

    def calibrate(self, fn: Callable[[], object]) -> None:
        """Time the CPU-side enqueue of one sample, to size the GPU spin that runs ahead of it."""
        if not self.cuda:
            return
        worst = 0.0
        for _ in range(3):
            torch.cuda.synchronize(self.device)
            t0 = time.perf_counter()
            fn()
            worst = max(worst, (time.perf_counter() - t0) * 1e6)
        torch.cuda.synchronize(self.device)
        spin_us = min(20_000.0, 2.0 * worst + 20.0)
        self.spin_cycles = int(spin_us * self.cycles_per_us)

    def sample(self, fn: Callable[[], object]) -> None:
        if not self.cuda:
            t0 = time.perf_counter()
            fn()
            self._cpu_us.append((time.perf_counter() - t0) * 1e6)
            return
        # The spin keeps the GPU busy while the CPU enqueues the sample, so the events time
        # kernels back to back, not the Python launch overhead between them.
        torch.cuda._sleep(self.spin_cycles)
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        self._events.append((s, e))

    def collect(self) -> list[float]:
        """Microseconds of every sample since the last collect, in order."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            out = [s.elapsed_time(e) * 1000.0 for s, e in self._events]
            self._events = []
            return out
        out, self._cpu_us = self._cpu_us, []
        return out


def heat_soak(bench: ExpertBench, counts: Sequence[int], seconds: float) -> int:
    """Run the heaviest workload for `seconds` so clocks and temperature settle; returns calls."""
    calls = 0
    deadline = time.perf_counter() + seconds
    while True:
        for _ in range(4 * bench.copies):
            bench.run(counts)
            calls += 1
        if bench.device.type == "cuda":
            torch.cuda.synchronize(bench.device)
        if time.perf_counter() >= deadline:
            return calls
