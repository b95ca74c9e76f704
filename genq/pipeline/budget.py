"""``--time-budget`` in a run: the plan stage, the training re-planned once the pairs exist, and plan against actual.

:mod:`genq.planning` does the arithmetic; :mod:`genq.pipeline.probe` measures the rates. This
module is where a run's stages meet them.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path

from genq.batch_sizing import CPU_GENERATION_BATCH
from genq.durations import format_duration
from genq.io import GenqError, count_records
from genq.pipeline.config import AdaptConfig
from genq.pipeline.probe import PresampledGenerator, corpus_sample, measure_rates
from genq.pipeline.stage import RunContext, Stage, StageResult
from genq.planning import (
    BUDGET_QUERIES_PER_PASSAGE,
    BUDGET_TUNING_STEPS,
    MAX_EPOCHS,
    SAFETY,
    Fixed,
    Plan,
    Rates,
    index_build_seconds,
    plan_run,
    smallest_budget,
    step_cost,
    tuning_seconds,
)
from genq.rate_cache import correct_rates, length_bucket, load_rates, machine_facts, rate_key, rates_path, save_rates
from genq.train import TrainConfig

MODEL_LOAD_SECONDS = 2.0  # a bi-encoder from the local cache (measured: 1-3 s for MiniLM on 2 cores)
STEP_HEADROOM = 0.85  # steps planned as if a step took this share of the probe's time; the time limit ends it
FILTER_KEEP_PRIOR = 0.5  # the share of pairs a round-trip filter keeps, before the filter has run (measured: 35-60%)


def plan_stage(context: RunContext) -> Stage:
    """Measure this machine on this corpus and size what the user left unset (runs after prepare)."""
    config = context.config
    generation, training = config.generation, config.training
    settings = {"budget_seconds": config.time_budget, "limit": config.limit, "filter": config.filtering,
                "queries_per_passage": None if config.auto_queries_per_passage else generation.queries_per_passage,
                "epochs": None if config.auto_epochs else training.epochs,
                "max_steps": training.max_steps if training.max_steps > 0 else None,
                "eval_data": config.eval_data, "batch_size": training.batch_size}
    if rounds_of(config) > 1:
        settings.update(generator_rounds=config.generator_rounds, tuning_steps=user_tuning_steps(config),
                        tuning_epochs=config.generator_tuning.epochs)
    return Stage("plan", settings, _run_plan, outputs=[], inputs=[context.paths.passages], restore=_restore_plan)


def _run_plan(context: RunContext, _resume: bool) -> tuple[dict, str]:
    plan, rates, probe = make_plan(context)
    summary = {"plan": plan.to_dict(), "rates": rates.to_dict()}
    if probe is not None:  # loaded to measure it: the generate stage samples with it, and keeps what it sampled
        context.handed_on["generator"] = PresampledGenerator(probe.generator, probe.samples,
                                                                 context.config.generation.seed)
        summary["probe_passages"] = list(probe.samples)
    apply_plan(context.config, plan)
    return summary, "ran"


def probe_passages(context: RunContext) -> list[str]:
    """The passages the plan's probe sampled, in its order (none where the rates were reused)."""
    stage = context.manifest.data["stages"].get("plan", {})
    return list(stage.get("summary", {}).get("probe_passages", [])) if stage.get("status") == "done" else []


def _restore_plan(context: RunContext) -> None:
    plan = Plan.from_dict(context.manifest.summary("plan")["plan"])
    apply_plan(context.config, plan)
    context.say(f"  the plan recorded for this budget: {plan.describe()}")


def rounds_of(config: AdaptConfig) -> int:
    return config.generator_rounds if config.generates else 1


def user_tuning_steps(config: AdaptConfig) -> int | None:
    """The generator tuning steps the user set (``GeneratorTrainingConfig.max_steps``), or None."""
    return config.generator_tuning.max_steps if config.generator_tuning.max_steps > 0 else None


def tuning_steps(config: AdaptConfig) -> int:
    """Steps costed per tuning: the user's, else ``BUDGET_TUNING_STEPS`` (a user's ``--generator-epochs`` run
    as set, and are costed at that many steps: how many pairs they pass over is known only after round 1)."""
    return user_tuning_steps(config) or BUDGET_TUNING_STEPS


