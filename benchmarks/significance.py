"""The two statistics every quality benchmark reports: a row over seeds, and a paired test over queries."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


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
