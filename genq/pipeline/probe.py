"""Measuring this machine on this run's corpus, for ``--time-budget``: the rates :mod:`genq.planning` plans with."""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from genq.corpus import iter_passage_file
from genq.encode import Encoder
from genq.generation.load import load_generator
from genq.generation.prompts import clean_queries
from genq.generation.settings import SAMPLING_KEYS
from genq.io import count_records, write_jsonl_atomic
from genq.planning import Rates
from genq.train import TrainConfig, train_bi_encoder

PROBE_STEPS = 5  # the first two steps pay one-off costs (kernels picked for new shapes); the rest are steady
SHORT_PROBE_STEPS = 3  # a short budget: one steady step after the two warm-up ones
SHORT_PROBE_BATCH = 4  # passages per generation probe batch under a short budget
# a short budget's training probe runs at this share of the batch and scales the step's time up: on a CPU a step's
# cost is the forward and backward passes over the batch's texts, in proportion to their number (Cranfield's
# 256-token passages: 18 s a step at 64, three of which were 30% of a 3-minute budget). The run's own steps
# correct the kept rate, and training stops at the time left whatever the estimate.
SHORT_PROBE_BATCH_SHARE = 0.25
TUNING_PROBE_STEPS = 3  # generator tuning steps timed for --generator-rounds: one warm-up, two steady


PLAN_SAMPLE = 4096  # passages the probe draws from: more than its largest draw (10 steps x batch 64 + a margin)


def corpus_sample(path: Path, size: int = PLAN_SAMPLE) -> tuple[int, list[dict]]:
    """(the corpus's passage count, ``size`` passages evenly spaced across it), read as a stream: a million
    passages need not sit in memory to plan a run."""
    total = count_records(path)  # the run's own passages file: one record a line, no need to parse it twice
    wanted = {int(i * total / size) for i in range(size)} if total > size else range(total)
    return total, [passage for number, passage in enumerate(iter_passage_file(path)) if number in wanted]


def spread(passages: list[dict], count: int) -> list[dict]:
    """``count`` passages evenly spaced across the corpus (cycling when it holds fewer)."""
    if not passages:
        return []
    if count >= len(passages):
        return [passages[i % len(passages)] for i in range(count)]
    step = len(passages) / count
    return [passages[int(i * step)] for i in range(count)]


@dataclass
class Probe:
    """The measured rates, the generator the measurement loaded and what it sampled (the generate stage reuses
    both: the probe's queries are the ones that stage would draw for those passages, from the same seeds)."""

    rates: Rates
    generator: object | None
    seconds: float
    samples: dict[str, list] = field(default_factory=dict)


class PresampledGenerator:
    """A loaded generator that answers the passages the probe already sampled from those samples.

    Every passage is sampled from its own seed stream (seed + passage id), so the probe's
    queries for a passage are exactly what the generate stage would draw for it: taking them
    keeps the probe's work without changing the pairs file. They are dropped if the run
    samples differently (a plan that raised the queries per passage, another seed).
    """

    def __init__(self, generator, samples: dict[str, list], seed: int):
        self._generator = generator
        self._samples = dict(samples)
        self._drawn_under = {**_sampling_of(generator.config), "seed": seed}
        self.reused = 0

    def __getattr__(self, name: str):
        return getattr(self._generator, name)

    def use_settings(self, config) -> None:
        self._generator.use_settings(config)
        if {**_sampling_of(self._generator.config), "seed": self._drawn_under["seed"]} != self._drawn_under:
            self._samples.clear()

    def sample(self, passages: list[dict], seed: int) -> list[list[tuple[str, float]]]:
        if seed != self._drawn_under["seed"]:
            self._samples.clear()
        todo = [passage for passage in passages if str(passage["_id"]) not in self._samples]
        drawn = dict(zip((str(p["_id"]) for p in todo), self._generator.sample(todo, seed) if todo else []))
        found = []
        for passage in passages:
            key = str(passage["_id"])
            if key in drawn:
                found.append(drawn[key])
            else:
                found.append(self._samples.pop(key))
                self.reused += 1
        return found


