"""Options that mean nothing are refused before any work, and usage mistakes (an unknown option,
a word for a number, a missing argument) read like every other error: one `error:` line on
stderr, exit code 2, no boxed panel, no traceback, no file written or changed. `--help` still
works and exits 0."""

from __future__ import annotations

import subprocess
import sys

import pytest
from placement_inputs import solve_args


def _refused(r, out_dir, *needles):
    assert r.code == 2, (r.code, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.err
    assert "Traceback" not in r.err and "╭" not in r.err
    for needle in needles:
        assert needle in r.err, (needle, r.err)
    assert sorted(p.name for p in out_dir.iterdir()) == ["old.json"]
    assert (out_dir / "old.json").read_text() == "old\n"


@pytest.fixture
def setup(inputs):
    gpus, routing, out = inputs
    (out / "old.json").write_text("old\n")
    return gpus, routing, out


@pytest.mark.parametrize(
    "opts, needle",
    [
        (("--time-limit", "nan"), "--time-limit"),
        (("--time-limit", "inf"), "--time-limit"),
        (("--time-limit", "-1"), "--time-limit"),
        (("--workers", "1"), "--workers"),
        (("--workers", "0"), "--workers"),
        (("--seed", "-1"), "--seed"),
        (("--seed", str(2**31)), "--seed"),
        (("--redundant", "-1"), "--redundant"),
        (("--jobs", "0"), "--jobs"),
        (("--nodes", "0"), "--nodes"),
        (("--groups", "0"), "--groups"),
        (("--jobs", "two"), "'--jobs'"),
        (("--bogus",), "--bogus"),
        (("--redundant",), "--redundant"),
    ],
)
def test_solve_options(vibe, setup, opts, needle):
    gpus, routing, out = setup
    r = vibe(*solve_args(gpus, routing, out / "old.json", *opts))
    _refused(r, out, needle)


def test_usage_errors_through_the_real_cli(setup):
    """The installed program, not only main(): one line, exit 2, the command's help named."""
    gpus, routing, out = setup
    cases = [
        (solve_args(gpus, routing, out / "old.json", "--redundant", "x"), "vibe solve --help"),
        (["solve", "--routing", routing, "--out", out / "old.json"], "missing option '--gpus'"),
        (["evaluate", "--gpus", gpus, "--routing", routing], "missing argument"),
        (["nonsense"], "no such command"),
    ]
    for args, needle in cases:
        res = subprocess.run(
            [sys.executable, "-m", "vibe_plan", *[str(a) for a in args]],
            capture_output=True,
            text=True,
            timeout=60,
        )
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2, res.stderr
        assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
        assert needle in res.stderr, (needle, res.stderr)
    assert sorted(p.name for p in out.iterdir()) == ["old.json"]


@pytest.mark.parametrize(
    "command", ["", "solve", "evaluate", "profile-gpus", "profile-routing", "import-routing"]
)
def test_help_still_works(vibe, command):
    r = vibe(*([command] if command else []), "--help")
    assert r.code == 0, r.err
    assert "Usage" in r.out and r.err == ""


def test_no_arguments_prints_the_help(vibe):
    r = vibe()
    assert r.code == 2 and "Usage" in r.out and r.err == ""


def test_evaluate_nodes(vibe, setup):
    gpus, routing, out = setup
    r = vibe("evaluate", out / "old.json", "--gpus", gpus, "--routing", routing, "--nodes", "0")
    _refused(r, out, "--nodes")


@pytest.mark.parametrize(
    "opts, needle",
    [
        (("--max-requests", "-1"), "--max-requests"),
        (("--decode-steps", "-1"), "--decode-steps"),
        (("--batch-tokens", "0"), "--batch-tokens"),
        (("--seed", "-1"), "--seed"),
    ],
)
def test_profile_routing_options(vibe, setup, tmp_path, opts, needle):
    _, _, out = setup
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"prompt": "hello"}\n')
    model = tmp_path / "no-model"  # the options are refused before the model is read
    r = vibe("profile-routing", "--model", model, "--trace", trace, "--out", out / "r.npz", *opts)
    _refused(r, out, needle)


def test_import_routing_batch_tokens(vibe, setup, tmp_path):
    _, _, out = setup
    dump = tmp_path / "dump.npy"
    dump.write_bytes(b"")
    r = vibe("import-routing", dump, "--out", out / "r.npz", "--batch-tokens", "0")
    _refused(r, out, "--batch-tokens")


@pytest.mark.parametrize(
    "opts, needle",
    [
        (("--moved-pct", "-5", "--quick", "--base", "{gpus}"), "--moved-pct"),
        (("--moved-pct", "nan", "--quick", "--base", "{gpus}"), "--moved-pct"),
        (("--seed", "-1", "--model", "qwen3-30b-a3b"), "--seed"),
    ],
)
def test_profile_gpus_options(vibe, setup, opts, needle):
    gpus, _, out = setup
    opts = tuple(o.format(gpus=gpus) for o in opts)
    r = vibe("profile-gpus", "--device", "cpu", "--out", out / "g.yaml", *opts)
    _refused(r, out, needle)


def test_profile_gpus_experts_per_gpu_above_the_models_experts(vibe, setup):
    pytest.importorskip("torch")
    _, _, out = setup
    r = vibe(
        "profile-gpus",
        "--model",
        "qwen3-30b-a3b",
        "--device",
        "cpu",
        "-k",
        "1000",
        "--out",
        out / "g.yaml",
    )
    _refused(r, out, "--experts-per-gpu 1000", "128")
