"""``genq evaluate``: BM25, models, hybrids and indexes on a labelled collection."""

from __future__ import annotations

from pathlib import Path

import click

from genq.cli.common import device_options, option, say, show_progress, user_errors
from genq.cli.search import with_shared_rerank_options
from genq.retrieval import DEFAULT_RERANKER


def default_cache_dir(output: str | None) -> Path:
    """Where evaluate keeps corpus embeddings: beside its output like filter's, else in the current folder."""
    return (Path(output).resolve().parent if output else Path.cwd()) / ".genq-cache"


@click.command()
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
                   f"run's own reranker, else {DEFAULT_RERANKER}), or by `query-likelihood` (UPR).")
@click.option("--rerank-depth", type=click.IntRange(1), default=50, show_default=True)
@with_shared_rerank_options
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=str),
              help="Where corpus embeddings are kept between runs, keyed by model weights and corpus content "
                   "[default: .genq-cache beside -o, else in the current folder].")
@click.option("--no-cache", is_flag=True, help="Encode the corpus afresh and keep nothing.")
@device_options
@user_errors
def evaluate(data_dir, models, bm25, index_dirs, names, split, output, hybrid, alpha, fusion, alpha_sweep, candidates,
             rerank_model, rerank_depth, rerank_fusion, rerank_weight, rerank_generator, cache_dir, no_cache, device,
             dtype):
    """Compare BM25, models, hybrids and indexes on a labelled collection (nDCG@10, MRR@10, R@100, MAP@100, P@10)."""
    from genq.evaluate import evaluate_systems, format_sweep, format_table, parse_alphas

    report = evaluate_systems(data_dir, models=list(models), bm25=bm25, index_dirs=list(index_dirs), output_dir=output,
                              split=split, names=list(names) or None, dtype=dtype, progress=show_progress(),
                              hybrid=hybrid, fusion=fusion, alpha=alpha,
                              alpha_sweep=parse_alphas(alpha_sweep) if alpha_sweep else None, candidates=candidates,
                              reranker=rerank_model, rerank_generator=rerank_generator,
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
