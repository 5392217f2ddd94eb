"""`--dispatch` through the CLI: plans made for a rule, scored under any rule, bad options."""

from __future__ import annotations

import numpy as np
import pytest
from placement_inputs import (
    assert_valid_map,
    load_json,
    placement_map,
    skewed_counts,
    solve_args,
    write_gpus,
    write_routing,
)

from vibe_plan.artifacts import load_gpu_profile, load_placement, load_routing_profile
from vibe_plan.cost.dispatch import Dispatch, rank_shares
from vibe_plan.placement.evaluate import score

HOSTS = ["n0"] * 4 + ["n1"] * 4
SPEEDS8 = [1.0, 1.12, 1.04, 1.2, 0.96, 1.08, 1.16, 1.0]


@pytest.fixture
def two_nodes(tmp_path):
    """8 GPUs on 2 nodes, 16 experts + 8 redundant (3 slots per GPU), 3 MoE layers."""
    gpus = write_gpus(tmp_path / "gpus.yaml", SPEEDS8, hosts=HOSTS)
    counts = skewed_counts(12, 3, 16, tokens=4096, sigma=1.2)
    plan = write_routing(tmp_path / "plan.npz", counts[:8], num_hidden_layers=5)
    held = write_routing(tmp_path / "held.npz", counts[8:], num_hidden_layers=5)
    return gpus, plan, held


def _solve(vibe, gpus, routing, out, *extra):
    r = vibe(*solve_args(gpus, routing, out, "--redundant", "8", *extra))
    assert r.code == 0, r.err
    return r


def test_static_plan_spreads_replicas_over_nodes(vibe, two_nodes, tmp_path):
    gpus, plan, _ = two_nodes
    r = _solve(vibe, gpus, plan, tmp_path / "s.json", "--dispatch", "static")
    m = placement_map(tmp_path / "s.json")
    assert_valid_map(m, 8, 16, 3)
    for row in m:
        node = np.arange(24) // 12
        for e in range(16):
            nodes = node[row == e]
            assert len(set(nodes.tolist())) == len(nodes), f"expert {e} twice on one node"
    doc = load_json(tmp_path / "s.json")
    assert doc["dispatch"] == {"rule": "static", "token_origin": "uniform"}
    assert "static" in r.out
    # With one replica per node and both nodes covered, the static split is exactly n/r.
    w = rank_shares(m, 8, Dispatch("static", 2, None, 5), [1, 2, 3])
    cnt = np.stack([np.bincount(row, minlength=16)[row] for row in m])
    np.testing.assert_allclose(w, 1 / cnt)


def test_static_plan_beats_the_even_plan_under_static(vibe, two_nodes, tmp_path):
    gpus, plan, held = two_nodes
    _solve(vibe, gpus, plan, tmp_path / "s.json", "--dispatch", "static")
    _solve(vibe, gpus, plan, tmp_path / "e.json")
    gp, rp = load_gpu_profile(gpus), load_routing_profile(held)
    d = Dispatch("static", 2, None, rp.num_hidden_layers)
    lids = rp.layer_ids.tolist()
    s_static = score("s", gp, rp, load_placement(tmp_path / "s.json", 8, lids, 16)[0], d)
    s_even = score("e", gp, rp, load_placement(tmp_path / "e.json", 8, lids, 16)[0], d)
    assert s_static.mean_us <= s_even.mean_us * (1 + 1e-9)


def test_predicted_is_the_rule_on_the_mean_load(vibe, two_nodes, tmp_path):
    gpus, plan, _ = two_nodes
    _solve(vibe, gpus, plan, tmp_path / "e.json")
    gp, rp = load_gpu_profile(gpus), load_routing_profile(plan)
    for rule in ("static", "lp"):
        _solve(vibe, gpus, plan, tmp_path / f"{rule}.json", "--dispatch", rule)
        p, _ = load_placement(tmp_path / f"{rule}.json", 8, rp.layer_ids.tolist(), 16)
        d = Dispatch(rule, 2, None, rp.num_hidden_layers)
        from vibe_plan.cost import curves_of, gpu_times

        t = gpu_times(curves_of(gp), p.phy2log, rp.mean_load(), d, rp.layer_ids.tolist())
        np.testing.assert_allclose(p.predicted["makespan_us"], t.max(axis=1), atol=2e-3)


