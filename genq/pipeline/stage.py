"""A stage of ``genq adapt`` as data, and the one loop that runs a list of them.

A :class:`Stage` names itself, declares the settings that identify its result (what the
manifest compares), the files it reads and writes in the run directory, and one
``run(context, resume)`` function. :func:`run_stages` owns everything around that: skipping
what finished earlier with the same settings, resuming what was interrupted, recording each
stage in the manifest as running, done, interrupted or failed, turning SIGTERM into an
interruption, and timing. A new capability is a new entry in the list, not a branch here.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from genq.io import GenqError, describe_error, terminate_as_interrupt
from genq.pipeline.config import AdaptConfig
from genq.pipeline.manifest import Manifest, same_settings

RUN_FILES = {"passages": "passages.jsonl", "pairs": "pairs.jsonl", "filtered": "pairs.filtered.jsonl",
             "negatives": "pairs.negatives.jsonl", "labelled": "pairs.labelled.jsonl",
             "reranker_negatives": "pairs.reranker-negatives.jsonl", "reranker": "reranker", "model": "model",
             "index": "index", "eval": "eval", "cache": ".genq-cache", "cropped": "pairs.cropped.jsonl",
             "combined": "pairs.combined.jsonl", "generators": "generators"}


@dataclass(frozen=True)
class RunPaths:
    """Where each stage reads and writes inside the run directory (the layout in :mod:`genq.pipeline`)."""

    passages: Path
    pairs: Path
    filtered: Path
    negatives: Path
    labelled: Path
    reranker_negatives: Path
    reranker: Path
    model: Path
    index: Path
    eval: Path
    cache: Path
    cropped: Path
    combined: Path
    generators: Path  # generators/round2, ...: the generator tuned before each later round

    def generation_round(self, number: int) -> tuple[Path, Path, Path, Path]:
        """Round ``number``'s (tuned generator, passages in the order it samples them, pairs, kept pairs)."""
        return (self.generators / f"round{number}", self.passages.with_name(f"passages.round{number}.jsonl"),
                self.pairs.with_name(f"pairs.round{number}.jsonl"),
                self.pairs.with_name(f"pairs.round{number}.filtered.jsonl"))

    @classmethod
    def under(cls, run_dir: Path) -> RunPaths:
        return cls(**{name: run_dir / file for name, file in RUN_FILES.items()})


@dataclass
class RunContext:
    """What every stage may read: the run's config, files, manifest and voice.

    ``handed_on`` carries a value from one stage to a later one in the same process (the plan's
    loaded generator, which the generate stage reuses instead of loading it again).
    """

    corpus_path: Path
    config: AdaptConfig
    paths: RunPaths
    manifest: Manifest
    progress: bool = True
    say: Callable[[str], None] = lambda message: print(message, file=sys.stderr)
    started: float = field(default_factory=time.perf_counter)  # the time budget counts from here
    handed_on: dict = field(default_factory=dict)


# a stage's run returns its summary (recorded in the manifest) and how it ran: "ran" or "resumed"
StageRun = Callable[[RunContext, bool], tuple[dict, str]]


@dataclass
class Stage:
    name: str
    settings: dict  # what identifies its result: a finished stage with the same settings is not run again
    run: StageRun
    outputs: list[Path]  # all present, with the same settings recorded: the stage is done
    inputs: list[Path] = field(default_factory=list)
    restore: Callable[[RunContext], None] | None = None  # a skipped stage's decisions that later stages need again
    resumes_unrecorded: bool = False  # its output may exist from before its manifest entry: it checks that itself


@dataclass
class StageResult:
    name: str
    status: str  # "skipped" | "ran" | "resumed"
    seconds: float
    summary: dict


def run_stages(context: RunContext, stages: list[Stage]) -> list[StageResult]:
    """Run what is left of ``stages`` in order. Once one stage runs, every later one runs again too: its input
    may have changed."""
    manifest, say = context.manifest, context.say
    names = [stage.name for stage in stages]
    upstream_ran = False
    results: list[StageResult] = []
    for position, stage in enumerate(stages):
        done = manifest.finished(stage.name, stage.settings) and all(p.exists() for p in stage.outputs)
        if done and not upstream_ran:
            say(f"[{stage.name}] finished earlier with the same settings: skipped")
            results.append(StageResult(stage.name, "skipped", 0.0, manifest.summary(stage.name)))
            if stage.restore:
                stage.restore(context)
            continue
        # resume only an interrupted run of the very same stage settings and inputs
        previous = manifest.previous_params(stage.name)
        resume = not upstream_ran and (same_settings(stage.name, previous, stage.settings) or (
            stage.resumes_unrecorded and previous is None and stage.outputs[0].exists()))
        manifest.forget_from(names[position:])
        results.append(_run_one(context, stage, resume))
        upstream_ran = True
    return results


def _run_one(context: RunContext, stage: Stage, resume: bool) -> StageResult:
    """One stage, recorded as running before and as done, interrupted or failed after."""
    manifest = context.manifest
    missing = [path for path in stage.inputs if not path.exists()]
    if missing:  # a file an earlier stage wrote was removed since: name it instead of failing inside the stage
        raise GenqError(f"the {stage.name} stage reads {missing[0]}, which is missing\n  fix: put it back, or "
                        "start a new run directory")
    manifest.start(stage.name, stage.settings)
    context.say(f"[{stage.name}] {'continuing' if resume else 'running'} ...")
    started = time.perf_counter()
    try:
        with terminate_as_interrupt():  # SIGTERM records the stage as interrupted, like Ctrl-C
            summary, status = stage.run(context, resume)
    except BaseException as exc:
        # the manifest says what happened; a rerun continues the stage the way its own command would
        interrupted = isinstance(exc, KeyboardInterrupt)
        manifest.record_stop(stage.name, "interrupted" if interrupted else describe_error(exc), interrupted,
                             time.perf_counter() - started)
        raise
    seconds = time.perf_counter() - started
    manifest.record(stage.name, stage.settings, "done", [str(p) for p in stage.outputs], summary, seconds)
    context.say(f"[{stage.name}] {status} in {seconds:.1f}s")
    return StageResult(stage.name, status, seconds, summary)
