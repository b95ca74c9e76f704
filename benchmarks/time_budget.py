"""`genq adapt --time-budget` on a whole labelled collection: does each run land within 10% of its
budget, and what does a budget buy?

For each budget, one `genq adapt` of the whole corpus (the collection's corpus.jsonl is the
input; queries and qrels are used only to evaluate), with genq's defaults on this machine:
without hub access that is SmolLM2 with the round-trip filter. The run directories live in
`runs/` (not committed), so an interrupted benchmark continues where it stopped: rerunning
this command resumes the unfinished run with its recorded plan. Wall time counts only the
invocation that finished the run; a resumed run is marked as such.

    python benchmarks/time_budget.py --collection cranfield --budgets 20m 60m

``--short`` measures what a budget of a few minutes buys, where the fixed costs (loading and
measuring) are most of it: the README's sample and the first 300 Cranfield passages, no
evaluation, each budget run under one or more conditions, in this order:

* ``first``: an empty genq cache (``GENQ_CACHE_DIR`` of the benchmark's own): nothing measured
  yet, the GGUF generator not yet de-quantised; what a new user's first run pays;
* ``second``: the same command again in a new run directory, the cache as ``first`` left it
  (rates kept, generator converted);
* ``loaded``: as ``second``, with a second CPU-bound process (a Python busy loop, one core)
  running throughout: the kept rates were measured on an idle machine.

    python benchmarks/time_budget.py --short --corpora sample cranfield300 --budgets 2m 3m 4m 10m \
        --conditions first second loaded

Writes benchmarks/results/time_budget.{json,md}: the whole-collection runs and the short ones.
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

from benchmarks.common import machine as common_machine  # noqa: E402
from benchmarks.common import write_results  # noqa: E402
from genq.durations import parse_duration  # noqa: E402

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


SHORT_WORK = ROOT / "runs" / "short-budgets"
SHORT_CONDITIONS = ("first", "second", "loaded")


def short_corpus(name: str) -> Path:
    """The README's sample, or the first 300 passages of Cranfield (written once into the benchmark's folder)."""
    if name == "sample":
        return ROOT / "data" / "bike-maintenance.jsonl"
    path = SHORT_WORK / f"{name}.jsonl"
    if not path.exists():
        SHORT_WORK.mkdir(parents=True, exist_ok=True)
        with (SHARED / "cranfield" / "corpus.jsonl").open() as source:
            lines = [line for _, line in zip(range(300), source)]
        path.write_text("".join(lines))
    return path


def run_short(corpus: str, budget: str, condition: str) -> dict:
    """One `genq adapt --time-budget` of a short corpus: wall time against the budget, and where the time went."""
    cache = SHORT_WORK / f"cache-{corpus}-{budget}"
    if condition == "first" and cache.exists():  # the benchmark's own cache: a first run starts from nothing
        shutil.rmtree(cache)
    run_dir = SHORT_WORK / f"{corpus}-{budget}-{condition}"
    if run_dir.exists():  # the benchmark's own run directory: every row is a whole run
        shutil.rmtree(run_dir)
    command = [sys.executable, "-m", "genq", "adapt", str(short_corpus(corpus)), "-o", str(run_dir),
               "--time-budget", budget]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GENQ_CACHE_DIR": str(cache)}
    load = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if condition == "loaded" else None
    try:
        started = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
    finally:
        if load is not None:
            load.kill()
            load.wait()
    log = done.stdout + done.stderr
    SHORT_WORK.mkdir(parents=True, exist_ok=True)
    (SHORT_WORK / f"{corpus}-{budget}-{condition}.log").write_text(log)
    row = {"corpus": corpus, "budget": budget, "condition": condition, "wall_seconds": round(wall, 1),
           "machine": common_machine(),
           "exit_code": done.returncode, "command": " ".join(["genq", *command[3:]])}
    manifest_path = run_dir / "manifest.json"
    if done.returncode != 0 or not manifest_path.exists():
        row["refused"] = next((line.strip() for line in reversed(log.splitlines()) if "fix:" in line), "") or \
            log.strip().splitlines()[-1][:300]
        return row
    manifest = json.loads(manifest_path.read_text())
    stages = manifest["stages"]
    plan = stages["plan"]["summary"]
    row.update({
        "budget_seconds": plan["plan"]["budget_seconds"],
        "stage_seconds": {name: entry.get("seconds") for name, entry in stages.items()},
        "passages_generated": stages["generate"]["summary"].get("passages_generated"),
        "passages_total": plan["plan"]["passages_total"],
        "pairs_trained": stages["train"]["summary"]["train_pairs"],
        "train_steps": stages["train"]["summary"]["steps"],
        **step_rates(manifest),
        "rates_reused": "reused" in log and "measuring generation" not in log,
        "probe_passages_kept": next((int(line.split()[0].replace(",", "")) for line in log.splitlines()
                                     if "taken from the plan's probe" in line), 0),
        "too_little_note": next((line.strip().removeprefix("note: ") for line in log.splitlines()
                                 if "training step" in line and "buys" in line), None)})
    return row


def step_rates(manifest: dict) -> dict:
    """The training step's seconds as planned and as the run's steps took.

    Planned is the re-plan's per-step estimate where training was re-planned (it costs the batch the pairs
    fill), else the plan's full-batch rate.
    """
    stages = manifest["stages"]
    planned = stages["plan"]["summary"]["rates"]["train_seconds_per_step"]
    replanned = manifest.get("replanned_training") or {}
    if replanned.get("step_seconds"):
        planned = replanned["step_seconds"]
    return {"step_seconds_planned": round(planned, 2),
            "step_seconds_actual": stages["train"]["summary"].get("seconds_per_step")}


def cpu_of(row: dict) -> str:
    """Whether the row's CPU does bf16 natively: the last part of its machine label."""
    return row["machine"].rsplit(", ", 1)[-1]


