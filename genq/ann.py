"""The approximate-nearest-neighbour structure of an index: which Faiss type, its knobs, building it.

Kept apart from :mod:`genq.index` (the index directory: files, records, checks): what is
chosen here follows measurements on real vectors (``benchmarks/results/scale.md``), and
the planner costs a build from the same choice without touching any file.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from genq.io import GenqError

INDEX_TYPES = ("auto", "flat", "hnsw", "hnsw-sq", "ivf-pq")


FLAT_UP_TO = 100_000  # passages; exact search answers in tens of milliseconds up to here
HNSW_UP_TO = 2_000_000  # past this, HNSW over full float vectors outgrows a laptop's memory (1.8 KB a passage):
# the same graph over 8-bit codes (0.65 KB a passage at 384-d) keeps its recall. On 960k real MiniLM vectors
# (results/scale.md) HNSW-SQ8 at efSearch 64 found 0.966 of the exact top 10 at 33x flat's speed (601 MiB, built
# in 461 s, against 1,656 MiB and 761 s over floats), where IVF-PQ (the usual advice past a few million) found
# 0.62 (m=48) to 0.79 (m=96).


@dataclass
class IndexParams:
    """Index type and its knobs; unset knobs get values suited to the corpus size."""

    index_type: str = "auto"
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 64  # 960k real MiniLM vectors: recall@10 0.974 at 21x flat QPS (128: 0.987 at 12x); scale.md
    nlist: int | None = None
    pq_m: int | None = None
    nprobe: int = 16
    pq_nbits: int = 8
    faiss_factory: str | None = None
    train_sample: int = 100_000

    def resolved(self, count: int, dimension: int) -> IndexParams:
        """Pick a concrete type for ``auto`` (Faiss guidelines) and fill size-dependent knobs."""
        params = IndexParams(**asdict(self))
        if params.faiss_factory:
            params.index_type = "factory"
            return params
        if params.index_type == "auto":
            params.index_type = auto_index_type(count)
        if params.index_type == "ivf-pq":
            # Faiss: nlist ~ 4*sqrt(N) .. 16*sqrt(N); at least 39 training points per centroid
            params.nlist = params.nlist or max(1, min(int(4 * math.sqrt(count)), count // 39 or 1))
            if params.pq_m is None:
                params.pq_m = next(m for m in (dimension // 8, dimension // 4, dimension // 2, dimension, 1)
                                   if m >= 1 and dimension % m == 0)
            # k-means for each PQ codebook needs at least 2**nbits training points
            params.pq_nbits = max(1, min(params.pq_nbits, int(math.log2(max(count, 2)))))
            if dimension % params.pq_m:
                raise GenqError(f"--pq-m {params.pq_m} must divide the embedding dimension {dimension}")
        return params


def auto_index_type(count: int) -> str:
    """What ``--index-type auto`` builds for ``count`` passages (thresholds from benchmarks/results/scale.md)."""
    return "flat" if count <= FLAT_UP_TO else "hnsw" if count <= HNSW_UP_TO else "hnsw-sq"


def _new_index(params: IndexParams, dimension: int):
    import faiss

    metric = faiss.METRIC_INNER_PRODUCT
    if params.index_type == "factory":
        try:
            return faiss.index_factory(dimension, params.faiss_factory, metric)
        except RuntimeError as exc:
            raise GenqError(f"Faiss could not build {params.faiss_factory!r}: {str(exc).splitlines()[0]}") from None
    if params.index_type == "flat":
        return faiss.IndexFlatIP(dimension)
    if params.index_type in ("hnsw", "hnsw-sq"):
        index = (faiss.IndexHNSWFlat(dimension, params.hnsw_m, metric) if params.index_type == "hnsw" else
                 faiss.IndexHNSWSQ(dimension, faiss.ScalarQuantizer.QT_8bit, params.hnsw_m, metric))
        index.hnsw.efConstruction = params.ef_construction
        index.hnsw.efSearch = params.ef_search
        return index
    if params.index_type == "ivf-pq":
        quantizer = faiss.IndexFlatIP(dimension)
        index = faiss.IndexIVFPQ(quantizer, dimension, params.nlist, params.pq_m, params.pq_nbits, metric)
        index.nprobe = params.nprobe
        return index
    raise GenqError(f"unknown index type {params.index_type!r}; choose one of {', '.join(INDEX_TYPES)}")


def apply_search_params(index, params: dict) -> None:
    """Set the query-time knobs (efSearch, nprobe) recorded in index.json."""
    import faiss

    if params.get("ef_search") and hasattr(index, "hnsw"):
        index.hnsw.efSearch = int(params["ef_search"])
    ivf = faiss.try_extract_index_ivf(index) if params.get("nprobe") else None
    if ivf is not None:
        ivf.nprobe = int(params["nprobe"])


ADD_CHUNK = 65_536  # vectors per Faiss add: a float32 copy of a chunk at a time, and a progress step


def build_faiss_index(embeddings: np.ndarray, params: IndexParams, seed: int = 0, progress: bool = False):
    """A trained and filled Faiss index over ``embeddings`` (already normalised). With ``progress``, a bar over
    the adds: an HNSW graph over a million passages takes many minutes after the encoding bar has ended."""
    from tqdm.auto import tqdm

    index = _new_index(params, embeddings.shape[1])
    if not index.is_trained:
        rng = np.random.default_rng(seed)
        sample = embeddings
        if len(embeddings) > params.train_sample:
            sample = embeddings[np.sort(rng.choice(len(embeddings), params.train_sample, replace=False))]
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
    with tqdm(total=len(embeddings), desc=f"building {params.index_type}", unit=" vectors",
              disable=not progress or len(embeddings) <= ADD_CHUNK) as bar:
        for start in range(0, len(embeddings), ADD_CHUNK):
            chunk = embeddings[start:start + ADD_CHUNK]
            index.add(np.ascontiguousarray(chunk, dtype=np.float32))
            bar.update(len(chunk))
    return index
