"""Faiss index building: passages + model -> an index directory that searches on its own.

An index directory holds::

    index.faiss          the Faiss index (row i = passage i)
    passages.jsonl       the passages, one JSON line each (id, title, text)
    passages.offsets.npy byte offset of every line, so a hit is read with one seek
    embeddings.npy       optional (--save-embeddings): re-index without re-encoding
    bm25/                the BM25 index over the same passages (bm25s format: JSON + .npy),
                         unless built with --no-lexical; it makes hybrid search possible
    index.json           model, dimension, similarity, index type and parameters, BM25
                         settings, counts, version

Vectors are L2-normalised and compared by inner product (= cosine). The directory is built
in a temporary sibling and renamed into place, so an interrupted run never leaves a half
index that loads; ``--add`` builds the grown index the same way.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from genq import __version__
from genq.ann import ADD_CHUNK, IndexParams, build_faiss_index
from genq.corpus import iter_passage_file
from genq.encode import Encoder
from genq.index_progress import ResumableEncoding, store_line
from genq.io import (
    DataError,
    GenqError,
    check_output_dir,
    describe_error,
    read_json,
    recover_interrupted_swap,
    replacing_directory,
    reserved_memmap,
    sample_fingerprint,
)
from genq.locks import one_writer
from genq.models import model_files_fingerprint
from genq.retrieval import LexicalIndex, LexicalSettings

logger = logging.getLogger(__name__)

INDEX_FILE, META_FILE, STORE_FILE, OFFSETS_FILE, EMBEDDINGS_FILE, LEXICAL_DIR = (
    "index.faiss", "index.json", "passages.jsonl", "passages.offsets.npy", "embeddings.npy", "bm25")


@dataclass
class IndexSummary:
    output: str
    passages: int = 0
    added: int = 0
    dimension: int = 0
    index_type: str = ""
    params: dict = field(default_factory=dict)
    encode_seconds: float = 0.0
    ann_seconds: float = 0.0
    lexical_seconds: float = 0.0
    lexical: dict | None = None
    seconds: float = 0.0
    dtype: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class _StoreWriter:
    """Appends passages to the store and remembers each line's byte offset."""

    def __init__(self, path: Path, start_offsets: np.ndarray | None = None):
        self.handle = open(path, "ab")  # noqa: SIM115 (closed by close())
        self.offsets: list[int] = [] if start_offsets is None else start_offsets.tolist()
        self.position = self.handle.tell()

    def write(self, passages: list[dict]) -> None:
        for passage in passages:
            line = store_line(passage)
            self.offsets.append(self.position)
            self.handle.write(line)
            self.position += len(line)

    def close(self) -> np.ndarray:
        self.handle.close()
        return np.asarray(self.offsets, dtype=np.int64)


def _encode_into(passages_path: Path, encoder: Encoder, store: _StoreWriter, seen_ids: set[str],
                 embeddings_path: Path, progress: bool, total: int, already: int = 0) -> int:
    """Encode every passage into a growing .npy (memory-mapped) and the store; returns how many."""
    matrix = reserved_memmap(embeddings_path, (total, encoder.dimension))
    row = 0
    for chunk, vectors in encoder.encode_stream(_unique(passages_path, seen_ids), progress=progress, total=total):
        matrix[row:row + len(chunk)] = vectors
        store.write(chunk)
        row += len(chunk)
    matrix.flush()
    del matrix
    return row


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # a file system without hard links
        shutil.copyfile(source, target)


def _store_only(passages_path: Path, store: _StoreWriter, embeddings: np.ndarray, dimension: int) -> int:
    """Write the passage store for vectors computed elsewhere, checking they fit the passages and the model."""
    count = 0
    for passage in _unique(passages_path, set()):
        store.write([passage])
        count += 1
    if embeddings.shape != (count, dimension):
        raise GenqError(f"the precomputed embeddings are {embeddings.shape[0]} x {embeddings.shape[1]}, but "
                        f"{passages_path} holds {count} passages and the model makes {dimension}-d vectors")
    return count


def _unique(passages_path: Path, seen_ids: set[str]):
    for line_number, passage in enumerate(iter_passage_file(passages_path), start=1):
        if passage["_id"] in seen_ids:
            raise DataError(passages_path, f"passage id {passage['_id']!r} is already in the index",
                            "ids must stay unique: rename or drop the passage before adding", line_number)
        seen_ids.add(passage["_id"])
        yield passage


