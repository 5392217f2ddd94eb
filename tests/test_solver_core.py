"""The layer solver's core: node-level anti-affinity (no node holds two replicas of one expert),
the exact feasibility check behind LPT, and that default plans stay what they were."""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import pytest
from placement_inputs import brute_force_optimum

from vibe_plan.cost import TimeCurve, expert_time
from vibe_plan.placement import layer
from vibe_plan.placement.bounds import lower_bound, lp_bound
from vibe_plan.placement.config_bound import LARGE_SLACK
from vibe_plan.placement.cpsat import CpSatSettings, solve_layer
from vibe_plan.placement.heuristic import (
    items_of,
    iterated_local_search,
    local_search,
    lpt,
    replica_counts,
    rest_fits,
)
from vibe_plan.placement.layer import plan_layer

BASE = np.array([4.0, 5.0, 8.0, 20.0, 70.0])


def _curves(rng, G):
    return [
        TimeCurve.from_points([1, 16, 64, 256, 1024], f * BASE * rng.uniform(0.9, 1.1, 5))
        for f in rng.uniform(1.0, 1.4, G)
    ]


def _check_domains(phy2log, node_of, E, S, logcnt=None):
    G = len(node_of)
    rows = phy2log.reshape(G, S)
    assert sorted(set(phy2log.tolist())) == list(range(E)), "an expert is missing"
    for n in np.unique(node_of):
        held = rows[node_of == n].ravel()
        assert len(set(held.tolist())) == len(held), f"node {n} holds an expert twice"
    if logcnt is not None:
        assert np.bincount(phy2log, minlength=E).tolist() == logcnt.tolist()


