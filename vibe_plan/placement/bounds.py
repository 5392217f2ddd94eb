"""Lower bounds on one layer's makespan, for given items (replicas with their loads).

Every GPU holds exactly S items; item costs differ by GPU (`p[i, g]`). The bounds are:
work over speed, the largest single item, the cardinality bound, the pairing bound (the costliest
items outnumber the GPUs, so many GPUs hold two of them) and, where the items' experts are known,
the crowding bound (no GPU holds two replicas of one expert).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vibe_plan.cost import TimeCurve, expert_time

CROWD_MAX_K = 4  # the crowding bound tries 2..4 heavy experts forced onto one GPU
# GLOP gets a deterministic iteration cap: our LPs take about 0.2 simplex iterations per variable
# and row (2,855 at 256 x 64), but on one degenerate 10 x 5 instance GLOP ran for minutes. Past
# the cap the LP simply gives no bound.
GLOP_ITERS_PER_ROW = 4
GLOP_MIN_ITERS = 1000


def work_bound(p: np.ndarray) -> float:
    """Total work over total speed, with each GPU's speed taken at its most favourable ratio to a
    reference GPU so the bound stays valid for curves that are not proportional."""
    best = 0.0
    col = p.sum(axis=0)
    # Any reference gives a valid bound; the fastest and the slowest GPU are the informative ones.
    for ref in sorted({int(col.argmin()), int(col.argmax())}):
        w = p[:, ref]
        ok = w > 0
        if not ok.any():
            return 0.0
        # p[i, g] >= w_i / speed_g for all i; a GPU that runs some item for free (a curve at 0
        # where the reference's is not) has infinite speed, and the bound from this reference is 0.
        with np.errstate(divide="ignore"):
            speed = (w[ok, None] / p[ok, :]).max(axis=0)
        best = max(best, float(w.sum() / speed.sum()))
    return best


def item_bound(p: np.ndarray) -> float:
    """The largest item on the GPU where it is cheapest."""
    return float(p.min(axis=1).max())


def cardinality_bound(p: np.ndarray, slots_per_gpu: int) -> float:
    """Each GPU holds S items: the GPU holding the largest item also holds S-1 others, and every GPU
    takes at least its S cheapest items."""
    n, G = p.shape
    S = slots_per_gpu
    small = np.sort(p, axis=0)
    floor_any = float(small[:S].sum(axis=0).min())
    big = int(p.min(axis=1).argmax())
    rest = np.sort(np.delete(p, big, axis=0), axis=0)[: S - 1].sum(axis=0)
    return max(floor_any, float((p[big] + rest).min()))


def crowding_bound(p: np.ndarray, item_expert: np.ndarray, slots_per_gpu: int) -> float:
    """The R replicas of the j heaviest experts fill G GPUs at most one per expert each, so some
    GPU holds ceil(R / G) of them, and S - ceil(R / G) items of other experts. Its time is at least
    that of the cheapest such set on the cheapest GPU. Catches hot experts whose replicas must
    share GPUs (five and four replicas on eight GPUs), which the LP spreads fractionally."""
    G = p.shape[1]
    S = slots_per_gpu
    by_expert = np.argsort(item_expert, kind="stable")
    experts, first = np.unique(item_expert[by_expert], return_index=True)
    # An expert's cheapest replica on each GPU (a dispatch rule may split it unevenly).
    cheapest = np.minimum.reduceat(p[by_expert], first, axis=0)  # [experts present, G]
    replicas = np.diff(np.append(first, len(item_expert)))
    E = len(experts)
    order = np.argsort(-cheapest.min(axis=1), kind="stable")
    crowd = -(-np.cumsum(replicas[order]) // G)  # ceil(R_j / G) for each prefix j
    heaviness = np.empty(E, dtype=np.int64)
    heaviness[order] = np.arange(E)
    # Each GPU's experts cheapest first, sorted once; a prefix then splits them by a mask.
    by_cost = np.argsort(cheapest.T, axis=1, kind="stable")  # [G, E]
    value = np.take_along_axis(cheapest.T, by_cost, axis=1)
    rank = heaviness[by_cost]
    best = 0.0
    # k = 1 is the cardinality bound's largest item; past a few, the forced set holds light experts
    # too and the bound nears the S cheapest (evaluate computes this for every batch and layer).
    for k in range(2, min(S, int(crowd[-1]), CROWD_MAX_K) + 1):
        # For a given k the smallest prefix that forces it is the tightest; a prefix of every
        # expert only repeats the cardinality bound's S cheapest.
        j = int(np.argmax(crowd >= k)) + 1
        if j >= E:
            break
        t = np.arange(max(k, S - (E - j)), min(S, j) + 1)
        if len(t) == 0:
            continue
        heavy_mask = rank < j
        heavy = value[heavy_mask].reshape(G, j)[:, : t[-1]]  # each GPU's cheapest heavy first
        light = value[~heavy_mask].reshape(G, E - j)[:, : S - t[0]]
        # Cheapest S experts with t >= k of them heavy: t heavy plus S - t light, best t.
        zero = np.zeros((G, 1))
        sum_heavy = np.concatenate([zero, np.cumsum(heavy, axis=1)], axis=1)
        sum_light = np.concatenate([zero, np.cumsum(light, axis=1)], axis=1)
        best = max(best, float((sum_heavy[:, t] + sum_light[:, S - t]).min()))
    return best


def pairing_bound(p: np.ndarray, slots_per_gpu: int) -> float:
    """Of the R costliest items, no GPU holds more than S, so when R > G at least
    m = ceil((R - G) / (S - 1)) GPUs hold two of them: m disjoint pairs, at best made of the 2m
    cheapest of those R items, paired cheapest with costliest. Each such GPU holds S - 2 more
    items. With two slots per GPU (EP256) it sees the many hot replicas that must share a GPU
    with one another, where the crowding bound sees only the cheapest such pair."""
    n, G = p.shape
    S = slots_per_gpu
    if S < 2 or n <= G:
        return 0.0
    cheap = np.sort(p.min(axis=1))
    d = cheap[::-1]  # costliest first
    R = np.arange(G + 1, n + 1)
    m = -(-(R - G) // (S - 1))
    R, m = R[2 * m <= R], m[2 * m <= R]
    if not len(R):
        return 0.0
    i = np.arange(1, int(m.max()) + 1)[None, :]
    # Pair i joins the i-th costliest and the i-th cheapest of the 2m: d[R-2m+i] + d[R+1-i].
    costly = np.minimum(R[:, None] - 2 * m[:, None] + i - 1, n - 1)
    cheapest = np.maximum(R[:, None] - i, 0)
    pairs = np.where(i <= m[:, None], d[costly] + d[cheapest], -np.inf)
    return float(pairs.max()) + float(cheap[: S - 2].sum())


def lower_bound(p: np.ndarray, slots_per_gpu: int, item_expert: np.ndarray | None = None) -> float:
    """Best of the analytic bounds for items with costs p [items, G] (of experts `item_expert`)."""
    best = max(
        work_bound(p),
        item_bound(p),
        cardinality_bound(p, slots_per_gpu),
        pairing_bound(p, slots_per_gpu),
    )
    if item_expert is not None and len(item_expert):
        best = max(best, crowding_bound(p, np.asarray(item_expert), slots_per_gpu))
    return best


def lp_bound(
    cost: np.ndarray,
    logcnt: np.ndarray,
    slots_per_gpu: int,
    node_of: np.ndarray | None = None,
) -> float:
    """LP relaxation of the placement model (GLOP): fractional x[e, g] in [0, 1], sum_g x = r_e,
    S slots per GPU, and with `node_of` at most one replica per node. Tighter than the analytic
    bounds when the GPUs' speed ranking changes along the curve. cost [E, G] is one replica's
    time."""
    return lp_relaxation(cost, logcnt, slots_per_gpu, node_of).bound


@dataclass(frozen=True)
class LpRelaxation:
    """The LP relaxation's bound and what the configuration bound needs of its solution."""

    bound: float
    # Each expert's price: the dual of its replica-count row (what one more replica would cost).
    prices: np.ndarray | None = None


