"""The one reader of a model's MoE facts: built-in presets and Hugging Face config.json files.

profile-gpus (expert FFN shape) and profile-routing / import-routing (experts, top-k, MoE layers)
read through the same key tables here, so the commands cannot disagree about a checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vibe_plan.errors import VibeError

# One key table per fact, first present key wins. The expert count keeps transformers' own
# precedence (num_local_experts, num_experts, n_routed_experts), then Ernie/Aria's key.
EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
TOPK_KEYS = ("num_experts_per_tok", "num_experts_per_token", "experts_per_token", "moe_topk")
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers")
HIDDEN_KEYS = ("hidden_size", "d_model", "n_embd")
# The expert width is `moe_intermediate_size` when present (Qwen-MoE, DeepSeek, GLM: there
# `intermediate_size` is the dense MLP), else `intermediate_size` (Mixtral, GPT-OSS, Llama-4).
INTERMEDIATE_KEYS = (
    "moe_intermediate_size",
    "expert_intermediate_size",
    "intermediate_size",
    "ffn_dim",
)
ACTIVATION_KEYS = ("hidden_act", "activation_function", "hidden_activation")
_UNGATED_ACTS = {"gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "gelu_fast", "quick_gelu"}
TEXT_CONFIG = "text_config"


@dataclass
class MoeFacts:
    """Everything the commands need to know about a MoE model, read once from its config."""

    model: str
    model_type: str
    num_experts: int
    top_k: int
    num_hidden_layers: int
    moe_layers: list[int]  # absolute decoder-layer ids that have routed experts
    num_groups: int | None  # expert groups of group-limited routers (DeepSeek `n_group`)
    topk_group: int | None
    shared_experts: int  # experts every token goes through; not placed by load
    dense_layers: list[int] = field(default_factory=list)  # decoder layers with a dense MLP
    # DeepSeek-style multi-token-prediction modules (`num_nextn_predict_layers`): stored after
    # the decoder layers in the checkpoint, but not decoder layers of the HF model (no router).
    mtp_layers: int = 0
    hidden: int | None = None  # expert FFN shape; None where the config lacks it
    intermediate: int | None = None
    gated: bool = True  # every current MoE family uses gated (SwiGLU-style) experts
    keys_used: dict[str, str] = field(default_factory=dict)  # fact -> config key it came from


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


# The published config.json keys of each preset's model (all SwiGLU experts). They go through
# the same reader as a user's config.json, so a preset cannot mean something else than its file.
PRESET_CONFIGS: dict[str, dict[str, Any]] = {
    "mixtral-8x7b": {
        "model_type": "mixtral",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
        "num_hidden_layers": 32,
        "hidden_act": "silu",
    },
    "qwen3-30b-a3b": {
        "model_type": "qwen3_moe",
        "hidden_size": 2048,
        "intermediate_size": 6144,
        "moe_intermediate_size": 768,
        "num_experts": 128,
        "num_experts_per_tok": 8,
        "num_hidden_layers": 48,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
        "hidden_act": "silu",
    },
    "qwen3-235b-a22b": {
        "model_type": "qwen3_moe",
        "hidden_size": 4096,
        "intermediate_size": 12288,
        "moe_intermediate_size": 1536,
        "num_experts": 128,
        "num_experts_per_tok": 8,
        "num_hidden_layers": 94,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
        "hidden_act": "silu",
    },
    "deepseek-v3": {
        "model_type": "deepseek_v3",
        "hidden_size": 7168,
        "intermediate_size": 18432,
        "moe_intermediate_size": 2048,
        "n_routed_experts": 256,
        "num_experts_per_tok": 8,
        "num_hidden_layers": 61,
        "first_k_dense_replace": 3,
        "moe_layer_freq": 1,
        "n_group": 8,
        "topk_group": 4,
        "n_shared_experts": 1,
        "num_nextn_predict_layers": 1,
        "hidden_act": "silu",
    },
    "gpt-oss-120b": {
        "model_type": "gpt_oss",
        "hidden_size": 2880,
        "intermediate_size": 2880,
        "num_local_experts": 128,
        "num_experts_per_tok": 4,
        "experts_per_token": 4,
        "num_hidden_layers": 36,
        "hidden_act": "silu",
    },
}


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


def _decoder_config(cfg: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The dict holding the decoder's keys and its key prefix (for saying which keys were used).

    Multimodal checkpoints (Llama-4, Qwen3-VL-MoE) keep the language model under `text_config`.
    """
    inner = cfg.get(TEXT_CONFIG)
    if _first(cfg, EXPERT_KEYS) is None and isinstance(inner, dict):
        return inner, TEXT_CONFIG + "."
    return cfg, ""


