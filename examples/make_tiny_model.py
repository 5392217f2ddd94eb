"""Build a TINY, RANDOM DeepSeek-V3-shaped MoE checkpoint for the demo (not a trained model).

Same code path as a real checkpoint (save_pretrained, then from_pretrained offline); the router
is skewed by hand so the demo's loads are visibly uneven. Usage: make_tiny_model.py --out DIR
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

NOTE = (
    "TINY RANDOM MODEL for the vibe-plan demo: DeepSeek-V3 architecture, random weights, "
    "router weights and e_score_correction_bias skewed by hand. Its routing says nothing about "
    "any real model."
)
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
NUM_EXPERTS = 32  # routed experts per MoE layer: a demo GPU profile must match this


def build(out: Path, prompts: Path | None, seed: int = 0) -> None:
    import torch
    from transformers import AutoModelForCausalLM, DeepseekV3Config

    words = _vocabulary(prompts)
    config = DeepseekV3Config(
        vocab_size=len(words) + 8,
        hidden_size=64,
        intermediate_size=128,  # the dense layer's MLP
        moe_intermediate_size=32,
        num_hidden_layers=4,
        first_k_dense_replace=1,  # like DeepSeek-V3's first 3 dense layers, scaled down
        num_attention_heads=4,
        num_key_value_heads=4,
        n_routed_experts=NUM_EXPERTS,
        num_experts_per_tok=4,
        n_shared_experts=1,
        n_group=4,
        topk_group=2,
        kv_lora_rank=16,
        q_lora_rank=16,
        qk_rope_head_dim=8,
        qk_nope_head_dim=8,
        v_head_dim=8,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.model.layers:
            gate = getattr(layer.mlp, "gate", None)
            if gate is None:
                continue  # dense layer
            # Hot experts: a shared direction added to a few rows makes them win often;
            # a per-layer bias shifts which group is favoured, as the real correction bias does.
            hot = torch.randperm(NUM_EXPERTS, generator=g)[:5]
            gate.weight.normal_(0, 0.15, generator=g)
            gate.weight[hot] += 0.6 * torch.randn(64, generator=g).sign() / 8
            gate.e_score_correction_bias.copy_(0.05 * torch.randn(NUM_EXPERTS, generator=g))
    model.config.vibe_note = NOTE
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    _tokenizer(words).save_pretrained(out)
    (out / "TINY_RANDOM_MODEL.txt").write_text(NOTE + "\n")
    print(
        f"wrote {out}: tiny random DeepSeek-V3-shaped model, {NUM_EXPERTS} routed experts, "
        "top-4, 4 groups, 1 shared expert, MoE decoder layers 1-3 (layer 0 dense)"
    )


def _vocabulary(prompts: Path | None) -> list[str]:
    """Every word of the example prompts (so the demo has few unknown tokens), plus basics."""
    text = "the a of to and is in it you that for on with as are this be at or"
    if prompts is not None and prompts.is_file():
        for line in prompts.read_text().splitlines():
            if line.strip():
                obj = json.loads(line)
                text += " " + obj.get("prompt", "")
                text += " ".join(m["content"] for m in obj.get("messages", []))
    return sorted(set(re.findall(r"\w+|[^\w\s]", text.lower())))


def _tokenizer(words: list[str]):  # -> PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    special = ["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "<|system|>"]
    vocab = {w: i for i, w in enumerate(special + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        additional_special_tokens=special[4:],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def main() -> None:
    here = Path(__file__).parent
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=here / "tiny-model", help="folder to write")
    ap.add_argument(
        "--prompts",
        type=Path,
        default=here / "prompts.jsonl",
        help="prompt trace whose words make up the vocabulary",
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    build(args.out, args.prompts, args.seed)


if __name__ == "__main__":
    main()
