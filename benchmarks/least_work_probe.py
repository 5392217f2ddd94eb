"""Why vibe does not start from the plan of least total work. Where GPUs' curves differ in shape,
vibe's balance-first plans (LPT, swaps) carry 0.3-0.6% more total work than balance needs, and the
certificate suffers; a second start that uses each GPU's comparative advantage (the least-work plan,
a min-cost flow, balanced by the swaps that add the least work per microsecond taken off the
slowest GPU) fixes much of that, but its plans hold out worse: they stack the large experts on the
GPUs that run them cheapest, so a batch's noise lands on fewer GPUs. This prints, per instance, the
second start's effect (B) against vibe's plan (A) on the mean load the plans are made for, the
certificate, the planning batches one by one (in-sample) and the held-out batches; and what picking
per layer the plan with the better in-sample time would give held out.
Inputs are SYNTHETIC (scale_bench's fleets and routing). Takes 3-5 minutes.
Usage: python benchmarks/least_work_probe.py [--only EP8+8,EP16+16] [--fleets varied,synthetic]
                                            [--seeds 0,2]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import scale_bench  # noqa: E402

from vibe_plan.cost import EVEN, curves_of, slot_gpu_times
from vibe_plan.cost.dispatch import slot_tokens
from vibe_plan.placement import layer, solve
from vibe_plan.placement.heuristic import gpu_finish, local_search, single_swaps
from vibe_plan.placement.solve import SolveOptions, solve_placement

_UNITS = 1 << 24  # min-cost flow costs are integers: the costliest cell gets this many units


def least_work(cost: np.ndarray, logcnt: np.ndarray, slots: int) -> np.ndarray:
    """The plan of least total time, S items per GPU and an expert's replicas on distinct GPUs:
    GPU of each item [sum(logcnt)], replicas of an expert adjacent (as `items_of`)."""
    from ortools.graph.python import min_cost_flow

    E, G = cost.shape
    flow = min_cost_flow.SimpleMinCostFlow()
    source, sink = E + G, E + G + 1
    experts, gpus = np.arange(E), E + np.arange(G)
    flow.add_arcs_with_capacity_and_unit_cost(
        np.concatenate([np.full(E, source), np.repeat(experts, G), gpus]),
        np.concatenate([experts, np.tile(gpus, E), np.full(G, sink)]),
        np.concatenate([logcnt, np.ones(E * G, dtype=np.int64), np.full(G, slots)]),
        np.concatenate(
            [
                np.zeros(E, dtype=np.int64),
                np.rint(cost.ravel() * (_UNITS / float(cost.max()))).astype(np.int64),
                np.zeros(G, dtype=np.int64),
            ]
        ),
    )
    total = int(logcnt.sum())
    flow.set_node_supply(source, total)
    flow.set_node_supply(sink, -total)
    if flow.solve() != flow.OPTIMAL:
        raise RuntimeError("min-cost flow found no plan; the slot count was checked before")
    used = flow.flows(np.arange(E, E + E * G)).reshape(E, G)
    return np.nonzero(used)[1]  # row-major: each expert's GPUs in order, as items_of lists them


def balance_by_least_work(
    p: np.ndarray, item_expert: np.ndarray, item_gpu: np.ndarray, num_gpus: int
) -> np.ndarray:
    """Lower the slowest GPU by single swaps that bring both GPUs below the current maximum,
    taking each time the one that adds the least total work per unit taken off the maximum
    (the makespan descent would take the one with the lowest new maximum). Ends as that does."""
    item_gpu = item_gpu.copy()
    dom = np.arange(num_gpus)
    fixed = np.zeros(len(item_gpu), dtype=bool)
    E = int(item_expert.max()) + 1
    for _ in range(len(item_gpu) * num_gpus):
        finish = gpu_finish(p, item_gpu, num_gpus)
        holds = np.zeros((num_gpus, E), dtype=bool)
        holds[item_gpu, item_expert] = True
        mine, others, new_g, new_h, legal = single_swaps(
            p, item_expert, item_gpu, finish, holds, dom, fixed
        )
        top = finish.max()
        gain = top - np.maximum(new_g, new_h)
        legal &= gain > top * 1e-9
        if not legal.any():
            break
        added = new_g + new_h - top - finish[item_gpu[others]][None, :]
        price = np.where(legal, added / np.where(legal, gain, 1.0), np.inf)
        a, b = np.unravel_index(int(np.argmin(price)), price.shape)
        i, j = mine[a], others[b]
        item_gpu[i], item_gpu[j] = item_gpu[j], item_gpu[i]
    return item_gpu


ORIGINAL = layer.improve_layer


def improve_from_least_work(start, *args, **kwargs):
    """`layer.improve_layer`, but from the better of vibe's start and the least-work one (after a
    full local search each), where no node rule applies."""
    if start.node_of is None:
        p = start.cost[start.item_expert]
        G = len(start.curves)
        second = least_work(start.cost, start.logcnt, start.slots)
        second = local_search(
            p, start.item_expert, balance_by_least_work(p, start.item_expert, second, G), G
        )
        first = local_search(p, start.item_expert, start.item_gpu, G)
        spans = [float(gpu_finish(p, plan, G).max()) for plan in (first, second)]
        best = int(np.argmin(spans))
        start = replace(start, item_gpu=(first, second)[best], makespan_us=spans[best])
    return ORIGINAL(start, *args, **kwargs)


def layer_spans(gpus, prof, placement) -> np.ndarray:
    """Mean over the profile's batches of each layer's slowest GPU: [L]."""
    lids = [int(x) for x in prof.layer_ids]
    tokens = slot_tokens(placement.phy2log, prof.counts, placement.num_gpus, EVEN, lids)
    return slot_gpu_times(curves_of(gpus), tokens).max(axis=2).mean(axis=0)


def run(inst, kind: str, seed: int) -> str:
    gpus, note = scale_bench.fleet(inst, kind, seed)
    prof, drift = scale_bench.routing(inst, seed, 16)
    plan, held = prof.split(0.25)
    out = []
    for patched in (False, True):
        fn = improve_from_least_work if patched else ORIGINAL
        layer.improve_layer = solve.improve_layer = fn  # workers fork after this
        res = solve_placement(gpus, plan, SolveOptions(redundant=inst.redundant))
        pr = res.placement.predicted
        mean_load = np.array(pr["makespan_us"])
        gap = mean_load / np.array(pr["lower_bound_us"]) - 1
        out.append(
            (
                mean_load,
                gap,
                layer_spans(gpus, plan, res.placement),
                layer_spans(gpus, held, res.placement),
            )
        )
    layer.improve_layer = solve.improve_layer = ORIGINAL
    (ma, ga, ia, ha), (mb, gb, ib, hb) = out
    picked = np.where(ib < ia, hb, ha)
    above = f"{int((ga > 1e-3).sum())} -> {int((gb > 1e-3).sum())}"
    return (
        f"| {inst.name} | {kind} {note} drift {drift} seed {seed} | {mb.sum() / ma.sum():.4f} | "
        f"{above} | {ga.max():.3%} -> {gb.max():.3%} | "
        f"{ib.sum() / ia.sum():.4f} | {hb.sum() / ha.sum():.4f} | {picked.sum() / ha.sum():.4f} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", default="EP8+8,EP16+16,EP32+32,EP64+64")
    ap.add_argument("--fleets", default="varied,synthetic")
    ap.add_argument("--seeds", default="0,2")
    args = ap.parse_args()
    wanted = args.only.split(",")
    print(
        "| instance | fleet | B/A mean load | layers > 0.1% A -> B | worst gap A -> B | "
        "B/A in-sample | B/A held-out | picked by in-sample / A held-out |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for inst in scale_bench.INSTANCES:
        if not any(inst.name.endswith(" " + w) for w in wanted):
            continue
        for kind in args.fleets.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                print(run(inst, kind, seed), flush=True)


if __name__ == "__main__":
    main()
