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
from typing import Any

import numpy as np
import pytest
import yaml
from placement_inputs import load_json, placement_map, solve_args, write_gpus, write_routing

from vibe_plan.artifacts import Placement
from vibe_plan.artifacts.routing_profile import load_routing_profile
from vibe_plan.engines import export_placement, load_placement
from vibe_plan.errors import VibeError

E, K = 8, 2  # routed experts, top-k
NH = 5  # decoder layers
MOE = [2, 3, 4]  # first_k_dense_replace = 2
MTP = NH  # DeepSeek-style next-n layer: TensorRT-LLM numbers it num_hidden_layers + 0
CONFIG: dict[str, Any] = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "hidden_size": 64,
    "intermediate_size": 256,
    "moe_intermediate_size": 128,
    "n_routed_experts": E,
    "num_experts_per_tok": K,
    "num_hidden_layers": NH,
    "first_k_dense_replace": 2,
    "moe_layer_freq": 1,
    "n_group": 4,
    "topk_group": 2,
    "n_shared_experts": 1,
    "num_nextn_predict_layers": 1,
    "hidden_act": "silu",
}


@pytest.fixture
def model(tmp_path) -> Path:
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(CONFIG))
    return folder


def _import(vibe, source, out, *extra) -> tuple[Any, list[str]]:
    r = vibe("import-routing", source, "--out", out, "--quiet", *extra)
    assert r.code == 0, r.err
    warnings = [line for line in r.err.splitlines() if line.startswith("warning: ")]
    return load_routing_profile(out), warnings


def _refused(vibe, source, out, *extra) -> str:
    r = vibe("import-routing", source, "--out", out, *extra)
    assert r.code == 2 and r.err.startswith("error: "), (r.code, r.err)
    assert not Path(out).exists()
    return r.err


def _topk(rng: np.random.Generator, tokens: int, experts: int = E, k: int = K) -> np.ndarray:
    """A router's picks: `k` distinct experts per token, int [tokens, k], skewed to low ids."""
    w = np.exp(-0.3 * np.arange(experts))
    return np.stack([rng.choice(experts, k, replace=False, p=w / w.sum()) for _ in range(tokens)])


def _count(picks: np.ndarray, experts: int = E) -> np.ndarray:
    return np.bincount(picks.reshape(-1), minlength=experts).astype(np.int64)


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
        picks = {layer: _topk(rng, n, experts) for layer in MOE}
        arr = vllm_routed_experts(picks, n, experts)
        assert arr.dtype == (np.uint8 if experts <= 256 else np.uint16)
        for li, layer in enumerate(MOE):
            expected[li] += _count(picks[layer][: n - 1], experts)
        lines.append(vllm_response(arr, i))
    (tmp_path / "responses.jsonl").write_text("\n".join(lines) + "\n")
    src = tmp_path / "responses.jsonl"

    p, warns = _import(vibe, src, tmp_path / "a.npz", "--model", model, "--batch-tokens", "1000")
    assert p.layer_ids.tolist() == MOE and p.num_hidden_layers == NH
    assert np.array_equal(p.counts[0], expected) and p.num_batches == 1
    assert p.meta["mtp_layers"] == 1 and p.meta["model_type"] == "deepseek_v3"
    assert p.meta["architecture"] == "DeepseekV3ForCausalLM"
    assert warns == []

    q, warns = _import(vibe, src, tmp_path / "b.npz", "--batch-tokens", "1000")
    assert q.layer_ids.tolist() == MOE and q.num_hidden_layers == NH
    seen = q.num_experts  # without a config: the largest id seen + 1 (a note says so)
    assert np.array_equal(q.counts, p.counts[:, :, :seen]) and not p.counts[:, :, seen:].any()
    assert any("layers [0, 1] send every token to expert 0" in w for w in warns), warns


def test_vllm_wrong_layer_count_names_both(vibe, model, tmp_path):
    arr = np.zeros((4, NH + 2, K), np.uint8)
    arr[:, 3] = [[1, 2]] * 4
    np.save(tmp_path / "r.npy", arr)
    err = _refused(vibe, tmp_path / "r.npy", tmp_path / "o.npz", "--model", model)
    assert "7 layers, the model has 5 decoder layers (3 of them MoE layers)" in err


# --- TensorRT-LLM --------------------------------------------------------------------------------


