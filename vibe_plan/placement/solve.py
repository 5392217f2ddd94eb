"""Plan every MoE layer with one method into one Placement (docs/design.md: how a plan is made
and certified; docs/formats.md: the file)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

import numpy as np

from vibe_plan.artifacts.gpu_profile import GpuProfile
from vibe_plan.artifacts.placement import Placement
from vibe_plan.artifacts.routing_profile import RoutingProfile
from vibe_plan.cost import (
    TimeCurve,
    curves_of,
    gpu_times,
    imbalance,
)
from vibe_plan.cost.dispatch import Dispatch, rank_split, slot_tokens, split_note
from vibe_plan.defaults import CPSAT_WORKERS, TARGET_GAP, TIME_LIMIT_S
from vibe_plan.errors import VibeError
from vibe_plan.placement.baselines import linear_map, round_robin_map, tile_layers
from vibe_plan.placement.bounds import own_bound, slot_bound
from vibe_plan.placement.cpsat import CpSatSettings
from vibe_plan.placement.drift import solved_for_block
from vibe_plan.placement.eplb import rebalance_experts
from vibe_plan.placement.global_bound import global_bound
from vibe_plan.placement.groups import groups_to_nodes
from vibe_plan.placement.layer import (
    LayerPlan,
    improve_layer,
    plan_layer,
    start_layer,
    tighten_bound,
)
from vibe_plan.placement.polish import polish_layer

METHODS = ("vibe", "eplb", "linear", "round_robin")
GLOBAL_LP_MAX_CELLS = 512  # (expert, GPU) cells up to which the global bound runs its LP


@dataclass(frozen=True)
class SolveOptions:
    method: str = "vibe"
    redundant: int = 0
    nodes: int | None = None  # default: distinct hosts in the GPU profile
    groups: int | None = None  # default: the routing meta's num_groups, else 1
    group_locality: bool = True  # vibe keeps each expert group inside one node when it can
    time_limit: float = TIME_LIMIT_S  # CP-SAT deterministic seconds per layer
    workers: int = CPSAT_WORKERS
    seed: int = 0
    jobs: int | None = None  # layer-parallel processes; default: one per core
    global_bound: bool = True  # vibe: also bound every layer over all replica counts and splits
    dispatch: str = "even"  # the engine's rule for splitting an expert's tokens over replicas
    token_origin: tuple[float, ...] | None = None  # share each EP rank originates; None: equal


@dataclass(frozen=True)
class Problem:
    """The instance one solve plans: fleet, experts, slots per GPU, nodes, expert groups."""

    num_gpus: int
    num_experts: int
    slots_per_gpu: int
    num_nodes: int
    num_groups: int


@dataclass
class SolveResult:
    placement: Placement
    problem: Problem
    status: list[str] = field(default_factory=list)  # per layer, vibe only
    heuristic_us: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # decisions the user should hear about


def resolve_problem(gpus: GpuProfile, routing: RoutingProfile, opts: SolveOptions) -> Problem:
    G, E, R = gpus.num_gpus, routing.num_experts, opts.redundant
    if R < 0:
        raise VibeError(f"--redundant {R} must be zero or positive")
    P = E + R
    if P % G:
        lo = (P // G) * G - E
        hi = (P // G + 1) * G - E
        near = ", ".join(str(r) for r in (lo, hi) if r >= 0)
        raise VibeError(
            f"{E} experts + {R} redundant = {P} slots do not divide over {G} GPUs; "
            f"use --redundant {near}"
        )
    N = gpus.node_count(opts.nodes)
    K = opts.groups if opts.groups is not None else (routing.num_groups or 1)
    if K <= 0 or E % K:
        raise VibeError(
            f"--groups {K} does not divide the routing profile's {E} experts; "
            "pass a divisor of the expert count (the model's n_group)"
        )
    S = P // G
    if opts.method == "vibe" and S > E:
        raise VibeError(
            f"{S} slots per GPU exceed the {E} experts, and vibe never puts two replicas of one "
            f"expert on a GPU; use --redundant at most {G * E - E}"
        )
    return Problem(G, E, S, N, K)


def refit_singles(
    phy2log: np.ndarray,
    load: np.ndarray,
    curves: list[TimeCurve],
    prob: Problem,
    d: Dispatch,
    layer_ids: list[int],
    within_nodes: bool,
) -> np.ndarray:
    """Swap single-replica experts around the replicas, priced with the rule's exact shares
    (`polish.py`); a layer keeps its old row unless the new one is faster under the rule."""
    G, S, N = prob.num_gpus, prob.slots_per_gpu, prob.num_nodes
    shares = rank_split(phy2log, G, d, layer_ids)[0]
    new = np.stack(
        [
            polish_layer(phy2log[i], shares[i], load[i], curves, S, N, within_nodes)
            for i in range(len(phy2log))
        ]
    )
    if (new == phy2log).all():
        return phy2log
    # Replicas did not move, so the engine's tables are the same: checked, not assumed.
    before = gpu_times(curves, phy2log, load, d, layer_ids).max(axis=1)
    after = gpu_times(curves, new, load, d, layer_ids).max(axis=1)
    return np.where((after < before)[:, None], new, phy2log)


def solve_placement(
    gpus: GpuProfile, routing: RoutingProfile, opts: SolveOptions, progress=None
) -> SolveResult:
    """Plan every MoE layer on the mean load of `routing` with `opts.method`."""
    if opts.method not in METHODS:
        raise VibeError(f"unknown method {opts.method!r}; choose one of {', '.join(METHODS)}")
    prob = resolve_problem(gpus, routing, opts)
    curves = curves_of(gpus)
    load = routing.mean_load()
    L = routing.num_layers
    dispatch = Dispatch(opts.dispatch, prob.num_nodes, opts.token_origin, routing.num_hidden_layers)
    layer_ids = [int(x) for x in routing.layer_ids]
    status: list[str] = []
    heur: list[float] = []
    notes: list[str] = host_notes(gpus.hosts, prob.num_nodes)
    if opts.method == "vibe":
        use_groups = opts.group_locality and prob.num_nodes > 1
        if use_groups and prob.num_groups % prob.num_nodes:
            use_groups = False
            if prob.num_groups > 1:  # one group: no group limit, nothing to keep together
                notes.append(
                    f"{prob.num_groups} expert groups do not divide over "
                    f"{prob.num_nodes} nodes: groups are not kept inside nodes"
                )
        elif use_groups and prob.num_experts // prob.num_nodes < prob.slots_per_gpu:
            use_groups = False
            notes.append(
                f"a node's {prob.num_experts // prob.num_nodes} experts cannot fill "
                f"{prob.slots_per_gpu} slots per GPU without two replicas on one GPU: "
                "groups are not kept inside nodes"
            )
        # Rank-local rules send a node's tokens to the first replica on that node: replicas on
        # distinct nodes (or all on one, as with groups) keep the split the plan assumes.
        spread = dispatch.rule in ("static", "local") and prob.num_nodes > 1 and not use_groups
        node_slots = prob.slots_per_gpu * (prob.num_gpus // prob.num_nodes)
        if spread and node_slots > prob.num_experts:
            spread = False
            notes.append(
                f"a node's {node_slots} slots exceed the {prob.num_experts} experts, so some "
                f"expert needs two replicas on one node: the {dispatch.rule} split will be uneven"
            )
        plans, glob = _vibe_layers(load, curves, prob, opts, use_groups, spread, progress)
        phy2log = np.stack([p.phy2log for p in plans])
        if dispatch.rule in ("static", "local"):
            phy2log = refit_singles(phy2log, load, curves, prob, dispatch, layer_ids, use_groups)
        if spread:
            # With many nodes and few replicas the ranks of replica-less nodes still draw, and an
            # unconstrained plan can serve the rule better: keep whichever is faster under it.
            free, _ = _vibe_layers(load, curves, prob, opts, use_groups, False, None)
            other = np.stack([p.phy2log for p in free])
            other = refit_singles(other, load, curves, prob, dispatch, layer_ids, use_groups)
            span = gpu_times(curves, phy2log, load, dispatch, layer_ids).max(axis=1).sum()
            if gpu_times(curves, other, load, dispatch, layer_ids).max(axis=1).sum() < span:
                plans, phy2log = free, other
                notes.append(
                    f"{dispatch.rule} dispatch: the plan without replicas on distinct nodes is "
                    "faster under the rule's real split here, so it is the one written"
                )
        bounds = np.array([p.lower_bound_us for p in plans])
        status = [p.status for p in plans]
        heur = [p.heuristic_us for p in plans]
    else:
        phy2log = baseline_map(opts.method, load, prob)
        glob = [0.0] * L  # the instance's bound; vibe's solve reports it
        bounds = np.array(
            [
                own_bound(curves, phy2log[layer], load[layer], prob.slots_per_gpu)
                for layer in range(L)
            ]
        )
    times = gpu_times(curves, phy2log, load, dispatch, layer_ids)
    notes += [n for n in [split_note(phy2log, prob.num_gpus, dispatch, layer_ids)] if n]
    if dispatch.rule != "even":
        # The certificate above is for the split the plan assumed; under another rule, bound
        # the plan's own slots with the loads that rule gives them.
        tokens = slot_tokens(phy2log, load[None], prob.num_gpus, dispatch, layer_ids)[0]
        bounds = np.array(
            [
                slot_bound(curves, tokens[layer], prob.slots_per_gpu, phy2log[layer])
                for layer in range(L)
            ]
        )
    placement = Placement(
        num_gpus=prob.num_gpus,
        slots_per_gpu=prob.slots_per_gpu,
        num_logical_experts=prob.num_experts,
        layer_ids=layer_ids,
        phy2log=phy2log,
        num_nodes=prob.num_nodes,
        gpus=[_gpu_record(g) for g in gpus.gpus],
        method=opts.method,
        dispatch=dispatch_record(dispatch),
        predicted={
            "makespan_us": times.max(axis=1).tolist(),
            "lower_bound_us": bounds.tolist(),
            **({"global_bound_us": list(glob)} if any(glob) else {}),
            "imbalance": imbalance(times).tolist(),
        },
        solved_for=solved_for_block(load, gpus),  # so that drift can be told later
    )
    return SolveResult(placement, prob, status, heur, notes)


def host_notes(hosts: list[str], num_nodes: int) -> list[str]:
    """Nodes are taken as equal blocks of the profile's rank order; say so if hosts disagree."""
    per_node = len(hosts) // num_nodes
    blocks = [set(hosts[n * per_node : (n + 1) * per_node]) for n in range(num_nodes)]
    if len(set(hosts)) != num_nodes or all(len(b) == 1 for b in blocks):
        return []  # an explicit --nodes that differs from the hosts is the user's call
    return [
        f"GPU hosts do not form {num_nodes} blocks of {per_node} ranks in profile order; "
        "nodes are taken as those blocks (check the EP rank order)"
    ]