def plan_sizes_tuning(config: AdaptConfig) -> bool:
    return rounds_of(config) > 1 and user_tuning_steps(config) is None and config.generator_tuning.epochs is None


def make_plan(context: RunContext):
    """Measure, then size the run to ``config.time_budget``; prints the plan before the slow stages."""
    config, say = context.config, context.say
    generation, training = config.generation, config.training
    rounds = rounds_of(config)
    if config.auto_queries_per_passage:
        generation.queries_per_passage = BUDGET_QUERIES_PER_PASSAGE
    total, passages = corpus_sample(context.paths.passages)
    keep = FILTER_KEEP_PRIOR if config.filtering else 1.0
    key = rates_key(config, passages)
    context.manifest.data["rate_key"] = key  # the generate and train stages correct the kept rates by their own
    rates, probe = _kept_rates(key, keep, say, needs_tuning=rounds > 1), None
    if rates is None:
        tuning = replace(config.generator_tuning, generator=generation.model, gguf_file=generation.gguf_file) \
            if rounds > 1 else None
        measured = measure_rates(passages, generation, training, work_dir=context.paths.cache / "plan",
                                 encode_batch_size=config.encode_batch_size, dtype=config.dtype,
                                 filter_keep_share=keep, say=say, short=config.time_budget < SHORT_BUDGET,
                                 tuning=tuning)
        rates, probe = measured.rates, measured
        save_rates(key, {**rates.to_dict(), "pairs_per_passage": rates.pairs_per_passage / keep},
                   {"generator": generation.gguf_file or generation.model, "bi_encoder": training.base_model})
        rates.generator_load_seconds = 0.0  # loaded already, in the time spent; the generate stage reuses it
    fixed = Fixed(_fixed_costs(config, total, rates.encode_seconds_per_passage))
    elapsed, min_passages = time.perf_counter() - context.started, generation.batch_size or CPU_GENERATION_BATCH
    if elapsed + fixed.total > config.time_budget:
        raise GenqError(_fixed_costs_exceed(config.time_budget, elapsed, fixed, rates, total, min_passages))
    if rounds > 1:
        _refuse_rounds_that_cannot_fit(config, elapsed, fixed, rates, min_passages)
    plan = plan_run(config.time_budget, elapsed, total, rates, fixed,
                    batch_size=training.batch_size, queries_per_passage=generation.queries_per_passage,
                    limit=config.limit, epochs=None if config.auto_epochs else training.epochs,
                    max_steps=training.max_steps if training.max_steps > 0 else None,
                    min_passages=min_passages, size_queries=config.auto_queries_per_passage, rounds=rounds,
                    tune_steps=tuning_steps(config) if rounds > 1 else 0)
    if plan_sizes_tuning(config):
        plan.chosen.append("tuning steps")
    elif rounds > 1 and user_tuning_steps(config) is None:
        plan.notes.append(f"the generator is tuned for the --generator-epochs you set; the plan costs each tuning "
                          f"at {plan.tune_steps:,} steps")
    say(f"  rates here: {1 / max(rates.generate_seconds_per_passage, 1e-9):.2f} passages/s generating "
        f"({rates.pairs_per_passage:.1f} pairs kept per passage{', after the filter (assumed 50%)' if keep < 1 else ''}"
        f"), {rates.train_seconds_per_step:.1f} s per training step, "
        f"{1 / max(rates.encode_seconds_per_passage, 1e-9):.0f} passages/s encoding"
        + (f", {rates.tune_seconds_per_step:.1f} s per generator tuning step" if rounds > 1 else ""))
    say(f"  {plan.describe()}")
    for note in plan.notes:
        say(f"  note: {note}")
    if config.gpl:
        say("  note: pseudo-labelling is not costed in the plan")
    if config.reranker:
        say("  note: the reranker's training is not costed in the plan")
    if "steps" in plan.chosen and plan.steps < USEFUL_STEPS:
        say(f"  note: {too_little_note(config, plan, rates, total, time.perf_counter() - context.started)}")
    return plan, rates, probe


