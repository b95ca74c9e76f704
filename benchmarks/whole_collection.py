"""Does adaptation pay on whole collections? BM25, base, adapted, hybrids and the adapted reranker, 3 seeds.

For each collection in ../shared/data/ir the corpus is the unlabelled input (queries and
qrels only evaluate). One `genq adapt` run per collection generates for *every* passage
(no --limit, no budget), filters, trains the bi-encoder and the reranker with the first
seed and evaluates; the other seeds train both models again on the same pairs and
negatives. The reranker follows genq's recipe (3 epochs at a constant 5e-5, 256 tokens; one
epoch at a decaying 2e-5 left its new head at the label prior, see genq/train_reranker.py).
Without hub access the generator is SmolLM2-135M-Instruct (with genq's
round-trip filter, top 3) and both models start from all-MiniLM-L6-v2.

Rows: BM25 | base | adapted | hybrid(base) | hybrid(adapted) | BM25 + adapted reranker |
hybrid(adapted) + adapted reranker (reranking depth 100, as InPars-light). Reported: mean
and sd of nDCG@10 over the seeds, and a paired t-test over queries (each query's nDCG@10
averaged over the seeds) between hybrid(base) and the best adapted system.

Everything resumes: the adapt run continues its unfinished stage, a seed's training
continues from its last checkpoint, a seed evaluated already is read back. On two CPU
cores a collection takes one to two hours; run it in the background:

    nohup python benchmarks/whole_collection.py --collections cranfield cisi > whole.log 2>&1 &

Writes benchmarks/results/whole_collection.{json,md} after every collection. ``--runs-dir``
says where the runs live (default ./runs); ``--report-only`` runs nothing and reports the seeds
evaluated so far, marked partial, while a run is still going elsewhere. The stage seconds in the
JSON are wall times of a machine that may have been shared; time_budget.md holds the cost figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine, write_results  # noqa: E402
from benchmarks.rerank_fusion import DEFAULT as BLEND  # noqa: E402
from benchmarks.rerank_fusion import blended_run, cross_scores, first_stages, seed_models  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "ir"
RESULTS = ROOT / "benchmarks" / "results"
BASE = "sentence-transformers/all-MiniLM-L6-v2"
# the reranked rows: the first stage they rerank, and whether the cross-encoder's score replaces its score or is
# blended with it (minmax, the cross-encoder's share 0.5: see rerank_fusion.py)
RERANKED = {"BM25 + adapted reranker": ("BM25", "replace"),
            "hybrid(adapted) + adapted reranker": ("hybrid(adapted)", "replace"),
            "BM25 + adapted reranker (blended)": ("BM25", "minmax"),
            "hybrid(adapted) + adapted reranker (blended)": ("hybrid(adapted)", "minmax")}
SYSTEMS = ("BM25", "base", "adapted", "hybrid(base)", "hybrid(adapted)", *RERANKED)
ADAPTED = ("adapted", "hybrid(adapted)", *RERANKED)


def genq(*args: str) -> None:
    command = [sys.executable, "-m", "genq", *args]
    print("$ genq " + " ".join(args), file=sys.stderr, flush=True)
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        raise SystemExit(f"genq {args[0]} failed (exit {done.returncode})")


def record(directory: Path) -> dict | None:
    try:
        return json.loads((directory / "genq_training.json").read_text())
    except (OSError, ValueError):
        return None


def train_seed(kind: str, pairs: Path, output: Path, seed: int, epochs: str) -> None:
    """Train (or finish training) one model of one seed; a finished one is left as it is."""
    done = record(output)
    if done and done.get("complete"):
        return
    command = "train" if kind == "bi-encoder" else "train-reranker"  # genq's own defaults for everything else
    genq(command, str(pairs), "-o", str(output), "--train-seed", str(seed), "--epochs", epochs,
         *(["--resume"] if done else []))


def evaluate_seed(collection: str, run_dir: Path, seed: int, first_seed: int, reranked: bool = True) -> dict:
    """The first stages from `genq evaluate`, then (``reranked``) the rows from the cross-encoder's kept scores."""
    from genq.evaluate import evaluate_systems

    model, _ = seed_models(run_dir, seed, first_seed)
    output = seed_eval_dir(run_dir, seed, first_seed)
    if (output / "results.json").exists():
        report = json.loads((output / "results.json").read_text())
    else:
        report = evaluate_systems(SHARED / collection, models=[BASE, str(model)], bm25=True, hybrid=True,
                                  names=["BM25", "base", "adapted"], output_dir=output, progress=True,
                                  cache_dir=run_dir / ".genq-cache")
    return with_reranked_rows(collection, report, run_dir, seed, first_seed) if reranked else report


