"""Engine round trip: every dump an engine writes imports with exact counts, and every file vibe
exports passes the checks the engine's own loading code applies.

Each dump is built here the way the engine's code writes it (field names, shapes, dtypes, file
names), from tokens whose expert picks are known, so the imported counts can be compared exactly:

- vLLM (`RoutedExpertsCapturer`): a zeroed buffer [tokens, every decoder layer, top_k] that only
  MoE layers write (a dense layer reads as expert 0), uint8 up to 256 experts, returned per
  request as `choices[i].routed_experts`, base64 of a .npy of [tokens - 1, layers, top_k];
- TensorRT-LLM (`ExpertStatistic`): `meta_info.json` from rank 0 and `rank{r}.safetensors` with a
  bincount per "{iter}_{layer}" key, MTP layers keyed `num_hidden_layers + i`, slot-sized arrays
  when the load balancer routes (`maybe_add_info(num_slots, token_selected_slots)`), sometimes
  `rank{r}_raw.safetensors` beside them, identical files when every rank sees the same tokens;
- SGLang (`expert_distribution.py`): the stat dump (rank 0, `logical_count` int32 [buffer,
  decoder layers, experts], all-reduced) and per_pass dumps (one per rank, `records` with
  `global_physical_count` [layers, slots]), identical across ranks without an a2a backend.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from engine_dumps import (
    CONFIG,
    MOE,
    MTP,
    NH,
    E,
    K,
    count,
    import_dump,
    refused_import,
    route,
    topk,
    trt_run,
    write_model,
)

from vibe_plan.artifacts import Placement
from vibe_plan.engines import export_placement


@pytest.fixture
def model(tmp_path) -> Path:
    return write_model(tmp_path)


# --- vLLM ----------------------------------------------------------------------------------------


def vllm_routed_experts(picks: dict[int, np.ndarray], tokens: int, experts: int = E) -> np.ndarray:
    """The array of one request as vLLM returns it: `RoutedExpertsCapturer` zero-fills a buffer
    [tokens, num_hidden_layers, top_k] and `capture(layer_id, topk_ids)` writes the MoE layers;
    the response holds tokens - 1 rows (the last sampled token never ran), uint8 up to 256
    experts, else uint16."""
    buf = np.zeros((tokens, NH, K), np.int32)
    for layer, ids in picks.items():
        buf[:, layer, :] = ids
    return buf[: tokens - 1].astype(np.uint8 if experts <= 256 else np.uint16)


def vllm_response(arr: np.ndarray, i: int) -> str:
    """One OpenAI completion response line with `choices[0].routed_experts` (base64 .npy)."""
    raw = io.BytesIO()
    np.save(raw, arr)
    choice = {
        "index": 0,
        "text": "...",
        "routed_experts": base64.b64encode(raw.getvalue()).decode(),
    }
    return json.dumps({"id": f"cmpl-{i}", "object": "text_completion", "choices": [choice]})


@pytest.mark.parametrize("experts", [E, 300])
def test_vllm_rows_are_decoder_layers(vibe, model, tmp_path, experts):
    """A row per decoder layer, dense ones zero (expert 0): with --model the config's MoE layers
    are kept (once "61 MoE layers, the model config 58"); without it, the layers that send every
    token to expert 0 alone are dropped, with a note."""
    if experts != E:
        cfg = {**CONFIG, "n_routed_experts": experts, "n_group": 4}
        (model / "config.json").write_text(json.dumps(cfg))
    rng = np.random.default_rng(1)
    lengths = [9, 4, 13]
    expected = np.zeros((len(MOE), experts), np.int64)
    lines = []
    for i, n in enumerate(lengths):
        picks = {layer: topk(rng, n, experts) for layer in MOE}
        arr = vllm_routed_experts(picks, n, experts)
        assert arr.dtype == (np.uint8 if experts <= 256 else np.uint16)
        for li, layer in enumerate(MOE):
            expected[li] += count(picks[layer][: n - 1], experts)
        lines.append(vllm_response(arr, i))
    (tmp_path / "responses.jsonl").write_text("\n".join(lines) + "\n")
    src = tmp_path / "responses.jsonl"

    p, warns = import_dump(
        vibe, src, tmp_path / "a.npz", "--model", model, "--batch-tokens", "1000"
    )
    assert p.layer_ids.tolist() == MOE and p.num_hidden_layers == NH
    assert np.array_equal(p.counts[0], expected) and p.num_batches == 1
    assert p.meta["mtp_layers"] == 1 and p.meta["model_type"] == "deepseek_v3"
    assert p.meta["architecture"] == "DeepseekV3ForCausalLM"
    assert warns == []

    q, warns = import_dump(vibe, src, tmp_path / "b.npz", "--batch-tokens", "1000")
    assert q.layer_ids.tolist() == MOE and q.num_hidden_layers == NH
    seen = q.num_experts  # without a config: the largest id seen + 1 (a note says so)
    assert np.array_equal(q.counts, p.counts[:, :, :seen]) and not p.counts[:, :, seen:].any()
    assert any("layers [0, 1] send every token to expert 0" in w for w in warns), warns


def test_vllm_wrong_layer_count_names_both(vibe, model, tmp_path):
    arr = np.zeros((4, NH + 2, K), np.uint8)
    arr[:, 3] = [[1, 2]] * 4
    np.save(tmp_path / "r.npy", arr)
    err = refused_import(vibe, tmp_path / "r.npy", tmp_path / "o.npz", "--model", model)
    assert "7 layers, the model has 5 decoder layers (3 of them MoE layers)" in err


# --- TensorRT-LLM --------------------------------------------------------------------------------


def test_trtllm_mtp_layers_and_raw_files(vibe, model, tmp_path):
    """MTP layer `num_hidden_layers` is dropped (with --model, and recognised without it);
    `rank{r}_raw.safetensors` files are skipped as TensorRT-LLM's own tooling skips them."""
    rng = np.random.default_rng(2)
    stats, truth = trt_run(rng, ranks=2, iters=range(100, 104))
    dump = stats.save(tmp_path / "stats", raw=True)

    p, warns = import_dump(vibe, dump, tmp_path / "a.npz", "--model", model)
    assert p.layer_ids.tolist() == MOE and p.num_hidden_layers == NH
    assert np.array_equal(p.counts, truth)
    assert p.meta["source"]["skipped_raw_files"] == [
        "rank0_raw.safetensors",
        "rank1_raw.safetensors",
    ]
    assert any("layers [5] are the MTP (next-n) layers" in w for w in warns), warns

    q, warns = import_dump(vibe, dump / "rank0.safetensors", tmp_path / "b.npz")
    assert q.layer_ids.tolist() == MOE and q.num_hidden_layers == NH  # not grown to 6
    assert np.array_equal(q.counts, truth)
    assert any("layers [5] route a different number of tokens" in w for w in warns), warns


