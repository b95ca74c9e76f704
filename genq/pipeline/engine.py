"""Where a stage's heavy part runs: in this process, or as the Ray Data job its command has (``adapt --ray``).

Generation, and the corpus encodings behind filter, mine-negatives and index, are the parts of a
run that grow with the corpus. ``genq generate --ray``, ``filter --ray``, ``mine-negatives --ray``
and ``index --ray`` already run them as Ray Data jobs over shards that resume on their own;
under ``adapt --ray`` the stages call the same jobs, so a run is one manifest whichever way its
work was spread. The Ray jobs write what the single-process path writes (the same pairs, shard by shard, the same
vectors), so the choice is not part of what a stage's settings compare; a generate stage records
it all the same, because a half-written single-process output and a Ray job's shards cannot
finish each other's work.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from genq.generation.run import generate_pairs
from genq.generation.settings import GenerationConfig, GenerationSummary
from genq.pipeline.stage import RunContext


def run_generation(context: RunContext, passages: Path, output: Path, generation: GenerationConfig, resume: bool,
                   generator=None) -> GenerationSummary:
    """``generate_pairs``, or its Ray Data job under ``adapt --ray``."""
    config = context.config
    if config.ray is None:
        return generate_pairs(passages, output, generation, overwrite=not resume, progress=context.progress,
                              limit=config.limit, quality=config.quality, generator=generator)
    from genq.distributed import generate_pairs_ray

    # the Ray driver fixes the workers' device and dtype in the config it is given: a copy, not the run's
    return generate_pairs_ray(passages, output, replace(generation), config.ray, overwrite=not resume,
                              progress=context.progress, limit=config.limit, quality=config.quality)


def corpus_vectors(context: RunContext, model: str):
    """The run's passages encoded by ``model`` as a Ray Data job under ``adapt --ray`` (None otherwise: the stage
    encodes them itself). The shards stay in the run's cache, so filter and mine-negatives, which encode with
    the same base model, share one encoding, and a kill loses at most the shards in flight."""
    return _ray_vectors(context, model, context.paths.cache / "ray-corpus")


def index_vectors(context: RunContext, model: str):
    """The adapted model's vectors for the index stage under ``adapt --ray`` (None otherwise)."""
    return _ray_vectors(context, model, index_shards(context))


def _ray_vectors(context: RunContext, model: str, shards: Path):
    config = context.config
    if config.ray is None:
        return None
    from genq.distributed import encode_corpus_ray

    return encode_corpus_ray(context.paths.passages, model, shards, config.ray, dtype=config.dtype,
                             batch_size=config.encode_batch_size or 64, progress=context.progress)


def index_shards(context: RunContext) -> Path:
    return context.paths.cache / "ray-index"


def drop_index_shards(context: RunContext) -> None:
    """The index holds the vectors now (its embeddings are rebuilt from the model if ever needed)."""
    shutil.rmtree(index_shards(context), ignore_errors=True)
