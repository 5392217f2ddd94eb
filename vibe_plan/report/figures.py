"""The report's figures, drawn with matplotlib's object API (no pyplot, no global backend): each
function draws one PNG into a folder and returns what the page needs to show it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vibe_plan.cost import curves_of
from vibe_plan.errors import VibeError
from vibe_plan.report.data import ReportData, Simulation, short_labels

DPI = 100
WIDTH_IN = 11.0  # 1100 px: the page's content width
MAX_LEGEND = 16  # more GPUs than this: a colour bar instead of a legend
MAX_CDF_PANELS = 6


@dataclass
class Fig:
    file: str  # PNG file name inside the report folder
    title: str
    alt: str  # what the image shows, for screen readers and when it cannot load
    caption: str
    width: int  # pixels
    height: int


def require_matplotlib() -> None:
    """Fail early, with the install line, where the `report` extra is missing."""
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError:
        raise VibeError(
            "vibe report needs matplotlib, which the light core does not install; "
            "run: pip install 'vibe-plan[report]'"
        ) from None


@contextmanager
def _style() -> Iterator[None]:
    """matplotlib's defaults whatever the user's matplotlibrc says: the same inputs draw the same
    pixels."""
    import matplotlib
    import matplotlib.style

    with (
        matplotlib.style.context("default"),
        matplotlib.rc_context(
            {
                "font.size": 9,
                "axes.titlesize": 10,
                "axes.grid": True,
                "grid.alpha": 0.3,
                "legend.fontsize": 8,
                "svg.hashsalt": "vibe-report",
            }
        ),
    ):
        yield


def _figure(height_in: float, **kw: Any) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(WIDTH_IN, height_in), dpi=DPI, layout="constrained", **kw)


def _save(fig: Any, folder: Path, name: str, title: str, alt: str, caption: str) -> Fig:
    w, h = fig.get_size_inches() * DPI
    fig.savefig(folder / name, dpi=DPI, metadata={"Software": None})
    return Fig(name, title, alt, caption, int(round(w)), int(round(h)))


def _colors(n: int) -> list[Any]:
    """Distinct colours for n lines: tab10 / tab20 where they suffice, else viridis."""
    import matplotlib

    if n <= 10:
        return [matplotlib.colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [matplotlib.colormaps["tab20"](i) for i in range(n)]
    return [matplotlib.colormaps["viridis"](i / max(n - 1, 1)) for i in range(n)]


def _gpu_key(fig: Any, axes: Any, colors: list[Any], labels: list[str]) -> None:
    """A legend for a few GPUs, a colour bar of EP ranks for many."""
    if len(labels) <= MAX_LEGEND:
        axes.legend(fontsize=7, ncol=2 if len(labels) > 8 else 1)
        return
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    norm = Normalize(0, len(labels) - 1)
    bar = fig.colorbar(ScalarMappable(norm, matplotlib.colormaps["viridis"]), ax=axes)
    bar.set_label("EP rank")


def _layer_ticks(axes: Any, layer_ids: np.ndarray, axis: str = "x", most: int = 24) -> None:
    L = len(layer_ids)
    step = max(1, int(np.ceil(L / most)))
    pos = np.arange(0, L, step)
    labels = [str(int(layer_ids[i])) for i in pos]
    if axis == "x":
        axes.set_xticks(pos, labels)
    else:
        axes.set_yticks(pos, labels)


def gpu_curves(data: ReportData, folder: Path) -> Fig:
    gp = data.gpus
    curves = curves_of(gp)
    G = len(curves)
    lo = min(g.curve.tokens[0] for g in gp.gpus)
    hi = max(g.curve.tokens[-1] for g in gp.gpus)
    n = np.unique(np.geomspace(max(lo, 1), max(hi, lo + 1), 240))
    t = np.stack([c(n) for c in curves])  # [G, N]
    rel = t / t.min(axis=0)
    fastest = t.argmin(axis=0)
    flips = [float(np.sqrt(n[i] * n[i + 1])) for i in np.flatnonzero(np.diff(fastest))]
    labels = [f"GPU {g.id} ({g.host})" for g in gp.gpus]
    colors = _colors(G)
    with _style():
        fig = _figure(4.2)
        left, right = fig.subplots(1, 2)
        for g in range(G):
            left.plot(n, t[g], color=colors[g], lw=1.2, label=labels[g])
            pts = gp.gpus[g].curve
            left.plot(pts.tokens, pts.time_us, "o", ms=2.5, color=colors[g])
            right.plot(n, rel[g], color=colors[g], lw=1.2, label=labels[g])
        for x in flips[:12]:
            right.axvline(x, color="0.4", ls=":", lw=0.9)
        left.set(xscale="log", yscale="log", xlabel="tokens per expert", ylabel="time (us)")
        left.set_title("Expert FFN time per GPU (measured points and curve)")
        right.set(xscale="log", xlabel="tokens per expert", ylabel="time / fastest GPU's time")
        right.set_title("Relative to the fastest GPU at each token count")
        _gpu_key(fig, right, colors, labels)
        flip_text = (
            f"The fastest GPU changes at {len(flips)} token count(s) (dotted lines)."
            if flips
            else "The same GPU is fastest at every token count."
        )
        return _save(
            fig,
            folder,
            "gpu-curves.png",
            "GPU time curves",
            f"Two line charts of {G} GPUs' expert FFN time against tokens per expert, from "
            f"{lo:,} to {hi:,} tokens: absolute time in microseconds, and time relative to the "
            f"fastest GPU. {flip_text}",
            "Each GPU's measured time for one expert's tokens (log scales), and the same "
            "curves divided by the fastest GPU's at each token count: where lines cross, the "
            f"ranking flips. {flip_text}",
        )


def load_mean(data: ReportData, folder: Path) -> Fig:
    rp = data.routing
    load = rp.mean_load()
    L, E = load.shape
    with _style():
        fig = _figure(_heat_height(L))
        ax = fig.subplots()
        im = ax.imshow(load, aspect="auto", origin="lower", cmap="viridis", interpolation="none")
        ax.grid(False)
        ax.set(xlabel="expert", ylabel="MoE layer (decoder index)")
        _layer_ticks(ax, rp.layer_ids, "y")
        ax.set_title(f"Mean tokens per batch, {rp.num_batches} batch(es)")
        fig.colorbar(im, ax=ax, label="tokens per batch")
        hot = np.unravel_index(int(np.argmax(load)), load.shape)
        return _save(
            fig,
            folder,
            "load-mean.png",
            "Expert load",
            f"Heat map of mean tokens per batch for {L} MoE layers by {E} experts; the hottest "
            f"cell is expert {hot[1]} in decoder layer {int(rp.layer_ids[hot[0]])} with "
            f"{load[hot]:,.0f} tokens.",
            "Tokens each expert receives per batch, averaged over the routing profile's batches "
            "(rows: MoE layers; columns: experts). Bright cells are hot experts.",
        )


def load_variation(data: ReportData, folder: Path) -> Fig:
    rp = data.routing
    counts = rp.counts.astype(float)
    mean = counts.mean(axis=0)
    std = counts.std(axis=0)
    cv = np.ma.masked_where(mean <= 0, std / np.where(mean > 0, mean, 1))
    L, E = mean.shape
    per_layer = np.ma.median(cv, axis=1)
    with _style():
        fig = _figure(_heat_height(L))
        heat, spread = fig.subplots(1, 2, width_ratios=[4, 1], sharey=True)
        im = heat.imshow(cv, aspect="auto", origin="lower", cmap="magma", interpolation="none")
        heat.grid(False)
        heat.set(xlabel="expert", ylabel="MoE layer (decoder index)")
        _layer_ticks(heat, rp.layer_ids, "y")
        heat.set_title("Batch-to-batch variation: std / mean of each expert's tokens")
        fig.colorbar(im, ax=heat, label="coefficient of variation")
        q = np.ma.filled(np.ma.stack([cv.min(axis=1), per_layer, cv.max(axis=1)]), np.nan)
        y = np.arange(L)
        spread.fill_betweenx(y, q[0], q[2], color="C1", alpha=0.3, label="min to max")
        spread.plot(q[1], y, color="C1", label="median")
        spread.set(xlabel="CV per layer")
        spread.set_title("Spread per layer")
        spread.legend(loc="upper right")
        med = float(np.ma.median(cv)) if cv.count() else float("nan")
        return _save(
            fig,
            folder,
            "load-variation.png",
            "Load variation between batches",
            f"Heat map of the coefficient of variation over {rp.num_batches} batches for {L} "
            f"MoE layers by {E} experts (median {med:.2f}), and a per-layer plot of its "
            "minimum, median and maximum.",
            "How much each expert's tokens change from batch to batch (standard deviation over "
            "mean; blank where an expert got no tokens). A plan made on some batches meets "
            "other batches: high variation is where it can go stale.",
        )


def _heat_height(rows: int) -> float:
    return float(np.clip(1.6 + 0.09 * rows, 3.2, 9.0))


def gpu_times(data: ReportData, folder: Path, index: int) -> Fig:
    """One placement: per-layer slowest and mean GPU time, and each GPU's time over its layer's
    mean (the straggler of each layer marked). The colour range is this placement's largest
    deviation from its layer's mean, so that its stragglers show however balanced it is."""
    from matplotlib.colors import TwoSlopeNorm

    p = data.placements[index]
    rp = data.routing
    t = p.layer_gpu_us  # [L, G]
    L, G = t.shape
    ratio = t / np.where(t.mean(axis=1, keepdims=True) > 0, t.mean(axis=1, keepdims=True), 1)
    slow = t.argmax(axis=1)
    limit = share_limit(ratio)
    x = np.arange(L)
    with _style():
        fig = _figure(1.8 + _heat_height(G) * 0.8)
        top, heat = fig.subplots(2, 1, sharex=True, height_ratios=[1, 1.6])
        top.plot(x, t.max(axis=1), color="C3", lw=1.4, label="slowest GPU")
        top.plot(x, t.mean(axis=1), color="C0", lw=1.2, label="mean GPU")
        top.fill_between(x, t.min(axis=1), t.max(axis=1), color="C0", alpha=0.15, label="range")
        top.plot([], [], "k.", ms=4, label="slowest GPU\n(map below)")
        top.set(ylabel="time (us)")
        top.set_title(
            f"{p.label} ({p.method}): per-GPU time per layer, mean over {rp.num_batches} "
            f"batch(es), {data.dispatch_text}"
        )
        top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        norm = TwoSlopeNorm(1.0, 1.0 - limit, 1.0 + limit)
        im = heat.imshow(
            ratio.T, aspect="auto", origin="lower", cmap="RdBu_r", norm=norm, interpolation="none"
        )
        heat.grid(False)
        heat.plot(x, slow, "k.", ms=4, label="slowest GPU of the layer")
        heat.set(xlabel="MoE layer (decoder index)", ylabel="GPU (EP rank)")
        _layer_ticks(heat, rp.layer_ids, "x")
        if G <= 32:
            heat.set_yticks(np.arange(G), [str(g.id) for g in data.gpus.gpus])
        fig.colorbar(im, ax=heat, label="GPU time / layer's mean GPU time")
        share = p.straggler_share
        worst = int(np.argmax(share))
        return _save(
            fig,
            folder,
            f"gpu-times-{index + 1}.png",
            f"{p.label}: per-GPU time per layer",
            f"For placement {p.label} ({p.method}): a line chart of the slowest and mean GPU time "
            f"in each of {L} MoE layers, and a heat map of {G} GPUs' time relative to the "
            f"layer's mean with each layer's slowest GPU marked; GPU {worst} is the slowest in "
            f"{share[worst]:.0%} of (batch, layer) pairs.",
            "Top: the layer waits for its slowest GPU (red) while the mean GPU (blue) shows the "
            "work; the band is the range over GPUs. Bottom: red cells are GPUs above their "
            "layer's mean, blue cells below, black dots the straggler of each layer; the colour "
            f"range, +/-{limit:.1%}, is this placement's largest deviation from a layer's mean.",
        )


