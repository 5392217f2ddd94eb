"""Pure numerics of profiling: monotone fit, quick-scale fit, validation draws and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vibe_plan.cost import TimeCurve
from vibe_plan.errors import VibeError
from vibe_plan.gpus.fit import fit_scale, isotonic, pick_quick_points
from vibe_plan.gpus.model_error import draw_vectors, gpu_errors, predict_us, validation_block
from vibe_plan.gpus.sweep import ProfileRequest, check_visible, parse_gpu_list, parse_int_list
from vibe_plan.gpus.telemetry import reason_names, summarize

values = st.lists(st.floats(0.1, 1e4, allow_nan=False), min_size=1, max_size=30)


@settings(max_examples=200, deadline=None)
@given(values)
def test_isotonic_is_the_least_squares_monotone_fit(ys):
    fit = np.array(isotonic(ys))
    y = np.array(ys)
    assert len(fit) == len(y)
    assert np.all(np.diff(fit) >= -1e-9)
    assert fit.sum() == pytest.approx(y.sum(), rel=1e-9)  # pooling keeps block means
    # No worse than the running maximum the cost model would otherwise apply.
    assert ((fit - y) ** 2).sum() <= ((np.maximum.accumulate(y) - y) ** 2).sum() + 1e-6


def test_isotonic_on_a_noisy_knee():
    # A spike at 192 tokens should be averaged with its neighbour, not carried to every later point.
    measured = [10.0, 10.0, 11.0, 30.0, 20.0, 40.0]
    assert isotonic(measured) == [10.0, 10.0, 11.0, 25.0, 25.0, 40.0]
    assert isotonic([1.0, 2.0, 3.0]) == [1.0, 2.0, 3.0]


def test_fit_scale_recovers_a_uniform_change_and_reports_misfit():
    tokens = [1, 16, 128, 256, 1024, 4096]
    base_us = [20.0, 21.0, 25.0, 40.0, 140.0, 520.0]
    base = TimeCurve.from_points(tokens, base_us)
    pts = [16, 256, 4096]
    scale, residual = fit_scale(base, pts, [0.5 * base(t) for t in pts])
    assert scale == pytest.approx(0.5, rel=1e-9)
    assert residual == pytest.approx(0.0, abs=1e-9)
    # Between two base points the curve interpolates; a non-uniform change shows as residual.
    scale, residual = fit_scale(base, [16, 4096], [21.0 * 1.1, 520.0 * 0.9])
    assert 0.9 < scale < 1.1
    assert residual > 5.0
    with pytest.raises(ValueError):
        fit_scale(base, [16], [0.0])


def test_quick_points_come_from_the_base_curve():
    base = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
    assert pick_quick_points(base) == [16, 256, 2048]
    assert pick_quick_points([1, 4, 16, 64]) == [16, 64]  # small CPU sweeps give fewer points


@pytest.mark.parametrize("alpha_trials", [4, 12])
def test_validation_vectors_are_skewed_bounded_and_reproducible(alpha_trials):
    a = draw_vectors(128, 8, 16, 512, alpha_trials, seed=3)
    b = draw_vectors(128, 8, 16, 512, alpha_trials, seed=3)
    assert a == b
    assert a != draw_vectors(128, 8, 16, 512, alpha_trials, seed=4)
    assert len(a) == alpha_trials
    for v in a:
        assert len(v) == 16 and min(v) >= 0 and 0 < max(v) <= 512
    # The most concentrated draws give some GPU a hot expert well above its mean.
    skew = max(max(v) / (sum(v) / len(v)) for v in a)
    assert skew > 2.0


def test_prediction_and_errors_follow_the_cost_model():
    curve = TimeCurve.from_points([1, 64, 512], [10.0, 12.0, 60.0])
    vec = [0, 1, 64, 512, 32]
    # t(0) = 0; t(32) interpolates between 1 and 64 tokens.
    assert predict_us(curve, vec) == pytest.approx(0 + 10 + 12 + 60 + (10 + 2 * 31 / 63))
    vectors = [vec, [64, 64]]
    exact = [predict_us(curve, v) for v in vectors]
    assert np.allclose(gpu_errors(curve, vectors, exact), 0.0)
    block = validation_block([0, 1], [curve, curve], vectors, [exact, [x / 1.1 for x in exact]], 7)
    assert block["per_gpu"][0]["mean_abs_pct_error"] == 0.0
    assert block["per_gpu"][1]["mean_abs_pct_error"] == pytest.approx(10.0)
    assert block["mean_abs_pct_error"] == pytest.approx(5.0)
    assert block["worst_abs_pct_error"] == pytest.approx(10.0)
    assert block["trials"] == 2 and block["seed"] == 7


def test_option_parsing():
    assert parse_int_list("64, 1,8,8", "--tokens") == [1, 8, 64]
    with pytest.raises(VibeError, match="comma-separated"):
        parse_int_list("1,x", "--tokens")
    assert check_visible(parse_gpu_list("3,0"), 4) == [3, 0]  # order is rank order, kept
    for bad, msg in (("4", "no GPU 4"), ("0,0", "twice"), ("-1", "no GPU -1"), ("a", "indices")):
        with pytest.raises(VibeError, match=msg):
            check_visible(parse_gpu_list(bad), 4)


def test_request_is_parsed_once():
    req = ProfileRequest.parse(out=Path("g.yaml"), model="mixtral-8x7b", gpus="2,0", tokens="8,1")
    assert (req.gpus, req.tokens, req.dtype) == ([2, 0], [1, 8], None)
    assert ProfileRequest.parse(out=Path("g.yaml"), model="x", dtype="bf16").dtype == "bfloat16"
    with pytest.raises(VibeError, match="--quick needs --base"):
        ProfileRequest.parse(out=Path("g.yaml"), quick=True)


def test_telemetry_summary_and_throttle_names():
    assert reason_names(0x4 | 0x40) == ["sw_power_cap", "hw_thermal_slowdown"]
    assert reason_names(0x10000)[0].startswith("other_0x")
    s = summarize(
        [
            {"sm_clock_mhz": 1980, "power_w": 600.0, "temp_c": 60, "reasons": 0x1},
            {"sm_clock_mhz": 1755, "power_w": 700.0, "temp_c": 66, "reasons": 0x4},
            {"sm_clock_mhz": 1800, "power_w": 650.0, "temp_c": 64, "power_limit_w": 700.0},
        ]
    )
    assert s["sm_clock_mhz"] == 1800 and s["temp_c"] == 66
    assert s["power_w"] == 650.0 and s["power_peak_w"] == 700.0
    assert s["clock_event_reasons"] == ["sw_power_cap"]  # idle is not a throttle
    assert s["samples"] == 3
