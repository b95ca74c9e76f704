"""``genq corpus prepare`` and ``genq corpus stats``, and the reading and chunking options ``adapt`` reuses."""

from __future__ import annotations

import functools
import json

import click

from genq.cli.common import offline_stand_in, option, say, show_progress, stack, user_errors


def reader_options(function):
    """The options shared by every command that reads a raw corpus."""
    from genq.corpus import FORMATS, TXT_MODES

    return stack(function, [
        click.option("--format", "format_", type=click.Choice(FORMATS), default="auto", show_default=True,
                     help="Input format; auto detects it from the path."),
        click.option("--id-field", help="Field holding the document id (default: _id, id, doc_id, ...)."),
        click.option("--text-field", help="Field holding the text (default: text, contents, body, ...)."),
        click.option("--title-field", help="Field holding the title (default: title)."),
        click.option("--txt-mode", type=click.Choice(TXT_MODES), default="auto", show_default=True,
                     help="Plain text: one passage per line, or per blank-line separated paragraph."),
        click.option("--split", help="Split of a saved Hugging Face DatasetDict."),
    ])


def chunking_options(function=None, in_adapt: bool = False):
    """How documents become passages: `genq corpus prepare` and `genq adapt` (each with its own wording)."""
    if function is None:
        return functools.partial(chunking_options, in_adapt=in_adapt)
    in_prepare = not in_adapt
    return stack(function, [
        click.option("--tokenizer", default=None,
                     help="Chunking tokenizer (default: the generator's)." if in_adapt else
                     "Tokenizer that counts tokens for chunking: a model id/dir, a .gguf file, or 'words' "
                     "(offline approximation). Default: the default query generator's."),
        click.option("--max-tokens", type=click.IntRange(8), default=350, show_default=True,
                     help="Longest passage, in the chunking tokenizer's tokens; longer documents are cut into "
                          "chunks." if in_adapt else "Passage length limit."),
        click.option("--overlap", type=click.IntRange(0), default=50, show_default=True,
                     help="Tokens shared by consecutive chunks of a document." if in_adapt else
                     "Tokens shared by neighbours."),
        click.option("--on-error", type=click.Choice(["raise", "skip"]), default="raise", show_default=True,
                     help="Stop at the first bad record, or skip bad records and count them." if in_prepare else
                     "A malformed record stops the run (raise) or is counted and skipped."),
        click.option("--keep-duplicates", is_flag=True, help="Keep passages whose text repeats another's."),
    ])


def corpus_options(options: dict):
    """The reading and chunking options as :class:`genq.pipeline.CorpusOptions` (``adapt``'s prepare stage)."""
    from genq.pipeline import CorpusOptions

    return CorpusOptions(format=options["format_"], id_field=options["id_field"], text_field=options["text_field"],
                         title_field=options["title_field"], txt_mode=options["txt_mode"], split=options["split"],
                         tokenizer=options["tokenizer"], max_tokens=options["max_tokens"],
                         overlap=options["overlap"], on_error=options["on_error"],
                         dedup=not options["keep_duplicates"])


@click.group()
def corpus() -> None:
    """Read raw documents and turn them into passages."""


@corpus.command("prepare")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="passages.jsonl to write.")
@reader_options
@chunking_options
@user_errors
def corpus_prepare(input_path, output, format_, id_field, text_field, title_field, txt_mode, split, tokenizer,
                   max_tokens, overlap, on_error, keep_duplicates):
    """Read INPUT (BEIR, JSONL, JSON, CSV/TSV, TXT, a folder, a HF dataset) and write clean passages."""
    from genq.corpus import DEFAULT_TOKENIZER, prepare_corpus

    summary = prepare_corpus(input_path, output, format=format_, id_field=id_field, text_field=text_field,
                             title_field=title_field, txt_mode=txt_mode, split=split,
                             tokenizer=tokenizer or offline_stand_in(DEFAULT_TOKENIZER, "tokenizer"),
                             max_tokens=max_tokens, overlap=overlap,
                             on_error=on_error, dedup=not keep_duplicates, progress=show_progress())
    say(f"read {summary.documents:,} documents ({summary.format}) -> wrote {summary.passages:,} passages "
        f"to {summary.output} in {summary.seconds:.1f}s")
    say(f"  chunked documents: {summary.chunked_documents:,}   empty dropped: {summary.empty_dropped:,}   "
        f"duplicates dropped: {summary.duplicates_dropped:,}   bad records skipped: {summary.bad_records_skipped:,}")
    for example in summary.bad_record_examples:
        say(f"  skipped: {example}")
    if summary.ids_renamed:
        say(f"  {summary.ids_renamed:,} passage id(s) were taken already and got a suffix to stay unique, e.g. "
            + ", ".join(summary.renamed_id_examples[:3]))


@corpus.command("stats")
@click.argument("path", type=click.Path(path_type=str))
@reader_options
@click.option("--tokenizer", default=None, help="Tokenizer for lengths (model id/dir, .gguf, or 'words').")
@option("--max-tokens", "limit", old=("--limit",), type=int, default=350, show_default=True,
        help="Count passages longer than this many tokens.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@user_errors
def corpus_stats_command(path, format_, id_field, text_field, title_field, txt_mode, split, tokenizer, limit,
                         as_json):
    """Documents, passages and token-length percentiles of PATH."""
    from genq.corpus import DEFAULT_TOKENIZER, corpus_stats

    options = {"id_field": id_field, "text_field": text_field, "title_field": title_field, "txt_mode": txt_mode,
               "split": split}
    stats = corpus_stats(path, tokenizer or offline_stand_in(DEFAULT_TOKENIZER, "tokenizer"), format=format_,
                         limit=limit,
                         progress=show_progress(), **options)
    if as_json:
        click.echo(json.dumps(stats.to_dict(), indent=2))
        return
    click.echo(f"{stats.path}")
    click.echo(f"  documents  {stats.documents:,}")
    click.echo(f"  passages   {stats.passages:,}")
    click.echo(f"  tokens ({stats.tokenizer}): mean {stats.mean_tokens}  "
               + "  ".join(f"{k} {v}" for k, v in stats.token_percentiles.items()))
    click.echo(f"  longer than {stats.limit} tokens: {stats.over_limit:,}")
