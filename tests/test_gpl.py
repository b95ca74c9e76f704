"""GPL: cross-encoder pseudo-labels, MarginMSE training, `adapt --gpl`, resume and bad input."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from genq.cli import main
from genq.io import DataError, GenqError
from genq.negatives import MiningConfig, mine_negatives
from genq.pseudo_label import PseudoLabelConfig, meta_path_for, pseudo_label
from genq.retrieval import Reranker
from genq.train import TrainConfig, train_bi_encoder

from .conftest import write_jsonl
from .test_pipeline import adapt_args, stage_status

TEXTS = ["clean the chain and oil it", "replace worn brake pad", "inflate the tyre with a pump",
         "adjust the gear cable", "tighten the saddle bolt", "patch the tube", "grease the hub bearing",
         "clean the disc rotor", "true the wheel spoke", "check the fork suspension"]


def pairs_with_negatives(tmp_path, n=10, negatives=2, name="neg.jsonl"):
    records = []
    for i in range(n):
        records.append({"query": f"how to {TEXTS[i].split()[0]} {TEXTS[i].split()[-1]}", "passage_id": f"p{i}",
                        "passage": TEXTS[i], "title": TEXTS[i].split()[-1],
                        "negatives": [{"passage_id": f"p{(i + j) % n}", "title": "", "text": TEXTS[(i + j) % n]}
                                      for j in range(1, negatives + 1)]})
    return write_jsonl(tmp_path / name, records)


@pytest.fixture()
def reranker(tiny_cross_encoder_dir):
    return Reranker(str(tiny_cross_encoder_dir), dtype="float32", batch_size=4)


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_margins_are_the_cross_encoders_score_differences(tmp_path, reranker):
    pairs = pairs_with_negatives(tmp_path)
    out = tmp_path / "labelled.jsonl"
    summary = pseudo_label(pairs, out, PseudoLabelConfig(chunk_records=3), progress=False, reranker=reranker)
    assert summary.records == summary.labelled == summary.written == 10 and summary.negatives_scored == 20
    records = read(out)
    first = records[0]
    expected = reranker.score_pairs([(first["query"], f"{first['title']} {first['passage']}")]
                                    + [(first["query"], n["text"]) for n in first["negatives"]])
    assert first["positive_score"] == pytest.approx(expected[0], abs=1e-4)
    for negative, score in zip(first["negatives"], expected[1:]):
        assert negative["score"] == pytest.approx(score, abs=1e-4)
        assert negative["margin"] == pytest.approx(first["positive_score"] - negative["score"], abs=1e-4)
        assert negative["passage_id"] and "text" in negative  # the record keeps its contract
    meta = json.loads(meta_path_for(out).read_text())
    assert meta["settings"]["drop_inverted"] is False and meta["summary"]["written"] == 10
    assert not out.with_name(out.name + ".partial").exists()
    inverted = sum(1 for r in records if min(n["margin"] for n in r["negatives"]) < 0)
    assert summary.inverted_share == pytest.approx(inverted / 10)


def test_drop_inverted_removes_pairs_the_teacher_contradicts(tmp_path, reranker):
    pairs = pairs_with_negatives(tmp_path)
    everything = read_after(pseudo_label(pairs, tmp_path / "all.jsonl", progress=False, reranker=reranker),
                            tmp_path / "all.jsonl")
    inverted = {r["passage_id"] for r in everything if min(n["margin"] for n in r["negatives"]) < 0}
    assert 0 < len(inverted) < 10  # the random teacher contradicts some generated queries, not all
    summary = pseudo_label(pairs, tmp_path / "clean.jsonl", PseudoLabelConfig(drop_inverted=True), progress=False,
                           reranker=reranker)
    kept = {r["passage_id"] for r in read(tmp_path / "clean.jsonl")}
    assert summary.dropped_inverted == len(inverted) and kept == {f"p{i}" for i in range(10)} - inverted


def read_after(_summary, path):
    return read(path)


def test_resume_after_a_crash_loses_and_doubles_nothing(tmp_path, reranker, monkeypatch):
    pairs = pairs_with_negatives(tmp_path, n=10)
    reference = tmp_path / "reference.jsonl"
    pseudo_label(pairs, reference, PseudoLabelConfig(chunk_records=3), progress=False, reranker=reranker)
    out = tmp_path / "labelled.jsonl"
    calls = {"n": 0}
    real = reranker.score_pairs

    def crash_on_third_chunk(texts):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(texts)

    monkeypatch.setattr(reranker, "score_pairs", crash_on_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        pseudo_label(pairs, out, PseudoLabelConfig(chunk_records=3), progress=False, reranker=reranker)
    partial = out.with_name(out.name + ".partial")
    assert not out.exists() and len(partial.read_text().splitlines()) == 6
    # a crash between a chunk's append and its progress record: bytes beyond the recorded size
    with open(partial, "a", encoding="utf-8") as handle:
        handle.write('{"query": "half a line')
    monkeypatch.setattr(reranker, "score_pairs", real)
    summary = pseudo_label(pairs, out, PseudoLabelConfig(chunk_records=3), progress=False, reranker=reranker)
    assert summary.resumed_after == 6 and summary.labelled == 4 and summary.written == 10
    assert read(out) == read(reference)


def test_rerun_is_a_no_op_and_changed_settings_are_refused(tmp_path, reranker):
    pairs = pairs_with_negatives(tmp_path)
    out = tmp_path / "labelled.jsonl"
    pseudo_label(pairs, out, progress=False, reranker=reranker)
    before = out.read_bytes()
    assert pseudo_label(pairs, out, progress=False, reranker=reranker).already_complete
    with pytest.raises(GenqError, match="--overwrite"):
        pseudo_label(pairs, out, PseudoLabelConfig(drop_inverted=True), progress=False, reranker=reranker)
    assert out.read_bytes() == before
    foreign = write_jsonl(tmp_path / "mine.jsonl", [{"a": 1}])
    with pytest.raises(GenqError, match="did not write it"):
        pseudo_label(pairs, foreign, progress=False, reranker=reranker)
    with pytest.raises(GenqError, match="input"):
        pseudo_label(pairs, pairs, progress=False, reranker=reranker)


def test_overwrite_keeps_the_old_result_until_the_new_one_is_complete(tmp_path, reranker, monkeypatch):
    pairs = pairs_with_negatives(tmp_path)
    out = tmp_path / "labelled.jsonl"
    pseudo_label(pairs, out, progress=False, reranker=reranker)
    before = out.read_bytes()

    def fail(_texts):
        raise RuntimeError("boom")

    monkeypatch.setattr(reranker, "score_pairs", fail)
    with pytest.raises(RuntimeError):
        pseudo_label(pairs, out, PseudoLabelConfig(drop_inverted=True), overwrite=True, progress=False,
                     reranker=reranker)
    assert out.read_bytes() == before


def test_bad_input_is_named_before_any_model_loads(tmp_path):
    plain = write_jsonl(tmp_path / "pairs.jsonl", [{"query": "q", "passage_id": "p0", "passage": "text"}])
    with pytest.raises(DataError, match="mine-negatives") as error:
        pseudo_label(plain, tmp_path / "out.jsonl", PseudoLabelConfig(cross_encoder="/no/such/model"),
                     progress=False)
    assert ":1:" in str(error.value)
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"query": "q", "passage_id": "p0", "passage": "t", "negatives": 5}])
    with pytest.raises(DataError, match="not a list"):
        pseudo_label(bad, tmp_path / "out.jsonl", progress=False)
    result = CliRunner().invoke(main, ["pseudo-label", str(plain), "-o", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 2 and "genq mine-negatives" in result.output and "Traceback" not in result.output


def test_a_model_that_is_not_a_cross_encoder_and_nan_scores(tmp_path, tiny_encoder_dir, reranker, monkeypatch):
    pairs = pairs_with_negatives(tmp_path)
    result = CliRunner().invoke(main, ["pseudo-label", str(pairs), "-o", str(tmp_path / "o.jsonl"),
                                       "--cross-encoder", str(tiny_encoder_dir)])
    assert result.exit_code == 2 and "not a cross-encoder" in result.output
    monkeypatch.setattr(reranker.model, "predict", lambda pairs, **_: np.full(len(pairs), np.nan))
    with pytest.raises(GenqError, match="NaN"):
        pseudo_label(pairs, tmp_path / "nan.jsonl", progress=False, reranker=reranker)
    assert not (tmp_path / "nan.jsonl").exists()


def test_margin_mse_training_learns_from_the_labels(tmp_path, tiny_encoder_dir, tiny_cross_encoder_dir):
    pairs = pairs_with_negatives(tmp_path)
    runner = CliRunner()
    labelled = tmp_path / "labelled.jsonl"
    result = runner.invoke(main, ["pseudo-label", str(pairs), "-o", str(labelled), "--cross-encoder",
                                  str(tiny_cross_encoder_dir), "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    assert "pairs/s" in result.output and "mean margin" in result.output
    config = TrainConfig(base_model=str(tiny_encoder_dir), loss="margin-mse", batch_size=4, max_seq_length=32,
                         eval_share=0, device="cpu", epochs=1)
    summary = train_bi_encoder(labelled, tmp_path / "model", config, progress=False)
    assert summary.steps >= 2 and summary.negatives_per_pair == 2
    from sentence_transformers import SentenceTransformer

    reloaded = SentenceTransformer(str(tmp_path / "model"), device="cpu")
    assert reloaded.encode(["chain"]).shape == (1, 32)
    assert "MarginMSE" in (tmp_path / "model" / "README.md").read_text()
    with pytest.raises(DataError, match="genq pseudo-label"):  # negatives without margins
        train_bi_encoder(pairs, tmp_path / "model2", config, progress=False)


def test_mining_with_both_retrievers(tmp_path, tiny_encoder_dir):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"_id": f"p{i}", "title": "", "text": t}
                                                     for i, t in enumerate(TEXTS)])
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"query": "clean the chain", "passage_id": "p0",
                                                    "passage": TEXTS[0], "title": ""}])
    config = MiningConfig(num_negatives=6, range_min=0, range_max=5, relative_margin=None, retriever="both")
    summary = mine_negatives(pairs, corpus, tmp_path / "neg.jsonl", model=str(tiny_encoder_dir), config=config,
                             dtype="float32", progress=False)
    negatives = [n["passage_id"] for n in read(tmp_path / "neg.jsonl")[0]["negatives"]]
    assert "p7" in negatives[:2]  # BM25's best match ("clean the disc rotor") comes in at the second turn at worst
    assert len(negatives) == len(set(negatives)) and "p0" not in negatives and summary.negatives == len(negatives)


def test_adapt_gpl_runs_every_stage_resumes_and_skips(tmp_path, raw_corpus, tiny_t5_dir,  # noqa: F811
                                                      tiny_encoder_dir, tiny_cross_encoder_dir, monkeypatch):
    run_dir = tmp_path / "run"
    args = adapt_args(raw_corpus, run_dir, tiny_t5_dir, tiny_encoder_dir, "--gpl", "--cross-encoder",
                      str(tiny_cross_encoder_dir), "--neg-retriever", "both")
    args.remove("--train-batch-size")
    args.remove("4")
    import genq.pseudo_label

    real = genq.pseudo_label.Reranker.score_pairs
    calls = {"n": 0}

    def crash_on_second_chunk(self, texts):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, texts)

    import genq.pipeline.stages

    real_stage = genq.pipeline.stages.pseudo_label

    def in_small_chunks(pairs, output, config, **kwargs):
        config.chunk_records = 4
        return real_stage(pairs, output, config, **kwargs)

    monkeypatch.setattr(genq.pipeline.stages, "pseudo_label", in_small_chunks)
    monkeypatch.setattr(genq.pseudo_label.Reranker, "score_pairs", crash_on_second_chunk)
    runner = CliRunner()
    result = runner.invoke(main, args)
    assert result.exit_code == 130, result.output  # interrupted inside pseudo-label
    monkeypatch.setattr(genq.pseudo_label.Reranker, "score_pairs", real)
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    statuses = stage_status(result.output)
    assert statuses["pseudo-label"] == "resumed" and statuses["train"] == "ran"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    mining = manifest["stages"]["negatives"]["params"]
    assert (mining["range_min"], mining["range_max"], mining["relative_margin"], mining["sampling"]) == \
        (0, 50, None, "random")  # GPL's mining defaults
    assert manifest["stages"]["train"]["params"]["loss"] == "margin-mse"
    assert manifest["stages"]["train"]["params"]["batch_size"] == 32
    labelled = read(run_dir / "pairs.labelled.jsonl")
    assert len(labelled) == len(read(run_dir / "pairs.negatives.jsonl"))
    assert all("margin" in n for r in labelled for n in r["negatives"])
    result = runner.invoke(main, args)
    assert result.exit_code == 0 and set(stage_status(result.output).values()) == {"skipped"}


def test_cli_mining_without_a_margin_cut(tmp_path, tiny_encoder_dir):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"_id": f"p{i}", "title": "", "text": t}
                                                     for i, t in enumerate(TEXTS)])
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"query": "clean the chain", "passage_id": "p0",
                                                    "passage": TEXTS[0], "title": ""}])
    runner = CliRunner()
    out = str(tmp_path / "n.jsonl")
    result = runner.invoke(main, ["mine-negatives", str(pairs), "--corpus", str(corpus), "-o", out,
                                  "--retriever", "bm25", "--range-min", "0", "--relative-margin", "none",
                                  "--num-negatives", "3"])
    assert result.exit_code == 0, result.output
    assert "0 by margin" in result.output
    result = runner.invoke(main, ["mine-negatives", str(pairs), "--corpus", str(corpus), "-o", out,
                                  "--retriever", "bm25", "--relative-margin", "lots"])
    assert result.exit_code == 2 and "neither a number nor 'none'" in result.output


def test_pairs_mining_left_without_negatives_are_skipped_and_counted(tmp_path, reranker):
    """mine-negatives writes "negatives": [] where its window held no candidate; pseudo-label must take its file."""
    pairs = pairs_with_negatives(tmp_path)
    records = read(pairs)
    records[3]["negatives"] = []
    write_jsonl(pairs, records)
    out = tmp_path / "labelled.jsonl"
    summary = pseudo_label(pairs, out, progress=False, reranker=reranker)
    assert summary.skipped_without_negatives == 1 and summary.written == 9
    assert "p3" not in {r["passage_id"] for r in read(out)}
    for record in records:
        record["negatives"] = []
    write_jsonl(pairs, records)
    with pytest.raises(DataError, match="no pair has a mined negative"):
        pseudo_label(pairs, tmp_path / "none.jsonl", progress=False, reranker=reranker)
