"""EPLB-style placement tensors, as DeepSeek's EPLB returns them, for tooling written around them.

JSON with `layer_ids`, `phy2log` [L, P], `log2phy` [L, E, R + 1] and `logcnt` [L, E], rows per
MoE layer (R = P - E redundant slots). `log2phy[l, e]` lists expert `e`'s slots in ascending
order, then -1: the width DeepSeek's EPLB (`maxlogcnt = P - E + 1`) and vLLM's
`logical_to_physical_map` use. Reading needs only `phy2log`; `layer_ids`, `logcnt` and `log2phy`,
where present, are checked against it (and the routing profile); `log2phy` may be padded to any
width (vLLM revisions pad to 1024) or only to the largest replica count. A placement file only:
there are no EPLB load dumps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vibe_plan.artifacts.placement import Placement, int_map, layer_id_list
from vibe_plan.engines.common import engine_placement
from vibe_plan.errors import VibeError

PLACEMENT_KEY = "phy2log"
PLACEMENT_METHOD = "eplb-file"


def placement_text(p: Placement, num_hidden_layers: int, mtp_layers: int = 0) -> str:
    del num_hidden_layers, mtp_layers  # rows are MoE layers only
    log2phy = padded_log2phy(p.phy2log, p.num_logical_experts)
    doc = {
        "layer_ids": [int(x) for x in p.layer_ids],
        "phy2log": p.phy2log.astype(int).tolist(),
        "log2phy": log2phy.astype(int).tolist(),
        "logcnt": p.logcnt().astype(int).tolist(),
    }
    return json.dumps(doc, separators=(",", ":")) + "\n"


def padded_log2phy(phy2log: np.ndarray, num_experts: int) -> np.ndarray:
    """[L, E, R + 1]: each expert's slots in ascending order, then -1 (R = P - E)."""
    rows, num_slots = phy2log.shape
    out = np.full((rows, num_experts, num_slots - num_experts + 1), -1, np.int64)
    for layer in range(rows):
        seen = np.zeros(num_experts, np.int64)
        for slot, e in enumerate(phy2log[layer]):
            out[layer, e, seen[e]] = slot
            seen[e] += 1
    return out


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
    """Rows are per MoE layer, in the routing profile's order. The file's own `layer_ids`,
    `logcnt` and `log2phy`, where present, must agree with the profile and with `phy2log`."""
    del num_hidden_layers  # rows are MoE layers only
    m = int_map(path, PLACEMENT_KEY, doc[PLACEMENT_KEY])
    if "layer_ids" in doc:
        own = layer_id_list(path, "layer_ids", doc["layer_ids"])
        if len(own) != m.shape[0]:
            raise VibeError(
                f"{path}: layer_ids has {len(own)} entries but phy2log has {m.shape[0]} rows"
            )
        if layer_ids is not None and own != list(layer_ids):
            raise VibeError(
                f"{path}: layer_ids: the file is for MoE layers {own[:6]}... but the routing "
                f"profile has {list(layer_ids)[:6]}...; is this file for another model?"
            )
        layer_ids = own if layer_ids is None else layer_ids
    p, warns = engine_placement(path, m, PLACEMENT_METHOD, num_gpus, layer_ids, num_experts)
    if "logcnt" in doc:
        logcnt = int_map(path, "logcnt", doc["logcnt"])
        if not np.array_equal(logcnt, p.logcnt()):
            raise VibeError(
                f"{path}: logcnt contradicts phy2log (replica counts differ"
                f"{_first_diff(logcnt, p.logcnt())}); the file is inconsistent"
            )
    if "log2phy" in doc:
        _check_log2phy(path, doc["log2phy"], p)
    return p, warns


def _first_diff(a: np.ndarray, b: np.ndarray) -> str:
    if a.shape != b.shape:
        return f": shape {list(a.shape)}, phy2log gives {list(b.shape)}"
    layer, e = (int(x) for x in np.argwhere(a != b)[0])
    return f" first at row {layer}, expert {e}: {int(a[layer, e])} vs {int(b[layer, e])}"


def _check_log2phy(path: Path, value: Any, p: Placement) -> None:
    """log2phy [L, E, width]: each expert's slots in phy2log, then -1 to the width. Engines take
    the first `logcnt` entries, so every slot comes before the padding."""
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError, RecursionError):
        arr = np.asarray(None)
    L, E = p.phy2log.shape[0], p.num_logical_experts
    if arr.ndim != 3 or arr.dtype.kind not in "iu" or arr.shape[:2] != (L, E):
        raise VibeError(
            f"{path}: log2phy must be integers [{L} layers, {E} experts, replicas], has shape "
            f"{list(arr.shape)}"
        )
    logcnt = p.logcnt()
    for layer in range(L):
        for e in range(E):
            slots = arr[layer, e]
            n = int(logcnt[layer, e])
            actual = np.flatnonzero(p.phy2log[layer] == e).tolist()
            listed = sorted(int(x) for x in slots[:n])
            if listed != actual or (slots[n:] != -1).any():
                shown = [int(x) for x in slots if x != -1]
                raise VibeError(
                    f"{path}: log2phy[{layer}][{e}] lists slots {shown[:8]} (then -1) but phy2log "
                    f"puts expert {e} in slots {actual[:8]}; the file is inconsistent"
                )
