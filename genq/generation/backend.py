"""What every generation backend shares.

A backend loads a generator once and turns batches of passages into queries:
``sample(passages, seed) -> [[(query, generator_logprob), ...] per passage]``. The resumable
run (:mod:`genq.generation.run`), the Ray actors (:mod:`genq.distributed`) and ``genq adapt``
call only that and the few attributes of :class:`QueryBackend`. The backends share
:class:`PromptedGenerator`: the family's settings, the passage window, the decoder-only
prompt (few-shot template, chat rendering, stop tokens) and the reading of a decoder-only
sample, so torch and CTranslate2 see the same inputs and keep the same queries.

Which backend a run uses is :mod:`genq.generation.load`'s choice.
"""

from __future__ import annotations

import logging
from typing import Protocol

from genq.corpus import clip_for_model
from genq.generation.family import detect_family, split_gguf
from genq.generation.prompts import (
    chat_prompt,
    few_shot_parts,
    newline_token_ids,
    normalize_query,
    query_in_sample,
    render_prompt,
)
from genq.generation.settings import GenerationConfig
from genq.generation.templates import load_prompt_template
from genq.io import GenqError
from genq.models import resolve_model

logger = logging.getLogger(__name__)


class QueryBackend(Protocol):
    """What a run needs of a loaded generator."""

    backend: str  # "torch" or "ctranslate2"
    family: str  # "seq2seq" or "causal"
    device: str
    dtype_label: str  # the precision it computes in: "bfloat16", "int8", ...
    prompt_style: str
    emptied: dict[str, int]  # decoder-only samples that held no query, by reason
    config: GenerationConfig

    def sample(self, passages: list[dict], seed: int) -> list[list[tuple[str, float]]]: ...

    def use_settings(self, config: GenerationConfig) -> None: ...

    def auto_batch_size(self) -> int: ...

    def input_length(self, passage: dict) -> int: ...


def device_kind(device: str | None) -> str:
    """"cpu", "cuda" or another torch device name, without importing torch when the answer is plain."""
    if device and device != "auto":
        return device.split(":")[0]
    from genq.hardware import resolve_device

    return resolve_device(device)


SCORED_QUERY_TOKENS = 64  # a query scored (not sampled) is read up to this many tokens, or max_length if longer


