"""``genq crop``: pseudo-queries cut from the passages themselves, no generator."""

from __future__ import annotations

import click

from genq.cli.common import say, user_errors


@click.command("crop")
@click.argument("passages", type=click.Path(path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="pairs.jsonl to write.")
@click.option("--queries-per-passage", type=click.IntRange(1), default=3, show_default=True)
@click.option("--min-words", type=click.IntRange(1), default=4, show_default=True, help="Shortest crop.")
@click.option("--max-words", type=click.IntRange(1), default=12, show_default=True,
              help="Longest crop (a longer sentence is cut as a random run of words instead).")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--limit", type=click.IntRange(1), help="Only the first N passages.")
@user_errors
def crop(passages, output, queries_per_passage, min_words, max_words, seed, limit):
    """Pseudo-queries cut from each passage of PASSAGES (a sentence, else a run of words): pairs without a generator.

    \b
    The generator-free baseline (Contriever's cropping, the inverse cloze task): seconds where
    generating takes hours on a CPU. Train on it as on generated pairs:
      genq crop passages.jsonl -o pairs.cropped.jsonl
      genq train pairs.cropped.jsonl -o models/cropped
    """
    from genq.cropping import crop_queries

    summary = crop_queries(passages, output, per_passage=queries_per_passage, seed=seed, min_words=min_words,
                           max_words=max_words, limit=limit)
    say(f"cropped {summary.pairs:,} pseudo-queries from {summary.passages:,} passages ({summary.sentences:,} "
        f"sentences, {summary.spans:,} word runs; {summary.passages_without_crop:,} passages too short) in "
        f"{summary.seconds:.1f}s -> {output}")
