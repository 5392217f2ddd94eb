"""Engine dumps, model configs and profile-routing read strictly (issue 9): every user error is
one `error:` line, exit code 2, no traceback and no output file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from placement_inputs import (
    assert_refused,
)

# ----- import-routing: configs and dumps ---------------------------------------------------------


def _model(folder: Path, **overrides: Any) -> Path:
    folder.mkdir(exist_ok=True)
    cfg = {
        "model_type": "qwen3_moe",
        "hidden_size": 32,
        "intermediate_size": 64,
        "moe_intermediate_size": 16,
        "num_experts": 8,
        "num_experts_per_tok": 2,
        "num_hidden_layers": 2,
        "hidden_act": "silu",
        **overrides,
    }
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def _routed(seq: int, layers: int = 2, k: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(8)[:k] for _ in range(seq * layers)]).reshape(seq, layers, k)


def test_import_records_the_expert_shape(vibe, tmp_path):
    np.save(tmp_path / "req.npy", _routed(6))
    r = vibe("import-routing", tmp_path / "req.npy", "--out", tmp_path / "r.npz", "--model",
             _model(tmp_path / "m"), "--quiet")  # fmt: skip
    assert r.code == 0, r.err
    from vibe_plan.artifacts import load_routing_profile

    p = load_routing_profile(tmp_path / "r.npz")
    assert p.meta["expert"] == {"hidden": 32, "intermediate": 16, "gated": True}
    assert p.expert_shape == (32, 16, True)


@pytest.mark.parametrize(
    "overrides, needle",
    [
        ({"num_hidden_layers": "four"}, "num_hidden_layers"),
        ({"num_hidden_layers": 10**9}, "num_hidden_layers"),
        ({"num_experts": 10**9}, "num_experts"),
    ],
)
def test_import_with_a_bad_config(vibe, tmp_path, overrides, needle):
    np.save(tmp_path / "req.npy", _routed(6))
    out = tmp_path / "r.npz"
    args = ["import-routing", tmp_path / "req.npy", "--out", out, "--model"]
    assert_refused(vibe, [*args, _model(tmp_path / "m", **overrides)], [out], needle)


@pytest.mark.parametrize(
    "array, needle",
    [
        (np.zeros((5, 2), np.int64), "shape [5, 2]"),
        (np.zeros((0, 2, 2), np.int64), "empty"),
        (np.full((3, 2, 2), -1, np.int64), "empty"),
        (np.full((3, 2, 2), -7, np.int64), "-7"),
        (np.full((3, 2, 2), 10**12, np.int64), "corrupt"),
    ],
)
def test_bad_vllm_arrays(vibe, tmp_path, array, needle):
    np.save(tmp_path / "req.npy", array)
    out = tmp_path / "r.npz"
    assert_refused(vibe, ["import-routing", tmp_path / "req.npy", "--out", out], [out], needle)


def test_vllm_jsonl_lists_must_hold_integers(vibe, tmp_path):
    src = tmp_path / "resp.jsonl"
    out = tmp_path / "r.npz"
    src.write_text(json.dumps({"routed_experts": [[[1.5, 2]]]}) + "\n")
    assert_refused(vibe, ["import-routing", src, "--out", out], [out], "integer")
    src.write_text('{"routed_experts": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    assert_refused(vibe, ["import-routing", src, "--out", out], [out], "nested too deeply")


def test_trtllm_dump_counts_must_be_integers(vibe, tmp_path):
    from safetensors.numpy import save_file

    dump = tmp_path / "stats"
    dump.mkdir()
    out = tmp_path / "r.npz"
    (dump / "meta_info.json").write_text('{"num_experts": 4, "num_experts_per_token": 1}')
    save_file({"1_0": np.array([1.0, 2.5, 0.0, 3.0])}, str(dump / "rank0.safetensors"))
    assert_refused(vibe, ["import-routing", dump, "--out", out], [out], "non-integer")
    save_file({"1_0": np.array([1.0, -2.0, 0.0, 3.0])}, str(dump / "rank0.safetensors"))
    assert_refused(vibe, ["import-routing", dump, "--out", out], [out], "negative counts")
    save_file({"1_0": np.array([1.0, 2.0, 0.0, 3.0])}, str(dump / "rank0.safetensors"))
    r = vibe("import-routing", dump, "--out", out, "--quiet")  # integral floats are counts
    assert r.code == 0, r.err
    (dump / "meta_info.json").write_text('{"num_experts": "four"}')
    assert_refused(vibe, ["import-routing", dump, "--out", out], [out], "num_experts")


# ----- 5. SGLang dumps (torch writes them) -------------------------------------------------------


def _per_pass(tmp_path: Path, p2l: list[list[int]], phys: np.ndarray) -> Path:
    torch = pytest.importorskip("torch")
    path = tmp_path / "expert_distribution_recorder_1.0_0.pt"
    records = [
        {"forward_pass_id": i, "rank": 0, "global_physical_count": torch.from_numpy(phys[i])}
        for i in range(len(phys))
    ]
    torch.save({"records": records, "last_physical_to_logical_map": torch.tensor(p2l)}, path)
    return path


def test_sglang_empty_slots_are_dropped(vibe, tmp_path):
    p2l = [[0, 1, 2, 3, -1, -1], [3, 2, 1, 0, 0, -1]]
    phys = np.full((2, 2, 6), 5, np.int64)
    src = _per_pass(tmp_path, p2l, phys)
    r = vibe("import-routing", src, "--out", tmp_path / "r.npz", "--quiet")
    assert r.code == 0, r.err
    from vibe_plan.artifacts import load_routing_profile

    counts = load_routing_profile(tmp_path / "r.npz").counts
    assert counts[:, 0].tolist() == [[5, 5, 5, 5]] * 2  # expert 3 gets no -1 slot's tokens
    assert counts[:, 1].tolist() == [[10, 5, 5, 5]] * 2


@pytest.mark.parametrize(
    "phys, needle",
    [
        (np.full((2, 1, 4), 2.5), "non-integer"),
        (np.full((2, 1, 4), -3, np.int64), "negative counts"),
    ],
)
def test_sglang_counts_are_not_truncated(vibe, tmp_path, phys, needle):
    src = _per_pass(tmp_path, [[0, 1, 2, 3]], phys)
    out = tmp_path / "r.npz"
    assert_refused(vibe, ["import-routing", src, "--out", out], [out], needle)


def test_sglang_integral_float_counts_are_accepted(vibe, tmp_path):
    src = _per_pass(tmp_path, [[0, 1, 2, 3]], np.full((2, 1, 4), 2.0))
    r = vibe("import-routing", src, "--out", tmp_path / "r.npz", "--quiet")
    assert r.code == 0, r.err


def test_sglang_stat_rank_must_be_an_integer(vibe, tmp_path):
    torch = pytest.importorskip("torch")
    src = tmp_path / "expert_distribution_recorder_1.0.pt"
    torch.save({"rank": "zero", "logical_count": torch.ones(2, 2, 4, dtype=torch.int32)}, src)
    out = tmp_path / "r.npz"
    assert_refused(vibe, ["import-routing", src, "--out", out], [out], "rank 'zero'")


def test_profile_routing_records_the_expert_shape(vibe, tmp_path):
    pytest.importorskip("transformers")
    from routing_models import build_tiny_model

    from vibe_plan.artifacts import load_routing_profile

    model = build_tiny_model("qwen3_moe", tmp_path / "m")
    trace = tmp_path / "p.jsonl"
    trace.write_text(
        "".join(json.dumps({"prompt": f"w{i} w{i + 1} w{i + 2}"}) + "\n" for i in range(4))
    )
    r = vibe("profile-routing", "--model", model, "--trace", trace, "--out", tmp_path / "r.npz",
             "--quiet")  # fmt: skip
    assert r.code == 0, r.err
    meta = load_routing_profile(tmp_path / "r.npz").meta
    assert meta["expert"] == {"hidden": 32, "intermediate": 16, "gated": True}
