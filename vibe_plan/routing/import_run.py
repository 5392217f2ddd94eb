"""import-routing: turn the expert loads an engine dumped (read by `vibe_plan.engines`) into a
routing profile, with decoder-layer ids and model facts from the checkpoint's config when given."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vibe_plan.artifacts.routing_profile import RoutingProfile
from vibe_plan.defaults import BATCH_TOKENS
from vibe_plan.engines import EngineDump, dump_format, read_dump
from vibe_plan.errors import VibeError
from vibe_plan.model_config import MoeFacts, expert_meta, model_name, moe_facts, read_config


@dataclass
class ImportedRouting:
    profile: RoutingProfile
    notes: list[str] = field(default_factory=list)  # warnings for the user, in reading order


def import_routing_run(
    source: Path, fmt: str = "auto", model_dir: Path | None = None, batch_tokens: int = BATCH_TOKENS
) -> ImportedRouting:
    source = Path(source)
    if not source.exists():
        raise VibeError(f"{source} does not exist; pass the engine's dump file or folder")
    facts = None
    if model_dir is not None:
        cfg = read_config(model_dir)
        facts = moe_facts(cfg, model_name(model_dir, cfg), f"{model_dir}/config.json")
    fmt = dump_format(source) if fmt == "auto" else fmt
    dump = read_dump(source, fmt, facts.num_experts if facts else None, batch_tokens)
    profile, notes = _to_profile(dump, facts, fmt, batch_tokens if fmt == "vllm" else None)
    return ImportedRouting(profile, notes)


def _to_profile(
    dump: EngineDump, facts: MoeFacts | None, engine: str, batch_tokens: int | None
) -> tuple[RoutingProfile, list[str]]:
    notes = list(dump.notes)
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
            notes.append(
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
    if facts is not None:
        meta.update(expert_meta(facts))
    if facts and facts.shared_experts:
        meta["shared_experts"] = {"count": facts.shared_experts}
    if meta["top_k"] is None:
        del meta["top_k"]
    return RoutingProfile(counts.astype(np.int64), np.asarray(layer_ids, np.int64), meta), notes


def _layers_total(dump: EngineDump, layer_ids: list[int]) -> int:
    if dump.layer_axis == "decoder" and dump.layer_ids is None:
        return int(dump.counts.shape[1])
    return int(max(layer_ids)) + 1
