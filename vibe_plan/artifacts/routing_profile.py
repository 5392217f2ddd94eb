"""Routing profile (`vibe.routing-profile/v1`, .npz): tokens per (batch, MoE layer, expert)."""

from __future__ import annotations

import json
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vibe_plan.artifacts.io import atomic_write_with, require_file
from vibe_plan.errors import VibeError, first_line
from vibe_plan.model_config import MAX_EXPERTS as MAX_EXPERTS  # the limits of a model's size
from vibe_plan.model_config import MAX_LAYERS as MAX_LAYERS

ROUTING_SCHEMA = "vibe.routing-profile/v1"
PHASES = ("prefill", "decode", "mixed")
ROW_PHASES = ("all", "prefill", "decode")  # which rows a plan is made for or scored on
MAX_COUNT = 2**40  # tokens of one expert in one batch; more is not a trace (and sums overflow)
NPZ_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip archive (an empty one: the second)
NPY_MAGIC = b"\x93NUMPY"


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

    @property
    def expert_shape(self) -> tuple[int, int, bool] | None:
        """(hidden, intermediate, gated) of the model's expert FFN, where the meta records it."""
        e = self.meta.get("expert")
        if not isinstance(e, dict):
            return None
        return int(e["hidden"]), int(e["intermediate"]), bool(e.get("gated", True))

    def mean_load(self) -> np.ndarray:
        """Mean tokens per batch for each (MoE layer, expert), float [L, E]."""
        return self.counts.mean(axis=0)

    def row_phases(self) -> list[str]:
        """Phase of each row: meta.row_phase where present, else meta.phase (or "mixed") for every
        row."""
        B = self.num_batches
        rows = self.meta.get("row_phase")
        if rows is not None:
            ok = isinstance(rows, list) and len(rows) == B
            if not (ok and all(isinstance(x, str) for x in rows)):
                raise VibeError(
                    f"routing profile: meta.row_phase must list {B} phases, one per row"
                )
            return list(rows)
        return [str(self.meta.get("phase") or "mixed")] * B

    def select_rows(self, rows: Any) -> RoutingProfile:
        """These batch rows (indices or a mask), their per-row meta lists picked alike."""
        idx = np.arange(self.num_batches)[rows]
        meta = dict(self.meta)
        for key in ROW_KEYS:
            if isinstance(meta.get(key), list):
                meta[key] = [meta[key][i] for i in idx]
        shared = meta.get("shared_experts")
        if isinstance(shared, dict) and isinstance(shared.get("tokens"), list):
            meta["shared_experts"] = {**shared, "tokens": [shared["tokens"][i] for i in idx]}
        return RoutingProfile(self.counts[idx], self.layer_ids, meta)

    def split(self, holdout_fraction: float) -> tuple[RoutingProfile, RoutingProfile]:
        """First batches to plan on, last batches held out to measure on (trace order)."""
        n_hold = int(round(self.num_batches * holdout_fraction))
        n_hold = min(max(n_hold, 1), self.num_batches - 1) if self.num_batches > 1 else 0
        cut = self.num_batches - n_hold
        head = self.select_rows(np.arange(cut))
        tail = self.select_rows(np.arange(cut, self.num_batches))
        return head, tail


ROW_KEYS = ("row_tokens", "row_phase")  # meta lists with one entry per batch row


def validate_routing(
    counts: Any, layer_ids: Any, meta: Any, path: Path | str = "<routing profile>"
) -> RoutingProfile:
    counts = _counts(path, np.asarray(counts))
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
    if layer_ids.dtype.kind == "u" and int(layer_ids.max()) >= MAX_LAYERS:
        raise VibeError.at(path, "layer_ids", f"must lie in [0, {MAX_LAYERS})")
    layer_ids = layer_ids.astype(np.int64)
    if (layer_ids < 0).any() or np.any(np.diff(layer_ids) <= 0):
        raise VibeError.at(path, "layer_ids", "must be non-negative and strictly increasing")
    if int(layer_ids.max()) >= MAX_LAYERS:
        raise VibeError.at(
            path, "layer_ids", f"reach {int(layer_ids.max())}; a model has < {MAX_LAYERS} layers"
        )
    meta = _meta(path, meta, counts, layer_ids)
    return RoutingProfile(counts, layer_ids, meta)


