"""Synthetic query generation: passages -> (query, passage) pairs.

Two generator families share one resumable writer:

* seq2seq query generators (GenQ/docT5query T5 models): the passage is the input, queries
  are sampled from the decoder with nucleus sampling;
* decoder-only LMs (InPars style): a few-shot prompt ends in an open query slot and the
  first line of the sampled continuation is the query.

Speed comes from what dominates on CPU and GPU alike: big length-sorted batches (little
padding), all ``num_return_sequences`` of a passage in one ``generate`` call, weights cast
to bf16 where the hardware does bf16 natively, and ``torch.inference_mode``.

Resume: pairs are appended one batch per ``write`` and ``pairs.meta.json`` records the
settings; a rerun skips every passage already in the file (after cutting a torn tail and
the last passage's lines, which may be partial), and refuses to mix settings.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from tqdm.auto import tqdm

from genq import __version__
from genq.corpus import iter_passage_file
from genq.hardware import dtype_name, resolve_device, resolve_dtype
from genq.io import (
    DataError,
    GenqError,
    JsonlAppender,
    describe_error,
    iter_jsonl,
    read_json,
    repair_torn_tail,
    write_json_atomic,
)
from genq.models import resolve_model

logger = logging.getLogger(__name__)

DEFAULT_GENERATOR = "BeIR/query-gen-msmarco-t5-base-v1"
BUILTIN_TEMPLATES = ("msmarco", "promptagator")
# Settings that change which pairs come out: a resume must use the same ones.
SAMPLING_KEYS = ("model", "gguf_file", "family", "queries_per_passage", "top_p", "top_k", "max_length",
                 "max_passage_tokens", "temperature", "seed", "prefix", "prompt_template", "include_title",
                 "min_query_words", "max_query_words", "drop_copies", "dtype")


@dataclass
class GenerationConfig:
    """Every knob of a generation run; the sampling ones are recorded in ``pairs.meta.json``."""

    model: str = DEFAULT_GENERATOR
    gguf_file: str | None = None
    queries_per_passage: int = 3
    top_p: float = 0.95
    top_k: int = 25
    max_length: int = 64
    max_passage_tokens: int = 350
    temperature: float = 1.0
    seed: int = 42
    prefix: str = ""
    prompt_template: str = "msmarco"
    include_title: bool = True
    min_query_words: int = 0
    max_query_words: int = 0
    drop_copies: bool = False
    batch_size: int = 16
    device: str | None = None
    dtype: str = "auto"
    family: str = "auto"

    def validate(self) -> None:
        if self.queries_per_passage < 1:
            raise GenqError("--queries-per-passage must be at least 1")
        if not 0 < self.top_p <= 1:
            raise GenqError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise GenqError(f"--top-k must be >= 0 (0 turns it off), got {self.top_k}")
        if self.temperature <= 0:
            raise GenqError(f"--temperature must be > 0, got {self.temperature}")
        if self.batch_size < 1 or self.max_length < 1 or self.max_passage_tokens < 8:
            raise GenqError("--batch-size, --max-length must be >= 1 and --max-passage-tokens >= 8")
        if self.max_query_words and self.max_query_words < self.min_query_words:
            raise GenqError("--max-query-words is smaller than --min-query-words")


@dataclass
class GenerationSummary:
    output: str
    passages: int = 0
    passages_skipped_as_done: int = 0
    passages_generated: int = 0
    queries_sampled: int = 0
    pairs_written: int = 0
    duplicates_dropped: int = 0
    filtered_out: int = 0
    passages_without_query: int = 0
    torn_bytes_dropped: int = 0
    seconds: float = 0.0
    already_complete: bool = False
    device: str = ""
    dtype: str = ""
    family: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


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


# --------------------------------------------------------------------------- query clean-up


_SPACES = re.compile(r"\s+")
_PUNCT_EDGES = re.compile(r"^[\W_]+|[\W_]+$")


def normalize_query(query: str) -> str:
    """The dedup key: lowercase, whitespace collapsed, surrounding punctuation stripped."""
    return _PUNCT_EDGES.sub("", _SPACES.sub(" ", query.lower()).strip())


def clean_queries(queries: list[str], passage: str, config: GenerationConfig) -> tuple[list[str], int, int]:
    """Dedup (case/space-insensitive) and filter one passage's queries; returns kept, duplicates, filtered."""
    kept: list[str] = []
    seen: set[str] = set()
    duplicates = filtered = 0
    passage_key = normalize_query(passage) if config.drop_copies else ""
    for query in queries:
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
        kept.append(query)
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
        self.config = config
        model_ref, gguf = _split_gguf(resolve_model(config.model, what="generator"), config.gguf_file)
        self.family = config.family if config.family != "auto" else detect_family(model_ref, gguf)
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        if self.dtype == torch.float16 and self.family == "seq2seq":
            logger.warning("T5-style models overflow to NaN in float16; consider --dtype bfloat16 or float32")
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        load_kwargs = {"gguf_file": gguf} if gguf else {}
        try:
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
        if self.family == "causal":
            self.tokenizer.padding_side = "left"
            self.template = load_prompt_template(config.prompt_template)
            eos = self.model.generation_config.eos_token_id
            eos = [eos] if isinstance(eos, int) else list(eos or [])
            if self.tokenizer.eos_token_id is not None:
                eos.append(self.tokenizer.eos_token_id)
            # only the first line of a continuation is kept, so a newline ends a sample
            # (once it has some text: small models often open with a blank line)
            self.eos_ids = sorted(set(eos))
            self.newline_ids = _newline_token_ids(self.tokenizer)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token

    def _inputs(self, passages: list[dict]) -> list[str]:
        texts = []
        for passage in passages:
            title = passage.get("title") or ""
            text = passage["text"]
            if self.family == "causal":
                # the prompt's fixed part must survive truncation: cut the passage, not the template
                texts.append(render_prompt(self.template, self._truncate(text), title))
            else:
                body = f"{title} {text}" if (self.config.include_title and title) else text
                texts.append(self.config.prefix + body)
        return texts

    def generate(self, passages: list[dict], seed: int) -> list[list[str]]:
        """Sample ``queries_per_passage`` raw queries for each passage, in one ``generate`` call."""
        import torch

        config = self.config
        texts = self._inputs(passages)
        if self.family == "causal":
            encoded = self.tokenizer(texts, return_tensors="pt", padding=True)
        else:
            encoded = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                                     max_length=config.max_passage_tokens)
        encoded = {k: v.to(self.device) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
        torch.manual_seed(seed)
        with torch.inference_mode():
            if self.family == "seq2seq":
                token_rows = self._sample_seq2seq(encoded)
                decoded = self.tokenizer.batch_decode(token_rows, skip_special_tokens=True)
            else:
                token_rows = self._sample_causal(encoded)
                decoded = [_first_line(t) for t in self.tokenizer.batch_decode(token_rows, skip_special_tokens=True)]
        n = config.queries_per_passage
        return [decoded[i * n:(i + 1) * n] for i in range(len(passages))]

    def _sample_seq2seq(self, encoded: dict) -> list[list[int]]:
        """Nucleus sampling with a lean decoding loop instead of ``generate``.

        Why not ``generate``: on CPU its per-step overhead dominates small-model decoding.
        Here top-k is applied first and top-p only over those k logits (no full-vocabulary
        sort or multinomial), and sequences that produced EOS leave the batch at once
        (their rows are dropped from the KV cache), so the batch does not keep paying for
        finished queries while the longest one completes.
        """
        import torch
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        config = self.config
        model = self.model
        n = config.queries_per_passage
        encoder_outputs = model.get_encoder()(input_ids=encoded["input_ids"],
                                              attention_mask=encoded["attention_mask"], return_dict=True)
        hidden = encoder_outputs.last_hidden_state.repeat_interleave(n, dim=0)
        attention_mask = encoded["attention_mask"].repeat_interleave(n, dim=0)
        rows = hidden.shape[0]
        generation = model.generation_config
        start = generation.decoder_start_token_id
        if start is None:
            start = model.config.decoder_start_token_id if model.config.decoder_start_token_id is not None else \
                self.tokenizer.pad_token_id
        eos = generation.eos_token_id if generation.eos_token_id is not None else self.tokenizer.eos_token_id
        eos_ids = torch.tensor(eos if isinstance(eos, list) else [eos], device=self.device)
        forced_bos = getattr(generation, "forced_bos_token_id", None)
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        current = torch.full((rows, 1), start, dtype=torch.long, device=self.device)
        alive = torch.arange(rows, device=self.device)  # original row of each live sequence
        outputs: list[list[int]] = [[] for _ in range(rows)]
        for step in range(config.max_length - 1):
            logits = model(encoder_outputs=(hidden,), attention_mask=attention_mask, decoder_input_ids=current,
                           past_key_values=cache, use_cache=True, return_dict=True).logits[:, -1, :]
            if step == 0 and forced_bos is not None:
                next_tokens = torch.full((len(alive),), forced_bos, dtype=torch.long, device=self.device)
            else:
                next_tokens = sample_top_k_top_p(logits.float(), config.top_k, config.top_p, config.temperature)
            finished = torch.isin(next_tokens, eos_ids)
            keep = _record_step(outputs, alive, next_tokens, finished)
            if keep is not None and len(keep) == 0:
                break
            if keep is not None:
                alive, hidden, attention_mask = alive[keep], hidden[keep], attention_mask[keep]
                next_tokens = next_tokens[keep]
                cache.reorder_cache(keep)
            current = next_tokens.unsqueeze(1)
        return outputs

    def _sample_causal(self, encoded: dict) -> list[list[int]]:
        """Prompted sampling for decoder-only models, leaner than ``generate``.

        The prompt is run once per passage and its KV cache copied for each of the
        ``queries_per_passage`` samples (``generate`` would run the prompt that many times),
        and a sequence leaves the batch as soon as it ends its line: only the first line is
        kept, and most queries end long before ``max_length``.
        """
        import torch
        from transformers.cache_utils import DynamicCache

        config = self.config
        model = self.model
        n = config.queries_per_passage
        input_ids, attention_mask = encoded["input_ids"], encoded["attention_mask"]
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                       past_key_values=cache, use_cache=True, return_dict=True).logits[:, -1, :]
        logits = logits.repeat_interleave(n, dim=0)
        cache.batch_repeat_interleave(n)
        attention_mask = attention_mask.repeat_interleave(n, dim=0)
        next_position = positions[:, -1:].repeat_interleave(n, dim=0) + 1
        eos = torch.tensor(self.eos_ids, device=self.device)
        newline = torch.tensor(self.newline_ids, device=self.device)
        alive = torch.arange(logits.shape[0], device=self.device)
        has_text = torch.zeros(len(alive), dtype=torch.bool, device=self.device)
        outputs: list[list[int]] = [[] for _ in range(logits.shape[0])]
        for _ in range(config.max_length):
            tokens = sample_top_k_top_p(logits.float(), config.top_k, config.top_p, config.temperature)
            is_newline = torch.isin(tokens, newline)
            finished = torch.isin(tokens, eos) | (is_newline & has_text)
            has_text = has_text | ~is_newline
            keep = _record_step(outputs, alive, tokens, finished)
            if keep is not None and len(keep) == 0:
                break
            if keep is not None:
                alive, tokens, attention_mask, next_position, has_text = (
                    alive[keep], tokens[keep], attention_mask[keep], next_position[keep], has_text[keep])
                cache.batch_select_indices(keep)
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(alive), 1))], dim=1)
            logits = model(input_ids=tokens.unsqueeze(1), attention_mask=attention_mask, position_ids=next_position,
                           past_key_values=cache, use_cache=True, return_dict=True).logits[:, -1, :]
            next_position = next_position + 1
        return outputs

    def _truncate(self, text: str) -> str:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.config.max_passage_tokens:
            return text
        return self.tokenizer.decode(ids[: self.config.max_passage_tokens], skip_special_tokens=True)

    def input_length(self, passage: dict) -> int:
        """A cheap length proxy for sorting (characters; tokenizing twice would cost more than it saves)."""
        return len(passage["text"]) + len(passage.get("title") or "")


