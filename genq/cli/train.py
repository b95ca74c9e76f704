"""``genq train`` and ``genq train-reranker``, and the training options ``adapt`` reuses."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from genq.cli.common import option, say, show_progress, stack, user_errors


def training_options(function=None, batch_alias: bool = True):
    """Every knob of `genq train`, shared with `genq adapt` (where --batch-size would be ambiguous)."""
    if function is None:
        return functools.partial(training_options, batch_alias=batch_alias)
    from genq.train import DEFAULT_BASE_MODEL, LOSSES

    batch_old = ("--batch-size",) if batch_alias else ()

    for decorator in reversed([
        option("--base-model", "base_model", old=("-m", "--model") if batch_alias else (), default=DEFAULT_BASE_MODEL,
               show_default=True,
                     help="sentence-transformers id/dir; a plain HF encoder gets mean pooling."),
        click.option("--loss", type=click.Choice(LOSSES), default="mnrl", show_default=True,
                     help="mnrl = MultipleNegativesRankingLoss; cached-mnrl = its GradCache variant."),
        click.option("--mini-batch-size", type=click.IntRange(1), default=32, show_default=True,
                     help="cached-mnrl: sub-batch that fits in memory."),
        click.option("--scale", type=float, default=20.0, show_default=True, help="MNRL similarity scale."),
        click.option("--similarity", type=click.Choice(["cos", "dot"]), default="cos", show_default=True,
                     help="How the loss compares query and passage vectors (genq indexes cosine)."),
        click.option("--epochs", type=float, default=1.0, show_default=batch_alias,
                     help=None if batch_alias else "[default: by pair count: >= 1,000 steps, 1 to 10 epochs]"),
        option("--train-batch-size", "train_batch_size", old=batch_old, type=click.IntRange(2), default=64,
               show_default=True, help="Pairs per step, per device (under torchrun: times the processes)."),
        click.option("--lr", type=float, default=2e-5, show_default=True, help="Peak learning rate (AdamW)."),
        click.option("--warmup-ratio", type=float, default=0.1, show_default=True,
                     help="Share of the steps over which the learning rate rises to --lr, then decays linearly."),
        click.option("--max-seq-length", type=click.IntRange(8), default=None,
                     help="Tokens of a passage the model reads in training [default: the base model's own, 256 for "
                          "all-MiniLM-L6-v2]."),
        click.option("--train-seed", "train_seed", type=int, default=42, show_default=True,
                     help="Seed of the batch order, held-out split and any new weights."),
        click.option("--bf16/--no-bf16", default=None,
                     help="bf16 mixed precision [default: on where the device does bf16 natively: CUDA cards with "
                          "bf16, CPUs with AMX or AVX512-BF16]."),
        click.option("--group-by-length/--no-group-by-length", default=True, show_default=True,
                     help="Batches of similar passage length (less padding), still no passage twice in a batch."),
        click.option("--eval-share", type=float, default=0.01, show_default=True,
                     help="Share of passages held out for in-training retrieval metrics."),
        click.option("--allow-duplicates-in-batch", is_flag=True,
                     help="Plain shuffled batches (default: no passage twice in a batch)."),
        click.option("--max-steps", type=int, default=-1, help="Stop after N steps (overrides --epochs)."),
        click.option("--save-steps", type=click.IntRange(1), default=500, show_default=True,
                     help="Checkpoint (and evaluate) every N steps."),
        click.option("--save-minutes", type=click.FloatRange(0), default=10.0, show_default=True,
                     help="Also checkpoint whenever this long has passed since the last one (0: by steps only)."),
    ]):
        function = decorator(function)
    return function


def train_config(options: dict, device=None):
    from genq.train import TrainConfig

    return TrainConfig(
        base_model=options["base_model"], loss=options["loss"], mini_batch_size=options["mini_batch_size"],
        scale=options["scale"], similarity=options["similarity"], epochs=options["epochs"],
        batch_size=options["train_batch_size"], lr=options["lr"], warmup_ratio=options["warmup_ratio"],
        max_seq_length=options["max_seq_length"], seed=options["train_seed"], bf16=options["bf16"],
        group_by_length=options["group_by_length"],
        eval_share=options["eval_share"], no_duplicates=not options["allow_duplicates_in_batch"],
        max_steps=options["max_steps"], save_steps=options["save_steps"], save_minutes=options["save_minutes"],
        device=device)


@click.command()
@click.argument("pairs", type=click.Path(path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Model directory to write.")
@training_options
@click.option("--device", default=None, help="cpu, cuda, mps (default: the best available).")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in the output directory.")
@click.option("--overwrite", is_flag=True,
              help="Train again; the genq model at --output is replaced once the new one is complete.")
@click.option("--time-limit", help="Stop at the step that would pass this much training time (90s, 30m, 2h); the "
                                   "model so far is saved as usual.")
@option("--eval-data", "eval_beir", old=("--eval-beir",), type=click.Path(file_okay=False),
        help="Labelled BEIR folder: evaluate base and trained model at the end.")
@user_errors
def train(pairs, output, device, resume, overwrite, time_limit, eval_beir, **options):
    """Fine-tune a bi-encoder on PAIRS (query, passage[, negatives]) with in-batch negatives.

    \b
    On several GPUs (or CPU processes), launch it unchanged with torchrun:
      torchrun --nproc-per-node 4 -m genq train PAIRS -o MODEL
    --train-batch-size is then per process (the global batch is N times it), and in-batch
    negatives are gathered across processes.
    """
    from genq.train import Processes, train_bi_encoder

    config = train_config(options, device)
    if time_limit is not None:
        from genq.durations import parse_duration

        config.time_limit = parse_duration(time_limit)
    summary = train_bi_encoder(pairs, output, config, resume=resume, overwrite=overwrite, progress=show_progress())
    if not Processes().main:  # one summary per run, from the main process
        return
    if summary.stopped_at_time_limit:
        say(f"stopped at the time limit ({time_limit}) after {summary.steps:,} step{'' if summary.steps == 1 else 's'}")
    say(f"trained {summary.steps:,} steps on {summary.train_pairs:,} pairs ({summary.passages:,} passages, "
        f"{summary.negatives_per_pair} hard negatives each) in {summary.seconds:.0f}s; final loss {summary.final_loss}")
    say(f"  no-duplicates sampler kept {summary.duplicates_a_plain_batch_would_hold:,} same-passage pairs out of "
        "shared batches" if config.no_duplicates else
        f"  plain batches: ~{summary.duplicates_a_plain_batch_would_hold:,} pairs share a batch with their passage")
    verdict = summary.verdict()
    if verdict:
        say(f"  {verdict}")
    else:
        for key, value in summary.eval_metrics.items():
            if "ndcg@10" in key or "mrr@10" in key:
                say(f"  held-out {key}: {value}")
    for note in summary.notes:
        say(f"  note: {note}")
    say(f"  model saved to {output} (training_log.json, loss_curve.png, README.md model card)")
    if eval_beir:
        from genq.evaluate import evaluate_systems, format_table

        report = evaluate_systems(eval_beir, models=[config.base_model, output], output_dir=Path(output) / "eval",
                                  progress=show_progress())
        click.echo(format_table(report))


def run_options(what: str):
    """How long a trainer runs and where it checkpoints: `train-reranker`'s and `train-generator`'s, alike."""
    def decorate(function):
        return stack(function, [
            click.option("--max-steps", type=int, default=-1, help="Stop after N steps (overrides --epochs)."),
            click.option("--time-limit",
                         help="Stop at the step that would pass this much training time (90s, 30m, 2h)."),
            click.option("--save-steps", type=click.IntRange(1), default=500, show_default=True),
            click.option("--save-minutes", type=click.FloatRange(0), default=10.0, show_default=True,
                         help="Also checkpoint whenever this long has passed since the last one (0: by steps only)."),
            click.option("--device", default=None, help="cpu, cuda, mps (default: the best available)."),
            click.option("--resume", is_flag=True, help="Continue from the last checkpoint in the output directory."),
            click.option("--overwrite", is_flag=True,
                         help=f"Train again; the {what} at --output is replaced once the new one is complete."),
        ])
    return decorate


@click.command("train-reranker")
@click.argument("pairs", type=click.Path(path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Reranker directory to write.")
@click.option("--base-model", default=None,
              help="An encoder (a new scoring head is added) or a cross-encoder to adapt further "
                   "[default: all-MiniLM-L6-v2, available offline].")
@click.option("--loss", type=click.Choice(["bce", "mnrl"]), default="bce", show_default=True,
              help="bce: binary cross-entropy over (query, passage, 1/0); mnrl: softmax over the positive, the "
                   "negatives and in-batch passages.")
@click.option("--negatives-per-pair", "negatives", type=click.IntRange(1), default=3, show_default=True,
              help="Negatives per pair: its mined ones (genq mine-negatives) first, then other pairs' passages at "
                   "random.")
@click.option("--epochs", type=float, default=3.0, show_default=True,
              help="A new scoring head needs them: at 1 epoch it stayed at the label prior (see --lr).")
@click.option("--train-batch-size", type=click.IntRange(2), default=32, show_default=True,
              help="Rows per step (bce: one per passage; mnrl: one per pair).")
@click.option("--lr", type=float, default=5e-5, show_default=True,
              help="Peak learning rate; measured on whole Cranfield, 2e-5 for 1 epoch learned next to nothing.")
@click.option("--warmup-ratio", type=float, default=0.1, show_default=True)
@click.option("--lr-schedule", "schedule", type=click.Choice(["constant_with_warmup", "linear", "cosine"]),
              default="constant_with_warmup", show_default=True, help="The learning rate after the warmup.")
@click.option("--max-length", type=click.IntRange(16, 512), default=256, show_default=True,
              help="Tokens of query and passage together (the model's own limit caps it).")
@click.option("--train-seed", type=int, default=42, show_default=True)
@click.option("--bf16/--no-bf16", default=None, help="bf16 mixed precision [default: where the device does it "
                                                      "natively].")
@click.option("--group-by-length/--no-group-by-length", default=True, show_default=True)
@run_options("reranker")
@user_errors
def train_reranker_command(pairs, output, base_model, loss, negatives, epochs, train_batch_size, lr, warmup_ratio,
                           schedule, max_length, train_seed, bf16, group_by_length, max_steps, time_limit,
                           save_steps, save_minutes, device, resume, overwrite):
    """Train a cross-encoder reranker on PAIRS (InPars-light): rerank any search with --rerank OUTPUT.

    \b
    Best with mined negatives:
      genq mine-negatives pairs.jsonl --corpus passages.jsonl -o pairs.negatives.jsonl \\
          --neg-retriever bm25 --num-negatives 3
      genq train-reranker pairs.negatives.jsonl -o models/reranker
    """
    from genq.durations import parse_duration
    from genq.train import DEFAULT_BASE_MODEL
    from genq.train_reranker import RerankerConfig, train_reranker

    config = RerankerConfig(base_model=base_model or DEFAULT_BASE_MODEL, loss=loss, negatives=negatives,
                            epochs=epochs, batch_size=train_batch_size, lr=lr, warmup_ratio=warmup_ratio,
                            schedule=schedule, max_length=max_length, seed=train_seed, bf16=bf16,
                            group_by_length=group_by_length, max_steps=max_steps, save_steps=save_steps,
                            save_minutes=save_minutes, device=device,
                            time_limit=parse_duration(time_limit) if time_limit else None)
    summary = train_reranker(pairs, output, config, resume=resume, overwrite=overwrite, progress=show_progress())
    say(f"trained a reranker {summary.steps:,} steps on {summary.rows:,} rows ({summary.pairs:,} pairs, "
        f"{summary.hard_negatives:,} mined and {summary.random_negatives:,} random negatives) in "
        f"{summary.seconds:.0f}s; final loss {summary.final_loss}"
        + (" (stopped at the time limit)" if summary.stopped_at_time_limit else ""))
    for note in summary.notes:
        say(f"  note: {note}")
    say(f"  reranker saved to {output}: search with `genq search INDEX \"...\" --rerank {output}`")


def reranker_stage_options(function):
    """The reranker stage of `genq adapt` (`--reranker`, `--reranker-*`): `train-reranker`'s main knobs, prefixed."""
    return stack(function, [
        click.option("--reranker", "with_reranker", is_flag=True,
                     help="Also train a cross-encoder reranker on the pairs (InPars-light); `genq search RUN --rerank` "
                          "and `genq serve RUN --rerank` then use it, and --eval-data adds reranked rows."),
        click.option("--reranker-base-model", default=None,
                     help="An encoder or cross-encoder the reranker starts from [default: all-MiniLM-L6-v2]."),
        click.option("--reranker-loss", type=click.Choice(["bce", "mnrl"]), default="bce", show_default=True),
        click.option("--reranker-epochs", type=float, default=3.0, show_default=True),
        click.option("--reranker-negatives-per-pair", type=click.IntRange(1), default=3, show_default=True,
                     help="Negatives per pair for the reranker: the mined ones (BM25's when --num-negatives is 0)."),
    ])


def reranker_stage_config(options: dict, training, device=None):
    """The reranker stage's config (None without --reranker): seed and bf16 follow the bi-encoder's training."""
    from genq.train import DEFAULT_BASE_MODEL
    from genq.train_reranker import RerankerConfig

    if not options["with_reranker"]:
        return None
    return RerankerConfig(base_model=options["reranker_base_model"] or DEFAULT_BASE_MODEL,
                          loss=options["reranker_loss"], epochs=options["reranker_epochs"],
                          negatives=options["reranker_negatives_per_pair"], seed=training.seed, bf16=training.bf16,
                          device=device)
