"""Runs sized to the time a user has: ``genq adapt --time-budget 30m``.

What a run can afford depends on this machine's rates on this corpus: a 135M decoder-only
generator on two CPU cores writes for a passage or so a second, a GPU for hundreds; a MiniLM
step is 13 s or 0.1 s. So the plan is made from rates measured on the run's own data (one
generation batch, a few training steps, one encoding batch; see
:func:`genq.pipeline.probe.measure_rates`), and only what the user left unset is sized: how
many passages to generate for, and how many optimizer steps to train. The rest of the
pipeline (indexing, filtering, evaluating) is costed from the same encoding rate and taken off
the top.

With ``--generator-rounds N`` every round samples the same passages (round k with the generator
tuned on the kept pairs before it), so a passage costs N samplings and yields about N times the
pairs; tuning the generator before each later round is a fixed cost (``BUDGET_TUNING_STEPS`` steps
at the probe's rate), taken off the top with the other fixed stages.

The split: generation and training share what is left equally, within two bounds. Training
runs at least one epoch over the pairs it has (fewer passages are generated for if one epoch
would not fit) and at most ``MAX_EPOCHS`` (more passages are generated for instead, while
any are left): queries for new passages teach more than another pass over the same ones.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from genq.ann import auto_index_type
from genq.durations import format_duration
from genq.train_generator import MIN_AUTO_STEPS

MAX_EPOCHS = 10  # past this, more passages beat more passes (the same cap as sizing by corpus)
SAFETY = 0.97  # plan to this share of the budget: the stages after training are estimates, with tails
BUDGET_QUERIES_PER_PASSAGE = 3  # GenQ's: under a budget, breadth (passages covered) beats depth
MAX_BUDGET_QUERIES_PER_PASSAGE = 10  # when the whole corpus is covered with time to spare, up to this many
# steps a generator is tuned before each later round under a budget: train-generator's own floor, which measured
# enough to cut SmolLM2's runaways from 58% to 6% on Cranfield (results/generator_rounds.md)
BUDGET_TUNING_STEPS = MIN_AUTO_STEPS
ROUND_STAGES = ("tune generator", "generate round")  # the stages of rounds 2..N, as the pipeline names them


# What an index costs past encoding its passages, per passage, measured by benchmarks/scale.py on this project's
# 2-core AMD EPYC (384-d MiniLM vectors of 960,298 real package summaries; results/scale.md): HNSW M=32
# efC=200 761 s (over 8-bit codes: 461 s), bm25s 43 s (10k: 0.4 s; 100k: 3.8 s). The ANN build grows a little
# faster than the corpus (HNSW: about N log N), so the rate at a million passages slightly overstates smaller ones.
ANN_BUILD_SECONDS_PER_PASSAGE = {"flat": 0.0, "hnsw": 7.9e-4, "hnsw-sq": 4.8e-4, "ivf-pq": 1e-4}
BM25_SECONDS_PER_PASSAGE = 4.5e-5


def index_build_seconds(passages: int, index_type: str, lexical: bool) -> float:
    """Seconds an index build spends past encoding: the ANN structure (``auto`` resolved by size as
    :class:`genq.ann.IndexParams` does) and, unless dense-only, BM25 over the same passages."""
    if index_type == "auto":
        index_type = auto_index_type(passages)
    per_passage = ANN_BUILD_SECONDS_PER_PASSAGE.get(index_type, ANN_BUILD_SECONDS_PER_PASSAGE["hnsw"])
    return passages * (per_passage + (BM25_SECONDS_PER_PASSAGE if lexical else 0.0))


def smallest_budget(elapsed_seconds: float, rates: Rates, fixed: Fixed, min_passages: int, rounds: int = 1,
                    tune_steps: int = 0) -> float:
    """The budget that holds the fixed stages and the smallest adaptation (one batch generated in each round,
    the generator's tuning between rounds, one step)."""
    smallest = (elapsed_seconds + fixed.total + rates.generator_load_seconds + rates.train_overhead_seconds
                + rounds * min_passages * rates.generate_seconds_per_passage + rates.train_seconds_per_step
                + tuning_seconds(rates, rounds, tune_steps))
    return smallest / SAFETY


def tuning_seconds(rates: Rates, rounds: int, tune_steps: int) -> float:
    """Seconds spent tuning the generator before rounds 2..``rounds``, ``tune_steps`` steps each."""
    return max(rounds - 1, 0) * (rates.tune_overhead_seconds + tune_steps * rates.tune_seconds_per_step)


@dataclass
class Rates:
    """What this machine does per second on this run's data, measured once and recorded in the manifest."""

    generate_seconds_per_passage: float
    pairs_per_passage: float  # pairs kept per passage generated for (after generation's own drops and the filter)
    train_seconds_per_step: float
    encode_seconds_per_passage: float
    generator_load_seconds: float = 0.0
    train_overhead_seconds: float = 0.0  # model load, save, card: once per training run
    tune_seconds_per_step: float = 0.0  # a generator tuning step (measured only for --generator-rounds)
    tune_overhead_seconds: float = 0.0  # the tuned model's load and save: once per tuning

    def to_dict(self) -> dict:
        return {k: round(v, 5) for k, v in asdict(self).items()}


@dataclass
class Fixed:
    """Stages whose cost does not depend on the plan, in seconds (estimated from the rates)."""

    stages: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.stages.values())


