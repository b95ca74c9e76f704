"""The torch backend: transformers models sampled by genq's own decoding loops (any device torch runs on)."""

from __future__ import annotations

import logging
from pathlib import Path

from genq.batch_sizing import auto_generation_batch, generation_bytes_per_passage
from genq.generation.backend import PromptedGenerator
from genq.generation.kv_cache import cache_argument, growing_cache
from genq.generation.sampling import Samples, SampleStreams, sample_top_k_top_p, token_logprobs
from genq.generation.settings import GenerationConfig
from genq.hardware import dtype_name, resolve_device, resolve_dtype
from genq.io import GenqError, describe_error

logger = logging.getLogger(__name__)


class QueryGenerator(PromptedGenerator):
    """The torch backend: loads a generator once and samples queries for batches of passages in lean decoding loops."""

    backend = "torch"

    def __init__(self, config: GenerationConfig, backend_reason: str = "--backend torch"):
        import torch

        model_ref, gguf = self._settle(config, backend_reason)
        config = self.config
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self.dtype_label = dtype_name(self.dtype)
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
        self._prepare_prompt(self.model.generation_config.eos_token_id)
        self._prefix = False  # decoder-only: the template's shared KV cache, computed at the first batch

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

    def _sample_seq2seq(self, encoded: dict, streams: SampleStreams) -> Samples:
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
        samples = Samples(rows)
        for step in range(config.max_length - 1):
            if step == 0 and forced_bos is not None:
                next_tokens = torch.full((len(alive),), forced_bos, dtype=torch.long, device=self.device)
                step_logprobs = None  # forced, not sampled: no part of the query's score
            else:
                next_tokens = sample_top_k_top_p(logits.float(), config.top_k, config.top_p, config.temperature,
                                                 uniforms=streams.uniforms(alive, step))
                step_logprobs = token_logprobs(logits, next_tokens)
            finished = torch.isin(next_tokens, eos_ids)
            keep = samples.record(alive, next_tokens, step_logprobs, finished)
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

        A batch uses the cache only if every prompt really starts with these ids, so the result
        is the same as running each whole prompt.
        """
        ids = self._shared_prompt_ids()
        if ids is None:
            return None
        import torch

        cache = growing_cache()
        with torch.inference_mode():
            self.model(input_ids=torch.tensor([ids], device=self.device), **{cache_argument(self.model): cache},
                       use_cache=True, logits_to_keep=1)
        return ids, cache

    def _left_padded(self, prompts: list[list[int]], tails: list[list[int]], room: int = 0):
        """Decoder-only rows (each prompt's ids, then its tail) left-padded into one batch, as tensors with their
        attention mask and positions, and a KV cache that already holds the few-shot prefix every prompt shares
        (computed once per generator; none when a prompt does not start with it). ``room``: positions to come."""
        import torch

        if self._prefix is False:
            self._prefix = self._prompt_prefix()
        prefix_ids, prefix_cache = self._prefix if self._prefix else ([], None)
        shared = len(prefix_ids)
        if prefix_cache is None or any(row[:shared] != prefix_ids for row in prompts):
            shared, prefix_cache = 0, None
        rows = [prompt[shared:] + tail for prompt, tail in zip(prompts, tails)]
        width = max(map(len, rows))
        pad = self.tokenizer.pad_token_id or 0
        input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=self.device)
        attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device)
        positions = (shared + attention_mask.cumsum(-1) - 1).clamp(min=shared)
        if prefix_cache is None:
            return input_ids, attention_mask, positions, growing_cache()
        cache = growing_cache(prefix_cache, len(rows), extra=width + room)
        attention_mask = torch.cat([attention_mask.new_ones((len(rows), shared)), attention_mask], dim=1)
        return input_ids, attention_mask, positions, cache

    def _sample_causal(self, texts: list[str], streams: SampleStreams) -> Samples:
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
        input_ids, attention_mask, positions, cache = self._left_padded(self._tokenize(texts), [[]] * len(texts),
                                                                        room=config.max_length)
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
        samples = Samples(logits.shape[0])
        for step in range(config.max_length):
            tokens = sample_top_k_top_p(logits.float(), config.top_k, config.top_p, config.temperature,
                                        uniforms=streams.uniforms(alive, step))
            is_newline = torch.isin(tokens, newline)
            finished = torch.isin(tokens, eos) | (is_newline & has_text)
            has_text = has_text | ~is_newline
            keep = samples.record(alive, tokens, token_logprobs(logits, tokens), finished)
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

    def score_queries(self, passages: list[dict], queries: list[str], batch_size: int = 16) -> list[float]:
        """Mean log-probability of each query given its passage, the query's tokens and its end teacher-forced.

        The passage is read exactly as :meth:`sample` reads it (the same encoder input, or the
        same few-shot prompt and chat rendering), so this is the number a sampled query gets as
        its ``generator_logprob``, computed for any query: the query-likelihood (UPR) reranker's
        score. Rows are sorted by length and batched; the few-shot part of a decoder-only prompt
        is run once and its KV cache shared, as in sampling.
        """
        import torch

        if len(passages) != len(queries):
            raise ValueError(f"{len(passages)} passages for {len(queries)} queries")
        order = sorted(range(len(queries)), key=lambda i: self.input_length(passages[i]) + len(queries[i]))
        scores = [0.0] * len(queries)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start:start + batch_size]
                batch = ([passages[i] for i in rows], [queries[i] for i in rows])
                values = self._score_seq2seq(*batch) if self.family == "seq2seq" else self._score_causal(*batch)
                for row, value in zip(rows, values):
                    scores[row] = value
        return scores

    def _seq2seq_end_id(self) -> int | list[int] | None:
        return self.model.generation_config.eos_token_id

    def _score_seq2seq(self, passages: list[dict], queries: list[str]) -> list[float]:
        import torch

        encoded = self.tokenizer(self._inputs(passages), return_tensors="pt", padding=True, truncation=True,
                                 max_length=self.config.max_passage_tokens)
        targets = self._query_targets(queries)
        width = max(map(len, targets))
        labels = torch.tensor([row + [-100] * (width - len(row)) for row in targets], device=self.device)
        logits = self.model(input_ids=encoded["input_ids"].to(self.device),
                            attention_mask=encoded["attention_mask"].to(self.device), labels=labels,
                            return_dict=True).logits
        return _mean_target_logprobs(logits, labels)

    def _score_causal(self, passages: list[dict], queries: list[str]) -> list[float]:
        import torch

        prompts = self._inputs(passages)
        prompt_ids = self._tokenize(prompts)
        lead = "" if self.prompt_style == "chat" or prompts[0][-1:].isspace() else " "
        targets = self._query_targets(queries, lead)
        input_ids, attention_mask, positions, cache = self._left_padded(prompt_ids, targets)
        # rows are left-padded, so every query ends at the last position: the logits of the last positions are all
        # that is read (the one before a query's first token predicts it)
        keep = max(map(len, targets)) + 1
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                            **{cache_argument(self.model): cache}, use_cache=True, logits_to_keep=keep,
                            return_dict=True).logits[:, :-1]
        labels = torch.tensor([[-100] * (keep - 1 - len(t)) + t for t in targets], device=self.device)
        return _mean_target_logprobs(logits, labels)

    def auto_batch_size(self) -> int:
        """Passages per sampling call when none is set: by the device's free memory and this model's sizes."""
        import torch

        template_tokens = 0 if self.family == "seq2seq" else 160  # the few-shot prompt around each passage
        per_passage = generation_bytes_per_passage(
            self.model.config, self.family, self.config.queries_per_passage,
            self.config.max_passage_tokens + template_tokens, self.config.max_length,
            torch.tensor([], dtype=self.dtype).element_size())
        return auto_generation_batch(self.device, per_passage)


def _mean_target_logprobs(logits, labels) -> list[float]:
    """Per row, the mean log-probability of the labelled positions (-100: not a target)."""
    import torch

    mask = labels != -100
    log_probs = torch.log_softmax(logits.float(), dim=-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    totals = (log_probs * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    return [round(float(value), 6) for value in totals]
