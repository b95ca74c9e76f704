"""Title-only documents and evaluate's embedding cache (issue 28), measured with genq's own CLI.

The shared collections have no title-only documents, so this makes a CACM-like copy of one
(in a temporary folder, never in the repo): every other document keeps its title and loses
its text, as 1,617 of CACM's 3,204 do. Then:

1. ``genq evaluate --bm25 --model all-MiniLM-L6-v2`` by genq before the fix (a git worktree at
   ``--before-commit``) and by genq now: documents evaluated, the notes each printed, nDCG@10.
2. The same ``genq evaluate`` twice more with genq now and one cache folder: the first
   encodes the corpus, the second reuses it; wall time of each, and their ratio.

    python benchmarks/title_only_eval.py --collection cranfield

Writes benchmarks/results/title_only_eval.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_results  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "ir"
RESULTS = ROOT / "benchmarks" / "results"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def title_only_copy(collection: str, target: Path) -> tuple[int, int]:
    """The collection with the text of every other document emptied; (documents, title-only)."""
    source = SHARED / collection
    target.mkdir(parents=True)
    shutil.copy(source / "queries.jsonl", target / "queries.jsonl")
    shutil.copytree(source / "qrels", target / "qrels")
    documents = title_only = 0
    with open(source / "corpus.jsonl", encoding="utf-8") as src, \
            open(target / "corpus.jsonl", "w", encoding="utf-8") as out:
        for line in src:
            record = json.loads(line)
            documents += 1
            if documents % 2 == 0 and record.get("title", "").strip():
                record["text"] = ""
                title_only += 1
            out.write(json.dumps(record) + "\n")
    return documents, title_only


def evaluate(tree: Path, data: Path, output: Path, cache: Path | None) -> tuple[dict, float, str]:
    """One `genq evaluate` run from the genq source at ``tree``: its report, wall seconds and stderr."""
    command = [sys.executable, "-m", "genq", "evaluate", "--eval-data", str(data), "--bm25", "--model", MODEL,
               "--name", "BM25", "--name", "MiniLM", "-o", str(output)]
    if cache is not None:
        command += ["--cache-dir", str(cache)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=tree, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(tree)})
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"genq evaluate failed in {tree}:\n{done.stderr[-3000:]}")
    return json.loads((output / "results.json").read_text()), seconds, done.stderr


def ndcg(report: dict) -> dict[str, float]:
    return {s["name"]: s["metrics"]["ndcg@10"] for s in report["systems"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--collection", default="cranfield")
    parser.add_argument("--before-commit", default="dd84891", help="genq before issue 28")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="genq-title-only-") as work:
        work = Path(work)
        data = work / f"{args.collection}-title-only"
        documents, title_only = title_only_copy(args.collection, data)
        tree = work / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.before_commit],
                       check=True, capture_output=True)
        try:
            before, before_seconds, _ = evaluate(tree, data, work / "eval-before", None)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=True)
        cache = work / "cache"
        first, first_seconds, _ = evaluate(ROOT, data, work / "eval-now-1", cache)
        second, second_seconds, second_log = evaluate(ROOT, data, work / "eval-now-2", cache)
    result = {
        "collection": args.collection, "documents": documents, "title_only_documents": title_only,
        "before": {"commit": args.before_commit, "documents_evaluated": before["corpus"], "notes": before["notes"],
                   "ndcg@10": ndcg(before), "seconds": round(before_seconds, 1)},
        "now": {"documents_evaluated": first["corpus"], "notes": first["notes"], "ndcg@10": ndcg(first)},
        "cache": {"first_seconds": round(first_seconds, 1), "second_seconds": round(second_seconds, 1),
                  "ratio": round(first_seconds / second_seconds, 2),
                  "second_reused": second.get("reused_embeddings", {}),
                  "said": [line for line in second_log.splitlines() if "reused" in line],
                  "same_metrics": ndcg(first) == ndcg(second)},
        "machine": f"{os.cpu_count()} cores",
    }
    systems = list(result["now"]["ndcg@10"])
    lines = [
        "# Title-only documents and evaluate's embedding cache (issue 28)", "",
        f"Command: `python benchmarks/title_only_eval.py --collection {args.collection}`  ",
        f"A copy of {args.collection} in which every other document keeps only its title (as half of CACM does): "
        f"{title_only:,} of {documents:,} documents title-only. `genq evaluate --bm25 --model {MODEL}` by genq "
        f"before the fix ({args.before_commit}) and now.", "",
        "| genq | documents evaluated | " + " | ".join(f"nDCG@10 {s}" for s in systems) + " |",
        "|---|---:|" + "---:|" * len(systems),
        f"| before ({args.before_commit}) | {before['corpus']:,} | "
        + " | ".join(f"{result['before']['ndcg@10'].get(s, float('nan')):.4f}" for s in systems) + " |",
        f"| now | {first['corpus']:,} | " + " | ".join(f"{result['now']['ndcg@10'][s]:.4f}" for s in systems) + " |",
        "", "Notes genq printed before:", "", *([f"- {n}" for n in before["notes"]] or ["- none"]),
        "", "Notes genq prints now:", "", *([f"- {n}" for n in first["notes"]] or ["- none"]), "",
        "## A second evaluation of the same model and corpus", "",
        "| run | wall seconds (whole command: imports, model load, BM25, encoding, search) |", "|---|---:|",
        f"| first (encodes the corpus) | {first_seconds:.1f} |",
        f"| second (reuses the cached corpus embeddings) | {second_seconds:.1f} |", "",
        f"Ratio first / second: {result['cache']['ratio']:.2f}x; same metrics: {result['cache']['same_metrics']}. "
        f"The second run said: `{'; '.join(result['cache']['said']) or 'nothing'}`", "",
    ]
    write_results("title_only_eval", result, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
