"""The two statistics every quality benchmark reports: a row over seeds, and a paired test over queries."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence


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
