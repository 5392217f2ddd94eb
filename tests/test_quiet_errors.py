"""A broken model folder ends in one `error:` line: transformers' load report, its log and
torch's warnings stay off the terminal unless --verbose asks for them. A checkpoint that lacks
weights, or holds weights of other shapes, is refused (transformers would fill them at random)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from gpu_inputs import TINY  # noqa: E402
from routing_models import build_tiny_model  # noqa: E402


def _variant(good: Path, root: Path, name: str) -> Path:
    folder = root / name
    shutil.copytree(good, folder)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    from safetensors.torch import load_file, save_file

    root = tmp_path_factory.mktemp("broken")
    good = build_tiny_model("qwen3_moe", root / "good")
    weights = load_file(good / "model.safetensors")
    out = {"good": good}

    f = out["missing"] = _variant(good, root, "missing")  # one decoder layer's weights lost
    kept = {k: v for k, v in weights.items() if ".layers.1." not in k}
    save_file(kept, f / "model.safetensors", metadata={"format": "pt"})

    f = out["shape"] = _variant(good, root, "shape")  # a weight of another shape
    key = next(k for k in weights if k.endswith("q_proj.weight"))
    save_file(
        {**weights, key: weights[key][:, :-1].contiguous()},
        f / "model.safetensors",
        metadata={"format": "pt"},
    )

    f = out["unknown"] = _variant(good, root, "unknown")  # a model_type transformers lacks
    cfg = json.loads((f / "config.json").read_text())
    (f / "config.json").write_text(json.dumps({**cfg, "model_type": "frobnicator_moe"}))

    f = out["no_weights"] = _variant(good, root, "no_weights")
    (f / "model.safetensors").unlink()

    f = out["truncated"] = _variant(good, root, "truncated")  # a half-copied shard
    data = (f / "model.safetensors").read_bytes()
    (f / "model.safetensors").write_bytes(data[: len(data) // 2])

    f = out["bad_tokenizer"] = _variant(good, root, "bad_tokenizer")
    (f / "tokenizer.json").write_text('{"version": ')
    return out


# Cases where transformers logs (load report, model-type notice) before it fails: run as real
# processes, since only a fresh process shows what reaches the terminal.
NOISY = {
    "missing": ("lacks 11 weight(s)", "model.layers.1.", "safetensors shard"),
    "shape": ("other shapes than config.json implies", "q_proj.weight", "[32, 31] vs config"),
    "unknown": ("frobnicator_moe",),
}
# Failures with nothing logged first: in-process is enough to check the one line.
QUIET = {
    "no_weights": ("no file named model.safetensors",),
    "truncated": ("cannot load the model", "SafetensorError"),
    "bad_tokenizer": ("cannot load a tokenizer",),
}


@pytest.fixture(scope="module")
def runs(folders, tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Each noisy case as its own `vibe profile-routing` process, started together (each loads
    torch and transformers, which takes seconds)."""
    root = tmp_path_factory.mktemp("runs")
    trace = root / "t.jsonl"
    trace.write_text('{"prompt": "w1 w2 w3"}\n')
    jobs = {name: (folders[name], []) for name in NOISY}
    jobs["missing_verbose"] = (folders["missing"], ["--verbose"])
    procs = {}
    for name, (model, extra) in jobs.items():
        out = root / f"{name}.npz"
        args = ["profile-routing", "--model", model, "--trace", trace, "--out", out, "--quiet"]
        cmd = [sys.executable, "-m", "vibe_plan", *(str(a) for a in args + extra)]
        procs[name] = (subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE), out)
    results = {}
    for name, (p, out) in procs.items():
        stdout, stderr = p.communicate(timeout=300)
        results[name] = (
            subprocess.CompletedProcess(p.args, p.returncode, stdout.decode(), stderr.decode()),
            out,
        )
    return results


def assert_one_error(code: int, stdout: str, stderr: str, out: Path, expect: tuple) -> None:
    assert code == 2, (stdout, stderr)
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr  # no report, no warnings
    assert stdout == "" and "Traceback" not in stderr
    for text in expect:
        assert text in lines[0], lines[0]
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*"))


@pytest.mark.parametrize("case", list(NOISY))
def test_broken_model_is_one_error_line(case, runs):
    r, out = runs[case]
    assert_one_error(r.returncode, r.stdout, r.stderr, out, NOISY[case])


@pytest.mark.parametrize("case", list(QUIET))
def test_unloadable_folder_is_one_error_line(case, vibe, folders, tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"prompt": "w1 w2 w3"}\n')
    out = tmp_path / "r.npz"
    args = ["profile-routing", "--model", folders[case], "--trace", trace, "--out", out]
    r = vibe(*args, "--quiet")
    assert_one_error(r.code, r.out, r.err, out, QUIET[case])


def test_verbose_lets_the_load_report_through(runs):
    r, out = runs["missing_verbose"]
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "LOAD REPORT" in r.stderr and "MISSING" in r.stderr  # transformers' own table
    assert r.stderr.splitlines()[-1].startswith("error: ") and "--verbose" not in r.stderr
    assert not out.exists()


@pytest.mark.parametrize("verbose", [False, True])
def test_replay_warnings_only_with_verbose(verbose, vibe, folders, tmp_path, monkeypatch):
    """A library warning raised while the model runs is dropped, or let through with --verbose."""
    import vibe_plan.routing.hooks as hooks

    real = hooks.router_indices

    def noisy(module, output):
        warnings.warn("router noise", UserWarning, stacklevel=1)
        return real(module, output)

    monkeypatch.setattr(hooks, "router_indices", noisy)
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"prompt": "w1 w2 w3"}\n')
    out = tmp_path / "r.npz"
    extra = ["--verbose"] if verbose else []
    args = ["profile-routing", "--model", folders["good"], "--trace", trace, "--out", out]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        r = vibe(*args, "--quiet", *extra)
    assert r.code == 0, r.err
    assert any("router noise" in str(w.message) for w in seen) == verbose


@pytest.mark.parametrize("verbose", [False, True])
def test_profile_gpus_warnings_only_with_verbose(verbose, vibe, tmp_path, monkeypatch):
    import vibe_plan.gpus.bench as bench

    real = bench.heat_soak

    def noisy(*args, **kwargs):
        warnings.warn("kernel noise", UserWarning, stacklevel=1)
        return real(*args, **kwargs)

    monkeypatch.setattr(bench, "heat_soak", noisy)
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY))
    out = tmp_path / "gpus.yaml"
    extra = ["--verbose"] if verbose else []
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        r = vibe(
            "profile-gpus", "--model", config, "--out", out, "--device", "cpu", "--tokens", "1,4",
            "-k", "2", "--repeats", "1", "--warmup-s", "0", "--quiet", *extra,
        )  # fmt: skip
    assert r.code == 0, r.err
    assert out.exists()
    assert any("kernel noise" in str(w.message) for w in seen) == verbose
