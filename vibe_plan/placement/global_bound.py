"""A lower bound on one layer's makespan over ALL replica counts and ALL token splits (any dispatch
rule, a replica may even get no tokens), so a plan can be compared with the best any placement
could do. It is the best of an LP relaxation and two analytic bounds.

LP (GLOP): u[e,g] in [0,1] (a slot of e on g), f[e,g] >= 0 the share of e's load L_e on g,
sum_g f = 1, f <= u, sum_e u <= S (a relaxation of "= S": raising u never hurts), and e's cost on
g is at least max_j (c_j u + d_j L_e f) for the segments (c_j, d_j) of the lower convex envelope of
t_g on [0, L_e]: the perspective of that envelope, the convex hull of "no slot, no cost" and "one
slot, t_g(a) for a in [0, L_e]". Its optimum is at most the own-replica `bounds.lp_bound`.
For size, GPUs are grouped into at most `clusters` clusters of similar curves; a cluster of k GPUs
is one pooled machine with k*S slots, u in [0, k], time budget k*T (the sum of its members' rows),
priced with the envelope of its members' pointwise MINIMUM curve (which only lowers the optimum).

Analytic: total work over speed, each expert's work taken at its minimum over how many pieces it
is cut into (sum of pieces <= P slots, at most min(G, P-E+1) each); and the largest expert cut
into the most pieces it can have, on the GPU where that piece is cheapest. No "every slot costs
t_g(0+)" bound: t_g(0) = 0 and the curve is linear to its first point, so an idle or nearly idle
replica costs nothing under an arbitrary split. So under that contract replication is free and
the bound cannot see what an even split pays for its P-E extra replicas; `even_split=True` drops
the arbitrary splits and charges it (in the work bound).
"""

from __future__ import annotations

import numpy as np

from vibe_plan.cost import TimeCurve
from vibe_plan.placement.bounds import solve_glop

Lines = tuple[np.ndarray, np.ndarray]  # intercepts c, slopes d of an envelope's segments


LP_PAIRS = 2048  # (expert, machine) pairs the LP may have: ~0.1 s of GLOP on 2 cores


def global_bound(
    load: np.ndarray,
    curves: list[TimeCurve],
    slots_per_gpu: int,
    clusters: int | None = None,
    even_split: bool = False,
) -> float:
    """Lower bound on the makespan of any placement of `load` [E] (tokens per expert) on GPUs with
    time curves `curves`, S slots each, any replica counts (each >= 1, at most one per GPU) and any
    split of each expert's tokens over its replicas. `clusters`: most pooled machines in the LP
    (default: LP_PAIRS // E, at least 4; 0 skips the LP, ~10x faster, rarely >1% looser).
    `even_split`: valid only for engines that split every expert evenly over all its replicas
    (then the P-E extra replicas cannot idle), and tighter."""
    load = np.maximum(np.asarray(load, dtype=float), 0.0)
    if not load.any():
        return 0.0
    return max(
        global_lp_bound(load, curves, slots_per_gpu, clusters) if clusters != 0 else 0.0,
        global_work_bound(load, curves, slots_per_gpu),
        global_work_bound(load, curves, slots_per_gpu, True) if even_split else 0.0,
        global_item_bound(load, curves, slots_per_gpu),
    )


def max_pieces(num_experts: int, num_gpus: int, slots_per_gpu: int) -> int:
    """Most replicas one expert can have: one per GPU, and every other expert keeps one slot."""
    return max(1, min(num_gpus, num_gpus * slots_per_gpu - num_experts + 1))


def envelope_lines(curves: list[TimeCurve], load: np.ndarray) -> list[Lines]:
    """For each expert e, the segments of the lower convex envelope of min_g t_g on [0, load[e]]
    (each line lies below every member curve on that range). The envelope of a piecewise-linear
    minimum is the lower hull of the members' points there, plus the minimum at the end point."""
    xs = np.unique(np.concatenate([c.tokens for c in curves]))
    ys = np.min([c(xs) for c in curves], axis=0)  # at a shared x only the lowest point matters
    ends = np.min([c(load) for c in curves], axis=0)
    out: list[Lines] = [(np.zeros(1), np.zeros(1))] * len(load)
    stack: list[tuple[float, float]] = []
    i = 0
    # Experts in load order: the hull of the points below L grows monotonically (monotone chain),
    # and each expert only looks at how its end point would cut into that stack.
    for e in np.argsort(load, kind="stable"):
        L = float(load[e])
        if L <= 0:
            continue
        while i < len(xs) and xs[i] < L:
            _push(stack, (float(xs[i]), float(ys[i])))
            i += 1
        end = (L, float(ends[e]))
        top = len(stack)
        while top >= 2 and _cross(stack[top - 2], stack[top - 1], end) <= 0:
            top -= 1
        pts = np.array(stack[:top] + [end])
        d = np.diff(pts[:, 1]) / np.diff(pts[:, 0])
        out[e] = (pts[:-1, 1] - d * pts[:-1, 0], d)
    return out