def seconds(value: float | None) -> str:
    """A rate to one decimal, or a dash where an older row did not record it."""
    return "–" if value is None else f"{value:.1f}"


def short_section(rows: list[dict]) -> list[str]:
    lines = ["## Short budgets", "",
             "Command: `python benchmarks/time_budget.py --short --corpora sample cranfield300 --budgets 2m 3m 4m "
             "10m --conditions first second loaded` (the conditions: see the script's docstring). No evaluation; "
             "planning = the `prepare` and `plan` stages (loading, de-quantising the generator on a first run, "
             "measuring). Machines: " + "; ".join(sorted({r["machine"] for r in rows})) + " (the CPU column: "
             "which one ran the row; float32 where there is no AVX512-BF16).", "",
             "| corpus | budget | run | CPU | wall time | vs budget | planning (share of budget) | "
             "passages generated | of which the probe's | pairs trained | steps | s/step planned / actual |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        head = f"| {r['corpus']} | {r['budget']} | {r['condition']} | {cpu_of(r)} | {r['wall_seconds']:.0f} s | "
        if r.get("refused") is not None:
            lines.append(head + f"refused before any slow stage: {r['refused']} | | | | | | | |")
            continue
        planning = (r["stage_seconds"].get("prepare") or 0) + (r["stage_seconds"].get("plan") or 0)
        lines.append(head + f"{r['wall_seconds'] / r['budget_seconds']:.0%} | {planning:.0f} s "
                     f"({planning / r['budget_seconds']:.0%}) | {r['passages_generated']:,} of "
                     f"{r['passages_total']:,} | {r['probe_passages_kept']} | {r['pairs_trained']:,} | "
                     f"{r['train_steps']}{' (rates reused)' if r['rates_reused'] else ''} | "
                     f"{seconds(r.get('step_seconds_planned'))} / {seconds(r.get('step_seconds_actual'))} |")
    notes = [f"{r['corpus']} {r['budget']} {r['condition']} ({cpu_of(r)}): {r['too_little_note']}"
             for r in rows if r.get("too_little_note")]
    if notes:
        lines += ["", "What genq said of the budgets that buy too little:", ""] + [f"- {note}" for note in notes]
    return lines + [""]


def write(collection: str, rows: list[dict], machine: str, short_rows: list[dict] | None = None) -> None:
    if short_rows is None and (RESULTS / "time_budget.json").exists():
        short_rows = json.loads((RESULTS / "time_budget.json").read_text()).get("short_runs", [])
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
    if short_rows:
        lines += short_section(short_rows)
    write_results("time_budget", {"collection": collection, "machine": machine, "runs": rows,
                                  "short_runs": short_rows or []}, "\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--collection", default="cranfield")
    parser.add_argument("--budgets", nargs="+", help="default: 20m 60m; with --short: 2m 3m 4m 10m")
    parser.add_argument("--rerun", action="store_true", help="run budgets whose results are already recorded again")
    parser.add_argument("--short", action="store_true", help="the short-budget runs (see above) instead")
    parser.add_argument("--corpora", nargs="+", default=["sample", "cranfield300"], choices=["sample", "cranfield300"])
    parser.add_argument("--conditions", nargs="+", default=list(SHORT_CONDITIONS), choices=SHORT_CONDITIONS)
    args = parser.parse_args()
    machine = common_machine()
    recorded = json.loads((RESULTS / "time_budget.json").read_text()) if (RESULTS / "time_budget.json").exists() \
        else {}
    if args.short:
        return main_short(args, recorded, machine)
    previous = {r["budget"]: r for r in recorded.get("runs", [])}
    args.budgets = args.budgets or ["20m", "60m"]
    rows = []
    for budget in args.budgets:
        if budget in previous and not args.rerun:
            print(f"{budget}: recorded already (--rerun runs it again)", file=sys.stderr)
            continue
        rows.append(run_budget(args.collection, budget, fresh=args.rerun))
        previous[budget] = rows[-1]
        write(args.collection, [previous[b] for b in args.budgets if b in previous], machine)  # after every run


def main_short(args, recorded: dict, machine: str) -> None:
    key = ("corpus", "budget", "condition")
    rows = {tuple(r[k] for k in key): r for r in recorded.get("short_runs", [])}
    whole = recorded.get("runs", [])
    for corpus in args.corpora:
        for budget in args.budgets or ["2m", "3m", "4m", "10m"]:
            for condition in SHORT_CONDITIONS:  # in this order: a second run needs the first's cache
                if condition not in args.conditions:
                    continue
                if (corpus, budget, condition) in rows and not args.rerun:
                    print(f"{corpus} {budget} {condition}: recorded already (--rerun runs it again)", file=sys.stderr)
                    continue
                print(f"{corpus} {budget} {condition} ...", file=sys.stderr, flush=True)
                rows[(corpus, budget, condition)] = run_short(corpus, budget, condition)
                order = sorted(rows.values(), key=lambda r: (r["corpus"], parse_duration(r["budget"]),
                                                             SHORT_CONDITIONS.index(r["condition"])))
                write(recorded.get("collection", "cranfield"), whole, recorded.get("machine", machine), order)


if __name__ == "__main__":
    main()