class PromptedGenerator:
    """The part of a generator that is not the model: settings, inputs, the decoder-only prompt and its reading.

    A subclass loads ``self.tokenizer`` (and its model), then calls :meth:`_settle` and
    :meth:`_prepare_prompt` with the model's end tokens.
    """

    backend = ""
    backend_reason = ""
    prompt_style = "plain"

    def _settle(self, config: GenerationConfig, backend_reason: str) -> tuple[str, str | None]:
        """Validate ``config``, learn the family, fill in its defaults; returns the model reference and GGUF name."""
        self.backend_reason = backend_reason
        config.validate()
        model_ref, gguf = split_gguf(resolve_model(config.model, what="generator"), config.gguf_file)
        self.family = config.family if config.family != "auto" else detect_family(model_ref, gguf)
        self.config = config = config.for_family(self.family)
        config.validate()
        # decoder-only samples emptied before clean-up, by reason (part of the run's filtered_out count)
        self.emptied = {"runaway": 0, "not_a_query": 0}
        return model_ref, gguf

    def _prepare_prompt(self, model_eos: int | list[int] | None) -> None:
        """The decoder-only prompt (template, chat rendering) and the tokens that end a sample."""
        config = self.config
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
            eos = [model_eos] if isinstance(model_eos, int) else list(model_eos or [])
            if self.tokenizer.eos_token_id is not None:
                eos.append(self.tokenizer.eos_token_id)
            # only the first line of a continuation is kept, so a newline ends a sample
            # (once it has some text: small models often open with a blank line)
            self.eos_ids = sorted(set(eos))
            self.newline_ids = newline_token_ids(self.tokenizer)
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

    def _truncate(self, text: str) -> str:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.config.max_passage_tokens:
            return text
        return self.tokenizer.decode(ids[: self.config.max_passage_tokens], skip_special_tokens=True)

    def _tokenize(self, texts):
        # a chat-formatted prompt already holds its special tokens (a BOS among them, where the format has one)
        return self.tokenizer(texts, add_special_tokens=self.prompt_style != "chat")["input_ids"]

    def _shared_prompt_ids(self) -> list[int] | None:
        """The token ids every decoder-only prompt starts with (the template's few-shot part), or None if short.

        Those the rendered template shares for two unlike probe passages, less the last one (it
        may merge with a passage's first characters). A backend runs them once and reuses their
        state (torch: a KV cache; CTranslate2: its static prompt).
        """
        probes = [self._tokenize(render_prompt(self.template, text, "")) for text in ("Zebra 1907 (sic).", "the")]
        shared = 0
        while shared < min(map(len, probes)) and probes[0][shared] == probes[1][shared]:
            shared += 1
        ids = probes[0][:max(shared - 1, 0)]
        return ids if len(ids) >= 16 else None  # a template with a short fixed part: not worth reusing

    def _query_in(self, text: str, ended: bool) -> str:
        return query_in_sample(text, ended, self.example_queries, self.emptied)

    def generate(self, passages: list[dict], seed: int) -> list[list[str]]:
        """Sample ``queries_per_passage`` queries for each passage, without their scores."""
        return [[query for query, _ in queries] for queries in self.sample(passages, seed)]

    def sample(self, passages: list[dict], seed: int) -> list[list[tuple[str, float]]]:
        raise NotImplementedError

    def use_settings(self, config: GenerationConfig) -> None:
        """Sample with ``config``'s settings from now on (a run may size queries per passage after the model
        loaded); the model, its file and precision must be the ones loaded."""
        wanted = config.for_family(self.family)
        for key in ("model", "gguf_file", "dtype"):
            if getattr(wanted, key) != getattr(self.config, key):
                raise GenqError(f"the loaded generator has {key}={getattr(self.config, key)!r}, the run "
                                f"{getattr(wanted, key)!r}")
        self.config = wanted

    def training_rows(self, passages: list[dict], queries: list[str]) -> list[tuple[list[int], list[int]]]:
        """(input ids, labels) per (passage, query): what fine-tuning this generator learns from.

        Built by the same code that scores a query (:meth:`score_queries`), so the tuned model
        learns exactly the number sampling and the likelihood reranker read: the passage as
        sampling reads it (decoder-only: the whole prompt, chat rendering included), then the
        query and the token that ends it. Labels are -100 outside the query and its end, so
        the loss is the query's alone.
        """
        if len(passages) != len(queries):
            raise ValueError(f"{len(passages)} passages for {len(queries)} queries")
        if self.family == "seq2seq":
            inputs = self.tokenizer(self._inputs(passages), truncation=True,
                                    max_length=self.config.max_passage_tokens)["input_ids"]
            return list(zip(inputs, self._query_targets(queries)))
        prompts = self._inputs(passages)
        lead = "" if self.prompt_style == "chat" or prompts[0][-1:].isspace() else " "
        return [(prompt + target, [-100] * len(prompt) + target)
                for prompt, target in zip(self._tokenize(prompts), self._query_targets(queries, lead))]

    def _query_targets(self, queries: list[str], lead: str = "") -> list[list[int]]:
        """Each query's token ids followed by the token that ends it (what sampling stops at)."""
        end = self._query_end_id()
        limit = max(self.config.max_length, SCORED_QUERY_TOKENS)
        return [self.tokenizer(lead + query.strip(), add_special_tokens=False)["input_ids"][:limit] + [end]
                for query in queries]

    def _query_end_id(self) -> int:
        """seq2seq: the end-of-sequence token; chat: the token that closes the assistant's turn; plain: newline."""
        if getattr(self, "_end_id", None) is not None:
            return self._end_id
        tokenizer = self.tokenizer
        if self.family == "seq2seq":
            eos = self._seq2seq_end_id()
            eos = eos[0] if isinstance(eos, list) else eos
            end = eos if eos is not None else tokenizer.eos_token_id
        elif self.prompt_style == "chat":
            turn = tokenizer.apply_chat_template([{"role": "user", "content": "a"},
                                                  {"role": "assistant", "content": "QQQ"}], tokenize=False)
            closing = tokenizer(turn.split("QQQ", 1)[1], add_special_tokens=False)["input_ids"]
            end = closing[0] if closing else tokenizer.eos_token_id
        else:  # a plain continuation ends its line (or, in a vocabulary without a newline, at the end token)
            newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
            end = newline[-1] if newline else (self.eos_ids[0] if self.eos_ids else tokenizer.eos_token_id)
        if end is None:
            raise GenqError(f"the generator {self.config.model!r} names no end token; cannot score queries with it")
        self._end_id = int(end)
        return self._end_id

    def _seq2seq_end_id(self) -> int | list[int] | None:
        """The seq2seq model's end-of-sequence id(s), from its generation config (the backend knows where)."""
        raise NotImplementedError

    def input_length(self, passage: dict) -> int:
        """A cheap length proxy for sorting (characters; tokenizing twice would cost more than it saves)."""
        return len(passage["text"]) + len(passage.get("title") or "")
