"""Expert shapes: presets, Hugging Face config.json parsing, and which keys were used."""

from __future__ import annotations

import json

import pytest

from vibe_plan.errors import VibeError
from vibe_plan.gpus.options import normalize_dtype
from vibe_plan.model_config import PRESETS, resolve_model


def write_config(folder, cfg: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg))


def test_presets_have_the_published_expert_shapes():
    expect = {  # hidden, expert intermediate, experts, top-k, layers
        "mixtral-8x7b": (4096, 14336, 8, 2, 32),
        "qwen3-30b-a3b": (2048, 768, 128, 8, 48),
        "qwen3-235b-a22b": (4096, 1536, 128, 8, 94),
        "deepseek-v3": (7168, 2048, 256, 8, 61),
        "gpt-oss-120b": (2880, 2880, 128, 4, 36),
    }
    for name, shape in expect.items():
        m = resolve_model(name.upper())  # names are case-insensitive
        assert (m.hidden, m.intermediate, m.num_experts, m.top_k, m.num_layers) == shape
        assert m.gated and m.source == "preset"


@pytest.mark.parametrize(
    ("cls_name", "preset"),
    [
        ("MixtralConfig", "mixtral-8x7b"),
        ("Qwen3MoeConfig", "qwen3-30b-a3b"),
        ("DeepseekV3Config", "deepseek-v3"),
        ("GptOssConfig", "gpt-oss-120b"),
    ],
)
def test_transformers_default_configs_match_presets(tmp_path, cls_name, preset):
    # transformers' defaults for these classes are the released models' shapes: the config.json
    # that save_pretrained writes must parse to the same expert as our preset.
    transformers = pytest.importorskip("transformers")
    getattr(transformers, cls_name)().save_pretrained(tmp_path)
    got = resolve_model(str(tmp_path))
    want = PRESETS[preset]
    assert (got.hidden, got.intermediate, got.num_experts, got.top_k) == (
        want.hidden,
        want.intermediate,
        want.num_experts,
        want.top_k,
    )
    assert got.gated
    assert got.source == str(tmp_path / "config.json")


def test_moe_intermediate_size_wins_over_dense_intermediate(tmp_path):
    # DeepSeek-V3 as published: intermediate_size is the dense MLP of the first 3 layers.
    cfg = {
        "model_type": "deepseek_v3",
        "hidden_size": 7168,
        "intermediate_size": 18432,
        "moe_intermediate_size": 2048,
        "n_routed_experts": 256,
        "num_experts_per_tok": 8,
        "num_hidden_layers": 61,
        "hidden_act": "silu",
    }
    write_config(tmp_path / "dsv3", cfg)
    m = resolve_model(str(tmp_path / "dsv3" / "config.json"))
    assert (m.hidden, m.intermediate, m.num_experts, m.top_k, m.num_layers) == (
        7168,
        2048,
        256,
        8,
        61,
    )
    assert m.keys_used == {
        "hidden": "hidden_size",
        "intermediate": "moe_intermediate_size",
        "num_experts": "n_routed_experts",
        "top_k": "num_experts_per_tok",
        "num_layers": "num_hidden_layers",
        "gated": "hidden_act",
    }


def test_qwen3_235b_hub_layout_and_text_config_nesting(tmp_path):
    qwen = {
        "hidden_size": 4096,
        "intermediate_size": 12288,
        "moe_intermediate_size": 1536,
        "num_experts": 128,
        "num_experts_per_tok": 8,
        "num_hidden_layers": 94,
        "hidden_act": "silu",
    }
    write_config(tmp_path / "q", qwen)
    m = resolve_model(str(tmp_path / "q"))
    assert (m.hidden, m.intermediate, m.num_experts, m.top_k) == (4096, 1536, 128, 8)
    assert m.keys_used["num_experts"] == "num_experts"
    # Llama-4 style: the language model sits under text_config.
    write_config(tmp_path / "l4", {"model_type": "llama4", "text_config": qwen})
    nested = resolve_model(str(tmp_path / "l4"))
    assert nested.intermediate == 1536
    assert nested.keys_used["intermediate"] == "text_config.moe_intermediate_size"


def test_ungated_activation_is_detected(tmp_path):
    cfg = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_local_experts": 4,
        "num_experts_per_tok": 1,
        "hidden_act": "gelu",
    }
    write_config(tmp_path, cfg)
    assert resolve_model(str(tmp_path)).gated is False


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"hidden_size": 4096, "intermediate_size": 11008}, "no MoE keys"),
        ({"num_local_experts": 8, "num_experts_per_tok": 2, "hidden_size": 8}, "intermediate"),
        ({"num_local_experts": 8, "hidden_size": 8, "intermediate_size": 8}, "top-k"),
        (
            {
                "num_local_experts": 0,
                "num_experts_per_tok": 2,
                "hidden_size": 8,
                "intermediate_size": 8,
            },
            "positive integer",
        ),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_configs_are_clear_errors(tmp_path, content, message):
    write_config(tmp_path, content)
    with pytest.raises(VibeError, match=message):
        resolve_model(str(tmp_path / "config.json"))


def test_missing_model_and_bad_json(tmp_path):
    with pytest.raises(VibeError, match="neither a preset"):
        resolve_model(str(tmp_path / "nope.json"))
    with pytest.raises(VibeError, match="no config.json"):
        resolve_model(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(VibeError, match="not valid JSON"):
        resolve_model(str(tmp_path))


def test_dtype_names():
    assert normalize_dtype("BF16") == "bfloat16"
    assert normalize_dtype("float32") == "float32"
    with pytest.raises(VibeError, match="not supported"):
        normalize_dtype("int8")