@one_writer("output_dir", "index")
def build_index(
    passages_path: str | Path,
    model: str | Encoder,
    output_dir: str | Path,
    params: IndexParams | None = None,
    save_embeddings: bool = False,
    batch_size: int = 64,
    device: str | None = None,
    dtype: str = "auto",
    progress: bool = True,
    lexical: LexicalSettings | None = LexicalSettings(),
    overwrite: bool = False,
    embeddings: np.ndarray | None = None,
) -> IndexSummary:
    """Encode every passage and write a self-contained index directory.

    ``lexical`` also builds a BM25 index over the same passages (``None`` skips it): hybrid
    search needs both, and BM25 costs seconds next to the encoding. An existing genq index
    at ``output_dir`` is replaced (once the new one is complete) only with ``overwrite``;
    any other non-empty directory is refused. ``embeddings`` are the passages' vectors already
    computed elsewhere (row i = passage i of the file, e.g. by a Ray job); the model then only
    names the index and encodes its queries.
    """
    started = time.perf_counter()
    passages_path, out_dir = Path(passages_path), Path(output_dir)
    check_output_dir(out_dir, META_FILE, "index", overwrite)
    params = params or IndexParams()
    if lexical is not None:
        lexical.validate()
    total = sum(1 for _ in iter_passage_file(passages_path))
    encoder = model if isinstance(model, Encoder) else Encoder(model, device=device, dtype=dtype,
                                                               batch_size=batch_size)
    encoding = ResumableEncoding(out_dir, passages_path, encoder, total) if embeddings is None else None
    with replacing_directory(out_dir) as tmp:
        encode_started = time.perf_counter()
        if encoding is not None:
            vectors_path, store_path, offsets = encoding.run(progress)
            for source, name in ((vectors_path, EMBEDDINGS_FILE), (store_path, STORE_FILE)):
                _link_or_copy(source, tmp / name)  # the encoding stays resumable until the index is complete
            count = len(offsets)
        else:
            store = _StoreWriter(tmp / STORE_FILE)
            count = _store_only(passages_path, store, embeddings, encoder.dimension)
            np.save(tmp / EMBEDDINGS_FILE, np.asarray(embeddings, dtype=np.float32))
            offsets = store.close()
        encode_seconds = time.perf_counter() - encode_started
        np.save(tmp / OFFSETS_FILE, offsets)
        embeddings = np.load(tmp / EMBEDDINGS_FILE, mmap_mode="r")
        resolved = params.resolved(count, encoder.dimension)
        if progress:
            print(f"index type: {resolved.index_type}" + (" (auto, by corpus size)" if params.index_type == "auto"
                                                          else ""), file=sys.stderr)
        ann_started = time.perf_counter()
        index = build_faiss_index(embeddings, resolved, progress=progress)
        ann_seconds = time.perf_counter() - ann_started
        lexical_seconds = _build_lexical(tmp, lexical, progress)
        _write_index(tmp, index, encoder, resolved, count, save_embeddings,
                     model_name=_model_name(model, encoder, out_dir), lexical=lexical)
        del embeddings
        if not save_embeddings:
            (tmp / EMBEDDINGS_FILE).unlink()
    if encoding is not None:
        encoding.clear()
    return IndexSummary(str(out_dir), passages=count, added=count, dimension=encoder.dimension,
                        index_type=resolved.index_type, params=asdict(resolved),
                        encode_seconds=round(encode_seconds, 2), ann_seconds=round(ann_seconds, 2),
                        lexical_seconds=lexical_seconds,
                        lexical=_lexical_meta(lexical), seconds=round(time.perf_counter() - started, 2),
                        dtype=encoder.dtype_label)


def _build_lexical(directory: Path, settings: LexicalSettings | None, progress: bool) -> float:
    """BM25 over the passages already written to ``directory``'s store; returns the seconds it took."""
    if settings is None:
        return 0.0
    from genq.encode import passage_text

    started = time.perf_counter()
    with open(directory / STORE_FILE, encoding="utf-8") as handle:
        texts = [passage_text(json.loads(line)) for line in handle]
    # bm25s draws four bars; worth it only where the build takes a while
    LexicalIndex.build(texts, settings, progress=progress and len(texts) > 100_000).save(directory / LEXICAL_DIR)
    return round(time.perf_counter() - started, 2)


def _lexical_meta(settings: LexicalSettings | None) -> dict | None:
    return None if settings is None else {**asdict(settings), "directory": LEXICAL_DIR, "method": "bm25s lucene"}


