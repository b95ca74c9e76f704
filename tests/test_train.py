import json

import pytest
from click.testing import CliRunner

from genq.cli import main
from genq.io import DataError, GenqError
from genq.train import TrainConfig, in_batch_duplicates, read_training_pairs, split_by_passage, train_bi_encoder

from .conftest import SHARED_IR, write_jsonl

QUERIES = {
    "chain": ["how to oil a chain", "chain noise", "clean chain"],
    "brake": ["brake lever loose", "replace brake pad", "worn pad"],
    "tyre": ["tyre pressure pump", "inflate tyre", "right pressure"],
    "gear": ["gear does not shift", "adjust gear cable", "shift cable"],
    "saddle": ["saddle bolt torque", "tighten saddle", "saddle height"],
    "tube": ["flat tyre patch", "patch tube", "tube repair"],
}


def pairs_file(tmp_path, negatives=False):
    records = []
    names = list(QUERIES)
    for index, (name, queries) in enumerate(QUERIES.items()):
        for query in queries:
            record = {"query": query, "passage_id": name, "passage": f"{name} text about the {name}", "title": name}
            if negatives:
                other = names[(index + 1) % len(names)]
                record["negatives"] = [{"passage_id": other, "title": other, "text": f"{other} text"}]
            records.append(record)
    return write_jsonl(tmp_path / "pairs.jsonl", records)


def small_config(model_dir, **overrides):
    options = dict(base_model=str(model_dir), batch_size=4, epochs=1, max_seq_length=32, eval_share=0.0,
                   save_steps=2, logging_steps=1, device="cpu")
    options.update(overrides)
    return TrainConfig(**options)


def test_train_saves_a_loadable_model(tmp_path, tiny_encoder_dir):
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "model"
    summary = train_bi_encoder(pairs_file(tmp_path), out, small_config(tiny_encoder_dir), progress=False)
    assert summary.train_pairs == 18 and summary.steps > 0 and summary.final_loss is not None
    model = SentenceTransformer(str(out), device="cpu")
    assert model.encode(["chain noise"]).shape == (1, 32)
    log = json.loads((out / "training_log.json").read_text())
    assert any("loss" in entry for entry in log["log_history"])
    assert (out / "loss_curve.png").stat().st_size > 1000
    card = (out / "README.md").read_text()
    assert "Trained with genq" in card and str(tiny_encoder_dir) in card and "MultipleNegativesRankingLoss" in card


def test_training_changes_the_weights_and_uses_negatives(tmp_path, tiny_encoder_dir):
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "model"
    summary = train_bi_encoder(pairs_file(tmp_path, negatives=True), out,
                               small_config(tiny_encoder_dir, lr=1e-3), progress=False)
    assert summary.negatives_per_pair == 1
    before = SentenceTransformer(str(tiny_encoder_dir), device="cpu").encode(["chain noise"])
    after = SentenceTransformer(str(out), device="cpu").encode(["chain noise"])
    assert abs(before - after).max() > 1e-4


def test_held_out_split_is_by_passage():
    rows = [{"query": f"q{i}", "passage": "p", "passage_id": f"p{i % 50}", "negatives": []} for i in range(500)]
    train, held = split_by_passage(rows, 0.2, seed=1)
    assert held and not {r["passage_id"] for r in train} & {r["passage_id"] for r in held}


def test_in_batch_duplicate_count():
    assert in_batch_duplicates(["a", "b", "c", "d"], 4, seed=0) == 0
    assert in_batch_duplicates(["a", "a", "a", "a"], 4, seed=0) == 3


def test_eval_share_reports_metrics(tmp_path, tiny_encoder_dir):
    records = [{"query": f"question {i} about {w}", "passage_id": f"p{i}", "passage": f"{w} passage {i}"}
               for i, w in enumerate(["chain", "brake", "tyre", "gear", "hub", "disc"] * 25)]
    summary = train_bi_encoder(write_jsonl(tmp_path / "p.jsonl", records), tmp_path / "m",
                               small_config(tiny_encoder_dir, eval_share=0.2), progress=False)
    assert summary.eval_pairs >= 20 and any("ndcg@10" in k for k in summary.eval_metrics)
    # a handful of held-out pairs makes no metric: they train instead, and the card reports none
    summary = train_bi_encoder(write_jsonl(tmp_path / "few.jsonl", records[:30]), tmp_path / "few",
                               small_config(tiny_encoder_dir, eval_share=0.2), progress=False)
    assert summary.eval_pairs == 0 and summary.train_pairs == 30 and not summary.eval_metrics
    assert "Held-out" not in (tmp_path / "few" / "README.md").read_text()


