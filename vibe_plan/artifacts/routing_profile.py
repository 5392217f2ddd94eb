"""Routing profile (`vibe.routing-profile/v1`, .npz): tokens per (batch, MoE layer, expert)."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vibe_plan.artifacts.io import atomic_write_with, require_file
from vibe_plan.errors import VibeError

ROUTING_SCHEMA = "vibe.routing-profile/v1"
PHASES = ("prefill", "decode", "mixed")


@dataclass
class RoutingProfile:
    counts: np.ndarray  # int64 [B, L, E]
    layer_ids: np.ndarray  # int64 [L], decoder-layer index of each MoE layer
    meta: dict[str, Any]

    @property
    def num_batches(self) -> int:
        return int(self.counts.shape[0])

    @property
    def num_layers(self) -> int:
        return int(self.counts.shape[1])

    @property
    def num_experts(self) -> int:
        return int(self.counts.shape[2])

    @property
    def num_hidden_layers(self) -> int:
        return int(self.meta.get("num_hidden_layers") or (int(self.layer_ids.max()) + 1))

    @property
    def num_groups(self) -> int | None:
        g = self.meta.get("num_groups")
        return int(g) if g else None

    def mean_load(self) -> np.ndarray:
        """Mean tokens per batch for each (MoE layer, expert), float [L, E]."""
        return self.counts.mean(axis=0)

    def split(self, holdout_fraction: float) -> tuple[RoutingProfile, RoutingProfile]:
        """First batches to plan on, last batches held out to measure on (trace order)."""
        n_hold = int(round(self.num_batches * holdout_fraction))
        n_hold = min(max(n_hold, 1), self.num_batches - 1) if self.num_batches > 1 else 0
        cut = self.num_batches - n_hold
        head = RoutingProfile(self.counts[:cut], self.layer_ids, dict(self.meta))
        tail = RoutingProfile(self.counts[cut:], self.layer_ids, dict(self.meta))
        return head, tail


def validate_routing(
    counts: Any, layer_ids: Any, meta: Any, path: Path | str = "<routing profile>"
) -> RoutingProfile:
    counts = np.asarray(counts)
    if counts.ndim != 3:
        raise VibeError.at(
            path,
            "counts",
            f"must have rank 3 [batches, layers, experts], has shape {list(counts.shape)}",
        )
    if counts.size == 0 or 0 in counts.shape:
        raise VibeError.at(
            path, "counts", f"is empty (shape {list(counts.shape)}); record some batches"
        )
    if counts.dtype.kind == "f":
        if not np.all(np.isfinite(counts)):
            raise VibeError.at(path, "counts", "contains NaN or inf; token counts must be integers")
        if not np.all(counts == np.round(counts)):
            raise VibeError.at(
                path, "counts", "contains non-integer values; token counts must be integers"
            )
    elif counts.dtype.kind not in "iu":
        raise VibeError.at(path, "counts", f"dtype {counts.dtype} is not an integer type")
    counts = counts.astype(np.int64)
    if (counts < 0).any():
        raise VibeError.at(path, "counts", "contains negative values")
    layer_ids = np.asarray(layer_ids)
    if layer_ids.ndim != 1 or layer_ids.dtype.kind not in "iu":
        raise VibeError.at(path, "layer_ids", "must be a 1-d integer array")
    if len(layer_ids) != counts.shape[1]:
        raise VibeError.at(
            path,
            "layer_ids",
            f"has {len(layer_ids)} entries but counts has "
            f"{counts.shape[1]} layers; they must match",
        )
    layer_ids = layer_ids.astype(np.int64)
    if (layer_ids < 0).any() or np.any(np.diff(layer_ids) <= 0):
        raise VibeError.at(path, "layer_ids", "must be non-negative and strictly increasing")
    if not isinstance(meta, dict):
        raise VibeError.at(path, "meta", "must be a JSON object")
    if meta.get("schema") != ROUTING_SCHEMA:
        raise VibeError.at(
            path, "meta.schema", f"expected {ROUTING_SCHEMA!r}, found {meta.get('schema')!r}"
        )
    ne = meta.get("num_experts")
    if ne is not None and int(ne) != counts.shape[2]:
        raise VibeError.at(
            path, "meta.num_experts", f"says {ne} but counts has {counts.shape[2]} experts"
        )
    nh = meta.get("num_hidden_layers")
    if nh is not None and int(nh) <= int(layer_ids.max()):
        raise VibeError.at(
            path, "meta.num_hidden_layers", f"{nh} but layer_ids reach {int(layer_ids.max())}"
        )
    ng = meta.get("num_groups")
    if ng and counts.shape[2] % int(ng) != 0:
        raise VibeError.at(
            path, "meta.num_groups", f"{ng} does not divide {counts.shape[2]} experts"
        )
    phase = meta.get("phase")
    if phase is not None and phase not in PHASES:
        raise VibeError.at(path, "meta.phase", f"{phase!r} is not one of {', '.join(PHASES)}")
    return RoutingProfile(counts, layer_ids, meta)


def load_routing_profile(path: str | Path) -> RoutingProfile:
    path = require_file(path, "routing profile")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise VibeError(f"{path}: not a readable .npz file ({e}); is this a routing profile?")
    for key in ("counts", "layer_ids", "meta"):
        if key not in arrays:
            raise VibeError.at(path, key, "missing from the .npz (needs counts, layer_ids, meta)")
    raw_meta = arrays["meta"]
    if raw_meta.ndim != 0 or raw_meta.dtype.kind not in "US":
        raise VibeError.at(path, "meta", "must be a 0-d string array holding JSON")
    try:
        text = raw_meta[()]
        meta = json.loads(text.decode() if isinstance(text, bytes) else str(text))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VibeError.at(path, "meta", f"is not valid JSON ({e})")
    return validate_routing(arrays["counts"], arrays["layer_ids"], meta, path)


def save_routing_profile(profile: RoutingProfile, path: str | Path) -> None:
    meta = {"schema": ROUTING_SCHEMA, **profile.meta}
    meta.setdefault("num_experts", profile.num_experts)
    rp = validate_routing(profile.counts, profile.layer_ids, meta, "<profile being written>")

    def write(f: Any) -> None:
        np.savez_compressed(
            f,
            counts=rp.counts.astype(np.int64),
            layer_ids=rp.layer_ids.astype(np.int64),
            meta=np.array(json.dumps(rp.meta, sort_keys=True)),
        )

    atomic_write_with(path, write)