def seed_eval_dir(run_dir: Path, seed: int, first_seed: int) -> Path:
    return run_dir / "eval" if seed == first_seed else run_dir / "seeds" / str(seed) / "eval"


def scores_file(run_dir: Path, seed: int) -> Path:
    return run_dir / "rerank-fusion" / f"seed-{seed}.scores.json"


def with_reranked_rows(collection: str, report: dict, run_dir: Path, seed: int, first_seed: int) -> dict:
    """``report`` with the RERANKED rows, all from one scoring of each (query, candidate) by the seed's reranker.

    The adapt run's own evaluation (the first seed's) reranked with genq's replace rows too;
    they are recomputed here from the same kept scores as the blended ones, so every reranked
    row of every seed comes from the same numbers.
    """
    from genq.evaluate import load_collection, score_run

    labelled = load_collection(SHARED / collection)
    model, reranker = seed_models(run_dir, seed, first_seed)
    stages = first_stages(labelled, model, run_dir / ".genq-cache")
    cross = cross_scores(labelled, reranker, stages, scores_file(run_dir, seed))
    for row, (stage, fusion) in RERANKED.items():
        means, per_query = score_run(labelled.qrels, blended_run(stages[stage], cross, fusion, BLEND[1]))
        report["systems"] = [s for s in report["systems"] if s["name"] != row] + [{"name": row, "metrics": means}]
        report["per_query"][row] = per_query
    return report


def evaluated_so_far(collection: str, run_dir: Path, seeds: list[int]) -> dict[int, dict]:
    """The seeds whose first stages are evaluated, with the reranked rows where its reranker's scores are kept."""
    found = {}
    for seed in seeds:
        results = seed_eval_dir(run_dir, seed, seeds[0]) / "results.json"
        if results.exists():
            found[seed] = evaluate_seed(collection, run_dir, seed, seeds[0], scores_file(run_dir, seed).exists())
    return found


def report_so_far(collection: str, run_dir: Path, seeds: list[int]) -> dict | None:
    """What the finished seeds of an unfinished run say (``--report-only``), marked as partial."""
    if not (run_dir / "manifest.json").exists():
        return None
    reports = evaluated_so_far(collection, run_dir, seeds)
    if not reports:
        return None
    manifest = json.loads((run_dir / "manifest.json").read_text())
    result = summarise(collection, run_dir, manifest, reports, 0.0)
    result["seeds_planned"] = seeds
    return result


def run_collection(collection: str, seeds: list[int], epochs: str, reranker_epochs: str, runs_dir: Path,
                   progress: Callable[[dict], None]) -> dict:
    run_dir = runs_dir / f"whole-{collection}"
    started = time.perf_counter()
    genq("adapt", str(SHARED / collection / "corpus.jsonl"), "-o", str(run_dir), "--queries-per-passage", "3",
         "--epochs", epochs, "--train-seed", str(seeds[0]), "--reranker", "--reranker-epochs", reranker_epochs,
         "--eval-data", str(SHARED / collection))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    pairs = run_dir / manifest["stages"]["train"]["params"]["pairs"]
    reranker_pairs = run_dir / manifest["stages"]["reranker"]["params"]["pairs"]
    # every seed's bi-encoder first (minutes each), then the rerankers (half an hour each on a CPU), so that
    # the bi-encoder rows have all their seeds early; the report is rewritten after every seed
    reports = {}
    for seed in seeds:
        if seed != seeds[0]:
            train_seed("bi-encoder", pairs, seed_models(run_dir, seed, seeds[0])[0], seed, epochs)
        reports[seed] = evaluate_seed(collection, run_dir, seed, seeds[0], reranked=False)
        progress(summarise(collection, run_dir, manifest, reports, time.perf_counter() - started))
    for seed in seeds:
        if seed != seeds[0]:
            train_seed("reranker", reranker_pairs, seed_models(run_dir, seed, seeds[0])[1], seed, reranker_epochs)
        reports[seed] = evaluate_seed(collection, run_dir, seed, seeds[0])
        progress(summarise(collection, run_dir, manifest, reports, time.perf_counter() - started))
    return summarise(collection, run_dir, manifest, reports, time.perf_counter() - started)