def _sampling_of(config) -> dict:
    return {key: getattr(config, key, None) for key in SAMPLING_KEYS}


def measure_rates(passages: list[dict], generation, training, *, work_dir, encode_batch_size: int | None = None,
                  dtype: str = "auto", filter_keep_share: float = 1.0, say=lambda message: None,
                  short: bool = False, tuning=None) -> Probe:
    """Measure generation, training and encoding on this run's own passages.

    Two generation batches, timed by the second (the generator stays loaded for the generate
    stage), ``PROBE_STEPS`` training steps on passage-shaped pairs (the passage's opening words
    as the query: the passage side sets a step's cost) timed by the steady ones, and four
    encoding batches of passages drawn from across the corpus. ``short`` (a budget of a few
    minutes): smaller generation batches, ``SHORT_PROBE_STEPS`` steps at a quarter of the batch
    (the step's time scaled up) and one encoding batch, a rougher rate for a
    run where measuring would otherwise cost most of the time. The generator's load time is
    measured too (``generator_load_seconds``): a later run that reuses these rates pays it in its
    generate stage. ``tuning`` (a :class:`~genq.train_generator.GeneratorTrainingConfig`, for
    ``--generator-rounds``): ``TUNING_PROBE_STEPS`` generator tuning steps too, timed by the steady ones.
    """
    started = time.perf_counter()
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    steps = SHORT_PROBE_STEPS if short else PROBE_STEPS
    say("  measuring generation (two batches) ...")
    generator, load_seconds, generate_per_passage, pairs_per_passage, samples = _measure_generation(
        passages, generation, SHORT_PROBE_BATCH if short else None)
    say(f"  measuring training ({steps} steps) ...")
    per_step, overhead = _measure_training(passages, training, work_dir, steps,
                                           SHORT_PROBE_BATCH_SHARE if short else 1.0)
    encode_batches = 1 if short else 4
    say(f"  measuring encoding ({'one batch' if encode_batches == 1 else f'{encode_batches} batches'}) ...")
    encode_per_passage = _measure_encoding(passages, training, encode_batch_size, dtype, encode_batches)
    tune_per_step = tune_overhead = 0.0
    if tuning is not None:
        say(f"  measuring the generator's tuning ({TUNING_PROBE_STEPS} steps) ...")
        tune_per_step, tune_overhead = _measure_tuning(passages, tuning, work_dir)
    rates = Rates(generate_seconds_per_passage=generate_per_passage,
                  pairs_per_passage=pairs_per_passage * filter_keep_share, train_seconds_per_step=per_step,
                  encode_seconds_per_passage=encode_per_passage, train_overhead_seconds=overhead,
                  generator_load_seconds=load_seconds, tune_seconds_per_step=tune_per_step,
                  tune_overhead_seconds=tune_overhead)
    return Probe(rates, generator, time.perf_counter() - started, samples)


