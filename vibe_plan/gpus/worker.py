"""Measure one device: build the bench, warm up, time every workload in shuffled rounds.

Used unchanged by the single-process run, the one-process-per-GPU run and every torchrun rank.
"""

from __future__ import annotations

import random
import socket
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vibe_plan.artifacts.gpu_profile import ExpertShape
from vibe_plan.errors import VibeError

Sync = Callable[[str | None], None]  # report own error (or None); raises PeerFailed on any error
Progress = Callable[[int, int], None]


@dataclass
class BenchSpec:
    """Everything a worker needs; picklable, so it can cross process and node boundaries."""

    shape: ExpertShape
    experts: int
    tokens: list[int]
    repeats: int
    warmup_s: float
    backend: str = "auto"
    vectors: list[list[int]] = field(default_factory=list)  # jagged workloads for --validate
    seed: int = 0
    threads: int | None = None  # CPU only: torch threads in this process
    verbose: bool = False  # let torch's warnings through (else they are silenced)


@dataclass
class DeviceResult:
    rank: int
    device: str
    host: str
    name: str
    uuid: str | None
    telemetry: dict[str, Any] | None
    backend: str
    weight_copies: int
    tokens: list[int]
    median_us: list[float]  # per-expert share of the K-expert grouped call
    p10_us: list[float]
    p90_us: list[float]
    vector_us: list[float]  # median time of the whole grouped call per validation vector


