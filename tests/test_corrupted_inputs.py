"""Property: randomly corrupted artefacts never crash `vibe solve` or `vibe evaluate`.

Fields of a valid GPU profile (YAML), routing profile (.npz) and placement (JSON) are flipped,
deleted or given another type at random. Whatever the damage, the command exits 0 or 2, never with
an uncaught exception; on 2 it prints exactly one `error:` line and writes no output file."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from placement_inputs import gpu_dict, routing_meta, skewed_counts, write_routing

from vibe_plan.cli import main

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,  # the same examples on every run: a CI failure reproduces locally
    suppress_health_check=[HealthCheck.too_slow],
)
FAST = ["--jobs", "1", "--time-limit", "0", "--quiet"]  # tiny problems: no CP-SAT, no pool

ODD_VALUES = [
    None,
    True,
    False,
    0,
    -1,
    1,
    3,
    2.5,
    1e300,
    -1e300,
    float("nan"),
    float("inf"),
    2**63,
    10**30,
    "",
    "x",
    "2",
    [],
    {},
    [1, 2],
    {"a": 1},
    [[0, 1], [1, 0]],
]


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path into a JSON-like tree (the root is `()`)."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _flip(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return -value if value else 1
    if isinstance(value, str):
        return value[::-1] + "?"
    if isinstance(value, list):
        return value[::-1] + value[:1]
    return value


def corrupt(doc: Any, data: st.DataObject, rounds: int) -> Any:
    """Apply `rounds` random flip / delete / retype operations to a copy of `doc`."""
    doc = copy.deepcopy(doc)
    for _ in range(rounds):
        paths = _paths(doc)
        path = paths[data.draw(st.integers(0, len(paths) - 1))]
        op = data.draw(st.sampled_from(["flip", "delete", "retype"]))
        new = data.draw(st.sampled_from(ODD_VALUES)) if op == "retype" else None
        if not path:
            doc = new if op == "retype" else _flip(doc)
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        if op == "delete":
            del parent[key]
        elif op == "flip":
            parent[key] = _flip(parent[key])
        else:
            parent[key] = copy.deepcopy(new)
    return doc


def run(*args: Any) -> tuple[int, str]:
    """The CLI in-process: (exit code, stderr). An uncaught exception fails the test."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, err.getvalue()


def check(code: int, err: str, outputs: list[Path]) -> None:
    assert code in (0, 2), (code, err)
    assert "Traceback" not in err
    if code == 2:
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, err
        for out in outputs:
            assert not out.exists(), f"{out} written by a refused run: {err}"
    for out in outputs:
        with contextlib.suppress(FileNotFoundError):
            out.unlink()


# ----- valid artefacts to start from -----------------------------------------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict[str, Any]:
    """A tiny valid set: 2 GPUs, 8 experts, 2 MoE layers (decoder layers 1, 2 of 4), 3 batches."""
    root = tmp_path_factory.mktemp("corrupt")
    gpus = gpu_dict([1.0, 1.2])
    (root / "gpus.yaml").write_text(yaml.safe_dump(gpus, sort_keys=False))
    counts = skewed_counts(3, 2, 8, tokens=256)
    meta = routing_meta(8, 4, expert={"hidden": 64, "intermediate": 128, "gated": True})
    write_routing(root / "routing.npz", counts, layer_ids=[1, 2], meta=meta)
    plan = root / "plan.json"
    code, err = run(
        "solve", "--gpus", root / "gpus.yaml", "--routing", root / "routing.npz",
        "--out", plan, "--redundant", "2", *FAST,
    )  # fmt: skip
    assert code == 0, err
    return {
        "root": root,
        "gpus": gpus,
        "counts": counts,
        "meta": meta,
        "placement": json.loads(plan.read_text()),
    }


def _solve_and_evaluate(root: Path, gpus: Path, routing: Path, placement: Path) -> None:
    out, sglang = root / "out.json", root / "out.sglang.json"
    code, err = run(
        "solve", "--gpus", gpus, "--routing", routing, "--out", out,
        "--export", f"sglang={sglang}", "--redundant", "2", *FAST,
    )  # fmt: skip
    check(code, err, [out, sglang])
    csv = root / "out.csv"
    code, err = run("evaluate", placement, "--gpus", gpus, "--routing", routing, "--csv", csv)
    check(code, err, [csv])