def baseline_map(method: str, load: np.ndarray, prob: Problem) -> np.ndarray:
    L = load.shape[0]
    G, E, S = prob.num_gpus, prob.num_experts, prob.slots_per_gpu
    if method == "linear":
        return tile_layers(linear_map(E, G, S), L)
    if method == "round_robin":
        return tile_layers(round_robin_map(E, G, S), L)
    phy2log, _, _ = rebalance_experts(load, G * S, prob.num_groups, prob.num_nodes, G)
    return phy2log


def dispatch_record(d: Dispatch) -> dict:
    """What the placement file says about the split its predictions assume."""
    origin = "uniform" if d.origin is None else [round(x, 6) for x in d.origin]
    return {"rule": d.rule, "token_origin": origin}


def _gpu_record(g) -> dict:
    rec = {"id": g.id, "host": g.host, "name": g.name}
    if g.uuid:
        rec["uuid"] = g.uuid
    return rec


def _vibe_layers(
    load, curves, prob: Problem, opts: SolveOptions, use_groups: bool, spread: bool, progress
) -> tuple[list[LayerPlan], list[float]]:
    settings = CpSatSettings(opts.time_limit, opts.workers, opts.seed)
    args = [
        (load[layer], curves, prob, settings, use_groups, spread, opts)
        for layer in range(load.shape[0])
    ]
    # The heuristic is single-threaded and dominates; CP-SAT's threads only briefly overlap.
    jobs = opts.jobs or (os.cpu_count() or 1)
    task = progress.add_task("solving layers", total=len(args)) if progress else None
    out: list[tuple[LayerPlan, float]] = []
    if jobs > 1 and len(args) > 1:
        out = _pool_map(_layer_task, args, min(jobs, len(args)), progress, task)
    else:
        for a in args:
            out.append(_layer_task(a))
            if progress:
                progress.advance(task)
    return [plan for plan, _ in out], [bound for _, bound in out]


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _pool_map(fn, args: list, workers: int, progress, task) -> list:
    """`fn` over `args` in worker processes, results in order. Only this process handles Ctrl-C
    and SIGTERM (a terminal sends Ctrl-C to every process of the group; workers ignore it): on
    any exception here, interrupts included, pending layers are cancelled and the workers
    terminated at once, so nothing keeps running and the exception arrives without a pool
    traceback."""
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_worker_init)
    try:
        # Workers start (fork) inside submit: with the stop signals blocked, none reaches a
        # worker before it ignores them; one sent meanwhile reaches this process on unblocking.
        old = _block(_STOP_SIGNALS)
        try:
            futures = [pool.submit(fn, a) for a in args]
        finally:
            _unblock(old)
        out = []
        for future in futures:
            out.append(future.result())
            if progress:
                progress.advance(task)
    except BrokenProcessPool:
        _stop_pool(pool)
        raise VibeError(
            "a layer worker process died (killed by a signal or out of memory); nothing was "
            "written: run again, with --jobs 1 or more memory if it recurs"
        ) from None
    except BaseException:
        _stop_pool(pool)
        raise
    # Not pool.shutdown(): on Python 3.11 it waits forever when a worker dies (OOM killer, a
    # stray kill) just as the last layer comes back. Every result is in, so just end the workers.
    _stop_pool(pool)
    return out


