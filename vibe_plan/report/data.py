"""What the report shows, as numbers: the profiles, each placement's per-GPU time per layer under
the dispatch rule (computed as `vibe evaluate` does), the evaluate rows, and the simulation CSVs.
No plotting here; matplotlib is imported only by `figures.py`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vibe_plan.artifacts.gpu_profile import GpuProfile
from vibe_plan.artifacts.io import require_file, sha256_file
from vibe_plan.artifacts.routing_profile import RoutingProfile
from vibe_plan.errors import VibeError, first_line

# Columns the report reads from `vibe simulate --csv` (more may be there; they are shown as-is).
SUMMARY_COLUMNS = ("placement", "rate", "slo_attainment", "ttft_p90_s")
REQUEST_COLUMNS = ("placement", "rate", "ttft_s")


@dataclass
class InputFile:
    role: str  # "GPU profile", "routing profile", "placement", ...
    path: Path
    sha256: str
    size: int


@dataclass
class PlacementTimes:
    """One placement under the report's dispatch rule, averaged over the routing batches."""

    path: Path
    label: str  # short name for legends: the file name, or the path where names repeat
    method: str
    layer_gpu_us: np.ndarray  # [L, G] mean over batches of each GPU's time in each layer
    layer_imbalance: np.ndarray  # [L] mean over batches of max/mean GPU time
    straggler_share: np.ndarray  # [G] how often each GPU is the slowest, over (batch, layer)


@dataclass
class Simulation:
    path: Path
    summary: Any  # pandas.DataFrame, one row per (placement, rate)
    requests_path: Path
    requests: Any | None  # pandas.DataFrame of per-request rows, None where the file is missing


@dataclass
class ReportData:
    gpus: GpuProfile
    routing: RoutingProfile
    rule: str  # dispatch rule name
    dispatch_text: str  # rule, nodes and token origin in words
    placements: list[PlacementTimes]
    rows: list[dict]  # score_rows(...) of evaluate_run(...)
    simulation: Simulation | None
    inputs: list[InputFile]
    notes: list[str] = field(default_factory=list)


def short_labels(paths: list[Path] | list[str]) -> list[str]:
    """File names where they are unique, else the paths as given."""
    names = [Path(p).name for p in paths]
    if len(set(names)) == len(names):
        return names
    return [str(p) for p in paths]


def input_file(role: str, path: Path) -> InputFile:
    path = require_file(path, role)
    try:
        return InputFile(role, path, sha256_file(path), path.stat().st_size)
    except OSError as e:
        raise VibeError(f"{path}: cannot read it ({e.strerror or e}); check the file") from None


def gather(
    gpus: Path,
    routing: Path,
    placements: list[Path],
    simulation: Path | None,
    dispatch: str,
    token_origin: str,
    nodes: int | None,
) -> ReportData:
    """Read every input, score every placement (evaluate_run, score_rows) and compute its
    per-GPU time per layer with slot_tokens + slot_gpu_times under the same Dispatch."""
    from vibe_plan.cost import curves_of, imbalance, slot_gpu_times
    from vibe_plan.cost.dispatch import slot_tokens
    from vibe_plan.placement.evaluate import evaluate_run, score_rows

    if not placements:
        raise VibeError("give at least one placement file")
    inputs = [input_file("GPU profile", gpus), input_file("routing profile", routing)]
    inputs += [input_file("placement", p) for p in placements]
    sim = read_simulation(simulation) if simulation is not None else None
    if sim is not None:
        inputs.append(input_file("simulation summary", sim.path))
        if sim.requests is not None:
            inputs.append(input_file("simulation requests", sim.requests_path))

    run = evaluate_run(placements, gpus, routing, dispatch, token_origin, nodes)
    gp, rp = run.gpus, run.routing  # the batches evaluate scored, the placements it read
    lids = [int(x) for x in rp.layer_ids]
    curves = curves_of(gp)
    labels = short_labels(placements)
    times_of = []
    for path, label, s, p in zip(placements, labels, run.scores, run.placements, strict=True):
        tokens = slot_tokens(p.phy2log, rp.counts, p.num_gpus, run.rule, lids)  # [B, L, P]
        times = slot_gpu_times(curves, tokens)  # [B, L, G]
        times_of.append(
            PlacementTimes(
                path=path,
                label=label,
                method=p.method,
                layer_gpu_us=times.mean(axis=0),
                layer_imbalance=imbalance(times).mean(axis=0),
                straggler_share=s.straggler_share,
            )
        )
    notes = list(run.notes)
    if sim is not None:
        notes += _check_simulated(sim, placements)
    if sim is not None and sim.requests is None:
        notes.append(
            f"{sim.requests_path} not found: the TTFT distributions (per-request CSV) are left out"
        )
    return ReportData(
        gpus=gp,
        routing=rp,
        rule=run.rule.rule,
        dispatch_text=dispatch_words(run.rule.rule, run.rule.num_nodes, token_origin),
        placements=times_of,
        rows=score_rows(run.scores),
        simulation=sim,
        inputs=inputs,
        notes=notes,
    )


