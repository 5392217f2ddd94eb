"""Placement (`vibe.placement/v1`, JSON): the physical-to-logical expert map of every MoE layer.

Only vibe's own format lives here. The engines' placement files (SGLang `--init-expert-location`,
TensorRT-LLM's load-balancer YAML, EPLB-style tensors) are read and written in `vibe_plan.engines`,
whose `load_placement` takes any of them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vibe_plan.artifacts.io import atomic_write, read_doc, require_file
from vibe_plan.artifacts.routing_profile import MAX_LAYERS
from vibe_plan.errors import VibeError

PLACEMENT_SCHEMA = "vibe.placement/v1"
MAX_SOLVED_FOR_POINTS = 64  # token counts a `solved_for` block may time the GPUs at


@dataclass
class SolvedFor:
    """What a plan was solved for, compact enough to keep in the placement file, so that drift can
    be measured without the old profiles (`vibe recalibrate`): each MoE layer's mean load per
    expert and each GPU's time at a few token counts (docs/formats.md, `solved_for`)."""

    tokens: list[int]  # token counts the GPU times are taken at, strictly increasing
    gpu_time_us: np.ndarray  # float [G, K]: one expert's time on each GPU at those counts
    gpu_uuid: list[str | None]  # [G] the GPU at each EP rank, where the profile records it
    mean_load: np.ndarray  # float [L, E]: mean tokens per batch routed to each expert


@dataclass
class Placement:
    num_gpus: int
    slots_per_gpu: int
    num_logical_experts: int
    layer_ids: list[int]
    phy2log: np.ndarray  # int64 [L, P]
    num_nodes: int = 1
    gpus: list[dict[str, Any]] = field(default_factory=list)
    method: str = "unknown"
    dispatch: dict[str, Any] = field(default_factory=dict)  # the split `predicted` assumes
    predicted: dict[str, list[float]] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)
    solved_for: SolvedFor | None = None  # the loads and GPU speeds it was solved for

    @property
    def num_physical_experts(self) -> int:
        return self.num_gpus * self.slots_per_gpu

    def logcnt(self) -> np.ndarray:
        """Replica count of each logical expert, int [L, E]."""
        L = self.phy2log.shape[0]
        out = np.zeros((L, self.num_logical_experts), dtype=np.int64)
        for layer in range(L):
            np.add.at(out[layer], self.phy2log[layer], 1)
        return out


def check_map(
    phy2log: np.ndarray, num_gpus: int, num_experts: int, where: str = "physical_to_logical_map"
) -> list[str]:
    """Raise on an invalid map; return warnings (replicas of one expert sharing a GPU)."""
    phy2log = np.asarray(phy2log)
    if phy2log.ndim != 2:
        raise VibeError(f"{where}: must be a list of rows, one per MoE layer")
    L, P = phy2log.shape
    if num_gpus <= 0 or P % num_gpus != 0:
        raise VibeError(f"{where}: {P} slots per layer do not divide over {num_gpus} GPUs")
    if num_experts > P:
        raise VibeError(f"{where}: {P} slots cannot hold {num_experts} experts")
    if phy2log.min() < 0 or phy2log.max() >= num_experts:
        raise VibeError(f"{where}: expert ids must lie in [0, {num_experts})")
    warnings = []
    S = P // num_gpus
    for layer in range(L):
        present = np.bincount(phy2log[layer], minlength=num_experts)
        if (present == 0).any():
            missing = np.flatnonzero(present == 0)[:5].tolist()
            raise VibeError(
                f"{where}[{layer}]: experts {missing} have no slot; every expert needs one"
            )
        per_gpu = phy2log[layer].reshape(num_gpus, S)
        dup = [g for g in range(num_gpus) if len(set(per_gpu[g].tolist())) < S]
        if dup:
            warnings.append(
                f"layer row {layer}: GPUs {dup[:5]} hold two replicas of one expert "
                "(allowed, but the second replica adds no capacity)"
            )
    return warnings


def placement_to_dict(p: Placement) -> dict[str, Any]:
    return {
        "schema": PLACEMENT_SCHEMA,
        "num_gpus": p.num_gpus,
        "num_nodes": p.num_nodes,
        "slots_per_gpu": p.slots_per_gpu,
        "num_logical_experts": p.num_logical_experts,
        "num_physical_experts": p.num_physical_experts,
        "layer_ids": [int(x) for x in p.layer_ids],
        "physical_to_logical_map": p.phy2log.astype(int).tolist(),
        "gpus": p.gpus,
        "method": p.method,
        "dispatch": p.dispatch or {"rule": "even", "token_origin": "uniform"},
        "predicted": {k: [round(float(x), 3) for x in v] for k, v in p.predicted.items()},
        "inputs": p.inputs,
        **({"solved_for": solved_for_to_dict(p.solved_for)} if p.solved_for is not None else {}),
    }


