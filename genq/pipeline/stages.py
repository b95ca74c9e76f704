"""The stages of ``genq adapt``, each built from the run's config as a :class:`~genq.pipeline.stage.Stage`.

A builder returns the stage's record: the settings that identify its result, its inputs and
outputs, and the function that runs it. :func:`build_stages` lists them in order; which pairs
file a stage reads is decided there, once, so that a stage added between two others is one
line in that list.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

from genq.corpus import TokenCounter, prepare_corpus
from genq.evaluate import evaluate_systems, format_table
from genq.index import build_index
from genq.io import GenqError, count_records
from genq.negatives import mine_negatives
from genq.pipeline.budget import plan_stage, remember_actual_rate, replan_training
from genq.pipeline.config import QUERY_SOURCES, AdaptConfig, training_length_for
from genq.pipeline.engine import corpus_vectors, drop_index_shards, index_vectors
from genq.pipeline.settings import jsonable, without
from genq.pipeline.sources import (
    combine_stage,
    crop_stage,
    filter_stage,
    generate_stage,
    generation_round_stages,
)
from genq.pipeline.stage import RunContext, Stage
from genq.planning import step_cost
from genq.pseudo_label import pseudo_label
from genq.train import RUN_RECORD, train_bi_encoder
from genq.train_reranker import train_reranker
from genq.training_run import last_checkpoint

RERANKED_SYSTEMS = ("BM25", "hybrid(adapted)")  # the reranker over the plainest and over the best first stage
RERANK_DEPTH = 100  # InPars-light reranks BM25's top 100


def build_stages(context: RunContext) -> list[Stage]:
    """The run's stages in order; each pairs-reading stage reads what the one before it wrote."""
    config, paths = context.config, context.paths
    stages = [prepare_stage(context)]
    if config.time_budget:
        stages.append(plan_stage(context))
    kept: list[Path] = []  # each source's pairs as training will read them
    if config.generates:
        stages.append(generate_stage(context))
        kept.append(paths.pairs)
        if config.filtering:
            stages.append(filter_stage(context, paths.pairs))
            kept[-1] = paths.filtered
        for number in range(2, config.generator_rounds + 1):
            stages += generation_round_stages(context, number, list(kept))
            kept.append(paths.generation_round(number)[3 if config.filtering else 2])
    if config.crops:
        stages.append(crop_stage(context))
        kept.append(paths.cropped)
    pairs = kept[0]
    if len(kept) > 1:
        stages.append(combine_stage(context, kept))
        pairs = paths.combined
    if config.hard_negatives:
        stages.append(negatives_stage(context, pairs))
        pairs = paths.negatives
    with_negatives = pairs  # before GPL's labels: what a reranker trains on
    if config.gpl:
        stages.append(pseudo_label_stage(context, pairs))
        pairs = paths.labelled
    stages.append(train_stage(context, pairs))
    if config.reranker:
        stages += reranker_stages(context, with_negatives)
    stages.append(index_stage(context))
    if config.eval_data:
        stages.append(evaluate_stage(context))
        if config.eval_likelihood:
            stages.append(likelihood_evaluation_stage(context))
    return stages


def check_combination(config: AdaptConfig) -> None:
    """Options that only work together, refused before any stage runs."""
    if config.gpl and not config.hard_negatives:
        raise GenqError("--gpl grades mined negatives: --hard-negatives must be at least 1")
    if config.gpl and config.training.loss != "margin-mse":
        raise GenqError("--gpl trains on cross-encoder margins: use --loss margin-mse (the --gpl default)")
    if config.eval_likelihood and not config.eval_data:
        raise GenqError("--eval-likelihood reranks in the evaluation\n  fix: give --eval-data DIR too")
    if config.queries not in QUERY_SOURCES:
        raise GenqError(f"--queries must be one of {', '.join(QUERY_SOURCES)}, got {config.queries!r}")
    if config.generator_rounds < 1:
        raise GenqError("--generator-rounds must be at least 1")
    if config.generator_rounds > 1 and not config.generates:
        raise GenqError("--generator-rounds tunes the generator on its own queries: --queries cropped has none\n"
                        "  fix: use --queries generated or generated+cropped")
    if config.time_budget and config.ray is not None:
        raise GenqError("--time-budget plans from rates measured on this machine; Ray workers run elsewhere and in "
                        "parallel, so it cannot plan a --ray run yet\n  fix: leave one of them out (size a Ray run "
                        "with --limit, --queries-per-passage and --epochs)")
    if config.time_budget and config.queries != "generated":
        raise GenqError(f"--time-budget plans generated queries; it does not plan --queries {config.queries} yet\n"
                        "  fix: leave --time-budget out (size the run with --limit, --queries-per-passage and "
                        "--epochs), or use --queries generated")