def lp_relaxation(
    cost: np.ndarray,
    logcnt: np.ndarray,
    slots_per_gpu: int,
    node_of: np.ndarray | None = None,
) -> LpRelaxation:
    """`lp_bound`, with the LP's expert prices where GLOP found its optimum (the configuration
    bound prices experts with them)."""
    from ortools.linear_solver import pywraplp

    E, G = cost.shape
    scale = float(cost.max()) or 1.0  # GLOP is happier with coefficients near 1
    solver = pywraplp.Solver.CreateSolver("GLOP")
    x = [[solver.NumVar(0.0, 1.0, "") for _ in range(G)] for _ in range(E)]
    T = solver.NumVar(0.0, solver.infinity(), "T")
    counts = []
    # Coefficients set one by one: the natural-language API is ten times slower to build.
    for e in range(E):
        ct = solver.Constraint(float(logcnt[e]), float(logcnt[e]))
        counts.append(ct)
        for g in range(G):
            ct.SetCoefficient(x[e][g], 1.0)
    for g in range(G):
        slots = solver.Constraint(float(slots_per_gpu), float(slots_per_gpu))
        time = solver.Constraint(-solver.infinity(), 0.0)
        time.SetCoefficient(T, -1.0)
        for e in range(E):
            slots.SetCoefficient(x[e][g], 1.0)
            time.SetCoefficient(x[e][g], float(cost[e, g]) / scale)
    if node_of is not None:
        labels = np.asarray(node_of)
        for d in np.unique(labels):
            members = np.flatnonzero(labels == d)
            if len(members) < 2:
                continue
            for e in range(E):
                ct = solver.Constraint(0.0, 1.0)
                for m in members.tolist():
                    ct.SetCoefficient(x[e][m], 1.0)
    solver.Objective().SetCoefficient(T, 1.0)
    solver.Objective().SetMinimization()
    if solve_glop(solver) != pywraplp.Solver.OPTIMAL:
        return LpRelaxation(0.0)
    # GLOP's tolerances are ~1e-7 relative; shave that off so the bound stays valid.
    return LpRelaxation(
        float(T.solution_value()) * scale * (1 - 1e-6),
        np.array([ct.dual_value() for ct in counts]),
    )


