"""Synthetic query generation: passages -> (query, passage) pairs.

Two generator families share one resumable writer:

* seq2seq query generators (GenQ/docT5query T5 models): the passage is the input, queries
  are sampled from the decoder with nucleus sampling;
* decoder-only LMs (InPars style): a few-shot prompt ends in an open query slot and the
  first line of the sampled continuation is the query.

Speed comes from what dominates on CPU and GPU alike: big length-sorted batches (little
padding), weights cast to bf16 where the hardware does bf16 natively, and lean decoding
loops that compute shared work once: a passage's samples share T5's first decoder step
(cross-attention keys and values included) and a decoder-only prompt's KV cache; a
decoder-only template's few-shot part is run once per run; only the last prompt position
gets logits; finished samples leave the batch.

Resume: pairs are appended batch by batch to ``OUT.partial`` and each batch is then logged in
a journal; a rerun cuts what the journal does not vouch for, skips the logged passages and
refuses to mix settings or inputs. Per-passage random streams make the resumed file equal to
an uninterrupted one. ``OUT`` and ``pairs.meta.json`` (settings, input fingerprint, counts and
a fingerprint of OUT itself) appear only when the run is complete.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from genq import __version__
from genq.batch_sizing import HalvingBatches, auto_generation_batch, generation_bytes_per_passage
from genq.corpus import clip_for_model, iter_passage_file
from genq.hardware import dtype_name, resolve_device, resolve_dtype
from genq.io import (
    DataError,
    GenqError,
    JsonlAppender,
    atomic_write,
    describe_error,
    describe_file,
    file_fingerprint,
    is_described_file,
    iter_jsonl,
    read_json,
    refuse_same_path,
    repair_torn_tail,
    write_json_atomic,
)
from genq.locks import one_writer
from genq.models import resolve_model
from genq.quality import LONG_QUERY_WORDS, QualityReport, strip_template_echo

logger = logging.getLogger(__name__)


@functools.cache
def _cache_argument_of(model_class: type) -> str:
    import inspect

    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def cache_argument(model) -> str:
    """The name forward() takes the KV cache by: transformers 5 renamed ``past_key_values`` to ``cache`` and
    warns on every call that uses the old name; older versions know only the old one."""
    return _cache_argument_of(type(model))

DEFAULT_GENERATOR = "BeIR/query-gen-msmarco-t5-base-v1"
BUILTIN_TEMPLATES = ("msmarco", "promptagator")
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
    prompt_template: str = "msmarco"
    prompt_style: str = "auto"  # causal LMs: chat (the tokenizer's chat template), plain, or chat when it has one
    include_title: bool = True
    min_query_words: int = 0
    max_query_words: int | None = None
    drop_copies: bool = False
    batch_size: int | None = None  # passages per sampling call; None: by free GPU memory, or 16 on a CPU
    device: str | None = None
    dtype: str = "auto"
    family: str = "auto"

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
    already_complete: bool = False
    device: str = ""
    dtype: str = ""
    family: str = ""
    prompt_style: str = ""
    batch_size: int = 0  # passages per sampling call, as chosen (auto or --gen-batch-size)
    quality: QualityReport | None = None  # measured on a sample of the finished file

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


# --------------------------------------------------------------------------- prompts


def load_prompt_template(name_or_path: str) -> str:
    """A built-in few-shot template by name, or the user's file with a ``{passage}`` placeholder."""
    if name_or_path in BUILTIN_TEMPLATES:
        return resources.files("genq").joinpath("prompts", f"{name_or_path}.txt").read_text(encoding="utf-8")
    path = Path(name_or_path)
    if not path.exists():
        raise GenqError(f"prompt template {name_or_path!r} is neither a built-in ({', '.join(BUILTIN_TEMPLATES)}) "
                        "nor an existing file")
    template = path.read_text(encoding="utf-8")
    if "{passage}" not in template:
        raise DataError(path, "prompt template has no {passage} placeholder",
                        "put {passage} where the passage text goes (and optionally {title})")
    return template


def render_prompt(template: str, passage: str, title: str = "") -> str:
    # str.replace, not str.format: user templates may hold other braces (JSON examples).
    return template.replace("{title}", title).replace("{passage}", passage)


# "Label: text" over one or more lines, then "Slot: answer" on the last line
_SHOT = re.compile(r"^(?P<input>[^\n:]{1,40}:.*)\n(?P<slot>[^\n:]{1,40}):[ \t]*(?P<answer>[^\n]*)$", re.DOTALL)


def few_shot_parts(template: str) -> tuple[str, list[tuple[str, str]], str] | None:
    """(instruction, [(example input, its query), ...], final input) of a plain few-shot template.

    The layout of the built-in templates: an optional instruction paragraph, then blocks of
    "Document: ..." + "Query: ...", the last one ending in an empty slot after
    "Document: {passage}". Any other layout gives None.
    """
    blocks = [block.strip() for block in re.split(r"\n[ \t]*\n", template.strip()) if block.strip()]
    instruction: list[str] = []
    shots: list[re.Match] = []
    for block in blocks:
        match = _SHOT.match(block)
        if match is None:
            if shots:
                return None  # prose after the examples: not this layout
            instruction.append(block)
        else:
            shots.append(match)
    if not shots or shots[-1]["answer"].strip() or "{passage}" not in shots[-1]["input"]:
        return None
    examples = [(shot["input"].strip(), shot["answer"].strip()) for shot in shots[:-1]]
    return " ".join(instruction), examples, shots[-1]["input"].strip()


def chat_prompt(tokenizer, template: str) -> str:
    """``template`` as a conversation in the tokenizer's chat format, still with its ``{passage}`` slot.

    Instruct models answer a user turn far better than they continue a document: the
    instruction becomes the system turn, each example a user turn (the passage) answered by an
    assistant turn (its query), and the prompt ends where the assistant's answer starts. A
    template of another layout becomes one user turn.
    """
    parts = few_shot_parts(template)
    if parts is None:
        system, turns = None, [{"role": "user", "content": template}]
    else:
        instruction, examples, final = parts
        system = f"{instruction} Reply with the query only, on one line.".strip()
        turns = []
        for text, query in examples:
            turns += [{"role": "user", "content": text}, {"role": "assistant", "content": query}]
        turns.append({"role": "user", "content": final})
    try:
        messages = ([{"role": "system", "content": system}] if system else []) + turns
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception:  # some chat formats have no system turn: the instruction opens the first user turn
        turns[0] = {"role": "user", "content": f"{system}\n\n{turns[0]['content']}" if system else turns[0]["content"]}
        return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)


# --------------------------------------------------------------------------- query clean-up


_SPACES = re.compile(r"\s+")
_PUNCT_EDGES = re.compile(r"^[\W_]+|[\W_]+$")


