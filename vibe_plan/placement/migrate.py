"""Migration-aware re-planning for `vibe recalibrate`: per layer, plans that move at most k expert
replicas away from the current placement, for a ladder of k; then a total move budget spread over
the layers, greedily by gain per move.

A *move* is a replica that appears on a GPU where its expert had no replica before (its weights
must be copied there); a replica that stays on its GPU in another slot is not a move. Within a
budget the migration plan keeps each expert's replica count (and, with several nodes, its replicas
per node): only replicas move. A layer may instead take the fresh plan's row (new replica counts)
where that pays per move.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vibe_plan.artifacts.gpu_profile import ExpertShape
from vibe_plan.cost import TimeCurve, expert_time, slot_gpu_times
from vibe_plan.cost.dispatch import Dispatch, slot_tokens
from vibe_plan.placement.cpsat import CpSatSettings

_RESOLUTION = 1_000_000  # CP-SAT's integer costs: this many units of the start makespan
# CP-SAT polishes the descent's plan for the budgets in (2, CPSAT_MAX_BUDGET]. With 2 moves the only
# plan is one exchange, which must involve the slowest GPU: the descent already takes the best
# one. Small budgets are where the greedy's order can miss a better pair of exchanges (or a
# rotation of 3 replicas); above them, at the default time limit, CP-SAT never improved a plan in
# our runs (docs/recalibrate.md).
CPSAT_MAX_BUDGET = 8


@dataclass(frozen=True)
class LayerOption:
    """One candidate row of a layer: how many moves it costs and what time it predicts."""

    row: np.ndarray  # [P] logical expert per physical slot
    moves: int
    time_us: float  # the layer's share of the per-forward time (mean over batches, under the rule)
    source: str  # "current", "migrate" or "fresh"


def gpu_counts(row: np.ndarray, num_experts: int, num_gpus: int) -> np.ndarray:
    """Replicas of each expert on each GPU: int [E, G]."""
    S = len(row) // num_gpus
    out = np.zeros((num_experts, num_gpus), dtype=np.int64)
    np.add.at(out, (np.asarray(row), np.arange(len(row)) // S), 1)
    return out


def count_moves(before: np.ndarray, after: np.ndarray) -> int:
    """Replicas in `after` [E, G] on GPUs that held fewer of that expert in `before`."""
    return int(np.maximum(after - before, 0).sum())


def moves_between(cur_row: np.ndarray, new_row: np.ndarray, num_experts: int, G: int) -> int:
    return count_moves(gpu_counts(cur_row, num_experts, G), gpu_counts(new_row, num_experts, G))


def stable_row(cur_row: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """A slot map with replica counts `counts` [E, G] that leaves every replica that stays on its
    GPU in its current slot; the freed slots take the arriving experts in increasing id."""
    E, G = counts.shape
    S = len(cur_row) // G
    row = np.array(cur_row, dtype=np.int64).copy()
    for g in range(G):
        slots = row[g * S : (g + 1) * S]
        left = counts[:, g].copy()
        free = []
        for i, e in enumerate(slots):
            if left[e] > 0:
                left[e] -= 1
            else:
                free.append(i)
        arriving = np.repeat(np.arange(E), left)
        slots[free] = arriving
    return row


def move_list(
    cur_row: np.ndarray, new_row: np.ndarray, E: int, G: int
) -> list[tuple[int, int, int]]:
    """(expert, from GPU, to GPU) of every move from `cur_row` to `new_row`. The source is a GPU
    the expert leaves (lowest first), else the lowest GPU that keeps it (a new replica's copy)."""
    before, after = gpu_counts(cur_row, E, G), gpu_counts(new_row, E, G)
    out = []
    for e in np.flatnonzero((after > before).any(axis=1)):
        arrive = np.repeat(np.arange(G), np.maximum(after[e] - before[e], 0))
        leave = list(np.repeat(np.arange(G), np.maximum(before[e] - after[e], 0)))
        keep = np.flatnonzero(np.minimum(before[e], after[e]) > 0)
        for i, to in enumerate(arrive):
            src = leave[i] if i < len(leave) else int(keep[0] if len(keep) else leave[0])
            out.append((int(e), int(src), int(to)))
    return out


def _domains(node_of: np.ndarray | None, G: int) -> np.ndarray:
    return np.zeros(G, dtype=np.int64) if node_of is None else np.asarray(node_of)


def budget_descent(
    cost: np.ndarray,
    start: np.ndarray,
    budget: int,
    node_of: np.ndarray | None = None,
    max_steps: int | None = None,
) -> np.ndarray:
    """From the replica counts `start` [E, G], exchange one replica of the slowest GPU for one of
    another GPU while that lowers both below the current maximum and the moves (counted from
    `start`) stay within `budget`: the best such exchange each step, the cheaper in moves on a tie.
    `cost` [E, G]: one replica's time. With `node_of`, exchanges stay inside a node. -> counts."""
    E, G = start.shape
    dom = _domains(node_of, G)
    N = start.copy()
    used = 0
    finish = (cost * N).sum(axis=0)
    steps = max_steps if max_steps is not None else 4 * int(start.sum()) + 8
    for _ in range(steps):
        g = int(np.argmax(finish))
        top = finish[g]
        ea = np.flatnonzero(N[:, g] > 0)  # experts on the slowest GPU
        eb, h = np.nonzero(N > 0)
        keep = (h != g) & (dom[h] == dom[g])
        eb, h = eb[keep], h[keep]
        if not len(ea) or not len(eb):
            break
        A, B = ea[:, None], eb[None, :]
        H = h[None, :]
        new_g = top - cost[A, g] + cost[B, g]
        new_h = finish[H] - cost[B, H] + cost[A, H]
        legal = (A != B) & (N[A, H] == 0) & (N[B, g] == 0)
        delta = (
            -(N[A, g] > start[A, g]).astype(np.int64)
            + (N[A, H] >= start[A, H])
            - (N[B, H] > start[B, H])
            + (N[B, g] >= start[B, g])
        )
        legal &= used + delta <= budget
        worse = np.where(legal, np.maximum(new_g, new_h), np.inf)
        best = worse.min()
        if not best < top * (1 - 1e-9):
            break
        # Ties: fewest moves, then the first pair (experts and GPUs in increasing order).
        cand = np.flatnonzero(worse.ravel() <= best)
        pick = cand[np.argmin(delta.ravel()[cand])]  # the first of the fewest
        a, b = np.unravel_index(int(pick), worse.shape)
        e1, e2, hh = int(ea[a]), int(eb[b]), int(h[b])
        used += int(delta[a, b])
        N[e1, g] -= 1
        N[e1, hh] += 1
        N[e2, hh] -= 1
        N[e2, g] += 1
        finish[g], finish[hh] = new_g[a, b], new_h[a, b]
    return N


def cpsat_budget(
    cost: np.ndarray,
    start: np.ndarray,
    budget: int,
    hint: np.ndarray,
    settings: CpSatSettings,
    node_of: np.ndarray | None = None,
) -> np.ndarray | None:
    """CP-SAT on the layer with the replica counts of `start` [E, G] kept (per node with
    `node_of`), at most `budget` moves counted from `start`, and no new second replica of an
    expert on a GPU: minimise the makespan, then the moves. `hint` [E, G]: a plan within the
    budget. -> counts [E, G], or None if CP-SAT found none. Deterministic: a deterministic time
    limit, interleaved search and a fixed seed (as `cpsat.solve_layer`)."""
    from ortools.sat.python import cp_model

    E, G = start.shape
    dom = _domains(node_of, G)
    S = int(start[:, 0].sum())
    span = float((cost * hint).sum(axis=0).max())
    unit = span / _RESOLUTION if span > 0 else 1.0
    p = np.rint(cost / unit).astype(np.int64)
    model = cp_model.CpModel()
    # Where the expert has no replica on the GPU's node it may not go (replicas stay in nodes).
    node_cnt = np.stack([start[:, dom == d].sum(axis=1) for d in range(int(dom.max()) + 1)], 1)
    x: dict[tuple[int, int], cp_model.IntVar] = {}
    for e in range(E):
        for g in range(G):
            if node_cnt[e, dom[g]] > 0:
                x[e, g] = model.new_int_var(0, max(1, int(start[e, g])), f"x{e}_{g}")
    for e in range(E):
        for d in range(node_cnt.shape[1]):
            members = [x[e, g] for g in range(G) if dom[g] == d and (e, g) in x]
            if members:
                model.add(sum(members) == int(node_cnt[e, d]))
    for g in range(G):
        model.add(sum(x[e, g] for e in range(E) if (e, g) in x) == S)
    moved = [v for (e, g), v in x.items() if start[e, g] == 0]
    model.add(sum(moved) <= budget)
    T = model.new_int_var(0, int(p.max()) * S + 1, "T")
    for g in range(G):
        model.add(sum(int(p[e, g]) * x[e, g] for e in range(E) if (e, g) in x) <= T)
    model.minimize(T * (budget + 1) + sum(moved))
    for (e, g), v in x.items():
        model.add_hint(v, int(hint[e, g]))
    model.add_hint(T, int((p * hint).sum(axis=0).max()))
    solver = cp_model.CpSolver()
    prm = solver.parameters
    prm.num_workers = max(2, settings.workers)
    prm.random_seed = settings.seed
    prm.interleave_search = True
    prm.interleave_batch_size = 1
    prm.max_deterministic_time = settings.time_limit
    prm.log_search_progress = False
    prm.catch_sigint_signal = False  # Ctrl-C must reach the CLI (see cpsat.solve_layer)
    status = solver.solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    out = np.zeros_like(start)
    for (e, g), v in x.items():
        out[e, g] = solver.value(v)
    return out


def budget_ladder(num_slots: int) -> list[int]:
    """Move budgets a layer is solved for: 2, 4, 8, ... and every slot (no bound)."""
    out, k = [], 2
    while k < num_slots:
        out.append(k)
        k *= 2
    return [*out, num_slots]


def layer_time(
    row: np.ndarray,
    counts: np.ndarray,
    curves: list[TimeCurve],
    dispatch: Dispatch,
    layer_id: int,
) -> float:
    """A layer's share of the per-forward time: the mean over batches (`counts` [B, E]) of its
    slowest GPU under `dispatch`. Summed over layers this is evaluate's mean forward time (the
    static rule's draws, which chain across layers, are taken for this layer alone)."""
    one = Dispatch(dispatch.rule, dispatch.num_nodes, dispatch.origin, None)
    tokens = slot_tokens(np.asarray(row)[None], counts[:, None, :], len(curves), one, [layer_id])
    return float(slot_gpu_times(curves, tokens).max(axis=2).mean())


def layer_options(
    cur_row: np.ndarray,
    fresh_row: np.ndarray | None,
    load: np.ndarray,
    curves: list[TimeCurve],
    settings: CpSatSettings,
    counts: np.ndarray,
    dispatch: Dispatch,
    layer_id: int,
    node_of: np.ndarray | None = None,
) -> list[LayerOption]:
    """The current row, the migration plans for each budget of the ladder, and the fresh row,
    each with its moves and `layer_time`. A budget's plan: the descent from the current plan,
    or the previous budget's plan where that is better, then CP-SAT from it (small budgets only).
    The descent and CP-SAT price replicas with the even split of the mean load `load` [E]; the
    options are compared by `layer_time` on the batches `counts` [B, E] under `dispatch`."""
    E, G = len(load), len(curves)
    cur = gpu_counts(cur_row, E, G)
    logcnt = cur.sum(axis=1)
    cost = expert_time(curves, load / np.maximum(logcnt, 1))  # [E, G] one replica on each GPU

    def span(c: np.ndarray) -> float:
        return float((cost * c).sum(axis=0).max())

    def timed(row: np.ndarray) -> float:
        return layer_time(row, counts, curves, dispatch, layer_id)

    found: list[np.ndarray] = []
    best = cur
    for budget in budget_ladder(len(cur_row)):
        plan = budget_descent(cost, cur, budget, node_of)
        if span(best) < span(plan):
            plan = best  # the smaller budget's plan is within this one too
        if settings.time_limit > 0 and 2 < budget <= CPSAT_MAX_BUDGET and span(plan) > 0:
            res = cpsat_budget(cost, cur, budget, plan, settings, node_of)
            if res is not None and (
                span(res) < span(plan)
                or (span(res) <= span(plan) and count_moves(cur, res) < count_moves(cur, plan))
            ):
                plan = res
        best = plan
        found.append(plan)
    options = [LayerOption(np.array(cur_row), 0, timed(cur_row), "current")]
    seen = {cur.tobytes()}
    for c in found:
        if c.tobytes() not in seen:
            seen.add(c.tobytes())
            row = stable_row(cur_row, c)
            options.append(LayerOption(row, count_moves(cur, c), timed(row), "migrate"))
    if fresh_row is not None:
        fresh = gpu_counts(fresh_row, E, G)
        if fresh.tobytes() not in seen:
            row = stable_row(cur_row, fresh)
            options.append(LayerOption(row, count_moves(cur, fresh), timed(row), "fresh"))
    return options


def options_task(args: tuple) -> list[LayerOption]:
    """`layer_options(*args)`, for a worker process."""
    return layer_options(*args)


def greedy_path(
    options: list[list[LayerOption]], budget: int | None
) -> list[tuple[int, list[int]]]:
    """Spread `budget` moves (None: no bound) over the layers: start from every layer's current
    row (option 0) and repeatedly take the step, to any option of one layer with a lower time that
    still fits, of the largest gain per extra move (a step that saves time and moves first; ties:
    the lower layer, then the fewer moves). Deterministic. -> (moves used, the chosen option of
    each layer) after each step, starting with no step."""
    choice = [0] * len(options)
    used = 0
    limit = np.inf if budget is None else budget
    path = [(0, list(choice))]
    while True:
        best: tuple[float, int, int, int] | None = None  # (-gain per move, layer, moves, option)
        for layer, opts in enumerate(options):
            now = opts[choice[layer]]
            for j, o in enumerate(opts):
                extra = o.moves - now.moves
                if o.time_us >= now.time_us or used + extra > limit:
                    continue
                ratio = np.inf if extra <= 0 else (now.time_us - o.time_us) / extra
                key = (-ratio, layer, o.moves, j)
                if best is None or key < best:
                    best = key
        if best is None:
            return path
        _, layer, _, j = best
        used += options[layer][j].moves - options[layer][choice[layer]].moves
        choice[layer] = j
        path.append((used, list(choice)))


def allocate(options: list[list[LayerOption]], budget: int | None) -> list[int]:
    """The chosen option of each layer for `budget` moves (`greedy_path`'s last step)."""
    return greedy_path(options, budget)[-1][1]


def choice_cost(options: list[list[LayerOption]], choice: list[int]) -> tuple[float, int]:
    """(sum of the chosen options' times, their moves)."""
    picked = [opts[c] for opts, c in zip(options, choice, strict=True)]
    return sum(o.time_us for o in picked), sum(o.moves for o in picked)


def choose(
    options: list[list[LayerOption]],
    budget: int,
    path: list[tuple[int, list[int]]],
    earlier: list[list[int]] | None = None,
) -> list[int]:
    """The plan for `budget` moves: the best (least time, then fewest moves) of the greedy for
    this budget, the unbounded greedy `path` cut where it exceeds the budget, and `earlier`
    choices that fit (those for smaller budgets), so that more budget never predicts less gain."""
    cands = [allocate(options, budget)]
    cands += [next(c for used, c in reversed(path) if used <= budget)]
    cands += [c for c in earlier or [] if choice_cost(options, c)[1] <= budget]
    return min(cands, key=lambda c: choice_cost(options, c))


DTYPE_BYTES = {  # bytes per weight, by the dtype a GPU profile records
    "float64": 8,
    "double": 8,
    "float32": 4,
    "float": 4,
    "tf32": 4,
    "bfloat16": 2,
    "float16": 2,
    "half": 2,
    "fp8": 1,
    "float8_e4m3fn": 1,
    "float8_e4m3fnuz": 1,
    "float8_e5m2": 1,
    "float8_e5m2fnuz": 1,
    "int8": 1,
    "uint8": 1,
}


def expert_bytes(shape: ExpertShape) -> int | None:
    """Bytes of one routed expert's weights: 3 (gated) or 2 matrices of hidden x intermediate."""
    size = DTYPE_BYTES.get(shape.dtype.lower())
    if size is None:
        return None
    return (3 if shape.gated else 2) * shape.hidden * shape.intermediate * size
