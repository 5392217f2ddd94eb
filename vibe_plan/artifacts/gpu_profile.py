"""GPU profile (`vibe.gpu-profile/v1`, YAML): each EP rank's time curve for one routed expert."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vibe_plan.artifacts.io import atomic_write, require_file
from vibe_plan.errors import VibeError, first_line

GPU_SCHEMA = "vibe.gpu-profile/v1"


@dataclass(frozen=True)
class ExpertShape:
    hidden: int
    intermediate: int
    dtype: str = "bfloat16"
    gated: bool = True


@dataclass
class GpuCurve:
    """Median time of ONE expert's FFN (its share of a grouped GEMM) vs tokens routed to it."""

    tokens: list[int]
    time_us: list[float]
    p10_us: list[float] | None = None
    p90_us: list[float] | None = None


@dataclass
class GpuEntry:
    id: int
    curve: GpuCurve
    host: str = "node0"
    name: str = "unknown"
    uuid: str | None = None
    telemetry: dict[str, Any] | None = None


@dataclass
class GpuProfile:
    expert: ExpertShape
    gpus: list[GpuEntry]
    method: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # optional top-level keys, e.g. validation

    @property
    def num_gpus(self) -> int:
        return len(self.gpus)

    @property
    def hosts(self) -> list[str]:
        return [g.host for g in self.gpus]

    def node_count(self, nodes: int | None = None) -> int:
        """`nodes` (--nodes), else the distinct hosts; GPUs split evenly over nodes by rank."""
        G = self.num_gpus
        N = nodes if nodes is not None else len(dict.fromkeys(self.hosts))
        if N <= 0 or G % N:
            raise VibeError(
                f"{G} GPUs do not split evenly over {N} nodes; pass --nodes dividing {G}"
            )
        return N


def _number_list(path: Path | str, where: str, value: Any, positive: bool) -> list[float]:
    if not isinstance(value, list) or not value:
        raise VibeError.at(path, where, "must be a non-empty list of numbers")
    out = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise VibeError.at(path, f"{where}[{i}]", f"{v!r} is not a number")
        x = float(v)
        if not math.isfinite(x):
            raise VibeError.at(path, f"{where}[{i}]", f"{v} is not finite; re-run profiling")
        if positive and x <= 0:
            raise VibeError.at(path, f"{where}[{i}]", f"{v} must be positive")
        out.append(x)
    return out


def _parse_curve(path: Path | str, where: str, raw: Any) -> GpuCurve:
    if not isinstance(raw, dict):
        raise VibeError.at(path, where, "missing or not a mapping with tokens and time_us")
    for key in ("tokens", "time_us"):
        if key not in raw:
            raise VibeError.at(path, f"{where}.{key}", "missing")
    tokens_f = _number_list(path, f"{where}.tokens", raw["tokens"], positive=True)
    if any(t != int(t) for t in tokens_f):
        raise VibeError.at(path, f"{where}.tokens", "token counts must be integers")
    tokens = [int(t) for t in tokens_f]
    if any(b <= a for a, b in zip(tokens, tokens[1:], strict=False)):
        raise VibeError.at(path, f"{where}.tokens", "must strictly increase")
    curve = GpuCurve(tokens, _number_list(path, f"{where}.time_us", raw["time_us"], True))
    for key in ("p10_us", "p90_us"):
        if raw.get(key) is not None:
            setattr(curve, key, _number_list(path, f"{where}.{key}", raw[key], positive=True))
    for key in ("time_us", "p10_us", "p90_us"):
        values = getattr(curve, key)
        if values is not None and len(values) != len(tokens):
            raise VibeError.at(
                path,
                f"{where}.{key}",
                f"has {len(values)} values but tokens has {len(tokens)}; they must match",
            )
    return curve