def lexical_settings_of(meta: dict) -> LexicalSettings | None:
    """The BM25 settings an index was built with; None for a dense-only (or pre-hybrid) index."""
    stored = meta.get("lexical")
    if not stored:
        return None
    return LexicalSettings.from_dict(stored)


def _model_name(model, encoder: Encoder, out_dir: Path) -> tuple[str, bool]:
    """How index.json names the model, and whether that is a path relative to the index.

    A model directory beside the index (a run directory's model/ and index/) is stored
    relative, so the two can be moved or copied together; any other directory absolutely.
    """
    if isinstance(model, str):
        path = Path(model).expanduser()
        if not path.exists():
            return model, False
        resolved, home = path.resolve(), out_dir.resolve().parent
        if resolved.is_relative_to(home):
            return os.path.relpath(resolved, out_dir.resolve()), True
        return str(resolved), False
    return encoder.name, False


def index_model(meta: dict, index_dir: Path) -> str:
    """The model an index was built with, as a loadable name (relative paths resolved against the index)."""
    if meta.get("model_relative"):
        return str((Path(index_dir) / meta["model"]).resolve())
    return meta["model"]


def locate_index(path: str | Path) -> Path:
    """``path`` itself, or the index inside a `genq adapt` run directory (RUN/index)."""
    path = Path(path)
    if not (path / META_FILE).exists() and (path / "index" / META_FILE).exists():
        return path / "index"
    return path