def solved_for_to_dict(sf: SolvedFor) -> dict[str, Any]:
    gpus: list[dict[str, Any]] = []
    for uuid, times in zip(sf.gpu_uuid, sf.gpu_time_us, strict=True):
        rec: dict[str, Any] = {"uuid": uuid} if uuid is not None else {}
        rec["time_us"] = [float(x) for x in times]
        gpus.append(rec)
    return {
        "tokens": [int(t) for t in sf.tokens],
        "gpus": gpus,
        "mean_load": [[float(x) for x in row] for row in sf.mean_load],
    }


def dump_placement(p: Placement) -> str:
    """Stable JSON text: keys in contract order, one map row per line, no timestamps. Always strict
    JSON: a non-finite number (NaN, Infinity) is refused, never written."""
    d = placement_to_dict(p)
    lines = ["{"]
    items = list(d.items())
    try:
        for i, (k, v) in enumerate(items):
            comma = "," if i < len(items) - 1 else ""
            if k == "physical_to_logical_map":
                rows = ",\n    ".join(json.dumps(r, separators=(",", ":")) for r in v)
                lines.append(f'  "{k}": [\n    {rows}\n  ]{comma}')
            elif k == "solved_for":
                lines.append(f'  "{k}": {_solved_for_text(v)}{comma}')
            else:
                text = json.dumps(v, sort_keys=False, allow_nan=False)
                lines.append(f"  {json.dumps(k)}: {text}{comma}")
    except ValueError:
        raise VibeError(
            "the placement's predicted times are not finite numbers; the GPU profile's curves "
            "are unusable (re-run profile-gpus)"
        ) from None
    lines.append("}")
    return "\n".join(lines) + "\n"


def _solved_for_text(d: dict[str, Any]) -> str:
    """The `solved_for` block: one GPU and one layer per line, like the map."""

    def compact(x: Any) -> str:
        return json.dumps(x, separators=(",", ":"), allow_nan=False)

    gpus = ",\n      ".join(compact(g) for g in d["gpus"])
    rows = ",\n      ".join(compact(r) for r in d["mean_load"])
    return (
        f'{{\n    "tokens": {compact(d["tokens"])},\n'
        f'    "gpus": [\n      {gpus}\n    ],\n'
        f'    "mean_load": [\n      {rows}\n    ]\n  }}'
    )


def save_placement(p: Placement, path: str | Path) -> None:
    check_map(p.phy2log, p.num_gpus, p.num_logical_experts)
    atomic_write(path, dump_placement(p))


def make_log2phy(
    phy2log: np.ndarray, num_log: int, phyrank: np.ndarray | None = None
) -> np.ndarray:
    """[layers, logical, maxlogcnt] physical slots of each expert, padded with -1."""
    rows, num_phy = phy2log.shape
    maxlogcnt = num_phy - num_log + 1
    log2phy = np.full((rows, num_log, maxlogcnt), -1, dtype=np.int64)
    for i in range(rows):
        seen = np.zeros(num_log, dtype=np.int64)
        for slot, e in enumerate(phy2log[i]):
            r = phyrank[i, slot] if phyrank is not None else seen[e]
            log2phy[i, e, r] = slot
            seen[e] += 1
    return log2phy


def int_map(path: str | Path, key: str, value: Any) -> np.ndarray:
    """A rectangular list of integer rows as int64 [rows, slots]; errors name `path: key`."""
    try:
        arr = np.asarray(value)
    except ValueError:
        raise VibeError(f"{path}: {key}: rows have different lengths")
    if arr.ndim != 2 or arr.dtype.kind not in "iu":
        raise VibeError(f"{path}: {key}: must be a rectangular list of integer rows")
    # numpy reads [true, 1] as [1, 1]: a boolean is no expert id.
    if isinstance(value, list) and any(
        isinstance(x, bool) for row in value if isinstance(row, list) for x in row
    ):
        raise VibeError(f"{path}: {key}: holds true/false where expert ids belong")
    return arr.astype(np.int64)


def load_placement(
    path: str | Path,
    num_gpus: int | None = None,
    layer_ids: list[int] | None = None,
    num_experts: int | None = None,
) -> tuple[Placement, list[str]]:
    """Read a vibe placement file, checked against the GPU count, MoE layer ids and expert count
    of the profiles it will be used with (each `None`: not checked). Returns it and warnings.

    Engine placement files: `vibe_plan.engines.load_placement` reads those and this format.
    """
    path = require_file(path, "placement")
    doc = read_doc(path, "placement file")
    return placement_from_doc(path, doc, num_gpus, layer_ids, num_experts)


