"""What every benchmark repeats, in one place; a benchmark keeps only what it measures.

* the machine line and the command that reproduces a result;
* timing, and alternating rounds (every system once per round, in turn, so that a slow
  minute on a shared machine costs every system alike);
* writing ``results/NAME.json`` and ``results/NAME.md`` atomically, and merging a run over
  some collections (or recipes) into the results already measured for the others;
* the statistics every quality claim carries: a row over seeds (mean, sd) and a paired
  t-test over queries, with their markdown tables.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def machine() -> str:
    """The CPU's model name, core count and whether it does bf16 natively, as /proc/cpuinfo gives them
    (platform.processor() is empty on Linux). Virtual CPUs with and without AVX512-BF16 both call
    themselves "AMD EPYC" here, and every speed differs between them (--dtype auto picks bf16 on one)."""
    from genq.hardware import NATIVE_BF16_FLAGS, cpu_description, cpu_flags

    cpu = cpu_description()
    bf16 = "AVX512-BF16" if cpu_flags() & NATIVE_BF16_FLAGS else "no AVX512-BF16"
    return (f"{cpu.get('model name') or platform.machine()}, {cpu.get('processors') or os.cpu_count() or '?'} cores, "
            f"{bf16}")


def command_line(script: str | None = None) -> str:
    """The command that reproduces this run: ``python benchmarks/NAME.py`` and the arguments it was given."""
    script = script or Path(sys.argv[0]).name
    return " ".join(["python", f"benchmarks/{script}", *sys.argv[1:]])


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, what ``run`` returned)."""
    started = time.perf_counter()
    result = run()
    return time.perf_counter() - started, result


def alternating_rounds(systems: dict[str, Callable[[], Any]], rounds: int) -> tuple[dict[str, list[float]], dict]:
    """Each system's seconds per round, and what its last round returned; within a round the systems run in turn."""
    seconds: dict[str, list[float]] = {name: [] for name in systems}
    last: dict[str, Any] = {}
    for _ in range(rounds):
        for name, run in systems.items():
            took, last[name] = timed(run)
            seconds[name].append(took)
    return seconds, last


def write_results(name: str, payload: dict, markdown: str | Sequence[str], folder: Path = RESULTS) -> Path:
    """``folder/NAME.json`` and ``folder/NAME.md``, each swapped in whole; returns the markdown's path."""
    from genq.io import atomic_write

    folder.mkdir(parents=True, exist_ok=True)
    text = markdown if isinstance(markdown, str) else "\n".join(markdown) + "\n"
    with atomic_write(folder / f"{name}.json") as handle:
        handle.write(json.dumps(payload, indent=2) + "\n")
    with atomic_write(folder / f"{name}.md") as handle:
        handle.write(text)
    return folder / f"{name}.md"


def merged_results(results_file: Path, new: list[dict], key: str = "collection") -> list[dict]:
    """The results kept in ``results_file`` (its "results" list, one entry per ``key``: a collection, a
    recipe...) with ``new`` replacing the entries of its keys; earlier entries keep their order."""
    kept: dict[str, dict] = {}
    if results_file.exists():
        kept = {r[key]: r for r in json.loads(results_file.read_text()).get("results", [])}
    kept.update({r[key]: r for r in new})
    return list(kept.values())


def over_seeds(means: Sequence[float]) -> dict:
    """One row's per-seed nDCG@10 with its mean and sample sd (0 for a single seed)."""
    return {"per_seed": [round(m, 4) for m in means], "mean": round(statistics.mean(means), 4),
            "sd": round(statistics.stdev(means), 4) if len(means) > 1 else 0.0}


def paired_t(system: Sequence[float], baseline: Sequence[float]) -> dict:
    """Paired t-test over queries (each query's score in the same order in both lists)."""
    from scipy import stats

    test = stats.ttest_rel(system, baseline)
    return {"difference": round(statistics.mean(system) - statistics.mean(baseline), 4),
            "t": round(float(test.statistic), 3), "p": round(float(test.pvalue), 4), "queries": len(system)}


def seed_rows_table(rows: dict[str, dict], bold: Callable[[str], bool] = lambda name: False) -> list[str]:
    """Markdown lines of ``over_seeds`` rows by name; ``bold`` marks the rows to quote."""
    lines = ["| system | nDCG@10 mean | sd | per seed |", "|---|---:|---:|---|"]
    for name, row in rows.items():
        mark = "**" if bold(name) else ""
        lines.append(f"| {mark}{name}{mark} | {row['mean']:.4f} | {row['sd']:.4f} | "
                     f"{', '.join(f'{v:.4f}' for v in row['per_seed'])} |")
    return lines


def paired_tests_table(tests: dict[str, dict]) -> list[str]:
    """Markdown lines of ``paired_t`` results by comparison, with the heading sentence they need."""
    return ["Paired t-tests over queries (each query's nDCG@10 averaged over the seeds):", "",
            "| comparison | difference | t | p | queries |", "|---|---:|---:|---:|---:|",
            *[f"| {name} | {t['difference']:+.4f} | {t['t']:.3f} | {t['p']:.4f} | {t['queries']} |"
              for name, t in tests.items()]]
