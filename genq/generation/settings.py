"""The knobs of a generation run, its family defaults, and what a run reports."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace

from genq.io import GenqError
from genq.quality import LONG_QUERY_WORDS, QualityReport

logger = logging.getLogger(__name__)

DEFAULT_GENERATOR = "BeIR/query-gen-msmarco-t5-base-v1"
# Settings that change which pairs come out: a resume must use the same ones.
SAMPLING_KEYS = ("model", "gguf_file", "family", "queries_per_passage", "top_p", "top_k", "max_length",
                 "max_passage_tokens", "temperature", "seed", "prefix", "prompt_template", "prompt_style",
                 "include_title", "min_query_words", "max_query_words", "drop_copies", "dtype")
# Settings left unset take their family's value. The seq2seq ones are GenQ's (BEIR, sentence-transformers);
# a small instruct LM writes far more on-topic queries cooler (0.7), from a shorter passage window (it loses
# the thread on long inputs) and with its runaway samples dropped: one still going after 32 tokens is a
# sentence, not a query, and stopping it there saves the decoding steps it would waste.
FAMILY_DEFAULTS = {
    "seq2seq": {"temperature": 1.0, "max_passage_tokens": 350, "max_length": 64, "max_query_words": 0},
    "causal": {"temperature": 0.7, "max_passage_tokens": 200, "max_length": 32, "max_query_words": LONG_QUERY_WORDS},
}
PROMPT_STYLES = ("auto", "chat", "plain")
BACKENDS = ("auto", "torch", "ctranslate2")
SCORE_FIELD = "generator_logprob"  # each pair's mean token log-probability under the generator


@dataclass
class GenerationConfig:
    """Every knob of a generation run; the sampling ones are recorded in ``pairs.meta.json``."""

    model: str = DEFAULT_GENERATOR
    gguf_file: str | None = None
    queries_per_passage: int = 3
    top_p: float = 0.95
    top_k: int = 25
    max_length: int | None = None  # None: the family's default (FAMILY_DEFAULTS)
    max_passage_tokens: int | None = None
    temperature: float | None = None
    seed: int = 42
    prefix: str = ""
    prompt_template: str | None = None  # None: the one the generator was tuned under (own_prompt), else msmarco
    prompt_style: str = "auto"  # causal LMs: chat (the tokenizer's chat template), plain, or chat when it has one
    include_title: bool = True
    min_query_words: int = 0
    max_query_words: int | None = None
    drop_copies: bool = False
    batch_size: int | None = None  # passages per sampling call; None: by free GPU memory, or 16 on a CPU
    device: str | None = None
    dtype: str = "auto"  # torch: auto/float32/bfloat16/float16; CTranslate2 also int8 (its auto on a CPU)
    family: str = "auto"
    backend: str = "auto"  # see genq.generation.load.choose_backend

    def __post_init__(self) -> None:
        # a Path from Python callers: recorded as text in the journal and the meta
        self.model = str(self.model)
        if self.gguf_file is not None:
            self.gguf_file = str(self.gguf_file)
        if self.prompt_template is None or self.prompt_style == "auto":
            # a generator tuned by genq writes its queries under the prompt it learned under
            from genq.generation.templates import DEFAULT_TEMPLATE, own_prompt

            template, style = own_prompt(self.model)
            if self.prompt_template is None:
                self.prompt_template = template or DEFAULT_TEMPLATE
            if self.prompt_style == "auto" and style and template == self.prompt_template:
                self.prompt_style = style

    def for_family(self, family: str) -> GenerationConfig:
        """A copy with the unset settings filled in from ``family``'s defaults."""
        filled = {key: value for key, value in FAMILY_DEFAULTS[family].items() if getattr(self, key) is None}
        return replace(self, family=family, **filled)

    def validate(self) -> None:
        if self.queries_per_passage < 1:
            raise GenqError("--queries-per-passage must be at least 1")
        if not 0 < self.top_p <= 1:
            raise GenqError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise GenqError(f"--top-k must be >= 0 (0 turns it off), got {self.top_k}")
        if self.temperature is not None and self.temperature <= 0:
            raise GenqError(f"--temperature must be > 0, got {self.temperature}")
        if (self.batch_size is not None and self.batch_size < 1) or (self.max_length or 1) < 1 \
                or (self.max_passage_tokens or 8) < 8:
            raise GenqError("--batch-size, --max-length must be >= 1 and --max-passage-tokens >= 8")
        if self.max_query_words and self.max_query_words < self.min_query_words:
            raise GenqError("--max-query-words is smaller than --min-query-words")
        if self.backend not in BACKENDS:
            raise GenqError(f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.prompt_style not in PROMPT_STYLES:
            raise GenqError(f"--prompt-style must be one of {', '.join(PROMPT_STYLES)}, got {self.prompt_style!r}")


@dataclass
class GenerationSummary:
    output: str
    passages: int = 0
    passages_skipped_as_done: int = 0
    passages_generated: int = 0
    queries_sampled: int = 0
    pairs_written: int = 0  # by this run
    pairs_in_file: int = 0  # in the finished file, whatever earlier runs wrote of it
    duplicates_dropped: int = 0
    filtered_out: int = 0
    passages_without_query: int = 0
    filtered_runaway: int = 0  # of filtered_out: decoder-only samples cut by the length limit
    filtered_not_a_query: int = 0  # of filtered_out: a "Document:"/"Answer:" or a few-shot example's query
    passages_without_text: int = 0  # skipped: nothing to ask about
    torn_bytes_dropped: int = 0
    seconds: float = 0.0
    sampling_seconds: float = 0.0  # the batches alone: no loading, no quality check
    already_complete: bool = False
    device: str = ""
    dtype: str = ""
    family: str = ""
    prompt_style: str = ""
    batch_size: int = 0  # passages per sampling call, as chosen (auto or --gen-batch-size)
    backend: str = ""  # torch or ctranslate2
    backend_reason: str = ""  # why that one (the --backend asked for, or auto's measured reason)
    quality: QualityReport | None = None  # measured on a sample of the finished file
    # the finished file's counts over every run that wrote it (as in pairs.meta.json); the fields
    # above count this run only, which after a resume is part of the file
    file_counts: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class QualityCheck:
    """The label-free quality measure run on a sample of a finished pairs file (see :mod:`genq.quality`).

    ``corpus`` caps the passages the round trip ranks among (the sampled queries' own
    passages plus a random draw of the others): cheap on any corpus, and the whole corpus
    when it is smaller.
    """

    model: str
    sample: int = 200
    corpus: int = 2000
    dtype: str = "auto"
    device: str | None = None

    def load(self):
        """The judging bi-encoder, or None (with a warning) when it cannot be had: the check is no reason to fail."""
        from genq.encode import Encoder

        try:
            return Encoder(self.model, device=self.device, dtype=self.dtype)
        except GenqError as exc:
            logger.warning("the query-quality check is skipped: %s\n  fix: pass --quality-model (a bi-encoder id or "
                           "directory), or --quality-sample 0 to turn the check off", exc)
            return None
