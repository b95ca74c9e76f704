"""Evaluation on a labelled BEIR-layout collection: BM25, base and adapted models side by side.

Each model is searched once, to the candidate depth; its dense run, its hybrid run (fused
with BM25 through the same :func:`genq.retrieval.fuse` that search and serve use) and an
optional alpha sweep are all cut from those candidates, so a sweep costs no extra encoding.

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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genq import __version__
from genq.corpus import iter_passage_file
from genq.encode import Encoder
from genq.io import DataError, GenqError, write_json_atomic
from genq.retrieval import (
    DEFAULT_RERANK_FUSION,
    DenseCorpus,
    Fused,
    LexicalCorpus,
    Reranker,
    check_fusion,
    check_rerank_fusion,
    fuse,
    reorder,
    single,
)

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
    skipped_documents: set[str] = set()
    corpus = list(iter_passage_file(data_dir / "corpus.jsonl", empty_ids=skipped_documents))
    corpus_ids = {p["_id"] for p in corpus}
    from genq.search import read_queries

    queries = dict(read_queries(data_dir / "queries.jsonl"))
    qrels: dict[str, dict[str, int]] = {}
    dropped = naming_empty = 0
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
                naming_empty += query_id in queries and doc_id in skipped_documents
                continue
            qrels.setdefault(query_id, {})[doc_id] = relevance
    if not qrels:
        raise DataError(qrels_path, "no judgement names a known query and document",
                        "check that query and corpus ids match the qrels")
    collection = Collection(corpus, {q: queries[q] for q in qrels}, qrels, str(data_dir), dropped,
                            len(queries) - len(qrels))
    if naming_empty:
        note = (f"{naming_empty} qrels lines name a document with neither title nor text, which genq skipped "
                "(nothing to search in it), and were ignored")
        collection.notes.append(note)
        logger.warning("%s: %s", qrels_path, note)
    if dropped - naming_empty:
        note = f"{dropped - naming_empty} qrels lines name an unknown query or document and were ignored"
        collection.notes.append(note)
        logger.warning("%s: %s", qrels_path, note)
    return collection


# --------------------------------------------------------------------------- systems


Candidates = tuple[np.ndarray, np.ndarray]  # (scores, rows) per query, Faiss-shaped


def _run_from(corpus: list[dict], query_ids: list[str], ranked: list[list[Fused]], k: int = 100) -> Run:
    return {q: {corpus[c.row]["_id"]: float(c.score) for c in candidates[:k]}
            for q, candidates in zip(query_ids, ranked)}


def _single(candidates: Candidates, side: str) -> list[list[Fused]]:
    scores, rows = candidates
    return [single(r, s, side) for r, s in zip(rows, scores)]


def _fused(dense: Candidates, bm25: Candidates, fusion: str, alpha: float) -> list[list[Fused]]:
    return [fuse(dr, ds, br, bs, fusion, alpha) for dr, ds, br, bs in zip(dense[1], dense[0], bm25[1], bm25[0])]


def bm25_candidates(collection: Collection, depth: int = 100, progress: bool = False) -> Candidates:
    """BM25 (bm25s, Lucene variant) with English stemming and stopwords."""
    lexical = LexicalCorpus(collection.corpus, progress=progress)
    return lexical.search([collection.queries[q] for q in collection.queries], depth)


def dense_candidates(collection: Collection, model: str | Encoder, depth: int = 100, progress: bool = False,
                     dtype: str = "auto", batch_size: int = 64, device: str | None = None,
                     cache_dir: str | Path | None = None, reused: list[str] | None = None) -> Candidates:
    """Exact inner-product search with a sentence-transformers model over the collection's corpus.

    With ``cache_dir`` the corpus embeddings are kept there, keyed by the model's weights and
    the corpus content (the cache ``filter`` and ``mine-negatives`` use): a second evaluation of
    the same model (another fusion, an alpha sweep) encodes only the queries. The cache files
    reused are appended to ``reused``.
    """
    encoder = model if isinstance(model, Encoder) else Encoder(model, device=device, dtype=dtype,
                                                               batch_size=batch_size)
    dense = DenseCorpus(collection.corpus, encoder, cache_dir=cache_dir, progress=progress)
    if dense.reused_cache and reused is not None:
        reused.append(str(dense.cache_path))
    return dense.search(dense.encode_queries([collection.queries[q] for q in collection.queries]), depth)


def single_run(collection: Collection, candidates: Candidates, side: str, k: int = 100) -> Run:
    """The run of one retriever's candidates (``side``: "dense" or "bm25")."""
    return _run_from(collection.corpus, list(collection.queries), _single(candidates, side), k)


