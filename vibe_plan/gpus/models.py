"""Expert FFN shapes: built-in presets and Hugging Face `config.json` parsing (no torch here)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vibe_plan.errors import VibeError

# dtype names accepted on the command line; torch dtypes are looked up only where torch is loaded.
DTYPES = ("bfloat16", "float16", "float32")
BACKENDS = ("auto", "grouped_mm", "loop")
_DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32"}


@dataclass(frozen=True)
class ModelShape:
    """What profiling needs from a model: one routed expert's FFN and the routing fan-out."""

    name: str
    hidden: int
    intermediate: int
    gated: bool
    num_experts: int
    top_k: int
    num_layers: int | None = None
    source: str = "preset"  # "preset" or the config.json path
    keys_used: dict[str, str] = field(default_factory=dict)  # shape field -> config key


# Real expert shapes (each model's published config.json). All five use SwiGLU experts
# (gate and up projections, then down), which is what `gated` means here.
PRESETS: dict[str, ModelShape] = {
    "mixtral-8x7b": ModelShape("mixtral-8x7b", 4096, 14336, True, 8, 2, 32),
    "qwen3-30b-a3b": ModelShape("qwen3-30b-a3b", 2048, 768, True, 128, 8, 48),
    "qwen3-235b-a22b": ModelShape("qwen3-235b-a22b", 4096, 1536, True, 128, 8, 94),
    "deepseek-v3": ModelShape("deepseek-v3", 7168, 2048, True, 256, 8, 61),
    "gpt-oss-120b": ModelShape("gpt-oss-120b", 2880, 2880, True, 128, 4, 36),
}

# Key preference follows the engines: the expert width is `moe_intermediate_size` when present
# (Qwen-MoE, DeepSeek: there `intermediate_size` is the dense MLP), else `intermediate_size`
# (Mixtral, GPT-OSS, Llama-4 text).
_HIDDEN_KEYS = ("hidden_size", "d_model", "n_embd")
_INTER_KEYS = ("moe_intermediate_size", "expert_intermediate_size", "intermediate_size", "ffn_dim")
_EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
_TOPK_KEYS = ("num_experts_per_tok", "num_experts_per_token", "experts_per_token", "moe_topk")
_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers")
_UNGATED_ACTS = {"gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "gelu_fast", "quick_gelu"}


def normalize_dtype(name: str) -> str:
    d = _DTYPE_ALIASES.get(name.strip().lower(), name.strip().lower())
    if d not in DTYPES:
        raise VibeError(f"--dtype {name!r} is not supported; use one of {', '.join(DTYPES)}")
    return d


def _first(cfg: dict[str, Any], keys: tuple[str, ...]) -> tuple[str, Any] | None:
    for k in keys:
        v = cfg.get(k)
        if v is not None and not isinstance(v, bool):
            return k, v
    return None


def _positive_int(path: Path, key: str, value: Any) -> int:
    if isinstance(value, int) and value > 0:
        return value
    raise VibeError(f"{path}: {key} = {value!r} must be a positive integer")


def shape_from_config(cfg: dict[str, Any], path: Path) -> ModelShape:
    """Read the routed expert's shape from a parsed config.json; say which keys were used."""
    # Multimodal MoE configs (Llama-4, Qwen3-VL-MoE) keep the language model under text_config.
    if _first(cfg, _EXPERT_KEYS) is None and isinstance(cfg.get("text_config"), dict):
        cfg = cfg["text_config"]
        prefix = "text_config."
    else:
        prefix = ""
    found_experts = _first(cfg, _EXPERT_KEYS)
    if found_experts is None:
        raise VibeError(
            f"{path}: no MoE keys found (none of {', '.join(_EXPERT_KEYS)}); "
            "is this a Mixture-of-Experts model? Pass a MoE config.json or a preset name "
            f"({', '.join(PRESETS)})"
        )
    keys: dict[str, str] = {}
    values: dict[str, int] = {}
    for fld, options in (("hidden", _HIDDEN_KEYS), ("intermediate", _INTER_KEYS)):
        hit = _first(cfg, options)
        if hit is None:
            raise VibeError(f"{path}: missing {fld} size (looked for {', '.join(options)})")
        keys[fld] = prefix + hit[0]
        values[fld] = _positive_int(path, hit[0], hit[1])
    keys["num_experts"] = prefix + found_experts[0]
    num_experts = _positive_int(path, found_experts[0], found_experts[1])
    hit = _first(cfg, _TOPK_KEYS)
    if hit is None:
        raise VibeError(f"{path}: missing top-k (looked for {', '.join(_TOPK_KEYS)})")
    keys["top_k"] = prefix + hit[0]
    top_k = _positive_int(path, hit[0], hit[1])
    layers_hit = _first(cfg, _LAYER_KEYS)
    num_layers = None
    if layers_hit is not None:
        keys["num_layers"] = prefix + layers_hit[0]
        num_layers = _positive_int(path, layers_hit[0], layers_hit[1])
    act_hit = _first(cfg, ("hidden_act", "activation_function", "hidden_activation"))
    gated = True  # every current MoE family uses gated (SwiGLU-style) experts
    if act_hit is not None:
        keys["gated"] = prefix + act_hit[0]
        gated = str(act_hit[1]).lower() not in _UNGATED_ACTS
    name = str(cfg.get("_name_or_path") or cfg.get("model_type") or path.parent.name)
    return ModelShape(
        name=name,
        hidden=values["hidden"],
        intermediate=values["intermediate"],
        gated=gated,
        num_experts=num_experts,
        top_k=top_k,
        num_layers=num_layers,
        source=str(path),
        keys_used=keys,
    )


def resolve_model(spec: str) -> ModelShape:
    """MODEL is a preset name, a config.json file or a folder holding one (read locally)."""
    key = spec.strip().lower()
    if key in PRESETS:
        return PRESETS[key]
    path = Path(spec)
    if path.is_dir():
        path = path / "config.json"
        if not path.is_file():
            raise VibeError(f"{spec}: folder has no config.json; pass the model folder or file")
    elif not path.is_file():
        raise VibeError(
            f"--model {spec!r} is neither a preset ({', '.join(PRESETS)}) nor an existing "
            "config.json file or model folder"
        )
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VibeError(f"{path}: not valid JSON ({e}); pass a Hugging Face config.json") from None
    if not isinstance(cfg, dict):
        raise VibeError(f"{path}: top level must be a JSON object (a Hugging Face config.json)")
    return shape_from_config(cfg, path)
