"""The example CI job (examples/ci/placement.sh) runs as the project's CI runs it, so the example
cannot rot: it plans from the example profiles, validates against the committed placement, and
fails (exit 1) when the plan regresses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from placement_inputs import skewed_counts, solve_args, write_gpus, write_routing

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "ci" / "placement.sh"
BIN = Path(sys.executable).parent


def run_job(out: Path, **env: str) -> subprocess.CompletedProcess:
    if not (BIN / "vibe").exists():
        pytest.skip("the vibe entry point is not installed next to this python")
    full = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    full["PATH"] = f"{BIN}{os.pathsep}{full.get('PATH', '')}"  # vibe on PATH: no pip install
    full.update(env)
    return subprocess.run(
        ["bash", str(SCRIPT), str(out)], capture_output=True, text=True, timeout=600, env=full
    )


def test_the_ci_job_runs_on_the_examples(tmp_path):
    res = run_job(tmp_path / "out")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    out = tmp_path / "out"
    for name in (
        "placement.json",
        "sglang-init-expert-location.json",
        "trtllm-load-balancer.yaml",
        "evaluate.csv",
        "validate.txt",
    ):
        assert (out / name).is_file(), name
    assert (out / "validate.txt").read_text().startswith("valid: ")
    # The committed placement is what the job's solve command writes.
    assert "byte-identical" in res.stdout, res.stdout[-2000:]


def test_the_ci_job_fails_when_the_plan_regresses(tmp_path, vibe):
    gpus = write_gpus(tmp_path / "gpus.yaml", [1.0, 1.1, 1.2, 1.3])
    routing = write_routing(tmp_path / "routing.npz", skewed_counts(6, 3, 16), num_hidden_layers=5)
    committed = tmp_path / "committed.json"
    assert vibe(*solve_args(gpus, routing, committed)).code == 0
    env = {"GPUS": str(gpus), "ROUTING": str(routing), "COMMITTED": str(committed)}
    res = run_job(tmp_path / "good", **env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    res = run_job(tmp_path / "bad", SOLVE_ARGS="--method linear", **env)
    assert res.returncode == 1, res.stdout[-2000:] + res.stderr[-2000:]
    assert "invalid: " in res.stdout and "slower than" in res.stdout
    res = run_job(tmp_path / "missing", GPUS=str(tmp_path / "nope.yaml"))
    assert res.returncode == 2 and "error: " in res.stderr