def _worker_init() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's handler: terminate() ends it
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


def _block(signals: set[signal.Signals]) -> set[int | signal.Signals] | None:
    if not hasattr(signal, "pthread_sigmask"):
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, signals)


def _unblock(old: set[int | signal.Signals] | None) -> None:
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_SETMASK, old if old is not None else set())


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started and end every worker now (terminate, then kill). A second
    Ctrl-C waits until this is done, so no worker is left behind."""
    old = _block(_STOP_SIGNALS)
    try:
        procs = list((getattr(pool, "_processes", None) or {}).values())
        manager = getattr(pool, "_executor_manager_thread", None)
        with contextlib.suppress(OSError):  # the pool may be breaking down already
            pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            if p.is_alive():
                p.terminate()
        deadline = time.monotonic() + 2.0
        for p in procs:
            p.join(timeout=max(0.0, deadline - time.monotonic()))
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(timeout=1.0)
        if manager is not None:  # done before exit, or its wake-up pipe races the exit hook
            manager.join(timeout=2.0)
    finally:
        _unblock(old)


def _layer_task(args) -> tuple[LayerPlan, float]:
    load, curves, prob, settings, use_groups, spread, opts = args
    plan = _plan_one((load, curves, prob, settings, use_groups, spread))
    return plan, layer_global_bound(load, curves, prob, opts)


def layer_global_bound(load: np.ndarray, curves, prob: Problem, opts: SolveOptions) -> float:
    """Bound over every placement of the layer (any replica counts, group map and split); its
    pooled LP (about 1% tighter than the analytic part, 5-10x its time) only on small layers."""
    if not opts.global_bound:
        return 0.0
    small = prob.num_experts * prob.num_gpus <= GLOBAL_LP_MAX_CELLS
    return global_bound(
        load,
        curves,
        prob.slots_per_gpu,
        clusters=None if small else 0,
        even_split=opts.dispatch == "even",
    )


def _plan_one(args) -> LayerPlan:
    load, curves, prob, settings, use_groups, spread = args
    if spread:
        per_node = prob.num_gpus // prob.num_nodes
        node_of = np.arange(prob.num_gpus) // per_node
        return plan_layer(
            load,
            curves,
            prob.slots_per_gpu,
            settings,
            node_of=node_of,
            max_per_expert=prob.num_nodes,
        )
    if not use_groups:
        return plan_layer(load, curves, prob.slots_per_gpu, settings)
    return _plan_grouped(load, curves, prob, settings)


def _plan_grouped(load, curves, prob: Problem, settings: CpSatSettings) -> LayerPlan:
    """Groups onto nodes (speed-aware), then each node planned alone on its own experts. The layer
    waits for its slowest node, so once one node's plan is final no other node needs to go below
    it: the nodes are improved slowest start first, each only down to the slowest plan so far.
    That gives the same layer makespan as improving every node fully, in a fraction of the time."""
    N, K, G, S = prob.num_nodes, prob.num_groups, prob.num_gpus, prob.slots_per_gpu
    per_node = G // N
    group_size = prob.num_experts // K
    node_groups = groups_to_nodes(load, curves, K, N)
    node_experts = [
        np.concatenate([np.arange(k * group_size, (k + 1) * group_size) for k in node_groups[n]])
        for n in range(N)
    ]
    starts = [
        start_layer(load[node_experts[n]], curves[n * per_node : (n + 1) * per_node], S)
        for n in range(N)
    ]
    bound = max(s.lower_bound_us for s in starts)
    plans: list[LayerPlan | None] = [None] * N
    span = 0.0
    for n in sorted(range(N), key=lambda n: (-starts[n].makespan_us, n)):
        plan = improve_layer(starts[n], settings, accept_us=max(span, bound * (1 + TARGET_GAP)))
        plans[n], span = plan, max(span, plan.makespan_us)
    done = [p for p in plans if p is not None]
    # Only a node whose plan is above the layer's bound can raise it: the slowest first.
    layer_bound = max(bound, *(p.lower_bound_us for p in done))
    for n in sorted(range(N), key=lambda n: (-done[n].makespan_us, n)):
        if span <= layer_bound * (1 + TARGET_GAP) or done[n].makespan_us <= layer_bound:
            break
        done[n] = tighten_bound(starts[n], done[n])
        layer_bound = max(layer_bound, done[n].lower_bound_us)
    rows = [node_experts[n][p.phy2log] for n, p in enumerate(done)]
    statuses = [p.status for p in done]
    status = "bound" if all(s == "bound" for s in statuses) else "/".join(sorted(set(statuses)))
    return LayerPlan(
        np.concatenate(rows),
        span,
        layer_bound,
        max(p.heuristic_us for p in done),
        status,
    )
