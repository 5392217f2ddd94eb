"""`vibe solve` as one library call: check the options, read both profiles, plan, and plan the
comparison methods under the same cost model. Saving and rendering stay with the caller."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from vibe_plan.artifacts import load_gpu_profile, load_routing_profile
from vibe_plan.artifacts.gpu_profile import GpuProfile, check_model_fit
from vibe_plan.artifacts.io import sha256_file
from vibe_plan.artifacts.routing_profile import RoutingProfile, check_phase, rows_of_phase
from vibe_plan.cost.dispatch import Dispatch, origin_shares
from vibe_plan.errors import VibeError
from vibe_plan.placement.solve import (
    METHODS,
    SolveOptions,
    SolveResult,
    solve_placement,
)

COMPARE = ("eplb", "linear")  # what a plan is shown next to, under the same cost model


@dataclass
class SolveRun:
    result: SolveResult  # the placement (with its input hashes), predictions and notes
    others: dict[str, SolveResult]  # the comparison methods, same problem and cost model
    routing: RoutingProfile
    wall_s: float  # the requested method's solve time (not written into the placement)
    notes: list[str] = field(default_factory=list)


MAX_SEED = 2**31 - 1  # CP-SAT's random_seed is a 32-bit signed integer


def check_options(opts: SolveOptions) -> None:
    """Refuse meaningless options before any file is read."""
    if opts.method not in METHODS:
        raise VibeError(f"unknown method {opts.method!r}; choose one of {', '.join(METHODS)}")
    if opts.workers < 2:
        raise VibeError(
            f"--workers is {opts.workers}; CP-SAT needs at least 2 (its portfolio runs two "
            "searches side by side)"
        )
    if opts.jobs is not None and opts.jobs < 1:
        raise VibeError(f"--jobs is {opts.jobs}; it must be at least 1")
    if not (math.isfinite(opts.time_limit) and opts.time_limit >= 0):
        raise VibeError(f"--time-limit is {opts.time_limit}; give a finite number of seconds >= 0")
    if not 0 <= opts.seed <= MAX_SEED:
        raise VibeError(f"--seed is {opts.seed}; give a seed from 0 to {MAX_SEED}")
    if opts.redundant < 0:
        raise VibeError(f"--redundant is {opts.redundant}; it must be at least 0")
    for name, value in (("--nodes", opts.nodes), ("--groups", opts.groups)):
        if value is not None and value < 1:
            raise VibeError(f"{name} is {value}; it must be at least 1")
    Dispatch(opts.dispatch)  # an unknown rule fails here


def solve_run(
    gpus: Path,
    routing: Path,
    opts: SolveOptions,
    token_origin: str = "uniform",
    compare: tuple[str, ...] = COMPARE,
    progress=None,
    phase: str = "all",
) -> SolveRun:
    """Plan with `opts.method`; `token_origin`: 'uniform' or weights per EP rank or per node;
    `phase`: plan on the routing profile's prefill or decode rows only, or on all of them."""
    check_options(opts)
    check_phase(phase)
    gp = load_gpu_profile(gpus)
    rp = load_routing_profile(routing)
    rp, mixed = rows_of_phase(rp, routing, phase)
    notes = check_inputs(gp, gpus, rp, routing)
    if mixed:
        # One mean load serves instances that run both phases, not disaggregated ones.
        notes.append(
            f"{routing}: the routing profile mixes prefill and decode rows; the plan is for "
            "their mean load (instances that serve both). For separate prefill and decode "
            "instances, solve each with --phase prefill / --phase decode"
        )
    origin = origin_shares(token_origin, gp.num_gpus, gp.node_count(opts.nodes))
    opts = dataclasses.replace(opts, token_origin=origin)
    start = time.perf_counter()
    result = solve_placement(gp, rp, opts, progress)
    wall = time.perf_counter() - start
    result.placement.inputs = {
        "gpus_sha256": sha256_file(gpus),
        "routing_sha256": sha256_file(routing),
    }
    if phase != "all":
        result.placement.inputs["routing_phase"] = phase
    others = {}
    for name in compare:
        if name != opts.method:
            base = SolveOptions(
                name,
                opts.redundant,
                opts.nodes,
                opts.groups,
                dispatch=opts.dispatch,
                token_origin=origin,
            )
            others[name] = solve_placement(gp, rp, base)
    return SolveRun(result, others, rp, wall, notes + list(result.notes))


def check_inputs(gp: GpuProfile, gpus: Path, rp: RoutingProfile, routing: Path) -> list[str]:
    """Refuse, before solving, profiles that cannot make a plan together: GPUs profiled for
    another expert FFN shape than the routing profile's model, or a routing profile that routes
    no token. Returns warnings (profiles that record different expert counts)."""
    notes = check_model_fit(gp, gpus, rp.expert_shape, rp.num_experts, routing)
    if not rp.counts.any():
        raise VibeError(
            f"{routing}: routing profile has no tokens routed: every count is zero, so there is "
            "no load to plan for; record the routing of real traffic (profile-routing or "
            "import-routing)"
        )
    return notes
