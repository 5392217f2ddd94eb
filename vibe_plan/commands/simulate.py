"""`vibe simulate`: parse options, serve the trace (vibe_plan.simulate), render, write the CSVs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from vibe_plan.commands.options import (
    DispatchOpt,
    GpusOpt,
    NodesOpt,
    OriginOpt,
    PlacementsArg,
    RoutingOpt,
)
from vibe_plan.defaults import BATCH_TOKENS
from vibe_plan.simulate.options import (
    A2A_US_PER_TOKEN,
    ATTN_US_PER_TOKEN,
    CTX_US_PER_KTOKEN,
    LAYER_OVERHEAD_US,
    LOAD_DRAWS,
    MAX_RUNNING,
    OUTPUT_LEN,
    SLO_TPOT_S,
    SLO_TTFT_S,
)

TRACE_FORMATS = "auto|jsonl|sharegpt|azure|burstgpt|mooncake"


def simulate(
    placements: PlacementsArg,
    gpus: GpusOpt,
    routing: RoutingOpt,
    trace: Annotated[
        Path,
        typer.Option(
            "--trace",
            help="Request trace: prompt and output lengths (text counts len/4 tokens) and, for "
            "Azure, BurstGPT and Mooncake traces, arrival times.",
            show_default=False,
        ),
    ],
    rate: Annotated[
        float | None,
        typer.Option(help="Poisson arrivals at this many requests/s (default: the trace's times)."),
    ] = None,
    rates: Annotated[
        str | None,
        typer.Option(help="Comma-separated Poisson rates to sweep, e.g. 1,2,4,8."),
    ] = None,
    slo_ttft: Annotated[
        float, typer.Option("--slo-ttft", help="Time-to-first-token SLO, seconds.")
    ] = SLO_TTFT_S,
    slo_tpot: Annotated[
        float, typer.Option("--slo-tpot", help="Time-per-output-token SLO, seconds.")
    ] = SLO_TPOT_S,
    dispatch: DispatchOpt = "even",
    token_origin: OriginOpt = "uniform",
    nodes: NodesOpt = None,
    batch_tokens: Annotated[
        int,
        typer.Option(help="Token budget of one iteration (decode tokens first, then prefill)."),
    ] = BATCH_TOKENS,
    max_running: Annotated[
        int, typer.Option(help="Requests served concurrently at most (admission stops there).")
    ] = MAX_RUNNING,
    duration: Annotated[
        float | None,
        typer.Option(
            help="Seconds of arrivals (Poisson: cycling over the trace; trace: cut there); "
            "default: every trace request once."
        ),
    ] = None,
    max_requests: Annotated[
        int, typer.Option(help="Read only the first N requests of the trace (0: all).")
    ] = 0,
    output_len: Annotated[
        int, typer.Option(help="Output tokens of requests whose trace gives no output length.")
    ] = OUTPUT_LEN,
    trace_format: Annotated[str, typer.Option(help=f"Trace format: {TRACE_FORMATS}.")] = "auto",
    layer_overhead_us: Annotated[
        float,
        typer.Option(help="Non-expert time per layer, fixed part (us, fleet-average GPU)."),
    ] = LAYER_OVERHEAD_US,
    attn_us_per_token: Annotated[
        float,
        typer.Option(help="Attention projections, shared expert, norms: us per token per layer."),
    ] = ATTN_US_PER_TOKEN,
    a2a_us_per_token: Annotated[
        float, typer.Option(help="Dispatch + combine: us per token per MoE layer.")
    ] = A2A_US_PER_TOKEN,
    ctx_us_per_ktoken: Annotated[
        float,
        typer.Option(help="Attention over the context: us per token per 1000 context tokens."),
    ] = CTX_US_PER_KTOKEN,
    load_draws: Annotated[
        int, typer.Option(help="Distinct expert-load draws (seeded row sequences) to pick from.")
    ] = LOAD_DRAWS,
    seed: Annotated[int, typer.Option(help="Seed for arrivals and load draws.")] = 0,
    csv: Annotated[
        Path | None,
        typer.Option(
            help="Write the summary (one row per placement x rate) and, beside it, "
            "<stem>.requests.csv (one row per request)."
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Simulate serving a trace with each placement: TTFT, TPOT, SLO attainment, throughput."""
    from vibe_plan.artifacts.io import check_distinct, check_writable, write_all
    from vibe_plan.console import console, progress, warn
    from vibe_plan.simulate import SimulateOptions, simulate_run
    from vibe_plan.simulate.render import simulate_table
    from vibe_plan.simulate.run import requests_csv, requests_path, summary_csv
    from vibe_plan.simulate.workload import parse_rates

    parsed = parse_rates(rate, rates)
    opts = SimulateOptions(
        rates=None if parsed is None else tuple(parsed),
        duration_s=duration,
        slo_ttft_s=slo_ttft,
        slo_tpot_s=slo_tpot,
        dispatch=dispatch,
        token_origin=token_origin,
        nodes=nodes,
        batch_tokens=batch_tokens,
        max_running=max_running,
        layer_overhead_us=layer_overhead_us,
        attn_us_per_token=attn_us_per_token,
        a2a_us_per_token=a2a_us_per_token,
        ctx_us_per_ktoken=ctx_us_per_ktoken,
        load_draws=load_draws,
        seed=seed,
    )
    outputs: list[tuple[str, Path]] = []
    if csv is not None:
        outputs = [("--csv", csv), ("--csv (requests)", requests_path(csv))]
        inputs = [("--gpus", gpus), ("--routing", routing), ("--trace", trace)]
        check_distinct(outputs, inputs + [("a placement", p) for p in placements])
        for name, path in outputs:
            check_writable(path, name)
    with progress(quiet) as shown:
        bar: Any = shown  # a rich Progress, or a stand-in that draws nothing
        task = bar.add_task("simulating (requests served)", total=None)

        def show(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        run = simulate_run(
            placements, gpus, routing, trace, opts, trace_format, max_requests, output_len, show
        )
    for note in run.notes:
        warn(note)
    console.print(simulate_table(run, slo_ttft, slo_tpot))
    if csv is not None:
        write_all([(csv, summary_csv(run.runs)), (requests_path(csv), requests_csv(run.runs))])
        console.print(f"wrote {csv} and {requests_path(csv)}")


# Typer keeps a docstring's line breaks; one string per paragraph reads well at any width.
simulate.__doc__ = "\n\n".join(
    [
        "Simulate serving a trace with each placement: TTFT, TPOT, SLO attainment, throughput.",
        "A discrete-event model of expert-parallel serving: continuous batching with chunked "
        "prefill within --batch-tokens; each iteration's expert loads are drawn from the routing "
        "profile's rows and priced with the GPU profile's curves under the dispatch rule, plus "
        "non-expert work on the same GPUs. Assumptions: docs/simulate.md.",
    ]
)
