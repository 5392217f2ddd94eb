"""CP-SAT on one layer: boolean x[e, g] (expert e has a replica on GPU g), S per GPU, r_e per
expert, minimise T >= sum_e p[e, g] x[e, g]. Started from the heuristic plan as a complete hint;
it either improves the plan or tightens the certified bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vibe_plan.defaults import CPSAT_WORKERS, TARGET_GAP, TIME_LIMIT_S

# Costs are scaled to integers on this many units of the start makespan; the rounding error is
# accounted for in the bound reported back.
_RESOLUTION = 1_000_000


@dataclass(frozen=True)
class CpSatSettings:
    time_limit: float = TIME_LIMIT_S  # deterministic seconds (reproducible, unlike wall clock)
    workers: int = CPSAT_WORKERS
    seed: int = 0
    relative_gap: float = TARGET_GAP


@dataclass(frozen=True)
class CpSatResult:
    expert_gpus: np.ndarray | None  # bool [E, G] if CP-SAT found a plan better than the hint
    bound_us: float  # valid lower bound on the makespan (in microseconds)
    status: str


def solve_layer(
    cost: np.ndarray,
    logcnt: np.ndarray,
    slots: int,
    hint: np.ndarray,
    hint_makespan: float,
    settings: CpSatSettings,
    node_of: np.ndarray | None = None,
) -> CpSatResult:
    """cost [E, G] time of one replica of e on g; hint bool [E, G] a valid plan. With `node_of`,
    at most one replica of an expert per node."""
    from ortools.sat.python import cp_model

    E, G = cost.shape
    unit = hint_makespan / _RESOLUTION if hint_makespan > 0 else 1.0
    p = np.rint(cost / unit).astype(np.int64)
    model = cp_model.CpModel()
    x = [[model.new_bool_var(f"x{e}_{g}") for g in range(G)] for e in range(E)]
    t_max = int(p.max() * slots + 1)
    T = model.new_int_var(0, t_max, "T")
    for e in range(E):
        model.add(sum(x[e]) == int(logcnt[e]))
    for g in range(G):
        col = [x[e][g] for e in range(E)]
        model.add(sum(col) == slots)
        model.add(sum(int(p[e, g]) * x[e][g] for e in range(E)) <= T)
    for members in _shared_domains(node_of):
        for e in range(E):
            model.add(sum(x[e][g] for g in members) <= 1)
    model.minimize(T)
    hint_T = int((p * hint).sum(axis=0).max())
    for e in range(E):
        for g in range(G):
            model.add_hint(x[e][g], bool(hint[e, g]))
    model.add_hint(T, hint_T)

    solver = cp_model.CpSolver()
    prm = solver.parameters
    prm.num_workers = max(2, settings.workers)
    prm.random_seed = settings.seed
    prm.interleave_search = True
    prm.interleave_batch_size = 1  # keeps the deterministic-time limit close to wall time
    prm.max_deterministic_time = settings.time_limit
    prm.relative_gap_limit = settings.relative_gap
    prm.log_search_progress = False
    # Left on, CP-SAT takes over SIGINT during a solve (a Ctrl-C only ends that search, and the
    # run goes on) and afterwards resets it to the default action (the next Ctrl-C kills the
    # process outright): Ctrl-C must reach the CLI, which stops the run cleanly.
    prm.catch_sigint_signal = False
    status = solver.solve(model)
    name = solver.status_name(status)
    # Each GPU sums at most `slots` rounded terms: shift the integer bound by that much.
    bound = max(0.0, (solver.best_objective_bound - slots * 0.5) * unit)
    plan = None
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        plan = np.array([[solver.value(x[e][g]) for g in range(G)] for e in range(E)], dtype=bool)
    return CpSatResult(plan, bound, name)


def _shared_domains(node_of: np.ndarray | None) -> list[np.ndarray]:
    """GPUs of each domain with more than one GPU (one-GPU domains add nothing to x <= 1)."""
    if node_of is None:
        return []
    labels = np.asarray(node_of)
    groups = [np.flatnonzero(labels == d) for d in np.unique(labels)]
    return [m for m in groups if len(m) > 1]
