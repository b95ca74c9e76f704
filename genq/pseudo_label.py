"""GPL's pseudo-labelling stage: a cross-encoder grades every (query, positive, negatives) record.

GPL (Wang et al., NAACL 2022) adds this one step to GenQ: generated queries are noisy and
mined negatives are sometimes relevant, so instead of treating every negative as equally
wrong, a cross-encoder scores the query against the positive and against each negative and
the bi-encoder learns the score *margin* (MarginMSE, ``genq train --loss margin-mse``). A
false negative gets a small or negative margin and stops being pushed away.

Input: pairs with mined negatives (``genq mine-negatives``). Output: the same records with

    "positive_score": CE(query, positive)
    "negatives": [{"passage_id", "title", "text", "score": CE(query, negative),
                   "margin": positive_score - score}, ...]

Raw cross-encoder logits are kept (no sigmoid), as GPL does. ``drop_inverted`` is the
denoising option: a record whose positive scores below one of its negatives is dropped,
since the teacher itself says the generated query fits another passage better.

Long runs resume: records are scored and appended in chunks to ``OUT.partial``; after each
chunk ``OUT.partial.progress.json`` records how many input records are done and how many
bytes of output are valid. A rerun cuts the partial file to that size and goes on, so a
crash between the two writes loses nothing and doubles nothing. The finished file is renamed
to ``OUT`` only when complete, so ``OUT`` is never half-written and ``--overwrite`` replaces
an old result only once the new one is whole.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from genq import __version__
from genq.encode import passage_text
from genq.generation.pairs_file import iter_pairs
from genq.io import (
    DataError,
    GenqError,
    JsonlAppender,
    describe_file,
    file_fingerprint,
    is_described_file,
    read_json,
    refuse_same_path,
    write_json_atomic,
)
from genq.locks import one_writer
from genq.retrieval import DEFAULT_RERANKER, Reranker

logger = logging.getLogger(__name__)

DEFAULT_CROSS_ENCODER = DEFAULT_RERANKER


@dataclass
class PseudoLabelConfig:
    cross_encoder: str = DEFAULT_CROSS_ENCODER
    batch_size: int | None = None  # None: by the GPU's free memory, 32 on a CPU
    max_length: int = 512  # the cross-encoder's input: query and passage together
    drop_inverted: bool = False
    chunk_records: int = 256
    device: str | None = None
    dtype: str = "auto"

    def validate(self) -> None:
        if (self.batch_size is not None and self.batch_size < 1) or self.chunk_records < 1 or self.max_length < 8:
            raise GenqError("batch size and chunk size must be at least 1, max length at least 8")

    def settings(self) -> dict:
        """What defines the output; a resume with other values is refused."""
        return {"cross_encoder": self.cross_encoder, "max_length": self.max_length,
                "drop_inverted": self.drop_inverted}


@dataclass
class PseudoLabelSummary:
    output: str
    records: int = 0
    labelled: int = 0
    written: int = 0
    dropped_inverted: int = 0
    skipped_without_negatives: int = 0
    negatives_scored: int = 0
    resumed_after: int = 0
    already_complete: bool = False
    mean_margin: float | None = None
    inverted_share: float | None = None
    pairs_per_second: float = 0.0
    seconds: float = 0.0
    device: str = ""
    dtype: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def meta_path_for(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name.removesuffix(".jsonl") + ".meta.json")


def _partial_paths(output: Path) -> tuple[Path, Path]:
    partial = output.with_name(output.name + ".partial")
    return partial, partial.with_name(partial.name + ".progress.json")


def _negatives_of(record: dict, path: Path, line: int) -> list[dict]:
    """The record's negatives as dicts; ``[]`` where mining found none (such a pair is skipped and counted)."""
    negatives = record.get("negatives")
    if negatives is None and record.get("negative") is not None:
        negatives = [record["negative"]]
    if isinstance(negatives, list) and not negatives:
        return []  # `genq mine-negatives` found no candidate in its window for this pair
    if not negatives:
        raise DataError(path, "this pair has no mined negatives, so there is nothing to grade it against",
                        "run `genq mine-negatives PAIRS --corpus PASSAGES -o WITH_NEGATIVES` first and "
                        "pseudo-label its output", line)
    if not isinstance(negatives, list):
        raise DataError(path, f"\"negatives\" is a {type(negatives).__name__}, not a list",
                        "write negatives as [{\"passage_id\", \"title\", \"text\"}, ...]", line)
    cleaned = []
    for negative in negatives:
        if isinstance(negative, str):
            negative = {"text": negative}
        if not isinstance(negative, dict) or not isinstance(negative.get("text"), str) or not negative["text"].strip():
            raise DataError(path, "a negative is neither a non-empty string nor {\"text\": ...}",
                            "write negatives as [{\"passage_id\", \"title\", \"text\"}, ...]", line)
        cleaned.append(dict(negative))
    return cleaned


