"""Which kind of generator a model is (seq2seq or decoder-only), read from its config before any weights load."""

from __future__ import annotations

from pathlib import Path

from genq.generation.settings import GenerationConfig
from genq.io import GenqError, describe_error
from genq.models import resolve_model


def detect_family(model: str, gguf_file: str | None) -> str:
    """"seq2seq" or "causal", from the model's config (GGUF files are decoder-only)."""
    if gguf_file:
        return "causal"
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model)
    except Exception as exc:
        raise GenqError(f"could not load the generator {model!r}: {describe_error(exc)}\n"
                        "  fix: pass a local model directory, a hub id reachable from here, or --gguf-file") from None
    return "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"


def generator_family(config: GenerationConfig) -> str:
    """The family of ``config``'s generator (its config file is read; the weights are not loaded)."""
    if config.family != "auto":
        return config.family
    return detect_family(*split_gguf(resolve_model(config.model, what="generator"), config.gguf_file))


def split_gguf(model: str, gguf_file: str | None) -> tuple[str, str | None]:
    """Accept a GGUF path as the model itself, or a GGUF name inside a model dir."""
    if gguf_file is None and model.endswith(".gguf"):
        gguf_file = model
    if gguf_file is None:
        return model, None
    path = Path(gguf_file)
    if path.exists():
        return str(path.resolve().parent), path.name
    inside = Path(model) / gguf_file
    if inside.exists():
        return str(Path(model)), gguf_file
    return model, gguf_file  # a hub repo holding the file
