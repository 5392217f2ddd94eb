"""Tiny random MoE checkpoints of real architectures, built locally for the routing tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

BASE: dict[str, Any] = {
    "hidden_size": 32,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "intermediate_size": 64,
    "vocab_size": 128,
    "max_position_embeddings": 256,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}

# Per architecture: (model_type, extra config keys, expected MoE decoder-layer ids, top-k,
# shared experts). The dense layers are there on purpose, to check absolute layer ids.
DEEPSEEK_MLA = {
    "kv_lora_rank": 16,
    "q_lora_rank": 16,
    "qk_rope_head_dim": 8,
    "qk_nope_head_dim": 8,
    "v_head_dim": 8,
    "moe_intermediate_size": 16,
}
ARCHS: dict[str, tuple[str, dict[str, Any], list[int], int, int]] = {
    "mixtral": ("mixtral", {"num_local_experts": 8, "num_experts_per_tok": 2}, [0, 1, 2], 2, 0),
    "qwen2_moe": (
        "qwen2_moe",
        {
            "num_experts": 8,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 16,
            "shared_expert_intermediate_size": 32,
            "mlp_only_layers": [1],
        },
        [0, 2],
        2,
        1,
    ),
    "qwen3_moe": (
        "qwen3_moe",
        {
            "num_experts": 8,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 16,
            "head_dim": 8,
            "decoder_sparse_step": 2,
        },
        [1],
        2,
        0,
    ),
    "olmoe": ("olmoe", {"num_experts": 8, "num_experts_per_tok": 2}, [0, 1, 2], 2, 0),
    "deepseek_v2": (
        "deepseek_v2",
        {
            **DEEPSEEK_MLA,
            "n_routed_experts": 8,
            "num_experts_per_tok": 2,
            "n_shared_experts": 2,
            "first_k_dense_replace": 1,
            "n_group": 4,
            "topk_group": 2,
            "topk_method": "group_limited_greedy",
        },
        [1, 2],
        2,
        2,
    ),
    "deepseek_v3": (
        "deepseek_v3",
        {
            **DEEPSEEK_MLA,
            "n_routed_experts": 8,
            "num_experts_per_tok": 2,
            "n_shared_experts": 1,
            "first_k_dense_replace": 1,
            "n_group": 4,
            "topk_group": 2,
        },
        [1, 2],
        2,
        1,
    ),
    "glm4_moe": (
        "glm4_moe",
        {
            "n_routed_experts": 8,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 16,
            "n_shared_experts": 1,
            "first_k_dense_replace": 1,
            "n_group": 2,
            "topk_group": 1,
            "head_dim": 8,
        },
        [1, 2],
        2,
        1,
    ),
    "gpt_oss": (
        "gpt_oss",
        {"num_local_experts": 8, "num_experts_per_tok": 2, "head_dim": 8, "sliding_window": 8},
        [0, 1, 2],
        2,
        0,
    ),
    "granitemoe": (
        "granitemoe",
        {"num_local_experts": 8, "num_experts_per_tok": 2},
        [0, 1, 2],
        2,
        0,
    ),
    "phimoe": ("phimoe", {"num_local_experts": 8, "num_experts_per_tok": 2}, [0, 1, 2], 2, 0),
    "llama4_text": (
        "llama4_text",
        {
            "num_local_experts": 8,
            "num_experts_per_tok": 1,
            "intermediate_size_mlp": 64,
            "head_dim": 8,
            "moe_layers": [1, 2],
            "no_rope_layers": [1, 1, 1],
            "attention_chunk_size": 64,
        },
        [1, 2],
        1,
        1,
    ),
}


def tiny_config(arch: str, **overrides: Any) -> Any:
    from transformers import AutoConfig

    model_type, extra, *_ = ARCHS[arch]
    return AutoConfig.for_model(model_type, **{**BASE, **extra, **overrides})


def skew_routers(model: Any, seed: int = 0, strength: float = 4.0) -> None:
    """Make router picks uneven and deterministic: bias the router weights towards low experts."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("mlp.gate.weight", "router.weight")) and p.dim() == 2:
                e, h = p.shape
                p.copy_(torch.randn(e, h, generator=g) * 0.5)
                p[: max(1, e // 4)] += strength * torch.randn(h, generator=g).sign() / h**0.5
        for name, buf in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                # Large enough to change many picks against plain top-k of the scores.
                buf.copy_(torch.randn(buf.shape, generator=g) * 0.3)


def build_tiny_model(arch: str, folder: Path, seed: int = 0, **overrides: Any) -> Path:
    """Random tiny model saved with save_pretrained (plus a word-level tokenizer) in `folder`."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, **overrides))
    skew_routers(model, seed)
    model.save_pretrained(folder)
    save_tokenizer(folder, vocab_size=int(model.config.get_text_config().vocab_size))
    return folder


def save_tokenizer(folder: Path, vocab_size: int = 128) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(vocab_size - 4)]
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, **{w: i + 4 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )
    fast.save_pretrained(folder)


def build_llama4_multimodal(folder: Path, seed: int = 0) -> Path:
    """A Llama-4 checkpoint as released (vision + text, config under text_config)."""
    import torch
    from transformers import Llama4Config, Llama4ForConditionalGeneration

    torch.manual_seed(seed)
    text = {**BASE, **ARCHS["llama4_text"][1]}
    vision = {
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "image_size": 28,
        "patch_size": 14,
        "vision_output_dim": 32,
        "projector_input_dim": 32,
        "projector_output_dim": 32,
    }
    model = Llama4ForConditionalGeneration(Llama4Config(text_config=text, vision_config=vision))
    skew_routers(model, seed)
    model.save_pretrained(folder)
    save_tokenizer(folder)
    return folder