def test_trtllm_model_without_mtp_refuses_extra_layer(vibe, model, tmp_path):
    stats, _ = trt_run(np.random.default_rng(3), ranks=1, iters=range(2))
    dump = stats.save(tmp_path / "stats")
    (model / "config.json").write_text(json.dumps({**CONFIG, "num_nextn_predict_layers": 0}))
    err = refused_import(vibe, dump, tmp_path / "o.npz", "--model", model)
    assert "layers [5] but the model has 5 decoder layers and no MTP layers" in err


def _lb_file(path: Path, phy2log: np.ndarray) -> Path:
    """A static load-balancer YAML as TensorRT-LLM's generate_eplb_config.py writes it."""
    assign = {layer: phy2log[li].tolist() for li, layer in enumerate(MOE)}
    assign[MTP] = (np.arange(phy2log.shape[1]) % E).tolist()
    doc = {"initial_global_assignments": assign, "num_slots": int(phy2log.shape[1])}
    path.write_text(yaml.safe_dump({**doc, "layer_updates_per_iter": 0}))
    return path


def test_trtllm_slot_counts_fold_through_the_placement(vibe, model, tmp_path):
    """With the load balancer on, the arrays count 12 slots of 8 experts: refused with --model
    (naming --placement), folded exactly with --placement (TensorRT-LLM's YAML, or vibe's own
    placement of the run)."""
    rng = np.random.default_rng(4)
    phy2log = np.stack([rng.permutation(np.r_[np.arange(E), rng.choice(E, 4)]) for _ in MOE])
    stats, truth = trt_run(rng, ranks=2, iters=range(7), phy2log=phy2log)
    dump = stats.save(tmp_path / "stats")
    lb = _lb_file(tmp_path / "lb.yaml", phy2log)

    err = refused_import(vibe, dump, tmp_path / "o.npz", "--model", model)
    assert "12 counts per layer but the model has 8 experts" in err and "--placement" in err

    p, _ = import_dump(vibe, dump, tmp_path / "a.npz", "--model", model, "--placement", lb)
    assert p.num_experts == E and np.array_equal(p.counts, truth)
    assert p.meta["source"]["slots_folded_with"] == "lb.yaml"
    q, _ = import_dump(vibe, dump, tmp_path / "b.npz", "--placement", lb)  # experts from the file
    assert np.array_equal(q.counts, truth)

    plan = Placement(4, 3, E, MOE, phy2log)
    export_placement(plan, [], NH, tmp_path / "plan.json")
    r, _ = import_dump(
        vibe, dump, tmp_path / "c.npz", "--model", model, "--placement", tmp_path / "plan.json"
    )
    assert np.array_equal(r.counts, truth)

    # a run without the load balancer counts experts: the file is not needed, and said so
    plain, truth2 = trt_run(rng, ranks=1, iters=range(3))
    plain_dir = plain.save(tmp_path / "plain")
    s, warns = import_dump(vibe, plain_dir, tmp_path / "d.npz", "--model", model, "--placement", lb)
    assert np.array_equal(s.counts, truth2)
    assert any("--placement is not needed" in w for w in warns), warns

    err = refused_import(vibe, tmp_path / "x.pt", tmp_path / "o.npz", "--placement", lb)
    assert "does not exist" in err
    torch = pytest.importorskip("torch")
    torch.save({"logical_count": torch.ones(1, NH, E, dtype=torch.int32)}, tmp_path / "s.pt")
    err = refused_import(vibe, tmp_path / "s.pt", tmp_path / "o.npz", "--placement", lb)
    assert "drop --placement" in err


