"""Write genq pairs in the training-data layouts of other tools.

| format | layout | read by |
|---|---|---|
| beir | ``corpus.jsonl`` + ``gen-queries.jsonl`` + ``gen-qrels/train.tsv`` | ``GenericDataLoader(dir, prefix="gen")`` |
| dpr | one JSON array of ``question/answers/positive_ctxs/negative_ctxs/hard_negative_ctxs`` | DPR, Haystack |
| flag | JSONL ``{"query", "pos": [...], "neg": [...]}`` | FlagEmbedding fine-tuning |
| simpletransformers | TSV ``query_text, gold_passage[, hard_negative]`` | simpletransformers RetrievalModel |
| hf | ``datasets`` ``save_to_disk`` folder, or ``.parquet`` | ``datasets`` |

All writers stream the pairs file and write atomically.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

from genq.generation.pairs_file import iter_pairs
from genq.io import (
    GenqError,
    atomic_write,
    check_output_dir,
    dumps_line,
    refuse_same_path,
    replacing_directory,
    write_json_atomic,
)
from genq.locks import one_writer

EXPORT_FORMATS = ("beir", "dpr", "flag", "simpletransformers", "hf")
EXPORT_MARKER = "genq_export.json"  # marks a folder genq exported into, so a later export may replace it


def _negatives(pair: dict) -> list[dict]:
    """Negatives as ``{"passage_id", "title", "text"}`` dicts whether stored as a list or one ``negative``."""
    negatives = pair.get("negatives") or []
    if not negatives and pair.get("negative"):
        negatives = [pair["negative"]]
    return [n if isinstance(n, dict) else {"passage_id": "", "title": "", "text": str(n)} for n in negatives]


def export_beir(pairs_path: str | Path, out_dir: str | Path, prefix: str = "gen") -> dict:
    with replacing_directory(out_dir) as building:
        summary = _write_beir(pairs_path, building, prefix)
        write_json_atomic(building / EXPORT_MARKER, {**summary, "pairs": str(pairs_path)})
    return {**summary, "output": str(out_dir)}


def _write_beir(pairs_path: str | Path, out_dir: Path, prefix: str) -> dict:
    corpus: dict[str, dict] = {}
    count = 0
    with atomic_write(out_dir / f"{prefix}-queries.jsonl") as queries, \
            atomic_write(out_dir / f"{prefix}-qrels" / "train.tsv") as qrels:
        qrels.write("query-id\tcorpus-id\tscore\n")
        for _, pair in iter_pairs(pairs_path):
            count += 1
            query_id = f"genQ{count}"
            passage_id = str(pair.get("passage_id", f"p{count}"))
            queries.write(dumps_line({"_id": query_id, "text": pair["query"], "metadata": {}}))
            qrels.write(f"{query_id}\t{passage_id}\t1\n")
            corpus.setdefault(passage_id, {"_id": passage_id, "title": pair.get("title") or "",
                                           "text": pair["passage"]})
    with atomic_write(out_dir / "corpus.jsonl") as handle:
        for record in corpus.values():
            handle.write(dumps_line(record))
    return {"format": "beir", "queries": count, "passages": len(corpus)}


def _ctx(passage_id, title, text) -> dict:
    return {"title": title or "", "text": text, "passage_id": str(passage_id)}


def _dpr_records(pairs_path) -> Iterator[dict]:
    for _, pair in iter_pairs(pairs_path):
        yield {
            "dataset": "genq",
            "question": pair["query"],
            "answers": [],
            "positive_ctxs": [_ctx(pair.get("passage_id", ""), pair.get("title"), pair["passage"])],
            "negative_ctxs": [],
            "hard_negative_ctxs": [_ctx(n.get("passage_id", ""), n.get("title"), n["text"]) for n in _negatives(pair)],
        }


def export_dpr(pairs_path, out_path) -> dict:
    """DPR's training file is one JSON array; it is streamed item by item."""
    count = 0
    with atomic_write(out_path) as handle:
        handle.write("[\n")
        for record in _dpr_records(pairs_path):
            handle.write((",\n" if count else "") + json.dumps(record, ensure_ascii=False))
            count += 1
        handle.write("\n]\n")
    return {"format": "dpr", "output": str(out_path), "questions": count}


