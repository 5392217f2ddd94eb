"""Where the uncertified gap comes from: on the DeepSeek-V3 EP32+32 instance of solve_bench (with
+-10% spread), or with `--fleet varied` on scale_bench's varied fleet (seed 0), take the layers vibe
could not certify within 0.1%, and on each node subproblem run CP-SAT for long. Prints plan and
bound relative to the LP bound: a better plan found means the heuristic left something; a bound
that moves means the LP bound is loose (no plan can be certified within 0.1% of the LP bound
where CP-SAT proves the optimum is more than 0.1% above it).
Usage: python benchmarks/gap_probe.py [--layers 3] [--seconds 20] [--fleet regular|varied]
                                      [--node N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import scale_bench  # noqa: E402
from solve_bench import INSTANCES  # noqa: E402

from vibe_plan.cost import curves_of, expert_time
from vibe_plan.placement.bounds import lp_bound
from vibe_plan.placement.cpsat import CpSatSettings, solve_layer
from vibe_plan.placement.groups import groups_to_nodes
from vibe_plan.placement.heuristic import replica_counts
from vibe_plan.synthetic import synthetic_gpu_profile, synthetic_routing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--fleet", choices=("regular", "varied"), default="regular")
    ap.add_argument("--node", type=int, default=None, help="only this node of each layer")
    args = ap.parse_args()
    inst = next(i for i in INSTANCES if i.name == "deepseek-v3 EP32+32")
    if args.fleet == "varied":
        big = next(i for i in scale_bench.INSTANCES if i.name == inst.name)
        gpus, _ = scale_bench.fleet(big, "varied", 0)
        routing, _ = scale_bench.routing(big, 0, 16)
    else:
        gpus = synthetic_gpu_profile(inst.shape, inst.gpus, 0.10, seed=0)
        routing = synthetic_routing(
            inst.experts,
            inst.layers,
            inst.top_k,
            32,
            inst.batch_tokens,
            seed=1,
            num_groups=inst.groups,
            first_moe_layer=inst.first_moe,
        )
    plan, res, worst = scale_bench.worst_first(gpus, routing, inst.redundant)
    curves = curves_of(gpus)
    G, S, N, K = 8, res.problem.slots_per_gpu, res.problem.num_nodes, res.problem.num_groups
    size = inst.experts // K
    print("| layer | node | vibe plan vs LP | long CP-SAT plan vs LP | CP-SAT bound vs LP | s |")
    print("|---|---|---|---|---|---|")
    for layer in worst[: args.layers]:
        load = plan.mean_load()[layer]
        row = res.placement.phy2log[layer]
        for n, node in enumerate(groups_to_nodes(load, curves, K, N)):
            if args.node is not None and n != args.node:
                continue
            experts = np.concatenate([np.arange(k * size, (k + 1) * size) for k in node])
            node_curves = curves[n * G : (n + 1) * G]
            cnt = replica_counts(load[experts], G * S, node_curves, G)
            cost = expert_time(node_curves, load[experts] / cnt)
            local = {int(e): i for i, e in enumerate(experts)}
            slots = row[n * G * S : (n + 1) * G * S]
            hint = np.zeros((len(experts), G), dtype=bool)
            hint[[local[int(e)] for e in slots], np.repeat(np.arange(G), S)] = True
            span = float((cost * hint).sum(axis=0).max())
            lp = lp_bound(cost, cnt, S)
            t0 = time.perf_counter()
            out = solve_layer(cost, cnt, S, hint, span, CpSatSettings(args.seconds, 2, 0, 1e-5))
            found = (
                span
                if out.expert_gpus is None
                else float((cost * out.expert_gpus).sum(axis=0).max())
            )
            print(
                f"| {int(res.placement.layer_ids[layer])} | {n} | {span / lp - 1:.3%} | "
                f"{min(found, span) / lp - 1:.3%} | {out.bound_us / lp - 1:.3%} | "
                f"{time.perf_counter() - t0:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
