"""File plumbing shared by every format: safe writes (all or nothing, never a partial or damaged
output file), hashing, and the JSON / YAML / JSONL readers with one error style."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from vibe_plan import stop
from vibe_plan.errors import VibeError, first_line

# What a file gets: its text, its bytes, or a function that writes it to a binary file object.
Payload = bytes | str | Callable[[BinaryIO], object]

# Every file a write_all call finished, in order: the CLI tells an interrupt that came before
# any write ("nothing was written") from one that came after.
_written: list[Path] = []


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write `data` to `path` through a temporary file in the same folder, then rename."""
    write_all([(path, data)])


def atomic_write_with(path: str | Path, writer: Callable[[BinaryIO], object]) -> None:
    """Call `writer(binary_file)` on a temporary file, then move it to `path` in one step."""
    write_all([(path, writer)])


def paths_written() -> list[Path]:
    """The files written so far in this process (by write_all and its wrappers)."""
    return list(_written)


@dataclass(frozen=True)
class _Target:
    path: Path  # as the user gave it (for messages)
    real: Path  # where the bytes go: the file itself, or the file a symlink points to
    device: bool  # a character device (/dev/null): written through, never replaced
    mode: int | None  # an existing regular file's permission bits, kept by the new file
    owner: tuple[int, int] | None  # an existing regular file's (uid, gid)


def write_all(items: Sequence[tuple[str | Path, Payload]]) -> None:
    """Write every (path, payload) or none of them.

    Each regular file is written to a temporary file in its target's folder first; only when all
    of them are complete are they renamed into place (keeping an existing file's mode; a symlink's
    target is written, the link stays). If anything fails, the temporary files are removed and
    every target keeps its old content: a rename that fails half way puts back the files already
    replaced. Character devices (/dev/null) are written through, never replaced; FIFOs, sockets,
    read-only files and unwritable folders are refused. OS errors become a one-line VibeError.
    """
    _check_not_stopped()
    targets = [_target(Path(p), "output") for p, _ in items]
    first: dict[Path, _Target] = {}
    for t in targets:
        if not t.device and first.setdefault(t.real, t) is not t:
            raise VibeError(
                f"{first[t.real].path} and {t.path} are the same file; "
                "give each output its own path"
            )
    staged: list[tuple[_Target, Path]] = []
    try:
        for t, (_, payload) in zip(targets, items, strict=True):
            if not t.device:
                _stage(t, payload, staged)
        for t, (_, payload) in zip(targets, items, strict=True):
            if t.device:
                with _os_errors(t):
                    _write_through(t, payload)
        _check_not_stopped()
        _commit(staged)
    finally:
        for _, tmp in staged:
            _remove(tmp)
    _written.extend(t.path for t in targets)


def _check_not_stopped() -> None:
    """A stop signal whose exception a library swallowed still ends the run before it writes."""
    if stop.requested():
        raise KeyboardInterrupt()


def check_writable(path: str | Path, what: str = "output") -> Path:
    """Refuse, before any work, an output path that cannot be written safely: a missing or
    unwritable folder, a folder, a read-only file, a FIFO, a socket or a block device."""
    path = Path(path)
    _target(path, what)
    return path


def check_distinct(
    outputs: Sequence[tuple[str, Path]], inputs: Sequence[tuple[str, Path]] = ()
) -> None:
    """Refuse, before any work, an output that is one of the inputs, lies inside an input folder,
    or is another output.

    Each entry is (option name, path). Paths are compared resolved (symlinks, `..`) and, where
    both exist, as files (hard links). Character devices such as /dev/null never conflict.
    """
    for i, (name, path) in enumerate(outputs):
        for other, src in inputs:
            if _same_file(path, src):
                raise VibeError(
                    f"{name} {path} is also {other}; writing it would replace that input: "
                    f"give {name} another path"
                )
            if (
                os.path.isdir(src)
                and Path(os.path.realpath(src)) in Path(os.path.realpath(path)).parents
            ):
                # An input folder (a checkpoint, an engine's dump folder) is read whole: a file
                # written into it would be read back as part of it next time.
                raise VibeError(
                    f"{name} {path} is inside {other} {src}; write it outside that input folder"
                )
        for other, prev in outputs[:i]:
            if _same_file(path, prev):
                raise VibeError(
                    f"{other} and {name} both write {path}; give each output its own path"
                )


