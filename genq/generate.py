"""Synthetic query generation: passages -> (query, passage) pairs (the public import path of :mod:`genq.generation`).

Two generator families (seq2seq query generators such as GenQ's T5, and decoder-only LMs
prompted InPars-style) on two backends (genq's torch loops, CTranslate2), behind one resumable
writer. See :mod:`genq.generation` for where each part lives.
"""

from genq.generation.backend import PromptedGenerator, QueryBackend
from genq.generation.family import detect_family, generator_family, split_gguf
from genq.generation.journal import journal_check, run_paths
from genq.generation.kv_cache import cache_argument
from genq.generation.load import BackendChoice, choose_backend, load_generator
from genq.generation.pairs_file import iter_pairs
from genq.generation.prompts import (
    chat_prompt,
    clean_queries,
    few_shot_parts,
    normalize_query,
    render_prompt,
)
from genq.generation.run import (
    RunIdentity,
    check_quality,
    finished_output,
    generate_pairs,
    identify_run,
    meta_path_for,
    write_pairs_meta,
)
from genq.generation.sampling import SampleStreams, sample_top_k_top_p
from genq.generation.settings import (
    BACKENDS,
    DEFAULT_GENERATOR,
    FAMILY_DEFAULTS,
    PROMPT_STYLES,
    SAMPLING_KEYS,
    SCORE_FIELD,
    GenerationConfig,
    GenerationSummary,
    QualityCheck,
)
from genq.generation.templates import BUILTIN_TEMPLATES, load_prompt_template
from genq.generation.torch_backend import QueryGenerator

__all__ = [
    "BACKENDS", "BUILTIN_TEMPLATES", "DEFAULT_GENERATOR", "FAMILY_DEFAULTS", "PROMPT_STYLES", "SAMPLING_KEYS",
    "SCORE_FIELD", "BackendChoice", "GenerationConfig", "GenerationSummary", "PromptedGenerator", "QualityCheck",
    "QueryBackend", "QueryGenerator", "RunIdentity", "SampleStreams", "cache_argument", "chat_prompt",
    "check_quality", "choose_backend", "clean_queries", "detect_family", "few_shot_parts", "finished_output",
    "generate_pairs", "generator_family", "identify_run", "iter_pairs", "journal_check", "load_generator",
    "load_prompt_template", "meta_path_for", "normalize_query", "render_prompt", "run_paths", "sample_top_k_top_p",
    "split_gguf", "write_pairs_meta",
]
