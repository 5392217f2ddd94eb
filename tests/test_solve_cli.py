"""`vibe solve` end to end through the CLI: outputs, determinism, multi-node locality, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from placement_inputs import (
    assert_valid_map,
    gpu_dict,
    load_json,
    placement_map,
    skewed_counts,
    solve_args,
    write_gpus,
    write_routing,
)

from vibe_plan.artifacts import load_gpu_profile, load_routing_profile, sha256_file
from vibe_plan.placement.cost import curves_of, gpu_times

SPEEDS = [1.0, 1.1, 1.2, 1.3]
EXPORTS = ("sglang=s.json", "trtllm=t.yaml", "eplb=e.json")


@pytest.fixture
def inputs(tmp_path):
    """4 heterogeneous GPUs, 16 experts, 3 MoE layers (decoder layers 1..3 of 5)."""
    src = tmp_path / "in"
    src.mkdir()
    gpus = write_gpus(src / "gpus.yaml", SPEEDS)
    routing = write_routing(src / "routing.npz", skewed_counts(8, 3, 16), num_hidden_layers=5)
    out = tmp_path / "out"
    out.mkdir()
    return gpus, routing, out


def _exports(folder: Path) -> list[str]:
    out = []
    for spec in EXPORTS:
        fmt, name = spec.split("=")
        out += ["--export", f"{fmt}={folder / name}"]
    return out


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
        r = vibe(*solve_args(gpus, routing, folder / "p.json", *_exports(folder)))
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


# ----- bad input: exit 2, one `error:` line, nothing written -----


def _gpu_doc(mutate):
    doc = gpu_dict(SPEEDS)
    mutate(doc)
    return yaml.safe_dump(doc)


def _set_time(i, value):
    return lambda d: d["gpus"][1]["curve"]["time_us"].__setitem__(i, value)


BAD_GPUS = {
    "schema": _gpu_doc(lambda d: d.update(schema="vibe.gpu-profile/v2")),
    "no-schema": _gpu_doc(lambda d: d.pop("schema")),
    "yaml": "schema: vibe.gpu-profile/v1\ngpus: [{id: 0, curve: {tokens: [1, 2}\n",
    "lengths": _gpu_doc(lambda d: d["gpus"][2]["curve"]["time_us"].append(99.0)),
    "tokens-flat": _gpu_doc(lambda d: d["gpus"][0]["curve"].update(tokens=[1, 8, 8, 9, 10, 11])),
    "tokens-down": _gpu_doc(lambda d: d["gpus"][0]["curve"].update(tokens=[1, 8, 4, 9, 10, 11])),
    "nan": _gpu_doc(_set_time(3, float("nan"))),
    "inf": _gpu_doc(_set_time(3, float("inf"))),
    "negative": _gpu_doc(_set_time(0, -2.0)),
    "text-time": _gpu_doc(_set_time(0, "fast")),
    "not-mapping": "- just\n- a list\n",
}

COUNTS = skewed_counts(4, 3, 16)
BAD_ROUTING = {
    "negative": {"counts": COUNTS - 200},
    "fraction": {"counts": COUNTS + 0.25},
    "rank2": {"counts": COUNTS[0], "layer_ids": [1, 2, 3]},
    "rank4": {"counts": COUNTS[None]},
    "layer-ids": {"counts": COUNTS, "layer_ids": [1, 2]},
    "no-meta": {"counts": COUNTS, "drop": ("meta",)},
    "no-counts": {"counts": COUNTS, "drop": ("counts",)},
    "meta-json": {"counts": COUNTS, "meta": "{'schema': 'vibe.routing-profile/v1'"},
    "meta-schema": {"counts": COUNTS, "meta": {"schema": "vibe.routing-profile/v0"}},
    "meta-experts": {
        "counts": COUNTS,
        "meta": {"schema": "vibe.routing-profile/v1", "num_experts": 8},
    },
}


def _assert_refused(r, out: Path, *needles: str):
    assert r.code == 2, (r.code, r.err)
    lines = r.err.strip().splitlines()
    assert any(line.startswith("error:") for line in lines), r.err
    assert "Traceback" not in r.err
    text = " ".join(r.err.split())  # rich may wrap; compare on single spaces
    for needle in needles:
        assert needle in text, (needle, r.err)
    assert list(out.iterdir()) == [], "a refused run must write nothing"


def _solve_refused(vibe, gpus, routing, out, *extra, needles=()):
    r = vibe(*solve_args(gpus, routing, out / "p.json", *_exports(out), *extra))
    _assert_refused(r, out, *needles)


@pytest.mark.parametrize("case", sorted(BAD_GPUS))
def test_bad_gpu_profile(vibe, inputs, case):
    gpus, routing, out = inputs
    gpus.write_text(BAD_GPUS[case])
    _solve_refused(vibe, gpus, routing, out, needles=(gpus.name,))


@pytest.mark.parametrize("case", sorted(BAD_ROUTING))
def test_bad_routing_profile(vibe, inputs, case):
    gpus, routing, out = inputs
    write_routing(routing, **BAD_ROUTING[case])
    field = "meta" if case.startswith("meta") or case == "no-meta" else None
    field = field or ("layer_ids" if case == "layer-ids" else "counts")
    _solve_refused(vibe, gpus, routing, out, needles=(routing.name, field))


def test_routing_not_a_zip(vibe, inputs):
    gpus, routing, out = inputs
    routing.write_bytes(b"PK\x03\x04 but not really a zip archive")
    _solve_refused(vibe, gpus, routing, out, needles=(routing.name,))


def test_missing_files(vibe, inputs):
    gpus, routing, out = inputs
    _solve_refused(vibe, gpus.with_name("nope.yaml"), routing, out, needles=("nope.yaml",))
    _solve_refused(vibe, gpus, routing.with_name("nope.npz"), out, needles=("nope.npz",))
    _solve_refused(vibe, gpus, routing.parent, out)  # a folder, not a file


def test_groups_must_divide_experts(vibe, inputs):
    gpus, routing, out = inputs
    _solve_refused(vibe, gpus, routing, out, "--groups", "3", needles=("--groups",))
    _solve_refused(vibe, gpus, routing, out, "--groups", "0")


def _nearest_valid(E, G, R):
    valid = [r for r in range(0, E + R + 2 * G) if (E + r) % G == 0]
    below = [r for r in valid if r < R]
    above = [r for r in valid if r > R]
    return ([below[-1]] if below else []) + [above[0]]


@pytest.mark.parametrize("redundant", [1, 2, 3, 5, 13])
def test_impossible_redundant_lists_nearest_values(vibe, inputs, redundant):
    gpus, routing, out = inputs
    r = vibe(*solve_args(gpus, routing, out / "p.json", "--redundant", redundant, *_exports(out)))
    near = _nearest_valid(16, 4, redundant)
    _assert_refused(r, out, "--redundant")
    for value in near:
        assert str(value) in r.err.split("--redundant")[-1]


def test_negative_redundant(vibe, inputs):
    gpus, routing, out = inputs
    _solve_refused(vibe, gpus, routing, out, "--redundant", "-4")


def test_redundant_needs_three_gpus_nearest(vibe, tmp_path):
    gpus = write_gpus(tmp_path / "g.yaml", [1.0, 1.1, 1.2])
    routing = write_routing(tmp_path / "r.npz", skewed_counts(3, 2, 16))
    out = tmp_path / "out"
    out.mkdir()
    r = vibe(*solve_args(gpus, routing, out / "p.json", "--redundant", "0"))
    _assert_refused(r, out, "--redundant 2")  # 16 + 2 = 18 = 3 x 6; nothing valid below


def test_more_slots_per_gpu_than_experts_is_a_user_error(vibe, tmp_path):
    gpus = write_gpus(tmp_path / "g.yaml", [1.0, 1.2])
    routing = write_routing(tmp_path / "r.npz", skewed_counts(3, 2, 8))
    out = tmp_path / "out"
    out.mkdir()
    r = vibe(*solve_args(gpus, routing, out / "p.json", "--redundant", "10"))  # S = 9 > 8
    _assert_refused(r, out, "--redundant")


@pytest.mark.parametrize(
    "opts", [("--workers", "0"), ("--jobs", "0"), ("--time-limit", "-1"), ("--workers", "x")]
)
def test_bad_numeric_options(vibe, inputs, opts):
    gpus, routing, out = inputs
    r = vibe(*solve_args(gpus, routing, out / "p.json", *opts, *_exports(out)))
    assert r.code == 2, r.err
    assert "Traceback" not in r.err
    assert list(out.iterdir()) == []


def test_nodes_must_divide_gpus(vibe, inputs):
    gpus, routing, out = inputs
    _solve_refused(vibe, gpus, routing, out, "--nodes", "3", needles=("--nodes",))
    _solve_refused(vibe, gpus, routing, out, "--nodes", "0")


def test_hosts_not_dividing_gpus(vibe, inputs):
    """Default --nodes = distinct hosts: 3 hosts over 4 GPUs cannot split evenly."""
    gpus, routing, out = inputs
    write_gpus(gpus, SPEEDS, hosts=["a", "a", "b", "c"])
    _solve_refused(vibe, gpus, routing, out, needles=("--nodes",))


def test_unknown_method(vibe, inputs):
    gpus, routing, out = inputs
    _solve_refused(vibe, gpus, routing, out, "--method", "greedy", needles=("greedy", "vibe"))


@pytest.mark.parametrize(
    "spec",
    ["sglang", "sglang=", "vllm=x.json", "=x.json", "trtllm={out}/missing/t.yaml"],
)
def test_bad_export_spec(vibe, inputs, spec):
    gpus, routing, out = inputs
    spec = spec.format(out=out)
    _solve_refused(vibe, gpus, routing, out, "--export", spec, needles=("--export",))


def test_export_path_is_a_folder(vibe, inputs):
    gpus, routing, out = inputs
    (out / "dir").mkdir()
    r = vibe(*solve_args(gpus, routing, out / "p.json", "--export", f"sglang={out / 'dir'}"))
    assert r.code == 2 and r.err.startswith("error:")
    assert sorted(p.name for p in out.iterdir()) == ["dir"]


def test_out_is_a_folder(vibe, inputs):
    gpus, routing, out = inputs
    r = vibe(*solve_args(gpus, routing, out))
    assert r.code == 2 and r.err.startswith("error:")


def test_out_folder_missing(vibe, inputs):
    gpus, routing, out = inputs
    r = vibe(*solve_args(gpus, routing, out / "missing" / "p.json"))
    _assert_refused(r, out, "--out")


def test_outputs_have_ordinary_permissions(vibe, inputs):
    gpus, routing, out = inputs
    old = os.umask(0o022)
    try:
        r = vibe(*solve_args(gpus, routing, out / "p.json", *_exports(out)))
    finally:
        os.umask(old)
    assert r.code == 0, r.err
    for path in out.iterdir():
        assert path.stat().st_mode & 0o044 == 0o044, oct(path.stat().st_mode)


def test_one_gpu_profile(vibe, tmp_path):
    gpus = write_gpus(tmp_path / "g.yaml", [1.0])
    routing = write_routing(tmp_path / "r.npz", skewed_counts(3, 2, 8))
    r = vibe(*solve_args(gpus, routing, tmp_path / "p.json"))
    assert r.code in (0, 2), r.err
    if r.code == 0:
        assert_valid_map(placement_map(tmp_path / "p.json"), 1, 8, 8)


# ----- light core: no torch, no transformers -----


def test_solve_and_evaluate_import_no_torch(inputs):
    gpus, routing, out = inputs
    script = textwrap.dedent(
        f"""
        import sys
        from vibe_plan.cli import main
        code = main(["solve", "--gpus", {str(gpus)!r}, "--routing", {str(routing)!r},
                     "--out", {str(out / "p.json")!r}, "-q", "--time-limit", "0.02",
                     "--export", "sglang={out / "s.json"}", "--export", "trtllm={out / "t.yaml"}",
                     "--export", "eplb={out / "e.json"}"])
        assert code == 0, code
        code = main(["evaluate", "--gpus", {str(gpus)!r}, "--routing", {str(routing)!r},
                     {str(out / "p.json")!r}, {str(out / "s.json")!r}])
        assert code == 0, code
        heavy = sorted(m for m in ("torch", "transformers", "safetensors") if m in sys.modules)
        print("HEAVY", heavy)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert res.returncode == 0, res.stderr
    assert "HEAVY []" in res.stdout, res.stdout
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
