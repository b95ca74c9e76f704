"""Training batches of similar length, with no text twice in a batch.

A batch is padded to its longest passage, so a plainly shuffled batch of 64 pays for 64
copies of its longest passage: on Cranfield about half of the passage tokens a step computes
are padding. Grouping by length (as transformers' ``group_by_length`` does) removes most of
it. MultipleNegativesRankingLoss also needs every text of a batch to be distinct, or a query
is pushed away from a copy of its own passage, so batches are formed with the same greedy
rule as sentence-transformers' ``NoDuplicatesBatchSampler``: a row whose texts are already
in the batch waits for the next one.

The order: shuffle everything (seed + epoch), cut it into pools of ``POOL_BATCHES``
batches, sort each pool by length (a passage's second query in a later layer than its
first), form batches inside the pool, then shuffle the batches.
Every batch holds passages of about one length, and consecutive steps still see passages
from all over the corpus.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

POOL_BATCHES = 16


def batches_by_length(rows: Sequence[Sequence[str]], lengths: Sequence[int], batch_size: int, rng: random.Random,
                      no_duplicates: bool = True, pool_batches: int = POOL_BATCHES) -> list[list[int]]:
    """Row indices cut into batches of similar ``lengths``; with ``no_duplicates`` no text twice in a batch.

    Rows that would repeat a text wait for a later batch (carried into the next pool), so
    no row is ever dropped; only the last batch may be short, or, when few distinct texts
    are left at the end, a few more.
    """
    order = list(range(len(rows)))
    rng.shuffle(order)
    pool_size = max(batch_size * pool_batches, batch_size)
    batches: list[list[int]] = []
    waiting: list[int] = []
    for start in range(0, len(order), pool_size):
        pool = _layered_by_length(waiting + order[start:start + pool_size], rows, lengths)
        full, waiting = _fill(pool, rows, batch_size, no_duplicates)
        batches.extend(full)
    tail: list[list[int]] = []
    while waiting:  # the end: whatever is left, still without duplicates inside a batch
        full, rest = _fill(waiting, rows, batch_size, no_duplicates)
        if not full:  # too few distinct texts left for a full batch: short ones
            full, rest = _fill(waiting, rows, batch_size, no_duplicates, keep_short=True)
        tail.extend(full)
        waiting = rest
    # the full batches and one short one (the ordinary remainder) stay; more short batches exist only because
    # their rows share texts with each other: those rows join batches that hold none of their texts instead
    short = sorted((batch for batch in tail if len(batch) < batch_size), key=len, reverse=True)
    batches.extend([batch for batch in tail if len(batch) == batch_size] + short[:1])
    left = _place_leftovers([i for batch in short[1:] for i in batch], batches, rows, batch_size, no_duplicates)
    if left:
        batches.extend(_fill(left, rows, batch_size, no_duplicates, keep_short=True)[0])
    rng.shuffle(batches)
    return batches


OVERFILL = 0.25  # a batch may take this share more rows to keep a leftover row out of a batch of its own


def _place_leftovers(leftovers: list[int], batches: list[list[int]], rows: Sequence[Sequence[str]],
                     batch_size: int, no_duplicates: bool) -> list[int]:
    """Put rows that fit no full batch into batches that hold none of their texts; return the rest.

    A text shared by many rows (a query with 30 relevant documents in labelled data) needs
    that many batches; without this its last rows would form batches of one or two, each a
    whole optimizer step with no in-batch negatives.
    """
    if not leftovers or not batches:
        return leftovers
    limit = batch_size + max(1, int(batch_size * OVERFILL))
    contents = [set().union(*(rows[i] for i in batch)) for batch in batches]
    rest = []
    for index in leftovers:
        texts = rows[index]
        for batch, seen in zip(batches, contents):
            if len(batch) < limit and (not no_duplicates or seen.isdisjoint(texts)):
                batch.append(index)
                seen.update(texts)
                break
        else:
            rest.append(index)
    return rest


def _layered_by_length(pool: list[int], rows: Sequence[Sequence[str]], lengths: Sequence[int]) -> list[int]:
    """The pool longest first, in layers: each text's first row, then each one's second, and so on.

    GenQ writes several queries per passage (labelled data has several passages per query),
    and rows sharing a text can share no batch; sorted plainly by length a passage's rows
    would sit side by side, each batch could take only one of them, and the rest would pile
    up into short batches at the end.
    """
    seen: dict[str, int] = {}
    layer = {}
    for index in pool:
        layer[index] = max(seen.get(text, 0) for text in rows[index])
        for text in rows[index]:
            seen[text] = layer[index] + 1
    return sorted(pool, key=lambda i: (layer[i], -lengths[i]))


def _fill(pool: list[int], rows: Sequence[Sequence[str]], batch_size: int, no_duplicates: bool,
          keep_short: bool = False) -> tuple[list[list[int]], list[int]]:
    """Greedy batches over ``pool`` in its order: (full batches, rows left over)."""
    batches: list[list[int]] = []
    pending = pool
    while pending:
        batch: list[int] = []
        seen: set[str] = set()
        deferred: list[int] = []
        for position, index in enumerate(pending):
            if len(batch) == batch_size:
                deferred.extend(pending[position:])
                break
            texts = rows[index]
            if no_duplicates and not seen.isdisjoint(texts):
                deferred.append(index)
                continue
            batch.append(index)
            seen.update(texts)
        if len(batch) < batch_size and not keep_short:
            return batches, batch + deferred
        batches.append(batch)
        pending = deferred
    return batches, []


def length_grouped_sampler(rows: Sequence[Sequence[str]], no_duplicates: bool = True):
    """A batch sampler factory for the sentence-transformers trainer (its ``batch_sampler`` argument).

    ``rows`` are each training row's texts (query, passage, negatives), in dataset order;
    the sort key is the characters of the passage and its negatives, the columns whose
    padding costs (queries are short).
    """
    try:
        from sentence_transformers.base.sampler import DefaultBatchSampler
    except ImportError:  # sentence-transformers 3.x - 5.x
        from sentence_transformers.sampler import DefaultBatchSampler

    lengths = [sum(len(text) for text in texts[1:]) for texts in rows]

    class LengthGroupedBatchSampler(DefaultBatchSampler):
        """Batches of similar passage length, no text twice in a batch; reshuffled every epoch."""

        def __init__(self, dataset, batch_size: int, drop_last: bool, valid_label_columns=None, generator=None,
                     seed: int = 0) -> None:
            super().__init__(dataset, batch_size=batch_size, drop_last=drop_last,
                             valid_label_columns=valid_label_columns, generator=generator, seed=seed)
            if len(dataset) != len(rows):
                raise ValueError(f"the sampler was made for {len(rows)} rows, the dataset has {len(dataset)}")
            self._batches: dict[int, list[list[int]]] = {}

        def _epoch_batches(self) -> list[list[int]]:
            if self.epoch not in self._batches:
                rng = random.Random(f"{self.seed}:{self.epoch}")
                batches = batches_by_length(rows, lengths, self.batch_size, rng, no_duplicates)
                if self.drop_last:
                    batches = [b for b in batches if len(b) == self.batch_size]
                self._batches = {self.epoch: batches}
            return self._batches[self.epoch]

        def __iter__(self):
            yield from (list(batch) for batch in self._epoch_batches())

        def __len__(self) -> int:
            return len(self._epoch_batches())

    return LengthGroupedBatchSampler
