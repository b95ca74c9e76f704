"""Training at the speed the hardware allows (issue 22): bf16 where native, the model's own length,
length-grouped batches that keep MultipleNegativesRankingLoss's no-duplicates rule."""

import json
import random

import pytest

from genq.batching import batches_by_length, length_grouped_sampler
from genq.hardware import training_bf16

from .conftest import write_jsonl


def test_length_grouped_batches_cover_every_row_once_without_duplicates():
    rng = random.Random(0)
    passages = [f"passage {i} " + "word " * rng.randint(1, 300) for i in range(400)]
    rows = [[f"query {i}", passages[i % 400]] for i in range(2000)]  # 5 queries per passage
    lengths = [len(r[1]) for r in rows]
    batches = batches_by_length(rows, lengths, 16, random.Random(1))
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(2000))  # every row once, none dropped
    for batch in batches:
        texts = [t for i in batch for t in rows[i]]
        assert len(texts) == len(set(texts))  # no passage (or query) twice in a batch
    assert len(batches) <= 2000 // 16 + 1  # the rows of one passage do not pile up into short batches


def test_grouping_removes_padding():
    rng = random.Random(0)
    rows = [[f"q{i}", f"{i:03d}" + "x" * rng.randint(10, 1000)] for i in range(512)]
    lengths = [len(r[1]) for r in rows]

    def padding(batches):
        padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
        return 1 - sum(lengths) / padded

    grouped = batches_by_length(rows, lengths, 32, random.Random(2))
    order = list(range(512))
    random.Random(2).shuffle(order)
    plain = [order[i:i + 32] for i in range(0, 512, 32)]
    assert padding(grouped) < padding(plain) / 3


def test_batches_are_reshuffled_each_epoch_and_reproducible():
    rows = [[f"q{i}", f"p{i}" * (i % 17 + 1)] for i in range(100)]
    sampler_class = length_grouped_sampler(rows)
    dataset = list(range(100))
    first = sampler_class(dataset, batch_size=8, drop_last=False, seed=3)
    again = sampler_class(dataset, batch_size=8, drop_last=False, seed=3)
    assert list(first) == list(again) and len(first) == len(list(first))
    first.set_epoch(1)
    assert list(first) != list(again)


def test_too_few_distinct_passages_still_places_every_row():
    rows = [["same query", "same passage"]] * 5 + [[f"q{i}", f"p{i}"] for i in range(3)]
    batches = batches_by_length(rows, [1] * 8, 4, random.Random(0))
    assert sorted(i for b in batches for i in b) == list(range(8))
    assert all(sum(rows[i] == ["same query", "same passage"] for i in b) <= 1 for b in batches)


def test_bf16_is_chosen_by_what_the_device_does(monkeypatch):
    import genq.hardware as hardware

    assert training_bf16(True, "cpu") is True and training_bf16(False, "cpu") is False  # as asked
    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda: True)
    assert training_bf16(None, "cpu") is True
    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda: False)
    assert training_bf16(None, "cpu") is False


@pytest.mark.parametrize("group", [True, False])
def test_training_records_precision_length_and_step_rate(tmp_path, tiny_encoder_dir, group):
    from genq.train import TrainConfig, train_bi_encoder

    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"query": f"question {i}", "passage_id": f"p{i % 6}", "passage": f"passage {i % 6} " + "text " * (i % 6 * 9)}
        for i in range(24)])
    config = TrainConfig(base_model=str(tiny_encoder_dir), batch_size=4, epochs=1, eval_share=0.0, bf16=False,
                         group_by_length=group, device="cpu")
    summary = train_bi_encoder(pairs, tmp_path / "model", config, progress=False)
    assert summary.max_seq_length == 128  # the tiny model's own, no --max-seq-length given
    assert summary.steps >= 6 and summary.seconds_per_step is not None and summary.seconds_per_step > 0
    assert 0 <= summary.padding_share < 1
    record = json.loads((tmp_path / "model" / "genq_training.json").read_text())
    assert record["precision"] == "float32" and record["settings"]["group_by_length"] is group
    assert record["summary"]["max_seq_length"] == 128


