"""`vibe simulate` through the CLI: what it writes, trace times replayed, bad input refused,
placement files of every engine read. The model itself: test_simulate.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from placement_inputs import skewed_counts, write_gpus, write_routing

from vibe_plan.simulate.run import (
    REQUEST_COLUMNS,
    SUMMARY_COLUMNS,
)

# --- the command ------------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path, vibe):
    src = tmp_path / "in"
    src.mkdir()
    gpus = write_gpus(src / "g.yaml", [1.0, 1.3, 1.15, 1.45])
    rt = write_routing(
        src / "r.npz", skewed_counts(8, 3, 16, sigma=1.3), num_hidden_layers=5, row_tokens=[512] * 8
    )
    tr = src / "trace.jsonl"
    rng = np.random.default_rng(0)
    tr.write_text(
        "\n".join(
            json.dumps(
                {
                    "timestamp": int(i * 40),
                    "input_length": int(rng.integers(50, 900)),
                    "output_length": int(rng.integers(1, 30)),
                }
            )
            for i in range(40)
        )
        + "\n"
    )
    plans = []
    for method in ("eplb", "linear"):
        out = src / f"{method}.json"
        r = vibe("solve", "--gpus", gpus, "--routing", rt, "--out", out, "-m", method, "-q")
        assert r.code == 0, r.err
        plans.append(out)
    out = tmp_path / "out"
    out.mkdir()
    return gpus, rt, tr, plans, out


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_cli_writes_the_summary_and_the_requests(vibe, files):
    gpus, rt, tr, plans, out = files
    args = ["simulate", "--gpus", gpus, "--routing", rt, "--trace", tr, *plans]
    r = vibe(*args, "--rates", "5,50", "--csv", out / "s.csv")
    assert r.code == 0, r.err
    with open(out / "s.csv") as f:
        assert f.readline().strip().split(",") == SUMMARY_COLUMNS
    rows = _rows(out / "s.csv")
    assert [(row["method"], float(row["rate"])) for row in rows] == [
        ("eplb", 5.0),
        ("eplb", 50.0),
        ("linear", 5.0),
        ("linear", 50.0),
    ]
    assert all(int(row["requests"]) == 40 for row in rows)
    for row in rows:
        assert float(row["ttft_p50_s"]) <= float(row["ttft_p90_s"]) <= float(row["ttft_p99_s"])
        assert 0.0 <= float(row["slo_attainment"]) <= 1.0
        assert float(row["imbalance"]) >= 1.0
    reqs = _rows(out / "s.requests.csv")
    with open(out / "s.requests.csv") as f:
        assert f.readline().strip().split(",") == REQUEST_COLUMNS
    assert len(reqs) == 4 * 40
    first = [float(q["ttft_s"]) for q in reqs[:40]]
    assert float(rows[0]["ttft_p50_s"]) == pytest.approx(np.percentile(first, 50), abs=2e-6)
    assert "eplb" in r.out and "linear" in r.out
    # the same command again: the same bytes
    again = out / "again.csv"
    assert vibe(*args, "--rates", "5,50", "--csv", again).code == 0
    assert again.read_bytes() == (out / "s.csv").read_bytes()
    assert (out / "again.requests.csv").read_bytes() == (out / "s.requests.csv").read_bytes()


def test_cli_replays_the_trace_times(vibe, files):
    gpus, rt, tr, plans, out = files
    r = vibe(
        "simulate", "--gpus", gpus, "--routing", rt, "--trace", tr, plans[0], "--csv", out / "t.csv"
    )
    assert r.code == 0, r.err
    (row,) = _rows(out / "t.csv")
    assert float(row["rate"]) == pytest.approx(39 / 1.56)  # 40 requests over 1.56 s
    arrivals = [float(q["arrival_s"]) for q in _rows(out / "t.requests.csv")]
    assert arrivals == pytest.approx([i * 0.04 for i in range(40)])


def _bad(files, tmp_path):
    gpus, rt, tr, plans, out = files
    other = tmp_path / "g8.yaml"
    write_gpus(other, [1.0] * 8)
    text = tmp_path / "text.jsonl"
    text.write_text(json.dumps({"prompt": "hello"}) + "\n")
    base = ["--gpus", gpus, "--routing", rt, "--trace", tr]
    return {
        "rate zero": [*base, plans[0], "--rate", "0"],
        "rate negative": [*base, plans[0], "--rate", "-2"],
        "rate nan": [*base, plans[0], "--rate", "nan"],
        "rate inf": [*base, plans[0], "--rate", "inf"],
        "rates word": [*base, plans[0], "--rates", "1,fast"],
        "rates repeat": [*base, plans[0], "--rates", "1,2,1"],
        "rate and rates": [*base, plans[0], "--rate", "1", "--rates", "2"],
        "slo ttft": [*base, plans[0], "--rate", "1", "--slo-ttft", "0"],
        "slo tpot": [*base, plans[0], "--rate", "1", "--slo-tpot", "-0.1"],
        "duration": [*base, plans[0], "--rate", "1", "--duration", "0"],
        "batch tokens": [*base, plans[0], "--rate", "1", "--batch-tokens", "0"],
        "overhead": [*base, plans[0], "--rate", "1", "--layer-overhead-us", "-1"],
        "dispatch": [*base, plans[0], "--rate", "1", "--dispatch", "fastest"],
        "wrong fleet": ["--gpus", other, "--routing", rt, "--trace", tr, plans[0], "--rate", "1"],
        "no times": ["--gpus", gpus, "--routing", rt, "--trace", text, plans[0]],
        "missing placement": [*base, tmp_path / "nope.json", "--rate", "1"],
    }


@pytest.mark.parametrize(
    "case",
    [
        "rate zero",
        "rate negative",
        "rate nan",
        "rate inf",
        "rates word",
        "rates repeat",
        "rate and rates",
        "slo ttft",
        "slo tpot",
        "duration",
        "batch tokens",
        "overhead",
        "dispatch",
        "wrong fleet",
        "no times",
        "missing placement",
    ],
)
def test_cli_refuses_bad_input_with_one_error_line_and_no_file(vibe, files, tmp_path, case):
    out = files[4]
    args = _bad(files, tmp_path)[case]
    r = vibe("simulate", *args, "--csv", out / "bad.csv")
    assert r.code == 2, (case, r.out, r.err)
    assert r.err.startswith("error:") and len(r.err.strip().splitlines()) == 1, r.err
    assert not (out / "bad.csv").exists() and not (out / "bad.requests.csv").exists()


def test_cli_refuses_an_unwritable_csv_before_any_work(vibe, files, tmp_path):
    gpus, rt, tr, plans, _ = files
    missing = tmp_path / "no" / "such" / "dir" / "s.csv"
    r = vibe("simulate", "--gpus", gpus, "--routing", rt, "--trace", tr, plans[0], "--csv", missing)
    assert r.code == 2 and r.err.startswith("error:")
    assert not missing.parent.exists()


def test_placement_files_of_other_engines_are_read(vibe, files, tmp_path):
    """An EPLB-style export of a plan simulates exactly like the plan itself."""
    gpus, rt, tr, plans, out = files
    eplb_export = tmp_path / "e.json"
    r = vibe(
        "solve", "--gpus", gpus, "--routing", rt, "--out", tmp_path / "v.json", "-m", "eplb",
        "-q", "--export", f"eplb={eplb_export}",
    )  # fmt: skip
    assert r.code == 0, r.err
    args = ["simulate", "--gpus", gpus, "--routing", rt, "--trace", tr, "--rate", "20"]
    assert vibe(*args, tmp_path / "v.json", eplb_export, "--csv", out / "x.csv").code == 0
    a, b = _rows(out / "x.csv")
    assert {k: v for k, v in a.items() if k not in ("placement", "method")} == {
        k: v for k, v in b.items() if k not in ("placement", "method")
    }
