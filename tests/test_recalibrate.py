"""vibe recalibrate: drift against the placement's solved_for block, keep or replace, the move
budget, the gain-vs-moves table, the move list, and the no-partial-output rules."""

from __future__ import annotations

import json

import numpy as np
import pytest
from placement_inputs import (
    assert_runs_light,
    curve_times,
    load_json,
    placement_map,
    skewed_counts,
    solve_args,
    write_gpus,
    write_routing,
)

from vibe_plan.artifacts import load_gpu_profile, load_placement, load_routing_profile
from vibe_plan.artifacts.placement import dump_placement, placement_from_doc
from vibe_plan.errors import VibeError
from vibe_plan.placement.cpsat import CpSatSettings
from vibe_plan.placement.drift import total_variation
from vibe_plan.placement.migrate import (
    budget_descent,
    expert_bytes,
    gpu_counts,
    moves_between,
    stable_row,
)
from vibe_plan.placement.recalibrate import RecalibrateOptions, recalibrate_run

SPEEDS = [1.0, 1.05, 1.1, 1.15]
L, E, B = 3, 16, 8


def drifted_counts(alpha: float, seed: int = 5) -> np.ndarray:
    """The fixture's traffic mixed with another domain's: share `alpha` of the other."""
    a = skewed_counts(B, L, E, tokens=4096, seed=0)
    b = skewed_counts(B, L, E, tokens=4096, seed=seed)
    return np.rint((1 - alpha) * a + alpha * b).astype(np.int64)


@pytest.fixture
def world(tmp_path, vibe):
    """A placement solved on gpus.yaml + routing.npz, and drifted profiles beside them."""
    d = tmp_path
    gpus = write_gpus(d / "gpus.yaml", SPEEDS)
    routing = write_routing(d / "routing.npz", drifted_counts(0.0), num_hidden_layers=5)
    slow = write_gpus(d / "slow.yaml", [SPEEDS[0], SPEEDS[1] * 1.2, *SPEEDS[2:]])
    moved = write_routing(d / "moved.npz", drifted_counts(0.6), num_hidden_layers=5)
    cur = d / "current.json"
    r = vibe(*solve_args(gpus, routing, cur, "-r", 4))
    assert r.code == 0, r.err
    return {"gpus": gpus, "routing": routing, "slow": slow, "moved": moved, "cur": cur, "d": d}


def recal(vibe, w, gpus, routing, *extra, placement=None):
    out = w["d"] / "next.json"
    args = ["recalibrate", "--placement", placement or w["cur"], "--gpus", gpus]
    args += ["--routing", routing, "--out", out, "-q", "--time-limit", "0.02", "--jobs", "1"]
    r = vibe(*args, *extra)
    return r, out


def verdict(vibe, w, gpus, routing, *extra, placement=None):
    r, out = recal(vibe, w, gpus, routing, "--json", *extra, placement=placement)
    assert r.code == 0, r.err
    return json.loads(r.out), out


# ----- the solved_for block -----


def test_solve_writes_solved_for_and_it_round_trips(world):
    doc = load_json(world["cur"])
    sf = doc["solved_for"]
    assert sf["tokens"] == [16, 256, 4096]
    assert len(sf["gpus"]) == 4 and sf["gpus"][1]["uuid"] == "GPU-test-0001"
    assert len(sf["mean_load"]) == L and len(sf["mean_load"][0]) == E
    # 4 significant digits; the interpolated curve time at 16 tokens.
    mean = load_routing_profile(world["routing"]).mean_load()
    assert sf["mean_load"][0][0] == float(f"{mean[0, 0]:.4g}")
    assert sf["gpus"][1]["time_us"][0] == pytest.approx(SPEEDS[1] * (4 + 0.05 * 16), rel=1e-5)
    p, _ = load_placement(world["cur"])
    assert dump_placement(p) == world["cur"].read_text()  # read and written back, byte for byte


