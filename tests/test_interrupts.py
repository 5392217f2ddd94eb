"""Ctrl-C, SIGTERM and a closed stdout, with real signals on a real `vibe solve` process.

An interrupted run ends promptly with one line (`error: interrupted; nothing was written`),
exit code 130 (SIGINT) or 143 (SIGTERM), no traceback, no output file (an old one untouched),
and no worker process left. A reader that closes stdout early (`| head -1`) only cuts the report
short: the run writes its file and exits 0.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from placement_inputs import solve_args

from vibe_plan.artifacts import ExpertShape, save_gpu_profile, save_routing_profile
from vibe_plan.synthetic import synthetic_gpu_profile, synthetic_routing

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/task").is_dir(), reason="reads worker pids from /proc"
)

INTERRUPTED = "error: interrupted; nothing was written"


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> tuple[Path, Path]:
    """DeepSeek-V3-shaped (256 experts in 8 groups, 58 MoE layers) on 16 GPUs: about 7 s to
    solve on a 2-core machine with one job, so a signal sent 0.4 s into the layers lands mid-run
    (and a stop that takes about that long means the interrupt was swallowed until the write)."""
    folder = tmp_path_factory.mktemp("big")
    gpus, routing = folder / "gpus.yaml", folder / "routing.npz"
    save_gpu_profile(synthetic_gpu_profile(ExpertShape(7168, 2048), 16, 0.1, seed=0), gpus)
    prof = synthetic_routing(256, 58, 8, 4, 512 * 16, seed=1, num_groups=8, first_moe_layer=3)
    save_routing_profile(prof, routing)
    return gpus, routing


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has exited; only its parent's wait is missing


def _solving(pid: int, jobs: int) -> bool:
    """The layers are being planned: the workers are up, or (one job) CP-SAT is loaded."""
    if jobs > 1:
        return len(_children(pid)) >= jobs
    try:
        return "ortools" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def _interrupt(big, tmp_path, sig: signal.Signals, jobs: int, group: bool = False):
    """Start a solve, wait until it is solving (its workers are up), signal it; return
    (exit code, stderr, seconds from signal to exit, worker pids, out folder)."""
    gpus, routing = big
    out = tmp_path / "out"
    out.mkdir()
    cmd = [sys.executable, "-m", "vibe_plan", "solve", "--gpus", gpus, "--routing", routing]
    cmd += ["--redundant", "16", "--out", out / "p.json", "--jobs", str(jobs), "--quiet"]
    proc = subprocess.Popen(
        [str(c) for c in cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=group,
    )
    kids: list[int] = []
    try:
        start = time.monotonic()
        while time.monotonic() - start < 20 and not _solving(proc.pid, jobs):
            time.sleep(0.05)
        time.sleep(0.4)  # well into the layers
        assert proc.poll() is None, "the solve ended before the signal; use a bigger instance"
        kids = _children(proc.pid)
        sent = time.monotonic()
        if group:
            os.killpg(proc.pid, sig)  # as a terminal's Ctrl-C: every process of the group
        else:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=20)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for k in kids:
            if _alive(k):
                os.kill(k, signal.SIGKILL)
    return proc.returncode, err, took, kids, out


def _assert_clean(code, err, took, kids, out, expected):
    assert code == expected, (code, err)
    assert err.strip().splitlines() == [INTERRUPTED], err
    assert took < 5, f"took {took:.1f} s to stop"
    assert list(out.iterdir()) == [], "an interrupted run must write nothing"
    deadline = time.monotonic() + 3
    while any(_alive(k) for k in kids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [k for k in kids if _alive(k)], "a worker outlived the run"


def test_sigint_stops_a_parallel_solve(big, tmp_path):
    code, err, took, kids, out = _interrupt(big, tmp_path, signal.SIGINT, jobs=2)
    assert kids, "the solve should have had worker processes"
    _assert_clean(code, err, took, kids, out, 130)


def test_sigterm_stops_a_parallel_solve(big, tmp_path):
    code, err, took, kids, out = _interrupt(big, tmp_path, signal.SIGTERM, jobs=2)
    _assert_clean(code, err, took, kids, out, 143)


def test_ctrl_c_to_the_process_group(big, tmp_path):
    """A terminal sends SIGINT to the workers too: they ignore it, the parent stops them."""
    code, err, took, kids, out = _interrupt(big, tmp_path, signal.SIGINT, jobs=2, group=True)
    _assert_clean(code, err, took, kids, out, 130)


def test_sigint_is_not_swallowed_with_one_job(big, tmp_path):
    """With --jobs 1 CP-SAT runs in the main process; it must not take Ctrl-C for itself."""
    code, err, took, kids, out = _interrupt(big, tmp_path, signal.SIGINT, jobs=1)
    _assert_clean(code, err, took, kids, out, 130)


def test_closed_stdout_only_cuts_the_report(inputs):
    """`vibe solve ... | head -1`: exit 0, no traceback, the placement written."""
    gpus, routing, out = inputs
    proc = subprocess.Popen(
        [sys.executable, "-m", "vibe_plan", *solve_args(gpus, routing, out / "p.json")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert err == "", err
    assert (out / "p.json").is_file()


def test_ctrl_c_while_the_command_line_loads_is_one_line(monkeypatch, capsys):
    # The entry point imports typer, rich and every command first (about 0.1 s): a Ctrl-C then
    # used to print a traceback. The import now raises KeyboardInterrupt on purpose.
    from vibe_plan import launch

    class CtrlC:
        def find_spec(self, name, path=None, target=None):
            if name == "vibe_plan.cli":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "vibe_plan.cli", raising=False)
    monkeypatch.setattr(sys, "meta_path", [CtrlC(), *sys.meta_path])
    assert launch.main(["solve", "--help"]) == 130
    assert capsys.readouterr().err == INTERRUPTED + "\n"
