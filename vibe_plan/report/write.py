"""`vibe report` as one call: read the inputs, draw the figures and the page into a temporary
folder beside --out, and move it into place only when everything is written."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from html import escape as _esc
from pathlib import Path

import numpy as np

import vibe_plan.report.figures as figs
from vibe_plan.errors import VibeError
from vibe_plan.report.data import ReportData, gather, requests_path_of
from vibe_plan.report.page import MARKER, Section, evaluate_html, inputs_html, page, table

INDEX = "index.html"


@dataclass
class Report:
    out: Path  # the folder
    index: Path  # out / index.html
    files: list[str]  # every file in the folder, index.html first
    notes: list[str]


def write_report(
    out: Path,
    gpus: Path,
    routing: Path,
    placements: list[Path],
    simulation: Path | None = None,
    dispatch: str = "even",
    token_origin: str = "uniform",
    nodes: int | None = None,
    title: str | None = None,
) -> Report:
    """Write `out/index.html` and its PNG figures for these inputs; all or nothing."""
    figs.require_matplotlib()
    out = Path(out)
    sources = [Path(gpus), Path(routing), *map(Path, placements)]
    if simulation is not None:
        sources += [Path(simulation), requests_path_of(Path(simulation))]
    check_out(out, sources)
    data = gather(
        Path(gpus), Path(routing), list(map(Path, placements)), simulation, dispatch,
        token_origin, nodes,
    )  # fmt: skip
    options = {
        "dispatch": dispatch,
        "token origin": token_origin,
        "nodes": "from the GPU profile's hosts" if nodes is None else str(nodes),
    }
    tmp = _temp_folder(out)
    try:
        files, notes = _write_all(data, tmp, title, options)
        _publish(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return Report(out, out / INDEX, files, notes)


def _write_all(
    data: ReportData, folder: Path, title: str | None, options: dict[str, str]
) -> tuple[list[str], list[str]]:
    from importlib.metadata import PackageNotFoundError, version

    notes = list(data.notes)
    sections = _sections(data, folder, notes)
    try:
        ver = version("vibe-plan")
    except PackageNotFoundError:
        ver = "unknown"
    rp, gp = data.routing, data.gpus
    model = rp.meta.get("model")
    title = title or (f"Expert placement report: {model}" if isinstance(model, str) else None)
    title = title or f"Expert placement report: {data.inputs[1].path.name}"
    hosts = len(dict.fromkeys(g.host for g in gp.gpus))
    summary = (
        f"{gp.num_gpus} GPUs on {hosts} host(s), {rp.num_experts} experts, {rp.num_layers} MoE "
        f"layers, {rp.num_batches} batch(es); {len(data.placements)} placement(s) under "
        f"{data.dispatch_text}."
    )
    sections.append(
        Section(
            "inputs",
            "Inputs",
            "The files this page was made from, with their SHA-256, and the options.",
            [],
            inputs_html(data, options),
        )
    )
    html = page(title, summary, sections, notes, ver)
    try:
        (folder / INDEX).write_text(html, encoding="utf-8")
    except OSError as e:
        raise VibeError(f"cannot write {folder / INDEX}: {e.strerror or e}") from None
    pngs = [f.file for s in sections for f in s.figures]
    return [INDEX, *pngs], notes


def _sections(data: ReportData, folder: Path, notes: list[str]) -> list[Section]:
    rp = data.routing
    try:
        per_gpu = [figs.gpu_times(data, folder, i) for i in range(len(data.placements))]
        sections = [
            Section(
                "evaluate",
                "Predicted MoE time",
                f"Each placement scored on the {rp.num_batches} batch(es) of "
                f"<code>{_esc(data.inputs[1].path.name)}</code> under {_esc(data.dispatch_text)}, "
                "as <code>vibe evaluate</code> does: per-forward MoE time (the sum over MoE "
                "layers of the slowest GPU) in microseconds, its mean, p50 and p95 over batches; "
                "<code>vs_first</code> against the first placement; imbalance (slowest over "
                "mean GPU time); distance above the lower bound; the GPUs most often slowest. "
                "The fastest placement is highlighted.",
                [figs.imbalance(data, folder)],
                evaluate_html(data),
            ),
            Section(
                "layers",
                "Per-GPU time per layer",
                "Each GPU's predicted time in each MoE layer (mean over batches): the layer "
                "waits for its slowest GPU, the straggler.",
                per_gpu,
            ),
            Section(
                "gpus",
                "GPU time curves",
                "The GPU profile's measured time of one expert's tokens on each GPU.",
                [figs.gpu_curves(data, folder)],
                _gpu_table(data),
            ),
        ]
        load = [figs.load_mean(data, folder)]
        if rp.num_batches > 1:
            load.append(figs.load_variation(data, folder))
        else:
            notes.append("the routing profile has one batch: no batch-to-batch variation to show")
        sections.append(
            Section(
                "load",
                "Expert load",
                f"Tokens per (MoE layer, expert) in <code>{_esc(data.inputs[1].path.name)}</code>.",
                load,
            )
        )
        if data.simulation is not None:
            sim = data.simulation
            sim_figs = [figs.simulation_rates(sim, folder)]
            if sim.requests is not None:
                cdf, cdf_notes = figs.ttft_cdf(sim, folder)
                sim_figs.append(cdf)
                notes.extend(cdf_notes)
            sections.append(
                Section(
                    "simulation",
                    "Serving simulation",
                    f"From <code>{_esc(sim.path.name)}</code> (<code>vibe simulate --csv</code>).",
                    sim_figs,
                    table(
                        sim.summary.to_dict("records"),
                        text_cols=("placement", "method"),
                    ),
                )
            )
    except OSError as e:
        raise VibeError(f"cannot write a figure into {folder}: {e.strerror or e}") from None
    return sections


def _gpu_table(data: ReportData) -> str:
    from vibe_plan.cost import curves_of

    gp = data.gpus
    curves = curves_of(gp)
    lo = max(min(g.curve.tokens[0] for g in gp.gpus), 1)
    hi = max(g.curve.tokens[-1] for g in gp.gpus)
    at_lo = np.array([float(c(lo)) for c in curves])
    at_hi = np.array([float(c(hi)) for c in curves])
    rows = [
        {
            "GPU": g.id,
            "host": g.host,
            "name": g.name,
            "points": len(g.curve.tokens),
            f"us at {lo:,} tokens": round(float(at_lo[i]), 3),
            "vs fastest": round(float(at_lo[i] / at_lo.min()), 4),
            f"us at {hi:,} tokens": round(float(at_hi[i]), 3),
            "vs fastest ": round(float(at_hi[i] / at_hi.min()), 4),
        }
        for i, g in enumerate(gp.gpus)
    ]
    return table(rows, text_cols=("host", "name"))


def check_out(out: Path, inputs: list[Path]) -> None:
    """Refuse, before any work, an --out folder that would replace or hold an input, that is
    something other than a folder `vibe report` wrote (or an empty one), or whose parent folder
    cannot take a new folder."""
    real = Path(os.path.realpath(out))
    for src in inputs:
        if not os.path.lexists(src):
            continue
        s = Path(os.path.realpath(src))
        if s == real or _samefile(out, src):
            raise VibeError(
                f"--out {out} is also the input {src}; writing it would replace that input: "
                "give --out a new folder"
            )
        if real in s.parents:
            raise VibeError(
                f"--out {out} holds the input {src}; replacing the folder would delete it: "
                "give --out a new folder"
            )
    if os.path.islink(out):
        raise VibeError(f"--out {out} is a symbolic link; give the folder itself")
    if os.path.lexists(out):
        if not out.is_dir():
            raise VibeError(f"--out {out} exists and is not a folder; give a new folder name")
        if any(out.iterdir()) and not _is_report(out):
            raise VibeError(
                f"--out {out} exists and was not written by vibe report; give a new folder "
                "(an existing report folder is replaced, anything else is left alone)"
            )
        foreign = _foreign_files(out)
        if foreign:
            raise VibeError(
                f"--out {out} holds {foreign[0].name}, which vibe report did not write; replacing "
                "the folder would delete it: move it away or give a new folder"
            )
        locked = [p for p in [out, *out.iterdir()] if not os.lstat(p).st_mode & 0o222]
        if locked:
            raise VibeError(
                f"cannot replace --out {out}: {locked[0]} is read-only; make it writable or "
                "give a new folder"
            )
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        what = "is not a folder" if os.path.lexists(parent) else "does not exist; create it"
        raise VibeError(f"cannot write --out {out}: {parent} {what}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise VibeError(f"cannot write --out {out}: folder {parent} is not writable")


def _samefile(a: Path, b: Path) -> bool:
    try:
        return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)
    except OSError:
        return False


def _foreign_files(folder: Path) -> list[Path]:
    """Entries of an earlier report folder that its page does not reference (a user's notes)."""
    try:
        page = (folder / INDEX).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return sorted(p for p in folder.iterdir() if p.name != INDEX and f'src="{p.name}"' not in page)


def _is_report(folder: Path) -> bool:
    index = folder / INDEX
    try:
        if not stat.S_ISREG(os.lstat(index).st_mode):
            return False
        with open(index, encoding="utf-8", errors="replace") as f:
            return MARKER in f.read(4096)
    except OSError:
        return False


def _temp_folder(out: Path) -> Path:
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        # mkdtemp makes the folder 0700; give it the mode a plain mkdir would have.
        os.chmod(tmp, 0o777 & ~_umask())
    except OSError as e:
        raise VibeError(f"cannot write --out {out}: {e.strerror or e}") from None
    return tmp


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(tmp: Path, out: Path) -> None:
    """Move the finished folder to `out`. An old report there is moved aside first and removed
    only once the new one is in place; if the move fails, it is put back."""
    try:
        if not os.path.lexists(out):
            os.replace(tmp, out)  # fails where a non-empty folder appeared meanwhile
            return
        if any(out.iterdir()) and not _is_report(out):
            raise VibeError(f"--out {out} changed while the report was written; not replaced")
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        try:
            os.replace(out, old)  # onto the empty folder mkdtemp made
        except OSError:
            os.rmdir(old)
            raise
        try:
            os.replace(tmp, out)
        except OSError:
            os.replace(old, out)  # if even this fails, the old report stays in `old`
            raise
        shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        raise VibeError(f"cannot write --out {out}: {e.strerror or e}") from None
