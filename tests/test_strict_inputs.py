"""Artefacts read strictly (issue 9): every user error is one `error:` line, exit code 2, no
traceback and no output file; artefacts that do not belong together are refused (or warned about
where the user may mean it); degenerate loads never divide by zero."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from placement_inputs import (
    SPEEDS,
    assert_refused,
    gpu_dict,
    load_json,
    routing_meta,
    skewed_counts,
    write_gpus,
    write_routing,
)


def _solve(gpus: Path, routing: Path, out: Path, *extra: Any) -> list[Any]:
    fast = ["--jobs", "1", "--time-limit", "0"]  # small problems: no process pool, no CP-SAT
    return ["solve", "--gpus", gpus, "--routing", routing, "--out", out, "--quiet", *fast, *extra]


def _evaluate(gpus: Path, routing: Path, csv: Path, *placements: Path) -> list[Any]:
    return ["evaluate", *placements, "--gpus", gpus, "--routing", routing, "--csv", csv]


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning:")]


def _strict_json(path: Path) -> Any:
    def refuse(name: str) -> None:
        raise AssertionError(f"{path} holds {name}: not strict JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture
def planned(vibe, inputs):
    """The `inputs` profiles and a placement solved from them."""
    gpus, routing, out = inputs
    placement = out / "plan.json"
    r = vibe(*_solve(gpus, routing, placement, "--redundant", "4"))
    assert r.code == 0, r.err
    return gpus, routing, out, placement


# ----- 1. degenerate loads -----------------------------------------------------------------------


def test_all_zero_routing_is_refused_by_solve_and_evaluate(vibe, planned):
    gpus, routing, out, placement = planned
    write_routing(routing, np.zeros((4, 3, 16), np.int64), num_hidden_layers=5)
    assert_refused(
        vibe, _solve(gpus, routing, out / "p.json"), [out / "p.json"], "no tokens routed"
    )
    csv = out / "t.csv"
    assert_refused(vibe, _evaluate(gpus, routing, csv, placement), [csv], "no tokens routed")


def test_a_layer_without_load_is_planned(vibe, inputs):
    gpus, routing, out = inputs
    counts = skewed_counts(6, 3, 16)
    counts[:, 1] = 0
    write_routing(routing, counts, num_hidden_layers=5)
    for method in ("vibe", "eplb", "linear"):
        for dispatch in ("even", "static"):
            p = out / f"{method}-{dispatch}.json"
            r = vibe(*_solve(gpus, routing, p, "-r", "4", "-m", method, "--dispatch", dispatch))
            assert r.code == 0, r.err
            doc = _strict_json(p)
            assert doc["predicted"]["makespan_us"][1] == 0.0
            r = vibe(*_evaluate(gpus, routing, out / "t.csv", p))
            assert r.code == 0, r.err
            row = (out / "t.csv").read_text().splitlines()[1].split(",")
            assert float(row[-2]) >= 0  # above_bound


def test_an_idle_layer_names_no_straggler(inputs):
    from vibe_plan.artifacts import load_gpu_profile, load_routing_profile
    from vibe_plan.artifacts.placement import Placement
    from vibe_plan.artifacts.routing_profile import RoutingProfile
    from vibe_plan.placement.baselines import linear_map, tile_layers
    from vibe_plan.placement.evaluate import score

    gpus, routing, _ = inputs
    gp, rp = load_gpu_profile(gpus), load_routing_profile(routing)
    rp.counts[:, 1] = 0
    busy = RoutingProfile(rp.counts[:, [0, 2]], rp.layer_ids[[0, 2]], rp.meta)
    m = tile_layers(linear_map(16, 4, 4), 3)
    full = Placement(4, 4, 16, [1, 2, 3], m)
    part = Placement(4, 4, 16, [1, 3], m[[0, 2]])
    a, b = score("a", gp, rp, full), score("b", gp, busy, part)
    assert np.allclose(a.straggler_share, b.straggler_share)
    assert a.mean_us == pytest.approx(b.mean_us)


def test_empty_batches_are_skipped_with_a_note(vibe, planned):
    gpus, routing, out, placement = planned
    counts = skewed_counts(8, 3, 16)
    counts[[2, 5]] = 0
    write_routing(routing, counts, num_hidden_layers=5)
    r = vibe(*_evaluate(gpus, routing, out / "t.csv", placement))
    assert r.code == 0, r.err
    assert any("2 of 8 batches route no tokens" in w for w in _warnings(r.err)), r.err
    (row,) = csv.DictReader((out / "t.csv").read_text().splitlines())
    assert row["batches"] == "6" and float(row["above_bound"]) >= 0


# ----- 2. artefacts that do not belong together --------------------------------------------------


def _with_expert(routing: Path, hidden: int, intermediate: int, gated: bool = True) -> None:
    expert = {"hidden": hidden, "intermediate": intermediate, "gated": gated}
    write_routing(routing, skewed_counts(6, 3, 16), num_hidden_layers=5, expert=expert)


def test_gpu_profile_for_another_expert_shape_is_refused(vibe, planned):
    gpus, routing, out, placement = planned  # the GPU profile is for a 64x128 gated expert
    _with_expert(routing, 2048, 768)
    msg = assert_refused(vibe, _solve(gpus, routing, out / "p.json"), [out / "p.json"])
    assert "64x128 gated" in msg and "2048x768 gated" in msg and "profile the GPUs" in msg
    csv = out / "t.csv"
    assert_refused(vibe, _evaluate(gpus, routing, csv, placement), [csv], "2048x768")
    _with_expert(routing, 64, 128, gated=False)
    assert_refused(vibe, _solve(gpus, routing, out / "p.json"), [out / "p.json"], "ungated")
    _with_expert(routing, 64, 128)
    r = vibe(*_solve(gpus, routing, out / "ok.json"))
    assert r.code == 0, r.err


def test_profiled_expert_count_differs(vibe, inputs):
    from vibe_plan.artifacts import load_routing_profile, save_routing_profile

    gpus, routing, out = inputs
    doc = gpu_dict(SPEEDS)
    doc["method"]["model"] = {"name": "qwen3-30b-a3b", "num_experts": 128, "top_k": 8}
    write_gpus(gpus, doc=doc)
    # Nothing else ties the profiles to one model: another expert count is another model.
    r = vibe(*_solve(gpus, routing, out / "p.json"))
    assert r.code == 2 and r.err.count("error:") == 1 and "different models" in r.err, r.err
    assert not (out / "p.json").exists()
    # The routing profile records the same expert FFN: the times apply; a warning only.
    rp = load_routing_profile(routing)
    rp.meta["expert"] = {"hidden": 64, "intermediate": 128, "gated": True}
    save_routing_profile(rp, routing)
    r = vibe(*_solve(gpus, routing, out / "p.json"))
    assert r.code == 0, r.err
    assert any("128 experts" in w and "16" in w for w in _warnings(r.err)), r.err


def test_plan_for_another_fleet_is_refused(vibe, planned):
    gpus, routing, out, placement = planned
    doc = gpu_dict(SPEEDS)
    doc["gpus"][2]["uuid"] = "GPU-other-0002"
    other = write_gpus(out / "other.yaml", doc=doc)
    csv = out / "t.csv"
    msg = assert_refused(vibe, _evaluate(other, routing, csv, placement), [csv], "rank 2")
    assert "GPU-test-0002" in msg and "GPU-other-0002" in msg
    # Without UUIDs on one side there is nothing to compare: scored, with the hash warning.
    write_gpus(other, SPEEDS, uuids=False)
    r = vibe(*_evaluate(other, routing, csv, placement))
    assert r.code == 0, r.err


def test_newer_profile_of_the_same_fleet_warns(vibe, planned):
    gpus, routing, out, placement = planned
    r = vibe(*_evaluate(gpus, routing, out / "t.csv", placement))
    assert r.code == 0 and _warnings(r.err) == [], r.err
    write_gpus(gpus, [1.0, 1.1, 1.25, 1.3])  # same UUIDs, re-measured
    r = vibe(*_evaluate(gpus, routing, out / "t.csv", placement))
    assert r.code == 0, r.err
    assert any("gpus_sha256" in w for w in _warnings(r.err)), r.err
    doc = gpu_dict(SPEEDS, hosts=["a", "a", "b", "b"])
    write_gpus(gpus, doc=doc)
    r = vibe(*_evaluate(gpus, routing, out / "t.csv", placement))
    assert r.code == 0 and any("hosts differ" in w for w in _warnings(r.err)), r.err


@pytest.mark.parametrize(
    "field, value, needle",
    [("id", 1, "gpus[1].id"), ("uuid", "GPU-test-0000", "gpus[1].uuid")],
)
def test_a_gpu_listed_twice_is_refused(vibe, inputs, field, value, needle):
    gpus, routing, out = inputs
    doc = gpu_dict(SPEEDS)
    doc["gpus"][0 if field == "id" else 1][field] = value
    write_gpus(gpus, doc=doc)
    assert_refused(vibe, _solve(gpus, routing, out / "p.json"), [out / "p.json"], needle, "once")


# ----- 3. engine files from another model --------------------------------------------------------


@pytest.fixture
def exported(vibe, inputs):
    gpus, routing, out = inputs
    files = {fmt: out / f"p.{fmt}.{'yaml' if fmt == 'trtllm' else 'json'}" for fmt in EXPORTS}
    specs = [f"--export={fmt}={path}" for fmt, path in files.items()]
    r = vibe(*_solve(gpus, routing, out / "p.json", "-r", "4", *specs))
    assert r.code == 0, r.err
    return gpus, routing, out, files


EXPORTS = ("sglang", "eplb", "trtllm")


def test_exports_read_back_without_warnings(vibe, exported):
    gpus, routing, out, files = exported
    r = vibe(*_evaluate(gpus, routing, out / "t.csv", *files.values()))
    assert r.code == 0 and _warnings(r.err) == [], r.err


def test_sglang_rows_must_match_the_decoder_layers(vibe, exported):
    gpus, routing, out, files = exported
    doc = load_json(files["sglang"])
    doc["physical_to_logical_map"] *= 3  # a model with 15 decoder layers
    files["sglang"].write_text(json.dumps(doc))
    csv = out / "t.csv"
    assert_refused(
        vibe, _evaluate(gpus, routing, csv, files["sglang"]), [csv], "15 rows", "5 decoder"
    )


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda d: d.update(layer_ids=[0, 1, 2]), "layer_ids"),
        (lambda d: d.update(layer_ids="abc"), "layer_ids"),
        (lambda d: d["logcnt"][0].__setitem__(0, d["logcnt"][0][0] + 1), "logcnt"),
        (lambda d: d["log2phy"][1][3].__setitem__(0, 17), "log2phy[1][3]"),
        (lambda d: d.update(log2phy=[[1]]), "log2phy"),
    ],
)
def test_eplb_file_must_agree_with_itself_and_the_profile(vibe, exported, mutate, needle):
    gpus, routing, out, files = exported
    doc = load_json(files["eplb"])
    mutate(doc)
    files["eplb"].write_text(json.dumps(doc))
    csv = out / "t.csv"
    assert_refused(vibe, _evaluate(gpus, routing, csv, files["eplb"]), [csv], needle)


def test_trtllm_num_slots_and_foreign_layers(vibe, exported):
    gpus, routing, out, files = exported
    doc = yaml.safe_load(files["trtllm"].read_text())
    csv = out / "t.csv"
    files["trtllm"].write_text(yaml.safe_dump({**doc, "num_slots": 24}))
    assert_refused(vibe, _evaluate(gpus, routing, csv, files["trtllm"]), [csv], "num_slots", "20")
    assign = dict(doc["initial_global_assignments"])
    assign[7] = assign[1]
    files["trtllm"].write_text(yaml.safe_dump({**doc, "initial_global_assignments": assign}))
    r = vibe(*_evaluate(gpus, routing, csv, files["trtllm"]))
    assert r.code == 0, r.err
    assert any("decoder layers [7]" in w for w in _warnings(r.err)), r.err


# ----- 4. types and ranges of every field --------------------------------------------------------


def _gpu_case(mutate) -> dict[str, Any]:
    doc = gpu_dict(SPEEDS)
    mutate(doc)
    return doc


BAD_GPU_FIELDS = {
    "id-text": (lambda d: d["gpus"][1].update(id="one"), "gpus[1].id"),
    "id-null": (lambda d: d["gpus"][1].update(id=None), "gpus[1].id"),
    "id-negative": (lambda d: d["gpus"][1].update(id=-1), "gpus[1].id"),
    "hidden-inf": (lambda d: d["expert"].update(hidden=float("inf")), "expert.hidden"),
    "hidden-text": (lambda d: d["expert"].update(hidden="2048"), "expert.hidden"),
    "hidden-fraction": (lambda d: d["expert"].update(intermediate=12.5), "expert.intermediate"),
    "gated-text": (lambda d: d["expert"].update(gated="false"), "expert.gated"),
    "host-null": (lambda d: d["gpus"][0].update(host=None), "gpus[0].host"),
    "uuid-list": (lambda d: d["gpus"][0].update(uuid=["a"]), "gpus[0].uuid"),
    "time-huge": (
        lambda d: d["gpus"][0]["curve"].update(time_us=[1e307] * 6),
        "gpus[0].curve.time_us[0]",
    ),
    "tokens-huge": (
        lambda d: d["gpus"][0]["curve"].update(tokens=[1, 2, 3, 4, 5, 10**15]),
        "gpus[0].curve.tokens[5]",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_GPU_FIELDS))
def test_bad_gpu_profile_fields(vibe, inputs, case):
    gpus, routing, out = inputs
    mutate, needle = BAD_GPU_FIELDS[case]
    write_gpus(gpus, doc=_gpu_case(mutate))
    assert_refused(vibe, _solve(gpus, routing, out / "p.json"), [out / "p.json"], needle)


BAD_META = {
    "experts-text": ({"num_experts": "16"}, "meta.num_experts"),
    "layers-text": ({"num_hidden_layers": "five"}, "meta.num_hidden_layers"),
    "layers-huge": ({"num_hidden_layers": 1e9}, "meta.num_hidden_layers"),
    "layers-bool": ({"num_hidden_layers": True}, "meta.num_hidden_layers"),
    "top-k-text": ({"top_k": "2"}, "meta.top_k"),
    "batch-tokens-negative": ({"batch_tokens": -5}, "meta.batch_tokens"),
    "groups-negative": ({"num_groups": -4}, "meta.num_groups"),
    "groups-not-dividing": ({"num_groups": 3}, "meta.num_groups"),
    "expert-text": ({"expert": "2048x768"}, "meta.expert"),
    "expert-hidden": ({"expert": {"hidden": 0, "intermediate": 8}}, "meta.expert.hidden"),
}


@pytest.mark.parametrize("case", sorted(BAD_META))
def test_bad_routing_meta_fields(vibe, inputs, case):
    gpus, routing, out = inputs
    extra, needle = BAD_META[case]
    meta = {**routing_meta(16, 5), **extra}
    write_routing(routing, skewed_counts(4, 3, 16), meta=meta)
    out_file = out / "p.json"
    sglang = out / "p.sglang.json"
    msg = assert_refused(
        vibe,
        _solve(gpus, routing, out_file, "--export", f"sglang={sglang}"),
        [out_file, sglang],
        needle,
    )
    assert "--groups" not in msg


def test_integral_float_meta_numbers_are_accepted(vibe, inputs):
    gpus, routing, out = inputs
    meta = {**routing_meta(16, 5), "num_experts": 16.0, "num_hidden_layers": 5.0}
    write_routing(routing, skewed_counts(4, 3, 16), meta=meta)
    r = vibe(*_solve(gpus, routing, out / "p.json", "--export", f"sglang={out / 's.json'}"))
    assert r.code == 0, r.err
    assert len(load_json(out / "s.json")["physical_to_logical_map"]) == 5


def test_huge_layer_ids_are_refused_before_any_allocation(vibe, inputs):
    gpus, routing, out = inputs
    counts = skewed_counts(4, 3, 16)
    write_routing(routing, counts, layer_ids=[1, 2, 10**9], meta=routing_meta(16, None))
    sglang = out / "s.json"
    args = _solve(gpus, routing, out / "p.json", "--export", f"sglang={sglang}")
    assert_refused(vibe, args, [out / "p.json", sglang], "layer_ids")


BAD_PLACEMENT = {
    "num-gpus-text": (lambda d: d.update(num_gpus="four"), "num_gpus"),
    "num-gpus-null": (lambda d: d.update(num_gpus=None), "num_gpus"),
    "slots-zero": (lambda d: d.update(slots_per_gpu=0), "slots_per_gpu"),
    "layer-ids-text": (lambda d: d.update(layer_ids="abc"), "layer_ids"),
    "layer-ids-mixed": (lambda d: d.update(layer_ids=[1, "2", 3]), "layer_ids[1]"),
    "num-nodes": (lambda d: d.update(num_nodes=3), "num_nodes"),
    "physical": (lambda d: d.update(num_physical_experts=21), "num_physical_experts"),
    "gpus-not-list": (lambda d: d.update(gpus={"0": 1}), "gpus"),
    "uuid-number": (lambda d: d["gpus"][0].update(uuid=7), "gpus[0].uuid"),
    "predicted-text": (lambda d: d["predicted"].update(imbalance="low"), "predicted.imbalance"),
    "inputs-list": (lambda d: d.update(inputs=[1]), "inputs"),
    "map-floats": (
        lambda d: d.update(physical_to_logical_map=[[0.5] * 20] * 3),
        "physical_to_logical_map",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_PLACEMENT))
def test_bad_placement_fields(vibe, planned, case):
    gpus, routing, out, placement = planned
    mutate, needle = BAD_PLACEMENT[case]
    doc = load_json(placement)
    mutate(doc)
    placement.write_text(json.dumps(doc))
    csv = out / "t.csv"
    assert_refused(vibe, _evaluate(gpus, routing, csv, placement), [csv], needle)


def test_placement_with_nan_is_not_json(vibe, planned):
    gpus, routing, out, placement = planned
    placement.write_text(placement.read_text().replace('"imbalance": [', '"imbalance": [NaN, '))
    csv = out / "t.csv"
    assert_refused(vibe, _evaluate(gpus, routing, csv, placement), [csv], "NaN")


def test_deeply_nested_documents(vibe, planned):
    gpus, routing, out, placement = planned
    csv = out / "t.csv"
    placement.write_text("[" * 100_000 + "]" * 100_000)
    assert_refused(vibe, _evaluate(gpus, routing, csv, placement), [csv], "nested too deeply")
    gpus.write_text("a: " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert_refused(
        vibe, _solve(gpus, routing, out / "p.json"), [out / "p.json"], "nested too deeply"
    )


@pytest.mark.parametrize("kind", ["npy", "text", "empty"])
def test_routing_that_is_not_an_npz(vibe, inputs, kind):
    gpus, routing, out = inputs
    if kind == "npy":
        with open(routing, "wb") as f:
            np.save(f, skewed_counts(4, 3, 16))
    else:
        routing.write_text("counts,layer,expert\n1,2,3\n" if kind == "text" else "")
    msg = assert_refused(vibe, _solve(gpus, routing, out / "p.json"), [out / "p.json"])
    assert "not an .npz routing profile" in msg and "pickle" not in msg
    if kind == "npy":
        assert "single .npy array" in msg


def test_unsigned_overflow_is_not_called_negative(vibe, inputs):
    gpus, routing, out = inputs
    counts = skewed_counts(4, 3, 16).astype(np.uint64)
    counts[0, 0, 0] = np.uint64(2**64 - 5)
    write_routing(routing, counts, num_hidden_layers=5)
    msg = assert_refused(vibe, _solve(gpus, routing, out / "p.json"), [out / "p.json"], "counts")
    assert "negative" not in msg and "corrupt" in msg


def test_yaml_errors_name_the_line(vibe, inputs):
    gpus, routing, out = inputs
    gpus.write_text("schema: vibe.gpu-profile/v1\nexpert: {hidden: 64\ngpus: []\n")
    assert_refused(vibe, _solve(gpus, routing, out / "p.json"), [out / "p.json"], "line 3")


def test_no_group_warning_without_groups(vibe, inputs):
    gpus, routing, out = inputs
    write_gpus(gpus, SPEEDS, hosts=["a", "a", "b", "b"])
    r = vibe(*_solve(gpus, routing, out / "p.json"))
    assert r.code == 0, r.err
    assert not any("expert groups" in w for w in _warnings(r.err)), r.err
