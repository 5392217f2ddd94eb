"""Request traces: prompt JSONL, ShareGPT, Azure LLM inference CSV, BurstGPT CSV, Mooncake JSONL."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vibe_plan.artifacts.io import json_lines
from vibe_plan.errors import VibeError

TRACE_FORMATS = ("jsonl", "sharegpt", "azure", "burstgpt", "mooncake")


@dataclass
class Request:
    """One request: text (prompt or chat messages) or, for count-only traces, a token count."""

    line: int  # where it is in the trace (line, or entry index for ShareGPT), for messages
    prompt: str | None = None
    messages: list[dict[str, str]] | None = None
    input_len: int | None = None  # count-only traces: prompt tokens to make up
    output_len: int | None = None
    output_text: str | None = None  # ShareGPT reply; its token count is the output length


def read_trace(path: str | Path, fmt: str = "auto", max_requests: int = 0) -> tuple[list, str]:
    """Requests in trace order (at most `max_requests` if > 0) and the format that was read."""
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
    try:
        for req in reader(path):
            requests.append(req)
            if max_requests and len(requests) >= max_requests:
                break
    except UnicodeDecodeError as e:
        raise VibeError(f"{path}: not a text file ({e})") from None
    if not requests:
        raise VibeError(f"{path}: the trace holds no requests; nothing to replay")
    return requests, fmt


def trace_format(path: Path) -> str:
    head = _first_content_line(path)
    if head is None:
        raise VibeError(f"{path}: the trace is empty; nothing to replay")
    if head.startswith("["):
        return "sharegpt"
    if head.startswith("{"):
        try:
            obj = json.loads(head)
        except json.JSONDecodeError:
            return "sharegpt" if path.suffix == ".json" else "jsonl"
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
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                return line.strip()
    return None


def _count(value: Any, path: Path, n: int, field: str, allow_zero: bool = True) -> int:
    try:
        count = int(float(value))
    except (TypeError, ValueError):
        raise VibeError(f"{path}:{n}: {field} is {value!r}, not a token count") from None
    if count < 0 or (count == 0 and not allow_zero):
        raise VibeError(f"{path}:{n}: {field} is {count}; token counts must be positive")
    return count


def _jsonl(path: Path) -> Iterator[Request]:
    for n, obj in json_lines(path):
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


def _sharegpt(path: Path) -> Iterator[Request]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise VibeError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
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
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, skipinitialspace=True)
        fields = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in needed if c not in fields]
        if missing:
            raise VibeError(f"{path}:1: header lacks column(s) {', '.join(missing)}")
        for row in reader:
            row = {(k or "").strip(): v for k, v in row.items()}
            if any(row.get(c) is None for c in needed):
                raise VibeError(f"{path}:{reader.line_num}: row has fewer columns than the header")
            yield reader.line_num, row


def _azure(path: Path) -> Iterator[Request]:
    for n, row in _csv_rows(path, ("TIMESTAMP", "ContextTokens", "GeneratedTokens")):
        inp = _count(row["ContextTokens"], path, n, "ContextTokens")
        out = _count(row["GeneratedTokens"], path, n, "GeneratedTokens")
        if inp > 0:
            yield Request(line=n, input_len=inp, output_len=out)


def _burstgpt(path: Path) -> Iterator[Request]:
    for n, row in _csv_rows(path, ("Request tokens", "Response tokens")):
        inp = _count(row["Request tokens"], path, n, "Request tokens")
        out = _count(row["Response tokens"], path, n, "Response tokens")
        if inp > 0:  # failed requests are logged with zero tokens
            yield Request(line=n, input_len=inp, output_len=out)


def _mooncake(path: Path) -> Iterator[Request]:
    for n, obj in json_lines(path):
        if "input_length" not in obj:
            raise VibeError(f'{path}:{n}: a Mooncake line needs "input_length"')
        inp = _count(obj["input_length"], path, n, "input_length", allow_zero=False)
        out = obj.get("output_length")
        yield Request(
            line=n,
            input_len=inp,
            output_len=None if out is None else _count(out, path, n, "output_length"),
        )
