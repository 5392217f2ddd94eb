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

from vibe_plan.artifacts.io import read_doc, require_file, write_all
from vibe_plan.artifacts.placement import (
    PLACEMENT_SCHEMA,
    Placement,
    check_map,
    dump_placement,
    placement_from_doc,
)
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
    "export_placement",
    "export_texts",
    "load_placement",
    "parse_export_specs",
    "placement_format",
    "read_dump",
]

# --- placement files -----------------------------------------------------------------------------

EXPORTERS: dict[str, Callable[[Placement, int], str]] = {
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


def export_texts(p: Placement, specs: list[tuple[str, Path]], num_hidden_layers: int) -> list[str]:
    return [EXPORTERS[fmt](p, num_hidden_layers) for fmt, _ in specs]


def export_placement(
    p: Placement,
    specs: list[tuple[str, Path]],
    num_hidden_layers: int,
    out: Path | None = None,
) -> None:
    """Write the engine files (and the vibe placement itself to `out`), all or none: every text
    is rendered first, then `write_all` puts every file in place or leaves every target as it
    was."""
    texts = export_texts(p, specs, num_hidden_layers)
    if out is not None:
        check_map(p.phy2log, p.num_gpus, p.num_logical_experts)
        texts, specs = [dump_placement(p), *texts], [("vibe", Path(out)), *specs]
    write_all([(path, text) for (_, path), text in zip(specs, texts, strict=True)])


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