def summarise(collection: str, run_dir: Path, manifest: dict, reports: dict[int, dict], seconds: float) -> dict:
    from scipy import stats

    per_seed = {name: {seed: next(s["metrics"]["ndcg@10"] for s in r["systems"] if s["name"] == name)
                       for seed, r in reports.items() if name in r["per_query"]} for name in SYSTEMS}
    rows = {name: {"ndcg@10_per_seed": list(values.values()), "seeds": list(values),
                   "mean": round(statistics.mean(values.values()), 4),
                   "sd": round(statistics.stdev(values.values()), 4) if len(values) > 1 else 0.0}
            for name, values in per_seed.items() if values}
    best = max((name for name in ADAPTED if name in rows), key=lambda name: rows[name]["mean"])
    queries = sorted(next(iter(reports.values()))["per_query"]["hybrid(base)"])

    def averaged(name: str, against: str) -> list[float]:
        """Each query's nDCG@10 over the seeds that have both rows (a reranker may lag its bi-encoder)."""
        shared = [r for r in reports.values() if name in r["per_query"] and against in r["per_query"]]
        return [statistics.mean(r["per_query"][name][q]["ndcg@10"] for r in shared) for q in queries]

    baseline, candidate = averaged("hybrid(base)", best), averaged(best, "hybrid(base)")
    test = stats.ttest_rel(candidate, baseline)
    # the bi-encoder alone: what fine-tuning itself did
    base, adapted = averaged("base", "adapted"), averaged("adapted", "base")
    bi_encoder_test = stats.ttest_rel(adapted, base)
    generate = manifest["stages"]["generate"]["summary"]
    filtered = manifest["stages"].get("filter", {}).get("summary", {})
    return {"collection": collection, "seeds": list(reports), "systems": rows, "best_adapted": best,
            "paired_t_test": {"versus": "hybrid(base)", "system": best, "queries": len(queries),
                              "mean_difference": round(statistics.mean(candidate) - statistics.mean(baseline), 4),
                              "t": round(float(test.statistic), 3), "p": round(float(test.pvalue), 4)},
            "paired_t_test_bi_encoder": {"versus": "base", "system": "adapted", "queries": len(queries),
                                         "mean_difference": round(statistics.mean(adapted) - statistics.mean(base), 4),
                                         "t": round(float(bi_encoder_test.statistic), 3),
                                         "p": round(float(bi_encoder_test.pvalue), 4)},
            "passages": manifest["stages"]["prepare"]["summary"]["passages"],
            "passages_generated_for": generate.get("passages"), "pairs_generated": generate.get("pairs_in_file"),
            "pairs_trained": filtered.get("kept", generate.get("pairs_in_file")),
            "funnel": funnel(run_dir, manifest),
            "reranker_tokens": reranker_tokens(run_dir),
            "stage_seconds": {name: entry.get("seconds") for name, entry in manifest["stages"].items()},
            "seconds_this_invocation": round(seconds, 1)}


def reranker_tokens(run_dir: Path) -> list[int]:
    """The input lengths the seeds' rerankers were read at, from the kept scores (none recorded: 512,
    what genq read every reranker at before it used the trained length)."""
    lengths = set()
    for kept in sorted((run_dir / "rerank-fusion").glob("seed-*.scores.json")):
        try:
            lengths.add(json.loads(kept.read_text()).get("max_length", 512))
        except (OSError, ValueError):
            continue
    return sorted(lengths)


