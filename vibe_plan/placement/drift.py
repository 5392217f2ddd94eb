"""How far traffic and hardware moved from what a plan was solved for (`vibe recalibrate`).

A placement keeps a compact `solved_for` block (docs/formats.md): each MoE layer's mean load per
expert and each GPU's time at a few token counts. Routing drift of a layer is the total variation
distance between its old and new normalised load vectors, `0.5 * sum_e |p_e - q_e|`: the share of
the layer's tokens that would have to go to other experts to turn one mix into the other (0: the
same mix, 1: disjoint experts). GPU drift is the ratio of new to old time of one expert at each of
those token counts (1.15: 15% slower).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vibe_plan.artifacts import load_gpu_profile, load_routing_profile
from vibe_plan.artifacts.gpu_profile import GpuProfile
from vibe_plan.artifacts.placement import Placement, SolvedFor
from vibe_plan.artifacts.routing_profile import RoutingProfile
from vibe_plan.cost import curves_of
from vibe_plan.errors import VibeError

SOLVED_FOR_TOKENS = (16, 256, 4096)  # a decode-sized, a mid and a prefill-sized expert batch
LOAD_DIGITS = 4  # significant digits of a mean load in the file
TIME_DIGITS = 6  # significant digits of a GPU time in the file
GPU_DRIFT_TOL = 0.02  # a GPU whose time moved by more than this at some token count changed


def significant(x: np.ndarray, digits: int) -> np.ndarray:
    """`x` rounded to `digits` significant digits (exactly as the text `%.{digits}g` reads)."""
    flat = [float(f"{v:.{digits}g}") for v in np.asarray(x, dtype=float).ravel()]
    return np.array(flat, dtype=float).reshape(np.shape(x))


def gpu_times_at(gpus: GpuProfile, tokens: tuple[int, ...] | list[int]) -> np.ndarray:
    """Each GPU's cost-model time of one expert at each token count: [G, K]."""
    t = np.asarray(tokens, dtype=float)
    return np.stack([c(t) for c in curves_of(gpus)])


def solved_for_block(mean_load: np.ndarray, gpus: GpuProfile) -> SolvedFor:
    """The `solved_for` block of a plan solved for `mean_load` [L, E] on `gpus` (rounded, so the
    file stays small and byte-identical for the same inputs)."""
    tokens = list(SOLVED_FOR_TOKENS)
    return SolvedFor(
        tokens=tokens,
        gpu_time_us=significant(gpu_times_at(gpus, tokens), TIME_DIGITS),
        gpu_uuid=[g.uuid for g in gpus.gpus],
        mean_load=significant(mean_load, LOAD_DIGITS),
    )


def total_variation(old_load: np.ndarray, new_load: np.ndarray) -> np.ndarray:
    """Per layer, `0.5 * sum_e |p_e - q_e|` of the normalised loads [L, E] -> [L] in [0, 1]. A
    layer with no tokens on one side and some on the other is 1; with none on either, 0."""
    old = np.asarray(old_load, dtype=float)
    new = np.asarray(new_load, dtype=float)
    so, sn = old.sum(axis=1, keepdims=True), new.sum(axis=1, keepdims=True)
    p = np.divide(old, so, out=np.zeros_like(old), where=so > 0)
    q = np.divide(new, sn, out=np.zeros_like(new), where=sn > 0)
    tv = 0.5 * np.abs(p - q).sum(axis=1)
    one_empty = (so[:, 0] > 0) != (sn[:, 0] > 0)
    return np.where(one_empty, 1.0, tv)


@dataclass
class GpuDrift:
    rank: int
    ratios: list[float]  # new / old time at each token count of the report
    old_uuid: str | None
    new_uuid: str | None

    @property
    def replaced(self) -> bool:
        """Another physical GPU at this rank (both profiles record a UUID and they differ)."""
        return (
            self.old_uuid is not None
            and self.new_uuid is not None
            and (self.old_uuid != self.new_uuid)
        )

    @property
    def changed(self) -> bool:
        return self.replaced or any(abs(r - 1.0) > GPU_DRIFT_TOL for r in self.ratios)


