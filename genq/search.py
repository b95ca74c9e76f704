"""Searching an index directory: the Python API behind ``genq search`` and ``genq serve``.

    from genq.search import Searcher
    searcher = Searcher.load("runs/wiki/index")
    for hit in searcher.search("how do I reset the router", k=5):
        print(hit.rank, hit.score, hit.title)
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from genq.encode import Encoder
from genq.index import INDEX_FILE, OFFSETS_FILE, STORE_FILE, apply_search_params, read_index_meta
from genq.io import DataError, ErrorTally, GenqError, atomic_write, iter_jsonl


@dataclass
class Hit:
    rank: int
    id: str
    score: float
    title: str
    text: str
    doc_id: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class PassageStore:
    """Random access to the index's passages by row, one seek per hit; nothing loaded up front."""

    def __init__(self, directory: Path):
        self.path = directory / STORE_FILE
        self.offsets = np.load(directory / OFFSETS_FILE, mmap_mode="r")
        self._handle = open(self.path, "rb")  # noqa: SIM115 (closed by close())
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.offsets)

    def get(self, row: int) -> dict:
        with self._lock:
            self._handle.seek(int(self.offsets[row]))
            return json.loads(self._handle.readline())

    def close(self) -> None:
        self._handle.close()


class Searcher:
    """A loaded index, its passage store and its model; thread-safe for concurrent searches."""

    def __init__(self, index, store: PassageStore, encoder: Encoder, meta: dict, directory: Path):
        self.index = index
        self.store = store
        self.encoder = encoder
        self.meta = meta
        self.directory = directory
        self._encode_lock = threading.Lock()

    @classmethod
    def load(cls, index_dir: str | Path, model: str | Encoder | None = None, device: str | None = None,
             dtype: str = "auto", ef_search: int | None = None, nprobe: int | None = None) -> Searcher:
        """Open ``index_dir``; the model recorded in index.json is used unless ``model`` overrides it."""
        import faiss

        directory = Path(index_dir)
        meta = read_index_meta(directory)
        try:
            index = faiss.read_index(str(directory / INDEX_FILE))
        except RuntimeError as exc:
            raise DataError(directory / INDEX_FILE, f"Faiss could not read it ({str(exc).splitlines()[0]})",
                            "rebuild the index with `genq index`") from None
        params = dict(meta.get("params", {}))
        if ef_search:
            params["ef_search"] = ef_search
        if nprobe:
            params["nprobe"] = nprobe
        apply_search_params(index, params)
        store = PassageStore(directory)
        if len(store) != index.ntotal:
            raise DataError(directory, f"the index holds {index.ntotal} vectors but the store {len(store)} passages",
                            "rebuild the index with `genq index`")
        encoder = model if isinstance(model, Encoder) else Encoder(model or meta["model"], device=device,
                                                                   dtype=dtype)
        if encoder.dimension != meta["dimension"]:
            raise GenqError(f"the model makes {encoder.dimension}-d vectors but the index holds "
                            f"{meta['dimension']}-d ones; search with the model that built the index")
        return cls(index, store, encoder, meta, directory)

    def __len__(self) -> int:
        return self.index.ntotal

    def search(self, query: str, k: int = 10) -> list[Hit]:
        return self.search_batch([query], k)[0]

    def search_batch(self, queries: list[str], k: int = 10) -> list[list[Hit]]:
        """Ranked hits for each query; one encode call and one Faiss call for the whole batch."""
        if not queries:
            return []
        k = max(1, min(int(k), self.index.ntotal))
        with self._encode_lock:
            vectors = self.encoder.encode_queries(list(queries))
        scores, rows = self.index.search(vectors, k)
        results = []
        for query_scores, query_rows in zip(scores, rows):
            hits = []
            for row, score in zip(query_rows, query_scores):
                if row < 0:
                    continue
                passage = self.store.get(int(row))
                hits.append(Hit(len(hits) + 1, passage["_id"], round(float(score), 6), passage.get("title", ""),
                                passage["text"], passage.get("doc_id", passage["_id"])))
            results.append(hits)
        return results

    def info(self) -> dict:
        return {"index": str(self.directory), "passages": self.index.ntotal, "model": self.meta["model"],
                "dimension": self.meta["dimension"], "index_type": self.meta["index_type"],
                "params": self.meta.get("params", {}), "similarity": self.meta.get("similarity"),
                "genq_version": self.meta.get("genq_version")}


def read_queries(path: str | Path) -> list[tuple[str, str]]:
    """(id, text) pairs from a BEIR ``queries.jsonl`` or a plain file with one query per line."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "does not exist", "check the queries file path")
    if path.suffix in (".jsonl", ".json"):
        queries = []
        for line, record in iter_jsonl(path, ErrorTally()):
            if "text" not in record:
                raise DataError(path, "query record has no \"text\"", "use BEIR's {\"_id\", \"text\"} layout", line)
            queries.append((str(record.get("_id", line)), str(record["text"])))
        return queries
    lines = [x.strip() for x in path.read_text(encoding="utf-8").splitlines()]
    queries = [(str(n), text) for n, text in enumerate((x for x in lines if x), start=1)]
    if not queries:
        raise DataError(path, "holds no queries", "put one query per line")
    return queries


def iter_run(searcher: Searcher, queries: list[tuple[str, str]], k: int, batch_size: int = 64
             ) -> Iterator[tuple[str, list[Hit]]]:
    for start in range(0, len(queries), batch_size):
        batch = queries[start:start + batch_size]
        for (query_id, _), hits in zip(batch, searcher.search_batch([t for _, t in batch], k)):
            yield query_id, hits


def write_trec_run(searcher: Searcher, queries: list[tuple[str, str]], out_path: str | Path, k: int = 100,
                   run_name: str = "genq") -> dict:
    """Search every query and write a TREC run file (``qid Q0 docid rank score run``)."""
    started = time.perf_counter()
    count = 0
    with atomic_write(out_path) as handle:
        for query_id, hits in iter_run(searcher, queries, k):
            for hit in hits:
                handle.write(f"{query_id} Q0 {hit.id} {hit.rank} {hit.score:.6f} {run_name}\n")
                count += 1
    return {"queries": len(queries), "lines": count, "output": str(out_path),
            "seconds": round(time.perf_counter() - started, 2)}
