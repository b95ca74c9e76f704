"""Does a generator tuned on its own kept queries feed the bi-encoder better? Rounds, cropping, cross-domain; 3 seeds.

The protocol of whole_collection.py (the corpus is the unlabelled input; queries and qrels only
evaluate; SmolLM2-135M-Instruct offline, 3 queries per passage, round-trip filter top 3, the
bi-encoder all-MiniLM-L6-v2 trained 1 epoch per seed), with the pairs coming from:

- ``round1``: today's generate + filter (the few-shot msmarco prompt);
- ``round2``: round 1's kept pairs tune the generator (`genq train-generator`, zero-shot prompt),
  which generates for every passage again; trained on round 1's and round 2's kept pairs;
- ``round3``: the same again, the generator tuned on both rounds' kept pairs;
  every round's tuning is 100 steps, the fixed cost ``adapt --time-budget`` plans per round (one epoch
  of round 3's ~3,300 pairs would be ~415 steps, ~50 minutes on Cranfield here; rows measured before
  this cap tuned one epoch of their pairs: Cranfield's round 2 100 steps, CISI's 155);
- ``cropped``: `genq crop`, no generator at all; ``generated+cropped``: round 1's kept pairs and the crops;
- ``supervised``: a generator tuned 100 steps on the *other* collection's labelled pairs (`--from-beir`)
  generating for this one, filtered the same way (what a user with a related labelled set gets).

Per row: the funnel (samples, runaways, pairs, kept, kept per sample, distinct queries, the
share of queries opening with the most common three words), the round trip, bi-encoder steps,
each step's wall time, and nDCG@10 (mean, sd over seeds) of adapted and hybrid(adapted), with
paired t-tests against base, hybrid(base) and round 1. Every step is a genq command whose
output is kept under ``--runs-dir``; a rerun skips what exists and continues what was cut off:

    nohup python benchmarks/generator_rounds.py --collections cranfield cisi > rounds.log 2>&1 &

Writes benchmarks/results/generator_rounds.{json,md} after every evaluated seed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import command_line, machine, merged_results, over_seeds, paired_t, write_results  # noqa: E402
from genq.generation.pairs_file import merge_pairs  # noqa: E402
from genq.planning import BUDGET_TUNING_STEPS  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "ir"
BASE = "sentence-transformers/all-MiniLM-L6-v2"
ROWS = ("round1", "round2", "round3", "cropped", "generated+cropped", "supervised")
OTHER = {"cranfield": "cisi", "cisi": "cranfield"}
# Every tuned generator (each self-training round, the supervised row) gets the same steps (100): the fixed
# cost adapt's --time-budget plans before each round and train-generator's floor, so that rows differ in
# what the generator learns from, not in how long. One epoch instead grows with the pairs: round 3's union
# (~3,300 pairs) is ~415 steps, CISI's 3,114 labelled pairs (76 queries, 53 words on average) 390 steps at
# 14 s here, 90 minutes, while 100 steps already show each of those 76 queries to the generator ten times.
GENERATOR_TUNING_STEPS = BUDGET_TUNING_STEPS
NAME = "generator_rounds"
RESULTS_FILE = ROOT / "benchmarks" / "results" / f"{NAME}.json"


def genq(*args: str) -> float:
    """Run one genq command (offline), return its wall seconds."""
    print("$ genq " + " ".join(args), file=sys.stderr, flush=True)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "genq", *args], cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        raise SystemExit(f"genq {args[0]} failed (exit {done.returncode})")
    return round(time.perf_counter() - started, 1)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class Collection:
    """One collection's files under the runs folder, each made once by the genq command that writes it."""

    def __init__(self, name: str, runs_dir: Path):
        self.name, self.dir = name, runs_dir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.corpus = SHARED / name / "corpus.jsonl"
        self.times_file = self.dir / "stage_seconds.json"
        self.times = read_json(self.times_file) or {}

    def step(self, label: str, output: Path, *args: str) -> Path:
        """``genq ARGS`` unless ``output`` is finished; its wall time is kept under ``label``."""
        if not finished(output):
            self.times[label] = self.times.get(label, 0) + genq(*args)
            self.times_file.write_text(json.dumps(self.times, indent=1))
        return output

    def generated(self, label: str, generator: str | None) -> Path:
        pairs = self.dir / f"{label}.pairs.jsonl"
        return self.step(f"generate {label}", pairs, "generate", str(self.corpus), "-o", str(pairs),
                         "--queries-per-passage", "3", *(["--generator", generator] if generator else []))

    def kept(self, label: str, pairs: Path) -> Path:
        kept = self.dir / f"{label}.kept.jsonl"
        return self.step(f"filter {label}", kept, "filter", str(pairs), "--corpus", str(self.corpus), "-o",
                         str(kept), "--filter-top-k", "3", "--base-model", BASE)

    def tuned(self, label: str, *source: str) -> Path:
        output = self.dir / f"generator-{label}"
        record = read_json(output / "genq_training.json")
        if not (record and record.get("complete")):
            self.times[f"tune {label}"] = self.times.get(f"tune {label}", 0) + genq(
                "train-generator", *source, "-o", str(output), "--max-steps", str(GENERATOR_TUNING_STEPS),
                *(["--resume"] if record else []))
            self.times_file.write_text(json.dumps(self.times, indent=1))
        return output

    def union(self, label: str, *files: Path) -> Path:
        """The pairs of ``files`` in one file, each (query, passage) once."""
        output = self.dir / f"{label}.union.jsonl"
        if not output.exists():
            merge_pairs(list(files), output)
        return output

    def training_pairs(self, row: str) -> Path:
        """The pairs file ``row`` trains on, made (with everything it needs) first."""
        if row == "cropped" or row == "generated+cropped":
            crops = self.step("crop", self.dir / "cropped.jsonl", "crop", str(self.corpus), "-o",
                              str(self.dir / "cropped.jsonl"), "--queries-per-passage", "3")
            return crops if row == "cropped" else self.union("generated+cropped", self.training_pairs("round1"), crops)
        if row == "round1":
            return self.kept("round1", self.generated("round1", None))
        if row == "supervised":
            generator = self.tuned("supervised", "--from-beir", str(SHARED / OTHER[self.name]))
            return self.kept("supervised", self.generated("supervised", str(generator)))
        rounds = int(row.removeprefix("round"))
        earlier = [self.kept("round1", self.generated("round1", None))]
        for number in range(2, rounds + 1):
            tuning_pairs = earlier[0] if len(earlier) == 1 else self.union(f"round{number - 1}", *earlier)
            generator = self.tuned(f"round{number}", str(tuning_pairs))
            earlier.append(self.kept(f"round{number}", self.generated(f"round{number}", str(generator))))
        return self.union(row, *earlier)

    def model(self, row: str, seed: int) -> Path:
        pairs = self.training_pairs(row)
        output = self.dir / "models" / f"{row}-{seed}"
        record = read_json(output / "genq_training.json")
        if not (record and record.get("complete")):
            self.times[f"train {row} {seed}"] = genq("train", str(pairs), "-o", str(output), "--train-seed",
                                                     str(seed), "--epochs", "1", *(["--resume"] if record else []))
            self.times_file.write_text(json.dumps(self.times, indent=1))
        return output

    def evaluation(self, row: str, seed: int) -> dict:
        from genq.evaluate import evaluate_systems

        output = self.dir / "eval" / f"{row}-{seed}"
        report = read_json(output / "results.json")
        if report is None:
            model = self.model(row, seed)
            report = evaluate_systems(SHARED / self.name, models=[BASE, str(model)], bm25=True, hybrid=True,
                                      names=["BM25", "base", "adapted"], output_dir=output, progress=True,
                                      cache_dir=self.dir / ".genq-cache")
        return report


