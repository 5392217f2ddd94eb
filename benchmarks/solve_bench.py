"""Solve quality and speed on model-shaped instances: vibe vs eplb vs linear under one cost model.

Inputs are SYNTHETIC (vibe_plan.synthetic: roofline curves, drawn per-GPU speeds, log-normal
routing skew with per-batch drift). Plans use the first 75% of batches; "held-out" scores the rest.
Prints a markdown table; ratios are against eplb computed in the same process.
Usage: python benchmarks/solve_bench.py [--only NAME] [--batches 32] [--time-limit 0.1]
                                        [--spreads 0,0.1]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from vibe_plan.artifacts import ExpertShape
from vibe_plan.placement.evaluate import score
from vibe_plan.placement.solve import SolveOptions, solve_placement
from vibe_plan.synthetic import synthetic_gpu_profile, synthetic_routing


@dataclass(frozen=True)
class Instance:
    name: str
    shape: ExpertShape
    experts: int
    top_k: int
    layers: int
    first_moe: int
    groups: int | None
    gpus: int
    redundant: int
    batch_tokens: int


INSTANCES = [
    Instance("mixtral-8x7b EP8", ExpertShape(4096, 14336), 8, 2, 32, 0, None, 8, 0, 8192),
    Instance("qwen3-30b-a3b EP8", ExpertShape(2048, 768), 128, 8, 48, 0, None, 8, 0, 8192),
    Instance("qwen3-30b-a3b EP16+16", ExpertShape(2048, 768), 128, 8, 48, 0, None, 16, 16, 16384),
    Instance("deepseek-v3 EP32+32", ExpertShape(7168, 2048), 256, 8, 58, 3, 8, 32, 32, 16384),
    Instance("deepseek-v3 EP64+64", ExpertShape(7168, 2048), 256, 8, 58, 3, 8, 64, 64, 32768),
    # Decode-sized batches: ~64 tokens per expert, below the knee, where memory speed rules.
    Instance("deepseek-v3 EP32+32 decode", ExpertShape(7168, 2048), 256, 8, 58, 3, 8, 32, 32, 2048),
]


def speed_range(gpus) -> float:
    """Fleet's slowest / fastest GPU time at the largest profiled token count."""
    t = np.array([g.curve.time_us[-1] for g in gpus.gpus])
    return float(t.max() / t.min())


def run(inst: Instance, spread: float, batches: int, seed: int, time_limit: float) -> dict:
    gpus = synthetic_gpu_profile(inst.shape, inst.gpus, spread, seed=seed)
    routing = synthetic_routing(
        inst.experts,
        inst.layers,
        inst.top_k,
        batches,
        inst.batch_tokens,
        seed=seed + 1,
        num_groups=inst.groups,
        first_moe_layer=inst.first_moe,
    )
    plan, held = routing.split(0.25)
    row = {"instance": inst.name, "spread": f"+-{spread:.0%}", "max/min": speed_range(gpus)}
    results = {}
    for method in ("vibe", "eplb", "linear"):
        t0 = time.perf_counter()
        opts = SolveOptions(method=method, redundant=inst.redundant, time_limit=time_limit)
        res = solve_placement(gpus, plan, opts)
        wall = time.perf_counter() - t0
        pr = res.placement.predicted
        span = np.array(pr["makespan_us"])
        bound = np.array(pr["lower_bound_us"])
        results[method] = {
            "mean_load": float(span.sum()),
            "held_out": score(method, gpus, held, res.placement).mean_us,
            "worst_gap": float((span / bound - 1).max()),
            "over": int(((span / bound - 1) > 1e-3).sum()),
            "wall": wall,
        }
    v, e, lin = results["vibe"], results["eplb"], results["linear"]
    row.update(
        {
            "vibe/eplb mean-load": v["mean_load"] / e["mean_load"],
            "vibe/eplb held-out": v["held_out"] / e["held_out"],
            "linear/eplb held-out": lin["held_out"] / e["held_out"],
            "vibe worst layer gap": v["worst_gap"],
            "layers > 0.1%": f"{v['over']}/{inst.layers}",
            "vibe wall s": v["wall"],
        }
    )
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", default=None, help="run instances whose name contains this")
    ap.add_argument("--batches", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-limit", type=float, default=0.1, help="CP-SAT budget, as in solve")
    ap.add_argument("--spreads", default="0,0.1", help="comma-separated GPU speed spreads")
    args = ap.parse_args()
    cols = [
        "instance",
        "spread",
        "max/min",
        "vibe/eplb mean-load",
        "vibe/eplb held-out",
        "linear/eplb held-out",
        "vibe worst layer gap",
        "layers > 0.1%",
        "vibe wall s",
    ]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for inst in INSTANCES:
        if args.only and args.only not in inst.name:
            continue
        for spread in (float(x) for x in args.spreads.split(",")):
            r = run(inst, spread, args.batches, args.seed, args.time_limit)
            cells = [r["instance"], r["spread"], f"{r['max/min']:.3f}"]
            cells += [f"{r[c]:.4f}" for c in cols[3:6]]
            cells += [f"{r['vibe worst layer gap']:.3%}", r["layers > 0.1%"]]
            cells += [f"{r['vibe wall s']:.1f}"]
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
