"""Encoding a corpus for an index so that an interrupted build resumes where it stopped.

Encoding is nearly all of an index build (a million passages take from a quarter of an hour
to several hours on a CPU), and the build happens in a temporary directory that is thrown
away when it fails. So the vectors and the passage store grow in ``.NAME.encoding/`` beside
the index instead, and after each chunk ``progress.json`` records how many passages are
done and how long the store was then. The same command started again finds that record,
checks it describes the same input, model and size, cuts the store back to the recorded
length (a kill may have landed between the two writes) and goes on from the next passage.
When every passage is encoded, the files move into the index being built and the directory
goes away. A record for another input or model is stale: it is cleared and the build starts
over, saying so.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from genq.corpus import iter_passage_file
from genq.encode import Encoder
from genq.io import DataError, atomic_write, reserved_memmap, resolve_path, sample_fingerprint

logger = logging.getLogger(__name__)

PROGRESS_FILE, VECTORS_FILE, STORE_FILE = "progress.json", "embeddings.npy", "passages.jsonl"


def encoding_dir(out_dir: str | os.PathLike) -> Path:
    """Where the encoding of the index at ``out_dir`` grows (and survives an interruption)."""
    out_dir = resolve_path(out_dir)
    return out_dir.with_name(f".{out_dir.name}.encoding")


def store_line(passage: dict) -> bytes:
    return (json.dumps({"_id": passage["_id"], "title": passage.get("title", ""), "text": passage["text"],
                        "doc_id": passage.get("doc_id", passage["_id"])}, ensure_ascii=False) + "\n").encode()


class ResumableEncoding:
    """The vectors and store of one index build's passages, chunk by chunk, resumable after a kill."""

    chunk_size = 8192  # passages per record: at most this many are encoded again after a kill

    def __init__(self, out_dir: str | os.PathLike, passages_path: str | os.PathLike, encoder: Encoder, total: int):
        self.directory = encoding_dir(out_dir)
        self.passages_path = Path(passages_path)
        self.encoder, self.total = encoder, total
        self.identity = {"passages": str(resolve_path(passages_path)),
                         "passages_fingerprint": sample_fingerprint(passages_path), "passages_count": total,
                         "model_fingerprint": encoder.fingerprint, "dimension": encoder.dimension}

    def _done_before(self) -> tuple[int, int]:
        """(passages, store bytes) an earlier interrupted run left; (0, 0) when there is nothing to resume."""
        progress_path = self.directory / PROGRESS_FILE
        if not progress_path.exists():
            shutil.rmtree(self.directory, ignore_errors=True)  # a start killed before its first record
            return 0, 0
        try:
            progress = json.loads(progress_path.read_text(encoding="utf-8"))
            rows, store_bytes = int(progress["rows"]), int(progress["store_bytes"])
            stale = progress.get("identity") != self.identity
        except (ValueError, KeyError, TypeError):
            rows, store_bytes, stale = 0, 0, True
        if not stale and (self.directory / STORE_FILE).stat().st_size >= store_bytes:
            return rows, store_bytes
        logger.info("%s holds an interrupted encoding of another input or model; starting over", self.directory)
        shutil.rmtree(self.directory)
        return 0, 0

    def _record(self, rows: int, store_bytes: int) -> None:
        with atomic_write(self.directory / PROGRESS_FILE) as handle:
            json.dump({"identity": self.identity, "rows": rows, "store_bytes": store_bytes}, handle)

    def run(self, progress: bool) -> tuple[Path, Path, np.ndarray]:
        """Encode what is left; returns (vectors .npy, store .jsonl, each store line's byte offset)."""
        rows, store_bytes = self._done_before()
        self.directory.mkdir(parents=True, exist_ok=True)
        vectors_path, store_path = self.directory / VECTORS_FILE, self.directory / STORE_FILE
        if rows:
            logger.info("resuming the interrupted encoding: %s of %s passages were encoded (kept in %s)",
                        f"{rows:,}", f"{self.total:,}", self.directory)
            matrix = np.load(vectors_path, mmap_mode="r+")
        else:
            matrix = reserved_memmap(vectors_path, (self.total, self.encoder.dimension))
            self._record(0, 0)
        offsets = self._offsets_until(store_path, store_bytes)
        try:
            with open(store_path, "r+b" if rows else "wb") as store:
                store.truncate(store_bytes)
                store.seek(store_bytes)
                passages = self._passages_after(rows)
                for chunk, vectors in self.encoder.encode_stream(passages, self.chunk_size, progress=progress,
                                                                 total=self.total, initial=rows):
                    matrix[rows:rows + len(chunk)] = vectors
                    for passage in chunk:
                        offsets.append(store_bytes)
                        line = store_line(passage)
                        store.write(line)
                        store_bytes += len(line)
                    matrix.flush()
                    store.flush()
                    os.fsync(store.fileno())
                    rows += len(chunk)
                    self._record(rows, store_bytes)
        except BaseException:
            if rows:
                logger.warning("%s of %s passages encoded are kept in %s: the same command resumes from there",
                               f"{rows:,}", f"{self.total:,}", self.directory)
            raise
        finally:
            del matrix
        return vectors_path, store_path, np.asarray(offsets, dtype=np.int64)

    def _passages_after(self, rows: int) -> Iterator[dict]:
        """The input's passages from number ``rows`` on, every id (those before included) checked unique."""
        seen: set[str] = set()
        for number, passage in enumerate(iter_passage_file(self.passages_path)):
            if passage["_id"] in seen:
                raise DataError(self.passages_path, f"passage id {passage['_id']!r} appears twice",
                                "ids must stay unique: rename or drop the passage", number + 1)
            seen.add(passage["_id"])
            if number >= rows:
                yield passage

    @staticmethod
    def _offsets_until(store_path: Path, store_bytes: int) -> list[int]:
        offsets, position = [], 0
        if store_bytes:
            with open(store_path, "rb") as store:
                for line in store:
                    if position >= store_bytes:
                        break
                    offsets.append(position)
                    position += len(line)
        return offsets

    def clear(self) -> None:
        """The encoding is inside the finished index now."""
        shutil.rmtree(self.directory, ignore_errors=True)
