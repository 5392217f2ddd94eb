"""`vibe recalibrate`: parse options, re-plan (vibe_plan.placement.recalibrate), write, render."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vibe_plan.commands.options import GpusOpt, RoutingOpt
from vibe_plan.defaults import TIME_LIMIT_S

if TYPE_CHECKING:
    from vibe_plan.placement.recalibrate import Move, Recalibration


def recalibrate(
    placement: Annotated[
        Path,
        typer.Option(
            "--placement",
            help="The placement in service: vibe JSON, SGLang, TensorRT-LLM or EPLB-style file.",
            show_default=False,
        ),
    ],
    gpus: GpusOpt,
    routing: RoutingOpt,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Placement JSON to write when the verdict is replace (on keep nothing is).",
            show_default=False,
        ),
    ],
    min_gain: Annotated[
        float,
        typer.Option(
            "--min-gain", help="Keep the current placement when the best allowed plan gains less."
        ),
    ] = 0.02,
    max_moves: Annotated[
        int | None,
        typer.Option(
            "--max-moves", help="Bound on moved expert replicas, in total over all layers."
        ),
    ] = None,
    max_move_gb: Annotated[
        float | None,
        typer.Option(
            "--max-move-gb",
            help="Bound on moved expert weights in GB (1e9 bytes), from the GPU profile's expert "
            "shape and dtype.",
        ),
    ] = None,
    moves_out: Annotated[
        Path | None,
        typer.Option("--moves-out", help="Also write the move list (JSON), biggest gain first."),
    ] = None,
    export: Annotated[
        list[str] | None,
        typer.Option(help="FORMAT=PATH, repeatable; formats sglang, trtllm, eplb."),
    ] = None,
    old_gpus: Annotated[
        Path | None,
        typer.Option(
            "--old-gpus",
            help="GPU profile the current placement was solved on (default: its solved_for).",
        ),
    ] = None,
    old_routing: Annotated[
        Path | None,
        typer.Option(
            "--old-routing",
            help="Routing profile the current placement was solved on (default: its solved_for).",
        ),
    ] = None,
    dispatch: Annotated[
        str | None,
        typer.Option(
            "--dispatch",
            help="even | static | local | lp (see vibe solve --help); default: the rule the "
            "placement records, else even.",
            show_default=False,
        ),
    ] = None,
    token_origin: Annotated[
        str | None,
        typer.Option(
            "--token-origin",
            help="static/local: uniform or weights per rank or node; default: what the "
            "placement records.",
            show_default=False,
        ),
    ] = None,
    time_limit: Annotated[
        float,
        typer.Option(
            "--time-limit",
            help="CP-SAT deterministic seconds per layer (fresh plan) and per small move budget "
            "of a layer (migration plans); 0 turns CP-SAT off.",
        ),
    ] = TIME_LIMIT_S,
    seed: Annotated[int, typer.Option(help="Seed for CP-SAT and the local search.")] = 0,
    jobs: Annotated[
        int | None,
        typer.Option(help="Layers planned in parallel processes; default: one per core."),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print the verdict as JSON on stdout (no table)."),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    from vibe_plan.artifacts.io import check_distinct, check_writable, write_all
    from vibe_plan.artifacts.placement import dump_placement
    from vibe_plan.console import console, progress, warn
    from vibe_plan.engines import export_texts, parse_export_specs
    from vibe_plan.placement.recalibrate import RecalibrateOptions, check_options, recalibrate_run

    opts = RecalibrateOptions(
        min_gain=min_gain,
        max_moves=max_moves,
        max_move_gb=max_move_gb,
        dispatch=dispatch,
        token_origin=token_origin,
        time_limit=time_limit,
        seed=seed,
        jobs=jobs,
    )
    check_options(opts)
    specs = parse_export_specs(export or [])
    outputs = [("--out", out), *((f"--export {fmt}", p) for fmt, p in specs)]
    if moves_out is not None:
        outputs.append(("--moves-out", moves_out))
    inputs = [("--placement", placement), ("--gpus", gpus), ("--routing", routing)]
    inputs += [(n, p) for n, p in (("--old-gpus", old_gpus), ("--old-routing", old_routing)) if p]
    check_distinct(outputs, inputs)
    for name, path in outputs:
        check_writable(path, name)
    with progress(quiet or as_json) as bar:
        run = recalibrate_run(placement, gpus, routing, opts, old_gpus, old_routing, bar)
    for note in run.notes:
        warn(note)
    written: list[str] = []
    if run.decision == "replace":
        p = run.placement
        texts = [dump_placement(p), *export_texts(p, specs, routing_layers(run))]
        files = [
            (out, texts[0]),
            *((path, t) for (_, path), t in zip(specs, texts[1:], strict=True)),
        ]
        if moves_out is not None:
            files.append((moves_out, moves_text(run)))
        write_all(files)
        written = [str(path) for path, _ in files]
    if as_json:
        typer.echo(json.dumps(run.verdict(written), indent=2))
        return
    render(console, run, written)


def routing_layers(run: Recalibration) -> int:
    """Decoder layers for the engine exports (SGLang rows): the routing profile's."""
    return run.dispatch.num_hidden_layers or (max(run.placement.layer_ids) + 1)


