"""Reranking by query likelihood (UPR): how likely the generator finds the query, given each candidate passage.

UPR (Sachan et al. 2022, "Improving Passage Retrieval with Zero-Shot Question Generation")
reorders a first stage's candidates by log p(query | passage) under a query generator,
averaged over the query's tokens; Zhuang et al. (2023) show the same with decoder-only LMs. No
training and no cross-encoder: the model is the one genq generates with, read with the prompt
it generates with, so the score is the ``generator_logprob`` a sampled query gets
(``score_queries`` of either backend, from the same rows).
A generator tuned on the corpus is a likelihood model of that corpus too.

The reranker has the interface of :class:`genq.retrieval.Reranker` (``name``, ``score``,
``score_pairs``, ``rerank``), so search, serve and evaluate take either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from genq.generation.settings import GenerationConfig
from genq.retrieval import reorder

QUERY_LIKELIHOOD = "query-likelihood"  # what --rerank names to get this reranker instead of a cross-encoder
# --backend auto for scoring, per generator family, from benchmarks/results/likelihood_speed.md (2-core EPYCs,
# 60 Cranfield pairs). Causal: torch (SmolLM2's few-shot prompt: torch bfloat16 0.25 s a pair, CTranslate2 int8
# 0.45 s, as torch computes the shared prompt once per batch and score_batch once per row; zero-shot in float32
# on a CPU without bf16 they tie). Seq2seq: the generation rule ("auto": CTranslate2 on a CPU, torch on a GPU),
# as a T5-base-shaped model scored 1.85x faster on CTranslate2 int8 than on torch float32, with the same top
# candidates.
AUTO_SCORING_BACKEND = {"causal": "torch", "seq2seq": "auto"}


def load_scorer(generation: GenerationConfig):
    """The generator that scores, on the backend ``generation.backend`` names (auto: the one measured faster for
    scoring, which is not always the one faster for sampling: torch computes a few-shot prompt once per batch,
    CTranslate2's ``score_batch`` once per row). A model CTranslate2 cannot run falls back to torch."""
    from genq.generation.load import load_generator, resolved_family

    backend = generation.backend
    if backend == "auto":
        backend = AUTO_SCORING_BACKEND[resolved_family(generation)]
    return load_generator(replace(generation, backend=backend))


class QueryLikelihoodReranker:
    """Scores (query, passage) pairs by the generator's mean log-probability of the query given the passage."""

    kind = QUERY_LIKELIHOOD

    def __init__(self, generation: GenerationConfig, batch_size: int = 8):
        """``batch_size`` rows per forward pass: 8 and 20 measured the same on 2 CPU cores (SmolLM2, bf16)."""
        self.generator = load_scorer(generation)
        self.name = f"{QUERY_LIKELIHOOD} ({generation.gguf_file or generation.model})"
        self.batch_size = batch_size

    def score(self, query: str, passages: Sequence[dict]) -> np.ndarray:
        """log p(query | passage) per passage, averaged over the query's tokens (its end included); higher is better."""
        scores = self.generator.score_queries(list(passages), [query] * len(passages), self.batch_size)
        return np.asarray(scores, dtype=np.float32)

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """One score per (query, passage text) pair."""
        passages = [{"_id": "", "title": "", "text": text} for _, text in pairs]
        scores = self.generator.score_queries(passages, [query for query, _ in pairs], self.batch_size)
        return np.asarray(scores, dtype=np.float32)

    def rerank(self, query: str, candidates: list, passages: Sequence[dict], depth: int,
               first_stage: Sequence[float] | None = None, fusion: str = "replace",
               weight: float = 0.5) -> list[tuple[object, float | None, float | None]]:
        """The first ``depth`` candidates reordered by likelihood (or blended with ``first_stage``); the rest follow."""
        return reorder(candidates, self.score(query, passages[:depth]), first_stage, fusion, weight)
