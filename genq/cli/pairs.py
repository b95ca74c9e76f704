"""What turns pairs into better pairs: ``genq filter``, ``genq mine-negatives``, ``genq pseudo-label``.

Their option groups are ``adapt``'s too.
"""

from __future__ import annotations

import functools
from pathlib import Path

import click

from genq.cli.common import (
    AUTO_OR_COUNT,
    MARGIN,
    device_options,
    option,
    ray_options,
    say,
    show_progress,
    stack,
    user_errors,
)
from genq.retrieval import DEFAULT_RERANKER


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


def filter_settings(options: dict) -> dict:
    """The filter's knobs by their names in :class:`genq.pipeline.AdaptConfig` (all None: no filter stage)."""
    return {name: options[name] for name in ("filter_top_k", "filter_min_score", "filter_keep_top_share",
                                             "filter_min_logprob")}


def mining_config(options: dict):
    from genq.negatives import MiningConfig

    return MiningConfig(num_negatives=max(1, options["num_negatives"]), range_min=options["neg_range_min"],
                        range_max=options["neg_range_max"], relative_margin=options["neg_relative_margin"],
                        sampling=options["neg_sampling"], retriever=options["neg_retriever"],
                        seed=options["neg_seed"])


def pseudo_label_config(options: dict, device=None, dtype="auto"):
    from genq.pseudo_label import PseudoLabelConfig

    return PseudoLabelConfig(cross_encoder=options["cross_encoder"], batch_size=options["ce_batch_size"],
                             max_length=options["ce_max_length"], drop_inverted=options["drop_inverted"],
                             device=device, dtype=dtype)


def apply_gpl_defaults(options: dict, given: set[str]) -> None:
    """GPL's recipe (UKPLab/gpl, gpl/train.py) for what the user did not choose: negatives drawn at random from the
    retriever's top 50, no margin cut (the cross-encoder grades false negatives), batch 32, MarginMSE."""
    recipe = {"num_negatives": 1, "neg_range_min": 0, "neg_range_max": 50, "neg_relative_margin": None,
              "train_batch_size": 32, "loss": "margin-mse", "neg_sampling": "random"}
    options.update({name: value for name, value in recipe.items() if name not in given})


@click.command("filter")
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
    if warning := summary.quality_before.warning():
        say(warning)
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


@click.command("mine-negatives")
@click.argument("pairs", type=click.Path(path_type=str))
@click.option("--corpus", required=True, type=click.Path(path_type=str), help="The passages to mine from.")
@option("-m", "--model", "model", old=("--base-model",), help="Dense retriever (needed unless --neg-retriever bm25).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
@negatives_options
@device_options
@ray_options
@user_errors
def mine_negatives_command(pairs, corpus, model, output, device, dtype, use_ray, ray, **options):
    """Add hard negatives (retrieved but not the positive) to every pair."""
    from genq.negatives import mine_negatives

    config = mining_config(options)
    vectors = _ray_corpus_vectors(corpus, model, output, ray, dtype) if use_ray and config.retriever != "bm25" else None
    summary = mine_negatives(pairs, corpus, output, model=model, config=config, dtype=dtype,
                             progress=show_progress(), corpus_vectors=vectors)
    say(f"mined {summary.negatives:,} negatives for {summary.pairs:,} pairs in {summary.seconds:.1f}s -> {output}")
    say(f"  excluded: {summary.excluded_as_positive_copies:,} positive copies, {summary.excluded_by_margin:,} by "
        f"margin; pairs short of negatives: {summary.pairs_short_of_negatives:,}")
    if summary.pairs and not summary.negatives:
        say(f"  note: {NO_NEGATIVES}")


@click.command("pseudo-label")
@click.argument("pairs", type=click.Path(path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Labelled pairs to write.")
@pseudo_label_options
@click.option("--overwrite", is_flag=True, help="Label again; the old output is replaced once the new one is complete.")
@device_options
@user_errors
def pseudo_label_command(pairs, output, overwrite, device, dtype, **options):
    """GPL: grade each pair's positive and negatives with a cross-encoder; margins for `train --loss margin-mse`."""
    from genq.pseudo_label import pseudo_label

    config = pseudo_label_config(options, device, dtype)
    summary = pseudo_label(pairs, output, config, overwrite=overwrite, progress=show_progress())
    if summary.already_complete:
        say(f"{output} is already complete ({summary.written:,} labelled pairs); nothing to do. "
            "Pass --overwrite to label again.")
        return
    say(f"labelled {summary.labelled:,} pairs ({summary.negatives_scored:,} negatives) in {summary.seconds:.1f}s "
        f"({summary.pairs_per_second:.1f} pairs/s, {summary.device}, {summary.dtype})"
        + (f"; resumed after {summary.resumed_after:,}" if summary.resumed_after else ""))
    say(f"  mean margin {summary.mean_margin}; positive below a negative in {summary.inverted_share:.1%} of pairs"
        + (f" ({summary.dropped_inverted:,} dropped)" if config.drop_inverted else ""))
    if summary.skipped_without_negatives:
        say(f"  skipped {summary.skipped_without_negatives:,} pairs that mining left without a negative")
    say(f"  wrote {summary.written:,} pairs to {output}; train on them with `genq train {output} --loss margin-mse`")