def _cross(o, a, b) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _push(stack: list, p) -> None:
    while len(stack) >= 2 and _cross(stack[-2], stack[-1], p) <= 0:
        stack.pop()
    stack.append(p)


def piece_work(lines: Lines, load: float, pieces: np.ndarray) -> np.ndarray:
    """Least total envelope time of `load` cut into r equal pieces, r in `pieces`: r * env(L / r)
    = max_j (c_j r + d_j L); by convexity equal pieces are the cheapest cut into r."""
    c, d = lines
    return (c[None, :] * pieces[:, None] + d[None, :] * load).max(axis=1)


def global_work_bound(
    load: np.ndarray, curves: list[TimeCurve], slots_per_gpu: int, even_split: bool = False
) -> float:
    """Total work over total speed. Speeds are ratios to a reference GPU taken over the whole token
    range, as the pieces can have any size. Each expert's reference work is its minimum over piece
    counts r_e <= min(G, P-E+1): with any split, sum r_e <= P and the envelope work is convex
    and non-increasing in r_e, so the greediest P-E extra pieces are optimal; with `even_split`
    every replica gets L_e / r_e, so sum r_e = P is forced: the minimum is bounded by its
    Lagrangian."""
    E, G = len(load), len(curves)
    rmax = max_pieces(E, G, slots_per_gpu)
    top = float(load.max())
    xs = np.unique(np.concatenate([c.tokens for c in curves] + [[top]]))
    xs = xs[(xs > 0) & (xs <= top)]  # ratios of two curves through 0 peak at breakpoints
    t = np.array([c(xs) for c in curves])  # [G, X]
    totals = np.array([c(load).sum() for c in curves])
    r = np.arange(1, rmax + 1, dtype=float)
    best = 0.0
    for ref in sorted({int(totals.argmin()), int(totals.argmax())}):
        if np.any((t == 0) & (t[ref] > 0)):
            continue  # a free GPU: infinite relative speed
        speed = np.divide(t[ref], t, out=np.zeros_like(t), where=t > 0).max(axis=1)
        if even_split:
            work = r[None, :] * curves[ref](load[:, None] / r[None, :])  # [E, rmax]
            total = count_lagrangian(work, G * slots_per_gpu)
        else:
            lines = envelope_lines([curves[ref]], load)
            work = np.array([piece_work(lines[e], load[e], r) for e in range(E)])  # [E, rmax]
            gain = np.sort(np.diff(work, axis=1).ravel())[: G * slots_per_gpu - E]
            total = work[:, 0].sum() + gain[gain < 0].sum()
        if speed.sum() > 0:
            best = max(best, float(total / speed.sum()))
    return best


def count_lagrangian(work: np.ndarray, total: int, iters: int = 60) -> float:
    """Lower bound on min sum_e work[e, r_e - 1] over sum_e r_e = total: the best Lagrangian
    sum_e min_r (work[e, r-1] + lam r) - lam total seen while bisecting lam (any lam is valid;
    the count of the minimisers falls as lam rises)."""
    r = np.arange(1, work.shape[1] + 1, dtype=float)
    span = float(np.abs(np.diff(work, axis=1)).max(initial=0.0)) + 1.0
    lo, hi, best = -span, span, -np.inf
    for _ in range(iters):
        lam = 0.5 * (lo + hi)
        v = work + lam * r[None, :]
        best = max(best, float(v.min(axis=1).sum() - lam * total))
        if r[v.argmin(axis=1)].sum() > total:
            lo = lam
        else:
            hi = lam
    return best


def global_item_bound(load: np.ndarray, curves: list[TimeCurve], slots_per_gpu: int) -> float:
    """Some piece of the largest expert holds at least L / rmax tokens."""
    rmax = max_pieces(len(load), len(curves), slots_per_gpu)
    return float(min(c(load.max() / rmax) for c in curves))


