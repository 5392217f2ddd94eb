"""`vibe validate` as one library call: is a placement structurally valid (for the profiles), not
slower than another by more than a bound, and planned for the GPUs of this node
(docs/validate.md)."""

from __future__ import annotations

import contextlib
import math
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vibe_plan.artifacts.gpu_profile import GpuProfile
from vibe_plan.artifacts.io import read_doc, require_file, sha256_file
from vibe_plan.artifacts.placement import Placement
from vibe_plan.artifacts.routing_profile import RoutingProfile
from vibe_plan.cost.dispatch import Dispatch, origin_shares
from vibe_plan.errors import VibeError

VALIDATE_SCHEMA = "vibe.validate/v1"


@dataclass
class Check:
    name: str  # "structure", "regression" or "devices"
    ok: bool
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Validation:
    placement: str
    checks: list[Check]
    fix: dict[str, str] | None = None  # environment settings that fix a device mismatch
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def verdict(self) -> str:
        """One line: `valid: ...` or `invalid: ...` with what failed and, where known, the fix."""
        if self.ok:
            return f"valid: {self.placement}: " + "; ".join(c.detail for c in self.checks)
        failed = [c for c in self.checks if not c.ok]
        text = f"invalid: {self.placement}: " + "; ".join(f"{c.name}: {c.detail}" for c in failed)
        if self.fix:
            text += "; fix: export " + " ".join(f"{k}={v}" for k, v in self.fix.items())
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": VALIDATE_SCHEMA,
            "placement": self.placement,
            "valid": self.ok,
            "verdict": self.verdict(),
            "checks": [
                {"name": c.name, "ok": c.ok, "detail": c.detail, **c.data} for c in self.checks
            ],
            "fix": self.fix,
            "notes": self.notes,
        }


@dataclass(frozen=True)
class Device:
    """A GPU of this node as NVML lists it."""

    index: int  # NVML's index
    uuid: str
    name: str
    pci_bus_id: str | None = None


def read_devices() -> list[Device]:
    """This node's GPUs from NVML (`pynvml`, from nvidia-ml-py, imported here only)."""
    try:
        import pynvml
    except ImportError:
        raise VibeError(
            "--devices reads this node's GPUs with NVML; install it: pip install nvidia-ml-py"
        ) from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        raise VibeError(
            f"--devices: NVML cannot be used here ({e}); run on the GPU node, with the NVIDIA "
            "driver loaded"
        ) from None
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            pci = getattr(pynvml.nvmlDeviceGetPciInfo(h), "busId", None)
            out.append(
                Device(
                    i,
                    _text(pynvml.nvmlDeviceGetUUID(h)),
                    _text(pynvml.nvmlDeviceGetName(h)),
                    None if pci is None else _text(pci),
                )
            )
        return out
    except pynvml.NVMLError as e:
        raise VibeError(f"--devices: NVML failed to list the GPUs ({e})") from None
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


