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