def imbalance(data: ReportData, folder: Path) -> Fig:
    ps = data.placements
    rp = data.routing
    G = data.gpus.num_gpus
    colors = _colors(len(ps))
    with _style():
        fig = _figure(4.0)
        left, right = fig.subplots(1, 2, width_ratios=[3, 2])
        x = np.arange(rp.num_layers)
        for p, c in zip(ps, colors, strict=True):
            left.plot(x, p.layer_imbalance, color=c, lw=1.2, label=f"{p.label} ({p.method})")
        left.set(xlabel="MoE layer (decoder index)", ylabel="max / mean GPU time")
        _layer_ticks(left, rp.layer_ids, "x")
        left.set_title("Imbalance per layer (mean over batches)")
        left.legend()
        width = 0.8 / len(ps)
        for i, (p, c) in enumerate(zip(ps, colors, strict=True)):
            right.bar(
                np.arange(G) + (i - (len(ps) - 1) / 2) * width, p.straggler_share, width, color=c
            )
        right.set(xlabel="GPU (EP rank)", ylabel="share of (batch, layer) pairs")
        if G <= 32:
            right.set_xticks(np.arange(G), [str(g.id) for g in data.gpus.gpus])
        right.set_title("How often each GPU is the slowest")
        means = ", ".join(f"{p.label} {float(np.mean(p.layer_imbalance)):.3f}" for p in ps)
        return _save(
            fig,
            folder,
            "imbalance.png",
            "Imbalance and stragglers",
            f"A line chart of each placement's imbalance (slowest over mean GPU time) per MoE "
            f"layer, mean over layers: {means}; and a bar chart of how often each of {G} GPUs "
            "is the slowest, per placement.",
            "Left: 1.0 is a perfectly balanced layer. Right: a GPU that is the slowest far more "
            "often than 1/G of the time is a straggler.",
        )