def _check_input(path: Path) -> int:
    """Every record has a query, a passage and negatives: checked before any model loads."""
    count = with_negatives = 0
    for line, record in iter_pairs(path):
        with_negatives += bool(_negatives_of(record, path, line))
        count += 1
    if count == 0:
        raise DataError(path, "holds no pairs", "pseudo-label the output of `genq mine-negatives`")
    if with_negatives == 0:
        raise DataError(path, "no pair has a mined negative, so there is nothing to grade",
                        "mine again with a wider window (--neg-range-max) or no false-negative cut "
                        "(--neg-relative-margin none)")
    return count


def _records(path: Path, skip: int) -> Iterator[tuple[int, dict]]:
    for number, (line, record) in enumerate(iter_pairs(path)):
        if number >= skip:
            yield line, record


@one_writer("output_path", "labelled pairs file")
def pseudo_label(
    pairs_path: str | Path,
    output_path: str | Path,
    config: PseudoLabelConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
    reranker: Reranker | None = None,
) -> PseudoLabelSummary:
    """Score every pair's positive and negatives with the cross-encoder and write margins; resumable."""
    from tqdm.auto import tqdm

    config = config or PseudoLabelConfig()
    config.validate()
    started = time.perf_counter()
    pairs_path, output = Path(pairs_path), Path(output_path)
    if not pairs_path.exists():
        raise DataError(pairs_path, "does not exist", "check the pairs file path")
    refuse_same_path([pairs_path], output)
    partial, progress_path = _partial_paths(output)
    meta_path = meta_path_for(output)
    settings = {**config.settings(), "input": str(pairs_path.resolve()),
                "input_fingerprint": file_fingerprint(pairs_path)}
    summary = PseudoLabelSummary(str(output))

    if output.exists() and not overwrite:
        meta = read_json(meta_path, "pseudo-label metadata") if meta_path.exists() else None
        if meta is None or not is_described_file(meta.get("output_file"), output):
            if partial.exists() and progress_path.exists():
                meta = None  # killed between writing the meta and renaming: the finished partial is renamed below
            else:
                raise GenqError(f"{output} exists and no {meta_path.name} describes it: `genq pseudo-label` did not "
                                "write it, or it was changed since; it is left alone\n"
                                "  fix: choose another --output, or pass --overwrite to replace it")
    if output.exists() and not overwrite and meta is not None:
        if meta.get("settings") != settings:
            raise GenqError(f"{output} holds pseudo-labels made with other settings or another input\n"
                            "  fix: choose another --output, or pass --overwrite to label again")
        summary.__dict__.update({k: v for k, v in meta.get("summary", {}).items()
                                 if k in summary.__dict__ and k != "output"})
        summary.already_complete = True
        return summary

    summary.records = _check_input(pairs_path)
    done, valid_bytes = 0, 0
    if overwrite:
        partial.unlink(missing_ok=True)
        progress_path.unlink(missing_ok=True)
    elif partial.exists() and progress_path.exists():
        state = read_json(progress_path, "pseudo-label progress")
        if state.get("settings") != settings:
            raise GenqError(f"{partial} is an interrupted run with other settings or another input\n"
                            "  fix: rerun with the same settings to finish it, or pass --overwrite to start over")
        done, valid_bytes = int(state["records_done"]), int(state["output_bytes"])
        summary.written, summary.dropped_inverted = int(state["written"]), int(state["dropped_inverted"])
        summary.skipped_without_negatives = int(state.get("skipped_without_negatives", 0))
        margin_sum, inverted = float(state["margin_sum"]), int(state["inverted"])
        summary.resumed_after = done
    elif partial.exists():
        partial.unlink()  # a partial without its progress record holds nothing known to be valid
    if not summary.resumed_after:
        margin_sum, inverted = 0.0, 0
    if partial.exists():
        with open(partial, "rb+") as handle:  # cut whatever was appended after the last recorded chunk
            handle.truncate(valid_bytes)

    reranker = reranker or Reranker(config.cross_encoder, device=config.device, dtype=config.dtype,
                                    batch_size=config.batch_size, max_length=config.max_length)
    summary.device, summary.dtype = reranker.device, str(reranker.dtype).removeprefix("torch.")
    bar = tqdm(total=summary.records, initial=done, desc="pseudo-labelling", unit=" pairs", disable=not progress,
               file=sys.stderr)
    scored_started = time.perf_counter()

    def label(chunk: list[tuple[int, dict]]) -> list[dict]:
        nonlocal margin_sum, inverted
        texts, owners = [], []
        negatives_by_record, graded = [], []
        for line, record in chunk:
            negatives = _negatives_of(record, pairs_path, line)
            if not negatives:
                summary.skipped_without_negatives += 1
                continue
            graded.append((line, record))
            negatives_by_record.append(negatives)
            query = record["query"]
            texts.append((query, passage_text({"title": record.get("title", ""), "text": record["passage"]})))
            texts += [(query, passage_text({"title": n.get("title", ""), "text": n["text"]})) for n in negatives]
            owners.append(len(negatives))
        scores = reranker.score_pairs(texts)
        kept, position = [], 0
        for (_line, record), negatives in zip(graded, negatives_by_record):
            positive = float(scores[position])
            negative_scores = scores[position + 1:position + 1 + len(negatives)]
            position += 1 + len(negatives)
            for negative, score in zip(negatives, negative_scores):
                negative["score"] = round(float(score), 5)
                negative["margin"] = round(positive - float(score), 5)
            record["positive_score"] = round(positive, 5)
            record["negatives"] = negatives
            margins = [n["margin"] for n in negatives]
            margin_sum += float(np.mean(margins))
            summary.negatives_scored += len(negatives)
            if min(margins) < 0:
                inverted += 1
                if config.drop_inverted:
                    summary.dropped_inverted += 1
                    continue
            kept.append(record)
        return kept

    with JsonlAppender(partial) as writer:
        chunk: list[tuple[int, dict]] = []

        def flush() -> None:
            nonlocal done
            records = label(chunk)
            summary.written += writer.write_batch(records)
            done += len(chunk)
            summary.labelled += len(chunk)
            bar.update(len(chunk))
            write_json_atomic(progress_path, {
                "settings": settings, "records_done": done, "output_bytes": partial.stat().st_size,
                "written": summary.written, "dropped_inverted": summary.dropped_inverted,
                "skipped_without_negatives": summary.skipped_without_negatives, "margin_sum": margin_sum,
                "inverted": inverted})
            chunk.clear()

        for item in _records(pairs_path, done):
            chunk.append(item)
            if len(chunk) >= config.chunk_records:
                flush()
        if chunk:
            flush()
    bar.close()
    scoring_seconds = time.perf_counter() - scored_started
    graded = done - summary.skipped_without_negatives
    summary.mean_margin = round(margin_sum / max(graded, 1), 4)
    summary.inverted_share = round(inverted / max(graded, 1), 4)
    summary.pairs_per_second = round(summary.labelled / max(scoring_seconds, 1e-9), 2)
    summary.seconds = round(time.perf_counter() - started, 2)
    if summary.written == 0:
        raise GenqError(f"every pair was dropped as inverted ({summary.dropped_inverted} of {summary.records}); "
                        f"nothing to train on\n  fix: run without --drop-inverted, or check the cross-encoder")
    # the meta names the finished file before it takes OUT's place, so a kill between the two is recognised
    write_json_atomic(meta_path, {"genq_version": __version__, "stage": "pseudo-label", "settings": settings,
                                  "summary": summary.to_dict(), "output_file": describe_file(partial),
                                  "created": time.strftime("%FT%T%z")})
    os.replace(partial, output)
    progress_path.unlink(missing_ok=True)
    return summary
