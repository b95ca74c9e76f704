"""Query-generation speed as a user meets it: whole processes, start to written file.

``generate_speed.py`` times loops inside one warm process, load excluded. A user runs a
command: Python starts, imports torch and transformers, loads (and on a first start
converts) the model, generates, writes. This benchmark times exactly that, for two systems
on the same randomly initialised T5-base-shaped model and the same Cranfield passages:

* the sentence-transformers GenQ example (``examples/unsupervised_learning/query_generation``:
  fp32, 8 paragraphs per ``generate`` call, corpus order), run as its own process that writes
  its queries to a TSV as the example does;
* ``genq generate CORPUS -o PAIRS --generator MODEL`` with every setting on its default
  (``--backend auto``, ``--dtype auto``, ``--gen-batch-size auto``, the round-trip quality
  sample included), with the model's CTranslate2 copy already in the cache (a second start;
  the first start's conversion is timed once, apart).

Each size runs ``--rounds`` rounds, the two systems alternating which goes first; the
speed-up of a round is the example's seconds over genq's. Peak resident memory comes from
the kernel's accounting of each child process (``wait4``).

    python benchmarks/generate_process_speed.py --sizes 16 1000 --rounds 3 1
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import command_line, machine, write_results  # noqa: E402
from benchmarks.generate_speed import build_model, load_passages  # noqa: E402

EXAMPLE = "sentence-transformers GenQ example (process)"
GENQ = "genq generate, defaults (process)"


def run_example(model_dir: str, corpus: str, output: str) -> None:
    """The example as its own process: read the corpus, generate, write query<TAB>passage lines."""
    import torch
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    with open(corpus, encoding="utf-8") as handle:
        passages = [json.loads(line) for line in handle]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = T5ForConditionalGeneration.from_pretrained(model_dir)
    model.eval()
    torch.manual_seed(0)
    with open(output, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        with torch.no_grad():
            for start in range(0, len(passages), 8):
                paragraphs = [p["text"] for p in passages[start:start + 8]]
                inputs = tokenizer(paragraphs, max_length=350, truncation=True, padding=True, return_tensors="pt")
                outputs = model.generate(**inputs, max_length=64, do_sample=True, top_p=0.95, top_k=25,
                                         num_return_sequences=3)
                for number, query in enumerate(tokenizer.batch_decode(outputs, skip_special_tokens=True)):
                    writer.writerow([query.strip(), paragraphs[number // 3]])


def timed_process(command: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one child process, which must succeed."""
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    errors = child.stderr.read() if child.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{errors[-3000:]}")
    return seconds, usage.ru_maxrss / 1024


def write_corpus(path: Path, size: int) -> Path:
    with open(path, "w", encoding="utf-8") as handle:
        for passage in load_passages(size):
            handle.write(json.dumps(passage) + "\n")
    return path


def genq_command(model_dir: Path, corpus: Path, output: Path) -> list[str]:
    return [sys.executable, "-m", "genq", "generate", str(corpus), "-o", str(output), "--generator", str(model_dir),
            "--overwrite"]


def measure_size(size: int, rounds: int, model_dir: Path, work: Path, env: dict) -> dict:
    corpus = write_corpus(work / f"corpus-{size}.jsonl", size)
    commands = {EXAMPLE: [sys.executable, __file__, "--run-example", str(model_dir), str(corpus),
                          str(work / f"example-{size}.tsv")],
                GENQ: genq_command(model_dir, corpus, work / f"genq-{size}.jsonl")}
    seconds: dict[str, list[float]] = {name: [] for name in commands}
    memory: dict[str, float] = {}
    for round_number in range(rounds):
        order = list(commands) if round_number % 2 == 0 else list(reversed(commands))
        for name in order:
            took, peak = timed_process(commands[name], env)
            seconds[name].append(took)
            memory[name] = max(memory.get(name, 0.0), peak)
            print(f"{size} passages, round {round_number + 1}: {name}: {took:.1f} s, {peak:.0f} MiB", flush=True)
    meta = json.loads((work / f"genq-{size}.meta.json").read_text())
    ratios = [example / own for example, own in zip(seconds[EXAMPLE], seconds[GENQ])]
    return {"passages": size, "rounds": rounds,
            "seconds": {name: [round(x, 1) for x in values] for name, values in seconds.items()},
            "peak_rss_mib": {name: round(value) for name, value in memory.items()},
            "speedup_median": round(statistics.median(ratios), 2), "speedup_per_round": [round(r, 2) for r in ratios],
            "genq_resolved": {key: meta["execution"][key] for key in ("backend", "dtype", "batch_size")},
            "genq_generating_seconds": meta["wall_seconds"], "genq_pairs_written": meta["counts"]["pairs"]}


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--run-example":
        run_example(*sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 1000])
    parser.add_argument("--rounds", type=int, nargs="+", default=[3, 1],
                        help="Rounds per size, in the order of --sizes (the last repeats).")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {**os.environ, "GENQ_CACHE_DIR": str(work / "cache"), "HF_HUB_OFFLINE": "1",
               "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        model_dir = work / "t5-base-random"
        # a tokenizer as large as the passages allow (~23k entries): sampled ids decode to words, so queries
        # are kept and written as a real run's are (an 8k tokenizer leaves most of the 32k ids without text)
        build_model(model_dir, load_passages(max(args.sizes)), vocab_size=32000)
        write_corpus(work / "warm.jsonl", 2)
        first_start, _ = timed_process(genq_command(model_dir, work / "warm.jsonl", work / "warm-pairs.jsonl"), env)
        print(f"first start (conversion + 2 passages): {first_start:.1f} s", flush=True)
        for index, size in enumerate(args.sizes):
            rounds = args.rounds[min(index, len(args.rounds) - 1)]
            rows.append(measure_size(size, rounds, model_dir, work, env))
    payload = {"machine": machine(), "command": command_line(),
               "model": "T5-base config, random weights, WordPiece tokenizer trained on the passages (up to 32,000 "
                        "entries)", "first_start_seconds": round(first_start, 1), "rows": rows}
    lines = ["# Query generation speed, whole processes (start to written file)", "",
             f"Command: `{payload['command']}`  ", f"Machine: {payload['machine']}, alone.", "",
             "Each row: the sentence-transformers GenQ example as a process against `genq generate` with every "
             "setting on its default, same random T5-base-shaped model, same Cranfield passages; rounds alternate "
             "which runs first; speed-up = the example's seconds over genq's in the same round.", "",
             "| passages | rounds | example s | genq s (of which generating) | speed-up (median) | per round | "
             "genq chose | pairs written | peak RSS example / genq (MiB) |",
             "|---:|---:|---|---|---:|---|---|---:|---|"]
    for row in rows:
        chosen = ", ".join(f"{key} {value}" for key, value in row["genq_resolved"].items()) or "-"
        lines.append(f"| {row['passages']} | {row['rounds']} | {row['seconds'][EXAMPLE]} | {row['seconds'][GENQ]} "
                     f"({row['genq_generating_seconds']}) | {row['speedup_median']}x | {row['speedup_per_round']} | "
                     f"{chosen} | {row['genq_pairs_written']} | "
                     f"{row['peak_rss_mib'][EXAMPLE]} / {row['peak_rss_mib'][GENQ]} |")
    lines += ["", "genq's first start on a model (CTranslate2 conversion, then 2 passages): "
              f"{payload['first_start_seconds']} s; later starts reuse the cached copy, as the rows above do."]
    write_results("generate_process_speed", payload, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