def bm25_run(collection: Collection, k: int = 100, progress: bool = False) -> Run:
    return single_run(collection, bm25_candidates(collection, k, progress), "bm25", k)


def dense_run(collection: Collection, model: str | Encoder, k: int = 100, progress: bool = False,
              dtype: str = "auto", batch_size: int = 64) -> Run:
    return single_run(collection, dense_candidates(collection, model, k, progress, dtype, batch_size), "dense", k)


def hybrid_run(collection: Collection, dense: Candidates, bm25: Candidates, fusion: str = "minmax",
               alpha: float = 0.5, k: int = 100) -> Run:
    return _run_from(collection.corpus, list(collection.queries), _fused(dense, bm25, fusion, alpha), k)


def index_run(collection: Collection, index_dir: str | Path, k: int = 100, mode: str | None = None,
              fusion: str = "minmax", alpha: float = 0.5) -> Run:
    """Search an existing genq index; passage hits are pooled to documents (max score per doc_id)."""
    from genq.search import Searcher, SearchOptions

    searcher = Searcher.load(index_dir)
    options = SearchOptions(mode=mode, fusion=fusion, alpha=alpha, candidates=max(100, k))
    query_ids = list(collection.queries)
    run: Run = {}
    for start in range(0, len(query_ids), 64):
        batch = query_ids[start:start + 64]
        for query_id, hits in zip(batch, searcher.search_batch([collection.queries[q] for q in batch], k,
                                                               options=options)):
            pooled: dict[str, float] = {}
            for hit in hits:
                doc = hit.doc_id or hit.id
                pooled[doc] = max(pooled.get(doc, -1e9), hit.score)
            run[query_id] = pooled
    known = {d["_id"] for d in collection.corpus}
    foreign = next((doc for pooled in run.values() for doc in pooled if doc not in known), None)
    if foreign is not None:
        raise GenqError(f"the index {index_dir} holds documents the collection does not (e.g. {foreign!r}): its "
                        "scores would mean nothing\n  fix: evaluate an index built from the collection's own "
                        f"corpus ({Path(collection.path) / 'corpus.jsonl'})")
    return run


