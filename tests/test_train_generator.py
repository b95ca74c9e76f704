"""genq train-generator: a query generator tuned on (passage, query) pairs, under the prompt it samples with."""

import json
import math

import pytest
import torch
from click.testing import CliRunner

from genq.cli import main
from genq.generation.settings import GenerationConfig
from genq.generation.templates import TUNED_PROMPT_FILE
from genq.generation.torch_backend import QueryGenerator
from genq.io import GenqError
from genq.train_generator import GeneratorTrainingConfig, pairs_from_file, pairs_from_qrels, train_generator

from .conftest import write_jsonl, write_tiny_collection

PAIRS = [("chain", "Chain care", "clean the chain and oil it when it makes noise", "how to oil the chain"),
         ("brake", "Brake pads", "replace worn brake pad when the lever feels loose", "worn brake pad"),
         ("tyre", "Tyre pressure", "inflate the tyre with a pump to the right pressure", "tyre pressure pump"),
         ("gear", "Gear shifting", "adjust the cable when the gear does not shift", "gear does not shift")]


@pytest.fixture()
def pairs_file(tmp_path):
    return write_jsonl(tmp_path / "pairs.jsonl", [{"query": q, "passage_id": i, "passage": x, "title": t}
                                                   for i, t, x, q in PAIRS])


def quick(model_dir, **overrides) -> GeneratorTrainingConfig:
    settings = {"generator": str(model_dir), "epochs": 8, "batch_size": 4, "lr": 1e-2, "warmup_ratio": 0.0,
                "device": "cpu", "bf16": False, "save_minutes": 0, **overrides}
    return GeneratorTrainingConfig(**settings)


def mean_likelihood(model_dir, **settings) -> float:
    generator = QueryGenerator(GenerationConfig(model=str(model_dir), device="cpu", dtype="float32",
                                                backend="torch", **settings))
    passages = [{"text": x, "title": t} for _, t, x, _ in PAIRS]
    return sum(generator.score_queries(passages, [q for *_, q in PAIRS])) / len(PAIRS)


@pytest.mark.parametrize("family", ["causal", "seq2seq"])
def test_a_tuned_generator_finds_its_pairs_likelier(family, tiny_gpt2_dir, tiny_t5_dir, pairs_file, tmp_path):
    base = tiny_gpt2_dir if family == "causal" else tiny_t5_dir
    output = tmp_path / "tuned"
    summary = train_generator(pairs_from_file(pairs_file), output, quick(base), progress=False)
    assert summary.family == family and summary.pairs == 4 and summary.steps == 8
    assert summary.final_loss < summary.first_loss
    record = json.loads((output / "genq_training.json").read_text())
    assert record["kind"] == "generator" and record["complete"]
    assert (output / TUNED_PROMPT_FILE).read_text().startswith("Write a short search query")
    assert not (output / "checkpoints").exists()
    # the tuned model is read with the prompt it learned under (no --prompt-template given) ...
    assert GenerationConfig(model=str(output)).prompt_template == "zero-shot"
    tuned = mean_likelihood(output)
    before = mean_likelihood(base, prompt_template="zero-shot")
    assert tuned > before + 0.5


def test_the_loss_covers_the_query_and_its_end_only(tiny_gpt2_dir):
    generator = QueryGenerator(GenerationConfig(model=str(tiny_gpt2_dir), device="cpu", dtype="float32",
                                                backend="torch", prompt_template="zero-shot"))
    passages = [{"text": x, "title": t} for _, t, x, _ in PAIRS[:2]]
    rows = generator.training_rows(passages, ["oil the chain", "brake"])
    for (ids, labels), query in zip(rows, ["oil the chain", "brake"]):
        targets = [token for token in labels if token != -100]
        assert len(ids) == len(labels) and labels[-len(targets):] == ids[-len(targets):]
        assert generator.tokenizer.decode(targets[:-1]).strip() == query
        assert targets[-1] == generator._query_end_id()
    # the mean log-probability of those labels is the score the likelihood reranker reads
    with torch.inference_mode():
        ids, labels = rows[0]
        logits = generator.model(input_ids=torch.tensor([ids])).logits[0, :-1]
        log_probs = torch.log_softmax(logits.float(), -1)
        picked = [log_probs[i, t].item() for i, t in enumerate(labels[1:]) if t != -100]
    assert sum(picked) / len(picked) == pytest.approx(generator.score_queries(passages[:1], ["oil the chain"])[0],
                                                      abs=1e-4)


def test_labelled_pairs_come_from_qrels(tmp_path):
    data = write_tiny_collection(tmp_path / "beir")
    assert pairs_from_qrels(data) == [{"query": "chain oil", "passage": "oil the chain", "title": "",
                                      "passage_id": "a"}]