def placement_from_doc(
    path: Path,
    raw: Any,
    num_gpus: int | None,
    layer_ids: list[int] | None,
    num_experts: int | None,
) -> tuple[Placement, list[str]]:
    """The placement in an already parsed vibe placement document (`path` only names it)."""
    if not isinstance(raw, dict):
        raise VibeError(f"{path}: top level must be a mapping (JSON object)")
    if raw.get("schema") != PLACEMENT_SCHEMA:
        raise VibeError(
            f"{path}: schema: expected {PLACEMENT_SCHEMA!r}, found {raw.get('schema')!r}"
        )
    need = [
        "num_gpus",
        "slots_per_gpu",
        "num_logical_experts",
        "layer_ids",
        "physical_to_logical_map",
    ]
    for key in need:
        if key not in raw:
            raise VibeError(f"{path}: {key}: missing")
    G = count_field(path, "num_gpus", raw["num_gpus"])
    S = count_field(path, "slots_per_gpu", raw["slots_per_gpu"])
    E = count_field(path, "num_logical_experts", raw["num_logical_experts"])
    lids = layer_id_list(path, "layer_ids", raw["layer_ids"])
    m = int_map(path, "physical_to_logical_map", raw["physical_to_logical_map"])
    if m.shape != (len(lids), G * S):
        raise VibeError(
            f"{path}: physical_to_logical_map has shape {list(m.shape)}, expected "
            f"[{len(lids)} layers, {G}x{S} slots]"
        )
    if "num_physical_experts" in raw:
        P = count_field(path, "num_physical_experts", raw["num_physical_experts"])
        if P != G * S:
            raise VibeError(
                f"{path}: num_physical_experts: {P}, but {G} GPUs x {S} slots are {G * S}"
            )
    N = count_field(path, "num_nodes", raw.get("num_nodes", 1))
    if G % N:
        raise VibeError(f"{path}: num_nodes: {N} nodes do not divide {G} GPUs")
    if num_gpus is not None and num_gpus != G:
        raise VibeError(
            f"{path}: num_gpus: placement is for {G} GPUs but the GPU profile has {num_gpus}"
        )
    if num_experts is not None and num_experts != E:
        raise VibeError(
            f"{path}: num_logical_experts: placement has {E} experts but the routing "
            f"profile has {num_experts}"
        )
    if layer_ids is not None and lids != list(layer_ids):
        raise VibeError(
            f"{path}: layer_ids: placement covers layers {lids[:6]}... but the routing "
            f"profile has {list(layer_ids)[:6]}..."
        )
    warns = check_map(m, G, E, f"{path}: physical_to_logical_map")
    p = Placement(
        num_gpus=G,
        slots_per_gpu=S,
        num_logical_experts=E,
        layer_ids=lids,
        phy2log=m,
        num_nodes=N,
        gpus=_gpu_records(path, raw.get("gpus", []), G),
        method=_text(path, "method", raw.get("method", "unknown")),
        dispatch=_dispatch(path, raw.get("dispatch", {})),
        predicted=_predicted(path, raw.get("predicted", {})),
        inputs={
            k: _text(path, f"inputs.{k}", v)
            for k, v in _mapping(path, "inputs", raw.get("inputs", {})).items()
        },
    )
    if "solved_for" in raw:
        p.solved_for = solved_for_from_doc(path, raw["solved_for"], G, len(lids), E)
    return p, warns


