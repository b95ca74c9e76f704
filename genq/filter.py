"""Round-trip consistency filtering of synthetic pairs (Promptagator, Dai et al. 2022).

A generated query is kept only if the base retriever, searching the whole corpus with it,
ranks the query's own passage within the top k (and, optionally, scores it above a
threshold). Weak generators write many queries that do not single out their passage;
training on them teaches the model noise, and measured here it made the model worse than
no training at all. Filtering is what stops that harm.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from genq.corpus import load_passages
from genq.encode import Encoder
from genq.generate import iter_pairs
from genq.io import DataError, GenqError, atomic_write, dumps_line, refuse_same_path, write_json_atomic
from genq.retrieval import DenseCorpus


@dataclass
class FilterSummary:
    output: str
    total: int = 0
    kept: int = 0
    dropped: int = 0
    passages_in_corpus: int = 0
    passages_with_query_before: int = 0
    passages_with_query_after: int = 0
    top_k: int = 3
    min_score: float | None = None
    seconds: float = 0.0
    dropped_examples: list[dict] = field(default_factory=list)

    @property
    def kept_share(self) -> float:
        return self.kept / self.total if self.total else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "kept_share": round(self.kept_share, 4)}


def report_path_for(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name.removesuffix(".jsonl") + ".report.json")


def filter_pairs(
    pairs_path: str | Path,
    corpus_path: str | Path,
    model: str | Encoder,
    output_path: str | Path,
    top_k: int | None = 3,
    min_score: float | None = None,
    cache_dir: str | Path | None = None,
    batch_size: int = 256,
    dtype: str = "auto",
    progress: bool = True,
    examples: int = 20,
    corpus_vectors: np.ndarray | None = None,
) -> FilterSummary:
    """Keep the pairs whose passage the base model retrieves for their query; write them and a report.

    ``corpus_vectors``: the corpus already encoded elsewhere (``--ray``), row i = passage i.
    """
    if not top_k and min_score is None:
        raise GenqError("give --top-k and/or --min-score: with neither, nothing would be filtered")
    if top_k is not None and top_k < 1:
        raise GenqError("--top-k must be at least 1")
    started = time.perf_counter()
    pairs_path, output_path = Path(pairs_path), Path(output_path)
    refuse_same_path([pairs_path, corpus_path], output_path)
    passages = load_passages(corpus_path)
    encoder = model if isinstance(model, Encoder) else Encoder(model, dtype=dtype)
    cache_dir = cache_dir if cache_dir is not None else output_path.parent / ".genq-cache"
    dense = DenseCorpus(passages, encoder, cache_dir=cache_dir, progress=progress, vectors=corpus_vectors)
    summary = FilterSummary(str(output_path), passages_in_corpus=len(passages), top_k=top_k or 0,
                            min_score=min_score)
    before: set[str] = set()
    after: set[str] = set()
    rng = np.random.default_rng(0)
    dropped_pool: list[dict] = []

    def judge(batch: list[tuple[int, dict]], handle) -> None:
        rows = np.asarray([dense.row_of[p["passage_id"]] for _, p in batch])
        vectors = dense.encode_queries([p["query"] for _, p in batch])
        own = dense.score(vectors, rows)
        # with --min-score alone no ranking is needed, so no search is run
        top_rows = dense.search(vectors, top_k)[1] if top_k else [None] * len(batch)
        for (_, pair), row, own_score, ranked in zip(batch, rows, own, top_rows):
            in_top = ranked is None or bool((ranked == row).any())
            keep = in_top and (min_score is None or own_score >= min_score)
            summary.total += 1
            before.add(pair["passage_id"])
            if keep:
                summary.kept += 1
                after.add(pair["passage_id"])
                handle.write(dumps_line(pair))
            else:
                summary.dropped += 1
                example = {"query": pair["query"], "passage_id": pair["passage_id"],
                           "own_score": round(float(own_score), 4), "in_top_k": in_top}
                # reservoir sample, so the examples come from the whole file, not its start
                if len(dropped_pool) < examples:
                    dropped_pool.append(example)
                elif (slot := int(rng.integers(0, summary.dropped))) < examples:
                    dropped_pool[slot] = example

    with atomic_write(output_path) as handle:
        batch: list[tuple[int, dict]] = []
        for line, pair in iter_pairs(pairs_path):
            if str(pair.get("passage_id")) not in dense.row_of:
                raise DataError(pairs_path, f"passage_id {pair.get('passage_id')!r} is not in {corpus_path}",
                                "filter against the passages file the pairs were generated from", line)
            pair["passage_id"] = str(pair["passage_id"])
            batch.append((line, pair))
            if len(batch) >= batch_size:
                judge(batch, handle)
                batch = []
        if batch:
            judge(batch, handle)
    summary.passages_with_query_before = len(before)
    summary.passages_with_query_after = len(after)
    summary.dropped_examples = dropped_pool
    summary.seconds = round(time.perf_counter() - started, 2)
    write_json_atomic(report_path_for(output_path), {
        **summary.to_dict(), "pairs_file": str(pairs_path), "corpus": str(corpus_path),
        "model": encoder.name, "passages_left_without_query": len(before - after)})
    return summary