def rerank_run(collection: Collection, run: Run, reranker: Reranker, depth: int = 50, progress: bool = False,
               fusion: str = "replace", weight: float = 0.5,
               scored: dict[tuple[str, str], float] | None = None) -> Run:
    """The run's top ``depth`` documents per query rescored by the cross-encoder (alone, or blended
    with the run's own scores by ``fusion``); deeper ones follow.

    ``scored`` keeps each (query, document)'s cross-encoder score across calls: reranking BM25
    and a hybrid of the same collection then scores the documents both found once (on whole
    Cranfield their top 100s share 72 documents per query, so 36% fewer pairs get scored).
    """
    from tqdm.auto import tqdm

    scored = {} if scored is None else scored
    documents = {d["_id"]: d for d in collection.corpus}
    reranked: Run = {}
    for query_id in tqdm(list(run), desc="reranking", unit=" queries", disable=not progress, file=sys.stderr):
        ranked = sorted(run[query_id].items(), key=lambda x: (-x[1], x[0]))
        head = [d for d, _ in ranked[:depth]]
        new = [d for d in head if (query_id, d) not in scored]
        if new:
            scores = reranker.score(collection.queries[query_id], [documents[d] for d in new])
            scored.update({(query_id, d): float(s) for d, s in zip(new, scores)})
        order = reorder([d for d, _ in ranked], [scored[(query_id, d)] for d in head], [s for _, s in ranked],
                        fusion, weight)
        # reranked documents score above every deeper one, which keeps their order in trec_eval's sort
        floor = min((s for _, s, _ in order if s is not None), default=0.0)
        reranked[query_id] = {d: (s if s is not None else floor - 1.0 - i) for i, (d, s, _) in enumerate(order)}
    return reranked


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
    hybrid: bool | None = None,
    fusion: str = "minmax",
    alpha: float = 0.5,
    alpha_sweep: list[float] | None = None,
    candidates: int = 100,
    reranker: str | Reranker | None = None,
    rerank_depth: int = 50,
    rerank_systems: list[str] | None = None,
    rerank_label: str = "rerank",
    rerank_fusion: str = DEFAULT_RERANK_FUSION,
    rerank_weight: float = 0.5,
    device: str | None = None,
    cache_dir: str | Path | None = None,
    rerank_generator: str | None = None,
) -> dict:
    """Evaluate every system on the collection; write results.json/.md and a chart if ``output_dir``.

    Rows: BM25, each model (dense), each model fused with BM25 (``hybrid``, on by default
    when ``bm25`` is), each index, and with ``reranker`` each of those reranked (or only
    ``rerank_systems``), named ``<system> + <rerank_label>``; ``rerank_fusion`` and
    ``rerank_weight`` say whether its score replaces each system's or is blended with it.
    ``reranker`` is a cross-encoder, or ``query-likelihood``: log p(query | passage) under
    ``rerank_generator`` (default: the first index's run's generator, else genq's default).
    ``names`` name the BM25, model and index rows in that order; hybrid rows are ``hybrid(<name>)``.
    """
    models, index_dirs = list(models or []), list(index_dirs or [])
    if not (models or bm25 or index_dirs):
        raise GenqError("nothing to evaluate: pass --bm25, --model and/or --index")
    hybrid = (bm25 and bool(models)) if hybrid is None else hybrid
    check_fusion(fusion, alpha)
    check_rerank_fusion(rerank_fusion, rerank_weight)
    for value in alpha_sweep or []:
        check_fusion(fusion, value)
    if candidates < 100:
        raise GenqError("--candidates must be at least 100: the metrics read 100 deep (R@100, MAP@100)")
    if (hybrid or alpha_sweep) and not models:
        raise GenqError("--hybrid and --alpha-sweep fuse a model with BM25: pass at least one --model")
    base_names = list(names or [])
    expected = int(bm25) + len(models) + len(index_dirs)
    if base_names and len(base_names) != expected:
        raise GenqError(f"--name was given {len(base_names)} times for {expected} systems (BM25, models, indexes)")
    if not base_names:
        base_names = (["BM25"] if bm25 else []) + [str(m) for m in models] + [f"index:{d}" for d in index_dirs]
    bm25_name, model_names = (base_names[0] if bm25 else None), base_names[int(bm25):int(bm25) + len(models)]
    index_names = base_names[int(bm25) + len(models):]
    collection = load_collection(data_dir, split)
    if isinstance(reranker, str):
        from genq.search import load_reranker

        reranker = load_reranker(reranker, index_dirs[0] if index_dirs else None, rerank_generator, device, dtype)
    report = {"genq_version": __version__, "collection": collection.path, "split": split,
              "corpus": len(collection.corpus), "queries": len(collection.queries),
              "judgements": sum(len(v) for v in collection.qrels.values()), "notes": collection.notes,
              "settings": {"fusion": fusion, "alpha": alpha, "candidates": candidates,
                           "reranker": reranker.name if reranker else None, "rerank_depth": rerank_depth,
                           "rerank_fusion": rerank_fusion, "rerank_weight": rerank_weight},
              "systems": [], "per_query": {}, "reused_embeddings": {}}
    runs: dict[str, tuple[Run, float]] = {}

    def timed(label: str, make):
        if progress:
            print(f"evaluating {label} ...", file=sys.stderr)
        started = time.perf_counter()
        return make(), time.perf_counter() - started

    lexical: Candidates | None = None
    if bm25 or hybrid or alpha_sweep:
        lexical, seconds = timed("BM25", lambda: bm25_candidates(collection, candidates, progress=False))
        if bm25:
            runs[bm25_name] = (single_run(collection, lexical, "bm25"), seconds)
    dense_by_model: dict[str, Candidates] = {}
    for model, name in zip(models, model_names):
        reused: list[str] = []
        dense, seconds = timed(name, lambda m=model, r=reused: dense_candidates(
            collection, str(m), candidates, progress, dtype, device=device, cache_dir=cache_dir, reused=r))
        if reused:
            report["reused_embeddings"][name] = reused[0]
            if progress:
                print(f"  corpus embeddings of {name} reused from {reused[0]}", file=sys.stderr)
        dense_by_model[name] = dense
        runs[name] = (single_run(collection, dense, "dense"), seconds)
    if hybrid:
        for name, dense in dense_by_model.items():
            run, seconds = timed(f"hybrid({name})", lambda d=dense: hybrid_run(collection, d, lexical, fusion, alpha))
            runs[f"hybrid({name})"] = (run, seconds + runs[name][1])
    for index_dir, name in zip(index_dirs, index_names):
        runs[name] = timed(name, lambda d=index_dir: index_run(collection, d, fusion=fusion, alpha=alpha))
    if reranker is not None:
        unknown = sorted(set(rerank_systems or []) - set(runs))
        if unknown:
            raise GenqError(f"cannot rerank {', '.join(unknown)}: the systems evaluated are {', '.join(runs)}")
        scored: dict[tuple[str, str], float] = {}  # a document two systems found is scored once
        for name in [n for n in runs if rerank_systems is None or n in rerank_systems]:
            label = f"{name} + {rerank_label}"
            run, seconds = timed(label, lambda r=runs[name][0]: rerank_run(collection, r, reranker, rerank_depth,
                                                                           progress, rerank_fusion, rerank_weight,
                                                                           scored))
            runs[label] = (run, seconds + runs[name][1])
    for name, (run, seconds) in runs.items():
        means, per_query = score_run(collection.qrels, run)
        report["systems"].append({"name": name, "metrics": means, "seconds": round(seconds, 2)})
        report["per_query"][name] = per_query
    if alpha_sweep:
        report["alpha_sweep"] = {"fusion": fusion, "alphas": list(alpha_sweep), "ndcg@10": {
            name: [score_run(collection.qrels, hybrid_run(collection, dense, lexical, fusion, a))[0]["ndcg@10"]
                   for a in alpha_sweep] for name, dense in dense_by_model.items()}}
    if output_dir:
        write_report(report, Path(output_dir))
    return report