def normalize_query(query: str) -> str:
    """The dedup key: lowercase, whitespace collapsed, surrounding punctuation stripped."""
    return _PUNCT_EDGES.sub("", _SPACES.sub(" ", query.lower()).strip())


def clean_queries(queries: list, passage: str, config: GenerationConfig) -> tuple[list, int, int]:
    """Dedup (case/space-insensitive) and filter one passage's queries; returns kept, duplicates, filtered.

    A query may come as ``(text, score)``; it is kept as such (the text cleaned).
    """
    kept: list = []
    seen: set[str] = set()
    duplicates = filtered = 0
    passage_key = normalize_query(passage) if config.drop_copies else ""
    for item in queries:
        query, score = item if isinstance(item, tuple) else (item, None)
        query = _SPACES.sub(" ", query).strip()
        key = normalize_query(query)
        if not key:
            filtered += 1
            continue
        if key in seen:
            duplicates += 1
            continue
        words = len(query.split())
        if (config.min_query_words and words < config.min_query_words) or (
            config.max_query_words and words > config.max_query_words
        ) or (config.drop_copies and key in passage_key):
            filtered += 1
            continue
        seen.add(key)
        kept.append(query if score is None else (query, score))
    return kept, duplicates, filtered


# --------------------------------------------------------------------------- generators


def detect_family(model: str, gguf_file: str | None) -> str:
    """"seq2seq" or "causal", from the model's config (GGUF files are decoder-only)."""
    if gguf_file:
        return "causal"
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model)
    except Exception as exc:
        raise GenqError(f"could not load the generator {model!r}: {describe_error(exc)}\n"
                        "  fix: pass a local model directory, a hub id reachable from here, or --gguf-file") from None
    return "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"


def generator_family(config: GenerationConfig) -> str:
    """The family of ``config``'s generator (its config file is read; the weights are not loaded)."""
    if config.family != "auto":
        return config.family
    return detect_family(*_split_gguf(resolve_model(config.model, what="generator"), config.gguf_file))


def _split_gguf(model: str, gguf_file: str | None) -> tuple[str, str | None]:
    """Accept a GGUF path as the model itself, or a GGUF name inside a model dir."""
    if gguf_file is None and model.endswith(".gguf"):
        gguf_file = model
    if gguf_file is None:
        return model, None
    path = Path(gguf_file)
    if path.exists():
        return str(path.resolve().parent), path.name
    inside = Path(model) / gguf_file
    if inside.exists():
        return str(Path(model)), gguf_file
    return model, gguf_file  # a hub repo holding the file


