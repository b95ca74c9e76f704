"""Evaluation on a labelled BEIR-layout collection: BM25, base and adapted models side by side.

Metrics come from pytrec_eval (trec_eval's own code), so figures are comparable with
published ones. Unlike BEIR's ``EvaluateRetrieval.evaluate``, hits whose document id equals
the query id are *kept*: classic collections (Cranfield, CISI) number queries and documents
from 1, and real qrels there name a document with the query's number.
"""

from __future__ import annotations

import csv
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genq import __version__
from genq.corpus import iter_passage_file
from genq.encode import Encoder
from genq.io import DataError, GenqError, write_json_atomic
from genq.retrieval import DenseCorpus, LexicalCorpus

logger = logging.getLogger(__name__)

METRICS = {"ndcg@10": "ndcg_cut_10", "mrr@10": "recip_rank", "recall@100": "recall_100", "map@100": "map_cut_100",
           "p@10": "P_10"}
Run = dict[str, dict[str, float]]


@dataclass
class Collection:
    corpus: list[dict]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    path: str
    dropped_qrels: int = 0
    unjudged_queries: int = 0
    notes: list[str] = field(default_factory=list)


def load_collection(data_dir: str | Path, split: str = "test") -> Collection:
    """Read ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``; check they agree."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(data_dir, "is not a folder", "pass a BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/)")
    qrels_path = data_dir / "qrels" / f"{split}.tsv"
    for path in (data_dir / "corpus.jsonl", data_dir / "queries.jsonl", qrels_path):
        if not path.exists():
            raise DataError(path, "is missing", "a BEIR collection needs corpus.jsonl, queries.jsonl and "
                                                f"qrels/{split}.tsv")
    corpus = list(iter_passage_file(data_dir / "corpus.jsonl"))
    corpus_ids = {p["_id"] for p in corpus}
    from genq.search import read_queries

    queries = dict(read_queries(data_dir / "queries.jsonl"))
    qrels: dict[str, dict[str, int]] = {}
    dropped = 0
    with open(qrels_path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        for line_number, row in enumerate(reader, start=1):
            if not row or (line_number == 1 and row[0] in ("query-id", "query_id", "qid")):
                continue
            if len(row) == 4:  # TREC qrels: qid 0 docid rel
                row = [row[0], row[2], row[3]]
            if len(row) != 3:
                raise DataError(qrels_path, f"expected 3 tab-separated columns, found {len(row)}",
                                "write query-id<TAB>corpus-id<TAB>score", line_number)
            query_id, doc_id, score = row
            try:
                relevance = int(float(score))
            except ValueError:
                raise DataError(qrels_path, f"score {score!r} is not a number", "scores are integers",
                                line_number) from None
            if query_id not in queries or doc_id not in corpus_ids:
                dropped += 1
                continue
            qrels.setdefault(query_id, {})[doc_id] = relevance
    if not qrels:
        raise DataError(qrels_path, "no judgement names a known query and document",
                        "check that query and corpus ids match the qrels")
    collection = Collection(corpus, {q: queries[q] for q in qrels}, qrels, str(data_dir), dropped,
                            len(queries) - len(qrels))
    if dropped:
        collection.notes.append(f"{dropped} qrels lines name an unknown query or document and were ignored")
        logger.warning("%s: %d qrels lines name an unknown query or document and were ignored", qrels_path, dropped)
    return collection


# --------------------------------------------------------------------------- systems


def _run_from(corpus: list[dict], query_ids: list[str], scores, rows) -> Run:
    return {q: {corpus[int(r)]["_id"]: float(s) for r, s in zip(rs, ss) if r >= 0}
            for q, rs, ss in zip(query_ids, rows, scores)}


def bm25_run(collection: Collection, k: int = 100, progress: bool = False) -> Run:
    """BM25 (bm25s, Lucene variant) with English stemming and stopwords."""
    lexical = LexicalCorpus(collection.corpus, progress=progress)
    query_ids = list(collection.queries)
    scores, rows = lexical.search([collection.queries[q] for q in query_ids], k)
    run = _run_from(collection.corpus, query_ids, scores, rows)
    return {q: {d: s for d, s in docs.items() if s > 0} for q, docs in run.items()}


def dense_run(collection: Collection, model: str | Encoder, k: int = 100, progress: bool = False,
              dtype: str = "auto", batch_size: int = 64) -> Run:
    """Exact inner-product search with a sentence-transformers model over the collection's corpus."""
    encoder = model if isinstance(model, Encoder) else Encoder(model, dtype=dtype, batch_size=batch_size)
    dense = DenseCorpus(collection.corpus, encoder, progress=progress)
    query_ids = list(collection.queries)
    scores, rows = dense.search(dense.encode_queries([collection.queries[q] for q in query_ids]), k)
    return _run_from(collection.corpus, query_ids, scores, rows)


def index_run(collection: Collection, index_dir: str | Path, k: int = 100) -> Run:
    """Search an existing genq index; passage hits are pooled to documents (max score per doc_id)."""
    from genq.search import Searcher

    searcher = Searcher.load(index_dir)
    query_ids = list(collection.queries)
    run: Run = {}
    for start in range(0, len(query_ids), 64):
        batch = query_ids[start:start + 64]
        for query_id, hits in zip(batch, searcher.search_batch([collection.queries[q] for q in batch], k)):
            pooled: dict[str, float] = {}
            for hit in hits:
                doc = hit.doc_id or hit.id
                pooled[doc] = max(pooled.get(doc, -1e9), hit.score)
            run[query_id] = pooled
    return run


# --------------------------------------------------------------------------- metrics


