"""Curve fitting on measured points: a non-decreasing fit, and the per-GPU scale for --quick."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from vibe_plan.cost import TimeCurve

QUICK_TARGETS = (16, 256, 2048)  # decode-sized, near the knee, prefill-sized loads


def isotonic(values: Sequence[float], weights: Sequence[float] | None = None) -> list[float]:
    """Least-squares non-decreasing fit (pool adjacent violators).

    Measured medians are not monotone (noise, tile effects). A running maximum would carry one
    noisy spike forward to every later point; pooling averages the violators instead.
    """
    w_in = [1.0] * len(values) if weights is None else [float(w) for w in weights]
    blocks: list[list[float]] = []  # [mean, weight, count]
    for v, w in zip(values, w_in, strict=True):
        blocks.append([float(v), w, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, c2 = blocks.pop()
            m1, w1, c1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    out: list[float] = []
    for mean, _, count in blocks:
        out.extend([mean] * int(count))
    return out


def pick_quick_points(base_tokens: Sequence[int], count: int = 3) -> list[int]:
    """A few of the base curve's token counts, nearest (log scale) to decode, knee, prefill."""
    return sorted({nearest(base_tokens, g) for g in QUICK_TARGETS[:count]})


def nearest(tokens: Sequence[int], target: int) -> int:
    """The token count closest to `target` on a log scale (64 is as far from 32 as from 128)."""
    return min(tokens, key=lambda t: abs(math.log(t / target)))


def fit_scale(
    base: TimeCurve, tokens: Sequence[int], measured_us: Sequence[float]
) -> tuple[float, float]:
    """Scale s with measured ~= s * base(tokens), least squares on log ratios.

    Log ratios weigh a 10% change the same at 1 token and at 4096 tokens. Returns (scale, worst
    relative residual in percent), the residual saying how well one factor explains the change.
    """
    predicted = base(np.asarray(tokens, dtype=float))
    measured = np.asarray(measured_us, dtype=float)
    if len(measured) == 0 or np.any(predicted <= 0) or np.any(measured <= 0):
        raise ValueError("fit_scale needs positive base and measured times")
    logs = np.log(measured / predicted)
    scale = float(np.exp(logs.mean()))
    residual = float(np.max(np.abs(measured / (scale * predicted) - 1.0)) * 100.0)
    return scale, residual