def test_short_runs_still_log_a_loss_curve_and_leave_no_checkpoints(tmp_path, tiny_encoder_dir):
    records = [{"query": f"question {i} about {w}", "passage_id": f"p{i}", "passage": f"{w} passage {i}"}
               for i, w in enumerate(["chain", "brake", "tyre", "gear", "hub", "disc"] * 2)]
    out = tmp_path / "m"
    summary = train_bi_encoder(write_jsonl(tmp_path / "p.jsonl", records), out,
                               small_config(tiny_encoder_dir, eval_share=0, logging_steps=10), progress=False)
    log = json.loads((out / "training_log.json").read_text())["log_history"]
    assert summary.steps >= 2 and len([h for h in log if "loss" in h]) >= 2  # every step logged on a short run
    assert summary.final_loss is not None
    assert not (out / "checkpoints").exists()  # optimizer state does not bloat the finished model
    assert "https://github.com/)" not in (out / "README.md").read_text()
    assert (out / "loss_curve.png").stat().st_size > 5000


def test_output_dir_protection_and_resume(tmp_path, tiny_encoder_dir, caplog):
    from sentence_transformers import SentenceTransformer

    from genq.models import resolve_model

    pairs = pairs_file(tmp_path)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    for overwrite in (False, True):  # a folder genq did not write is never replaced, not even with --overwrite
        with pytest.raises(GenqError, match="never replaces what it did not write"):
            train_bi_encoder(pairs, foreign, small_config(tiny_encoder_dir), overwrite=overwrite, progress=False)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]

    out = tmp_path / "model"
    # killed during the final model save: checkpoints stay, the record says unfinished
    real_save = SentenceTransformer.save

    def killed(self, path, *args, **kwargs):  # the final save, not a checkpoint's
        if "checkpoint-" not in str(path):
            raise KeyboardInterrupt
        return real_save(self, path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SentenceTransformer, "save", killed)
        with pytest.raises(KeyboardInterrupt):
            train_bi_encoder(pairs, out, small_config(tiny_encoder_dir), progress=False)
    assert json.loads((out / "genq_training.json").read_text())["complete"] is False
    with caplog.at_level("WARNING"):
        resolve_model(str(out))  # what `genq index -m` does first
    assert "unfinished training run" in caplog.text
    checkpoints = out / "checkpoints"
    newest = max(checkpoints.iterdir(), key=lambda p: int(p.name.split("-")[1]))
    # a later save killed half-way, and the newest save's optimizer state cut short
    (checkpoints / "checkpoint-99").mkdir()
    (checkpoints / "checkpoint-99" / "config.json").write_text("{}")
    optimizer = newest / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:100])
    with pytest.raises(GenqError, match=r"other settings \(--lr: "):
        train_bi_encoder(pairs, out, small_config(tiny_encoder_dir, lr=1e-3), progress=False)
    with pytest.raises(GenqError, match="--resume"):
        train_bi_encoder(pairs, out, small_config(tiny_encoder_dir), progress=False)
    summary = train_bi_encoder(pairs, out, small_config(tiny_encoder_dir), resume=True, progress=False)
    assert summary.resumed_from and not summary.resumed_from.endswith(("checkpoint-99", newest.name))
    assert summary.steps == 5 and json.loads((out / "genq_training.json").read_text())["complete"] is True
    with pytest.raises(GenqError, match="finished training run"):
        train_bi_encoder(pairs, out, small_config(tiny_encoder_dir), resume=True, progress=False)

    # --overwrite: a typo fails before anything is touched; an interrupted retrain leaves the old model whole
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(GenqError, match="does not exist"):
        train_bi_encoder(pairs, out, small_config(tmp_path / "typo"), overwrite=True, progress=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SentenceTransformer, "save", killed)
        with pytest.raises(KeyboardInterrupt):
            train_bi_encoder(pairs, out, small_config(tiny_encoder_dir, lr=1e-3), overwrite=True, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".model") and p.name != ".model.lock"] == []
    summary = train_bi_encoder(pairs, out, small_config(tiny_encoder_dir, lr=1e-3), overwrite=True, progress=False)
    assert json.loads((out / "genq_training.json").read_text())["settings"]["lr"] == 1e-3


