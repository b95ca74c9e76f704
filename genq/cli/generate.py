"""``genq generate``, and the generation options ``adapt`` reuses."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from genq.cli.common import (
    AUTO_OR_COUNT,
    device_options,
    given_options,
    offline_stand_in,
    option,
    ray_options,
    say,
    show_progress,
    user_errors,
)
from genq.io import GenqError


def generation_options(function=None, batch_alias: bool = True):
    """Every knob of `genq generate`, shared with `genq adapt` (where --batch-size would be ambiguous)."""
    if function is None:
        return functools.partial(generation_options, batch_alias=batch_alias)
    from genq.generate import BACKENDS, BUILTIN_TEMPLATES, DEFAULT_GENERATOR, PROMPT_STYLES

    batch_old = ("--batch-size",) if batch_alias else ()

    for decorator in reversed([
        click.option("--generator", "generator_model", default=DEFAULT_GENERATOR, show_default=True,
                     help="Seq2seq or causal LM id/dir, or a .gguf file."),
        click.option("--gguf-file", help="GGUF weights (a path, or a file name inside the --generator repo/dir)."),
        click.option("--queries-per-passage", type=click.IntRange(1), default=3 if batch_alias else None,
                     show_default=batch_alias,
                     help=None if batch_alias else "[default: by corpus size: ~250k queries in all, 1 to 5 each]"),
        click.option("--top-p", type=float, default=0.95, show_default=True, help="Nucleus sampling mass."),
        option("--sample-top-k", "top_k", old=("--top-k",), type=click.IntRange(0), default=25, show_default=True,
               help="Sample among the k likeliest tokens (0 turns it off)."),
        option("--max-query-tokens", "max_length", old=("--max-length",), type=click.IntRange(1),
               help="Longest query, in tokens [default: 64 seq2seq, 32 causal, where longer samples are dropped]."),
        click.option("--max-passage-tokens", type=click.IntRange(8),
                     help="Passage input truncation [default: 350 seq2seq, 200 causal]."),
        click.option("--temperature", type=click.FloatRange(0, min_open=True),
                     help="Sampling temperature [default: 1.0 seq2seq, 0.7 causal]."),
        click.option("--seed", type=int, default=42, show_default=True),
        click.option("--prefix", default="", help="Text prepended to each passage (for generators trained so)."),
        click.option("--prompt-template",
                     help=f"Causal LMs: built-in ({', '.join(BUILTIN_TEMPLATES)}) or a file with {{passage}} "
                          "[default: the one a generator tuned by `genq train-generator` learned under, else "
                          "msmarco]."),
        click.option("--prompt-style", type=click.Choice(PROMPT_STYLES), default="auto", show_default=True,
                     help="Causal LMs: chat = the template as chat turns (the model's chat template), plain = as "
                          "text to continue; auto = chat when the model has a chat template."),
        click.option("--no-title", is_flag=True, help="Do not prepend the passage title to the generator input."),
        click.option("--min-query-words", type=click.IntRange(0), default=0, help="Drop shorter queries."),
        click.option("--max-query-words", type=click.IntRange(0),
                     help="Drop longer queries (0: no cap) [default: no cap seq2seq, 20 causal]."),
        click.option("--drop-copies", is_flag=True, help="Drop queries that are a verbatim span of their passage."),
        option("--gen-batch-size", "gen_batch_size", old=batch_old, type=AUTO_OR_COUNT, default="auto",
               show_default=True, help="Passages per sampling call. auto: as many as the GPU's free memory holds "
               "(up to 1,024; halved and retried if one does not fit), 16 on a CPU."),
        click.option("--backend", "generation_backend", type=click.Choice(BACKENDS), default="auto",
                     show_default=True, help="What samples the queries: torch (genq's decoding loops, any device) or "
                     "ctranslate2 (the model converted once; int8 on a CPU). auto: ctranslate2 for seq2seq models "
                     "on a CPU (measured 4.0x the reference loop; torch 3.0x in bf16), torch otherwise."),
        click.option("--quality-sample", type=click.IntRange(0), default=200, show_default=True,
                     help="Queries of the finished pairs to measure (round trip, copies, template echoes); 0: off."),
        click.option("--quality-model", help="Bi-encoder that judges the round trip [default: the base model]."),
    ]):
        function = decorator(function)
    return function


def generation_config(options: dict, device=None, dtype="auto"):
    from genq.generate import GenerationConfig

    return GenerationConfig(
        model=options["generator_model"], gguf_file=options["gguf_file"],
        queries_per_passage=options["queries_per_passage"] or 3, top_p=options["top_p"], top_k=options["top_k"],
        max_length=options["max_length"], max_passage_tokens=options["max_passage_tokens"],
        temperature=options["temperature"], seed=options["seed"], prefix=options["prefix"],
        prompt_template=options["prompt_template"], prompt_style=options["prompt_style"],
        include_title=not options["no_title"],
        min_query_words=options["min_query_words"], max_query_words=options["max_query_words"],
        drop_copies=options["drop_copies"], batch_size=options["gen_batch_size"], device=device, dtype=dtype,
        backend=options["generation_backend"])


def quality_check(options: dict, device=None, dtype="auto"):
    """The sampled quality measure of `generate` (and `adapt`): judged by --quality-model, else the base model."""
    from genq.generate import QualityCheck
    from genq.train import DEFAULT_BASE_MODEL

    if not options["quality_sample"]:
        return None
    model = options["quality_model"] or options.get("base_model") or DEFAULT_BASE_MODEL
    return QualityCheck(model=model, sample=options["quality_sample"], device=device, dtype=dtype)



@click.command()
@click.argument("passages", type=click.Path(path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="pairs.jsonl to write.")
@generation_options
@device_options
@click.option("--overwrite", is_flag=True, help="Start over instead of resuming an existing output.")
@click.option("--limit", type=click.IntRange(1), help="Only the first N passages (a trial run).")
@click.option("--export", "export_", nargs=2, metavar="FORMAT DIR", help="Also export the pairs, e.g. beir DIR.")
@ray_options
@user_errors
def generate(passages, output, device, dtype, overwrite, limit, export_, use_ray, ray, **options):
    """Sample synthetic queries for every passage of PASSAGES; resumable."""
    from genq.generate import generate_pairs, meta_path_for

    if not Path(passages).exists():
        raise GenqError(f"{passages}: does not exist\n  fix: check the passages file path")
    if "generator_model" not in given_options() and not options["gguf_file"]:
        options["generator_model"] = offline_stand_in(options["generator_model"])
    config = generation_config(options, device, dtype)
    if use_ray:
        from genq.distributed import generate_pairs_ray

        summary = generate_pairs_ray(passages, output, config, ray, overwrite=overwrite, progress=show_progress(),
                                     limit=limit, quality=quality_check(options, device, dtype))
    else:
        summary = generate_pairs(passages, output, config, overwrite=overwrite, progress=show_progress(),
                                 limit=limit, quality=quality_check(options, device, dtype))
    if summary.already_complete:
        say(f"{output} is already complete ({summary.pairs_in_file:,} pairs for {summary.passages:,} passages); "
            "nothing to do. Pass --overwrite to generate again.")
    else:
        rate = summary.passages_generated / max(summary.seconds, 1e-9)
        say(f"generated {summary.queries_sampled:,} queries for {summary.passages_generated:,} passages "
            f"in {summary.seconds:.1f}s ({rate:.2f} passages/s, {summary.family}, {summary.device}, {summary.dtype})")
        say(f"  backend: {summary.backend} ({summary.backend_reason})")
        if summary.passages_skipped_as_done:
            say(f"  resumed: {summary.passages_skipped_as_done:,} passages were already done")
        if summary.passages_without_text:
            say(f"  skipped {summary.passages_without_text:,} passages with neither title nor text")
        say(f"  wrote {summary.pairs_written:,} pairs ({summary.pairs_in_file:,} in the file) to {output} "
            f"(+ {meta_path_for(output).name}); "
            f"duplicates dropped {summary.duplicates_dropped:,}, filtered {summary.filtered_out:,}, "
            f"passages left without a query {summary.passages_without_query:,}")
        whole = summary.file_counts
        if summary.passages_skipped_as_done and whole:
            say(f"  the whole file, earlier runs included: {whole['queries_sampled']:,} queries sampled, "
                f"{whole['filtered_out']:,} filtered, {whole['duplicates_dropped']:,} duplicates, "
                f"{whole['passages_without_query']:,} passages without a query")
        if summary.filtered_runaway or summary.filtered_not_a_query:
            say(f"  of the filtered: {summary.filtered_runaway:,} runaway samples (no query within "
                f"--max-query-tokens), {summary.filtered_not_a_query:,} that wrote no query (a 'Document:', an "
                "'Answer:' or a few-shot example's query)")
        if summary.quality:
            say(f"  quality: {summary.quality.headline()}")
            if warning := summary.quality.warning():
                say(warning)
            for kind in ("round_trip_miss", "echo", "copy"):
                for query in summary.quality.examples.get(kind, [])[:2]:
                    say(f"    {kind.replace('_', ' ')}: {query!r}")
    if export_:
        from genq.exports import export_pairs

        result = export_pairs(output, export_[0], export_[1], overwrite=overwrite)
        say(f"  exported ({result['format']}) to {result['output']}")