def cluster_gpus(curves: list[TimeCurve], load: np.ndarray, k: int) -> list[np.ndarray]:
    """Groups of GPUs with similar curves at the loads that matter (a few Lloyd steps on log time
    at load quantiles). Any grouping is valid; similar members keep the minimum curve tight."""
    G = len(curves)
    if k >= G:
        return [np.array([g]) for g in range(G)]
    pos = load[load > 0]
    at = np.quantile(pos, [0.0, 0.5, 1.0]) if len(pos) else np.ones(1)
    feat = np.log(np.maximum(np.array([c(at) for c in curves]), 1e-12))
    order = np.argsort(feat.sum(axis=1), kind="stable")
    centers = feat[order[np.linspace(0, G - 1, k).round().astype(int)]]
    label = np.zeros(G, dtype=int)
    for _ in range(10):
        label = ((feat[:, None, :] - centers[None]) ** 2).sum(axis=2).argmin(axis=1)
        for j in range(k):
            if np.any(label == j):
                centers[j] = feat[label == j].mean(axis=0)
    return [np.flatnonzero(label == j) for j in range(k) if np.any(label == j)]


def global_lp_bound(
    load: np.ndarray, curves: list[TimeCurve], slots_per_gpu: int, clusters: int | None = None
) -> float:
    """The LP of the module docstring on at most `clusters` pooled machines."""
    from ortools.linear_solver import pywraplp

    k = clusters if clusters is not None else max(4, LP_PAIRS // max(len(load), 1))
    groups = cluster_gpus(curves, load, k)
    lines = [envelope_lines([curves[g] for g in grp], load) for grp in groups]
    K = len(groups)
    scale = float(max(c(load.max()) for c in curves)) or 1.0  # coefficients near 1 for GLOP
    solver = pywraplp.Solver.CreateSolver("GLOP")
    inf = solver.infinity()
    T = solver.NumVar(0.0, inf, "T")
    time_rows, slot_rows = [], []
    for grp in groups:
        row = solver.Constraint(-inf, 0.0)
        row.SetCoefficient(T, -float(len(grp)))
        time_rows.append(row)
        slot_rows.append(solver.Constraint(-inf, float(slots_per_gpu * len(grp))))
    zero = int((load <= 0).sum())
    if zero:  # experts without load still take a slot each, on any machine
        share = solver.Constraint(float(zero), inf)
        for k, grp in enumerate(groups):
            z = solver.NumVar(0.0, float(zero * len(grp)), "")
            share.SetCoefficient(z, 1.0)
            slot_rows[k].SetCoefficient(z, 1.0)
    # Coefficients set one by one: the natural-language API is much slower to build.
    for e in np.flatnonzero(load > 0):
        L = float(load[e])
        share = solver.Constraint(1.0, 1.0)
        for k in range(K):
            f = solver.NumVar(0.0, 1.0, "")
            share.SetCoefficient(f, 1.0)
            c, d = lines[k][e]
            if len(c) == 1:
                # One segment, through 0: u only uses slots, so u = f is optimal; no u, no q.
                slot_rows[k].SetCoefficient(f, 1.0)
                time_rows[k].SetCoefficient(f, float(d[0]) * L / scale)
                continue
            u = solver.NumVar(0.0, float(len(groups[k])), "")
            slot_rows[k].SetCoefficient(u, 1.0)
            link = solver.Constraint(-inf, 0.0)  # f <= u
            link.SetCoefficient(f, 1.0)
            link.SetCoefficient(u, -1.0)
            q = solver.NumVar(-inf, inf, "")
            time_rows[k].SetCoefficient(q, 1.0)
            for cj, dj in zip(c, d, strict=True):
                seg = solver.Constraint(0.0, inf)  # q >= c_j u + d_j L f
                seg.SetCoefficient(q, 1.0)
                seg.SetCoefficient(u, -float(cj) / scale)
                seg.SetCoefficient(f, -float(dj) * L / scale)
    solver.Objective().SetCoefficient(T, 1.0)
    solver.Objective().SetMinimization()
    if solve_glop(solver) != pywraplp.Solver.OPTIMAL:
        return 0.0
    # GLOP's tolerances are ~1e-7 relative; shave that off so the bound stays valid.
    return max(0.0, float(T.solution_value()) * scale * (1 - 1e-6))
