"""Pseudo-queries cut from the passage itself: the generator-free baseline (and a source to mix in).

Contriever (Izacard et al., 2022) trains a retriever on random spans of a document, the
inverse cloze task (Lee et al., 2019) on one of its sentences; neither needs a generator, so
cropping costs nothing next to sampling queries (seconds for a corpus a CPU generates for
in hours). A crop is a sentence of the passage when it has a few of fitting length, else a
random run of words; the pair's passage is the whole passage, as it is indexed.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from genq.corpus import load_passages
from genq.generation.prompts import normalize_query
from genq.generation.run import meta_path_for
from genq.io import GenqError, atomic_write, dumps_line, refuse_same_path, write_json_atomic

SOURCE = "cropped"  # the "source" field of a cropped pair, beside generated pairs in a mixed file
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")


@dataclass
class CropSummary:
    output: str
    passages: int = 0
    pairs: int = 0
    sentences: int = 0  # crops that are a whole sentence of their passage
    spans: int = 0  # crops that are a random run of words
    passages_without_crop: int = 0  # too short to cut a query from
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def crops_of(text: str, count: int, rng: random.Random, min_words: int = 4,
             max_words: int = 12) -> list[tuple[str, str]]:
    """Up to ``count`` distinct (crop, kind) of ``text``: its sentences of ``min_words``..``max_words`` words
    first (in random order), then random runs of that many words. A passage shorter than ``min_words`` + 1
    words gives none: its crop would be the passage itself."""
    words = text.split()
    if len(words) <= min_words:
        return []
    sentences = [s.strip().rstrip(" .!?;") for s in _SENTENCE_END.split(text)
                 if min_words <= len(s.split()) <= max_words]
    rng.shuffle(sentences)
    crops: list[tuple[str, str]] = []
    seen: set[str] = set()
    for sentence in sentences[:count]:
        if normalize_query(sentence) not in seen and len(sentence.split()) < len(words):
            seen.add(normalize_query(sentence))
            crops.append((sentence, "sentence"))
    for _ in range(4 * count):
        if len(crops) >= count:
            break
        length = rng.randint(min_words, min(max_words, len(words) - 1))
        start = rng.randrange(len(words) - length + 1)
        span = " ".join(words[start:start + length])
        if normalize_query(span) and normalize_query(span) not in seen:
            seen.add(normalize_query(span))
            crops.append((span, "span"))
    return crops


def crop_queries(passages_path: str | Path, output_path: str | Path, per_passage: int = 3, seed: int = 42,
                 min_words: int = 4, max_words: int = 12, limit: int | None = None) -> CropSummary:
    """Write ``per_passage`` cropped pseudo-queries per passage as a pairs file (and its ``.meta.json``).

    Seconds even for a large corpus, so the file is written whole and renamed into place (nothing to resume).
    """
    if per_passage < 1:
        raise GenqError("--queries-per-passage must be at least 1")
    if not 1 <= min_words <= max_words:
        raise GenqError(f"cropped queries need 1 <= --min-words <= --max-words, got {min_words} and {max_words}")
    started = time.perf_counter()
    output_path = Path(output_path)
    refuse_same_path([passages_path], output_path)
    passages = load_passages(passages_path)[:limit]
    summary = CropSummary(str(output_path), passages=len(passages))
    rng = random.Random(seed)
    with atomic_write(output_path) as handle:
        for passage in passages:
            crops = crops_of(passage["text"], per_passage, rng, min_words, max_words)
            summary.passages_without_crop += not crops
            for crop, kind in crops:
                handle.write(dumps_line({"query": crop, "passage_id": passage["_id"], "passage": passage["text"],
                                         "title": passage.get("title") or "", "source": SOURCE}))
                summary.pairs += 1
                summary.sentences += kind == "sentence"
                summary.spans += kind == "span"
    summary.seconds = round(time.perf_counter() - started, 2)
    write_json_atomic(meta_path_for(output_path), {
        "source": SOURCE, "passages_file": str(Path(passages_path).resolve()), "generator": None,
        "parameters": {"queries_per_passage": per_passage, "seed": seed, "min_words": min_words,
                       "max_words": max_words, "limit": limit},
        "counts": summary.to_dict(), "complete": True})
    return summary