class PeerFailed(Exception):
    """Some process failed at a sync point; `messages` are the failures known here."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("; ".join(messages) or "another process failed")
        self.messages = messages


def describe_failure(e: BaseException, device: str) -> str:
    import torch

    from vibe_plan.gpus.bench import first_line

    if isinstance(e, VibeError):
        return f"{device}: {e}"
    if isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower():
        return (
            f"{device}: ran out of memory; lower --experts-per-gpu or the largest --tokens, "
            "or free the GPU"
        )
    return f"{device}: failed ({type(e).__name__}: {first_line(e)})"


def local_sync(err: str | None) -> None:
    if err:
        raise PeerFailed([err])


def _phase(fn: Callable[[], Any], device: str, sync: Sync) -> Any:
    """Run one step; every process then learns whether all succeeded before anyone goes on."""
    try:
        value, err = fn(), None
    except Exception as e:  # any device failure must reach the sync, or peers wait forever
        value, err = None, describe_failure(e, device)
    sync(err)
    return value


def _prepare(spec: BenchSpec, device_str: str):
    import torch

    from vibe_plan.gpus.bench import ExpertBench, memory_needed

    device = torch.device(device_str)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        if spec.shape.dtype == "bfloat16" and torch.cuda.get_device_capability(device) < (8, 0):
            major, minor = torch.cuda.get_device_capability(device)
            raise VibeError(
                f"bfloat16 needs compute capability 8.0+, this GPU is {major}.{minor}; "
                "use --dtype float16"
            )
        free, _ = torch.cuda.mem_get_info(device)
        need = memory_needed(spec.shape, spec.experts, 1, _max_total(spec))
        if need > free:
            raise VibeError(
                f"needs about {need / 2**30:.1f} GiB but {free / 2**30:.1f} GiB is free; "
                "lower --experts-per-gpu or the largest --tokens"
            )
    elif spec.threads:
        torch.set_num_threads(spec.threads)
    return ExpertBench(device, spec.shape, spec.experts, _max_total(spec), spec.backend, spec.seed)


def _max_total(spec: BenchSpec) -> int:
    uniform = spec.experts * max(spec.tokens)
    return max([uniform] + [sum(v) for v in spec.vectors])


def _identity(device_str: str, threads: int | None) -> tuple[str, str | None, str | None]:
    """(name, UUID, PCI bus id) of the device; a CPU has neither UUID nor bus id."""
    import torch

    from vibe_plan.gpus.telemetry import cpu_name, cuda_pci_bus_id, cuda_uuid

    device = torch.device(device_str)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.cuda.get_device_name(index), cuda_uuid(index), cuda_pci_bus_id(index)
    return cpu_name(threads or torch.get_num_threads()), None, None


def measure_device(
    spec: BenchSpec,
    device_str: str,
    rank: int = 0,
    sync: Sync = local_sync,
    on_progress: Progress | None = None,
) -> DeviceResult:
    """Profile one device; `sync` is where concurrent processes wait for each other."""
    import torch

    from vibe_plan.gpus.bench import Timer, heat_soak
    from vibe_plan.gpus.telemetry import TelemetrySampler

    def prepare():  # everything that can fail before the timed part, so peers learn of it
        bench = _prepare(spec, device_str)
        return bench, Timer(bench.device), *_identity(device_str, spec.threads)

    bench, timer, name, uuid, pci_bus_id = _phase(prepare, device_str, sync)
    workloads = [[n] * spec.experts for n in spec.tokens] + [list(v) for v in spec.vectors]
    heaviest = max(workloads, key=sum)

    def one_sample(counts: list[int]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(bench.copies):  # each call reads a different weight copy
                bench.run(counts)

        return run

    def warm() -> float:
        for counts in workloads:  # first calls pay for kernel selection and allocation
            one_sample(counts)()
        timer.calibrate(one_sample(heaviest))
        t0 = time.perf_counter()
        heat_soak(bench, heaviest, spec.warmup_s)
        return time.perf_counter() - t0

    soak_s = _phase(warm, device_str, sync)
    # No sync after this point: a failure from here on travels in the final gather.
    sampler = TelemetrySampler(uuid, pci_bus_id)
    samples: list[list[float]] = [[] for _ in workloads]
    rng = random.Random(spec.seed + rank)
    sampler.start()
    try:
        for r in range(spec.repeats):
            # Shuffled rounds spread slow drift (clocks, heat) over all points instead of one.
            order = list(range(len(workloads)))
            rng.shuffle(order)
            for w in order:
                timer.sample(one_sample(workloads[w]))
            for w, us in zip(order, timer.collect(), strict=True):
                samples[w].append(us / bench.copies)
            if on_progress:
                on_progress(r + 1, spec.repeats)
    finally:
        telemetry = sampler.stop()
    if bench.device.type == "cpu":
        telemetry = {"torch_threads": torch.get_num_threads()}
    elif telemetry is None:  # say why it is missing rather than leave the reader guessing
        telemetry = {"nvml": "unavailable (no driver library or device not found by UUID)"}
    if pci_bus_id:
        telemetry["pci_bus_id"] = pci_bus_id
    telemetry["heat_soak_s"] = round(soak_s, 1)
    k = len(spec.tokens)
    per_expert = [[us / spec.experts for us in s] for s in samples[:k]]
    return DeviceResult(
        rank=rank,
        device=device_str,
        host=socket.gethostname(),
        name=name,
        uuid=uuid,
        telemetry=telemetry,
        backend=bench.backend,
        weight_copies=bench.copies,
        tokens=list(spec.tokens),
        median_us=[statistics.median(s) for s in per_expert],
        p10_us=[quantile(s, 0.1) for s in per_expert],
        p90_us=[quantile(s, 0.9) for s in per_expert],
        vector_us=[statistics.median(s) for s in samples[k:]],
    )


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default), without needing numpy here."""
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def safe_measure(
    spec: BenchSpec,
    device_str: str,
    rank: int,
    sync: Sync,
    on_progress: Progress | None = None,
) -> DeviceResult | list[str]:
    """The result, or the failure messages known to this process (empty: a peer failed)."""
    try:
        with warnings.catch_warnings():
            if not spec.verbose:  # torch's UserWarnings say nothing the user can act on
                warnings.simplefilter("ignore")
            return measure_device(spec, device_str, rank, sync, on_progress)
    except PeerFailed as e:
        return e.messages
    except Exception as e:  # reported by whoever gathers, as one clear line
        return [describe_failure(e, device_str)]