def funnel(run_dir: Path, manifest: dict) -> dict:
    """Where the sampled queries went, from the adapt run's own summaries: what the generator wrote
    that was no query, what the round-trip filter dropped, and how many passages the models saw."""
    stages = manifest["stages"]
    generate = stages["generate"]["summary"]  # this invocation's counts: a resumed run's are partial
    for output in stages["generate"].get("outputs", []):
        meta = run_dir / Path(output).name  # the run directory may have moved since
        if meta.name.endswith(".meta.json") and meta.exists():  # the whole file's counts
            counts = json.loads(meta.read_text()).get("counts", {})
            generate = {**counts, "pairs_in_file": counts.get("pairs")}
    filtered = stages.get("filter", {}).get("summary", {})
    return {"queries_sampled": generate.get("queries_sampled"), "runaway": generate.get("filtered_runaway"),
            "not_a_query": generate.get("filtered_not_a_query"),
            "too_long": (generate["filtered_out"] - generate.get("filtered_runaway", 0)
                         - generate.get("filtered_not_a_query", 0)) if "filtered_out" in generate else None,
            "duplicates": generate.get("duplicates_dropped"),
            "pairs_generated": generate.get("pairs_in_file"),
            "passages_with_a_query": filtered.get("passages_with_query_before"),
            "pairs_after_round_trip": filtered.get("kept"),
            "passages_with_a_kept_query": filtered.get("passages_with_query_after"),
            "bi_encoder_steps": stages.get("train", {}).get("summary", {}).get("steps"),
            "reranker_steps": stages.get("reranker", {}).get("summary", {}).get("steps")}


FUNNEL = {"queries_sampled": "queries sampled", "runaway": "runaway (no query in 32 tokens)",
          "not_a_query": "not a query", "too_long": "longer than 20 words", "duplicates": "duplicates",
          "pairs_generated": "pairs written",
          "passages_with_a_query": "passages with a query", "pairs_after_round_trip": "pairs kept by the round trip",
          "passages_with_a_kept_query": "passages with a kept query", "bi_encoder_steps": "bi-encoder steps",
          "reranker_steps": "reranker steps"}


def funnel_lines(results: list[dict]) -> list[str]:
    shown = [r for r in results if r.get("funnel")]
    if not shown:
        return []
    lines = ["", "Where the synthetic queries went (the adapt run's own counts; the same for every seed):", "",
             "| | " + " | ".join(r["collection"] for r in shown) + " |", "|---|" + "---:|" * len(shown)]
    for key, name in FUNNEL.items():
        lines.append(f"| {name} | " + " | ".join(f"{r['funnel'][key]:,}" if r["funnel"].get(key) is not None
                                                 else "–" for r in shown) + " |")
    return lines


def cell(result: dict, system: str) -> str:
    """mean (sd), and how many seeds when a row has fewer than the collection (a reranker still training)."""
    row = result["systems"].get(system)
    if row is None:
        return "–"
    seeds = len(row.get("seeds", result["seeds"]))
    fewer = f", {seeds} seed{'s' if seeds > 1 else ''}" if seeds < len(result["seeds"]) else ""
    return f"{row['mean']:.4f} ({row['sd']:.4f}{fewer})"


