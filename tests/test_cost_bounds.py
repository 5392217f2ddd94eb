"""The cost model (TimeCurve, per-GPU times) and the lower bounds."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from placement_inputs import brute_force_optimum

from vibe_plan.cost import (
    TimeCurve,
    batch_gpu_times,
    expert_time,
    gpu_times,
    imbalance,
)
from vibe_plan.placement.bounds import (
    cardinality_bound,
    crowding_bound,
    item_bound,
    lower_bound,
    lp_bound,
    lp_relaxation,
    pairing_bound,
    slot_bound,
    work_bound,
)
from vibe_plan.placement.config_bound import LARGE_SLACK, SLACK, best_sets, config_bound
from vibe_plan.placement.heuristic import gpu_finish, items_of, local_search, lpt


def test_curve_starts_at_zero_and_interpolates():
    c = TimeCurve.from_points([2, 10, 20], [4.0, 8.0, 18.0])
    assert float(c(0)) == 0.0
    assert float(c(1)) == pytest.approx(2.0)  # from (0, 0) to (2, 4)
    assert float(c(2)) == pytest.approx(4.0)
    assert float(c(6)) == pytest.approx(6.0)
    assert float(c(15)) == pytest.approx(13.0)
    np.testing.assert_allclose(c(np.array([2, 10, 20])), [4.0, 8.0, 18.0])


def test_curve_extrapolates_linearly():
    c = TimeCurve.from_points([2, 10, 20], [4.0, 8.0, 18.0])
    # Slope of the last segment: (18 - 8) / (20 - 10) = 1.
    assert c.tail_slope == pytest.approx(1.0)
    assert float(c(30)) == pytest.approx(28.0)
    assert float(c(120)) == pytest.approx(118.0)
    np.testing.assert_allclose(c(np.array([6.0, 40.0])), [6.0, 38.0])


def test_curve_made_non_decreasing():
    c = TimeCurve.from_points([1, 2, 4, 8, 16], [5.0, 3.0, 6.0, 5.5, 9.0])
    grid = np.linspace(0, 40, 401)
    y = c(grid)
    assert np.all(np.diff(y) >= -1e-12)
    assert float(c(2)) >= 5.0  # the dip below the first point is lifted
    assert float(c(8)) >= 6.0


def test_curve_random_monotone():
    rng = np.random.default_rng(1)
    for _ in range(20):
        tokens = np.unique(rng.integers(1, 5000, size=8))
        times = rng.uniform(0.5, 50.0, size=len(tokens))
        c = TimeCurve.from_points(tokens, times)
        grid = np.sort(rng.uniform(0, 10000, size=200))
        y = c(grid)
        assert np.all(np.diff(y) >= -1e-9)
        assert float(c(0)) == 0.0
        # Each measured point is kept or lifted to the running maximum.
        np.testing.assert_allclose(c(tokens), np.maximum.accumulate(times))


def _direct_gpu_times(curves, phy2log, load):
    G = len(curves)
    L, P = phy2log.shape
    S = P // G
    out = np.zeros((L, G))
    for layer in range(L):
        row = phy2log[layer].tolist()
        for slot, e in enumerate(row):
            g = slot // S
            r = row.count(e)
            out[layer, g] += float(curves[g](load[layer, e] / r))
    return out


def _random_setup(rng, G=3, S=4, E=9, L=2):
    curves = [
        TimeCurve.from_points([1, 16, 128, 1024], f * np.array([3.0, 4.0, 10.0, 60.0]))
        for f in rng.uniform(1.0, 1.5, size=G)
    ]
    rows = []
    for _ in range(L):
        extra = rng.integers(0, E, size=G * S - E)
        rows.append(rng.permutation(np.concatenate([np.arange(E), extra])))
    return curves, np.array(rows)


def test_gpu_times_match_direct_loop():
    rng = np.random.default_rng(7)
    curves, phy2log = _random_setup(rng)
    load = rng.uniform(0, 3000, size=(2, 9))
    got = gpu_times(curves, phy2log, load)
    np.testing.assert_allclose(got, _direct_gpu_times(curves, phy2log, load))


def test_replicas_split_load():
    c = TimeCurve.from_points([1, 100], [1.0, 100.0])  # t(n) = n past the first token
    # Expert 0 has two replicas (one per GPU); expert 1 and 2 one each.
    phy2log = np.array([[0, 1, 0, 2]])
    load = np.array([[80.0, 10.0, 30.0]])
    t = gpu_times([c, c], phy2log, load)
    np.testing.assert_allclose(t, [[40.0 + 10.0, 40.0 + 30.0]])


def test_batch_gpu_times_agree_with_gpu_times():
    rng = np.random.default_rng(3)
    curves, phy2log = _random_setup(rng)
    counts = rng.integers(0, 2000, size=(5, 2, 9))
    bt = batch_gpu_times(curves, phy2log, counts)
    assert bt.shape == (5, 2, 3)
    for b in range(5):
        np.testing.assert_allclose(bt[b], gpu_times(curves, phy2log, counts[b].astype(float)))
        np.testing.assert_allclose(bt[b], _direct_gpu_times(curves, phy2log, counts[b]))


def test_expert_time_and_imbalance():
    c1 = TimeCurve.from_points([10], [10.0])
    c2 = TimeCurve.from_points([10], [20.0])
    p = expert_time([c1, c2], np.array([5.0, 10.0]))
    np.testing.assert_allclose(p, [[5.0, 10.0], [10.0, 20.0]])
    np.testing.assert_allclose(imbalance(np.array([[1.0, 3.0], [2.0, 2.0]])), [1.5, 1.0])
    assert float(imbalance(np.zeros(4))) == 1.0


# ----- bounds -----


def _items(rng, n, G, proportional=False):
    base = rng.uniform(0.1, 20.0, size=n)
    if proportional:
        return base[:, None] * rng.uniform(1.0, 1.4, size=G)[None, :]
    return base[:, None] * rng.uniform(0.8, 1.6, size=(n, G)) + rng.uniform(0, 2, size=G)


def _random_plan_span(rng, p, S):
    n, G = p.shape
    gpu = rng.permutation(np.repeat(np.arange(G), S))
    return float(np.bincount(gpu, weights=p[np.arange(n), gpu], minlength=G).max())


@pytest.mark.parametrize("proportional", [False, True])
def test_lower_bound_below_any_plan(proportional):
    rng = np.random.default_rng(11)
    for _ in range(40):
        G, S = int(rng.integers(1, 6)), int(rng.integers(1, 5))
        p = _items(rng, G * S, G, proportional)
        lb = lower_bound(p, S)
        assert lb >= max(work_bound(p), item_bound(p), cardinality_bound(p, S)) - 1e-12
        for _ in range(30):
            assert lb <= _random_plan_span(rng, p, S) * (1 + 1e-9)


def test_lower_bound_exact_cases():
    # One slot per GPU with identical GPUs: the biggest item is the makespan.
    p = np.tile(np.array([[5.0], [3.0], [1.0]]), (1, 3))
    assert lower_bound(p, 1) == pytest.approx(5.0)
    # Identical items on identical GPUs: work bound is tight.
    p = np.full((6, 3), 2.0)
    assert lower_bound(p, 2) == pytest.approx(4.0)


def test_work_bound_proportional_curves():
    rng = np.random.default_rng(5)
    for _ in range(20):
        G = int(rng.integers(2, 6))
        base = rng.uniform(0.5, 10.0, size=int(rng.integers(G, 4 * G)))
        slow = rng.uniform(1.0, 1.5, size=G)
        p = base[:, None] * slow[None, :]
        assert work_bound(p) == pytest.approx(base.sum() / (1.0 / slow).sum(), rel=1e-9)


def test_work_bound_with_an_item_free_on_some_gpu(recwarn):
    # GPU 1 runs item 0 for free (its curve is 0 where GPU 0's is not): infinite speed against
    # that reference, no warning, and the bound stays below the optimum.
    p = np.array([[2.0, 0.0], [3.0, 4.0], [5.0, 6.0], [1.0, 1.5]])
    bound = work_bound(p)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    assert np.isfinite(bound) and 0 <= bound <= brute_force_optimum(p, np.ones(4, np.int64), 2)


def test_lp_bound_between_work_bound_and_heuristic():
    rng = np.random.default_rng(2)
    for _ in range(12):
        G, S = int(rng.integers(2, 5)), int(rng.integers(2, 5))
        E = int(rng.integers(S, G * S + 1))
        cost = _items(rng, E, G)  # one replica of e on g
        logcnt = np.ones(E, dtype=np.int64)
        while logcnt.sum() < G * S:  # spare slots to random experts, at most one per GPU
            e = int(rng.integers(E))
            if logcnt[e] < G:
                logcnt[e] += 1
        item_expert = items_of(logcnt)
        p = cost[item_expert]
        plan = local_search(p, item_expert, lpt(p, item_expert, G, S), G)
        span = float(gpu_finish(p, plan, G).max())
        lp = lp_bound(cost, logcnt, S)
        assert lp >= work_bound(p) * (1 - 1e-5)
        assert lp <= span * (1 + 1e-9)


def _tiny_instances(seed: int, tries: int):
    """Random instances small enough to brute-force, with their optimum: (cost, logcnt, S, best)."""
    rng = np.random.default_rng(seed)
    for _ in range(tries):
        G, S = int(rng.integers(2, 4)), int(rng.integers(1, 4))
        E = int(rng.integers(S, G * S + 1))
        logcnt = np.ones(E, dtype=np.int64)
        for _ in range(G * S - E):
            logcnt[rng.choice(np.flatnonzero(logcnt < G))] += 1
        cost = _items(rng, E, G)
        best = brute_force_optimum(cost, logcnt, S)
        if np.isfinite(best):
            yield cost, logcnt, S, best


def test_crowding_bound_never_above_the_optimum():
    checked = 0
    for cost, logcnt, S, best in _tiny_instances(7, 200):
        item_expert = items_of(logcnt)
        assert crowding_bound(cost[item_expert], item_expert, S) <= best * (1 + 1e-9)
        assert lower_bound(cost[item_expert], S, item_expert) <= best * (1 + 1e-9)
        checked += 1
    assert checked > 100


def test_pairing_bound_never_above_the_optimum():
    checked = 0
    for cost, logcnt, S, best in _tiny_instances(5, 200):
        p = cost[items_of(logcnt)]
        assert pairing_bound(p, S) <= best * (1 + 1e-9)
        checked += 1
    assert checked > 100


def test_pairing_bound_sees_that_hot_items_must_pair_with_each_other():
    # Four GPUs, two slots: of the six costliest items (11, 11, 10, 9, 6, 6) two GPUs hold two, at
    # best 10 + 6 and 9 + 6. Work (14), the largest item plus the smallest (12) and the cheapest
    # pair forced onto one GPU (15) all stay below the optimum, 16.
    p = np.repeat(np.array([[11.0], [11.0], [10.0], [9.0], [6.0], [6.0], [2.0], [1.0]]), 4, axis=1)
    experts = np.arange(8)
    assert brute_force_optimum(p, np.ones(8, dtype=np.int64), 2) == pytest.approx(16.0)
    assert pairing_bound(p, 2) == pytest.approx(16.0)
    others = [work_bound(p), cardinality_bound(p, 2), crowding_bound(p, experts, 2)]
    assert max(others) < 16.0
    assert lower_bound(p, 2, experts) == pytest.approx(16.0)


def test_crowding_bound_sees_hot_experts_that_must_share_a_gpu():
    # Three GPUs, two slots: two hot experts with two replicas each (4 replicas on 3 GPUs, so one
    # GPU holds both) and two cold ones. The LP spreads the hot replicas; the optimum cannot.
    cost = np.array([[10.0] * 3, [9.0] * 3, [1.0] * 3, [1.0] * 3])
    logcnt = np.array([2, 2, 1, 1])
    item_expert = items_of(logcnt)
    assert brute_force_optimum(cost, logcnt, 2) == pytest.approx(19.0)
    assert crowding_bound(cost[item_expert], item_expert, 2) == pytest.approx(19.0)
    assert lp_bound(cost, logcnt, 2) < 19.0 * 0.9


def test_slot_bound_drops_crowding_where_a_gpu_holds_an_expert_twice():
    # EPLB may pack two replicas of one expert on one GPU; the crowding bound would not hold.
    curves = [TimeCurve.from_points([1, 100], [1.0, 100.0])] * 3
    row = np.array([0, 0, 1, 1, 2, 3])  # GPU 0 holds expert 0 twice
    tokens = np.array([10.0, 10.0, 9.0, 9.0, 1.0, 1.0])
    assert slot_bound(curves, tokens, 2, row) == pytest.approx(slot_bound(curves, tokens, 2))
    spread = np.array([0, 1, 0, 1, 2, 3])
    tokens = np.array([10.0, 9.0, 10.0, 9.0, 1.0, 1.0])
    assert slot_bound(curves, tokens, 2, spread) == pytest.approx(19.0)
    assert slot_bound(curves, tokens, 2) < 19.0


def test_config_bound_never_above_the_optimum():
    # Valid for any item prices: the LP's (the informative ones) and random ones.
    rng = np.random.default_rng(12)
    checked = raised = 0
    for cost, logcnt, S, best in _tiny_instances(11, 150):
        relaxed = lp_relaxation(cost, logcnt, S)
        lp, prices = relaxed.bound, relaxed.prices
        assert prices is not None
        for y in (prices, rng.normal(size=len(logcnt)), cost.mean(axis=1)):
            for slack in (SLACK, LARGE_SLACK):
                got = config_bound(cost, logcnt, S, y, lp, best * 1.2, slack)
                assert lp <= got <= best * (1 + 1e-9)
        raised += config_bound(cost, logcnt, S, prices, lp, best) > lp * (1 + 1e-3)
        checked += 1
    assert checked > 100
    assert raised > 10  # it does more than repeat the LP


def test_config_bound_knows_a_gpu_holds_whole_items():
    # Two GPUs, two slots, items 3, 3, 3, 1: the LP balances 5 and 5, but some GPU holds two 3s.
    cost = np.array([[3.0, 3.0], [3.0, 3.0], [3.0, 3.0], [1.0, 1.0]])
    logcnt = np.ones(4, dtype=np.int64)
    assert brute_force_optimum(cost, logcnt, 2) == pytest.approx(6.0)
    relaxed = lp_relaxation(cost, logcnt, 2)
    lp, prices = relaxed.bound, relaxed.prices
    assert prices is not None
    assert lp == pytest.approx(5.0, rel=1e-5)
    got = config_bound(cost, logcnt, 2, prices, lp, 6.0)
    assert 6.0 * (1 - SLACK) <= got <= 6.0
    # Prices that value the small item as much as the others prove nothing.
    assert config_bound(cost, logcnt, 2, np.ones(4), lp, 6.0) == lp


def test_best_sets_matches_enumeration():
    rng = np.random.default_rng(3)
    for _ in range(30):
        n, S = int(rng.integers(3, 8)), int(rng.integers(1, 4))
        weight = rng.integers(0, 12, size=n)
        value = rng.integers(-50, 50, size=n)
        cap = int(rng.integers(0, 40))
        best = best_sets(weight, value, S, cap)
        for c in range(cap + 1):
            sets = [
                value[list(k)].sum()
                for k in itertools.combinations(range(n), S)
                if weight[list(k)].sum() <= c
            ]
            if sets:
                assert best[c] == max(sets)
            else:
                assert best[c] < -(1 << 28)