def finished(path: Path) -> bool:
    """A genq output that is complete: pairs with their finished meta, or a kept file with its report."""
    if not path.exists():
        return False
    if path.name.endswith(".pairs.jsonl") or path.name == "cropped.jsonl":
        meta = read_json(path.with_name(path.name.removesuffix(".jsonl") + ".meta.json"))
        return bool(meta and meta.get("complete"))
    return True


def funnel(collection: Collection, row: str) -> dict:
    """Where the row's queries came from and went: generation counts, the round trip, the training file."""
    pairs = collection.training_pairs(row)
    queries = [json.loads(line)["query"] for line in pairs.read_text().splitlines()]
    openings = Counter(" ".join(q.lower().split()[:3]) for q in queries)
    training = read_json(collection.dir / "models" / f"{row}-42" / "genq_training.json") or {}
    generated = {}
    label = {"generated+cropped": "round1", "round3": "round3", "round2": "round2"}.get(row, row)
    meta = read_json(collection.dir / f"{label}.pairs.meta.json")
    if meta:
        counts = meta["counts"]
        report = read_json(collection.dir / f"{label}.kept.report.json") or {}
        kept = report.get("kept")
        generated = {"queries_sampled": counts.get("queries_sampled"), "runaway": counts.get("filtered_runaway"),
                     "not_a_query": counts.get("filtered_not_a_query"), "pairs_written": counts.get("pairs"),
                     "passages_without_query": counts.get("passages_without_query"), "kept_by_round_trip": kept,
                     "kept_per_sample": round(kept / counts["queries_sampled"], 3)
                     if kept and counts.get("queries_sampled") else None,
                     "round_trip": (meta.get("quality") or {}).get("round_trip")}
    return {"latest_round": generated, "training_pairs": len(queries), "distinct_queries": len(set(queries)),
            "most_common_opening": openings.most_common(1)[0] if openings else None,
            "most_common_opening_share": round(openings.most_common(1)[0][1] / len(queries), 3) if queries else None,
            "bi_encoder_steps": (training.get("summary") or {}).get("steps")}