def write(results: list[dict], args) -> None:
    collections = " ".join(r["collection"] for r in results)
    payload = {"machine": machine(), "command": f"python benchmarks/whole_collection.py --collections {collections}"
               " --seeds " + " ".join(map(str, args.seeds)), "results": results}
    lines = ["# Adaptation on whole collections: does it pay?", "",
             f"Command: `{payload['command']}`  ", f"Machine: {payload['machine']}. No hub access: generator "
             "SmolLM2-135M-Instruct (3 queries per passage, round-trip filter top 3); bi-encoder and reranker from "
             "all-MiniLM-L6-v2; bi-encoder 1 epoch, reranker 3 epochs at a constant 5e-5 (genq's recipe); "
             "reranking depth 100 (the reranker's input length: the table below); \"(blended)\": the reranker's score "
             "min-max blended with the first stage's, "
             "half each, instead of replacing it (see rerank_fusion.md).", "",
             "nDCG@10, mean (sd) over training seeds; the generated pairs are the same for every seed.", "",
             "| collection | " + " | ".join(SYSTEMS) + " |", "|---|" + "---:|" * len(SYSTEMS)]
    for r in results:
        lines.append(f"| {r['collection']} | " + " | ".join(cell(r, s) for s in SYSTEMS) + " |")
    lines += ["", "Paired t-test over queries (nDCG@10 of each query averaged over the seeds):", "",
              "| collection | best adapted system | vs hybrid(base) | t | p | queries |",
              "|---|---|---:|---:|---:|---:|"]
    for r in results:
        t = r["paired_t_test"]
        lines.append(f"| {r['collection']} | {t['system']} | {t['mean_difference']:+.4f} | {t['t']} | {t['p']} | "
                     f"{t['queries']} |")
    lines += ["", "The bi-encoder alone, adapted against base (same test):", "",
              "| collection | adapted - base | t | p | queries |", "|---|---:|---:|---:|---:|"]
    for r in results:
        t = r["paired_t_test_bi_encoder"]
        lines.append(f"| {r['collection']} | {t['mean_difference']:+.4f} | {t['t']} | {t['p']} | {t['queries']} |")
    def seeds_of(r: dict, system: str) -> int:
        return len(r["systems"].get(system, {}).get("seeds", [])) if system in r["systems"] else 0

    partial = [r for r in results if any(seeds_of(r, s) < len(r.get("seeds_planned", r["seeds"])) for s in SYSTEMS)]
    if partial:
        lines += ["", "**Partial:** " + "; ".join(
            f"{r['collection']}: bi-encoder rows from {seeds_of(r, 'adapted')} and reranker rows from "
            f"{seeds_of(r, SYSTEMS[-1])} of {len(r.get('seeds_planned', r['seeds']))} seeds so far (the run "
            "continues; rerun the command to finish it)" for r in partial) + ". With one seed the sd is 0 by "
            "construction, and the t-test is over that seed's per-query scores."]
    lines += ["", "| collection | passages | generated for | pairs generated | pairs trained | seeds | "
              "reranker read at (tokens) |", "|---|---:|---:|---:|---:|---|---:|"]
    for r in results:
        tokens = ", ".join(map(str, r.get("reranker_tokens") or [512]))  # reports from before it was recorded: 512
        lines.append(f"| {r['collection']} | {r['passages']:,} | {r['passages_generated_for']:,} | "
                     f"{r['pairs_generated']:,} | {r['pairs_trained']:,} | {', '.join(map(str, r['seeds']))} | "
                     f"{tokens} |")
    lines += funnel_lines(results)
    write_results("whole_collection", payload, "\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--collections", nargs="+", default=["cranfield", "cisi"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    parser.add_argument("--epochs", default="1", help="Bi-encoder epochs.")
    parser.add_argument("--reranker-epochs", default="3", help="Reranker epochs (its new head needs them).")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs", help="Where the adapt runs live.")
    parser.add_argument("--report-only", action="store_true",
                        help="Run nothing: report the seeds evaluated so far (marked partial) and stop.")
    args = parser.parse_args()
    previous = {}
    if (RESULTS / "whole_collection.json").exists():
        previous = {r["collection"]: r for r in json.loads((RESULTS / "whole_collection.json").read_text())["results"]}
    for name, result in previous.items():  # reports from before the funnel was kept: from their run's own counts
        run_dir = args.runs_dir / f"whole-{name}"
        if "funnel" not in result and (run_dir / "manifest.json").exists():
            result["funnel"] = funnel(run_dir, json.loads((run_dir / "manifest.json").read_text()))
    for collection in args.collections:
        if args.report_only:
            partial = report_so_far(collection, args.runs_dir / f"whole-{collection}", args.seeds)
            if partial is not None:
                previous[collection] = partial
        else:
            def so_far(result: dict, collection: str = collection) -> None:
                previous[collection] = {**result, "seeds_planned": args.seeds}
                write(list(previous.values()), args)

            previous[collection] = run_collection(collection, args.seeds, args.epochs, args.reranker_epochs,
                                                  args.runs_dir, so_far)
        write(list(previous.values()), args)  # every collection measured so far, not only these


if __name__ == "__main__":
    main()
