"""SGLang: the `--init-expert-location` placement file and the expert-distribution recorder dumps.

Placement: JSON with the single key `physical_to_logical_map`, one row per decoder layer (SGLang
passes the keys to `ExpertLocationMetadata.init_by_mapping` as arguments, so extra keys raise
TypeError). Dumps: `expert_distribution_recorder_*.pt` from the `stat` mode (`logical_count`
[steps, decoder layers, experts], already summed over ranks) or the `per_pass` mode (`records` of
`global_physical_count` per rank and forward pass, with `last_physical_to_logical_map`). Without
an a2a backend every EP rank routes the same tokens: per_pass records then repeat across ranks
(counted once here); a stat dump's all-reduced sum cannot be undone (a note says so).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vibe_plan.artifacts.placement import Placement, int_map
from vibe_plan.engines.common import EngineDump, decoder_rows, engine_placement, token_counts
from vibe_plan.errors import VibeError

PLACEMENT_KEY = "physical_to_logical_map"
PLACEMENT_METHOD = "sglang-file"


def placement_text(p: Placement, num_hidden_layers: int, mtp_layers: int = 0) -> str:
    """One row per decoder layer. SGLang's NextN (MTP) draft layer takes no row of this file."""
    del mtp_layers
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
    num_hidden_layers: int | None = None,
) -> tuple[Placement, list[str]]:
    """Rows are per decoder layer: `layer_ids` (the routing profile's) picks the MoE ones. With
    `num_hidden_layers` (the routing profile's meta) the file must have exactly that many rows."""
    m = int_map(path, PLACEMENT_KEY, doc[PLACEMENT_KEY])
    if layer_ids is None:
        raise VibeError(f"{path}: an SGLang file needs the routing profile's layer ids")
    if num_hidden_layers is not None and m.shape[0] != num_hidden_layers:
        raise VibeError(
            f"{path}: physical_to_logical_map has {m.shape[0]} rows (one per decoder layer) but "
            f"the routing profile's model has {num_hidden_layers} decoder layers; is this file "
            "for another model?"
        )
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
    try:
        arr = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
    except (TypeError, ValueError, RuntimeError) as e:
        raise VibeError(f"{path}: {key} is not a numeric array ({e})") from None
    if arr.dtype.kind not in "iuf":
        raise VibeError(f"{path}: {key} is not numeric")
    return arr


def _rank(d: dict[str, Any], path: Path) -> int:
    """The `rank` a dump records (0 when absent)."""
    rank = d.get("rank", 0)
    if hasattr(rank, "item") and getattr(rank, "ndim", 1) == 0:
        rank = rank.item()  # a 0-d tensor
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise VibeError(
            f"{path}: rank {rank!r} is not a non-negative integer; is the dump corrupt?"
        )
    return rank


def _stat(dumps: list[tuple[Path, dict[str, Any]]]) -> EngineDump:
    # logical_count is already summed over ranks; if several ranks wrote it, keep one rank.
    notes = []
    rank_of = {f: _rank(d, f) for f, d in dumps}
    ranks = set(rank_of.values())
    if len(ranks) > 1:
        notes.append(
            f"stat dumps from ranks {sorted(ranks)}: their counts are global; using rank "
            f"{min(ranks)} only"
        )
        dumps = [(f, d) for f, d in dumps if rank_of[f] == min(ranks)]
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
        parts.append(token_counts(arr, f"{f}: logical_count"))
    counts = np.concatenate(parts)
    notes.append(
        "SGLang's stat dump sums the counts of every EP rank: with --moe-a2a-backend none (the "
        "default) every rank routes the same tokens, so the counts are EP times the tokens "
        "served (the mix of experts is right, the scale is not); record with "
        "--expert-distribution-recorder-mode per_pass, where vibe detects and undoes this"
    )
    return EngineDump(
        counts,
        "decoder",
        None,
        {"mode": "stat", "files": [f.name for f, _ in dumps]},
        notes=notes,
    )