@dataclass
class DriftReport:
    """Routing and GPU drift; either part is None where there is nothing to compare with."""

    layer_ids: list[int]
    routing_tv: np.ndarray | None = None  # [L] total variation distance per layer
    routing_source: str = ""  # where the old loads came from
    tokens: list[int] = field(default_factory=list)  # the token counts of the GPU ratios
    gpus: list[GpuDrift] | None = None
    gpus_source: str = ""

    @property
    def changed_gpus(self) -> list[GpuDrift]:
        return [g for g in self.gpus or [] if g.changed]

    def to_dict(self) -> dict:
        routing = None
        if self.routing_tv is not None:
            tv = self.routing_tv
            worst = int(np.argmax(tv))
            routing = {
                "distance": "total_variation",
                "source": self.routing_source,
                "mean": round(float(tv.mean()), 6),
                "max": round(float(tv[worst]), 6),
                "max_layer": self.layer_ids[worst],
                "per_layer": [round(float(x), 6) for x in tv],
            }
        gpus = None
        if self.gpus is not None:
            gpus = {
                "source": self.gpus_source,
                "tokens": list(self.tokens),
                "tolerance": GPU_DRIFT_TOL,
                "changed": [
                    {
                        "rank": g.rank,
                        "ratios": [round(r, 6) for r in g.ratios],
                        **({"replaced": [g.old_uuid, g.new_uuid]} if g.replaced else {}),
                    }
                    for g in self.changed_gpus
                ],
            }
        return {"routing": routing, "gpus": gpus}


def routing_drift_part(
    report: DriftReport, old_load: np.ndarray, new_load: np.ndarray, source: str
) -> None:
    report.routing_tv = total_variation(old_load, new_load)
    report.routing_source = source


def gpu_drift_part(
    report: DriftReport,
    tokens: list[int],
    old_times: np.ndarray,
    old_uuids: list[str | None],
    new_gpus: GpuProfile,
    source: str,
) -> None:
    """Compare each rank's old times [G, K] at `tokens` with the new profile's."""
    new_times = gpu_times_at(new_gpus, tokens)
    ratios = new_times / np.maximum(old_times, 1e-12)
    report.tokens = list(tokens)
    report.gpus = [
        GpuDrift(g, [float(r) for r in ratios[g]], old_uuids[g], new_gpus.gpus[g].uuid)
        for g in range(new_gpus.num_gpus)
    ]
    report.gpus_source = source


def drift_report(
    cur: Placement,
    gp: GpuProfile,
    rp: RoutingProfile,
    old_gpus: Path | None,
    old_routing: Path | None,
    notes: list[str],
) -> DriftReport:
    """Drift from what the placement was solved for: its `solved_for` block, or the old profiles
    where given (they take precedence)."""
    lids = [int(x) for x in rp.layer_ids]
    report = DriftReport(lids)
    sf = cur.solved_for
    new_load = rp.mean_load()
    if old_routing is not None:
        old = load_routing_profile(old_routing)
        if [int(x) for x in old.layer_ids] != lids or old.num_experts != rp.num_experts:
            raise VibeError(
                f"{old_routing}: --old-routing has other MoE layers or experts than the new "
                "routing profile; give the profile the current placement was solved on"
            )
        routing_drift_part(report, old.mean_load(), new_load, f"--old-routing {old_routing}")
    elif sf is not None:
        routing_drift_part(report, sf.mean_load, new_load, "the placement's solved_for")
    if old_gpus is not None:
        og = load_gpu_profile(old_gpus)
        if og.num_gpus != gp.num_gpus:
            raise VibeError(
                f"{old_gpus}: --old-gpus has {og.num_gpus} GPUs, the new profile {gp.num_gpus}; "
                "give the profile the current placement was solved on"
            )
        tokens = list(SOLVED_FOR_TOKENS)
        gpu_drift_part(
            report,
            tokens,
            gpu_times_at(og, tokens),
            [g.uuid for g in og.gpus],
            gp,
            f"--old-gpus {old_gpus}",
        )
    elif sf is not None:
        gpu_drift_part(
            report, sf.tokens, sf.gpu_time_us, sf.gpu_uuid, gp, "the placement's solved_for"
        )
    missing = [
        what
        for what, part in (("routing", report.routing_tv), ("GPU", report.gpus))
        if part is None
    ]
    if missing:
        flags = " and ".join(f"--old-{'routing' if m == 'routing' else 'gpus'}" for m in missing)
        notes.append(
            f"cannot report {' or '.join(missing)} drift: the placement has no solved_for block "
            f"(vibe solve writes one); pass {flags} to compare with the old profiles"
        )
    return report