def _time_unit(values: Any) -> tuple[float, str]:
    """Seconds shown as ms where every finite value is below a second."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return (1e3, "ms") if v.size and float(np.abs(v).max()) < 1 else (1.0, "s")


def _sim_labels(sim: Simulation) -> dict[str, str]:
    """Legend label of each simulated placement (summary order, then any the per-request CSV
    adds): its short name, with its method where the summary gives one."""
    df = sim.summary
    names = list(dict.fromkeys(df["placement"]))
    if sim.requests is not None:
        names += [n for n in dict.fromkeys(sim.requests["placement"]) if n not in names]
    out = {}
    for name, label in zip(names, short_labels(names), strict=True):
        methods = []
        if "method" in df.columns:
            methods = list(dict.fromkeys(df.loc[df["placement"] == name, "method"].dropna()))
        out[name] = f"{label} ({methods[0]})" if len(methods) == 1 else label
    return out


def simulation_rates(sim: Simulation, folder: Path) -> Fig:
    df = sim.summary
    labels = _sim_labels(sim)
    colors = _colors(len(labels))
    scale, unit = _time_unit(df["ttft_p90_s"])
    with _style():
        fig = _figure(4.0)
        slo, ttft = fig.subplots(1, 2)
        for (name, label), c in zip(labels.items(), colors, strict=True):
            rows = df[df["placement"] == name].sort_values("rate", kind="stable")
            slo.plot(rows["rate"], rows["slo_attainment"] * 100, "o-", color=c, label=label)
            ttft.plot(rows["rate"], rows["ttft_p90_s"] * scale, "o-", color=c, label=label)
        slo.set(xlabel="request rate (requests/s)", ylabel="SLO attainment (%)")
        slo.set_ylim(-2, 102)
        slo.set_title("SLO attainment vs rate")
        slo.legend()
        ttft.set(xlabel="request rate (requests/s)", ylabel=f"P90 TTFT ({unit})")
        ttft.set_title("P90 time to first token vs rate")
        rates = sorted(set(df["rate"].tolist()))
        return _save(
            fig,
            folder,
            "simulation-rates.png",
            "SLO attainment and P90 TTFT vs rate",
            f"Two line charts over {len(rates)} request rates ({rates[0]:g} to {rates[-1]:g} "
            f"per second) for {len(labels)} placement(s): SLO attainment in percent and P90 "
            "time to first token in seconds.",
            f"From {sim.path.name}: each placement's share of requests that met the SLO, and "
            "its 90th-percentile time to first token, at each simulated request rate.",
        )


def ttft_cdf(sim: Simulation, folder: Path) -> tuple[Fig, list[str]]:
    from matplotlib.ticker import NullFormatter

    df = sim.requests
    assert df is not None
    notes = []
    valid = df[np.isfinite(df["ttft_s"])]
    if len(valid) < len(df):
        notes.append(
            f"{sim.requests_path}: {len(df) - len(valid)} request(s) without a TTFT left out "
            "of the distributions"
        )
    if valid.empty:
        raise VibeError(f"{sim.requests_path}: no request has a TTFT; nothing to plot")
    rates = sorted(set(valid["rate"].tolist()))
    if len(rates) > MAX_CDF_PANELS:
        pick = np.unique(np.linspace(0, len(rates) - 1, MAX_CDF_PANELS).round().astype(int))
        notes.append(
            f"TTFT distributions shown for {len(pick)} of {len(rates)} rates "
            "(evenly spaced, lowest and highest included)"
        )
        rates = [rates[i] for i in pick]
    labels = _sim_labels(sim)
    colors = _colors(len(labels))
    cols = min(len(rates), 3)
    rows_n = int(np.ceil(len(rates) / cols))
    positive = valid["ttft_s"][valid["ttft_s"] > 0]
    log_x = not positive.empty and positive.max() / positive.min() > 20
    scale, unit = _time_unit(valid["ttft_s"])
    with _style():
        fig = _figure(3.0 * rows_n)
        axes = np.atleast_1d(fig.subplots(rows_n, cols, squeeze=False)).ravel()
        for ax, rate in zip(axes, rates, strict=False):
            at = valid[valid["rate"] == rate]
            for (name, label), c in zip(labels.items(), colors, strict=True):
                x = at.loc[at["placement"] == name, "ttft_s"].to_numpy(dtype=float)
                x = np.sort(x) * scale
                if x.size == 0:
                    continue
                y = np.arange(1, x.size + 1) / x.size
                ax.step(x, y, where="post", color=c, label=label)
            if log_x:
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set(xlabel=f"TTFT ({unit})", ylabel="share of requests", ylim=(0, 1.02))
            ax.set_title(f"rate {rate:g} requests/s")
        for ax in axes[len(rates) :]:
            ax.set_visible(False)
        axes[0].legend(loc="lower right")
        fig_ = _save(
            fig,
            folder,
            "ttft-cdf.png",
            "TTFT distribution per placement",
            f"Cumulative distributions of time to first token per placement, one panel for each "
            f"of {len(rates)} request rate(s), from {len(valid):,} simulated requests.",
            f"From {sim.requests_path.name}: the share of requests whose first token came "
            "within a given time; a curve further left is faster.",
        )
    return fig_, notes


def share_limit(ratio: np.ndarray) -> float:
    """The colour range around 1 of a per-GPU map: its largest deviation (at least 1%)."""
    return max(float(np.max(np.abs(ratio - 1))), 0.01)
