"""Fast text encoding with a sentence-transformers model, shared by index, filter, negatives and evaluate.

What makes it faster than a plain ``SentenceTransformer.encode``: weights cast once to bf16
where the hardware does bf16 natively (AMX / AVX512-BF16 CPUs, recent GPUs), batches cut
from texts sorted by *token* length (so padding is minimal), ``torch.inference_mode``, and
large corpora streamed through in chunks so memory stays flat.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator

import numpy as np
from tqdm.auto import tqdm

from genq.batch_sizing import auto_encode_batch, smaller_after
from genq.corpus import clip_for_model
from genq.hardware import dtype_name, resolve_device, resolve_dtype
from genq.io import GenqError, describe_error
from genq.models import resolve_model

logger = logging.getLogger(__name__)


def passage_text(passage: dict) -> str:
    """How a passage is shown to a bi-encoder: BEIR's convention, title then text."""
    title = (passage.get("title") or "").strip()
    return f"{title} {passage['text']}" if title else passage["text"]


class Encoder:
    """A sentence-transformers model loaded once, encoding in the fastest precision the device has."""

    def __init__(self, model: str | object, device: str | None = None, dtype: str = "auto",
                 batch_size: int | None = 64, max_seq_length: int | None = None):
        import torch
        from sentence_transformers import SentenceTransformer

        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        if self.dtype == torch.float16 and self.device == "cpu":
            self.dtype = torch.float32
        self.location: str | None = None  # the model folder, when loaded from one (its files identify the model)
        if isinstance(model, str):
            self.name = model
            location = self.location = str(resolve_model(model))
            try:
                model = SentenceTransformer(location, device=self.device)
            except Exception as exc:
                raise GenqError(f"could not load the model {self.name!r}: {describe_error(exc)}\n"
                                "  fix: pass a sentence-transformers model directory or a reachable hub id") from None
        else:
            card = getattr(model, "model_card_data", None)
            self.name = (card.base_model if card is not None else None) or "model"
        self.model = model
        if max_seq_length:
            self.model.max_seq_length = max_seq_length
        self.model.to(self.device)
        if self.dtype != torch.float32:
            self.model.to(self.dtype)
        self.model.eval()
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dimension = int(dimension())
        self.batch_size = batch_size or self._auto_batch_size()  # None: sized by the device's free memory
        # sentence-transformers 6 renamed tokenize() to preprocess()
        self._preprocess = getattr(self.model, "preprocess", None) or self.model.tokenize
        prompts = getattr(self.model, "prompts", None) or {}
        self.query_prompt = prompts.get("query", "")
        self.passage_prompt = prompts.get("document", prompts.get("passage", ""))
        self._fingerprint: str | None = None

    def _auto_batch_size(self) -> int:
        import torch

        config = getattr(self.model[0], "auto_model", None)
        config = getattr(config, "config", None)
        return auto_encode_batch(self.device, int(self.model.max_seq_length or 512),
                                 getattr(config, "hidden_size", None) or self.dimension,
                                 getattr(config, "num_hidden_layers", None) or 12,
                                 torch.tensor([], dtype=self.dtype).element_size())

    @property
    def dtype_label(self) -> str:
        return dtype_name(self.dtype)

    @property
    def fingerprint(self) -> str:
        """A digest of what decides this encoder's vectors: weights, modules, tokenizer, length, precision.

        Keys the on-disk corpus embedding caches, so a model retrained in place (same path,
        new weights) never reuses the old model's vectors. Hashing MiniLM's 90 MB of weights
        costs a fraction of a second, once per encoder.
        """
        if self._fingerprint is None:
            import hashlib

            import torch

            digest = hashlib.blake2b(digest_size=12)
            tokenizer = self.model.tokenizer
            digest.update(f"{self.model!r}|{self.model.max_seq_length}|{self.dtype_label}|{type(tokenizer).__name__}|"
                          f"{len(tokenizer)}|{self.query_prompt}|{self.passage_prompt}".encode())
            for name, tensor in self.model.state_dict().items():
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def encode(self, texts: list[str], normalize: bool = True, progress: bool = False, desc: str = "encoding",
               prompt: str = "") -> np.ndarray:
        """Embeddings as float32 rows in the order of ``texts``."""
        import torch

        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        tokenizer = self.model.tokenizer
        max_length = self.model.max_seq_length
        texts = [clip_for_model(prompt + t if prompt else t, max_length) for t in texts]
        lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=True, truncation=True,
                                                 max_length=max_length, return_attention_mask=False)["input_ids"]]
        order = np.argsort(-np.asarray(lengths), kind="stable")
        output = np.empty((len(texts), self.dimension), dtype=np.float32)
        bar = tqdm(total=len(texts), desc=desc, unit=" texts", disable=not progress, file=sys.stderr)
        with torch.inference_mode():
            start = 0
            while start < len(texts):
                index = order[start:start + self.batch_size]
                try:
                    features = self._preprocess([texts[i] for i in index])
                    features = {k: (v.to(self.device) if hasattr(v, "to") else v) for k, v in features.items()}
                    embeddings = self.model(features)["sentence_embedding"].float()
                except Exception as exc:  # out of memory: the same texts again, in smaller batches from now on
                    self.batch_size = smaller_after(exc, len(index), self.device, "encoding")
                    continue
                if normalize:
                    embeddings = torch.nn.functional.normalize(embeddings, p=2, dim=1)
                output[index] = embeddings.cpu().numpy()
                bar.update(len(index))
                start += len(index)
        bar.close()
        return output

    def encode_queries(self, queries: list[str], progress: bool = False) -> np.ndarray:
        return self.encode(queries, progress=progress, desc="encoding queries", prompt=self.query_prompt)

    def encode_passages(self, passages: list[dict], progress: bool = False) -> np.ndarray:
        return self.encode([passage_text(p) for p in passages], progress=progress, desc="encoding passages",
                           prompt=self.passage_prompt)

    def encode_stream(self, passages: Iterable[dict], chunk_size: int = 8192, progress: bool = False,
                      total: int | None = None, initial: int = 0) -> Iterator[tuple[list[dict], np.ndarray]]:
        """Encode a passage stream chunk by chunk: memory holds one chunk of texts at a time. ``initial``: how
        many of ``total`` an earlier run encoded (the bar and its estimate start there)."""
        bar = tqdm(total=total, initial=initial, desc="encoding passages", unit=" passages", disable=not progress,
                   file=sys.stderr)
        chunk: list[dict] = []
        for passage in passages:
            chunk.append(passage)
            if len(chunk) >= chunk_size:
                yield chunk, self.encode_passages(chunk)
                bar.update(len(chunk))
                chunk = []
        if chunk:
            yield chunk, self.encode_passages(chunk)
            bar.update(len(chunk))
        bar.close()
