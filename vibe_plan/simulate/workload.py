"""Arrivals for the simulator: a trace's requests (prompt and output lengths) arriving at the
trace's own times, or as a Poisson process at a given rate.

Traces are read with `vibe_plan.routing.traces.read_trace`. A request given as text has no token
count: its length is estimated as len(text) / 4 tokens (the usual rule of thumb for English with
BPE tokenizers), and the run's notes say how many requests were estimated so.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import json
import lzma
import math
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

import numpy as np

from vibe_plan.errors import VibeError
from vibe_plan.routing.traces import Request, read_trace

CHARS_PER_TOKEN = 4.0
MAX_ARRIVALS = 2_000_000  # a Poisson window past this many requests is a typo, not a study


@dataclass(frozen=True)
class TraceRequests:
    """What the simulator takes from a trace: per request its lengths and, where the trace
    records them, its arrival time in seconds (relative to the first request)."""

    input_len: np.ndarray  # int [N], >= 1
    output_len: np.ndarray  # int [N], >= 1 (the first token comes from the prefill)
    times_s: np.ndarray | None  # float [N], or None when the trace records no times
    fmt: str
    notes: tuple[str, ...]


@dataclass(frozen=True)
class Workload:
    """Requests in arrival order (ties keep trace order)."""

    arrival_s: np.ndarray  # float [N], non-decreasing, starting at 0 for a trace replay
    input_len: np.ndarray  # int [N]
    output_len: np.ndarray  # int [N]
    rate: float  # the Poisson rate, or the replayed trace's mean arrival rate
    poisson: bool

    @property
    def num_requests(self) -> int:
        return len(self.arrival_s)


def _text_tokens(text: str) -> int:
    return max(1, int(round(len(text) / CHARS_PER_TOKEN)))


def load_trace(
    path: str | Path, max_requests: int = 0, default_output_len: int = 128, fmt: str = "auto"
) -> TraceRequests:
    """Lengths (and times, where recorded) of a trace's requests."""
    if max_requests < 0:
        raise VibeError(f"--max-requests is {max_requests}; give 0 (all) or a positive count")
    if default_output_len < 1:
        raise VibeError(f"--output-len is {default_output_len}; it must be at least 1")
    notes: list[str] = []
    requests, fmt = read_trace(path, fmt, max_requests, notes)
    inp, out = [], []
    estimated_in = estimated_out = defaulted = 0
    for r in requests:
        if r.input_len is not None:
            inp.append(max(1, int(r.input_len)))
        else:
            text = r.prompt if r.prompt is not None else _messages_text(r)
            inp.append(_text_tokens(text))
            estimated_in += 1
        if r.output_len is not None:
            out.append(max(1, int(r.output_len)))
        elif r.output_text is not None:
            out.append(_text_tokens(r.output_text))
            estimated_out += 1
        else:
            out.append(default_output_len)
            defaulted += 1
    if estimated_in:
        notes.append(
            f"{estimated_in} of {len(requests)} prompts are text: their length is estimated as "
            f"len(text)/{CHARS_PER_TOKEN:g} tokens"
        )
    if estimated_out:
        notes.append(
            f"{estimated_out} output lengths are estimated from the reply text as "
            f"len(text)/{CHARS_PER_TOKEN:g} tokens"
        )
    if defaulted:
        notes.append(
            f"{defaulted} of {len(requests)} requests give no output length; they generate "
            f"{default_output_len} tokens (--output-len)"
        )
    times = _arrival_times(Path(path), fmt, requests)
    return TraceRequests(
        np.asarray(inp, dtype=np.int64),
        np.asarray(out, dtype=np.int64),
        times,
        fmt,
        tuple(notes),
    )


def _messages_text(r: Request) -> str:
    return "".join(m.get("content", "") for m in (r.messages or []))


def poisson_workload(
    trace: TraceRequests, rate: float, seed: int, duration_s: float | None = None
) -> Workload:
    """Poisson arrivals at `rate` requests/s; the k-th arrival takes the k-th trace request's
    lengths (cycling over the trace). Without `duration_s`, one pass over the trace; with it,
    every arrival before `duration_s`. The gaps are one seeded stream of unit exponentials scaled
    by 1/rate, so every rate sees the same requests in the same order (common random numbers)."""
    check_rate(rate, "--rate")
    rng = np.random.default_rng([seed, 0x5EED])
    n_trace = len(trace.input_len)
    if duration_s is None:
        arrival = np.cumsum(rng.exponential(1.0, n_trace)) / rate
    else:
        check_positive(duration_s, "--duration")
        expected = rate * duration_s
        if expected > MAX_ARRIVALS:
            raise VibeError(
                f"--rate {rate:g} over --duration {duration_s:g} s is about {expected:,.0f} "
                f"requests; at most {MAX_ARRIVALS:,}: shorten --duration"
            )
        chunks, total = [], 0.0
        while True:  # fixed-size chunks of one stream: the same prefix whatever the duration
            gaps = rng.exponential(1.0, 4096) / rate
            times = total + np.cumsum(gaps)
            chunks.append(times)
            total = float(times[-1])
            if total >= duration_s:
                break
        arrival = np.concatenate(chunks)
        arrival = arrival[arrival < duration_s]
        if len(arrival) == 0:
            raise VibeError(
                f"no request arrives within --duration {duration_s:g} s at --rate {rate:g}; "
                "lengthen --duration"
            )
    arrival = arrival - arrival[0]  # the first request arrives at t = 0
    idx = np.arange(len(arrival)) % n_trace
    return Workload(arrival, trace.input_len[idx], trace.output_len[idx], float(rate), True)


