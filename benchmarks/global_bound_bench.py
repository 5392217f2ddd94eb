"""How far the placement-free bound (global_bound) sits below each plan's own-replica bound, and
what it costs per layer, on model-shaped instances.

Inputs are SYNTHETIC (vibe_plan.synthetic: both fleet generators, drifting log-normal routing).
Per layer: global_bound's time, its ratio to the vibe plan's own-replica bound
(predicted.lower_bound_us) and to the plan's makespan, and the same ratio for the even-split
variant (global_bound(..., even_split=True)). Prints a markdown table.
Usage: python benchmarks/global_bound_bench.py [--only NAME] [--fleets synthetic,varied]
                                               [--layers N] [--batches 16] [--seed 0]
                                               [--no-group-locality]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from vibe_plan.artifacts import ExpertShape
from vibe_plan.cost import curves_of
from vibe_plan.placement.global_bound import global_bound
from vibe_plan.placement.solve import SolveOptions, solve_placement
from vibe_plan.synthetic import synthetic_gpu_profile, synthetic_routing, varied_gpu_profile


@dataclass(frozen=True)
class Instance:
    name: str
    shape: ExpertShape
    experts: int
    layers: int
    first_moe: int
    groups: int | None
    gpus: int
    redundant: int
    top_k: int = 8


QWEN, DEEPSEEK = ExpertShape(2048, 768), ExpertShape(7168, 2048)
INSTANCES = [
    Instance("qwen3-30b-a3b EP16+16", QWEN, 128, 48, 0, None, 16, 16),
    Instance("deepseek-v3 EP32+32", DEEPSEEK, 256, 58, 3, 8, 32, 32),
    Instance("deepseek-v3 EP256+256", DEEPSEEK, 256, 58, 3, 8, 256, 256),
]


def fleet(inst: Instance, kind: str, seed: int):
    if kind == "synthetic":
        return synthetic_gpu_profile(inst.shape, inst.gpus, 0.1, seed=seed)
    return varied_gpu_profile(inst.shape, inst.gpus, 0.1, seed=seed + 100, outliers=1)


def run(inst: Instance, kind: str, args) -> str:
    gpus = fleet(inst, kind, args.seed)
    layers = min(args.layers or inst.layers, inst.layers)
    routing = synthetic_routing(
        inst.experts,
        layers,
        inst.top_k,
        args.batches,
        512 * inst.gpus,  # tokens per batch grow with the fleet, as in serving
        seed=args.seed + 1,
        num_groups=inst.groups,
        first_moe_layer=inst.first_moe,
    )
    t0 = time.perf_counter()
    opts = SolveOptions(redundant=inst.redundant, jobs=1, group_locality=not args.no_group_locality)
    res = solve_placement(gpus, routing, opts)
    solve_s = time.perf_counter() - t0
    own = np.array(res.placement.predicted["lower_bound_us"])
    span = np.array(res.placement.predicted["makespan_us"])
    curves, load, S = curves_of(gpus), routing.mean_load(), res.problem.slots_per_gpu
    glob, even, secs = np.empty(layers), np.empty(layers), np.empty(layers)
    for layer in range(layers):
        t0 = time.perf_counter()
        glob[layer] = global_bound(load[layer], curves, S)
        secs[layer] = time.perf_counter() - t0
        even[layer] = global_bound(load[layer], curves, S, even_split=True)
    vs_own, vs_span, ev_own = glob / own, glob / span, even / own
    return (
        f"| {inst.name} | {kind} | {layers} | {vs_own.mean():.4f} | {vs_own.min():.4f} "
        f"| {vs_span.mean():.4f} | {ev_own.mean():.4f} | {ev_own.min():.4f} "
        f"| {1e3 * secs.mean():.0f} | {1e3 * secs.max():.0f} | {solve_s / layers:.2f} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", help="substring of the instance name")
    ap.add_argument("--fleets", default="synthetic,varied")
    ap.add_argument("--layers", type=int, help="first N MoE layers only (default: all)")
    ap.add_argument("--batches", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    # The global bound knows no expert groups; vibe's own bound is for its group-to-node choice.
    ap.add_argument("--no-group-locality", action="store_true")
    args = ap.parse_args()
    print(
        "| instance | fleet | layers | global/own mean | min | global/makespan mean "
        "| even-split global/own mean | min | ms/layer mean | max | solve s/layer |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for inst in INSTANCES:
        if args.only and args.only not in inst.name:
            continue
        for kind in args.fleets.split(","):
            print(run(inst, kind, args), flush=True)


if __name__ == "__main__":
    main()