def _refuse_rounds_that_cannot_fit(config: AdaptConfig, elapsed: float, fixed: Fixed, rates: Rates,
                                   min_passages: int) -> None:
    """Rounds whose tuning alone leaves no time for the rest are refused before any slow stage, with the budget
    that holds them: tuning is a fixed cost per round, and a plan cannot shrink it without leaving it useless."""
    rounds, steps = rounds_of(config), tuning_steps(config)
    needed = smallest_budget(elapsed, rates, fixed, min_passages, rounds, steps)
    if needed <= config.time_budget:
        return
    tuning = tuning_seconds(rates, rounds, steps)
    raise GenqError(
        f"a {format_duration(config.time_budget)} budget cannot hold {rounds} generation rounds here: tuning the "
        f"generator {steps:,} steps before each later round takes about {format_duration(tuning)} "
        f"({rates.tune_seconds_per_step:.1f} s a step on this machine), besides the fixed stages "
        f"({format_duration(fixed.total)}) and one round of generation\n  fix: --time-budget "
        f"{format_duration(math.ceil(needed / 60) * 60)} or more, or --generator-rounds 1 (the default; on a CPU "
        "a second round measured no retrieval gain, see the README)")


def _fixed_costs_exceed(budget: float, elapsed: float, fixed: Fixed, rates: Rates, passages: int,
                        min_passages: int) -> str:
    """Why the budget cannot be kept, said before any slow stage runs: the index covers every passage (a budget
    sizes generation and training, never the index), with the budget the smallest run needs."""
    needed = math.ceil(smallest_budget(elapsed, rates, fixed, min_passages) / 60) * 60
    costs = ", ".join(f"{name} {format_duration(seconds)}" for name, seconds in fixed.stages.items())
    return (f"a {format_duration(budget)} budget cannot hold this run here: indexing all {passages:,} passages "
            f"(encoding at {1 / max(rates.encode_seconds_per_passage, 1e-9):.0f} passages/s, then the ANN and BM25 "
            f"builds) and the other fixed stages take about {format_duration(fixed.total)} ({costs}), after "
            f"{format_duration(elapsed)} spent preparing and measuring. The index always covers the whole corpus; a "
            f"budget sizes only generation and training\n  fix: --time-budget {format_duration(needed)} (the "
            "smallest run: one batch generated, one training step), or index a smaller corpus")


USEFUL_STEPS = 20  # fewer optimizer steps than this move the bi-encoder little (see TrainSummary.verdict)
SHORT_BUDGET = 600.0  # seconds; under this the probe is shortened (probe.SHORT_PROBE_STEPS)


def rates_key(config: AdaptConfig, passages: list[dict]) -> str:
    """What the rates of this run depend on: machine, models (by their files), the work per item, passage length;
    with ``--generator-rounds`` also how the generator is tuned (a run of one round never measured it)."""
    from genq.models import model_files_fingerprint, resolve_model

    generation, training = config.generation, config.training

    def files(name: str | None) -> str | None:
        try:
            return model_files_fingerprint(resolve_model(name)) or name if name else None
        except Exception:  # a model that cannot be found here will fail its own stage with the reason
            return name

    return rate_key({
        "machine": machine_facts(), "device": training.device, "dtype": config.dtype,
        "generator": files(generation.model), "gguf": generation.gguf_file, "backend": generation.backend,
        "generation_dtype": generation.dtype, "queries_per_passage": generation.queries_per_passage,
        "max_length": generation.max_length, "max_passage_tokens": generation.max_passage_tokens,
        "prompt": [generation.prompt_template, generation.prompt_style], "gen_batch": generation.batch_size,
        "bi_encoder": files(training.base_model), "train_batch": training.batch_size,
        "max_seq_length": training.max_seq_length, "loss": training.loss, "bf16": training.bf16,
        "encode_batch": config.encode_batch_size, "passage_length": length_bucket(passages),
        **({"tuning": [config.generator_tuning.batch_size, config.generator_tuning.prompt_template,
                       config.generator_tuning.bf16]} if rounds_of(config) > 1 else {})})