class TrtStats:
    """What `ExpertStatistic` writes for a recorded iteration range: per rank a dict of
    "{iter}_{layer}" -> bincount(token_selected_experts (or slots), minlength=expert_count),
    summed over the layer's calls in the iteration; rank 0 writes meta_info.json from the first
    call (`num_experts` = the `expert_count` passed: num_slots with a load balancer)."""

    def __init__(self, ranks: int, width: int) -> None:
        self.records: list[dict[str, np.ndarray]] = [{} for _ in range(ranks)]
        self.width = width

    def add(self, rank: int, it: int, layer: int, selected: np.ndarray) -> None:
        counts = np.bincount(selected.reshape(-1), minlength=self.width).astype(np.int64)
        key = f"{it}_{layer}"
        rec = self.records[rank]
        rec[key] = rec[key] + counts if key in rec else counts

    def save(self, folder: Path, raw: bool = False) -> Path:
        from safetensors.numpy import save_file

        folder.mkdir(exist_ok=True)
        (folder / "meta_info.json").write_text(
            json.dumps({"num_experts": self.width, "num_experts_per_token": K})
        )
        for rank, rec in enumerate(self.records):
            save_file(rec, str(folder / f"rank{rank}.safetensors"))
            if raw:  # some revisions keep the raw ids too: [tokens, top_k] per key
                ids = {k: np.zeros((3, K), np.int32) for k in rec}
                save_file(ids, str(folder / f"rank{rank}_raw.safetensors"))
        return folder


def _trt_run(rng, ranks, iters, phy2log=None, mtp=True, same_tokens=False):
    """Record `iters` iterations on `ranks` attention-DP ranks (each its own tokens), or the same
    tokens on every rank (`same_tokens`: no attention DP). With `phy2log` [layers, slots] the
    load balancer routes: each expert's occurrences go round robin over its replicas. The MTP
    layer routes the draft tokens (fewer than the decoder's). Returns the stats and the true
    expert counts [iters, MoE layers, experts]."""
    width = E if phy2log is None else phy2log.shape[1]
    stats = TrtStats(ranks, width)
    truth = np.zeros((len(iters), len(MOE), E), np.int64)
    for bi, it in enumerate(iters):
        shared = {layer: _topk(rng, 11) for layer in MOE}
        shared_draft = _topk(rng, 2)
        for rank in range(ranks):
            tokens = 11 if same_tokens else int(rng.integers(3, 20))
            for li, layer in enumerate(MOE):
                picks = shared[layer] if same_tokens else _topk(rng, tokens)
                if rank == 0 or not same_tokens:
                    truth[bi, li] += _count(picks)
                selected = picks if phy2log is None else _route(picks, phy2log[li])
                stats.add(rank, it, layer, selected)
            if mtp:
                draft = shared_draft if same_tokens else _topk(rng, 2)
                stats.add(rank, it, MTP, draft if phy2log is None else _route(draft, phy2log[0]))
    return stats, truth


def _route(picks: np.ndarray, row: np.ndarray) -> np.ndarray:
    """Expert ids -> slot ids, the n-th occurrence of an expert to its replica n % count
    (`moeComputeRouteKernel`, static routing)."""
    seen: dict[int, int] = {}
    out = np.empty_like(picks)
    for idx, e in np.ndenumerate(picks):
        replicas = np.flatnonzero(row == e)
        out[idx] = replicas[seen.get(int(e), 0) % len(replicas)]
        seen[int(e)] = seen.get(int(e), 0) + 1
    return out


def test_trtllm_mtp_layers_and_raw_files(vibe, model, tmp_path):
    """MTP layer `num_hidden_layers` is dropped (with --model, and recognised without it);
    `rank{r}_raw.safetensors` files are skipped as TensorRT-LLM's own tooling skips them."""
    rng = np.random.default_rng(2)
    stats, truth = _trt_run(rng, ranks=2, iters=range(100, 104))
    dump = stats.save(tmp_path / "stats", raw=True)

    p, warns = _import(vibe, dump, tmp_path / "a.npz", "--model", model)
    assert p.layer_ids.tolist() == MOE and p.num_hidden_layers == NH
    assert np.array_equal(p.counts, truth)
    assert p.meta["source"]["skipped_raw_files"] == [
        "rank0_raw.safetensors",
        "rank1_raw.safetensors",
    ]
    assert any("layers [5] are the MTP (next-n) layers" in w for w in warns), warns

    q, warns = _import(vibe, dump / "rank0.safetensors", tmp_path / "b.npz")
    assert q.layer_ids.tolist() == MOE and q.num_hidden_layers == NH  # not grown to 6
    assert np.array_equal(q.counts, truth)
    assert any("layers [5] route a different number of tokens" in w for w in warns), warns


