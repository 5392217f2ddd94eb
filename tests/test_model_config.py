"""One config reader: profile-gpus (resolve_model) and profile-routing (read_config + moe_facts)
agree on every MoE fact of every supported architecture, and refuse the same bad configs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from routing_models import ARCHS, BASE

from vibe_plan.errors import VibeError
from vibe_plan.model_config import (
    EXPERT_KEYS,
    HIDDEN_KEYS,
    INTERMEDIATE_KEYS,
    LAYER_KEYS,
    PRESET_CONFIGS,
    PRESETS,
    TOPK_KEYS,
    ModelShape,
    MoeFacts,
    model_name,
    moe_facts,
    read_config,
    resolve_model,
)


def write_config(folder: Path, cfg: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def gpus_side(folder: Path) -> ModelShape:
    """What `vibe profile-gpus --model FOLDER` reads."""
    return resolve_model(str(folder))


def routing_side(folder: Path) -> MoeFacts:
    """What `vibe profile-routing --model FOLDER` reads (same call as routing/profile_run.py)."""
    cfg = read_config(folder)
    return moe_facts(cfg, model_name(folder, cfg), f"{folder}/config.json")


def assert_sides_agree(shape: ModelShape, facts: MoeFacts) -> None:
    assert shape.num_experts == facts.num_experts
    assert shape.top_k == facts.top_k
    assert shape.num_layers == facts.num_hidden_layers
    assert (shape.hidden, shape.intermediate, shape.gated) == (
        facts.hidden,
        facts.intermediate,
        facts.gated,
    )
    assert shape.keys_used == facts.keys_used


# ---------------------------------------------------------------------------------------------
# Every architecture profile-routing supports: config.json as transformers writes it, and the
# truth taken from the model transformers builds from it (on the meta device: no weights).


def _model_truth(model: Any, num_hidden_layers: int) -> dict[str, Any]:
    """Experts, top-k, MoE layers, groups and expert FFN shape as the built model has them."""
    from vibe_plan.routing.hooks import find_routers

    routers = find_routers(model)
    first = next(iter(routers))
    router = routers[first]
    num_experts, hidden = (int(d) for d in router.weight.shape)
    params = dict(model.named_parameters())
    prefix = next(n for n in params if f"layers.{first}." in n and n.endswith("experts.down_proj"))
    prefix = prefix.removesuffix("down_proj")
    down = params[prefix + "down_proj"].shape  # (E, H, I) or (E, I, H)
    up = params[prefix + "gate_up_proj"].shape  # (E, 2I, H) or (E, H, 2I): gate and up fused
    intermediate = down[1] * down[2] // hidden
    return {
        "num_experts": num_experts,
        "top_k": int(router.top_k),
        "moe_layers": list(routers),
        "dense_layers": [i for i in range(num_hidden_layers) if i not in routers],
        "num_groups": getattr(router, "num_group", None),
        "topk_group": getattr(router, "topk_group", None),
        "hidden": hidden,
        "intermediate": intermediate,
        "gated": up[1] * up[2] == 2 * intermediate * hidden,
    }


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """arch -> (folder holding the config.json transformers saved, truth from the built model)."""
    pytest.importorskip("transformers")
    import torch
    from routing_models import tiny_config
    from transformers import AutoModelForCausalLM

    cache: dict[str, tuple[Path, dict[str, Any]]] = {}

    def get(arch: str) -> tuple[Path, dict[str, Any]]:
        if arch not in cache:
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(tiny_config(arch))
            folder = tmp_path_factory.mktemp(arch)
            model.config.save_pretrained(folder)
            text = model.config.get_text_config()
            truth = _model_truth(model, int(text.num_hidden_layers))
            # MTP modules live in the checkpoint after the decoder layers, not in the HF model.
            truth["mtp_layers"] = int(getattr(text, "num_nextn_predict_layers", 0) or 0)
            truth["decoder_layers"] = len(model.model.layers)
            cache[arch] = (folder, truth)
        return cache[arch]

    return get


@pytest.mark.parametrize("arch", list(ARCHS))
def test_both_profilers_read_the_same_facts_as_the_model_has(saved, arch):
    folder, truth = saved(arch)
    model_type, _, want_layers, want_k, want_shared = ARCHS[arch]
    shape, facts = gpus_side(folder), routing_side(folder)
    assert_sides_agree(shape, facts)
    assert facts.model_type == model_type
    assert facts.num_hidden_layers == truth["decoder_layers"] == BASE["num_hidden_layers"]
    assert facts.moe_layers == truth["moe_layers"] == want_layers
    assert facts.dense_layers == truth["dense_layers"]
    assert facts.top_k == truth["top_k"] == want_k
    assert facts.shared_experts == want_shared
    for key in ("num_experts", "mtp_layers", "hidden", "intermediate", "gated"):
        assert getattr(facts, key) == truth[key], key
    if truth["num_groups"] and truth["num_groups"] > 1:
        assert (facts.num_groups, facts.topk_group) == (truth["num_groups"], truth["topk_group"])
    else:
        assert facts.num_groups is None and facts.topk_group is None


@pytest.mark.parametrize("arch", list(ARCHS))
def test_both_profilers_accept_and_refuse_the_same_broken_configs(saved, tmp_path, arch):
    """Each key of the tables removed or spoilt in turn: both sides accept or both refuse (with
    the same message), except for the one fact only one side needs."""
    folder, _ = saved(arch)
    cfg = read_config(folder)
    table = EXPERT_KEYS + TOPK_KEYS + LAYER_KEYS + HIDDEN_KEYS + INTERMEDIATE_KEYS
    keys = [k for k in table if k in cfg]
    assert keys, "the saved config has none of the table's keys"
    n = 0
    for key in keys:
        for spoilt in ("drop", 0, -3, "8", 1000, None):
            bad = {k: v for k, v in cfg.items() if k != key}
            if spoilt != "drop":
                bad[key] = spoilt
            case = write_config(tmp_path / f"c{n}", bad)
            n += 1
            outcome: dict[str, Any] = {}
            for side, read in (("gpus", gpus_side), ("routing", routing_side)):
                try:
                    outcome[side] = read(case)
                except VibeError as e:
                    outcome[side] = str(e)
            gpus, routing = outcome["gpus"], outcome["routing"]
            where = f"{key}={spoilt!r}"
            if isinstance(gpus, ModelShape) and isinstance(routing, MoeFacts):
                assert_sides_agree(gpus, routing)
            elif isinstance(gpus, str) and isinstance(routing, str):
                # profile-gpus adds the preset names to a missing-experts message.
                assert gpus.startswith(routing), where
                assert "\n" not in gpus and "\n" not in routing
            elif isinstance(gpus, str):  # only profile-gpus needs the expert FFN shape
                assert key in HIDDEN_KEYS + INTERMEDIATE_KEYS, (where, gpus)
                assert "size (looked for" in gpus, (where, gpus)
                assert routing.hidden is None or routing.intermediate is None
            else:  # only profile-routing needs the decoder-layer count
                assert key in LAYER_KEYS and "num_hidden_layers is missing" in routing, where
                assert gpus.num_layers is None


def test_llama4_multimodal_wrapper_reads_text_config(saved, tmp_path):
    pytest.importorskip("transformers")
    import torch
    from transformers import Llama4Config, Llama4ForConditionalGeneration

    _, text_truth = saved("llama4_text")
    text = {**BASE, **ARCHS["llama4_text"][1]}
    vision = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4}
    config = Llama4Config(text_config=text, vision_config={**vision, "intermediate_size": 64})
    with torch.device("meta"):
        model = Llama4ForConditionalGeneration(config)
    model.config.save_pretrained(tmp_path)
    outer = read_config(tmp_path)
    assert outer["model_type"] == "llama4" and not any(k in outer for k in EXPERT_KEYS)
    shape, facts = gpus_side(tmp_path), routing_side(tmp_path)
    assert_sides_agree(shape, facts)
    truth = _model_truth(model, BASE["num_hidden_layers"])
    assert truth.items() <= text_truth.items()  # the wrapper's decoder is the text-only model
    for key in ("num_experts", "top_k", "moe_layers", "dense_layers", "hidden", "intermediate"):
        assert getattr(facts, key) == truth[key], key
    assert facts.shared_experts == 1 and facts.model_type.startswith("llama4")
    assert shape.keys_used["num_experts"] == "text_config.num_local_experts"


# ---------------------------------------------------------------------------------------------
# Without transformers: hand-written configs.

QWEN3_TEXT = {
    "model_type": "qwen3_vl_moe_text",
    "hidden_size": 2048,
    "intermediate_size": 6144,
    "moe_intermediate_size": 768,
    "num_experts": 128,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 6,
    "decoder_sparse_step": 1,
    "mlp_only_layers": [0, 3],
    "hidden_act": "silu",
}


@pytest.mark.parametrize("inner_type", [True, False])
def test_text_config_wrapper(tmp_path, inner_type):
    inner = QWEN3_TEXT if inner_type else {k: v for k, v in QWEN3_TEXT.items() if k != "model_type"}
    plain = write_config(tmp_path / "plain", QWEN3_TEXT)
    wrapped = write_config(
        tmp_path / "wrapped",
        {"model_type": "qwen3_vl_moe", "text_config": inner, "vision_config": {"depth": 2}},
    )
    for folder in (plain, wrapped):
        shape, facts = gpus_side(folder), routing_side(folder)
        assert_sides_agree(shape, facts)
        assert (facts.num_experts, facts.top_k) == (QWEN3_TEXT["num_experts"], 8)
        assert (facts.hidden, facts.intermediate) == (2048, QWEN3_TEXT["moe_intermediate_size"])
        assert facts.moe_layers == [1, 2, 4, 5] and facts.dense_layers == [0, 3]
    assert routing_side(wrapped).model_type == (
        "qwen3_vl_moe_text" if inner_type else "qwen3_vl_moe"
    )
    assert gpus_side(wrapped).keys_used["top_k"] == "text_config.num_experts_per_tok"
    assert gpus_side(plain).keys_used["top_k"] == "num_experts_per_tok"


DEEPSEEK = {
    "model_type": "deepseek_v3",
    "hidden_size": 7168,
    "intermediate_size": 18432,
    "moe_intermediate_size": 2048,
    "n_routed_experts": 256,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 61,
    "first_k_dense_replace": 3,
    "n_group": 8,
    "topk_group": 4,
    "n_shared_experts": 1,
    "num_nextn_predict_layers": 1,
    "hidden_act": "silu",
}


def test_deepseek_groups_dense_layers_shared_and_mtp(tmp_path):
    folder = write_config(tmp_path, DEEPSEEK)
    shape, facts = gpus_side(folder), routing_side(folder)
    assert_sides_agree(shape, facts)
    k = DEEPSEEK["first_k_dense_replace"]
    layers = DEEPSEEK["num_hidden_layers"]
    assert facts.dense_layers == list(range(k))
    assert facts.moe_layers == list(range(k, layers))  # the MTP layer is no decoder layer
    assert facts.num_hidden_layers == layers and facts.mtp_layers == 1
    assert (facts.num_groups, facts.topk_group) == (DEEPSEEK["n_group"], DEEPSEEK["topk_group"])
    assert facts.shared_experts == DEEPSEEK["n_shared_experts"]
    assert facts.intermediate == DEEPSEEK["moe_intermediate_size"] != DEEPSEEK["intermediate_size"]
    # DeepSeek-V2's moe_layer_freq: MoE only on every freq-th layer after the dense ones.
    v2 = {**DEEPSEEK, "moe_layer_freq": 2, "num_nextn_predict_layers": 0, "n_group": 1}
    facts = routing_side(write_config(tmp_path / "v2", v2))
    assert facts.moe_layers == [i for i in range(k, layers) if i % 2 == 0]
    assert sorted(facts.moe_layers + facts.dense_layers) == list(range(layers))
    assert facts.mtp_layers == 0
    assert facts.num_groups is None and facts.topk_group is None  # one group: no group limit


def test_presets_read_through_the_same_table():
    for name, cfg in PRESET_CONFIGS.items():
        facts = moe_facts(cfg, name, f"preset {name}")
        shape = PRESETS[name]
        assert shape.source == "preset" and shape.keys_used == {} and shape.name == name
        assert (shape.hidden, shape.intermediate, shape.gated) == (
            facts.hidden,
            facts.intermediate,
            facts.gated,
        )
        assert (shape.num_experts, shape.top_k, shape.num_layers) == (
            facts.num_experts,
            facts.top_k,
            facts.num_hidden_layers,
        )


@pytest.mark.parametrize(
    ("cls_name", "preset"),
    [
        ("MixtralConfig", "mixtral-8x7b"),
        ("DeepseekV3Config", "deepseek-v3"),
        ("GptOssConfig", "gpt-oss-120b"),
    ],
)
def test_preset_facts_match_transformers_defaults(tmp_path, cls_name, preset):
    # transformers' defaults for these classes are the released models: every MoE fact of the
    # preset (groups, dense layers, shared experts, MTP) must match the saved default config.
    transformers = pytest.importorskip("transformers")
    getattr(transformers, cls_name)().save_pretrained(tmp_path)
    got = routing_side(tmp_path)
    want = moe_facts(PRESET_CONFIGS[preset], preset)
    fields = [f for f in MoeFacts.__dataclass_fields__ if f not in ("model", "keys_used")]
    assert {f: getattr(got, f) for f in fields} == {f: getattr(want, f) for f in fields}


MOE = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "hidden_act": "silu"}


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({**MOE, "num_experts_per_tok": 2}, "not a Mixture-of-Experts"),
        ({**MOE, "num_local_experts": 0, "num_experts_per_tok": 2}, "positive integer"),
        ({**MOE, "num_local_experts": 8, "num_experts_per_tok": 0}, "top-k must be"),
        ({**MOE, "num_local_experts": 8, "num_experts_per_tok": -1}, "top-k must be"),
        ({**MOE, "num_local_experts": 8, "num_experts_per_tok": 9}, "in 1..8"),
        ({**MOE, "n_routed_experts": 8}, "missing top-k"),
        ({"model_type": "llava", "text_config": {**MOE, "num_experts_per_tok": 2}}, "no MoE keys"),
    ],
)
def test_bad_configs_are_one_clear_error_on_both_sides(tmp_path, cfg, message):
    folder = write_config(tmp_path, cfg)
    errors = []
    for read in (gpus_side, routing_side):
        with pytest.raises(VibeError, match=message) as e:
            read(folder)
        errors.append(str(e.value))
    gpus, routing = errors
    assert gpus.startswith(routing) and "\n" not in gpus
    assert routing.startswith(f"{folder}/config.json: ")
