"""Replace or blend? The adapted reranker's score alone against it blended with the first stage's.

On whole Cranfield the reranker trained on SmolLM2's synthetic queries learns the synthetic
task (held-out MRR 0.97) yet drags BM25's top 100 from 0.362 to 0.269 nDCG@10 when its score
replaces BM25's. Interpolating a cross-encoder with the first stage is the standard remedy
when the reranker is weak out of domain (Wang et al. 2021, "BERT-based dense retrievers
require interpolation with BM25"). This measures it on the runs `whole_collection.py` left:
each seed's own bi-encoder and reranker, the first stages BM25 and hybrid(adapted) (top 100).

The cross-encoder scores every (query, candidate) pair once per seed; the scores are kept in
RUN/rerank-fusion/seed-N.scores.json, so the sweep over fusions and weights costs nothing.
The weight is the cross-encoder's share. It is swept here on the test queries, so the best
weight of the sweep is an optimistic figure; genq's default (minmax, 0.5, the hybrid's own
convention) was chosen before this ran, and its row is the one to quote.

    python benchmarks/rerank_fusion.py --collection cranfield --runs-dir runs --seeds 42 43 44

Writes benchmarks/results/rerank_fusion.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    machine,
    merged_results,
    over_seeds,
    paired_t,
    paired_tests_table,
    seed_rows_table,
    write_results,
)

SHARED = ROOT.parent / "shared" / "data" / "ir"
RESULTS = ROOT / "benchmarks" / "results"
BASE = "sentence-transformers/all-MiniLM-L6-v2"
DEPTH = 100
WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT = ("minmax", 0.5)


def seed_models(run_dir: Path, seed: int, first_seed: int) -> tuple[Path, Path]:
    home = run_dir if seed == first_seed else run_dir / "seeds" / str(seed)
    return home / "model", home / "reranker"


def complete(directory: Path) -> bool:
    try:
        return bool(json.loads((directory / "genq_training.json").read_text()).get("complete"))
    except (OSError, ValueError):
        return False


def first_stages(collection, model: Path, cache: Path) -> dict[str, dict[str, dict[str, float]]]:
    """Query -> doc -> score, top DEPTH, for BM25, hybrid(base) and hybrid(adapted)."""
    from genq.evaluate import bm25_candidates, dense_candidates, hybrid_run, single_run

    bm25 = bm25_candidates(collection, DEPTH)
    base = dense_candidates(collection, BASE, DEPTH, cache_dir=cache)
    adapted = dense_candidates(collection, str(model), DEPTH, cache_dir=cache)
    return {"BM25": single_run(collection, bm25, "bm25", DEPTH),
            "hybrid(base)": hybrid_run(collection, base, bm25, k=DEPTH),
            "hybrid(adapted)": hybrid_run(collection, adapted, bm25, k=DEPTH)}


def cross_scores(collection, reranker_dir: Path, stages: dict, cache_file: Path,
                 max_length: int | None = None) -> dict[str, dict[str, float]]:
    """The cross-encoder's logit for every (query, candidate) of the stages it reranks, kept in ``cache_file``
    with the input length it read (``max_length``; None: genq's default, the length it was trained at).
    Scores kept at another length are scored again: before genq read a reranker at its own trained
    length (256) it forced 512, and files from then hold no length (see rerank_length.py)."""
    from tqdm.auto import tqdm

    from genq.io import atomic_write
    from genq.retrieval import Reranker

    reranker = Reranker(str(reranker_dir), max_length=max_length)
    if cache_file.exists():
        kept = json.loads(cache_file.read_text())
        if kept.get("max_length") == reranker.max_length:
            return kept["scores"]
    documents = {d["_id"]: d for d in collection.corpus}
    scores: dict[str, dict[str, float]] = {}
    for query_id in tqdm(list(collection.queries), desc=f"scoring with {reranker_dir}", unit=" queries"):
        wanted = list(dict.fromkeys(d for name in ("BM25", "hybrid(adapted)") for d in stages[name].get(query_id, {})))
        logits = reranker.score(collection.queries[query_id], [documents[d] for d in wanted])
        scores[query_id] = {d: round(float(s), 5) for d, s in zip(wanted, logits)}
    with atomic_write(cache_file) as handle:
        json.dump({"max_length": reranker.max_length, "scores": scores}, handle)
    return scores


def blended_run(first: dict[str, dict[str, float]], cross: dict[str, dict[str, float]], fusion: str,
                weight: float) -> dict[str, dict[str, float]]:
    import numpy as np

    from genq.retrieval import blend_rerank

    run = {}
    for query_id, pooled in first.items():
        docs = list(pooled)
        final = blend_rerank(np.array([pooled[d] for d in docs]), np.array([cross[query_id][d] for d in docs]),
                             fusion, weight)
        run[query_id] = {d: float(s) for d, s in zip(docs, final)}
    return run


def variants() -> list[tuple[str, float | None]]:
    return [("none", None), ("replace", 1.0), *[("minmax", w) for w in WEIGHTS], *[("rrf", w) for w in WEIGHTS]]


def label(stage: str, fusion: str, weight: float | None) -> str:
    if fusion == "none":
        return stage
    if fusion == "replace":
        return f"{stage} + reranker (replace)"
    return f"{stage} + reranker ({fusion}, w={weight})"


def ordering(collection, first: dict[str, dict[str, float]], cross: dict[str, dict[str, float]]) -> dict:
    """How well each score orders the same candidates: the share of (relevant, non-relevant) pairs it
    puts the right way round (AUC), and how often its top candidate is relevant (P@1); over the
    queries with both kinds among the candidates. Says whether the reranker is worse everywhere in
    the list or only at its top."""
    auc = {"first stage": [], "reranker": []}
    top = {"first stage": [], "reranker": []}
    for query_id, pooled in first.items():
        judged = collection.qrels.get(query_id, {})
        relevant = [d for d in pooled if judged.get(d, 0) > 0]
        other = [d for d in pooled if judged.get(d, 0) <= 0]
        if not relevant or not other:
            continue
        for name, scores in (("first stage", pooled), ("reranker", cross[query_id])):
            auc[name].append(statistics.mean(float(scores[a] > scores[b]) for a in relevant for b in other))
            top[name].append(float(judged.get(max(pooled, key=lambda d: scores[d]), 0) > 0))
    return {"queries": len(auc["reranker"]),
            **{f"auc {name}": round(statistics.mean(values), 4) for name, values in auc.items()},
            **{f"P@1 {name}": round(statistics.mean(values), 4) for name, values in top.items()}}


def measure_seed(collection, run_dir: Path, seed: int, first_seed: int) -> tuple[dict, dict] | None:
    """Per-query nDCG@10 of every variant for one seed and the ordering diagnostics over BM25's
    candidates, or None when its models are not finished."""
    from genq.evaluate import score_run

    model, reranker = seed_models(run_dir, seed, first_seed)
    if not (complete(model) and complete(reranker)):
        return None
    stages = first_stages(collection, model, run_dir / ".genq-cache")
    cross = cross_scores(collection, reranker, stages, run_dir / "rerank-fusion" / f"seed-{seed}.scores.json")
    per_query = {}
    for stage in ("BM25", "hybrid(adapted)"):
        for fusion, weight in variants():
            run = stages[stage] if fusion == "none" else blended_run(stages[stage], cross, fusion, weight)
            _, table = score_run(collection.qrels, run)
            per_query[label(stage, fusion, weight)] = {q: m["ndcg@10"] for q, m in table.items()}
    _, table = score_run(collection.qrels, stages["hybrid(base)"])
    per_query["hybrid(base)"] = {q: m["ndcg@10"] for q, m in table.items()}
    return per_query, ordering(collection, stages["BM25"], cross)


def summarise(collection_name: str, seeds: dict[int, dict[str, dict[str, float]]],
              diagnostics: dict[int, dict]) -> dict:
    names = list(next(iter(seeds.values())))
    queries = sorted(next(iter(seeds.values()))["hybrid(base)"])
    rows = {}
    for name in names:
        rows[name] = over_seeds([statistics.mean(per_query[name].values()) for per_query in seeds.values()])

    def averaged(name: str) -> list[float]:
        return [statistics.mean(per_query[name][q] for per_query in seeds.values()) for q in queries]

    tests = {}
    default_rows = [label(stage, *DEFAULT) for stage in ("BM25", "hybrid(adapted)")]
    for name, versus in [(default_rows[0], "BM25"), (default_rows[1], "hybrid(adapted)"),
                         (default_rows[1], "hybrid(base)"), (label("BM25", "replace", 1.0), "BM25")]:
        tests[f"{name} vs {versus}"] = paired_t(averaged(name), averaged(versus))
    return {"collection": collection_name, "seeds": list(seeds), "rows": rows, "paired_t_tests": tests,
            "ordering_over_bm25_top_100": diagnostics}


def write(results: list[dict], command: str) -> None:
    lines = ["# Reranking: replace the first stage's score, or blend with it?", "",
             f"Command: `{command}`  ",
             f"Machine: {machine()}. Each seed's own adapted bi-encoder and reranker from "
             "`benchmarks/whole_collection.py` (SmolLM2 queries, all-MiniLM-L6-v2 starts); reranking depth "
             f"{DEPTH}; w is the cross-encoder's share. genq's default blend ({DEFAULT[0]}, w={DEFAULT[1]}) was "
             "fixed before this ran; the rest of the sweep is on the test queries, so its best row is optimistic.",
             ""]
    for result in results:
        lines += [f"## {result['collection']} (seeds {', '.join(map(str, result['seeds']))})", ""]
        lines += seed_rows_table(result["rows"], bold=lambda name: DEFAULT[0] in name and f"w={DEFAULT[1]}" in name)
        lines += ["", *paired_tests_table(result["paired_t_tests"])]
        lines += ["", f"Why: how each score orders the same candidates (BM25's top {DEPTH}, queries with relevant "
                  "and non-relevant passages among them). AUC: share of (relevant, non-relevant) pairs the right "
                  "way round; P@1: top candidate relevant.", "",
                  "| seed | queries | AUC BM25 | AUC reranker | P@1 BM25 | P@1 reranker |",
                  "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {seed} | {d['queries']} | {d['auc first stage']:.3f} | {d['auc reranker']:.3f} | "
                  f"{d['P@1 first stage']:.3f} | {d['P@1 reranker']:.3f} |"
                  for seed, d in result["ordering_over_bm25_top_100"].items()]
        lines.append("")
    write_results("rerank_fusion", {"machine": machine(), "command": command,
                                                            "depth": DEPTH, "default": DEFAULT,
                                                            "results": results}, "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collections", nargs="+", default=["cranfield"])
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs")
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    args = parser.parse_args()
    from genq.evaluate import load_collection

    results = []
    for name in args.collections:
        started = time.perf_counter()
        collection = load_collection(SHARED / name)
        run_dir = args.runs_dir / f"whole-{name}"
        seeds, diagnostics = {}, {}
        for seed in args.seeds:
            measured = measure_seed(collection, run_dir, seed, args.seeds[0])
            if measured is None:
                print(f"{name} seed {seed}: models not finished, skipped", file=sys.stderr)
                continue
            seeds[seed], diagnostics[seed] = measured
        if seeds:
            results.append(summarise(name, seeds, diagnostics))
            print(f"{name}: {len(seeds)} seeds in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    results = merged_results(RESULTS / "rerank_fusion.json", results)  # earlier collections stay
    write(results, "python benchmarks/rerank_fusion.py --collections " + " ".join(r["collection"] for r in results)
          + " --seeds " + " ".join(map(str, args.seeds)))


if __name__ == "__main__":
    main()
