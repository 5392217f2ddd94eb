"""import-routing: turn SGLang, TensorRT-LLM or vLLM expert-load dumps into a routing profile."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vibe_plan.artifacts.routing_profile import RoutingProfile
from vibe_plan.console import warn
from vibe_plan.errors import VibeError
from vibe_plan.routing.facts import MoeFacts, model_name, moe_facts, read_config

FORMATS = ("sglang", "trtllm", "vllm")


@dataclass
class EngineDump:
    """Counts as an engine recorded them, before layers are matched to decoder-layer ids."""

    counts: np.ndarray  # int64 [rows, layers, experts]
    layer_axis: str  # "decoder": axis 1 is every decoder layer; "moe": only MoE layers, in order
    top_k: int | None
    source: dict[str, Any] = field(default_factory=dict)
    layer_ids: list[int] | None = None  # when the dump names its layers (TensorRT-LLM)


def detect_format(source: Path) -> str:
    if source.is_dir():
        if (source / "meta_info.json").is_file():
            return "trtllm"
        if any(source.glob("*.pt")):
            return "sglang"
        if any(source.glob("*.npy")):
            return "vllm"
    elif source.suffix == ".pt":
        return "sglang"
    elif source.suffix in (".npy", ".jsonl", ".json"):
        return "vllm"
    elif source.name == "meta_info.json":
        return "trtllm"
    raise VibeError(
        f"{source}: cannot tell which engine wrote it; pass --format ({', '.join(FORMATS)})"
    )


def import_routing_run(
    source: Path, fmt: str = "auto", model_dir: Path | None = None, batch_tokens: int = 4096
) -> RoutingProfile:
    source = Path(source)
    if not source.exists():
        raise VibeError(f"{source} does not exist; pass the engine's dump file or folder")
    facts = None
    if model_dir is not None:
        cfg = read_config(model_dir)
        facts = moe_facts(cfg, model_name(model_dir, cfg), f"{model_dir}/config.json")
    fmt = detect_format(source) if fmt == "auto" else fmt
    if fmt == "sglang":
        from vibe_plan.routing.import_sglang import read_sglang

        dump = read_sglang(source)
    elif fmt == "trtllm":
        from vibe_plan.routing.import_trtllm import read_trtllm

        dump = read_trtllm(source)
    elif fmt == "vllm":
        from vibe_plan.routing.import_vllm import read_vllm

        num_experts = facts.num_experts if facts else None
        dump = read_vllm(source, num_experts, batch_tokens)
    else:
        raise VibeError(f"--format {fmt!r}: use one of auto, {', '.join(FORMATS)}")
    return _to_profile(dump, facts, fmt, batch_tokens if fmt == "vllm" else None)


def _to_profile(
    dump: EngineDump, facts: MoeFacts | None, engine: str, batch_tokens: int | None
) -> RoutingProfile:
    counts = dump.counts
    rows, n_layers, n_experts = counts.shape
    if facts is not None and facts.num_experts != n_experts:
        raise VibeError(
            f"the {engine} dump has {n_experts} experts per layer, the model config "
            f"{facts.num_experts}; is it a dump of this model?"
        )
    if dump.layer_ids is not None:
        layer_ids = dump.layer_ids
    elif dump.layer_axis == "decoder":
        if facts is not None:
            if n_layers != facts.num_hidden_layers:
                raise VibeError(
                    f"the {engine} dump has {n_layers} layers, the model has "
                    f"{facts.num_hidden_layers} decoder layers; is it a dump of this model?"
                )
            layer_ids = facts.moe_layers
        else:
            # Dense layers never route: their rows are all zero in the dump.
            layer_ids = [int(i) for i in np.nonzero(counts.sum(axis=(0, 2)))[0]]
        counts = counts[:, layer_ids, :]
    else:
        if facts is not None:
            if n_layers != len(facts.moe_layers):
                raise VibeError(
                    f"the {engine} dump has {n_layers} MoE layers, the model config "
                    f"{len(facts.moe_layers)}; is it a dump of this model?"
                )
            layer_ids = facts.moe_layers
        else:
            layer_ids = list(range(n_layers))
            warn(
                f"{engine} numbers MoE layers 0..{n_layers - 1}, not decoder layers; pass --model "
                "so the profile carries the real decoder-layer ids"
            )
    if not layer_ids:
        raise VibeError(f"the {engine} dump records no expert loads (all counts are zero)")
    keep = counts.sum(axis=(1, 2)) > 0
    if not keep.any():
        raise VibeError(f"the {engine} dump records no expert loads (all counts are zero)")
    counts = counts[keep]  # unfilled buffer slots and idle passes carry no information
    top_k = facts.top_k if facts else dump.top_k
    meta: dict[str, Any] = {
        "model": facts.model if facts else f"unknown ({engine} dump)",
        "num_experts": n_experts,
        "top_k": int(top_k) if top_k else None,
        "num_hidden_layers": facts.num_hidden_layers if facts else _layers_total(dump, layer_ids),
        "phase": "mixed",  # engines record prefill and decode passes together
        "batch_tokens": batch_tokens,
        "source": {
            "kind": "import",
            "engine": engine,
            "rows_dropped_empty": int((~keep).sum()),
            **dump.source,
        },
    }
    if facts and facts.num_groups:
        meta["num_groups"] = facts.num_groups
    if facts and facts.shared_experts:
        meta["shared_experts"] = {"count": facts.shared_experts}
    if meta["top_k"] is None:
        del meta["top_k"]
    return RoutingProfile(counts.astype(np.int64), np.asarray(layer_ids, np.int64), meta)


def _layers_total(dump: EngineDump, layer_ids: list[int]) -> int:
    if dump.layer_axis == "decoder" and dump.layer_ids is None:
        return int(dump.counts.shape[1])
    return int(max(layer_ids)) + 1
