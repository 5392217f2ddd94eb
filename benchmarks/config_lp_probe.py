"""How loose is the LP bound? On scale_bench's varied DeepSeek-V3 EP32+32 fleet, take the layers
vibe certifies worst and bound each node subproblem with the configuration LP: one variable per
set of S experts a GPU can hold within time T, column generation with an exact knapsack pricing
(costs rounded down, so the bound stays valid). A T at which the configuration LP is infeasible is
a lower bound; bisection finds the largest. Prints plan and bounds relative to the LP bound, and the
layer's gap if its bound were the configuration LP's, beside the configuration bound `vibe solve`
computes (the same test at the LP's prices only). Research code: minutes per layer.
Usage: python benchmarks/config_lp_probe.py [--layers 1] [--seed 0] [--steps 8]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scale_bench
from ortools.linear_solver import pywraplp

from vibe_plan.cost import curves_of, expert_time
from vibe_plan.placement.bounds import lp_relaxation
from vibe_plan.placement.config_bound import config_bound
from vibe_plan.placement.groups import groups_to_nodes

RESOLUTION = 20_000  # knapsack capacity in units of T/RESOLUTION: costs lose < S units in all


def best_set(weight: np.ndarray, value: np.ndarray, S: int, cap: int) -> tuple[float, list[int]]:
    """Most valuable S items of total weight <= cap (0/1 knapsack with a cardinality)."""
    n = len(weight)
    dp = np.full((S + 1, cap + 1), -np.inf)
    dp[0, :] = 0.0
    take = np.zeros((n, S + 1, cap + 1), dtype=bool)
    for i in range(n):
        w = int(weight[i])
        if w > cap:
            continue
        cand = np.full_like(dp, -np.inf)
        cand[1:, w:] = dp[:-1, : cap + 1 - w] + value[i]
        take[i] = cand > dp
        dp = np.maximum(dp, cand)
    if not np.isfinite(dp[S, cap]):
        return -np.inf, []
    k, c, chosen = S, cap, []
    for i in range(n - 1, -1, -1):
        if k and take[i, k, c]:
            chosen.append(i)
            c -= int(weight[i])
            k -= 1
    return float(dp[S, cap]), chosen[::-1]


def infeasible(cost: np.ndarray, cnt: np.ndarray, S: int, T: float, cols: list) -> bool:
    """True if no fractional mix of GPU configurations within T covers every expert's replicas
    (then T is a lower bound). Phase-1 column generation; the Farkas test uses exact pricing."""
    E, G = cost.shape
    weight = np.floor(cost / (T / RESOLUTION)).astype(np.int64)
    cols[:] = [(g, c) for g, c in cols if cost[list(c), g].sum() <= T]
    seen = set(cols)
    while True:
        lp = pywraplp.Solver.CreateSolver("GLOP")
        rows = [lp.Constraint(1, 1) for _ in range(G)]
        rows += [lp.Constraint(float(cnt[e]), float(cnt[e])) for e in range(E)]
        for r in rows:  # artificial slack both ways, cost 1: phase 1
            for sign in (1, -1):
                a = lp.NumVar(0, lp.infinity(), "")
                r.SetCoefficient(a, sign)
                lp.Objective().SetCoefficient(a, 1)
        for g, c in cols:
            v = lp.NumVar(0, lp.infinity(), "")
            rows[g].SetCoefficient(v, 1)
            for e in c:
                rows[G + e].SetCoefficient(v, 1)
        lp.Objective().SetMinimization()
        lp.Solve()
        dual = np.array([r.dual_value() for r in rows])
        z, y = dual[:G], dual[G:]
        best = [best_set(weight[:, g], y, S, RESOLUTION) for g in range(G)]
        # Farkas: y with sum r_e y_e > sum_g max over configurations of y(config) proves it.
        if cnt @ y - sum(v for v, _ in best) > 1e-7 * max(1.0, float(np.abs(y).max())):
            return True
        new = [(g, tuple(c)) for g, (v, c) in enumerate(best) if v + z[g] > 1e-9 and c]
        new = [k for k in new if k not in seen]
        if not new:
            return False
        seen.update(new)
        cols.extend(new)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=8, help="bisection steps per node")
    args = ap.parse_args()
    inst = next(i for i in scale_bench.INSTANCES if i.name == "deepseek-v3 EP32+32")
    gpus, note = scale_bench.fleet(inst, "varied", args.seed)
    routing, _ = scale_bench.routing(inst, args.seed, 16)
    plan, res, worst = scale_bench.worst_first(gpus, routing, inst.redundant)
    pr = res.placement.predicted
    gap = np.array(pr["makespan_us"]) / np.array(pr["lower_bound_us"]) - 1
    curves = curves_of(gpus)
    G, S, N, K = 8, res.problem.slots_per_gpu, res.problem.num_nodes, res.problem.num_groups
    size = inst.experts // K
    print(f"varied fleet {note}, seed {args.seed}")
    print("| layer | node | plan vs LP | vibe config bound vs LP | config-LP bound vs LP | s |")
    print("|---|---|---|---|---|---|")
    for layer in worst[: args.layers]:
        load = plan.mean_load()[layer]
        row = res.placement.phy2log[layer]
        spans, bounds = [], []
        for n, node in enumerate(groups_to_nodes(load, curves, K, N)):
            experts = np.concatenate([np.arange(k * size, (k + 1) * size) for k in node])
            local = {int(e): i for i, e in enumerate(experts)}
            slots = np.array([local[int(e)] for e in row[n * G * S : (n + 1) * G * S]])
            cnt = np.bincount(slots, minlength=len(experts))
            cost = expert_time(curves[n * G : (n + 1) * G], load[experts] / np.maximum(cnt, 1))
            span = float(max(cost[slots[g * S : (g + 1) * S], g].sum() for g in range(G)))
            relaxed = lp_relaxation(cost, cnt, S)
            lp = relaxed.bound
            assert relaxed.prices is not None
            # What `vibe solve` computes: the LP's prices only, no column generation.
            one_shot = config_bound(cost, cnt, S, relaxed.prices, lp, span)
            cols = [(g, tuple(sorted(slots[g * S : (g + 1) * S].tolist()))) for g in range(G)]
            lo, hi, t0 = lp, span, time.perf_counter()
            for _ in range(args.steps):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if infeasible(cost, cnt, S, mid, cols) else (lo, mid)
            spans.append(span)
            bounds.append(lo)
            print(
                f"| {int(res.placement.layer_ids[layer])} | {n} | {span / lp - 1:.3%} | "
                f"{one_shot / lp - 1:.3%} | {lo / lp - 1:.3%} | {time.perf_counter() - t0:.0f} |",
                flush=True,
            )
        print(
            f"layer {int(res.placement.layer_ids[layer])}: gap {gap[layer]:.3%} to vibe's bound, "
            f"{max(spans) / max(bounds) - 1:.3%} to the configuration-LP bound",
            flush=True,
        )


if __name__ == "__main__":
    main()
