"""CLI entries for `vibe solve` and `vibe evaluate`: parse options, call the library, render."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from vibe_plan.errors import VibeError

GPUS_OPT = typer.Option(..., "--gpus", help="GPU profile (vibe.gpu-profile/v1 YAML).")
ROUTING_OPT = typer.Option(..., "--routing", help="Routing profile (vibe.routing-profile/v1 .npz).")
DISPATCH_OPT = typer.Option(
    "even",
    "--dispatch",
    help="How the engine splits an expert's tokens over its replicas: even (n/r: SGLang "
    "dynamic without an a2a backend, TensorRT-LLM, vLLM), static (SGLang static, the default "
    "with DeepEP), local (SGLang dynamic with DeepEP), lp (SGLang lp, per batch).",
)
ORIGIN_OPT = typer.Option(
    "uniform",
    "--token-origin",
    help="static/local: share of the tokens each EP rank routes: uniform (DP attention, "
    "balanced), or comma-separated weights per rank or per node.",
)


def solve(
    gpus: Path = GPUS_OPT,
    routing: Path = ROUTING_OPT,
    out: Path = typer.Option(..., "--out", help="Placement JSON to write (vibe.placement/v1)."),
    redundant: int = typer.Option(
        0,
        "--redundant",
        "-r",
        help="Redundant expert slots R; (experts + R) must divide by the GPU count.",
    ),
    nodes: int | None = typer.Option(
        None,
        "--nodes",
        help="Nodes; default: distinct hosts in "
        "the GPU profile. GPUs split evenly in profile order.",
    ),
    groups: int | None = typer.Option(
        None,
        "--groups",
        help="Expert groups (group-limited routing); default: the routing profile's, else 1.",
    ),
    method: str = typer.Option(
        "vibe", "--method", "-m", help="vibe | eplb | linear | round_robin."
    ),
    group_locality: bool = typer.Option(
        True,
        "--group-locality/--no-group-locality",
        help="vibe: keep each expert group inside one node when "
        "groups divide over nodes (as eplb does).",
    ),
    time_limit: float = typer.Option(
        0.1,
        "--time-limit",
        help="CP-SAT budget per layer (per node of a layer under group locality) in "
        "deterministic seconds, used only where the bounds do not yet certify the plan; "
        "0 turns CP-SAT off.",
    ),
    workers: int = typer.Option(2, "--workers", help="CP-SAT workers (at least 2)."),
    seed: int = typer.Option(0, "--seed", help="Seed for CP-SAT and the local search."),
    jobs: int | None = typer.Option(
        None, "--jobs", help="Layers solved in parallel processes; default: one per core."
    ),
    export: list[str] = typer.Option(
        [], "--export", help="FORMAT=PATH, repeatable; formats sglang, trtllm, eplb."
    ),
    dispatch: str = DISPATCH_OPT,
    token_origin: str = ORIGIN_OPT,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Plan expert placement: heavy experts on fast GPUs, with a certified gap to optimal.

    Writes the placement JSON (byte-identical for the same inputs and options) and any engine
    exports, and prints the plan next to eplb and linear under the same cost model.
    """
    from vibe_plan.artifacts import load_gpu_profile, load_routing_profile, save_placement
    from vibe_plan.artifacts.io import atomic_write, check_writable, sha256_file
    from vibe_plan.console import console, progress, warn
    from vibe_plan.cost.dispatch import Dispatch, origin_shares
    from vibe_plan.engines import export_texts, parse_export_specs
    from vibe_plan.placement.render import solve_table
    from vibe_plan.placement.solve import SolveOptions, resolve_nodes, solve_placement

    if workers < 1 or (jobs is not None and jobs < 1) or time_limit < 0:
        raise VibeError("--workers and --jobs must be at least 1, --time-limit at least 0")
    specs = parse_export_specs(export)
    check_writable(out, "--out")
    Dispatch(dispatch)  # an unknown rule fails before any file is read
    gp = load_gpu_profile(gpus)
    rp = load_routing_profile(routing)
    origin = origin_shares(token_origin, gp.num_gpus, resolve_nodes(gp, nodes))
    opts = SolveOptions(
        method=method,
        redundant=redundant,
        nodes=nodes,
        groups=groups,
        group_locality=group_locality,
        time_limit=time_limit,
        workers=workers,
        seed=seed,
        jobs=jobs,
        dispatch=dispatch,
        token_origin=origin,
    )
    start = time.perf_counter()
    with progress(quiet) as bar:
        result = solve_placement(gp, rp, opts, bar)
    wall = time.perf_counter() - start
    for note in result.notes:
        warn(note)
    result.placement.inputs = {
        "gpus_sha256": sha256_file(gpus),
        "routing_sha256": sha256_file(routing),
    }
    others = {}
    for name in ("eplb", "linear"):
        if name != method:
            base = SolveOptions(
                name,
                redundant,
                nodes,
                groups,
                dispatch=dispatch,
                token_origin=origin,
            )
            others[name] = solve_placement(gp, rp, base)
    # Render every export before writing anything, so a failure leaves no file behind.
    texts = export_texts(result.placement, specs, rp.num_hidden_layers)
    save_placement(result.placement, out)
    for (_, path), text in zip(specs, texts, strict=True):
        atomic_write(path, text)
    console.print(solve_table(result, others, wall))
    console.print(f"wrote {out}" + "".join(f", {p}" for _, p in specs))


