"""Plan one MoE layer on a set of GPUs: heuristic start, then CP-SAT where bounds are not tight."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from vibe_plan.cost import TimeCurve, expert_time
from vibe_plan.defaults import TARGET_GAP
from vibe_plan.placement.bounds import lower_bound, lp_relaxation
from vibe_plan.placement.config_bound import (
    CONFIG_MAX_WORK,
    LARGE_MAX_WORK,
    LARGE_SLACK,
    SLACK,
    config_bound,
    config_work,
)
from vibe_plan.placement.cpsat import CpSatSettings, solve_layer
from vibe_plan.placement.heuristic import (
    gpu_finish,
    items_of,
    iterated_local_search,
    local_search,
    lpt,
    replica_counts,
)

# Above this many (expert, GPU) cells the GLOP LP takes seconds per layer (9 s at 256 x 256) and
# CP-SAT cannot even finish its presolve in the default budget: the analytic bounds and the local
# search are all that pay there. A size rule, not a clock, so plans stay reproducible.
EXACT_MAX_CELLS = 16_384
CPSAT_MAX_GAP = 1.5e-3  # see cpsat_can_close
# From this budget (deterministic seconds per layer or node) CP-SAT runs wherever the plan is not
# certified: at 1 s it took the varied EP32+32 fleet's worst layer from 0.58% to 0.37% above its
# bound, where 0.1 s runs moved nothing (benchmarks/scale_bench.py --time-limit 1).
CPSAT_LONG_S = 1.0


@dataclass(frozen=True)
class LayerPlan:
    phy2log: np.ndarray  # [G*S] logical expert per slot, GPU-major
    makespan_us: float
    lower_bound_us: float
    heuristic_us: float  # makespan of the start plan, before CP-SAT
    # what gave the bound: "bound" (analytic), "lp" (LP relaxation) or "cpsat-<status>", with
    # "+config" where the configuration bound (a GPU holds S whole items) then raised it
    status: str


@dataclass
class LayerStart:
    """A layer's cheap start plan and bound, before the search that may improve it."""

    load: np.ndarray
    curves: list[TimeCurve]
    slots: int
    node_of: np.ndarray | None
    logcnt: np.ndarray  # replicas per expert
    item_expert: np.ndarray  # expert of each replica
    cost: np.ndarray  # [E, G], one replica of e on g
    item_gpu: np.ndarray  # GPU of each replica
    makespan_us: float
    lower_bound_us: float
    status: str
    exact: bool  # small enough for the LP and CP-SAT
    prices: np.ndarray | None = None  # the LP's expert prices, where the LP ran


def plan_layer(
    load: np.ndarray,
    curves: list[TimeCurve],
    slots: int,
    settings: CpSatSettings,
    target_gap: float = TARGET_GAP,
    ils_iters: int = 100,
    node_of: np.ndarray | None = None,
    max_per_expert: int | None = None,
) -> LayerPlan:
    """Plan one layer. `node_of[g]`: node of GPU g, when no node may hold two replicas of one
    expert (default: each GPU its own node). `max_per_expert`: replica cap (default: G, or the
    node count with `node_of`)."""
    start = start_layer(load, curves, slots, target_gap, node_of, max_per_expert)
    return tighten_bound(start, improve_layer(start, settings, target_gap, ils_iters), target_gap)


def start_layer(
    load: np.ndarray,
    curves: list[TimeCurve],
    slots: int,
    target_gap: float = TARGET_GAP,
    node_of: np.ndarray | None = None,
    max_per_expert: int | None = None,
) -> LayerStart:
    """Replica counts, a greedy plan improved by single swaps, and the analytic bound (the LP
    bound too where the greedy plan is not within `target_gap` of it)."""
    G = len(curves)
    domains = G if node_of is None else len(np.unique(node_of))
    cap = min(G if max_per_expert is None else max_per_expert, domains)
    _check_fits(len(load), slots, curves, node_of)
    logcnt = replica_counts(load, G * slots, curves, max_per_expert=cap)
    item_expert = items_of(logcnt)
    cost = expert_time(curves, load / logcnt)
    p = cost[item_expert]
    # Cheapest first: single swaps, then the bounds, then double swaps and kicks only if needed.
    first = lpt(p, item_expert, G, slots, (load / logcnt)[item_expert], node_of=node_of)
    item_gpu = local_search(p, item_expert, first, G, doubles=False, node_of=node_of)
    makespan = float(gpu_finish(p, item_gpu, G).max())
    bound = lower_bound(p, slots, item_expert)
    status = "bound"
    exact = cost.size <= EXACT_MAX_CELLS
    prices = None
    if makespan > bound * (1 + target_gap) and exact:
        lp = lp_relaxation(cost, logcnt, slots, node_of=node_of)
        bound, prices = max(bound, lp.bound), lp.prices
        status = "lp" if prices is not None else status  # None: GLOP stopped at its cap
    return LayerStart(
        load,
        curves,
        slots,
        node_of,
        logcnt,
        item_expert,
        cost,
        item_gpu,
        makespan,
        bound,
        status,
        exact,
        prices,
    )