def test_trtllm_model_without_mtp_refuses_extra_layer(vibe, model, tmp_path):
    stats, _ = _trt_run(np.random.default_rng(3), ranks=1, iters=range(2))
    dump = stats.save(tmp_path / "stats")
    (model / "config.json").write_text(json.dumps({**CONFIG, "num_nextn_predict_layers": 0}))
    err = _refused(vibe, dump, tmp_path / "o.npz", "--model", model)
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
    stats, truth = _trt_run(rng, ranks=2, iters=range(7), phy2log=phy2log)
    dump = stats.save(tmp_path / "stats")
    lb = _lb_file(tmp_path / "lb.yaml", phy2log)

    err = _refused(vibe, dump, tmp_path / "o.npz", "--model", model)
    assert "12 counts per layer but the model has 8 experts" in err and "--placement" in err

    p, _ = _import(vibe, dump, tmp_path / "a.npz", "--model", model, "--placement", lb)
    assert p.num_experts == E and np.array_equal(p.counts, truth)
    assert p.meta["source"]["slots_folded_with"] == "lb.yaml"
    q, _ = _import(vibe, dump, tmp_path / "b.npz", "--placement", lb)  # experts from the file
    assert np.array_equal(q.counts, truth)

    plan = Placement(4, 3, E, MOE, phy2log)
    export_placement(plan, [], NH, tmp_path / "plan.json")
    r, _ = _import(
        vibe, dump, tmp_path / "c.npz", "--model", model, "--placement", tmp_path / "plan.json"
    )
    assert np.array_equal(r.counts, truth)

    # a run without the load balancer counts experts: the file is not needed, and said so
    plain, truth2 = _trt_run(rng, ranks=1, iters=range(3))
    plain_dir = plain.save(tmp_path / "plain")
    s, warns = _import(vibe, plain_dir, tmp_path / "d.npz", "--model", model, "--placement", lb)
    assert np.array_equal(s.counts, truth2)
    assert any("--placement is not needed" in w for w in warns), warns

    err = _refused(vibe, tmp_path / "x.pt", tmp_path / "o.npz", "--placement", lb)
    assert "does not exist" in err
    torch = pytest.importorskip("torch")
    torch.save({"logical_count": torch.ones(1, NH, E, dtype=torch.int32)}, tmp_path / "s.pt")
    err = _refused(vibe, tmp_path / "s.pt", tmp_path / "o.npz", "--placement", lb)
    assert "drop --placement" in err