def evaluate(
    placements: list[Path] = typer.Argument(
        ...,
        help="Placement files: vibe JSON, SGLang init-expert-location JSON, or EPLB-style JSON.",
    ),
    gpus: Path = GPUS_OPT,
    routing: Path = ROUTING_OPT,
    csv: Path | None = typer.Option(None, "--csv", help="Also write the table as CSV."),
    dispatch: str = DISPATCH_OPT,
    token_origin: str = ORIGIN_OPT,
    nodes: int | None = typer.Option(
        None, "--nodes", help="Nodes (static/local); default: distinct hosts in the GPU profile."
    ),
) -> None:
    """Score placements on each batch of a routing profile (use batches the plan did not see).

    Per-forward MoE time (sum over layers of the slowest GPU): mean, p50, p95; imbalance; distance
    to the lower bound; which GPUs are the stragglers how often.
    """
    from vibe_plan.artifacts import load_gpu_profile, load_routing_profile
    from vibe_plan.artifacts.io import atomic_write, check_writable
    from vibe_plan.console import console, warn
    from vibe_plan.cost.dispatch import Dispatch, origin_shares, split_note
    from vibe_plan.engines import load_placement
    from vibe_plan.placement.evaluate import rows_csv, score, score_rows
    from vibe_plan.placement.render import evaluate_table
    from vibe_plan.placement.solve import resolve_nodes

    Dispatch(dispatch)
    if csv is not None:
        check_writable(csv, "--csv")
    gp = load_gpu_profile(gpus)
    rp = load_routing_profile(routing)
    N = resolve_nodes(gp, nodes)
    rule = Dispatch(dispatch, N, origin_shares(token_origin, gp.num_gpus, N), rp.num_hidden_layers)
    scores = []
    for path in placements:
        p, warnings = load_placement(
            path, gp.num_gpus, [int(x) for x in rp.layer_ids], rp.num_experts
        )
        if warnings:
            warn(
                f"{path}: {warnings[0]}"
                + (f" (and {len(warnings) - 1} more layers)" if len(warnings) > 1 else "")
            )
        scores.append(score(str(path), gp, rp, p, rule))
        note = split_note(p.phy2log, p.num_gpus, rule, [int(x) for x in rp.layer_ids])
        if note:
            warn(f"{path}: {note}")
    rows = score_rows(scores)
    console.print(evaluate_table(rows, rule.rule))
    if csv is not None:
        atomic_write(csv, rows_csv(rows))
        console.print(f"wrote {csv}")
