"""The end-of-run summary: each GPU's time relative to the fastest, telemetry, quick-fit moves."""

from __future__ import annotations

from rich.table import Table

from vibe_plan.console import console
from vibe_plan.gpus.fit import nearest
from vibe_plan.gpus.measure import ProfileOutcome

SHOW_TOKENS = (8, 256, 4096)


def shown_tokens(tokens: list[int]) -> list[int]:
    """A decode-sized, a knee-sized and the largest load among the measured counts."""
    return sorted({nearest(tokens, g) for g in SHOW_TOKENS})


def short_name(name: str) -> str:
    return name.removeprefix("NVIDIA ").replace("torch threads: ", "threads ")


def render(outcome: ProfileOutcome) -> None:
    profile = outcome.profile
    e = profile.expert
    m = profile.method
    gpus = profile.gpus
    tokens = shown_tokens(gpus[0].curve.tokens)
    times = {
        t: [dict(zip(g.curve.tokens, g.curve.time_us, strict=True)).get(t) for g in gpus]
        for t in tokens
    }
    fastest = {t: min(v for v in times[t] if v is not None) for t in tokens}
    table = Table(
        title=f"{profile.num_gpus} device(s), expert {e.hidden}x{e.intermediate} {e.dtype}, "
        f"K={m.get('experts_per_gpu')}, {m.get('backend')}",
        caption="t(n): one expert's time at n tokens relative to the fastest device ("
        + ", ".join(f"t({t}) = {fastest[t]:.1f} us" for t in tokens)
        + ")",
        title_justify="left",
        caption_justify="left",
    )
    several_hosts = len(set(profile.hosts)) > 1
    for col in ["rank"] + (["host"] if several_hosts else []) + ["device"]:
        table.add_column(col)
    for t in tokens:
        table.add_column(f"t({t})", justify="right")
    for col in ("SM MHz", "temp C", "power W", "throttle"):
        table.add_column(col, justify="right")
    quick = outcome.quick
    if quick:
        table.add_column("scale", justify="right")
        table.add_column("moved")
    for i, g in enumerate(gpus):
        tel = g.telemetry or {}
        row = [str(g.id)] + ([g.host] if several_hosts else []) + [short_name(g.name)]
        for t in tokens:
            value = times[t][i]
            row.append("-" if value is None else f"{value / fastest[t]:.3f}")
        power, limit = tel.get("power_w"), tel.get("power_limit_w")
        row += [
            str(tel.get("sm_clock_mhz", "-")),
            str(tel.get("temp_c", "-")),
            "-" if power is None else (f"{power:.0f}/{limit:.0f}" if limit else f"{power:.0f}"),
            ",".join(tel.get("clock_event_reasons", [])) or "-",
        ]
        if quick:
            q = quick["per_gpu"][i]
            row += [f"{q['scale']:.3f}", f"yes {q['change_pct']:+.1f}%" if q["moved"] else "no"]
        table.add_row(*row)
    console.print(table)
    if quick:
        moved = [q for q in quick["per_gpu"] if q["moved"]]
        console.print(
            f"quick: {len(moved)} of {len(quick['per_gpu'])} GPU(s) moved by "
            f">= {quick['moved_threshold_pct']}% against {quick['base']}"
            + "".join(f"; rank {q['id']} {q['change_pct']:+.1f}%" for q in moved)
        )
    v = outcome.validation
    if v:
        console.print(
            f"validation: cost model vs measured grouped calls over {v['trials']} skewed token "
            f"vectors per device: mean abs error {v['mean_abs_pct_error']:.1f}%, worst "
            f"{v['worst_abs_pct_error']:.1f}%, mean signed {v['mean_signed_pct_error']:+.1f}%"
        )
    if m.get("device") == "cpu":
        console.print("note: measured on the CPU, not a GPU (the device name says so)")
    console.print(f"wrote {outcome.out}")
