"""``genq adapt``: every stage's option group, collected into one resumable run."""

from __future__ import annotations

import time
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
from genq.cli.corpus import chunking_options, corpus_options, reader_options
from genq.cli.generate import generation_config, generation_options, quality_check
from genq.cli.index import index_options, index_params, lexical_settings
from genq.cli.pairs import (
    apply_gpl_defaults,
    filter_options,
    filter_settings,
    mining_config,
    negatives_options,
    pseudo_label_config,
    pseudo_label_options,
)
from genq.cli.train import reranker_stage_config, reranker_stage_options, train_config, training_options
from genq.cli.train_generator import generator_tuning_options, tuning_config
from genq.io import GenqError


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


@click.command()
@click.argument("corpus_path", metavar="CORPUS", type=click.Path(path_type=str))
@click.option("-o", "--output", "run_dir", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--config", type=click.Path(dir_okay=False), is_eager=True, expose_value=False,
              callback=_load_config_file, help="TOML/YAML file of option values (names as on the command line).")
@reader_options
@chunking_options(in_adapt=True)
@click.option("--limit", type=click.IntRange(1), help="Generate for the first N passages only (a trial run).")
@click.option("--time-budget", metavar="DURATION",
              help="Fit the whole run into this time (90s, 30m, 2h, 1h30m): genq measures this machine on the corpus, "
                   "then sizes the passages to generate for and the training steps you left unset, and prints the "
                   "plan before the slow stages.")
@generation_options(batch_alias=False)
@click.option("--queries", "query_source", type=click.Choice(["generated", "cropped", "generated+cropped"]),
              default="generated", show_default=True,
              help="Where the training queries come from: sampled by the generator, cut from the passages "
                   "themselves (`genq crop`: no generator, seconds), or both in one training file.")
@click.option("--generator-rounds", type=click.IntRange(1), default=1, show_default=True,
              help="Self-training: after each round the generator is tuned on the pairs kept so far "
                   "(`genq train-generator`) and samples again; the bi-encoder trains on every round's kept pairs. "
                   "With --time-budget each tuning is planned at 100 steps.")
@generator_tuning_options(in_adapt=True)
@filter_options
@negatives_options(in_adapt=True)
@click.option("--gpl", is_flag=True,
              help="GPL: grade mined negatives with a cross-encoder and train with MarginMSE (GPL's defaults for "
                   "options not given: 1 negative drawn from the top 50, no margin cut, batch 32, margin-mse).")
@pseudo_label_options
@training_options(batch_alias=False)
@reranker_stage_options
@index_options
@option("--encode-batch-size", "encode_batch_size", type=AUTO_OR_COUNT, default="auto", show_default=True,
        help="Index stage: passages per encoding batch (auto: by the GPU's free memory, 64 on a CPU).")
@click.option("--eval-data", type=click.Path(file_okay=False), help="Labelled BEIR folder: compare BM25/base/adapted.")
@click.option("--eval-likelihood", is_flag=True,
              help="With --eval-data: also rerank hybrid(adapted)'s top 20 by the generator's query likelihood "
                   "(UPR, blended), in eval/likelihood/ (a few seconds per test query on a CPU).")
@device_options
@ray_options
@user_errors
def adapt(corpus_path, run_dir, limit, time_budget, gpl, encode_batch_size, eval_data, eval_likelihood, device, dtype,
          query_source, generator_rounds, use_ray, ray, **options):
    """Prepare, generate, [filter, mine negatives, pseudo-label,] train, [train a reranker,] index [and evaluate] in
    one resumable run."""
    from genq.durations import parse_duration
    from genq.pipeline import AdaptConfig, check_run_dir
    from genq.pipeline import adapt as run_adapt

    if not Path(corpus_path).exists():  # the input is named before any model question is asked
        raise GenqError(f"the corpus {corpus_path} does not exist\n  fix: check the path")
    check_run_dir(Path(run_dir))
    given = given_options()
    if "generator_model" not in given and not options["gguf_file"]:
        generator = offline_stand_in(options["generator_model"])
        if (generator != options["generator_model"] and "filter_top_k" not in given
                and options["filter_min_score"] is None):
            options["filter_top_k"] = 3
            say("  so the round-trip filter is on (--filter-top-k 3): only queries whose passage the base model "
                "ranks in its top 3 are trained on.")
        options["generator_model"] = generator
    if gpl:
        apply_gpl_defaults(options, given)
    training = train_config(options, device)
    config = AdaptConfig(
        corpus=corpus_options(options), generation=generation_config(options, device, dtype),
        **filter_settings(options), quality=quality_check(options, device, dtype),
        auto_queries_per_passage="queries_per_passage" not in given, auto_epochs="epochs" not in given,
        auto_warmup="warmup_ratio" not in given, hard_negatives=options["num_negatives"],
        mining=mining_config(options), gpl=gpl, pseudo_label=pseudo_label_config(options, device, dtype),
        training=training, index=index_params(options), lexical=lexical_settings(options), eval_data=eval_data,
        eval_likelihood=eval_likelihood,
        limit=limit, dtype=dtype, encode_batch_size=encode_batch_size,
        time_budget=parse_duration(time_budget) if time_budget else None,
        reranker=reranker_stage_config(options, training, device), queries=query_source,
        generator_rounds=generator_rounds, ray=ray if use_ray else None,
        generator_tuning=tuning_config(options, options["generator_model"], options["gguf_file"], device,
                                       training.seed))
    started = time.perf_counter()
    manifest = run_adapt(corpus_path, run_dir, config, progress=show_progress(), say=say)
    _summarize(manifest, run_dir, time.perf_counter() - started, config)


def _summarize(manifest: dict, run_dir: str, elapsed: float, config) -> None:
    """Where everything went, and the training's verdict (too few steps to move the model, ...)."""
    from genq.train import TrainSummary

    say("")
    say(f"done in {elapsed / 60:.1f} min. Run directory: {run_dir}")
    trained = (manifest.get("stages", {}).get("train") or {}).get("summary") or {}
    verdict = TrainSummary(**{k: v for k, v in trained.items() if k in TrainSummary.__dataclass_fields__}
                           ).verdict() if trained else None
    say(f"  model:  {Path(run_dir) / 'model'}" + (f"; {verdict}" if verdict else ""))
    say(f"  index:  {Path(run_dir) / 'index'}")
    if config.reranker is not None:
        from genq.train_reranker import learned_little_record

        weak = learned_little_record(Path(run_dir) / "reranker")
        say(f"  reranker: {Path(run_dir) / 'reranker'} " + (f"(not used by --rerank: it {weak})" if weak else
                                                             "(search with --rerank)"))
    if config.eval_data:
        say(f"  report: {Path(run_dir) / 'eval' / 'results.md'}"
            + (f" and {Path(run_dir) / 'eval' / 'likelihood' / 'results.md'}" if config.eval_likelihood else ""))
    say(f"  search it: genq search {run_dir} \"your query\"   serve it: genq serve {run_dir}")
