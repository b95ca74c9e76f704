"""Query encoding without torch: the index's model converted once by CTranslate2, so a search starts in a second.

A CLI search on this project's 2-core CPU took 6.3 s, of which about 6 s was importing torch,
transformers and sentence-transformers (scikit-learn included) to encode one query. For a
plain BERT-family bi-encoder (a Transformer, mean or CLS
pooling and an optional Normalize: all-MiniLM-L6-v2 and every model genq trains from it), the
query side is instead a CTranslate2 copy of the model, run in float32 so its vectors match the
torch ones to rounding, fed by the model's own ``tokenizer.json`` through the ``tokenizers``
library. Neither imports torch.

The copy is made by ``genq index`` (or by the first search of an index built otherwise, which
then pays the torch import and a few seconds), keyed by the model files' fingerprint and the
CTranslate2 version, built beside its place and renamed in whole, under
``$GENQ_CACHE_DIR/ct2`` (default ``~/.cache/genq``). Any other model, a GPU device, or
``GENQ_QUERY_ENCODER=torch`` keeps the sentence-transformers path.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from genq.corpus import clip_for_model
from genq.ct2_convert import ConversionFailed, converted_copy
from genq.io import describe_error
from genq.models import resolve_model

logger = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = ("bert", "distilbert", "roberta", "xlm-roberta", "camembert")


class QueryEncoder:
    """Encodes queries as :class:`genq.encode.Encoder` does (clipped, prompted, pooled, normalised), via CTranslate2."""

    dtype_label = "float32 (CTranslate2)"

    def __init__(self, name: str, location: Path, plan: dict, converted: Path):
        import ctranslate2
        from tokenizers import Tokenizer

        self.name, self.location = name, str(location)
        self.dimension = plan["dimension"]
        self.max_seq_length = plan["max_seq_length"]
        self.pooling, self.lowercase, self.query_prompt = plan["pooling"], plan["lowercase"], plan["query_prompt"]
        self.tokenizer = Tokenizer.from_file(str(location / "tokenizer.json"))
        self.tokenizer.no_padding()  # a saved tokenizer may pad to a fixed length: the pad tokens would be pooled
        self.tokenizer.enable_truncation(self.max_seq_length)
        self.model = ctranslate2.Encoder(str(converted), device="cpu", compute_type="float32")

    def encode_queries(self, queries: list[str], progress: bool = False) -> np.ndarray:
        if not queries:
            return np.zeros((0, self.dimension), dtype=np.float32)
        texts = [clip_for_model(self.query_prompt + q if self.query_prompt else q, self.max_seq_length)
                 for q in queries]
        encodings = self.tokenizer.encode_batch([t.lower() for t in texts] if self.lowercase else texts)
        output = self.model.forward_batch([e.ids for e in encodings],
                                          token_type_ids=[e.type_ids for e in encodings])
        hidden = np.asarray(output.last_hidden_state, dtype=np.float32)
        lengths = np.array([len(e.ids) for e in encodings])
        if self.pooling == "cls":
            vectors = hidden[:, 0]
        else:
            mask = (np.arange(hidden.shape[1])[None, :] < lengths[:, None]).astype(np.float32)
            vectors = (hidden * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def light_query_encoder(model: str, device: str | None = None) -> QueryEncoder | None:
    """A torch-free query encoder for ``model``, or None where the sentence-transformers path must be used."""
    if os.environ.get("GENQ_QUERY_ENCODER", "").lower() == "torch" or device not in (None, "", "cpu"):
        return None
    try:
        import ctranslate2  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError:
        return None
    location = Path(resolve_model(model))
    plan = _plan(location)
    if plan is None:
        return None
    converted = _converted(location)
    if converted is None:
        return None
    try:
        return QueryEncoder(model, location, plan, converted)
    except Exception as exc:  # a copy CTranslate2 cannot read: the torch path still can
        logger.warning("could not load the CTranslate2 copy of %s (%s); encoding queries with torch",
                       model, describe_error(exc))
        return None


def prepare(model: str) -> bool:
    """Make the CTranslate2 copy now (after `genq index` or an adapt run's index), so the first search is fast too."""
    return light_query_encoder(model) is not None


def _plan(location: Path) -> dict | None:
    """What encoding needs from a sentence-transformers folder, or None for a stack this path does not cover."""
    try:
        modules = json.loads((location / "modules.json").read_text(encoding="utf-8"))
        kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
        if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]) or modules[0]["path"]:
            return None
        pooling = json.loads((location / modules[1]["path"] / "config.json").read_text(encoding="utf-8"))
        config = json.loads((location / "config.json").read_text(encoding="utf-8"))
        settings = json.loads((location / "sentence_bert_config.json").read_text(encoding="utf-8"))
        if not (location / "tokenizer.json").is_file() or config.get("model_type") not in SUPPORTED_MODEL_TYPES:
            return None
        # sentence-transformers 5 writes one flag per mode, 6 names the mode
        flags = {k.removeprefix("pooling_mode_") for k, v in pooling.items() if k.startswith("pooling_mode_") and v}
        mode = {"mean": "mean", "cls": "cls", "mean_tokens": "mean", "cls_token": "cls"}.get(
            pooling.get("pooling_mode") if isinstance(pooling.get("pooling_mode"), str) else
            (next(iter(flags)) if len(flags) == 1 else ""))
        if mode is None or pooling.get("include_prompt", True) is False:
            return None
        prompts = {}
        if (location / "config_sentence_transformers.json").is_file():
            prompts = json.loads((location / "config_sentence_transformers.json").read_text(encoding="utf-8"))
            prompts = prompts.get("prompts") or {}
        return {"dimension": int(pooling.get("embedding_dimension") or pooling["word_embedding_dimension"]),
                "max_seq_length": _max_seq_length(location, settings, config),
                "lowercase": bool(settings.get("do_lower_case")), "query_prompt": prompts.get("query") or "",
                "pooling": mode}
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None


def _max_seq_length(location: Path, settings: dict, config: dict) -> int:
    """How many tokens sentence-transformers feeds the model: its own setting (v5), else the tokenizer's (v6)."""
    positions = int(config.get("max_position_embeddings") or 512)
    length = settings.get("max_seq_length")
    if not length and (location / "tokenizer_config.json").is_file():
        length = json.loads((location / "tokenizer_config.json").read_text(encoding="utf-8")).get("model_max_length")
    return int(length) if isinstance(length, int | float) and 0 < length < 10**6 else positions


def _converted(location: Path) -> Path | None:
    """The float32 CTranslate2 copy of the model at ``location``, converted now if none is kept yet."""
    try:
        return converted_copy(location, purpose="torch-free query encoding")
    except ConversionFailed as exc:  # unconvertible, or no room to keep it: the torch path serves
        (logger.debug if exc.remembered else logger.warning)(
            "could not convert %s for CTranslate2 (%s); encoding queries with torch", location, exc.reason)
        return None
