"""``genq adapt``: every stage in order, recorded in a manifest so a rerun does only what is left.

    RUN_DIR/
      manifest.json        one entry per finished stage: parameters, outputs, summary, time
      passages.jsonl       prepare
      pairs.jsonl          generate (+ pairs.meta.json)
      pairs.filtered.jsonl filter            (when --filter-top-k / --filter-min-score)
      generators/roundN/   tune generator N  (when --generator-rounds: tuned on the kept pairs so far)
      pairs.roundN.jsonl   generate round N  (+ passages.roundN.jsonl, its order; pairs.roundN.filtered.jsonl)
      pairs.cropped.jsonl  crop              (when --queries cropped or generated+cropped)
      pairs.combined.jsonl combine           (every round's kept pairs and the crops, each pair once)
      pairs.negatives.jsonl mine-negatives   (when --hard-negatives N, or --gpl)
      pairs.labelled.jsonl  pseudo-label     (when --gpl: cross-encoder margins, then MarginMSE training)
      model/               train
      pairs.reranker-negatives.jsonl  reranker negatives (when --reranker without --hard-negatives: BM25's)
      reranker/            train-reranker    (when --reranker: a cross-encoder on the same pairs)
      index/               index
      eval/                evaluate          (when --eval-data)

A stage is skipped when the manifest records it finished with the same parameters, its
outputs exist and nothing before it ran again. A stage that was interrupted is continued
the way its own command continues (generation appends after the last passage, training
resumes from its last checkpoint); a stage whose parameters changed runs again from
scratch, and so does everything after it.

The package, one concern a module:

* :mod:`~genq.pipeline.config`: what a run is asked to do, and the sizing of what the user left unset;
* :mod:`~genq.pipeline.manifest`: the record of finished stages;
* :mod:`~genq.pipeline.stage`: a stage as data, and the one loop that runs a list of them;
* :mod:`~genq.pipeline.stages`: the stages, and the order they run in;
* :mod:`~genq.pipeline.sources`: the stages that make the training pairs (generate, filter, generator rounds,
  crop, combine);
* :mod:`~genq.pipeline.settings`: a stage's settings as the manifest records them;
* :mod:`~genq.pipeline.budget` with :mod:`~genq.pipeline.probe`: ``--time-budget``;
* :mod:`~genq.pipeline.runner`: :func:`adapt`.
"""

from genq.pipeline.config import AdaptConfig, CorpusOptions, queries_per_passage_for, training_length_for
from genq.pipeline.manifest import MANIFEST, Manifest, check_run_dir
from genq.pipeline.runner import adapt
from genq.pipeline.stage import RunContext, RunPaths, Stage, StageResult, run_stages
from genq.pipeline.stages import build_stages

__all__ = ["MANIFEST", "AdaptConfig", "CorpusOptions", "Manifest", "RunContext", "RunPaths", "Stage", "StageResult",
           "adapt", "build_stages", "check_run_dir", "queries_per_passage_for", "run_stages", "training_length_for"]