SYSTEMS = ("base", "hybrid(base)", "adapted", "hybrid(adapted)")


def per_query_means(seeds: dict[int, dict]) -> dict[str, dict[str, float]]:
    """Each system's nDCG@10 per query, averaged over the seeds: what a paired test needs, kept in the
    results so that a row measured in a later run is tested against round 1 without measuring it again."""
    first = next(iter(seeds.values()))["per_query"]
    return {name: {query: round(statistics.mean(r["per_query"][name][query]["ndcg@10"] for r in seeds.values()), 6)
                   for query in sorted(first[name])} for name in SYSTEMS}


def summarise(collection: Collection, reports: dict[str, dict[int, dict]],
              earlier_per_query: dict[str, dict] | None = None) -> dict:
    """The rows of ``reports`` (row -> seed -> evaluation report); round 1's per-query scores come from
    ``earlier_per_query`` (an earlier run's results) where this run did not measure round 1."""
    def ndcg(report: dict, name: str) -> float:
        return next(s["metrics"]["ndcg@10"] for s in report["systems"] if s["name"] == name)

    per_query = {**(earlier_per_query or {}), **{row: per_query_means(seeds) for row, seeds in reports.items()}}

    def test(row: str, name: str, against_row: str, against_name: str) -> dict:
        scores, baseline = per_query[row][name], per_query[against_row][against_name]
        queries = sorted(set(scores) & set(baseline))
        return paired_t([scores[q] for q in queries], [baseline[q] for q in queries])

    rows, tests = {}, {}
    any_report = next(iter(next(iter(reports.values())).values()))
    for fixed in ("BM25", "base", "hybrid(base)"):
        rows[fixed] = over_seeds([ndcg(any_report, fixed)])
    for row, seeds in reports.items():
        for name in ("adapted", "hybrid(adapted)"):
            rows[f"{row}: {name}"] = {**over_seeds([ndcg(r, name) for r in seeds.values()]), "seeds": list(seeds)}
        tests[f"{row}: adapted vs base"] = test(row, "adapted", row, "base")
        tests[f"{row}: hybrid(adapted) vs hybrid(base)"] = test(row, "hybrid(adapted)", row, "hybrid(base)")
        if row != "round1" and "round1" in per_query:
            for name in ("adapted", "hybrid(adapted)"):
                tests[f"{row} vs round1: {name}"] = test(row, name, "round1", name)
    return {"collection": collection.name, "rows": rows, "tests": tests,
            "funnel": {row: funnel(collection, row) for row in reports}, "stage_seconds": collection.times,
            "per_query": {row: per_query[row] for row in reports}}


def with_provenance(result: dict, ran_on: str, command: str) -> dict:
    """``result`` with each of its rows naming the machine and command that measured it."""
    rows = {name.split(": ")[0] for name in result["rows"] if ": " in name}
    return {**result, "measured_by": {row: {"machine": ran_on, "command": command} for row in rows}}


def merge_rows(kept: dict, measured: dict) -> dict:
    """A collection's results with the rows just measured replacing theirs and the others kept, so that
    ``--rows supervised`` adds a row to the table instead of leaving it with one (its tests against round 1
    use the per-query scores the results keep)."""
    merged = {"collection": measured["collection"]}
    for part in ("rows", "tests", "funnel", "stage_seconds", "measured_by", "per_query"):
        merged[part] = {**(kept.get(part) or {}), **(measured.get(part) or {})}
    return merged


