"""In-memory retrieval over a passages list, shared by filter, negatives and evaluate.

Ground floor, like io and encode: the stages that need to search a corpus before any index
exists (round-trip filtering, hard-negative mining, evaluation) do it through these two
classes rather than each with its own loop.

* :class:`DenseCorpus` encodes the passages once (cached on disk by model and content, so a
  second stage over the same corpus and model does not encode again) and searches them
  exactly with a Faiss inner-product index, query batch by query batch: memory holds the
  corpus vectors and one batch of scores, never a query x corpus matrix.
* :class:`LexicalCorpus` is BM25 (bm25s, Lucene variant) with English stemming.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from genq.encode import Encoder, passage_text
from genq.io import atomic_write

logger = logging.getLogger(__name__)


def corpus_fingerprint(passages: list[dict], model_name: str) -> str:
    digest = hashlib.blake2b(digest_size=12)
    digest.update(model_name.encode())
    for passage in passages:
        digest.update(passage["_id"].encode() + b"\x00" + passage_text(passage).encode() + b"\x01")
    return digest.hexdigest()


class DenseCorpus:
    """Exact dense search over passages with a cached embedding matrix."""

    def __init__(self, passages: list[dict], encoder: Encoder, cache_dir: str | Path | None = None,
                 progress: bool = False):
        import faiss

        self.passages = passages
        self.encoder = encoder
        self.row_of = {p["_id"]: row for row, p in enumerate(passages)}
        self.cache_path = None
        if cache_dir is not None:
            key = corpus_fingerprint(passages, f"{encoder.name}:{encoder.dimension}:{encoder.dtype_label}")
            self.cache_path = Path(cache_dir) / f"corpus-{key}.npy"
        if self.cache_path is not None and self.cache_path.exists():
            self.vectors = np.load(self.cache_path)
            logger.info("reusing cached corpus embeddings %s", self.cache_path)
        else:
            self.vectors = encoder.encode_passages(passages, progress=progress)
            if self.cache_path is not None:
                with atomic_write(self.cache_path, mode="wb") as handle:
                    np.save(handle, self.vectors)
        self.index = faiss.IndexFlatIP(self.vectors.shape[1])
        self.index.add(self.vectors)

    def encode_queries(self, queries: list[str]) -> np.ndarray:
        return self.encoder.encode_queries(queries)

    def search(self, query_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) of the top ``k`` passages for each query vector."""
        return self.index.search(query_vectors, min(k, len(self.passages)))

    def score(self, query_vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The score of one given passage row per query (e.g. the query's own positive)."""
        return np.einsum("ij,ij->i", query_vectors, self.vectors[rows])


class LexicalCorpus:
    """BM25 over passages (title + text), English stemming and stopwords."""

    def __init__(self, passages: list[dict], progress: bool = False):
        import bm25s
        import Stemmer

        self.passages = passages
        self.row_of = {p["_id"]: row for row, p in enumerate(passages)}
        self._stemmer = Stemmer.Stemmer("english")
        self._bm25s = bm25s
        self.retriever = bm25s.BM25()
        self.retriever.index(bm25s.tokenize([passage_text(p) for p in passages], stopwords="en",
                                            stemmer=self._stemmer, show_progress=progress), show_progress=progress)

    def _tokens(self, queries: list[str]):
        return self._bm25s.tokenize(queries, stopwords="en", stemmer=self._stemmer, show_progress=False)

    def search(self, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        rows, scores = self.retriever.retrieve(self._tokens(queries), k=min(k, len(self.passages)),
                                               show_progress=False, n_threads=1)
        return scores, rows

    def score(self, queries: list[str], rows: np.ndarray) -> np.ndarray:
        """BM25 score of one given passage per query."""
        tokenized = self._tokens(queries)
        vocabulary = {index: token for token, index in tokenized.vocab.items()}
        scores = []
        for ids, row in zip(tokenized.ids, rows):
            terms = [vocabulary[i] for i in ids]
            scores.append(float(self.retriever.get_scores(terms)[int(row)]) if terms else 0.0)
        return np.asarray(scores, dtype=np.float32)
