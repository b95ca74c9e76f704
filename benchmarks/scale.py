"""What every stage costs at 10k, 100k and 971k real passages, and what ``auto`` should pick there.

The corpus is ``../shared/data/scale/registry-summaries.jsonl.gz`` (971,510 package summaries,
short texts). Before anything runs it is split once, deterministically: 1,000 summaries are
held out as queries (every 971st line), 10,000 more as the batch ``index --add`` appends
(every 97th line of the rest), and the remaining 960,510 in file order are the corpus; a size
N takes their first N.

Per size, each stage runs as the command a user types, alone on the machine, timed from start
to exit with its peak resident memory from the kernel's accounting of the child (``wait4``):
``corpus prepare``, ``corpus stats``, ``index`` (dense + BM25; the index's own record splits
encoding, ANN build and BM25), ``search`` from a cold start (three times), ``serve`` (seconds
until ``/health`` answers, resident memory after the queries, then p50/p99 latency over the
1,000 queries one at a time, hybrid/dense/BM25 alternating per query), a batch search of the
1,000 queries in one process (as ``evaluate`` does), and ``index --add`` of the 10,000.

At the largest size, ``--ann`` also sweeps the index types on the saved vectors: recall@10
against exact search over the 1,000 held-out queries, batch QPS, build time and size, for flat,
HNSW over float vectors and over 8-bit codes (M, efConstruction; efSearch swept), IVF-Flat and IVF-PQ
(nprobe swept).

Every measurement is kept in ``WORK/measured.json`` as it is made: a rerun skips what is
there, so an interrupted run resumes. ``WORK`` (default ``runs/scale``) holds the corpora and
indexes; several GB at 971k.

    python benchmarks/scale.py --sizes 10000 100000 960510 --ann
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import command_line, machine, write_results  # noqa: E402

SOURCE = ROOT.parent / "shared" / "data" / "scale" / "registry-summaries.jsonl.gz"
QUERY_EVERY, ADD_EVERY, QUERIES, ADDED = 971, 97, 1000, 10_000
MODES = ("hybrid", "dense", "bm25")
MODEL = "sentence-transformers/all-MiniLM-L6-v2"


class Measured:
    """measured.json: every result keyed by what it measures, written atomically after each one."""

    def __init__(self, path: Path):
        self.path = path
        self.values: dict = json.loads(path.read_text()) if path.exists() else {}

    def get(self, key: str, measure):
        if key not in self.values:
            print(f"measuring {key} ...", file=sys.stderr, flush=True)
            self.values[key] = measure()
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.values, indent=1))
            os.replace(tmp, self.path)
        print(f"{key}: {json.dumps(self.values[key])[:300]}", file=sys.stderr, flush=True)
        return self.values[key]


def split_source(work: Path) -> tuple[Path, Path, Path]:
    """corpus-all.jsonl, queries.jsonl, add.jsonl, written once from the shared file."""
    corpus, queries, added = work / "corpus-all.jsonl", work / "queries.jsonl", work / "add.jsonl"
    if corpus.exists():
        return corpus, queries, added
    held, extra = [], []
    tmp = corpus.with_suffix(".tmp")
    with gzip.open(SOURCE, "rt", encoding="utf-8") as source, open(tmp, "w", encoding="utf-8") as out:
        rest = 0
        for number, line in enumerate(source):
            if number % QUERY_EVERY == 0 and len(held) < QUERIES:
                held.append(json.loads(line))
                continue
            rest += 1
            if rest % ADD_EVERY == 0 and len(extra) < ADDED:
                extra.append(line)
                continue
            out.write(line)
    for path, lines in ((queries, [json.dumps({"_id": r["_id"], "text": r["text"]}) + "\n" for r in held]),
                        (added, extra)):
        path.write_text("".join(lines), encoding="utf-8")
    os.replace(tmp, corpus)
    return corpus, queries, added


def subset(corpus: Path, size: int, work: Path) -> Path:
    path = work / f"raw-{size}.jsonl"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        with open(corpus, encoding="utf-8") as source, open(tmp, "w", encoding="utf-8") as out:
            for number, line in enumerate(source):
                if number == size:
                    break
                out.write(line)
        os.replace(tmp, path)
    return path


def genq(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "genq", *arguments]


def run_process(command: list[str]) -> dict:
    """Wall seconds, peak RSS (MiB) and the closing lines (the command's summary) of one command, which must
    succeed."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = child.stdout.read() if child.stdout else ""
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{output[-3000:]}")
    return {"seconds": round(time.perf_counter() - started, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024),
            "said": [line for line in output.splitlines() if line.strip()][-6:]}


def read_queries(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def proc_memory(pid: int) -> dict:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS", "VmHWM")):
            name, value = line.split(":")
            fields[name] = round(int(value.split()[0]) / 1024)
    return {"rss_mib": fields.get("VmRSS"), "peak_rss_mib": fields.get("VmHWM")}


def serve_latency(index_dir: Path, queries: list[str], port: int) -> dict:
    """Start ``genq serve``, wait for /health, then one query at a time in every mode, alternating."""
    started = time.perf_counter()
    log = index_dir.with_name(index_dir.name + ".serve.log")
    with open(log, "w", encoding="utf-8") as handle:  # a pipe nobody reads would stall the server once full
        server = subprocess.Popen(genq("serve", str(index_dir), "--port", str(port)), stdout=handle, stderr=handle)
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            if server.poll() is not None:
                raise SystemExit(f"genq serve exited: {log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(base + "/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.2)
        start_seconds = time.perf_counter() - started
        after_start = proc_memory(server.pid)
        latencies: dict[str, list[float]] = {mode: [] for mode in MODES}
        for query in queries:
            for mode in MODES:
                url = f"{base}/search?" + urllib.parse.urlencode({"q": query, "k": 10, "mode": mode})
                sent = time.perf_counter()
                with urllib.request.urlopen(url, timeout=60) as answer:
                    answer.read()
                latencies[mode].append((time.perf_counter() - sent) * 1000)
        memory = proc_memory(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {"start_seconds": round(start_seconds, 2), "rss_after_start_mib": after_start["rss_mib"], **memory,
            "latency_ms": {mode: {"p50": round(statistics.median(values), 1),
                                  "p99": round(percentile(values, 0.99), 1)} for mode, values in latencies.items()}}


def batch_search(index_dir: Path, queries: list[str]) -> dict:
    """The 1,000 queries in batches of 64 in one process, as ``evaluate`` searches: seconds per mode."""
    from genq.search import Searcher

    loaded = time.perf_counter()
    searcher = Searcher.load(index_dir)
    result = {"load_seconds": round(time.perf_counter() - loaded, 2)}
    searcher.search_batch(queries[:8], k=10)  # warm-up
    for mode in MODES:
        started = time.perf_counter()
        for start in range(0, len(queries), 64):
            searcher.search_batch(queries[start:start + 64], k=10, mode=mode)
        seconds = time.perf_counter() - started
        result[mode] = {"seconds": round(seconds, 2), "queries_per_s": round(len(queries) / seconds, 1)}
    return result


def size_rows(size: int, corpus: Path, queries_file: Path, added: Path, work: Path, measured: Measured,
              port: int) -> dict:
    raw = subset(corpus, size, work)
    passages, index_dir = work / f"passages-{size}.jsonl", work / f"index-{size}"
    row = {"size": size}
    def prepare() -> dict:
        passages.unlink(missing_ok=True)  # one an interrupted measurement left
        return run_process(genq("corpus", "prepare", str(raw), "-o", str(passages)))

    row["prepare"] = measured.get(f"{size}/prepare", prepare)
    row["stats"] = measured.get(f"{size}/stats", lambda: run_process(genq("corpus", "stats", str(passages))))

    def build() -> dict:
        result = run_process(genq("index", str(passages), "-m", MODEL, "-o", str(index_dir), "--save-embeddings",
                                  "--overwrite"))
        meta = json.loads((index_dir / "index.json").read_text())
        files = [path for path in index_dir.rglob("*") if path.is_file() and path.name != "embeddings.npy"]
        parts = re.search(r"encoding ([\d.]+)s, \S+ build ([\d.]+)s(?:, BM25 ([\d.]+)s)?", "\n".join(result["said"]))
        return {**result, "passages": meta["passages"], "index_type": meta["index_type"], "params": meta["params"],
                "encode_seconds": float(parts[1]), "ann_seconds": float(parts[2]),
                "bm25_seconds": float(parts[3] or 0), "disk_mib": round(sum(p.stat().st_size for p in files) / 2**20),
                "faiss_mib": round((index_dir / "index.faiss").stat().st_size / 2**20),
                "bm25_mib": round(sum(p.stat().st_size for p in (index_dir / "bm25").rglob("*")) / 2**20)}

    row["index"] = measured.get(f"{size}/index", build)
    queries = read_queries(queries_file)
    row["search_cold"] = measured.get(f"{size}/search_cold", lambda: [
        run_process(genq("search", str(index_dir), queries[n])) for n in range(3)])
    row["serve"] = measured.get(f"{size}/serve", lambda: serve_latency(index_dir, queries, port))
    row["batch_search"] = measured.get(f"{size}/batch_search", lambda: batch_search(index_dir, queries))

    def add() -> dict:
        grown = work / f"index-{size}-added"
        shutil.rmtree(grown, ignore_errors=True)
        shutil.copytree(index_dir, grown)
        result = run_process(genq("index", str(added), "-o", str(grown), "--add"))
        shutil.rmtree(grown)
        return result

    row["add"] = measured.get(f"{size}/add", add)
    return row


ANN_CONFIGS = [  # (label, how to build, the search knob and its values)
    ("hnsw M=16 efC=100", {"index_type": "hnsw", "hnsw_m": 16, "ef_construction": 100}, "ef_search",
     [16, 32, 64, 128, 256]),
    ("hnsw-sq (8-bit codes) M=32 efC=200", {"index_type": "hnsw-sq"}, "ef_search", [16, 32, 64, 128, 256]),
    ("ivf-flat nlist=4096", {"faiss_factory": "IVF4096,Flat"}, "nprobe", [4, 8, 16, 32, 64, 128]),
    ("ivf-pq nlist=4096 m=48", {"index_type": "ivf-pq", "nlist": 4096, "pq_m": 48}, "nprobe", [8, 16, 32, 64, 128]),
    ("ivf-pq nlist=4096 m=96", {"index_type": "ivf-pq", "nlist": 4096, "pq_m": 96}, "nprobe", [16, 32, 64, 128]),
]


def ann_sweep(size: int, queries_file: Path, work: Path, measured: Measured) -> list[dict]:
    """Recall@10 against exact search and batch QPS of each index type on the size's saved vectors."""
    import faiss

    from benchmarks.search_speed import recall_at_k, timed_search
    from genq.ann import IndexParams, apply_search_params, build_faiss_index
    from genq.encode import Encoder

    index_dir = work / f"index-{size}"
    vectors = np.load(index_dir / "embeddings.npy", mmap_mode="r")
    queries = Encoder(MODEL).encode(read_queries(queries_file))
    rows = []

    def exact() -> dict:
        flat = build_faiss_index(vectors, IndexParams("flat"))
        top, qps = timed_search(flat, queries, 10, repeats=2)
        np.save(work / f"exact-{size}.npy", top)
        return {"qps": round(qps, 1)}

    flat = measured.get(f"{size}/ann/flat", exact)
    truth = np.load(work / f"exact-{size}.npy")
    rows.append({"index": "flat (exact)", "build_s": 0.0, "mib": round(vectors.shape[0] * vectors.shape[1] * 4 / 2**20),
                 "recall@10": 1.0, "qps": flat["qps"], "x_flat": 1.0})

    def shipped() -> list[dict]:  # the index `genq index` built with auto at this size: its build was timed there
        index = faiss.read_index(str(index_dir / "index.faiss"))
        return sweep(index, "ef_search", [16, 32, 64, 128, 256, 512])

    def sweep(index, knob: str, values: list[int]) -> list[dict]:
        found = []
        for value in values:
            apply_search_params(index, {knob: value})
            top, qps = timed_search(index, queries, 10, repeats=2)
            found.append({"knob": f"{knob}={value}", "recall@10": round(recall_at_k(truth, top), 4),
                          "qps": round(qps, 1)})
        return found

    meta = json.loads((index_dir / "index.json").read_text())
    auto_label = f"{meta['index_type']} (auto) M={meta['params']['hnsw_m']} efC={meta['params']['ef_construction']}"
    built = measured.values.get(f"{size}/index", {})
    if meta["index_type"] != "flat":  # where auto chose exact search, the flat row is its row
        for found in measured.get(f"{size}/ann/auto", shipped):
            rows.append({"index": f"{auto_label} {found['knob']}", "build_s": built.get("ann_seconds"),
                         "mib": built.get("faiss_mib"), **found})
    for label, knobs, knob, values in ANN_CONFIGS:
        def build_and_sweep(knobs=knobs, knob=knob, values=values) -> dict:
            params = IndexParams(**knobs).resolved(len(vectors), vectors.shape[1])
            started = time.perf_counter()
            index = build_faiss_index(vectors, params)
            build = time.perf_counter() - started
            return {"build_s": round(build, 1), "mib": round(faiss.serialize_index(index).nbytes / 2**20),
                    "found": sweep(index, knob, values)}

        result = measured.get(f"{size}/ann/{label}", build_and_sweep)
        for found in result["found"]:
            rows.append({"index": f"{label} {found['knob']}", "build_s": result["build_s"], "mib": result["mib"],
                         **found})
    for row in rows:
        row["x_flat"] = round(row["qps"] / flat["qps"], 1)
    return rows


def report(rows: list[dict], ann: list[dict]) -> list[str]:
    lines = ["# genq at scale: 10k to 960k real passages (package summaries)", "",
             f"Command: `{command_line()}`  ", f"Machine: {machine()}, alone; every stage a separate process as a "
             "user runs it (peak RSS from the kernel).", "",
             "## Every stage", "",
             "| stage | " + " | ".join(f"{row['size']:,}" for row in rows) + " |",
             "|---|" + "---:|" * len(rows)]

    def line(name: str, cell) -> None:
        lines.append(f"| {name} | " + " | ".join(cell(row) for row in rows) + " |")

    line("corpus prepare: s / peak MiB", lambda r: f"{r['prepare']['seconds']} / {r['prepare']['peak_rss_mib']}")
    line("corpus stats: s / peak MiB", lambda r: f"{r['stats']['seconds']} / {r['stats']['peak_rss_mib']}")
    line("index (dense + BM25): s / peak MiB", lambda r: f"{r['index']['seconds']} / {r['index']['peak_rss_mib']}")
    line("  of which encoding s (passages/s)",
         lambda r: f"{r['index']['encode_seconds']} ({r['size'] / max(r['index']['encode_seconds'], 1e-9):.0f})")
    line("  of which ANN build s (type)", lambda r: f"{r['index']['ann_seconds']} ({r['index']['index_type']})")
    line("  of which BM25 build s", lambda r: f"{r['index']['bm25_seconds']}")
    line("index on disk MiB (Faiss / BM25)",
         lambda r: f"{r['index']['disk_mib']} ({r['index']['faiss_mib']} / {r['index']['bm25_mib']})")
    line("search, cold start: s (median of 3) / peak MiB",
         lambda r: f"{statistics.median(x['seconds'] for x in r['search_cold'])} / "
                   f"{max(x['peak_rss_mib'] for x in r['search_cold'])}")
    line("serve: s until /health answers", lambda r: f"{r['serve']['start_seconds']}")
    line("serve: resident MiB after start / after 3,000 queries",
         lambda r: f"{r['serve']['rss_after_start_mib']} / {r['serve']['rss_mib']}")
    for mode in MODES:
        line(f"serve {mode}: p50 / p99 ms",
             lambda r, mode=mode: f"{r['serve']['latency_ms'][mode]['p50']} / {r['serve']['latency_ms'][mode]['p99']}")
    for mode in MODES:
        line(f"batch search {mode}: queries/s",
             lambda r, mode=mode: f"{r['batch_search'][mode]['queries_per_s']}")
    line("index --add 10,000: s / peak MiB", lambda r: f"{r['add']['seconds']} / {r['add']['peak_rss_mib']}")
    if ann:
        lines += ["", f"## Index types on the {rows[-1]['size']:,} real vectors (1,000 held-out summaries as "
                  "queries, batch search, 2 threads)", "",
                  "| index | build s | MiB | recall@10 | QPS | x flat |", "|---|---:|---:|---:|---:|---:|"]
        for row in ann:
            lines.append(f"| {row['index']} | {row['build_s']} | {row['mib']} | {row['recall@10']} | {row['qps']} | "
                         f"{row['x_flat']} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 960_510])
    parser.add_argument("--ann", action="store_true", help="Also sweep the index types at the largest size.")
    parser.add_argument("--work", default=str(ROOT / "runs" / "scale"))
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    measured = Measured(work / "measured.json")
    corpus, queries, added = split_source(work)
    rows = [size_rows(size, corpus, queries, added, work, measured, args.port) for size in sorted(args.sizes)]
    ann = ann_sweep(max(args.sizes), queries, work, measured) if args.ann else []
    lines = report(rows, ann)
    write_results("scale", {"machine": machine(), "command": command_line(), "rows": rows, "ann": ann}, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
