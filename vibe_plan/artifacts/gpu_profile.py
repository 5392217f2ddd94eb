"""GPU profile (`vibe.gpu-profile/v1`, YAML): each EP rank's time curve for one routed expert."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vibe_plan.artifacts.io import atomic_write, read_doc, require_file
from vibe_plan.errors import VibeError
from vibe_plan.model_config import MAX_DIM

GPU_SCHEMA = "vibe.gpu-profile/v1"
# Beyond these a curve is not a measurement: 1e12 us (11 days) for one expert and a billion tokens
# per expert are far past any real forward pass, and below them the cost model's sums stay finite.
MAX_TIME_US = 1e12
MAX_TOKENS = 10**9


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


def _number_list(
    path: Path | str, where: str, value: Any, positive: bool, limit: float, unit: str
) -> list[float]:
    if not isinstance(value, list) or not value:
        raise VibeError.at(path, where, "must be a non-empty list of numbers")
    out = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise VibeError.at(path, f"{where}[{i}]", f"{v!r} is not a number")
        try:
            x = float(v)
        except OverflowError:
            x = math.inf
        if not math.isfinite(x):
            raise VibeError.at(path, f"{where}[{i}]", f"{v} is not finite; re-run profiling")
        if positive and x <= 0:
            raise VibeError.at(path, f"{where}[{i}]", f"{v} must be positive")
        if x > limit:
            raise VibeError.at(
                path,
                f"{where}[{i}]",
                f"{v:g} is above {limit:g} {unit}, not a measurement; re-run profiling",
            )
        out.append(x)
    return out


def _parse_curve(path: Path | str, where: str, raw: Any) -> GpuCurve:
    if not isinstance(raw, dict):
        raise VibeError.at(path, where, "missing or not a mapping with tokens and time_us")
    for key in ("tokens", "time_us"):
        if key not in raw:
            raise VibeError.at(path, f"{where}.{key}", "missing")
    tokens_f = _number_list(
        path, f"{where}.tokens", raw["tokens"], True, MAX_TOKENS, "tokens per expert"
    )
    if any(t != int(t) for t in tokens_f):
        raise VibeError.at(path, f"{where}.tokens", "token counts must be integers")
    tokens = [int(t) for t in tokens_f]
    if any(b <= a for a, b in zip(tokens, tokens[1:], strict=False)):
        raise VibeError.at(path, f"{where}.tokens", "must strictly increase")
    curve = GpuCurve(
        tokens, _number_list(path, f"{where}.time_us", raw["time_us"], True, MAX_TIME_US, "us")
    )
    for key in ("p10_us", "p90_us"):
        if raw.get(key) is not None:
            values = _number_list(path, f"{where}.{key}", raw[key], True, MAX_TIME_US, "us")
            setattr(curve, key, values)
    for key in ("time_us", "p10_us", "p90_us"):
        values = getattr(curve, key)
        if values is not None and len(values) != len(tokens):
            raise VibeError.at(
                path,
                f"{where}.{key}",
                f"has {len(values)} values but tokens has {len(tokens)}; they must match",
            )
    _check_rising(path, f"{where}.time_us", tokens, curve.time_us)
    return curve


# Measured medians wobble (the cost model takes the running maximum), but no kernel gets twice as
# fast with more tokens: a curve that falls that far is corrupted or edited, not measured.
MAX_DROP = 0.5


def _check_rising(path: Path | str, where: str, tokens: list[int], times: list[float]) -> None:
    peak = 0.0
    for n, t in zip(tokens, times, strict=True):
        if t < peak * MAX_DROP:
            raise VibeError.at(
                path,
                where,
                f"falls to {t:g} us at {n} tokens from {peak:g} us at fewer tokens; a measured "
                "curve does not halve with more tokens: re-run profile-gpus (was it edited?)",
            )
        peak = max(peak, t)


def _expert_shape(path: Path | str, exp: Any) -> ExpertShape:
    if not isinstance(exp, dict):
        raise VibeError.at(path, "expert", "missing; needs {hidden, intermediate, dtype, gated}")
    sizes = {}
    for key in ("hidden", "intermediate"):
        if key not in exp:
            raise VibeError.at(path, f"expert.{key}", "missing; the expert FFN's size is needed")
        sizes[key] = _dimension(path, f"expert.{key}", exp[key])
    dtype = exp.get("dtype", "bfloat16")
    if not isinstance(dtype, str) or not dtype:
        raise VibeError.at(path, "expert.dtype", f"{dtype!r} is not a dtype name like bfloat16")
    gated = exp.get("gated", True)
    if not isinstance(gated, bool):
        raise VibeError.at(path, "expert.gated", f"{gated!r} must be true or false")
    return ExpertShape(sizes["hidden"], sizes["intermediate"], dtype, gated)


def _dimension(path: Path | str, where: str, v: Any) -> int:
    """A positive integer size (an integral float like 2048.0 is accepted)."""
    ok = isinstance(v, int | float) and not isinstance(v, bool)
    if ok and isinstance(v, float):
        ok = math.isfinite(v) and v == int(v)
    if not ok or not 0 < v <= MAX_DIM:
        raise VibeError.at(path, where, f"{v!r} must be a positive integer (at most {MAX_DIM:,})")
    return int(v)


def _gpu_entry(path: Path | str, i: int, g: Any) -> GpuEntry:
    where = f"gpus[{i}]"
    if not isinstance(g, dict):
        raise VibeError.at(path, where, "must be a mapping")
    gid = g.get("id", i)
    if isinstance(gid, bool) or not isinstance(gid, int) or gid < 0:
        raise VibeError.at(
            path, f"{where}.id", f"{gid!r} must be a non-negative integer (the GPU's EP rank)"
        )
    text: dict[str, str | None] = {}
    for key, default in (("host", "node0"), ("name", "unknown"), ("uuid", None)):
        value = g.get(key, default)
        if value is None and default is not None:
            raise VibeError.at(path, f"{where}.{key}", "is null; give a string or leave it out")
        if value is not None and (isinstance(value, bool) or not isinstance(value, str | int)):
            raise VibeError.at(path, f"{where}.{key}", f"{value!r} must be a string")
        text[key] = None if value is None else str(value)
    tel = g.get("telemetry")
    if tel is not None and not isinstance(tel, dict):
        raise VibeError.at(path, f"{where}.telemetry", "must be a mapping")
    return GpuEntry(
        id=gid,
        host=str(text["host"]),
        name=str(text["name"]),
        uuid=text["uuid"],
        telemetry=tel,
        curve=_parse_curve(path, f"{where}.curve", g.get("curve")),
    )


def _check_unique(path: Path | str, gpus: list[GpuEntry]) -> None:
    """Each GPU once: two entries with one id or one UUID mean a copy-paste error."""
    for key, label in (("id", "id"), ("uuid", "uuid")):
        seen: dict[Any, int] = {}
        for i, g in enumerate(gpus):
            value = getattr(g, key)
            if value is None:
                continue
            if value in seen:
                raise VibeError.at(
                    path,
                    f"gpus[{i}].{label}",
                    f"{value!r} is also gpus[{seen[value]}]'s; each GPU must appear once "
                    "(re-run profile-gpus, or fix the copied entry)",
                )
            seen[value] = i
    # `id` is the EP rank and list order is rank order: the two must agree, or a plan's rank
    # blocks would go to other GPUs than the profile's ids say.
    for i, g in enumerate(gpus):
        if g.id != i:
            raise VibeError.at(
                path,
                f"gpus[{i}].id",
                f"is {g.id!r} at position {i}: list the GPUs in EP rank order with ids "
                f"0..{len(gpus) - 1} (re-run profile-gpus, or reorder the entries)",
            )


def gpu_profile_from_dict(raw: Any, path: Path | str = "<gpu profile>") -> GpuProfile:
    if not isinstance(raw, dict):
        raise VibeError.at(path, "top level", "must be a mapping (is this a GPU profile YAML?)")
    schema = raw.get("schema")
    if schema != GPU_SCHEMA:
        raise VibeError.at(path, "schema", f"expected {GPU_SCHEMA!r}, found {schema!r}")
    expert = _expert_shape(path, raw.get("expert"))
    method = raw.get("method") or {}
    if not isinstance(method, dict):
        raise VibeError.at(path, "method", "must be a mapping")
    gpus_raw = raw.get("gpus")
    if not isinstance(gpus_raw, list) or not gpus_raw:
        raise VibeError.at(
            path, "gpus", "missing or empty; list one entry per GPU in EP rank order"
        )
    gpus = [_gpu_entry(path, i, g) for i, g in enumerate(gpus_raw)]
    _check_unique(path, gpus)
    known = {"schema", "expert", "method", "gpus"}
    extra = {k: v for k, v in raw.items() if k not in known}
    return GpuProfile(expert=expert, gpus=gpus, method=dict(method), extra=extra)


def profile_num_experts(profile: GpuProfile) -> int | None:
    """The expert count of the model the GPUs were profiled for (`method.model.num_experts`),
    where the profile records it."""
    model = profile.method.get("model")
    n = model.get("num_experts") if isinstance(model, dict) else None
    return n if isinstance(n, int) and not isinstance(n, bool) else None


def load_gpu_profile(path: str | Path) -> GpuProfile:
    path = require_file(path, "GPU profile")
    raw = read_doc(path, "GPU profile", kind="yaml")
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


def check_model_fit(
    profile: GpuProfile,
    gpus_path: Path | str,
    expert: tuple[int, int, bool] | None,
    num_experts: int,
    routing_path: Path | str,
) -> list[str]:
    """Refuse a GPU profile measured for another expert FFN shape than the routing profile's model
    (`expert`: its (hidden, intermediate, gated), None where the routing meta does not record it);
    where the expert counts the two profiles record differ, refuse when nothing else shows they
    are for one model, else warn (the same expert FFN, so the times still apply). Returns the
    warnings."""
    e = profile.expert
    if expert is not None and (e.hidden, e.intermediate, e.gated) != tuple(expert):
        ours = _shape(e.hidden, e.intermediate, e.gated)
        raise VibeError(
            f"{gpus_path}: expert: the GPUs were profiled for a {ours} expert FFN (hidden x "
            f"intermediate), but {routing_path} is for a model with {_shape(*expert)} experts; "
            "profile the GPUs for this model (vibe profile-gpus --model MODEL)"
        )
    notes = []
    profiled = profile_num_experts(profile)
    if profiled is not None and profiled != num_experts and expert is None:
        # Nothing else ties the two profiles together: another expert count is another model.
        raise VibeError(
            f"{gpus_path}: profiled for a model with {profiled} experts (method.model), but "
            f"{routing_path} has {num_experts}: the profiles are for different models; profile "
            "the GPUs for this model (vibe profile-gpus --model MODEL)"
        )
    if profiled is not None and profiled != num_experts:
        notes.append(
            f"{gpus_path}: profiled for a model with {profiled} experts (method.model), but "
            f"{routing_path} has {num_experts}; are the two profiles for the same model?"
        )
    return notes


def _shape(hidden: int, intermediate: int, gated: bool) -> str:
    return f"{hidden}x{intermediate} {'gated' if gated else 'ungated'}"