def _check_simulated(sim: Simulation, placements: list[Path]) -> list[str]:
    """The simulation must be of (some of) these placements: matched by file name."""
    names = {Path(p).name for p in placements}
    simulated = sorted({Path(str(p)).name for p in sim.summary["placement"]})
    if not names & set(simulated):
        raise VibeError(
            f"{sim.path} simulates {', '.join(simulated)}, none of the report's placements "
            f"({', '.join(sorted(names))}); simulate these placements or drop --simulation"
        )
    others = [n for n in simulated if n not in names]
    if others:
        return [f"{sim.path} also simulates {', '.join(others)}, not in this report"]
    return []


def dispatch_words(rule: str, num_nodes: int, token_origin: str) -> str:
    if rule in ("static", "local"):
        return f"{rule} dispatch, {num_nodes} node(s), token origin {token_origin}"
    return f"{rule} dispatch"


def requests_path_of(summary: Path) -> Path:
    """`sim.csv` -> `sim.requests.csv`: the per-request CSV `vibe simulate --csv` writes beside."""
    return summary.with_name(f"{summary.stem}.requests.csv")


def read_simulation(path: Path) -> Simulation:
    require_file(path, "simulation CSV")
    summary = read_csv(path, SUMMARY_COLUMNS, "simulation summary CSV (vibe simulate --csv)")
    req_path = requests_path_of(path)
    requests = None
    if req_path.exists():
        requests = read_csv(req_path, REQUEST_COLUMNS, "per-request simulation CSV")
    return Simulation(path, summary, req_path, requests)


def read_csv(path: Path, needed: tuple[str, ...], what: str) -> Any:
    """A CSV as a DataFrame with the `needed` columns; numbers where numbers are needed."""
    import pandas as pd

    try:
        df = pd.read_csv(path, dtype={"placement": str, "method": str})
    except pd.errors.EmptyDataError:
        raise VibeError(f"{path}: empty; is this a {what}?") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise VibeError(f"{path}: not a readable CSV ({first_line(e)}); is this a {what}?")
    except OSError as e:
        raise VibeError(f"{path}: cannot read it ({e.strerror or e}); check the file") from None
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise VibeError(
            f"{path}: missing column(s) {', '.join(missing)}; is this a {what}? "
            f"(found: {', '.join(map(str, df.columns)) or 'none'})"
        )
    if df.empty:
        raise VibeError(f"{path}: no rows; is this a {what}?")
    for col in needed:
        if col == "placement":
            continue
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & df[col].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise VibeError(
                f"{path}: row {row + 2}, column {col}: {df[col].iloc[row]!r} is not a number"
            )
        if col == "rate" and values.isna().any():
            row = int(np.flatnonzero(values.isna().to_numpy())[0])
            raise VibeError(f"{path}: row {row + 2}, column rate: empty; every row needs a rate")
        df[col] = values
    df["placement"] = df["placement"].fillna("").astype(str)
    return df
