"""The timed kernel itself: the grouped expert FFN computes what a per-expert FFN computes."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from vibe_plan.artifacts.gpu_profile import ExpertShape  # noqa: E402
from vibe_plan.errors import VibeError  # noqa: E402
from vibe_plan.gpus.bench import ExpertBench, Timer, memory_needed  # noqa: E402
from vibe_plan.gpus.worker import BenchSpec, measure_device  # noqa: E402

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a busy 2-core machine a 2-thread GEMM stalls when a core is taken."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def reference_ffn(bench: ExpertBench, counts: list[int], copy: int) -> torch.Tensor:
    """SwiGLU expert FFN written out per token block, in float64."""
    i = bench.shape.intermediate
    outs, start = [], 0
    for e, n in enumerate(counts):
        x = bench.x[start : start + n].double()
        up = x @ bench.w_up[copy][e].double().T
        act = torch.nn.functional.silu(up[:, :i]) * up[:, i:]
        outs.append(act @ bench.w_down[copy][e].double().T)
        start += n
    return torch.cat(outs)


@pytest.mark.parametrize("backend", ["auto", "loop"])
def test_grouped_ffn_matches_per_expert_reference(backend):
    shape = ExpertShape(hidden=64, intermediate=32, dtype="float32", gated=True)
    bench = ExpertBench(CPU, shape, experts=4, max_total_tokens=64, backend=backend, seed=1)
    if backend == "loop":
        assert bench.backend == "loop"
    else:  # torch 2.9+ runs grouped_mm on the CPU too
        assert bench.backend in ("grouped_mm", "loop")
    counts = [5, 0, 17, 3]  # jagged, with an expert that got no tokens
    for copy in (0, bench.copies - 1):
        got = bench.run(counts, copy=copy).double()
        want = reference_ffn(bench, counts, copy)
        assert got.shape == (25, 64)
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)


def test_weight_copies_defeat_the_cache_and_rotate():
    shape = ExpertShape(hidden=64, intermediate=128, dtype="bfloat16")
    bench = ExpertBench(CPU, shape, experts=2, max_total_tokens=16)
    assert bench.copies > 1  # tiny weights: cycle through several copies per sample
    assert not torch.equal(bench.w_up[0], bench.w_up[1])
    seen = []
    for _ in range(bench.copies + 1):
        seen.append(bench._next_copy)
        bench.run([1, 1])
    assert seen[: bench.copies] == list(range(bench.copies)) and seen[-1] == 0
    big = ExpertShape(hidden=7168, intermediate=2048, dtype="bfloat16")
    assert memory_needed(big, 32, 1, 32 * 8192) > memory_needed(big, 32, 1, 32 * 64) > 2**30


def test_bad_backend_is_a_clear_error():
    shape = ExpertShape(hidden=16, intermediate=16, dtype="float32")
    with pytest.raises(VibeError, match="--backend"):
        ExpertBench(CPU, shape, experts=2, max_total_tokens=8, backend="cutlass")


def test_cpu_timer_and_measure_device_on_a_tiny_shape():
    timer = Timer(CPU)
    timer.sample(lambda: sum(range(1000)))
    timer.sample(lambda: None)
    assert len(times := timer.collect()) == 2 and all(t > 0 for t in times)
    spec = BenchSpec(
        shape=ExpertShape(hidden=64, intermediate=128, dtype="float32"),
        experts=2,
        tokens=[1, 32],
        repeats=3,
        warmup_s=0.0,
        vectors=[[0, 5], [7, 3]],
    )
    calls = []
    r = measure_device(spec, "cpu", on_progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert r.tokens == [1, 32] and len(r.median_us) == 2 and len(r.vector_us) == 2
    for lo, mid, hi in zip(r.p10_us, r.median_us, r.p90_us, strict=True):
        assert 0 < lo <= mid <= hi
    assert r.name.startswith("CPU: ") and r.uuid is None
