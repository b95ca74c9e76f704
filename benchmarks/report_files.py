"""Per-collection result files that grow: a run over one collection keeps the others already measured."""

from __future__ import annotations

import json
from pathlib import Path


def merged_results(results_file: Path, new: list[dict], key: str = "collection") -> list[dict]:
    """The results kept in ``results_file`` (its "results" list, one entry per ``key``: a collection, a
    recipe...) with ``new`` replacing the entries of its keys; earlier entries keep their order."""
    kept: dict[str, dict] = {}
    if results_file.exists():
        kept = {r[key]: r for r in json.loads(results_file.read_text()).get("results", [])}
    kept.update({r[key]: r for r in new})
    return list(kept.values())