# ----- the properties ----------------------------------------------------------------------------


@SETTINGS
@given(data=st.data(), rounds=st.integers(1, 3))
def test_corrupted_gpu_profile(base, data, rounds):
    root = base["root"]
    doc = corrupt(base["gpus"], data, rounds)
    gpus = root / "bad-gpus.yaml"
    gpus.write_text(yaml.safe_dump(doc, sort_keys=False))
    _solve_and_evaluate(root, gpus, root / "routing.npz", root / "plan.json")


COUNT_DAMAGE = [
    "cell-negative",
    "cell-huge",
    "cell-fraction",
    "uint-wrap",
    "bool",
    "zero-all",
    "zero-layer",
    "zero-batch",
    "drop-axis",
    "empty",
    "strings",
]


def _damage_counts(counts: np.ndarray, how: str, data: st.DataObject) -> np.ndarray:
    c = counts.copy()
    b, layer, e = (data.draw(st.integers(0, n - 1)) for n in c.shape)
    if how == "cell-negative":
        c[b, layer, e] = -1
    elif how == "cell-huge":
        c[b, layer, e] = 2**62
    elif how == "cell-fraction":
        c = c.astype(float)
        c[b, layer, e] += 0.5
    elif how == "uint-wrap":
        c = c.astype(np.uint64)
        c[b, layer, e] = np.uint64(2**64 - 1)
    elif how == "bool":
        c = c > 10
    elif how == "zero-all":
        c[:] = 0
    elif how == "zero-layer":
        c[:, layer] = 0
    elif how == "zero-batch":
        c[b] = 0
    elif how == "drop-axis":
        c = c[0]
    elif how == "empty":
        c = c[:0]
    else:
        c = c.astype(str)
    return c


@SETTINGS
@given(
    data=st.data(),
    target=st.sampled_from(["counts", "layer_ids", "meta", "meta-text", "drop"]),
)
def test_corrupted_routing_profile(base, data, target):
    root = base["root"]
    counts, layer_ids, meta = base["counts"], np.array([1, 2]), base["meta"]
    drop: tuple[str, ...] = ()
    if target == "counts":
        counts = _damage_counts(counts, data.draw(st.sampled_from(COUNT_DAMAGE)), data)
    elif target == "layer_ids":
        layer_ids = data.draw(
            st.sampled_from(
                [
                    np.array([2, 1]),
                    np.array([1, 1]),
                    np.array([-1, 2]),
                    np.array([1]),
                    np.array([1, 10**9]),
                    np.array([1.0, 2.0]),
                    np.array(["1", "2"]),
                    np.array([[1, 2]]),
                    np.array([1, 2], dtype=np.uint64),
                ]
            )
        )
    elif target == "meta":
        meta = corrupt(meta, data, data.draw(st.integers(1, 3)))
    elif target == "meta-text":
        meta = data.draw(st.sampled_from(["", "{", "[1]", "null", '{"schema": NaN}']))
    else:
        drop = (data.draw(st.sampled_from(["counts", "layer_ids", "meta"])),)
    routing = root / "bad-routing.npz"
    if isinstance(meta, str) or meta is None:
        meta = json.dumps(meta) if meta is None else meta
    write_routing(routing, counts, layer_ids=layer_ids, meta=meta, drop=drop)
    _solve_and_evaluate(root, root / "gpus.yaml", routing, root / "plan.json")


@SETTINGS
@given(data=st.data(), rounds=st.integers(1, 3))
def test_corrupted_placement(base, data, rounds):
    root = base["root"]
    doc = corrupt(base["placement"], data, rounds)
    placement = root / "bad-plan.json"
    placement.write_text(json.dumps(doc))
    csv = root / "out.csv"
    code, err = run(
        "evaluate", placement, "--gpus", root / "gpus.yaml", "--routing", root / "routing.npz",
        "--csv", csv,
    )  # fmt: skip
    check(code, err, [csv])