def _random_node_instance(rng, tight):
    N = int(rng.integers(2, 5))
    per = int(rng.integers(1, 4))
    G = N * per
    S = int(rng.integers(1, 3)) if tight else int(rng.integers(1, 5))
    # Tight: as few experts as a node's slots allow, so most experts need one replica per node.
    lo = max(per * S, -(-G * S // N))
    E = lo if tight else int(rng.integers(lo, G * S + 1))
    node_of = np.repeat(np.arange(N), per)
    if rng.random() < 0.5:
        node_of = rng.permutation(node_of)  # nodes need not be contiguous rank blocks
    return N, G, S, E, node_of


@pytest.mark.parametrize("tight", [False, True])
def test_plan_layer_with_nodes_is_valid(tight):
    rng = np.random.default_rng(7 + tight)
    for k in range(25):
        N, G, S, E, node_of = _random_node_instance(rng, tight)
        curves = _curves(rng, G)
        load = rng.lognormal(5.0, 1.5, size=E)
        settings = CpSatSettings(time_limit=(0.0, 0.02)[k % 2])
        plan = plan_layer(load, curves, S, settings, node_of=node_of, max_per_expert=N)
        assert plan.phy2log.shape == (G * S,)
        cnt = np.bincount(plan.phy2log, minlength=E)
        assert cnt.max() <= N
        _check_domains(plan.phy2log, node_of, E, S, replica_counts(load, G * S, curves, N))
        assert plan.lower_bound_us <= plan.makespan_us * (1 + 1e-9)
        assert plan.makespan_us <= plan.heuristic_us * (1 + 1e-12)


def test_heuristic_steps_keep_nodes_clean():
    rng = np.random.default_rng(11)
    for _ in range(40):
        N, G, S, E, node_of = _random_node_instance(rng, tight=bool(rng.integers(2)))
        load = rng.lognormal(5.0, 1.5, size=E)
        curves = _curves(rng, G)
        cnt = replica_counts(load, G * S, curves, max_per_expert=N)
        ie = items_of(cnt)
        p = expert_time(curves, load / cnt)[ie]
        for item_gpu in _steps(p, ie, G, S, node_of):
            assert np.bincount(item_gpu, minlength=G).tolist() == [S] * G
            pairs = set(zip(ie.tolist(), node_of[item_gpu].tolist(), strict=True))
            assert len(pairs) == len(ie), "two replicas of one expert on one node"


def _steps(p, ie, G, S, node_of):
    start = lpt(p, ie, G, S, node_of=node_of)
    improved = local_search(p, ie, start, G, node_of=node_of)
    kicked = iterated_local_search(p, ie, improved, G, 0.0, iters=10, seed=1, node_of=node_of)
    return start, improved, kicked


def test_identity_nodes_are_the_default():
    """node_of = arange(G) (or any labels, one GPU each) is today's GPU rule: the same plan."""
    rng = np.random.default_rng(3)
    for k in range(8):
        G, S = int(rng.integers(2, 7)), int(rng.integers(2, 5))
        E = int(rng.integers(S, G * S + 1))
        curves = _curves(rng, G)
        load = rng.lognormal(5.0, 1.4, size=E)
        settings = CpSatSettings(time_limit=0.02)
        plain = plan_layer(load, curves, S, settings)
        labels = np.arange(G) if k % 2 else rng.permutation(G) + 10
        same = plan_layer(load, curves, S, settings, node_of=labels)
        assert plain.phy2log.tolist() == same.phy2log.tolist()
        assert plain.makespan_us == same.makespan_us
        assert plain.lower_bound_us == same.lower_bound_us


def test_default_heuristic_unchanged():
    """Digest of replica counts, LPT, local search and ILS on fixed instances, recorded from the
    code before node domains and the speed work: default plans must not drift."""
    rng = np.random.default_rng(2024)
    h = hashlib.sha256()
    for _ in range(12):
        G, S = int(rng.integers(2, 9)), int(rng.integers(1, 7))
        E = int(rng.integers(S, G * S + 1))
        curves = _curves(rng, G)
        load = rng.lognormal(5.0, 1.3, size=E)
        cnt = replica_counts(load, G * S, curves, max_per_expert=G)
        ie = items_of(cnt)
        p = expert_time(curves, load / cnt)[ie]
        start = lpt(p, ie, G, S, (load / cnt)[ie])
        single = local_search(p, ie, start, G, doubles=False)
        double = local_search(p, ie, single, G)
        kicked = iterated_local_search(p, ie, double, G, target=0.0, iters=20, seed=3)
        for a in (cnt, start, single, double, kicked):
            h.update(np.asarray(a, dtype=np.int64).tobytes())
    assert h.hexdigest() == "83debf28c2f2c25c143e8c9fa06901f4adc9fdb6eb5a80d3fdc5dd7deb347fa0"


def _fits_brute(cap, e_in, e, remaining):
    """Place the remaining replicas one by one, every way: feasible or not."""
    items = [x for x in range(len(remaining)) for _ in range(int(remaining[x]))]
    held = {(x, d) for d in range(len(cap)) for x in ([e] if e_in[d] else [])}

    def go(k, cap, held):
        if k == len(items):
            return all(c == 0 for c in cap)
        x = items[k]
        for d in range(len(cap)):
            if cap[d] > 0 and (x, d) not in held:
                cap[d] -= 1
                held.add((x, d))
                ok = go(k + 1, cap, held)
                cap[d] += 1
                held.discard((x, d))
                if ok:
                    return True
        return False

    return go(0, list(cap), held)


def test_rest_fits_matches_brute_force():
    rng = np.random.default_rng(5)
    checked = {True: 0, False: 0}
    for _ in range(300):
        D = int(rng.integers(1, 4))
        remaining = rng.integers(0, D + 1, size=int(rng.integers(1, 5)))
        total = int(remaining.sum())
        cap = np.bincount(rng.integers(0, D, size=total), minlength=D)
        e = int(rng.integers(len(remaining)))
        e_in = rng.random(D) < 0.3
        want = _fits_brute(cap, e_in, e, remaining)
        assert rest_fits(cap, e_in, e, remaining) == want
        checked[want] += 1
    assert min(checked.values()) > 20  # both answers exercised
    # The dead end LPT's cheap look-ahead can walk into: 3 slots left on one GPU, 2 experts.
    assert not rest_fits(np.array([3, 1]), np.array([False, False]), 0, np.array([0, 2, 2]))


def test_lpt_second_pass_leaves_the_dead_end():
    """Two heavy singles fit best together on GPU 0 (GPU 1 is slow for them), which leaves GPU 1
    three slots for the two replicas of A and of B: only two distinct experts. The cheap look-ahead
    walks into that; the exact pass does not."""
    ie = np.array([0, 0, 1, 1, 2, 3])  # A, A, B, B, C, D
    p = np.array([[0.5, 0.6], [0.5, 0.6], [0.4, 0.5], [0.4, 0.5], [10.0, 100.0], [1.0, 100.0]])
    item_gpu = lpt(p, ie, 2, 3)
    assert np.bincount(item_gpu, minlength=2).tolist() == [3, 3]
    assert item_gpu[0] != item_gpu[1] and item_gpu[2] != item_gpu[3]
    assert item_gpu[4] == 0  # the heaviest still goes where it is cheapest


def test_lpt_escapes_dead_ends_of_the_look_ahead():
    """Every order of a few heavy and light items on 2 GPUs: LPT always finds a valid plan."""
    for loads in itertools.product([1.0, 5.0, 30.0], repeat=4):
        load = np.array(loads)
        cnt = np.array([2, 2, 1, 1])  # 6 items on 2 GPUs x 3 slots
        ie = items_of(cnt)
        p = np.stack([load[ie], 1.3 * load[ie]], axis=1)
        item_gpu = lpt(p, ie, 2, 3)
        assert np.bincount(item_gpu, minlength=2).tolist() == [3, 3]
        assert len(set(zip(ie.tolist(), item_gpu.tolist(), strict=True))) == 6


def test_node_rule_in_lp_and_cpsat():
    """Two nodes of two GPUs: an expert with two replicas must use both nodes. The LP and CP-SAT
    with nodes never beat the plain models, and CP-SAT's plan keeps the rule."""
    rng = np.random.default_rng(9)
    G, S = 4, 2
    node_of = np.array([0, 0, 1, 1])
    cost = rng.uniform(1.0, 10.0, size=(6, 1)) * rng.uniform(1.0, 1.3, size=(1, G))
    logcnt = np.array([2, 2, 1, 1, 1, 1])
    plain = lp_bound(cost, logcnt, S)
    noded = lp_bound(cost, logcnt, S, node_of=node_of)
    assert noded >= plain * (1 - 1e-9)
    hint = np.zeros((6, G), dtype=bool)
    for e, gpus in enumerate([(0, 2), (1, 3), (0,), (1,), (2,), (3,)]):
        hint[e, list(gpus)] = True
    span = float((cost * hint).sum(axis=0).max())
    res = solve_layer(cost, logcnt, S, hint, span, CpSatSettings(1.0), node_of=node_of)
    assert res.expert_gpus is not None
    per_node = res.expert_gpus[:, :2].sum(axis=1), res.expert_gpus[:, 2:].sum(axis=1)
    assert per_node[0].max() <= 1 and per_node[1].max() <= 1
    assert res.bound_us <= float((cost * res.expert_gpus).sum(axis=0).max()) * (1 + 1e-9)


def test_node_too_small_for_distinct_experts_is_refused():
    curves = _curves(np.random.default_rng(0), 4)
    with pytest.raises(ValueError, match="node"):
        plan_layer(np.ones(3), curves, 2, CpSatSettings(), node_of=np.array([0, 0, 1, 1]))


def test_double_swap_versions_pick_the_same_move():
    """The per-partner loop and the one-block version break ties alike."""
    from vibe_plan.placement import heuristic as H

    rng = np.random.default_rng(11)
    for trial in range(30):
        G, S = int(rng.integers(2, 7)), int(rng.integers(2, 6))
        E = G * S - int(rng.integers(0, G))
        item_expert = np.concatenate([np.arange(E), rng.choice(E, G * S - E, replace=False)])
        item_gpu = np.repeat(np.arange(G), S)[rng.permutation(G * S)]
        # Costs on a coarse grid, so that ties happen.
        p = rng.integers(1, 6, size=(G * S, G)).astype(float)
        dom = np.arange(G) // (2 if trial % 2 else 1)
        fixed = rng.random(G * S) < 0.2
        finish = np.bincount(item_gpu, weights=p[np.arange(G * S), item_gpu], minlength=G)
        holds = np.zeros((int(dom.max()) + 1, E), dtype=bool)
        holds[dom[item_gpu], item_expert] = True
        args = (p, item_expert, item_gpu, finish, holds, dom, fixed)
        assert H._best_double_swap(*args) == H._double_swap_all_partners(*args)


@pytest.mark.parametrize("seed", range(4))
def test_grouped_layer_stops_nodes_at_the_slowest_but_keeps_its_makespan(seed):
    """Improving each node only down to the slowest node's plan gives the same layer makespan as
    improving every node fully, a valid map, and a bound no node's bound exceeds."""
    from vibe_plan.placement.groups import groups_to_nodes
    from vibe_plan.placement.solve import Problem, _plan_grouped

    rng = np.random.default_rng(seed)
    N, per, S, K, E = 3, 3, 4, 6, 30
    curves = _curves(rng, N * per)
    load = rng.lognormal(3.0, 1.0, E)
    prob = Problem(num_gpus=N * per, num_experts=E, slots_per_gpu=S, num_nodes=N, num_groups=K)
    settings = CpSatSettings(time_limit=0.0)
    plan = _plan_grouped(load, curves, prob, settings)
    full, bounds = [], []
    size = E // K
    for n, groups in enumerate(groups_to_nodes(load, curves, K, N)):
        experts = np.concatenate([np.arange(k * size, (k + 1) * size) for k in groups])
        alone = plan_layer(load[experts], curves[n * per : (n + 1) * per], S, settings)
        full.append(alone.makespan_us)
        bounds.append(alone.lower_bound_us)
        assert set(plan.phy2log[n * per * S : (n + 1) * per * S].tolist()) == set(experts.tolist())
    assert plan.makespan_us == pytest.approx(max(full), rel=1e-12)
    assert plan.lower_bound_us == pytest.approx(max(bounds), rel=1e-12)
    row = plan.phy2log.reshape(N * per, S)
    cnt = np.bincount(plan.phy2log, minlength=E)
    span = max(expert_time([curves[g]], load[row[g]] / cnt[row[g]]).sum() for g in range(N * per))
    assert span == pytest.approx(plan.makespan_us, rel=1e-9)


def test_a_layer_the_lp_cannot_certify_gets_the_configuration_bound():
    # Six experts on a GPU and one 1.2x slower, three slots each: the LP balances whole and
    # fractional experts, the analytic bounds are below too; without CP-SAT, the configuration
    # bound is what certifies the plan.
    curves = [TimeCurve.from_points([1, 100], [f, 100.0 * f]) for f in (1.0, 1.2)]
    load = np.array([17.0, 13.0, 10.0, 6.0, 6.0, 1.0])
    plan = plan_layer(load, curves, 3, CpSatSettings(time_limit=0.0))
    cost = expert_time(curves, load)
    ones = np.ones(6, dtype=np.int64)
    assert plan.makespan_us == pytest.approx(brute_force_optimum(cost, ones, 3))
    assert plan.status == "lp+config"
    assert lp_bound(cost, ones, 3) < plan.makespan_us * (1 - 2e-3)  # 0.3% below: uncertified
    assert plan.makespan_us * (1 - 1e-3) <= plan.lower_bound_us <= plan.makespan_us


def test_a_layer_too_large_for_the_lp_gets_the_configuration_bound_too(monkeypatch):
    # Above EXACT_MAX_CELLS (EP128 and up) neither the LP nor CP-SAT runs; the configuration bound
    # then prices experts at their mean time, on a coarser grid. Made small here by lowering the
    # size limit.
    monkeypatch.setattr(layer, "EXACT_MAX_CELLS", 0)
    curves = [TimeCurve.from_points([1, 100], [f, 100.0 * f]) for f in (1.0, 1.2)]
    load = np.array([17.0, 13.0, 10.0, 6.0, 6.0, 1.0])
    plan = plan_layer(load, curves, 3, CpSatSettings())
    cost = expert_time(curves, load)
    assert plan.status == "bound+config"
    assert lower_bound(cost, 3, np.arange(6)) < plan.makespan_us * (1 - 2e-3)
    assert plan.makespan_us * (1 - LARGE_SLACK) <= plan.lower_bound_us <= plan.makespan_us


def test_an_lp_that_runs_past_its_iteration_cap_gives_no_bound_and_no_hang(monkeypatch):
    # GLOP once ran for minutes on a degenerate 10 x 5 layer; its simplex now stops at a count
    # (not a clock, so plans stay reproducible) and the layer keeps its analytic bound.
    from vibe_plan.placement import bounds

    monkeypatch.setattr(bounds, "GLOP_ITERS_PER_ROW", 0)
    monkeypatch.setattr(bounds, "GLOP_MIN_ITERS", 1)
    curves = [TimeCurve.from_points([1, 100], [f, 100.0 * f]) for f in (1.0, 1.2)]
    load = np.array([17.0, 13.0, 10.0, 6.0, 6.0, 1.0])
    cost = expert_time(curves, load)
    relaxed = bounds.lp_relaxation(cost, np.ones(6, dtype=np.int64), 3)
    assert relaxed.bound == 0.0 and relaxed.prices is None
    plan = plan_layer(load, curves, 3, CpSatSettings(time_limit=0.0))
    assert plan.status == "bound"  # no LP, hence no LP-priced configuration bound either
    assert 0 < plan.lower_bound_us <= plan.makespan_us


def test_a_long_budget_runs_cpsat_on_wide_gaps_too():
    # The same layer: a 0.3% LP gap on three slots and unlike GPUs, where a 0.1 s CP-SAT run is
    # skipped; from CPSAT_LONG_S a user's budget is spent on it, and CP-SAT proves the optimum.
    curves = [TimeCurve.from_points([1, 100], [f, 100.0 * f]) for f in (1.0, 1.2)]
    load = np.array([17.0, 13.0, 10.0, 6.0, 6.0, 1.0])
    short = plan_layer(load, curves, 3, CpSatSettings())
    long = plan_layer(load, curves, 3, CpSatSettings(time_limit=layer.CPSAT_LONG_S))
    assert short.status == "lp+config"
    assert long.status == "cpsat-optimal"
    assert long.lower_bound_us == pytest.approx(long.makespan_us, rel=1e-5)
    assert long.makespan_us == pytest.approx(short.makespan_us)


def test_a_long_budget_gives_the_same_plan_for_any_jobs():
    # From CPSAT_LONG_S CP-SAT runs to its limit on wide gaps; its deterministic time, fixed seed
    # and interleaved search keep the plan the same in one process or in a pool.
    from vibe_plan.artifacts import ExpertShape
    from vibe_plan.placement.solve import SolveOptions, solve_placement
    from vibe_plan.synthetic import synthetic_gpu_profile, synthetic_routing

    gpus = synthetic_gpu_profile(ExpertShape(2048, 768), 8, 0.1, seed=3)
    routing = synthetic_routing(40, 3, 4, 4, 4096, seed=2)
    runs = [
        solve_placement(gpus, routing, SolveOptions(redundant=8, time_limit=1.0, jobs=jobs))
        for jobs in (1, 2)
    ]
    assert any(s.startswith("cpsat-feasible") for s in runs[0].status)  # stopped by its budget
    assert runs[0].status == runs[1].status
    assert np.array_equal(runs[0].placement.phy2log, runs[1].placement.phy2log)
    assert runs[0].placement.predicted == runs[1].placement.predicted
