"""Title-only documents are text (issue 28), evaluate reuses corpus embeddings, and adapt records
an interrupted stage as interrupted even when nothing could catch the signal."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from genq.cli import main
from genq.corpus import iter_passage_file
from genq.evaluate import bm25_run, evaluate_systems, load_collection, score_run

from .conftest import write_jsonl


def title_only_collection(root):
    """Half the documents have a title and an empty text, as in CACM; one has neither."""
    root.mkdir(parents=True, exist_ok=True)
    write_jsonl(root / "corpus.jsonl", [
        {"_id": "1", "title": "Oiling a squeaking chain", "text": ""},
        {"_id": "2", "title": "Brakes", "text": "replace worn brake pads and adjust the brake cable"},
        {"_id": "3", "title": "Tubeless tyre sealant refill", "text": "  \t "},
        {"_id": "4", "title": "Saddle", "text": "set saddle height so the knee is slightly bent"},
        {"_id": "5", "title": "  ", "text": "\u0000"},
    ])
    write_jsonl(root / "queries.jsonl", [{"_id": "q1", "text": "squeaking chain"},
                                         {"_id": "q2", "text": "tyre sealant"},
                                         {"_id": "q3", "text": "saddle height"}])
    (root / "qrels").mkdir(exist_ok=True)
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\t1\t1\nq2\t3\t1\nq3\t4\t1\n"
                                             "q3\t5\t1\nq3\t99\t1\n")
    return root


def test_a_title_only_passage_is_read_with_its_title_as_text(tmp_path):
    root = title_only_collection(tmp_path / "c")
    empty_ids: set[str] = set()
    passages = {p["_id"]: p for p in iter_passage_file(root / "corpus.jsonl", empty_ids=empty_ids)}
    assert set(passages) == {"1", "2", "3", "4"} and empty_ids == {"5"}
    assert passages["1"]["text"] == "Oiling a squeaking chain" and passages["1"]["title"] == ""
    assert passages["2"]["title"] == "Brakes"  # a document with text keeps its title


def test_evaluate_keeps_title_only_documents_and_names_what_it_skipped(tmp_path):
    collection = load_collection(title_only_collection(tmp_path / "c"))
    assert len(collection.corpus) == 4
    assert collection.qrels["q1"] == {"1": 1} and collection.qrels["q2"] == {"3": 1}
    assert any("1 qrels lines name a document with neither title nor text" in n for n in collection.notes)
    assert any("1 qrels lines name an unknown query or document" in n for n in collection.notes)
    means, per_query = score_run(collection.qrels, bm25_run(collection))
    assert per_query["q1"]["ndcg@10"] == 1.0 and per_query["q2"]["ndcg@10"] == 1.0  # found by their titles


def test_prepare_indexes_title_only_documents(tmp_path, tiny_encoder_dir):
    raw = write_jsonl(tmp_path / "raw.jsonl", [{"id": "a", "title": "Truing a wheel", "text": ""},
                                               {"id": "b", "title": "Chain", "text": "oil the chain"},
                                               {"id": "c", "title": "", "text": " "}])
    out = tmp_path / "passages.jsonl"
    result = CliRunner().invoke(main, ["corpus", "prepare", str(raw), "-o", str(out), "--tokenizer", "words"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["_id"], r["title"], r["text"]) for r in records] == [("a", "", "Truing a wheel"),
                                                                      ("b", "Chain", "oil the chain")]
    from genq.index import build_index
    from genq.search import Searcher

    build_index(out, str(tiny_encoder_dir), tmp_path / "index", dtype="float32", progress=False)
    hits = Searcher.load(tmp_path / "index", dtype="float32").search("truing wheel", k=1)
    assert hits[0].id == "a"


def test_generate_writes_queries_for_title_only_passages(tmp_path, tiny_t5_dir):
    from genq.generate import GenerationConfig, generate_pairs

    passages = write_jsonl(tmp_path / "p.jsonl", [{"_id": "a", "title": "Truing a wheel", "text": ""},
                                                  {"_id": "b", "title": "", "text": ""}])
    summary = generate_pairs(passages, tmp_path / "pairs.jsonl",
                             GenerationConfig(model=str(tiny_t5_dir), queries_per_passage=2, max_length=6,
                                              device="cpu", dtype="float32"), progress=False)
    pairs = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert {p["passage_id"] for p in pairs} == {"a"} and pairs[0]["passage"] == "Truing a wheel"
    assert summary.passages_without_text == 1


def test_evaluate_reuses_corpus_embeddings_and_notices_new_weights(tmp_path, tiny_encoder_dir):
    import shutil

    import torch
    from sentence_transformers import SentenceTransformer

    root = title_only_collection(tmp_path / "c")
    model = tmp_path / "model"
    shutil.copytree(tiny_encoder_dir, model)
    cache = tmp_path / "cache"
    first = evaluate_systems(root, models=[str(model)], progress=False, dtype="float32", cache_dir=cache)
    assert first["reused_embeddings"] == {} and len(list(cache.glob("corpus-*.npy"))) == 1
    second = evaluate_systems(root, models=[str(model)], progress=False, dtype="float32", cache_dir=cache)
    assert list(second["reused_embeddings"]) == [str(model)]
    assert second["systems"][0]["metrics"] == first["systems"][0]["metrics"]

    # the same path with other weights (retrained in place): encoded again, not served stale vectors
    changed = SentenceTransformer(str(model), device="cpu")
    with torch.no_grad():
        for parameter in changed.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    changed.save(str(model))
    third = evaluate_systems(root, models=[str(model)], progress=False, dtype="float32", cache_dir=cache)
    assert third["reused_embeddings"] == {} and len(list(cache.glob("corpus-*.npy"))) == 2

    # a damaged cache file is encoded again with a warning, never a traceback
    for path in cache.glob("corpus-*.npy"):
        path.write_bytes(path.read_bytes()[:50])
    fourth = evaluate_systems(root, models=[str(model)], progress=False, dtype="float32", cache_dir=cache)
    assert fourth["reused_embeddings"] == {} and fourth["systems"][0]["metrics"] == third["systems"][0]["metrics"]


def test_evaluate_cli_says_when_it_reused_embeddings(tmp_path, tiny_encoder_dir, monkeypatch):
    root = title_only_collection(tmp_path / "c")
    monkeypatch.chdir(tmp_path)
    args = ["evaluate", "--eval-data", str(root), "--model", str(tiny_encoder_dir), "--dtype", "float32"]
    runner = CliRunner()
    first = runner.invoke(main, args)
    assert first.exit_code == 0, first.output and "reused" not in first.output
    assert list((tmp_path / ".genq-cache").glob("corpus-*.npy"))
    second = runner.invoke(main, args)
    assert second.exit_code == 0 and "corpus embeddings of" in second.output and "reused from" in second.output
    third = runner.invoke(main, [*args, "--no-cache"])
    assert third.exit_code == 0 and "reused" not in third.output


def _manifest(run_dir):
    return json.loads((run_dir / "manifest.json").read_text())


ADAPT_SCRIPT = """
import sys, time
from genq.cli import main
from genq.training_run import Processes
real = Processes.agree
def slow(self, decide):  # the training stage starts, then waits to be signalled
    print("TRAINING", flush=True)
    time.sleep(120)
    return real(self, decide)
