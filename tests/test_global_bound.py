"""The placement-free lower bound: never above any placement's makespan (brute force over replica
counts, placements and token splits on tiny instances), below the own-replica bounds, not
trivial."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from vibe_plan.cost import TimeCurve, expert_time
from vibe_plan.placement.bounds import lower_bound, lp_bound
from vibe_plan.placement.global_bound import (
    envelope_lines,
    global_bound,
    global_item_bound,
    global_lp_bound,
    global_work_bound,
)

GRID = 6  # split grid: shares in sixths, so even splits over 1, 2 or 3 replicas are on it
SHAPES = [(3, 2, 2), (4, 2, 2), (3, 2, 3), (4, 2, 3), (3, 3, 2), (4, 3, 2), (5, 3, 2), (3, 3, 3)]


def tiny_curves(rng: np.random.Generator, G: int) -> list[TimeCurve]:
    """Curves with a floor, a launch overhead and tile steps, differing per GPU in shape."""
    tokens = np.array([1, 2, 3, 4, 6, 8, 12, 16])
    tile = int(rng.choice([2, 4]))
    out = []
    for _ in range(G):
        floor, slope, over = rng.uniform(2, 6), rng.uniform(0.3, 1.2), rng.uniform(0, 2)
        t = np.maximum(floor, slope * np.ceil(tokens / tile) * tile) + over
        out.append(TimeCurve.from_points(tokens, t))
    return out


def tiny_instance(seed: int):
    rng = np.random.default_rng(seed)
    E, G, S = SHAPES[seed % len(SHAPES)]
    return rng.uniform(0.5, 24.0, size=E), tiny_curves(rng, G), S


def placements(E: int, G: int, S: int):
    """Every placement: per expert a non-empty set of GPUs (at most one replica per GPU), every GPU
    holding exactly S replicas. Yields [E, G] 0/1 matrices."""
    masks = np.array(list(itertools.product([0, 1], repeat=G))[1:])
    for pick in itertools.product(range(len(masks)), repeat=E):
        x = masks[list(pick)]
        if np.all(x.sum(axis=0) == S):
            yield x


def split_options(load: float, gpus: np.ndarray, curves, G: int) -> np.ndarray:
    """GPU-time contributions [n, G] of every split of `load` over `gpus` on the grid (zero pieces
    included: an idle replica is allowed)."""
    rows = []
    for parts in itertools.product(range(GRID + 1), repeat=len(gpus)):
        if sum(parts) != GRID:
            continue
        row = np.zeros(G)
        for g, p in zip(gpus, parts, strict=True):
            row[g] = curves[g](load * p / GRID)
        rows.append(row)
    return np.array(rows)


def brute_force(load, curves, S) -> tuple[float, dict]:
    """Best makespan over all placements and grid splits; also the best even split per replica
    count vector."""
    E, G = len(load), len(curves)
    best, even = np.inf, {}
    for x in placements(E, G, S):
        acc = np.zeros((1, G))
        for e in range(E):
            opts = split_options(load[e], np.flatnonzero(x[e]), curves, G)
            acc = (acc[:, None, :] + opts[None, :, :]).reshape(-1, G)
        best = min(best, float(acc.max(axis=1).min()))
        r = tuple(int(v) for v in x.sum(axis=1))
        per = load / np.array(r)
        span = max(sum(float(curves[g](per[e])) for e in np.flatnonzero(x[:, g])) for g in range(G))
        even[r] = min(even.get(r, np.inf), span)
    return best, even


CASES = [(seed, *tiny_instance(seed)) for seed in range(16)]
BRUTE = {}


def brute(seed, load, curves, S):
    if seed not in BRUTE:
        BRUTE[seed] = brute_force(load, curves, S)
    return BRUTE[seed]


@pytest.mark.parametrize("seed,load,curves,S", CASES)
def test_never_beats_any_placement(seed, load, curves, S):
    best, even = brute(seed, load, curves, S)
    parts = [
        global_bound(load, curves, S),
        global_bound(load, curves, S, clusters=0),
        global_lp_bound(load, curves, S),
        global_lp_bound(load, curves, S, clusters=1),  # all GPUs pooled on the minimum curve
        global_work_bound(load, curves, S),
        global_item_bound(load, curves, S),
    ]
    for b in parts:
        assert b <= best * (1 + 1e-9)
        assert b <= min(even.values()) * (1 + 1e-9)


@pytest.mark.parametrize("seed,load,curves,S", CASES)
def test_random_uneven_splits(seed, load, curves, S):
    """Continuous splits off the grid, zero pieces included, on random placements."""
    rng = np.random.default_rng(100 + seed)
    bound = global_bound(load, curves, S)
    xs = list(placements(len(load), len(curves), S))
    for _ in range(200):
        x = xs[rng.integers(len(xs))]
        times = np.zeros(len(curves))
        for e in range(len(load)):
            gpus = np.flatnonzero(x[e])
            share = rng.dirichlet(np.ones(len(gpus)) * 0.5)
            share[rng.random(len(gpus)) < 0.2] = 0.0
            share = share / share.sum() if share.sum() > 0 else np.eye(len(gpus))[0]
            for g, s in zip(gpus, share, strict=True):
                times[g] += float(curves[g](load[e] * s))
        assert bound <= times.max() * (1 + 1e-9)


@pytest.mark.parametrize("seed,load,curves,S", CASES)
def test_below_own_replica_bounds(seed, load, curves, S):
    """For every feasible replica count vector, the LP part stays below the own-replica LP (its
    solutions map into ours), the work part below it too, the item part below lower_bound."""
    E, G = len(load), len(curves)
    lp_part = global_lp_bound(load, curves, S)
    work = global_work_bound(load, curves, S)
    item = global_item_bound(load, curves, S)
    total = global_bound(load, curves, S)
    for r in itertools.product(range(1, G + 1), repeat=E):
        if sum(r) != G * S:
            continue
        logcnt = np.array(r)
        own_lp = lp_bound(expert_time(curves, load / logcnt), logcnt, S)
        row = np.repeat(np.arange(E), logcnt)
        own = lower_bound(expert_time(curves, (load / logcnt)[row]), S)
        tol = 1 + 1e-6  # both LPs carry GLOP's tolerance
        assert lp_part <= own_lp * tol
        assert work <= own_lp * tol
        assert item <= own * (1 + 1e-12)
        assert total <= max(own_lp, own) * tol


@pytest.mark.parametrize("seed,load,curves,S", CASES)
def test_even_split_mode(seed, load, curves, S):
    """With even splits only: below the best even-split placement and every own-replica LP bound,
    and at least the any-split bound."""
    _, even = brute(seed, load, curves, S)
    b = global_bound(load, curves, S, even_split=True)
    assert global_bound(load, curves, S) <= b <= min(even.values()) * (1 + 1e-9)
    work = global_work_bound(load, curves, S, even_split=True)
    for r in even:
        logcnt = np.array(r)
        assert work <= lp_bound(expert_time(curves, load / logcnt), logcnt, S) * (1 + 1e-6)


def test_not_trivial():
    """Typical bound / best makespan on the tiny cases; the worst stays within a factor 1.5."""
    ratios = []
    for seed, load, curves, S in CASES:
        best, _ = brute(seed, load, curves, S)
        ratios.append(global_bound(load, curves, S) / best)
    assert min(ratios) > 1 / 1.5
    assert np.median(ratios) > 0.8


def test_envelope_lines_lie_below_the_curves():
    rng = np.random.default_rng(7)
    curves = tiny_curves(rng, 3)
    load = np.array([0.3, 1.0, 5.5, 16.0, 40.0])
    lines = envelope_lines(curves, load)
    for e, L in enumerate(load):
        a = np.linspace(0, L, 2001)
        low = np.min([c(a) for c in curves], axis=0)
        c, d = lines[e]
        assert np.all(c[:, None] + d[:, None] * a[None] <= low + 1e-9)
        # The envelope meets the curve at the end point: tight where all tokens sit on one replica.
        assert (c + d * L).max() == pytest.approx(low[-1])


def test_zero_loads():
    rng = np.random.default_rng(3)
    curves = tiny_curves(rng, 2)
    assert global_bound(np.zeros(3), curves, 2) == 0.0
    load = np.array([0.0, 6.0, 0.0, 9.0])
    best, _ = brute_force(load, curves, 2)
    assert 0.0 < global_bound(load, curves, 2) <= best * (1 + 1e-9)
