"""`vibe profile-gpus` end to end on the CPU: profile, --validate, --quick, and bad input."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
from gpu_inputs import TINY, one_thread  # noqa: F401 (an autouse fixture)

from vibe_plan.artifacts.gpu_profile import load_gpu_profile, save_gpu_profile

pytest.importorskip("torch")

FAST = ["--device", "cpu", "--warmup-s", "0", "-k", "2", "--quiet"]


@pytest.fixture
def tiny_model(tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY))
    return folder


@pytest.fixture
def base_profile(vibe, tiny_model, tmp_path):
    out = tmp_path / "base.yaml"
    r = vibe(
        "profile-gpus",
        "--model",
        tiny_model,
        "--out",
        out,
        "--tokens",
        "4,16,64",
        "--repeats",
        "15",
        *FAST[:2],
        "--warmup-s",
        "0.2",
        *FAST[4:],
    )
    assert r.code == 0, r.err
    return out


def test_cpu_profile_end_to_end_with_validation(vibe, tiny_model, tmp_path):
    out = tmp_path / "gpus.yaml"
    r = vibe(
        "profile-gpus",
        "--model",
        tiny_model,
        "--out",
        out,
        "--tokens",
        "64,1,8,256,32",
        "--repeats",
        "4",
        "--validate",
        "--validate-trials",
        "3",
        *FAST,
    )
    assert r.code == 0, r.err
    p = load_gpu_profile(out)  # schema-valid: the reader the planner uses accepts it
    assert (p.expert.hidden, p.expert.intermediate, p.expert.dtype) == (64, 128, "bfloat16")
    assert p.num_gpus == 1
    g = p.gpus[0]
    assert g.name.startswith("CPU: ") and g.uuid is None
    assert g.curve.tokens == [1, 8, 32, 64, 256]
    assert all(t > 0 for t in g.curve.time_us)
    assert all(b >= a for a, b in zip(g.curve.time_us, g.curve.time_us[1:], strict=False))
    assert len(g.curve.p10_us) == len(g.curve.p90_us) == 5
    m = p.method
    assert m["device"] == "cpu" and m["timer"] == "perf_counter"
    assert m["backend"] in ("grouped_mm", "loop") and m["experts_per_gpu"] == 2
    assert m["repeats"] == 4 and m["concurrent"] is False and m["torch"]
    assert m["model"]["keys"]["intermediate"] == "intermediate_size"
    v = p.extra["validation"]
    assert v["trials"] == 3 and len(v["per_gpu"]) == 1
    assert 0 <= v["mean_abs_pct_error"] <= v["worst_abs_pct_error"]
    assert "validation: cost model vs measured" in r.out and "CPU" in r.out


def test_quick_rescales_against_a_slower_base(vibe, base_profile, tmp_path):
    # A base whose curve is 4x what this CPU does: the quick fit must find about 1/4.
    base = load_gpu_profile(base_profile)
    g = base.gpus[0]
    g.curve = dataclasses.replace(
        g.curve,
        time_us=[4 * t for t in g.curve.time_us],
        p10_us=[4 * t for t in g.curve.p10_us],
        p90_us=[4 * t for t in g.curve.p90_us],
    )
    slow = tmp_path / "slow.yaml"
    save_gpu_profile(base, slow)
    out = tmp_path / "quick.yaml"
    r = vibe(
        "profile-gpus",
        "--quick",
        "--base",
        slow,
        "--out",
        out,
        "--repeats",
        "15",
        "--device",
        "cpu",
        "--warmup-s",
        "0.2",
        "--quiet",
    )
    assert r.code == 0, r.err
    q = load_gpu_profile(out)
    fit = q.extra["quick"]["per_gpu"][0]
    assert 0.1 < fit["scale"] < 0.6, fit  # about 0.25; CPU timing on a shared machine is noisy
    assert fit["moved"] is True and fit["change_pct"] < -40
    assert set(q.extra["quick"]["tokens"]) <= set(g.curve.tokens)
    # The new curve is the base curve times the fitted scale, on the base's token grid.
    assert q.gpus[0].curve.tokens == g.curve.tokens
    for new, old in zip(q.gpus[0].curve.time_us, g.curve.time_us, strict=True):
        assert new == pytest.approx(old * fit["scale"], rel=1e-3)
    assert q.method["experts_per_gpu"] == 2 and q.method["mode"] == "quick"
    assert "moved" in r.out and "1 of 1 GPU(s) moved" in r.out


def test_quick_refuses_a_base_it_cannot_rescale(vibe, base_profile, tmp_path):
    out = tmp_path / "q.yaml"
    r = vibe(
        "profile-gpus",
        "--quick",
        "--base",
        base_profile,
        "--model",
        "deepseek-v3",
        "--out",
        out,
        "--device",
        "cpu",
    )
    assert r.code == 2 and "error:" in r.err and "full profile" in r.err
    two = load_gpu_profile(base_profile)
    two.gpus.append(dataclasses.replace(two.gpus[0], id=1))
    save_gpu_profile(two, tmp_path / "two.yaml")
    r = vibe(
        "profile-gpus", "--quick", "--base", tmp_path / "two.yaml", "--out", out, "--device", "cpu"
    )
    assert r.code == 2 and "has 2 GPUs but this run has 1" in r.err
    assert not out.exists()
    other = load_gpu_profile(base_profile)  # measured on another host (no UUIDs to compare)
    other.gpus[0] = dataclasses.replace(other.gpus[0], host="othernode", uuid=None)
    save_gpu_profile(other, tmp_path / "other.yaml")
    r = vibe(
        "profile-gpus", "--quick", "--base", tmp_path / "other.yaml", "--out", out,
        "--device", "cpu", "--repeats", "2", "--warmup-s", "0", "--quiet",
    )  # fmt: skip
    assert r.code == 2 and "othernode" in r.err and "same GPUs" in r.err
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "qwen3-30b-a3b", "--device", "cpu", "--gpus", "0"], "--gpus"),
        (["--model", "qwen3-30b-a3b", "--gpus", "7"], "--gpus"),
        (["--model", "qwen3-30b-a3b", "--dtype", "int8"], "--dtype"),
        (["--model", "qwen3-30b-a3b", "--device", "tpu"], "--device"),
        (["--model", "qwen3-30b-a3b", "--tokens", "0,4"], "positive"),
        (
            [
                "--model",
                "qwen3-30b-a3b",
                "--backend",
                "cutlass",
                "--device",
                "cpu",
                "--tokens",
                "1",
                "-k",
                "1",
                "--repeats",
                "1",
            ],
            "--backend",
        ),
        (["--model", "no-such-model"], "neither a preset"),
        (["--device", "cpu"], "--model is required"),
        (["--quick", "--device", "cpu"], "--quick needs --base"),
        (["--model", "DENSE", "--device", "cpu"], "no MoE keys"),
    ],
)
def test_bad_input_exits_2_with_one_error_line_and_no_file(vibe, tmp_path, args, message):
    dense = tmp_path / "dense"
    dense.mkdir()
    (dense / "config.json").write_text(json.dumps({"hidden_size": 64, "intermediate_size": 128}))
    args = [str(dense) if a == "DENSE" else a for a in args]
    out = tmp_path / "gpus.yaml"
    r = vibe("profile-gpus", *args, "--out", out)
    assert r.code == 2, r.err
    assert r.err.startswith("error: ") and message in r.err
    assert "Traceback" not in r.err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".gpus.yaml")]


def test_missing_output_folder_fails_before_measuring(vibe, tmp_path):
    r = vibe(
        "profile-gpus",
        "--model",
        "qwen3-30b-a3b",
        "--device",
        "cpu",
        "--out",
        tmp_path / "nope" / "gpus.yaml",
    )
    assert r.code == 2 and "does not exist" in r.err


def test_cli_help_does_not_import_torch():
    code = (
        "import sys; from vibe_plan.cli import main; main(['profile-gpus', '--help']); "
        "assert 'torch' not in sys.modules, 'torch imported by --help'"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "--experts-per-gpu" in r.stdout and "--quick" in r.stdout
