"""The stages that make the training pairs: generate and filter, the self-training rounds, crops, their union.

Where a run's queries come from (``--queries``, ``--generator-rounds``), kept apart from what is
done with the pairs afterwards (:mod:`genq.pipeline.stages`), which lists these stages in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

from genq.cropping import crop_queries
from genq.filter import filter_pairs
from genq.generation.family import generator_family
from genq.generation.pairs_file import iter_pairs, merge_pairs
from genq.generation.run import meta_path_for
from genq.io import GenqError, atomic_write, count_records, dumps_line, iter_jsonl
from genq.pipeline.budget import budget_time_left, plan_sizes_tuning, probe_passages, remember_actual_rate
from genq.pipeline.config import CROPS_PER_PASSAGE, queries_per_passage_for
from genq.pipeline.engine import corpus_vectors, run_generation
from genq.pipeline.settings import jsonable, without
from genq.pipeline.stage import RunContext, Stage
from genq.train import RUN_RECORD
from genq.train_generator import pairs_from_file, train_generator
from genq.training_run import last_checkpoint

# -- generate: passages -> pairs.jsonl

MEASURED_PASSAGES = 8  # a generate stage that sampled this many (in run-sized batches) is a better rate than a probe

def generate_stage(context: RunContext) -> Stage:
    config, paths = context.config, context.paths
    generation = config.generation
    # the settings as they will run (the family's defaults filled in), so that leaving a default unset and
    # giving its value are the same run, and runs recorded before per-family defaults still match
    as_run = without(jsonable(generation.for_family(generator_family(generation))), "batch_size", "device")
    settings = {**as_run, "family": generation.family, "limit": config.limit}
    if config.auto_queries_per_passage:
        settings["queries_per_passage"] = "by corpus size"
    if config.ray is not None:  # a single-process partial and a Ray job's shards do not finish each other
        settings["engine"] = "ray"
    budget_sized(config, settings)
    return Stage("generate", settings, _generate, outputs=[paths.pairs, meta_path_for(paths.pairs)],
                 inputs=[paths.passages], resumes_unrecorded=True)


def budget_sized(config, sampling: dict) -> None:
    """A generation stage's settings where the plan sizes them: the plan runs after the stages are listed, so what
    it will choose is recorded as chosen by it (a rerun with the same budget is the same stage)."""
    if config.time_budget:
        sampling["limit"] = "by time budget" if config.limit is None else config.limit
        if config.auto_queries_per_passage:
            sampling["queries_per_passage"] = "by time budget"


def size_queries_per_passage(context: RunContext) -> str | None:
    """Set the queries per passage by corpus size where the user left them to genq (every round samples as many);
    returns why, or None when they were given (or the time budget sizes them)."""
    config = context.config
    if not config.auto_queries_per_passage or config.time_budget:
        return None
    passages = count_records(context.paths.passages)
    config.generation.queries_per_passage, why = queries_per_passage_for(min(passages, config.limit or passages))
    return why


def _generate(context: RunContext, resume: bool) -> tuple[dict, str]:
    config, paths, say = context.config, context.paths, context.say
    generation = config.generation
    why = size_queries_per_passage(context)
    if why:
        say(f"  queries per passage: {generation.queries_per_passage} ({why}; --queries-per-passage sets it)")
    passages = paths.passages
    probed = set(probe_passages(context))
    if probed and config.limit is not None:  # a budget's share of the corpus: the passages the probe sampled first
        passages = paths.cache / "plan" / "passages.probe-first.jsonl"
        if not (resume and passages.exists()):
            write_in_order(paths.passages, passages, first=lambda passage_id: passage_id in probed)
    generator = context.handed_on.pop("generator", None)
    summary = run_generation(context, passages, paths.pairs, generation, resume, generator=generator)
    if getattr(generator, "reused", 0):
        say(f"  {generator.reused:,} passages' queries taken from the plan's probe, which had sampled them")
    sampled_here = summary.passages_generated - getattr(generator, "reused", 0)  # the probe's cost nothing here
    if sampled_here >= MEASURED_PASSAGES and summary.sampling_seconds > 0:
        remember_actual_rate(context, generate_seconds_per_passage=summary.sampling_seconds / sampled_here)
    # the whole file's counts: after a resume this run's own are only part of it
    counts = summary.file_counts or summary.to_dict()
    runaway = f" ({counts['filtered_runaway']:,} runaway)" if counts.get("filtered_runaway") else ""
    say(f"  {summary.pairs_in_file:,} pairs; {counts['filtered_out']:,} of {counts['queries_sampled']:,} samples "
        f"dropped{runaway}, {counts['duplicates_dropped']:,} duplicates; {counts['passages_without_query']:,} "
        "passages left without a query")
    if summary.quality:
        say(f"  quality: {summary.quality.headline()}")
        if warning := summary.quality.warning():
            say(warning)
    return summary.to_dict(), "resumed" if summary.passages_skipped_as_done else "ran"


def write_in_order(passages: Path, output: Path, first: Callable[[str], bool]) -> None:
    """``passages`` rewritten with those whose id ``first`` accepts ahead of the rest, corpus order kept within
    each part (so a ``--limit`` reaches them first); two streaming passes, the corpus never whole in memory."""
    with atomic_write(output) as handle:
        for wanted in (True, False):
            for _, passage in iter_jsonl(passages):
                if first(str(passage["_id"])) is wanted:
                    handle.write(dumps_line(passage))


# -- filter: keep the pairs whose passage the base model finds again (and/or the generator scored high)

def filter_stage(context: RunContext, pairs_in: Path, output: Path | None = None, name: str = "filter") -> Stage:
    config = context.config
    output = output or context.paths.filtered
    settings = {"top_k": config.filter_top_k, "min_score": config.filter_min_score,
                "keep_top_share": config.filter_keep_top_share, "min_logprob": config.filter_min_logprob,
                "model": config.training.base_model}
    return Stage(name, settings, partial(_filter, pairs_in=pairs_in, output=output), outputs=[output],
                 inputs=[pairs_in, context.paths.passages])


def _filter(context: RunContext, _resume: bool, pairs_in: Path, output: Path) -> tuple[dict, str]:
    config, paths = context.config, context.paths
    summary = filter_pairs(pairs_in, paths.passages, config.training.base_model, output,
                           top_k=config.filter_top_k, min_score=config.filter_min_score,
                           keep_top_share=config.filter_keep_top_share, min_logprob=config.filter_min_logprob,
                           cache_dir=paths.cache, dtype=config.dtype, progress=context.progress,
                           corpus_vectors=corpus_vectors(context, config.training.base_model))
    if summary.kept < 2:
        raise GenqError(f"the filter kept {summary.kept} of {summary.total} pairs: too few to train on\n"
                        "  fix: raise --filter-top-k, lower --filter-min-score, or generate more queries")
    context.say(f"  kept {summary.kept:,} of {summary.total:,} pairs; quality after: "
                f"{summary.quality_after.headline()}")
    return summary.to_dict(), "ran"


# -- generation rounds: the generator tuned on the kept pairs so far samples again (self-training, as iGFT)

def generation_round_stages(context: RunContext, number: int, kept_so_far: list[Path]) -> list[Stage]:
    config, paths = context.config, context.paths
    generator_dir, passages, pairs, filtered = paths.generation_round(number)
    generation = config.generation
    tuning = {**without(jsonable(config.generator_tuning), "device", "save_steps", "save_minutes", "logging_steps",
                        "time_limit"), "generator": generation.model, "gguf_file": generation.gguf_file,
              "pairs": [path.name for path in kept_so_far]}
    sampling = {**without(jsonable(generation), "batch_size", "device", "model", "gguf_file", "prompt_template",
                          "prompt_style"), "generator": f"tuned before round {number}", "limit": config.limit}
    budget_sized(config, sampling)
    if config.time_budget and plan_sizes_tuning(config):
        tuning["max_steps"] = "by time budget"
    if config.ray is not None:
        sampling["engine"] = "ray"
    tune = f"tune generator {number}"
    stages = [Stage(tune, tuning, partial(_tune_generator, pairs_in=kept_so_far, output=generator_dir, name=tune),
                    outputs=[generator_dir / "config.json"], inputs=kept_so_far),
              Stage(f"generate round {number}", sampling, partial(_generate_round, number=number,
                                                                  kept_so_far=kept_so_far),
                    outputs=[pairs, meta_path_for(pairs)], inputs=[paths.passages, generator_dir / "config.json"],
                    resumes_unrecorded=True)]
    if config.filtering:
        stages.append(filter_stage(context, pairs, filtered, name=f"filter round {number}"))
    return stages


def _tune_generator(context: RunContext, resume: bool, pairs_in: list[Path], output: Path,
                    name: str) -> tuple[dict, str]:
    config = context.config
    rows = [row for path in pairs_in for row in pairs_from_file(path)]
    tuning = replace(config.generator_tuning, generator=config.generation.model,
                     gguf_file=config.generation.gguf_file)
    can_resume = bool(resume and (output / RUN_RECORD).exists() and last_checkpoint(output))
    left = budget_time_left(context, name)
    if left is not None:  # a slower tuning than the probe's stops where the rest of the plan still fits
        tuning = replace(tuning, time_limit=max(left, 1.0))
    summary = train_generator(rows, output, tuning, resume=can_resume, overwrite=not can_resume,
                              progress=context.progress)
    if summary.steps >= 4 and summary.seconds_per_step:
        remember_actual_rate(context, tune_seconds_per_step=summary.seconds_per_step)
    context.say(f"  tuned the generator {summary.steps:,} steps on {summary.pairs:,} kept pairs; loss "
                f"{summary.first_loss} -> {summary.final_loss}")
    return summary.to_dict(), "resumed" if summary.resumed_from else "ran"


def _generate_round(context: RunContext, resume: bool, number: int, kept_so_far: list[Path]) -> tuple[dict, str]:
    """Sample with the tuned generator, the passages that no kept pair covers yet first (a --limit reaches them)."""
    config, paths = context.config, context.paths
    generator_dir, ordered, pairs, _ = paths.generation_round(number)
    if not (resume and ordered.exists()):
        covered = {str(record.get("passage_id")) for path in kept_so_far for _, record in iter_pairs(path)}
        write_in_order(paths.passages, ordered, first=lambda passage_id: passage_id not in covered)
    size_queries_per_passage(context)  # as round 1 sampled, also when its stage was skipped
    # the tuned generator samples under the prompt it learned (prompt_template None: its own)
    generation = replace(config.generation, model=str(generator_dir), gguf_file=None, prompt_template=None,
                         prompt_style="auto")
    summary = run_generation(context, ordered, pairs, generation, resume)
    counts = summary.file_counts or summary.to_dict()
    context.say(f"  round {number}: {summary.pairs_in_file:,} pairs; {counts['filtered_out']:,} of "
                f"{counts['queries_sampled']:,} samples dropped ({counts.get('filtered_runaway', 0):,} runaway)")
    return summary.to_dict(), "resumed" if summary.passages_skipped_as_done else "ran"


# -- crop: pseudo-queries cut from the passages, no generator

def crop_stage(context: RunContext) -> Stage:
    config = context.config
    per_passage = CROPS_PER_PASSAGE if config.auto_queries_per_passage else config.generation.queries_per_passage
    settings = {"queries_per_passage": per_passage, "seed": config.generation.seed, "limit": config.limit}
    return Stage("crop", settings, partial(_crop, per_passage=per_passage), outputs=[context.paths.cropped],
                 inputs=[context.paths.passages])


def _crop(context: RunContext, _resume: bool, per_passage: int) -> tuple[dict, str]:
    config, paths = context.config, context.paths
    summary = crop_queries(paths.passages, paths.cropped, per_passage=per_passage, seed=config.generation.seed,
                           limit=config.limit)
    context.say(f"  cropped {summary.pairs:,} pseudo-queries from {summary.passages:,} passages")
    return summary.to_dict(), "ran"


# -- combine: every source's pairs in one training file

def combine_stage(context: RunContext, inputs: list[Path]) -> Stage:
    return Stage("combine", {"inputs": [path.name for path in inputs]}, partial(_combine, inputs=inputs),
                 outputs=[context.paths.combined], inputs=inputs)


def _combine(context: RunContext, _resume: bool, inputs: list[Path]) -> tuple[dict, str]:
    counts = merge_pairs(inputs, context.paths.combined)
    context.say(f"  {counts['pairs']:,} pairs to train on (" + ", ".join(
        f"{count:,} from {Path(name).name}" for name, count in counts["inputs"].items()) + ")")
    return counts, "ran"
