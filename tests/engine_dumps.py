"""Engine dumps built the way each engine's code writes them, from tokens whose expert picks are
known, for the round-trip tests (test_engine_imports.py, test_engine_exports.py): a tiny
DeepSeek-V3-shaped config, router picks, and TensorRT-LLM's `ExpertStatistic` files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vibe_plan.artifacts.routing_profile import load_routing_profile

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


def write_model(tmp_path: Path) -> Path:
    """A checkpoint folder holding only CONFIG (import-routing reads nothing else)."""
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(CONFIG))
    return folder


def import_dump(vibe, source, out, *extra) -> tuple[Any, list[str]]:
    r = vibe("import-routing", source, "--out", out, "--quiet", *extra)
    assert r.code == 0, r.err
    warnings = [line for line in r.err.splitlines() if line.startswith("warning: ")]
    return load_routing_profile(out), warnings


def refused_import(vibe, source, out, *extra) -> str:
    r = vibe("import-routing", source, "--out", out, *extra)
    assert r.code == 2 and r.err.startswith("error: "), (r.code, r.err)
    assert not Path(out).exists()
    return r.err


def topk(rng: np.random.Generator, tokens: int, experts: int = E, k: int = K) -> np.ndarray:
    """A router's picks: `k` distinct experts per token, int [tokens, k], skewed to low ids."""
    w = np.exp(-0.3 * np.arange(experts))
    return np.stack([rng.choice(experts, k, replace=False, p=w / w.sum()) for _ in range(tokens)])


def count(picks: np.ndarray, experts: int = E) -> np.ndarray:
    return np.bincount(picks.reshape(-1), minlength=experts).astype(np.int64)


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


def trt_run(rng, ranks, iters, phy2log=None, mtp=True, same_tokens=False):
    """Record `iters` iterations on `ranks` attention-DP ranks (each its own tokens), or the same
    tokens on every rank (`same_tokens`: no attention DP). With `phy2log` [layers, slots] the
    load balancer routes: each expert's occurrences go round robin over its replicas. The MTP
    layer routes the draft tokens (fewer than the decoder's). Returns the stats and the true
    expert counts [iters, MoE layers, experts]."""
    width = E if phy2log is None else phy2log.shape[1]
    stats = TrtStats(ranks, width)
    truth = np.zeros((len(iters), len(MOE), E), np.int64)
    for bi, it in enumerate(iters):
        shared = {layer: topk(rng, 11) for layer in MOE}
        shared_draft = topk(rng, 2)
        for rank in range(ranks):
            tokens = 11 if same_tokens else int(rng.integers(3, 20))
            for li, layer in enumerate(MOE):
                picks = shared[layer] if same_tokens else topk(rng, tokens)
                if rank == 0 or not same_tokens:
                    truth[bi, li] += count(picks)
                selected = picks if phy2log is None else route(picks, phy2log[li])
                stats.add(rank, it, layer, selected)
            if mtp:
                draft = shared_draft if same_tokens else topk(rng, 2)
                stats.add(rank, it, MTP, draft if phy2log is None else route(draft, phy2log[0]))
    return stats, truth


def route(picks: np.ndarray, row: np.ndarray) -> np.ndarray:
    """Expert ids -> slot ids, the n-th occurrence of an expert to its replica n % count
    (`moeComputeRouteKernel`, static routing)."""
    seen: dict[int, int] = {}
    out = np.empty_like(picks)
    for idx, e in np.ndenumerate(picks):
        replicas = np.flatnonzero(row == e)
        out[idx] = replicas[seen.get(int(e), 0) % len(replicas)]
        seen[int(e)] = seen.get(int(e), 0) + 1
    return out
