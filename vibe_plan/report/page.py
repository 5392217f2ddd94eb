"""The report's HTML: one page, inline CSS, no script, figures as PNG files beside it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Any

from vibe_plan.report.data import ReportData
from vibe_plan.report.figures import Fig

# `vibe report` replaces an existing --out folder only where its index.html carries this tag.
MARKER = '<meta name="generator" content="vibe report">'

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d232a;
  background: #f6f7f9; margin: 0; }
main { max-width: 1140px; margin: 0 auto; padding: 8px 20px 40px; }
header { background: #1d3557; color: #fff; padding: 18px 20px; }
header h1 { margin: 0 auto; max-width: 1100px; font-size: 24px; }
header p { margin: 4px auto 0; max-width: 1100px; opacity: .9; }
nav { max-width: 1100px; margin: 8px auto 0; font-size: 14px; }
nav a { color: #cfe3ff; margin-right: 14px; }
h2 { border-bottom: 2px solid #d7dde5; padding-bottom: 4px; margin-top: 34px; }
section.card, figure { background: #fff; border: 1px solid #dfe3e8; border-radius: 6px;
  padding: 12px 14px; margin: 14px 0; }
figure img { display: block; width: 100%; height: auto; }
figcaption { font-size: 13.5px; color: #47525e; margin-top: 6px; }
figcaption b { color: #1d232a; }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; background: #fff; }
th, td { border-bottom: 1px solid #e3e7ec; padding: 5px 8px; text-align: right;
  white-space: nowrap; }
th { background: #eef1f5; }
td.text, th.text { text-align: left; }
td.text { white-space: normal; }
table.options { width: auto; }
td.hash { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px;
  white-space: normal; word-break: break-all; text-align: left; }
tr.best td { font-weight: 600; background: #eefaf0; }
.scroll { overflow-x: auto; }
.notes li { color: #7a4b00; }
.muted { color: #5d6873; font-size: 13.5px; }
footer { color: #5d6873; font-size: 13px; margin-top: 30px; }
"""


@dataclass
class Section:
    id: str
    title: str
    intro: str  # HTML
    figures: list[Fig]
    html: str = ""  # tables and notes, after the intro


def _num(v: Any) -> str:
    if isinstance(v, float) and not math.isfinite(v):
        return "" if math.isnan(v) else str(v)
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) >= 100 else f"{v:.5g}"
    if isinstance(v, int):
        return f"{v:,}"
    return escape(str(v))


def table(rows: list[dict], text_cols: tuple[str, ...] = (), best: int | None = None) -> str:
    """Rows with the same keys as an HTML table; `best`: the row index to highlight."""
    if not rows:
        return ""
    cols = list(rows[0])
    head = "".join(
        f'<th class="text">{escape(c)}</th>' if c in text_cols else f"<th>{escape(c)}</th>"
        for c in cols
    )
    body = []
    for i, row in enumerate(rows):
        cls = ' class="best"' if i == best else ""
        cells = "".join(
            f'<td class="text">{escape(str(row[c]))}</td>'
            if c in text_cols
            else f"<td>{_num(row[c])}</td>"
            for c in cols
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def figure_html(f: Fig) -> str:
    return (
        f'<figure id="{escape(f.file.removesuffix(".png"))}">'
        f'<img src="{escape(f.file)}" alt="{escape(f.alt)}" width="{f.width}" '
        f'height="{f.height}" loading="eager">'
        f"<figcaption><b>{escape(f.title)}.</b> {escape(f.caption)}</figcaption></figure>"
    )


def evaluate_html(data: ReportData) -> str:
    rows = data.rows
    best = min(range(len(rows)), key=lambda i: rows[i]["mean_us"])
    return table(rows, text_cols=("placement", "method", "top_stragglers"), best=best)


def inputs_html(data: ReportData, options: dict[str, str]) -> str:
    cols = ("role", "file", "bytes", "sha256")
    head = "".join(f'<th class="text">{c}</th>' for c in cols)
    body = "".join(
        "<tr>"
        f'<td class="text">{escape(f.role)}</td><td class="text">{escape(str(f.path))}</td>'
        f'<td class="text">{f.size:,}</td><td class="hash">{f.sha256}</td>'
        "</tr>"
        for f in data.inputs
    )
    opts = "".join(
        f"<tr><td class='text'>{escape(k)}</td><td class='text'>{escape(v)}</td></tr>"
        for k, v in options.items()
    )
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
        f'</table></div><h3>Options</h3><table class="options"><tbody>{opts}</tbody></table>'
    )


def notes_html(notes: list[str]) -> str:
    if not notes:
        return ""
    items = "".join(f"<li>{escape(n)}</li>" for n in notes)
    return f'<section class="card"><h3>Notes</h3><ul class="notes">{items}</ul></section>'


def page(title: str, summary: str, sections: list[Section], notes: list[str], version: str) -> str:
    nav = "".join(f'<a href="#{s.id}">{escape(s.title)}</a>' for s in sections)
    body = []
    for s in sections:
        body.append(f'<h2 id="{s.id}">{escape(s.title)}</h2>')
        if s.intro:
            body.append(f'<p class="muted">{s.intro}</p>')
        if s.html:
            body.append(s.html)
        body.extend(figure_html(f) for f in s.figures)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
{MARKER}
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{CSS}</style>
</head>
<body>
<header>
<h1>{escape(title)}</h1>
<p>{escape(summary)}</p>
<nav>{nav}</nav>
</header>
<main>
{notes_html(notes)}
{chr(10).join(body)}
<footer>Written by vibe report (vibe-plan {escape(version)}). Times are the cost model's
predictions from the GPU profile's measured curves; see the inputs above.</footer>
</main>
</body>
</html>
"""
