"""Per architecture: profile-routing counts equal the router rule recomputed here, per token."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402
from routing_models import ARCHS, build_tiny_model  # noqa: E402

from vibe_plan.artifacts.routing_profile import load_routing_profile  # noqa: E402
from vibe_plan.routing.hooks import find_routers  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cache: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in cache:
            cache[arch] = build_tiny_model(arch, tmp_path_factory.mktemp(arch))
        return cache[arch]

    return get


def write_prompts(path: Path, n: int = 9, seed: int = 1) -> list[list[str]]:
    rng = random.Random(seed)
    prompts = [[f"w{rng.randrange(120)}" for _ in range(rng.randrange(2, 14))] for _ in range(n)]
    with open(path, "w") as f:
        for i, words in enumerate(prompts):
            f.write(json.dumps({"prompt": " ".join(words), "output_len": 1 + i % 4}) + "\n")
    return prompts


def expected_picks(model_type: str, router: torch.nn.Module, h: np.ndarray, k: int) -> np.ndarray:
    """The architecture's routing rule, written independently in float64 numpy: (tokens, k)."""
    w = router.weight.detach().double().numpy()
    logits = h @ w.T
    if model_type == "gpt_oss":
        logits = logits + router.bias.detach().double().numpy()
    if model_type in ("deepseek_v3", "glm4_moe"):
        score = 1 / (1 + np.exp(-logits)) + router.e_score_correction_bias.double().numpy()
        g = router.num_group
        grouped = score.reshape(len(h), g, -1)
        group_score = np.sort(grouped, axis=-1)[..., -2:].sum(-1)
        keep = np.argsort(-group_score, axis=-1)[:, : router.topk_group]
        allowed = np.zeros_like(group_score, dtype=bool)
        np.put_along_axis(allowed, keep, True, axis=-1)
        logits = np.where(np.repeat(allowed, grouped.shape[-1], axis=-1), score, -np.inf)
    elif model_type == "deepseek_v2":
        e = np.exp(logits - logits.max(-1, keepdims=True))
        prob = e / e.sum(-1, keepdims=True)
        grouped = prob.reshape(len(h), router.num_group, -1)
        keep = np.argsort(-grouped.max(-1), axis=-1)[:, : router.topk_group]
        allowed = np.zeros(grouped.shape[:2], dtype=bool)
        np.put_along_axis(allowed, keep, True, axis=-1)
        logits = np.where(np.repeat(allowed, grouped.shape[-1], axis=-1), prob, 0.0)
    # softmax, sigmoid and Phi-MoE's eval-mode sparsemixer all keep the order of the logits
    return np.argsort(-logits, axis=-1)[:, :k]


def direct_counts(model_dir: Path, arch: str, prompts: list[list[str]]) -> dict[int, np.ndarray]:
    """Each prompt alone (no padding at all), router inputs captured, picks recomputed."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_type, _, _, k, _ = ARCHS[arch]
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    routers = find_routers(model)
    num_experts = next(iter(routers.values())).weight.shape[0]
    totals = {layer: np.zeros(num_experts, np.int64) for layer in routers}
    seen: dict[int, np.ndarray] = {}
    hooks = [
        r.register_forward_pre_hook(
            lambda mod, args, layer=layer: seen.__setitem__(
                layer, args[0].detach().double().reshape(-1, args[0].shape[-1]).numpy()
            )
        )
        for layer, r in routers.items()
    ]
    with torch.no_grad():
        for words in prompts:
            ids = torch.tensor([tok(" ".join(words))["input_ids"]])
            model(input_ids=ids)
            for layer, r in routers.items():
                picks = expected_picks(model_type, r, seen[layer], k)
                totals[layer] += np.bincount(picks.ravel(), minlength=num_experts)
    for h in hooks:
        h.remove()
    return totals


@pytest.mark.parametrize("arch", list(ARCHS))
def test_counts_equal_router_rule(arch, tiny, vibe, tmp_path):
    model_dir = tiny(arch)
    prompts = write_prompts(tmp_path / "p.jsonl")
    out = tmp_path / "r.npz"
    # 30 tokens per batch: several padded batches of unequal prompts
    r = vibe(
        "profile-routing",
        "--model",
        model_dir,
        "--trace",
        tmp_path / "p.jsonl",
        "--out",
        out,
        "--batch-tokens",
        "30",
        "--quiet",
    )
    assert r.code == 0, r.err
    p = load_routing_profile(out)
    _, _, moe_layers, k, shared = ARCHS[arch]
    assert p.layer_ids.tolist() == moe_layers  # absolute ids, dense layers absent
    assert p.meta["top_k"] == k and p.meta["phase"] == "prefill"
    assert p.num_batches > 1
    # each layer of each batch sums to its valid (unpadded) tokens x top-k
    tokens = np.asarray(p.meta["row_tokens"])
    assert tokens.sum() == sum(map(len, prompts))  # the test tokenizer adds no special tokens
    assert (p.counts.sum(axis=2) == tokens[:, None] * k).all()
    expected = direct_counts(model_dir, arch, prompts)
    for li, layer in enumerate(p.layer_ids):
        assert p.counts[:, li, :].sum(axis=0).tolist() == expected[int(layer)].tolist()
    if shared:
        assert p.meta["shared_experts"] == {"count": shared, "tokens": tokens.tolist()}
    else:
        assert "shared_experts" not in p.meta


def test_deepseek_v3_bias_and_groups_change_the_picks(tiny):
    """The hand-set correction bias and group limit matter: plain top-k would be wrong here."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny("deepseek_v3"), local_files_only=True)
    router = find_routers(model)[1]
    assert router.e_score_correction_bias.abs().sum() > 0 and router.num_group == 4
    h = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, _, idx = router(h)
    naive = torch.topk(h.double() @ router.weight.double().T, 2).indices
    ours = expected_picks("deepseek_v3", router, h.double().numpy(), 2)
    same = lambda a, b: np.array_equal(np.sort(a, 1), np.sort(b, 1))  # noqa: E731
    assert same(idx.numpy(), ours)
    assert not same(idx.numpy(), naive.numpy())


