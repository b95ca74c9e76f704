"""An adapted cross-encoder reranker (issue 23): trained on the synthetic pairs, served with the run's index."""

import json

import pytest
from click.testing import CliRunner

from genq.cli import main
from genq.train_reranker import RerankerConfig, negatives_for, train_reranker

from .conftest import write_jsonl

TOPICS = ["chain", "brake", "tyre", "gear", "saddle", "tube", "hub", "disc"]


@pytest.fixture()
def reranker_pairs(tmp_path):
    """Two queries per passage; every second pair carries one mined negative."""
    records = []
    for i, topic in enumerate(TOPICS):
        for q in ("how to fix the", "what about my"):
            record = {"query": f"{q} {topic}", "passage_id": topic, "passage": f"the {topic} needs care and oil",
                      "title": topic}
            if q == "how to fix the":
                other = TOPICS[(i + 1) % len(TOPICS)]
                record["negatives"] = [{"passage_id": other, "title": other, "text": f"the {other} needs care and oil"}]
            records.append(record)
    return write_jsonl(tmp_path / "pairs.jsonl", records)


def test_negatives_are_mined_ones_first_then_other_passages_never_the_own():
    rows = [{"query": f"q{i}", "passage": f"p{i % 4}", "passage_id": str(i % 4),
             "negatives": ["p1"] if i == 0 else []} for i in range(8)]
    chosen, hard, drawn = negatives_for(rows, 3, seed=0)
    assert chosen[0][0] == "p1" and hard == 1 and hard + drawn == sum(len(c) for c in chosen)
    for row, negatives in zip(rows, chosen):
        assert row["passage"] not in negatives and len(negatives) == len(set(negatives)) == 3


@pytest.mark.parametrize("loss", ["bce", "mnrl"])
def test_a_reranker_trains_from_an_encoder_and_loads_as_a_cross_encoder(tmp_path, reranker_pairs, tiny_encoder_dir,
                                                                       loss):
    from genq.retrieval import Reranker

    config = RerankerConfig(base_model=str(tiny_encoder_dir), loss=loss, negatives=2, batch_size=4, epochs=1,
                            device="cpu", bf16=False)
    summary = train_reranker(reranker_pairs, tmp_path / "reranker", config, progress=False)
    assert summary.initialised_from == "encoder" and summary.steps > 0
    assert summary.hard_negatives == 8 and summary.hard_negatives + summary.random_negatives == 16 * 2
    assert summary.rows == (16 * 3 if loss == "bce" else 16)
    record = json.loads((tmp_path / "reranker" / "genq_training.json").read_text())
    assert record["kind"] == "reranker" and record["complete"] and record["settings"]["loss"] == loss
    assert (tmp_path / "reranker" / "loss_curve.png").exists()
    assert "Trained with genq" in (tmp_path / "reranker" / "README.md").read_text()
    assert not (tmp_path / "reranker" / "checkpoints").exists()
    reranker = Reranker(str(tmp_path / "reranker"), device="cpu", dtype="float32")
    assert reranker.score_pairs([("fix the chain", "the chain needs care")]).shape == (1,)


def test_the_cli_trains_resumes_and_swaps_only_when_complete(tmp_path, reranker_pairs, tiny_cross_encoder_dir):
    output = tmp_path / "reranker"
    args = ["train-reranker", str(reranker_pairs), "-o", str(output), "--base-model", str(tiny_cross_encoder_dir),
            "--train-batch-size", "4", "--device", "cpu", "--no-bf16"]
    runner = CliRunner()
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "trained a reranker" in result.output and "8 mined" in result.output
    assert json.loads((output / "genq_training.json").read_text())["summary"]["initialised_from"] == "cross-encoder"

    result = runner.invoke(main, args)  # a finished run is not trained again by accident
    assert result.exit_code != 0 and "already holds a finished training run" in result.output

    before = (output / "model.safetensors").read_bytes() if (output / "model.safetensors").exists() else None

    def broken(*_args, **_kwargs):
        raise KeyboardInterrupt

    import sentence_transformers.cross_encoder as cross_encoder

    original = cross_encoder.CrossEncoderTrainer.train
    cross_encoder.CrossEncoderTrainer.train = broken
    try:
        result = runner.invoke(main, [*args, "--overwrite", "--train-seed", "7"])
    finally:
        cross_encoder.CrossEncoderTrainer.train = original
    assert result.exit_code != 0
    # the interrupted replacement left the finished reranker as it was
    record = json.loads((output / "genq_training.json").read_text())
    assert record["complete"] and record["settings"]["seed"] == 42
    if before is not None:
        assert (output / "model.safetensors").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".reranker") or "building" in p.name]

    result = runner.invoke(main, [*args, "--overwrite", "--train-seed", "7"])
    assert result.exit_code == 0, result.output
    assert json.loads((output / "genq_training.json").read_text())["settings"]["seed"] == 7


def test_an_interrupted_reranker_run_resumes_from_its_checkpoint(tmp_path, reranker_pairs, tiny_cross_encoder_dir):
    output = tmp_path / "reranker"
    config = RerankerConfig(base_model=str(tiny_cross_encoder_dir), batch_size=4, epochs=3, save_steps=2,
                            device="cpu", bf16=False)
    from transformers import TrainerCallback

    class StopAtStep5(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 5:
                raise KeyboardInterrupt

    import sentence_transformers.cross_encoder as cross_encoder

    original = cross_encoder.CrossEncoderTrainer.__init__

    def with_stop(self, *a, **k):
        original(self, *a, **k)
        self.add_callback(StopAtStep5())

    cross_encoder.CrossEncoderTrainer.__init__ = with_stop
    try:
        with pytest.raises(KeyboardInterrupt):
            train_reranker(reranker_pairs, output, config, progress=False)
    finally:
        cross_encoder.CrossEncoderTrainer.__init__ = original
    assert not json.loads((output / "genq_training.json").read_text())["complete"]
    result = CliRunner().invoke(main, ["train-reranker", str(reranker_pairs), "-o", str(output), "--base-model",
                                       str(tiny_cross_encoder_dir), "--train-batch-size", "4", "--epochs", "3",
                                       "--save-steps", "2", "--device", "cpu", "--no-bf16"])
    assert result.exit_code != 0 and "--resume" in result.output
    summary = train_reranker(reranker_pairs, output, config, resume=True, progress=False)
    assert summary.resumed_from and summary.resumed_from.endswith("checkpoint-4")
    assert json.loads((output / "genq_training.json").read_text())["complete"]


def test_bad_input_is_named_before_any_model_loads(tmp_path, tiny_encoder_dir):
    lonely = write_jsonl(tmp_path / "one.jsonl", [{"query": "q", "passage_id": "p", "passage": "text"}] * 3)
    result = CliRunner().invoke(main, ["train-reranker", str(lonely), "-o", str(tmp_path / "r"), "--base-model",
                                       str(tiny_encoder_dir)])
    assert result.exit_code != 0 and "at least 2 passages" in result.output and "Traceback" not in result.output