Processes.agree = slow
sys.argv = ["genq"] + sys.argv[1:]
main()
"""


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_adapt_records_an_interrupted_stage(tmp_path, tiny_t5_dir, tiny_encoder_dir, how):
    corpus = write_jsonl(tmp_path / "docs.jsonl", [{"id": f"d{i}", "text": f"clean the chain number {i} with oil"}
                                                    for i in range(6)])
    run_dir = tmp_path / "run"
    args = ["adapt", str(corpus), "-o", str(run_dir), "--tokenizer", "words", "--generator", str(tiny_t5_dir),
            "--max-length", "6", "--base-model", str(tiny_encoder_dir), "--train-batch-size", "4",
            "--max-seq-length", "32", "--eval-share", "0", "--device", "cpu", "--dtype", "float32",
            "--quality-sample", "0", "--epochs", "1"]
    script = tmp_path / "genq_adapt_slow.py"
    script.write_text(ADAPT_SCRIPT)
    process = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seen = []
    deadline = time.monotonic() + 240
    for line in process.stdout:
        seen.append(line)
        if "TRAINING" in line or time.monotonic() > deadline:
            break
    assert any("TRAINING" in line for line in seen), "".join(seen)
    assert _manifest(run_dir)["stages"]["train"]["status"] == "running"
    assert _manifest(run_dir)["stages"]["train"]["pid"] == process.pid
    process.send_signal(signal.SIGTERM if how == "SIGTERM" else signal.SIGKILL)
    rest = process.communicate(timeout=60)[0]
    if how == "SIGTERM":
        assert process.returncode == 130 and "Traceback" not in rest, rest
        entry = _manifest(run_dir)["stages"]["train"]
        assert entry["status"] == "interrupted" and entry["error"] == "interrupted"
    else:
        assert _manifest(run_dir)["stages"]["train"]["status"] == "running"  # nothing could write it
        result = CliRunner().invoke(main, [*args, "--lr", "1e-4"])  # the next run settles it first
        assert result.exit_code == 0, result.output
        assert _manifest(run_dir)["stages"]["train"]["status"] == "done"
    # the next run continues and finishes
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert all(entry["status"] == "done" for entry in _manifest(run_dir)["stages"].values())


def test_a_second_adapt_on_a_running_directory_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time, genq; time.sleep(60)"])
    try:
        (run_dir / "manifest.json").write_text(json.dumps({"genq_version": "x", "input": "docs.jsonl", "stages": {
            "generate": {"status": "running", "params": {}, "pid": holder.pid}}}))
        from genq.pipeline import Manifest

        with pytest.raises(Exception, match=f"running in process {holder.pid}"):
            Manifest(run_dir, "docs.jsonl")
    finally:
        holder.kill()
        holder.wait()
    manifest = Manifest(run_dir, "docs.jsonl")  # that process is gone: the stage was interrupted
    assert manifest.data["stages"]["generate"]["status"] == "interrupted"
    assert "ended before the stage finished" in _manifest(run_dir)["stages"]["generate"]["error"]