class QueryGenerator:
    """Loads a generator once and samples queries for batches of passages."""

    def __init__(self, config: GenerationConfig):
        import torch

        config.validate()
        model_ref, gguf = _split_gguf(resolve_model(config.model, what="generator"), config.gguf_file)
        self.family = config.family if config.family != "auto" else detect_family(model_ref, gguf)
        self.config = config = config.for_family(self.family)
        config.validate()
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        if self.dtype == torch.float16 and self.family == "seq2seq":
            logger.warning("T5-style models overflow to NaN in float16; consider --dtype bfloat16 or float32")
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        load_kwargs = {"gguf_file": gguf} if gguf else {}
        local_gguf = Path(model_ref) / gguf if gguf and (Path(model_ref) / gguf).is_file() else None
        logger.info("loading the generator %s", config.model)
        try:
            if local_gguf is not None:  # de-quantised once, then loaded from the kept copy
                from genq import gguf_cache

                self.tokenizer, self.model = gguf_cache.load(local_gguf, "model")
            else:
                self.tokenizer = AutoTokenizer.from_pretrained(model_ref, **load_kwargs)
                model_class = AutoModelForSeq2SeqLM if self.family == "seq2seq" else AutoModelForCausalLM
                model_kwargs = dict(load_kwargs)
                if self.family == "seq2seq" and self.device == "cpu":
                    # T5's relative position bias sends SDPA down its slow masked path on CPU;
                    # eager attention measured ~1.4x faster for T5-base decoding here
                    model_kwargs["attn_implementation"] = "eager"
                self.model = model_class.from_pretrained(model_ref, **model_kwargs)
        except Exception as exc:
            raise GenqError(f"could not load the generator {config.model!r}: "
                            f"{describe_error(exc)}") from None
        self.model.to(device=self.device, dtype=self.dtype).eval()
        self.prompt_style = "plain"
        # decoder-only samples emptied before clean-up, by reason (part of the run's filtered_out count)
        self.emptied = {"runaway": 0, "not_a_query": 0}
        if self.family == "causal":
            self.tokenizer.padding_side = "left"
            self.template = load_prompt_template(config.prompt_template)
            # a sample that repeats a few-shot example's query is the prompt talking, not the passage
            parts = few_shot_parts(self.template)
            self.example_queries = {normalize_query(query) for _, query in (parts[1] if parts else [])}
            has_chat = bool(getattr(self.tokenizer, "chat_template", None))
            if config.prompt_style == "chat" and not has_chat:
                raise GenqError(f"--prompt-style chat: the generator {config.model!r} has no chat template\n"
                                "  fix: use --prompt-style plain (or auto), or an instruct model")
            if config.prompt_style == "chat" or (config.prompt_style == "auto" and has_chat):
                self.prompt_style = "chat"
                self.template = chat_prompt(self.tokenizer, self.template)
            eos = self.model.generation_config.eos_token_id
            eos = [eos] if isinstance(eos, int) else list(eos or [])
            if self.tokenizer.eos_token_id is not None:
                eos.append(self.tokenizer.eos_token_id)
            # only the first line of a continuation is kept, so a newline ends a sample
            # (once it has some text: small models often open with a blank line)
            self.eos_ids = sorted(set(eos))
            self.newline_ids = _newline_token_ids(self.tokenizer)
            self._prefix = False  # the template's shared KV cache, computed at the first batch
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token

    def _inputs(self, passages: list[dict]) -> list[str]:
        texts = []
        for passage in passages:
            title = clip_for_model(passage.get("title") or "", self.config.max_passage_tokens)
            text = clip_for_model(passage["text"], self.config.max_passage_tokens)
            if self.family == "causal":
                # the prompt's fixed part must survive truncation: cut the passage, not the template
                texts.append(render_prompt(self.template, self._truncate(text), title))
            else:
                body = f"{title} {text}" if (self.config.include_title and title) else text
                texts.append(self.config.prefix + body)
        return texts

    def generate(self, passages: list[dict], seed: int) -> list[list[str]]:
        """Sample ``queries_per_passage`` queries for each passage (see :meth:`sample`), without their scores."""
        return [[query for query, _ in queries] for queries in self.sample(passages, seed)]

    def sample(self, passages: list[dict], seed: int) -> list[list[tuple[str, float]]]:
        """Sample ``queries_per_passage`` queries for each passage, the batch in one decoding loop.

        Each query comes with its mean token log-probability under the generator (the raw
        model distribution, before temperature and truncation; the end token included): the
        InPars filtering score, recorded while sampling, so no second pass is needed.
        Each passage's draws come from its own stream (``seed`` + passage id + sample
        number), so its queries do not depend on which batch, run or worker it lands in.
        A decoder-only model's first line is kept, with any echo of the prompt stripped.
        """
        import torch

        config = self.config
        texts = self._inputs(passages)
        streams = SampleStreams([p["_id"] for p in passages], config.queries_per_passage, seed)
        with torch.inference_mode():
            if self.family == "seq2seq":
                encoded = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                                         max_length=config.max_passage_tokens)
                encoded = {k: v.to(self.device) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
                samples = self._sample_seq2seq(encoded, streams)
                decoded = self.tokenizer.batch_decode(samples.tokens, skip_special_tokens=True)
            else:
                samples = self._sample_causal(texts, streams)
                texts = self.tokenizer.batch_decode(samples.tokens, skip_special_tokens=True)
                decoded = [self._query_in(text, ended) for text, ended in zip(texts, samples.ended)]
        scored = list(zip(decoded, samples.mean_logprobs()))
        n = config.queries_per_passage
        return [scored[i * n:(i + 1) * n] for i in range(len(passages))]

    def use_settings(self, config: GenerationConfig) -> None:
        """Sample with ``config``'s settings from now on (a run may size queries per passage after the model
        loaded); the model, its file and precision must be the ones loaded."""
        wanted = config.for_family(self.family)
        for key in ("model", "gguf_file", "dtype"):
            if getattr(wanted, key) != getattr(self.config, key):
                raise GenqError(f"the loaded generator has {key}={getattr(self.config, key)!r}, the run "
                                f"{getattr(wanted, key)!r}")
        self.config = wanted

    def _query_in(self, text: str, ended: bool) -> str:
        """The query in a decoder-only sample, or "" (counted in ``emptied``) when it holds none.

        A sample cut by --max-query-tokens is a runaway sentence (small models often summarise
        the passage instead of asking about it); one that writes a "Document:" or an "Answer:",
        or repeats a few-shot example's query, is the prompt talking, not the passage.
        """
        if not ended:
            self.emptied["runaway"] += 1
            return ""
        first = _first_line(text)
        query = strip_template_echo(first)
        if first and (not query or normalize_query(query) in self.example_queries):
            self.emptied["not_a_query"] += 1
            return ""
        return query

    def _sample_seq2seq(self, encoded: dict, streams: SampleStreams) -> _Samples:
        """Nucleus sampling with a lean decoding loop instead of ``generate``.

        Why not ``generate``: on CPU its per-step overhead dominates small-model decoding, and
        it treats the ``queries_per_passage`` samples of a passage as unrelated sequences.
        Here the first decoder step runs once per *passage* (every sample starts from the same
        token, so its logits, self-attention state and, above all, the cross-attention keys
        and values over the encoder output are shared) and its cache is then copied for each
        sample. Top-k is applied first and top-p only over those k logits (no full-vocabulary
        sort), and sequences that produced EOS leave the batch at once (their rows are
        dropped from the cache), so the batch stops paying for finished queries.
        """
        import torch
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        config = self.config
        model = self.model
        n = config.queries_per_passage
        encoder_outputs = model.get_encoder()(input_ids=encoded["input_ids"],
                                              attention_mask=encoded["attention_mask"], return_dict=True)
        hidden, attention_mask = encoder_outputs.last_hidden_state, encoded["attention_mask"]
        generation = model.generation_config
        start = generation.decoder_start_token_id
        if start is None:
            start = model.config.decoder_start_token_id if model.config.decoder_start_token_id is not None else \
                self.tokenizer.pad_token_id
        eos = generation.eos_token_id if generation.eos_token_id is not None else self.tokenizer.eos_token_id
        eos_ids = torch.tensor(eos if isinstance(eos, list) else [eos], device=self.device)
        forced_bos = getattr(generation, "forced_bos_token_id", None)
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        first = torch.full((hidden.shape[0], 1), start, dtype=torch.long, device=self.device)
        logits = model(encoder_outputs=(hidden,), attention_mask=attention_mask, decoder_input_ids=first,
                       **{cache_argument(model): cache}, use_cache=True, return_dict=True).logits[:, -1, :]
        # from here on one row per sample: the shared step is copied, not recomputed
        logits = logits.repeat_interleave(n, dim=0)
        cache.batch_repeat_interleave(n)
        hidden, attention_mask = hidden.repeat_interleave(n, dim=0), attention_mask.repeat_interleave(n, dim=0)
        rows = logits.shape[0]
        alive = torch.arange(rows, device=self.device)  # original row of each live sequence
        samples = _Samples(rows)
        for step in range(config.max_length - 1):
            if step == 0 and forced_bos is not None:
                next_tokens = torch.full((len(alive),), forced_bos, dtype=torch.long, device=self.device)
                token_logprobs = None  # forced, not sampled: no part of the query's score
            else:
                next_tokens = sample_top_k_top_p(logits.float(), config.top_k, config.top_p, config.temperature,
                                                 uniforms=streams.uniforms(alive, step))
                token_logprobs = _token_logprobs(logits, next_tokens)
            finished = torch.isin(next_tokens, eos_ids)
            keep = samples.record(alive, next_tokens, token_logprobs, finished)
            if (keep is not None and len(keep) == 0) or step == config.max_length - 2:
                break
            if keep is not None:
                alive, hidden, attention_mask = alive[keep], hidden[keep], attention_mask[keep]
                next_tokens = next_tokens[keep]
                cache.reorder_cache(keep)
            logits = model(encoder_outputs=(hidden,), attention_mask=attention_mask,
                           decoder_input_ids=next_tokens.unsqueeze(1), **{cache_argument(model): cache}, use_cache=True,
                           return_dict=True).logits[:, -1, :]
        return samples

    def _prompt_prefix(self) -> tuple[list[int], object] | None:
        """The token ids every prompt starts with (the few-shot part) and their KV cache, computed once.

        The ids are those of the rendered template shared by two unlike probe passages, less
        the last one (it may merge with a passage's first characters); a batch uses the cache
        only if every prompt really starts with these ids, so the result is the same as
        running each whole prompt.
        """
        probes = [self._tokenize(render_prompt(self.template, text, "")) for text in ("Zebra 1907 (sic).", "the")]
        shared = 0
        while shared < min(map(len, probes)) and probes[0][shared] == probes[1][shared]:
            shared += 1
        ids = probes[0][:max(shared - 1, 0)]
        if len(ids) < 16:  # a template with a short fixed part: not worth a cache
            return None
        import torch

        cache = _growing_cache()
        with torch.inference_mode():
            self.model(input_ids=torch.tensor([ids], device=self.device), **{cache_argument(self.model): cache},
                       use_cache=True, logits_to_keep=1)
        return ids, cache

    def _tokenize(self, texts):
        # a chat-formatted prompt already holds its special tokens (a BOS among them, where the format has one)
        return self.tokenizer(texts, add_special_tokens=self.prompt_style != "chat")["input_ids"]

    def _sample_causal(self, texts: list[str], streams: SampleStreams) -> _Samples:
        """Prompted sampling for decoder-only models, leaner than ``generate``.

        Three savings, none of which changes what is sampled: the few-shot part of the
        prompt, the same for every passage, is run once for the whole run and its KV cache
        copied into each batch (the prompt's passage part is all that is computed); the LM
        head runs on the last prompt position only (``logits_to_keep=1``: a 49k-word
        vocabulary times hundreds of prompt tokens is thrown away otherwise); and the prompt
        runs once per passage with its cache copied for each of the ``queries_per_passage``
        samples. A sequence leaves the batch as soon as it ends its line (only the first
        line is kept, and most queries end long before ``max_length``).
        """
        import torch

        config = self.config
        model = self.model
        n = config.queries_per_passage
        ids = self._tokenize(texts)
        if self._prefix is False:
            self._prefix = self._prompt_prefix()
        prefix_ids, prefix_cache = self._prefix if self._prefix else ([], None)
        shared = len(prefix_ids)
        if prefix_cache is None or any(row[:shared] != prefix_ids for row in ids):
            shared, prefix_cache = 0, None
        rows = [row[shared:] for row in ids]
        width = max(map(len, rows))
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=self.device)
        attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device)
        positions = (shared + attention_mask.cumsum(-1) - 1).clamp(min=shared)
        if prefix_cache is not None:
            cache = _growing_cache(prefix_cache, len(rows), extra=width + config.max_length)
            attention_mask = torch.cat([attention_mask.new_ones((len(rows), shared)), attention_mask], dim=1)
        else:
            cache = _growing_cache()
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                       **{cache_argument(model): cache}, use_cache=True, logits_to_keep=1,
                       return_dict=True).logits[:, -1, :]
        logits = logits.repeat_interleave(n, dim=0)
        cache.batch_repeat_interleave(n)
        attention_mask = attention_mask.repeat_interleave(n, dim=0)
        next_position = positions[:, -1:].repeat_interleave(n, dim=0) + 1
        eos = torch.tensor(self.eos_ids, device=self.device)
        newline = torch.tensor(self.newline_ids, device=self.device)
        alive = torch.arange(logits.shape[0], device=self.device)
        has_text = torch.zeros(len(alive), dtype=torch.bool, device=self.device)
        samples = _Samples(logits.shape[0])
        for step in range(config.max_length):
            tokens = sample_top_k_top_p(logits.float(), config.top_k, config.top_p, config.temperature,
                                        uniforms=streams.uniforms(alive, step))
            is_newline = torch.isin(tokens, newline)
            finished = torch.isin(tokens, eos) | (is_newline & has_text)
            has_text = has_text | ~is_newline
            keep = samples.record(alive, tokens, _token_logprobs(logits, tokens), finished)
            if keep is not None and len(keep) == 0:
                break
            if keep is not None:
                alive, tokens, attention_mask, next_position, has_text = (
                    alive[keep], tokens[keep], attention_mask[keep], next_position[keep], has_text[keep])
                cache.batch_select_indices(keep)
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(alive), 1))], dim=1)
            logits = model(input_ids=tokens.unsqueeze(1), attention_mask=attention_mask, position_ids=next_position,
                           **{cache_argument(model): cache}, use_cache=True, return_dict=True).logits[:, -1, :]
            next_position = next_position + 1
        return samples

    def _truncate(self, text: str) -> str:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.config.max_passage_tokens:
            return text
        return self.tokenizer.decode(ids[: self.config.max_passage_tokens], skip_special_tokens=True)

    def auto_batch_size(self) -> int:
        """Passages per sampling call when none is set: by the device's free memory and this model's sizes."""
        import torch

        template_tokens = 0 if self.family == "seq2seq" else 160  # the few-shot prompt around each passage
        per_passage = generation_bytes_per_passage(
            self.model.config, self.family, self.config.queries_per_passage,
            self.config.max_passage_tokens + template_tokens, self.config.max_length,
            torch.tensor([], dtype=self.dtype).element_size())
        return auto_generation_batch(self.device, per_passage)

    def input_length(self, passage: dict) -> int:
        """A cheap length proxy for sorting (characters; tokenizing twice would cost more than it saves)."""
        return len(passage["text"]) + len(passage.get("title") or "")