@dataclass
class Plan:
    budget_seconds: float
    elapsed_seconds: float  # spent before planning (preparing, measuring)
    passages_total: int
    passages: int  # generated for
    queries_per_passage: int
    steps: int
    batch_size: int
    estimates: dict[str, float]  # seconds per stage still to run
    chosen: list[str]  # what the plan sized (the user set the rest)
    notes: list[str] = field(default_factory=list)
    rounds: int = 1  # generation rounds, each over the same passages
    tune_steps: int = 0  # generator tuning steps before each later round

    @property
    def estimated_total(self) -> float:
        return self.elapsed_seconds + sum(self.estimates.values())

    def describe(self) -> str:
        parts = [f"generate for {self.passages:,} of {self.passages_total:,} passages x {self.queries_per_passage} "
                 f"(est. {format_duration(self.estimates.get('generate', 0))})"]
        later = [name for name in self.estimates if name.startswith(ROUND_STAGES)]
        if later:
            parts.append(f"{self.rounds - 1} more round{'s' * (self.rounds > 2)}, each tuning the generator "
                         f"{self.tune_steps:,} steps and sampling the same passages again (est. "
                         f"{format_duration(sum(self.estimates[name] for name in later))})")
        parts.append(f"train {self.steps:,} steps (est. {format_duration(self.estimates.get('train', 0))})")
        parts += [f"{name} (est. {format_duration(seconds)})" for name, seconds in self.estimates.items()
                  if name not in ("generate", "train") and not name.startswith(ROUND_STAGES)]
        return (f"budget {format_duration(self.budget_seconds)}: " + ", ".join(parts)
                + f"; about {format_duration(self.estimated_total)} in all "
                  f"({format_duration(self.elapsed_seconds)} already spent preparing and measuring)")

    def to_dict(self) -> dict:
        return asdict(self) | {"estimated_total_seconds": round(self.estimated_total, 1)}

    @classmethod
    def from_dict(cls, stored: dict) -> Plan:
        return cls(**{k: stored[k] for k in cls.__dataclass_fields__ if k in stored})


def steps_per_epoch(passages: int, rates: Rates, batch_size: int) -> int:
    return max(1, math.ceil(passages * rates.pairs_per_passage / batch_size))


def step_cost(full_batch_seconds: float, pairs: float, batch_size: int) -> float:
    """The mean training step's seconds over ``pairs``: steps over fewer pairs than a batch cost less.

    A CPU step costs about in proportion to the texts it encodes (MiniLM on the sample: 0.9-1.1 s a
    step at 16 pairs, 3.6-4.2 s at 64), and an epoch's last batch holds what is left: 133 pairs make
    steps of 64, 64 and 5, on average 44 pairs, and trained at 3.0 s a step where full ones took 4.2.
    """
    pairs = max(pairs, 1.0)
    mean_fill = pairs / math.ceil(pairs / batch_size)
    return full_batch_seconds * min(mean_fill, batch_size) / batch_size