def parse_alphas(text: str) -> list[float]:
    """'0,0.1,...,1' style lists: explicit values, or a start,step,...,end range with an ellipsis."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        if "..." in parts:
            if parts.index("...") != 2 or len(parts) != 4:
                raise ValueError
            first, second, last = float(parts[0]), float(parts[1]), float(parts[3])
            step = second - first
            if step <= 0:
                raise ValueError
            count = int(round((last - first) / step)) + 1
            return [round(first + i * step, 10) for i in range(count)]
        return [float(p) for p in parts]
    except ValueError:
        raise GenqError(f"cannot read the alpha list {text!r}\n  fix: give values like 0,0.3,0.5 or a range like "
                        "0,0.1,...,1") from None


def format_sweep(report: dict) -> str:
    sweep = report.get("alpha_sweep")
    if not sweep:
        return ""
    names = list(sweep["ndcg@10"])
    width = max(len("alpha"), *(len(n) for n in names))
    lines = [f"nDCG@10 by alpha ({sweep['fusion']} fusion; alpha = share of the dense score)",
             "| " + "alpha".ljust(8) + " | " + " | ".join(n.rjust(width) for n in names) + " |",
             "|" + "-" * 10 + "|" + "|".join("-" * (width + 1) + ":" for _ in names) + "|"]
    for i, alpha in enumerate(sweep["alphas"]):
        values = [sweep["ndcg@10"][n][i] for n in names]
        lines.append("| " + f"{alpha:g}".ljust(8) + " | " + " | ".join(f"{v:.4f}".rjust(width) for v in values)
                     + " |")
    return "\n".join(lines)


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
    if report.get("alpha_sweep"):
        markdown += ["", format_sweep(report)]
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


def chart_label(name: str, width: int = 24) -> str:
    """A system's name short enough for a bar, its role kept: ``hybrid(/runs/a/model) + rerank`` reads
    ``hybrid(a/model)`` over ``+ rerank``, so a hybrid and a dense bar of one model stay apart."""
    import re

    def last_parts(match: re.Match) -> str:  # a path or hub id: its last part (two when the last is generic)
        parts = [p for p in match.group(0).split("/") if p]
        return "/".join(parts[-2:]) if parts and parts[-1] in ("model", "index", "reranker") else parts[-1]

    short = re.sub(r"[^\s()+:]*/[^\s()+:]*", last_parts, name)
    lines = short.replace(" + ", "\n+ ").split("\n")
    return "\n".join(line if len(line) <= width else line[:width // 2 - 1] + "…" + line[-(width - width // 2):]
                     for line in lines)


def _chart(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [chart_label(s["name"]) for s in report["systems"]]
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
