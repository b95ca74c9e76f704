"""A real check of `genq train`: fine-tune all-MiniLM-L6-v2 on real (query, relevant document)
pairs from half of Cranfield's queries and measure nDCG@10 on the other half, before and after.

This isolates the training stage from query generation: the pairs are human judgements,
so a drop here would point at the trainer, not at synthetic queries.

    python benchmarks/train_cranfield.py --epochs 1
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_results  # noqa: E402
from genq.evaluate import Collection, dense_run, load_collection, score_run  # noqa: E402
from genq.train import TrainConfig, train_bi_encoder  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "ir"
BASE = "sentence-transformers/all-MiniLM-L6-v2"


def split_queries(collection: Collection, seed: int = 0) -> tuple[list[str], list[str]]:
    query_ids = sorted(collection.qrels)
    random.Random(seed).shuffle(query_ids)
    half = len(query_ids) // 2
    return sorted(query_ids[:half]), sorted(query_ids[half:])


def human_split(collection_name: str, pairs: Path) -> tuple[Collection, int]:
    """Write the (query, relevant document) pairs of half the queries to ``pairs``; the other half as a test
    collection over the whole corpus. Returns (test collection, train query count)."""
    collection = load_collection(SHARED / collection_name)
    train_ids, test_ids = split_queries(collection)
    by_id = {p["_id"]: p for p in collection.corpus}
    with open(pairs, "w", encoding="utf-8") as handle:
        for query_id in train_ids:
            for doc_id, relevance in collection.qrels[query_id].items():
                if relevance > 0 and by_id[doc_id]["text"].strip():
                    doc = by_id[doc_id]
                    handle.write(json.dumps({"query": collection.queries[query_id], "passage_id": doc_id,
                                             "passage": doc["text"], "title": doc["title"]}) + "\n")
    test = Collection(collection.corpus, {q: collection.queries[q] for q in test_ids},
                      {q: collection.qrels[q] for q in test_ids}, collection.path)
    return test, len(train_ids)


def run(work: Path, epochs: float = 1.0, lr: float = 2e-5, max_steps: int | None = None,
        collection_name: str = "cranfield") -> dict:
    pairs = work / "pairs.jsonl"
    test, train_queries = human_split(collection_name, pairs)
    started = time.perf_counter()
    before, _ = score_run(test.qrels, dense_run(test, BASE))
    config = TrainConfig(base_model=BASE, epochs=epochs, lr=lr, max_seq_length=256, eval_share=0.0,
                         max_steps=max_steps or -1, save_steps=10_000, device="cpu")
    summary = train_bi_encoder(pairs, work / "model", config, progress=False)
    after, _ = score_run(test.qrels, dense_run(test, str(work / "model")))
    return {"collection": collection_name, "train_queries": train_queries, "test_queries": len(test.queries),
            "train_pairs": summary.train_pairs, "steps": summary.steps, "epochs": epochs, "lr": lr,
            "before": before, "after": after, "train_seconds": summary.seconds,
            "seconds": round(time.perf_counter() - started, 1)}


def write_report(rows: list[dict], command: str) -> None:
    out = ROOT / "benchmarks" / "results"
    lines = ["# genq train on real Cranfield pairs (half the queries train, the other half test)", "",
             f"Command: `{command}`  ", "Base all-MiniLM-L6-v2; MultipleNegativesRankingLoss, batch 64, "
             "no-duplicates batches, max_seq_length 256; exact search over all 1,400 documents.", "",
             "| epochs | lr | train pairs | steps | nDCG@10 before | nDCG@10 after | MRR@10 before | MRR@10 after | "
             "R@100 before | R@100 after |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['epochs']} | {r['lr']} | {r['train_pairs']} | {r['steps']} | "
                     f"{r['before']['ndcg@10']:.4f} | {r['after']['ndcg@10']:.4f} | {r['before']['mrr@10']:.4f} | "
                     f"{r['after']['mrr@10']:.4f} | {r['before']['recall@100']:.4f} | "
                     f"{r['after']['recall@100']:.4f} |")
    write_results("train_cranfield", {"command": command, "rows": rows}, "\n".join(lines) + "\n", out)
    print("\n".join(lines))



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=float, nargs="+", default=[1.0])
    parser.add_argument("--lr", type=float, default=2e-5)
    args = parser.parse_args()
    rows = []
    for epochs in args.epochs:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(run(Path(tmp), epochs=epochs, lr=args.lr))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    write_report(rows, "python benchmarks/train_cranfield.py " + " ".join(sys.argv[1:]))

if __name__ == "__main__":
    main()
