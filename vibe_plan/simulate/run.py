"""Serve a workload with each placement at each rate; summarise; write the CSVs (pandas)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vibe_plan.artifacts.gpu_profile import GpuProfile
from vibe_plan.artifacts.placement import Placement
from vibe_plan.artifacts.routing_profile import RoutingProfile
from vibe_plan.cost.dispatch import Dispatch, origin_shares, split_note
from vibe_plan.errors import VibeError
from vibe_plan.placement.evaluate import check_compatible
from vibe_plan.simulate.engine import ServerResult, run_placement
from vibe_plan.simulate.model import LoadSampler, NonExpertCosts, StepModel
from vibe_plan.simulate.options import SimulateOptions
from vibe_plan.simulate.workload import (
    TraceRequests,
    Workload,
    check_positive,
    check_rate,
    poisson_workload,
    trace_workload,
)

SUMMARY_COLUMNS = [
    "placement",
    "method",
    "rate",
    "requests",
    "ttft_p50_s",
    "ttft_p90_s",
    "ttft_p99_s",
    "tpot_p50_s",
    "tpot_p90_s",
    "slo_attainment",
    "throughput_rps",
    "throughput_tps",
    "imbalance",
]
REQUEST_COLUMNS = ["placement", "rate", "request", "arrival_s", "ttft_s", "tpot_s"]


@dataclass
class RunResult:
    """One placement at one rate."""

    placement: str
    method: str
    rate: float
    requests: int
    ttft_p50_s: float
    ttft_p90_s: float
    ttft_p99_s: float
    tpot_p50_s: float
    tpot_p90_s: float
    slo_attainment: float  # share of requests meeting both SLOs
    throughput_rps: float  # requests / (last finish - first arrival)
    throughput_tps: float  # output tokens / the same span
    imbalance: float  # expert time max/mean over GPUs, mean over layers and iterations
    expert_share: float  # share of busy time the experts add (the part placement can change)
    mean_step_ms: float
    iterations: int
    detail: ServerResult = field(repr=False)


@dataclass
class SimulateResult:
    runs: list[RunResult]  # placement-major, rates in the order given
    rates: list[float]
    rule: Dispatch
    poisson: bool
    notes: list[str]


def check_options(o: SimulateOptions) -> None:
    """Every option a user can get wrong, before any file is read or any work is done."""
    if o.rates is not None:
        if not o.rates:
            raise VibeError("--rates is empty; give at least one rate")
        for r in o.rates:
            check_rate(r, "--rate")
    if o.duration_s is not None:
        check_positive(o.duration_s, "--duration")
    check_positive(o.slo_ttft_s, "--slo-ttft")
    check_positive(o.slo_tpot_s, "--slo-tpot")
    if o.batch_tokens < 1:
        raise VibeError(f"--batch-tokens is {o.batch_tokens}; it must be at least 1")
    if o.max_running < 1:
        raise VibeError(f"--max-running is {o.max_running}; it must be at least 1")
    if o.load_draws < 1:
        raise VibeError(f"--load-draws is {o.load_draws}; it must be at least 1")
    if o.seed < 0:
        raise VibeError(f"--seed is {o.seed}; it must be >= 0")
    if o.nodes is not None and o.nodes < 1:
        raise VibeError(f"--nodes is {o.nodes}; it must be at least 1")
    _costs(o).check()


def _costs(o: SimulateOptions) -> NonExpertCosts:
    return NonExpertCosts(
        o.layer_overhead_us, o.attn_us_per_token, o.a2a_us_per_token, o.ctx_us_per_ktoken
    )


def workloads_for(trace: TraceRequests, o: SimulateOptions) -> list[Workload]:
    """One workload per rate (Poisson), or the trace's own times."""
    if o.rates is None:
        return [trace_workload(trace, o.duration_s)]
    return [poisson_workload(trace, r, o.seed, o.duration_s) for r in o.rates]