def test_trtllm_identical_ranks_count_once(vibe, model, tmp_path):
    """Without attention DP every rank routes the same tokens: summing 8 rank files would give
    8x the truth."""
    stats, truth = trt_run(np.random.default_rng(5), ranks=8, iters=range(4), same_tokens=True)
    dump = stats.save(tmp_path / "stats")
    p, warns = import_dump(vibe, dump, tmp_path / "a.npz", "--model", model)
    assert np.array_equal(p.counts, truth)
    assert any("8 rank files hold identical counts" in w for w in warns), warns


# --- SGLang --------------------------------------------------------------------------------------

torch_or_skip = pytest.importorskip


def test_sglang_stat_dump_warns_about_ep_copies(vibe, model, tmp_path):
    """`_StatAccumulator.dump`: rank 0 writes expert_distribution_recorder_{time}.pt with the
    all-reduced `logical_count` int32 [buffer_size, num_hidden_layers, experts]."""
    torch = torch_or_skip("torch")
    rng = np.random.default_rng(6)
    buffer = np.zeros((6, NH, E), np.int32)  # a ring buffer of 6 passes, 4 of them filled
    for step in range(4):
        for layer in MOE:
            buffer[step, layer] = count(topk(rng, 5))
    torch.save(
        {
            "rank": 0,
            "logical_count": torch.from_numpy(buffer),
            "average_utilization_rate_over_window": None,
        },
        tmp_path / "expert_distribution_recorder_1767000000.123.pt",
    )
    p, warns = import_dump(
        vibe, tmp_path, tmp_path.with_name(tmp_path.name + "-a.npz"), "--model", model
    )
    assert p.layer_ids.tolist() == MOE and np.array_equal(p.counts, buffer[:4][:, MOE])
    assert any("EP times the tokens served" in w for w in warns), warns


def _sglang_per_pass(folder, rank, passes, p2l):
    torch = torch_or_skip("torch")
    records = [
        {
            "forward_pass_id": fp,
            "rank": rank,
            "gatherer_key": "primary",
            "global_physical_count": torch.from_numpy(count.astype(np.int32)),
        }
        for fp, count in passes
    ]
    torch.save(
        {"records": records, "last_physical_to_logical_map": torch.from_numpy(p2l)},
        folder / f"expert_distribution_recorder_1767000000.5_{rank}.pt",
    )


@pytest.mark.parametrize("a2a", ["none", "deepep"])
def test_sglang_per_pass_ranks(vibe, model, tmp_path, a2a):
    """per_pass: each rank writes its records. Without an a2a backend every rank counts the same
    tokens over all slots (`_SelectExpertsSinglePassGatherer`): counted once. With DeepEP each
    rank counts the tokens its own slots received: summed."""
    rng = np.random.default_rng(7)
    ranks, slots = 4, 12
    p2l = np.tile(np.r_[np.arange(E), [0, 1, 2, 3]], (NH, 1)).astype(np.int64)
    truth = np.zeros((3, len(MOE), E), np.int64)
    per_rank: list[list[tuple[int, np.ndarray]]] = [[] for _ in range(ranks)]
    for fp in range(3):
        global_count = np.zeros((NH, slots), np.int64)
        for li, layer in enumerate(MOE):
            picks = topk(rng, 9)
            slots_of = route(picks, p2l[layer])
            global_count[layer] = np.bincount(slots_of.reshape(-1), minlength=slots)
            truth[fp, li] = count(picks)
        for rank in range(ranks):
            if a2a == "none":
                per_rank[rank].append((fp, global_count))
            else:
                local = np.zeros_like(global_count)
                part = slice(rank * 3, rank * 3 + 3)
                local[:, part] = global_count[:, part]
                per_rank[rank].append((fp, local))
    for rank in range(ranks):
        _sglang_per_pass(tmp_path, rank, per_rank[rank], p2l)
    p, warns = import_dump(
        vibe, tmp_path, tmp_path.with_name(tmp_path.name + "-a.npz"), "--model", model
    )
    assert np.array_equal(p.counts, truth)
    once = any("counted once" in w for w in warns)
    assert once == (a2a == "none"), warns


