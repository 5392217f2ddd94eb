"""File plumbing shared by every format: atomic writes (a failed run never leaves a partial
output file behind), hashing, and the JSON / YAML / JSONL readers with one error style."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from vibe_plan.errors import VibeError, first_line


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write `data` to `path` through a temporary file in the same folder, then rename."""
    payload = data.encode() if isinstance(data, str) else data
    atomic_write_with(path, lambda f: f.write(payload))


def atomic_write_with(path: str | Path, writer: Callable) -> None:
    """Call `writer(binary_file)` on a temporary file, then move it to `path` in one step."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    check_writable(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
        # mkstemp makes the file 0600; give it the mode a plain open() would have.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def check_writable(path: str | Path, what: str = "output") -> Path:
    """Refuse, before any work, an output path whose folder is missing or that is a folder."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise VibeError(f"cannot write {what} {path}: folder {folder} does not exist; create it")
    if path.is_dir():
        raise VibeError(f"cannot write {what} {path}: it is a folder; give a file name")
    return path


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


def read_doc(path: Path, what: str) -> Any:
    """A JSON document, or YAML for .yaml/.yml files; a parse error names the file and `what`."""
    try:
        if path.suffix in (".yaml", ".yml"):
            return yaml.safe_load(path.read_text())
        return json.loads(path.read_text())
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as e:
        first = first_line(e)
        kind = "YAML" if path.suffix in (".yaml", ".yml") else "JSON"
        raise VibeError(f"{path}: not valid {kind} ({first}); is this a {what}?")


def json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file; each must be an object."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise VibeError(
                    f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})"
                ) from None
            if not isinstance(obj, dict):
                raise VibeError(f"{path}:{n}: each line must be a JSON object")
            yield n, obj
