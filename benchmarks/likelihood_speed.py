"""Which backend scores query likelihoods faster on this machine: torch or CTranslate2's ``score_batch``.

The query-likelihood reranker (``--rerank query-likelihood``) scores every (query, candidate)
by the generator's mean log p(query | passage). Both backends compute that number from the same
rows (tests check they agree to 1e-3 in float32); this measures their speed, in one process, in
alternating rounds, on the pairs a reranker meets: Cranfield's first QUERIES test queries, each
with BM25's top 20 passages. Two generators: SmolLM2-135M-Instruct as shipped (genq's few-shot
chat prompt, whose shared prefix torch computes once per batch and CTranslate2 once per row)
SmolLM2 as shipped under the short zero-shot prompt (no shared prefix to reuse: what a tuned
generator's prompt costs, whatever the tuning), a seq2seq model of T5-base's shape (random
weights, a WordPiece vocabulary trained on the passages: the speed of the hub default's
architecture, not its scores) and, where ``benchmarks/generator_rounds.py`` left one, SmolLM2
tuned on Cranfield (its own zero-shot prompt). ``--rows`` picks some; the others keep what the
results file holds. Agreement with torch's float32 scores (mean absolute difference, and the
share of queries whose top-ranked candidate stays the same) shows what a lower precision costs.

    python benchmarks/likelihood_speed.py --queries 3 --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, command_line, machine, merged_results, timed, write_results  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "ir"
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
TUNED = ROOT / "runs" / "generator-rounds" / "cranfield" / "generator-round2"
BACKENDS = (("torch", "auto"), ("ctranslate2", "auto"), ("ctranslate2", "float32"))
COMMAND_THEN = "python benchmarks/likelihood_speed.py --queries 3 --rounds 2"  # results recorded before --rows
MACHINE_THEN = "AMD EPYC, 2 cores, AVX512-BF16"  # the same; torch's auto precision was bfloat16 there


def candidate_pairs(queries: int, depth: int = 20) -> tuple[list[dict], list[str], list[int]]:
    """(passages, queries, group sizes): each query with BM25's top ``depth`` candidates."""
    from genq.evaluate import bm25_run, load_collection

    collection = load_collection(SHARED / "cranfield")
    chosen = list(collection.queries)[:queries]
    collection.queries = {q: collection.queries[q] for q in chosen}
    ranked = bm25_run(collection, depth)
    by_id = {passage["_id"]: passage for passage in collection.corpus}
    passages, texts, groups = [], [], []
    for query_id in chosen:
        documents = sorted(ranked[query_id].items(), key=lambda item: -item[1])[:depth]
        for document_id, _ in documents:
            passage = by_id[document_id]
            passages.append({"_id": document_id, "title": passage.get("title", ""), "text": passage["text"]})
            texts.append(collection.queries[query_id])
        groups.append(len(documents))
    return passages, texts, groups


def load(model: str, backend: str, dtype: str, prompt_template: str | None = None):
    from genq.generation.ct2_backend import CTranslate2Generator
    from genq.generation.settings import GenerationConfig
    from genq.generation.torch_backend import QueryGenerator

    config = GenerationConfig(model=model, device="cpu", dtype=dtype, backend=backend, prompt_template=prompt_template)
    return QueryGenerator(config) if backend == "torch" else CTranslate2Generator(config)


def agreement(scores: list[float], reference: list[float], groups: list[int]) -> dict:
    same_top, start = 0, 0
    for size in groups:
        own, ref = scores[start:start + size], reference[start:start + size]
        same_top += own.index(max(own)) == ref.index(max(ref))
        start += size
    return {"mean_abs_diff": round(statistics.mean(abs(a - b) for a, b in zip(scores, reference)), 4),
            "same_top_candidate": round(same_top / len(groups), 3)}