def _growing_cache(prefix=None, batch: int = 1, extra: int = 0):
    """A KV cache whose layers append in place (see :func:`_growing_layer_class`), optionally holding
    ``prefix``'s keys and values copied for ``batch`` rows with room for ``extra`` more positions."""
    from transformers.cache_utils import Cache

    layer_class = _growing_layer_class()
    if prefix is None:
        return Cache(layer_class_to_replicate=layer_class)
    return Cache(layers=[layer.expanded(batch, extra) for layer in prefix.layers])


_GROWING_LAYER = None


def _growing_layer_class():
    """transformers' DynamicLayer concatenates the whole cache at every step (O(length) copies per
    token: a quarter of SmolLM2's decoding time measured here); this one writes into a buffer with
    spare room, so a step copies only the new position."""
    global _GROWING_LAYER
    if _GROWING_LAYER is not None:
        return _GROWING_LAYER
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        def lazy_initialization(self, key_states, value_states) -> None:
            super().lazy_initialization(key_states, value_states)
            self.length = 0
            self.key_buffer = self.value_buffer = None

        def _reserve(self, needed: int, like_keys, like_values) -> None:
            capacity = 0 if self.key_buffer is None else self.key_buffer.shape[2]
            if needed <= capacity:
                return
            capacity = max(needed + 64, capacity * 2)
            keys = like_keys.new_empty((*like_keys.shape[:2], capacity, like_keys.shape[3]))
            values = like_values.new_empty((*like_values.shape[:2], capacity, like_values.shape[3]))
            if self.length:
                keys[:, :, :self.length] = self.key_buffer[:, :, :self.length]
                values[:, :, :self.length] = self.value_buffer[:, :, :self.length]
            self.key_buffer, self.value_buffer = keys, values

        def _views(self):
            self.keys = self.key_buffer[:, :, :self.length]
            self.values = self.value_buffer[:, :, :self.length]

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            new = key_states.shape[-2]
            self._reserve(self.length + new, key_states, value_states)
            self.key_buffer[:, :, self.length:self.length + new] = key_states
            self.value_buffer[:, :, self.length:self.length + new] = value_states
            self.length += new
            self._views()
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length if self.is_initialized else 0

        def batch_repeat_interleave(self, repeats: int) -> None:
            if self.get_seq_length() > 0:
                self.key_buffer = self.key_buffer.repeat_interleave(repeats, dim=0)
                self.value_buffer = self.value_buffer.repeat_interleave(repeats, dim=0)
                self._views()

        def batch_select_indices(self, indices) -> None:
            if self.get_seq_length() > 0:
                self.key_buffer, self.value_buffer = self.key_buffer[indices], self.value_buffer[indices]
                self._views()

        def reorder_cache(self, beam_idx) -> None:
            self.batch_select_indices(beam_idx)

        def crop(self, tokens_to_remove: int) -> None:
            if tokens_to_remove < 0 and self.is_initialized:
                self.length = max(0, self.length + tokens_to_remove)
                self._views()
            else:
                super().crop(tokens_to_remove)

        def expanded(self, batch: int, extra: int):
            """A copy of this (one-row) layer for ``batch`` rows, with room for ``extra`` more positions."""
            copy = GrowingLayer()
            copy.lazy_initialization(self.keys, self.values)
            copy._reserve(self.length + extra, self.keys.expand(batch, -1, -1, -1),
                          self.values.expand(batch, -1, -1, -1))
            copy.key_buffer[:, :, :self.length] = self.keys
            copy.value_buffer[:, :, :self.length] = self.values
            copy.length = self.length
            copy._views()
            return copy

    _GROWING_LAYER = GrowingLayer
    return GrowingLayer