def improve_layer(
    start: LayerStart,
    settings: CpSatSettings,
    target_gap: float = TARGET_GAP,
    ils_iters: int = 100,
    accept_us: float = 0.0,
) -> LayerPlan:
    """Local search, then CP-SAT where it can close the gap, until the plan is within
    `target_gap` of the bound or at most `accept_us` (a makespan the caller cannot use lower, such
    as a slower part of the same layer's plan). The search is seeded and stops at the first plan
    under its target, so a higher `accept_us` only cuts the same search short."""
    G, slots, node_of = len(start.curves), start.slots, start.node_of
    cost, logcnt, item_expert = start.cost, start.logcnt, start.item_expert
    p = cost[item_expert]
    item_gpu, makespan, bound = start.item_gpu, start.makespan_us, start.lower_bound_us
    target = max(bound * (1 + target_gap), accept_us)
    if makespan > bound * (1 + target_gap):
        # One full descent even under `accept_us`: cheap, and the slack it leaves on parts that
        # do not set the makespan is what absorbs batches that drift from the mean load.
        item_gpu = local_search(p, item_expert, item_gpu, G, node_of=node_of)
        makespan = float(gpu_finish(p, item_gpu, G).max())
    if makespan > target:
        item_gpu = iterated_local_search(
            p,
            item_expert,
            item_gpu,
            G,
            target,
            ils_iters,
            seed=settings.seed,
            node_of=node_of,
        )
        makespan = float(gpu_finish(p, item_gpu, G).max())
    heuristic = makespan
    status = start.status
    expert_gpus = np.zeros((len(start.load), G), dtype=bool)
    expert_gpus[item_expert, item_gpu] = True
    exact = start.exact and settings.time_limit > 0 and makespan > target
    if exact:
        exact = cpsat_can_close(cost, slots, makespan / bound - 1, settings.time_limit)
    if exact:
        res = solve_layer(cost, logcnt, slots, expert_gpus, makespan, settings, node_of=node_of)
        status = "cpsat-" + res.status.lower()
        bound = max(bound, min(res.bound_us, makespan))
        if res.expert_gpus is not None:
            found = float((cost * res.expert_gpus).sum(axis=0).max())
            # Keep our own plan unless CP-SAT's is really better under the float cost model.
            if found < makespan:
                makespan, expert_gpus = found, res.expert_gpus
    return LayerPlan(gpu_major(expert_gpus), makespan, bound, heuristic, status)


def tighten_bound(start: LayerStart, plan: LayerPlan, target_gap: float = TARGET_GAP) -> LayerPlan:
    """Raise the bound of a plan still more than `target_gap` above it with the configuration
    bound (0.03-0.2% above the LP on 8-GPU nodes of 9 slots, where the LP's fractional balance is
    out of reach), where the LP ran and the knapsacks are small. Node constraints (`node_of`) are
    left out of it, which keeps it valid."""
    if plan.makespan_us <= plan.lower_bound_us * (1 + target_gap):
        return plan
    work = config_work(start.cost, start.slots)
    if start.prices is not None and work <= CONFIG_MAX_WORK:
        prices, slack = start.prices, SLACK
    elif not start.exact and work <= LARGE_MAX_WORK:
        # No LP here: each expert priced at its mean time lands 0.07-0.3% below the LP bound on
        # EP128 layers, in a quarter to a ninth of the LP's time (benchmarks/large_bound_bench.py).
        prices, slack = start.cost.mean(axis=1), LARGE_SLACK
    else:
        return plan
    bound = config_bound(
        start.cost,
        start.logcnt,
        start.slots,
        prices,
        plan.lower_bound_us,
        plan.makespan_us,
        slack,
    )
    if bound <= plan.lower_bound_us:
        return plan
    return replace(plan, lower_bound_us=bound, status=plan.status + "+config")


def cpsat_can_close(cost: np.ndarray, slots: int, gap: float, time_limit: float) -> bool:
    """Where CP-SAT's budget has closed gaps in our benchmarks: gaps it can close by raising the
    bound (by 0.01-0.1% in 0.1 s), one or two slots per GPU (an assignment problem), GPUs whose
    costs are all alike (a symmetric plateau that local search cannot leave), or any gap once the
    budget is long (`CPSAT_LONG_S`). Elsewhere a 0.1 s run moved neither plan nor bound on any
    benchmark instance, at 40-50% of the solve time."""
    if time_limit >= CPSAT_LONG_S:
        return True
    spread = float((cost.max(axis=1) / np.maximum(cost.min(axis=1), 1e-12)).max())
    return gap <= CPSAT_MAX_GAP or slots <= 2 or spread <= 1.01


def _check_fits(num_experts: int, slots: int, curves: list, node_of: np.ndarray | None) -> None:
    """A node's slots must hold distinct experts."""
    if node_of is None:
        return
    node_of = np.asarray(node_of)
    if len(node_of) != len(curves):
        raise ValueError(f"node_of has {len(node_of)} entries for {len(curves)} GPUs")
    biggest = int(np.unique(node_of, return_counts=True)[1].max())
    if biggest * slots > num_experts:
        raise ValueError(
            f"a node of {biggest} GPUs x {slots} slots needs more than the {num_experts} experts "
            "to hold no expert twice"
        )


def gpu_major(expert_gpus: np.ndarray) -> np.ndarray:
    """bool [E, G] -> slot map [G*S], each GPU's experts in increasing id."""
    return np.concatenate([np.flatnonzero(expert_gpus[:, g]) for g in range(expert_gpus.shape[1])])