def measure(label: str, model: str, args, prompt_template: str | None = None) -> dict:
    from genq.models import packaged_model_path

    model = str(packaged_model_path(model) or model)
    passages, queries, groups = candidate_pairs(args.queries)
    reference = load(model, "torch", "float32", prompt_template).score_queries(passages, queries, 8)
    generators = {f"{backend} {dtype}": load(model, backend, dtype, prompt_template) for backend, dtype in BACKENDS}
    names = {name: f"{name.split()[0]} {generator.dtype_label}" for name, generator in generators.items()}
    seconds: dict[str, list[float]] = {name: [] for name in generators}
    scores: dict[str, list[float]] = {}
    for round_number in range(args.rounds):
        order = list(generators) if round_number % 2 == 0 else list(reversed(generators))
        for name in order:
            took, scores[name] = timed(lambda g=generators[name]: g.score_queries(passages, queries, 8))
            seconds[name].append(took)
    torch_name = "torch auto"
    rows = []
    for name in generators:
        ratios = [t / s for t, s in zip(seconds[torch_name], seconds[name])]
        rows.append({"system": names[name], "seconds_best": round(min(seconds[name]), 2),
                     "seconds_per_pair": round(min(seconds[name]) / len(passages), 4),
                     "speedup_vs_torch_median": round(statistics.median(ratios), 2),
                     **agreement(scores[name], reference, groups)})
    return {"generator": label, "pairs": len(passages), "queries": len(groups), "rows": rows}


def seq2seq_model() -> Path:
    """A T5-base-shaped model with random weights, built once under runs/ (no hub here)."""
    from benchmarks.generate_speed import build_model
    from genq.evaluate import load_collection

    directory = ROOT / "runs" / "likelihood-speed" / "t5-base-shaped"
    if not (directory / "config.json").exists():
        build_model(directory, load_collection(SHARED / "cranfield").corpus)
    return directory


ROWS = {
    "shipped": ("SmolLM2-135M-Instruct as shipped (few-shot chat prompt)", lambda: SMOLLM2, None),
    "zero-shot": ("SmolLM2-135M-Instruct as shipped, zero-shot prompt", lambda: SMOLLM2, "zero-shot"),
    "seq2seq": ("T5-base-shaped seq2seq (random weights; speed only)", lambda: str(seq2seq_model()), None),
    "tuned": ("SmolLM2 tuned on Cranfield (zero-shot prompt)", lambda: str(TUNED), None),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    args = parser.parse_args()
    new = []
    for row in args.rows:
        if row == "tuned" and not (TUNED / "config.json").exists():
            print(f"no tuned generator at {TUNED} (benchmarks/generator_rounds.py makes it): row skipped",
                  file=sys.stderr)
            continue
        label, model, template = ROWS[row]
        new.append({**measure(label, model(), args, template), "command": command_line(), "machine": machine()})
    results = merged_results(RESULTS / "likelihood_speed.json", new, key="generator")
    lines = ["# Query-likelihood scoring: torch against CTranslate2 score_batch", "",
             "Each alone on its machine. Rounds alternate the order; the "
             "speed-up is torch's seconds over the system's in the same round (median). Agreement is against "
             "torch float32.", ""]
    for result in results:
        lines += [f"## {result['generator']}: {result['queries']} Cranfield queries x BM25 top 20 = "
                  f"{result['pairs']} pairs", "", f"Command: `{result.get('command', COMMAND_THEN)}`  ",
                  f"Machine: {result.get('machine', MACHINE_THEN)}", "",
                  "| backend | best s | s per pair | speed-up vs torch | mean abs diff | same top candidate |",
                  "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['system']} | {r['seconds_best']} | {r['seconds_per_pair']} | {r['speedup_vs_torch_median']}x "
                  f"| {r['mean_abs_diff']} | {r['same_top_candidate']} |" for r in result["rows"]]
        lines.append("")
    write_results("likelihood_speed", {"results": results}, lines)  # each result names its machine
    print("\n".join(lines))


if __name__ == "__main__":
    main()