# -- prepare: raw documents -> passages.jsonl

def prepare_stage(context: RunContext) -> Stage:
    config = context.config
    tokenizer = config.corpus.tokenizer or config.generation.gguf_file or config.generation.model
    settings = {**jsonable(config.corpus), "tokenizer": tokenizer, "input": str(context.corpus_path.resolve())}
    return Stage("prepare", settings, partial(_prepare, tokenizer=tokenizer), outputs=[context.paths.passages],
                 inputs=[context.corpus_path])


def _prepare(context: RunContext, _resume: bool, tokenizer: str) -> tuple[dict, str]:
    options = without(jsonable(context.config.corpus), "tokenizer")
    summary = prepare_corpus(context.corpus_path, context.paths.passages, tokenizer=TokenCounter(tokenizer),
                             progress=context.progress, **options)
    return summary.to_dict(), "ran"


# -- negatives: hard negatives mined for each pair

def negatives_stage(context: RunContext, pairs_in: Path) -> Stage:
    config = context.config
    config.mining.num_negatives = config.hard_negatives
    settings = {**jsonable(config.mining), "model": config.training.base_model}
    return Stage("negatives", settings, partial(_mine, pairs_in=pairs_in), outputs=[context.paths.negatives],
                 inputs=[pairs_in, context.paths.passages])


def _mine(context: RunContext, _resume: bool, pairs_in: Path) -> tuple[dict, str]:
    config, paths = context.config, context.paths
    summary = mine_negatives(pairs_in, paths.passages, paths.negatives, model=config.training.base_model,
                             config=config.mining, cache_dir=paths.cache, dtype=config.dtype,
                             progress=context.progress, corpus_vectors=None if config.mining.retriever == "bm25"
                             else corpus_vectors(context, config.training.base_model))
    return summary.to_dict(), "ran"


# -- pseudo-label (GPL): cross-encoder margins for each negative

def pseudo_label_stage(context: RunContext, pairs_in: Path) -> Stage:
    settings = {**context.config.pseudo_label.settings(), "input": pairs_in.name}
    return Stage("pseudo-label", settings, partial(_pseudo_label, pairs_in=pairs_in),
                 outputs=[context.paths.labelled], inputs=[pairs_in])


def _pseudo_label(context: RunContext, resume: bool, pairs_in: Path) -> tuple[dict, str]:
    summary = pseudo_label(pairs_in, context.paths.labelled, context.config.pseudo_label, overwrite=not resume,
                           progress=context.progress)
    return summary.to_dict(), "resumed" if summary.resumed_after else "ran"


# -- train: the bi-encoder on the pairs

def train_stage(context: RunContext, pairs_in: Path) -> Stage:
    config = context.config
    # where and how often to checkpoint say nothing about the result
    settings = {**without(jsonable(config.training), "device", "save_minutes"), "pairs": pairs_in.name}
    if config.auto_epochs and config.time_budget:
        settings.update(epochs="by time budget", max_steps="by time budget")
    elif config.auto_epochs:
        settings.update(epochs="by pair count")
        if config.auto_warmup:
            settings.update(warmup_ratio="by pair count")
    return Stage("train", settings, partial(_train, pairs_in=pairs_in),
                 outputs=[context.paths.model / "config.json"], inputs=[pairs_in])


