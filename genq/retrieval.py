"""Retrieval primitives shared by filter, negatives, evaluate, search and serve.

Ground floor, like io and encode: every stage that searches (round-trip filtering,
hard-negative mining, evaluation, the index's Searcher) does it through the pieces here
rather than each with its own loop, so dense, BM25, hybrid and reranked search mean the
same thing everywhere.

* :class:`DenseCorpus` encodes the passages once (cached on disk by model and content, so a
  second stage over the same corpus and model does not encode again) and searches them
  exactly with a Faiss inner-product index, query batch by query batch: memory holds the
  corpus vectors and one batch of scores, never a query x corpus matrix.
* :class:`LexicalIndex` is BM25 (bm25s, Lucene variant) with a Snowball stemmer and a
  stopword list, saved in bm25s's own format (JSON + ``.npy``, no pickle);
  :class:`LexicalCorpus` builds one over a passages list in memory.
* :func:`fuse` merges a dense and a BM25 candidate list (min-max score fusion or
  reciprocal-rank fusion); :class:`Reranker` rescores candidates with a cross-encoder.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from genq.batch_sizing import auto_encode_batch, smaller_after
from genq.corpus import clip_for_model
from genq.encode import Encoder, passage_text
from genq.hardware import resolve_device, resolve_dtype
from genq.io import DataError, GenqError, atomic_write, describe_error, read_json
from genq.models import resolve_model

logger = logging.getLogger(__name__)


def corpus_fingerprint(passages: list[dict], model_key: str) -> str:
    """The cache key of a corpus's embeddings: the model's fingerprint and every passage as encoded."""
    digest = hashlib.blake2b(digest_size=12)
    digest.update(model_key.encode())
    for passage in passages:
        digest.update(passage["_id"].encode() + b"\x00" + passage_text(passage).encode() + b"\x01")
    return digest.hexdigest()


class DenseCorpus:
    """Exact dense search over passages with a cached embedding matrix."""

    def __init__(self, passages: list[dict], encoder: Encoder, cache_dir: str | Path | None = None,
                 progress: bool = False, vectors: np.ndarray | None = None):
        """``vectors``: the passages' embeddings computed elsewhere (a Ray job), row i = passage i."""
        self.passages = passages
        self.encoder = encoder
        self.row_of = {p["_id"]: row for row, p in enumerate(passages)}
        self.cache_path = None
        self.reused_cache = False
        if vectors is not None and vectors.shape != (len(passages), encoder.dimension):
            raise GenqError(f"precomputed corpus embeddings are {vectors.shape}, expected "
                            f"({len(passages)}, {encoder.dimension})")
        if cache_dir is not None and vectors is None:
            key = corpus_fingerprint(passages, encoder.fingerprint)
            self.cache_path = Path(cache_dir) / f"corpus-{key}.npy"
        if vectors is not None:
            self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        else:
            self.vectors = self._cached_or_encoded(progress)
        self.index = self._flat_index(self.vectors)

    def _cached_or_encoded(self, progress: bool) -> np.ndarray:
        cached = self._load_cached(len(self.passages), self.encoder.dimension) if self.cache_path else None
        if cached is not None:
            self.reused_cache = True
            logger.info("reusing cached corpus embeddings %s", self.cache_path)
            return cached
        vectors = self.encoder.encode_passages(self.passages, progress=progress)
        if self.cache_path is not None:
            with atomic_write(self.cache_path, mode="wb") as handle:
                np.save(handle, vectors)
        return vectors

    def _load_cached(self, rows: int, dimension: int) -> np.ndarray | None:
        """The cached matrix, or None where there is none or it is damaged (then it is encoded again)."""
        if not self.cache_path.exists():
            return None
        try:
            cached = np.load(self.cache_path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            logger.warning("ignoring the damaged embedding cache %s (%s); encoding again", self.cache_path,
                           describe_error(exc))
            return None
        if cached.shape != (rows, dimension) or cached.dtype != np.float32:
            logger.warning("ignoring the embedding cache %s: it holds %s, expected (%d, %d) float32; encoding again",
                           self.cache_path, cached.shape, rows, dimension)
            return None
        return cached

    @staticmethod
    def _flat_index(vectors: np.ndarray):
        import faiss

        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        return index

    def encode_queries(self, queries: list[str]) -> np.ndarray:
        return self.encoder.encode_queries(queries)

    def search(self, query_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) of the top ``k`` passages for each query vector."""
        return self.index.search(query_vectors, min(k, len(self.passages)))

    def score(self, query_vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The score of one given passage row per query (e.g. the query's own positive)."""
        return np.einsum("ij,ij->i", query_vectors, self.vectors[rows])


# --------------------------------------------------------------------------- BM25

LEXICAL_SETTINGS_FILE = "genq_lexical.json"


def _bm25s():
    """bm25s, imported with its logger back at WARNING (its import sets it to DEBUG)."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


@dataclass(frozen=True)
class LexicalSettings:
    """How text becomes BM25 terms; stored with the index so queries are cut the same way.

    ``language`` names a Snowball stemmer (``english``, ``german``, ... or ``none``);
    ``stopwords`` is ``auto`` (the language's list where bm25s has one), ``none``, or a
    bm25s list name (``en``, ``de``, ``fr``, ...).
    """

    language: str = "english"
    stopwords: str = "auto"
    k1: float = 1.5
    b: float = 0.75

    @classmethod
    def from_dict(cls, stored: dict) -> LexicalSettings:
        """The settings recorded in index.json or beside a saved BM25 index (extra keys ignored)."""
        return cls(**{k: stored[k] for k in ("language", "stopwords", "k1", "b") if k in stored})

    def validate(self) -> LexicalSettings:
        import Stemmer

        if self.language != "none" and self.language not in Stemmer.algorithms():
            raise GenqError(f"unknown --lexical-language {self.language!r}\n  fix: use none or one of "
                            + ", ".join(Stemmer.algorithms()))
        if self.stopwords not in ("auto", "none"):
            self.stopword_list()
        return self

    def stemmer(self):
        import Stemmer

        return None if self.language == "none" else Stemmer.Stemmer(self.language)

    def stopword_list(self) -> list[str]:
        from bm25s.tokenization import _infer_stopwords

        if self.stopwords == "none" or (self.stopwords == "auto" and self.language == "none"):
            return []
        name = self.language if self.stopwords == "auto" else self.stopwords
        try:
            return list(_infer_stopwords(name))
        except ValueError:
            if self.stopwords == "auto":
                return []  # a language bm25s has no stopword list for: stem only
            raise GenqError(f"bm25s has no stopword list {self.stopwords!r}\n  fix: use auto, none, or one of "
                            "en, de, nl, fr, es, pt, it, ru, sv, no, zh, tr, ko, da") from None


class LexicalIndex:
    """BM25 (bm25s, Lucene variant) searched query by query with numpy: no progress bars, no threads.

    Query terms that are not in the index vocabulary are dropped; a query left with no known
    term matches nothing (an empty result, not an error). Hits scoring 0 are never returned.
    """

    def __init__(self, retriever, settings: LexicalSettings):
        self.retriever = retriever
        self.settings = settings
        self._stemmer = settings.stemmer()
        self._stopwords = settings.stopword_list()
        self._vocabulary: dict[str, int] = {t: i for t, i in retriever.vocab_dict.items() if t}

    @classmethod
    def build(cls, texts: Sequence[str], settings: LexicalSettings | None = None,
              progress: bool = False) -> LexicalIndex:
        bm25s = _bm25s()

        settings = (settings or LexicalSettings()).validate()
        retriever = bm25s.BM25(k1=settings.k1, b=settings.b)
        tokens = bm25s.tokenize(list(texts), stopwords=settings.stopword_list(), stemmer=settings.stemmer(),
                                show_progress=progress)
        retriever.index(tokens, show_progress=progress)
        return cls(retriever, settings)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.retriever.save(str(directory), show_progress=False)
        (directory / LEXICAL_SETTINGS_FILE).write_text(
            json.dumps({**asdict(self.settings), "documents": len(self)}, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path) -> LexicalIndex:
        bm25s = _bm25s()

        directory = Path(directory)
        stored = read_json(directory / LEXICAL_SETTINGS_FILE, "BM25 index settings")
        settings = LexicalSettings.from_dict(stored)
        try:
            retriever = bm25s.BM25.load(str(directory), mmap=True, show_progress=False)
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(directory, f"bm25s could not read the BM25 index ({exc})",
                            "rebuild the index with `genq index`") from None
        return cls(retriever, settings)

    def __len__(self) -> int:
        return int(self.retriever.scores["num_docs"])

    def _term_ids(self, queries: Sequence[str]) -> list[list[int]]:
        bm25s = _bm25s()

        tokenized = bm25s.tokenize(list(queries), stopwords=self._stopwords, stemmer=self._stemmer,
                                   return_ids=False, show_progress=False)
        return [[self._vocabulary[t] for t in terms if t in self._vocabulary] for terms in tokenized]

    def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows), shaped like Faiss output: rows padded with -1 where fewer than ``k`` match."""
        k = max(1, min(int(k), len(self)))
        scores = np.zeros((len(queries), k), dtype=np.float32)
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        for i, term_ids in enumerate(self._term_ids(queries)):
            if not term_ids:
                continue
            all_scores = self.retriever.get_scores_from_ids(term_ids)
            top = np.argpartition(-all_scores, k - 1)[:k] if k < len(all_scores) else np.arange(len(all_scores))
            top = top[all_scores[top] > 0]
            top = top[np.lexsort((top, -all_scores[top]))]
            rows[i, :len(top)] = top
            scores[i, :len(top)] = all_scores[top]
        return scores, rows

    def score(self, queries: Sequence[str], rows: np.ndarray) -> np.ndarray:
        """BM25 score of one given passage row per query."""
        return np.asarray([float(self.retriever.get_scores_from_ids(ids)[int(row)]) if ids else 0.0
                           for ids, row in zip(self._term_ids(queries), rows)], dtype=np.float32)


class LexicalCorpus(LexicalIndex):
    """BM25 over a passages list held in memory (title + text), for stages that run before any index."""

    def __init__(self, passages: list[dict], settings: LexicalSettings | None = None, progress: bool = False):
        built = LexicalIndex.build([passage_text(p) for p in passages], settings, progress)
        super().__init__(built.retriever, built.settings)
        self.passages = passages
        self.row_of = {p["_id"]: row for row, p in enumerate(passages)}


# --------------------------------------------------------------------------- hybrid fusion

SEARCH_MODES = ("hybrid", "dense", "bm25")
FUSIONS = ("minmax", "rrf")
RRF_K = 60


@dataclass
class Fused:
    """One candidate after fusion: its row, fused score, and where each retriever put it (None: not found)."""

    row: int
    score: float
    dense_score: float | None = None
    dense_rank: int | None = None
    bm25_score: float | None = None
    bm25_rank: int | None = None


def check_fusion(fusion: str, alpha: float) -> None:
    if fusion not in FUSIONS:
        raise GenqError(f"unknown fusion {fusion!r}; choose one of {', '.join(FUSIONS)}")
    if not (isinstance(alpha, int | float) and 0.0 <= float(alpha) <= 1.0):
        raise GenqError(f"alpha must be between 0 and 1 (the share of the dense score), got {alpha!r}")


def _ranked(rows: np.ndarray, scores: np.ndarray) -> dict[int, tuple[int, float]]:
    """row -> (rank, score) for the valid entries of one query's candidate list, best first."""
    ranked: dict[int, tuple[int, float]] = {}
    for row, score in zip(rows, scores):
        if row >= 0 and int(row) not in ranked:
            ranked[int(row)] = (len(ranked) + 1, float(score))
    return ranked


def _min_max(ranked: dict[int, tuple[int, float]]) -> dict[int, float]:
    if not ranked:
        return {}
    scaled = _scaled(np.array([score for _, score in ranked.values()], dtype=np.float64))
    return dict(zip(ranked, scaled.tolist()))


def fuse(dense_rows: np.ndarray, dense_scores: np.ndarray, bm25_rows: np.ndarray, bm25_scores: np.ndarray,
         fusion: str = "minmax", alpha: float = 0.5, rrf_k: int = RRF_K) -> list[Fused]:
    """Merge one query's dense and BM25 candidate lists into one ranking.

    ``minmax``: each list's scores are scaled to [0, 1] per query (a passage missing from a
    list gets 0 there) and combined as ``alpha * dense + (1 - alpha) * bm25``; the scales of
    cosine and BM25 scores differ by orders of magnitude, so raw sums would let BM25 win.
    ``rrf``: reciprocal-rank fusion, ``2 * (alpha / (k + dense_rank) + (1 - alpha) / (k + bm25_rank))``,
    which at alpha 0.5 is Cormack et al.'s plain RRF; it ignores scores and needs no scaling.
    """
    check_fusion(fusion, alpha)
    dense, bm25 = _ranked(dense_rows, dense_scores), _ranked(bm25_rows, bm25_scores)
    rows = list(dict.fromkeys([*dense, *bm25]))
    if fusion == "minmax":
        dense_norm, bm25_norm = _min_max(dense), _min_max(bm25)
        fused = {r: alpha * dense_norm.get(r, 0.0) + (1 - alpha) * bm25_norm.get(r, 0.0) for r in rows}
    else:
        fused = {r: 2 * ((alpha / (rrf_k + dense[r][0]) if r in dense else 0.0)
                         + ((1 - alpha) / (rrf_k + bm25[r][0]) if r in bm25 else 0.0)) for r in rows}
    order = sorted(rows, key=lambda r: (-fused[r], dense.get(r, (1 << 30,))[0], bm25.get(r, (1 << 30,))[0], r))
    return [Fused(r, fused[r], *(dense[r][::-1] if r in dense else (None, None)),
                  *(bm25[r][::-1] if r in bm25 else (None, None))) for r in order]


def single(rows: np.ndarray, scores: np.ndarray, side: str) -> list[Fused]:
    """One retriever's list in the same shape as a fused one (``side`` is "dense" or "bm25")."""
    return [Fused(row, score, **{f"{side}_score": score, f"{side}_rank": rank})
            for row, (rank, score) in _ranked(rows, scores).items()]


# --------------------------------------------------------------------------- cross-encoder reranking

DEFAULT_RERANKER = "cross-encoder/ms-marco-MiniLM-L6-v2"
RERANK_FUSIONS = ("replace", "minmax", "rrf")
DEFAULT_RERANK_FUSION = "replace"


def check_rerank_fusion(fusion: str, weight: float) -> None:
    if fusion not in RERANK_FUSIONS:
        raise GenqError(f"unknown rerank fusion {fusion!r}; choose one of {', '.join(RERANK_FUSIONS)}")
    if not (isinstance(weight, int | float) and 0.0 <= float(weight) <= 1.0):
        raise GenqError(f"the rerank weight must be between 0 and 1 (the share of the cross-encoder), got {weight!r}")


def blend_rerank(first_stage: Sequence[float], cross_encoder: Sequence[float], fusion: str = "replace",
                 weight: float = 0.5, rrf_k: int = RRF_K) -> np.ndarray:
    """The reranked head's final scores: the cross-encoder's alone, or blended with the first stage's.

    ``replace`` is the classic cascade. Interpolating a neural score with BM25's is the usual
    remedy when the neural model is weak out of its domain (Wang, Zhuang & Zuccon 2021).
    ``minmax`` scales both to [0, 1] over the head and takes ``weight * cross + (1 - weight) *
    first``; ``rrf`` mixes their ranks within the head the same way, ignoring scores. Measured
    on whole Cranfield (benchmarks/results/rerank_fusion.md), it did not rescue a reranker
    trained on SmolLM2's queries: a tenth of it left BM25's nDCG@10 where it was and every
    larger share lowered it, so ``replace`` stays the default.
    """
    check_rerank_fusion(fusion, weight)
    first = np.asarray(first_stage, dtype=np.float64)
    cross = np.asarray(cross_encoder, dtype=np.float64)
    if first.shape != cross.shape:
        raise ValueError(f"{first.size} first-stage scores for {cross.size} cross-encoder scores")
    if fusion == "replace" or cross.size == 0:
        return cross
    if fusion == "minmax":
        return weight * _scaled(cross) + (1 - weight) * _scaled(first)
    first_rank = np.empty(first.size)
    first_rank[np.argsort(-first, kind="stable")] = np.arange(1, first.size + 1)
    cross_rank = np.empty(cross.size)
    cross_rank[np.argsort(-cross, kind="stable")] = np.arange(1, cross.size + 1)
    return 2 * (weight / (rrf_k + cross_rank) + (1 - weight) / (rrf_k + first_rank))


def _scaled(scores: np.ndarray) -> np.ndarray:
    """Scores scaled to [0, 1]; all 1 when they are equal (nothing to tell apart)."""
    low, high = float(scores.min()), float(scores.max())
    return np.ones_like(scores) if high - low <= 1e-12 else (scores - low) / (high - low)


def _is_bi_encoder(directory: Path) -> bool:
    """A sentence-transformers bi-encoder folder lists a Pooling module; a cross-encoder does not."""
    try:
        modules = json.loads((directory / "modules.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return any(str(m.get("type", "")).endswith("Pooling") for m in modules if isinstance(m, dict))


RERANK_LENGTH_CAP = 512  # BERT-style cross-encoders' position limit; tokenizers may claim far more


class Reranker:
    """A sentence-transformers CrossEncoder scoring (query, passage) pairs, bf16 where the hardware has it."""

    def __init__(self, model: str | object = DEFAULT_RERANKER, device: str | None = None, dtype: str = "auto",
                 batch_size: int | None = 32, max_length: int | None = None):
        """``max_length`` None reads (query, passage) up to the model's own limit, at most 512 tokens:
        a reranker genq trained at 256 tokens is scored at 256 (forcing 512 on it read text it never
        saw in training and was 1.59x slower: benchmarks/results/rerank_length.md), a hub
        cross-encoder at its 512."""
        import torch
        from sentence_transformers import CrossEncoder

        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        if self.dtype == torch.float16 and self.device == "cpu":
            self.dtype = torch.float32
        self.batch_size = batch_size
        if isinstance(model, str):
            self.name = model
            location = resolve_model(model)
            if _is_bi_encoder(Path(location)):
                raise GenqError(f"{model} is a sentence-transformers bi-encoder, not a cross-encoder\n"
                                f"  fix: pass a cross-encoder such as {DEFAULT_RERANKER}")
            try:
                model = CrossEncoder(location, device=self.device,
                                     **({"max_length": max_length} if max_length else {}))
            except Exception as exc:
                raise GenqError(f"could not load the cross-encoder {self.name!r}: "
                                f"{describe_error(exc)}\n  fix: pass a cross-encoder directory or a reachable hub id "
                                f"(e.g. {DEFAULT_RERANKER})") from None
            labels = getattr(model.config, "num_labels", 1)
            if labels != 1:
                raise GenqError(f"{self.name} has {labels} output labels; a reranking cross-encoder has one\n"
                                f"  fix: pass a cross-encoder trained for ranking, e.g. {DEFAULT_RERANKER}")
        else:
            self.name = getattr(model, "model_name_or_path", None) or "cross-encoder"
        self.model = model
        positions = getattr(getattr(model, "config", None), "max_position_embeddings", None) or RERANK_LENGTH_CAP
        own = getattr(model, "max_seq_length", None) or RERANK_LENGTH_CAP
        self.max_length = max_length or min(own, positions, RERANK_LENGTH_CAP)
        if getattr(model, "max_seq_length", None) != self.max_length:
            model.max_seq_length = self.max_length
        self._identity = torch.nn.Identity()
        if self.dtype != torch.float32:
            self.model.to(self.dtype)
        self.model.eval()
        if self.batch_size is None:  # by the device's free memory on a GPU, 32 on a CPU
            config = getattr(model, "config", None)
            self.batch_size = 32 if not str(self.device).startswith("cuda") else auto_encode_batch(
                self.device, self.max_length, getattr(config, "hidden_size", 768),
                getattr(config, "num_hidden_layers", 12), torch.tensor([], dtype=self.dtype).element_size())

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """One relevance score per (query, passage text) pair, higher is better.

        CrossEncoder.predict sorts its inputs by length before batching, so a large call pads
        little; callers pass whole chunks rather than small batches. Raw logits are returned (no
        sigmoid): margins between them are what MarginMSE learns, and the order is the same.
        """
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        pairs = [(clip_for_model(query, self.max_length), clip_for_model(text, self.max_length))
                 for query, text in pairs]
        while True:
            try:
                scores = self.model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False,
                                            convert_to_numpy=True, activation_fn=self._identity)
                break
            except Exception as exc:  # out of memory: the same pairs again in smaller batches
                self.batch_size = smaller_after(exc, self.batch_size, self.device, "cross-encoder scoring")
        scores = np.asarray(scores, dtype=np.float32).reshape(len(pairs), -1)[:, 0]
        if not np.all(np.isfinite(scores)):
            raise GenqError(f"the cross-encoder {self.name} returned NaN/inf scores\n"
                            "  fix: run it in float32 (--dtype float32) or check the model")
        return scores

    def score(self, query: str, passages: Sequence[dict]) -> np.ndarray:
        """Relevance of each passage (title + text) to the query; higher is better."""
        return self.score_pairs([(query, passage_text(p)) for p in passages])

    def rerank(self, query: str, candidates: list, passages: Sequence[dict], depth: int,
               first_stage: Sequence[float] | None = None, fusion: str = "replace",
               weight: float = 0.5) -> list[tuple[object, float | None, float | None]]:
        """The first ``depth`` candidates reordered, each with its final and its cross-encoder score.

        ``first_stage`` holds the candidates' scores from the ranking being reranked; a blending
        ``fusion`` (see :func:`blend_rerank`) needs them. Candidates below the depth follow in
        their original order with no scores (None, None).
        """
        return reorder(candidates, self.score(query, passages[:depth]), first_stage, fusion, weight)


def reorder(candidates: list, cross: Sequence[float], first_stage: Sequence[float] | None = None,
            fusion: str = "replace", weight: float = 0.5) -> list[tuple[object, float | None, float | None]]:
    """The candidates with cross-encoder scores (the first ``len(cross)``) sorted by their final
    score, each as (candidate, final, cross); the rest follow in their order as (candidate, None, None)."""
    if fusion != "replace" and first_stage is None:
        raise ValueError(f"rerank fusion {fusion!r} blends with the first stage's scores: pass first_stage")
    cross = np.asarray(cross, dtype=np.float64)
    final = cross if fusion == "replace" else blend_rerank(list(first_stage)[:len(cross)], cross, fusion, weight)
    head = sorted(zip(candidates[:len(cross)], final.tolist(), cross.tolist()), key=lambda item: -item[1])
    return head + [(c, None, None) for c in candidates[len(cross):]]
