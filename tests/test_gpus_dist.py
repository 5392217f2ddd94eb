"""Several processes at once: the torchrun/gloo gather, and one failing device among several."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from vibe_plan.artifacts.gpu_profile import ExpertShape, load_gpu_profile
from vibe_plan.errors import VibeError
from vibe_plan.gpus.measure import ProfileRequest, finish
from vibe_plan.gpus.sweep import Sweep
from vibe_plan.gpus.worker import BenchSpec

pytest.importorskip("torch")

TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
}


def test_torchrun_two_cpu_ranks_gather_into_one_profile(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps(TINY))
    out = tmp_path / "gpus.yaml"
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    # --standalone: a private rendezvous on a free local port, so parallel test runs never clash.
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "vibe_plan",
        "profile-gpus",
        "--model",
        str(tmp_path / "model"),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--tokens",
        "1,8,32",
        "-k",
        "2",
        "--repeats",
        "3",
        "--warmup-s",
        "0",
        "--validate",
        "--validate-trials",
        "2",
        "--quiet",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    p = load_gpu_profile(out)
    assert [g.id for g in p.gpus] == [0, 1]  # global rank order
    for g in p.gpus:
        assert g.name.startswith("CPU: ") and g.host
        assert g.telemetry["torch_threads"] == 1  # 2 ranks share this machine's cores
        assert g.curve.tokens == [1, 8, 32] and min(g.curve.time_us) > 0
    assert p.method["concurrent"] is True and p.method["device"] == "cpu"
    assert [v["id"] for v in p.extra["validation"]["per_gpu"]] == [0, 1]
    assert r.stdout.count("wrote ") == 1  # only rank 0 writes and reports


def test_one_failing_device_among_several_writes_nothing(tmp_path):
    """Two worker processes in step: one asks for a CUDA device this CPU-only torch cannot use."""
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("needs a machine where cuda:0 fails")
    from vibe_plan.gpus.parallel import run_parallel

    spec = BenchSpec(ExpertShape(64, 128, "float32"), 2, [1, 8], 2, 0.0)
    results = run_parallel(spec, ["cpu", "cuda:0"])
    assert results[0] == []  # the healthy worker stopped at the barrier, knowing a peer failed
    assert len(results[1]) == 1 and results[1][0].startswith("cuda:0: ")
    out = tmp_path / "gpus.yaml"
    plan = Sweep(spec, "cuda", None, 8, 2)
    with pytest.raises(VibeError, match=r"2 of 2 devices did not finish.*cuda:0"):
        finish(ProfileRequest(out=out), plan, results, concurrent=True)
    assert not out.exists()