def _same_file(a: Path, b: Path) -> bool:
    try:
        if _is_char_device(a) or _is_char_device(b):
            return False
        if os.path.realpath(a) == os.path.realpath(b):
            return True
        return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def _is_char_device(path: Path) -> bool:
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


_KINDS = {
    stat.S_ISFIFO: "a named pipe (FIFO)",
    stat.S_ISSOCK: "a socket",
    stat.S_ISBLK: "a block device",
}


def _target(path: Path, what: str) -> _Target:
    """Where and how `path` would be written; a VibeError for anything that cannot be."""
    label = f"{what} {path}"
    try:
        st: os.stat_result | None = os.stat(path)  # follows symlinks
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        raise VibeError(f"cannot write {label}: a part of its folder path is a file") from None
    except OSError as e:
        raise VibeError(f"cannot write {label}: {e.strerror or e}") from None
    except ValueError as e:  # an embedded NUL byte
        raise VibeError(f"cannot write {label}: {e}") from None
    if st is None:  # a new file, or a dangling symlink (its target is created)
        real = Path(os.path.realpath(path))
        if not real.parent.is_dir():
            where = f"it links to {real}, and " if os.path.islink(path) else ""
            folder = real.parent if where else path.parent
            raise VibeError(
                f"cannot write {label}: {where}folder {folder} does not exist; create it"
            )
        _check_folder(real.parent, label)
        return _Target(path, real, False, None, None)
    if stat.S_ISDIR(st.st_mode):
        raise VibeError(f"cannot write {label}: it is a folder; give a file name")
    if stat.S_ISCHR(st.st_mode):
        if not os.access(path, os.W_OK):
            raise VibeError(f"cannot write {label}: the device is not writable")
        return _Target(path, path, True, None, None)
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS.items() if test(st.st_mode)), "not a file")
        raise VibeError(
            f"cannot write {label}: it is {kind}; vibe writes regular files "
            "(or /dev/null): give a file path"
        )
    real = Path(os.path.realpath(path))
    if not st.st_mode & 0o222 or not os.access(real, os.W_OK):
        raise VibeError(
            f"cannot write {label}: the file is read-only; make it writable "
            f"(chmod u+w {path}) or write somewhere else"
        )
    _check_folder(real.parent, label)
    return _Target(path, real, False, stat.S_IMODE(st.st_mode), (st.st_uid, st.st_gid))


def _check_folder(folder: Path, label: str) -> None:
    # The new file is made next to the target and renamed over it: the folder must take both.
    if not os.access(folder, os.W_OK | os.X_OK):
        raise VibeError(
            f"cannot write {label}: folder {folder} is not writable; "
            "write somewhere else or fix its permissions"
        )


@contextmanager
def _os_errors(t: _Target) -> Iterator[None]:
    """An OSError (permission, read-only file system, disk full, ...) as a one-line error."""
    try:
        yield
    except OSError as e:
        raise VibeError(
            f"cannot write {t.path}: {e.strerror or first_line(e)}; no output file was changed"
        ) from None


def _stage(t: _Target, payload: Payload, staged: list[tuple[_Target, Path]]) -> None:
    """Write `payload` to a new temporary file next to `t.real`, complete and flushed to disk."""
    with _os_errors(t):
        fd, name = tempfile.mkstemp(prefix=f".{t.real.name}.", suffix=".tmp", dir=t.real.parent)
        tmp = Path(name)
        staged.append((t, tmp))
        with os.fdopen(fd, "wb") as f:
            _emit(f, payload)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file 0600: keep the replaced file's mode, else what open() gives.
        os.chmod(tmp, t.mode if t.mode is not None else 0o666 & ~_umask())
        if t.owner is not None and os.geteuid() == 0 and t.owner != _owner(tmp):
            with suppress(OSError):  # ownership is kept where the system allows it
                os.chown(tmp, *t.owner)


def _emit(f: BinaryIO, payload: Payload) -> None:
    if isinstance(payload, str):
        f.write(payload.encode())
    elif isinstance(payload, bytes):
        f.write(payload)
    else:
        payload(f)


def _write_through(t: _Target, payload: Payload) -> None:
    """A character device: open it (no create, no truncate) and write; it is never replaced."""
    buf = BytesIO()
    _emit(buf, payload)  # rendered first: a writer may seek, which a device cannot
    fd = os.open(t.path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "wb") as f:
        f.write(buf.getvalue())


