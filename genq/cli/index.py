"""``genq index``, and the index options ``adapt`` reuses."""

from __future__ import annotations

import click

from genq.cli.common import AUTO_OR_COUNT, device_options, option, ray_options, say, show_progress, user_errors


def index_options(function):
    from genq.ann import INDEX_TYPES

    for decorator in reversed([
        click.option("--index-type", type=click.Choice(INDEX_TYPES), default="auto", show_default=True,
                     help="auto: flat up to 100k passages, hnsw up to 2M, hnsw-sq (the same graph over 8-bit codes, "
                     "a third of the memory) beyond. ivf-pq is smallest but finds fewer true neighbours "
                     "(benchmarks/results/scale.md)."),
        click.option("--hnsw-m", type=click.IntRange(4), default=32, show_default=True,
                     help="HNSW: links per vector (more: better recall, more memory)."),
        click.option("--ef-construction", type=click.IntRange(8), default=200, show_default=True),
        click.option("--ef-search", type=click.IntRange(1), default=64, show_default=True),
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
    from genq.ann import IndexParams

    return IndexParams(index_type=options["index_type"], hnsw_m=options["hnsw_m"],
                       ef_construction=options["ef_construction"], ef_search=options["ef_search"],
                       nlist=options["nlist"], pq_m=options["pq_m"], nprobe=options["nprobe"],
                       faiss_factory=options["faiss_factory"])


@click.command()
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
    say(f"  encoding {summary.encode_seconds:.1f}s, {summary.index_type} build {summary.ann_seconds:.1f}s"
        + (f", BM25 {summary.lexical_seconds:.1f}s" if summary.lexical else ""))
    if summary.lexical:
        say(f"  BM25 part ({summary.lexical['language']} stemming, stopwords {summary.lexical['stopwords']}) built "
            f"in {summary.lexical_seconds:.1f}s: searches are hybrid by default")
    say(f"  search it: genq search {output} \"your query\"   serve it: genq serve {output}")