def test_static_plan_is_the_same_for_any_jobs(vibe, two_nodes, tmp_path):
    gpus, plan, _ = two_nodes
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    _solve(vibe, gpus, plan, a, "--dispatch", "static")
    args = solve_args(gpus, plan, b, "--redundant", "8", "--dispatch", "static")
    args[args.index("--jobs") + 1] = "2"
    r = vibe(*args)
    assert r.code == 0, r.err
    assert a.read_bytes() == b.read_bytes()


def test_evaluate_scores_under_each_rule(vibe, two_nodes, tmp_path):
    gpus, plan, held = two_nodes
    _solve(vibe, gpus, plan, tmp_path / "p.json", "--export", f"sglang={tmp_path / 'sg.json'}")
    means = {}
    for rule in ("even", "static", "local", "lp"):
        csv = tmp_path / f"{rule}.csv"
        r = vibe(
            "evaluate", "--gpus", gpus, "--routing", held, tmp_path / "p.json",
            tmp_path / "sg.json", "--dispatch", rule, "--csv", csv,
        )  # fmt: skip
        assert r.code == 0, r.err
        assert f"{rule} dispatch" in r.out
        import csv as csv_module

        rows = list(csv_module.DictReader(csv.open()))
        # The vibe file and its SGLang export are the same map: the same score.
        assert float(rows[0]["mean_us"]) == pytest.approx(float(rows[1]["mean_us"]))
        means[rule] = float(rows[0]["mean_us"])
    assert len(set(means.values())) > 1  # the rule changes the score


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dispatch", "round-robin"], "unknown dispatch rule"),
        (["--dispatch", "static", "--token-origin", "1,2,3"], "one per EP rank"),
        (["--dispatch", "static", "--token-origin", "1,nan"], "finite"),
    ],
)
def test_bad_dispatch_options(vibe, two_nodes, tmp_path, args, message):
    gpus, plan, held = two_nodes
    out = tmp_path / "x.json"
    r = vibe(*solve_args(gpus, plan, out, "--redundant", "8", *args))
    assert r.code == 2 and message in r.err and r.err.startswith("error:")
    assert not out.exists()
    r = vibe("evaluate", "--gpus", gpus, "--routing", held, plan, *args)
    assert r.code == 2 and message in r.err


def test_refit_keeps_the_replicas_and_their_shares(two_nodes):
    """The singles move around the replicas; the engine's tables, so every share, stay put."""
    from vibe_plan.cost import curves_of, gpu_times
    from vibe_plan.placement.solve import (
        SolveOptions,
        refit_singles,
        resolve_problem,
        solve_placement,
    )

    gpus, plan, _ = two_nodes
    gp, rp = load_gpu_profile(gpus), load_routing_profile(plan)
    opts = SolveOptions(redundant=8, jobs=1, time_limit=0.05, group_locality=False)
    m = solve_placement(gp, rp, opts).placement.phy2log  # planned for an even split
    prob = resolve_problem(gp, rp, opts)
    lids = rp.layer_ids.tolist()
    d = Dispatch("static", 2, None, rp.num_hidden_layers)
    curves, load = curves_of(gp), rp.mean_load()
    new = refit_singles(m, load, curves, prob, d, lids, within_nodes=False)
    assert_valid_map(new, 8, 16, 3)
    for old_row, new_row in zip(m, new, strict=True):
        for row in (old_row, new_row):
            assert row.shape == (24,)
        rep = np.bincount(old_row, minlength=16) > 1
        for g in range(8):
            old_block, new_block = old_row[3 * g : 3 * g + 3], new_row[3 * g : 3 * g + 3]
            assert set(old_block[rep[old_block]]) == set(new_block[rep[new_block]])
    old_w = rank_shares(m, 8, d, lids)
    new_w = rank_shares(new, 8, d, lids)
    for i in range(len(m)):
        assert _replica_shares(m[i], old_w[i]) == pytest.approx(_replica_shares(new[i], new_w[i]))
    before = gpu_times(curves, m, load, d, lids).max(axis=1)
    after = gpu_times(curves, new, load, d, lids).max(axis=1)
    assert (after <= before + 1e-9).all()


def _replica_shares(row: np.ndarray, w: np.ndarray) -> dict:
    """(expert, GPU) -> share, for the replicated experts of one layer (3 slots per GPU)."""
    rep = np.bincount(row, minlength=16) > 1
    return {(int(e), s // 3): float(w[s]) for s, e in enumerate(row) if rep[e]}
