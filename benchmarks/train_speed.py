"""Training speed before and after issue 22 (bf16 where native, the model's own length, length-grouped
batches), and whether the faster training loses anything.

Pairs shaped like GenQ's, from Cranfield with no labels: each document's title as the query
and the rest of its text (the title cut off its start) as the passage, every query and
passage distinct. (Cranfield's human pairs are not used: one query there has 36 relevant
documents, and a batch may hold a text once, so an epoch needs 36 batches whatever the
sampler; sentence-transformers' sampler then stops after its promised 10 batches.)
all-MiniLM-L6-v2, MultipleNegativesRankingLoss, batch 64, no text twice in a batch.

1. Seconds per optimizer step for each setting, in alternating rounds on the same pairs:
   before (float32, max_seq_length 350, plain no-duplicates batches), each change alone,
   and all three (genq's defaults now). The median step of each run (its first step, with
   the warm-up, left out); the ratio to "before" is taken within each round.
2. nDCG@10 on all of Cranfield's queries over the whole corpus after the same number of
   steps of "before" and of "after", three training seeds each: mean, sd, and a paired
   t-test over queries (each query's nDCG@10 averaged over the seeds).

    python benchmarks/train_speed.py --rounds 2 --steps 3 --quality-steps 10 --seeds 1 2 3

Writes benchmarks/results/train_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine, write_results  # noqa: E402
from benchmarks.train_cranfield import BASE, SHARED  # noqa: E402
from genq.evaluate import dense_run, load_collection, score_run  # noqa: E402
from genq.hardware import cpu_has_fast_bf16  # noqa: E402
from genq.train import TrainConfig, train_bi_encoder  # noqa: E402

SETTINGS = {  # name: (bf16, max_seq_length, group_by_length)
    "before (fp32, 350, plain)": (False, 350, False),
    "bf16 only": (True, 350, False),
    "model length (256) only": (False, None, False),
    "length-grouped only": (False, 350, True),
    "after (genq defaults)": (None, None, True),
}
BEFORE, AFTER = "before (fp32, 350, plain)", "after (genq defaults)"


def title_pairs(collection_name: str, path: Path) -> int:
    """(title, body) pairs of every document with both: GenQ-shaped, one query per passage, no labels."""
    written = 0
    with open(SHARED / collection_name / "corpus.jsonl", encoding="utf-8") as source, \
            open(path, "w", encoding="utf-8") as out:
        for line in source:
            record = json.loads(line)
            title, text = record.get("title", "").strip(), record.get("text", "").strip()
            body = text[len(title):].strip() if text.startswith(title) else text
            query = title.rstrip(" .")
            if query and len(body.split()) >= 5:
                out.write(json.dumps({"query": query, "passage_id": record["_id"], "passage": body}) + "\n")
                written += 1
    return written


def config_for(name: str, seed: int, **extra) -> TrainConfig:
    bf16, max_seq_length, grouped = SETTINGS[name]
    return TrainConfig(base_model=BASE, batch_size=64, eval_share=0.0, bf16=bf16, max_seq_length=max_seq_length,
                       group_by_length=grouped, seed=seed, save_steps=100_000, device="cpu", **extra)


def step_speed(pairs: Path, work: Path, rounds: int, steps: int) -> dict:
    """Median seconds per step per setting and round; ratios to "before" within each round."""
    per_round: list[dict[str, dict]] = []
    for number in range(rounds):
        names = list(SETTINGS) if number % 2 == 0 else list(reversed(SETTINGS))  # alternate the order
        measured = {}
        for name in names:
            output = work / f"speed-{number}-{len(measured)}"
            summary = train_bi_encoder(pairs, output, config_for(name, seed=1, max_steps=steps), progress=False)
            measured[name] = {"seconds_per_step": summary.seconds_per_step, "padding_share": summary.padding_share,
                              "bf16": summary.bf16, "max_seq_length": summary.max_seq_length}
            print(f"round {number + 1} {name}: {summary.seconds_per_step:.2f} s/step "
                  f"(padding {summary.padding_share:.0%})", file=sys.stderr, flush=True)
        per_round.append(measured)
    table = {}
    for name in SETTINGS:
        seconds = [r[name]["seconds_per_step"] for r in per_round]
        speedups = [r[BEFORE]["seconds_per_step"] / r[name]["seconds_per_step"] for r in per_round]
        table[name] = {**per_round[0][name], "seconds_per_step": [round(s, 3) for s in seconds],
                       "median_seconds_per_step": round(statistics.median(seconds), 3),
                       "speedup_vs_before": round(statistics.mean(speedups), 2),
                       "speedup_per_round": [round(s, 2) for s in speedups]}
    return table


def quality(pairs: Path, test, work: Path, seeds: list[int], steps: int) -> dict:
    from scipy import stats

    base_means, base_per_query = score_run(test.qrels, dense_run(test, BASE))
    results = {"base": {"ndcg@10": base_means["ndcg@10"]}}
    per_query: dict[str, list[dict]] = {}
    for name in (BEFORE, AFTER):
        scores, tables, seconds = [], [], []
        for seed in seeds:
            output = work / f"quality-{name.split()[0]}-{seed}"
            summary = train_bi_encoder(pairs, output, config_for(name, seed=seed, max_steps=steps), progress=False)
            means, table = score_run(test.qrels, dense_run(test, str(output)))
            scores.append(means["ndcg@10"])
            tables.append(table)
            seconds.append(summary.seconds)
            print(f"{name} seed {seed}: nDCG@10 {means['ndcg@10']:.4f} ({summary.steps} steps, "
                  f"{summary.seconds:.0f} s)", file=sys.stderr, flush=True)
        per_query[name] = tables
        results[name] = {"ndcg@10_per_seed": scores, "mean": round(statistics.mean(scores), 4),
                         "sd": round(statistics.stdev(scores), 4) if len(scores) > 1 else 0.0,
                         "steps": summary.steps, "train_seconds_per_seed": seconds}
    queries = sorted(test.qrels)
    before = [statistics.mean(t[q]["ndcg@10"] for t in per_query[BEFORE]) for q in queries]
    after = [statistics.mean(t[q]["ndcg@10"] for t in per_query[AFTER]) for q in queries]
    test_result = stats.ttest_rel(after, before)
    results["paired_t_test"] = {"queries": len(queries), "mean_difference": round(statistics.mean(after) -
                                                                                   statistics.mean(before), 4),
                                "t": round(float(test_result.statistic), 3), "p": round(float(test_result.pvalue), 4)}
    return results


def write(payload: dict) -> None:
    out = ROOT / "benchmarks" / "results"
    speed, quality_result = payload["speed"], payload["quality"]
    lines = ["# Training speed: bf16 where native, the model's own length, length-grouped batches (issue 22)", "",
             f"Command: `{payload['command']}`  ",
             f"CPU: {payload['cpu']}, native bf16 (avx512_bf16/AMX): {payload['fast_bf16']}. "
             f"{payload['train_pairs']} Cranfield (title, body) pairs, all-MiniLM-L6-v2, MNRL, batch 64, "
             "no text twice in a batch.", "",
             f"## Seconds per optimizer step ({payload['rounds']} alternating rounds of {payload['steps']} steps; "
             "median step of each run, the first left out)", "",
             "| setting | precision | max_seq_length | padding share | s/step per round | speed-up vs before |",
             "|---|---|---:|---:|---|---:|"]
    for name, row in speed.items():
        lines.append(f"| {name} | {'bf16' if row['bf16'] else 'fp32'} | {row['max_seq_length']} | "
                     f"{row['padding_share']:.0%} | {', '.join(f'{s:.2f}' for s in row['seconds_per_step'])} | "
                     f"{row['speedup_vs_before']:.2f}x |")
    if quality_result:
        test = quality_result["paired_t_test"]
        lines += ["", f"## nDCG@10 after {payload['quality_steps']} steps, seeds "
                  f"{', '.join(map(str, payload['seeds']))} ({test['queries']} queries, whole corpus)", "",
                  f"Command: `{payload['quality_command']}`", "",
                  "| model | steps | nDCG@10 per seed | mean | sd |", "|---|---:|---|---:|---:|",
                  f"| base (untrained) | - | - | {quality_result['base']['ndcg@10']:.4f} | - |"]
        for name in (BEFORE, AFTER):
            row = quality_result[name]
            lines.append(f"| {name} | {row['steps']} | {', '.join(f'{s:.4f}' for s in row['ndcg@10_per_seed'])} | "
                         f"{row['mean']:.4f} | {row['sd']:.4f} |")
        lines += ["", f"Paired t-test over queries (nDCG@10 averaged over seeds), after - before: "
                  f"{test['mean_difference']:+.4f}, t = {test['t']}, p = {test['p']}.", ""]
    else:
        lines += ["", "nDCG@10 check: not run yet (`--part quality`).", ""]
    write_results("train_speed", payload, "\n".join(lines), out)
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--quality-steps", type=int, default=10, help="training steps of each quality run")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS),
                        help="the step-time settings to compare (before and after always included)")
    parser.add_argument("--part", choices=["speed", "quality", "both"], default="both",
                        help="run one part and keep the other from the last results (each takes long on a CPU)")
    args = parser.parse_args()
    for name in (AFTER, BEFORE):
        if name not in args.settings:
            args.settings.insert(0, name)
    for name in list(SETTINGS):
        if name not in args.settings:
            del SETTINGS[name]
    previous_path = ROOT / "benchmarks" / "results" / "train_speed.json"
    previous = json.loads(previous_path.read_text()) if previous_path.exists() and args.part != "both" else {}
    with tempfile.TemporaryDirectory(prefix="genq-train-speed-") as work:
        work = Path(work)
        pairs = work / "pairs.jsonl"
        train_pairs = title_pairs("cranfield", pairs)
        test = load_collection(SHARED / "cranfield")
        speed = step_speed(pairs, work, args.rounds, args.steps) if args.part != "quality" else previous["speed"]
        quality_result = quality(pairs, test, work, args.seeds, args.quality_steps) if args.part != "speed" else None
    command = shlex.join(["python", "benchmarks/train_speed.py", *sys.argv[1:]])
    payload = {**previous, "cpu": machine(), "fast_bf16": cpu_has_fast_bf16(), "train_pairs": train_pairs,
               "speed": speed, "quality": quality_result or previous.get("quality")}
    if args.part != "quality":
        payload.update(command=command, rounds=args.rounds, steps=args.steps)
    if args.part != "speed":
        payload.update(quality_command=command, seeds=args.seeds, quality_steps=args.quality_steps)
    write(payload)


if __name__ == "__main__":
    main()
