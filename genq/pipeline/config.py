"""What a ``genq adapt`` run is asked to do, and how genq sizes what the user left unset."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from genq.ann import IndexParams
from genq.corpus import DEFAULT_MAX_TOKENS, DEFAULT_OVERLAP
from genq.distributed import RayOptions
from genq.generation.settings import GenerationConfig, QualityCheck
from genq.negatives import MiningConfig
from genq.pseudo_label import PseudoLabelConfig
from genq.retrieval import LexicalSettings
from genq.train import TrainConfig
from genq.train_generator import GeneratorTrainingConfig
from genq.train_reranker import RerankerConfig
from genq.training_run import floor_fraction

# Sizing by corpus, where the user leaves it to genq. GPL (Wang et al. 2022) generates about 250k queries
# whatever the corpus (at least one per passage) and trains 140k steps of batch 32 over them: many
# epochs. genq keeps the rule and caps both ends by cost: queries per passage at 5 (each costs a
# generator call, and a passage's later samples repeat its earlier ones), epochs at 10.
TOTAL_QUERIES = 250_000
MAX_AUTO_QUERIES_PER_PASSAGE = 5
MIN_AUTO_STEPS = 1_000  # a small corpus still gets enough optimizer steps to move the model
MAX_AUTO_EPOCHS = 10
MAX_WARMUP_STEPS = 1_000  # GPL's warm-up
# generated: sampled by the generator; cropped: cut from the passage itself (genq.cropping), no generator
QUERY_SOURCES = ("generated", "cropped", "generated+cropped")
CROPS_PER_PASSAGE = 3  # where --queries-per-passage is left to genq


def queries_per_passage_for(passages: int) -> tuple[int, str]:
    """Queries per passage by corpus size, with the reason (GPL's ~250k queries in total)."""
    share = TOTAL_QUERIES // max(passages, 1)
    chosen = max(1, min(MAX_AUTO_QUERIES_PER_PASSAGE, share))
    if share > MAX_AUTO_QUERIES_PER_PASSAGE:
        why = (f"{passages:,} passages x {chosen} = {passages * chosen:,} queries (GPL aims at ~250k in total; "
               f"more than {MAX_AUTO_QUERIES_PER_PASSAGE} per passage mostly repeats itself and costs generator time)")
    elif share >= 1:
        why = f"{passages:,} passages x {chosen} = {passages * chosen:,} queries, about GPL's ~250k in total"
    else:
        why = f"{passages:,} passages: at least 1 query each (more than GPL's ~250k in total)"
    return chosen, why


def training_length_for(pairs: int, batch_size: int) -> tuple[float, float, str]:
    """(epochs, warm-up ratio, reason): at least ``MIN_AUTO_STEPS`` optimizer steps, at most ``MAX_AUTO_EPOCHS``.

    The floor is reached with a fraction of an epoch where one is enough: 990 steps an epoch is 1.01
    epochs, not two (which would double the training for ten more steps' worth)."""
    per_epoch = max(1, -(-pairs // batch_size))
    epochs = max(1.0, min(float(MAX_AUTO_EPOCHS), floor_fraction(MIN_AUTO_STEPS / per_epoch)))
    steps = math.ceil(per_epoch * epochs)  # as the trainer counts them
    warmup = round(min(0.1, MAX_WARMUP_STEPS / steps), 4)
    why = (f"{pairs:,} pairs / batch {batch_size} = {per_epoch:,} steps per epoch, so {epochs:.3g} epoch(s) = "
           f"{steps:,} steps" + (f" (at least {MIN_AUTO_STEPS:,} wanted; capped at {MAX_AUTO_EPOCHS} epochs)"
                                 if epochs > 1 else "") + f", warm-up {warmup:.0%} of them")
    return epochs, warmup, why


@dataclass
class CorpusOptions:
    format: str = "auto"
    id_field: str | None = None
    text_field: str | None = None
    title_field: str | None = None
    txt_mode: str = "auto"
    split: str | None = None
    tokenizer: str | None = None  # None: the generator's own tokenizer
    max_tokens: int = DEFAULT_MAX_TOKENS
    overlap: int = DEFAULT_OVERLAP
    on_error: str = "raise"
    dedup: bool = True


@dataclass
class AdaptConfig:
    corpus: CorpusOptions = field(default_factory=CorpusOptions)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    filter_top_k: int | None = None
    filter_min_score: float | None = None
    filter_keep_top_share: float | None = None
    filter_min_logprob: float | None = None
    quality: QualityCheck | None = None  # measured on a sample of the generated pairs
    auto_queries_per_passage: bool = False  # size by corpus (see queries_per_passage_for)
    auto_epochs: bool = False  # size by pairs (see training_length_for)
    auto_warmup: bool = False
    hard_negatives: int = 0
    mining: MiningConfig = field(default_factory=MiningConfig)
    gpl: bool = False  # pseudo-label with a cross-encoder and train with MarginMSE (needs negatives)
    pseudo_label: PseudoLabelConfig = field(default_factory=PseudoLabelConfig)
    training: TrainConfig = field(default_factory=TrainConfig)
    index: IndexParams = field(default_factory=IndexParams)
    lexical: LexicalSettings | None = field(default_factory=LexicalSettings)  # None: a dense-only index
    encode_batch_size: int | None = None  # None: by the GPU's free memory, 64 on a CPU
    eval_data: str | None = None
    eval_likelihood: bool = False  # with eval_data: also hybrid(adapted) reranked by the generator's query likelihood
    limit: int | None = None
    dtype: str = "auto"
    time_budget: float | None = None  # seconds; size passages and steps the user left unset to fit it
    reranker: RerankerConfig | None = None  # None: no reranker stage
    queries: str = "generated"  # where the training queries come from: QUERY_SOURCES
    generator_rounds: int = 1  # >1: the generator is tuned on the kept pairs so far and samples again
    generator_tuning: GeneratorTrainingConfig = field(default_factory=GeneratorTrainingConfig)
    ray: RayOptions | None = None  # generate, filter, mine-negatives and index as Ray Data jobs (genq[ray])

    @property
    def generates(self) -> bool:
        return "generated" in self.queries.split("+")

    @property
    def crops(self) -> bool:
        return "cropped" in self.queries.split("+")

    @property
    def filtering(self) -> bool:
        """Whether any filter option is set (otherwise there is no filter stage)."""
        return bool(self.filter_top_k or self.filter_min_score is not None
                    or self.filter_keep_top_share is not None or self.filter_min_logprob is not None)
