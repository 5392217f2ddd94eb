"""How much of a fresh plan's gain a migration-aware re-plan recovers with few expert moves.

For each drifted instance: a placement is solved (vibe) on the old profiles; then traffic or
hardware drifts, and `vibe recalibrate`'s library call plans on the new ones. Reported: the drift
(mean total variation distance of the per-layer expert loads; the slowed GPU), the current
placement's predicted time under the new profiles, the fresh plan's gain and moves, and the share
of the fresh plan's gain that the migration-aware plan recovers with 5%, 10% and 25% of the fresh
plan's moves (the moves it used in brackets).

Inputs are SYNTHETIC. Routing drift between domains: the new traffic is a mix of the old one and
`synthetic_routing` with another seed (share `alpha` of the other domain). GPU drift: one GPU of
a `varied_gpu_profile` fleet slowed by 10-20% (compute and memory). Times are scored on the new
routing profile's batches (what recalibrate reports), under even dispatch unless named.
Usage: python benchmarks/recalibrate_bench.py [--only NAME] [--time-limit S] [--jobs N]
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass

import numpy as np

from vibe_plan.artifacts import ExpertShape, GpuCurve, GpuProfile, RoutingProfile
from vibe_plan.cost.dispatch import Dispatch
from vibe_plan.placement.cpsat import CpSatSettings
from vibe_plan.placement.drift import drift_report
from vibe_plan.placement.recalibrate import RecalibrateOptions, plan_recalibration
from vibe_plan.placement.solve import SolveOptions, solve_placement
from vibe_plan.synthetic import synthetic_routing, varied_gpu_profile


@dataclass(frozen=True)
class Instance:
    name: str
    shape: ExpertShape
    experts: int
    layers: int
    gpus: int
    redundant: int
    alpha: float  # share of the other domain's traffic in the new routing
    slow_gpu: int | None  # rank slowed in the new GPU profile
    slowdown: float
    dispatch: str = "even"
    seed: int = 0


QWEN = ExpertShape(2048, 768)
DSV3 = ExpertShape(7168, 2048)
INSTANCES = [
    Instance("qwen3-30b EP8, routing drift 30%", QWEN, 128, 16, 8, 0, 0.3, None, 1.0),
    Instance("qwen3-30b EP8, GPU 3 slowed 15%", QWEN, 128, 16, 8, 0, 0.0, 3, 1.15),
    Instance("qwen3-30b EP8+8, drift 30% + GPU 5 -20%", QWEN, 128, 16, 8, 8, 0.3, 5, 1.2),
    Instance("qwen3-30b EP8, domain switch 60% + GPU 1 -10%", QWEN, 128, 16, 8, 0, 0.6, 1, 1.1),
    Instance(
        "deepseek-v3 EP16+16 2 nodes, drift 30% + GPU 9 -15%", DSV3, 256, 8, 16, 16, 0.3, 9, 1.15
    ),
    Instance(
        "qwen3-30b EP8+8 static, drift 30% + GPU 2 -15%", QWEN, 128, 8, 8, 8, 0.3, 2, 1.15, "static"
    ),
]
FRACTIONS = (0.05, 0.10, 0.25)


def slowed(profile: GpuProfile, rank: int | None, factor: float) -> GpuProfile:
    out = copy.deepcopy(profile)
    if rank is not None:
        g = out.gpus[rank]
        g.curve = GpuCurve(list(g.curve.tokens), [round(t * factor, 4) for t in g.curve.time_us])
    return out


def drifted(
    inst: Instance, batches: int, batch_tokens: int
) -> tuple[RoutingProfile, RoutingProfile]:
    old = synthetic_routing(inst.experts, inst.layers, 8, batches, batch_tokens, seed=inst.seed + 1)
    other = synthetic_routing(
        inst.experts, inst.layers, 8, batches, batch_tokens, seed=inst.seed + 2
    )
    counts = np.rint((1 - inst.alpha) * old.counts + inst.alpha * other.counts).astype(np.int64)
    return old, RoutingProfile(counts, old.layer_ids, dict(old.meta))


def run(inst: Instance, time_limit: float, jobs: int | None) -> tuple[list[str], float]:
    gpus_per_node = 8
    old_gpus = varied_gpu_profile(inst.shape, inst.gpus, 0.05, inst.seed, gpus_per_node)
    new_gpus = slowed(old_gpus, inst.slow_gpu, inst.slowdown)
    old_routing, new_routing = drifted(inst, 16, 8192)
    solve_opts = SolveOptions(redundant=inst.redundant, dispatch=inst.dispatch, jobs=jobs)
    cur = solve_placement(old_gpus, old_routing, solve_opts).placement
    start = time.perf_counter()
    notes: list[str] = []
    drift = drift_report(cur, new_gpus, new_routing, None, None, notes)
    rule = Dispatch(inst.dispatch, cur.num_nodes, None, new_routing.num_hidden_layers)
    opts = RecalibrateOptions(time_limit=time_limit, jobs=jobs, min_gain=0.0)
    res = plan_recalibration(
        cur,
        new_gpus,
        new_routing,
        rule,
        drift,
        opts,
        CpSatSettings(time_limit, opts.workers, opts.seed),
        notes,
    )
    wall = time.perf_counter() - start
    rows = {r.fraction: r for r in res.rows}
    gpu = "-" if inst.slow_gpu is None else f"{inst.slow_gpu}: {inst.slowdown:.2f}x"
    cells = [
        inst.name,
        f"{drift.routing_tv.mean():.3f}" if drift.routing_tv is not None else "-",
        gpu,
        f"{res.current_us:,.0f}",
        f"{res.fresh_gain:.2%}",
        str(res.fresh_moves),
    ]
    for f in FRACTIONS:
        r = rows[f]
        rec = "-" if r.recovered is None else f"{r.recovered:.0%}"
        cells.append(f"{rec} ({r.moves})")
    cells.append(f"{wall:.1f}")
    return cells, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", help="run the instances whose name contains this")
    ap.add_argument("--time-limit", type=float, default=0.1, help="CP-SAT deterministic s")
    ap.add_argument("--jobs", type=int, default=None)
    args = ap.parse_args()
    cols = [
        "instance",
        "routing TV",
        "slowed GPU",
        "current us",
        "fresh gain",
        "fresh moves",
        "5% of moves",
        "10% of moves",
        "25% of moves",
        "s",
    ]
    print(f"recovered share of the fresh plan's gain (moves used); CP-SAT {args.time_limit} s")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for inst in INSTANCES:
        if args.only and args.only not in inst.name:
            continue
        cells, _ = run(inst, args.time_limit, args.jobs)
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
