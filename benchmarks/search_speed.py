"""Search speed and recall: HNSW and IVF-PQ against exact (flat) search, built by genq's index code.

Two corpora: N random unit vectors of dimension 384 (default one million, the worst case
for approximate search: no cluster structure), and the real all-MiniLM-L6-v2 embeddings of
a ../shared/data/ir corpus. Recall@10 is the share of the exact top 10 that each index
returns; QPS is measured on the same queries, one batch, on this machine's threads.

    python benchmarks/search_speed.py --vectors 1000000 --queries 1000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_results  # noqa: E402
from genq.ann import IndexParams, apply_search_params, build_faiss_index  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "ir"


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def timed_search(index, queries: np.ndarray, k: int, repeats: int = 1) -> tuple[np.ndarray, float]:
    best = float("inf")
    rows = None
    for _ in range(repeats):
        started = time.perf_counter()
        _, rows = index.search(queries, k)
        best = min(best, time.perf_counter() - started)
    return rows, len(queries) / best


def recall_at_k(exact: np.ndarray, approx: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(approx, exact)]))


Config = tuple[str, IndexParams, dict[str, list]]


def evaluate(name: str, vectors: np.ndarray, queries: np.ndarray, configs: list[Config], k: int = 10) -> list[dict]:
    rows = []
    flat_params = IndexParams("flat").resolved(len(vectors), vectors.shape[1])
    started = time.perf_counter()
    flat = build_faiss_index(vectors, flat_params)
    exact, flat_qps = timed_search(flat, queries, k, repeats=2)
    rows.append({"corpus": name, "index": "flat (exact)", "build_s": round(time.perf_counter() - started, 1),
                 "recall@10": 1.0, "qps": round(flat_qps, 1), "speedup_vs_flat": 1.0})
    for label, params, search in configs:
        resolved = params.resolved(len(vectors), vectors.shape[1])
        started = time.perf_counter()
        index = build_faiss_index(vectors, resolved)
        build = time.perf_counter() - started
        for knob, value in ((knob, v) for knob, values in search.items() for v in values):
            apply_search_params(index, {knob: value})
            approx, qps = timed_search(index, queries, k, repeats=2)
            rows.append({"corpus": name, "index": f"{label} {knob}={value}", "build_s": round(build, 1),
                         "recall@10": round(recall_at_k(exact, approx), 4), "qps": round(qps, 1),
                         "speedup_vs_flat": round(qps / flat_qps, 1)})
            print(rows[-1], file=sys.stderr, flush=True)
    return rows


def real_embeddings(collection: str) -> tuple[np.ndarray, np.ndarray]:
    from genq.encode import Encoder
    from genq.evaluate import load_collection

    data = load_collection(SHARED / collection)
    encoder = Encoder("sentence-transformers/all-MiniLM-L6-v2")
    return encoder.encode_passages(data.corpus), encoder.encode_queries(list(data.queries.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--real", default="cranfield", help="a ../shared/data/ir collection, or '' to skip")
    args = parser.parse_args()
    import faiss

    rng = np.random.default_rng(0)
    rows = []
    if args.real:
        corpus, queries = real_embeddings(args.real)
        rows += evaluate(f"{args.real} (MiniLM, {len(corpus):,} passages)", corpus, queries, [
            ("hnsw M=32", IndexParams("hnsw", hnsw_m=32), {"ef_search": [64, 128]}),
        ])
    vectors = unit(rng.standard_normal((args.vectors, 384), dtype=np.float32))
    queries = unit(rng.standard_normal((args.queries, 384), dtype=np.float32))
    rows += evaluate(f"random unit vectors ({args.vectors:,} x 384)", vectors, queries, [
        ("hnsw M=32 efC=200", IndexParams("hnsw", hnsw_m=32, ef_construction=200),
         {"ef_search": [128, 256, 512]}),
        (f"ivf-pq nlist={int(4 * args.vectors ** 0.5)} m=48",
         IndexParams("ivf-pq", nlist=int(4 * args.vectors ** 0.5), pq_m=48, train_sample=200_000),
         {"nprobe": [16, 64, 256]}),
    ])
    payload = {"threads": faiss.omp_get_max_threads(), "rows": rows,
               "command": "python benchmarks/search_speed.py " + " ".join(sys.argv[1:])}
    out = ROOT / "benchmarks" / "results"
    lines = ["# Search: recall@10 and QPS against exact search", "", f"Command: `{payload['command']}`  ",
             f"Faiss threads: {payload['threads']}. Recall@10 = share of the exact top 10 returned.", "",
             "| corpus | index | build s | recall@10 | QPS | x flat QPS |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['corpus']} | {r['index']} | {r['build_s']} | {r['recall@10']} | {r['qps']} | "
              f"{r['speedup_vs_flat']} |" for r in rows]
    write_results("search_speed", payload, "\n".join(lines) + "\n", out)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
