"""Reading a pairs file, the contract between generation and every later stage."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from genq.io import DataError, iter_jsonl


def iter_pairs(path: str | Path, errors=None) -> Iterator[tuple[int, dict]]:
    """Stream a pairs file, checking each line is a pair every later stage can read.

    A query and a passage must be non-empty strings and negatives (if any) a list of
    strings or ``{"text": ...}`` objects: a number, or a string read as a list of characters,
    would otherwise train on garbage without a word.
    """
    for line, record in iter_jsonl(path, errors):
        if not isinstance(record.get("query"), str) or not isinstance(record.get("passage"), str):
            raise DataError(path, "pair needs string fields \"query\" and \"passage\"",
                            "pass a pairs file written by `genq generate` (one {\"query\", \"passage\", ...} per line)",
                            line)
        for name in ("query", "passage"):
            if not record[name].strip():
                raise DataError(path, f"the {name} is empty", f"drop this line or give it a {name}", line)
        negatives = record.get("negatives")
        if negatives is not None and (not isinstance(negatives, list) or not all(
                isinstance(n, str) or (isinstance(n, dict) and isinstance(n.get("text"), str)) for n in negatives)):
            raise DataError(path, f"\"negatives\" is a {type(negatives).__name__} of something other than "
                                  "passages" if isinstance(negatives, list) else
                            f"\"negatives\" is a {type(negatives).__name__}, not a list",
                            "write negatives as a list: [{\"passage_id\", \"title\", \"text\"}, ...] (or of strings)",
                            line)
        yield line, record


def merge_pairs(inputs: list[str | Path], output: str | Path) -> dict:
    """The pairs of ``inputs`` in one file, in order, each (query, passage) once; written whole, then renamed.

    How the kept pairs of several generation rounds (and cropped pseudo-queries) become one
    training file: a query two rounds both wrote for a passage would otherwise train twice.
    """
    from genq.generation.prompts import normalize_query
    from genq.io import atomic_write, dumps_line

    seen: set[tuple[str, str]] = set()
    counts = {"inputs": {str(path): 0 for path in inputs}, "pairs": 0, "repeats_dropped": 0}
    with atomic_write(output) as handle:
        for path in inputs:
            for _, record in iter_pairs(path):
                key = (normalize_query(record["query"]), str(record.get("passage_id", record["passage"])))
                if key in seen:
                    counts["repeats_dropped"] += 1
                    continue
                seen.add(key)
                handle.write(dumps_line(record))
                counts["inputs"][str(path)] += 1
                counts["pairs"] += 1
    return counts
