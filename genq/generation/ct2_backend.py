"""The CTranslate2 backend: the generator converted once (int8 on a CPU) and sampled by CTranslate2's C++ loop.

On this project's 2-core CPU a T5-base-shaped model sampled 4.0x faster than the
sentence-transformers example loop in int8, against 3.0x for genq's torch loop in bfloat16 and
1.7x in float32 (``benchmarks/results/generate_speed.md``). The conversion
(:mod:`genq.ct2_convert`) runs once per model folder, quantization and CTranslate2 version, and
is kept under ``$GENQ_CACHE_DIR/ct2``.

What is the same as the torch backend: the inputs (passage window, title, prefix, decoder-only
prompt and chat rendering), the knobs (queries per passage, top-k then top-p, temperature,
lengths), the stop tokens, the query clean-up and ``generator_logprob`` (the mean log-probability
of the query's tokens, its end token included, under the model's own distribution before
temperature and truncation; read from CTranslate2's per-step log-probabilities).

What differs: the random draws. The torch backend gives every (passage, sample) its own
stream, so a passage's queries never depend on its batch, a resume or a worker. CTranslate2
draws from one random generator per worker thread, created at its first draw from the seed
set at that time (``ctranslate2.set_random_seed``) and never reseeded (measured: two calls on the
same batch draw differently). So the guarantee is per run: the run seed is set before the model
loads, and a fresh process that samples the same batches in the same order writes the same pairs.
A resumed run, a batch halved after an out-of-memory or a Ray actor (whose draws depend on the
shards it ran before) samples other queries from the same distribution. What resume promises is
unchanged: the journal records each batch, so no passage is lost or sampled twice. A
decoder-only sample may not end at its first token here (``min_length=1``), where the torch loop
lets it open with a blank line and go on.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from genq.ct2_convert import ConversionFailed, converted_copy, remember_failure
from genq.generation.backend import PromptedGenerator, device_kind
from genq.generation.settings import GenerationConfig
from genq.io import GenqError, describe_error

logger = logging.getLogger(__name__)

SEEDING = ("per run: CTranslate2's sampler is seeded with the run seed when the model loads; a fresh process "
           "sampling the same batches in the same order writes the same pairs (a resume or another batching draws "
           "other queries)")
CPU_DEFAULT_BATCH = 16  # as the torch loop's; CTranslate2 sorts and pads a batch itself


class Unavailable(Exception):
    """CTranslate2 cannot run this generator (conversion or loading failed): the caller falls back to torch."""


def compute_type(dtype: str, device: str, family: str) -> str:
    """The CTranslate2 compute type for genq's ``--dtype`` on ``device``.

    auto and int8: int8 weights, with bfloat16 activations on a GPU that has them (T5 overflows in
    float16, so a T5 falls back to float32 activations there), float32 activations on a CPU.
    """
    import ctranslate2

    supported = ctranslate2.get_supported_compute_types(device)
    if dtype in ("auto", "int8"):
        if device == "cpu":
            return "int8" if "int8" in supported else "float32"
        for wanted in ("int8_bfloat16",) + (("int8_float16",) if family == "causal" else ()) + ("int8_float32",):
            if wanted in supported:
                return wanted
        return "float32"
    if dtype == "float16" and family == "seq2seq":
        logger.warning("T5-style models overflow to NaN in float16; consider --dtype bfloat16, float32 or int8")
    if dtype not in supported:
        raise GenqError(f"CTranslate2 does not compute in {dtype} on {device} (it does: {', '.join(sorted(supported))})"
                        "\n  fix: --dtype auto (int8), or --backend torch")
    return dtype


def cpu_threads() -> int:
    """The threads CTranslate2 may use: torch's setting when a caller set it (a Ray actor's share), else the CPUs
    this process may run on."""
    if "torch" in sys.modules:
        return max(1, sys.modules["torch"].get_num_threads())
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class CTranslate2Generator(PromptedGenerator):
    backend = "ctranslate2"

    def __init__(self, config: GenerationConfig, backend_reason: str = "--backend ctranslate2"):
        import ctranslate2

        model_ref, gguf = self._settle(config, backend_reason)
        config = self.config
        self.device = device_kind(config.device)
        self.dtype_label = compute_type(config.dtype, self.device, self.family)
        folder = self._model_folder(model_ref, gguf)
        from transformers import AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
        except Exception as exc:
            raise GenqError(f"could not load the generator {config.model!r}: {describe_error(exc)}") from None
        quantization = "int8" if self.dtype_label.startswith("int8") else None
        try:
            converted = converted_copy(folder, quantization, purpose=f"CTranslate2 generation ({self.dtype_label})",
                                       expected="about a minute for a T5-base")
        except ConversionFailed as exc:
            raise Unavailable(exc.reason) from None
        model_class = ctranslate2.Translator if self.family == "seq2seq" else ctranslate2.Generator
        ctranslate2.set_random_seed(config.seed)  # read once, by the worker thread's first draw (see the module)
        try:
            self.model = model_class(str(converted), device=self.device, compute_type=self.dtype_label,
                                     intra_threads=cpu_threads() if self.device == "cpu" else 0)
        except Exception as exc:  # remembered like a refused conversion: later runs go straight to torch
            reason = f"CTranslate2 could not load its copy {converted}: {describe_error(exc)}"
            remember_failure(converted, folder, reason)
            raise Unavailable(reason) from None
        self.vocabulary = len(self.tokenizer)
        self.folder = folder
        self._prepare_prompt(_generation_eos(folder))
        self._prefix: list[int] | None | bool = False  # decoder-only: the prompts' shared few-shot tokens

    def _model_folder(self, model_ref: str, gguf: str | None) -> Path:
        """A local folder holding the model's config, weights and tokenizer, which the converter reads."""
        if gguf:
            local = Path(model_ref) / gguf
            if not local.is_file():
                raise Unavailable("a GGUF generator must be a local file for CTranslate2")
            from genq import gguf_cache

            folder = gguf_cache.model_folder(local)
            if folder is None:
                raise Unavailable(f"no de-quantised copy of {local.name} could be kept to convert")
            return folder
        if Path(model_ref).is_dir():
            return Path(model_ref)
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(model_ref))
        except Exception as exc:
            raise GenqError(f"could not load the generator {model_ref!r}: {describe_error(exc)}") from None

    def auto_batch_size(self) -> int:
        """On a CPU the torch loop's 16 (the batch sweep's best there); on a GPU int8 weights leave room for more,
        but nothing is measured yet, so the same bound as the torch loop's estimate for float16."""
        if self.device == "cpu":
            return CPU_DEFAULT_BATCH
        from transformers import AutoConfig

        from genq.batch_sizing import auto_generation_batch, generation_bytes_per_passage

        template_tokens = 0 if self.family == "seq2seq" else 160
        per_passage = generation_bytes_per_passage(
            AutoConfig.from_pretrained(self.folder), self.family, self.config.queries_per_passage,
            self.config.max_passage_tokens + template_tokens, self.config.max_length, 2)
        return auto_generation_batch(self.device, per_passage)

    def sample(self, passages: list[dict], seed: int) -> list[list[tuple[str, float]]]:
        """``queries_per_passage`` queries per passage with their generator log-probabilities.

        ``seed`` is the run's, set when the model loaded: CTranslate2 cannot be reseeded per call (see the module).
        """
        config = self.config
        n = config.queries_per_passage
        steps: dict[tuple[int, int], list[tuple[int, float, bool]]] = {}

        def record(step) -> bool:
            steps.setdefault((step.batch_id, step.hypothesis_id), []).append(
                (step.token_id, step.log_prob, step.is_last))
            return False

        options = dict(beam_size=1, num_hypotheses=n, sampling_topk=min(config.top_k or self.vocabulary,
                                                                         self.vocabulary),
                       sampling_topp=config.top_p, sampling_temperature=config.temperature, return_end_token=True,
                       return_scores=True,  # without it the steps carry no log-probability
                       callback=record)
        texts = self._inputs(passages)
        if self.family == "seq2seq":
            ids = self.tokenizer(texts, truncation=True, max_length=config.max_passage_tokens)["input_ids"]
            source = [self.tokenizer.convert_ids_to_tokens(row) for row in ids]
            end = self.tokenizer.eos_token_id
            self.model.translate_batch(source, max_decoding_length=config.max_length - 1, min_decoding_length=0,
                                       max_input_length=0, **options)
            ends = {end} if end is not None else set()
        else:
            prompts = self._tokenize(texts)
            if self._prefix is False:
                self._prefix = self._shared_prompt_ids()
            prefix = self._prefix if self._prefix and all(row[:len(self._prefix)] == self._prefix
                                                          for row in prompts) else []
            starts = [self.tokenizer.convert_ids_to_tokens(row[len(prefix):]) for row in prompts]
            ends = set(self.eos_ids) | set(self.newline_ids)
            self.model.generate_batch(starts, max_length=config.max_length, min_length=1, end_token=sorted(ends),
                                      include_prompt_in_result=False,
                                      static_prompt=self.tokenizer.convert_ids_to_tokens(prefix) if prefix else None,
                                      **options)
        queries: list[list[tuple[str, float]]] = []
        for row in range(len(passages)):
            scored = []
            for hypothesis in range(n):
                tokens = steps.get((row, hypothesis), [])
                ended = bool(tokens) and tokens[-1][0] in ends
                body = [token for token, _, _ in (tokens[:-1] if ended else tokens)]
                logprob = round(sum(p for _, p, _ in tokens) / len(tokens), 4) if tokens else 0.0
                text = self.tokenizer.decode(body, skip_special_tokens=True)
                if self.family == "causal":
                    text = self._query_in(text, ended)
                scored.append((text, logprob))
            queries.append(scored)
        return queries

    def _seq2seq_end_id(self) -> int | list[int] | None:
        return _generation_eos(self.folder)

    def score_queries(self, passages: list[dict], queries: list[str], batch_size: int = 16) -> list[float]:
        """Mean log-probability of each query given its passage, the query's tokens and its end teacher-forced: the
        torch backend's number (:meth:`genq.generation.torch_backend.QueryGenerator.score_queries`), from the same
        rows, computed by CTranslate2's ``score_batch``. Every row is scored whole: CTranslate2 keeps no shared
        prompt state for scoring, so a few-shot prompt is recomputed per row (a tuned generator's zero-shot
        prompt is short)."""
        if len(passages) != len(queries):
            raise ValueError(f"{len(passages)} passages for {len(queries)} queries")
        rows = self.training_rows(passages, queries)
        tokens = self.tokenizer.convert_ids_to_tokens
        if self.family == "seq2seq":
            # the target without its end token: CTranslate2 appends the end and scores it too
            results = self.model.score_batch([tokens(ids) for ids, _ in rows],
                                             [tokens(labels[:-1]) for _, labels in rows], max_batch_size=batch_size)
            return [round(sum(r.log_probs) / max(len(r.log_probs), 1), 6) for r in results]
        results = self.model.score_batch([tokens(ids) for ids, _ in rows], max_batch_size=batch_size)
        scores = []
        for (_, labels), result in zip(rows, results):
            # log_probs[i] is token i+1's given those before it: a target at position j is log_probs[j - 1]
            targets = [result.log_probs[j - 1] for j, label in enumerate(labels) if label != -100 and j > 0]
            scores.append(round(sum(targets) / max(len(targets), 1), 6))
        return scores


def _generation_eos(folder: Path) -> int | list[int] | None:
    """The model's end token(s) from its generation config (else its config), as the torch backend reads them."""
    from transformers import AutoConfig, GenerationConfig

    try:
        return GenerationConfig.from_pretrained(folder).eos_token_id
    except Exception:  # no generation_config.json
        try:
            return AutoConfig.from_pretrained(folder).eos_token_id
        except Exception:
            return None