def _commit(staged: list[tuple[_Target, Path]]) -> None:
    """Rename every staged file over its target. With several files, an existing target is
    kept under a backup name first, so a failure half way can put the old files back."""
    if len(staged) == 1:
        t, tmp = staged[0]
        with _os_errors(t):
            os.replace(tmp, t.real)
        return
    backups: dict[Path, Path] = {}
    done: list[_Target] = []
    lost: list[Path] = []
    try:
        for t, _ in staged:
            if t.mode is not None:
                with _os_errors(t):
                    backups[t.real] = _backup(t.real)
        for t, tmp in staged:
            with _os_errors(t):
                os.replace(tmp, t.real)
            done.append(t)
    except BaseException:
        lost = _rollback(done, backups)
        if lost:
            raise VibeError(
                f"writing failed and {lost[0]} could not be restored; "
                f"its old content is in {backups[lost[0]]}"
            ) from None
        raise
    finally:
        for real, backup in backups.items():
            if real not in lost:
                _remove(backup)  # restored ones are gone already


def _rollback(done: list[_Target], backups: dict[Path, Path]) -> list[Path]:
    """Put back what the failed commit replaced; the targets that could not be restored."""
    lost = []
    for t in reversed(done):
        try:
            if t.real in backups:
                os.replace(backups[t.real], t.real)
            else:
                os.unlink(t.real)
        except OSError:
            lost.append(t.real)
    return lost


def _backup(real: Path) -> Path:
    """A hidden second name for `real` (a hard link; a copy where links are not supported)."""
    for _ in range(100):
        name = real.parent / f".{real.name}.{secrets.token_hex(4)}.bak"
        try:
            os.link(real, name)
            return name
        except FileExistsError:
            continue
        except OSError:
            break
    fd, copy = tempfile.mkstemp(prefix=f".{real.name}.", suffix=".bak", dir=real.parent)
    with os.fdopen(fd, "wb") as f, open(real, "rb") as src:
        shutil.copyfileobj(src, f)
    shutil.copymode(real, copy)
    return Path(copy)


def _remove(path: Path) -> None:
    # A leftover hidden temporary file is better than hiding the error that left it.
    with suppress(OSError):
        os.unlink(path)


def _owner(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_uid, st.st_gid


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def require_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise VibeError(f"{what} {path} does not exist; check the path")
    if not path.is_file():
        raise VibeError(f"{what} {path} is not a file; pass the file itself")
    return path


def read_doc(path: Path, what: str, kind: str | None = None) -> Any:
    """A JSON or YAML document (`kind` "json" or "yaml"; None: YAML for .yaml/.yml files, else
    JSON); a parse error names the file, the line where it can, and `what`. JSON must be strict:
    NaN and Infinity are refused."""
    if kind is None:
        kind = "yaml" if path.suffix in (".yaml", ".yml") else "json"
    label = kind.upper()
    try:
        text = path.read_text(encoding="utf-8")
        if kind == "yaml":
            return yaml.safe_load(text)
        return json.loads(text, parse_constant=_no_constant)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = e.problem or e.context or first_line(e)
        raise VibeError(f"{path}: not valid YAML ({where}{problem}); is this a {what}?") from None
    except (yaml.YAMLError, ValueError) as e:  # JSONDecodeError, UnicodeDecodeError too
        raise VibeError(f"{path}: not valid {label} ({first_line(e)}); is this a {what}?") from None
    except RecursionError:
        raise VibeError(
            f"{path}: not a usable {label} document (nested too deeply); is this a {what}?"
        ) from None
    except OSError as e:
        raise VibeError(f"{path}: cannot read it ({e.strerror or e}); check the file") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file; each must be an object."""
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)  # other tools' records: NaN in a field is theirs
                except json.JSONDecodeError as e:
                    raise VibeError(
                        f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})"
                    ) from None
                except RecursionError:
                    raise VibeError(f"{path}:{n}: not usable JSON (nested too deeply)") from None
                if not isinstance(obj, dict):
                    raise VibeError(f"{path}:{n}: each line must be a JSON object")
                yield n, obj
    except UnicodeDecodeError as e:
        raise VibeError(f"{path}: not UTF-8 text ({e.reason}); is this a JSONL file?") from None
