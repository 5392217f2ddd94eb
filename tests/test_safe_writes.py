"""Nothing lost, nothing silently wrong: how every command writes its files.

Non-regular targets (devices, FIFOs, symlinks), read-only targets, all-or-nothing writes of
several files, outputs that are inputs or other outputs, and OS errors at write time. Each
refusal is one `error:` line, exit code 2, no traceback, and every file that was there before is
byte-identical afterwards. The main cases run the real CLI in a subprocess; variants and the
failures that need a patched `os` run `vibe_plan.cli.main` in-process (the `vibe` fixture).
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from placement_inputs import solve_args

from vibe_plan.artifacts import io as vio
from vibe_plan.errors import VibeError

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


def cli(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vibe_plan", *[str(a) for a in args]],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def snapshot(folder: Path) -> dict[str, tuple[str, bytes | str]]:
    """Every entry of `folder`: its kind and its bytes (a symlink: where it points)."""
    out: dict[str, tuple[str, bytes | str]] = {}
    for p in sorted(folder.iterdir()):
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            out[p.name] = ("link", os.readlink(p))
        elif stat.S_ISREG(st.st_mode):
            out[p.name] = (oct(stat.S_IMODE(st.st_mode)), p.read_bytes())
        else:
            out[p.name] = (oct(stat.S_IFMT(st.st_mode)), b"")
    return out


def assert_one_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)


@pytest.fixture
def work(inputs):
    """(gpus, routing, out folder) with an old placement and an old SGLang export in place."""
    gpus, routing, out = inputs
    (out / "p.json").write_text('{"old": "placement"}\n')
    (out / "s.json").write_text('{"old": "sglang"}\n')
    return gpus, routing, out


# ----- 1. non-regular targets -----


def test_dev_null_is_written_through_and_stays_a_device(inputs):
    gpus, routing, out = inputs
    before = os.stat("/dev/null")
    r = cli(*solve_args(gpus, routing, "/dev/null", "--export", "sglang=/dev/null"))
    assert r.returncode == 0, r.stderr
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev
    assert stat.S_IMODE(after.st_mode) == stat.S_IMODE(before.st_mode)


def test_fifo_is_refused_and_left_alone(work):
    gpus, routing, out = work
    os.mkfifo(out / "pipe")
    before = snapshot(out)
    r = cli(*solve_args(gpus, routing, out / "pipe"))
    assert_one_error(r.returncode, r.stderr, "named pipe")
    assert snapshot(out) == before


def test_socket_is_refused(tmp_path):
    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        with pytest.raises(VibeError, match="socket"):
            vio.check_writable(path, "--out")
        with pytest.raises(VibeError, match="socket"):
            vio.atomic_write(path, "x")
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


def test_symlink_writes_its_target_and_stays_a_link(work):
    gpus, routing, out = work
    target = out / "real.json"
    target.write_text("old\n")
    target.chmod(0o640)
    (out / "link.json").symlink_to("real.json")
    r = cli(*solve_args(gpus, routing, out / "link.json"))
    assert r.returncode == 0, r.stderr
    assert os.readlink(out / "link.json") == "real.json"
    assert target.read_text().startswith("{") and '"schema"' in target.read_text()
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_dangling_symlink_creates_its_target(vibe, work):
    gpus, routing, out = work
    (out / "link.json").symlink_to("made.json")
    r = vibe(*solve_args(gpus, routing, out / "link.json"))
    assert r.code == 0, r.err
    assert (out / "link.json").is_symlink() and (out / "made.json").is_file()


def test_dangling_symlink_into_a_missing_folder_is_refused(vibe, work):
    gpus, routing, out = work
    (out / "link.json").symlink_to("nowhere/made.json")
    before = snapshot(out)
    r = vibe(*solve_args(gpus, routing, out / "link.json"))
    assert_one_error(r.code, r.err, "does not exist")
    assert snapshot(out) == before


def test_replaced_file_keeps_its_mode(vibe, work):
    gpus, routing, out = work
    (out / "p.json").chmod(0o600)
    r = vibe(*solve_args(gpus, routing, out / "p.json", "--export", f"sglang={out / 's.json'}"))
    assert r.code == 0, r.err
    assert stat.S_IMODE((out / "p.json").stat().st_mode) == 0o600
    assert "old" not in (out / "p.json").read_text()


# ----- 2. read-only targets -----


def test_read_only_output_is_refused(work):
    gpus, routing, out = work
    (out / "p.json").chmod(0o444)
    before = snapshot(out)
    r = cli(*solve_args(gpus, routing, out / "p.json"))
    assert_one_error(r.returncode, r.stderr, "read-only", "p.json")
    assert snapshot(out) == before


def test_read_only_export_is_refused_before_any_work(vibe, work):
    gpus, routing, out = work
    (out / "s.json").chmod(0o444)
    before = snapshot(out)
    r = vibe(*solve_args(gpus, routing, out / "new.json", "--export", f"sglang={out / 's.json'}"))
    assert_one_error(r.code, r.err, "read-only", "s.json")
    assert snapshot(out) == before


def test_read_only_is_checked_again_at_write_time(tmp_path):
    target = tmp_path / "p.json"
    target.write_text("old")
    vio.check_writable(target)
    target.chmod(0o444)  # made read-only while the command worked
    with pytest.raises(VibeError, match="read-only"):
        vio.atomic_write(target, "new")
    assert target.read_text() == "old"


@pytest.mark.skipif(ROOT, reason="root writes into any folder")
def test_unwritable_folder_is_refused(work):
    gpus, routing, out = work
    locked = out / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        r = cli(*solve_args(gpus, routing, locked / "p.json"))
        assert_one_error(r.returncode, r.stderr, "not writable")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_unwritable_folder_is_refused_as_any_user(vibe, work, monkeypatch):
    gpus, routing, out = work
    real_access = os.access
    folder = str(out.resolve())
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if str(p) == folder else real_access(p, mode)
    )
    before = snapshot(out)
    r = vibe(*solve_args(gpus, routing, out / "p.json"))
    assert_one_error(r.code, r.err, "not writable")
    assert snapshot(out) == before


# ----- 3. all or nothing -----


def test_solve_writes_no_file_when_one_export_fails(work):
    """The third file fails (a full disk): the placement and the first export stay as they were,
    and no temporary file is left behind."""
    gpus, routing, out = work
    before = snapshot(out)
    r = cli(
        *solve_args(gpus, routing, out / "p.json", "--export", f"sglang={out / 's.json'}"),
        "--export",
        "trtllm=/dev/full",
    )
    assert_one_error(r.returncode, r.stderr, "/dev/full", "No space left on device")
    assert snapshot(out) == before


def test_evaluate_csv_to_a_full_disk(vibe, inputs):
    gpus, routing, out = inputs
    assert vibe(*solve_args(gpus, routing, out / "p.json")).code == 0
    r = cli("evaluate", out / "p.json", "--gpus", gpus, "--routing", routing, "--csv", "/dev/full")
    assert_one_error(r.returncode, r.stderr, "No space left on device")


def _files(tmp_path: Path) -> list[tuple[Path, str]]:
    items = []
    for name in ("a.json", "b.json", "c.json"):
        (tmp_path / name).write_text(f"old {name}")
        items.append((tmp_path / name, f"new {name}"))
    return items


def test_write_all_puts_back_what_a_failed_rename_replaced(tmp_path, monkeypatch):
    items = [*_files(tmp_path), (tmp_path / "d.json", "new d.json")]  # d.json is new
    before = snapshot(tmp_path)
    real_replace = os.replace
    moved: list[str] = []

    def replace(src, dst):
        if Path(dst).name == "c.json" and Path(src).suffix == ".tmp":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        moved.append(Path(dst).name)
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(VibeError, match="c.json: Read-only file system"):
        vio.write_all(items)
    assert {"a.json", "b.json"} <= set(moved)  # they were replaced, then put back
    assert snapshot(tmp_path) == before


def test_write_all_changes_nothing_when_a_text_fails_to_render(tmp_path):
    items: list = _files(tmp_path)
    before = snapshot(tmp_path)

    def broken(f):
        f.write(b"half")
        raise RuntimeError("renderer bug")

    with pytest.raises(RuntimeError):
        vio.write_all([*items, (tmp_path / "d.json", broken)])
    assert snapshot(tmp_path) == before


def test_write_all_refuses_one_file_twice(tmp_path):
    (tmp_path / "a.json").write_text("old")
    (tmp_path / "b.json").symlink_to("a.json")
    with pytest.raises(VibeError, match="same file"):
        vio.write_all([(tmp_path / "a.json", "x"), (tmp_path / "b.json", "y")])
    assert (tmp_path / "a.json").read_text() == "old"


# ----- 4. conflicting paths -----


def test_out_equal_to_routing_is_refused(work):
    gpus, routing, out = work
    before = routing.read_bytes()
    r = cli(*solve_args(gpus, routing, routing))
    assert_one_error(r.returncode, r.stderr, "is also --routing")
    assert routing.read_bytes() == before


def test_out_equal_to_export_is_refused(work):
    gpus, routing, out = work
    before = snapshot(out)
    r = cli(*solve_args(gpus, routing, out / "p.json", "--export", f"sglang={out / 'p.json'}"))
    assert_one_error(r.returncode, r.stderr, "both write")
    assert snapshot(out) == before


@pytest.mark.parametrize(
    "case",
    ["gpus-symlink", "gpus-hardlink", "routing-dotdot", "two-exports", "export-is-routing"],
)
def test_solve_conflicts(vibe, work, case):
    gpus, routing, out = work
    extra: list[str] = []
    target = out / "p.json"
    if case == "gpus-symlink":
        (out / "g.yaml").symlink_to(gpus)
        target = out / "g.yaml"
    elif case == "gpus-hardlink":
        os.link(gpus, out / "g.yaml")
        target = out / "g.yaml"
    elif case == "routing-dotdot":
        target = out / ".." / routing.parent.name / routing.name
    elif case == "two-exports":
        extra = ["--export", f"sglang={out / 'x.json'}", "--export", f"eplb={out / 'x.json'}"]
    else:
        extra = ["--export", f"eplb={routing}"]
    before = snapshot(out), routing.read_bytes(), gpus.read_bytes()
    r = vibe(*solve_args(gpus, routing, target, *extra))
    assert_one_error(r.code, r.err)
    assert "is also" in r.err or "both write" in r.err
    assert (snapshot(out), routing.read_bytes(), gpus.read_bytes()) == before


def test_evaluate_csv_conflicts(vibe, inputs):
    gpus, routing, out = inputs
    assert vibe(*solve_args(gpus, routing, out / "p.json")).code == 0
    placement = (out / "p.json").read_bytes()
    for csv, needle in ((out / "p.json", "a placement"), (routing, "--routing"), (gpus, "--gpus")):
        r = vibe("evaluate", out / "p.json", "--gpus", gpus, "--routing", routing, "--csv", csv)
        assert_one_error(r.code, r.err, needle)
    assert (out / "p.json").read_bytes() == placement


def test_import_routing_out_equal_to_source(tmp_path):
    source = tmp_path / "dump.npy"
    source.write_bytes(b"\x93NUMPY not really")
    r = cli("import-routing", source, "--out", source)
    assert_one_error(r.returncode, r.stderr, "is also the source")
    assert source.read_bytes() == b"\x93NUMPY not really"


def test_profile_routing_out_equal_to_trace(vibe, tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"prompt": "hello"}\n')
    model = tmp_path / "model"
    model.mkdir()
    r = vibe("profile-routing", "--model", model, "--trace", trace, "--out", trace)
    assert_one_error(r.code, r.err, "is also --trace")
    assert trace.read_text() == '{"prompt": "hello"}\n'


def test_profile_gpus_out_equal_to_base(vibe, inputs):
    gpus, _, _ = inputs
    before = gpus.read_bytes()
    r = vibe("profile-gpus", "--quick", "--base", gpus, "--device", "cpu", "--out", gpus)
    assert_one_error(r.code, r.err, "is also --base")
    assert gpus.read_bytes() == before


def test_check_distinct_messages(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("x")
    vio.check_distinct([("--out", a)], [("--routing", b)])  # distinct: fine
    vio.check_distinct([("--out", Path("/dev/null")), ("--csv", Path("/dev/null"))])
    with pytest.raises(VibeError, match=r"^--out .*a is also --routing; "):
        vio.check_distinct([("--out", a)], [("--routing", tmp_path / "." / "a")])
    with pytest.raises(VibeError, match="--out and --csv both write"):
        vio.check_distinct([("--out", a), ("--csv", a)], [])


# ----- 5. OS errors at write time -----


@pytest.mark.parametrize(
    "where, err, text",
    [
        ("replace", errno.EROFS, "Read-only file system"),
        ("replace", errno.EISDIR, "Is a directory"),
        ("fsync", errno.ENOSPC, "No space left on device"),
        ("mkstemp", errno.EACCES, "Permission denied"),
    ],
)
def test_os_error_at_write_time_is_one_line(vibe, work, monkeypatch, where, err, text):
    gpus, routing, out = work
    before = snapshot(out)

    def fail(*args, **kwargs):
        raise OSError(err, os.strerror(err))

    target = {"replace": os, "fsync": os, "mkstemp": vio.tempfile}[where]
    monkeypatch.setattr(target, where, fail)
    r = vibe(*solve_args(gpus, routing, out / "p.json", "--export", f"sglang={out / 's.json'}"))
    assert_one_error(r.code, r.err, text, "p.json")
    assert snapshot(out) == before


def test_disk_full_on_a_device_is_one_line():
    with pytest.raises(VibeError, match="/dev/full: No space left on device"):
        vio.atomic_write("/dev/full", "x")
