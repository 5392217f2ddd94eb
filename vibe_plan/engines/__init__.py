"""The serving engines' files, one module per engine; this registry picks the module for a file.

`sglang`, `trtllm` and `eplb` read and write a placement file (`placement_text`, `is_placement`,
`read_placement`); `sglang`, `trtllm` and `vllm` read load dumps (`read_dump` -> `EngineDump`).
Engine modules know nothing of the planner or of routing profiles, and never print: what the user
should hear comes back as notes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vibe_plan.artifacts.io import read_doc, require_file, write_all
from vibe_plan.artifacts.placement import (
    PLACEMENT_SCHEMA,
    Placement,
    check_map,
    dump_placement,
    placement_from_doc,
)
from vibe_plan.artifacts.routing_profile import MAX_LAYERS
from vibe_plan.defaults import BATCH_TOKENS
from vibe_plan.engines import eplb, sglang, trtllm, vllm
from vibe_plan.engines.common import EngineDump, decoder_rows
from vibe_plan.errors import VibeError

__all__ = [
    "DUMP_FORMATS",
    "EXPORTERS",
    "EngineDump",
    "decoder_rows",
    "dump_format",
    "export_notes",
    "export_placement",
    "export_texts",
    "load_placement",
    "mtp_layer_count",
    "parse_export_specs",
    "placement_format",
    "read_dump",
    "slot_map",
]

# --- placement files -----------------------------------------------------------------------------

# (placement, decoder layers of the model, MTP layers of the model) -> file text
EXPORTERS: dict[str, Callable[[Placement, int, int], str]] = {
    "sglang": sglang.placement_text,
    "trtllm": trtllm.placement_text,
    "eplb": eplb.placement_text,
}

# In the order they are tried on a file that is not a vibe placement.
_PLACEMENT_READERS = {"sglang": sglang, "eplb": eplb, "trtllm": trtllm}


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


def export_texts(
    p: Placement, specs: list[tuple[str, Path]], num_hidden_layers: int, mtp_layers: int = 0
) -> list[str]:
    return [EXPORTERS[fmt](p, num_hidden_layers, mtp_layers) for fmt, _ in specs]


def export_placement(
    p: Placement,
    specs: list[tuple[str, Path]],
    num_hidden_layers: int,
    out: Path | None = None,
    mtp_layers: int = 0,
    routing_meta: dict[str, Any] | None = None,
) -> list[str]:
    """Write the engine files (and the vibe placement itself to `out`), all or none: every text
    is rendered first, then `write_all` puts every file in place or leaves every target as it
    was. `mtp_layers`: the model's MTP (next-n) layers, which TensorRT-LLM looks up in its file
    too. `routing_meta` (the routing profile's) names the model for the engines' own limits.
    Returns notes for the user."""
    texts = export_texts(p, specs, num_hidden_layers, mtp_layers)
    notes = export_notes(specs, routing_meta or {})
    if out is not None:
        check_map(p.phy2log, p.num_gpus, p.num_logical_experts)
        texts, specs = [dump_placement(p), *texts], [("vibe", Path(out)), *specs]
    write_all([(path, text) for (_, path), text in zip(specs, texts, strict=True)])
    return notes


def export_notes(specs: list[tuple[str, Path]], routing_meta: dict[str, Any]) -> list[str]:
    """What the user should hear about the exports for this model (see `trtllm.export_notes`)."""
    if not any(fmt == "trtllm" for fmt, _ in specs):
        return []
    model_type = routing_meta.get("model_type")
    architecture = routing_meta.get("architecture")
    return trtllm.export_notes(
        model_type if isinstance(model_type, str) else None,
        architecture if isinstance(architecture, str) else None,
    )


def mtp_layer_count(option: int | None, routing_meta: dict[str, Any]) -> int:
    """The MTP layers to export: `--mtp-layers` when given, else the routing profile's
    `meta.mtp_layers` (the model's `num_nextn_predict_layers`), else 0."""
    if option is not None:
        if not 0 <= option <= MAX_LAYERS:
            raise VibeError(f"--mtp-layers is {option}; give 0 or more (the model's MTP layers)")
        return option
    value = routing_meta.get("mtp_layers", 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LAYERS:
        raise VibeError(
            f"the routing profile's meta.mtp_layers is {value!r}; it must be an integer 0 or "
            "more (pass --mtp-layers to override)"
        )
    return value


def placement_format(path: str | Path, doc: Any) -> str:
    """Which placement format a parsed file holds: "vibe", "sglang", "eplb" or "trtllm"."""
    if not isinstance(doc, dict):
        raise VibeError(f"{path}: top level must be a mapping (JSON object)")
    if "schema" in doc:  # a vibe placement, or one of another version (refused when read)
        return "vibe"
    for name, module in _PLACEMENT_READERS.items():
        if module.is_placement(doc):
            return name
    raise VibeError(
        f"{path}: unknown placement format: expected schema {PLACEMENT_SCHEMA!r}, a "
        "TensorRT-LLM file with initial_global_assignments, "
        "an SGLang file with only physical_to_logical_map, or one with phy2log"
    )


def load_placement(
    path: str | Path,
    num_gpus: int | None = None,
    layer_ids: list[int] | None = None,
    num_experts: int | None = None,
    num_hidden_layers: int | None = None,
) -> tuple[Placement, list[str]]:
    """Read a vibe placement, an SGLang init-expert-location JSON, a TensorRT-LLM load-balancer
    YAML or an EPLB-style JSON.

    Engine files carry no GPU count or layer ids: `num_gpus` and `layer_ids` (from the GPU and
    routing profiles) fill them in; SGLang rows are per decoder layer and get picked by `layer_ids`
    (and must number `num_hidden_layers`, the routing profile's decoder layers, when known).
    Returns the placement and warnings.
    """
    path = require_file(path, "placement")
    doc = read_doc(path, "placement file")
    fmt = placement_format(path, doc)
    if fmt == "vibe":
        return placement_from_doc(path, doc, num_gpus, layer_ids, num_experts)
    reader = _PLACEMENT_READERS[fmt]
    return reader.read_placement(path, doc, num_gpus, layer_ids, num_experts, num_hidden_layers)


def slot_map(
    path: str | Path,
    layer_ids: list[int],
    num_experts: int | None = None,
    num_hidden_layers: int | None = None,
) -> tuple[np.ndarray, int]:
    """The slot -> expert rows [len(layer_ids), slots] of a placement file in any format (read
    with `load_placement`), for folding slot counts back onto experts, and the expert count.

    Only the map matters here, not how its slots split over GPUs, so an engine file (which
    carries no GPU count) is read as one GPU's slots and the layout warnings are dropped.
    """
    path = require_file(path, "--placement")
    fmt = placement_format(path, read_doc(path, "placement file"))
    num_gpus = None if fmt == "vibe" else 1
    p, _ = load_placement(path, num_gpus, layer_ids, num_experts, num_hidden_layers)
    return p.phy2log, p.num_logical_experts


# --- load dumps ----------------------------------------------------------------------------------

DUMP_FORMATS = ("sglang", "trtllm", "vllm")


def dump_format(source: Path) -> str:
    """Which engine wrote a load dump (file or folder), from its file names."""
    if source.is_dir():
        if (source / "meta_info.json").is_file():
            return "trtllm"
        if any(source.glob("*.pt")):
            return "sglang"
        if any(source.glob("*.npy")):
            return "vllm"
    elif source.name == "meta_info.json" or source.suffix == ".safetensors":
        return "trtllm"  # a file of TensorRT-LLM's statistics folder (before the .json rule)
    elif source.suffix == ".pt":
        return "sglang"
    elif source.suffix in (".npy", ".jsonl", ".json"):
        return "vllm"
    raise VibeError(
        f"{source}: cannot tell which engine wrote it; pass --format ({', '.join(DUMP_FORMATS)})"
    )


def read_dump(
    source: Path, fmt: str, num_experts: int | None = None, batch_tokens: int = BATCH_TOKENS
) -> EngineDump:
    """The load dump at `source` as engine `fmt` wrote it. vLLM records expert ids per request:
    `num_experts` sizes its counts (None: the largest id seen + 1) and `batch_tokens` joins
    requests into rows; the other engines record counts and ignore both."""
    if fmt == "sglang":
        return sglang.read_dump(source)
    if fmt == "trtllm":
        return trtllm.read_dump(source)
    if fmt == "vllm":
        return vllm.read_dump(source, num_experts, batch_tokens)
    raise VibeError(f"--format {fmt!r}: use one of auto, {', '.join(DUMP_FORMATS)}")