@pytest.mark.parametrize("arch", ["mixtral", "deepseek_v3", "gpt_oss", "llama4_text", "phimoe"])
def test_decode_rows_tagged_and_capped(arch, tiny, vibe, tmp_path):
    write_prompts(tmp_path / "p.jsonl", n=6)
    out = tmp_path / "r.npz"
    r = vibe(
        "profile-routing",
        "--model",
        tiny(arch),
        "--trace",
        tmp_path / "p.jsonl",
        "--out",
        out,
        "--batch-tokens",
        "40",
        "--phase",
        "both",
        "--decode-steps",
        "3",
        "--quiet",
    )
    assert r.code == 0, r.err
    p = load_routing_profile(out)
    phases, tokens = p.meta["row_phase"], np.asarray(p.meta["row_tokens"])
    assert p.meta["phase"] == "mixed" and len(phases) == p.num_batches
    assert (p.counts.sum(axis=2) == tokens[:, None] * ARCHS[arch][3]).all()
    # output_len 1 + i % 4 = 1, 2, 3, 4, 1, 2: the prefill emits each first token, so N - 1
    # decode passes, capped at 3 steps: 0, 1, 2, 3, 0, 1 -> 7 decode tokens in all
    assert tokens[[ph == "decode" for ph in phases]].sum() == 7
    assert phases[0] == "prefill"
    r = vibe(
        "profile-routing",
        "--model",
        tiny(arch),
        "--trace",
        tmp_path / "p.jsonl",
        "--out",
        out,
        "--phase",
        "decode",
        "--decode-steps",
        "2",
        "--quiet",
    )
    assert r.code == 0, r.err
    p = load_routing_profile(out)
    assert p.meta["phase"] == "decode" and "row_phase" not in p.meta
    assert sum(p.meta["row_tokens"]) == 0 + 1 + 2 + 2 + 0 + 1  # min(N - 1, 2) passes each


def test_llama4_multimodal_checkpoint_loads_its_text_model(vibe, tmp_path):
    """Released Llama-4 folders hold vision + text; the text decoder's routers are profiled."""
    from routing_models import build_llama4_multimodal

    model_dir = build_llama4_multimodal(tmp_path / "l4")
    prompts = write_prompts(tmp_path / "p.jsonl", n=4)
    r = vibe(
        "profile-routing",
        "--model",
        model_dir,
        "--trace",
        tmp_path / "p.jsonl",
        "--out",
        tmp_path / "r.npz",
        "--quiet",
    )
    assert r.code == 0, r.err
    p = load_routing_profile(tmp_path / "r.npz")
    assert p.layer_ids.tolist() == [1, 2] and p.meta["top_k"] == 1
    assert p.meta["shared_experts"]["count"] == 1
    expected = direct_counts(model_dir, "llama4_text", prompts)
    for li, layer in enumerate(p.layer_ids):
        assert p.counts[:, li, :].sum(axis=0).tolist() == expected[int(layer)].tolist()