def host_name() -> str:
    return socket.gethostname()


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def validate_run(
    placement: Path,
    gpus: Path | None = None,
    routing: Path | None = None,
    against: Path | None = None,
    max_regression: float = 0.01,
    devices: bool = False,
    dispatch: str | None = None,
    token_origin: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Validation:
    """Check `placement`. Errors in the options and in the inputs it is checked with (profiles,
    `--against`) raise VibeError; a placement that fails a check gives `ok == False`."""
    from vibe_plan.artifacts import load_gpu_profile, load_routing_profile
    from vibe_plan.artifacts.gpu_profile import check_model_fit
    from vibe_plan.engines import load_placement
    from vibe_plan.placement.evaluate import fleet_notes, routed_batches

    if not (math.isfinite(max_regression) and max_regression >= 0):
        raise VibeError(f"--max-regression is {max_regression}; give a fraction >= 0")
    if (gpus is None) != (routing is None):
        raise VibeError("give both --gpus and --routing (or neither): they are checked together")
    if against is not None and gpus is None:
        raise VibeError("--against compares predicted times: give --gpus and --routing too")
    if dispatch is not None:
        Dispatch(dispatch)
    path = require_file(placement, "placement")
    gp: GpuProfile | None = None
    rp: RoutingProfile | None = None
    notes: list[str] = []
    gpus_sha = ""
    if gpus is not None and routing is not None:
        gp, rp = load_gpu_profile(gpus), load_routing_profile(routing)
        notes += check_model_fit(gp, gpus, rp.expert_shape, rp.num_experts, routing)
        notes += routed_batches(rp, routing)[1]  # refuses a profile that routes no token
        gpus_sha = sha256_file(gpus)
    checks: list[Check] = []
    p: Placement | None = None
    try:
        if gp is None or rp is None or gpus is None:
            p = _vibe_only(path)
            what = "vibe placement file"
        else:
            lids = [int(x) for x in rp.layer_ids]
            p, warns = load_placement(path, gp.num_gpus, lids, rp.num_experts, rp.num_hidden_layers)
            notes += [f"{path}: {w}" for w in warns[:1]]
            notes += fleet_notes(p, gp, path, gpus, gpus_sha)
            what = (
                f"{p.num_gpus} GPUs x {p.slots_per_gpu} slots, {len(p.layer_ids)} MoE layers, "
                f"{p.num_logical_experts} experts, fits the profiles"
            )
        if p.dispatch:
            Dispatch(str(p.dispatch.get("rule", "even")))  # a rule this version knows
        checks.append(Check("structure", True, f"structure ok ({what})"))
    except _NeedProfiles:
        raise
    except VibeError as e:
        text = str(e)
        text = text[len(f"{path}: ") :] if text.startswith(f"{path}: ") else text
        checks.append(Check("structure", False, text))
        p = None
    if against is not None and gp is not None and rp is not None:
        checks.append(_regression(p, path, against, gp, rp, max_regression, dispatch, token_origin))
    fix = None
    if devices:
        if p is None:
            checks.append(Check("devices", False, "not checked: the placement is not valid"))
        else:
            check, fix = check_devices(
                p, read_devices(), host_name(), os.environ if env is None else env
            )
            checks.append(check)
    return Validation(str(placement), checks, fix, notes)


def _vibe_only(path: Path) -> Placement:
    """A placement checked on its own: only vibe's format carries its GPU count and layer ids."""
    from vibe_plan.artifacts.placement import placement_from_doc
    from vibe_plan.engines import placement_format

    doc = read_doc(path, "placement file")
    fmt = placement_format(path, doc)
    if fmt != "vibe":
        raise _NeedProfiles(
            f"{path} is an {fmt} placement file, which records no GPU count or layer ids: give "
            "--gpus and --routing to check it"
        )
    return placement_from_doc(path, doc, None, None, None)[0]


class _NeedProfiles(VibeError):
    """An engine file checked without profiles: a usage error, not an invalid placement."""


def _dispatch_for(
    p: Placement, gp: GpuProfile, rp: RoutingProfile, rule: str | None, origin: str | None
) -> Dispatch:
    """`--dispatch` (else the placement's recorded rule, else even) with its token origin."""
    nodes = p.num_nodes if p.num_nodes > 1 else gp.node_count()
    name = rule or str(p.dispatch.get("rule", "even"))
    shares = None
    if origin is not None:
        shares = origin_shares(origin, gp.num_gpus, nodes)
    elif isinstance(p.dispatch.get("token_origin"), list):
        recorded = p.dispatch["token_origin"]
        if len(recorded) == gp.num_gpus:
            shares = origin_shares(",".join(str(x) for x in recorded), gp.num_gpus, nodes)
    return Dispatch(name, nodes, shares, rp.num_hidden_layers)


def _regression(
    p: Placement | None,
    path: Path,
    against: Path,
    gp: GpuProfile,
    rp: RoutingProfile,
    bound: float,
    rule: str | None,
    origin: str | None,
) -> Check:
    """Predicted per-forward time (evaluate's mean over the routing profile's batches) of the
    placement against another, under one dispatch rule."""
    from vibe_plan.engines import load_placement
    from vibe_plan.placement.evaluate import routed_batches, score

    if p is None:
        return Check("regression", False, "not checked: the placement is not valid")
    lids = [int(x) for x in rp.layer_ids]
    try:
        other, _ = load_placement(against, gp.num_gpus, lids, rp.num_experts, rp.num_hidden_layers)
    except VibeError as e:
        raise VibeError(f"--against: {e}") from None
    d = _dispatch_for(p, gp, rp, rule, origin)
    busy, _ = routed_batches(rp, path)
    mine = score(str(path), gp, busy, p, d).mean_us
    theirs = score(str(against), gp, busy, other, d).mean_us
    change = mine / theirs - 1 if theirs > 0 else 0.0
    data = {
        "time_us": round(mine, 3),
        "against": str(against),
        "against_us": round(theirs, 3),
        "regression": round(change, 6),
        "max_regression": bound,
        "dispatch": d.rule,
        "batches": busy.num_batches,
    }
    if abs(change) < 5e-5:
        how = f"as fast as {against}"
    else:
        how = f"{abs(change):.2%} {'slower' if change > 0 else 'faster'} than {against}"
    detail = (
        f"{how} ({mine:,.1f} vs {theirs:,.1f} us per forward, {d.rule} dispatch; bound {bound:.2%})"
    )
    return Check("regression", change <= bound, detail, data)


def check_devices(
    p: Placement, devices: list[Device], host: str, env: Mapping[str, str]
) -> tuple[Check, dict[str, str] | None]:
    """Are the GPUs a process on this node sees, in CUDA's order, the placement's GPUs of this
    node in EP rank order? Local rank i (the i-th of the placement's ranks on this node) runs on
    visible device i, as the engines map ranks to devices. -> the check and, on a mismatch that
    settings can fix, the environment that fixes it."""
    planned = [(g, rec.get("uuid"), rec.get("host")) for g, rec in enumerate(p.gpus)]
    if not any(u for _, u, _ in planned):
        return (
            Check(
                "devices",
                False,
                "the placement records no GPU UUIDs, so its GPUs cannot be told apart; solve with "
                "a GPU profile from vibe profile-gpus, which records them",
            ),
            None,
        )
    present = {d.uuid for d in devices}
    local = [g for g, u, h in planned if (u is not None and u in present) or h == host]
    if not local:
        hosts = sorted({h for _, _, h in planned if h})
        return (
            Check(
                "devices",
                False,
                f"none of the placement's GPUs is on this node ({host}; the plan's hosts: "
                f"{', '.join(hosts[:4]) or 'none recorded'})",
            ),
            None,
        )
    want = [(g, planned[g][1]) for g in local]
    gone = [(g, u) for g, u in want if u is not None and u not in present]
    if gone:
        g, u = gone[0]
        return (
            Check(
                "devices",
                False,
                f"rank {g}'s GPU {u} is not on this node (replaced or moved?); profile the GPUs "
                "again and re-plan (vibe recalibrate)",
                {"missing": [u for _, u in gone]},
            ),
            None,
        )
    pci = sorted(devices, key=lambda d: (d.pci_bus_id or "", d.index))
    fix = {
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "CUDA_VISIBLE_DEVICES": ",".join(
            str(next(i for i, d in enumerate(pci) if d.uuid == u)) for _, u in want if u
        ),
    }
    visible, why = visible_devices(pci, env)
    if visible is None:
        return Check("devices", False, why), fix
    wrong = []
    for i, (g, u) in enumerate(want):
        have = visible[i].uuid if i < len(visible) else None
        if u is not None and have != u:
            wrong.append(f"rank {g} would run on {have or 'no device'} (cuda:{i}), planned on {u}")
    data = {"ranks": local, "visible": [d.uuid for d in visible[: len(want)]]}
    if wrong:
        more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        return Check("devices", False, wrong[0] + more, data), fix
    return (
        Check("devices", True, f"ranks {local[0]}..{local[-1]} run on their planned GPUs", data),
        None,
    )


def visible_devices(pci: list[Device], env: Mapping[str, str]) -> tuple[list[Device] | None, str]:
    """The devices CUDA shows a process, in its order (cuda:0, cuda:1, ...), from
    CUDA_DEVICE_ORDER and CUDA_VISIBLE_DEVICES; None (with why) where that order is unknown."""
    order_pci = env.get("CUDA_DEVICE_ORDER", "FASTEST_FIRST") == "PCI_BUS_ID"
    # CUDA's default puts the fastest GPU first; among equal GPUs that is the bus order.
    known = order_pci or len({d.name for d in pci}) <= 1
    spec = env.get("CUDA_VISIBLE_DEVICES")
    if spec is None:
        if not known:
            return (
                None,
                "this node has different GPU models and CUDA_DEVICE_ORDER is not PCI_BUS_ID",
            )
        return list(pci), ""
    out: list[Device] = []
    for entry in (e.strip() for e in spec.split(",")):
        if entry.lstrip("-").isdigit():
            if not known:
                return None, (
                    "CUDA_VISIBLE_DEVICES uses indices, and without CUDA_DEVICE_ORDER=PCI_BUS_ID "
                    "CUDA numbers different GPU models fastest first"
                )
            i = int(entry)
            if not 0 <= i < len(pci):
                break  # CUDA ignores this entry and every one after it
            out.append(pci[i])
        elif entry.startswith("GPU-"):
            hits = [d for d in pci if d.uuid.startswith(entry)]
            if len(hits) != 1:
                break
            out.append(hits[0])
        elif entry.startswith("MIG-"):
            return None, "CUDA_VISIBLE_DEVICES names MIG instances, which this check cannot map"
        else:
            break
    return out, ""
