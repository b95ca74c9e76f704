"""The journal of an unfinished generation run: what was appended to ``OUT.partial``, batch by batch, and proof of it.

Each line carries a checksum chained to the one before and the digest of the bytes its batch
appended, so a rerun believes exactly what was written whole and redoes the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from genq.io import atomic_write, repair_torn_tail

logger = logging.getLogger(__name__)


def run_paths(output: str | Path) -> tuple[Path, Path]:
    """Where an unfinished run writes: ``OUT.partial`` and its progress journal."""
    output = Path(output)
    partial = output.with_name(output.name + ".partial")
    return partial, partial.with_name(partial.name + ".progress.jsonl")


@dataclass
class Progress:
    """What the journal of an unfinished run says: passages done, valid bytes, and every counter."""

    done: set[str]
    valid_bytes: int = 0
    pairs: int = 0
    queries_sampled: int = 0
    duplicates_dropped: int = 0
    filtered_out: int = 0
    passages_without_query: int = 0
    emptied_runaway: int = 0
    emptied_not_a_query: int = 0
    wall_seconds: float = 0.0
    last_check: str = ""  # the chained checksum of the last verified journal line (the next one continues it)
    entries_dropped: int = 0  # journal lines that did not verify, with every line after them: their batches redo

    def add(self, entry: dict) -> None:
        self.done.update(entry["ids"])
        self.valid_bytes = entry["bytes"]
        for key in ("pairs", "queries_sampled", "duplicates_dropped", "filtered_out", "passages_without_query",
                    "emptied_runaway", "emptied_not_a_query"):
            setattr(self, key, getattr(self, key) + entry.get(key, 0))
        self.wall_seconds += entry.get("seconds", 0.0)


def journal_check(entry: dict, previous: str) -> str:
    """A journal line's checksum, chained to the line before it: an edited, reordered or dropped line breaks it."""
    body = json.dumps({k: v for k, v in entry.items() if k != "check"}, sort_keys=True, ensure_ascii=False)
    return hashlib.blake2b((previous + body).encode("utf-8"), digest_size=8).hexdigest()


def read_journal(journal: Path, partial: Path) -> tuple[dict | None, Progress]:
    """The header (settings and input) and the summed progress of a journal, as far as it verifies.

    Every line carries a checksum chained to the one before, and every batch line the digest
    of the bytes it appended to the partial output. The first line that is not JSON, fails its
    checksum or vouches for bytes the partial does not hold ends what is believed: that line
    and all after it are dropped from the journal, and their batches are generated again, so a
    damaged journal costs time, never a doubled or lost pair. (A journal written before genq
    kept checksums is read as before, up to its first line that is not JSON.)
    """
    progress = Progress(set())
    if not journal.exists():
        return None, progress
    repair_torn_tail(journal)
    lines = journal.read_bytes().splitlines(keepends=True)
    header, previous, verified, checked = None, "", 0, None
    data = open(partial, "rb") if partial.exists() else None  # noqa: SIM115 (closed below)
    try:
        for number, raw in enumerate(lines):
            try:
                entry = json.loads(raw)
            except ValueError:
                break
            if not isinstance(entry, dict):
                break
            checked = ("check" in entry) if checked is None else checked
            if checked:
                if entry.get("check") != journal_check(entry, previous):
                    break
                previous = entry["check"]
            if number == 0:
                header = entry if "settings" in entry else None
                if header is None:
                    return None, progress
            else:
                try:
                    ids, end = list(entry["ids"]), int(entry["bytes"])
                except (KeyError, TypeError, ValueError):
                    break
                if checked:
                    if data is None or end < progress.valid_bytes:
                        break
                    data.seek(progress.valid_bytes)
                    appended = data.read(end - progress.valid_bytes)
                    if len(appended) != end - progress.valid_bytes or \
                            hashlib.blake2b(appended, digest_size=8).hexdigest() != entry.get("data"):
                        break
                progress.add({**entry, "ids": ids, "bytes": end})
            verified = number + 1
    finally:
        if data is not None:
            data.close()
    progress.last_check = previous
    if verified < len(lines):
        progress.entries_dropped = len(lines) - verified
        logger.warning("%s: %d line(s) of the journal do not verify (edited or damaged): their batches are generated "
                       "again", journal, progress.entries_dropped)
        with atomic_write(journal, "wb", encoding=None) as handle:
            handle.write(b"".join(lines[:verified]))
    return header, progress