def solved_for_from_doc(
    path: str | Path, value: Any, num_gpus: int, num_layers: int, num_experts: int
) -> SolvedFor:
    """The optional `solved_for` block, checked against the placement's own sizes."""
    where = "solved_for"
    if not isinstance(value, dict):
        raise VibeError(f"{path}: {where}: must be a JSON object")
    for key in ("tokens", "gpus", "mean_load"):
        if key not in value:
            raise VibeError(f"{path}: {where}.{key}: missing")
    tokens = value["tokens"]
    if (
        not isinstance(tokens, list)
        or not 0 < len(tokens) <= MAX_SOLVED_FOR_POINTS
        or not all(isinstance(t, int) and not isinstance(t, bool) and t > 0 for t in tokens)
        or any(b <= a for a, b in zip(tokens, tokens[1:], strict=False))
    ):
        raise VibeError(
            f"{path}: {where}.tokens: must be 1 to {MAX_SOLVED_FOR_POINTS} positive integers, "
            "strictly increasing"
        )
    gpus = value["gpus"]
    if not isinstance(gpus, list) or len(gpus) != num_gpus:
        raise VibeError(f"{path}: {where}.gpus: must list one record per GPU ({num_gpus})")
    times, uuids = [], []
    for g, rec in enumerate(gpus):
        at = f"{path}: {where}.gpus[{g}]"
        if not isinstance(rec, dict):
            raise VibeError(f"{at}: must be a JSON object")
        uuid = rec.get("uuid")
        if uuid is not None and not isinstance(uuid, str):
            raise VibeError(f"{at}.uuid: {uuid!r} must be a string")
        t = rec.get("time_us")
        if not isinstance(t, list) or len(t) != len(tokens) or not all(_positive(x) for x in t):
            raise VibeError(
                f"{at}.time_us: must be {len(tokens)} positive finite numbers, one per token count"
            )
        times.append([float(x) for x in t])
        uuids.append(uuid)
    load = value["mean_load"]
    if (
        not isinstance(load, list)
        or len(load) != num_layers
        or not all(isinstance(r, list) and len(r) == num_experts for r in load)
    ):
        raise VibeError(
            f"{path}: {where}.mean_load: must be {num_layers} rows (one per MoE layer) of "
            f"{num_experts} numbers (one per expert)"
        )
    if not all(_number(x) and x >= 0 for r in load for x in r):
        raise VibeError(f"{path}: {where}.mean_load: loads must be non-negative finite numbers")
    return SolvedFor(
        tokens=[int(t) for t in tokens],
        gpu_time_us=np.array(times, dtype=float),
        gpu_uuid=uuids,
        mean_load=np.array(load, dtype=float).reshape(num_layers, num_experts),
    )


def _number(x: Any) -> bool:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return False
    try:
        return math.isfinite(float(x))
    except OverflowError:  # an integer too large for a float
        return False


def _positive(x: Any) -> bool:
    return _number(x) and x > 0


def count_field(path: str | Path, key: str, value: Any) -> int:
    """A positive integer field (an integral float like 8.0 is accepted)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and isinstance(value, float):
        ok = math.isfinite(value) and value == int(value)
    if not ok or value < 1:
        raise VibeError(f"{path}: {key}: {value!r} must be a positive integer")
    return int(value)


def layer_id_list(path: str | Path, key: str, value: Any) -> list[int]:
    """Decoder-layer ids: a list of non-negative integers, strictly increasing."""
    if not isinstance(value, list) or not value:
        raise VibeError(f"{path}: {key}: must be a non-empty list of decoder-layer ids")
    for i, x in enumerate(value):
        if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x < MAX_LAYERS:
            raise VibeError(
                f"{path}: {key}[{i}]: {x!r} must be a decoder-layer id, an integer in "
                f"0..{MAX_LAYERS - 1}"
            )
    if any(b <= a for a, b in zip(value, value[1:], strict=False)):
        raise VibeError(f"{path}: {key}: must strictly increase")
    return [int(x) for x in value]


def _text(path: Path, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise VibeError(f"{path}: {key}: {value!r} must be a string")
    return value


# The dispatch rules a placement can be planned for (vibe_plan.cost.dispatch models each).
DISPATCH_RULES = ("even", "static", "local", "lp")


def _dispatch(path: Path, value: Any) -> dict[str, Any]:
    d = _mapping(path, "dispatch", value)
    rule = d.get("rule", "even")
    if rule not in DISPATCH_RULES:
        raise VibeError.at(
            path, "dispatch.rule", f"{rule!r} is not one of {', '.join(DISPATCH_RULES)}"
        )
    return d


def _mapping(path: Path, key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise VibeError(f"{path}: {key}: must be a JSON object")
    return dict(value)


def _gpu_records(path: Path, value: Any, num_gpus: int) -> list[dict[str, Any]]:
    """`gpus`: the fleet the plan was made for, in EP rank order (optional)."""
    if not isinstance(value, list):
        raise VibeError(f"{path}: gpus: must be a list of GPU records")
    if value and len(value) != num_gpus:
        raise VibeError(f"{path}: gpus: lists {len(value)} GPUs but num_gpus is {num_gpus}")
    for i, g in enumerate(value):
        if not isinstance(g, dict):
            raise VibeError(f"{path}: gpus[{i}]: must be a JSON object")
        for key in ("uuid", "host", "name"):
            if key in g and not isinstance(g[key], str):
                raise VibeError(f"{path}: gpus[{i}].{key}: {g[key]!r} must be a string")
    return [dict(g) for g in value]


def _predicted(path: Path, value: Any) -> dict[str, list[float]]:
    out = {}
    for key, values in _mapping(path, "predicted", value).items():
        if not isinstance(values, list) or not all(
            isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
            for x in values
        ):
            raise VibeError(f"{path}: predicted.{key}: must be a list of finite numbers")
        out[key] = [float(x) for x in values]
    return out