def solve_glop(solver) -> int:
    """Solve a GLOP model within `GLOP_ITERS_PER_ROW` iterations per variable and row (a count,
    not a clock, so runs stay reproducible); returns its status."""
    size = solver.NumVariables() + solver.NumConstraints()
    solver.SetSolverSpecificParametersAsString(
        f"max_number_of_iterations: {GLOP_ITERS_PER_ROW * size + GLOP_MIN_ITERS}"
    )
    return solver.Solve()


def own_bound(curves: list[TimeCurve], row: np.ndarray, load: np.ndarray, slots: int) -> float:
    """Lower bound for the items (replicas) a plan chose, each with n / r tokens."""
    cnt = np.bincount(row, minlength=len(load))
    return slot_bound(curves, (load / np.maximum(cnt, 1))[row], slots, row)


def slot_bound(
    curves: list[TimeCurve], tokens: np.ndarray, slots: int, row: np.ndarray | None = None
) -> float:
    """Lower bound for a plan's slots with the tokens its dispatch rule gives them: [P]. `row`:
    the logical expert of each slot, for the crowding bound where no GPU holds an expert twice
    (EPLB's packing may; vibe's plans never do)."""
    if row is not None:
        per_gpu = np.sort(np.asarray(row).reshape(len(curves), slots), axis=1)
        if (per_gpu[:, 1:] == per_gpu[:, :-1]).any():
            row = None
    return lower_bound(expert_time(curves, tokens), slots, row)
