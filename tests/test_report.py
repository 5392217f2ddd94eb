"""`vibe report`: the page and its figures, the numbers it shows, a real headless browser
rendering it, and bad inputs (one `error:` line, exit 2, no output folder)."""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from placement_inputs import TOKENS, gpu_dict, skewed_counts, solve_args, write_gpus, write_routing

pytest.importorskip("matplotlib", reason="vibe report needs the report extra (matplotlib)")

from vibe_plan.artifacts import sha256_file  # noqa: E402
from vibe_plan.cli import main  # noqa: E402
from vibe_plan.report.page import MARKER  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# The header `vibe simulate --csv` writes (issue 11); the per-request CSV beside it has
# placement,rate,request,arrival_s,ttft_s,tpot_s.
SUMMARY_HEADER = (
    "placement,method,rate,requests,ttft_p50_s,ttft_p90_s,ttft_p99_s,tpot_p50_s,"
    "tpot_p90_s,slo_attainment,throughput_rps,throughput_tps,imbalance"
)


def _flipping_times() -> list[list[float]]:
    """4 GPUs whose ranking flips: GPU 3 has the lowest floor and the steepest slope."""
    shapes = [(4.0, 0.05), (4.4, 0.045), (4.2, 0.05), (3.0, 0.07)]
    return [[round(base + slope * t, 4) for t in TOKENS] for base, slope in shapes]


@pytest.fixture(scope="module")
def run_inputs(tmp_path_factory):
    """GPU and held-out routing profiles, two solved placements (vibe, linear), and a simulation
    summary CSV with its per-request CSV beside it."""
    src = tmp_path_factory.mktemp("inputs")
    gpus = write_gpus(src / "gpus.yaml", doc=gpu_dict([1.0] * 4, times=_flipping_times()))
    counts = skewed_counts(12, 3, 16, sigma=1.2, seed=3)
    plan_on = write_routing(src / "plan.npz", counts[:6], num_hidden_layers=5)
    held = write_routing(src / "held.npz", counts[6:], num_hidden_layers=5)
    placements = []
    for method in ("vibe", "linear"):
        path = src / f"{method}.json"
        assert main(solve_args(gpus, plan_on, path, "-m", method, "-r", "4")) == 0
        placements.append(path)
    sim = write_simulation(src / "sim.csv", placements)
    return {"gpus": gpus, "routing": held, "placements": placements, "sim": sim, "dir": src}


def write_simulation(path: Path, placements: list[Path], requests: bool = True) -> Path:
    """A summary CSV as `vibe simulate --csv` writes it, and `<stem>.requests.csv` beside it."""
    rng = np.random.default_rng(0)
    cols = SUMMARY_HEADER.split(",")
    summary, per_request = [], []
    for i, (p, method) in enumerate(zip(placements, ("vibe", "linear"), strict=False)):
        for rate in (1.0, 2.0, 4.0):
            ttft = rng.lognormal(np.log(0.2 * (1 + i) * rate), 0.4, size=40)
            summary.append(
                [str(p), method, rate, 40, *np.percentile(ttft, [50, 90, 99]).round(4)]
                + [0.02, 0.03, round(float(np.mean(ttft < 0.6)), 4), rate, rate * 200, 1.1 + i]
            )
            per_request += [
                [str(p), rate, k, round(k / rate, 4), round(float(t), 4), 0.02]
                for k, t in enumerate(ttft)
            ]
    _write_csv(path, cols, summary)
    if requests:
        req_cols = ["placement", "rate", "request", "arrival_s", "ttft_s", "tpot_s"]
        _write_csv(path.with_name(f"{path.stem}.requests.csv"), req_cols, per_request)
    return path


