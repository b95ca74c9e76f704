"""``adapt``: build the run's stages, run what is left of them, and report the budget's plan against actual."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from genq.io import GenqError, write_json_atomic
from genq.locks import one_writer
from genq.models import resolve_model
from genq.pipeline.budget import report_plan
from genq.pipeline.config import AdaptConfig
from genq.pipeline.manifest import Manifest, check_run_dir
from genq.pipeline.stage import RunContext, RunPaths, run_stages
from genq.pipeline.stages import build_stages, check_combination


@one_writer("run_dir", "run directory")
def adapt(
    corpus_path: str | Path,
    run_dir: str | Path,
    config: AdaptConfig | None = None,
    progress: bool = True,
    say: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
) -> dict:
    """Run (or continue) the whole pipeline; returns the manifest."""
    config = config or AdaptConfig()
    started = time.perf_counter()  # the budget counts from here
    corpus_path, run_dir = Path(corpus_path), Path(run_dir)
    if not corpus_path.exists():
        raise GenqError(f"the corpus {corpus_path} does not exist")
    check_run_dir(run_dir)
    locate_models(config)
    check_combination(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    context = RunContext(corpus_path, config, RunPaths.under(run_dir), Manifest(run_dir, str(corpus_path)),
                         progress=progress, say=say, started=started)
    results = run_stages(context, build_stages(context))
    manifest = context.manifest
    manifest.data["last_run"] = [asdict(result) | {"summary": None} for result in results]
    if config.time_budget and "plan" in manifest.data["stages"]:
        manifest.data["plan_vs_actual"] = report_plan(manifest.summary("plan")["plan"], results,
                                                      time.perf_counter() - started, say,
                                                      manifest.data.get("replanned_training"))
    write_json_atomic(manifest.path, manifest.data)
    return manifest.data


def locate_models(config: AdaptConfig) -> None:
    """Every model is located before the first stage runs: a typo fails now, not after an hour of generation."""
    if not config.generation.gguf_file:
        resolve_model(config.generation.model, what="generator")
    resolve_model(config.training.base_model, what="base model")
    if config.gpl:
        resolve_model(config.pseudo_label.cross_encoder, what="cross-encoder")
    if config.reranker:
        resolve_model(config.reranker.base_model, what="reranker base model")