def score_run(qrels: dict[str, dict[str, int]], run: Run) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Mean and per-query metrics; MRR is cut at 10 by truncating the run (trec_eval has no recip_rank cut)."""
    import pytrec_eval

    run = {q: run.get(q, {}) for q in qrels}
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100", "map_cut.100", "P.10"})
    per_query = evaluator.evaluate(run)
    top10 = {q: dict(sorted(docs.items(), key=lambda x: (-x[1], x[0]))[:10]) for q, docs in run.items()}
    mrr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    table: dict[str, dict[str, float]] = {}
    for query_id in qrels:
        measures = per_query.get(query_id, {})
        table[query_id] = {name: round(float(measures.get(key, 0.0)), 5) for name, key in METRICS.items()
                           if name != "mrr@10"}
        table[query_id]["mrr@10"] = round(float(mrr.get(query_id, {}).get("recip_rank", 0.0)), 5)
    means = {name: round(float(np.mean([table[q][name] for q in table])), 5) for name in METRICS}
    return means, table


# --------------------------------------------------------------------------- report


def evaluate_systems(
    data_dir: str | Path,
    models: list[str] | None = None,
    bm25: bool = False,
    index_dirs: list[str] | None = None,
    output_dir: str | Path | None = None,
    split: str = "test",
    names: list[str] | None = None,
    dtype: str = "auto",
    progress: bool = True,
) -> dict:
    """Evaluate every system on the collection; write results.json/.md and a chart if ``output_dir``."""
    models, index_dirs = list(models or []), list(index_dirs or [])
    if not (models or bm25 or index_dirs):
        raise GenqError("nothing to evaluate: pass --bm25, --model and/or --index")
    collection = load_collection(data_dir, split)
    systems: list[tuple[str, Callable[[], Run]]] = []
    if bm25:
        systems.append(("BM25", lambda: bm25_run(collection)))
    for model in models:
        systems.append((str(model), lambda m=model: dense_run(collection, str(m), progress=progress, dtype=dtype)))
    for index_dir in index_dirs:
        systems.append((f"index:{index_dir}", lambda d=index_dir: index_run(collection, d)))
    if names:
        if len(names) != len(systems):
            raise GenqError(f"--name was given {len(names)} times for {len(systems)} systems")
        systems = [(n, f) for n, (_, f) in zip(names, systems)]
    report = {"genq_version": __version__, "collection": collection.path, "split": split,
              "corpus": len(collection.corpus), "queries": len(collection.queries),
              "judgements": sum(len(v) for v in collection.qrels.values()), "notes": collection.notes,
              "systems": [], "per_query": {}}
    for name, make_run in systems:
        started = time.perf_counter()
        if progress:
            print(f"evaluating {name} ...", file=sys.stderr)
        run = make_run()
        means, per_query = score_run(collection.qrels, run)
        report["systems"].append({"name": name, "metrics": means, "seconds": round(time.perf_counter() - started, 2)})
        report["per_query"][name] = per_query
    if output_dir:
        write_report(report, Path(output_dir))
    return report


def format_table(report: dict, metrics: tuple[str, ...] = tuple(METRICS)) -> str:
    """A plain-text table for the terminal (also valid Markdown)."""
    width = max([len("system")] + [len(s["name"]) for s in report["systems"]])
    header = "| " + "system".ljust(width) + " | " + " | ".join(m.rjust(10) for m in metrics) + " |"
    rule = "|" + "-" * (width + 2) + "|" + "|".join("-" * 11 + ":" for _ in metrics) + "|"
    lines = [header, rule]
    for system in report["systems"]:
        lines.append("| " + system["name"].ljust(width) + " | "
                     + " | ".join(f"{system['metrics'][m]:.4f}".rjust(10) for m in metrics) + " |")
    return "\n".join(lines)


def write_report(report: dict, output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(output_dir / "results.json", report)
    markdown = [f"# Retrieval evaluation: {report['collection']} ({report['split']})", "",
                f"{report['corpus']:,} documents, {report['queries']:,} judged queries, "
                f"{report['judgements']:,} judgements. genq {report['genq_version']}.", "", format_table(report), ""]
    markdown += [f"- {note}" for note in report["notes"]]
    if len(report["systems"]) >= 2:
        first, last = report["systems"][0]["name"], report["systems"][-1]["name"]
        wins = sum(1 for q, s in report["per_query"][last].items()
                   if s["ndcg@10"] > report["per_query"][first][q]["ndcg@10"])
        losses = sum(1 for q, s in report["per_query"][last].items()
                     if s["ndcg@10"] < report["per_query"][first][q]["ndcg@10"])
        markdown += ["", f"Per query nDCG@10, {last} against {first}: better on {wins}, worse on {losses}, "
                         f"equal on {report['queries'] - wins - losses}."]
    (output_dir / "results.md").write_text("\n".join(markdown) + "\n", encoding="utf-8")
    _chart(report, output_dir / "ndcg10.png")


def _chart(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s["name"] if len(s["name"]) <= 28 else "…" + s["name"][-27:] for s in report["systems"]]
    values = [s["metrics"]["ndcg@10"] for s in report["systems"]]
    figure, axis = plt.subplots(figsize=(max(4, 1.6 * len(names)), 3.6))
    bars = axis.bar(range(len(values)), values, color="#2463eb")
    axis.set_xticks(range(len(values)), names, rotation=15, ha="right", fontsize=8)
    axis.set_ylabel("nDCG@10")
    axis.set_ylim(0, max(values + [0.01]) * 1.2)
    axis.set_title(Path(report["collection"]).name)
    for bar, value in zip(bars, values):
        axis.text(bar.get_x() + bar.get_width() / 2, value, f"{value:.3f}", ha="center", va="bottom", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