def test_trtllm_identical_ranks_count_once(vibe, model, tmp_path):
    """Without attention DP every rank routes the same tokens: summing 8 rank files would give
    8x the truth."""
    stats, truth = _trt_run(np.random.default_rng(5), ranks=8, iters=range(4), same_tokens=True)
    dump = stats.save(tmp_path / "stats")
    p, warns = _import(vibe, dump, tmp_path / "a.npz", "--model", model)
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
            buffer[step, layer] = _count(_topk(rng, 5))
    torch.save(
        {
            "rank": 0,
            "logical_count": torch.from_numpy(buffer),
            "average_utilization_rate_over_window": None,
        },
        tmp_path / "expert_distribution_recorder_1767000000.123.pt",
    )
    p, warns = _import(
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
            picks = _topk(rng, 9)
            slots_of = _route(picks, p2l[layer])
            global_count[layer] = np.bincount(slots_of.reshape(-1), minlength=slots)
            truth[fp, li] = _count(picks)
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
    p, warns = _import(
        vibe, tmp_path, tmp_path.with_name(tmp_path.name + "-a.npz"), "--model", model
    )
    assert np.array_equal(p.counts, truth)
    once = any("counted once" in w for w in warns)
    assert once == (a2a == "none"), warns


# --- exports: TensorRT-LLM loads what vibe writes -------------------------------------------------


def trtllm_load(
    text: str,
    *,
    num_experts: int,
    moe_layers: list[int],
    num_hidden_layers: int,
    mtp_layers: int,
    ep_size: int,
) -> dict[int, list[int]]:
    """The checks TensorRT-LLM applies when it loads `moe_config.load_balancer: PATH`, in order:

    - `TorchLlmArgs.validate_load_balancer`: `yaml.safe_load`, then `MoeLoadBalancerConfig(**cfg)`,
      a strict pydantic model: only `num_slots`, `initial_global_assignments`
      (Dict[int, List[int]]) and `layer_updates_per_iter` (int);
    - `MoeLoadBalancerConfig.setup(ep_rank, ep_size)`: `num_slots` set and divisible by ep_size;
    - every MoE layer the model builds, the MTP layers `num_hidden_layers + i` included (the MTP
      module passes `layer_idx + start_layer_idx`), calls
      `get_layer_initial_global_assignments(layer_idx)`: KeyError when the key is absent,
      ValueError when the row's length is not `num_slots`;
    - `MoE._init_load_balancer`: the row is a list, `num_slots >= num_experts`, and
      `set(row) == set(range(num_experts))` (every expert at least once, no other id); each rank
      takes `row[slot_start:slot_end]`, `num_slots // ep_size` slots;
    - `MoeLoadBalancer.is_static_routing`: `layer_updates_per_iter == 0` keeps the rows fixed.
    """
    cfg = yaml.safe_load(text)
    assert isinstance(cfg, dict)
    assert set(cfg) <= {"num_slots", "initial_global_assignments", "layer_updates_per_iter"}
    num_slots = cfg["num_slots"]
    assign = cfg["initial_global_assignments"]
    assert type(num_slots) is int and type(cfg.get("layer_updates_per_iter", 0)) is int
    assert isinstance(assign, dict)
    for key, row in assign.items():
        assert type(key) is int and isinstance(row, list) and all(type(x) is int for x in row)
    assert cfg.get("layer_updates_per_iter", 0) == 0, "static placement"
    assert num_slots % ep_size == 0
    per_rank = num_slots // ep_size
    registered = [*moe_layers, *range(num_hidden_layers, num_hidden_layers + mtp_layers)]
    for layer_idx in registered:
        if layer_idx not in assign:
            raise KeyError(f"layer_idx {layer_idx} not found in `initial_global_assignments`.")
        row = assign[layer_idx]
        if len(row) != num_slots:
            raise ValueError(f"Assignment length ({len(row)}) for layer {layer_idx}")
        assert num_slots >= num_experts
        assert set(row) == set(range(num_experts)), layer_idx
        for ep_rank in range(ep_size):
            assert len(row[ep_rank * per_rank : (ep_rank + 1) * per_rank]) == per_rank
    return assign


def test_trtllm_export_with_mtp_loads(vibe, model, tmp_path):
    """Import with --model (meta.mtp_layers = 1), solve, export: the file TensorRT-LLM reads has
    a row for every MoE layer and for MTP layer 5; --mtp-layers overrides the count."""
    stats, _ = _trt_run(np.random.default_rng(8), ranks=2, iters=range(6))
    dump = stats.save(tmp_path / "stats")
    routing = tmp_path / "routing.npz"
    _import(vibe, dump, routing, "--model", model)
    gpus = write_gpus(tmp_path / "gpus.yaml", [1.0, 1.1, 1.2, 1.3])

    def solve(name: str, *extra: Any) -> tuple[str, Any]:
        out = tmp_path / name
        r = vibe(
            *solve_args(
                gpus,
                routing,
                out / "p.json",
                "-r",
                4,
                *extra,
                "--export",
                f"trtllm={out / 't.yaml'}",
                "--export",
                f"eplb={out / 'e.json'}",
                "--export",
                f"sglang={out / 's.json'}",
            )
        )
        assert r.code == 0, r.err
        return (out / "t.yaml").read_text(), r

    (tmp_path / "a").mkdir()
    text, r = solve("a")
    assert "warning" not in r.err
    assign = trtllm_load(
        text, num_experts=E, moe_layers=MOE, num_hidden_layers=NH, mtp_layers=1, ep_size=4
    )
    assert sorted(assign) == [*MOE, MTP]
    m = placement_map(tmp_path / "a" / "p.json")
    for li, layer in enumerate(MOE):
        assert assign[layer] == m[li].tolist()
    with pytest.raises(KeyError, match="layer_idx 6"):  # a model served with 2 MTP layers
        trtllm_load(
            text, num_experts=E, moe_layers=MOE, num_hidden_layers=NH, mtp_layers=2, ep_size=4
        )

    (tmp_path / "b").mkdir()
    text, _ = solve("b", "--mtp-layers", 2)
    assert sorted(
        trtllm_load(
            text, num_experts=E, moe_layers=MOE, num_hidden_layers=NH, mtp_layers=2, ep_size=4
        )
    ) == [*MOE, MTP, MTP + 1]
    (tmp_path / "c").mkdir()
    text, _ = solve("c", "--mtp-layers", 0)
    assert sorted(yaml.safe_load(text)["initial_global_assignments"]) == MOE

    # vibe evaluate reads the file back: the MTP row is not scored and not warned about
    folder = tmp_path / "a"
    r = vibe("evaluate", "--gpus", gpus, "--routing", routing, folder / "p.json", folder / "t.yaml")
    assert r.code == 0, r.err
    assert "not scored" not in r.err

    bad = vibe(*solve_args(gpus, routing, tmp_path / "x.json", "--mtp-layers", -1))
    assert bad.code == 2 and "--mtp-layers" in bad.err and not (tmp_path / "x.json").exists()


def test_trtllm_export_full_size_deepseek(tmp_path):
    """DeepSeek-V3 at EP32 with 32 redundant slots and its one MTP layer: 59 rows of 288 slots."""
    rng = np.random.default_rng(9)
    layers = list(range(3, 61))
    rows = np.stack([rng.permutation(np.r_[np.arange(256), rng.choice(256, 32)]) for _ in layers])
    p = Placement(32, 9, 256, layers, rows)
    export_placement(p, [("trtllm", tmp_path / "t.yaml")], 61, mtp_layers=1)
    assign = trtllm_load(
        (tmp_path / "t.yaml").read_text(),
        num_experts=256,
        moe_layers=layers,
        num_hidden_layers=61,
        mtp_layers=1,
        ep_size=32,
    )
    assert len(assign) == 59 and assign[61] == (np.arange(288) % 256).tolist()


@pytest.mark.parametrize(
    ("meta", "warned"),
    [
        ({"model_type": "deepseek_v3", "architecture": "DeepseekV3ForCausalLM"}, False),
        ({"model_type": "kimi_k2"}, False),
        ({"model_type": "qwen3_moe"}, False),
        ({"model_type": "glm4_moe", "architecture": "Glm4MoeForCausalLM"}, True),
        ({"model_type": "deepseek_v2"}, True),
        ({}, False),  # no model named: nothing to say
    ],
)
def test_trtllm_export_warns_for_unsupported_architectures(vibe, tmp_path, meta, warned):
    gpus = write_gpus(tmp_path / "gpus.yaml", [1.0, 1.1, 1.2, 1.3])
    routing = write_routing(tmp_path / "r.npz", num_hidden_layers=5, **meta)
    r = vibe(
        *solve_args(gpus, routing, tmp_path / "p.json", "--export", f"trtllm={tmp_path / 't.yaml'}")
    )
    assert r.code == 0, r.err
    assert ("applies moe_config.load_balancer only to" in r.err) == warned, r.err


# --- exports: EPLB-style tensors as vLLM pads them ---------------------------------------------


def test_eplb_log2phy_is_padded_to_redundant_plus_one(tmp_path):
    """`log2phy` [L, E, R + 1], slots ascending then -1 (vLLM's `logical_to_physical_map`, EPLB's
    `maxlogcnt`); the reader takes that, the largest replica count as width, or vLLM's 1024."""
    phy2log = np.array([[0, 1, 2, 3, 0, 1], [3, 2, 1, 0, 1, 3]])  # R = 2, at most 2 replicas
    p = Placement(2, 3, 4, [1, 2], phy2log)
    export_placement(p, [("eplb", tmp_path / "e.json")], 3)
    doc = load_json(tmp_path / "e.json")
    log2phy = np.asarray(doc["log2phy"])
    assert log2phy.shape == (2, 4, 2 + 1)
    assert log2phy[0, 0].tolist() == [0, 4, -1] and log2phy[0, 2].tolist() == [2, -1, -1]
    assert log2phy[1, 3].tolist() == [0, 5, -1] and log2phy[1, 1].tolist() == [2, 4, -1]
    for width in (2, 1024):
        other = np.full((2, 4, width), -1)
        other[:, :, : min(width, 3)] = log2phy[:, :, : min(width, 3)]
        (tmp_path / "w.json").write_text(json.dumps({**doc, "log2phy": other.tolist()}))
        back, _ = load_placement(tmp_path / "w.json", 2, [1, 2], 4)
        assert np.array_equal(back.phy2log, phy2log)
    holes = log2phy.copy()
    holes[0, 0] = [0, -1, 4]  # engines take the first logcnt entries: a -1 among them is wrong
    (tmp_path / "h.json").write_text(json.dumps({**doc, "log2phy": holes.tolist()}))
    with pytest.raises(VibeError, match=r"log2phy\[0\]\[0\]"):
        load_placement(tmp_path / "h.json", 2, [1, 2], 4)
    narrow = log2phy[:, :, :1]  # narrower than the replicas: slots go missing
    (tmp_path / "n.json").write_text(json.dumps({**doc, "log2phy": narrow.tolist()}))
    with pytest.raises(VibeError, match="inconsistent"):
        load_placement(tmp_path / "n.json", 2, [1, 2], 4)


# --- dumps of another model, or corrupt: refused -------------------------------------------------


def test_vllm_top_k_other_than_the_models_is_refused(vibe, model, tmp_path):
    """[tokens, layers, 4] picks per token for a model whose top-k is 2: the profile would say
    top-k 2 and count 4 picks a token."""
    rng = np.random.default_rng(10)
    arr = np.zeros((50, NH, 4), np.uint8)
    for layer in MOE:
        arr[:, layer] = _topk(rng, 50, k=4)
    np.save(tmp_path / "v.npy", arr)
    err = _refused(vibe, tmp_path / "v.npy", tmp_path / "o.npz", "--quiet", "--model", model)
    assert err.count("\n") == 1 and "error: " in err
    assert "4 experts (top-k 4)" in err and "top-k is 2" in err and "this model?" in err


def test_trtllm_top_k_other_than_the_models_is_refused(vibe, model, tmp_path):
    stats, _ = _trt_run(np.random.default_rng(11), ranks=1, iters=range(2))
    dump = stats.save(tmp_path / "stats")
    (dump / "meta_info.json").write_text(json.dumps({"num_experts": E, "num_experts_per_token": 8}))
    err = _refused(vibe, dump, tmp_path / "o.npz", "--quiet", "--model", model)
    assert err.count("\n") == 1
    assert "top-k 8" in err and "top-k is 2" in err and "this model?" in err


def test_trtllm_layer_beyond_the_mtp_layers_is_refused(vibe, model, tmp_path):
    """Layer 5 is the model's one MTP layer (num_hidden_layers + 0); layer 9 is no layer of it."""
    rng = np.random.default_rng(12)
    stats, _ = _trt_run(rng, ranks=1, iters=range(2), mtp=False)
    for it in range(2):
        stats.add(0, it, 9, _topk(rng, 3))
    dump = stats.save(tmp_path / "stats")
    err = _refused(vibe, dump, tmp_path / "o.npz", "--quiet", "--model", model)
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
            buffer[:, layer] = _count(_topk(rng, 5))
        src = tmp_path / "expert_distribution_recorder_1767000000.1.pt"
        torch.save({"rank": 0, "logical_count": torch.from_numpy(buffer)}, src)
    else:
        arr = vllm_routed_experts({layer: _topk(rng, 9) for layer in [0, *MOE]}, 9)
        src = tmp_path / "r.npy"
        np.save(src, arr)
    err = _refused(vibe, src, tmp_path / "o.npz", "--quiet", "--model", model)
    assert err.count("\n") == 1
    assert "counts for decoder layers [0], which are dense" in err


def test_vllm_expert_listed_twice_for_a_token_is_refused(vibe, model, tmp_path):
    """All zeros: every token picks expert 0 K times in the MoE layers too. Dense layers read
    that way by design (and are dropped), MoE layers never."""
    np.save(tmp_path / "z.npy", np.zeros((10, NH, K), np.uint8))
    err = _refused(vibe, tmp_path / "z.npy", tmp_path / "o.npz", "--quiet", "--model", model)
    assert err.count("\n") == 1
    assert "same expert twice for one token in layers [2, 3, 4]" in err
    err = _refused(vibe, tmp_path / "z.npy", tmp_path / "o.npz", "--quiet")  # no --model
    assert "same expert twice" in err
