"""Each trace format through `vibe profile-routing`, and the bad inputs that must exit 2 cleanly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

from routing_models import build_tiny_model, save_tokenizer  # noqa: E402

from vibe_plan.artifacts.routing_profile import load_routing_profile  # noqa: E402

CHAT = (
    "{% for m in messages %}<s> {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}<s>{% endif %}"
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = build_tiny_model("qwen3_moe", tmp_path_factory.mktemp("qwen3"))
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg["chat_template"] = CHAT
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    return folder


def profile(vibe, model_dir, trace, tmp_path, *extra, name="r.npz"):
    out = tmp_path / name
    r = vibe(
        "profile-routing",
        "--model",
        model_dir,
        "--trace",
        trace,
        "--out",
        out,
        "--batch-tokens",
        "64",
        "--quiet",
        *extra,
    )
    return r, out


def n_tokens(model_dir: Path, text: str) -> int:
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(model_dir, local_files_only=True)(text)["input_ids"])


def test_jsonl_prompts_and_chat_messages(vibe, model_dir, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    msgs = [
        {"role": "user", "content": "w5 w6 w7"},
        {"role": "assistant", "content": "w8"},
        {"role": "user", "content": "w9 w10"},
    ]
    lines = [{"prompt": "w1 w2 w3 w4", "timestamp": 0.5}, {"messages": msgs, "output_len": 3}]
    trace = tmp_path / "t.jsonl"
    trace.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    r, out = profile(vibe, model_dir, trace, tmp_path)
    assert r.code == 0, r.err
    p = load_routing_profile(out)
    templated = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    assert sum(p.meta["row_tokens"]) == 4 + len(templated["input_ids"])
    assert len(templated["input_ids"]) > 5  # the template's markers really are in the prompt
    assert p.meta["source"]["trace_format"] == "jsonl" and p.meta["source"]["requests"] == 2


def test_sharegpt_first_turn_is_the_prompt(vibe, model_dir, tmp_path):
    data = [
        {
            "id": "a",
            "conversations": [
                {"from": "human", "value": "w1 w2 w3"},
                {"from": "gpt", "value": "w4 w5 w6 w7"},
            ],
        },
        {"id": "b", "conversations": [{"from": "human", "value": "lonely"}]},  # no reply: skipped
        {
            "id": "c",
            "conversations": [{"from": "human", "value": "w8 w9"}, {"from": "gpt", "value": "w1"}],
        },
    ]
    trace = tmp_path / "sg.json"
    trace.write_text(json.dumps(data, indent=1))
    r, out = profile(vibe, model_dir, trace, tmp_path, "--phase", "both", "--decode-steps", "8")
    assert r.code == 0, r.err
    p = load_routing_profile(out)
    phases = np.asarray(p.meta["row_phase"])
    tokens = np.asarray(p.meta["row_tokens"])
    assert p.meta["source"]["trace_format"] == "sharegpt" and p.meta["source"]["requests"] == 2
    assert tokens[phases == "prefill"].sum() == 5
    # reply lengths set the output lengths: N tokens are the prefill's first plus N - 1 passes
    assert tokens[phases == "decode"].sum() == (4 - 1) + (1 - 1)


@pytest.mark.parametrize("fmt", ["azure", "burstgpt", "mooncake"])
def test_count_only_traces_made_up_to_length(fmt, vibe, model_dir, tmp_path):
    inputs, outputs = [7, 12, 30, 5], [2, 9, 1, 4]
    if fmt == "azure":
        trace = tmp_path / "azure.csv"
        rows = [
            f"2023-11-16 18:15:4{i}.6805900,{a},{b}"
            for i, (a, b) in enumerate(zip(inputs, outputs, strict=True))
        ]
        trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "\n".join(rows) + "\n")
    elif fmt == "burstgpt":
        trace = tmp_path / "burst.csv"
        rows = [
            f"{i},ChatGPT,{a},{b},{a + b},Conversation log"
            for i, (a, b) in enumerate(zip(inputs, outputs, strict=True))
        ]
        rows.insert(2, "9,GPT-4,210,0,210,Conversation log")  # failed (0 response tokens)
        trace.write_text(
            "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
            + "\n".join(rows)
            + "\n"
        )
    else:
        trace = tmp_path / "mooncake.jsonl"
        trace.write_text(
            "".join(
                json.dumps(
                    {"timestamp": 1000 * i, "input_length": a, "output_length": b, "hash_ids": [i]}
                )
                + "\n"
                for i, (a, b) in enumerate(zip(inputs, outputs, strict=True))
            )
        )
    r, out = profile(vibe, model_dir, trace, tmp_path, "--phase", "both", "--decode-steps", "4")
    assert r.code == 0, r.err
    assert "filler text" in r.err  # the routing reflects made-up text: the user is told
    p = load_routing_profile(out)
    phases = np.asarray(p.meta["row_phase"])
    tokens = np.asarray(p.meta["row_tokens"])
    assert p.meta["source"]["trace_format"] == fmt
    assert tokens[phases == "prefill"].sum() == sum(inputs)
    # a server's prefill emits the first output token: N tokens take N - 1 decode passes
    assert tokens[phases == "decode"].sum() == sum(min(b - 1, 4) for b in outputs)
    if fmt == "burstgpt":
        assert "skipped 1 failed request" in r.err
    # the same seed gives the same profile; another seed samples other filler and tokens
    r2, again_path = profile(
        vibe,
        model_dir,
        trace,
        tmp_path,
        "--phase",
        "both",
        "--decode-steps",
        "4",
        name="again.npz",
    )
    assert r2.code == 0, r2.err
    again = load_routing_profile(again_path)
    assert np.array_equal(again.counts, p.counts)
    r3, other_path = profile(
        vibe,
        model_dir,
        trace,
        tmp_path,
        "--phase",
        "both",
        "--decode-steps",
        "4",
        "--seed",
        "5",
        name="other.npz",
    )
    assert r3.code == 0, r3.err
    assert not np.array_equal(load_routing_profile(other_path).counts, p.counts)


def test_max_requests_and_explicit_format(vibe, model_dir, tmp_path):
    trace = tmp_path / "t.txt"
    trace.write_text("".join(json.dumps({"prompt": f"w{i} w{i + 1}"}) + "\n" for i in range(10)))
    r, out = profile(
        vibe, model_dir, trace, tmp_path, "--trace-format", "jsonl", "--max-requests", "3"
    )
    assert r.code == 0, r.err
    assert sum(load_routing_profile(out).meta["row_tokens"]) == 6


def test_summary_printed(vibe, model_dir, tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(json.dumps({"prompt": f"w{i} w3 w9"}) + "\n" for i in range(8)))
    out = tmp_path / "r.npz"
    r = vibe(
        "profile-routing",
        "--model",
        model_dir,
        "--trace",
        trace,
        "--out",
        out,
        "--batch-tokens",
        "6",
    )
    assert r.code == 0, r.err
    assert "hottest" in r.out and "tokens/s" in r.out and "4x1x8" in r.out


def _bad_json_line(tmp_path: Path) -> Path:
    t = tmp_path / "bad.jsonl"
    t.write_text('{"prompt": "w1"}\n{"prompt": "w2"}\n{"prompt": "w3"\n')
    return t


def _no_experts_model(tmp_path: Path) -> Path:
    d = tmp_path / "dense"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 2}))
    return d


def _no_router_model(tmp_path: Path) -> Path:
    """A dense Llama whose config claims experts: loads fine, but has no router to hook."""
    from transformers import LlamaConfig, LlamaForCausalLM

    d = tmp_path / "llama"
    LlamaForCausalLM(
        LlamaConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            vocab_size=128,
        )
    ).save_pretrained(d)
    save_tokenizer(d)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(
        json.dumps({**cfg, "num_local_experts": 4, "num_experts_per_tok": 2})
    )
    return d


@pytest.mark.parametrize(
    "case, expect",
    [
        ("missing_model", "does not exist"),
        ("no_experts", "not a Mixture-of-Experts"),
        ("bad_json", "bad.jsonl:3"),
        ("empty_trace", "empty"),
        ("batch_below_request", "more than --batch-tokens 2"),
        ("no_router", "no router modules found"),
        ("bad_csv", "azure.csv:3"),
        ("missing_column", "lacks column(s) GeneratedTokens"),
        ("bad_format", "unknown trace format"),
        ("no_prompt", "needs a non-empty"),
    ],
)
def test_bad_inputs_exit_2_without_output(case, expect, vibe, model_dir, tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text('{"prompt": "w1 w2 w3"}\n')
    model, trace, extra = model_dir, good, []
    if case == "missing_model":
        model = tmp_path / "nowhere"
    elif case == "no_experts":
        model = _no_experts_model(tmp_path)
    elif case == "bad_json":
        trace = _bad_json_line(tmp_path)
    elif case == "empty_trace":
        trace = tmp_path / "empty.jsonl"
        trace.write_text("\n\n")
    elif case == "batch_below_request":
        extra = ["--batch-tokens", "2"]
    elif case == "no_router":
        model = _no_router_model(tmp_path)
    elif case in ("bad_csv", "missing_column"):
        trace = tmp_path / "azure.csv"
        header = (
            "TIMESTAMP,ContextTokens,GeneratedTokens"
            if case == "bad_csv"
            else "TIMESTAMP,ContextTokens"
        )
        trace.write_text(f"{header}\n2023-11-16 18:15:46,10,3\n2023-11-16 18:15:47,ten,3\n")
    elif case == "bad_format":
        extra = ["--trace-format", "parquet"]
    elif case == "no_prompt":
        trace = tmp_path / "np.jsonl"
        trace.write_text('{"prompt": "w1"}\n{"text": "w2"}\n')
    out = tmp_path / "out.npz"
    r = vibe("profile-routing", "--model", model, "--trace", trace, "--out", out, "--quiet", *extra)
    assert r.code == 2, (r.out, r.err)
    assert r.err.startswith("error: ") and expect in r.err
    assert "Traceback" not in r.err
    assert not out.exists() and not list(tmp_path.glob(".out.npz*"))
