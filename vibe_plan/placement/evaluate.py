"""Score placements on the per-batch rows of a routing profile with the shared cost model."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vibe_plan.artifacts.gpu_profile import GpuProfile
from vibe_plan.artifacts.placement import Placement
from vibe_plan.artifacts.routing_profile import RoutingProfile
from vibe_plan.cost import EVEN, curves_of, slot_gpu_times
from vibe_plan.cost.dispatch import Dispatch, origin_shares, slot_tokens, split_note
from vibe_plan.errors import VibeError
from vibe_plan.placement.bounds import slot_bound


@dataclass
class Score:
    name: str
    method: str
    batches: int
    mean_us: float  # per-forward MoE time: sum over layers of the slowest GPU, mean over batches
    p50_us: float
    p95_us: float
    imbalance: float  # max/mean GPU time, mean over (batch, layer)
    above_bound: float  # mean over batches of forward time / its lower bound - 1
    straggler_share: np.ndarray  # [G] how often each GPU is the slowest, over (batch, layer)

    def top_stragglers(self, k: int = 3) -> str:
        order = np.argsort(-self.straggler_share, kind="stable")[:k]
        share = self.straggler_share
        return " ".join(f"{g}:{share[g]:.0%}" for g in order if share[g] > 0)


def check_compatible(p: Placement, gpus: GpuProfile, routing: RoutingProfile, name: str) -> None:
    if p.num_gpus != gpus.num_gpus:
        raise VibeError(
            f"{name}: placement is for {p.num_gpus} GPUs, the GPU profile has {gpus.num_gpus}"
        )
    if p.num_logical_experts != routing.num_experts:
        raise VibeError(
            f"{name}: placement has {p.num_logical_experts} experts, the routing "
            f"profile has {routing.num_experts}"
        )
    if list(p.layer_ids) != [int(x) for x in routing.layer_ids]:
        raise VibeError(f"{name}: placement's MoE layers differ from the routing profile's")


def batch_bounds(gpus: GpuProfile, p: Placement, tokens: np.ndarray) -> np.ndarray:
    """Lower bound of each batch's forward time for this placement's slots with the tokens the
    dispatch rule gives them: tokens [B, L, P] -> [B]."""
    curves = curves_of(gpus)
    B, L, _ = tokens.shape
    return np.array(
        [
            sum(
                slot_bound(curves, tokens[b, layer], p.slots_per_gpu, p.phy2log[layer])
                for layer in range(L)
            )
            for b in range(B)
        ]
    )


def score(
    name: str,
    gpus: GpuProfile,
    routing: RoutingProfile,
    p: Placement,
    dispatch: Dispatch = EVEN,
) -> Score:
    """Per-batch forward time of `p` under `dispatch` (its rule, nodes and token origin)."""
    check_compatible(p, gpus, routing, name)
    lids = [int(x) for x in routing.layer_ids]
    tokens = slot_tokens(p.phy2log, routing.counts, p.num_gpus, dispatch, lids)  # [B, L, P]
    times = slot_gpu_times(curves_of(gpus), tokens)  # [B, L, G]
    span = times.max(axis=2)
    forward = span.sum(axis=1)
    mean_gpu = times.mean(axis=2)
    imb = np.where(mean_gpu > 0, span / np.where(mean_gpu > 0, mean_gpu, 1), 1.0)
    # A (batch, layer) with no tokens has no straggler: every GPU idles.
    busy = span.ravel() > 0
    slowest = times.argmax(axis=2).ravel()[busy]
    share = np.bincount(slowest, minlength=p.num_gpus) / max(slowest.size, 1)
    bounds = batch_bounds(gpus, p, tokens)
    above = float(np.mean(forward / np.maximum(bounds, 1e-12) - 1))
    return Score(
        name=name,
        method=p.method,
        batches=routing.num_batches,
        mean_us=float(forward.mean()),
        p50_us=float(np.percentile(forward, 50)),
        p95_us=float(np.percentile(forward, 95)),
        imbalance=float(imb.mean()),
        above_bound=above,
        straggler_share=share,
    )


def score_rows(scores: list[Score]) -> list[dict]:
    """One row per placement, the first as the reference (`vs_first`): the table and the CSV."""
    base = scores[0].mean_us
    return [
        {
            "placement": s.name,
            "method": s.method,
            "batches": s.batches,
            "mean_us": round(s.mean_us, 3),
            "p50_us": round(s.p50_us, 3),
            "p95_us": round(s.p95_us, 3),
            "vs_first": round(s.mean_us / max(base, 1e-12), 5),
            "imbalance": round(s.imbalance, 5),
            "above_bound": round(s.above_bound, 5),
            "top_stragglers": s.top_stragglers(),
        }
        for s in scores
    ]


def rows_csv(rows: list[dict]) -> str:
    """Rows (same keys) as CSV text with a header line."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


@dataclass
class EvaluateRun:
    scores: list[Score]
    rule: Dispatch
    notes: list[str]  # per placement: map warnings, split approximations
    gpus: GpuProfile
    routing: RoutingProfile  # the batches scored (those that route any token)
    placements: list[Placement]  # as read, in the order given