def _record_step(outputs: list[list[int]], alive, tokens, finished):
    """Append each live row's new token unless it ended the row; return the rows to keep.

    ``None`` means every row goes on (nothing to drop from the batch); an empty tensor
    means every row has finished.
    """
    for row, token, done in zip(alive.tolist(), tokens.tolist(), finished.tolist()):
        if not done:
            outputs[row].append(token)
    if not bool(finished.any()):
        return None
    return (~finished).nonzero(as_tuple=True)[0]


def sample_top_k_top_p(logits, top_k: int, top_p: float, temperature: float):
    """One token per row: top-k, then nucleus (top-p) over those k, then a draw.

    Equivalent to transformers' TopK + TopP warpers followed by multinomial sampling, but
    touches the full vocabulary only once (``topk``).
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
    choice = torch.multinomial(probs, 1)
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
    return settings


def _drop_last_passage(path: Path) -> set[str]:
    """Cut the lines of the last passage (possibly partial) and return the ids of the passages kept."""
    done: list[str] = []
    position = 0
    last_id = None
    last_start = 0
    with open(path, "rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                passage_id = str(json.loads(raw)["passage_id"])
            except (ValueError, KeyError, TypeError):
                raise DataError(path, "line is not a genq pair (needs \"passage_id\")",
                                "pass --overwrite to start this file over, or choose another output", line_number
                                ) from None
            if passage_id != last_id:
                last_id, last_start = passage_id, position
                done.append(passage_id)
            position += len(raw)
    if last_id is not None:
        with open(path, "rb+") as handle:
            handle.truncate(last_start)
        done.pop()
    return set(done)


def _batches(passages: Iterator[dict], batch_size: int, generator: QueryGenerator, window: int) -> Iterator[list[dict]]:
    """Length-sorted batches from windows of ``window`` batches: little padding, flat memory."""
    buffer: list[dict] = []

    def flush() -> Iterator[list[dict]]:
        buffer.sort(key=generator.input_length, reverse=True)
        for start in range(0, len(buffer), batch_size):
            yield buffer[start:start + batch_size]
        buffer.clear()

    for passage in passages:
        buffer.append(passage)
        if len(buffer) >= batch_size * window:
            yield from flush()
    yield from flush()


def generate_pairs(
    passages_path: str | Path,
    output_path: str | Path,
    config: GenerationConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
    generator: QueryGenerator | None = None,
    limit: int | None = None,
) -> GenerationSummary:
    """Generate queries for every passage of ``passages_path`` and append pairs to ``output_path``.

    Safe to interrupt at any point and to rerun: see the module docstring. ``limit`` caps
    the number of passages read (for trials on a sample).
    """
    config = config or GenerationConfig()
    passages_path, output_path = Path(passages_path), Path(output_path)
    meta_path = meta_path_for(output_path)
    started = time.perf_counter()
    summary = GenerationSummary(str(output_path))

    # Count passages first (cheap, streaming) so the bar has an ETA and bad input fails early.
    total = sum(1 for _ in _limited(iter_passage_file(passages_path), limit))

    if overwrite:
        config.validate()  # a bad setting is refused before the old pairs are deleted
        if generator is None:
            resolve_model(config.model, what="generator")
        for path in (output_path, meta_path):
            path.unlink(missing_ok=True)
    previous = read_json(meta_path, "pairs metadata") if meta_path.exists() else None
    if output_path.exists() and output_path.stat().st_size > 0 and previous is None:
        raise GenqError(f"{output_path} already exists but has no {meta_path.name}, so its settings are unknown\n"
                        "  fix: pass --overwrite to start over, or choose another output path")

    # the settings are compared before the generator loads (that can take a minute): a refusal comes at once
    if generator is not None:
        family, dtype = generator.family, generator.dtype
    else:
        config.validate()
        family = config.family if config.family != "auto" else detect_family(
            *_split_gguf(resolve_model(config.model, what="generator"), config.gguf_file))
        dtype = resolve_dtype(config.dtype, resolve_device(config.device))
    settings = _sampling_settings(config, family, dtype_name(dtype))
    if previous is not None:
        changed = {k: (previous["parameters"].get(k), v) for k, v in settings.items()
                   if previous["parameters"].get(k) != v}
        if changed:
            details = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
            raise GenqError(f"{output_path} was generated with other settings ({details})\n"
                            "  fix: rerun with the original settings to resume, pass --overwrite to start over, "
                            "or write to another output path")
        if previous.get("complete") and previous.get("counts", {}).get("passages") == total:
            summary.already_complete = True
            summary.passages = total
            summary.pairs_written = previous["counts"].get("pairs", 0)
            return summary

    generator = generator or QueryGenerator(config)
    summary.family, summary.device, summary.dtype = generator.family, generator.device, dtype_name(generator.dtype)
    counts = dict(previous.get("counts", {})) if previous else {}
    done: set[str] = set()
    if output_path.exists():
        summary.torn_bytes_dropped = repair_torn_tail(output_path)
        done = _drop_last_passage(output_path)
    elapsed_before = float(previous.get("wall_seconds", 0.0)) if previous else 0.0

    def write_meta(complete: bool) -> None:
        write_json_atomic(meta_path, {
            "genq_version": __version__,
            "passages_file": str(passages_path),
            "generator": {"model": config.model, "gguf_file": config.gguf_file, "family": generator.family,
                          "prompt_template": config.prompt_template if generator.family == "causal" else None},
            "parameters": settings,
            "execution": {"batch_size": config.batch_size, "device": generator.device,
                          "dtype": dtype_name(generator.dtype)},
            "counts": {"passages": total, "passages_done": len(done), "pairs": pairs_in_file,
                       "queries_sampled": counts.get("queries_sampled", 0) + summary.queries_sampled,
                       "duplicates_dropped": counts.get("duplicates_dropped", 0) + summary.duplicates_dropped,
                       "filtered_out": counts.get("filtered_out", 0) + summary.filtered_out},
            "wall_seconds": round(elapsed_before + time.perf_counter() - started, 2),
            "complete": complete,
        })

    pairs_in_file = _count_lines(output_path)
    write_meta(complete=False)
    summary.passages = total
    summary.passages_skipped_as_done = len(done)
    todo = (p for p in _limited(iter_passage_file(passages_path), limit) if p["_id"] not in done)
    bar = tqdm(total=total, initial=len(done), desc="generating", unit=" passages", disable=not progress,
               file=sys.stderr, smoothing=0.1)
    last_meta = loop_started = time.perf_counter()
    with JsonlAppender(output_path) as appender:
        for batch_number, batch in enumerate(_batches(todo, config.batch_size, generator, window=32)):
            sampled = generator.generate(batch, seed=config.seed + batch_number)
            records = []
            for passage, queries in zip(batch, sampled):
                summary.queries_sampled += len(queries)
                kept, duplicates, filtered = clean_queries(queries, passage["text"], config)
                summary.duplicates_dropped += duplicates
                summary.filtered_out += filtered
                if not kept:
                    summary.passages_without_query += 1
                records.extend({"query": q, "passage_id": passage["_id"], "passage": passage["text"],
                                "title": passage["title"]} for q in kept)
            written = appender.write_batch(records)
            pairs_in_file += written
            summary.pairs_written += written
            summary.passages_generated += len(batch)
            done.update(p["_id"] for p in batch)
            bar.update(len(batch))
            seconds = time.perf_counter() - started
            bar.set_postfix(queries_per_s=f"{summary.queries_sampled / max(seconds, 1e-9):.1f}", refresh=False)
            if batch_number == 0 and progress and total - len(done) > len(batch):
                rate = len(batch) / max(time.perf_counter() - loop_started, 1e-9)
                left = total - len(done)
                bar.write(f"first batch: {rate:.2f} passages/s, so about {_duration(left / rate)} for the "
                          f"{left:,} passages left (--limit N tries a sample first)", file=sys.stderr)
            if time.perf_counter() - last_meta > 30:
                write_meta(complete=False)
                last_meta = time.perf_counter()
    bar.close()
    write_meta(complete=True)
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


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


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


def iter_pairs(path: str | Path, errors=None) -> Iterator[tuple[int, dict]]:
    """Stream a pairs file, checking each line has a query and a passage."""
    for line, record in iter_jsonl(path, errors):
        if not isinstance(record.get("query"), str) or not isinstance(record.get("passage"), str):
            raise DataError(path, "pair needs string fields \"query\" and \"passage\"",
                            "pass a pairs file written by `genq generate` (one {\"query\", \"passage\", ...} per line)",
                            line)
        yield line, record
