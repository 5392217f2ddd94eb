"""A bound that knows each GPU holds S whole items: the configuration LP's Lagrangian relaxation,
priced with the LP relaxation's item prices. Raises the LP bound where items are large (a GPU's
time is a sum of a few of them), which is where the LP's fractional balance is unreachable.

Why it holds: a plan within time T gives each GPU g a set C_g of S distinct experts with
cost_g(C_g) <= T, and the sets cover expert e exactly r_e times. So for any item prices y,
sum_e r_e y_e = sum_g y(C_g) <= sum_g K_g(T), with K_g(T) the most valuable S-set that fits g
within T. Where that fails, no plan reaches T.
"""

from __future__ import annotations

import numpy as np

# Costs are rounded down to a grid of `slack` * T / S: the sets found may overrun T by at most
# `slack` * T, so the bound loses at most that much, and stays valid.
SLACK = 2e-4
# Knapsack work grows as experts x GPUs x S^2 / slack (int32 cells); above this many experts x
# GPUs x S^2 (a DeepSeek-V3 node of 64 experts on 8 GPUs x 9 slots is 41,472: about 30 ms on one
# core) the bound costs more than the search it certifies.
CONFIG_MAX_WORK = 50_000
# Layers too large for the LP (EP128 and up, 2-4 slots per GPU) get the bound on a coarser grid,
# priced without the LP; there the analytic bound leaves 1-6%, so 0.2% of grid is cheap.
LARGE_SLACK = 2e-3
LARGE_MAX_WORK = 1_000_000
_PRICE_UNITS = 1 << 20  # prices are scaled to integers: the test below is then exact
_NONE = np.int32(-(1 << 30))  # "no S-set fits"
_ROUND = 1e-6  # grid units; float error on a grid of at most ~10^5 units is ~10^-11


def config_work(cost: np.ndarray, slots: int) -> int:
    """Experts x GPUs x S^2: what the knapsacks' work grows with, against the limits above."""
    return cost.size * slots * slots


def config_bound(
    cost: np.ndarray,
    logcnt: np.ndarray,
    slots: int,
    prices: np.ndarray,
    lo: float,
    hi: float,
    slack: float = SLACK,
) -> float:
    """Largest T in [lo, hi] below which no plan exists, by the test above. cost [E, G]: one
    replica of e on g; logcnt [E]: replicas per expert; prices [E]: any item prices (the LP
    relaxation's duals of its replica-count rows are the informative ones). Returns `lo` when it
    proves nothing more."""
    E, G = cost.shape
    S = slots
    if hi <= lo or S < 1:
        return lo
    y = _integer_prices(prices)
    need = int((logcnt.astype(np.int64) * y).sum())
    res = hi * slack / S
    # One test per grid step of T in [lo, hi]; K_g is read at the step's upper end, so a T
    # anywhere inside the step is covered.
    steps = np.arange(int(np.floor(lo / res)), int(np.ceil(hi / res)) + 1)
    total = np.zeros(len(steps), dtype=np.int64)
    floor = cost.min(axis=0)
    for g in range(G):
        # Every set holds S items: costs above the GPU's cheapest item keep the grid short.
        cap = int(np.floor((hi + res - S * floor[g]) / res + _ROUND))
        # Rounding errs towards lighter sets and larger capacities: float error cannot make
        # the test refuse a T that some plan reaches.
        weight = np.maximum(np.floor((cost[:, g] - floor[g]) / res - _ROUND), 0).astype(np.int64)
        best = best_sets(weight, y, S, cap)
        at = np.floor(((steps + 1) * res - S * floor[g]) / res + _ROUND).astype(np.int64)
        fits = best[np.clip(at, 0, cap)].astype(np.int64)
        total += np.where((at < 0) | (fits < _NONE // 2), np.iinfo(np.int32).min, fits)
    reached = np.flatnonzero(total >= need)
    if not len(reached):
        return hi
    return max(lo, float(steps[reached[0]] * res))


def best_sets(weight: np.ndarray, value: np.ndarray, S: int, cap: int) -> np.ndarray:
    """best[c]: the most valuable S distinct items of total weight <= c, for c in 0..cap (below
    `_NONE // 2` where no S items fit: S prices never lift `_NONE` that far). 0/1 knapsack with a
    cardinality, all k at once per item."""
    best = np.full((S + 1, cap + 1), _NONE, dtype=np.int32)
    best[0] = 0
    seen = 0
    for i in np.argsort(weight, kind="stable"):
        w = int(weight[i])
        if w > cap:
            continue
        seen += 1
        top = min(seen, S)
        # The right side is built from the rows before this item: each item is taken once.
        cand = best[:top, : cap + 1 - w] + np.int32(value[i])
        np.maximum(best[1 : top + 1, w:], cand, out=best[1 : top + 1, w:])
    return best[S]


def _integer_prices(prices: np.ndarray) -> np.ndarray:
    """Prices centred (a shift by c adds c * G * S to both sides of the test) and scaled to
    integers small enough that S of them never overflow int32."""
    y = np.asarray(prices, dtype=np.float64)
    y = y - np.median(y)
    top = float(np.abs(y).max())
    if top == 0 or not np.isfinite(top):
        return np.zeros(len(y), dtype=np.int64)
    return np.rint(y * (_PRICE_UNITS / top)).astype(np.int64)