def _p2l(d: dict[str, Any], f: Path) -> np.ndarray:
    """The dump's physical-to-logical map: int [layers, slots]; -1 marks an empty slot."""
    if "last_physical_to_logical_map" not in d:
        raise VibeError(f"{f}: per_pass dump lacks last_physical_to_logical_map")
    p2l = _np(d["last_physical_to_logical_map"], f, "last_physical_to_logical_map")
    if p2l.ndim != 2 or p2l.dtype.kind not in "iu" or p2l.size == 0:
        raise VibeError(
            f"{f}: last_physical_to_logical_map must be integers [layers, slots], "
            f"has shape {list(p2l.shape)} and dtype {p2l.dtype}"
        )
    p2l = p2l.astype(np.int64)
    if (p2l < -1).any() or p2l.max() < 0:
        raise VibeError(f"{f}: last_physical_to_logical_map holds ids below -1 or no expert at all")
    return p2l


def _per_pass(dumps: list[tuple[Path, dict[str, Any]]]) -> EngineDump:
    """Per rank, per forward pass: physical-slot counts; fold replicas to logical, sum ranks.
    Slots the map marks -1 hold no expert: their counts are dropped. When every rank recorded
    the same counts for every pass, every rank routed the same tokens (no a2a backend): they
    are counted once."""
    maps = {f: _p2l(d, f) for f, d in dumps}
    num_logical = max(int(m.max()) + 1 for m in maps.values())
    per_file: list[dict[int, np.ndarray]] = []
    for f, d in dumps:
        p2l = maps[f]
        used = p2l >= 0
        records = d["records"]
        if not isinstance(records, list):
            raise VibeError(f"{f}: records must be a list of per-pass dicts")
        passes: dict[int, np.ndarray] = {}
        for i, rec in enumerate(records):
            if not isinstance(rec, dict) or "global_physical_count" not in rec:
                raise VibeError(f"{f}: record {i} lacks global_physical_count")
            phys = _np(rec["global_physical_count"], f, "global_physical_count")
            if phys.shape != p2l.shape:
                raise VibeError(
                    f"{f}: record {i} global_physical_count shape "
                    f"{list(phys.shape)} differs from the map {list(p2l.shape)}"
                )
            phys = token_counts(phys, f"{f}: record {i} global_physical_count")
            logical = np.zeros((phys.shape[0], num_logical), np.int64)
            for layer in range(phys.shape[0]):
                keep = used[layer]
                np.add.at(logical[layer], p2l[layer][keep], phys[layer][keep])
            key = _pass_id(rec.get("forward_pass_id", i), f, i)
            passes[key] = passes[key] + logical if key in passes else logical
        per_file.append(passes)
    notes = []
    if _same_tokens(per_file):
        notes.append(
            f"the {len(per_file)} ranks recorded identical counts for every forward pass: every "
            "EP rank routed the same tokens (SGLang with --moe-a2a-backend none), so they are "
            "counted once"
        )
        first: dict[int, np.ndarray] = {}
        for passes in per_file:
            for key, logical in passes.items():
                first.setdefault(key, logical)
        per_file = [first]
    total: dict[int, np.ndarray] = {}
    for passes in per_file:
        for key, logical in passes.items():
            total[key] = total[key] + logical if key in total else logical
    if not total:
        raise VibeError("the per_pass dumps hold no records")
    counts = np.stack([total[k] for k in sorted(total)])
    return EngineDump(
        counts,
        "decoder",
        None,
        {"mode": "per_pass", "files": [f.name for f, _ in dumps]},
        notes=notes,
    )


def _same_tokens(per_file: list[dict[int, np.ndarray]]) -> bool:
    """Several ranks, and in every pass two or more of them recorded, the same non-zero counts."""
    if len(per_file) < 2:
        return False
    shared = 0
    for key in set().union(*per_file):
        seen = [passes[key] for passes in per_file if key in passes]
        if len(seen) < 2:
            continue
        if not all(np.array_equal(seen[0], other) for other in seen[1:]):
            return False
        shared += bool(seen[0].any())
    return shared > 0


def _pass_id(value: Any, f: Path, i: int) -> int:
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int):
        raise VibeError(f"{f}: record {i} forward_pass_id {value!r} is not an integer")
    return value
