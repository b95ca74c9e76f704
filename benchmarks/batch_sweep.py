"""Generation throughput by batch size (issue 25), in one process, alternating rounds.

The model is a randomly initialised T5-base-shaped generator (t5-base's T5Config, as in
``generate_speed.py``): random weights rarely sample EOS, so every row decodes all 64 tokens,
the worst case and the same work at every batch size. Each round runs every batch size once
over the same Cranfield passages (3 queries each, top_p 0.95, top_k 25), in a rotated order,
so drift of the machine hits every size alike; the figure is the median over rounds. ``auto``
is the batch genq chooses by itself on that device.

    python benchmarks/batch_sweep.py --device cpu --sizes 4 8 16 32 --passages 32 --rounds 3
    python benchmarks/batch_sweep.py --device cuda --sizes 16 48 128 256 512 1024 --passages 1024 --rounds 2

Writes benchmarks/results/batch_sweep_<device>.{json,md}.
"""

from __future__ import annotations

import argparse
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
from benchmarks.generate_speed import build_model, load_passages  # noqa: E402
from genq.batch_sizing import HalvingBatches  # noqa: E402
from genq.generate import GenerationConfig, QueryGenerator  # noqa: E402
from genq.generation.run import batches_by_length  # noqa: E402


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    from benchmarks.common import machine

    return machine()


def one_pass(generator: QueryGenerator, passages: list[dict], size: int) -> tuple[float, int]:
    """Seconds to sample every passage at batch ``size``, and the batch the run ended with."""
    batching = HalvingBatches(size, generator.device, "sweep")
    if generator.device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    for batch in batches_by_length(iter(passages), batching, generator, window=32):
        batching.run(lambda part: generator.sample(part, seed=0), batch)
    if generator.device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - started, batching.size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", nargs="+", default=["4", "8", "16", "32"], help="Batch sizes; 'auto' allowed.")
    parser.add_argument("--passages", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    passages = load_passages(args.passages)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "t5-base-random"
        build_model(model_dir, passages)
        generator = QueryGenerator(GenerationConfig(model=str(model_dir), dtype=args.dtype, max_length=64,
                                                    device=args.device))
        sizes = [generator.auto_batch_size() if s == "auto" else int(s) for s in args.sizes]
        labels = [f"auto ({size})" if s == "auto" else str(size) for s, size in zip(args.sizes, sizes)]
        one_pass(generator, passages[: max(sizes)], max(sizes))  # warm-up: allocator, kernels, caches
        seconds: dict[str, list[float]] = {label: [] for label in labels}
        ended: dict[str, int] = {}
        peak: dict[str, float] = {}
        for round_number in range(args.rounds):
            order = list(range(len(sizes)))
            order = order[round_number % len(order):] + order[:round_number % len(order)]
            for i in order:
                if generator.device.startswith("cuda"):
                    torch.cuda.reset_peak_memory_stats()
                took, ended[labels[i]] = one_pass(generator, passages, sizes[i])
                seconds[labels[i]].append(took)
                if generator.device.startswith("cuda"):
                    peak[labels[i]] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
                print(f"round {round_number + 1}: batch {labels[i]}: {len(passages) / took:.2f} passages/s",
                      flush=True)
    rows = []
    for label in labels:
        median = statistics.median(seconds[label])
        rows.append({"batch": label, "passages_per_s": round(len(passages) / median, 3),
                     "rounds_seconds": [round(x, 2) for x in seconds[label]], "ended_at_batch": ended[label],
                     "peak_gib": peak.get(label)})
    best = max(r["passages_per_s"] for r in rows)
    for row in rows:
        row["vs_best"] = round(row["passages_per_s"] / best, 3)
    report = {"device": device_name(args.device), "python": platform.python_version(), "torch": torch.__version__,
              "dtype": str(generator.dtype).removeprefix("torch."), "passages": len(passages), "rounds": args.rounds,
              "command": "python benchmarks/batch_sweep.py " + " ".join(sys.argv[1:]), "rows": rows}
    out = args.out or ROOT / "benchmarks" / "results" / f"batch_sweep_{args.device.split(':')[0]}"
    lines = [f"# Generation throughput by batch size ({args.device})", "",
             f"`{report['command']}` on {report['device']}, {report['dtype']}, torch {report['torch']}: a random "
             f"T5-base-shaped generator, {len(passages)} Cranfield passages x 3 queries x 64 tokens, median of "
             f"{args.rounds} alternating rounds.", "",
             "| batch | passages/s | vs best | peak GiB | rounds (s) |", "|---|---:|---:|---:|---|"]
    for row in rows:
        lines.append(f"| {row['batch']} | {row['passages_per_s']:.2f} | {row['vs_best']:.2f} | "
                     f"{row['peak_gib'] if row['peak_gib'] is not None else '-'} | "
                     f"{', '.join(map(str, row['rounds_seconds']))} |")
    write_results(out.stem, report, "\n".join(lines) + "\n", out.parent)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