def test_a_finished_run_is_kept_and_overwrite_swaps_it(tiny_gpt2_dir, pairs_file, tmp_path):
    output = tmp_path / "tuned"
    rows = pairs_from_file(pairs_file)
    train_generator(rows, output, quick(tiny_gpt2_dir, epochs=1, batch_size=2), progress=False)
    with pytest.raises(GenqError, match="already holds a finished training run"):
        train_generator(rows, output, quick(tiny_gpt2_dir, epochs=1, batch_size=2), progress=False)
    with pytest.raises(GenqError, match="--epochs"):
        train_generator(rows, output, quick(tiny_gpt2_dir, epochs=2, batch_size=2), progress=False)
    summary = train_generator(rows, output, quick(tiny_gpt2_dir, epochs=2, batch_size=2), overwrite=True,
                              progress=False)
    assert summary.steps == 4
    assert json.loads((output / "genq_training.json").read_text())["settings"]["epochs"] == 2


def test_an_interrupted_run_resumes_from_its_checkpoint(tiny_gpt2_dir, pairs_file, tmp_path, monkeypatch):
    from transformers import Trainer

    output = tmp_path / "tuned"
    rows = pairs_from_file(pairs_file)
    real_train = Trainer.train

    def killed_after_saving(self, *args, **kwargs):
        self.args.max_steps = 4  # four steps saved at step 2 and 4, then a kill
        real_train(self, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train", killed_after_saving)
    with pytest.raises(KeyboardInterrupt):
        train_generator(rows, output, quick(tiny_gpt2_dir, epochs=3, batch_size=2, save_steps=2), progress=False)
    monkeypatch.setattr(Trainer, "train", real_train)
    assert (output / "checkpoints" / "checkpoint-4").is_dir()
    with pytest.raises(GenqError, match="--resume"):
        train_generator(rows, output, quick(tiny_gpt2_dir, epochs=3, batch_size=2, save_steps=2), progress=False)
    summary = train_generator(rows, output, quick(tiny_gpt2_dir, epochs=3, batch_size=2, save_steps=2), resume=True,
                              progress=False)
    assert summary.resumed_from.endswith("checkpoint-4") and summary.steps == 6


def test_cli_tunes_from_pairs_and_generate_uses_the_tuned_prompt(tiny_gpt2_dir, pairs_file, bike_passages, tmp_path):
    output = tmp_path / "tuned"
    runner = CliRunner()
    result = runner.invoke(main, ["train-generator", str(pairs_file), "-o", str(output), "--generator",
                                  str(tiny_gpt2_dir), "--epochs", "1", "--train-batch-size", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "4 pairs (4 distinct queries" in result.output and str(output) in result.output
    pairs = tmp_path / "new.jsonl"
    result = runner.invoke(main, ["generate", str(bike_passages), "-o", str(pairs), "--generator", str(output),
                                  "--device", "cpu", "--quality-sample", "0", "--backend", "torch"])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "new.meta.json").read_text())
    assert meta["generator"]["prompt_template"] == "zero-shot"


def test_cli_refuses_a_missing_source(tmp_path):
    result = CliRunner().invoke(main, ["train-generator", "-o", str(tmp_path / "out")])
    assert result.exit_code != 0 and "PAIRS" in result.output and "--from-beir" in result.output


def test_a_tuned_generator_runs_on_the_ctranslate2_backend(tiny_gpt2_dir, pairs_file, bike_passages, tmp_path):
    pytest.importorskip("ctranslate2")
    from genq.generation.run import generate_pairs

    output = tmp_path / "tuned"
    train_generator(pairs_from_file(pairs_file), output, quick(tiny_gpt2_dir, epochs=1), progress=False)
    summary = generate_pairs(bike_passages, tmp_path / "ct2.jsonl",
                             GenerationConfig(model=str(output), backend="ctranslate2", device="cpu"),
                             progress=False)
    assert summary.backend == "ctranslate2" and summary.queries_sampled == 3 * 8
    meta = json.loads((tmp_path / "ct2.meta.json").read_text())
    assert meta["generator"]["prompt_template"] == "zero-shot"


def test_epochs_by_pair_count_reach_the_step_floor_without_rounding_up_to_a_whole_epoch():
    from genq.train_generator import MAX_AUTO_EPOCHS, MIN_AUTO_STEPS, tuning_epochs

    assert tuning_epochs(776, 8) == pytest.approx(MIN_AUTO_STEPS / 97, abs=1e-5)  # 100 steps, not 194
    assert math.ceil(tuning_epochs(776, 8) * 97) == MIN_AUTO_STEPS  # as the trainer counts them
    assert tuning_epochs(5000, 8) == 1.0  # a large set: one pass
    assert tuning_epochs(40, 8) == MAX_AUTO_EPOCHS  # a tiny one: at most three passes, not a hundred steps
