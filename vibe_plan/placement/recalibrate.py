"""`vibe recalibrate` as one library call: how far traffic and GPUs drifted from what the current
placement was solved for, what it costs now, what a fresh plan and a migration-aware plan (few
expert moves) would gain, and whether that is worth a change (docs/recalibrate.md)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vibe_plan.artifacts import load_gpu_profile, load_routing_profile
from vibe_plan.artifacts.gpu_profile import GpuProfile
from vibe_plan.artifacts.io import read_doc, require_file, sha256_file
from vibe_plan.artifacts.placement import Placement, check_map
from vibe_plan.artifacts.routing_profile import RoutingProfile, rows_of_phase
from vibe_plan.cost import curves_of, gpu_times, imbalance, slot_gpu_times
from vibe_plan.cost.dispatch import Dispatch, origin_shares, slot_tokens
from vibe_plan.defaults import CPSAT_WORKERS, TIME_LIMIT_S
from vibe_plan.errors import VibeError
from vibe_plan.placement.bounds import slot_bound
from vibe_plan.placement.cpsat import CpSatSettings
from vibe_plan.placement.drift import DriftReport, drift_report, solved_for_block
from vibe_plan.placement.migrate import (
    LayerOption,
    choice_cost,
    choose,
    expert_bytes,
    gpu_counts,
    greedy_path,
    move_list,
    options_task,
    stable_row,
)
from vibe_plan.placement.solve import SolveOptions, _pool_map, dispatch_record, solve_placement
from vibe_plan.placement.solve_run import MAX_SEED, check_inputs

REPORT_FRACTIONS = (0.05, 0.10, 0.25, 1.0)  # of the fresh plan's moves, in the gain-vs-moves table
AUTO_RECOVERY = 0.9  # without a bound: the fewest moves that give this share of the largest gain
METHOD = "vibe-recalibrate"


@dataclass(frozen=True)
class RecalibrateOptions:
    min_gain: float = 0.02  # below this relative gain the current placement is kept
    max_moves: int | None = None  # total moved replicas over all layers
    max_move_gb: float | None = None  # total bytes of moved expert weights, in 1e9 bytes
    dispatch: str | None = None  # None: the rule the current placement records, else even
    token_origin: str | None = None  # None: what the current placement records, else uniform
    time_limit: float = TIME_LIMIT_S  # CP-SAT deterministic seconds per (layer, budget)
    workers: int = CPSAT_WORKERS
    seed: int = 0
    jobs: int | None = None  # layer-parallel processes; default: one per core


@dataclass
class BudgetRow:
    """The migration-aware plan for one total move budget, scored exactly."""

    fraction: float | None  # of the fresh plan's moves (None: the chosen budget)
    budget: int
    moves: int
    time_us: float
    gain: float  # relative to the current placement
    recovered: float | None  # share of the fresh plan's gain (None: the fresh plan gains nothing)


@dataclass
class Move:
    layer_id: int
    expert: int
    from_gpu: int
    to_gpu: int
    bytes: int | None
    gain_us: float  # the layer's gain divided by its moves (not attributed to single moves)


@dataclass
class Recalibration:
    decision: str  # "keep" or "replace"
    reason: str
    drift: DriftReport
    dispatch: Dispatch
    current_us: float  # per-forward MoE time of the current placement under the new profiles
    fresh_us: float  # of a fresh, unconstrained plan
    next_us: float  # of the best plan the budget allows
    fresh_moves: int
    next_moves: int
    next_source: str  # "migrate" (replicas moved within the budget), "fresh", or "current"
    budget: int | None
    budget_rule: str  # how the budget was set, in words
    expert_bytes: int | None
    rows: list[BudgetRow]
    placement: Placement  # the best allowed plan (written only on "replace")
    moves: list[Move]
    min_gain: float
    notes: list[str] = field(default_factory=list)

    @property
    def gain(self) -> float:
        return rel_gain(self.current_us, self.next_us)

    @property
    def fresh_gain(self) -> float:
        return rel_gain(self.current_us, self.fresh_us)

    @property
    def next_bytes(self) -> int | None:
        return None if self.expert_bytes is None else self.next_moves * self.expert_bytes

    def verdict(self, written: list[str]) -> dict:
        """The machine-readable verdict (`--json`; docs/recalibrate.md)."""
        return {
            "schema": "vibe.recalibrate/v1",
            "decision": self.decision,
            "reason": self.reason,
            "min_gain": self.min_gain,
            "dispatch": self.dispatch.rule,
            "predicted_us": {
                "current": round(self.current_us, 3),
                "fresh": round(self.fresh_us, 3),
                "next": round(self.next_us, 3),
            },
            "gain": {"fresh": round(self.fresh_gain, 6), "next": round(self.gain, 6)},
            "moves": {
                "budget": self.budget,
                "budget_rule": self.budget_rule,
                "next": self.next_moves,
                "fresh": self.fresh_moves,
                "next_bytes": self.next_bytes,
                "expert_bytes": self.expert_bytes,
                "next_source": self.next_source,
            },
            "budgets": [
                {
                    "fraction_of_fresh_moves": r.fraction,
                    "budget": r.budget,
                    "moves": r.moves,
                    "predicted_us": round(r.time_us, 3),
                    "gain": round(r.gain, 6),
                    "recovered": None if r.recovered is None else round(r.recovered, 6),
                }
                for r in self.rows
            ],
            "drift": self.drift.to_dict(),
            "written": written,
            "notes": self.notes,
        }


def rel_gain(before: float, after: float) -> float:
    return (before - after) / before if before > 0 else 0.0


def check_options(opts: RecalibrateOptions) -> None:
    """Refuse meaningless options before any file is read."""
    if not (math.isfinite(opts.min_gain) and 0 <= opts.min_gain < 1):
        raise VibeError(f"--min-gain is {opts.min_gain}; give a fraction from 0 to below 1")
    if opts.max_moves is not None and opts.max_move_gb is not None:
        raise VibeError("--max-moves and --max-move-gb both bound the moves; give one of them")
    if opts.max_moves is not None and opts.max_moves < 0:
        raise VibeError(f"--max-moves is {opts.max_moves}; it must be at least 0")
    if opts.max_move_gb is not None and not (
        math.isfinite(opts.max_move_gb) and opts.max_move_gb >= 0
    ):
        raise VibeError(f"--max-move-gb is {opts.max_move_gb}; give a finite size >= 0")
    if not (math.isfinite(opts.time_limit) and opts.time_limit >= 0):
        raise VibeError(f"--time-limit is {opts.time_limit}; give a finite number of seconds >= 0")
    if not 0 <= opts.seed <= MAX_SEED:
        raise VibeError(f"--seed is {opts.seed}; give a seed from 0 to {MAX_SEED}")
    if opts.jobs is not None and opts.jobs < 1:
        raise VibeError(f"--jobs is {opts.jobs}; it must be at least 1")
    if opts.workers < 2:
        raise VibeError(f"--workers is {opts.workers}; CP-SAT needs at least 2")
    if opts.dispatch is not None:
        Dispatch(opts.dispatch)  # an unknown rule fails here


def recalibrate_run(
    placement: Path,
    gpus: Path,
    routing: Path,
    opts: RecalibrateOptions,
    old_gpus: Path | None = None,
    old_routing: Path | None = None,
    progress=None,
) -> Recalibration:
    """Read the current placement (any engine format) and the new profiles, report drift, and
    plan: the current placement, a fresh plan and the migration-aware plans, all scored on the
    new routing profile's batches under the dispatch rule."""
    from vibe_plan.engines import load_placement, placement_format

    check_options(opts)
    gp = load_gpu_profile(gpus)
    rp = load_routing_profile(routing)
    notes = check_inputs(gp, gpus, rp, routing)
    lids = [int(x) for x in rp.layer_ids]
    path = require_file(placement, "placement")
    fmt = placement_format(path, read_doc(path, "placement file"))
    cur, warns = load_placement(path, gp.num_gpus, lids, rp.num_experts, rp.num_hidden_layers)
    if warns:
        more = f" (and {len(warns) - 1} more layers)" if len(warns) > 1 else ""
        notes.append(f"{path}: {warns[0]}{more}")
    inputs = {"gpus_sha256": sha256_file(gpus), "routing_sha256": sha256_file(routing)}
    phase = cur.inputs.get("routing_phase", "all")
    if phase != "all":
        # A plan made on one phase's rows (vibe solve --phase) is weighed on that phase again.
        rp, _ = rows_of_phase(rp, routing, phase)
        inputs["routing_phase"] = phase
        notes.append(f"{path} was made on {phase} rows: using the new profile's {phase} rows")
    nodes = cur.num_nodes if fmt == "vibe" else gp.node_count()
    rule = _dispatch(cur, gp, rp, opts, nodes, notes)
    drift = drift_report(cur, gp, rp, old_gpus, old_routing, notes)
    settings = CpSatSettings(opts.time_limit, opts.workers, opts.seed)
    return plan_recalibration(cur, gp, rp, rule, drift, opts, settings, notes, progress, inputs)


