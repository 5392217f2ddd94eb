"""`vibe solve` on bad input: exit 2, one `error:` line on stderr, and nothing written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from placement_inputs import (
    SPEEDS,
    assert_valid_map,
    export_args,
    gpu_dict,
    placement_map,
    skewed_counts,
    solve_args,
    write_gpus,
    write_routing,
)

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
    r = vibe(*solve_args(gpus, routing, out / "p.json", *export_args(out), *extra))
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
    r = vibe(
        *solve_args(gpus, routing, out / "p.json", "--redundant", redundant, *export_args(out))
    )
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
    r = vibe(*solve_args(gpus, routing, out / "p.json", *opts, *export_args(out)))
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
        r = vibe(*solve_args(gpus, routing, out / "p.json", *export_args(out)))
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
