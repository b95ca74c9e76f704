import json

from click.testing import CliRunner

from genq.cli import main
from genq.search import Searcher

from .conftest import write_tiny_collection


def adapt_args(raw_corpus, run_dir, tiny_t5_dir, tiny_encoder_dir, *extra):
    return ["adapt", str(raw_corpus), "-o", str(run_dir), "--tokenizer", "words", "--generator", str(tiny_t5_dir),
            "--max-length", "6", "--base-model", str(tiny_encoder_dir), "--train-batch-size", "4",
            "--max-seq-length", "32", "--eval-share", "0", "--device", "cpu", "--dtype", "float32", *extra]


def stage_status(output: str) -> dict[str, str]:
    statuses = {}
    for line in output.splitlines():
        if line.startswith("[") and "] " in line:
            name, rest = line[1:].split("] ", 1)
            if "skipped" in rest:
                statuses[name] = "skipped"
            elif " in " in rest:
                statuses[name] = rest.split(" in ")[0]
    return statuses


def test_adapt_end_to_end_skip_and_rerun_on_change(tmp_path, raw_corpus, tiny_t5_dir, tiny_encoder_dir):
    run_dir = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(main, adapt_args(raw_corpus, run_dir, tiny_t5_dir, tiny_encoder_dir))
    assert result.exit_code == 0, result.output
    assert stage_status(result.output) == {"prepare": "ran", "generate": "ran", "train": "ran", "index": "ran"}
    assert "genq serve" in result.output
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [manifest["stages"][s]["status"] for s in ("prepare", "generate", "train", "index")] == ["done"] * 4
    assert len(Searcher.load(run_dir / "index", dtype="float32")) == 10

    # the same command again: every stage skipped
    result = runner.invoke(main, adapt_args(raw_corpus, run_dir, tiny_t5_dir, tiny_encoder_dir))
    assert result.exit_code == 0, result.output
    assert set(stage_status(result.output).values()) == {"skipped"}

    # a training parameter changes: prepare and generate are kept, train and index run again
    result = runner.invoke(main, adapt_args(raw_corpus, run_dir, tiny_t5_dir, tiny_encoder_dir, "--lr", "1e-4"))
    assert result.exit_code == 0, result.output
    assert stage_status(result.output) == {"prepare": "skipped", "generate": "skipped", "train": "ran", "index": "ran"}

    # a filter stage is added between generate and train
    result = runner.invoke(main, adapt_args(raw_corpus, run_dir, tiny_t5_dir, tiny_encoder_dir, "--lr", "1e-4",
                                            "--filter-min-score", "-1"))
    assert result.exit_code == 0, result.output
    statuses = stage_status(result.output)
    assert statuses["generate"] == "skipped" and statuses["filter"] == "ran" and statuses["train"] == "ran"


def test_adapt_continues_interrupted_generation(tmp_path, raw_corpus, tiny_t5_dir, tiny_encoder_dir, monkeypatch):
    from genq.generate import QueryGenerator

    run_dir = tmp_path / "run"
    runner = CliRunner()
    real_sample, calls = QueryGenerator.sample, []

    def interrupted(self, batch, seed):  # Ctrl-C during the second batch
        calls.append(len(batch))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_sample(self, batch, seed)

    monkeypatch.setattr(QueryGenerator, "sample", interrupted)
    args = adapt_args(raw_corpus, run_dir, tiny_t5_dir, tiny_encoder_dir, "--gen-batch-size", "4", "--backend", "torch")
    result = runner.invoke(main, args)
    assert result.exit_code == 130 and not (run_dir / "pairs.jsonl").exists(), result.output
    monkeypatch.setattr(QueryGenerator, "sample", real_sample)
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    statuses = stage_status(result.output)
    assert statuses["prepare"] == "skipped" and statuses["generate"] == "resumed" and statuses["train"] == "ran"
    ids = [json.loads(x)["passage_id"] for x in (run_dir / "pairs.jsonl").read_text().splitlines()]
    assert len(set(ids)) == 10
    meta = json.loads((run_dir / "pairs.meta.json").read_text())
    assert meta["counts"]["pairs"] == len(ids) and meta["counts"]["passages_done"] == 10
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["generate"]["summary"]["pairs_in_file"] == len(ids)


