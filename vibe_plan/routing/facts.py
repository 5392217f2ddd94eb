"""MoE facts read from a checkpoint's config.json (no torch): experts, top-k, groups, MoE layers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vibe_plan.errors import VibeError

# transformers' own order of precedence for the routed-expert count.
EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")


@dataclass
class MoeFacts:
    model: str
    model_type: str
    num_experts: int
    top_k: int
    num_hidden_layers: int
    moe_layers: list[int]  # absolute decoder-layer ids that have routed experts
    num_groups: int | None  # expert groups of group-limited routers (DeepSeek `n_group`)
    topk_group: int | None
    shared_experts: int  # experts every token goes through; not placed by load


def read_config(model_dir: str | Path) -> dict[str, Any]:
    """config.json of a local checkpoint folder, with a clear error for each way it can be wrong."""
    folder = Path(model_dir)
    if not folder.exists():
        raise VibeError(f"model folder {folder} does not exist; pass a local checkpoint folder")
    if not folder.is_dir():
        raise VibeError(f"--model {folder} is not a folder; pass the checkpoint folder itself")
    cfg = folder / "config.json"
    if not cfg.is_file():
        raise VibeError(f"{folder} has no config.json; is this a Hugging Face checkpoint folder?")
    try:
        data = json.loads(cfg.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise VibeError(f"{cfg}: cannot read it as JSON ({e})") from None
    if not isinstance(data, dict):
        raise VibeError(f"{cfg}: must hold a JSON object")
    return data


def text_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Multimodal checkpoints (Llama-4) keep the decoder's keys under `text_config`."""
    inner = cfg.get("text_config")
    if isinstance(inner, dict) and not any(k in cfg for k in EXPERT_KEYS):
        return {**inner, "model_type": inner.get("model_type", cfg.get("model_type"))}
    return cfg


def moe_facts(cfg: dict[str, Any], name: str, where: str = "config.json") -> MoeFacts:
    tc = text_config(cfg)
    num_experts = next((int(tc[k]) for k in EXPERT_KEYS if tc.get(k)), 0)
    if num_experts <= 0:
        raise VibeError(
            f"{where}: no routed experts ({', '.join(EXPERT_KEYS)} absent or 0); "
            "this is not a Mixture-of-Experts model"
        )
    top_k = int(tc.get("num_experts_per_tok") or tc.get("experts_per_token") or 0)
    if top_k <= 0 or top_k > num_experts:
        raise VibeError(f"{where}: num_experts_per_tok is {top_k}; expected 1..{num_experts}")
    layers = int(tc.get("num_hidden_layers") or 0)
    if layers <= 0:
        raise VibeError(f"{where}: num_hidden_layers is missing")
    groups = int(tc["n_group"]) if tc.get("n_group") else None
    if groups is not None and (groups <= 1 or num_experts % groups):
        groups = None  # one group (or a count that does not divide) means no group limit
    topk_group = int(tc["topk_group"]) if groups and tc.get("topk_group") else None
    return MoeFacts(
        model=name,
        model_type=str(tc.get("model_type") or cfg.get("model_type") or "unknown"),
        num_experts=num_experts,
        top_k=top_k,
        num_hidden_layers=layers,
        moe_layers=moe_layer_ids(tc, layers),
        num_groups=groups,
        topk_group=topk_group,
        shared_experts=shared_expert_count(tc),
    )


def moe_layer_ids(tc: dict[str, Any], layers: int) -> list[int]:
    """Decoder layers with routed experts, by the same rules the modeling code applies."""
    ids = range(layers)
    if isinstance(tc.get("moe_layers"), list):  # Llama-4
        return sorted(int(i) for i in tc["moe_layers"] if 0 <= int(i) < layers)
    if tc.get("interleave_moe_layer_step"):
        step = int(tc["interleave_moe_layer_step"])
        return list(range(step - 1, layers, step))
    if "first_k_dense_replace" in tc:  # DeepSeek, GLM
        k = int(tc.get("first_k_dense_replace") or 0)
        freq = int(tc.get("moe_layer_freq") or 1)
        return [i for i in ids if i >= k and i % freq == 0]
    if "decoder_sparse_step" in tc or "mlp_only_layers" in tc:  # Qwen2/3-MoE
        dense = {int(i) for i in tc.get("mlp_only_layers") or []}
        step = int(tc.get("decoder_sparse_step") or 1)
        return [i for i in ids if i not in dense and (i + 1) % step == 0]
    return list(ids)


def shared_expert_count(tc: dict[str, Any]) -> int:
    if tc.get("n_shared_experts"):  # DeepSeek, GLM
        return int(tc["n_shared_experts"])
    if tc.get("shared_expert_intermediate_size"):  # Qwen2-MoE, Qwen3-Next: one wide shared expert
        return 1
    if str(tc.get("model_type", "")).startswith("llama4"):  # one shared expert per MoE layer
        return 1
    return 0


def model_name(model_dir: str | Path, cfg: dict[str, Any]) -> str:
    name = cfg.get("_name_or_path")
    return str(name) if name and not Path(str(name)).is_absolute() else Path(model_dir).name
