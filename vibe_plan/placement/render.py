"""Rich tables for `vibe solve` and `vibe evaluate`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from rich.table import Table

from vibe_plan.defaults import TARGET_GAP
from vibe_plan.placement.solve import SolveResult


def _summary(res: SolveResult) -> tuple[float, float, float, float, float]:
    """(MoE time per forward, its lower bound, gap over all layers, worst layer gap, imbalance)."""
    pr = res.placement.predicted
    span = np.array(pr["makespan_us"])
    bound = np.array(pr["lower_bound_us"])
    gap = span / np.maximum(bound, 1e-12) - 1
    total, low = float(span.sum()), float(bound.sum())
    return (
        total,
        low,
        total / max(low, 1e-12) - 1,
        float(gap.max()),
        float(np.mean(pr["imbalance"])),
    )


def solve_table(res: SolveResult, others: dict[str, SolveResult], wall_s: float) -> Table:
    s = res.problem
    title = (
        f"{res.placement.method}: {s.num_experts} experts on {s.num_gpus} GPUs x "
        f"{s.slots_per_gpu} slots, {s.num_nodes} node(s), {s.num_groups} group(s), "
        f"{len(res.placement.layer_ids)} MoE layers, "
        f"{res.placement.dispatch.get('rule', 'even')} dispatch, solved in {wall_s:.2f} s"
    )
    t = Table(title=title, title_justify="left")
    heads = [
        "method",
        "MoE us / forward",
        "vs this plan",
        "lower bound us",
        "gap (all)",
        "worst layer gap",
        "imbalance",
    ]
    for col in heads:
        t.add_column(col, justify="right" if col != "method" else "left")
    base = _summary(res)[0]
    for name, r in [(res.placement.method, res), *others.items()]:
        total, low, gap, worst, imb = _summary(r)
        t.add_row(
            name,
            f"{total:,.1f}",
            f"{total / base:.4f}",
            f"{low:,.1f}",
            f"{gap:.3%}",
            f"{worst:.3%}",
            f"{imb:.4f}",
        )
    if res.status:
        counts = Counter(part for st in res.status for part in st.split("/"))
        pr = res.placement.predicted
        gaps = np.array(pr["makespan_us"]) / np.maximum(np.array(pr["lower_bound_us"]), 1e-12) - 1
        within = int((gaps <= TARGET_GAP).sum())
        steps = ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))
        t.caption = (
            f"{within}/{len(gaps)} layers certified within 0.1%; bound from: {steps}; "
            "bounds are for each plan's own replicas"
        )
    glob = res.placement.predicted.get("global_bound_us")
    if glob:
        low = float(np.sum(glob))
        line = (
            f"global bound (any replica counts, group map and split): {low:,.1f} us; "
            f"{res.placement.method} is {base / max(low, 1e-12) - 1:.2%} above it"
        )
        t.caption = f"{t.caption}\n{line}" if t.caption else line
    return t


def evaluate_table(rows: list[dict], rule: str = "even") -> Table:
    t = Table(
        title="per-batch MoE time per forward (sum over layers of the slowest GPU), "
        f"{rule} dispatch",
        title_justify="left",
    )
    heads = [
        "placement",
        "mean us",
        "p50 us",
        "p95 us",
        "vs first",
        "imbal.",
        "> bound",
        "stragglers",
    ]
    for head in heads:
        t.add_column(head, justify="left" if head in ("placement", "stragglers") else "right")
    for d in rows:
        t.add_row(
            f"{Path(d['placement']).name} ({d['method']})",
            f"{d['mean_us']:,.0f}",
            f"{d['p50_us']:,.0f}",
            f"{d['p95_us']:,.0f}",
            f"{d['vs_first']:.4f}",
            f"{d['imbalance']:.3f}",
            f"{d['above_bound']:.2%}",
            str(d["top_stragglers"]),
        )
    t.caption = (
        f"{rows[0]['batches']} batches; stragglers: GPU (share of layer-batches "
        "where it is slowest)"
    )
    return t
