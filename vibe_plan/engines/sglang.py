"""SGLang: the `--init-expert-location` placement file and the expert-distribution recorder dumps.

Placement: JSON with the single key `physical_to_logical_map`, one row per decoder layer (SGLang
passes the keys to `ExpertLocationMetadata.init_by_mapping` as arguments, so extra keys raise
TypeError). Dumps: `expert_distribution_recorder_*.pt` from the `stat` mode (`logical_count`
[steps, decoder layers, experts], already summed over ranks) or the `per_pass` mode (`records` of
`global_physical_count` per rank and forward pass, with `last_physical_to_logical_map`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vibe_plan.artifacts.placement import Placement, int_map
from vibe_plan.engines.common import EngineDump, decoder_rows, engine_placement
from vibe_plan.errors import VibeError

PLACEMENT_KEY = "physical_to_logical_map"
PLACEMENT_METHOD = "sglang-file"


def placement_text(p: Placement, num_hidden_layers: int) -> str:
    rows = decoder_rows(p, num_hidden_layers)
    body = ",\n    ".join(json.dumps(r, separators=(",", ":")) for r in rows)
    return '{\n  "physical_to_logical_map": [\n    ' + body + "\n  ]\n}\n"


def is_placement(doc: dict[str, Any]) -> bool:
    return set(doc) == {PLACEMENT_KEY}


def read_placement(
    path: Path,
    doc: dict[str, Any],
    num_gpus: int | None,
    layer_ids: list[int] | None,
    num_experts: int | None,
) -> tuple[Placement, list[str]]:
    """Rows are per decoder layer: `layer_ids` (the routing profile's) picks the MoE ones."""
    m = int_map(path, PLACEMENT_KEY, doc[PLACEMENT_KEY])
    if layer_ids is None:
        raise VibeError(f"{path}: an SGLang file needs the routing profile's layer ids")
    if m.shape[0] <= max(layer_ids):
        raise VibeError(
            f"{path}: physical_to_logical_map has {m.shape[0]} rows but the "
            f"routing profile has decoder layer {max(layer_ids)}"
        )
    m = m[list(layer_ids)]
    return engine_placement(path, m, PLACEMENT_METHOD, num_gpus, layer_ids, num_experts)


def read_dump(source: Path) -> EngineDump:
    """A recorder .pt file, or a folder of them (one per rank)."""
    files = sorted(source.glob("*.pt")) if source.is_dir() else [source]
    if not files:
        raise VibeError(f"{source}: no .pt files (SGLang writes expert_distribution_recorder_*.pt)")
    dumps = [(f, _load(f)) for f in files]
    if all("logical_count" in d for _, d in dumps):
        return _stat(dumps)
    if all("records" in d for _, d in dumps):
        return _per_pass(dumps)
    raise VibeError(
        f'{source}: expected SGLang recorder dumps holding "logical_count" (stat mode) or '
        '"records" (per_pass mode) in every file'
    )


def _load(path: Path) -> dict[str, Any]:
    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad pickle; all mean the same here
        raise VibeError(
            f"{path}: not a readable torch .pt file ({type(e).__name__}: {e})"
        ) from None
    if not isinstance(data, dict):
        raise VibeError(f"{path}: an SGLang dump is a dict; found {type(data).__name__}")
    return data


def _np(value: Any, path: Path, key: str) -> np.ndarray:
    arr = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
    if arr.dtype.kind not in "iuf":
        raise VibeError(f"{path}: {key} is not numeric")
    return arr


def _stat(dumps: list[tuple[Path, dict[str, Any]]]) -> EngineDump:
    # logical_count is already summed over ranks; if several ranks wrote it, keep one rank.
    notes = []
    ranks = {int(d.get("rank", 0)) for _, d in dumps}
    if len(ranks) > 1:
        notes.append(
            f"stat dumps from ranks {sorted(ranks)}: their counts are global; using rank "
            f"{min(ranks)} only"
        )
        dumps = [(f, d) for f, d in dumps if int(d.get("rank", 0)) == min(ranks)]
    parts: list[np.ndarray] = []
    for f, d in dumps:
        arr = _np(d["logical_count"], f, "logical_count")
        if arr.ndim == 2:  # a single step
            arr = arr[None]
        if arr.ndim != 3:
            raise VibeError(
                f"{f}: logical_count has shape {list(arr.shape)}; expected [steps, layers, experts]"
            )
        if parts and arr.shape[1:] != parts[0].shape[1:]:
            raise VibeError(
                f"{f}: logical_count shape {list(arr.shape)} differs from the other files"
            )
        parts.append(arr)
    counts = np.concatenate(parts).astype(np.int64)
    return EngineDump(
        counts,
        "decoder",
        None,
        {"mode": "stat", "files": [f.name for f, _ in dumps]},
        notes=notes,
    )


def _per_pass(dumps: list[tuple[Path, dict[str, Any]]]) -> EngineDump:
    """Per rank, per forward pass: physical-slot counts; sum ranks, fold replicas to logical."""
    passes: dict[int, np.ndarray] = {}
    num_logical = 0
    for f, d in dumps:
        if "last_physical_to_logical_map" not in d:
            raise VibeError(f"{f}: per_pass dump lacks last_physical_to_logical_map")
        p2l = _np(d["last_physical_to_logical_map"], f, "last_physical_to_logical_map")
        num_logical = max(num_logical, int(p2l.max()) + 1)
    for f, d in dumps:
        p2l = _np(d["last_physical_to_logical_map"], f, "last_physical_to_logical_map")
        p2l = p2l.astype(np.int64)
        records = d["records"]
        if not isinstance(records, list):
            raise VibeError(f"{f}: records must be a list of per-pass dicts")
        for i, rec in enumerate(records):
            if not isinstance(rec, dict) or "global_physical_count" not in rec:
                raise VibeError(f"{f}: record {i} lacks global_physical_count")
            phys = _np(rec["global_physical_count"], f, "global_physical_count").astype(np.int64)
            if phys.shape != p2l.shape:
                raise VibeError(
                    f"{f}: record {i} global_physical_count shape "
                    f"{list(phys.shape)} differs from the map {list(p2l.shape)}"
                )
            logical = np.zeros((phys.shape[0], num_logical), np.int64)
            for layer in range(phys.shape[0]):
                np.add.at(logical[layer], p2l[layer], phys[layer])
            key = int(rec.get("forward_pass_id", i))
            passes[key] = passes[key] + logical if key in passes else logical
    if not passes:
        raise VibeError("the per_pass dumps hold no records")
    counts = np.stack([passes[k] for k in sorted(passes)])
    return EngineDump(
        counts, "decoder", None, {"mode": "per_pass", "files": [f.name for f, _ in dumps]}
    )
