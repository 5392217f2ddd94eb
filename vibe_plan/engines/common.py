"""What the engine modules share: the load-dump record, per-decoder-layer map rows, and the
checks every engine placement file gets once its map rows are read."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vibe_plan.artifacts.placement import Placement, check_map
from vibe_plan.artifacts.routing_profile import MAX_COUNT
from vibe_plan.errors import VibeError


@dataclass
class EngineDump:
    """Counts as an engine recorded them, before layers are matched to decoder-layer ids."""

    counts: np.ndarray  # int64 [rows, layers, experts]
    layer_axis: str  # "decoder": axis 1 is every decoder layer; "moe": only MoE layers, in order
    top_k: int | None
    source: dict[str, Any] = field(default_factory=dict)
    layer_ids: list[int] | None = None  # when the dump names its layers (TensorRT-LLM)
    notes: list[str] = field(default_factory=list)  # warnings for the user, in reading order
    # Layers of axis 1 the engine filled without routing (vLLM writes expert 0 for every token of
    # a dense layer): dropped when no model config says which layers are MoE layers.
    filler_layers: list[int] = field(default_factory=list)
    # Layers of axis 1 where some token lists one expert twice (vLLM's per-token ids): a router
    # never does that, so a kept (MoE) layer with one is a corrupt dump.
    repeat_layers: list[int] = field(default_factory=list)


def decoder_rows(p: Placement, num_hidden_layers: int) -> list[list[int]]:
    """One map row per decoder layer; dense layers get the trivial row (SGLang ignores them)."""
    if max(p.layer_ids) >= num_hidden_layers:
        raise VibeError(
            f"placement has MoE layer {max(p.layer_ids)} but the model has only "
            f"{num_hidden_layers} decoder layers"
        )
    trivial = (np.arange(p.num_physical_experts) % p.num_logical_experts).tolist()
    rows = [trivial] * num_hidden_layers
    for i, layer in enumerate(p.layer_ids):
        rows[layer] = p.phy2log[i].astype(int).tolist()
    return rows


def engine_placement(
    path: Path,
    m: np.ndarray,
    method: str,
    num_gpus: int | None,
    layer_ids: list[int] | None,
    num_experts: int | None,
) -> tuple[Placement, list[str]]:
    """A placement from an engine file's map rows, one per MoE layer (`m` int64 [layers, slots]).

    Engine files carry no GPU count or layer ids: `num_gpus` and `layer_ids` come from the GPU
    and routing profiles. Returns the placement and warnings.
    """
    if num_gpus is None:
        raise VibeError(f"{path}: engine files need the GPU count from a GPU profile")
    ne = num_experts if num_experts is not None else int(m.max()) + 1
    if layer_ids is not None and m.shape[0] != len(layer_ids):
        raise VibeError(
            f"{path}: map has {m.shape[0]} rows but the routing profile has "
            f"{len(layer_ids)} MoE layers"
        )
    warns = check_map(m, num_gpus, ne, f"{path}: map")
    lids = list(layer_ids) if layer_ids is not None else list(range(m.shape[0]))
    return Placement(num_gpus, m.shape[1] // num_gpus, ne, lids, m, method=method), warns


def token_counts(arr: np.ndarray, where: str) -> np.ndarray:
    """An engine's recorded token counts as int64: integers (integral floats are accepted), none
    negative, none beyond what a trace can hold. Anything else is a corrupt dump: refused, never
    truncated."""
    arr = np.asarray(arr)
    if arr.dtype.kind == "b" or arr.dtype.kind not in "iuf":
        raise VibeError(f"{where}: dtype {arr.dtype} is not a token count")
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise VibeError(f"{where}: holds NaN or inf; token counts are integers")
        if not (arr == np.round(arr)).all():
            raise VibeError(f"{where}: holds non-integer counts; token counts are integers")
    if arr.dtype.kind != "u" and arr.min() < 0:
        raise VibeError(f"{where}: holds negative counts ({arr.min():g}); is the dump corrupt?")
    if arr.max() > MAX_COUNT:
        raise VibeError(
            f"{where}: holds a count of {arr.max():.4g} tokens (more than {MAX_COUNT:,}); "
            "is the dump corrupt?"
        )
    return arr.astype(np.int64)
