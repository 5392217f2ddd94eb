"""TensorRT-LLM: the MoE load-balancer placement file and the expert-statistics dumps.

Placement (`moe_config.load_balancer: PATH`): YAML with `num_slots`, `initial_global_assignments`
(a row of logical experts per slot, keyed by decoder layer; dense layers are absent; MTP layers
`num_hidden_layers + i` present) and `layer_updates_per_iter: 0` (static). Dumps
(EXPERT_STATISTIC_PATH): `meta_info.json` (`num_experts`, `num_experts_per_token`) +
`rank{r}.safetensors`, one count vector per key "{iter}_{layer}", each rank counting its own
tokens; the vectors count slots (length `num_slots`) when the load balancer is on.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from vibe_plan.artifacts.io import read_doc
from vibe_plan.artifacts.placement import Placement, int_map
from vibe_plan.engines.common import EngineDump, engine_placement, token_counts
from vibe_plan.errors import VibeError

PLACEMENT_KEY = "initial_global_assignments"
PLACEMENT_METHOD = "trtllm-file"
KEY = re.compile(r"^(\d+)_(\d+)$")
RANK_FILE = re.compile(r"^rank(\d+)\.safetensors$")  # not rank{r}_raw.safetensors


# TensorRT-LLM applies `moe_config.load_balancer` only to checkpoints whose `architectures[0]` is
# one of these (`maybe_create_moe_load_balancer`); for any other model it ignores the file.
LOAD_BALANCER_ARCHITECTURES = (
    "DeepseekV3ForCausalLM",
    "MixtralForCausalLM",
    "Llama4ForConditionalGeneration",
    "Qwen2MoeForCausalLM",
    "Qwen3MoeForCausalLM",
)
# config.json `model_type`s of the released checkpoints with those architectures (Kimi-K2 ships
# as DeepseekV3ForCausalLM), for routing profiles that record the type but not the architecture.
LOAD_BALANCER_MODEL_TYPES = (
    "deepseek_v3",
    "kimi_k2",
    "mixtral",
    "llama4",
    "qwen2_moe",
    "qwen3_moe",
)


def placement_text(p: Placement, num_hidden_layers: int, mtp_layers: int = 0) -> str:
    """Rows keyed by decoder layer (dense layers absent), then one row per MTP layer.

    TensorRT-LLM builds its MTP (next-n) layers as MoE layers `num_hidden_layers + i` and looks
    each up in `initial_global_assignments` like any other (a missing key is a KeyError at load).
    vibe has no routing for them: they get the trivial row `slot % num_experts`, which holds every
    expert at least once, as the engine asserts.
    """
    if max(p.layer_ids) >= num_hidden_layers:
        raise VibeError(
            f"placement has MoE layer {max(p.layer_ids)} but the model has only "
            f"{num_hidden_layers} decoder layers"
        )
    assign = {int(layer): p.phy2log[i].astype(int).tolist() for i, layer in enumerate(p.layer_ids)}
    trivial = (np.arange(p.num_physical_experts) % p.num_logical_experts).tolist()
    for i in range(mtp_layers):
        assign[num_hidden_layers + i] = trivial
    doc = {
        "num_slots": int(p.num_physical_experts),
        "initial_global_assignments": assign,
        "layer_updates_per_iter": 0,
    }
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=1 << 16)


def export_notes(model_type: str | None, architecture: str | None) -> list[str]:
    """What the user should know before serving the file: TensorRT-LLM silently ignores the load
    balancer for architectures outside its list."""
    if architecture is not None:
        supported = architecture in LOAD_BALANCER_ARCHITECTURES
        name = architecture
    elif model_type is not None:
        supported = model_type in LOAD_BALANCER_MODEL_TYPES
        name = f"model_type {model_type}"
    else:
        return []
    if supported:
        return []
    archs = ", ".join(LOAD_BALANCER_ARCHITECTURES)
    return [
        f"TensorRT-LLM applies moe_config.load_balancer only to {archs}; for this model "
        f"({name}) it ignores the trtllm export without a warning"
    ]


def is_placement(doc: dict[str, Any]) -> bool:
    return PLACEMENT_KEY in doc


def read_placement(
    path: Path,
    doc: dict[str, Any],
    num_gpus: int | None,
    layer_ids: list[int] | None,
    num_experts: int | None,
    num_hidden_layers: int | None = None,
) -> tuple[Placement, list[str]]:
    """Rows are keyed by decoder layer: `layer_ids` (the routing profile's) picks them. Rows
    `num_hidden_layers`, `num_hidden_layers + 1`, ... are the MTP layers' (TensorRT-LLM's
    numbering): not scored, silently. Rows for other layers are not scored: a warning.
    `num_slots` must match the rows' length."""
    assign = doc[PLACEMENT_KEY]
    if not isinstance(assign, dict) or not assign or layer_ids is None:
        raise VibeError(f"{path}: initial_global_assignments must map decoder layers to rows")
    rows: dict[int, Any] = {}
    for key, row in assign.items():
        layer = _layer_key(key)
        if layer is None:
            raise VibeError(
                f"{path}: initial_global_assignments: key {key!r} is not a decoder-layer index"
            )
        if layer in rows:
            raise VibeError(f"{path}: initial_global_assignments: decoder layer {layer} twice")
        rows[layer] = row
    missing = [layer for layer in layer_ids if layer not in rows]
    if missing:
        raise VibeError(f"{path}: initial_global_assignments lacks decoder layers {missing[:5]}")
    m = int_map(path, PLACEMENT_KEY, [rows[x] for x in layer_ids])
    if "num_slots" in doc:
        slots = doc["num_slots"]
        if isinstance(slots, bool) or not isinstance(slots, int) or slots != m.shape[1]:
            raise VibeError(
                f"{path}: num_slots is {slots!r} but each row of initial_global_assignments has "
                f"{m.shape[1]} slots; the file is inconsistent"
            )
    p, warns = engine_placement(path, m, PLACEMENT_METHOD, num_gpus, layer_ids, num_experts)
    extra = sorted(set(rows) - set(layer_ids))
    if num_hidden_layers is not None:  # MTP rows: num_hidden_layers, num_hidden_layers + 1, ...
        end = num_hidden_layers
        while end in rows:
            end += 1
        extra = [layer for layer in extra if not num_hidden_layers <= layer < end]
    if extra:
        maybe_mtp = "" if num_hidden_layers is not None else "MTP layers, or "
        warns.append(
            f"initial_global_assignments has rows for decoder layers {extra[:6]} that are not "
            f"MoE layers of the routing profile; they are not scored ({maybe_mtp}is this file "
            "for another model?)"
        )
    return p, warns