def _dispatch(
    cur: Placement,
    gp: GpuProfile,
    rp: RoutingProfile,
    opts: RecalibrateOptions,
    nodes: int,
    notes: list[str],
) -> Dispatch:
    """The rule the placement records (or --dispatch), with its token origin."""
    rule = opts.dispatch or str(cur.dispatch.get("rule", "even"))
    if opts.token_origin is not None:
        origin = origin_shares(opts.token_origin, gp.num_gpus, nodes)
    else:
        recorded = cur.dispatch.get("token_origin", "uniform")
        origin = None
        if isinstance(recorded, list):
            if len(recorded) == gp.num_gpus and all(isinstance(x, int | float) for x in recorded):
                origin = origin_shares(",".join(str(x) for x in recorded), gp.num_gpus, nodes)
            else:
                notes.append("the placement's recorded token origin does not fit; using uniform")
    return Dispatch(rule, nodes, origin, rp.num_hidden_layers)


def plan_recalibration(
    cur: Placement,
    gp: GpuProfile,
    rp: RoutingProfile,
    rule: Dispatch,
    drift: DriftReport,
    opts: RecalibrateOptions,
    settings: CpSatSettings,
    notes: list[str],
    progress=None,
    inputs: dict[str, str] | None = None,
) -> Recalibration:
    """Score the current placement, plan fresh and migration-aware, pick what the budget allows."""
    G, E, S = gp.num_gpus, rp.num_experts, cur.slots_per_gpu
    L = rp.num_layers
    lids = [int(x) for x in rp.layer_ids]
    curves = curves_of(gp)
    load = rp.mean_load()
    nbytes = expert_bytes(gp.expert)
    if nbytes is None:
        if opts.max_move_gb is not None:
            raise VibeError(
                f"the GPU profile's expert.dtype {gp.expert.dtype!r} has no known size, so "
                "--max-move-gb cannot be counted in moves; use --max-moves"
            )
        notes.append(f"expert.dtype {gp.expert.dtype!r} has no known size: bytes not reported")
    current_us = _exact(gp, rp, cur.phy2log, rule)

    fresh = solve_placement(
        gp,
        rp,
        SolveOptions(
            method="vibe",
            redundant=G * S - E,
            nodes=rule.num_nodes,
            time_limit=opts.time_limit,
            workers=opts.workers,
            seed=opts.seed,
            jobs=opts.jobs,
            dispatch=rule.rule,
            token_origin=rule.origin,
        ),
        progress,
    )
    notes += [n for n in fresh.notes if n not in notes]
    # Experts that stay on a GPU keep their slots, in the fresh plan too: fewer slots to rewrite.
    fresh_map = np.stack(
        [stable_row(cur.phy2log[i], gpu_counts(fresh.placement.phy2log[i], E, G)) for i in range(L)]
    )

    node_of = np.arange(G) // (G // rule.num_nodes) if rule.num_nodes > 1 else None
    args = [
        (
            cur.phy2log[i],
            fresh_map[i],
            load[i],
            curves,
            settings,
            rp.counts[:, i],
            rule,
            lids[i],
            node_of,
        )
        for i in range(L)
    ]
    options = _map_layers(args, opts.jobs, progress)
    if rule.num_nodes > 1:
        notes.append(
            f"{rule.num_nodes} nodes: migration plans move replicas only inside their node "
            "(fast copies; expert groups and per-node replica sets stay as they are)"
        )
    if rule.rule == "static":
        notes.append(
            "static dispatch: the engine's draws chain across layers, so the per-layer gains that "
            "spread the budget are estimates; every total reported is exact"
        )

    fresh_moves = sum(
        int(np.maximum(gpu_counts(fresh_map[i], E, G) - gpu_counts(cur.phy2log[i], E, G), 0).sum())
        for i in range(L)
    )
    fresh_us = _exact(gp, rp, fresh_map, rule)
    cache: dict[tuple[int, ...], float] = {}

    def assemble(choice: list[int]) -> tuple[np.ndarray, int, float]:
        m = np.stack([options[i][c].row for i, c in enumerate(choice)])
        moves = sum(options[i][c].moves for i, c in enumerate(choice))
        key = tuple(choice)
        if key not in cache:
            cache[key] = _exact(gp, rp, m, rule)
        return m, moves, cache[key]

    def row_for(fraction: float | None, budget: int, choice: list[int]) -> BudgetRow:
        _, moves, t = assemble(choice)
        fg = current_us - fresh_us
        rec = (current_us - t) / fg if fg > 0 else None
        return BudgetRow(fraction, budget, moves, t, rel_gain(current_us, t), rec)

    path = greedy_path(options, None)
    rows: list[BudgetRow] = []
    earlier: list[list[int]] = []
    for f in REPORT_FRACTIONS:
        b = int(f * fresh_moves)
        earlier.append(choose(options, b, path, earlier))
        rows.append(row_for(f, b, earlier[-1]))

    budget, budget_rule = _budget(options, opts, nbytes, path)
    choice = choose(options, budget, path, earlier)
    m_map, m_moves, m_us = assemble(choice)
    rows.append(row_for(None, budget, choice))
    # The exact totals decide (under static dispatch the per-layer figures are estimates).
    candidates: list[tuple[float, int, str, np.ndarray, list[int] | None]] = [
        (current_us, 0, "current", cur.phy2log, [0] * L),
        (m_us, m_moves, "migrate" if m_moves else "current", m_map, choice),
    ]
    if fresh_moves <= budget:
        candidates.append((fresh_us, fresh_moves, "fresh", fresh_map, None))
    next_us, next_moves, source, next_map, next_choice = min(candidates, key=lambda c: (c[0], c[1]))
    gain = rel_gain(current_us, next_us)
    if next_moves == 0:
        decision, reason = "keep", "no move within the budget lowers the predicted time"
    elif gain < opts.min_gain:
        decision = "keep"
        reason = f"the best allowed plan gains {gain:.2%}, below --min-gain {opts.min_gain:.2%}"
    else:
        decision = "replace"
        reason = f"the best allowed plan gains {gain:.2%} with {next_moves} expert moves"
    if source == "fresh":
        notes.append("the fresh plan fits the move budget and is the fastest: it is the one chosen")

    # Per-move gain: the layer's gain over its moves (a move's own share cannot be told apart).
    moves: list[Move] = []
    for i in range(L):
        row = next_map[i]
        mv = move_list(cur.phy2log[i], row, E, G)
        if not mv:
            continue
        if next_choice is not None:
            t_new = options[i][next_choice[i]].time_us
        else:
            t_new = next(o.time_us for o in options[i] if (o.row == row).all())  # fresh row
        per = (options[i][0].time_us - t_new) / len(mv)
        moves += [Move(lids[i], e, a, b, nbytes, per) for e, a, b in mv]
    moves.sort(key=lambda m: (-m.gain_us, m.layer_id, m.expert, m.to_gpu))

    nxt = _next_placement(gp, rp, rule, next_map, fresh.placement, inputs)
    return Recalibration(
        decision=decision,
        reason=reason,
        drift=drift,
        dispatch=rule,
        current_us=current_us,
        fresh_us=fresh_us,
        next_us=next_us,
        fresh_moves=fresh_moves,
        next_moves=next_moves,
        next_source=source,
        budget=budget,
        budget_rule=budget_rule,
        expert_bytes=nbytes,
        rows=rows,
        placement=nxt,
        moves=moves,
        min_gain=opts.min_gain,
        notes=notes,
    )


