"""The files each engine loads at startup, written from one vibe placement.

SGLang `--init-expert-location`: JSON with the single key `physical_to_logical_map`, one row per
decoder layer (extra keys raise TypeError in SGLang). TensorRT-LLM `moe_config.load_balancer`: YAML
with `num_slots`, `initial_global_assignments` keyed by decoder layer, `layer_updates_per_iter: 0`.
EPLB-style: JSON with `phy2log`, `log2phy` (padded with -1) and `logcnt`, rows per MoE layer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

from vibe_plan.artifacts.io import atomic_write
from vibe_plan.artifacts.placement import Placement
from vibe_plan.errors import VibeError
from vibe_plan.placement.eplb import make_log2phy


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


def sglang_text(p: Placement, num_hidden_layers: int) -> str:
    rows = decoder_rows(p, num_hidden_layers)
    body = ",\n    ".join(json.dumps(r, separators=(",", ":")) for r in rows)
    return '{\n  "physical_to_logical_map": [\n    ' + body + "\n  ]\n}\n"


def trtllm_text(p: Placement, num_hidden_layers: int) -> str:
    del num_hidden_layers  # TensorRT-LLM takes MoE layers by decoder index; dense ones are absent
    doc = {
        "num_slots": int(p.num_physical_experts),
        "initial_global_assignments": {
            int(layer): p.phy2log[i].astype(int).tolist() for i, layer in enumerate(p.layer_ids)
        },
        "layer_updates_per_iter": 0,
    }
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=1 << 16)


def eplb_text(p: Placement, num_hidden_layers: int) -> str:
    del num_hidden_layers
    log2phy = make_log2phy(p.phy2log, p.num_logical_experts)
    doc = {
        "layer_ids": [int(x) for x in p.layer_ids],
        "phy2log": p.phy2log.astype(int).tolist(),
        "log2phy": log2phy.astype(int).tolist(),
        "logcnt": p.logcnt().astype(int).tolist(),
    }
    return json.dumps(doc, separators=(",", ":")) + "\n"


EXPORTERS: dict[str, Callable[[Placement, int], str]] = {
    "sglang": sglang_text,
    "trtllm": trtllm_text,
    "eplb": eplb_text,
}


def parse_export_specs(specs: list[str]) -> list[tuple[str, Path]]:
    """`["sglang=out/a.json", ...]` -> [(format, path)], checked before any solving starts."""
    out = []
    for spec in specs:
        fmt, sep, path = spec.partition("=")
        if not sep or not path:
            raise VibeError(
                f"--export {spec!r}: write FORMAT=PATH, e.g. sglang=placement.sglang.json"
            )
        if fmt not in EXPORTERS:
            raise VibeError(
                f"--export {spec!r}: unknown format {fmt!r}; use one of {', '.join(EXPORTERS)}"
            )
        folder = Path(path).parent
        if str(folder) and not folder.is_dir():
            raise VibeError(f"--export {spec!r}: folder {folder} does not exist; create it first")
        if Path(path).is_dir():
            raise VibeError(f"--export {spec!r}: {path} is a folder; give a file name")
        out.append((fmt, Path(path)))
    return out


def export_texts(p: Placement, specs: list[tuple[str, Path]], num_hidden_layers: int) -> list[str]:
    return [EXPORTERS[fmt](p, num_hidden_layers) for fmt, _ in specs]


def export_placement(p: Placement, specs: list[tuple[str, Path]], num_hidden_layers: int) -> None:
    """Render every export first, then write them, so a failure writes none."""
    for (_, path), text in zip(specs, export_texts(p, specs, num_hidden_layers), strict=True):
        atomic_write(path, text)