# --- dumps of another model, or corrupt: refused -------------------------------------------------


def test_vllm_top_k_other_than_the_models_is_refused(vibe, model, tmp_path):
    """[tokens, layers, 4] picks per token for a model whose top-k is 2: the profile would say
    top-k 2 and count 4 picks a token."""
    rng = np.random.default_rng(10)
    arr = np.zeros((50, NH, 4), np.uint8)
    for layer in MOE:
        arr[:, layer] = topk(rng, 50, k=4)
    np.save(tmp_path / "v.npy", arr)
    err = refused_import(vibe, tmp_path / "v.npy", tmp_path / "o.npz", "--quiet", "--model", model)
    assert err.count("\n") == 1 and "error: " in err
    assert "4 experts (top-k 4)" in err and "top-k is 2" in err and "this model?" in err


def test_trtllm_top_k_other_than_the_models_is_refused(vibe, model, tmp_path):
    stats, _ = trt_run(np.random.default_rng(11), ranks=1, iters=range(2))
    dump = stats.save(tmp_path / "stats")
    (dump / "meta_info.json").write_text(json.dumps({"num_experts": E, "num_experts_per_token": 8}))
    err = refused_import(vibe, dump, tmp_path / "o.npz", "--quiet", "--model", model)
    assert err.count("\n") == 1
    assert "top-k 8" in err and "top-k is 2" in err and "this model?" in err


def test_trtllm_layer_beyond_the_mtp_layers_is_refused(vibe, model, tmp_path):
    """Layer 5 is the model's one MTP layer (num_hidden_layers + 0); layer 9 is no layer of it."""
    rng = np.random.default_rng(12)
    stats, _ = trt_run(rng, ranks=1, iters=range(2), mtp=False)
    for it in range(2):
        stats.add(0, it, 9, topk(rng, 3))
    dump = stats.save(tmp_path / "stats")
    err = refused_import(vibe, dump, tmp_path / "o.npz", "--quiet", "--model", model)
    assert err.count("\n") == 1
    assert "layers [9] but the model has 5 decoder layers and 1 MTP layers" in err
    assert "this model?" in err


@pytest.mark.parametrize("engine", ["sglang", "vllm"])
def test_counts_on_a_dense_layer_are_refused(vibe, model, tmp_path, engine):
    """Layer 0 is dense (first_k_dense_replace 2): SGLang leaves it zero and vLLM fills it with
    expert 0; routed counts there mean the dump is of another model."""
    rng = np.random.default_rng(13)
    if engine == "sglang":
        torch = torch_or_skip("torch")
        buffer = np.zeros((3, NH, E), np.int32)
        for layer in [0, *MOE]:
            buffer[:, layer] = count(topk(rng, 5))
        src = tmp_path / "expert_distribution_recorder_1767000000.1.pt"
        torch.save({"rank": 0, "logical_count": torch.from_numpy(buffer)}, src)
    else:
        arr = vllm_routed_experts({layer: topk(rng, 9) for layer in [0, *MOE]}, 9)
        src = tmp_path / "r.npy"
        np.save(src, arr)
    err = refused_import(vibe, src, tmp_path / "o.npz", "--quiet", "--model", model)
    assert err.count("\n") == 1
    assert "counts for decoder layers [0], which are dense" in err


def test_vllm_expert_listed_twice_for_a_token_is_refused(vibe, model, tmp_path):
    """All zeros: every token picks expert 0 K times in the MoE layers too. Dense layers read
    that way by design (and are dropped), MoE layers never."""
    np.save(tmp_path / "z.npy", np.zeros((10, NH, K), np.uint8))
    err = refused_import(vibe, tmp_path / "z.npy", tmp_path / "o.npz", "--quiet", "--model", model)
    assert err.count("\n") == 1
    assert "same expert twice for one token in layers [2, 3, 4]" in err
    err = refused_import(vibe, tmp_path / "z.npy", tmp_path / "o.npz", "--quiet")  # no --model
    assert "same expert twice" in err