def _measure_generation(passages: list[dict], generation, batch: int | None = None
                        ) -> tuple[object, float, float, float, dict[str, list]]:
    """(the loaded generator, its load seconds, seconds per passage, queries kept per passage, what it sampled
    by passage id) from two batches, the second timed; the generate stage takes what they sampled.

    A short budget's batches of 4 overstate the run's per-passage cost a little (SmolLM2 in float32 on a 2-core
    EPYC: 0.61 passages/s in batches of 4, 0.83 in the run's batches of 16), but timing a run-sized batch after
    a warm-up cost 101 s of planning on a 3-minute budget where two batches of 4 had cost 84 s."""
    loading = time.perf_counter()
    generator = load_generator(generation)  # the generate stage reuses it
    load_seconds = time.perf_counter() - loading
    size = max(1, min(batch or generation.batch_size or generator.auto_batch_size(), len(passages) // 2 or 1))
    drawn = spread(passages, 2 * size)  # from across the corpus: its first passages need not be typical
    kept = sampled_passages = 0
    per_passage, samples = [], {}
    for batch in (drawn[:size], drawn[size:2 * size] or drawn[:size]):
        sampling = time.perf_counter()
        sampled = generator.sample(batch, seed=generation.seed)
        per_passage.append((time.perf_counter() - sampling) / len(batch))
        samples.update((str(passage["_id"]), queries) for passage, queries in zip(batch, sampled))
        kept += sum(len(clean_queries(queries, passage["text"], generator.config)[0])
                    for passage, queries in zip(batch, sampled))
        sampled_passages += len(batch)
    # the first batch also pays one-off costs (a few-shot prefix, warm-up): the second is the rate
    return generator, load_seconds, per_passage[-1], max(kept / sampled_passages, 0.1), samples


def opening_pairs(passages: list[dict], rows: int) -> list[dict]:
    """``rows`` passage-shaped pairs spread across the corpus, each passage's opening words as its query: a step's
    cost is set by the passage side (and a prompt), and a query is a dozen tokens whoever wrote it."""
    return [{"query": " ".join(p["text"].split()[:7]) + f" {number}", "passage_id": f"{p['_id']}~{number}",
             "passage": p["text"], "title": p.get("title", "")} for number, p in enumerate(spread(passages, rows))]


def _measure_tuning(passages: list[dict], tuning, work_dir: Path) -> tuple[float, float]:
    """(seconds per steady generator tuning step, the tuning's one-off seconds: load, save) from
    ``TUNING_PROBE_STEPS`` steps at the run's tuning batch, on the model and prompt the rounds tune."""
    from genq.train_generator import train_generator

    probe_model = work_dir / "probe-generator"
    config = replace(tuning, max_steps=TUNING_PROBE_STEPS, epochs=None, save_steps=10_000, save_minutes=0.0,
                     time_limit=None)
    try:
        summary = train_generator(opening_pairs(passages, TUNING_PROBE_STEPS * tuning.batch_size), probe_model,
                                  config, overwrite=True, progress=False)
    finally:
        shutil.rmtree(probe_model, ignore_errors=True)
    per_step = summary.seconds_per_step or summary.seconds / max(summary.steps, 1)
    return per_step, max(0.0, summary.seconds - summary.steps * per_step)


def _measure_training(passages: list[dict], training, work_dir: Path, steps: int = PROBE_STEPS,
                      batch_share: float = 1.0) -> tuple[float, float]:
    """(seconds per steady step at the run's batch, the run's one-off seconds) from ``steps`` steps on
    passage-shaped pairs, at ``batch_share`` of the batch (the step's time scaled up by as much)."""
    batch = max(2, min(training.batch_size, round(training.batch_size * batch_share)))
    probe_pairs = work_dir / "probe-pairs.jsonl"
    write_jsonl_atomic(probe_pairs, opening_pairs(passages, max(steps * batch, 8)))
    probe_model = work_dir / "probe-model"
    config = TrainConfig(**{**asdict(training), "max_steps": steps, "eval_share": 0.0, "save_steps": 10_000,
                            "batch_size": batch})
    try:
        summary = train_bi_encoder(probe_pairs, probe_model, config, overwrite=True, progress=False)
    finally:
        shutil.rmtree(probe_model, ignore_errors=True)
    per_step = summary.seconds_per_step or summary.seconds / max(summary.steps, 1)
    return per_step * training.batch_size / batch, max(0.0, summary.seconds - summary.steps * per_step)


def _measure_encoding(passages: list[dict], training, batch_size: int | None, dtype: str, batches: int = 4) -> float:
    """Seconds per passage encoding ``batches`` batches drawn from across the corpus (after a small warm-up).

    A short budget encodes one: four batches of Cranfield's 256-token passages took 12 s of a 3-minute
    budget on a 2-core CPU without AVX512."""
    encoder = Encoder(training.base_model, device=training.device, dtype=dtype, batch_size=batch_size)
    drawn = spread(passages, batches * encoder.batch_size)
    encoder.encode_passages(drawn[:8])  # warm-up, not timed
    encoding = time.perf_counter()
    encoder.encode_passages(drawn)
    return (time.perf_counter() - encoding) / max(len(drawn), 1)
