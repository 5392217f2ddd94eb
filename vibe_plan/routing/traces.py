"""Request traces: prompt JSONL, ShareGPT, Azure LLM inference CSV, BurstGPT CSV, Mooncake JSONL."""

from __future__ import annotations

import bz2
import csv
import gzip
import json
import lzma
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from vibe_plan.errors import VibeError, first_line

TRACE_FORMATS = ("jsonl", "sharegpt", "azure", "burstgpt", "mooncake")
# A request with more tokens than this is a broken trace, not traffic: refuse it (no model's
# context comes near it) rather than build a token list that size.
MAX_REQUEST_TOKENS = 10_000_000
# Compressed traces are read as they are, recognised by their magic bytes (not the file name).
_DECOMPRESS = {b"\x1f\x8b": gzip.open, b"BZh": bz2.open, b"\xfd7zXZ\x00": lzma.open}
_UNSUPPORTED = {b"\x28\xb5\x2f\xfd": "zstd", b"PK\x03\x04": "zip"}
_COMPRESSED_SUFFIXES = (".gz", ".gzip", ".bz2", ".xz")
_DECOMPRESS_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError)


@dataclass
class Request:
    """One request: text (prompt or chat messages) or, for count-only traces, a token count."""

    line: int  # where it is in the trace (line, or entry index for ShareGPT), for messages
    prompt: str | None = None
    messages: list[dict[str, str]] | None = None
    input_len: int | None = None  # count-only traces: prompt tokens to make up
    output_len: int | None = None
    output_text: str | None = None  # ShareGPT reply; its token count is the output length


def read_trace(
    path: str | Path, fmt: str = "auto", max_requests: int = 0, notes: list[str] | None = None
) -> tuple[list, str]:
    """Requests in trace order (at most `max_requests` if > 0) and the format that was read.
    `notes`, when given, gets what the user should hear (rows skipped as failed requests)."""
    path = Path(path)
    if not path.is_file():
        raise VibeError(f"trace {path} does not exist or is not a file; check the path")
    fmt = trace_format(path) if fmt == "auto" else fmt
    if fmt not in TRACE_FORMATS:
        raise VibeError(
            f"unknown trace format {fmt!r}; use one of auto, {', '.join(TRACE_FORMATS)}"
        )
    reader = {
        "jsonl": _jsonl,
        "sharegpt": _sharegpt,
        "azure": _azure,
        "burstgpt": _burstgpt,
        "mooncake": _mooncake,
    }[fmt]
    requests: list[Request] = []
    skipped = _Skipped()
    for req in reader(path, skipped):
        requests.append(req)
        if max_requests and len(requests) >= max_requests:
            break
    if skipped.failed and notes is not None:
        notes.append(
            f"{path.name}: skipped {skipped.failed:,} failed request(s) (BurstGPT logs a failure "
            "with Response tokens 0)"
        )
    if not requests:
        failed = f" (its {skipped.failed:,} rows are failed requests)" if skipped.failed else ""
        raise VibeError(f"{path}: the trace holds no requests{failed}; nothing to replay")
    return requests, fmt


@dataclass
class _Skipped:
    """Rows a reader left out, counted for the notes."""

    failed: int = 0


def trace_format(path: Path) -> str:
    head = _first_content_line(path)
    if head is None:
        raise VibeError(f"{path}: the trace is empty; nothing to replay")
    if head.startswith("["):
        return "sharegpt"
    if head.startswith("{"):
        try:
            obj = json.loads(head)
        except ValueError:
            return "sharegpt" if _plain_suffix(path) == ".json" else "jsonl"
        if isinstance(obj, dict) and "input_length" in obj:
            return "mooncake"
        return "jsonl"
    cols = {c.strip() for c in head.split(",")}
    if "ContextTokens" in cols:
        return "azure"
    if "Request tokens" in cols:
        return "burstgpt"
    raise VibeError(
        f"{path}: cannot tell the trace format from its first line; pass --trace-format "
        f"({', '.join(TRACE_FORMATS)})"
    )