def test_bf16_training_runs_and_is_recorded(tmp_path, tiny_encoder_dir):
    from genq.train import TrainConfig, train_bi_encoder

    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"query": f"question {i}", "passage_id": f"p{i}", "passage": f"passage {i} text"} for i in range(8)])
    # no --device (what `genq train` and `adapt` pass by default): bf16 on a CPU must still train there
    config = TrainConfig(base_model=str(tiny_encoder_dir), batch_size=4, epochs=1, eval_share=0.0, bf16=True,
                         max_seq_length=32, device=None)
    summary = train_bi_encoder(pairs, tmp_path / "model", config, progress=False)
    assert summary.bf16 and summary.max_seq_length == 32
    record = json.loads((tmp_path / "model" / "genq_training.json").read_text())
    assert record["precision"] == "bf16 autocast"


def test_a_time_limit_stops_at_the_step_that_would_pass_it_and_saves_the_model(tmp_path, tiny_encoder_dir):
    from click.testing import CliRunner

    from genq.cli import main

    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"query": f"question {i}", "passage_id": f"p{i}", "passage": f"passage {i} text"} for i in range(16)])
    # any step takes longer than a millisecond: the limit is passed once the first step is done
    result = CliRunner().invoke(main, ["train", str(pairs), "-o", str(tmp_path / "model"), "--base-model",
                                       str(tiny_encoder_dir), "--train-batch-size", "4", "--max-steps", "4",
                                       "--eval-share", "0", "--time-limit", "0.001s", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "stopped at the time limit (0.001s) after 1 step" in result.output
    record = json.loads((tmp_path / "model" / "genq_training.json").read_text())
    assert record["complete"] and record["summary"]["steps"] == 1 and record["summary"]["stopped_at_time_limit"]
    assert (tmp_path / "model" / "config.json").exists()

    result = CliRunner().invoke(main, ["train", str(pairs), "-o", str(tmp_path / "other"), "--time-limit", "soon"])
    assert result.exit_code != 0 and "cannot read the duration 'soon'" in result.output


def test_trained_model_files_follow_the_umask(tmp_path, tiny_encoder_dir):
    import os

    from genq.train import TrainConfig, train_bi_encoder

    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"query": f"question {i}", "passage_id": f"p{i}", "passage": f"passage {i} text"} for i in range(8)])
    previous = os.umask(0o022)
    try:
        train_bi_encoder(pairs, tmp_path / "model", TrainConfig(base_model=str(tiny_encoder_dir), batch_size=4,
                                                                eval_share=0.0, device="cpu", bf16=False),
                         progress=False)
    finally:
        os.umask(previous)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "model").rglob("*") if p.is_file()}
    assert modes["model.safetensors"] == 0o644 and set(modes.values()) == {0o644}  # readable by a service user


def test_too_little_training_is_said_aloud(tmp_path, tiny_encoder_dir):
    from click.testing import CliRunner

    from genq.cli import main

    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"query": f"question {i}", "passage_id": f"p{i}", "passage": f"passage {i} text"} for i in range(7)])
    result = CliRunner().invoke(main, ["train", str(pairs), "-o", str(tmp_path / "model"), "--base-model",
                                       str(tiny_encoder_dir), "--eval-share", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "only 7 pairs and 1 optimizer step(s): too little to move the model" in result.output
    record = json.loads((tmp_path / "model" / "genq_training.json").read_text())
    assert record["summary"]["notes"]


def test_the_base_model_is_scored_on_the_held_out_queries_too(tmp_path, tiny_encoder_dir):
    from click.testing import CliRunner

    from genq.cli import main

    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"query": f"question {i}", "passage_id": f"p{i % 100}", "passage": f"passage {i % 100} text"}
        for i in range(200)])
    result = CliRunner().invoke(main, ["train", str(pairs), "-o", str(tmp_path / "model"), "--base-model",
                                       str(tiny_encoder_dir), "--eval-share", "0.3", "--max-steps", "2",
                                       "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "held-out synthetic queries" in result.output and "base" in result.output and "-> adapted" in result.output
    record = json.loads((tmp_path / "model" / "genq_training.json").read_text())["summary"]
    assert set(record["base_eval_metrics"]) == set(record["eval_metrics"])
