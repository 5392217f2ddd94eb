"""profile-gpus at the smallest sizes (`--tokens 1 -k 2` and the like): the backend trial reads
only rows its input buffer holds (a grouped GEMM past the buffer's end would read out of bounds
on a GPU), the choice of backend does not depend on the sweep's size, and output paths are
checked before anything is measured."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from gpu_inputs import TINY, one_thread  # noqa: E402, F401 (an autouse fixture)

from vibe_plan.artifacts.gpu_profile import ExpertShape, load_gpu_profile  # noqa: E402
from vibe_plan.errors import VibeError  # noqa: E402
from vibe_plan.gpus.bench import ExpertBench, memory_needed, trial_counts  # noqa: E402
from vibe_plan.gpus.measure import run_profile  # noqa: E402
from vibe_plan.gpus.sweep import ProfileRequest  # noqa: E402

CPU = torch.device("cpu")
SHAPE = ExpertShape(16, 32, "float32", True)
FAST = ["--device", "cpu", "--warmup-s", "0", "--repeats", "1", "--quiet"]


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(TINY))
    return path


@pytest.mark.parametrize("tokens", [1, 2, 3])
def test_trial_fits_the_input_buffer_for_every_k(tokens):
    for k in range(1, 41):
        bench = ExpertBench(CPU, SHAPE, k, k * tokens, seed=k)
        assert len(bench.trial) == k
        assert 1 <= sum(bench.trial) <= len(bench.x), (k, tokens)
        assert bench.rows_for(bench.trial) == sum(bench.trial)
        if k >= 2:
            assert 0 in bench.trial and max(bench.trial) > 1  # uneven, with empty experts
        out = bench.run([tokens] * k)  # the sweep's own workload still fits
        assert out.shape == (k * tokens, SHAPE.hidden)


def test_small_sweeps_pick_the_backend_a_large_one_picks():
    """The trial no longer depends on --tokens: before, `-k 2 --tokens 1` made a 2-row buffer
    for a 4-row trial, which failed on the CPU (and read out of bounds on a GPU)."""
    for k in (1, 2, 3, 7):
        small = ExpertBench(CPU, SHAPE, k, k)
        large = ExpertBench(CPU, SHAPE, k, 64 * k)
        assert small.backend == large.backend


@pytest.mark.parametrize("backend", ["loop", "grouped_mm"])
def test_counts_beyond_the_buffer_are_refused(backend):
    bench = ExpertBench(CPU, SHAPE, 2, 2, backend="loop")
    bench.backend = backend  # exercise each path's own check, whatever the trial chose
    rows = len(bench.x)
    with pytest.raises(ValueError, match="do not fit the bench"):
        bench.run([rows, 1])
    with pytest.raises(ValueError, match="do not fit the bench"):
        bench.run([1, 1, 1])  # three experts on a two-expert bench
    with pytest.raises(ValueError, match="do not fit the bench"):
        bench.run([-1, 2])


def test_memory_estimate_covers_the_trial():
    assert sum(trial_counts(32)) > 32
    assert memory_needed(SHAPE, 32, 1, 32) == memory_needed(SHAPE, 32, 1, sum(trial_counts(32)))


def test_cli_tokens_1_k_2_runs_cleanly(config, tmp_path):
    out = tmp_path / "gpus.yaml"
    r = subprocess.run(
        [sys.executable, "-m", "vibe_plan", "profile-gpus", "--model", str(config), "--out",
         str(out), "--tokens", "1", "-k", "2", "--dtype", "float32", *FAST],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # no torch warning about resized outputs
    p = load_gpu_profile(out)
    assert p.gpus[0].curve.tokens == [1] and p.method["experts_per_gpu"] == 2
    shape = ExpertShape(64, 128, "float32", True)
    assert p.method["backend"] == ExpertBench(CPU, shape, 2, 512).backend


@pytest.mark.parametrize("k, tokens", [(1, "1"), (3, "1,2"), (2, "1")])
def test_small_sizes_with_validate(k, tokens, vibe, config, tmp_path):
    out = tmp_path / "gpus.yaml"
    r = vibe(
        "profile-gpus", "--model", config, "--out", out, "--tokens", tokens, "-k", str(k),
        "--validate", "--validate-trials", "2", *FAST,
    )  # fmt: skip
    assert r.code == 0, r.err
    assert load_gpu_profile(out).method["experts_per_gpu"] == k


def _no_measuring(monkeypatch):
    import vibe_plan.gpus.measure as measure

    def fail(*args, **kwargs):
        raise AssertionError("measured before the output path was checked")

    monkeypatch.setattr(measure, "safe_measure", fail)
    monkeypatch.setattr(measure, "build_sweep", fail)


@pytest.mark.parametrize("where", ["folder", "missing_folder"])
def test_out_is_checked_before_measuring(where, vibe, config, tmp_path, monkeypatch):
    _no_measuring(monkeypatch)
    out = tmp_path if where == "folder" else tmp_path / "nowhere" / "gpus.yaml"
    r = vibe("profile-gpus", "--model", config, "--out", out, "--tokens", "1", "-k", "2", *FAST)
    assert r.code == 2 and r.err.startswith("error: cannot write --out"), r.err
    assert len(r.err.splitlines()) == 1 and "Traceback" not in r.err
    # the library call checks too, for callers that skip the command
    with pytest.raises(VibeError, match="cannot write --out"):
        run_profile(ProfileRequest.parse(out=out, model=str(config), device="cpu"))


@pytest.mark.parametrize("where", ["folder", "missing_folder"])
def test_routing_out_is_checked_before_the_model_loads(where, vibe, tmp_path, monkeypatch):
    import vibe_plan.routing.loading as loading

    def fail(*args, **kwargs):
        raise AssertionError("loaded the model before the output path was checked")

    monkeypatch.setattr(loading, "load_model", fail)
    monkeypatch.setattr(loading, "load_tokenizer", fail)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(TINY))
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"prompt": "w1 w2"}\n')
    out = tmp_path if where == "folder" else tmp_path / "nowhere" / "r.npz"
    r = vibe("profile-routing", "--model", model, "--trace", trace, "--out", out, "--quiet")
    assert r.code == 2 and r.err.startswith("error: cannot write --out"), r.err
    assert len(r.err.splitlines()) == 1
