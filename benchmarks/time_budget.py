"""`genq adapt --time-budget` on a whole labelled collection: does each run land within 10% of its
budget, and what does a budget buy?

For each budget, one `genq adapt` of the whole corpus (the collection's corpus.jsonl is the
input; queries and qrels are used only to evaluate), with genq's defaults on this machine:
without hub access that is SmolLM2 with the round-trip filter. The run directories live in
`runs/` (not committed), so an interrupted benchmark continues where it stopped: rerunning
this command resumes the unfinished run with its recorded plan. Wall time counts only the
invocation that finished the run; a resumed run is marked as such.

    python benchmarks/time_budget.py --collection cranfield --budgets 20m 60m

Writes benchmarks/results/time_budget.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_results  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "ir"
RESULTS = ROOT / "benchmarks" / "results"
SYSTEMS = ("BM25", "base", "adapted", "hybrid(base)", "hybrid(adapted)")


def run_budget(collection: str, budget: str, fresh: bool) -> dict:
    run_dir = ROOT / "runs" / f"budget-{collection}-{budget}"
    if fresh and run_dir.exists():  # this benchmark's own run directory: a rerun measures a whole run again
        shutil.rmtree(run_dir)
    resumed = (run_dir / "manifest.json").exists()
    command = [sys.executable, "-m", "genq", "adapt", str(SHARED / collection / "corpus.jsonl"), "-o", str(run_dir),
               "--time-budget", budget, "--eval-data", str(SHARED / collection)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True,
                          text=True)
    wall = time.perf_counter() - started
    if run_dir.exists():
        (run_dir / "benchmark.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"genq adapt failed for {budget}:\n{done.stderr[-3000:]}")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    plan = manifest["stages"]["plan"]["summary"]
    report = json.loads((run_dir / "eval" / "results.json").read_text())
    stage_seconds = {name: entry.get("seconds") for name, entry in manifest["stages"].items()}
    return {"budget": budget, "budget_seconds": plan["plan"]["budget_seconds"], "wall_seconds": round(wall, 1),
            "resumed": resumed, "plan": plan["plan"], "rates": plan["rates"],
            "plan_vs_actual": manifest.get("plan_vs_actual"), "stage_seconds": stage_seconds,
            "train_steps": manifest["stages"]["train"]["summary"]["steps"],
            "train_stopped_at_time_limit": manifest["stages"]["train"]["summary"].get("stopped_at_time_limit", False),
            "pairs_trained": manifest["stages"]["train"]["summary"]["train_pairs"],
            "ndcg@10": {s["name"]: s["metrics"]["ndcg@10"] for s in report["systems"]},
            "command": " ".join(["genq", *command[3:]])}


def write(collection: str, rows: list[dict], machine: str) -> None:
    lines = [f"# `genq adapt --time-budget` on the whole of {collection}", "",
             f"Command: `python benchmarks/time_budget.py --collection {collection} --budgets "
             f"{' '.join(r['budget'] for r in rows)}`  ",
             f"Machine: {machine}. No hub access: generator SmolLM2-135M-Instruct with the round-trip filter "
             "(top 3); base model all-MiniLM-L6-v2.", "",
             "| budget | wall time | vs budget | passages generated for | queries each | pairs trained | steps | "
             "rates: passages/s generating, s/step training |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        plan, rates = r["plan"], r["rates"]
        lines.append(f"| {r['budget']} | {r['wall_seconds'] / 60:.1f} min{' (resumed)' if r['resumed'] else ''} | "
                     f"{r['wall_seconds'] / r['budget_seconds']:.0%} | {plan['passages']:,} of "
                     f"{plan['passages_total']:,} | {plan['queries_per_passage']} | {r['pairs_trained']:,} | "
                     f"{r['train_steps']:,}{' (time limit)' if r.get('train_stopped_at_time_limit') else ''} | "
                     f"{1 / rates['generate_seconds_per_passage']:.2f}, "
                     f"{rates['train_seconds_per_step']:.1f} |")
    lines += ["", "Estimate against actual, per stage (seconds):", "",
              "| budget | " + " | ".join(("plan", "generate", "filter", "train", "index", "evaluate")) + " |",
              "|---|" + "---:|" * 6]
    for r in rows:
        stages = (r["plan_vs_actual"] or {}).get("stages", {})
        cells = [f"{r['stage_seconds'].get('plan') or 0:.0f}"]
        for name in ("generate", "filter", "train", "index", "evaluate"):
            row = stages.get(name)
            cells.append(f"{row['estimate']:.0f} / {row['actual']:.0f}" if row else "-")
        lines.append(f"| {r['budget']} | " + " | ".join(cells) + " |")
    lines += ["", "nDCG@10 on the collection's test queries, whole corpus:", "",
              "| budget | " + " | ".join(SYSTEMS) + " |", "|---|" + "---:|" * len(SYSTEMS)]
    for r in rows:
        lines.append(f"| {r['budget']} | " + " | ".join(f"{r['ndcg@10'].get(s, float('nan')):.4f}" for s in SYSTEMS)
                     + " |")
    lines.append("")
    write_results("time_budget", {"collection": collection, "machine": machine,
                                                          "runs": rows}, "\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--collection", default="cranfield")
    parser.add_argument("--budgets", nargs="+", default=["20m", "60m"])
    parser.add_argument("--rerun", action="store_true", help="run budgets whose results are already recorded again")
    args = parser.parse_args()
    names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
             if line.startswith("model name")]
    machine = f"{names[0] if names else 'CPU'}, {os.cpu_count()} cores"
    previous = {}
    if (RESULTS / "time_budget.json").exists():
        previous = {r["budget"]: r for r in json.loads((RESULTS / "time_budget.json").read_text())["runs"]}
    rows = []
    for budget in args.budgets:
        if budget in previous and not args.rerun:
            print(f"{budget}: recorded already (--rerun runs it again)", file=sys.stderr)
            continue
        rows.append(run_budget(args.collection, budget, fresh=args.rerun))
        previous[budget] = rows[-1]
        write(args.collection, [previous[b] for b in args.budgets if b in previous], machine)  # after every run


if __name__ == "__main__":
    main()
