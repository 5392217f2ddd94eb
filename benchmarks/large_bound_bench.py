"""The bound on layers too large for the LP (EP128 and up): on scale_bench's DeepSeek-V3
EP128+128 fleets, the layers vibe certifies worst, with the analytic bound, the LP relaxation
(which `vibe solve` skips there: seconds per layer) and the configuration bound priced at each
expert's mean time (what `vibe solve` runs there). Bounds are relative to the analytic one.
Usage: python benchmarks/large_bound_bench.py [--layers 3] [--fleets synthetic,varied]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scale_bench

from vibe_plan.cost import curves_of, expert_time
from vibe_plan.placement.bounds import lower_bound, lp_relaxation
from vibe_plan.placement.config_bound import LARGE_SLACK, config_bound
from vibe_plan.placement.heuristic import items_of


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--fleets", default="synthetic,varied")
    args = ap.parse_args()
    inst = next(i for i in scale_bench.INSTANCES if i.name == "deepseek-v3 EP128+128")
    print("| fleet | layer | plan | LP | LP s | configuration (mean prices) | config s |")
    print("|---|---|---|---|---|---|---|")
    for kind in args.fleets.split(","):
        gpus, note = scale_bench.fleet(inst, kind, 0)
        routing, _ = scale_bench.routing(inst, 0, 16)
        plan, res, worst = scale_bench.worst_first(gpus, routing, inst.redundant)
        pr = res.placement.predicted
        curves, S = curves_of(gpus), res.problem.slots_per_gpu
        for layer in worst[: args.layers]:
            load = plan.mean_load()[layer]
            cnt = np.bincount(res.placement.phy2log[layer], minlength=len(load))
            cost = expert_time(curves, load / np.maximum(cnt, 1))
            items = items_of(cnt)
            base = lower_bound(cost[items], S, items)
            span = pr["makespan_us"][layer]
            t0 = time.perf_counter()
            lp = lp_relaxation(cost, cnt, S).bound
            t1 = time.perf_counter()
            cfg = config_bound(cost, cnt, S, cost.mean(axis=1), base, span, LARGE_SLACK)
            t2 = time.perf_counter()
            print(
                f"| {kind} {note} | {int(res.placement.layer_ids[layer])} | "
                f"{span / base - 1:+.3%} | {lp / base - 1:+.3%} | {t1 - t0:.2f} | "
                f"{cfg / base - 1:+.3%} | {t2 - t1:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