def _first_content_line(path: Path) -> str | None:
    for _, line in _lines(path):
        if line.strip():
            return line.strip()
    return None


def _plain_suffix(path: Path) -> str:
    """The suffix under a compression suffix: `.csv` for `azure.csv.gz`."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSED_SUFFIXES:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def _open_binary(path: Path) -> IO[bytes]:
    """The trace's bytes, decompressed if it is gzip, bzip2 or xz (told by its magic bytes)."""
    with open(path, "rb") as f:
        head = f.read(6)
    for magic, opener in _DECOMPRESS.items():
        if head.startswith(magic) and (magic != b"BZh" or head[3:4].isdigit()):
            return opener(path, "rb")  # type: ignore[operator]
    for magic, kind in _UNSUPPORTED.items():
        if head.startswith(magic):
            raise VibeError(f"{path}: the trace is a {kind} archive; decompress it (or gzip it)")
    return open(path, "rb")


def _decode(raw: bytes, path: Path, n: int) -> str:
    if n == 1 and raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise VibeError(f"{path}: the trace is UTF-16 text; save it as UTF-8")
    try:
        return raw.decode("utf-8-sig" if n == 1 else "utf-8")  # -sig: drop a byte-order mark
    except UnicodeDecodeError as e:
        raise VibeError(
            f"{path}:{n}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
            "save the trace as UTF-8"
        ) from None


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line, decompressed and decoded, with line endings."""
    try:
        with _open_binary(path) as f:
            for n, raw in enumerate(f, 1):
                yield n, _decode(raw, path, n)
    except _DECOMPRESS_ERRORS as e:
        raise VibeError(f"{path}: cannot read the trace ({first_line(e)}); is the file complete?")


def _read_text(path: Path) -> str:
    """The whole trace as text (for ShareGPT's one JSON document)."""
    try:
        with _open_binary(path) as f:
            data = f.read()
    except _DECOMPRESS_ERRORS as e:
        raise VibeError(f"{path}: cannot read the trace ({first_line(e)}); is the file complete?")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise VibeError(f"{path}: the trace is UTF-16 text; save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        n = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise VibeError(
            f"{path}:{n}: not UTF-8 text (byte 0x{data[e.start]:02x} at column {col}); "
            "save the trace as UTF-8"
        ) from None


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; each must be a JSON object."""
    for n, line in _lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise VibeError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})") from None
        except (ValueError, RecursionError) as e:  # e.g. an integer of thousands of digits
            raise VibeError(f"{path}:{n}: not usable JSON ({first_line(e)})") from None
        if not isinstance(obj, dict):
            raise VibeError(f"{path}:{n}: each line must be a JSON object")
        yield n, obj


def _count(value: Any, path: Path, n: int, field: str, allow_zero: bool = True) -> int:
    """A token count: a whole number from 0 (or 1) to MAX_REQUEST_TOKENS, else a clear error."""
    count: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        count = value
    elif isinstance(value, float):
        count = int(value) if math.isfinite(value) and value.is_integer() else None
    elif isinstance(value, str):
        try:
            count = int(value.strip())
        except ValueError:
            try:
                f = float(value)
            except ValueError:
                f = math.nan
            count = int(f) if math.isfinite(f) and f.is_integer() else None
    if count is None:
        raise VibeError(f"{path}:{n}: {field} is {value!r}, not a whole, finite token count")
    if count < 0 or (count == 0 and not allow_zero):
        raise VibeError(f"{path}:{n}: {field} is {count}; token counts must be positive")
    if count > MAX_REQUEST_TOKENS:
        raise VibeError(
            f"{path}:{n}: {field} is {count:,} tokens, more than any request can have "
            f"(limit {MAX_REQUEST_TOKENS:,}); check the trace"
        )
    return count


def _jsonl(path: Path, skipped: _Skipped) -> Iterator[Request]:
    for n, obj in _json_lines(path):
        out = obj.get("output_len", obj.get("max_tokens"))
        out_len = _count(out, path, n, "output_len") if out is not None else None
        if isinstance(obj.get("prompt"), str) and obj["prompt"]:
            yield Request(line=n, prompt=obj["prompt"], output_len=out_len)
        elif isinstance(obj.get("messages"), list) and obj["messages"]:
            msgs = obj["messages"]
            if not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in msgs):
                raise VibeError(f"{path}:{n}: messages must be objects with role and content")
            yield Request(line=n, messages=msgs, output_len=out_len)
        else:
            raise VibeError(f'{path}:{n}: needs a non-empty "prompt" string or "messages" list')


def _sharegpt(path: Path, skipped: _Skipped) -> Iterator[Request]:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise VibeError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    except (ValueError, RecursionError) as e:  # e.g. an integer of thousands of digits
        raise VibeError(f"{path}: not usable JSON ({first_line(e)})") from None
    if not isinstance(data, list):
        raise VibeError(f"{path}: a ShareGPT file is a JSON array of conversations")
    for i, conv in enumerate(data):
        turns = conv.get("conversations") if isinstance(conv, dict) else None
        if not isinstance(turns, list):
            raise VibeError(f'{path}: entry {i} has no "conversations" list')
        if len(turns) < 2:  # no reply to measure; benchmark tools skip these too
            continue
        first, reply = turns[0], turns[1]
        if not all(isinstance(t, dict) and isinstance(t.get("value"), str) for t in (first, reply)):
            raise VibeError(f'{path}: entry {i}: turns need "from" and "value" strings')
        if first["value"].strip():
            yield Request(line=i, prompt=first["value"], output_text=reply["value"])


def _csv_rows(path: Path, needed: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    at = 0  # the line the csv module is reading, for its errors

    def feed() -> Iterator[str]:
        nonlocal at
        for n, line in _lines(path):
            at = n
            yield line

    reader = csv.DictReader(feed(), skipinitialspace=True)
    try:
        fields = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in needed if c not in fields]
        if missing:
            raise VibeError(f"{path}:1: header lacks column(s) {', '.join(missing)}")
        for row in reader:
            row = {(k or "").strip(): v for k, v in row.items()}
            if any(row.get(c) is None for c in needed):
                raise VibeError(f"{path}:{reader.line_num}: row has fewer columns than the header")
            yield reader.line_num, row
    except csv.Error as e:  # e.g. a field over the csv module's size limit
        raise VibeError(f"{path}:{at}: not a readable CSV row ({e})") from None


def _azure(path: Path, skipped: _Skipped) -> Iterator[Request]:
    for n, row in _csv_rows(path, ("TIMESTAMP", "ContextTokens", "GeneratedTokens")):
        inp = _count(row["ContextTokens"], path, n, "ContextTokens")
        out = _count(row["GeneratedTokens"], path, n, "GeneratedTokens")
        if inp > 0:
            yield Request(line=n, input_len=inp, output_len=out)


def _burstgpt(path: Path, skipped: _Skipped) -> Iterator[Request]:
    for n, row in _csv_rows(path, ("Request tokens", "Response tokens")):
        inp = _count(row["Request tokens"], path, n, "Request tokens")
        out = _count(row["Response tokens"], path, n, "Response tokens")
        if out == 0 or inp == 0:  # BurstGPT logs a failed request with Response tokens 0
            skipped.failed += 1
            continue
        yield Request(line=n, input_len=inp, output_len=out)


def _mooncake(path: Path, skipped: _Skipped) -> Iterator[Request]:
    for n, obj in _json_lines(path):
        if "input_length" not in obj:
            raise VibeError(f'{path}:{n}: a Mooncake line needs "input_length"')
        inp = _count(obj["input_length"], path, n, "input_length", allow_zero=False)
        out = obj.get("output_length")
        yield Request(
            line=n,
            input_len=inp,
            output_len=None if out is None else _count(out, path, n, "output_length"),
        )
