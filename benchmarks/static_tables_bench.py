"""What SGLang's exact static tables cost vibe to replay: wall time of `rank_split` for eplb plans
(groups kept in nodes where they divide, so most ranks draw) of a DeepSeek-V3-shaped model (256
experts, 58 MoE layers of 61) from 32 to 256 GPUs, and whether the replay stayed exact or hit the
draw budget (MAX_DRAW_STEPS) and took the draws at their expectation.
Usage: python benchmarks/static_tables_bench.py [--gpus 32,64,128,256]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from vibe_plan.cost.dispatch import MAX_DRAW_STEPS, Dispatch, rank_split
from vibe_plan.placement.eplb import rebalance_experts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gpus", default="32,64,128,256")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"draw budget: {MAX_DRAW_STEPS:,} generator steps")
    print("| GPUs | nodes | wall s | exact |")
    print("|---|---|---|---|")
    for G in (int(x) for x in args.gpus.split(",")):
        E, N, L = 256, G // 8, 58
        weight = rng.lognormal(0.0, 1.0, (L, E))
        groups, nodes = (8, N) if 8 % N == 0 else (1, 1)
        phy2log, _, _ = rebalance_experts(weight, E + G, groups, nodes, G)
        t0 = time.perf_counter()
        _, exact = rank_split(phy2log, G, Dispatch("static", N, None, 61), list(range(3, 61)))
        print(f"| {G} | {N} | {time.perf_counter() - t0:.1f} | {exact} |", flush=True)


if __name__ == "__main__":
    main()