def _write_index(directory: Path, index, encoder: Encoder, params: IndexParams, count: int, embeddings_kept: bool,
                 model_name: tuple[str, bool], lexical: LexicalSettings | None) -> None:
    import faiss

    faiss.write_index(index, str(directory / INDEX_FILE))
    meta = {
        "genq_version": __version__,
        "model": model_name[0],
        "model_relative": model_name[1],
        "dimension": encoder.dimension,
        "similarity": "cosine",
        "normalized": True,
        "metric": "inner_product",
        "index_type": params.index_type,
        "params": asdict(params),
        "passages": count,
        "embeddings_saved": embeddings_kept,
        "lexical": _lexical_meta(lexical),
        "max_seq_length": int(encoder.model.max_seq_length),
        "model_fingerprint": model_files_fingerprint(encoder.location) if encoder.location else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    meta["files"] = record_files(directory, with_embeddings=embeddings_kept)
    (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- integrity


def record_files(directory: Path, with_embeddings: bool) -> dict[str, str]:
    """Every file of the index but index.json, by relative path, with its sampled fingerprint."""
    return {path.relative_to(directory).as_posix(): sample_fingerprint(path)
            for path in sorted(directory.rglob("*")) if path.is_file() and path.name != META_FILE
            and (with_embeddings or path.name != EMBEDDINGS_FILE)}


def rebuild_hint(index_dir: Path, meta: dict | None = None) -> str:
    model = (meta or {}).get("model") if isinstance(meta, dict) else None
    return (f"rebuild it: genq index PASSAGES -m {model if isinstance(model, str) else 'MODEL'} -o {index_dir} "
            "--overwrite (PASSAGES: the passages it was built from)")


def check_index_meta(index_dir: Path, meta) -> dict:
    """index.json holds what opening needs, in the types genq wrote; otherwise it is named as damaged."""
    problems = []
    if not isinstance(meta, dict):
        problems.append(f"it holds a {type(meta).__name__}, not an object")
    else:
        for key, kind in (("model", str), ("dimension", int), ("passages", int), ("index_type", str),
                          ("params", dict)):
            value = meta.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                problems.append(f"{key!r} is {'missing' if key not in meta else repr(value)[:40]}")
        if isinstance(meta.get("dimension"), int) and meta["dimension"] < 1 or \
                isinstance(meta.get("passages"), int) and meta["passages"] < 0:
            problems.append("a count is out of range")
        if isinstance(meta.get("params"), dict):
            try:
                IndexParams(**meta["params"])
            except TypeError:
                problems.append("'params' holds unknown settings")
    if problems:
        raise DataError(index_dir / META_FILE, f"is damaged: {'; '.join(problems)}", rebuild_hint(index_dir))
    return meta


def verify_index_files(index_dir: Path, meta: dict) -> None:
    """Every file index.json recorded is there with the size and sampled content it had when built."""
    recorded = meta.get("files")
    if not isinstance(recorded, dict):
        return  # an index built before genq recorded its files: the structural checks still apply
    for name, fingerprint in recorded.items():
        path = index_dir / name
        if not path.is_file():
            raise DataError(path, "is missing from the index", rebuild_hint(index_dir, meta))
        if sample_fingerprint(path) != fingerprint:
            raise DataError(path, "is not the file this index was built with (changed, truncated or damaged "
                            "since)", rebuild_hint(index_dir, meta))


def check_opened_index(index_dir: Path, meta: dict, index, offsets: np.ndarray, store_path: Path) -> None:
    """What the parts say about each other agrees with index.json: counts, dimension, store offsets."""
    hint = rebuild_hint(index_dir, meta)
    if index.d != meta["dimension"]:
        raise DataError(index_dir / INDEX_FILE, f"holds {index.d}-d vectors but index.json says {meta['dimension']}",
                        hint)
    if index.ntotal != meta["passages"]:
        raise DataError(index_dir / INDEX_FILE, f"holds {index.ntotal} vectors but index.json says "
                        f"{meta['passages']} passages", hint)
    if offsets.ndim != 1 or len(offsets) != meta["passages"] or not np.issubdtype(offsets.dtype, np.integer):
        raise DataError(index_dir / OFFSETS_FILE, f"does not hold one offset per passage ({meta['passages']})", hint)
    size = store_path.stat().st_size
    if len(offsets) and (int(offsets.min()) < 0 or int(offsets.max()) >= size or np.any(np.diff(offsets) <= 0)):
        raise DataError(index_dir / OFFSETS_FILE, f"points outside the passage store ({size} bytes)", hint)


def check_index_model(index_dir: Path, meta: dict, encoder: Encoder) -> None:
    """Refuse to search with a model other than the one that built the index (same dimension, other space)."""
    built = meta.get("model_fingerprint")
    if not built or not encoder.location:
        return
    current = model_files_fingerprint(encoder.location)
    if current and current != built:
        raise GenqError(f"{index_dir} was built by {meta['model']} but the query model {encoder.name} is another "
                        "model (or was retrained since): its vectors would live in another space\n"
                        "  fix: search with the model that built the index, or rebuild the index with this one: "
                        f"genq index PASSAGES -m {encoder.name} -o {index_dir} --overwrite")


def read_index_meta(index_dir: str | Path) -> dict:
    index_dir = Path(index_dir)
    recover_interrupted_swap(index_dir)  # a swap killed between its renames left the index beside its path
    if not index_dir.exists():
        raise DataError(index_dir, "does not exist", "check the path, or build an index with `genq index PASSAGES "
                        "-m MODEL -o DIR`")
    if not index_dir.is_dir():
        raise DataError(index_dir, "is not an index directory", "build one with `genq index PASSAGES -o DIR`")
    if (index_dir / "manifest.json").exists() and not (index_dir / META_FILE).exists():
        raise DataError(index_dir, "is a `genq adapt` run directory whose index/ is missing or unfinished",
                        "rerun the same `genq adapt` command to finish it, or build one with `genq index`")
    for name in (META_FILE, INDEX_FILE, STORE_FILE, OFFSETS_FILE):
        if not (index_dir / name).exists():
            raise DataError(index_dir, f"is missing {name}; it is not a complete genq index",
                            "rebuild it with `genq index`")
    meta = check_index_meta(index_dir, read_json(index_dir / META_FILE, "index metadata"))
    verify_index_files(index_dir, meta)
    return meta


@one_writer("index_dir", "index")
def add_to_index(
    index_dir: str | Path,
    passages_path: str | Path,
    batch_size: int = 64,
    device: str | None = None,
    dtype: str = "auto",
    progress: bool = True,
) -> IndexSummary:
    """Append passages to an existing index (ids must stay unique), atomically."""
    import faiss

    started = time.perf_counter()
    index_dir, passages_path = Path(index_dir), Path(passages_path)
    meta = read_index_meta(index_dir)
    try:
        offsets = np.load(index_dir / OFFSETS_FILE)
        existing = faiss.read_index(str(index_dir / INDEX_FILE))
    except (ValueError, OSError, EOFError, RuntimeError) as exc:
        raise DataError(index_dir, f"cannot be read ({describe_error(exc)})", rebuild_hint(index_dir, meta)) from None
    check_opened_index(index_dir, meta, existing, offsets, index_dir / STORE_FILE)
    encoder = Encoder(index_model(meta, index_dir), device=device, dtype=dtype, batch_size=batch_size)
    check_index_model(index_dir, meta, encoder)
    if encoder.dimension != meta["dimension"]:
        raise GenqError(f"the index holds {meta['dimension']}-d vectors but {meta['model']} makes "
                        f"{encoder.dimension}-d ones")
    with open(index_dir / STORE_FILE, encoding="utf-8") as handle:
        seen_ids = {json.loads(line)["_id"] for line in handle}
    total = sum(1 for _ in iter_passage_file(passages_path))
    with replacing_directory(index_dir) as tmp:
        shutil.copyfile(index_dir / STORE_FILE, tmp / STORE_FILE)
        store = _StoreWriter(tmp / STORE_FILE, offsets)
        encode_started = time.perf_counter()
        added = _encode_into(passages_path, encoder, store, seen_ids, tmp / "new.npy", progress, total)
        encode_seconds = time.perf_counter() - encode_started
        np.save(tmp / OFFSETS_FILE, store.close())
        new_vectors = np.load(tmp / "new.npy")
        index = existing
        index.add(new_vectors)
        params = IndexParams(**meta["params"])
        count = meta["passages"] + added
        kept = bool(meta.get("embeddings_saved")) and (index_dir / EMBEDDINGS_FILE).exists()
        if kept:
            _append_vectors(index_dir / EMBEDDINGS_FILE, new_vectors, tmp / EMBEDDINGS_FILE)
        (tmp / "new.npy").unlink()
        # BM25's statistics (document frequencies, mean length) change with every passage: rebuild it whole
        lexical = lexical_settings_of(meta)
        lexical_seconds = _build_lexical(tmp, lexical, progress)
        _write_index(tmp, index, encoder, params, count, kept, (meta["model"], bool(meta.get("model_relative"))),
                     lexical=lexical)
    return IndexSummary(str(index_dir), passages=count, added=added, dimension=encoder.dimension,
                        index_type=params.index_type, params=asdict(params), encode_seconds=round(encode_seconds, 2),
                        lexical_seconds=lexical_seconds, lexical=_lexical_meta(lexical),
                        seconds=round(time.perf_counter() - started, 2), dtype=encoder.dtype_label)


def _append_vectors(old_path: Path, new_vectors: np.ndarray, output: Path) -> None:
    """The old vectors then the new ones, copied a chunk at a time through memory maps, so the pages are the
    file's (the kernel can drop them under pressure) rather than a 1.5 GB array of the process's own at a million
    passages. Peak RSS counts mapped pages too, so it does not fall (benchmarks/results/scale.md)."""
    old = np.load(old_path, mmap_mode="r")
    joined = reserved_memmap(output, (len(old) + len(new_vectors), old.shape[1]), dtype=old.dtype)
    for start in range(0, len(old), ADD_CHUNK):
        stop = min(start + ADD_CHUNK, len(old))
        joined[start:stop] = old[start:stop]
    joined[len(old):] = new_vectors
    joined.flush()
    del joined


def reindex(index_dir: str | Path, output_dir: str | Path, params: IndexParams, overwrite: bool = False
            ) -> IndexSummary:
    """Build another index type from an index's saved embeddings, without re-encoding.

    ``output_dir`` may be ``index_dir`` itself (with ``overwrite``): everything is copied
    into the new directory before the swap.
    """
    import faiss  # noqa: F401  (fail early if missing)

    started = time.perf_counter()
    index_dir, out_dir = Path(index_dir), Path(output_dir)
    meta = read_index_meta(index_dir)
    check_output_dir(out_dir, META_FILE, "index", overwrite)
    if not (index_dir / EMBEDDINGS_FILE).exists():
        raise GenqError(f"{index_dir} kept no embeddings; rebuild with `genq index --save-embeddings`")
    embeddings = np.load(index_dir / EMBEDDINGS_FILE, mmap_mode="r")
    resolved = params.resolved(len(embeddings), embeddings.shape[1])
    with replacing_directory(out_dir) as tmp:
        for name in (STORE_FILE, OFFSETS_FILE, EMBEDDINGS_FILE):
            shutil.copyfile(index_dir / name, tmp / name)
        if (index_dir / LEXICAL_DIR).is_dir():
            shutil.copytree(index_dir / LEXICAL_DIR, tmp / LEXICAL_DIR)
        index = build_faiss_index(embeddings, resolved)
        meta.update({"index_type": resolved.index_type, "params": asdict(resolved)})
        faiss.write_index(index, str(tmp / INDEX_FILE))
        meta["files"] = record_files(tmp, with_embeddings=True)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return IndexSummary(str(out_dir), passages=len(embeddings), dimension=embeddings.shape[1],
                        index_type=resolved.index_type, params=asdict(resolved),
                        seconds=round(time.perf_counter() - started, 2))
