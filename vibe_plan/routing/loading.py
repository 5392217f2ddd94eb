"""Load a local Hugging Face MoE checkpoint and its tokenizer with transformers' own code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vibe_plan.errors import VibeError, first_line

DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda")


def model_device(device: str) -> str:
    import torch

    if device not in DEVICES:
        raise VibeError(f"--device {device!r}: use one of {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise VibeError("--device cuda: torch sees no CUDA device here; use --device cpu")
    return device


def load_model(model_dir: str | Path, device: str, dtype: str, show_progress: bool = False) -> Any:
    """The model in eval mode; on CUDA spread over the visible GPUs (device_map="auto").
    `show_progress`: let transformers draw its loading bars (for a person at a terminal)."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    if not show_progress:
        hf_logging.disable_progress_bar()

    if dtype not in DTYPES:
        raise VibeError(f"--dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    torch_dtype: Any = "auto" if dtype == "auto" else getattr(torch, dtype)
    kwargs: dict[str, Any] = {"local_files_only": True, "dtype": torch_dtype}
    if device == "cuda":
        kwargs["device_map"] = "auto"
    try:
        model = _from_pretrained(AutoModelForCausalLM, model_dir, kwargs, device)
    except ImportError as e:  # e.g. device_map="auto" without accelerate installed
        raise VibeError(f"loading {model_dir} needs a missing package: {e}") from None
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        first = first_line(e)
        raise VibeError(f"cannot load the model from {model_dir}: {first}") from None
    if device == "cpu":
        model = model.to("cpu")
    model.eval()  # no router jitter or dropout: inference routing only
    return model


def _from_pretrained(auto: Any, model_dir: str | Path, kwargs: dict[str, Any], device: str) -> Any:
    if device == "cpu":
        # On CPU torch's grouped_mm is a slow fallback loop; the per-expert eager loop is about
        # 4x faster for replay. Routing is decided before the experts run, so counts are equal.
        try:
            return auto.from_pretrained(str(model_dir), experts_implementation="eager", **kwargs)
        except (ValueError, TypeError):
            pass  # older transformers, or a model without switchable experts
    return auto.from_pretrained(str(model_dir), **kwargs)


def load_tokenizer(model_dir: str | Path) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as e:
        first = first_line(e)
        raise VibeError(
            f"cannot load a tokenizer from {model_dir} ({first}); the folder needs the "
            "tokenizer files saved with the model"
        ) from None
    if tok is None or not callable(tok):
        raise VibeError(f"{model_dir}: no usable tokenizer in the folder")
    return tok


def input_device(model: Any) -> Any:
    """Where input ids go: the embedding's device (the first shard under device_map="auto")."""
    emb = model.get_input_embeddings()
    return emb.weight.device if emb is not None else next(model.parameters()).device