def trace_workload(trace: TraceRequests, duration_s: float | None = None) -> Workload:
    """The trace's own arrival times (relative to its first request; requests are taken in time
    order), cut at `duration_s` when given."""
    if trace.times_s is None:
        raise VibeError(
            f"the {trace.fmt} trace records no arrival times; give --rate or --rates for "
            "Poisson arrivals"
        )
    order = np.argsort(trace.times_s, kind="stable")
    t = trace.times_s[order] - trace.times_s[order[0]]
    keep = np.ones(len(t), dtype=bool)
    if duration_s is not None:
        check_positive(duration_s, "--duration")
        keep = t < duration_s
    t, order = t[keep], order[keep]
    span = float(t[-1] - t[0])
    rate = (len(t) - 1) / span if len(t) > 1 and span > 0 else 0.0
    return Workload(t, trace.input_len[order], trace.output_len[order], rate, False)


def check_positive(value: float, name: str) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise VibeError(f"{name} is {value}; it must be a positive finite number")


# Below this rate, arrival times grow so large (one request per ~12 days) that float seconds no
# longer resolve microsecond service times: latencies would come out as 0.
MIN_RATE = 1e-6


def check_rate(value: float, name: str) -> None:
    check_positive(value, name)
    if value < MIN_RATE:
        raise VibeError(
            f"{name} is {value} requests/s, below {MIN_RATE:g}: arrivals that far apart leave "
            "nothing to simulate and swallow the service times; give a higher rate"
        )


def parse_rates(rate: float | None, rates: str | None) -> list[float] | None:
    """--rate R or --rates a,b,c -> the list of rates; None: replay the trace's times."""
    if rate is not None and rates is not None:
        raise VibeError("give --rate or --rates, not both")
    if rate is not None:
        check_rate(rate, "--rate")
        return [float(rate)]
    if rates is None:
        return None
    out = []
    for part in rates.split(","):
        try:
            value = float(part)
        except ValueError:
            raise VibeError(
                f"--rates {rates!r}: {part!r} is not a number; give comma-separated requests/s"
            ) from None
        check_rate(value, "a --rates entry")
        out.append(value)
    if len(set(out)) != len(out):
        raise VibeError(f"--rates {rates!r} repeats a rate; give each rate once")
    return out


# --- arrival times where the trace records them ---------------------------------------------------


def _arrival_times(path: Path, fmt: str, requests: list[Request]) -> np.ndarray | None:
    """Seconds of each request (in `requests` order), for the formats that record a time:
    Azure (TIMESTAMP, a date-time), BurstGPT (Timestamp, seconds), Mooncake (timestamp, ms).
    Matched by line number, as read_trace numbers them (it has read the file already)."""
    by_line: dict[int, object]
    if fmt == "mooncake":
        field, scale = "timestamp", 1e-3
        by_line = {}
        for n, line in enumerate(_text_lines(path), 1):
            if line.strip():
                try:
                    obj = json.loads(line)
                except ValueError:
                    raise VibeError(f"{path}:{n}: not valid JSON") from None
                by_line[n] = obj.get(field) if isinstance(obj, dict) else None
    elif fmt in ("azure", "burstgpt"):
        field, scale = ("TIMESTAMP" if fmt == "azure" else "Timestamp"), 1.0
        by_line = {}
        reader = csv.DictReader(_text_lines(path), skipinitialspace=True)
        try:
            for row in reader:
                row = {(k or "").strip(): v for k, v in row.items()}
                by_line[reader.line_num] = row.get(field)
        except csv.Error as e:
            raise VibeError(f"{path}:{reader.line_num}: not a readable CSV row ({e})") from None
    else:
        return None
    if all(by_line.get(r.line) is None for r in requests):
        return None
    times = np.empty(len(requests))
    for i, r in enumerate(requests):
        times[i] = _seconds(by_line.get(r.line), path, r.line, field) * scale
    return times


_OPENERS: dict[bytes, Callable[..., IO[str]]] = {
    b"\x1f\x8b": gzip.open,
    b"BZh": bz2.open,
    b"\xfd7zXZ\x00": lzma.open,
}


def _text_lines(path: Path) -> Iterator[str]:
    """The trace's lines as text, decompressed (gzip, bzip2, xz: by magic bytes) as the trace
    reader does."""
    with open(path, "rb") as f:
        head = f.read(6)
    opener: Callable[..., IO[str]] = open
    for magic, candidate in _OPENERS.items():
        if head.startswith(magic):
            opener = candidate
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as f:
            yield from f
    except (OSError, EOFError, UnicodeDecodeError, zlib.error, lzma.LZMAError) as e:
        raise VibeError(f"{path}: cannot read the trace's arrival times ({e})") from None


def _seconds(value: object, path: Path, line: int, field: str) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise VibeError(f"{path}:{line}: {field} is missing; every request needs its time")
    if isinstance(value, int | float) and not isinstance(value, bool):
        t = float(value)
    else:
        text = str(value).strip()
        try:
            t = float(text)
        except ValueError:
            t = _datetime_seconds(text, path, line, field)
    if not math.isfinite(t):
        raise VibeError(f"{path}:{line}: {field} is {value!r}, not a time")
    return t


def _datetime_seconds(text: str, path: Path, line: int, field: str) -> float:
    """'2023-11-16 18:15:46.6805900' (Azure: up to 7 fraction digits) -> seconds (read as UTC:
    only differences matter)."""
    base, _, frac = text.partition(".")
    try:
        t = datetime.fromisoformat(base).replace(tzinfo=timezone.utc).timestamp()
        return t + (float("0." + frac) if frac else 0.0)
    except ValueError:
        raise VibeError(f"{path}:{line}: {field} is {text!r}, not a date-time or seconds") from None
