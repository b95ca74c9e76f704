"""The ``genq`` group: global options (-v, -q, --version) and the logging they set; ``__init__`` adds the commands."""

from __future__ import annotations

import logging
import os
import sys

import click

from genq import __version__


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
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        if "transformers" in sys.modules:
            sys.modules["transformers"].utils.logging.disable_progress_bar()
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose == 1 else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("genq").setLevel(logging.ERROR if quiet else logging.DEBUG if verbose > 1 else logging.INFO)
    if not verbose:
        for noisy in ("transformers", "sentence_transformers", "datasets", "httpx", "huggingface_hub"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        from genq import models

        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # "Saving the dataset", once per save
        models.library_bars = False  # "Loading weights" and "Writing model shards" at every load and save

