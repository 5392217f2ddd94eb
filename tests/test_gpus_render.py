"""The end-of-run summary: relative times, telemetry, quick moves and validation, as printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from vibe_plan.artifacts.gpu_profile import ExpertShape, GpuCurve, GpuEntry, GpuProfile
from vibe_plan.console import console
from vibe_plan.gpus.measure import ProfileOutcome
from vibe_plan.gpus.render import render, shown_tokens


def test_shown_tokens_pick_decode_knee_and_prefill():
    assert shown_tokens([1, 2, 4, 8, 16, 64, 128, 256, 512, 4096, 8192]) == [8, 256, 4096]
    assert shown_tokens([1, 4, 16]) == [4, 16]


@pytest.fixture
def wide(monkeypatch):
    monkeypatch.setattr(console, "width", 220)


def test_summary_table_compares_each_gpu_to_the_fastest(capsys, wide):
    tokens = [8, 256, 4096]
    fast = GpuCurve(tokens, [10.0, 20.0, 200.0])
    slow = GpuCurve(tokens, [12.5, 22.0, 260.0])
    gpus = [
        GpuEntry(
            0,
            fast,
            "node0",
            "NVIDIA H100 80GB HBM3",
            "GPU-a",
            {"sm_clock_mhz": 1980, "temp_c": 61, "power_w": 612.4, "power_limit_w": 700.0},
        ),
        GpuEntry(
            1,
            slow,
            "node1",
            "NVIDIA H100 80GB HBM3",
            "GPU-b",
            {"sm_clock_mhz": 1755, "temp_c": 83, "clock_event_reasons": ["hw_slowdown"]},
        ),
    ]
    profile = GpuProfile(ExpertShape(7168, 2048), gpus, {"experts_per_gpu": 32, "device": "cuda"})
    quick = {
        "base": "gpus.yaml",
        "moved_threshold_pct": 3.0,
        "per_gpu": [
            {"id": 0, "scale": 1.01, "change_pct": 1.0, "moved": False},
            {"id": 1, "scale": 0.8, "change_pct": -20.0, "moved": True},
        ],
    }
    validation = {
        "trials": 24,
        "mean_abs_pct_error": 3.21,
        "worst_abs_pct_error": 9.5,
        "mean_signed_pct_error": -1.0,
    }
    render(ProfileOutcome(profile, Path("gpus.yaml"), quick, validation))
    out = capsys.readouterr().out
    assert "1.250" in out and "1.100" in out and "1.300" in out  # slow / fast per token count
    assert "node1" in out  # hosts shown when there are several
    assert "H100 80GB HBM3" in out and "hw_slowdown" in out and "612/700" in out
    assert "yes -20.0%" in out and "1 of 2 GPU(s) moved" in out
    assert "mean abs error 3.2%" in out and "worst 9.5%" in out
    assert "CPU" not in out
