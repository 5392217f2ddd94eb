"""EPLB-style placement tensors, as DeepSeek's EPLB returns them, for tooling written around them.

JSON with `layer_ids`, `phy2log` [L, P], `log2phy` [L, E, maxlogcnt] padded with -1 and `logcnt`
[L, E], rows per MoE layer. Reading needs only `phy2log`. A placement file only: there are no
EPLB load dumps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vibe_plan.artifacts.placement import Placement, int_map, make_log2phy
from vibe_plan.engines.common import engine_placement

PLACEMENT_KEY = "phy2log"
PLACEMENT_METHOD = "eplb-file"


def placement_text(p: Placement, num_hidden_layers: int) -> str:
    del num_hidden_layers
    log2phy = make_log2phy(p.phy2log, p.num_logical_experts)
    doc = {
        "layer_ids": [int(x) for x in p.layer_ids],
        "phy2log": p.phy2log.astype(int).tolist(),
        "log2phy": log2phy.astype(int).tolist(),
        "logcnt": p.logcnt().astype(int).tolist(),
    }
    return json.dumps(doc, separators=(",", ":")) + "\n"


def is_placement(doc: dict[str, Any]) -> bool:
    return PLACEMENT_KEY in doc


def read_placement(
    path: Path,
    doc: dict[str, Any],
    num_gpus: int | None,
    layer_ids: list[int] | None,
    num_experts: int | None,
) -> tuple[Placement, list[str]]:
    """Rows are per MoE layer, in the routing profile's order."""
    m = int_map(path, PLACEMENT_KEY, doc[PLACEMENT_KEY])
    return engine_placement(path, m, PLACEMENT_METHOD, num_gpus, layer_ids, num_experts)
