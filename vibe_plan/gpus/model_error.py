"""--validate: measured grouped-call time on skewed token vectors vs the model's sum_e t_g(n_e)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vibe_plan.cost import TimeCurve

# Expert popularity ~ Dirichlet(alpha): 0.2 is a few very hot experts, 3.0 nearly uniform.
ALPHAS = (0.2, 0.5, 1.0, 3.0)
DRAW = (
    "per trial: popularity ~ Dirichlet(alpha in 0.2/0.5/1/3) over all experts, mean load "
    "log-uniform in [1, max_tokens/2] tokens/expert, token-expert picks ~ multinomial, "
    "K local experts chosen at random; vectors whose hottest expert exceeds the sweep are "
    "scaled down to it"
)


def draw_vectors(
    num_experts: int,
    top_k: int,
    local_experts: int,
    max_tokens: int,
    trials: int,
    seed: int,
) -> list[list[int]]:
    """Per-expert token counts of the K experts one GPU holds, for `trials` skewed batches."""
    rng = np.random.default_rng(seed)
    num_experts = max(num_experts, local_experts)
    out: list[list[int]] = []
    while len(out) < trials:
        alpha = ALPHAS[len(out) % len(ALPHAS)]
        popularity = rng.dirichlet(np.full(num_experts, alpha))
        mean_load = float(np.exp(rng.uniform(0.0, np.log(max(2.0, max_tokens / 2)))))
        picks = max(1, round(mean_load * num_experts))  # = batch tokens * top_k
        counts = rng.multinomial(picks, popularity)
        local = counts[rng.choice(num_experts, size=local_experts, replace=False)]
        if local.max() > max_tokens:  # validate interpolation, not extrapolation
            local = np.floor(local * (max_tokens / local.max())).astype(np.int64)
        if local.sum() == 0:
            continue
        out.append([int(c) for c in local])
    return out


def predict_us(curve: TimeCurve, vector: Sequence[int]) -> float:
    """The cost model's time of one GPU's grouped call: sum over its experts of t_g(n_e)."""
    return float(curve(np.asarray(vector, dtype=float)).sum())


def gpu_errors(curve: TimeCurve, vectors: Sequence[Sequence[int]], measured_us: Sequence[float]):
    """Signed percentage errors (prediction vs measurement) of one GPU, one per vector."""
    pred = np.array([predict_us(curve, v) for v in vectors])
    meas = np.asarray(measured_us, dtype=float)
    return (pred - meas) / meas * 100.0


def validation_block(
    gpu_ids: Sequence[int],
    curves: Sequence[TimeCurve],
    vectors: Sequence[Sequence[int]],
    measured: Sequence[Sequence[float]],
    seed: int,
) -> dict[str, Any]:
    """The `validation` block written into the profile (errors in percent of measured time)."""
    per_gpu = []
    all_errors = []
    for gid, curve, meas in zip(gpu_ids, curves, measured, strict=True):
        err = gpu_errors(curve, vectors, meas)
        all_errors.append(err)
        per_gpu.append(
            {
                "id": int(gid),
                "mean_abs_pct_error": round(float(np.abs(err).mean()), 2),
                "worst_abs_pct_error": round(float(np.abs(err).max()), 2),
                "mean_signed_pct_error": round(float(err.mean()), 2),
            }
        )
    errors = np.concatenate(all_errors)
    return {
        "trials": len(vectors),
        "seed": seed,
        "draw": DRAW,
        "prediction": "sum over the GPU's experts of t_g(n_e), cost model of docs/formats.md",
        "mean_abs_pct_error": round(float(np.abs(errors).mean()), 2),
        "worst_abs_pct_error": round(float(np.abs(errors).max()), 2),
        "mean_signed_pct_error": round(float(errors.mean()), 2),
        "per_gpu": per_gpu,
    }