def export_flag(pairs_path, out_path) -> dict:
    count = 0
    with atomic_write(out_path) as handle:
        for _, pair in iter_pairs(pairs_path):
            handle.write(dumps_line({"query": pair["query"], "pos": [pair["passage"]],
                                     "neg": [n["text"] for n in _negatives(pair)]}))
            count += 1
    return {"format": "flag", "output": str(out_path), "queries": count}


def export_simpletransformers(pairs_path, out_path) -> dict:
    """One row per (query, gold, hard negative); pairs without negatives get the column only if any pair has one."""
    has_negatives = any(_negatives(p) for _, p in iter_pairs(pairs_path))
    count = 0
    with atomic_write(out_path, encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["query_text", "gold_passage", "hard_negative"] if has_negatives
                        else ["query_text", "gold_passage"])
        for _, pair in iter_pairs(pairs_path):
            negatives = _negatives(pair)
            if has_negatives:
                for negative in negatives or [{"text": ""}]:
                    writer.writerow([pair["query"], pair["passage"], negative["text"]])
                    count += 1
            else:
                writer.writerow([pair["query"], pair["passage"]])
                count += 1
    return {"format": "simpletransformers", "output": str(out_path), "rows": count}


def export_hf(pairs_path, out_path) -> dict:
    import datasets

    def rows():
        for _, pair in iter_pairs(pairs_path):
            negatives = _negatives(pair)
            yield {"query": pair["query"], "passage_id": str(pair.get("passage_id", "")),
                   "passage": pair["passage"], "title": pair.get("title") or "",
                   "negatives": [n["text"] for n in negatives]}

    dataset = datasets.Dataset.from_generator(rows, features=datasets.Features({
        "query": datasets.Value("string"), "passage_id": datasets.Value("string"),
        "passage": datasets.Value("string"), "title": datasets.Value("string"),
        "negatives": datasets.Sequence(datasets.Value("string"))}))
    out_path = Path(out_path)
    if out_path.suffix == ".parquet":
        with atomic_write(out_path, mode="wb") as handle:
            dataset.to_parquet(handle)
    else:
        with replacing_directory(out_path) as building:
            dataset.save_to_disk(str(building))
            write_json_atomic(building / EXPORT_MARKER, {"format": "hf", "pairs": str(pairs_path),
                                                         "rows": len(dataset)})
    return {"format": "hf", "output": str(out_path), "rows": len(dataset)}


@one_writer("out", "export")
def export_pairs(pairs_path: str | Path, format: str, out: str | Path, overwrite: bool = False) -> dict:
    """Export ``pairs_path`` to ``out`` in ``format``; returns a small summary.

    An existing export is replaced only with ``overwrite`` (a folder only if genq exported
    into it: it holds ``genq_export.json``), and never the pairs file itself.
    """
    writers = {"beir": export_beir, "dpr": export_dpr, "flag": export_flag,
               "simpletransformers": export_simpletransformers, "hf": export_hf}
    if format not in writers:
        raise GenqError(f"unknown export format {format!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    out = Path(out)
    refuse_same_path([pairs_path], out)
    if format == "beir" or (format == "hf" and out.suffix != ".parquet"):
        check_output_dir(out, EXPORT_MARKER, f"{format} export", overwrite)
    elif out.exists() and not overwrite:
        raise GenqError(f"{out} already exists\n  fix: pass --overwrite to replace it once the export is complete, "
                        "or choose another -o/--output")
    created = next((d for d in reversed([out, *out.parents]) if not d.exists()), None)
    try:
        return writers[format](pairs_path, out)
    except BaseException:
        # folders this export created are removed again if nothing was written into them
        if created is not None and created.is_dir() and not any(p.is_file() for p in created.rglob("*")):
            shutil.rmtree(created, ignore_errors=True)
        raise
