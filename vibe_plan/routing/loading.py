"""Load a local Hugging Face MoE checkpoint and its tokenizer with transformers' own code."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def quiet_libraries(verbose: bool = False) -> Iterator[None]:
    """Keep transformers' log (its load report, model-type notices) and Python warnings from
    torch and transformers off the terminal, unless `verbose`: what the user must hear comes
    back as notes or as one error line. The previous settings are restored on the way out."""
    if verbose:
        yield
        return
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(before)


def load_model(
    model_dir: str | Path,
    device: str,
    dtype: str,
    show_progress: bool = False,
    verbose: bool = False,
) -> Any:
    """The model in eval mode; on CUDA spread over the visible GPUs (device_map="auto").
    `show_progress`: let transformers draw its loading bars (for a person at a terminal).
    `verbose`: let transformers' load report and library warnings through.
    A checkpoint that lacks weights or holds weights of other shapes is refused: transformers
    would fill those with random values, and the routing would then mean nothing."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    if not show_progress:
        hf_logging.disable_progress_bar()

    if dtype not in DTYPES:
        raise VibeError(f"--dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    torch_dtype: Any = "auto" if dtype == "auto" else getattr(torch, dtype)
    kwargs: dict[str, Any] = {
        "local_files_only": True,
        "dtype": torch_dtype,
        # Report mismatched shapes in loading_info instead of raising (checked below).
        "ignore_mismatched_sizes": True,
        "output_loading_info": True,
    }
    if device == "cuda":
        kwargs["device_map"] = "auto"
    hint = "" if verbose else " (--verbose shows transformers' load report)"
    with quiet_libraries(verbose):
        try:
            model, info = _from_pretrained(AutoModelForCausalLM, model_dir, kwargs, device)
        except ImportError as e:  # e.g. device_map="auto" without accelerate installed
            raise VibeError(f"loading {model_dir} needs a missing package: {e}") from None
        except (torch.cuda.OutOfMemoryError, MemoryError):
            raise VibeError(
                f"out of memory loading {model_dir}; use a smaller --dtype or more GPUs"
            ) from None
        except Exception as e:  # a broken folder fails in many ways inside transformers
            first = first_line(e)
            if not isinstance(e, (OSError, ValueError, KeyError, RuntimeError)):
                first = f"{type(e).__name__}: {first}"
            more = hint if "report" in str(e) else ""  # the message points at the hidden report
            raise VibeError(f"cannot load the model from {model_dir}: {first}{more}") from None
    _check_loaded(model_dir, info, hint)
    if device == "cpu":
        model = model.to("cpu")
    model.eval()  # no router jitter or dropout: inference routing only
    return model


def _check_loaded(model_dir: str | Path, info: dict[str, Any], hint: str) -> None:
    """Refuse a model whose weights did not all come from the checkpoint. Unexpected keys are
    fine: a vision tower or multi-token-prediction layers the causal LM does not use."""
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise VibeError(
            f"cannot load the model from {model_dir}: the checkpoint lacks {len(missing)} "
            f"weight(s) the model needs (first: {missing[0]}), which would be random; check "
            f"that every safetensors shard is in the folder{hint}"
        )
    mismatched = sorted(info.get("mismatched_keys") or [])
    if mismatched:
        key, *shapes = mismatched[0]
        got = " vs config ".join(str(list(s)) for s in shapes[:2])
        raise VibeError(
            f"cannot load the model from {model_dir}: {len(mismatched)} weight(s) have other "
            f"shapes than config.json implies (first: {key}, checkpoint {got}); check that "
            f"config.json belongs to these weights{hint}"
        )


def _from_pretrained(
    auto: Any, model_dir: str | Path, kwargs: dict[str, Any], device: str
) -> tuple[Any, dict[str, Any]]:
    """(model, loading info) from transformers' from_pretrained(output_loading_info=True)."""
    if device == "cpu":
        # On CPU torch's grouped_mm is a slow fallback loop; the per-expert eager loop is about
        # 4x faster for replay. Routing is decided before the experts run, so counts are equal.
        try:
            return auto.from_pretrained(str(model_dir), experts_implementation="eager", **kwargs)
        except (ValueError, TypeError):
            pass  # older transformers, or a model without switchable experts
    return auto.from_pretrained(str(model_dir), **kwargs)


def load_tokenizer(model_dir: str | Path, verbose: bool = False) -> Any:
    from transformers import AutoTokenizer

    with quiet_libraries(verbose):
        try:
            tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        except Exception as e:  # a broken tokenizer file fails in many ways (tokenizers, json)
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