def moves_text(run: Recalibration) -> str:
    """The move list (`vibe.moves/v1`): one move per line, biggest gain first."""

    def line(m: Move) -> str:
        rec = {
            "layer_id": m.layer_id,
            "expert": m.expert,
            "from_gpu": m.from_gpu,
            "to_gpu": m.to_gpu,
            "bytes": m.bytes,
            "gain_us": round(m.gain_us, 4),
        }
        return json.dumps(rec, separators=(",", ":"))

    head = {
        "schema": "vibe.moves/v1",
        "total_moves": len(run.moves),
        "total_bytes": run.next_bytes,
        "expert_bytes": run.expert_bytes,
        "gain_per_move": "the layer's predicted per-forward gain divided by its moves",
    }
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    body = ",\n    ".join(line(m) for m in run.moves)
    return "{\n" + "\n".join(lines) + f'\n  "moves": [\n    {body}\n  ]\n}}\n'


def render(console, run: Recalibration, written: list[str]) -> None:
    from rich.table import Table

    d = run.drift
    if d.routing_tv is not None:
        tv = d.routing_tv
        worst = int(tv.argmax())
        console.print(
            f"routing drift ({d.routing_source}): total variation distance per layer mean "
            f"{tv.mean():.3f}, max {tv[worst]:.3f} (layer {d.layer_ids[worst]})"
        )
    if d.gpus is not None:
        changed = d.changed_gpus
        at = "/".join(str(t) for t in d.tokens)
        text = "; ".join(
            f"rank {g.rank}: "
            + ("replaced, " if g.replaced else "")
            + "/".join(f"{r:.3f}" for r in g.ratios)
            + "x"
            for g in changed
        )
        console.print(
            f"GPU drift ({d.gpus_source}): "
            + (f"time ratio new/old at {at} tokens: {text}" if changed else "no GPU changed")
        )
    gb = (lambda m: f"{m * run.expert_bytes / 1e9:.2f}") if run.expert_bytes else (lambda m: "-")
    table = Table(
        title=f"predicted MoE time per forward, {run.dispatch.rule} dispatch, new profiles"
    )
    for col in ("plan", "moves", "GB moved", "MoE us / forward", "gain", "of fresh gain"):
        table.add_column(col, justify="left" if col == "plan" else "right")
    table.add_row("current", "0", gb(0), f"{run.current_us:,.1f}", "", "")
    table.add_row(
        "fresh",
        str(run.fresh_moves),
        gb(run.fresh_moves),
        f"{run.fresh_us:,.1f}",
        f"{run.fresh_gain:.2%}",
        "100%",
    )
    for r in run.rows:
        name = f"{r.fraction:.0%} of fresh moves" if r.fraction is not None else "within budget"
        rec = "" if r.recovered is None else f"{r.recovered:.0%}"
        table.add_row(name, str(r.moves), gb(r.moves), f"{r.time_us:,.1f}", f"{r.gain:.2%}", rec)
    console.print(table)
    console.print(f"move budget: {run.budget_rule}")
    verdict = f"{run.decision}: {run.reason}"
    if written:
        verdict += "; wrote " + ", ".join(written)
    else:
        verdict += "; nothing written"
    console.print(verdict)


# Typer keeps a docstring's line breaks; one string per paragraph reads well at any width.
recalibrate.__doc__ = "\n\n".join(
    [
        "Re-plan a placement for drifted traffic or GPUs with few expert moves, or keep it.",
        "Reports routing drift (total variation distance per layer) and GPU drift (new/old time) "
        "against what the placement was solved for, and predicts the per-forward MoE time of the "
        "current placement, a fresh plan and a migration-aware plan that moves few replicas.",
        "Verdict: keep (the best plan the move budget allows gains less than --min-gain; nothing "
        "is written) or replace (--out and the other outputs are written). Both exit 0; --json "
        'prints {"decision": "keep"|"replace", ...} for scripts. Errors exit 2.',
    ]
)
