"""Traces as users keep them (gzipped, with a byte-order mark) and traces that are broken
(non-finite or absurd token counts, non-UTF-8 bytes, a damaged archive): the first replay as the
plain file would; the others stop with one `error:` line that names the line, exit code 2, no
traceback and no output file."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

from routing_models import build_tiny_model  # noqa: E402
from test_routing_traces import profile

from vibe_plan.artifacts.routing_profile import load_routing_profile  # noqa: E402
from vibe_plan.errors import VibeError  # noqa: E402
from vibe_plan.routing.batching import tokenize_requests  # noqa: E402
from vibe_plan.routing.traces import MAX_REQUEST_TOKENS, read_trace, trace_format  # noqa: E402

AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
MOONCAKE = '{{"timestamp": 0, "input_length": {inp}, "output_length": {out}, "hash_ids": [1]}}\n'


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_tiny_model("qwen3_moe", tmp_path_factory.mktemp("qwen3"))


def vibe_run(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vibe_plan", *(str(a) for a in args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_error(r: subprocess.CompletedProcess, out: Path, *expect: str) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    for text in expect:
        assert text in lines[0], lines[0]
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*"))


def replay(vibe, model_dir: Path, trace: Path, tmp_path: Path, name: str, *extra: str):
    r, out = profile(vibe, model_dir, trace, tmp_path, *extra, name=name)
    assert r.code == 0, r.err
    return load_routing_profile(out)


# --- traces as users keep them ----------------------------------------------------------------


def test_compressed_traces_replay_like_the_plain_file(vibe, model_dir, tmp_path):
    """gzip (told by its magic bytes, whatever the name), bzip2 and xz; .gz does not hide the
    format from detection (azure.csv.gz is Azure, prompts.json.gz holding JSONL is JSONL)."""
    text = "".join(
        json.dumps({"prompt": f"w{i} w{i + 3} w7", "output_len": 2}) + "\n" for i in range(6)
    )
    plain = tmp_path / "prompts.jsonl"
    plain.write_text(text)
    base = replay(vibe, model_dir, plain, tmp_path, "plain.npz")
    cases = {
        "prompts.jsonl.gz": gzip.compress(text.encode()),
        "prompts.jsonl": gzip.compress(text.encode()),  # gzipped, but not named so
        "prompts.jsonl.bz2": bz2.compress(text.encode()),
        "prompts.jsonl.xz": lzma.compress(text.encode()),
    }
    for i, (name, data) in enumerate(cases.items()):
        folder = tmp_path / f"c{i}"
        folder.mkdir()
        (folder / name).write_bytes(data)
        p = replay(vibe, model_dir, folder / name, tmp_path, f"c{i}.npz")
        assert np.array_equal(p.counts, base.counts), name
        assert p.meta["source"]["trace_format"] == "jsonl"


def test_gzipped_count_trace_detected_through_the_suffix(tmp_path):
    csv_text = AZURE_HEADER + "2023-11-16 18:15:46,7,2\n2023-11-16 18:15:47,12,9\n"
    trace = tmp_path / "azure.csv.gz"
    trace.write_bytes(gzip.compress(csv_text.encode()))
    requests, fmt = read_trace(trace)
    assert fmt == "azure" and [r.input_len for r in requests] == [7, 12]
    # a JSON document whose first line is not JSON on its own: the suffix under .gz says .json
    doc = tmp_path / "sg.json.gz"
    doc.write_bytes(gzip.compress(b'{\n "id": "a"\n}\n'))
    assert trace_format(doc) == "sharegpt"
    lines = tmp_path / "sg.jsonl.gz"
    lines.write_bytes(gzip.compress(b'{\n "id": "a"\n}\n'))
    assert trace_format(lines) == "jsonl"


def test_byte_order_mark_is_dropped(tmp_path):
    azure = tmp_path / "azure.csv"
    azure.write_bytes(b"\xef\xbb\xbf" + (AZURE_HEADER + "2023-11-16 18:15:46,7,2\n").encode())
    requests, fmt = read_trace(azure)
    assert fmt == "azure" and requests[0].input_len == 7
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + b'{"prompt": "w1 w2"}\n')
    requests, fmt = read_trace(jsonl)
    assert fmt == "jsonl" and requests[0].prompt == "w1 w2"
    gz = tmp_path / "bom.csv.gz"
    gz.write_bytes(gzip.compress(azure.read_bytes()))
    assert read_trace(gz)[1] == "azure"


def test_whole_float_counts_are_accepted(tmp_path):
    trace = tmp_path / "azure.csv"
    trace.write_text(AZURE_HEADER + "2023-11-16 18:15:46,7.0,2\n")
    assert read_trace(trace)[0][0].input_len == 7


# --- broken traces: one error line through the CLI --------------------------------------------


BAD_COUNTS = [
    ("azure", "inf", "GeneratedTokens is 'inf'"),
    ("azure", "1e400", "GeneratedTokens is '1e400'"),
    ("azure", "nan", "GeneratedTokens is 'nan'"),
    ("azure", "2.5", "GeneratedTokens is '2.5'"),
    ("azure", "20000000", "GeneratedTokens is 20,000,000 tokens"),
    ("azure", "9" * 5000, "not a whole, finite token count"),
    ("mooncake", "1e400", "output_length is inf"),
    ("mooncake", "Infinity", "output_length is inf"),
    ("mooncake", "NaN", "output_length is nan"),
    ("mooncake", "true", "output_length is True"),
    ("mooncake", "123456789012", "output_length is 123,456,789,012 tokens"),
    ("mooncake_input", "1e400", "input_length is inf"),
    ("jsonl", "1e400", "output_len is inf"),
]


@pytest.mark.parametrize("fmt, value, expect", BAD_COUNTS)
def test_non_finite_and_absurd_counts_refused(fmt, value, expect, model_dir, tmp_path):
    if fmt == "azure":
        trace = tmp_path / "azure.csv"
        trace.write_text(
            AZURE_HEADER + "2023-11-16 18:15:46,7,2\n" + f"2023-11-16 18:15:47,7,{value}\n"
        )
    elif fmt == "jsonl":
        trace = tmp_path / "p.jsonl"
        trace.write_text('{"prompt": "w1"}\n' + f'{{"prompt": "w2", "output_len": {value}}}\n')
    else:
        trace = tmp_path / "mooncake.jsonl"
        line = (
            MOONCAKE.format(inp=value, out=1)
            if fmt == "mooncake_input"
            else MOONCAKE.format(inp=7, out=value)
        )
        trace.write_text(MOONCAKE.format(inp=7, out=2) + line)
    out = tmp_path / "r.npz"
    r = vibe_run("profile-routing", "--model", model_dir, "--trace", trace, "--out", out, "--quiet")
    line = 3 if fmt == "azure" else 2  # the CSV header is line 1
    assert_one_error(r, out, f"{trace}:{line}: ", expect)


def test_limit_is_ten_million_tokens(tmp_path):
    trace = tmp_path / "azure.csv"
    trace.write_text(AZURE_HEADER + f"2023-11-16 18:15:46,{MAX_REQUEST_TOKENS},2\n")
    assert read_trace(trace)[0][0].input_len == MAX_REQUEST_TOKENS
    trace.write_text(AZURE_HEADER + f"2023-11-16 18:15:46,{MAX_REQUEST_TOKENS + 1},2\n")
    with pytest.raises(VibeError, match="ContextTokens is 10,000,001 tokens"):
        read_trace(trace)


def test_request_longer_than_a_batch_fails_before_its_tokens_are_built(model_dir, tmp_path):
    """Checked on the count, before a token list of that length is made up."""
    trace = tmp_path / "azure.csv"
    trace.write_text(AZURE_HEADER + "2023-11-16 18:15:46,7,2\n2023-11-16 18:15:47,9000000,2\n")
    out = tmp_path / "r.npz"
    r = vibe_run(
        "profile-routing", "--model", model_dir, "--trace", trace, "--out", out,
        "--batch-tokens", "64", "--quiet",
    )  # fmt: skip
    assert_one_error(
        r, out, "trace line 3", "9,000,000 prompt tokens", "more than --batch-tokens 64"
    )

    class NoTokenizer:
        def __call__(self, *args, **kwargs):
            raise AssertionError("the filler was tokenized for a request that cannot fit")

    requests, _ = read_trace(trace)
    with pytest.raises(VibeError, match="trace line 2: the request has 7 prompt tokens"):
        tokenize_requests(requests, NoTokenizer(), seed=0, batch_tokens=6)


def _non_utf8(tmp_path: Path, kind: str) -> tuple[Path, str]:
    if kind == "jsonl":
        t = tmp_path / "p.jsonl"
        t.write_bytes(b'{"prompt": "w1"}\n{"prompt": "w2"}\n{"prompt": "caf\xe9"}\n')
        return t, f"{t}:3: not UTF-8 text (byte 0xe9 at column 16)"
    if kind == "jsonl.gz":
        t = tmp_path / "p.jsonl.gz"
        t.write_bytes(gzip.compress(b'{"prompt": "w1"}\n{"prompt": "\xff"}\n'))
        return t, f"{t}:2: not UTF-8 text (byte 0xff"
    if kind == "csv":
        t = tmp_path / "azure.csv"
        t.write_bytes(AZURE_HEADER.encode() + b"2023-11-16 18:15:46,7,2\n2023-11-16\x96,7,2\n")
        return t, f"{t}:3: not UTF-8 text (byte 0x96"
    if kind == "sharegpt":
        t = tmp_path / "sg.json"
        t.write_bytes(b'[\n{"id": "a",\n "conversations": [{"from": "human", "value": "\xe9"}]}]')
        return t, f"{t}:3: not UTF-8 text (byte 0xe9"
    if kind == "utf16":
        t = tmp_path / "p.jsonl"
        t.write_bytes('{"prompt": "w1"}\n'.encode("utf-16"))
        return t, "UTF-16 text; save it as UTF-8"
    if kind == "truncated_gz":
        t = tmp_path / "p.jsonl.gz"
        t.write_bytes(gzip.compress(b'{"prompt": "w1"}\n' * 2000)[:60])
        return t, "cannot read the trace"
    if kind == "zstd":
        t = tmp_path / "p.jsonl.zst"
        t.write_bytes(b"\x28\xb5\x2f\xfd" + b"\x00" * 20)
        return t, "zstd archive"
    if kind == "huge_csv_field":
        t = tmp_path / "azure.csv"
        field = b'"' + b"x" * 200_000 + b'"'  # beyond the csv module's field size limit
        t.write_bytes(AZURE_HEADER.encode() + b"2023-11-16 18:15:46,7,2\n" + field + b",7,2\n")
        return t, f"{t}:3: not a readable CSV row (field larger than field limit"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    ["jsonl", "jsonl.gz", "csv", "sharegpt", "utf16", "truncated_gz", "zstd", "huge_csv_field"],
)
def test_unreadable_bytes_are_one_clear_error(kind, model_dir, tmp_path):
    trace, expect = _non_utf8(tmp_path, kind)
    out = tmp_path / "r.npz"
    r = vibe_run("profile-routing", "--model", model_dir, "--trace", trace, "--out", out, "--quiet")
    assert_one_error(r, out, expect)