def test_old_placement_without_solved_for_still_loads_and_says_so(world, vibe):
    doc = load_json(world["cur"])
    del doc["solved_for"]
    old = world["d"] / "old.json"
    old.write_text(json.dumps(doc))
    assert load_placement(old)[0].solved_for is None
    r, out = recal(vibe, world, world["slow"], world["moved"], placement=old)
    assert r.code == 0, r.err
    assert "cannot report routing or GPU drift" in " ".join(r.err.split())
    # The old profiles supply what the block would have.
    v, _ = verdict(
        vibe,
        world,
        world["slow"],
        world["moved"],
        "--old-gpus",
        world["gpus"],
        "--old-routing",
        world["routing"],
        placement=old,
    )
    assert v["drift"]["routing"]["source"].startswith("--old-routing")
    assert [g["rank"] for g in v["drift"]["gpus"]["changed"]] == [1]


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("tokens", [16, 16], "strictly increasing"),
        ("gpus", [], "one record per GPU"),
        ("mean_load", [[1.0] * E], "rows"),
        ("mean_load", [[-1.0] * E] * L, "non-negative"),
    ],
)
def test_a_broken_solved_for_block_is_refused(world, key, value, says):
    doc = load_json(world["cur"])
    doc["solved_for"][key] = value
    with pytest.raises(VibeError, match=says):
        placement_from_doc(world["cur"], doc, None, None, None)


# ----- drift -----


