"""TensorRT-LLM: the MoE load-balancer placement file and the expert-statistics dumps.

Placement (`moe_config.load_balancer: PATH`): YAML with `num_slots`, `initial_global_assignments`
(a row of logical experts per slot, keyed by decoder layer; dense layers are absent) and
`layer_updates_per_iter: 0` (static). Dumps (EXPERT_STATISTIC_PATH): `meta_info.json`
(`num_experts`, `num_experts_per_token`) + `rank{r}.safetensors`, one [num_experts] count vector
per key "{iter}_{layer}", each rank counting its own tokens.
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


def placement_text(p: Placement, num_hidden_layers: int) -> str:
    del num_hidden_layers  # TensorRT-LLM takes MoE layers by decoder index; dense ones are absent
    doc = {
        "num_slots": int(p.num_physical_experts),
        "initial_global_assignments": {
            int(layer): p.phy2log[i].astype(int).tolist() for i, layer in enumerate(p.layer_ids)
        },
        "layer_updates_per_iter": 0,
    }
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=1 << 16)


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
    """Rows are keyed by decoder layer: `layer_ids` (the routing profile's) picks them. Rows for
    other layers are not scored: a warning. `num_slots` must match the rows' length."""
    del num_hidden_layers  # rows are keyed by decoder layer; dense ones are absent
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
    if extra:
        warns.append(
            f"initial_global_assignments has rows for decoder layers {extra[:6]} that are not "
            "MoE layers of the routing profile; they are not scored (is this file for another "
            "model?)"
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
    """The statistics folder (or a file in it): counts summed over ranks, per iteration."""
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
    files = sorted(folder.glob("rank*.safetensors"), key=_rank)
    if not files:
        raise VibeError(f"{folder}: no rank*.safetensors files next to meta_info.json")
    from safetensors.numpy import load_file

    totals: dict[tuple[int, int], np.ndarray] = {}
    for f in files:
        try:
            tensors = load_file(str(f))
        except Exception as e:  # safetensors raises its own error type for a bad header
            raise VibeError(f"{f}: not a readable safetensors file ({e})") from None
        for key, arr in tensors.items():
            m = KEY.match(key)
            if m is None:
                raise VibeError(f'{f}: key {key!r} is not "{{iter}}_{{layer}}"')
            if arr.shape != (num_experts,):
                raise VibeError(
                    f"{f}: {key} has shape {list(arr.shape)}; expected "
                    f"[{num_experts}] (num_experts in meta_info.json)"
                )
            it_layer = (int(m.group(1)), int(m.group(2)))
            arr = token_counts(arr, f"{f}: {key}")  # ranks count their own tokens: sum them
            totals[it_layer] = totals[it_layer] + arr if it_layer in totals else arr
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
    notes = []
    if missing:
        notes.append(f"{missing} (iteration, layer) pairs missing from the dump; counted as zero")
    return EngineDump(
        counts,
        "decoder",
        top_k,
        {"files": [f.name for f in files], "iterations": [iters[0], iters[-1]]},
        layer_ids=layers,
        notes=notes,
    )


def _rank(path: Path) -> int:
    m = re.search(r"(\d+)", path.stem)
    return int(m.group(1)) if m else 0
