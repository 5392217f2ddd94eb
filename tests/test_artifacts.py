"""The three artefact formats: load / save round trips and validation (library level)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from placement_inputs import gpu_dict, skewed_counts, write_gpus, write_routing

from vibe_plan.artifacts import (
    GPU_SCHEMA,
    PLACEMENT_SCHEMA,
    ROUTING_SCHEMA,
    Placement,
    RoutingProfile,
    load_gpu_profile,
    load_placement,
    load_routing_profile,
    save_gpu_profile,
    save_placement,
    save_routing_profile,
    sha256_file,
)
from vibe_plan.artifacts.placement import check_map
from vibe_plan.errors import VibeError


def test_gpu_profile_round_trip(tmp_path):
    src = write_gpus(tmp_path / "g.yaml", [1.0, 1.25], hosts=["a", "b"])
    gp = load_gpu_profile(src)
    assert gp.num_gpus == 2 and gp.hosts == ["a", "b"]
    assert gp.gpus[1].uuid == "GPU-test-0001"
    save_gpu_profile(gp, tmp_path / "again.yaml")
    raw = yaml.safe_load((tmp_path / "again.yaml").read_text())
    assert raw["schema"] == GPU_SCHEMA
    again = load_gpu_profile(tmp_path / "again.yaml")
    for a, b in zip(gp.gpus, again.gpus, strict=True):
        assert a.curve.tokens == b.curve.tokens
        assert a.curve.time_us == pytest.approx(b.curve.time_us)
        assert (a.host, a.uuid) == (b.host, b.uuid)


def _bad_gpu(tmp_path, mutate):
    doc = gpu_dict([1.0, 1.1])
    mutate(doc)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.update(schema="vibe.gpu-profile/v0"), "schema"),
        (lambda d: d.pop("schema"), "schema"),
        (lambda d: d["gpus"][1]["curve"]["time_us"].pop(), "time_us"),
        (lambda d: d["gpus"][0]["curve"].update(tokens=[1, 8, 8, 128, 512, 2048]), "tokens"),
        (lambda d: d["gpus"][0]["curve"].update(tokens=[1, 8, 32, 16, 512, 2048]), "tokens"),
        (lambda d: d["gpus"][0]["curve"]["time_us"].__setitem__(2, float("nan")), "time_us"),
        (lambda d: d["gpus"][0]["curve"]["time_us"].__setitem__(2, float("inf")), "time_us"),
        (lambda d: d["gpus"][0]["curve"]["time_us"].__setitem__(2, -1.0), "time_us"),
        (lambda d: d["gpus"][0].pop("curve"), "curve"),
        (lambda d: d.update(gpus=[]), "gpus"),
    ],
)
def test_gpu_profile_rejects(tmp_path, mutate, field):
    path = _bad_gpu(tmp_path, mutate)
    with pytest.raises(VibeError) as info:
        load_gpu_profile(path)
    msg = str(info.value)
    assert str(path) in msg and field in msg


def test_gpu_profile_unparsable_and_missing(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("schema: [unclosed\n  gpus: {")
    with pytest.raises(VibeError, match="YAML"):
        load_gpu_profile(bad)
    with pytest.raises(VibeError, match="does not exist"):
        load_gpu_profile(tmp_path / "nope.yaml")


def test_routing_round_trip_and_mean(tmp_path):
    counts = skewed_counts(5, 2, 8, seed=3)
    rp = RoutingProfile(counts, np.array([1, 3]), {"schema": ROUTING_SCHEMA, "num_groups": 2})
    save_routing_profile(rp, tmp_path / "r.npz")
    back = load_routing_profile(tmp_path / "r.npz")
    np.testing.assert_array_equal(back.counts, counts)
    assert back.counts.dtype == np.int64
    assert back.layer_ids.tolist() == [1, 3]
    assert back.num_groups == 2 and back.num_experts == 8
    np.testing.assert_allclose(back.mean_load(), counts.mean(axis=0))


def test_routing_float_integers_accepted(tmp_path):
    counts = skewed_counts(3, 2, 8).astype(np.float64)
    rp = load_routing_profile(write_routing(tmp_path / "r.npz", counts))
    assert rp.counts.dtype == np.int64
    np.testing.assert_array_equal(rp.counts, counts.astype(np.int64))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"counts": -skewed_counts(3, 2, 8)}, "counts"),
        ({"counts": skewed_counts(3, 2, 8) + 0.5}, "counts"),
        ({"counts": np.full((3, 2, 8), np.nan)}, "counts"),
        ({"counts": skewed_counts(3, 2, 8)[0]}, "counts"),
        ({"counts": skewed_counts(3, 2, 8), "layer_ids": [0, 1, 2]}, "layer_ids"),
        ({"counts": skewed_counts(3, 2, 8), "drop": ("meta",)}, "meta"),
        ({"counts": skewed_counts(3, 2, 8), "drop": ("counts",)}, "counts"),
        ({"counts": skewed_counts(3, 2, 8), "meta": "{not json"}, "meta"),
        ({"counts": skewed_counts(3, 2, 8), "meta": {"schema": "other/v1"}}, "schema"),
        ({"counts": skewed_counts(3, 2, 8), "num_groups": 3}, "num_groups"),
    ],
)
def test_routing_rejects(tmp_path, kwargs, field):
    path = write_routing(tmp_path / "r.npz", **kwargs)
    with pytest.raises(VibeError) as info:
        load_routing_profile(path)
    msg = str(info.value)
    assert str(path) in msg and field in msg


def test_routing_not_a_zip(tmp_path):
    path = tmp_path / "r.npz"
    path.write_text("this is not a zip archive")
    with pytest.raises(VibeError, match="npz"):
        load_routing_profile(path)


def _placement(phy2log, G=2, S=3, E=5):
    return Placement(
        num_gpus=G,
        slots_per_gpu=S,
        num_logical_experts=E,
        layer_ids=[2, 5],
        phy2log=np.asarray(phy2log, dtype=np.int64),
        gpus=[{"id": g, "host": "node0", "uuid": f"GPU-{g}"} for g in range(G)],
        method="test",
        predicted={"makespan_us": [1.0, 2.0]},
    )


def test_placement_round_trip(tmp_path):
    p = _placement([[0, 1, 2, 3, 4, 0], [4, 3, 2, 1, 0, 2]])
    save_placement(p, tmp_path / "p.json")
    raw = json.loads((tmp_path / "p.json").read_text())
    assert raw["schema"] == PLACEMENT_SCHEMA
    assert raw["num_physical_experts"] == 6
    assert raw["gpus"][1]["uuid"] == "GPU-1"
    back, warns = load_placement(tmp_path / "p.json", 2, [2, 5], 5)
    assert warns == []
    np.testing.assert_array_equal(back.phy2log, p.phy2log)
    assert back.logcnt().tolist() == [[2, 1, 1, 1, 1], [1, 1, 2, 1, 1]]
    # The text is a pure function of the placement.
    save_placement(back, tmp_path / "q.json")
    assert sha256_file(tmp_path / "p.json") == sha256_file(tmp_path / "q.json")


def test_check_map_rules():
    with pytest.raises(VibeError, match="no slot"):
        check_map(np.array([[0, 1, 2, 3, 0, 1]]), 2, 5)
    with pytest.raises(VibeError):
        check_map(np.array([[0, 1, 2, 3, 4, 5]]), 2, 5)  # id out of range
    with pytest.raises(VibeError):
        check_map(np.array([[0, 1, 2, 3, 4]]), 2, 5)  # 5 slots on 2 GPUs
    # Two replicas of one expert on one GPU: a warning, not an error (eplb does it).
    warns = check_map(np.array([[0, 0, 1, 2, 3, 4]]), 2, 5)
    assert len(warns) == 1


def test_save_placement_refuses_invalid_and_leaves_nothing(tmp_path):
    p = _placement([[0, 1, 2, 3, 0, 1], [0, 1, 2, 3, 4, 0]])
    with pytest.raises(VibeError):
        save_placement(p, tmp_path / "p.json")
    assert list(tmp_path.iterdir()) == []


def test_load_placement_mismatches(tmp_path):
    p = _placement([[0, 1, 2, 3, 4, 0], [4, 3, 2, 1, 0, 2]])
    save_placement(p, tmp_path / "p.json")
    with pytest.raises(VibeError, match="num_gpus"):
        load_placement(tmp_path / "p.json", 3, [2, 5], 5)
    with pytest.raises(VibeError, match="num_logical_experts"):
        load_placement(tmp_path / "p.json", 2, [2, 5], 6)
    with pytest.raises(VibeError, match="layer_ids"):
        load_placement(tmp_path / "p.json", 2, [2, 6], 5)
    other = tmp_path / "o.json"
    other.write_text(json.dumps({"schema": "vibe.placement/v9"}))
    with pytest.raises(VibeError, match="schema"):
        load_placement(other, 2, [2, 5], 5)
    junk = tmp_path / "junk.json"
    junk.write_text("{nope")
    with pytest.raises(VibeError, match="JSON"):
        load_placement(junk, 2, [2, 5], 5)


def test_atomic_write_missing_folder(tmp_path):
    p = _placement([[0, 1, 2, 3, 4, 0], [4, 3, 2, 1, 0, 2]])
    with pytest.raises(VibeError, match="does not exist"):
        save_placement(p, tmp_path / "missing" / "p.json")


def test_routing_meta_as_bytes(tmp_path):
    meta = json.dumps({"schema": ROUTING_SCHEMA, "num_experts": 8}).encode()
    path = tmp_path / "r.npz"
    np.savez_compressed(
        path, counts=skewed_counts(2, 1, 8), layer_ids=np.array([0]), meta=np.array(meta)
    )
    assert load_routing_profile(path).meta["num_experts"] == 8