def simulate(
    gpus: GpuProfile,
    routing: RoutingProfile,
    placements: list[tuple[str, Placement]],
    trace: TraceRequests,
    opts: SimulateOptions,
    progress: Callable[[int, int], None] | None = None,
) -> SimulateResult:
    """Serve the trace with every placement at every rate (see docs/simulate.md)."""
    check_options(opts)
    if not placements:
        raise VibeError("give at least one placement to simulate")
    N = gpus.node_count(opts.nodes)
    rule = Dispatch(
        opts.dispatch,
        N,
        origin_shares(opts.token_origin, gpus.num_gpus, N),
        routing.num_hidden_layers,
    )
    lids = [int(x) for x in routing.layer_ids]
    notes = list(trace.notes)
    for name, p in placements:
        check_compatible(p, gpus, routing, name)
    workloads = workloads_for(trace, opts)
    sampler = LoadSampler(routing, opts.load_draws, opts.seed)
    if sampler.token_source != "meta.row_tokens":
        notes.append(f"routing profile: tokens per row from {sampler.token_source}")
    if not sampler.split:
        notes.append(
            "routing profile: rows are not tagged with both phases; prefill and decode tokens "
            "draw their expert loads from the same rows"
        )
    total = sum(w.num_requests for w in workloads) * len(placements)
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    costs = _costs(opts)
    runs = []
    for name, p in placements:
        model = StepModel(gpus, routing, p, rule, costs, sampler)
        served = run_placement(
            model, sampler, workloads, opts.batch_tokens, opts.max_running, opts.seed, tick
        )
        for w, res in zip(workloads, served, strict=True):
            runs.append(_summary(name, p.method, w, res, opts))
        note = split_note(p.phy2log, p.num_gpus, rule, lids)
        if note:
            notes.append(f"{name}: {note}")
    rates = [w.rate for w in workloads]
    return SimulateResult(runs, rates, rule, opts.rates is not None, notes)


def _pct(x: np.ndarray, q: float) -> float:
    x = x[np.isfinite(x)]
    return float(np.percentile(x, q)) if len(x) else math.nan


def _summary(name: str, method: str, w: Workload, r: ServerResult, o: SimulateOptions) -> RunResult:
    one_token = ~np.isfinite(r.tpot_s)
    meets = (r.ttft_s <= o.slo_ttft_s) & (one_token | (r.tpot_s <= o.slo_tpot_s))
    span = float(r.finish_s.max() - r.arrival_s.min())
    n = len(r.ttft_s)
    return RunResult(
        placement=name,
        method=method,
        rate=w.rate,
        requests=n,
        ttft_p50_s=_pct(r.ttft_s, 50),
        ttft_p90_s=_pct(r.ttft_s, 90),
        ttft_p99_s=_pct(r.ttft_s, 99),
        tpot_p50_s=_pct(r.tpot_s, 50),
        tpot_p90_s=_pct(r.tpot_s, 90),
        slo_attainment=float(meets.mean()),
        throughput_rps=n / span if span > 0 else math.nan,
        throughput_tps=float(r.output_len.sum()) / span if span > 0 else math.nan,
        imbalance=r.imbalance,
        expert_share=r.expert_share,
        mean_step_ms=r.busy_s * 1e3 / max(r.iterations, 1),
        iterations=r.iterations,
        detail=r,
    )


def _r(x: float, digits: int = 6) -> float:
    return round(float(x), digits) if math.isfinite(x) else math.nan


def summary_rows(runs: list[RunResult]) -> list[dict]:
    """One row per placement x rate, with the CSV's columns."""
    return [
        {
            "placement": r.placement,
            "method": r.method,
            "rate": float(r.rate),
            "requests": r.requests,
            "ttft_p50_s": _r(r.ttft_p50_s),
            "ttft_p90_s": _r(r.ttft_p90_s),
            "ttft_p99_s": _r(r.ttft_p99_s),
            "tpot_p50_s": _r(r.tpot_p50_s),
            "tpot_p90_s": _r(r.tpot_p90_s),
            "slo_attainment": _r(r.slo_attainment),
            "throughput_rps": _r(r.throughput_rps),
            "throughput_tps": _r(r.throughput_tps),
            "imbalance": _r(r.imbalance),
        }
        for r in runs
    ]


def summary_csv(runs: list[RunResult]) -> str:
    import pandas as pd

    frame = pd.DataFrame(summary_rows(runs), columns=SUMMARY_COLUMNS)
    return frame.to_csv(index=False, lineterminator="\n")


def requests_csv(runs: list[RunResult]) -> str:
    """Every request of every run: placement, rate, request (index in arrival order), its
    arrival, TTFT and TPOT (empty for a request with one output token), in seconds."""
    import pandas as pd

    parts = []
    for r in runs:
        d = r.detail
        n = len(d.ttft_s)
        parts.append(
            pd.DataFrame(
                {
                    "placement": [r.placement] * n,
                    "rate": np.full(n, float(r.rate)),
                    "request": np.arange(n),
                    "arrival_s": np.round(d.arrival_s, 6),
                    "ttft_s": np.round(d.ttft_s, 6),
                    "tpot_s": np.round(d.tpot_s, 6),
                },
                columns=REQUEST_COLUMNS,
            )
        )
    return pd.concat(parts, ignore_index=True).to_csv(index=False, lineterminator="\n")


def requests_path(csv_path: Path) -> Path:
    """`<csv stem>.requests.csv` beside the summary CSV."""
    return csv_path.with_name(f"{csv_path.stem}.requests.csv")
