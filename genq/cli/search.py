"""``genq search`` and ``genq serve``: the same search options, from a terminal or over HTTP."""

from __future__ import annotations

import json

import click

from genq.cli.common import device_options, option, say, show_progress, stack, user_errors
from genq.retrieval import DEFAULT_RERANKER


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
                                        f"`genq adapt --reranker`, else {DEFAULT_RERANKER}), or with "
                                        "`query-likelihood`: log p(query | passage) under a generator (UPR)."),
        click.option("--rerank-depth", type=click.IntRange(1), default=50, show_default=True,
                     help="How many hits the reranker rescores."),
        *shared_rerank_options(),
    ]):
        function = decorator(function)
    return function


def shared_rerank_options() -> list:
    """Whether a reranker's score replaces the first stage's or is blended with it, and which generator scores
    query likelihood: search, serve, evaluate."""
    from genq.retrieval import DEFAULT_RERANK_FUSION, RERANK_FUSIONS

    return [
        click.option("--rerank-fusion", type=click.Choice(RERANK_FUSIONS), default=DEFAULT_RERANK_FUSION,
                     show_default=True,
                     help="replace: the cross-encoder's score alone orders the reranked hits; minmax / rrf: it is "
                          "blended with the first stage's score / rank (a reranker weaker than BM25 then still adds "
                          "what it knows)."),
        click.option("--rerank-weight", type=click.FloatRange(0, 1), default=0.5, show_default=True,
                     help="The reranker's share when --rerank-fusion blends (1 = its score alone)."),
        click.option("--rerank-generator", metavar="MODEL",
                     help="--rerank query-likelihood: the generator that scores (a model id or directory, or a .gguf "
                          "file) [default: the run's generator, else genq's default generator]."),
    ]


def with_shared_rerank_options(function):
    return stack(function, shared_rerank_options())


def search_settings(mode, alpha, fusion, candidates, rerank_depth, rerank_fusion, rerank_weight):
    from genq.search import SearchOptions

    return SearchOptions(mode=mode, alpha=alpha, fusion=fusion, candidates=candidates, rerank_depth=rerank_depth,
                         rerank_fusion=rerank_fusion, rerank_weight=rerank_weight).validate()


@click.command()
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
           rerank_model, rerank_depth, rerank_fusion, rerank_weight, rerank_generator, device, dtype):
    """Search INDEX_DIR for QUERY (or every query of --queries); hybrid by default."""
    from genq.search import Searcher, iter_run, read_queries, write_trec_run

    if bool(query) == bool(queries):
        raise click.UsageError("give either a QUERY or --queries FILE")
    if run_out and not queries:
        raise click.UsageError("--run writes a TREC run for every query of --queries FILE; add --queries")
    options = search_settings(mode, alpha, fusion, candidates, rerank_depth, rerank_fusion, rerank_weight)
    searcher = Searcher.load(index_dir, model=model, device=device, dtype=dtype, ef_search=ef_search,
                             nprobe=nprobe, reranker=rerank_model, rerank_generator=rerank_generator)
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


@click.command()
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
          rerank_depth, rerank_fusion, rerank_weight, rerank_generator, device, dtype):
    """Serve INDEX_DIR: JSON API (/search, /health, /info) and a search page at /.

    The search options set the server's defaults; each request may override mode, alpha and fusion.
    """
    from genq.search import Searcher
    from genq.serve import run_server

    options = search_settings(mode, alpha, fusion, candidates, rerank_depth, rerank_fusion, rerank_weight)
    searcher = Searcher.load(index_dir, model=model, device=device, dtype=dtype,
                             reranker=rerank_model, rerank_generator=rerank_generator)
    searcher.resolve_options(options)
    say(f"serving {len(searcher):,} passages on http://{host}:{port}/  (modes: {', '.join(searcher.modes)}; "
        f"API: /search?q=...&k=10, /info, /health)")
    run_server(searcher, host=host, port=port, log_level="warning" if not show_progress() else "info",
               defaults=options, allowed_hosts=list(allowed_hosts), docs=docs)