def markdown(results: list[dict], command: str, costs: list[dict] | None = None,
             ran_on: str | None = None) -> list[str]:
    lines = ["# The generator learns the corpus: rounds of self-training, cropping, a cross-domain generator", "",
             f"Command: `{command}`  ",
             f"Machine: {ran_on or machine()}. No hub access: generator SmolLM2-135M-Instruct "
             "(3 queries per passage, round-trip filter top 3; rounds 2 and 3 sample with the generator tuned by "
             "`genq train-generator` on the kept pairs so far: zero-shot prompt, batch 8, 5e-5, "
             f"{GENERATOR_TUNING_STEPS} steps, as `adapt --time-budget` plans a round (round 2 rows measured before "
             "that cap: one epoch, Cranfield 100 steps, CISI 155); the supervised row's generator: the same, "
             f"{GENERATOR_TUNING_STEPS} steps on the other collection's labelled pairs); "
             "bi-encoder all-MiniLM-L6-v2, 1 epoch per seed. Stage seconds are wall times; a machine that was "
             "shared at the time makes them longer.", ""]
    for result in results:
        lines += [f"## {result['collection']}", "", "nDCG@10, mean (sd) over training seeds:", "",
                  "| system | mean | sd | per seed |", "|---|---:|---:|---|"]
        for name, row in result["rows"].items():
            lines.append(f"| {name} | {row['mean']:.4f} | {row['sd']:.4f} | "
                         f"{', '.join(f'{v:.4f}' for v in row['per_seed'])} |")
        lines += ["", "Paired t-tests over queries (each query's nDCG@10 averaged over the seeds):", "",
                  "| comparison | difference | t | p | queries |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {name} | {t['difference']:+.4f} | {t['t']:.3f} | {t['p']:.4f} | {t['queries']} |"
                  for name, t in result["tests"].items()]
        lines += ["", "Funnel (the row's newest generation round; the training file is every round's kept pairs):", "",
                  "| row | sampled | runaway | pairs written | kept | kept per sample | round trip top-1 / top-3 "
                  "| training pairs | distinct | most common opening (share) | bi-encoder steps |",
                  "|---|---:|---:|---:|---:|---:|---|---:|---:|---|---:|"]
        for row, f in result["funnel"].items():
            g = f["latest_round"]
            trip = g.get("round_trip") or {}
            top = f"{trip.get('top1', '-')} / {trip.get('top3', '-')}" if trip else "-"
            opening = f"\"{f['most_common_opening'][0]}\" ({f['most_common_opening_share']:.0%})" \
                if f["most_common_opening"] else "-"
            lines.append(f"| {row} | {g.get('queries_sampled', '-')} | {g.get('runaway', '-')} | "
                         f"{g.get('pairs_written', '-')} | {g.get('kept_by_round_trip', '-')} | "
                         f"{g.get('kept_per_sample', '-')} | {top} | {f['training_pairs']} | "
                         f"{f['distinct_queries']} | {opening} | {f['bi_encoder_steps']} |")
        lines += ["", "Stage wall seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in result["stage_seconds"].items()),
                  ""]
        elsewhere = {row: by for row, by in (result.get("measured_by") or {}).items()
                     if by["machine"] != (ran_on or machine()) or by["command"] != command}
        lines += [f"Row {row} measured on {by['machine']}: `{by['command']}`" for row, by in elsewhere.items()]
        lines += [""] if elsewhere else []
    if costs:
        lines += ["## What a tuning step costs: zero-shot against few-shot prompt", "",
                  f"`{costs[0].get('command', 'python benchmarks/generator_rounds.py --tuning-cost')}` "
                  f"({costs[0].get('machine', 'the machine above')}): SmolLM2 tuned for "
                  f"{costs[0]['steps_per_run']} steps at batch 8 on {costs[0].get('pairs', ROUND1_PAIRS)}, "
                  "the two prompts in "
                  "alternating rounds; seconds per steady step.", "",
                  "| collection | zero-shot s/step | few-shot (msmarco) s/step | tokens per row (zero / few) | ratio |",
                  "|---|---|---|---|---:|"]
        for cost in costs:
            per = cost["seconds_per_step"]
            lines.append(f"| {cost['collection']} | {', '.join(f'{v:.1f}' for v in per['zero-shot'])} | "
                         f"{', '.join(f'{v:.1f}' for v in per['msmarco'])} | {cost['tokens_per_row']['zero-shot']:.0f}"
                         f" / {cost['tokens_per_row']['msmarco']:.0f} | {cost['few_shot_over_zero_shot']:.2f}x |")
        lines.append("")
    return lines


