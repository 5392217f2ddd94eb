"""Plan one MoE layer on a set of GPUs: heuristic start, then CP-SAT where bounds are not tight."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vibe_plan.placement.bounds import lower_bound, lp_bound
from vibe_plan.placement.cost import TimeCurve, expert_time
from vibe_plan.placement.cpsat import CpSatSettings, solve_layer
from vibe_plan.placement.heuristic import (
    gpu_finish,
    items_of,
    iterated_local_search,
    local_search,
    lpt,
    replica_counts,
)


@dataclass(frozen=True)
class LayerPlan:
    phy2log: np.ndarray  # [G*S] logical expert per slot, GPU-major
    makespan_us: float
    lower_bound_us: float
    heuristic_us: float  # makespan of the start plan, before CP-SAT
    status: str  # what certified it: "bound" (analytic), "lp" (LP relaxation), "cpsat-<status>"


def plan_layer(
    load: np.ndarray,
    curves: list[TimeCurve],
    slots: int,
    settings: CpSatSettings,
    target_gap: float = 1e-3,
    ils_iters: int = 100,
) -> LayerPlan:
    G = len(curves)
    logcnt = replica_counts(load, G * slots, curves, max_per_expert=G)
    item_expert = items_of(logcnt)
    cost = expert_time(curves, load / logcnt)  # [E, G], one replica of e on g
    p = cost[item_expert]
    # Cheapest first: single swaps, then the bounds, then double swaps and kicks only if needed.
    first = lpt(p, item_expert, G, slots, (load / logcnt)[item_expert])
    item_gpu = local_search(p, item_expert, first, G, doubles=False)
    makespan = float(gpu_finish(p, item_gpu, G).max())
    bound = lower_bound(p, slots)
    status = "bound"
    if makespan > bound * (1 + target_gap):
        bound = max(bound, lp_bound(cost, logcnt, slots))
        status = "lp"
    if makespan > bound * (1 + target_gap):
        item_gpu = local_search(p, item_expert, item_gpu, G)
        item_gpu = iterated_local_search(
            p, item_expert, item_gpu, G, bound * (1 + target_gap), ils_iters, seed=settings.seed
        )
        makespan = float(gpu_finish(p, item_gpu, G).max())
    start = makespan
    expert_gpus = np.zeros((len(load), G), dtype=bool)
    expert_gpus[item_expert, item_gpu] = True
    if makespan > bound * (1 + target_gap) and settings.time_limit > 0:
        res = solve_layer(cost, logcnt, slots, expert_gpus, makespan, settings)
        status = "cpsat-" + res.status.lower()
        bound = max(bound, min(res.bound_us, makespan))
        if res.expert_gpus is not None:
            found = float((cost * res.expert_gpus).sum(axis=0).max())
            # Keep our own plan unless CP-SAT's is really better under the float cost model.
            if found < makespan:
                makespan, expert_gpus = found, res.expert_gpus
    return LayerPlan(gpu_major(expert_gpus), makespan, bound, start, status)


def gpu_major(expert_gpus: np.ndarray) -> np.ndarray:
    """bool [E, G] -> slot map [G*S], each GPU's experts in increasing id."""
    return np.concatenate([np.flatnonzero(expert_gpus[:, g]) for g in range(expert_gpus.shape[1])])