def _kept_rates(key: str, keep: float, say, needs_tuning: bool = False) -> Rates | None:
    """The rates an earlier run measured here under the same key, or None."""
    entry = load_rates(key)
    if entry is None:
        return None
    stored = entry["rates"]
    try:
        rates = Rates(**{name: float(stored[name]) for name in Rates.__dataclass_fields__ if name in stored})
    except (KeyError, TypeError, ValueError):
        return None
    if needs_tuning and rates.tune_seconds_per_step <= 0:
        return None
    rates.pairs_per_passage *= keep
    age = format_duration(max(time.time() - entry["measured_at"], 1))
    say(f"  rates measured on this machine {age} ago, reused (kept in {rates_path()}; delete it to measure again)")
    return rates


def too_little_note(config: AdaptConfig, plan: Plan, rates: Rates, passages: int, elapsed: float) -> str:
    """What the budget buys and the budget that would buy ``USEFUL_STEPS`` steps here (the plan's arithmetic)."""
    budget = config.time_budget
    for _ in range(40):
        budget *= 1.25
        bigger = plan_run(budget, elapsed, passages, rates, Fixed(_fixed_costs(
            config, passages, rates.encode_seconds_per_passage)), batch_size=config.training.batch_size,
            queries_per_passage=plan.queries_per_passage, limit=config.limit,
            min_passages=config.generation.batch_size or CPU_GENERATION_BATCH, rounds=plan.rounds,
            tune_steps=plan.tune_steps)
        if bigger.steps >= USEFUL_STEPS:
            break
    return (f"{format_duration(config.time_budget)} buys {plan.steps} training step{'s' * (plan.steps != 1)} here, "
            f"too few to move the model much; about {format_duration(budget)} buys {USEFUL_STEPS}")


def remember_actual_rate(context: RunContext, **actual: float) -> None:
    """Correct this machine's kept rates by a stage's real ones (a planned run only)."""
    key = context.manifest.data.get("rate_key")
    if key:
        correct_rates(key, **actual)


def _fixed_costs(config: AdaptConfig, passages: int, encode: float) -> dict[str, float]:
    """Seconds of the stages whose cost the budget does not size: each encodes the corpus once (or a sample)."""
    load = MODEL_LOAD_SECONDS
    fixed = {"index": passages * encode + load + index_build_seconds(passages, config.index.index_type,
                                                                      config.lexical is not None)}
    if config.filtering:
        fixed["filter"] = passages * encode + load
    if config.hard_negatives:
        fixed["negatives"] = passages * encode + load
    if config.quality and config.quality.sample:
        fixed["quality check"] = min(config.quality.corpus, passages) * encode + load
    if config.eval_data:
        documents = count_records(Path(config.eval_data) / "corpus.jsonl")
        fixed["evaluate"] = 2 * (documents * encode + load)
    return fixed


def apply_plan(config: AdaptConfig, plan: Plan) -> None:
    """Set what the plan sized; what the user set stays as it was (the plan was made around it)."""
    if "passages" in plan.chosen:
        config.limit = plan.passages if plan.passages < plan.passages_total else None
    config.generation.queries_per_passage = plan.queries_per_passage
    if "steps" in plan.chosen:
        config.training.max_steps = plan.steps
    if "tuning steps" in plan.chosen:
        config.generator_tuning.max_steps = plan.tune_steps


