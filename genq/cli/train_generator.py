"""``genq train-generator``: tune a query generator on (passage, query) pairs, and the options ``adapt`` reuses."""

from __future__ import annotations

import functools

import click

from genq.cli.common import offline_stand_in, say, show_progress, stack, user_errors
from genq.cli.train import run_options


def generator_tuning_options(function=None, in_adapt: bool = False):
    """How a generator is tuned: `genq train-generator`'s --epochs, --lr, ... are `genq adapt`'s --generator-epochs,
    --generator-lr, ... (there the plain names are the bi-encoder's)."""
    if function is None:
        return functools.partial(generator_tuning_options, in_adapt=in_adapt)
    from genq.generation.templates import BUILTIN_TEMPLATES

    def name(plain: str, prefixed: str) -> str:
        return prefixed if in_adapt else plain

    return stack(function, [
        click.option(name("--epochs", "--generator-epochs"), "generator_epochs", type=float, default=None,
                     help="Passes over the pairs when tuning the generator [default: by pair count: at least 100 "
                          "steps, 1 to 3 epochs]."),
        click.option(name("--lr", "--generator-lr"), "generator_lr", type=float, default=5e-5, show_default=True,
                     help="Peak learning rate of the generator's tuning (AdamW, linear decay)."),
        click.option(name("--train-batch-size", "--generator-batch-size"), "generator_batch_size",
                     type=click.IntRange(1), default=8, show_default=True,
                     help="(passage, query) pairs per step of the generator's tuning."),
        click.option(name("--prompt-template", "--tuning-prompt"), "tuning_prompt", default="zero-shot",
                     show_default=True,
                     help=f"Decoder-only generators: the prompt they are tuned (and then sample) under: built-in "
                          f"({', '.join(BUILTIN_TEMPLATES)}) or a file with {{passage}}. zero-shot is several "
                          "times cheaper per step than the few-shot msmarco."),
    ])


def tuning_config(options: dict, generator: str, gguf_file: str | None, device=None, seed: int = 42):
    from genq.train_generator import GeneratorTrainingConfig

    return GeneratorTrainingConfig(generator=generator, gguf_file=gguf_file, prompt_template=options["tuning_prompt"],
                                   epochs=options["generator_epochs"], lr=options["generator_lr"],
                                   batch_size=options["generator_batch_size"], seed=seed, device=device)


@click.command("train-generator")
@click.argument("pairs", required=False, type=click.Path(path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Generator directory to write.")
@click.option("--from-beir", type=click.Path(file_okay=False),
              help="Learn from a labelled BEIR collection instead: each query beside its relevant documents.")
@click.option("--split", default="test", show_default=True, help="--from-beir: the qrels split to read.")
@click.option("--generator", default=None,
              help="The generator to tune: seq2seq or causal LM id/dir, or a .gguf file [default: "
                   "BeIR/query-gen-msmarco-t5-base-v1; offline, the installed SmolLM2-135M-Instruct].")
@click.option("--gguf-file", default=None, help="GGUF weights (a path, or a file name inside the --generator dir).")
@generator_tuning_options
@click.option("--prompt-style", type=click.Choice(["auto", "chat", "plain"]), default="auto", show_default=True,
              help="Decoder-only: chat turns (the model's chat template) or plain text; auto = chat where it has one.")
@click.option("--max-passage-tokens", type=click.IntRange(8), default=None,
              help="Passage tokens the generator reads [default: as sampling reads them: 350 seq2seq, 200 causal].")
@click.option("--no-title", is_flag=True, help="Do not put the passage title in the generator input.")
@click.option("--train-seed", type=int, default=42, show_default=True)
@click.option("--bf16/--no-bf16", default=None, help="bf16 mixed precision [default: where the device does it "
                                                      "natively].")
@run_options("generator")
@user_errors
def train_generator_command(pairs, output, from_beir, split, generator, gguf_file, prompt_style, max_passage_tokens,
                            no_title, train_seed, bf16, max_steps, time_limit, save_steps, save_minutes, device,
                            resume, overwrite, **options):
    """Fine-tune a query generator on PAIRS (genq's pairs, filtered or not) or on a labelled collection.

    \b
    The tuned generator writes queries like the ones it learned from; use it with
      genq generate PASSAGES -o pairs.jsonl --generator OUTPUT
    (it samples under the prompt it was tuned with), or as a query-likelihood reranker:
      genq search RUN "..." --rerank query-likelihood --rerank-generator OUTPUT
    """
    from genq.durations import parse_duration
    from genq.generation.settings import DEFAULT_GENERATOR
    from genq.io import GenqError
    from genq.train_generator import pairs_from_file, pairs_from_qrels, train_generator

    if (pairs is None) == (from_beir is None):
        raise GenqError("give either PAIRS (a pairs file) or --from-beir DIR (a labelled collection), not "
                        + ("both" if pairs else "neither"))
    config = tuning_config(options, offline_stand_in(generator or DEFAULT_GENERATOR), gguf_file, device, train_seed)
    config.prompt_style, config.max_passage_tokens = prompt_style, max_passage_tokens
    config.include_title = not no_title
    config.bf16, config.max_steps, config.save_steps, config.save_minutes = bf16, max_steps, save_steps, save_minutes
    config.time_limit = parse_duration(time_limit) if time_limit else None
    rows = pairs_from_file(pairs) if pairs else pairs_from_qrels(from_beir, split)
    summary = train_generator(rows, output, config, source="pairs" if pairs else "qrels", resume=resume,
                              overwrite=overwrite, progress=show_progress())
    say(f"tuned the generator {summary.steps:,} steps on {summary.pairs:,} pairs ({summary.distinct_queries:,} "
        f"distinct queries, {summary.passages:,} passages, {summary.input_tokens_mean:.0f} tokens a row) in "
        f"{summary.seconds:.0f}s; loss {summary.first_loss} -> {summary.final_loss}"
        + (" (stopped at the time limit)" if summary.stopped_at_time_limit else ""))
    for note in summary.notes:
        say(f"  note: {note}")
    say(f"  generator saved to {output}: `genq generate PASSAGES -o pairs.jsonl --generator {output}`")
