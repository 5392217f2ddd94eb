"""Each placement method on its own: eplb, linear, round_robin, the heuristic, layer planning and
CP-SAT."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from placement_inputs import assert_valid_map

from vibe_plan.artifacts.placement import make_log2phy
from vibe_plan.cost import TimeCurve, expert_time, gpu_times
from vibe_plan.placement.baselines import linear_map, round_robin_map, tile_layers
from vibe_plan.placement.cpsat import CpSatSettings, solve_layer
from vibe_plan.placement.eplb import balanced_packing, rebalance_experts
from vibe_plan.placement.heuristic import (
    gpu_finish,
    items_of,
    iterated_local_search,
    local_search,
    lpt,
    replica_counts,
)
from vibe_plan.placement.layer import plan_layer

README_WEIGHT = np.array(
    [
        [90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
        [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27],
    ]
)
README_PHY2LOG = [
    [5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1],
    [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1],
]
README_LOGCNT = [[1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 1], [1, 2, 1, 1, 1, 2, 2, 1, 2, 1, 1, 1]]


def _check_log2phy(phy2log, log2phy, logcnt):
    L, E = logcnt.shape
    assert log2phy.shape[:2] == (L, E)
    for layer in range(L):
        np.testing.assert_array_equal(np.bincount(phy2log[layer], minlength=E), logcnt[layer])
        for e in range(E):
            slots = log2phy[layer, e]
            used = slots[slots >= 0]
            assert len(used) == logcnt[layer, e]
            assert (slots[len(used) :] == -1).all(), "padding must follow the used entries"
            assert sorted(used.tolist()) == np.flatnonzero(phy2log[layer] == e).tolist()


# ----- EPLB -----


def test_eplb_readme_example():
    phy2log, log2phy, logcnt = rebalance_experts(README_WEIGHT, 16, 4, 2, 8)
    assert phy2log.tolist() == README_PHY2LOG
    assert logcnt.tolist() == README_LOGCNT
    _check_log2phy(phy2log, log2phy, logcnt)
    # Per-GPU token load max / mean, as quoted next to the example.
    per_rep = README_WEIGHT / logcnt
    gpu_load = np.take_along_axis(per_rep, phy2log, axis=1).reshape(2, 8, 2).sum(-1)
    ratio = gpu_load.max(axis=1) / gpu_load.mean(axis=1)
    np.testing.assert_allclose(ratio, [1.208, 1.242], atol=5e-4)


def _reference_global(weight, num_phy, num_gpus):
    """EPLB's global policy written out plainly: replicate the largest load / count, then sort
    replicas by load (stable), each into the lightest GPU with room (lowest index on ties)."""
    E = len(weight)
    phys = list(range(E))
    cnt = [1] * E
    for _ in range(num_phy - E):
        best = max(range(E), key=lambda e: (weight[e] / cnt[e], -e))
        phys.append(best)
        cnt[best] += 1
    loads = [weight[e] / cnt[e] for e in phys]
    per = num_phy // num_gpus
    packs: list[list[int]] = [[] for _ in range(num_gpus)]
    total = [0.0] * num_gpus
    for i in sorted(range(num_phy), key=lambda i: -loads[i]):
        g = min((g for g in range(num_gpus) if len(packs[g]) < per), key=lambda g: (total[g], g))
        packs[g].append(phys[i])
        total[g] += loads[i]
    return [e for pack in packs for e in pack], cnt


def test_eplb_global_fallback_when_groups_do_not_divide_nodes():
    phy2log, log2phy, logcnt = rebalance_experts(README_WEIGHT, 16, 3, 2, 8)
    flat, _, flat_cnt = rebalance_experts(README_WEIGHT, 16, 1, 1, 8)
    np.testing.assert_array_equal(phy2log, flat)
    np.testing.assert_array_equal(logcnt, flat_cnt)
    _check_log2phy(phy2log, log2phy, logcnt)
    for layer in range(2):
        ref, cnt = _reference_global(README_WEIGHT[layer].astype(float), 16, 8)
        assert phy2log[layer].tolist() == ref
        assert logcnt[layer].tolist() == cnt


def test_eplb_global_matches_reference_on_random_weights():
    rng = np.random.default_rng(4)
    for _ in range(10):
        G = int(rng.choice([2, 4]))
        E = int(rng.choice([4, 8]))
        R = G * int(rng.integers(0, 3))
        P = E + R
        if P % G:
            continue
        w = rng.integers(1, 500, size=(3, E)).astype(float)
        phy2log, log2phy, logcnt = rebalance_experts(w, P, 1, 1, G)
        _check_log2phy(phy2log, log2phy, logcnt)
        assert_valid_map(phy2log, G, E, P // G, distinct_per_gpu=False)
        for layer in range(3):
            ref, cnt = _reference_global(w[layer], P, G)
            assert phy2log[layer].tolist() == ref
            assert logcnt[layer].tolist() == cnt


def test_eplb_hierarchical_keeps_groups_on_nodes():
    rng = np.random.default_rng(8)
    w = rng.integers(1, 300, size=(4, 16))
    phy2log, _, _ = rebalance_experts(w, 24, 4, 2, 4)  # 4 groups of 4 on 2 nodes x 2 GPUs x 6
    assert_valid_map(phy2log, 4, 16, 6, distinct_per_gpu=False)
    for row in phy2log:
        for k in range(4):
            nodes = {slot // 12 for slot in np.flatnonzero(row // 4 == k)}
            assert len(nodes) == 1, f"group {k} spans nodes"


def test_eplb_one_slot_per_gpu_is_identity():
    w = np.array([[5.0, 1.0, 9.0, 3.0], [1.0, 2.0, 3.0, 4.0]])
    pack, rank = balanced_packing(w, 4)
    np.testing.assert_array_equal(pack, [[0, 1, 2, 3], [0, 1, 2, 3]])
    np.testing.assert_array_equal(rank, np.zeros((2, 4)))
    phy2log, _, logcnt = rebalance_experts(w, 4, 1, 1, 4)
    np.testing.assert_array_equal(phy2log, [[0, 1, 2, 3], [0, 1, 2, 3]])
    np.testing.assert_array_equal(logcnt, np.ones((2, 4)))


def test_balanced_packing_fills_each_pack_exactly():
    rng = np.random.default_rng(0)
    w = rng.uniform(0, 10, size=(5, 12))
    pack, rank = balanced_packing(w, 3)
    for row_pack, row_rank in zip(pack, rank, strict=True):
        assert np.bincount(row_pack, minlength=3).tolist() == [4, 4, 4]
        for p in range(3):
            assert sorted(row_rank[row_pack == p].tolist()) == [0, 1, 2, 3]


def test_make_log2phy_without_rank():
    phy2log = np.array([[2, 0, 2, 1, 0, 2]])
    log2phy = make_log2phy(phy2log, 3)
    assert log2phy.shape == (1, 3, 4)
    assert log2phy[0].tolist() == [[1, 4, -1, -1], [3, -1, -1, -1], [0, 2, 5, -1]]


# ----- linear / round_robin -----


@pytest.mark.parametrize(("E", "G", "S"), [(8, 4, 2), (8, 4, 3), (6, 2, 5), (5, 5, 1)])
def test_linear_map(E, G, S):
    row = linear_map(E, G, S)
    assert row.shape == (G * S,)
    assert_valid_map(row, G, E, S, distinct_per_gpu=False)
    assert row[:E].tolist() == list(range(E))  # contiguous blocks in logical order
    assert [int(row[i]) for i in range(E, G * S)] == [i % E for i in range(E, G * S)]
    blocks = row.reshape(G, S)
    for g in range(G):  # GPU g owns the g-th block of range(E) + [i % E for redundant]
        assert blocks[g].tolist() == [i % E for i in range(g * S, (g + 1) * S)]
    tiled = tile_layers(row, 3)
    assert tiled.shape == (3, G * S) and (tiled == row).all()


@pytest.mark.parametrize(("E", "G", "S"), [(8, 4, 2), (8, 4, 3), (6, 2, 5), (12, 4, 4)])
def test_round_robin_map(E, G, S):
    row = round_robin_map(E, G, S)
    assert row.shape == (G * S,)
    assert_valid_map(row, G, E, S, distinct_per_gpu=False)
    blocks = row.reshape(G, S)
    for e in range(E):
        assert e in blocks[e % G], f"expert {e} should be on GPU {e % G}"


# ----- heuristic -----


def _curves(slowdowns, tokens=(1, 16, 64, 256, 1024), base=(4.0, 5.0, 8.0, 20.0, 70.0)):
    return [TimeCurve.from_points(list(tokens), f * np.array(base)) for f in slowdowns]


def test_replica_counts():
    curves = _curves([1.0, 1.2, 1.4, 1.1])
    load = np.array([4000.0, 50, 900, 10, 2000, 5, 300, 70])
    cnt = replica_counts(load, 16, curves, max_per_expert=4)
    assert cnt.sum() == 16 and cnt.min() >= 1 and cnt.max() <= 4
    order = np.argsort(-load)
    assert np.all(np.diff(cnt[order]) <= 0), "a heavier expert got fewer replicas"
    assert replica_counts(load, 8, curves, 4).tolist() == [1] * 8
    capped = replica_counts(load, 12, curves, max_per_expert=2)
    assert capped.max() <= 2 and capped.sum() == 12
    assert capped[[0, 4, 2, 6]].tolist() == [2, 2, 2, 2]  # the four heaviest, not 2 + 4 on one


def _random_layer(rng, G, S, E):
    curves = _curves(rng.uniform(1.0, 1.4, size=G))
    load = rng.lognormal(5.0, 1.2, size=E)
    cnt = replica_counts(load, G * S, curves, max_per_expert=G)
    ie = items_of(cnt)
    p = expert_time(curves, load / cnt)[ie]
    return curves, load, cnt, ie, p


def _check_plan(item_gpu, ie, G, S):
    assert np.bincount(item_gpu, minlength=G).tolist() == [S] * G
    pairs = set(zip(ie.tolist(), item_gpu.tolist(), strict=True))
    assert len(pairs) == len(ie), "two replicas of one expert on one GPU"


def test_lpt_and_local_search_valid_and_improving():
    rng = np.random.default_rng(12)
    for _ in range(15):
        G, S = int(rng.integers(2, 6)), int(rng.integers(1, 5))
        E = int(rng.integers(S, G * S + 1))
        _, _, _, ie, p = _random_layer(rng, G, S, E)
        start = lpt(p, ie, G, S)
        _check_plan(start, ie, G, S)
        improved = local_search(p, ie, start, G)
        _check_plan(improved, ie, G, S)
        assert gpu_finish(p, improved, G).max() <= gpu_finish(p, start, G).max() * (1 + 1e-12)
        kicked = iterated_local_search(p, ie, improved, G, target=0.0, iters=5, seed=1)
        _check_plan(kicked, ie, G, S)
        assert gpu_finish(p, kicked, G).max() <= gpu_finish(p, improved, G).max() * (1 + 1e-12)


def test_lpt_puts_heavy_items_on_fast_gpus():
    # Two GPUs, GPU 1 twice as slow; two heavy and two light items, two slots each. Best: both
    # heavy items on the fast GPU (20 vs 4); splitting them costs 22 on the slow GPU.
    p = np.array([[10.0, 20.0], [10.0, 20.0], [1.0, 2.0], [1.0, 2.0]])
    ie = np.arange(4)
    plan = local_search(p, ie, lpt(p, ie, 2, 2), 2)
    assert gpu_finish(p, plan, 2).max() == pytest.approx(20.0)
    assert plan.tolist() == [0, 0, 1, 1]


# ----- one layer: heuristic + bounds + CP-SAT -----


def _brute_force(cost, S):
    """Optimal makespan with one replica per expert (E = G * S) by enumeration."""
    E, G = cost.shape
    best = np.inf
    for perm in itertools.permutations(range(E)):
        gpu = np.empty(E, dtype=int)
        gpu[list(perm)] = np.repeat(np.arange(G), S)
        span = np.bincount(gpu, weights=cost[np.arange(E), gpu], minlength=G).max()
        best = min(best, span)
    return best


def test_plan_layer_optimal_on_tiny_instances():
    rng = np.random.default_rng(21)
    settings = CpSatSettings(time_limit=2.0, workers=2, seed=0)
    for _ in range(4):
        G, S = 3, 2
        times = [np.sort(rng.uniform(1, 30, size=4)) for _ in range(G)]  # not proportional
        curves = [TimeCurve.from_points([1, 32, 256, 1024], t) for t in times]
        load = rng.lognormal(5, 1.0, size=G * S)
        plan = plan_layer(load, curves, S, settings)
        assert_valid_map(plan.phy2log, G, G * S, S)
        cost = expert_time(curves, load)
        opt = _brute_force(cost, S)
        assert plan.lower_bound_us <= opt * (1 + 1e-9)
        assert plan.makespan_us <= opt * (1 + 2e-3)
        assert plan.makespan_us <= plan.heuristic_us * (1 + 1e-12)


def test_plan_layer_consistent_with_cost_model():
    rng = np.random.default_rng(5)
    settings = CpSatSettings(time_limit=0.05)
    for _ in range(6):
        G, S = int(rng.integers(2, 5)), int(rng.integers(2, 5))
        E = int(rng.integers(S, G * S + 1))
        curves = _curves(rng.uniform(1.0, 1.4, size=G))
        load = rng.lognormal(5, 1.3, size=E)
        plan = plan_layer(load, curves, S, settings)
        assert_valid_map(plan.phy2log, G, E, S)
        span = gpu_times(curves, plan.phy2log[None], load[None]).max()
        assert plan.makespan_us == pytest.approx(span, rel=1e-9)
        assert plan.lower_bound_us <= plan.makespan_us * (1 + 1e-9)
        assert plan.makespan_us <= plan.heuristic_us * (1 + 1e-12)


@pytest.mark.parametrize("time_limit", [0.0, 1e-6])
def test_plan_layer_valid_when_cpsat_has_no_time(time_limit):
    rng = np.random.default_rng(9)
    curves = _curves(rng.uniform(1.0, 1.3, size=4))
    load = rng.lognormal(5, 1.5, size=14)
    plan = plan_layer(load, curves, 5, CpSatSettings(time_limit=time_limit))
    assert_valid_map(plan.phy2log, 4, 14, 5)
    assert plan.makespan_us <= plan.heuristic_us * (1 + 1e-12)
    assert plan.lower_bound_us <= plan.makespan_us * (1 + 1e-9)


def test_solve_layer_improves_bad_hint_and_bounds_optimum():
    rng = np.random.default_rng(3)
    G, S = 3, 2
    cost = rng.uniform(1, 20, size=(G * S, 1)) * rng.uniform(1.0, 1.5, size=(1, G))
    hint = np.zeros((G * S, G), dtype=bool)
    order = np.argsort(-cost[:, 0])  # worst hint: heaviest items together on the slowest GPU
    slow = int(np.argmax(cost[0]))
    gpus = [slow] + [g for g in range(G) if g != slow]
    for k, e in enumerate(order):
        hint[e, gpus[k // S]] = True
    hint_span = float((cost * hint).sum(axis=0).max())
    res = solve_layer(cost, np.ones(G * S, dtype=np.int64), S, hint, hint_span, CpSatSettings(2.0))
    opt = _brute_force(cost, S)
    assert res.status in ("OPTIMAL", "FEASIBLE")
    assert res.expert_gpus is not None
    assert res.expert_gpus.sum(axis=0).tolist() == [S] * G
    assert res.expert_gpus.sum(axis=1).tolist() == [1] * (G * S)
    found = float((cost * res.expert_gpus).sum(axis=0).max())
    assert found <= opt * (1 + 2e-3) and found < hint_span
    assert res.bound_us <= opt * (1 + 1e-9)


def test_flat_curves_replicate_and_pack_by_tokens():
    """Below the knee every expert costs the floor: replicas then go to the hottest experts and
    LPT balances tokens, as a token balancer would (batches spiking past the knee need that)."""
    flat = [TimeCurve.from_points([1, 4096], [10.0, 10.0]) for _ in range(4)]
    load = np.array([5.0, 50.0, 1.0, 40.0, 2.0, 3.0])
    cnt = replica_counts(load, 8, flat, max_per_expert=4)
    assert cnt.tolist() == [1, 2, 1, 2, 1, 1]
    items = items_of(cnt)
    p = expert_time(flat, (load / cnt)[items])
    gpu = lpt(p, items, 4, 2, (load / cnt)[items])
    tokens = np.bincount(gpu, weights=(load / cnt)[items], minlength=4)
    unbalanced = lpt(p, items, 4, 2)
    tokens_blind = np.bincount(unbalanced, weights=(load / cnt)[items], minlength=4)
    assert tokens.max() <= tokens_blind.max()
    assert tokens.max() - tokens.min() < 20