def plan_run(budget_seconds: float, elapsed_seconds: float, passages_total: int, rates: Rates, fixed: Fixed, *,
             batch_size: int, queries_per_passage: int, limit: int | None = None, epochs: float | None = None,
             max_steps: int | None = None, min_passages: int = 1, size_queries: bool = False, rounds: int = 1,
             tune_steps: int = 0) -> Plan:
    """Size the passages to generate for and the training steps so the whole run fits the budget.

    ``limit``, ``epochs`` and ``max_steps`` are what the user set (None: genq sizes it);
    a value the user set is never changed, even when the budget cannot hold it (the plan
    then says so in its notes). With ``size_queries`` (the user left ``--queries-per-passage``
    unset; ``rates`` were measured at ``queries_per_passage``) a budget that covers every
    passage and the epoch cap with time to spare buys more queries per passage, up to
    ``MAX_BUDGET_QUERIES_PER_PASSAGE``, as GPL generates more per passage for small corpora.
    ``rounds`` > 1: each passage is sampled once per round and trains on the pairs of every round
    (costed at round 1's rates: a tuned generator's samples end sooner and are kept more often, so
    this errs long), with ``tune_steps`` generator steps before each later round.
    """
    tuning = tuning_seconds(rates, rounds, tune_steps)
    one_round = rates
    if rounds > 1:
        rates = replace(rates, generate_seconds_per_passage=rates.generate_seconds_per_passage * rounds,
                        pairs_per_passage=rates.pairs_per_passage * rounds)
    available = budget_seconds * SAFETY - elapsed_seconds - fixed.total - rates.generator_load_seconds \
        - rates.train_overhead_seconds - tuning
    notes: list[str] = []
    if available <= 0:
        notes.append(f"the budget leaves no time after the fixed costs ({format_duration(fixed.total)} for "
                     f"{', '.join(fixed.stages) or 'nothing'}, model loads, {format_duration(elapsed_seconds)} spent): "
                     "the smallest run is planned")
        available = 0.0
    per_passage = rates.generate_seconds_per_passage
    per_step = rates.train_seconds_per_step
    pairs_step = rates.pairs_per_passage / batch_size * per_step  # training seconds per passage per epoch
    chosen = []

    def fit_passages(per_passage_total: float, spare: float) -> int:
        return int(spare / per_passage_total) if per_passage_total > 0 else passages_total

    if limit is not None:
        passages = min(limit, passages_total)
    elif max_steps is not None and max_steps > 0:
        passages = fit_passages(per_passage, available - max_steps * per_step)
        chosen.append("passages")
    elif epochs is not None:
        passages = fit_passages(per_passage + epochs * pairs_step, available)
        chosen.append("passages")
    else:
        passages = fit_passages(per_passage, available / 2)  # an even split first
        if available - passages * per_passage < passages * pairs_step:  # one epoch would not fit: fewer passages
            passages = fit_passages(per_passage + pairs_step, available)
        elif available - passages * per_passage > MAX_EPOCHS * passages * pairs_step:  # more passes than useful
            passages = fit_passages(per_passage + MAX_EPOCHS * pairs_step, available)
        chosen.append("passages")
    passages = max(min(passages, passages_total), min(min_passages, passages_total), 1)

    per_epoch = steps_per_epoch(passages, rates, batch_size)
    pairs_planned = passages * rates.pairs_per_passage
    if max_steps is not None and max_steps > 0:
        steps = max_steps
    elif epochs is not None:
        steps = max(1, math.ceil(epochs * per_epoch))
    else:
        spare = available - passages * per_passage
        steps = int(spare / step_cost(per_step, pairs_planned, batch_size)) if per_step > 0 else per_epoch
        steps = max(min(steps, MAX_EPOCHS * per_epoch), per_epoch)
        chosen.append("steps")
    capped = "steps" in chosen and steps == MAX_EPOCHS * per_epoch and passages == passages_total
    if size_queries and capped and limit is None:
        # the corpus is used up and more passes would not help: more queries per passage, sampled and trained
        # on at the rates measured (both grow about linearly with the samples per passage)
        # rounded up, so that the budget is spent: training then gets what generation leaves (fewer than ten
        # epochs), provided one epoch still fits
        per_query = (per_passage + MAX_EPOCHS * pairs_step) / queries_per_passage
        more = min(math.ceil(available / (passages * per_query)) if per_query > 0 else queries_per_passage,
                   MAX_BUDGET_QUERIES_PER_PASSAGE)

        def one_epoch_fits(q: int) -> bool:
            scale = q / queries_per_passage
            epoch = max(1, math.ceil(passages * rates.pairs_per_passage * scale / batch_size)) * per_step
            return passages * per_passage * scale + epoch <= available

        while more > queries_per_passage and not one_epoch_fits(more):
            more -= 1
        if more > queries_per_passage:
            scale = more / queries_per_passage
            per_passage *= scale
            pairs_planned *= scale
            per_epoch = max(1, math.ceil(pairs_planned / batch_size))
            per_pairs_step = step_cost(per_step, pairs_planned, batch_size)
            steps = max(min(int((available - passages * per_passage) / per_pairs_step) if per_step > 0
                            else per_epoch, MAX_EPOCHS * per_epoch), per_epoch)
            queries_per_passage = more
            chosen.append("queries per passage")
    each_round = passages * per_passage / rounds
    estimates = {"generate": each_round + rates.generator_load_seconds}
    for number in range(2, rounds + 1):
        estimates[f"tune generator {number}"] = tuning_seconds(one_round, 2, tune_steps)
        estimates[f"generate round {number}"] = each_round
    estimates.update({"train": steps * step_cost(per_step, pairs_planned, batch_size) + rates.train_overhead_seconds,
                      **fixed.stages})
    plan = Plan(budget_seconds, elapsed_seconds, passages_total, passages, queries_per_passage, steps, batch_size,
                {k: round(v, 1) for k, v in estimates.items()}, chosen, notes, rounds, tune_steps)
    if plan.estimated_total > budget_seconds:
        plan.notes.append(f"this plan is estimated at {format_duration(plan.estimated_total)}, over the budget: "
                          + ("the options you set need more time" if limit or epochs or max_steps else
                             "even the smallest run does not fit"))
    return plan


# --------------------------------------------------------------------------- measuring
