"""Filtering synthetic pairs: round-trip consistency and the generator's own score.

* Round trip (Promptagator, Dai et al. 2022): a generated query is kept only if the base
  retriever, searching the whole corpus with it, ranks the query's own passage within the
  top k (and, optionally, scores it above a threshold). Weak generators write many queries
  that do not single out their passage; training on them teaches the model noise.
* Generator score (InPars, Bonifacio et al. 2022): keep the queries the generator itself was
  surest of, by the mean token log-probability recorded while sampling (``--keep-top-share``
  over the whole file, or ``--min-logprob``). No second model pass is needed.

The two combine (a pair must pass both). Either way the label-free quality measure of
:mod:`genq.quality` is taken before and after, over the whole corpus, and reported.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from genq.corpus import check_pairs_against, load_passages
from genq.encode import Encoder
from genq.generation.pairs_file import iter_pairs
from genq.generation.settings import SCORE_FIELD
from genq.io import DataError, GenqError, atomic_write, dumps_line, refuse_same_path, write_json_atomic
from genq.locks import one_writer
from genq.quality import ROUND_TRIP_DEPTHS, QualityReport, QualityTally, Reservoir, own_ranks
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
    keep_top_share: float | None = None
    min_logprob: float | None = None
    logprob_cut: float | None = None  # the lowest generator score kept (with --keep-top-share)
    dropped_by_round_trip: int = 0
    dropped_by_generator_score: int = 0
    seconds: float = 0.0
    dropped_examples: list[dict] = field(default_factory=list)
    quality_before: QualityReport | None = None
    quality_after: QualityReport | None = None

    @property
    def kept_share(self) -> float:
        return self.kept / self.total if self.total else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "kept_share": round(self.kept_share, 4)}


def report_path_for(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name.removesuffix(".jsonl") + ".report.json")


@one_writer("output_path", "filtered pairs file")
def filter_pairs(
    pairs_path: str | Path,
    corpus_path: str | Path,
    model: str | Encoder,
    output_path: str | Path,
    top_k: int | None = 3,
    min_score: float | None = None,
    keep_top_share: float | None = None,
    min_logprob: float | None = None,
    cache_dir: str | Path | None = None,
    batch_size: int = 256,
    dtype: str = "auto",
    progress: bool = True,
    examples: int = 20,
    corpus_vectors: np.ndarray | None = None,
) -> FilterSummary:
    """Keep the pairs that pass the round trip and/or the generator-score cut; write them and a report.

    ``corpus_vectors``: the corpus already encoded elsewhere (``--ray``), row i = passage i.
    """
    if not top_k and min_score is None and keep_top_share is None and min_logprob is None:
        raise GenqError("give --top-k, --min-score, --keep-top-share and/or --min-logprob: with none, nothing "
                        "would be filtered")
    if top_k is not None and top_k < 1:
        raise GenqError("--top-k must be at least 1")
    if keep_top_share is not None and not 0 < keep_top_share <= 1:
        raise GenqError(f"--keep-top-share must be in (0, 1], got {keep_top_share}")
    started = time.perf_counter()
    pairs_path, output_path = Path(pairs_path), Path(output_path)
    refuse_same_path([pairs_path, corpus_path], output_path)
    score_keep, logprob_cut = _generator_score_cut(pairs_path, keep_top_share, min_logprob)
    passages = load_passages(corpus_path)
    check_pairs_against(iter_pairs(pairs_path), passages, pairs_path, Path(corpus_path))
    encoder = model if isinstance(model, Encoder) else Encoder(model, dtype=dtype)
    cache_dir = cache_dir if cache_dir is not None else output_path.parent / ".genq-cache"
    dense = DenseCorpus(passages, encoder, cache_dir=cache_dir, progress=progress, vectors=corpus_vectors)
    summary = FilterSummary(str(output_path), passages_in_corpus=len(passages), top_k=top_k or 0,
                            min_score=min_score, keep_top_share=keep_top_share, min_logprob=min_logprob,
                            logprob_cut=logprob_cut)
    before_tally = QualityTally(encoder.name, len(passages))
    after_tally = QualityTally(encoder.name, len(passages))
    depth = max(top_k or 0, *ROUND_TRIP_DEPTHS)
    before: set[str] = set()
    after: set[str] = set()
    dropped_examples = Reservoir(examples)  # drawn from the whole file, not its start

    def judge(batch: list[tuple[int, dict]], handle) -> None:
        rows = np.asarray([dense.row_of[p["passage_id"]] for _, p in batch])
        vectors = dense.encode_queries([p["query"] for _, p in batch])
        own = dense.score(vectors, rows)
        ranks = own_ranks(dense.search(vectors, depth)[1], rows)
        for (_, pair), own_score, rank in zip(batch, own, ranks):
            in_top = not top_k or (rank is not None and rank < top_k)
            round_trip = in_top and (min_score is None or own_score >= min_score)
            scored_high = score_keep is None or bool(score_keep[summary.total])
            summary.total += 1
            before.add(pair["passage_id"])
            before_tally.add(pair["query"], pair["passage"], rank)
            if round_trip and scored_high:
                summary.kept += 1
                after.add(pair["passage_id"])
                after_tally.add(pair["query"], pair["passage"], rank)
                handle.write(dumps_line(pair))
            else:
                summary.dropped += 1
                summary.dropped_by_round_trip += not round_trip
                summary.dropped_by_generator_score += not scored_high
                dropped_examples.add({"query": pair["query"], "passage_id": pair["passage_id"],
                                      "own_score": round(float(own_score), 4), "in_top_k": in_top,
                                      SCORE_FIELD: pair.get(SCORE_FIELD)})

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
    summary.dropped_examples = dropped_examples.items
    summary.seconds = round(time.perf_counter() - started, 2)
    summary.quality_before = before_tally.finish()
    summary.quality_after = after_tally.finish()
    write_json_atomic(report_path_for(output_path), {
        **summary.to_dict(), "pairs_file": str(pairs_path), "corpus": str(corpus_path),
        "model": encoder.name, "passages_left_without_query": len(before - after)})
    return summary


def _generator_score_cut(pairs_path: Path, keep_top_share: float | None,
                         min_logprob: float | None) -> tuple[np.ndarray | None, float | None]:
    """Which pairs (by line order) pass the generator-score cut, and the lowest score kept; (None, None) if no cut.

    A share is of the whole file, so the scores are read first (a float per pair); ties at
    the cut go to the earlier pair, so exactly ``ceil(share * pairs)`` are kept.
    """
    if keep_top_share is None and min_logprob is None:
        return None, None
    scores = []
    for line, pair in iter_pairs(pairs_path):
        score = pair.get(SCORE_FIELD)
        if not isinstance(score, (int, float)) or isinstance(score, bool):
            raise DataError(pairs_path, f"the pair has no {SCORE_FIELD} (the generator's score of its query)",
                            "score filtering needs pairs from `genq generate` (this version or later): generate "
                            "them again, or filter with the round trip alone (--filter-top-k)", line)
        scores.append(float(score))
    values = np.asarray(scores, dtype=np.float64)
    keep = np.ones(len(values), dtype=bool)
    if min_logprob is not None:
        keep &= values >= min_logprob
    if keep_top_share is not None and len(values):
        order = np.argsort(-values, kind="stable")
        top = np.zeros(len(values), dtype=bool)
        top[order[:int(np.ceil(keep_top_share * len(values)))]] = True
        keep &= top
    cut = float(values[keep].min()) if keep.any() else None
    return keep, cut
