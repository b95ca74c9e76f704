"""How many tokens should the adapted reranker read: the 256 it was trained at, or 512?

genq trains its reranker on (query, passage) cut at 256 tokens, yet until now scored with
every cross-encoder at 512, so a trained reranker read text past anything it saw in
training. This scores each seed's reranker from `whole_collection.py` at both lengths over
the same candidates (BM25's and hybrid(adapted)'s top 100 on the whole collection) and
reports nDCG@10 with the score replacing and blended (genq's minmax, half each), mean (sd)
over the seeds and a paired t-test over queries, plus the speed ratio of the two lengths
measured side by side in alternating rounds over the same queries.

The scores at genq's default length are the ones whole_collection.py and rerank_fusion.py
keep (RUN/rerank-fusion/seed-N.scores.json), so this costs them nothing more; the other
lengths are kept in RUN/rerank-length/seed-N.len-L.json.

    python benchmarks/rerank_length.py --collections cranfield --runs-dir runs --seeds 42 43 44

Writes benchmarks/results/rerank_length.{json,md}.
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
from benchmarks.rerank_fusion import DEFAULT, blended_run, complete, cross_scores, first_stages, seed_models  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "ir"
RESULTS = ROOT / "benchmarks" / "results"
ROWS = {"BM25 + reranker": ("BM25", "replace"), "hybrid(adapted) + reranker": ("hybrid(adapted)", "replace"),
        "BM25 + reranker (blended)": ("BM25", DEFAULT[0]),
        "hybrid(adapted) + reranker (blended)": ("hybrid(adapted)", DEFAULT[0])}


def scores_at(collection, run_dir: Path, seed: int, reranker: Path, stages: dict, length: int | None) -> dict:
    cache = (run_dir / "rerank-fusion" / f"seed-{seed}.scores.json" if length is None
             else run_dir / "rerank-length" / f"seed-{seed}.len-{length}.json")
    cache.parent.mkdir(parents=True, exist_ok=True)
    return cross_scores(collection, reranker, stages, cache, max_length=length)


def speed_ratio(collection, reranker: Path, stages: dict, lengths: list[int], queries: int, rounds: int) -> dict:
    """Seconds per pair at each length over the same BM25 candidates, the lengths taking turns in every
    round (and swapping who goes first), so a slower spell of the machine falls on both."""
    from genq.retrieval import Reranker

    models = {length: Reranker(str(reranker), max_length=length) for length in lengths}
    documents = {d["_id"]: d for d in collection.corpus}
    chosen = list(collection.queries)[:queries]
    seconds = {length: 0.0 for length in lengths}
    pairs = 0
    for round_ in range(rounds):
        for turn, query_id in enumerate(chosen):
            candidates = [documents[d] for d in stages["BM25"][query_id]]
            order = lengths if (round_ + turn) % 2 == 0 else lengths[::-1]
            for length in order:
                started = time.perf_counter()
                models[length].score(collection.queries[query_id], candidates)
                seconds[length] += time.perf_counter() - started
            pairs += len(candidates)
    return {"queries": len(chosen), "rounds": rounds, "pairs_per_length": pairs,
            "seconds": {str(k): round(v, 1) for k, v in seconds.items()},
            "time_ratio_vs_first": {str(k): round(v / seconds[lengths[0]], 3) for k, v in seconds.items()}}


def measure(name: str, run_dir: Path, seeds: list[int], lengths: list[int], speed_queries: int,
            rounds: int) -> dict | None:
    from genq.evaluate import load_collection, score_run

    collection = load_collection(SHARED / name)
    per_query: dict[str, dict[int, dict[str, float]]] = {}  # row @ length -> seed -> query -> nDCG@10
    trained_length, speed = None, None
    for seed in seeds:
        model, reranker = seed_models(run_dir, seed, seeds[0])
        if not (complete(model) and complete(reranker)):
            print(f"{name} seed {seed}: models not finished, skipped", file=sys.stderr)
            continue
        stages = first_stages(collection, model, run_dir / ".genq-cache")
        trained_length = json.loads((reranker / "genq_training.json").read_text())["summary"]["max_length"]
        for length in lengths:
            cross = scores_at(collection, run_dir, seed, reranker, stages,
                              None if length == trained_length else length)
            for row, (stage, fusion) in ROWS.items():
                _, table = score_run(collection.qrels, blended_run(stages[stage], cross, fusion, DEFAULT[1]))
                per_query.setdefault(f"{row} @ {length}", {})[seed] = {q: m["ndcg@10"] for q, m in table.items()}
        if speed is None and speed_queries:
            speed = speed_ratio(collection, reranker, stages, lengths, speed_queries, rounds)
    if not per_query:
        return None
    rows = {}
    for key, by_seed in per_query.items():
        rows[key] = {"seeds": list(by_seed), **over_seeds([statistics.mean(v.values()) for v in by_seed.values()])}
    tests = {}
    for row in ROWS:
        a, b = per_query[f"{row} @ {lengths[0]}"], per_query[f"{row} @ {lengths[1]}"]
        queries = sorted(next(iter(a.values())))
        x = [statistics.mean(a[s][q] for s in a) for q in queries]
        y = [statistics.mean(b[s][q] for s in b) for q in queries]
        tests[f"{row}: {lengths[0]} vs {lengths[1]} tokens"] = paired_t(x, y)
    return {"collection": name, "trained_length": trained_length, "rows": rows, "paired_t_tests": tests,
            "speed": speed}


def write(results: list[dict], command: str) -> None:
    lines = ["# The adapted reranker's input length: as trained (256 tokens) or 512?", "",
             f"Command: `{command}`  ",
             f"Machine: {machine()}. Each seed's own bi-encoder and reranker from `benchmarks/whole_collection.py`; "
             "reranking depth 100; blended: min-max, the cross-encoder's share 0.5.", ""]
    for r in results:
        lines += [f"## {r['collection']} (reranker trained at {r['trained_length']} tokens; rows: system @ input "
                  "tokens)", "", *seed_rows_table(dict(sorted(r["rows"].items()))), "",
                  *paired_tests_table(r["paired_t_tests"])]
        if r["speed"]:
            s = r["speed"]
            lines += ["", f"Speed, one reranker, {s['queries']} queries x {s['rounds']} rounds "
                      f"({s['pairs_per_length']:,} pairs per length, the lengths alternating): time relative to "
                      + ", ".join(f"{k} tokens {v:.2f}" for k, v in s["time_ratio_vs_first"].items()) + "."]
        lines.append("")
    write_results("rerank_length", {"machine": machine(), "command": command,
                                                            "results": results}, "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collections", nargs="+", default=["cranfield"])
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs")
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    parser.add_argument("--lengths", nargs=2, type=int, default=[256, 512])
    parser.add_argument("--speed-queries", type=int, default=20, help="Queries of the speed rounds (0: none).")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    results = [r for name in args.collections
               if (r := measure(name, args.runs_dir / f"whole-{name}", args.seeds, args.lengths, args.speed_queries,
                                args.rounds))]
    results = merged_results(RESULTS / "rerank_length.json", results)  # earlier collections stay
    write(results, "python benchmarks/rerank_length.py --collections " + " ".join(r["collection"] for r in results)
          + " --seeds " + " ".join(map(str, args.seeds)))


if __name__ == "__main__":
    main()
