"""Solve time and certified gap from 8 to 256 GPUs, on both synthetic fleet generators (regular
roofline and the varied one: drawn tile, floor, noise, slow outliers) with drifting routing.

Inputs are SYNTHETIC. Plans use the first 75% of batches; "held-out" scores the rest. Prints a
markdown table; ratios are against eplb solved in the same process.
Usage: python benchmarks/scale_bench.py [--only NAME] [--fleets synthetic,varied] [--seeds 0]
                                        [--batches 16] [--time-limit 0.1] [--jobs N] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from dataclasses import dataclass

import numpy as np

from vibe_plan.artifacts import ExpertShape
from vibe_plan.placement.evaluate import score
from vibe_plan.placement.solve import SolveOptions, solve_placement
from vibe_plan.synthetic import synthetic_gpu_profile, synthetic_routing, varied_gpu_profile

DEEPSEEK = ExpertShape(7168, 2048)


@dataclass(frozen=True)
class Instance:
    name: str
    experts: int
    layers: int
    first_moe: int
    groups: int | None
    gpus: int
    redundant: int
    top_k: int = 8
    shape: ExpertShape = DEEPSEEK


def _deepseek(gpus: int) -> Instance:
    return Instance(f"deepseek-v3 EP{gpus}+{gpus}", 256, 58, 3, 8, gpus, gpus)


INSTANCES = [_deepseek(g) for g in (8, 16, 32, 64, 128, 256)] + [
    Instance("kimi-k2 EP128+128", 384, 60, 1, None, 128, 128),
]


def fleet(inst: Instance, kind: str, seed: int):
    """Fleet for one row; the varied generator's spread and outliers cycle with the seed."""
    if kind == "synthetic":
        return synthetic_gpu_profile(inst.shape, inst.gpus, 0.1, seed=seed), "+-10%"
    spread = (0.05, 0.1)[seed % 2]
    outliers = seed % 3
    gpus = varied_gpu_profile(inst.shape, inst.gpus, spread, seed=seed + 100, outliers=outliers)
    return gpus, f"+-{spread:.0%} out {outliers}"


def routing(inst: Instance, seed: int, batches: int):
    drift = (0.25, 0.15, 0.4)[seed % 3]
    prof = synthetic_routing(
        inst.experts,
        inst.layers,
        inst.top_k,
        batches,
        512 * inst.gpus,  # tokens per batch grow with the fleet, as in serving
        seed=seed + 1,
        drift=drift,
        num_groups=inst.groups,
        first_moe_layer=inst.first_moe,
    )
    return prof, drift


def worst_first(gpus, routing, redundant: int):
    """For the probes: vibe's plan on the first 75% of batches, and its layers, worst certified
    gap first. -> (planning profile, SolveResult, layer indices)."""
    plan, _ = routing.split(0.25)
    res = solve_placement(gpus, plan, SolveOptions(redundant=redundant))
    pr = res.placement.predicted
    gap = np.array(pr["makespan_us"]) / np.array(pr["lower_bound_us"]) - 1
    return plan, res, np.argsort(-gap, kind="stable")


def solve(gpus, plan, method: str, inst: Instance, args) -> tuple[object, float]:
    opts = SolveOptions(
        method=method, redundant=inst.redundant, time_limit=args.time_limit, jobs=args.jobs
    )
    t0 = time.perf_counter()
    res = solve_placement(gpus, plan, opts)
    return res, time.perf_counter() - t0


def run(inst: Instance, kind: str, seed: int, args) -> list[str]:
    gpus, fleet_note = fleet(inst, kind, seed)
    prof, drift = routing(inst, seed, args.batches)
    plan, held = prof.split(0.25)
    if args.profile:
        pr = cProfile.Profile()
        pr.enable()
    vibe, vibe_wall = solve(gpus, plan, "vibe", inst, args)
    if args.profile:
        pr.disable()
        pstats.Stats(pr).sort_stats("cumulative").print_stats(25)
    eplb, eplb_wall = solve(gpus, plan, "eplb", inst, args)
    v, e = vibe.placement.predicted, eplb.placement.predicted
    gap = np.array(v["makespan_us"]) / np.array(v["lower_bound_us"]) - 1
    held_ratio = (
        score("vibe", gpus, held, vibe.placement).mean_us
        / score("eplb", gpus, held, eplb.placement).mean_us
    )
    return [
        inst.name,
        f"{kind} {fleet_note} drift {drift} seed {seed}",
        str(inst.gpus),
        f"{vibe_wall:.1f}",
        f"{eplb_wall:.1f}",
        f"{sum(v['makespan_us']) / sum(e['makespan_us']):.4f}",
        f"{held_ratio:.4f}",
        f"{int((gap > 1e-3).sum())}/{inst.layers}",
        f"{gap.max():.3%}",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", default=None, help="run instances whose name contains this")
    ap.add_argument("--fleets", default="synthetic,varied", help="synthetic and/or varied")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds (varied fleets cycle)")
    ap.add_argument("--batches", type=int, default=16)
    ap.add_argument("--time-limit", type=float, default=0.1, help="CP-SAT budget, as in solve")
    ap.add_argument("--jobs", type=int, default=None, help="layer-parallel processes")
    ap.add_argument("--profile", action="store_true", help="cProfile vibe (use with --jobs 1)")
    args = ap.parse_args()
    cols = [
        "instance",
        "fleet",
        "GPUs",
        "vibe wall s",
        "eplb wall s",
        "vibe/eplb mean-load",
        "vibe/eplb held-out",
        "layers > 0.1%",
        "worst gap",
    ]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for inst in INSTANCES:
        if args.only and args.only not in inst.name:
            continue
        for kind in args.fleets.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                print("| " + " | ".join(run(inst, kind, seed, args)) + " |", flush=True)


if __name__ == "__main__":
    main()