class _Samples:
    """What a decoding loop has sampled per row: its tokens and the log-probability they add up to."""

    def __init__(self, rows: int):
        self.tokens: list[list[int]] = [[] for _ in range(rows)]
        self.logprob = [0.0] * rows
        self.scored = [0] * rows
        self.ended = [False] * rows  # False: cut by the length limit

    def record(self, alive, tokens, token_logprobs, finished):
        """Append each live row's new token unless it ended the row; return the rows to keep.

        The ending token counts in the score (a model sure the query is over says so).
        ``None`` means every row goes on (nothing to drop from the batch); an empty tensor
        means every row has finished.
        """
        scores = token_logprobs.tolist() if token_logprobs is not None else None
        for i, (row, token, done) in enumerate(zip(alive.tolist(), tokens.tolist(), finished.tolist())):
            if done:
                self.ended[row] = True
            else:
                self.tokens[row].append(token)
            if scores is not None:
                self.logprob[row] += scores[i]
                self.scored[row] += 1
        if not bool(finished.any()):
            return None
        return (~finished).nonzero(as_tuple=True)[0]

    def mean_logprobs(self) -> list[float]:
        return [round(total / count, 4) if count else 0.0 for total, count in zip(self.logprob, self.scored)]


def _token_logprobs(logits, tokens):
    """log p(token) under the model's own distribution (no temperature, no truncation)."""
    logits = logits.float()
    return logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(dim=-1)