def _write_csv(path: Path, cols: list[str], rows: list[list]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    w.writerows(rows)
    path.write_text(buf.getvalue())


def report_args(inp: dict, out: Path, *extra: object, simulation: bool = True) -> list[object]:
    args: list[object] = ["report", "--gpus", inp["gpus"], "--routing", inp["routing"]]
    args += [*inp["placements"], "--out", out, *extra]
    if simulation:
        args += ["--simulation", inp["sim"]]
    return args


class _Page(HTMLParser):
    """The page's images (src, alt), title, meta tags, element ids and table cells."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str | None]] = []
        self.scripts = 0
        self.links: list[str] = []
        self.ids: list[str] = []
        self.cells: list[str] = []
        self.title = ""
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.append(str(a["id"]))
        if tag == "img":
            self.images.append(a)
        elif tag == "script":
            self.scripts += 1
        elif tag == "link":
            self.links.append(str(a.get("href")))
        elif tag in ("title", "td"):
            self._in = tag
            if tag == "td":
                self.cells.append("")

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in == "title":
            self.title += data
        elif self._in == "td":
            self.cells[-1] += data


def parse(index: Path) -> _Page:
    p = _Page()
    p.feed(index.read_text(encoding="utf-8"))
    return p


@pytest.fixture(scope="module")
def written(run_inputs, tmp_path_factory):
    """The report for the run inputs, written once for the tests that only read it."""
    out = tmp_path_factory.mktemp("written") / "report"
    assert main([str(a) for a in report_args(run_inputs, out)]) == 0
    return out


def test_page_and_every_figure_written(written, run_inputs):
    index = written / "index.html"
    page = parse(index)
    html = index.read_text()
    assert MARKER in html
    assert page.title.strip()
    assert page.scripts == 0 and not page.links  # self-contained: no script, no stylesheet link
    assert "<style>" in html
    srcs = [str(img["src"]) for img in page.images]
    expected = {"gpu-curves.png", "load-mean.png", "load-variation.png", "imbalance.png"}
    expected |= {"gpu-times-1.png", "gpu-times-2.png", "simulation-rates.png", "ttft-cdf.png"}
    assert set(srcs) == expected
    for img in page.images:
        src = str(img["src"])
        assert "/" not in src and ":" not in src  # relative, beside the page
        assert (written / src).read_bytes()[:8] == PNG_MAGIC
        assert len(str(img["alt"] or "")) > 40, src
    # Nothing else in the folder, no temporary folder left beside it.
    assert sorted(p.name for p in written.iterdir()) == sorted([*srcs, "index.html"])
    assert [p.name for p in written.parent.iterdir()] == ["report"]
    for section in ("evaluate", "layers", "gpus", "load", "simulation", "inputs"):
        assert section in page.ids
    # The inputs with their hashes.
    for f in [run_inputs["gpus"], run_inputs["routing"], *run_inputs["placements"]]:
        assert str(f) in html and sha256_file(f) in html
    requests = run_inputs["sim"].with_name("sim.requests.csv")
    assert sha256_file(run_inputs["sim"]) in html and sha256_file(requests) in html


def test_figures_are_not_blank(written):
    from PIL import Image

    for png in written.glob("*.png"):
        with Image.open(png) as im:
            lo_hi = im.convert("RGB").getextrema()
            assert any(lo != hi for lo, hi in lo_hi), f"{png.name} is one colour"
            assert im.size[0] >= 600


def test_table_shows_the_evaluate_rows(written, run_inputs):
    from vibe_plan.placement.evaluate import evaluate_run, score_rows

    run = evaluate_run(run_inputs["placements"], run_inputs["gpus"], run_inputs["routing"])
    rows = score_rows(run.scores)
    cells = parse(written / "index.html").cells
    for row in rows:
        assert row["placement"] in cells
        assert f"{row['mean_us']:,.3f}" in cells
        assert row["top_stragglers"] in cells


def test_per_gpu_times_are_the_cost_model(run_inputs):
    """The layer maps use slot_tokens + slot_gpu_times under the run's Dispatch, as evaluate."""
    from vibe_plan.artifacts import load_gpu_profile, load_routing_profile
    from vibe_plan.cost import batch_gpu_times, curves_of
    from vibe_plan.engines import load_placement
    from vibe_plan.report.data import gather

    for rule in ("even", "static"):
        data = gather(
            run_inputs["gpus"], run_inputs["routing"], run_inputs["placements"], None, rule,
            "uniform", None,
        )  # fmt: skip
        gp = load_gpu_profile(run_inputs["gpus"])
        rp = load_routing_profile(run_inputs["routing"])
        lids = rp.layer_ids.tolist()
        from vibe_plan.cost.dispatch import Dispatch

        d = Dispatch(rule, 1, None, rp.num_hidden_layers)
        for pt, path in zip(data.placements, run_inputs["placements"], strict=True):
            p, _ = load_placement(path, 4, lids, rp.num_experts)
            times = batch_gpu_times(curves_of(gp), p.phy2log, rp.counts, d, lids)
            np.testing.assert_allclose(pt.layer_gpu_us, times.mean(axis=0))
            imb = (times.max(axis=2) / times.mean(axis=2)).mean(axis=0)
            np.testing.assert_allclose(pt.layer_imbalance, imb)
        assert data.rule == rule


def test_same_inputs_same_figures(vibe, run_inputs, written, tmp_path):
    out = tmp_path / "again"
    r = vibe(*report_args(run_inputs, out))
    assert r.code == 0, r.err
    assert f"wrote {out / 'index.html'}" in r.out
    for png in written.glob("*.png"):
        assert (out / png.name).read_bytes() == png.read_bytes(), png.name
    assert (out / "index.html").read_text() == (written / "index.html").read_text()


def test_rerun_replaces_its_own_report_and_an_empty_folder(vibe, run_inputs, tmp_path):
    out = tmp_path / "report"
    out.mkdir()  # an empty folder may be written into
    r = vibe(*report_args(run_inputs, out))
    assert r.code == 0, r.err
    (out / "notes.txt").write_text("mine")  # a file the report did not write is never deleted
    r = vibe(*report_args(run_inputs, out, simulation=False))
    assert r.code == 2 and r.err.count("error:") == 1 and "notes.txt" in r.err
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    (out / "index.html").chmod(0o444)  # nor is a read-only one replaced
    r = vibe(*report_args(run_inputs, out, simulation=False))
    assert r.code == 2 and "read-only" in r.err
    (out / "index.html").chmod(0o644)
    r = vibe(*report_args(run_inputs, out, simulation=False))
    assert r.code == 0, r.err
    assert not (out / "ttft-cdf.png").exists()
    assert "simulation" not in parse(out / "index.html").ids
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_missing_requests_csv_skips_the_distributions(vibe, run_inputs, tmp_path):
    sim = write_simulation(tmp_path / "only.csv", run_inputs["placements"], requests=False)
    out = tmp_path / "report"
    args = report_args(run_inputs, out, "--simulation", sim, simulation=False)
    r = vibe(*args)
    assert r.code == 0, r.err
    assert "only.requests.csv not found" in r.err
    assert (out / "simulation-rates.png").is_file()
    assert not (out / "ttft-cdf.png").exists()
    assert "only.requests.csv not found" in (out / "index.html").read_text()


def test_requests_without_a_ttft_are_counted(vibe, run_inputs, tmp_path):
    sim = write_simulation(tmp_path / "s.csv", run_inputs["placements"])
    req = tmp_path / "s.requests.csv"
    lines = req.read_text().splitlines()
    cut = [",".join([*line.split(",")[:4], "", line.split(",")[5]]) for line in lines[1:4]]
    req.write_text("\n".join([lines[0], *cut, *lines[4:]]) + "\n")
    out = tmp_path / "report"
    r = vibe(*report_args(run_inputs, out, "--simulation", sim, simulation=False))
    assert r.code == 0, r.err
    assert "3 request(s) without a TTFT left out" in r.err
    assert (out / "ttft-cdf.png").is_file()


# --- the browser ---------------------------------------------------------------------------------


def _chromium() -> str | None:
    return (
        os.environ.get("VIBE_CHROMIUM")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )


def test_page_renders_in_a_headless_browser(written):
    """Debian's chromium, driven by Playwright (no browser download): every image loads, no
    console error, and the screenshot is not one colour."""
    exe = _chromium()
    if exe is None:
        pytest.skip(
            "no chromium on PATH (install: apt-get install -y chromium, as `make test` does "
            "where it can; or set VIBE_CHROMIUM)"
        )
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
    )
    from PIL import Image

    problems: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on(
                "console",
                lambda m: (
                    problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning")
                    else None
                ),
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            page.goto((written / "index.html").resolve().as_uri(), wait_until="load")
            images = page.evaluate(
                "Array.from(document.images).map(i => "
                "[i.getAttribute('src'), i.complete && i.naturalWidth > 0, i.naturalWidth])"
            )
            title = page.title()
            shot = page.screenshot(full_page=True)
        finally:
            browser.close()
    assert title.strip()
    assert len(images) == 8
    broken = [src for src, ok, _ in images if not ok]
    assert not broken, f"images that did not load: {broken}"
    assert not problems, problems
    with Image.open(io.BytesIO(shot)) as im:
        rgb = im.convert("RGB")
        assert any(lo != hi for lo, hi in rgb.getextrema()), "the screenshot is one colour"
        assert len(rgb.getcolors(maxcolors=1 << 20) or []) > 50
        assert rgb.size[1] > 2000  # the whole page, figures included


# --- bad inputs ----------------------------------------------------------------------------------


def _bad_csv(path: Path) -> Path:
    path.write_text("placement,rate,ttft_p90_s\nx,1,0.2\n")
    return path


BAD = {
    "missing GPU profile": lambda inp, t: (["--gpus", t / "nope.yaml"], t / "o", "does not exist"),
    "missing placement": lambda inp, t: ([t / "nope.json"], t / "o", "does not exist"),
    "out folder's parent missing": lambda inp, t: ([], t / "no" / "o", "does not exist"),
    "out's parent is a file": lambda inp, t: ([], inp["gpus"] / "o", "is not a folder"),
    "out is an input": lambda inp, t: ([], inp["placements"][1], "is also the input"),
    "out holds an input": lambda inp, t: ([], inp["dir"], "holds the input"),
    "out is a file": lambda inp, t: ([], _touch(t / "f.html"), "not a folder"),
    "out is another folder": lambda inp, t: ([], _folder(t / "keep"), "not written by vibe"),
    "bad simulation CSV": lambda inp, t: (
        ["--simulation", _bad_csv(t / "bad.csv")],
        t / "o",
        "missing column(s) slo_attainment",
    ),
    "unknown dispatch": lambda inp, t: (["--dispatch", "nope"], t / "o", "unknown dispatch"),
    "wrong GPU count": lambda inp, t: (
        ["--gpus", write_gpus(t / "g8.yaml", [1.0] * 8)],
        t / "o",
        "placement is for 4 GPUs",
    ),
}


def _touch(path: Path) -> Path:
    path.write_text("<html></html>")
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    (path / "index.html").write_text("<html>someone else's</html>")
    return path


def _tree(folder: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


@pytest.mark.parametrize("case", list(BAD))
def test_bad_inputs_one_error_line_no_output(vibe, run_inputs, tmp_path, case):
    extra, out, message = BAD[case](run_inputs, tmp_path)
    args = report_args(run_inputs, out, simulation=False)
    # Options given later win (Typer keeps the last --gpus); extra placements are appended.
    args += [str(x) for x in extra]
    before = _tree(tmp_path), _tree(run_inputs["dir"])
    r = vibe(*args)
    assert r.code == 2, (r.out, r.err)
    assert r.err.startswith("error: ") and r.err.count("\n") == 1, r.err
    assert message in r.err
    assert "Traceback" not in r.err
    # No output folder, no temporary folder, and every input and existing file as it was.
    assert (_tree(tmp_path), _tree(run_inputs["dir"])) == before


def test_unwritable_parent(vibe, run_inputs, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; covered by the parent-missing cases")
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        r = vibe(*report_args(run_inputs, parent / "o", simulation=False))
    finally:
        parent.chmod(0o700)
    assert r.code == 2 and r.err.startswith("error: ") and "not writable" in r.err
    assert list(parent.iterdir()) == []


def test_failure_while_drawing_leaves_nothing(vibe, run_inputs, tmp_path, monkeypatch):
    from vibe_plan.report import figures

    def boom(*a, **k):
        raise figures.VibeError("drawing failed")

    monkeypatch.setattr(figures, "imbalance", boom)
    r = vibe(*report_args(run_inputs, tmp_path / "o"))
    assert r.code == 2 and "drawing failed" in r.err
    assert list(tmp_path.iterdir()) == []


def test_without_matplotlib_says_which_extra(vibe, run_inputs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    r = vibe(*report_args(run_inputs, tmp_path / "o"))
    assert r.code == 2
    assert re.search(r"needs matplotlib.*pip install 'vibe-plan\[report\]'", r.err), r.err
    assert list(tmp_path.iterdir()) == []


def test_simulation_of_other_placements_is_refused(vibe, run_inputs, tmp_path):
    sim = write_simulation(tmp_path / "other.csv", [tmp_path / "elsewhere.json"])
    out = tmp_path / "report"
    r = vibe(*report_args(run_inputs, out, "--simulation", sim, simulation=False))
    assert r.code == 2 and r.err.count("error:") == 1 and "elsewhere.json" in r.err
    assert not out.exists()