def gpu_profile_from_dict(raw: Any, path: Path | str = "<gpu profile>") -> GpuProfile:
    if not isinstance(raw, dict):
        raise VibeError.at(path, "top level", "must be a mapping (is this a GPU profile YAML?)")
    schema = raw.get("schema")
    if schema != GPU_SCHEMA:
        raise VibeError.at(path, "schema", f"expected {GPU_SCHEMA!r}, found {schema!r}")
    exp = raw.get("expert")
    if not isinstance(exp, dict):
        raise VibeError.at(path, "expert", "missing; needs {hidden, intermediate, dtype, gated}")
    try:
        expert = ExpertShape(
            hidden=int(exp["hidden"]),
            intermediate=int(exp["intermediate"]),
            dtype=str(exp.get("dtype", "bfloat16")),
            gated=bool(exp.get("gated", True)),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise VibeError.at(
            path, "expert", f"bad or missing field ({e}); needs integer hidden, intermediate"
        )
    if expert.hidden <= 0 or expert.intermediate <= 0:
        raise VibeError.at(path, "expert", "hidden and intermediate must be positive")
    method = raw.get("method") or {}
    if not isinstance(method, dict):
        raise VibeError.at(path, "method", "must be a mapping")
    gpus_raw = raw.get("gpus")
    if not isinstance(gpus_raw, list) or not gpus_raw:
        raise VibeError.at(
            path, "gpus", "missing or empty; list one entry per GPU in EP rank order"
        )
    gpus = []
    for i, g in enumerate(gpus_raw):
        if not isinstance(g, dict):
            raise VibeError.at(path, f"gpus[{i}]", "must be a mapping")
        tel = g.get("telemetry")
        if tel is not None and not isinstance(tel, dict):
            raise VibeError.at(path, f"gpus[{i}].telemetry", "must be a mapping")
        gpus.append(
            GpuEntry(
                id=int(g.get("id", i)),
                host=str(g.get("host", "node0")),
                name=str(g.get("name", "unknown")),
                uuid=None if g.get("uuid") is None else str(g["uuid"]),
                telemetry=tel,
                curve=_parse_curve(path, f"gpus[{i}].curve", g.get("curve")),
            )
        )
    known = {"schema", "expert", "method", "gpus"}
    extra = {k: v for k, v in raw.items() if k not in known}
    return GpuProfile(expert=expert, gpus=gpus, method=dict(method), extra=extra)


def load_gpu_profile(path: str | Path) -> GpuProfile:
    path = require_file(path, "GPU profile")
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = first_line(e)
        raise VibeError(f"{path}: not valid YAML ({first}); is this a GPU profile?")
    return gpu_profile_from_dict(raw, path)


def gpu_profile_to_dict(profile: GpuProfile) -> dict[str, Any]:
    gpus = []
    for g in profile.gpus:
        entry: dict[str, Any] = {"id": g.id, "host": g.host, "name": g.name}
        if g.uuid is not None:
            entry["uuid"] = g.uuid
        if g.telemetry is not None:
            entry["telemetry"] = g.telemetry
        curve: dict[str, Any] = {
            "tokens": [int(t) for t in g.curve.tokens],
            "time_us": [round(float(t), 4) for t in g.curve.time_us],
        }
        for key in ("p10_us", "p90_us"):
            values = getattr(g.curve, key)
            if values is not None:
                curve[key] = [round(float(t), 4) for t in values]
        entry["curve"] = curve
        gpus.append(entry)
    e = profile.expert
    out: dict[str, Any] = {
        "schema": GPU_SCHEMA,
        "expert": {
            "hidden": e.hidden,
            "intermediate": e.intermediate,
            "dtype": e.dtype,
            "gated": e.gated,
        },
        "method": profile.method,
    }
    out.update(profile.extra)
    out["gpus"] = gpus
    return out


class _FlowListDumper(yaml.SafeDumper):
    """Numeric lists on one line, so a 64-GPU profile stays readable."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(isinstance(x, int | float) and not isinstance(x, bool) for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_FlowListDumper.add_representer(list, _represent_list)


def dump_gpu_profile(profile: GpuProfile) -> str:
    # Validate what we write with the same code that reads it.
    data = gpu_profile_to_dict(profile)
    gpu_profile_from_dict(data, "<profile being written>")
    return yaml.dump(data, Dumper=_FlowListDumper, sort_keys=False, width=120)


def save_gpu_profile(profile: GpuProfile, path: str | Path) -> None:
    atomic_write(path, dump_gpu_profile(profile))
