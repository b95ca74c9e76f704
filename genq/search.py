"""Searching an index directory: the Python API behind ``genq search``, ``genq serve`` and evaluate.

    from genq.search import Searcher
    searcher = Searcher.load("runs/wiki/index")
    for hit in searcher.search("how do I reset the router", k=5):
        print(hit.rank, hit.score, hit.title, hit.dense_rank, hit.bm25_rank)

Three modes over one index: ``dense`` (the Faiss index), ``bm25`` (the index's BM25 part)
and ``hybrid`` (both, fused; the default wherever the index has both parts, because on
real collections the fusion beats either alone: ``benchmarks/results/hybrid.md``). A
cross-encoder loaded with ``reranker=`` rescores the top ``rerank_depth`` of any mode.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from genq.ann import apply_search_params
from genq.encode import Encoder
from genq.index import (
    INDEX_FILE,
    LEXICAL_DIR,
    OFFSETS_FILE,
    STORE_FILE,
    check_index_model,
    check_opened_index,
    index_model,
    lexical_settings_of,
    locate_index,
    read_index_meta,
    rebuild_hint,
)
from genq.io import DataError, ErrorTally, GenqError, atomic_write, describe_error, iter_jsonl
from genq.retrieval import (
    DEFAULT_RERANK_FUSION,
    RRF_K,
    SEARCH_MODES,
    Fused,
    LexicalIndex,
    Reranker,
    check_fusion,
    check_rerank_fusion,
    fuse,
    single,
)

logger = logging.getLogger(__name__)


@dataclass
class Hit:
    """One result. ``score`` is what the ranking used (fused, BM25, cosine, cross-encoder or blended);
    the per-retriever scores and ranks say where each retriever put the passage (None: not
    among its candidates)."""

    rank: int
    id: str
    score: float
    title: str
    text: str
    doc_id: str = ""
    dense_score: float | None = None
    dense_rank: int | None = None
    bm25_score: float | None = None
    bm25_rank: int | None = None
    rerank_score: float | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class SearchOptions:
    """How a search runs; the defaults are what every surface (CLI, HTTP, Python) uses.

    ``mode`` None means hybrid where the index has a BM25 part, else dense. ``alpha`` is the
    share of the dense side in the fusion. ``candidates`` is how deep each side is searched
    before fusing (at least k). ``rerank`` None means "if a reranker is loaded";
    ``rerank_fusion`` and ``rerank_weight`` say whether the cross-encoder's score replaces the
    ranking's or is blended with it (:func:`genq.retrieval.blend_rerank`).
    """

    mode: str | None = None
    alpha: float = 0.5
    fusion: str = "minmax"
    candidates: int = 100
    rerank: bool | None = None
    rerank_depth: int = 50
    rerank_fusion: str = DEFAULT_RERANK_FUSION
    rerank_weight: float = 0.5
    rrf_k: int = RRF_K

    def validate(self) -> SearchOptions:
        if self.mode is not None and self.mode not in SEARCH_MODES:
            raise GenqError(f"unknown search mode {self.mode!r}; choose one of {', '.join(SEARCH_MODES)}")
        check_fusion(self.fusion, self.alpha)
        check_rerank_fusion(self.rerank_fusion, self.rerank_weight)
        if self.candidates < 1 or self.rerank_depth < 1:
            raise GenqError("candidates and rerank depth must be at least 1")
        return self


OWN_RERANKER = "own"  # what a bare --rerank asks for: the run's own reranker, else the hub's MS MARCO one
RUN_RERANKER_DIR = "reranker"  # beside the index in a `genq adapt --reranker` run directory


def own_reranker(index_dir: str | Path) -> Path | None:
    """The reranker trained on this index's own corpus (RUN/reranker beside RUN/index), when complete."""
    from genq.models import RUN_RECORD

    candidate = locate_index(index_dir).resolve().parent / RUN_RERANKER_DIR
    try:
        record = json.loads((candidate / RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return candidate if isinstance(record, dict) and record.get("kind") == "reranker" and record.get("complete") \
        else None


def choose_reranker(requested: str | None, index_dir: str | Path | None = None) -> str | None:
    """The cross-encoder to load for ``--rerank``: as named, or for a bare ``--rerank`` the index's own."""
    from genq.retrieval import DEFAULT_RERANKER

    if requested != OWN_RERANKER or Path(requested).exists():
        return requested
    own = own_reranker(index_dir) if index_dir is not None else None
    if own is not None:
        from genq.train_reranker import learned_little_record

        weak = learned_little_record(own)
        if weak:
            raise GenqError(f"{own} {weak}: reranking with it would scramble the ranking it reranks\n"
                            "  fix: train it again with more steps (genq train-reranker ... --epochs 3), rerank with "
                            "a trained cross-encoder (--rerank MODEL), or search without --rerank")
        return str(own)
    logger.warning("note: %s has no reranker of its own (`genq adapt --reranker` or `genq train-reranker` trains "
                   "one): reranking with %s", index_dir or "the evaluation", DEFAULT_RERANKER)
    return DEFAULT_RERANKER


def load_reranker(requested: str | None, index_dir: str | Path | None = None, generator: str | None = None,
                  device: str | None = None, dtype: str = "auto"):
    """What ``--rerank`` names, loaded: a cross-encoder (bare ``--rerank``: the run's own, see
    :func:`choose_reranker`), or ``query-likelihood``: the generator's log p(query | passage) (UPR)."""
    from genq.generation.likelihood import QUERY_LIKELIHOOD, QueryLikelihoodReranker

    if requested is None:
        return None
    if requested == QUERY_LIKELIHOOD and not Path(requested).exists():
        return QueryLikelihoodReranker(likelihood_generator(generator, index_dir, device, dtype))
    if generator:
        raise GenqError(f"--rerank-generator goes with --rerank {QUERY_LIKELIHOOD}, not with a cross-encoder\n"
                        f"  fix: --rerank {QUERY_LIKELIHOOD} --rerank-generator {generator}, or leave out "
                        "--rerank-generator")
    return Reranker(choose_reranker(requested, index_dir), device=device, dtype=dtype)


def likelihood_generator(generator: str | None, index_dir: str | Path | None = None, device: str | None = None,
                         dtype: str = "auto"):
    """The generator that scores queries: as named, else the one the run generated its pairs with (RUN/
    pairs.meta.json beside RUN/index, prompt included), else genq's default (its offline stand-in without a hub)."""
    from genq.generation.settings import DEFAULT_GENERATOR, GenerationConfig
    from genq.models import offline_fallback

    if generator:
        return GenerationConfig(model=generator, device=device, dtype=dtype)
    recorded = _run_generator(index_dir)
    if recorded is not None:
        logger.info("query likelihood under the run's generator %s", recorded.get("gguf_file") or recorded["model"])
        return GenerationConfig(model=recorded["model"], gguf_file=recorded.get("gguf_file"),
                                prompt_template=recorded.get("prompt_template"),
                                prompt_style=recorded.get("prompt_style") or "auto", device=device, dtype=dtype)
    found = offline_fallback(DEFAULT_GENERATOR)
    return GenerationConfig(model=found[0] if found else DEFAULT_GENERATOR, device=device, dtype=dtype)


def _run_generator(index_dir: str | Path | None) -> dict | None:
    """The generator recorded by the run that built ``index_dir``, if it is still there: the one of its last
    generation round (RUN/pairs.roundN.meta.json: a generator tuned on the corpus), else RUN/pairs.meta.json's."""
    if index_dir is None:
        return None
    run_dir = locate_index(index_dir).parent
    rounds = sorted(run_dir.glob("pairs.round*.meta.json"),
                    key=lambda path: int("".join(filter(str.isdigit, path.name)) or 0), reverse=True)
    for meta_path in [*rounds, run_dir / "pairs.meta.json"]:
        try:
            generator = json.loads(meta_path.read_text(encoding="utf-8")).get("generator")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(generator, dict) and isinstance(generator.get("model"), str) and \
                (Path(generator["model"]).exists() or "/" in generator["model"]):
            return generator
    return None


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


def _directory_version(directory: Path) -> tuple[int, int] | None:
    try:
        status = os.stat(directory)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _open_parts(directory: Path, ef_search: int | None, nprobe: int | None, lexical: bool):
    """index.json, the Faiss index, the passage store and the BM25 part, each checked against the others."""
    import faiss

    meta = read_index_meta(directory)
    try:
        index = faiss.read_index(str(directory / INDEX_FILE))
    except RuntimeError as exc:
        raise DataError(directory / INDEX_FILE, f"Faiss could not read it ({str(exc).splitlines()[0]})",
                        rebuild_hint(directory, meta)) from None
    params = dict(meta.get("params", {}))
    if ef_search:
        params["ef_search"] = ef_search
    if nprobe:
        params["nprobe"] = nprobe
    apply_search_params(index, params)
    try:
        store = PassageStore(directory)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(directory / OFFSETS_FILE, f"cannot be read ({describe_error(exc)})",
                        rebuild_hint(directory, meta)) from None
    try:
        check_opened_index(directory, meta, index, store.offsets, store.path)
        lexical_index = None
        if lexical and lexical_settings_of(meta) is not None and (directory / LEXICAL_DIR).is_dir():
            try:
                lexical_index = LexicalIndex.load(directory / LEXICAL_DIR)
            except (ValueError, OSError, KeyError, TypeError) as exc:
                raise DataError(directory / LEXICAL_DIR, f"cannot be read ({describe_error(exc)})",
                                rebuild_hint(directory, meta)) from None
            if len(lexical_index) != index.ntotal:
                raise DataError(directory / LEXICAL_DIR, f"the BM25 index holds {len(lexical_index)} passages but "
                                f"the dense index {index.ntotal}", rebuild_hint(directory, meta))
        elif lexical:
            logger.warning("note: %s has no BM25 part (built before hybrid search, or with --no-lexical): dense "
                           "search only; rebuild it with `genq index` for hybrid search", directory)
    except BaseException:
        store.close()
        raise
    return meta, index, store, lexical_index


def query_encoder(model: str, device: str | None, dtype: str):
    """The fastest encoder for queries: the torch-free CTranslate2 copy where it applies (a BERT-family model,
    the CPU, no --dtype asked for), else sentence-transformers."""
    if dtype in ("auto", "float32"):
        from genq.query_encoder import light_query_encoder

        light = light_query_encoder(model, device)
        if light is not None:
            return light
    return Encoder(model, device=device, dtype=dtype)


class Searcher:
    """A loaded index, its passage store and its model; thread-safe for concurrent searches."""

    def __init__(self, index, store: PassageStore, encoder: Encoder, meta: dict, directory: Path,
                 lexical: LexicalIndex | None = None, reranker: Reranker | None = None):
        self.index = index
        self.store = store
        self.encoder = encoder
        self.meta = meta
        self.directory = directory
        self.lexical = lexical
        self.reranker = reranker
        self._encode_lock = threading.Lock()
        self._rerank_lock = threading.Lock()

    @property
    def modes(self) -> tuple[str, ...]:
        """The modes this index can serve."""
        return SEARCH_MODES if self.lexical is not None else ("dense",)

    @property
    def default_mode(self) -> str:
        return "hybrid" if self.lexical is not None else "dense"

    @classmethod
    def load(cls, index_dir: str | Path, model: str | Encoder | None = None, device: str | None = None,
             dtype: str = "auto", ef_search: int | None = None, nprobe: int | None = None,
             reranker: str | Reranker | None = None, lexical: bool = True,
             rerank_generator: str | None = None) -> Searcher:
        """Open ``index_dir``; the model recorded in index.json is used unless ``model`` overrides it.

        The BM25 part is opened when the index has one (``lexical=False`` skips it); an index
        built before genq had hybrid search opens dense-only, with a note. ``reranker`` loads
        a cross-encoder (a hub id or directory), or ``query-likelihood`` the generator
        ``rerank_generator`` (default: the run's), that then reranks every search.
        """
        directory = locate_index(index_dir)
        # an `index --overwrite` may swap the directory while it is being opened: the parts would then come
        # from two versions. The swap renames the directory, so its inode tells; the open is retried once.
        for attempt in range(2):
            version = _directory_version(directory)
            try:
                meta, index, store, lexical_index = _open_parts(directory, ef_search, nprobe, lexical)
            except DataError:
                if attempt or _directory_version(directory) == version:
                    raise
                time.sleep(0.2)  # between the swap's two renames the path may be missing for a moment
                continue
            if attempt or _directory_version(directory) == version:
                break
            store.close()
        else:  # pragma: no cover (the loop breaks or raises)
            raise AssertionError
        encoder = model if isinstance(model, Encoder) else query_encoder(model or index_model(meta, directory),
                                                                         device, dtype)
        check_index_model(directory, meta, encoder)
        if encoder.dimension != meta["dimension"]:
            raise GenqError(f"the model makes {encoder.dimension}-d vectors but the index holds "
                            f"{meta['dimension']}-d ones; search with the model that built the index")
        if isinstance(reranker, str):
            reranker = load_reranker(reranker, directory, rerank_generator, device, dtype)
        return cls(index, store, encoder, meta, directory, lexical_index, reranker)

    def __len__(self) -> int:
        return self.index.ntotal

    def search(self, query: str, k: int = 10, mode: str | None = None, **options) -> list[Hit]:
        """Ranked hits for one query; ``options`` are :class:`SearchOptions` fields (alpha, fusion, ...)."""
        return self.search_batch([query], k, mode=mode, **options)[0]

    def resolve_options(self, options: SearchOptions) -> tuple[str, bool]:
        """The concrete mode and whether to rerank, or a GenqError naming the fix."""
        options.validate()
        mode = options.mode or self.default_mode
        if mode not in self.modes:
            raise GenqError(f"{self.directory} has no BM25 part, so it cannot search in {mode} mode\n"
                            "  fix: use --mode dense, or rebuild the index with `genq index` (it builds BM25 too)")
        if options.rerank and self.reranker is None:
            raise GenqError("reranking was asked for but no cross-encoder is loaded\n"
                            "  fix: pass --rerank MODEL (e.g. cross-encoder/ms-marco-MiniLM-L6-v2)")
        return mode, self.reranker is not None if options.rerank is None else options.rerank

    def search_batch(self, queries: list[str], k: int = 10, mode: str | None = None,
                     options: SearchOptions | None = None, **fields) -> list[list[Hit]]:
        """Ranked hits for each query: one encode call, one Faiss call and one BM25 pass per batch."""
        if not queries:
            return []
        options = options or SearchOptions(mode=mode, **fields)
        mode, rerank = self.resolve_options(options)
        k = max(1, min(int(k), self.index.ntotal))
        depth = max(k, options.rerank_depth) if rerank else k
        candidates = max(depth, options.candidates) if mode == "hybrid" else depth
        dense = bm25 = None
        if mode in ("dense", "hybrid"):
            with self._encode_lock:
                vectors = self.encoder.encode_queries(list(queries))
            dense = self.index.search(vectors, candidates)
        if mode in ("bm25", "hybrid"):
            bm25 = self.lexical.search(list(queries), candidates)
        results = []
        for i, query in enumerate(queries):
            if mode == "hybrid":
                ranked = fuse(dense[1][i], dense[0][i], bm25[1][i], bm25[0][i], options.fusion, options.alpha,
                              options.rrf_k)
            else:
                scores, rows = dense if mode == "dense" else bm25
                ranked = single(rows[i], scores[i], mode)
            ranked = ranked[:depth]
            passages = [self.store.get(c.row) for c in ranked]
            if rerank:
                with self._rerank_lock:
                    reordered = self.reranker.rerank(query, list(zip(ranked, passages)), passages,
                                                     options.rerank_depth, [c.score for c in ranked],
                                                     options.rerank_fusion, options.rerank_weight)
            else:
                reordered = [(item, None, None) for item in zip(ranked, passages)]
            results.append([_hit(rank, candidate, passage, final, cross) for rank, ((candidate, passage), final, cross)
                            in enumerate(reordered[:k], start=1)])
        return results

    def info(self) -> dict:
        own = own_reranker(self.directory) if self.reranker else None
        return {"index": model_label(str(self.directory.resolve())), "passages": self.index.ntotal,
                "model": model_label(index_model(self.meta, self.directory)),
                "dimension": self.meta["dimension"], "index_type": self.meta["index_type"],
                "params": self.meta.get("params", {}), "similarity": self.meta.get("similarity"),
                "modes": list(self.modes), "default_mode": self.default_mode, "lexical": self.meta.get("lexical"),
                "reranker": model_label(self.reranker.name) if self.reranker else None,
                "reranker_adapted": own is not None and Path(self.reranker.name).resolve() == own,
                "genq_version": self.meta.get("genq_version")}


def model_label(name: str) -> str:
    """A model's name for display: a hub id as it is, a local directory by its last two parts (no absolute path)."""
    path = Path(name)
    return "/".join(path.parts[-2:]) if path.is_absolute() else name


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _hit(rank: int, candidate: Fused, passage: dict, final: float | None, rerank_score: float | None) -> Hit:
    score = candidate.score if final is None else final
    return Hit(rank, passage["_id"], _float(score), passage.get("title", ""), passage["text"],
               passage.get("doc_id", passage["_id"]), _float(candidate.dense_score), candidate.dense_rank,
               _float(candidate.bm25_score), candidate.bm25_rank, _float(rerank_score))


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
    # by "\n" only: a query may hold U+2028 or a form feed, which str.splitlines would cut it at
    lines = [x.strip() for x in path.read_text(encoding="utf-8").replace("\r\n", "\n").split("\n")]
    queries = [(str(n), text) for n, text in enumerate((x for x in lines if x), start=1)]
    if not queries:
        raise DataError(path, "holds no queries", "put one query per line")
    return queries


def iter_run(searcher: Searcher, queries: list[tuple[str, str]], k: int, batch_size: int = 64,
             options: SearchOptions | None = None) -> Iterator[tuple[str, list[Hit]]]:
    for start in range(0, len(queries), batch_size):
        batch = queries[start:start + batch_size]
        for (query_id, _), hits in zip(batch, searcher.search_batch([t for _, t in batch], k, options=options)):
            yield query_id, hits


def write_trec_run(searcher: Searcher, queries: list[tuple[str, str]], out_path: str | Path, k: int = 100,
                   run_name: str = "genq", options: SearchOptions | None = None) -> dict:
    """Search every query and write a TREC run file (``qid Q0 docid rank score run``)."""
    started = time.perf_counter()
    count = 0
    if options is not None:
        searcher.resolve_options(options)  # a bad mode fails before the file is opened
    with atomic_write(out_path) as handle:
        for query_id, hits in iter_run(searcher, queries, k, options=options):
            for name in (query_id, *(hit.id for hit in hits)):
                if not name or any(character.isspace() for character in name):
                    raise GenqError(f"the id {name!r} is empty or holds whitespace, which a TREC run file (columns "
                                    "split by whitespace) cannot carry\n  fix: write ids without spaces, or use "
                                    "--json output instead")
            for hit in hits:
                handle.write(f"{query_id} Q0 {hit.id} {hit.rank} {hit.score:.6f} {run_name}\n")
                count += 1
    return {"queries": len(queries), "lines": count, "output": str(out_path),
            "seconds": round(time.perf_counter() - started, 2)}