def load_placements(
    placements: list[Path], gp: GpuProfile, rp: RoutingProfile, gpus_path: Path
) -> tuple[list[Placement], list[str]]:
    """Every placement file (any format the engines module reads), checked against the profiles,
    with its notes: map warnings, and a plan made for another fleet or other inputs."""
    from vibe_plan.artifacts.io import sha256_file
    from vibe_plan.engines import load_placement

    lids = [int(x) for x in rp.layer_ids]
    nh = rp.meta.get("num_hidden_layers")
    gpus_sha = sha256_file(gpus_path)
    out, notes = [], []
    for path in placements:
        p, warnings = load_placement(path, gp.num_gpus, lids, rp.num_experts, nh)
        notes += fleet_notes(p, gp, path, gpus_path, gpus_sha)
        if warnings:
            more = f" (and {len(warnings) - 1} more layers)" if len(warnings) > 1 else ""
            notes.append(f"{path}: {warnings[0]}{more}")
        out.append(p)
    return out, notes


def evaluate_run(
    placements: list[Path],
    gpus: Path,
    routing: Path,
    dispatch: str = "even",
    token_origin: str = "uniform",
    nodes: int | None = None,
    phase: str = "all",
) -> EvaluateRun:
    """`vibe evaluate` as one call: read the profiles and every placement file (any format the
    engines module reads), score each on every batch (of `phase`: all, prefill or decode rows)
    under the dispatch rule."""
    from vibe_plan.artifacts import load_gpu_profile, load_routing_profile
    from vibe_plan.artifacts.gpu_profile import check_model_fit
    from vibe_plan.artifacts.routing_profile import check_phase, rows_of_phase

    Dispatch(dispatch)  # an unknown rule fails before any file is read
    check_phase(phase)
    gp = load_gpu_profile(gpus)
    rp, mixed = rows_of_phase(load_routing_profile(routing), routing, phase)
    notes = check_model_fit(gp, gpus, rp.expert_shape, rp.num_experts, routing)
    if mixed:
        notes.append(
            f"{routing}: the routing profile mixes prefill and decode rows, so the means below "
            "average both; --phase prefill or --phase decode scores one"
        )
    rp, skipped = routed_batches(rp, routing)
    notes += skipped
    N = gp.node_count(nodes)
    rule = Dispatch(dispatch, N, origin_shares(token_origin, gp.num_gpus, N), rp.num_hidden_layers)
    lids = [int(x) for x in rp.layer_ids]
    loaded, read_notes = load_placements(placements, gp, rp, gpus)
    notes += read_notes
    scores = []
    for path, p in zip(placements, loaded, strict=True):
        made_on = p.inputs.get("routing_phase", "all")
        if made_on != phase:
            notes.append(
                f"{path}: made on the routing profile's {made_on} rows, scored on {phase} rows "
                f"(--phase {made_on} scores what it was made for)"
            )
        scores.append(score(str(path), gp, rp, p, rule))
        note = split_note(p.phy2log, p.num_gpus, rule, lids)
        if note:
            notes.append(f"{path}: {note}")
    return EvaluateRun(scores, rule, notes, gp, rp, loaded)


def routed_batches(rp: RoutingProfile, path: Path) -> tuple[RoutingProfile, list[str]]:
    """The batches that route any token (an empty one has no time to score); a note for the
    rest. A profile with no routed token at all is refused."""
    busy = rp.counts.reshape(rp.num_batches, -1).any(axis=1)
    if not busy.any():
        raise VibeError(
            f"{path}: routing profile has no tokens routed: every count is zero; record the "
            "routing of real traffic (profile-routing or import-routing)"
        )
    if busy.all():
        return rp, []
    note = (
        f"{path}: {int((~busy).sum())} of {rp.num_batches} batches route no tokens; "
        "scoring the other batches"
    )
    return rp.select_rows(busy), [note]


def fleet_notes(p: Placement, gp: GpuProfile, path: Path, gpus: Path, gpus_sha: str) -> list[str]:
    """Refuse a plan made for another fleet: a GPU UUID the plan recorded for a rank (where both
    files record one) that is not the profile's. Warn where hosts differ, or where only the
    recorded hash says the GPU profile is not the one the plan was made from (a newer profile of
    the same fleet)."""
    changed = []
    for g, (rec, entry) in enumerate(zip(p.gpus, gp.gpus, strict=False)):
        uuid = rec.get("uuid")
        if uuid is not None and entry.uuid is not None and uuid != entry.uuid:
            raise VibeError(
                f"{path}: gpus[{g}].uuid: the plan puts rank {g} on GPU {uuid}, but {gpus} has "
                f"{entry.uuid} at rank {g}; this plan was made for another fleet (or rank "
                "order): solve again with this GPU profile"
            )
        host = rec.get("host")
        if host is not None and host != entry.host:
            changed.append(g)
    notes = []
    if changed:
        g = changed[0]
        notes.append(
            f"{path}: the plan's hosts differ from {gpus} at ranks {changed[:6]} (rank {g}: "
            f"{p.gpus[g]['host']!r} vs {gp.gpus[g].host!r}); check that it is the same fleet"
        )
    recorded = p.inputs.get("gpus_sha256")
    if recorded is not None and recorded != gpus_sha:
        notes.append(
            f"{path}: was planned from another version of the GPU profile than {gpus} "
            "(inputs.gpus_sha256 differs); scoring with the current one"
        )
    return notes
