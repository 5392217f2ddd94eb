"""Per-layer summary of a routing profile: hottest expert, max/mean load, batch-to-batch spread."""

from __future__ import annotations

from typing import Any

import numpy as np

from vibe_plan.artifacts.routing_profile import RoutingProfile


def layer_stats(profile: RoutingProfile) -> list[dict[str, Any]]:
    """Per MoE layer: hottest expert and share, max/mean of the mean load, per-batch max/mean
    (median and p95), and the mean total-variation distance of a batch's mix from the mean mix."""
    counts = profile.counts.astype(np.float64)
    stats = []
    for li, layer in enumerate(profile.layer_ids):
        c = counts[:, li, :]
        mean = c.mean(axis=0)
        total = mean.sum()
        per_batch_tot = c.sum(axis=1)
        ok = per_batch_tot > 0
        shares = c[ok] / per_batch_tot[ok, None]
        mean_share = mean / total if total > 0 else mean
        batch_mm = c[ok].max(axis=1) / c[ok].mean(axis=1) if ok.any() else np.zeros(1)
        tv = 0.5 * np.abs(shares - mean_share).sum(axis=1) if ok.any() else np.zeros(1)
        hot = int(mean.argmax())
        stats.append(
            {
                "layer": int(layer),
                "hot_expert": hot,
                "hot_share": float(mean_share[hot]) if total > 0 else 0.0,
                "max_over_mean": float(mean.max() / mean.mean()) if total > 0 else 0.0,
                "batch_max_over_mean_p50": float(np.median(batch_mm)),
                "batch_max_over_mean_p95": float(np.percentile(batch_mm, 95)),
                "batch_tv": float(tv.mean()),
            }
        )
    return stats


def summary_table(profile: RoutingProfile, title: str) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in (
        "layer",
        "hottest expert",
        "its share",
        "max/mean",
        "per batch p50 / p95",
        "batch drift (TV)",
    ):
        table.add_column(col, justify="right")
    for s in layer_stats(profile):
        table.add_row(
            str(s["layer"]),
            str(s["hot_expert"]),
            f"{100 * s['hot_share']:.1f}%",
            f"{s['max_over_mean']:.2f}",
            f"{s['batch_max_over_mean_p50']:.2f} / {s['batch_max_over_mean_p95']:.2f}",
            f"{s['batch_tv']:.3f}",
        )
    return table