def test_bad_pairs(tmp_path, tiny_encoder_dir):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"query": "q", "passage": "p"}, {"question": "x", "passage": "p"}])
    with pytest.raises(DataError, match=r"bad.jsonl:2"):
        read_training_pairs(bad)
    runner = CliRunner()
    result = runner.invoke(main, ["train", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "m"),
                                  "--base-model", str(tiny_encoder_dir)])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = runner.invoke(main, ["train", str(bad), "-o", str(tmp_path / "m"), "--base-model",
                                  str(tiny_encoder_dir)])
    assert result.exit_code == 2 and "bad.jsonl:2" in result.output and "Traceback" not in result.output


def test_cli_train(tmp_path, tiny_encoder_dir):
    result = CliRunner().invoke(main, ["train", str(pairs_file(tmp_path)), "-o", str(tmp_path / "m"),
                                       "--base-model", str(tiny_encoder_dir), "--batch-size", "4",
                                       "--max-seq-length", "32", "--eval-share", "0", "--device", "cpu",
                                       "--loss", "cached-mnrl", "--mini-batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert "model saved to" in result.output


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_IR / "cranfield").exists(), reason="needs ../shared/data/ir/cranfield")
def test_real_cranfield_half_split(tmp_path):
    """Train MiniLM on real (query, relevant passage) pairs of half the queries; the other half must not get worse."""
    from benchmarks.train_cranfield import run

    result = run(tmp_path, max_steps=None)
    assert result["after"]["ndcg@10"] >= result["before"]["ndcg@10"] - 0.005


def test_two_process_data_parallel_training(tmp_path, tiny_encoder_dir):
    """`genq train` unchanged under torchrun: 2 CPU processes (gloo), one output, one summary; and --overwrite."""
    import os
    import subprocess
    import sys

    pairs = pairs_file(tmp_path)
    out = tmp_path / "model"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "genq",
               "train", str(pairs), "-o", str(out), "--base-model", str(tiny_encoder_dir), "--train-batch-size", "4",
               "--eval-share", "0", "--max-seq-length", "32", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for extra in ([], ["--overwrite", "--lr", "1e-4"]):
        result = subprocess.run(command + extra, capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stderr.count("trained 2 steps") == 1, result.stderr[-3000:]  # 18 pairs, 2 x 4 per step
        record = json.loads((out / "genq_training.json").read_text())
        assert record["complete"] and record["summary"]["steps"] == 2
    assert record["settings"]["lr"] == 1e-4
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".model") and p.name != ".model.lock"] == []
    from sentence_transformers import SentenceTransformer

    assert SentenceTransformer(str(out), device="cpu").encode(["oil the chain"]).shape == (1, 32)


def test_degenerate_training_data_is_counted_and_said(tmp_path, tiny_encoder_dir):
    from click.testing import CliRunner

    from genq.cli import main

    pairs = write_jsonl(tmp_path / "pairs.jsonl",
                        [{"query": "same", "passage_id": "p", "passage": "same passage",
                          "negatives": [{"passage_id": "n", "text": ""}]}] * 40
                        + [{"query": f"q{i}", "passage_id": f"p{i}", "passage": f"passage {i}"} for i in range(3)])
    result = CliRunner().invoke(main, ["train", str(pairs), "-o", str(tmp_path / "model"), "--base-model",
                                       str(tiny_encoder_dir), "--eval-share", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "39 pair(s) repeat another exactly" in result.output and "40 negative(s) have no text" in result.output
    record = json.loads((tmp_path / "model" / "genq_training.json").read_text())
    assert record["summary"]["pairs"] == 4

    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"_id": "p", "title": "", "text": "same passage"}])
    lonely = write_jsonl(tmp_path / "lonely.jsonl", [{"query": "same", "passage_id": "p", "passage": "same passage"}])
    result = CliRunner().invoke(main, ["mine-negatives", str(lonely), "--corpus", str(corpus), "-o",
                                       str(tmp_path / "neg.jsonl"), "--neg-retriever", "bm25"])
    assert result.exit_code == 0, result.output
    assert "no negatives were found for any pair" in result.output