def _counts(path: Path | str, counts: np.ndarray) -> np.ndarray:
    """int64 [B, L, E] token counts: integral, non-negative, of a size a trace can have."""
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
    if counts.shape[2] > MAX_EXPERTS:
        raise VibeError.at(
            path,
            "counts",
            f"has {counts.shape[2]} experts per layer, more than any model (at most "
            f"{MAX_EXPERTS:,}); is the file corrupt?",
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
    # Range checks on the values as stored: a cast first would wrap huge unsigned ones negative.
    if counts.dtype.kind != "u" and counts.min() < 0:
        raise VibeError.at(path, "counts", "contains negative values; token counts are >= 0")
    if counts.max() > MAX_COUNT:
        raise VibeError.at(
            path,
            "counts",
            f"holds {counts.max():.4g} tokens for one expert in one batch (more than "
            f"{MAX_COUNT:,}): not a recorded trace; is the file corrupt?",
        )
    return counts.astype(np.int64)


def _meta_int(
    path: Path | str,
    meta: dict[str, Any],
    key: str,
    low: int,
    high: int | None = None,
    where: str = "meta",
) -> int | None:
    """meta[key] as an int in [low, high] (an integral float is accepted), or None if absent."""
    v = meta.get(key)
    if v is None:
        return None
    ok = isinstance(v, int | float) and not isinstance(v, bool)
    if ok and isinstance(v, float):
        ok = np.isfinite(v) and v == int(v)
    if not ok or v < low or (high is not None and v > high):
        span = f"in {low}..{high:,}" if high is not None else f">= {low}"
        raise VibeError.at(path, f"{where}.{key}", f"{v!r} must be an integer {span}")
    meta[key] = int(v)
    return int(v)


def _meta(path: Path | str, meta: Any, counts: np.ndarray, layer_ids: np.ndarray) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise VibeError.at(path, "meta", "must be a JSON object")
    meta = dict(meta)
    if meta.get("schema") != ROUTING_SCHEMA:
        raise VibeError.at(
            path, "meta.schema", f"expected {ROUTING_SCHEMA!r}, found {meta.get('schema')!r}"
        )
    E = int(counts.shape[2])
    ne = _meta_int(path, meta, "num_experts", 1)
    if ne is not None and ne != E:
        raise VibeError.at(path, "meta.num_experts", f"says {ne} but counts has {E} experts")
    nh = _meta_int(path, meta, "num_hidden_layers", 1, MAX_LAYERS)
    if nh is not None and nh <= int(layer_ids.max()):
        raise VibeError.at(
            path, "meta.num_hidden_layers", f"{nh} but layer_ids reach {int(layer_ids.max())}"
        )
    ng = _meta_int(path, meta, "num_groups", 1, E)
    if ng is not None and E % ng != 0:
        raise VibeError.at(
            path,
            "meta.num_groups",
            f"{ng} does not divide {E} experts; it must be the model's expert-group count",
        )
    _meta_int(path, meta, "top_k", 1, E)
    _meta_int(path, meta, "topk_group", 1, E)
    _meta_int(path, meta, "batch_tokens", 1)
    phase = meta.get("phase")
    if phase is not None and phase not in PHASES:
        raise VibeError.at(path, "meta.phase", f"{phase!r} is not one of {', '.join(PHASES)}")
    if meta.get("expert") is not None:
        meta["expert"] = _expert_meta(path, meta["expert"])
    _row_lists(path, meta, counts.shape[0])
    return meta


def _row_lists(path: Path | str, meta: dict[str, Any], rows: int) -> None:
    """meta.row_tokens (valid tokens per row) and meta.row_phase (prefill/decode per row)."""
    for key in ROW_KEYS:
        value = meta.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or len(value) != rows:
            raise VibeError.at(path, f"meta.{key}", f"must list one entry per batch row ({rows})")
    for i, t in enumerate(meta.get("row_tokens") or []):
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise VibeError.at(path, f"meta.row_tokens[{i}]", f"{t!r} is not a token count >= 0")
    for i, p in enumerate(meta.get("row_phase") or []):
        if p not in ("prefill", "decode"):
            raise VibeError.at(path, f"meta.row_phase[{i}]", f"{p!r} is not prefill or decode")


def _expert_meta(path: Path | str, e: Any) -> dict[str, Any]:
    """meta.expert: the expert FFN shape of the model, {hidden, intermediate, gated}."""
    if not isinstance(e, dict):
        raise VibeError.at(path, "meta.expert", "must be an object {hidden, intermediate, gated}")
    e = dict(e)
    for key in ("hidden", "intermediate"):
        if e.get(key) is None:
            raise VibeError.at(path, f"meta.expert.{key}", "missing")
        _meta_int(path, e, key, 1, where="meta.expert")
    if not isinstance(e.get("gated", True), bool):
        raise VibeError.at(path, "meta.expert.gated", f"{e['gated']!r} must be true or false")
    return e


def load_routing_profile(path: str | Path) -> RoutingProfile:
    path = require_file(path, "routing profile")
    not_npz = (
        f"{path}: not an .npz routing profile (a zip archive holding counts, layer_ids and meta, "
        "written by profile-routing or import-routing)"
    )
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(NPY_MAGIC):
        raise VibeError(f"{not_npz}; this is a single .npy array")
    if not head.startswith(NPZ_MAGIC):
        raise VibeError(f"{not_npz}; check the --routing path")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (
        zipfile.BadZipFile,
        zlib.error,
        OSError,
        ValueError,
        EOFError,
        NotImplementedError,
    ) as e:
        raise VibeError(
            f"{path}: not a readable .npz file ({first_line(e)}); is this a routing profile?"
        ) from None
    for key in ("counts", "layer_ids", "meta"):
        if key not in arrays:
            raise VibeError.at(path, key, "missing from the .npz (needs counts, layer_ids, meta)")
    raw_meta = arrays["meta"]
    if raw_meta.ndim != 0 or raw_meta.dtype.kind not in "US":
        raise VibeError.at(path, "meta", "must be a 0-d string array holding JSON")
    try:
        text = raw_meta[()]
        meta = json.loads(
            text.decode() if isinstance(text, bytes) else str(text), parse_constant=_no_constant
        )
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError too
        why = "nested too deeply" if isinstance(e, RecursionError) else first_line(e)
        raise VibeError.at(path, "meta", f"is not valid JSON ({why})") from None
    return validate_routing(arrays["counts"], arrays["layer_ids"], meta, path)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


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


def check_phase(phase: str) -> None:
    if phase not in ROW_PHASES:
        raise VibeError(f"--phase is {phase!r}; give one of {', '.join(ROW_PHASES)}")


def rows_of_phase(rp: RoutingProfile, path: Path | str, phase: str) -> tuple[RoutingProfile, bool]:
    """The rows of one phase (`prefill`, `decode`), or all rows (`all`); and whether all rows mix
    prefill and decode ones (whose mean load is neither phase's)."""
    check_phase(phase)
    phases = np.asarray(rp.row_phases())
    if phase == "all":
        return rp, {"prefill", "decode"} <= set(phases.tolist())
    rows = phases == phase
    if not rows.any():
        found = ", ".join(sorted(set(phases.tolist())))
        raise VibeError(
            f"{path}: --phase {phase}: the routing profile has no {phase} rows (its rows are "
            f"{found}); record them with vibe profile-routing --phase {phase} (or both)"
        )
    return rp.select_rows(rows), False
