"""How good are the generated queries? A measure that needs no labels.

Every generation change (a prompt, a temperature, a generator) is judged by one report:

* **round-trip hit rate**: the share of queries whose own passage the base bi-encoder
  ranks first (top 1) or within the top 3 of the corpus. A query that does not single out
  its passage teaches the retriever nothing about it (Promptagator's consistency check,
  used here as a measure rather than a filter);
* the share of queries that **copy** their passage (a verbatim span of several words: the
  model read aloud instead of asking), that **echo the prompt** ("Query: ...",
  "Document: ...", quotes, numbering), or that are **too long** to be a search query;
* a few examples of each, so a reader can see what the numbers count.

The text checks live here too, so that generation strips exactly what the measure counts.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

# A query longer than this is a sentence, not a search query (MS MARCO queries average ~6 words,
# and very few pass 20).
LONG_QUERY_WORDS = 20
# A copied span shorter than this is just a shared phrase ("wind tunnel"), not a copy.
COPY_MIN_WORDS = 5
ROUND_TRIP_DEPTHS = (1, 3)
EXAMPLES_PER_KIND = 3

# Words a prompt puts before a slot ("Document:", "Query:"); a sample that writes one has
# continued the template instead of answering it.
_TEMPLATE_WORD = r"(?:search\s+query|query|question|document|passage|answer|title|text|article|q|a)"
_LABEL_AT_START = re.compile(rf"^\s*{_TEMPLATE_WORD}\s*\d*\s*[:：]\s*", re.IGNORECASE)
_LABEL_INSIDE = re.compile(rf"(?:^|\s){_TEMPLATE_WORD}\s*\d*\s*[:：]", re.IGNORECASE)
# Labels that introduce something other than the query: what follows is not a query at all.
_NON_QUERY_LABEL = re.compile(r"^\s*(?:document|passage|answer|title|text|article|a)\s*\d*\s*[:：]", re.IGNORECASE)
_NUMBERING = re.compile(r"^\s*(?:\(?\d{1,2}[.)]|[-*•])\s+")
_QUOTES = "\"'“”‘’«»`"
_WORD = re.compile(r"\w+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def strip_template_echo(query: str) -> str:
    """The query inside a sample that echoed the prompt; "" when the sample is not a query.

    Removes leading numbering, a "Query:"/"Question:" label and surrounding quotes, and cuts
    the line where a new template label starts ("what is X Document: ..."). A sample that
    opens with a non-query label ("Document:", "Answer:") is the model writing the passage
    or an answer, so nothing of it is kept.
    """
    text = query.strip()
    for _ in range(3):  # labels and numbering can nest: '1. Query: "..."'
        if _NON_QUERY_LABEL.match(text):
            return ""
        before = text
        text = _NUMBERING.sub("", text)
        text = _LABEL_AT_START.sub("", text)
        text = text.strip().strip(_QUOTES).strip()
        if text == before:
            break
    inside = _LABEL_INSIDE.search(text)
    if inside:
        text = text[:inside.start()].strip().strip(_QUOTES).strip()
    return text


def echoes_template(query: str) -> bool:
    """Does the query carry a template label, numbering or surrounding quotes?"""
    text = query.strip()
    return bool(_LABEL_INSIDE.search(text) or _NUMBERING.match(text)
                or (len(text) > 1 and text[0] in _QUOTES and text[-1] in _QUOTES))


def copies_passage(query: str, passage: str, min_words: int = COPY_MIN_WORDS) -> bool:
    """Is the query (case and punctuation aside) a verbatim span of at least ``min_words`` words of its passage?"""
    words = _words(query)
    if len(words) < min_words:
        return False
    return f" {' '.join(words)} " in f" {' '.join(_words(passage))} "


def is_long(query: str, max_words: int = LONG_QUERY_WORDS) -> bool:
    return len(query.split()) > max_words


# The round trip's top-3 under which the queries are not about their passages (SmolLM2 as shipped: 46-58%
# on Cranfield and CISI; a generator repeating another collection's queries: 1%), over enough queries to tell.
IGNORED_PASSAGES_TOP3 = 0.1
MIN_QUERIES_TO_WARN = 50


@dataclass
class QualityReport:
    """The label-free quality of a set of (query, passage) pairs."""

    queries: int = 0
    passages_ranked: int = 0  # the corpus (or corpus sample) the round trip searched
    model: str = ""
    round_trip: dict = field(default_factory=dict)  # "top1"/"top3" -> share of queries
    copy_share: float = 0.0
    echo_share: float = 0.0
    long_share: float = 0.0
    long_words: int = LONG_QUERY_WORDS
    mean_words: float = 0.0
    examples: dict = field(default_factory=dict)  # kind -> a few queries
    sampled_from: int | None = None  # pairs in the file, when the report covers a sample
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def headline(self) -> str:
        """One line for a command's summary."""
        trip = ", ".join(f"top-{k[3:]} {v:.0%}" for k, v in self.round_trip.items())
        scope = f"{self.queries:,} queries" + (f" sampled of {self.sampled_from:,}" if self.sampled_from else "")
        return (f"round trip {trip} ({scope}, ranked among {self.passages_ranked:,} passages); "
                f"copies {self.copy_share:.0%}, template echoes {self.echo_share:.0%}, "
                f"longer than {self.long_words} words {self.long_share:.0%}")

    def warning(self) -> str:
        """A line for queries that ignore their passages, or "".

        A generator tuned on another collection's labelled pairs can learn that collection's
        queries instead of the task: CISI's 76 queries, 100 steps, then generating for Cranfield,
        gave queries about information science for every passage (22% verbatim CISI queries), a
        round trip of 1% top-3 where SmolLM2 as shipped gets 58%, and 30 pairs kept of 3,520.
        """
        top3 = self.round_trip.get("top3")
        if top3 is None or self.queries < MIN_QUERIES_TO_WARN or top3 >= IGNORED_PASSAGES_TOP3:
            return ""
        return (f"warning: {top3:.0%} of the queries find their own passage among the top 3: the generator writes "
                "queries that ignore their passages (one tuned on another collection's labelled pairs repeats "
                "that collection's queries)\n  fix: read a few pairs; generate with the generator as shipped or one "
                "tuned on this corpus's own pairs")


