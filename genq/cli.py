"""The ``genq`` command line: each command parses its options and calls one API function."""

from __future__ import annotations

import functools
import json
import logging
import sys

import click

from genq import __version__
from genq.io import GenqError

logger = logging.getLogger("genq")


def _state(ctx: click.Context) -> dict:
    return ctx.find_root().obj or {}


def show_progress() -> bool:
    """Bars are drawn unless -q was given."""
    ctx = click.get_current_context(silent=True)
    return not (ctx and _state(ctx).get("quiet"))


def say(message: str = "") -> None:
    """Print a summary line to stderr unless -q was given (stdout stays for results)."""
    if show_progress():
        click.echo(message, err=True)


def user_errors(function):
    """Turn a GenqError into a one-paragraph message and its exit code, never a traceback."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except GenqError as exc:
            click.echo(click.style("error: ", fg="red", bold=True) + str(exc), err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("\ninterrupted: finished work is kept; rerun the same command to resume.", err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="genq")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors and results; no progress bars or summaries.")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """genq: adapt a dense retriever to an unlabelled corpus with synthetic queries (GenQ).

    \b
    The stages, each a command:
      corpus prepare   raw documents -> passages.jsonl
      generate         passages -> synthetic (query, passage) pairs
      train            pairs -> a fine-tuned sentence-transformers model
      index / search   model + passages -> Faiss index -> ranked results
      serve            HTTP API and a web page over an index
      evaluate         BM25 / base / adapted on a labelled BEIR collection
      adapt            all of the above in one resumable run
    """
    ctx.obj = {"quiet": quiet, "verbose": verbose}
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose == 1 else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("genq").setLevel(logging.ERROR if quiet else logging.DEBUG if verbose > 1 else logging.INFO)
    if not verbose:
        for noisy in ("transformers", "sentence_transformers", "datasets", "httpx", "huggingface_hub"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        import os

        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


# --------------------------------------------------------------------------- corpus


def reader_options(function):
    """The options shared by every command that reads a raw corpus."""
    from genq.corpus import FORMATS, TXT_MODES

    options = [
        click.option("--format", "format_", type=click.Choice(FORMATS), default="auto", show_default=True,
                     help="Input format; auto detects it from the path."),
        click.option("--id-field", help="Field holding the document id (default: _id, id, doc_id, ...)."),
        click.option("--text-field", help="Field holding the text (default: text, contents, body, ...)."),
        click.option("--title-field", help="Field holding the title (default: title)."),
        click.option("--txt-mode", type=click.Choice(TXT_MODES), default="auto", show_default=True,
                     help="Plain text: one passage per line, or per blank-line separated paragraph."),
        click.option("--split", help="Split of a saved Hugging Face DatasetDict."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@main.group()
def corpus() -> None:
    """Read raw documents and turn them into passages."""


@corpus.command("prepare")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="passages.jsonl to write.")
@reader_options
@click.option("--tokenizer", default=None,
              help="Tokenizer that counts tokens for chunking: a model id/dir, a .gguf file, or 'words' "
                   "(offline approximation). Default: the default query generator's.")
@click.option("--max-tokens", type=click.IntRange(8), default=350, show_default=True, help="Passage length limit.")
@click.option("--overlap", type=click.IntRange(0), default=50, show_default=True, help="Tokens shared by neighbours.")
@click.option("--on-error", type=click.Choice(["raise", "skip"]), default="raise", show_default=True,
              help="Stop at the first bad record, or skip bad records and count them.")
@click.option("--keep-duplicates", is_flag=True, help="Keep passages whose text repeats another's.")
@user_errors
def corpus_prepare(input_path, output, format_, id_field, text_field, title_field, txt_mode, split, tokenizer,
                   max_tokens, overlap, on_error, keep_duplicates):
    """Read INPUT (BEIR, JSONL, JSON, CSV/TSV, TXT, a folder, a HF dataset) and write clean passages."""
    from genq.corpus import DEFAULT_TOKENIZER, prepare_corpus

    summary = prepare_corpus(input_path, output, format=format_, id_field=id_field, text_field=text_field,
                             title_field=title_field, txt_mode=txt_mode, split=split,
                             tokenizer=tokenizer or DEFAULT_TOKENIZER, max_tokens=max_tokens, overlap=overlap,
                             on_error=on_error, dedup=not keep_duplicates, progress=show_progress())
    say(f"read {summary.documents:,} documents ({summary.format}) -> wrote {summary.passages:,} passages "
        f"to {summary.output} in {summary.seconds:.1f}s")
    say(f"  chunked documents: {summary.chunked_documents:,}   empty dropped: {summary.empty_dropped:,}   "
        f"duplicates dropped: {summary.duplicates_dropped:,}   bad records skipped: {summary.bad_records_skipped:,}")
    for example in summary.bad_record_examples:
        say(f"  skipped: {example}")


@corpus.command("stats")
@click.argument("path", type=click.Path(path_type=str))
@reader_options
@click.option("--tokenizer", default=None, help="Tokenizer for lengths (model id/dir, .gguf, or 'words').")
@click.option("--limit", type=int, default=350, show_default=True, help="Count passages longer than this.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@user_errors
def corpus_stats_command(path, format_, id_field, text_field, title_field, txt_mode, split, tokenizer, limit,
                         as_json):
    """Documents, passages and token-length percentiles of PATH."""
    from genq.corpus import DEFAULT_TOKENIZER, corpus_stats

    options = {"id_field": id_field, "text_field": text_field, "title_field": title_field, "txt_mode": txt_mode,
               "split": split}
    stats = corpus_stats(path, tokenizer or DEFAULT_TOKENIZER, format=format_, limit=limit,
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


if __name__ == "__main__":
    main()
