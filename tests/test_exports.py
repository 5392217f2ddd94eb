"""Engine exports (SGLang, TensorRT-LLM, EPLB-style) written by `vibe solve`, and read back."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import yaml
from placement_inputs import (
    assert_valid_map,
    load_json,
    placement_map,
    skewed_counts,
    solve_args,
    write_gpus,
    write_routing,
)

from vibe_plan.artifacts import Placement
from vibe_plan.engines import decoder_rows, export_placement
from vibe_plan.errors import VibeError

E, G, L, HIDDEN = 16, 4, 3, 6
LAYER_IDS = [1, 2, 4]  # decoder layers 0, 3 and 5 are dense


@pytest.fixture
def solved(vibe, tmp_path):
    """Solve once per method with all three exports; return {method: folder}."""
    gpus = write_gpus(tmp_path / "g.yaml", [1.0, 1.15, 1.3, 1.05])
    routing = write_routing(
        tmp_path / "r.npz",
        skewed_counts(6, L, E, seed=2, sigma=1.3),
        layer_ids=LAYER_IDS,
        num_hidden_layers=HIDDEN,
    )

    def run(method: str, redundant: int = 8):
        folder = tmp_path / method
        folder.mkdir()
        r = vibe(
            *solve_args(
                gpus,
                routing,
                folder / "p.json",
                "-m",
                method,
                "-r",
                redundant,
                "--export",
                f"sglang={folder / 's.json'}",
                "--export",
                f"trtllm={folder / 't.yaml'}",
                "--export",
                f"eplb={folder / 'e.json'}",
            )
        )
        assert r.code == 0, r.err
        return folder

    return gpus, routing, run


def _check_exports(folder, distinct):
    m = placement_map(folder / "p.json")
    P = m.shape[1]
    assert_valid_map(m, G, E, P // G, distinct_per_gpu=distinct)

    sg = load_json(folder / "s.json")
    assert list(sg) == ["physical_to_logical_map"]
    rows = np.asarray(sg["physical_to_logical_map"])
    assert rows.shape == (HIDDEN, P) and rows.dtype.kind == "i"
    for i, layer in enumerate(LAYER_IDS):
        np.testing.assert_array_equal(rows[layer], m[i])
    for layer in set(range(HIDDEN)) - set(LAYER_IDS):
        np.testing.assert_array_equal(rows[layer], np.arange(P) % E)

    tr = yaml.safe_load((folder / "t.yaml").read_text())
    assert set(tr) == {"num_slots", "initial_global_assignments", "layer_updates_per_iter"}
    assert tr["num_slots"] == P and tr["num_slots"] % G == 0
    assert tr["layer_updates_per_iter"] == 0
    assigned = tr["initial_global_assignments"]
    assert sorted(assigned) == LAYER_IDS and all(isinstance(k, int) for k in assigned)
    for i, layer in enumerate(LAYER_IDS):
        assert assigned[layer] == m[i].tolist()

    ep = load_json(folder / "e.json")
    phy2log = np.asarray(ep["phy2log"])
    log2phy = np.asarray(ep["log2phy"])
    logcnt = np.asarray(ep["logcnt"])
    np.testing.assert_array_equal(phy2log, m)
    assert logcnt.shape == (L, E) and log2phy.shape[:2] == (L, E)
    assert log2phy.shape[2] == P - E + 1  # R + 1 columns, as EPLB and vLLM pad them
    for layer in range(L):
        np.testing.assert_array_equal(np.bincount(phy2log[layer], minlength=E), logcnt[layer])
        for e in range(E):
            slots = log2phy[layer, e]
            n = int(logcnt[layer, e])
            assert (slots[n:] == -1).all() and (slots[:n] >= 0).all()
            assert sorted(slots[:n].tolist()) == np.flatnonzero(phy2log[layer] == e).tolist()
            assert (phy2log[layer, slots[:n]] == e).all()


@pytest.mark.parametrize("method", ["vibe", "eplb", "linear"])
def test_exports_round_trip(solved, method):
    _, _, run = solved
    _check_exports(run(method), distinct=(method == "vibe"))


def _csv_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("method", ["vibe", "eplb"])
def test_evaluate_reads_every_export_with_the_same_scores(vibe, solved, method):
    gpus, routing, run = solved
    folder = run(method)
    files = [folder / "p.json", folder / "s.json", folder / "e.json", folder / "t.yaml"]
    r = vibe("evaluate", "--gpus", gpus, "--routing", routing, *files, "--csv", folder / "x.csv")
    assert r.code == 0, r.err
    rows = _csv_rows(folder / "x.csv")
    assert [row["placement"] for row in rows] == [str(f) for f in files]
    assert [row["method"] for row in rows] == [method, "sglang-file", "eplb-file", "trtllm-file"]
    for key in ("batches", "mean_us", "p50_us", "p95_us", "imbalance", "above_bound"):
        assert len({row[key] for row in rows}) == 1, key
    assert rows[1]["vs_first"] == rows[2]["vs_first"] == rows[3]["vs_first"] == "1.0"


def test_export_rejects_layer_beyond_model(tmp_path):
    p = Placement(2, 2, 3, [0, 7], np.array([[0, 1, 2, 0], [2, 1, 0, 1]]))
    with pytest.raises(VibeError, match="decoder layers"):
        decoder_rows(p, 4)
    with pytest.raises(VibeError):
        export_placement(p, [("trtllm", tmp_path / "t.yaml"), ("sglang", tmp_path / "s.json")], 4)
    assert list(tmp_path.iterdir()) == [], "a failed export writes none of the files"


def test_exports_follow_the_placement_not_the_method(tmp_path):
    """Export text is a pure function of the map: two placements differing in one row differ
    in that row only."""
    a = Placement(2, 3, 4, [0, 2], np.array([[0, 1, 2, 3, 0, 1], [3, 2, 1, 0, 3, 2]]))
    b = Placement(2, 3, 4, [0, 2], np.array([[0, 1, 2, 3, 0, 1], [0, 1, 2, 3, 2, 1]]))
    export_placement(a, [("sglang", tmp_path / "a.json")], 3)
    export_placement(b, [("sglang", tmp_path / "b.json")], 3)
    ra = load_json(tmp_path / "a.json")["physical_to_logical_map"]
    rb = load_json(tmp_path / "b.json")["physical_to_logical_map"]
    assert ra[0] == rb[0] and ra[1] == rb[1] == [0, 1, 2, 3, 0, 1]
    assert ra[2] == [3, 2, 1, 0, 3, 2] and rb[2] == [0, 1, 2, 3, 2, 1]


def test_placement_readers_by_format(tmp_path):
    """`vibe_plan.engines.load_placement` reads every format; the vibe-only reader refuses engine
    files; an unknown file names the formats it looked for."""
    from vibe_plan.artifacts import load_placement as load_vibe
    from vibe_plan.engines import load_placement, placement_format

    p = Placement(2, 3, 4, [0, 2], np.array([[0, 1, 2, 3, 0, 1], [3, 2, 1, 0, 3, 2]]))
    specs = [("sglang", tmp_path / "s.json"), ("trtllm", tmp_path / "t.yaml")]
    export_placement(p, [*specs, ("eplb", tmp_path / "e.json")], 3)
    for fmt, name in (("sglang", "s.json"), ("trtllm", "t.yaml"), ("eplb", "e.json")):
        doc = yaml.safe_load((tmp_path / name).read_text())
        assert placement_format(tmp_path / name, doc) == fmt
        back, warns = load_placement(tmp_path / name, 2, [0, 2], 4)
        assert back.method == f"{fmt}-file" and warns == []
        np.testing.assert_array_equal(back.phy2log, p.phy2log)
    with pytest.raises(VibeError, match="schema"):
        load_vibe(tmp_path / "s.json", 2, [0, 2], 4)
    (tmp_path / "x.json").write_text('{"map": [[0]]}')
    with pytest.raises(VibeError, match="unknown placement format"):
        load_placement(tmp_path / "x.json", 2, [0, 2], 4)