def text_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The decoder's keys: a multimodal wrapper's `text_config` (keeping its model_type), or cfg."""
    tc, prefix = _decoder_config(cfg)
    if prefix:
        return {**tc, "model_type": tc.get("model_type", cfg.get("model_type"))}
    return cfg


def _first(cfg: dict[str, Any], keys: tuple[str, ...]) -> tuple[str, Any] | None:
    """First key present with a value (null and booleans are no value for a count)."""
    for k in keys:
        v = cfg.get(k)
        if v is not None and not isinstance(v, bool):
            return k, v
    return None


# Sizes past these are no model's: a corrupt config, refused before anything is sized by them.
MAX_LAYERS = 10_000  # decoder layers (the routing profile's limit too)
MAX_EXPERTS = 1 << 16  # routed experts per layer
MAX_DIM = 10**7  # hidden / intermediate size


def _positive_int(where: str, key: str, value: Any, limit: int | None = None) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        if limit is not None and value > limit:
            raise VibeError(
                f"{where}: {key} = {value!r} is more than any model has (at most {limit:,}); "
                "is the config corrupt?"
            )
        return value
    raise VibeError(f"{where}: {key} = {value!r} must be a positive integer")


@dataclass
class _Read:
    """Facts read from one config, before each command insists on the ones it needs."""

    tc: dict[str, Any]  # the decoder's keys (text_config merged, see text_config())
    raw: dict[str, Any]  # the same dict as written in the file (for ModelShape.name)
    num_experts: int
    top_k: int
    layers: int | None
    hidden: int | None
    intermediate: int | None
    gated: bool
    keys: dict[str, str]


def _read(cfg: dict[str, Any], where: str, presets_hint: bool = False) -> _Read:
    """Experts, top-k, layers and expert FFN shape through the one key table, validated."""
    raw, prefix = _decoder_config(cfg)
    tc = text_config(cfg)
    keys: dict[str, str] = {}
    experts_hit = _first(tc, EXPERT_KEYS)
    if experts_hit is None:
        hint = f"; pass a MoE config.json or a preset name ({', '.join(PRESETS)})"
        raise VibeError(
            f"{where}: no MoE keys found (none of {', '.join(EXPERT_KEYS)}); "
            f"this is not a Mixture-of-Experts model{hint if presets_hint else ''}"
        )
    keys["num_experts"] = prefix + experts_hit[0]
    num_experts = _positive_int(where, *experts_hit, limit=MAX_EXPERTS)
    topk_hit = _first(tc, TOPK_KEYS)
    if topk_hit is None:
        raise VibeError(f"{where}: missing top-k (looked for {', '.join(TOPK_KEYS)})")
    keys["top_k"] = prefix + topk_hit[0]
    top_k = topk_hit[1]
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= num_experts:
        raise VibeError(
            f"{where}: {topk_hit[0]} = {top_k!r}; top-k must be an integer in 1..{num_experts} "
            "(the routed experts)"
        )
    layers = None
    layers_hit = _first(tc, LAYER_KEYS)
    if layers_hit is not None:
        keys["num_layers"] = prefix + layers_hit[0]
        layers = _positive_int(where, *layers_hit, limit=MAX_LAYERS)
    size: dict[str, int | None] = {}
    for fact, options in (("hidden", HIDDEN_KEYS), ("intermediate", INTERMEDIATE_KEYS)):
        hit = _first(tc, options)
        size[fact] = None
        if hit is not None:
            keys[fact] = prefix + hit[0]
            size[fact] = _positive_int(where, *hit, limit=MAX_DIM)
    gated = True
    act_hit = _first(tc, ACTIVATION_KEYS)
    if act_hit is not None:
        keys["gated"] = prefix + act_hit[0]
        gated = str(act_hit[1]).lower() not in _UNGATED_ACTS
    return _Read(
        tc, raw, num_experts, top_k, layers, size["hidden"], size["intermediate"], gated, keys
    )


def moe_facts(cfg: dict[str, Any], name: str, where: str = "config.json") -> MoeFacts:
    """All MoE facts of a parsed config.json; profiling routing needs the decoder-layer count."""
    r = _read(cfg, where)
    if r.layers is None:
        raise VibeError(
            f"{where}: num_hidden_layers is missing (looked for {', '.join(LAYER_KEYS)})"
        )
    tc = r.tc
    try:
        groups = _layout_int(tc, "n_group", 0, 1) or None
        if groups is not None and (groups <= 1 or r.num_experts % groups):
            groups = None  # one group (or a count that does not divide) means no group limit
        topk_group = (_layout_int(tc, "topk_group", 0, 1) or None) if groups else None
        moe_layers = moe_layer_ids(tc, r.layers)
        shared = shared_expert_count(tc)
        mtp = _layout_int(tc, "num_nextn_predict_layers", 0, 0)
    except (TypeError, ValueError, OverflowError) as e:
        raise VibeError(f"{where}: cannot read the MoE layout ({e})") from None
    if not moe_layers:
        raise VibeError(
            f"{where}: the MoE layout keys leave none of the {r.layers} decoder layers with "
            "routed experts; is the config corrupt?"
        )
    return MoeFacts(
        model=name,
        model_type=str(tc.get("model_type") or cfg.get("model_type") or "unknown"),
        num_experts=r.num_experts,
        top_k=r.top_k,
        num_hidden_layers=r.layers,
        moe_layers=moe_layers,
        num_groups=groups,
        topk_group=topk_group,
        shared_experts=shared,
        dense_layers=sorted(set(range(r.layers)) - set(moe_layers)),
        mtp_layers=mtp,
        hidden=r.hidden,
        intermediate=r.intermediate,
        gated=r.gated,
        keys_used=dict(r.keys),
    )


def expert_meta(facts: MoeFacts) -> dict[str, Any]:
    """The routing-profile meta key recording the expert FFN shape (`expert`), so that solve and
    evaluate can refuse a GPU profile measured for another shape; empty where the config lacks
    the sizes."""
    if facts.hidden is None or facts.intermediate is None:
        return {}
    return {
        "expert": {
            "hidden": facts.hidden,
            "intermediate": facts.intermediate,
            "gated": facts.gated,
        }
    }


def moe_layer_ids(tc: dict[str, Any], layers: int) -> list[int]:
    """Decoder layers with routed experts, by the same rules the modeling code applies."""
    ids = range(layers)
    if isinstance(tc.get("moe_layers"), list):  # Llama-4
        picked = [_layout_int({"moe_layers": i}, "moe_layers", 0, 0) for i in tc["moe_layers"]]
        return sorted(i for i in set(picked) if i < layers)
    step = _layout_int(tc, "interleave_moe_layer_step", 0, 1)
    if step:
        return list(range(step - 1, layers, step))
    if "first_k_dense_replace" in tc:  # DeepSeek, GLM
        k = _layout_int(tc, "first_k_dense_replace", 0, 0)
        freq = _layout_int(tc, "moe_layer_freq", 1, 1)
        return [i for i in ids if i >= k and i % freq == 0]
    if "decoder_sparse_step" in tc or "mlp_only_layers" in tc:  # Qwen2/3-MoE
        dense_raw = tc.get("mlp_only_layers") or []
        if not isinstance(dense_raw, list):
            raise ValueError(f"mlp_only_layers = {dense_raw!r} must be a list of layer ids")
        dense = {_layout_int({"mlp_only_layers": i}, "mlp_only_layers", 0, 0) for i in dense_raw}
        step = _layout_int(tc, "decoder_sparse_step", 1, 1)
        return [i for i in ids if i not in dense and (i + 1) % step == 0]
    return list(ids)


def _layout_int(tc: dict[str, Any], key: str, default: int, low: int) -> int:
    """An integer layout key of a config (absent, null or 0: `default`); ValueError if it is not
    an integer >= `low`."""
    v = tc.get(key)
    if v is None or (v == 0 and not isinstance(v, bool)):
        return default
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ValueError(f"{key} = {v!r} must be an integer >= {low}")
    return v


def shared_expert_count(tc: dict[str, Any]) -> int:
    shared = _layout_int(tc, "n_shared_experts", 0, 0)
    if shared:  # DeepSeek, GLM
        return shared
    if tc.get("shared_expert_intermediate_size"):  # Qwen2-MoE, Qwen3-Next: one wide shared expert
        return 1
    if str(tc.get("model_type", "")).startswith("llama4"):  # one shared expert per MoE layer
        return 1
    return 0


def model_name(model_dir: str | Path, cfg: dict[str, Any]) -> str:
    name = cfg.get("_name_or_path")
    return str(name) if name and not Path(str(name)).is_absolute() else Path(model_dir).name


def _shape(r: _Read, where: str, name: str, source: str, record_keys: bool) -> ModelShape:
    for fact, options in (("hidden", HIDDEN_KEYS), ("intermediate", INTERMEDIATE_KEYS)):
        if getattr(r, fact) is None:
            raise VibeError(f"{where}: missing {fact} size (looked for {', '.join(options)})")
    assert r.hidden is not None and r.intermediate is not None
    # Same key order as the profile has always recorded (method.model.keys).
    order = ("hidden", "intermediate", "num_experts", "top_k", "num_layers", "gated")
    return ModelShape(
        name=name,
        hidden=r.hidden,
        intermediate=r.intermediate,
        gated=r.gated,
        num_experts=r.num_experts,
        top_k=r.top_k,
        num_layers=r.layers,
        source=source,
        keys_used={k: r.keys[k] for k in order if k in r.keys} if record_keys else {},
    )


def shape_from_config(cfg: dict[str, Any], path: Path) -> ModelShape:
    """Read the routed expert's shape from a parsed config.json; say which keys were used."""
    r = _read(cfg, str(path), presets_hint=True)
    name = str(r.raw.get("_name_or_path") or r.raw.get("model_type") or path.parent.name)
    return _shape(r, str(path), name, str(path), record_keys=True)


# Built once from PRESET_CONFIGS; the profile records presets as source "preset" with no keys.
PRESETS: dict[str, ModelShape] = {
    name: _shape(_read(cfg, f"preset {name}"), f"preset {name}", name, "preset", False)
    for name, cfg in PRESET_CONFIGS.items()
}


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