class QualityTally:
    """Accumulates a :class:`QualityReport` batch by batch (the filter streams its pairs through one)."""

    def __init__(self, model: str = "", passages_ranked: int = 0, long_words: int = LONG_QUERY_WORDS):
        self.report = QualityReport(model=model, passages_ranked=passages_ranked, long_words=long_words)
        self._hits = dict.fromkeys(ROUND_TRIP_DEPTHS, 0)
        self._counts = {"copy": 0, "echo": 0, "long": 0}
        self._words = 0
        self._examples: dict[str, list[str]] = {"round_trip_miss": [], "round_trip_hit": [], "copy": [], "echo": [],
                                                "long": []}

    def add(self, query: str, passage: str, own_rank: int | None) -> None:
        """One pair; ``own_rank`` is the 0-based rank of its passage in the round trip (None: beyond the depth)."""
        self.report.queries += 1
        self._words += len(query.split())
        for depth in ROUND_TRIP_DEPTHS:
            self._hits[depth] += own_rank is not None and own_rank < depth
        flags = {"copy": copies_passage(query, passage), "echo": echoes_template(query),
                 "long": is_long(query, self.report.long_words)}
        for kind, flagged in flags.items():
            self._counts[kind] += flagged
            if flagged:
                self._example(kind, query)
        self._example("round_trip_hit" if own_rank is not None and own_rank < 3 else "round_trip_miss", query)

    def _example(self, kind: str, query: str) -> None:
        if len(self._examples[kind]) < EXAMPLES_PER_KIND:
            self._examples[kind].append(query)

    def finish(self, seconds: float = 0.0, sampled_from: int | None = None) -> QualityReport:
        report, n = self.report, max(self.report.queries, 1)
        report.round_trip = {f"top{depth}": round(hits / n, 4) for depth, hits in self._hits.items()}
        report.copy_share = round(self._counts["copy"] / n, 4)
        report.echo_share = round(self._counts["echo"] / n, 4)
        report.long_share = round(self._counts["long"] / n, 4)
        report.mean_words = round(self._words / n, 2)
        report.examples = {kind: list(queries) for kind, queries in self._examples.items() if queries}
        report.sampled_from = sampled_from
        report.seconds = round(seconds, 2)
        return report


class Reservoir:
    """A uniform random sample of at most ``size`` items from a stream of unknown length (reservoir sampling)."""

    def __init__(self, size: int, seed: int = 0):
        self.size, self.items, self.seen = size, [], 0
        self._draw = random.Random(seed)

    def add(self, item) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(item)
        elif (slot := self._draw.randrange(self.seen)) < self.size:
            self.items[slot] = item

    def extend(self, items: Iterable) -> Reservoir:
        for item in items:
            self.add(item)
        return self


def own_ranks(ranked_rows: np.ndarray, own_rows: np.ndarray) -> list[int | None]:
    """The 0-based rank of each query's own passage among its retrieved rows (None: not retrieved)."""
    ranks: list[int | None] = []
    for rows, own in zip(ranked_rows, own_rows):
        where = np.flatnonzero(rows == own)
        ranks.append(int(where[0]) if len(where) else None)
    return ranks


def measure_quality(pairs: Sequence[dict], dense, batch_size: int = 256) -> QualityReport:
    """Round trip and text checks for ``pairs`` against ``dense`` (a :class:`genq.retrieval.DenseCorpus`).

    Every pair's ``passage_id`` must be a passage of ``dense``.
    """
    started = time.perf_counter()
    tally = QualityTally(dense.encoder.name, len(dense.passages))
    depth = max(ROUND_TRIP_DEPTHS)
    for start in range(0, len(pairs), batch_size):
        batch = pairs[start:start + batch_size]
        vectors = dense.encode_queries([pair["query"] for pair in batch])
        ranked = dense.search(vectors, depth)[1]
        own = np.asarray([dense.row_of[str(pair["passage_id"])] for pair in batch])
        for pair, rank in zip(batch, own_ranks(ranked, own)):
            tally.add(pair["query"], pair["passage"], rank)
    return tally.finish(time.perf_counter() - started)