def _layer_key(key: Any) -> int | None:
    """A decoder-layer key: an integer, or its decimal text (YAML and JSON writers differ)."""
    if isinstance(key, bool):
        return None
    if isinstance(key, int):
        return key if key >= 0 else None
    if isinstance(key, str) and key.isdigit():
        return int(key)
    return None


def read_dump(source: Path) -> EngineDump:
    """The statistics folder (or a file in it): counts summed over ranks, per iteration.

    Only `rank{r}.safetensors` files are read: some revisions also write
    `rank{r}_raw.safetensors` (the raw [tokens, top_k] ids), which TensorRT-LLM's own tooling
    skips too. When every rank file holds the same counts, every rank saw the same tokens (no
    attention DP): they are counted once. Layers are as keyed (decoder-layer ids, MTP layers
    `num_hidden_layers + i` included); with the load balancer on, the arrays count slots, not
    experts (`fold_slots`)."""
    folder = source.parent if source.is_file() else source
    meta_path = folder / "meta_info.json"
    if not meta_path.is_file():
        raise VibeError(f"{folder}: no meta_info.json (set EXPERT_STATISTIC_PATH to this folder)")
    meta = read_doc(meta_path, "TensorRT-LLM meta_info.json", kind="json")
    if not isinstance(meta, dict):
        raise VibeError(f"{meta_path}: must hold a JSON object with num_experts")
    num_experts = meta.get("num_experts")
    top_k = meta.get("num_experts_per_token")
    if isinstance(num_experts, bool) or not isinstance(num_experts, int) or num_experts < 1:
        raise VibeError(
            f"{meta_path}: num_experts is {num_experts!r}; it must be a positive integer"
        )
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)):
        raise VibeError(f"{meta_path}: num_experts_per_token is {top_k!r}; it must be an integer")
    top_k = top_k or None
    files = [f for f in folder.glob("rank*.safetensors") if RANK_FILE.match(f.name)]
    files.sort(key=_rank)
    raw = sorted(f.name for f in folder.glob("rank*_raw.safetensors"))
    if not files:
        raise VibeError(f"{folder}: no rank*.safetensors files next to meta_info.json")
    from safetensors.numpy import load_file

    per_rank: list[dict[tuple[int, int], np.ndarray]] = []
    for f in files:
        try:
            tensors = load_file(str(f))
        except Exception as e:  # safetensors raises its own error type for a bad header
            raise VibeError(f"{f}: not a readable safetensors file ({e})") from None
        counts_of: dict[tuple[int, int], np.ndarray] = {}
        for key, arr in tensors.items():
            m = KEY.match(key)
            if m is None:
                raise VibeError(f'{f}: key {key!r} is not "{{iter}}_{{layer}}"')
            if arr.shape != (num_experts,):
                raise VibeError(
                    f"{f}: {key} has shape {list(arr.shape)}; expected "
                    f"[{num_experts}] (num_experts in meta_info.json)"
                )
            counts_of[(int(m.group(1)), int(m.group(2)))] = token_counts(arr, f"{f}: {key}")
        per_rank.append(counts_of)
    notes = []
    if _same_tokens(per_rank):
        notes.append(
            f"the {len(files)} rank files hold identical counts: every rank routed the same "
            "tokens (TensorRT-LLM without attention DP), so they are counted once"
        )
        per_rank = per_rank[:1]
    totals: dict[tuple[int, int], np.ndarray] = {}
    for counts_of in per_rank:  # with attention DP each rank counts its own tokens: sum them
        for it_layer, arr in counts_of.items():
            totals[it_layer] = totals[it_layer] + arr if it_layer in totals else arr
    if not totals:
        raise VibeError(f"{folder}: the rank files hold no counts")
    iters = sorted({i for i, _ in totals})
    layers = sorted({layer for _, layer in totals})
    counts = np.zeros((len(iters), len(layers), num_experts), np.int64)
    missing = 0
    for bi, it in enumerate(iters):
        for li, layer in enumerate(layers):
            if (it, layer) in totals:
                counts[bi, li] = totals[(it, layer)]
            else:
                missing += 1
    if missing:
        notes.append(f"{missing} (iteration, layer) pairs missing from the dump; counted as zero")
    source_info: dict[str, Any] = {
        "files": [f.name for f in files],
        "iterations": [iters[0], iters[-1]],
    }
    if raw:
        source_info["skipped_raw_files"] = raw
    return EngineDump(counts, "decoder", top_k, source_info, layer_ids=layers, notes=notes)