def test_adapt_with_negatives_and_evaluation(tmp_path, raw_corpus, tiny_t5_dir, tiny_encoder_dir):
    eval_dir = write_tiny_collection(tmp_path / "eval-data")
    config = tmp_path / "adapt.toml"
    config.write_text('hard-negatives = 1\nneg-range-min = 0\nqueries-per-passage = 2\n')
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, adapt_args(raw_corpus, run_dir, tiny_t5_dir, tiny_encoder_dir, "--config",
                                                 str(config), "--eval-data", str(eval_dir)))
    assert result.exit_code == 0, result.output
    statuses = stage_status(result.output)
    assert statuses["negatives"] == "ran" and statuses["evaluate"] == "ran"
    pair = json.loads((run_dir / "pairs.negatives.jsonl").read_text().splitlines()[0])
    assert "negatives" in pair
    report = json.loads((run_dir / "eval" / "results.json").read_text())
    assert [s["name"] for s in report["systems"]] == ["BM25", "base", "adapted", "hybrid(base)", "hybrid(adapted)"]
    meta = json.loads((run_dir / "pairs.meta.json").read_text())
    assert meta["parameters"]["queries_per_passage"] == 2


def test_adapt_bad_config_and_missing_corpus(tmp_path, tiny_t5_dir, tiny_encoder_dir):
    config = tmp_path / "bad.toml"
    config.write_text("no-such-option = 1\n")
    result = CliRunner().invoke(main, ["adapt", str(tmp_path / "x.jsonl"), "-o", str(tmp_path / "r"), "--config",
                                       str(config)])
    assert result.exit_code == 2 and "unknown option" in result.output
    result = CliRunner().invoke(main, ["adapt", str(tmp_path / "x.jsonl"), "-o", str(tmp_path / "r")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_a_setting_added_by_a_newer_genq_does_not_redo_finished_stages(tmp_path, raw_corpus, tiny_t5_dir,
                                                                        tiny_encoder_dir):
    run_dir = tmp_path / "run"
    runner = CliRunner()
    assert runner.invoke(main, adapt_args(raw_corpus, run_dir, tiny_t5_dir, tiny_encoder_dir)).exit_code == 0
    # a manifest written before prepare had its "dedup" setting
    manifest = json.loads((run_dir / "manifest.json").read_text())
    del manifest["stages"]["prepare"]["params"]["dedup"]
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    result = runner.invoke(main, adapt_args(raw_corpus, run_dir, tiny_t5_dir, tiny_encoder_dir))
    assert result.exit_code == 0 and set(stage_status(result.output).values()) == {"skipped"}
    # choosing the non-default value does rerun it
    result = runner.invoke(main, adapt_args(raw_corpus, run_dir, tiny_t5_dir, tiny_encoder_dir, "--keep-duplicates"))
    assert result.exit_code == 0 and stage_status(result.output)["prepare"] == "ran"


def test_a_run_directory_written_before_the_stage_list_resumes(tmp_path, tiny_t5_dir, tiny_encoder_dir):
    """A run written by genq 0.1.0 as it was before ``adapt`` became a list of stages (commit 96ad994), interrupted
    in training: the same command continues it, keeping every finished stage. Its paths are stored as @ROOT@."""
    import shutil
    from pathlib import Path

    recorded = Path(__file__).parent / "data" / "run-before-stage-list"
    shutil.copytree(recorded, tmp_path, dirs_exist_ok=True)
    for path in tmp_path.rglob("*.json"):
        path.write_text(path.read_text().replace("@ROOT@", str(tmp_path)))
    shutil.copytree(tiny_t5_dir, tmp_path / "models" / "t5")
    shutil.copytree(tiny_encoder_dir, tmp_path / "models" / "encoder")
    run_dir = tmp_path / "run"
    before = {name: (run_dir / name).read_bytes() for name in ("passages.jsonl", "pairs.jsonl",
                                                                 "pairs.filtered.jsonl", "pairs.negatives.jsonl")}
    args = adapt_args(tmp_path / "docs.jsonl", run_dir, tmp_path / "models" / "t5", tmp_path / "models" / "encoder",
                      "--filter-min-score", "-1", "--num-negatives", "1", "--neg-range-min", "0",
                      "--queries-per-passage", "2", "--backend", "torch")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert stage_status(result.output) == {"prepare": "skipped", "generate": "skipped", "filter": "skipped",
                                           "negatives": "skipped", "train": "ran", "index": "ran"}
    assert {name: (run_dir / name).read_bytes() for name in before} == before
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert {name: entry["status"] for name, entry in manifest["stages"].items()} == {
        name: "done" for name in ("prepare", "generate", "filter", "negatives", "train", "index")}
