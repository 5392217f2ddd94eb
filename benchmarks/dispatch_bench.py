"""Plans scored under the split the engine really makes: per dispatch rule, vibe planned for that
rule vs vibe planned for an even split (n/r) vs eplb, all scored under the rule on held-out batches.

Inputs are SYNTHETIC and deliberately not shaped like the built-in roofline fleet
(`varied_gpu_profile`: drawn tile step, floor and overhead, per-point noise, slow outliers).
Plans use the first 75% of the batches; the scores are on the rest. Ratios are against eplb in
the same process. Also prints how far the plan's own prediction (the mean load under the rule)
is from the held-out time, and how uneven the rule's split is (the most loaded replica's share
over n/r).
Usage: python benchmarks/dispatch_bench.py [--only NAME] [--rules even,static,local,lp]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from vibe_plan.artifacts import ExpertShape
from vibe_plan.cost.dispatch import Dispatch, even_shares, slot_tokens
from vibe_plan.placement.evaluate import score
from vibe_plan.placement.solve import SolveOptions, solve_placement
from vibe_plan.synthetic import synthetic_routing, varied_gpu_profile


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
    batch_tokens: int
    spread: float
    outliers: int
    group_locality: bool = True


INSTANCES = [
    Instance(
        "qwen3-30b EP16+16 2 nodes +-5%",
        ExpertShape(2048, 768),
        128,
        48,
        0,
        None,
        16,
        16,
        16384,
        0.05,
        0,
    ),
    Instance(
        "deepseek-v3 EP32+32 4 nodes 2 outliers, groups",
        ExpertShape(7168, 2048),
        256,
        58,
        3,
        8,
        32,
        32,
        16384,
        0.05,
        2,
    ),
    Instance(
        "deepseek-v3 EP32+32 4 nodes 2 outliers, no groups",
        ExpertShape(7168, 2048),
        256,
        58,
        3,
        8,
        32,
        32,
        16384,
        0.05,
        2,
        False,
    ),
    # Many nodes, few replicas per expert: ranks on nodes without a replica still draw.
    Instance(
        "deepseek-v3 EP128+128 16 nodes 2 outliers",
        ExpertShape(7168, 2048),
        256,
        58,
        3,
        8,
        128,
        128,
        65536,
        0.05,
        2,
    ),
]


def worst_replica(placement, load: np.ndarray, d: Dispatch, layer_ids) -> float:
    """The most loaded replica's share of its expert over 1/r (1.0: the split is even)."""
    tok = slot_tokens(placement.phy2log, load[None], placement.num_gpus, d, layer_ids)[0]
    even = load[np.arange(len(load))[:, None], placement.phy2log] * even_shares(placement.phy2log)
    rep = np.stack([np.bincount(r, minlength=load.shape[1])[r] > 1 for r in placement.phy2log])
    ratio = np.where(rep & (even > 0), tok / np.where(even > 0, even, 1), 1.0)
    return float(ratio.max())


def run(inst: Instance, rules: list[str], seed: int) -> list[dict]:
    gpus = varied_gpu_profile(inst.shape, inst.gpus, inst.spread, seed=seed, outliers=inst.outliers)
    routing = synthetic_routing(
        inst.experts,
        inst.layers,
        8,
        32,
        inst.batch_tokens,
        seed=seed + 1,
        num_groups=inst.groups,
        first_moe_layer=inst.first_moe,
        drift=0.3,
    )
    plan, held = routing.split(0.25)
    lids = [int(x) for x in routing.layer_ids]
    N = inst.gpus // 8
    rows = []
    even_plan = solve_placement(
        gpus, plan, SolveOptions(redundant=inst.redundant, group_locality=inst.group_locality)
    )
    for rule in rules:
        d = Dispatch(rule, N, None, routing.num_hidden_layers)
        t0 = time.perf_counter()
        for_rule = solve_placement(
            gpus,
            plan,
            SolveOptions(
                redundant=inst.redundant, group_locality=inst.group_locality, dispatch=rule
            ),
        )
        wall = time.perf_counter() - t0
        eplb = solve_placement(gpus, plan, SolveOptions(method="eplb", redundant=inst.redundant))
        s = {
            k: score(k, gpus, held, p.placement, d)
            for k, p in [("rule", for_rule), ("even", even_plan), ("eplb", eplb)]
        }
        predicted = float(np.sum(for_rule.placement.predicted["makespan_us"]))
        rows.append(
            {
                "instance": inst.name,
                "rule": rule,
                "vibe(rule)/eplb mean": s["rule"].mean_us / s["eplb"].mean_us,
                "vibe(rule)/eplb p95": s["rule"].p95_us / s["eplb"].p95_us,
                "vibe(n/r)/eplb mean": s["even"].mean_us / s["eplb"].mean_us,
                "vibe(n/r)/eplb p95": s["even"].p95_us / s["eplb"].p95_us,
                "predicted/held-out": predicted / s["rule"].mean_us,
                "worst replica vibe(rule)": worst_replica(
                    for_rule.placement, plan.mean_load(), d, lids
                ),
                "worst replica vibe(n/r)": worst_replica(
                    even_plan.placement, plan.mean_load(), d, lids
                ),
                "worst replica eplb": worst_replica(eplb.placement, plan.mean_load(), d, lids),
                "solve s": wall,
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", default=None, help="run instances whose name contains this")
    ap.add_argument("--rules", default="even,static,local,lp")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cols = None
    for inst in INSTANCES:
        if args.only and args.only not in inst.name:
            continue
        for r in run(inst, args.rules.split(","), args.seed):
            if cols is None:
                cols = list(r)
                print("| " + " | ".join(cols) + " |")
                print("|" + "---|" * len(cols))
            cells = [f"{v:.4f}" if isinstance(v, float) else str(v) for v in r.values()]
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