def _train(context: RunContext, resume: bool, pairs_in: Path) -> tuple[dict, str]:
    config, model_dir, say = context.config, context.paths.model, context.say
    training = config.training
    if config.auto_epochs and not config.time_budget:
        training.epochs, warmup, why = training_length_for(count_records(pairs_in), training.batch_size)
        training.warmup_ratio = warmup if config.auto_warmup else training.warmup_ratio
        say(f"  training length: {why} (--epochs sets it)")
    can_resume = bool(resume and (model_dir / RUN_RECORD).exists() and last_checkpoint(model_dir))
    if config.time_budget and "plan" in context.manifest.data["stages"]:
        replan_training(context, pairs_in, training, can_resume)
    summary = train_bi_encoder(pairs_in, model_dir, training, resume=can_resume, overwrite=not can_resume,
                               progress=context.progress)
    if summary.steps >= 4 and summary.seconds_per_step:  # kept for a full batch: fewer pairs make cheaper steps
        share = step_cost(1.0, summary.train_pairs or training.batch_size, training.batch_size)
        remember_actual_rate(context, train_seconds_per_step=summary.seconds_per_step / share)
    for note in summary.notes:
        say(f"  note: {note}")
    if summary.verdict():
        say(f"  {summary.verdict()}")
    return summary.to_dict(), "resumed" if summary.resumed_from else "ran"


# -- reranker: a cross-encoder on the same pairs, with negatives of its own unless the run mined some

def reranker_stages(context: RunContext, with_negatives: Path) -> list[Stage]:
    config, paths = context.config, context.paths
    stages = []
    reranker_input = with_negatives if config.hard_negatives else paths.reranker_negatives
    if not config.hard_negatives:
        # the run's mining knobs (--neg-range-min ...), with BM25 as the retriever: no encoding, and
        # lexical neighbours are the confusions a reranker over BM25 must learn to undo
        mining = replace(config.mining, num_negatives=config.reranker.negatives, retriever="bm25")
        stages.append(Stage("reranker negatives", {**jsonable(mining), "pairs": with_negatives.name},
                            partial(_mine_for_reranker, pairs_in=with_negatives, mining=mining),
                            outputs=[paths.reranker_negatives], inputs=[with_negatives, paths.passages]))
    settings = {**without(jsonable(config.reranker), "device", "save_steps", "save_minutes", "logging_steps",
                          "time_limit"), "pairs": reranker_input.name}
    stages.append(Stage("reranker", settings, partial(_train_reranker, pairs_in=reranker_input),
                        outputs=[paths.reranker / RUN_RECORD], inputs=[reranker_input]))
    return stages


def _mine_for_reranker(context: RunContext, _resume: bool, pairs_in: Path, mining) -> tuple[dict, str]:
    paths = context.paths
    summary = mine_negatives(pairs_in, paths.passages, paths.reranker_negatives, model=None, config=mining,
                             cache_dir=paths.cache, dtype=context.config.dtype, progress=context.progress)
    return summary.to_dict(), "ran"


def _train_reranker(context: RunContext, resume: bool, pairs_in: Path) -> tuple[dict, str]:
    reranker_dir = context.paths.reranker
    can_resume = bool(resume and (reranker_dir / RUN_RECORD).exists() and last_checkpoint(reranker_dir))
    summary = train_reranker(pairs_in, reranker_dir, context.config.reranker, resume=can_resume,
                             overwrite=not can_resume, progress=context.progress)
    for note in summary.notes:
        context.say(f"  note: {note}")
    return summary.to_dict(), "resumed" if summary.resumed_from else "ran"


# -- index: Faiss + BM25 over the passages, with the adapted model

def index_stage(context: RunContext) -> Stage:
    config, paths = context.config, context.paths
    settings = {**jsonable(config.index), "lexical": jsonable(config.lexical) if config.lexical else None}
    return Stage("index", settings, _index, outputs=[paths.index / "index.json"],
                 inputs=[paths.passages, paths.model])


def _index(context: RunContext, _resume: bool) -> tuple[dict, str]:
    from genq.query_encoder import prepare

    config, paths = context.config, context.paths
    summary = build_index(paths.passages, str(paths.model), paths.index, config.index,
                          batch_size=config.encode_batch_size, dtype=config.dtype, progress=context.progress,
                          lexical=config.lexical, overwrite=True, embeddings=index_vectors(context, str(paths.model)))
    drop_index_shards(context)
    prepare(str(paths.model))  # the run's searches then start without torch
    return summary.to_dict(), "ran"


# -- evaluate: BM25 | base | adapted | hybrid(base) | hybrid(adapted) [| reranked] on a labelled collection