def _same_tokens(per_rank: list[dict[tuple[int, int], np.ndarray]]) -> bool:
    """Several rank files with the same keys and the same, non-zero counts in every one."""
    if len(per_rank) < 2:
        return False
    first = per_rank[0]
    if not any(arr.any() for arr in first.values()):
        return False
    return all(
        other.keys() == first.keys() and all(np.array_equal(other[k], first[k]) for k in first)
        for other in per_rank[1:]
    )


def fold_slots(counts: np.ndarray, phy2log: np.ndarray, num_experts: int) -> np.ndarray:
    """Slot counts [rows, layers, slots] -> expert counts [rows, layers, experts]: slot `s` of
    layer `l` holds expert `phy2log[l, s]` (the load balancer's `initial_global_assignments`)."""
    rows, n_layers, n_slots = counts.shape
    if phy2log.shape != (n_layers, n_slots):
        raise ValueError(f"map {phy2log.shape} does not match counts {counts.shape}")
    out = np.zeros((rows, n_layers, num_experts), np.int64)
    for layer in range(n_layers):
        onehot = np.zeros((n_slots, num_experts), np.int64)
        onehot[np.arange(n_slots), phy2log[layer]] = 1
        out[:, layer] = counts[:, layer] @ onehot
    return out


def _rank(path: Path) -> int:
    m = RANK_FILE.match(path.name)
    return int(m.group(1)) if m else 0
