"""`vibe solve` end to end through the CLI: outputs, determinism, multi-node locality, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from placement_inputs import (
    SPEEDS,
    assert_runs_light,
    assert_valid_map,
    export_args,
    load_json,
    placement_map,
    skewed_counts,
    solve_args,
    write_gpus,
    write_routing,
)

from vibe_plan.artifacts import load_gpu_profile, load_routing_profile, sha256_file
from vibe_plan.cost import curves_of, gpu_times


def test_solve_writes_a_valid_placement(vibe, inputs):
    gpus, routing, out = inputs
    r = vibe(*solve_args(gpus, routing, out / "p.json", "--redundant", "4"))
    assert r.code == 0, r.err
    doc = load_json(out / "p.json")
    assert doc["schema"] == "vibe.placement/v1"
    assert (doc["num_gpus"], doc["slots_per_gpu"], doc["num_nodes"]) == (4, 5, 1)
    assert (doc["num_logical_experts"], doc["num_physical_experts"]) == (16, 20)
    assert doc["layer_ids"] == [1, 2, 3]
    assert doc["method"] == "vibe"
    assert [g["uuid"] for g in doc["gpus"]] == [f"GPU-test-{g:04d}" for g in range(4)]
    assert [g["host"] for g in doc["gpus"]] == ["node0"] * 4
    assert doc["inputs"] == {
        "gpus_sha256": sha256_file(gpus),
        "routing_sha256": sha256_file(routing),
    }
    m = placement_map(out / "p.json")
    assert_valid_map(m, 4, 16, 5)
    # The predicted figures are the cost model's on the mean load.
    gp, rp = load_gpu_profile(gpus), load_routing_profile(routing)
    times = gpu_times(curves_of(gp), m, rp.mean_load())
    pred = doc["predicted"]
    np.testing.assert_allclose(pred["makespan_us"], times.max(axis=1), atol=2e-3)
    assert all(
        b <= s + 2e-3 for b, s in zip(pred["lower_bound_us"], pred["makespan_us"], strict=True)
    )
    assert len(pred["imbalance"]) == 3 and min(pred["imbalance"]) >= 1.0
    # The terminal shows vibe next to eplb and linear.
    for name in ("vibe", "eplb", "linear"):
        assert name in r.out


def test_heavy_experts_go_to_fast_gpus(vibe, tmp_path):
    """Two GPUs, one much slower; no redundancy: the fast GPU carries more tokens."""
    gpus = write_gpus(tmp_path / "g.yaml", [1.0, 1.6])
    routing = write_routing(tmp_path / "r.npz", skewed_counts(4, 2, 8, sigma=1.2, seed=5))
    r = vibe(*solve_args(gpus, routing, tmp_path / "p.json"))
    assert r.code == 0, r.err
    m = placement_map(tmp_path / "p.json")
    load = load_routing_profile(routing).mean_load()
    for layer in range(2):
        tokens = [load[layer, m[layer, g * 4 : (g + 1) * 4]].sum() for g in range(2)]
        assert tokens[0] > tokens[1]


def test_byte_identical_reruns(vibe, inputs):
    gpus, routing, out = inputs
    texts = []
    for run in ("a", "b"):
        folder = out / run
        folder.mkdir()
        r = vibe(*solve_args(gpus, routing, folder / "p.json", *export_args(folder)))
        assert r.code == 0, r.err
        assert "cpsat" in r.out  # this instance exercises CP-SAT, not only the heuristic
        texts.append({p.name: p.read_bytes() for p in sorted(folder.iterdir())})
    assert sorted(texts[0]) == ["e.json", "p.json", "s.json", "t.yaml"]
    assert texts[0] == texts[1]


def test_same_plan_with_parallel_layers(vibe, inputs):
    gpus, routing, out = inputs
    args = solve_args(gpus, routing, out / "one.json")
    assert vibe(*args).code == 0
    args = solve_args(gpus, routing, out / "two.json")
    args[args.index("--jobs") + 1] = "2"
    r = vibe(*args)
    assert r.code == 0, r.err
    one, two = load_json(out / "one.json"), load_json(out / "two.json")
    assert one == two


def test_other_seed_still_valid(vibe, inputs):
    gpus, routing, out = inputs
    for seed in ("1", "7"):
        r = vibe(*solve_args(gpus, routing, out / f"p{seed}.json", "--seed", seed, "-r", "4"))
        assert r.code == 0, r.err
        assert_valid_map(placement_map(out / f"p{seed}.json"), 4, 16, 5)


@pytest.mark.parametrize("method", ["eplb", "linear", "round_robin"])
def test_baseline_methods(vibe, inputs, method):
    gpus, routing, out = inputs
    r = vibe(*solve_args(gpus, routing, out / "p.json", "--method", method, "-r", "8"))
    assert r.code == 0, r.err
    doc = load_json(out / "p.json")
    assert doc["method"] == method and doc["slots_per_gpu"] == 6
    m = placement_map(out / "p.json")
    assert_valid_map(m, 4, 16, 6, distinct_per_gpu=False)
    if method == "linear":
        assert (m == np.arange(24) % 16).all()
    # Every method is costed with the same model and shown next to vibe's rows.
    gp, rp = load_gpu_profile(gpus), load_routing_profile(routing)
    times = gpu_times(curves_of(gp), m, rp.mean_load())
    np.testing.assert_allclose(doc["predicted"]["makespan_us"], times.max(axis=1), atol=2e-3)


def test_vibe_beats_baselines_on_mean_load(vibe, inputs):
    gpus, routing, out = inputs
    spans = {}
    for method in ("vibe", "eplb", "linear"):
        r = vibe(*solve_args(gpus, routing, out / f"{method}.json", "-m", method, "-r", "4"))
        assert r.code == 0, r.err
        spans[method] = sum(load_json(out / f"{method}.json")["predicted"]["makespan_us"])
    assert spans["vibe"] < spans["eplb"] and spans["vibe"] < spans["linear"]


# ----- several nodes -----


def _node_inputs(tmp_path, num_groups=2, loads=None):
    """2 nodes x 2 GPUs; 8 experts in `num_groups` groups; group 0 (experts 0-3) is hot."""
    gpus = write_gpus(
        tmp_path / "g.yaml", [1.0, 1.1, 1.05, 1.15], hosts=["node0", "node0", "node1", "node1"]
    )
    if loads is None:
        loads = [900, 800, 850, 700, 20, 30, 10, 25]
    counts = np.array([[loads, loads[::-1]], [loads, loads[::-1]]], dtype=np.int64)
    routing = write_routing(tmp_path / "r.npz", counts, num_groups=num_groups)
    return gpus, routing


def _groups_on_one_node(m, num_groups, group_size, slots_per_node):
    for row in m:
        for k in range(num_groups):
            slots = np.flatnonzero(row // group_size == k)
            if len({int(s) // slots_per_node for s in slots}) != 1:
                return False
    return True


def test_multi_node_keeps_groups_on_one_node(vibe, tmp_path):
    gpus, routing = _node_inputs(tmp_path)
    r = vibe(*solve_args(gpus, routing, tmp_path / "local.json"))
    assert r.code == 0, r.err
    doc = load_json(tmp_path / "local.json")
    assert doc["num_nodes"] == 2
    m = placement_map(tmp_path / "local.json")
    assert_valid_map(m, 4, 8, 2)
    assert _groups_on_one_node(m, 2, 4, 4)

    r = vibe(*solve_args(gpus, routing, tmp_path / "free.json", "--no-group-locality"))
    assert r.code == 0, r.err
    free = placement_map(tmp_path / "free.json")
    assert_valid_map(free, 4, 8, 2)
    # With the hot group pinned to one node the makespan is much higher; without locality the
    # solver spreads the hot experts over both nodes.
    assert not _groups_on_one_node(free, 2, 4, 4)
    local_span = sum(doc["predicted"]["makespan_us"])
    free_span = sum(load_json(tmp_path / "free.json")["predicted"]["makespan_us"])
    assert free_span < local_span


def test_multi_node_with_redundancy_and_more_groups(vibe, tmp_path):
    gpus, routing = _node_inputs(tmp_path, num_groups=4)
    r = vibe(*solve_args(gpus, routing, tmp_path / "p.json", "-r", "4"))
    assert r.code == 0, r.err
    m = placement_map(tmp_path / "p.json")
    assert_valid_map(m, 4, 8, 3)
    assert _groups_on_one_node(m, 4, 2, 6)
    # eplb does the same (hierarchical: groups divide over nodes).
    r = vibe(*solve_args(gpus, routing, tmp_path / "e.json", "-r", "4", "-m", "eplb"))
    assert r.code == 0, r.err
    assert _groups_on_one_node(placement_map(tmp_path / "e.json"), 4, 2, 6)


def test_groups_option_overrides_meta(vibe, tmp_path):
    gpus, routing = _node_inputs(tmp_path, num_groups=None)
    r = vibe(*solve_args(gpus, routing, tmp_path / "p.json", "--groups", "2"))
    assert r.code == 0, r.err
    assert _groups_on_one_node(placement_map(tmp_path / "p.json"), 2, 4, 4)
    # One node: no locality to keep, any valid plan.
    r = vibe(*solve_args(gpus, routing, tmp_path / "one.json", "--groups", "2", "--nodes", "1"))
    assert r.code == 0, r.err
    assert load_json(tmp_path / "one.json")["num_nodes"] == 1
    assert_valid_map(placement_map(tmp_path / "one.json"), 4, 8, 2)


def test_group_locality_with_more_slots_than_node_experts(vibe, tmp_path):
    gpus, routing = _node_inputs(tmp_path, num_groups=4)
    r = vibe(*solve_args(gpus, routing, tmp_path / "free.json", "-r", "12", "--no-group-locality"))
    assert r.code == 0, r.err
    assert_valid_map(placement_map(tmp_path / "free.json"), 4, 8, 5)
    r = vibe(*solve_args(gpus, routing, tmp_path / "p.json", "-r", "12"))
    assert r.code in (0, 2), r.err
    if r.code == 0:
        assert_valid_map(placement_map(tmp_path / "p.json"), 4, 8, 5)
    else:
        assert r.err.startswith("error:")


def test_layer_without_tokens(vibe, tmp_path):
    gpus = write_gpus(tmp_path / "g.yaml", SPEEDS)
    counts = skewed_counts(3, 2, 8)
    counts[:, 0] = 0
    routing = write_routing(tmp_path / "r.npz", counts)
    for method in ("vibe", "eplb"):
        r = vibe(*solve_args(gpus, routing, tmp_path / f"{method}.json", "-m", method, "-r", 4))
        assert r.code == 0, r.err
        m = placement_map(tmp_path / f"{method}.json")
        assert_valid_map(m, 4, 8, 3, distinct_per_gpu=(method == "vibe"))
        assert load_json(tmp_path / f"{method}.json")["predicted"]["makespan_us"][0] == 0.0


# ----- light core: no torch, no transformers -----


def test_solve_and_evaluate_import_no_torch(inputs):
    gpus, routing, out = inputs
    assert_runs_light(
        ["solve", "--gpus", gpus, "--routing", routing, "--out", out / "p.json", "-q",
         "--time-limit", "0.02", "--export", f"sglang={out / 's.json'}",
         "--export", f"trtllm={out / 't.yaml'}", "--export", f"eplb={out / 'e.json'}"],
        ["evaluate", "--gpus", gpus, "--routing", routing, out / "p.json", out / "s.json"],
    )  # fmt: skip
    assert json.loads((out / "p.json").read_text())["method"] == "vibe"


def test_interleaved_hosts_are_reported(vibe, tmp_path):
    """Nodes are blocks of the rank order; hosts that interleave get a warning, not silence."""
    gpus = write_gpus(tmp_path / "g.yaml", [1.0, 1.1, 1.2, 1.3], hosts=["a", "b", "a", "b"])
    routing = write_routing(tmp_path / "r.npz", skewed_counts(3, 2, 8))
    r = vibe(*solve_args(gpus, routing, tmp_path / "p.json"))
    assert r.code == 0, r.err
    assert "blocks" in r.err and "warning" in r.err
    write_gpus(gpus, [1.0, 1.1, 1.2, 1.3], hosts=["a", "a", "b", "b"])
    r = vibe(*solve_args(gpus, routing, tmp_path / "q.json"))
    assert r.code == 0 and "blocks" not in r.err


def _two_phase_routing(path, phases, decode_seed=5):
    """Prefill rows (2,048 tokens) and decode rows (64 tokens, other hot experts)."""
    pre = skewed_counts(4, 3, 16, tokens=2048, seed=0)
    dec = skewed_counts(4, 3, 16, tokens=64, seed=decode_seed)
    rows = {"prefill": list(pre), "decode": list(dec)}
    counts = np.stack([rows[p].pop(0) for p in phases])  # each phase's rows in order
    return write_routing(path, counts, num_hidden_layers=5, row_phase=list(phases))


def test_phase_plans_on_that_phases_rows_only(vibe, tmp_path):
    gpus = write_gpus(tmp_path / "gpus.yaml", SPEEDS)
    mixed = _two_phase_routing(tmp_path / "mixed.npz", ["prefill", "decode"] * 2)
    only = _two_phase_routing(tmp_path / "decode.npz", ["decode", "decode"])
    r = vibe(*solve_args(gpus, mixed, tmp_path / "p.json", "--phase", "decode"))
    assert r.code == 0, r.err
    assert "mixes prefill and decode" not in r.err
    doc = load_json(tmp_path / "p.json")
    assert doc["inputs"]["routing_phase"] == "decode"
    # The same plan as from a profile holding only those decode rows.
    assert vibe(*solve_args(gpus, only, tmp_path / "q.json")).code == 0
    ref = load_json(tmp_path / "q.json")
    assert doc["physical_to_logical_map"] == ref["physical_to_logical_map"]
    assert doc["predicted"] == ref["predicted"]
    # Without --phase the plan is for the mixed mean, and the user hears so.
    r = vibe(*solve_args(gpus, mixed, tmp_path / "m.json"))
    assert r.code == 0 and "mixes prefill and decode rows" in r.err and "--phase" in r.err
    assert "routing_phase" not in load_json(tmp_path / "m.json")["inputs"]


@pytest.mark.parametrize(
    ("phase", "needle"), [("prefill", "no prefill rows"), ("warmup", "--phase is 'warmup'")]
)
def test_phase_without_such_rows_is_one_error_line(vibe, tmp_path, phase, needle):
    gpus = write_gpus(tmp_path / "gpus.yaml", SPEEDS)
    only = _two_phase_routing(tmp_path / "decode.npz", ["decode", "decode"])
    r = vibe(*solve_args(gpus, only, tmp_path / "p.json", "--phase", phase))
    assert r.code == 2 and r.err.count("error:") == 1 and needle in r.err, r.err
    assert not (tmp_path / "p.json").exists()
