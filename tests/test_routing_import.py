"""`vibe import-routing` on files written here in each engine's documented dump layout."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from routing_models import build_tiny_model  # noqa: E402

from vibe_plan.artifacts.routing_profile import load_routing_profile  # noqa: E402
from vibe_plan.errors import VibeError  # noqa: E402

RNG = np.random.default_rng(7)


@pytest.fixture(scope="module")
def ds3(tmp_path_factory) -> Path:
    # 3 decoder layers, layer 0 dense; 8 routed experts in 4 groups; one shared expert
    return build_tiny_model("deepseek_v3", tmp_path_factory.mktemp("ds3"))


def run(vibe, source, out, *extra):
    r = vibe("import-routing", source, "--out", out, "--quiet", *extra)
    assert r.code == 0, r.err
    return load_routing_profile(out)


def test_sglang_stat(vibe, ds3, tmp_path):
    counts = RNG.integers(0, 50, size=(5, 3, 8)).astype(np.int32)
    counts[:, 0] = 0  # dense decoder layer 0 never routes
    counts[3] = 0  # a circular-buffer slot never filled
    torch.save(
        {
            "rank": 0,
            "logical_count": torch.from_numpy(counts),
            "average_utilization_rate_over_window": 0.71,
        },
        tmp_path / "expert_distribution_recorder_1700000000.0.pt",
    )
    p = run(vibe, tmp_path / "expert_distribution_recorder_1700000000.0.pt", tmp_path / "a.npz")
    assert p.layer_ids.tolist() == [1, 2] and p.num_hidden_layers == 3
    assert np.array_equal(p.counts, np.delete(counts, 3, axis=0)[:, 1:].astype(np.int64))
    assert p.meta["source"]["engine"] == "sglang" and p.meta["phase"] == "mixed"
    q = run(
        vibe,
        tmp_path,
        tmp_path.with_name(tmp_path.name + "-b.npz"),
        "--model",
        ds3,
        "--format",
        "sglang",
    )
    assert q.layer_ids.tolist() == [1, 2] and q.meta["num_groups"] == 4
    assert q.meta["shared_experts"]["count"] == 1 and q.meta["top_k"] == 2


def test_sglang_per_pass_sums_ranks_and_folds_replicas(vibe, tmp_path):
    layers, logical = 2, 4
    p2l = torch.tensor([[0, 1, 2, 3, 0, 1], [3, 2, 1, 0, 3, 3]])  # 2 redundant slots per layer
    expected = np.zeros((3, layers, logical), np.int64)
    for rank in range(2):
        records = []
        for fp in range(3):
            phys = RNG.integers(0, 20, size=(layers, 6))
            for layer in range(layers):
                np.add.at(expected[fp, layer], p2l[layer].numpy(), phys[layer])
            records.append(
                {
                    "forward_pass_id": fp,
                    "rank": rank,
                    "global_physical_count": torch.from_numpy(phys),
                }
            )
        torch.save(
            {"records": records, "last_physical_to_logical_map": p2l},
            tmp_path / f"expert_distribution_recorder_1.0_{rank}.pt",
        )
    p = run(vibe, tmp_path, tmp_path.with_name(tmp_path.name + "-r.npz"))
    assert p.meta["source"]["mode"] == "per_pass"
    assert np.array_equal(p.counts, expected)


def test_trtllm_statistics_folder(vibe, ds3, tmp_path):
    dump = tmp_path / "stats"
    dump.mkdir()
    (dump / "meta_info.json").write_text(json.dumps({"num_experts": 8, "num_experts_per_token": 2}))
    from safetensors.numpy import save_file

    total = np.zeros((4, 2, 8), np.int64)
    for rank in range(2):
        tensors = {}
        for it in range(10, 14):
            tokens = int(RNG.integers(1, 30))  # every MoE layer of an iteration routes them all
            for li, layer in enumerate((1, 2)):
                c = _picks(tokens, 2, 8)
                total[it - 10, li] += c
                tensors[f"{it}_{layer}"] = c
        save_file(tensors, str(dump / f"rank{rank}.safetensors"))
    p = run(vibe, dump, tmp_path / "r.npz")
    assert p.layer_ids.tolist() == [1, 2] and p.meta["top_k"] == 2
    assert np.array_equal(p.counts, total)
    q = run(vibe, dump, tmp_path / "q.npz", "--model", ds3)
    assert q.meta["model"] == ds3.name and q.meta["num_hidden_layers"] == 3


def _picks(tokens: int, k: int, experts: int) -> np.ndarray:
    """Expert counts of `tokens` tokens that each pick `k` distinct experts (int64 [experts])."""
    ids = np.concatenate([RNG.permutation(experts)[:k] for _ in range(tokens)] or [[]])
    return np.bincount(ids.astype(np.int64), minlength=experts)


def _routed(seq: int, dense: int = 0) -> np.ndarray:
    """vLLM's routed_experts of one request: [tokens, decoder layers, top_k], uint8 (8 experts);
    its first `dense` decoder layers are dense: zero, i.e. expert 0 for every token."""
    arr = np.stack([RNG.permutation(8)[:2] for _ in range(seq * 2)]).reshape(seq, 2, 2)
    zeros = np.zeros((seq, dense, 2), arr.dtype)
    return np.concatenate([zeros, arr], axis=1).astype(np.uint8)


def test_vllm_npy_and_jsonl(vibe, ds3, tmp_path):
    reqs = [_routed(n, dense=1) for n in (5, 7, 3, 9)]  # ds3: decoder layer 0 is dense
    folder = tmp_path / "npy"
    folder.mkdir()
    for i, a in enumerate(reqs):
        np.save(folder / f"req{i:02d}.npy", a)
    # batches of 12 tokens: [5, 7] [3, 9]
    p = run(vibe, folder, tmp_path / "a.npz", "--model", ds3, "--batch-tokens", "12")
    assert p.layer_ids.tolist() == [1, 2]  # MoE-layer rows mapped to decoder ids
    assert p.num_batches == 2 and (p.counts.sum(axis=2) == np.array([[24], [24]])).all()
    for b, group in enumerate((reqs[:2], reqs[2:])):
        for li, layer in enumerate((1, 2)):
            ids = np.concatenate([a[:, layer, :].ravel() for a in group])
            assert p.counts[b, li].tolist() == np.bincount(ids, minlength=8).tolist()
    lines = []
    for a in reqs:
        buf = io.BytesIO()
        np.save(buf, a)
        b64 = base64.b64encode(buf.getvalue()).decode()
        lines.append(json.dumps({"id": "x", "choices": [{"text": "..", "routed_experts": b64}]}))
    (tmp_path / "resp.jsonl").write_text("\n".join(lines) + "\n")
    q = run(
        vibe, tmp_path / "resp.jsonl", tmp_path / "b.npz", "--model", ds3, "--batch-tokens", "12"
    )
    assert np.array_equal(q.counts, p.counts)
    single = run(vibe, folder / "req00.npy", tmp_path / "c.npz")  # no --model: dense layer 0
    assert single.layer_ids.tolist() == [1, 2] and single.counts.sum() == 5 * 2 * 2
    assert single.num_hidden_layers == 3
    np.save(tmp_path / "moe_only.npy", reqs[0][:, 1:])  # revisions with MoE layers only
    old = run(vibe, tmp_path / "moe_only.npy", tmp_path / "d.npz", "--model", ds3)
    assert old.layer_ids.tolist() == [1, 2] and np.array_equal(old.counts, single.counts)


@pytest.mark.parametrize(
    "case, expect",
    [
        ("missing", "does not exist"),
        ("unknown", "cannot tell which engine"),
        ("bad_pt", "not a readable torch"),
        ("wrong_model", "16 experts per layer, the model config 8"),
        ("bad_jsonl", "resp.jsonl:2"),
        ("no_field", "--enable-return-routed-experts"),
        ("bad_trt_key", 'is not "{iter}_{layer}"'),
    ],
)
def test_import_bad_inputs(case, expect, vibe, ds3, tmp_path):
    src, extra = tmp_path / "x", []
    if case == "unknown":
        src.write_text("hello")
    elif case == "bad_pt":
        src = tmp_path / "d.pt"
        src.write_bytes(b"not a pickle")
    elif case == "wrong_model":
        src = tmp_path / "d.pt"
        torch.save({"logical_count": torch.ones(2, 3, 16, dtype=torch.int32)}, src)
        extra = ["--model", ds3]
    elif case in ("bad_jsonl", "no_field"):
        src = tmp_path / "resp.jsonl"
        second = "{oops" if case == "bad_jsonl" else '{"choices": []}'
        src.write_text('{"routed_experts": [[[1, 2]]]}\n' + second + "\n")
    elif case == "bad_trt_key":
        from safetensors.numpy import save_file

        src.mkdir()
        (src / "meta_info.json").write_text('{"num_experts": 4, "num_experts_per_token": 1}')
        save_file({"layer3": np.ones(4, np.int64)}, str(src / "rank0.safetensors"))
    out = tmp_path / "o.npz"
    r = vibe("import-routing", src, "--out", out, *extra)
    assert r.code == 2, (r.out, r.err)
    assert r.err.startswith("error: ") and expect in r.err, r.err
    assert not out.exists()


def test_readers_return_notes_and_the_command_prints_them(vibe, capsys, tmp_path):
    """Engine readers never print: warnings come back in EngineDump.notes; the command shows them
    (even with --quiet) in reading order."""
    from safetensors.numpy import save_file

    from vibe_plan.engines import read_dump

    dump = tmp_path / "stats"
    dump.mkdir()
    (dump / "meta_info.json").write_text(json.dumps({"num_experts": 4, "num_experts_per_token": 1}))
    save_file(
        {"0_1": np.ones(4, np.int64), "1_2": np.ones(4, np.int64)}, str(dump / "rank0.safetensors")
    )
    got = read_dump(dump, "trtllm")
    assert got.notes == ["2 (iteration, layer) pairs missing from the dump; counted as zero"]
    assert capsys.readouterr().err == ""

    np.save(tmp_path / "req.npy", _routed(5, dense=1))
    r = vibe("import-routing", tmp_path / "req.npy", "--out", tmp_path / "v.npz", "--quiet")
    assert r.code == 0, r.err
    lines = [line for line in r.err.splitlines() if line.startswith("warning:")]
    assert len(lines) == 2, r.err
    assert "assuming" in lines[0] and "layers [0] send every token to expert 0" in lines[1]


@pytest.mark.parametrize(
    ("name", "want"),
    [
        ("meta_info.json", "trtllm"),
        ("rank0.safetensors", "trtllm"),
        ("expert_distribution.pt", "sglang"),
        ("routed_experts.npy", "vllm"),
        ("routed_experts.jsonl", "vllm"),
        ("dump.json", "vllm"),
    ],
)
def test_dump_format_from_file_names(tmp_path, name, want):
    from vibe_plan.engines import dump_format

    path = tmp_path / name
    path.write_text("{}")
    assert dump_format(path) == want


def test_dump_format_of_folders(tmp_path):
    from vibe_plan.engines import dump_format

    trt = tmp_path / "trt"
    trt.mkdir()
    (trt / "meta_info.json").write_text("{}")
    (trt / "rank0.npy").write_text("")  # the meta file decides, whatever else lies there
    assert dump_format(trt) == "trtllm"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VibeError, match="cannot tell which engine"):
        dump_format(empty)