def test_total_variation_distance():
    a = np.array([[1.0, 1.0, 0.0, 0.0], [2.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    b = np.array([[2.0, 2.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    assert total_variation(a, b).tolist() == [0.0, 1.0, 1.0]  # same mix, disjoint, empty vs some


def test_no_drift_is_reported_as_none_and_kept(world, vibe):
    v, out = verdict(vibe, world, world["gpus"], world["routing"])
    assert v["drift"]["routing"]["max"] < 1e-3  # only the 4-digit rounding of the stored loads
    assert v["drift"]["gpus"]["changed"] == []
    assert v["decision"] == "keep" and v["written"] == [] and not out.exists()


def test_routing_drift_only(world, vibe):
    v, _ = verdict(vibe, world, world["gpus"], world["moved"])
    assert v["drift"]["routing"]["distance"] == "total_variation"
    assert v["drift"]["routing"]["mean"] > 0.05
    assert v["drift"]["gpus"]["changed"] == []


def test_gpu_drift_only(world, vibe):
    v, _ = verdict(vibe, world, world["slow"], world["routing"])
    assert v["drift"]["routing"]["max"] < 1e-3
    changed = v["drift"]["gpus"]["changed"]
    assert [g["rank"] for g in changed] == [1]
    assert changed[0]["ratios"] == pytest.approx([1.2, 1.2, 1.2], rel=1e-4)


def test_a_replaced_gpu_is_reported(world, vibe):
    other = write_gpus(world["d"] / "other.yaml", SPEEDS)
    text = other.read_text().replace("GPU-test-0002", "GPU-new-0002")
    other.write_text(text)
    v, _ = verdict(vibe, world, other, world["routing"])
    assert v["drift"]["gpus"]["changed"][0]["replaced"] == ["GPU-test-0002", "GPU-new-0002"]


# ----- keep or replace -----


def test_replace_writes_the_plan_and_the_moves(world, vibe):
    moves = world["d"] / "moves.json"
    sg = world["d"] / "next.sglang.json"
    r, out = recal(
        vibe, world, world["slow"], world["moved"], "--moves-out", moves, "--export", f"sglang={sg}"
    )
    assert r.code == 0, r.err
    assert "replace:" in r.out and out.exists() and moves.exists()
    rows = load_json(sg)["physical_to_logical_map"]
    assert len(rows) == 5 and rows[1:4] == placement_map(out).tolist()  # decoder layers 1..3
    doc = load_json(out)
    assert doc["method"] == "vibe-recalibrate" and "solved_for" in doc
    listed = load_json(moves)
    n = moves_between_files(world["cur"], out)
    assert listed["total_moves"] == len(listed["moves"]) == n > 0
    shape = load_gpu_profile(world["gpus"]).expert
    assert listed["moves"][0]["bytes"] == expert_bytes(shape) == 3 * 64 * 128 * 2
    gains = [m["gain_us"] for m in listed["moves"]]
    assert gains == sorted(gains, reverse=True)
    # Same inputs, same bytes.
    first = (out.read_bytes(), moves.read_bytes())
    r, _ = recal(vibe, world, world["slow"], world["moved"], "--moves-out", moves)
    assert (out.read_bytes(), moves.read_bytes()) == first


def moves_between_files(a, b) -> int:
    ma, mb = placement_map(a), placement_map(b)
    return sum(moves_between(ma[i], mb[i], E, 4) for i in range(len(ma)))


def test_keep_below_min_gain_writes_nothing(world, vibe):
    moves = world["d"] / "moves.json"
    v, out = verdict(
        vibe, world, world["slow"], world["moved"], "--min-gain", "0.9", "--moves-out", moves
    )
    assert v["decision"] == "keep" and "below --min-gain" in v["reason"]
    assert v["gain"]["next"] > 0  # there was a gain, just not enough
    assert not out.exists() and not moves.exists()
    r, _ = recal(vibe, world, world["slow"], world["moved"], "--min-gain", "0.9")
    assert r.code == 0 and "keep:" in r.out and "nothing written" in r.out


@pytest.mark.parametrize("budget", [2, 3, 5])
def test_the_move_budget_is_respected(world, vibe, budget):
    moves = world["d"] / "moves.json"
    v, out = verdict(
        vibe,
        world,
        world["slow"],
        world["moved"],
        "--max-moves",
        budget,
        "--min-gain",
        "0",
        "--moves-out",
        moves,
    )
    assert v["moves"]["budget"] == budget
    assert 0 < v["moves"]["next"] <= budget
    assert moves_between_files(world["cur"], out) == v["moves"]["next"]
    assert load_json(moves)["total_moves"] == v["moves"]["next"]


def test_max_move_gb_counts_expert_bytes(world, vibe):
    per = expert_bytes(load_gpu_profile(world["gpus"]).expert)
    v, _ = verdict(vibe, world, world["slow"], world["moved"], "--max-move-gb", 4.5 * per / 1e9)
    assert v["moves"]["budget"] == 4 and v["moves"]["next"] <= 4


def test_a_zero_budget_leaves_the_plan_unchanged(world, vibe):
    v, out = verdict(
        vibe, world, world["slow"], world["moved"], "--max-moves", "0", "--min-gain", "0"
    )
    assert v["decision"] == "keep" and v["moves"]["next"] == 0 and not out.exists()
    assert v["predicted_us"]["next"] == v["predicted_us"]["current"]
    run = recalibrate_run(
        world["cur"],
        world["slow"],
        world["moved"],
        RecalibrateOptions(max_moves=0, min_gain=0, time_limit=0.02, jobs=1),
    )
    assert (run.placement.phy2log == placement_map(world["cur"])).all()
    assert run.moves == []


def test_recovered_gain_grows_with_the_budget(world):
    run = recalibrate_run(
        world["cur"],
        world["slow"],
        world["moved"],
        RecalibrateOptions(time_limit=0.02, jobs=1),
    )
    rows = [r for r in run.rows if r.fraction is not None]
    assert [r.fraction for r in rows] == [0.05, 0.10, 0.25, 1.0]
    assert all(r.moves <= r.budget for r in rows)
    gains = [r.gain for r in rows]
    assert gains == sorted(gains) and gains[-1] > 0
    assert rows[-1].recovered is not None and rows[-1].recovered > 0.9
    assert run.fresh_us < run.current_us and run.fresh_moves > rows[1].moves


def test_dispatch_defaults_to_the_recorded_rule(world, vibe):
    cur = world["d"] / "static.json"
    r = vibe(*solve_args(world["gpus"], world["routing"], cur, "-r", 4, "--dispatch", "static"))
    assert r.code == 0, r.err
    v, _ = verdict(vibe, world, world["slow"], world["moved"], placement=cur)
    assert v["dispatch"] == "static"
    v, _ = verdict(vibe, world, world["slow"], world["moved"], "--dispatch", "even", placement=cur)
    assert v["dispatch"] == "even"


def test_an_engine_file_can_be_recalibrated(world, vibe):
    sg = world["d"] / "sg.json"
    r = vibe(
        *solve_args(
            world["gpus"],
            world["routing"],
            world["d"] / "p.json",
            "-r",
            4,
            "--export",
            f"sglang={sg}",
        )
    )
    assert r.code == 0, r.err
    v, _ = verdict(vibe, world, world["slow"], world["moved"], "--min-gain", "0", placement=sg)
    assert v["drift"]["routing"] is None and v["decision"] == "replace"


# ----- the migration pieces -----


def test_budget_descent_counts_moves_and_stays_in_nodes():
    rng = np.random.default_rng(0)
    cost = rng.uniform(1, 10, size=(8, 4))
    cost[:, 0] *= 3  # GPU 0 is slow
    start = np.zeros((8, 4), dtype=np.int64)
    start[np.arange(8), np.arange(8) % 4] = 1
    for budget in range(5):
        got = budget_descent(cost, start, budget)
        assert (got.sum(axis=0) == 2).all() and (got.sum(axis=1) == 1).all()
        assert np.maximum(got - start, 0).sum() <= budget
    nodes = np.array([0, 0, 1, 1])
    got = budget_descent(cost, start, 8, node_of=nodes)
    for d in (0, 1):
        assert (got[:, nodes == d].sum(axis=1) == start[:, nodes == d].sum(axis=1)).all()


def test_stable_row_keeps_staying_replicas_in_their_slots():
    cur = np.array([0, 1, 2, 3, 4, 5])  # 3 GPUs x 2 slots
    new_counts = gpu_counts(np.array([0, 3, 2, 1, 4, 5]), 6, 3)
    row = stable_row(cur, new_counts)
    assert row.tolist() == [0, 3, 2, 1, 4, 5]
    assert (gpu_counts(row, 6, 3) == new_counts).all()
    assert moves_between(cur, row, 6, 3) == 2


def test_cpsat_budget_respects_the_budget():
    from vibe_plan.placement.migrate import count_moves, cpsat_budget

    rng = np.random.default_rng(1)
    cost = rng.uniform(1, 10, size=(8, 4))
    start = np.zeros((8, 4), dtype=np.int64)
    start[np.arange(8), np.arange(8) % 4] = 1
    for budget in (0, 3, 4):
        got = cpsat_budget(cost, start, budget, start, CpSatSettings(0.05, 2, 0))
        assert got is not None and count_moves(start, got) <= budget
        assert (got.sum(axis=0) == 2).all() and (got.sum(axis=1) == 1).all()


# ----- bad input: one error line, exit 2, nothing written -----


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--max-moves", "-1"], "--max-moves"),
        (["--max-moves", "3", "--max-move-gb", "1"], "give one of them"),
        (["--min-gain", "1.5"], "--min-gain"),
        (["--min-gain", "nan"], "--min-gain"),
        (["--dispatch", "fastest"], "dispatch rule"),
        (["--seed", "-1"], "--seed"),
    ],
)
def test_bad_options_are_refused_before_work(world, vibe, extra, says):
    r, out = recal(vibe, world, world["slow"], world["moved"], *extra)
    assert r.code == 2 and r.err.startswith("error: ") and says in r.err
    assert len(r.err.strip().splitlines()) == 1 and not out.exists()


def test_bad_inputs_are_refused(world, vibe):
    d = world["d"]
    r, out = recal(vibe, world, world["slow"], world["moved"], placement=d / "missing.json")
    assert r.code == 2 and "does not exist" in r.err and not out.exists()
    eight = write_gpus(d / "eight.yaml", SPEEDS * 2)
    r, out = recal(vibe, world, eight, world["moved"])
    assert r.code == 2 and "GPUs" in r.err and not out.exists()
    wrong = write_routing(d / "wrong.npz", skewed_counts(4, 2, E), num_hidden_layers=5)
    r, out = recal(vibe, world, world["slow"], world["moved"], "--old-routing", wrong)
    assert r.code == 2 and "--old-routing" in r.err and not out.exists()
    r, out = recal(vibe, world, world["slow"], world["moved"], "--moves-out", d / "no" / "m.json")
    assert r.code == 2 and r.err.startswith("error: ") and not out.exists()
    r, out = recal(vibe, world, world["slow"], world["moved"], "--moves-out", world["moved"])
    assert r.code == 2 and r.err.startswith("error: ") and not out.exists()


def test_curve_times_helper_matches_the_slow_profile(world):
    """The fixture's slowed GPU is 20% slower at every point (what the drift test expects)."""
    slow = load_gpu_profile(world["slow"]).gpus[1].curve.time_us
    assert slow == [round(SPEEDS[1] * 1.2 * (4 + 0.05 * t), 4) for t in (1, 8, 32, 128, 512, 2048)]
    assert curve_times(SPEEDS[1] * 1.2) == slow


# ----- light core: no torch -----


def test_solve_recalibrate_and_validate_import_no_torch(world):
    w = world
    args = ["--gpus", w["slow"], "--routing", w["moved"]]
    assert_runs_light(
        ["recalibrate", "--placement", w["cur"], *args, "--out", w["d"] / "n.json", "-q",
         "--time-limit", "0.02", "--jobs", "1", "--min-gain", "0"],
        ["validate", w["d"] / "n.json", *args, "--against", w["cur"]],
    )  # fmt: skip


def test_a_plan_made_on_decode_rows_is_recalibrated_on_decode_rows(vibe, tmp_path):
    from placement_inputs import SPEEDS as FLEET
    from test_solve_cli import _two_phase_routing

    gpus = write_gpus(tmp_path / "gpus.yaml", FLEET)
    old = _two_phase_routing(tmp_path / "old.npz", ["decode", "decode"])
    new = _two_phase_routing(tmp_path / "new.npz", ["prefill", "decode"] * 2, decode_seed=6)
    assert vibe(*solve_args(gpus, old, tmp_path / "d.json", "--phase", "decode")).code == 0
    out = tmp_path / "next.json"
    r = vibe(
        "recalibrate", "--placement", tmp_path / "d.json", "--gpus", gpus, "--routing", new,
        "--out", out, "-q", "--time-limit", "0.02", "--jobs", "1", "--min-gain", "0", "--json",
    )  # fmt: skip
    assert r.code == 0, r.err
    assert "made on decode rows" in r.err
    # Drift is measured between decode rows, not against the prefill-heavy mean of all rows.
    rows = load_routing_profile(new)
    decode = rows.select_rows(np.array(rows.meta["row_phase"]) == "decode").mean_load()
    before = load_routing_profile(old).mean_load()
    per_layer = json.loads(r.out)["drift"]["routing"]["per_layer"]
    np.testing.assert_allclose(per_layer, total_variation(before, decode), atol=2e-3)
    assert not np.allclose(per_layer, total_variation(before, rows.mean_load()), atol=2e-3)
    if json.loads(r.out)["decision"] == "replace":
        assert load_json(out)["inputs"]["routing_phase"] == "decode"
