"""`vibe evaluate`: per-batch scores, CSV, stragglers, and placements that do not fit."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from placement_inputs import skewed_counts, solve_args, write_gpus, write_routing

from vibe_plan.artifacts import load_gpu_profile, load_placement, load_routing_profile
from vibe_plan.cost import batch_gpu_times, curves_of
from vibe_plan.cost.dispatch import Dispatch, slot_tokens
from vibe_plan.placement.evaluate import batch_bounds, score

SPEEDS = [1.0, 1.3, 1.15, 1.45]


@pytest.fixture
def plans(vibe, tmp_path):
    """Solve vibe, eplb and linear on the first 8 batches; hold out the last 8."""
    gpus = write_gpus(tmp_path / "g.yaml", SPEEDS)
    counts = skewed_counts(16, 3, 16, sigma=1.3, seed=4)
    solve_on = write_routing(tmp_path / "plan.npz", counts[:8])
    held = write_routing(tmp_path / "held.npz", counts[8:])
    out = tmp_path / "out"
    out.mkdir()
    files = {}
    for method in ("vibe", "eplb", "linear"):
        files[method] = out / f"{method}.json"
        r = vibe(*solve_args(gpus, solve_on, files[method], "-m", method, "-r", "4"))
        assert r.code == 0, r.err
    return gpus, held, out, files


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_evaluate_csv_one_row_per_placement(vibe, plans):
    gpus, held, out, files = plans
    order = [files["vibe"], files["eplb"], files["linear"]]
    r = vibe("evaluate", "--gpus", gpus, "--routing", held, *order, "--csv", out / "s.csv")
    assert r.code == 0, r.err
    rows = _rows(out / "s.csv")
    assert [row["placement"] for row in rows] == [str(p) for p in order]
    assert [row["method"] for row in rows] == ["vibe", "eplb", "linear"]
    assert all(int(row["batches"]) == 8 for row in rows)
    for row in rows:
        assert float(row["p50_us"]) <= float(row["p95_us"]) + 1e-6
        assert float(row["imbalance"]) >= 1.0
        assert float(row["above_bound"]) >= -1e-9
    base = float(rows[0]["mean_us"])
    for row in rows:
        assert float(row["vs_first"]) == pytest.approx(float(row["mean_us"]) / base, abs=1e-4)
    # Heavy experts on fast GPUs pays off on held-out batches too.
    means = {row["method"]: float(row["mean_us"]) for row in rows}
    assert means["vibe"] < means["linear"]
    assert means["vibe"] < means["eplb"]
    assert "vibe" in r.out and "linear" in r.out


def test_scores_match_the_cost_model(plans):
    gpus, held, _, files = plans
    gp, rp = load_gpu_profile(gpus), load_routing_profile(held)
    for path in files.values():
        p, _ = load_placement(path, gp.num_gpus, rp.layer_ids.tolist(), rp.num_experts)
        s = score(str(path), gp, rp, p)
        times = batch_gpu_times(curves_of(gp), p.phy2log, rp.counts)
        forward = times.max(axis=2).sum(axis=1)
        assert s.mean_us == pytest.approx(forward.mean())
        assert s.p95_us == pytest.approx(np.percentile(forward, 95))
        assert s.straggler_share.shape == (4,)
        assert s.straggler_share.sum() == pytest.approx(1.0)
        assert (s.straggler_share >= 0).all()
        slowest = times.argmax(axis=2).ravel()
        np.testing.assert_allclose(s.straggler_share, np.bincount(slowest, minlength=4) / 24)
        bounds = batch_bounds(gp, p, slot_tokens(p.phy2log, rp.counts, 4, Dispatch()))
        assert (bounds <= forward * (1 + 1e-9)).all()


def test_linear_stragglers_are_the_slow_gpus(plans):
    gpus, held, _, files = plans
    gp, rp = load_gpu_profile(gpus), load_routing_profile(held)
    p, _ = load_placement(files["vibe"], 4, rp.layer_ids.tolist(), rp.num_experts)
    s_vibe = score("vibe", gp, rp, p)
    p, _ = load_placement(files["linear"], 4, rp.layer_ids.tolist(), rp.num_experts)
    s_lin = score("linear", gp, rp, p)
    assert s_vibe.imbalance < s_lin.imbalance
    assert s_vibe.mean_us < s_lin.mean_us


def test_evaluate_warns_on_shared_replicas(vibe, tmp_path):
    """eplb may put two replicas of one expert on a GPU: evaluate accepts it with a warning."""
    gpus = write_gpus(tmp_path / "g.yaml", [1.0, 1.1])
    counts = np.zeros((2, 1, 4), dtype=np.int64)
    counts[:, 0] = [1000, 10, 10, 10]  # one very hot expert gets all spare slots
    routing = write_routing(tmp_path / "r.npz", counts)
    r = vibe(*solve_args(gpus, routing, tmp_path / "e.json", "-m", "eplb", "-r", "4"))
    assert r.code == 0, r.err
    m = np.asarray(json.loads((tmp_path / "e.json").read_text())["physical_to_logical_map"])
    assert any(len(set(block)) < 4 for block in m.reshape(-1, 2, 4)[0].tolist())
    r = vibe("evaluate", "--gpus", gpus, "--routing", routing, tmp_path / "e.json")
    assert r.code == 0, r.err
    assert "warning" in r.err


# ----- placements that do not fit the profiles -----


def _refused(r, out, *needles):
    assert r.code == 2, (r.code, r.err)
    assert any(line.startswith("error:") for line in r.err.splitlines()), r.err
    assert "Traceback" not in r.err
    text = " ".join(r.err.split())
    for needle in needles:
        assert needle in text, (needle, r.err)
    assert not (out / "s.csv").exists()


def test_evaluate_expert_count_mismatch(vibe, plans):
    gpus, _, out, files = plans
    other = write_routing(out.parent / "e12.npz", skewed_counts(4, 3, 12))
    r = vibe("evaluate", "--gpus", gpus, "--routing", other, files["vibe"], "--csv", out / "s.csv")
    _refused(r, out, "experts")


def test_evaluate_gpu_count_mismatch(vibe, plans):
    _, held, out, files = plans
    two = write_gpus(out.parent / "two.yaml", [1.0, 1.2])
    r = vibe("evaluate", "--gpus", two, "--routing", held, files["vibe"], "--csv", out / "s.csv")
    _refused(r, out, "GPU")


def test_evaluate_layer_mismatch(vibe, plans):
    gpus, _, out, files = plans
    other = write_routing(out.parent / "l.npz", skewed_counts(4, 3, 16), layer_ids=[0, 2, 3])
    r = vibe("evaluate", "--gpus", gpus, "--routing", other, files["vibe"], "--csv", out / "s.csv")
    _refused(r, out, "layer")


def test_evaluate_engine_files_that_do_not_fit(vibe, plans):
    gpus, held, out, _ = plans
    # SGLang rows per decoder layer: too few rows for the routing profile's layers 1..3.
    short = out.parent / "short.json"
    short.write_text(json.dumps({"physical_to_logical_map": [list(range(16))] * 2}))
    r = vibe("evaluate", "--gpus", gpus, "--routing", held, short, "--csv", out / "s.csv")
    _refused(r, out, "short.json")
    # EPLB file for 12 experts against a 16-expert profile.
    small = out.parent / "small.json"
    small.write_text(json.dumps({"phy2log": [list(range(12))] * 3}))
    r = vibe("evaluate", "--gpus", gpus, "--routing", held, small, "--csv", out / "s.csv")
    _refused(r, out, "small.json")
    # 18 slots cannot split over 4 GPUs.
    odd = out.parent / "odd.json"
    odd.write_text(json.dumps({"phy2log": [list(range(16)) + [0, 1]] * 3}))
    r = vibe("evaluate", "--gpus", gpus, "--routing", held, odd, "--csv", out / "s.csv")
    _refused(r, out, "odd.json")
    # Neither format.
    junk = out.parent / "junk.json"
    junk.write_text(json.dumps({"experts": [1, 2]}))
    r = vibe("evaluate", "--gpus", gpus, "--routing", held, junk, "--csv", out / "s.csv")
    _refused(r, out, "junk.json")


def test_evaluate_bad_inputs(vibe, plans):
    gpus, held, out, files = plans
    r = vibe("evaluate", "--gpus", gpus, "--routing", held, out / "nope.json")
    _refused(r, out, "nope.json")
    r = vibe(
        "evaluate", "--gpus", gpus, "--routing", held, files["vibe"], "--csv", out / "x" / "s.csv"
    )
    _refused(r, out, "--csv")
    assert not (out / "x").exists()
    bad = out.parent / "bad.yaml"
    bad.write_text("schema: vibe.gpu-profile/v1\ngpus: [")
    r = vibe("evaluate", "--gpus", bad, "--routing", held, files["vibe"], "--csv", out / "s.csv")
    _refused(r, out, "bad.yaml")


def test_phase_scores_one_phases_rows_and_names_a_plan_made_for_another(vibe, tmp_path):
    from test_solve_cli import _two_phase_routing

    from vibe_plan.placement.evaluate import evaluate_run

    gpus = write_gpus(tmp_path / "gpus.yaml", SPEEDS)
    mixed = _two_phase_routing(tmp_path / "mixed.npz", ["prefill", "decode"] * 2)
    assert vibe(*solve_args(gpus, mixed, tmp_path / "d.json", "--phase", "decode")).code == 0
    run = evaluate_run([tmp_path / "d.json"], gpus, mixed, phase="decode")
    assert run.routing.num_batches == 2 and not run.notes
    r = vibe("evaluate", tmp_path / "d.json", "--gpus", gpus, "--routing", mixed)
    assert r.code == 0
    assert (
        "mixes prefill and decode rows" in r.err and "made on the routing profile's decode" in r.err
    )
    everything = evaluate_run([tmp_path / "d.json"], gpus, mixed)
    assert everything.routing.num_batches == 4
    assert everything.scores[0].mean_us > run.scores[0].mean_us  # prefill rows cost more