def evaluate_stage(context: RunContext) -> Stage:
    config, paths = context.config, context.paths
    settings = {"data": str(Path(config.eval_data).resolve()), "base_model": config.training.base_model,
                "hybrid": True}
    if config.reranker:
        settings["reranker"] = list(RERANKED_SYSTEMS)
    return Stage("evaluate", settings, _evaluate, outputs=[paths.eval / "results.json"],
                 inputs=[paths.model] + ([paths.reranker] if config.reranker else []))


def _evaluate(context: RunContext, _resume: bool) -> tuple[dict, str]:
    # does adaptation help, and does fusion on top; with a reranker, it reranks BM25 alone and the best first stage
    config, paths, say = context.config, context.paths, context.say
    reranker = {"reranker": str(paths.reranker), "rerank_systems": list(RERANKED_SYSTEMS),
                "rerank_label": "adapted reranker", "rerank_depth": RERANK_DEPTH} if config.reranker else {}
    report = evaluate_systems(config.eval_data, models=[config.training.base_model, str(paths.model)], bm25=True,
                              hybrid=True, output_dir=paths.eval, names=["BM25", "base", "adapted"],
                              dtype=config.dtype, progress=context.progress, cache_dir=paths.cache, **reranker)
    say(format_table(report))
    say(f"  base = {config.training.base_model}; adapted = {paths.model}; hybrid = fused with BM25 "
        f"({report['settings']['fusion']}, alpha {report['settings']['alpha']})")
    return {"systems": report["systems"]}, "ran"


# -- evaluate likelihood: hybrid(adapted) reranked by the run's own generator (UPR), beside the rows above

LIKELIHOOD_DEPTH = 20  # measured: deeper lists add cost, not quality (benchmarks/results/query_likelihood.md)
LIKELIHOOD_BLEND = ("minmax", 0.5)  # replacing the first stage's score measured worse on both collections


def likelihood_evaluation_stage(context: RunContext) -> Stage:
    config, paths = context.config, context.paths
    generation = config.generation
    settings = {"data": str(Path(config.eval_data).resolve()), "base_model": config.training.base_model,
                "generator": {"model": generation.model, "gguf_file": generation.gguf_file,
                              "prompt_template": generation.prompt_template, "prompt_style": generation.prompt_style,
                              "prefix": generation.prefix, "include_title": generation.include_title},
                "depth": LIKELIHOOD_DEPTH, "fusion": list(LIKELIHOOD_BLEND)}
    if config.generates and config.generator_rounds > 1:  # its files and prompt exist only once it is tuned
        settings["generator"] = {"tuned before round": config.generator_rounds}
    return Stage("evaluate likelihood", settings, _evaluate_likelihood,
                 outputs=[paths.eval / "likelihood" / "results.json"], inputs=[paths.model])


def likelihood_generation(context: RunContext):
    """The generator that scores in the likelihood evaluation: the one tuned before the run's last round, if any
    (it learned the corpus), else the run's generator."""
    config = context.config
    if config.generates and config.generator_rounds > 1:
        tuned = context.paths.generation_round(config.generator_rounds)[0]
        return replace(config.generation, model=str(tuned), gguf_file=None, prompt_template=None,
                       prompt_style="auto")
    return config.generation


def _evaluate_likelihood(context: RunContext, _resume: bool) -> tuple[dict, str]:
    from genq.generation.likelihood import QueryLikelihoodReranker

    config, paths = context.config, context.paths
    fusion, weight = LIKELIHOOD_BLEND
    report = evaluate_systems(config.eval_data, models=[config.training.base_model, str(paths.model)], bm25=True,
                              hybrid=True, output_dir=paths.eval / "likelihood", names=["BM25", "base", "adapted"],
                              dtype=config.dtype, progress=context.progress, cache_dir=paths.cache,
                              reranker=QueryLikelihoodReranker(likelihood_generation(context)),
                              rerank_systems=["hybrid(adapted)"],
                              rerank_label="likelihood", rerank_depth=LIKELIHOOD_DEPTH, rerank_fusion=fusion,
                              rerank_weight=weight)
    context.say(format_table(report))
    return {"systems": report["systems"]}, "ran"