TUNING_PROMPTS = ("zero-shot", "msmarco")
ROUND1_PAIRS = "round 1's kept pairs"
COST_PROBE_STEPS = 6


def tuning_cost(collection: Collection, rounds: int) -> dict:
    """Seconds per tuning step under the zero-shot and the few-shot prompt, alternating.

    On round 1's kept pairs where this machine has them; otherwise on the collection's own labelled
    (query, relevant passage) pairs, which cost a step the same (the prompt and the passage set a row's
    length; a query is a dozen tokens either way) without generating round 1 first (an hour here).
    """
    kept = collection.dir / "round1.kept.jsonl"
    source = [str(kept)] if kept.exists() else ["--from-beir", str(SHARED / collection.name)]
    seconds: dict[str, list[float]] = {prompt: [] for prompt in TUNING_PROMPTS}
    tokens: dict[str, float] = {}
    for number in range(rounds):
        for prompt in TUNING_PROMPTS:
            output = collection.dir / "tuning-cost" / f"{prompt}-{number}"
            if not read_json(output / "genq_training.json"):
                genq("train-generator", *source, "-o", str(output), "--prompt-template", prompt, "--max-steps",
                     str(COST_PROBE_STEPS), "--overwrite")
            summary = read_json(output / "genq_training.json")["summary"]
            seconds[prompt].append(summary["seconds_per_step"])
            tokens[prompt] = summary["input_tokens_mean"]
    mean = {prompt: statistics.mean(values) for prompt, values in seconds.items()}
    return {"collection": collection.name, "steps_per_run": COST_PROBE_STEPS, "seconds_per_step": seconds,
            "pairs": ROUND1_PAIRS if kept.exists() else "the collection's labelled pairs",
            "tokens_per_row": tokens, "few_shot_over_zero_shot": round(mean["msmarco"] / mean["zero-shot"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--collections", nargs="+", default=["cranfield", "cisi"])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "generator-rounds")
    parser.add_argument("--tuning-cost", action="store_true",
                        help="Only measure a tuning step under the zero-shot and the few-shot prompt (2 rounds).")
    parser.add_argument("--round2-generator", action="store_true",
                        help="Only make round 1's kept pairs and the generator tuned on them (generator-round2, what "
                             "query_likelihood.py's tuned row scores with), no round-2 sampling or training.")
    args = parser.parse_args()
    command = command_line()
    if args.round2_generator:
        for name in args.collections:
            collection = Collection(name, args.runs_dir)
            print(collection.tuned("round2", str(collection.kept("round1", collection.generated("round1", None)))))
        return
    if args.tuning_cost:
        costs = [tuning_cost(Collection(name, args.runs_dir), 2) for name in args.collections]
        results = merged_results(RESULTS_FILE, [], key="collection")
        previous = read_json(RESULTS_FILE) or {}
        costs = [{**cost, "machine": machine(), "command": command} for cost in costs]
        write_results(NAME, {**previous, "results": results, "tuning_cost": costs},
                      markdown(results, previous.get("command", command), costs, previous.get("machine")))
        return
    for name in args.collections:
        collection = Collection(name, args.runs_dir)
        reports: dict[str, dict[int, dict]] = {}
        # every row's first seed before any second one, so that each row has a number early
        for seed in args.seeds:
            for row in args.rows:
                reports.setdefault(row, {})[seed] = collection.evaluation(row, seed)
                previous = read_json(RESULTS_FILE) or {}
                kept = next((r for r in previous.get("results", []) if r["collection"] == name), None)
                measured = with_provenance(summarise(collection, reports, (kept or {}).get("per_query")),
                                           machine(), command)
                results = merged_results(RESULTS_FILE, [merge_rows(kept, measured) if kept else measured])
                write_results(NAME, {"machine": previous.get("machine", machine()),
                                     "command": previous.get("command", command), "results": results,
                                     "tuning_cost": previous.get("tuning_cost")},
                              markdown(results, previous.get("command", command), previous.get("tuning_cost"),
                                       previous.get("machine")))


if __name__ == "__main__":
    main()