def _map_layers(args: list[tuple], jobs: int | None, progress) -> list[list[LayerOption]]:
    """Every layer's options, in worker processes where there are several layers and cores (the
    interrupt rules of `solve`'s layer pool apply); the result does not depend on `jobs`."""
    task = progress.add_task("migration plans", total=len(args)) if progress else None
    jobs = jobs or (os.cpu_count() or 1)
    if jobs > 1 and len(args) > 1:
        return _pool_map(options_task, args, min(jobs, len(args)), progress, task)
    out = []
    for a in args:
        out.append(options_task(a))
        if progress:
            progress.advance(task)
    return out


def _budget(
    options: list[list[LayerOption]],
    opts: RecalibrateOptions,
    nbytes: int | None,
    path: list[tuple[int, list[int]]],
) -> tuple[int, str]:
    """The total move budget, and how it was set. Without a bound, moves are priced: the fewest
    moves on the unbounded greedy path that give AUTO_RECOVERY of its (predicted) gain."""
    if opts.max_moves is not None:
        return opts.max_moves, f"--max-moves {opts.max_moves}"
    if opts.max_move_gb is not None and nbytes is not None:
        b = int(opts.max_move_gb * 1e9 // nbytes)
        return b, f"--max-move-gb {opts.max_move_gb:g} ({b} moves of {nbytes / 1e6:.1f} MB)"
    start = choice_cost(options, path[0][1])[0]
    full = start - choice_cost(options, path[-1][1])[0]
    used = next(u for u, c in path if start - choice_cost(options, c)[0] >= AUTO_RECOVERY * full)
    return used, f"auto: the fewest moves that give {AUTO_RECOVERY:.0%} of the gain"


def _exact(gp: GpuProfile, rp: RoutingProfile, phy2log: np.ndarray, rule: Dispatch) -> float:
    """The per-forward MoE time of a map on the routing profile's batches under the rule: the
    mean over batches of the sum over layers of the slowest GPU (evaluate's `mean_us`)."""
    lids = [int(x) for x in rp.layer_ids]
    tokens = slot_tokens(phy2log, rp.counts, gp.num_gpus, rule, lids)
    return float(slot_gpu_times(curves_of(gp), tokens).max(axis=2).sum(axis=1).mean())


def _next_placement(
    gp: GpuProfile,
    rp: RoutingProfile,
    rule: Dispatch,
    phy2log: np.ndarray,
    fresh: Placement,
    inputs: dict[str, str] | None,
) -> Placement:
    """The chosen plan as a vibe placement for the new profiles (what `vibe solve` records)."""
    lids = [int(x) for x in rp.layer_ids]
    load = rp.mean_load()
    curves = curves_of(gp)
    check_map(phy2log, gp.num_gpus, rp.num_experts)
    times = gpu_times(curves, phy2log, load, rule, lids)
    tokens = slot_tokens(phy2log, load[None], gp.num_gpus, rule, lids)[0]
    S = phy2log.shape[1] // gp.num_gpus
    predicted = {
        "makespan_us": times.max(axis=1).tolist(),
        "lower_bound_us": [slot_bound(curves, tokens[i], S, phy2log[i]) for i in range(len(lids))],
    }
    if "global_bound_us" in fresh.predicted:  # a bound on every placement of the layer
        predicted["global_bound_us"] = list(fresh.predicted["global_bound_us"])
    predicted["imbalance"] = imbalance(times).tolist()
    return Placement(
        num_gpus=gp.num_gpus,
        slots_per_gpu=S,
        num_logical_experts=rp.num_experts,
        layer_ids=lids,
        phy2log=phy2log,
        num_nodes=rule.num_nodes,
        gpus=list(fresh.gpus),
        method=METHOD,
        dispatch=dispatch_record(rule),
        predicted=predicted,
        inputs=dict(inputs or {}),
        solved_for=solved_for_block(load, gp),
    )
