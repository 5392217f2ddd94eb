"""The rich table of `vibe simulate`: placements side by side at each rate."""

from __future__ import annotations

import math
from pathlib import Path

from rich import box
from rich.table import Table

from vibe_plan.simulate.run import SimulateResult


def _ms(x: float) -> str:
    if not math.isfinite(x):
        return "-"
    ms = x * 1e3
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.3g}"


def _vs(x: float, base: float) -> str:
    if not (math.isfinite(x) and math.isfinite(base)) or base <= 0:
        return "-"
    return f"{x / base - 1:+.1%}"


def _short_names(paths: list[str]) -> list[str]:
    """File names where they tell the placements apart, else the paths as given."""
    short = [Path(p).name for p in paths]
    return short if len(set(short)) == len(short) else paths


def simulate_table(res: SimulateResult, slo_ttft_s: float, slo_tpot_s: float) -> Table:
    arrivals = "Poisson arrivals" if res.poisson else "the trace's arrival times"
    t = Table(
        title=f"Serving simulation ({arrivals}, {res.rule.rule} dispatch); SLO: TTFT <= "
        f"{_ms(slo_ttft_s)} ms and TPOT <= {_ms(slo_tpot_s)} ms",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        padding=(0, 0),
        pad_edge=False,
        caption="rate: requests/s offered; times in ms; req/s and tok/s (output tokens) served; "
        "imbal: expert time max/mean over GPUs; expert: share of busy time the experts add (what "
        "placement can change); vs 1st: against the first placement at the same rate",
        caption_justify="left",
    )
    heads = [
        "rate",
        "placement",
        "TTFT\np50",
        "TTFT\np90",
        "TTFT\np99",
        "TPOT\np50",
        "TPOT\np90",
        "SLO\nmet",
        "req/s\nout",
        "tok/s\nout",
        "imbal",
        "expert\nshare",
        "TTFT p90\nvs 1st",
        "SLO\nvs 1st",
    ]
    for col in heads:
        left = col == "placement"
        t.add_column(
            col,
            justify="left" if left else "right",
            no_wrap=not left,
            min_width=12 if left else None,
        )
    n_rates = len(res.rates)
    names = _short_names([r.placement for r in res.runs[::n_rates]])
    for k in range(n_rates):
        runs = res.runs[k::n_rates]
        base = runs[0]
        for i, r in enumerate(runs):
            name = names[i] if r.method in names[i] else f"{names[i]} ({r.method})"
            t.add_row(
                f"{r.rate:,.3g}" if i == 0 else "",
                name,
                _ms(r.ttft_p50_s),
                _ms(r.ttft_p90_s),
                _ms(r.ttft_p99_s),
                _ms(r.tpot_p50_s),
                _ms(r.tpot_p90_s),
                f"{r.slo_attainment:.1%}",
                f"{r.throughput_rps:,.3g}",
                f"{r.throughput_tps:,.0f}",
                f"{r.imbalance:.3f}",
                f"{r.expert_share:.0%}",
                "" if i == 0 else _vs(r.ttft_p90_s, base.ttft_p90_s),
                "" if i == 0 else f"{(r.slo_attainment - base.slo_attainment) * 100:+.1f}pt",
            )
        if k < n_rates - 1:
            t.add_section()
    return t
