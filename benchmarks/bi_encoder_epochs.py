"""How many epochs should the bi-encoder train on a small corpus's synthetic pairs?

On whole Cranfield the round-trip filter keeps 839 pairs, so genq's one epoch at batch 64 is
13 optimizer steps; `genq train` itself warns that so few steps may not move the model. Yet
those 13 steps moved the bi-encoder +0.011 nDCG@10 (p = 0.025), so more may move it further,
or overfit 839 queries. This trains the bi-encoder of each seed for more epochs on the same
pairs as `whole_collection.py` (whose runs it reads: one epoch is its seeds' own models) and
reports adapted and hybrid(adapted) nDCG@10, mean (sd) over the seeds, with paired t-tests over
queries against one epoch and against base / hybrid(base).

    python benchmarks/bi_encoder_epochs.py --collections cranfield --epochs 1 3 5 --runs-dir runs

Every model resumes and every evaluation is kept (RUN/epochs/E/seed-S/); writes
benchmarks/results/bi_encoder_epochs.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
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
from benchmarks.rerank_fusion import seed_models  # noqa: E402
from benchmarks.whole_collection import BASE, SHARED, train_seed  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
ROWS = ("adapted", "hybrid(adapted)")


def epochs_label(count: float) -> str:
    return f"{count:g} epoch" + ("" if count == 1 else "s")


def model_for(run_dir: Path, epochs: float, seed: int, first_seed: int, first_epochs: float) -> Path:
    """The seeds' own model for the run's epochs, else one trained here."""
    if epochs == first_epochs:
        return seed_models(run_dir, seed, first_seed)[0]
    return run_dir / "epochs" / f"{epochs:g}" / f"seed-{seed}" / "model"


def evaluation(collection: str, run_dir: Path, model: Path) -> dict:
    """Per-query nDCG@10 of BM25, base, adapted and both hybrids, kept beside the model."""
    from genq.evaluate import evaluate_systems

    output = model.parent / "eval"
    if not (output / "results.json").exists():
        evaluate_systems(SHARED / collection, models=[BASE, str(model)], bm25=True, hybrid=True,
                         names=["BM25", "base", "adapted"], output_dir=output, progress=True,
                         cache_dir=run_dir / ".genq-cache")
    report = json.loads((output / "results.json").read_text())
    return {name: {q: m["ndcg@10"] for q, m in table.items()} for name, table in report["per_query"].items()}


def measure(collection: str, run_dir: Path, epochs: list[float], seeds: list[int]) -> dict:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    train = manifest["stages"]["train"]
    pairs = run_dir / train["params"]["pairs"]
    first_epochs = float(train["params"].get("epochs") or 1)
    per_query: dict[str, dict[int, dict[str, float]]] = {}
    steps: dict[str, int] = {}
    for count in epochs:
        for seed in seeds:
            model = model_for(run_dir, count, seed, seeds[0], first_epochs)
            train_seed("bi-encoder", pairs, model, seed, f"{count:g}")
            steps[f"{count:g}"] = json.loads((model / "genq_training.json").read_text())["summary"]["steps"]
            tables = evaluation(collection, run_dir, model)
            for name in ROWS:
                per_query.setdefault(f"{name}, {epochs_label(count)}", {})[seed] = tables[name]
            for name in ("base", "hybrid(base)"):
                per_query.setdefault(name, {})[seed] = tables[name]
    rows = {}
    for name, by_seed in per_query.items():
        rows[name] = over_seeds([statistics.mean(v.values()) for v in by_seed.values()])
    queries = sorted(next(iter(per_query["base"].values())))

    def averaged(name: str) -> list[float]:
        return [statistics.mean(v[q] for v in per_query[name].values()) for q in queries]

    tests = {}
    for count in epochs:
        for name, against in (("adapted", "base"), ("hybrid(adapted)", "hybrid(base)")):
            pairs_to_test = [(f"{name}, {epochs_label(count)}", against)]
            if count != epochs[0]:
                pairs_to_test.append((f"{name}, {epochs_label(count)}", f"{name}, {epochs_label(epochs[0])}"))
            for row, versus in pairs_to_test:
                tests[f"{row} vs {versus}"] = paired_t(averaged(row), averaged(versus))
    command = (f"python benchmarks/bi_encoder_epochs.py --collections {collection} --epochs "
               + " ".join(f"{e:g}" for e in epochs) + " --seeds " + " ".join(map(str, seeds)))
    return {"collection": collection, "command": command, "seeds": seeds,
            "pairs": train.get("summary", {}).get("pairs"), "steps_per_epochs": steps, "rows": rows,
            "paired_t_tests": tests}


def write(results: list[dict]) -> None:
    """Each collection carries its own command: the epochs measured may differ between them."""
    lines = ["# Bi-encoder epochs on a small corpus's synthetic pairs", "",
             f"Machine: {machine()}. The pairs, seeds and everything else as in `whole_collection.py` "
             "(batch 64, MultipleNegativesRankingLoss, genq's defaults); nDCG@10 mean (sd) over the seeds. "
             "Add `--runs-dir` where `whole_collection.py` kept its runs.", ""]
    for r in results:
        lines += [f"## {r['collection']} ({r['pairs']:,} pairs; optimizer steps: "
                  + ", ".join(f"{epochs_label(float(e))} {s}" for e, s in r["steps_per_epochs"].items()) + ")", "",
                  f"Command: `{r['command']}`", ""]
        lines += [*seed_rows_table(r["rows"]), "", *paired_tests_table(r["paired_t_tests"])]
        lines.append("")
    write_results("bi_encoder_epochs", {"machine": machine(), "results": results}, "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collections", nargs="+", default=["cranfield"])
    parser.add_argument("--epochs", nargs="+", type=float, default=[1, 3, 5])
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs")
    args = parser.parse_args()
    for name in args.collections:
        # after every collection, beside the collections earlier invocations measured
        results = merged_results(RESULTS / "bi_encoder_epochs.json",
                                 [measure(name, args.runs_dir / f"whole-{name}", args.epochs, args.seeds)])
        write(results)


if __name__ == "__main__":
    main()