class SampleStreams:
    """One reproducible random stream per (passage, sample): the draws behind every sampled token.

    A counter-based generator (SplitMix64 over a key hashed from the run seed, the passage
    id and the sample number, advanced by the decoding step) instead of torch's global RNG:
    a passage gets the same queries whatever batch it is in, after a resume, and on any
    number of workers.
    """

    _GOLDEN = np.uint64(0x9E3779B97F4A7C15)

    def __init__(self, passage_ids: list[str], per_passage: int, seed: int):
        keys = [int.from_bytes(hashlib.blake2b(f"{seed}\x00{pid}\x00{sample}".encode(), digest_size=8).digest(),
                               "little") for pid in passage_ids for sample in range(per_passage)]
        self.keys = np.asarray(keys, dtype=np.uint64)

    def uniforms(self, rows, step: int):
        """A uniform draw in [0, 1) for each of ``rows`` (original row numbers) at decoding ``step``."""
        import torch

        rows_index = rows.cpu().numpy() if hasattr(rows, "cpu") else np.asarray(rows)
        with np.errstate(over="ignore"):
            z = self.keys[rows_index] + np.uint64(step + 1) * self._GOLDEN
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            z = z ^ (z >> np.uint64(31))
        values = (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
        return torch.from_numpy(values).to(device=rows.device if hasattr(rows, "device") else "cpu")


def sample_top_k_top_p(logits, top_k: int, top_p: float, temperature: float, uniforms=None):
    """One token per row: top-k, then nucleus (top-p) over those k, then a draw.

    Equivalent to transformers' TopK + TopP warpers followed by multinomial sampling, but
    touches the full vocabulary only once (``topk``). ``uniforms`` (one per row, from
    :class:`SampleStreams`) make the draw by inverse CDF; without them torch's RNG draws.
    """
    import torch

    if temperature != 1.0:
        logits = logits / temperature
    k = logits.shape[-1] if not top_k else min(top_k, logits.shape[-1])
    values, indices = torch.topk(logits, k, dim=-1)
    probs = torch.softmax(values, dim=-1)
    if top_p < 1.0:
        cumulative = probs.cumsum(dim=-1)
        # drop a token when the mass before it already reaches top_p (the first always stays)
        probs = probs.masked_fill(cumulative - probs >= top_p, 0.0)
    if uniforms is None:
        choice = torch.multinomial(probs, 1)
    else:
        cumulative = probs.double().cumsum(dim=-1)
        threshold = uniforms.to(cumulative.dtype).unsqueeze(-1) * cumulative[:, -1:]
        # the first token whose cumulative mass passes the draw; a zero-mass token never does
        choice = torch.searchsorted(cumulative, threshold, right=True).clamp(max=probs.shape[-1] - 1)
    return indices.gather(-1, choice).squeeze(-1)


def _newline_token_ids(tokenizer) -> list[int]:
    """Vocabulary entries that decode to something containing a newline."""
    ids = []
    for token, index in tokenizer.get_vocab().items():
        if "\n" in tokenizer.convert_tokens_to_string([token]):
            ids.append(index)
    return sorted(ids)[:64]


def _first_line(text: str) -> str:
    for line in text.strip().splitlines():
        line = line.strip().strip('"').strip()
        if line:
            return line
    return ""


# --------------------------------------------------------------------------- the resumable run


def meta_path_for(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name.removesuffix(".jsonl") + ".meta.json")


def _sampling_settings(config: GenerationConfig, family: str, dtype: str) -> dict:
    settings = {k: getattr(config, k) for k in SAMPLING_KEYS if hasattr(config, k)}
    settings["family"] = family
    settings["dtype"] = dtype
    if family == "seq2seq":
        settings.pop("prompt_style")  # no prompt: a T5 run's settings stay those of earlier versions
    return settings


def _batches(passages: Iterator[dict], batching: HalvingBatches, generator: QueryGenerator,
             window: int) -> Iterator[list[dict]]:
    """Length-sorted batches from windows of ``window`` batches: little padding, flat memory. Each batch is
    cut at ``batching.size`` as it stands then (it shrinks after an out-of-memory)."""
    buffer: list[dict] = []

    def flush() -> Iterator[list[dict]]:
        buffer.sort(key=generator.input_length, reverse=True)
        start = 0
        while start < len(buffer):
            size = batching.size
            yield buffer[start:start + size]
            start += size
        buffer.clear()

    for passage in passages:
        buffer.append(passage)
        if len(buffer) >= batching.size * window:
            yield from flush()
    yield from flush()


def run_paths(output: str | Path) -> tuple[Path, Path]:
    """Where an unfinished run writes: ``OUT.partial`` and its progress journal."""
    output = Path(output)
    partial = output.with_name(output.name + ".partial")
    return partial, partial.with_name(partial.name + ".progress.jsonl")


@dataclass
class _Progress:
    """What the journal of an unfinished run says: passages done, valid bytes, and every counter."""

    done: set[str]
    valid_bytes: int = 0
    pairs: int = 0
    queries_sampled: int = 0
    duplicates_dropped: int = 0
    filtered_out: int = 0
    passages_without_query: int = 0
    emptied_runaway: int = 0
    emptied_not_a_query: int = 0
    wall_seconds: float = 0.0
    last_check: str = ""  # the chained checksum of the last verified journal line (the next one continues it)
    entries_dropped: int = 0  # journal lines that did not verify, with every line after them: their batches redo

    def add(self, entry: dict) -> None:
        self.done.update(entry["ids"])
        self.valid_bytes = entry["bytes"]
        for key in ("pairs", "queries_sampled", "duplicates_dropped", "filtered_out", "passages_without_query",
                    "emptied_runaway", "emptied_not_a_query"):
            setattr(self, key, getattr(self, key) + entry.get(key, 0))
        self.wall_seconds += entry.get("seconds", 0.0)


def journal_check(entry: dict, previous: str) -> str:
    """A journal line's checksum, chained to the line before it: an edited, reordered or dropped line breaks it."""
    body = json.dumps({k: v for k, v in entry.items() if k != "check"}, sort_keys=True, ensure_ascii=False)
    return hashlib.blake2b((previous + body).encode("utf-8"), digest_size=8).hexdigest()


def _read_journal(journal: Path, partial: Path) -> tuple[dict | None, _Progress]:
    """The header (settings and input) and the summed progress of a journal, as far as it verifies.

    Every line carries a checksum chained to the one before, and every batch line the digest
    of the bytes it appended to the partial output. The first line that is not JSON, fails its
    checksum or vouches for bytes the partial does not hold ends what is believed: that line
    and all after it are dropped from the journal, and their batches are generated again, so a
    damaged journal costs time, never a doubled or lost pair. (A journal written before genq
    kept checksums is read as before, up to its first line that is not JSON.)
    """
    progress = _Progress(set())
    if not journal.exists():
        return None, progress
    repair_torn_tail(journal)
    lines = journal.read_bytes().splitlines(keepends=True)
    header, previous, verified, checked = None, "", 0, None
    data = open(partial, "rb") if partial.exists() else None  # noqa: SIM115 (closed below)
    try:
        for number, raw in enumerate(lines):
            try:
                entry = json.loads(raw)
            except ValueError:
                break
            if not isinstance(entry, dict):
                break
            checked = ("check" in entry) if checked is None else checked
            if checked:
                if entry.get("check") != journal_check(entry, previous):
                    break
                previous = entry["check"]
            if number == 0:
                header = entry if "settings" in entry else None
                if header is None:
                    return None, progress
            else:
                try:
                    ids, end = list(entry["ids"]), int(entry["bytes"])
                except (KeyError, TypeError, ValueError):
                    break
                if checked:
                    if data is None or end < progress.valid_bytes:
                        break
                    data.seek(progress.valid_bytes)
                    appended = data.read(end - progress.valid_bytes)
                    if len(appended) != end - progress.valid_bytes or \
                            hashlib.blake2b(appended, digest_size=8).hexdigest() != entry.get("data"):
                        break
                progress.add({**entry, "ids": ids, "bytes": end})
            verified = number + 1
    finally:
        if data is not None:
            data.close()
    progress.last_check = previous
    if verified < len(lines):
        progress.entries_dropped = len(lines) - verified
        logger.warning("%s: %d line(s) of the journal do not verify (edited or damaged): their batches are generated "
                       "again", journal, progress.entries_dropped)
        with atomic_write(journal, "wb", encoding=None) as handle:
            handle.write(b"".join(lines[:verified]))
    return header, progress


@one_writer("output_path", "pairs file")
def generate_pairs(
    passages_path: str | Path,
    output_path: str | Path,
    config: GenerationConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
    generator: QueryGenerator | None = None,
    limit: int | None = None,
    quality: QualityCheck | None = None,
) -> GenerationSummary:
    """Generate queries for every passage of ``passages_path`` and write pairs to ``output_path``.

    Safe to interrupt at any point and to rerun: pairs go to ``OUT.partial`` batch by batch,
    each batch then logged in ``OUT.partial.progress.jsonl`` (its passages, the valid byte
    count and the counters); a rerun cuts whatever the journal does not vouch for and goes
    on. Every passage is sampled from its own seed (run seed + passage id), so a resumed run
    writes exactly what an uninterrupted one would. ``OUT`` appears, or is replaced under
    ``overwrite``, only once complete. ``limit`` caps the passages read (a trial on a sample).
    ``quality``: measure the finished pairs on a sample and record it in the meta.
    """
    config = config or GenerationConfig()
    passages_path, output_path = Path(passages_path), Path(output_path)
    meta_path = meta_path_for(output_path)
    partial, journal = run_paths(output_path)
    refuse_same_path([passages_path], output_path)
    refuse_same_path([passages_path], meta_path)
    started = time.perf_counter()
    summary = GenerationSummary(str(output_path))

    run = identify_run(passages_path, config, generator, limit)
    config = run.config
    summary.passages_without_text = run.empty_passages
    total, source, settings = run.passages, run.source, run.settings
    previous = finished_output(output_path, run, overwrite)
    if previous is not None:
        summary.already_complete = True
        summary.passages = total
        summary.pairs_in_file = previous["counts"].get("pairs", 0)
        return summary
    judge = quality.load() if quality and quality.sample else None  # before the long part: a bad model shows now

    header, done = _read_journal(journal, partial)
    usable = header is not None and partial.exists() and partial.stat().st_size >= done.valid_bytes
    if usable and not overwrite:
        _refuse_other_run(partial, header["settings"], header["source"], settings, source, "is an interrupted run",
                          resume=True)
    if not usable or header["settings"] != settings or not _same_source(header["source"], source):
        # no usable journal, or one for other settings (only reached with --overwrite): both files are genq's own
        partial.unlink(missing_ok=True)
        journal.unlink(missing_ok=True)
        header, done = None, _Progress(set())
    if partial.exists():
        summary.torn_bytes_dropped = max(0, partial.stat().st_size - done.valid_bytes)
        with open(partial, "rb+") as handle:  # cut a batch written but not yet logged, and any torn line
            handle.truncate(done.valid_bytes)

    if generator is None:
        generator = QueryGenerator(config)
    elif hasattr(generator, "use_settings"):
        generator.use_settings(config)  # one loaded earlier (a budget's probe) samples with this run's settings
    summary.family, summary.device, summary.dtype = generator.family, generator.device, dtype_name(generator.dtype)
    summary.prompt_style = getattr(generator, "prompt_style", "")
    summary.passages = total
    summary.passages_skipped_as_done = len(done.done)
    if header is None:
        partial.parent.mkdir(parents=True, exist_ok=True)
        with JsonlAppender(journal) as log:
            first = {"settings": settings, "source": source, "genq_version": __version__}
            first["check"] = done.last_check = journal_check(first, "")
            log.write_batch([first])
    batching = HalvingBatches(config.batch_size or generator.auto_batch_size(), generator.device, "generation")
    summary.batch_size = batching.size
    logger.info("generating in batches of %d passages (%s)", batching.size, "--gen-batch-size" if config.batch_size
                else f"auto: by free {generator.device} memory" if str(generator.device).startswith("cuda")
                else f"auto: {generator.device}")
    todo = (p for p in _limited(iter_passage_file(passages_path), limit) if p["_id"] not in done.done)
    bar = tqdm(total=total, initial=len(done.done), desc="generating", unit=" passages", disable=not progress,
               file=sys.stderr, smoothing=0.1)
    loop_started = time.perf_counter()
    with JsonlAppender(partial) as appender, JsonlAppender(journal) as log:
        for batch_number, batch in enumerate(_batches(todo, batching, generator, window=32)):
            batch_started = time.perf_counter()
            emptied_before = dict(getattr(generator, "emptied", {}))
            # per-passage seeds: a batch split in halves after an out-of-memory samples exactly the same queries
            sampled = batching.run(lambda part: generator.sample(part, seed=config.seed), batch)
            records = []
            entry = {"ids": [p["_id"] for p in batch], "pairs": 0, "queries_sampled": 0, "duplicates_dropped": 0,
                     "filtered_out": 0, "passages_without_query": 0}
            for passage, queries in zip(batch, sampled):
                entry["queries_sampled"] += len(queries)
                kept, duplicates, filtered = clean_queries(queries, passage["text"], config)
                entry["duplicates_dropped"] += duplicates
                entry["filtered_out"] += filtered
                entry["passages_without_query"] += not kept
                records.extend({"query": query, "passage_id": passage["_id"], "passage": passage["text"],
                                "title": passage["title"], SCORE_FIELD: logprob} for query, logprob in kept)
            for reason, count in getattr(generator, "emptied", {}).items():
                emptied = entry[f"emptied_{reason}"] = count - emptied_before.get(reason, 0)
                setattr(summary, f"filtered_{reason}", getattr(summary, f"filtered_{reason}") + emptied)
            entry["pairs"] = appender.write_batch(records)
            entry["bytes"] = appender.position
            entry["data"] = appender.last_digest
            entry["seconds"] = round(time.perf_counter() - batch_started, 3)
            entry["check"] = journal_check(entry, done.last_check)
            log.write_batch([entry])  # only now is the batch done: a crash before this line redoes it
            done.last_check = entry["check"]
            done.add(entry)
            for key in ("queries_sampled", "duplicates_dropped", "filtered_out", "passages_without_query"):
                setattr(summary, key, getattr(summary, key) + entry[key])
            summary.pairs_written += entry["pairs"]
            summary.passages_generated += len(batch)
            bar.update(len(batch))
            seconds = time.perf_counter() - loop_started
            rate = summary.queries_sampled / max(seconds, 1e-9)
            bar.set_postfix(queries_per_s=f"{rate:.1f}" if rate >= 1 else f"{rate:.2f}", refresh=False)
            if batch_number == 0 and progress and total - len(done.done) > len(batch):
                rate = len(batch) / max(seconds, 1e-9)
                left = total - len(done.done)
                bar.write(f"first batch: {rate:.2f} passages/s, so about {_duration(left / rate)} for the "
                          f"{left:,} passages left (--limit N tries a sample first)", file=sys.stderr)
    bar.close()
    summary.batch_size = batching.size  # smaller than chosen if an out-of-memory halved it
    # the meta describes the finished file before it takes OUT's place: a kill between the two steps is
    # seen on the next run (OUT does not match the description) and the finished partial is renamed again
    counts = {"passages": total, "passages_done": len(done.done), "pairs": done.pairs,
              "queries_sampled": done.queries_sampled, "duplicates_dropped": done.duplicates_dropped,
              "filtered_out": done.filtered_out, "passages_without_query": done.passages_without_query}
    if generator.family == "causal":  # of filtered_out: samples that held no query at all
        counts.update(filtered_runaway=done.emptied_runaway, filtered_not_a_query=done.emptied_not_a_query)
    if judge is not None:
        summary.quality = check_quality(partial, passages_path, quality, judge)
    write_pairs_meta(meta_path, partial, run, config, counts, round(done.wall_seconds, 2),
                     {"batch_size": batching.size, "batch_size_setting": config.batch_size or "auto",
                      "out_of_memory_halvings": batching.halvings, "device": generator.device,
                      "dtype": dtype_name(generator.dtype)}, quality=summary.quality,
                     prompt_style=summary.prompt_style or None)
    os.replace(partial, output_path)
    journal.unlink(missing_ok=True)
    summary.pairs_in_file = done.pairs
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


@dataclass
class RunIdentity:
    """What makes two generation runs the same: the passages read and the sampling settings."""

    passages: int
    empty_passages: int
    source: dict
    settings: dict
    family: str
    config: GenerationConfig  # with the family's defaults filled in


def identify_run(passages_path: Path, config: GenerationConfig, generator: QueryGenerator | None = None,
                 limit: int | None = None) -> RunIdentity:
    """Count the passages (bad input fails here, before any model loads) and settle the settings."""
    empty_lines: list[int] = []
    total = sum(1 for _ in _limited(iter_passage_file(passages_path, empty_lines=empty_lines), limit))
    source = {"path": str(passages_path), "fingerprint": file_fingerprint(passages_path), "limit": limit}
    config.validate()
    if generator is not None:
        family, dtype = generator.family, generator.dtype
    else:
        family = generator_family(config)
        dtype = resolve_dtype(config.dtype, resolve_device(config.device))
    config = config.for_family(family)
    config.validate()
    return RunIdentity(total, len(empty_lines), source, _sampling_settings(config, family, dtype_name(dtype)), family,
                       config)


def finished_output(output_path: Path, run: RunIdentity, overwrite: bool) -> dict | None:
    """The meta of a finished output of this very run (nothing to do), or None; other outputs are refused."""
    meta_path = meta_path_for(output_path)
    previous = read_json(meta_path, "pairs metadata") if meta_path.exists() else None
    finished = is_described_file((previous or {}).get("output_file"), output_path)
    if output_path.exists() and not finished and not overwrite:
        raise GenqError(f"{output_path} already exists but no {meta_path.name} describes it, so genq did not write "
                        "it (or it was changed since)\n"
                        "  fix: pass --overwrite to replace it once the new pairs are complete, or choose another "
                        "output path")
    if not finished or overwrite:
        return None
    _refuse_other_run(output_path, previous["parameters"], previous.get("source", {}), run.settings, run.source,
                      "was generated")
    return previous


def write_pairs_meta(meta_path: Path, pairs_file: Path, run: RunIdentity, config: GenerationConfig, counts: dict,
                     wall_seconds: float, execution: dict, quality: QualityReport | None = None,
                     prompt_style: str | None = None) -> None:
    """``pairs.meta.json`` for the finished ``pairs_file`` (which then takes the output's name)."""
    causal = run.family == "causal"
    write_json_atomic(meta_path, {
        "genq_version": __version__,
        "passages_file": run.source["path"],
        "source": run.source,
        "generator": {"model": config.model, "gguf_file": config.gguf_file, "family": run.family,
                      "prompt_template": config.prompt_template if causal else None,
                      "prompt_style": (prompt_style or config.prompt_style) if causal else None},
        "parameters": run.settings,
        "family_defaults": FAMILY_DEFAULTS[run.family],
        "seeding": "per passage: blake2b(seed, passage id, sample number) drives each sampled token",
        "scores": "generator_logprob: mean log-probability of the query's tokens (its end included) under the "
                  "generator, before temperature and truncation",
        "quality": quality.to_dict() if quality else None,
        "execution": execution,
        "counts": counts,
        "wall_seconds": wall_seconds,
        "output_file": describe_file(pairs_file),
        "complete": True,
    })


def check_quality(pairs_file: Path, passages_path: Path, check: QualityCheck, encoder) -> QualityReport:
    """The quality report of a sample of ``pairs_file``: ``check.sample`` pairs drawn at random, ranked by
    ``encoder`` among their own passages and a random draw of the others (``check.corpus`` in all)."""
    from genq.quality import Reservoir, measure_quality
    from genq.retrieval import DenseCorpus

    started = time.perf_counter()
    pairs = Reservoir(check.sample).extend(pair for _, pair in iter_pairs(pairs_file))
    own_ids = {str(pair["passage_id"]) for pair in pairs.items}
    own: list[dict] = []

    def others() -> Iterator[dict]:
        for passage in iter_passage_file(passages_path):
            if passage["_id"] in own_ids:
                own.append(passage)
            else:
                yield passage

    drawn = Reservoir(max(check.corpus - len(own_ids), 0)).extend(others())
    report = measure_quality(pairs.items, DenseCorpus(own + drawn.items, encoder))
    report.sampled_from = pairs.seen if pairs.seen > len(pairs.items) else None
    report.seconds = round(time.perf_counter() - started, 2)
    return report


def _same_source(old: dict, new: dict) -> bool:
    """The same passages, wherever they now lie: a run directory that was moved resumes instead of starting over."""
    return old.get("fingerprint") == new["fingerprint"] and old.get("limit") == new["limit"]


def _refuse_other_run(path: Path, old_settings: dict, old_source: dict, settings: dict, source: dict, what: str,
                      resume: bool = False) -> None:
    """Refuse to mix settings or inputs in one pairs file, naming what differs."""
    changed = {k: (old_settings.get(k), v) for k, v in settings.items() if old_settings.get(k) != v}
    if old_source.get("limit") != source["limit"]:
        changed["limit"] = (old_source.get("limit"), source["limit"])
    if changed:
        details = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
        raise GenqError(f"{path} {what} with other settings ({details})\n"
                        f"  fix: rerun with the original settings{' to resume' if resume else ''}, pass --overwrite "
                        "to start over, or write to another output path")
    if old_source.get("fingerprint") != source["fingerprint"]:
        raise GenqError(f"{path} {what} from another version of the passages file "
                        f"({old_source.get('path')} has changed since, or another file was given)\n"
                        "  fix: pass --overwrite to generate again for the current passages, or write to another "
                        "output path")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _limited(items: Iterator[dict], limit: int | None) -> Iterator[dict]:
    for index, item in enumerate(items):
        if limit is not None and index >= limit:
            return
        yield item


def iter_pairs(path: str | Path, errors=None) -> Iterator[tuple[int, dict]]:
    """Stream a pairs file, checking each line is a pair every later stage can read.

    A query and a passage must be non-empty strings and negatives (if any) a list of
    strings or ``{"text": ...}`` objects: a number, or a string read as a list of characters,
    would otherwise train on garbage without a word.
    """
    for line, record in iter_jsonl(path, errors):
        if not isinstance(record.get("query"), str) or not isinstance(record.get("passage"), str):
            raise DataError(path, "pair needs string fields \"query\" and \"passage\"",
                            "pass a pairs file written by `genq generate` (one {\"query\", \"passage\", ...} per line)",
                            line)
        for name in ("query", "passage"):
            if not record[name].strip():
                raise DataError(path, f"the {name} is empty", f"drop this line or give it a {name}", line)
        negatives = record.get("negatives")
        if negatives is not None and (not isinstance(negatives, list) or not all(
                isinstance(n, str) or (isinstance(n, dict) and isinstance(n.get("text"), str)) for n in negatives)):
            raise DataError(path, f"\"negatives\" is a {type(negatives).__name__} of something other than "
                                  "passages" if isinstance(negatives, list) else
                            f"\"negatives\" is a {type(negatives).__name__}, not a list",
                            "write negatives as a list: [{\"passage_id\", \"title\", \"text\"}, ...] (or of strings)",
                            line)
        yield line, record
