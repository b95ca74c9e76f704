"""Hard-negative mining: add to each pair passages that look relevant to its query but are not its own.

The recipe of sentence-transformers' ``util.mine_hard_negatives`` (rank window, relative
margin against false negatives, top or random sampling), re-done here because a genq stage
needs what that function does not give: the negatives' passage ids and titles (DPR and
FlagEmbedding exports carry them), a BM25 retriever as well as a dense one, the corpus
embeddings shared with the filter stage's cache, and streaming over the pairs file. Query
batches are searched one at a time, so memory holds the corpus vectors and one batch of
candidates, never a query x corpus score matrix.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass
from itertools import zip_longest
from pathlib import Path

import numpy as np

from genq.corpus import check_pairs_against, load_passages
from genq.encode import Encoder
from genq.generation.pairs_file import iter_pairs
from genq.io import DataError, GenqError, atomic_write, dumps_line, refuse_same_path
from genq.locks import one_writer
from genq.retrieval import DenseCorpus, LexicalCorpus

SAMPLING = ("top", "random")
RETRIEVERS = ("dense", "bm25", "both")


@dataclass
class MiningConfig:
    num_negatives: int = 1
    range_min: int = 10
    range_max: int = 100
    relative_margin: float | None = 0.05
    sampling: str = "top"
    retriever: str = "dense"
    seed: int = 42
    batch_size: int = 256

    def validate(self) -> None:
        if self.num_negatives < 1:
            raise GenqError("--num-negatives must be at least 1")
        if not 0 <= self.range_min < self.range_max:
            raise GenqError("need 0 <= --range-min < --range-max")
        if self.sampling not in SAMPLING or self.retriever not in RETRIEVERS:
            raise GenqError(f"--sampling is one of {SAMPLING}, --retriever one of {RETRIEVERS}")
        if self.relative_margin is not None and not 0 <= self.relative_margin < 1:
            raise GenqError("--relative-margin must be in [0, 1)")


@dataclass
class MiningSummary:
    output: str
    pairs: int = 0
    negatives: int = 0
    pairs_short_of_negatives: int = 0
    excluded_as_positive_copies: int = 0
    excluded_by_margin: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _text_key(passage: dict) -> bytes:
    return hashlib.blake2b(" ".join(passage["text"].lower().split()).encode(), digest_size=12).digest()


@one_writer("output_path", "pairs file")
def mine_negatives(
    pairs_path: str | Path,
    corpus_path: str | Path,
    output_path: str | Path,
    model: str | Encoder | None = None,
    config: MiningConfig | None = None,
    cache_dir: str | Path | None = None,
    dtype: str = "auto",
    progress: bool = True,
    corpus_vectors: np.ndarray | None = None,
) -> MiningSummary:
    """Write the pairs of ``pairs_path`` with a ``negatives`` list each to ``output_path``.

    ``corpus_vectors``: the corpus already encoded elsewhere (``--ray``), row i = passage i.
    """
    config = config or MiningConfig()
    config.validate()
    started = time.perf_counter()
    pairs_path, output_path = Path(pairs_path), Path(output_path)
    refuse_same_path([pairs_path, corpus_path], output_path)
    passages = load_passages(corpus_path)
    check_pairs_against(iter_pairs(pairs_path), passages, pairs_path, Path(corpus_path))
    retrievers = []
    if config.retriever in ("dense", "both"):
        if model is None:
            raise GenqError("dense mining needs --model (or use --retriever bm25)")
        encoder = model if isinstance(model, Encoder) else Encoder(model, dtype=dtype)
        cache_dir = cache_dir if cache_dir is not None else output_path.parent / ".genq-cache"
        retrievers.append(DenseCorpus(passages, encoder, cache_dir=cache_dir, progress=progress,
                                      vectors=corpus_vectors))
    if config.retriever in ("bm25", "both"):
        retrievers.append(LexicalCorpus(passages, progress=progress))
    row_of = retrievers[0].row_of
    text_keys = [_text_key(p) for p in passages]
    rng = np.random.default_rng(config.seed)
    summary = MiningSummary(str(output_path))

    def candidates_of(retriever, queries: list[str], positives: np.ndarray) -> list[list[int]]:
        """Each query's usable negatives from one retriever, best first (its own score scale for the margin)."""
        if isinstance(retriever, DenseCorpus):
            vectors = retriever.encode_queries(queries)
            scores, rows = retriever.search(vectors, config.range_max)
            positive_scores = retriever.score(vectors, positives)
        else:
            scores, rows = retriever.search(queries, config.range_max)
            positive_scores = retriever.score(queries, positives)
        found = []
        for positive, positive_score, ranked, ranked_scores in zip(positives, positive_scores, rows, scores):
            positive_key = text_keys[positive]
            candidates = []
            for rank, (row, score) in enumerate(zip(ranked, ranked_scores), start=1):
                if rank <= config.range_min or row < 0:
                    continue
                if row == positive or text_keys[row] == positive_key:
                    summary.excluded_as_positive_copies += 1
                    continue
                if config.relative_margin is not None and score > positive_score * (1 - config.relative_margin):
                    summary.excluded_by_margin += 1
                    continue
                candidates.append(int(row))
            found.append(candidates)
        return found

    def mine(batch: list[dict], handle) -> None:
        positives = np.asarray([row_of[p["passage_id"]] for p in batch])
        queries = [p["query"] for p in batch]
        per_retriever = [candidates_of(retriever, queries, positives) for retriever in retrievers]
        for pair, *lists in zip(batch, *per_retriever):
            # "both": dense and BM25 candidates taken in turns (GPL mines with several retrievers), no repeats
            candidates = list(dict.fromkeys(row for group in zip_longest(*lists) for row in group
                                            if row is not None))
            if config.sampling == "random" and len(candidates) > config.num_negatives:
                chosen = sorted(rng.choice(len(candidates), config.num_negatives, replace=False))
                candidates = [candidates[i] for i in chosen]
            else:
                candidates = candidates[:config.num_negatives]
            if len(candidates) < config.num_negatives:
                summary.pairs_short_of_negatives += 1
            pair["negatives"] = [{"passage_id": passages[r]["_id"], "title": passages[r]["title"],
                                  "text": passages[r]["text"]} for r in candidates]
            summary.pairs += 1
            summary.negatives += len(candidates)
            handle.write(dumps_line(pair))

    with atomic_write(output_path) as handle:
        batch: list[dict] = []
        for line, pair in iter_pairs(pairs_path):
            passage_id = str(pair.get("passage_id"))
            if passage_id not in row_of:
                raise DataError(pairs_path, f"passage_id {passage_id!r} is not in {corpus_path}",
                                "mine against the passages file the pairs were generated from", line)
            pair["passage_id"] = passage_id
            batch.append(pair)
            if len(batch) >= config.batch_size:
                mine(batch, handle)
                batch = []
        if batch:
            mine(batch, handle)
    summary.seconds = round(time.perf_counter() - started, 2)
    return summary