def replan_training(context: RunContext, pairs_path: Path, training: TrainConfig, resuming: bool) -> None:
    """Size the training steps again from the time actually left, once the pairs exist.

    The plan was made before generation, from one probe batch and an assumed filter share;
    by now the generate and filter stages have run, their real times are in the manifest,
    and the pairs are counted. Only steps the plan chose are re-sized (never a user's
    ``--epochs``/``--max-steps``); a resumed training keeps the count it started with.

    The probe's rate is a few steps' worth, so the steps are planned with headroom
    (``STEP_HEADROOM``) and training stops at the time left whichever comes first: a
    pessimistic probe no longer leaves the budget unspent, an optimistic one no longer
    overruns it.
    """
    manifest = context.manifest
    stored = manifest.summary("plan")
    plan, rates = stored["plan"], stored["rates"]
    if "steps" not in plan["chosen"]:
        return
    replanned = manifest.data.get("replanned_training")
    left, after = _training_time_left(manifest.data["stages"], plan, rates)
    training.time_limit = max(left, 1.0)
    if resuming and replanned:
        training.max_steps = replanned["steps"]
        return
    pairs = count_records(pairs_path)
    per_epoch = max(1, -(-pairs // training.batch_size))
    step_seconds = step_cost(rates["train_seconds_per_step"], pairs, training.batch_size)
    per_step = step_seconds * STEP_HEADROOM
    steps = int(left / per_step) if per_step > 0 else per_epoch
    steps = max(min(steps, MAX_EPOCHS * per_epoch), per_epoch)
    training.max_steps = steps
    manifest.data["replanned_training"] = {"steps": steps, "planned_steps": plan["steps"], "pairs": pairs,
                                           "seconds_left": round(left, 1), "seconds_after": round(after, 1),
                                           "step_seconds": round(step_seconds, 2),
                                           "estimate": round(min(steps * step_seconds, left), 1)}
    manifest.save()
    context.say(f"  training re-planned: up to {steps:,} steps for the {pairs:,} pairs there are, stopping at "
                f"{format_duration(left)} (the budget left for training; the plan said {plan['steps']:,} steps)")


def budget_time_left(context: RunContext, name: str) -> float | None:
    """Seconds stage ``name`` may take without pushing the rest of the plan past the budget (None: no plan):
    the budget, less what the finished stages took and what the plan expects of those still to come."""
    stages = context.manifest.data["stages"]
    if not context.config.time_budget or stages.get("plan", {}).get("status") != "done":
        return None
    plan = context.manifest.summary("plan")["plan"]
    done = {stage for stage, entry in stages.items() if entry.get("status") == "done"}
    if "generate" in done:
        done.add("quality check")  # part of the generate stage
    spent = sum(stages[stage].get("seconds") or 0 for stage in done if stage in stages)
    later = sum(seconds for stage, seconds in plan["estimates"].items() if stage != name and stage not in done)
    return plan["budget_seconds"] * SAFETY - spent - later


def _training_time_left(stages: dict, plan: dict, rates: dict) -> tuple[float, float]:
    """(seconds left for training, seconds the stages after it are expected to take)."""
    spent = sum(entry.get("seconds") or 0 for entry in stages.values() if entry.get("status") == "done")
    after = sum(seconds for name, seconds in plan["estimates"].items() if name in ("index", "evaluate"))
    filtered = stages.get("filter", {})
    if filtered.get("status") == "done" and plan["estimates"].get("filter"):
        # the filter encoded the whole corpus with the base model, as index and evaluate will: its real time
        # corrects the probe's encoding rate (one batch) for the stages still to come
        after *= min(max(filtered["seconds"] / plan["estimates"]["filter"], 0.5), 2.0)
    left = plan["budget_seconds"] * SAFETY - spent - after - rates.get("train_overhead_seconds", 0)
    return left, after


def report_plan(plan: dict, results: list[StageResult], total: float, say, replanned: dict | None = None) -> dict:
    """Estimate against actual for each stage this invocation ran, printed and returned for the manifest."""
    rows = {}
    for result in results:
        estimate = plan["estimates"].get(result.name)
        if result.name == "generate" and "quality check" in plan["estimates"]:
            estimate = (estimate or 0) + plan["estimates"]["quality check"]
        if result.name == "train" and replanned:
            estimate = replanned["estimate"]
        if estimate is not None and result.status != "skipped":
            rows[result.name] = {"estimate": estimate, "actual": round(result.seconds, 1)}
    say(f"time budget {format_duration(plan['budget_seconds'])}: this run took {format_duration(total)} "
        f"(planned {format_duration(plan['estimated_total_seconds'])})")
    for name, row in rows.items():
        say(f"  {name}: est. {format_duration(row['estimate'])}, took {format_duration(row['actual'])}")
    return {"budget_seconds": plan["budget_seconds"], "planned_seconds": plan["estimated_total_seconds"],
            "actual_seconds": round(total, 1), "stages": rows}
