"""The CTranslate2 generation backend: conversion cache, seeding, resume, meta, log-probs, fallback, Ray."""

import json

import pytest
from click.testing import CliRunner

from genq.cli import main
from genq.generate import (
    GenerationConfig,
    QueryGenerator,
    choose_backend,
    generate_pairs,
    load_generator,
    meta_path_for,
    run_paths,
)

from .conftest import StopAfter, write_jsonl

pytest.importorskip("ctranslate2")


def config_for(model, **overrides):
    options = dict(model=str(model), queries_per_passage=3, batch_size=3, max_length=8, seed=1, backend="ctranslate2")
    options.update(overrides)
    return GenerationConfig(**options)


def lines(path):
    return path.read_text().splitlines()


def ct2_copies(cache):
    folder = cache / "ct2"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GENQ_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_auto_picks_what_was_measured_faster(monkeypatch):
    from genq.generation import load

    seq2seq = choose_backend(GenerationConfig(device="cpu"), "seq2seq")
    assert seq2seq.name == "ctranslate2" and "measured" in seq2seq.reason
    assert choose_backend(GenerationConfig(device="cpu"), "causal").name == "torch"
    assert choose_backend(GenerationConfig(device="cpu", backend="torch"), "seq2seq").name == "torch"
    # a precision CTranslate2 does not compute in on this device: auto takes torch instead of failing
    import ctranslate2

    if "bfloat16" not in ctranslate2.get_supported_compute_types("cpu"):
        bf16 = choose_backend(GenerationConfig(device="cpu", dtype="bfloat16"), "seq2seq")
        assert bf16.name == "torch" and "bfloat16" in bf16.reason
    monkeypatch.setattr(load, "ctranslate2_installed", lambda: False)
    missing = choose_backend(GenerationConfig(device="cpu"), "seq2seq")
    assert missing.name == "torch" and "not installed" in missing.reason


def test_seq2seq_pairs_meta_and_conversion_kept_once(tmp_path, cache, tiny_t5_dir, bike_passages):
    out = tmp_path / "pairs.jsonl"
    summary = generate_pairs(bike_passages, out, config_for(tiny_t5_dir, backend="auto", device="cpu"),
                             progress=False)
    assert summary.backend == "ctranslate2" and summary.dtype == "int8" and "auto" in summary.backend_reason
    assert summary.queries_sampled == 8 * 3 and summary.pairs_in_file == len(lines(out)) > 0
    records = [json.loads(line) for line in lines(out)]
    assert all(isinstance(r["generator_logprob"], float) and r["generator_logprob"] < 0 for r in records)
    meta = json.loads(meta_path_for(out).read_text())
    assert meta["parameters"]["backend"] == "ctranslate2" and meta["parameters"]["dtype"] == "int8"
    assert meta["execution"]["backend"] == "ctranslate2" and meta["execution"]["dtype"] == "int8"
    assert meta["seeding"].startswith("per run")
    [copy] = ct2_copies(cache)
    assert "int8" in copy
    # a second run loads the kept copy: no conversion, the same folder
    again = tmp_path / "again.jsonl"
    generate_pairs(bike_passages, again, config_for(tiny_t5_dir, queries_per_passage=1), progress=False)
    assert ct2_copies(cache) == [copy]
    assert all(json.loads(line)["generator_logprob"] < 0 for line in lines(again))  # one hypothesis scored too


def test_a_run_repeats_from_its_seed(tmp_path, cache, tiny_t5_dir, bike_passages):
    """What CTranslate2's seeding guarantees: a run loaded afresh with the same seed and batches writes the same
    pairs; another seed other ones. (One loaded model asked twice draws anew: it cannot be reseeded.)"""
    first, second, other = (tmp_path / f"{name}.jsonl" for name in ("first", "second", "other"))
    for path, seed in ((first, 1), (second, 1), (other, 2)):
        generate_pairs(bike_passages, path, config_for(tiny_t5_dir, seed=seed), progress=False)
    assert first.read_text() == second.read_text() and first.read_text() != other.read_text()
    generator = load_generator(config_for(tiny_t5_dir))
    passages = [{"_id": "a", "title": "", "text": "clean the chain and oil it"}]
    assert generator.sample(passages, seed=1) != generator.sample(passages, seed=1)


def test_logprobs_are_the_models_own(cache, tiny_t5_dir):
    """generator_logprob: the mean log-probability of the sampled tokens and the end token under the model (float32
    compute, so it must equal torch's teacher-forced value)."""
    import torch
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    generator = load_generator(config_for(tiny_t5_dir, dtype="float32", max_length=6))
    sampled: list[list[int]] = []
    decode = generator.tokenizer.decode
    generator.tokenizer.decode = lambda ids, **kw: sampled.append(list(ids)) or decode(ids, **kw)
    passages = [{"_id": f"p{i}", "title": "", "text": "clean the chain and oil it " * (i + 1)} for i in range(3)]
    scored = [pair for queries in generator.sample(passages, seed=4) for pair in queries]
    tokenizer = AutoTokenizer.from_pretrained(tiny_t5_dir)
    model = T5ForConditionalGeneration.from_pretrained(tiny_t5_dir).eval()
    for number, ((_, logprob), ids) in enumerate(zip(scored, sampled)):
        labels = ids + [tokenizer.eos_token_id] if len(ids) < 5 else ids  # cut at the length limit: no end token
        inputs = tokenizer([passages[number // 3]["text"]], return_tensors="pt")
        with torch.no_grad():
            logits = model(**inputs, labels=torch.tensor([labels])).logits[0]
        expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(labels)[:, None]).mean().item()
        assert logprob == pytest.approx(expected, abs=2e-4)


def test_resume_never_doubles_or_loses_a_passage(tmp_path, cache, tiny_t5_dir, bike_passages):
    out = tmp_path / "pairs.jsonl"
    config = config_for(tiny_t5_dir)
    real = load_generator(config)
    with pytest.raises(KeyboardInterrupt):
        generate_pairs(bike_passages, out, config, progress=False, generator=StopAfter(real, 1))
    partial, journal = run_paths(out)
    done = lines(partial)
    assert done and not out.exists()
    summary = generate_pairs(bike_passages, out, config, progress=False, generator=real)
    assert summary.passages_skipped_as_done == 3 and summary.passages_generated == 5
    assert summary.queries_sampled == 5 * 3  # the 3 passages done before the kill were not sampled again
    assert lines(out)[:len(done)] == done  # the first batch, kept as it was written
    assert len(lines(out)) == len(set(lines(out))) == summary.pairs_in_file
    meta = json.loads(meta_path_for(out).read_text())["counts"]
    assert meta["queries_sampled"] == 8 * 3 and meta["passages_done"] == 8
    assert meta["pairs"] + meta["duplicates_dropped"] + meta["filtered_out"] == meta["queries_sampled"]
    assert not partial.exists() and not journal.exists()


def test_a_killed_conversion_leaves_nothing_trusted(tmp_path, cache, tiny_t5_dir, bike_passages, monkeypatch):
    import ctranslate2

    real_convert = ctranslate2.converters.TransformersConverter.convert

    def killed(self, output_dir, *args, **kwargs):
        real_convert(self, output_dir, *args, **kwargs)
        (tmp_path / "half").write_text("")  # the copy is written, but the process dies before it is kept
        raise KeyboardInterrupt

    monkeypatch.setattr(ctranslate2.converters.TransformersConverter, "convert", killed)
    with pytest.raises(KeyboardInterrupt):
        load_generator(config_for(tiny_t5_dir))
    assert ct2_copies(cache) == []  # nothing half-made beside the cache's place, nothing marked as failed
    monkeypatch.setattr(ctranslate2.converters.TransformersConverter, "convert", real_convert)
    summary = generate_pairs(bike_passages, tmp_path / "pairs.jsonl", config_for(tiny_t5_dir), progress=False)
    assert summary.backend == "ctranslate2" and len(ct2_copies(cache)) == 1


def test_a_model_ctranslate2_refuses_falls_back_to_torch_in_one_line(tmp_path, cache, tiny_t5_dir, bike_passages,
                                                                    monkeypatch):
    import ctranslate2

    def refuses(self, *args, **kwargs):
        raise ValueError("No conversion is registered for the model configuration T5Config")

    monkeypatch.setattr(ctranslate2.converters.TransformersConverter, "convert", refuses)
    out = tmp_path / "pairs.jsonl"
    result = CliRunner().invoke(main, ["generate", str(bike_passages), "-o", str(out), "--generator", str(tiny_t5_dir),
                                       "--max-query-tokens", "8", "--quality-sample", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "backend: torch" in result.output
    assert "fell back to torch" in result.output
    meta = json.loads(meta_path_for(out).read_text())
    assert meta["execution"]["backend"] == "torch" and "backend" not in meta["parameters"]
    # a plain torch run with the same settings finds this output complete: the fallback ran torch's settings
    again = generate_pairs(bike_passages, out, GenerationConfig(model=str(tiny_t5_dir), max_length=8,
                                                                backend="torch", device="cpu"), progress=False)
    assert again.already_complete


def test_decoder_only_on_ctranslate2(tmp_path, cache, tiny_gpt2_dir, bike_passages):
    out = tmp_path / "pairs.jsonl"
    summary = generate_pairs(bike_passages, out, config_for(tiny_gpt2_dir, max_length=12, max_query_words=0,
                                                            queries_per_passage=4), progress=False)
    assert summary.backend == "ctranslate2" and summary.family == "causal"
    assert summary.queries_sampled == 8 * 4
    # random weights: most samples run away; every sample is either kept, emptied or filtered, never lost
    assert summary.filtered_runaway + summary.filtered_not_a_query <= summary.filtered_out
    assert summary.pairs_written + summary.duplicates_dropped + summary.filtered_out == summary.queries_sampled
    assert all(json.loads(line)["query"].strip() for line in lines(out))


def test_torch_is_unchanged_by_the_backend_option(tmp_path, cache, tiny_t5_dir, bike_passages):
    out = tmp_path / "pairs.jsonl"
    summary = generate_pairs(bike_passages, out, config_for(tiny_t5_dir, backend="torch", dtype="float32"),
                             progress=False)
    assert summary.backend == "torch" and isinstance(load_generator(config_for(tiny_t5_dir, backend="torch")),
                                                     QueryGenerator)
    assert "backend" not in json.loads(meta_path_for(out).read_text())["parameters"]


def test_ray_actors_sample_with_ctranslate2(tmp_path, cache, tiny_t5_dir):
    ray = pytest.importorskip("ray")
    from genq.distributed import RayOptions, generate_pairs_ray, shard_dir_for

    records = [{"_id": f"d{i}", "title": "", "text": f"clean the chain {i} and oil it when it makes noise"}
               for i in range(12)]
    passages = write_jsonl(tmp_path / "passages.jsonl", records)
    out = tmp_path / "ray.jsonl"
    config = config_for(tiny_t5_dir, batch_size=3)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = generate_pairs_ray(passages, out, config, RayOptions(workers=2, shard_size=6), progress=False)
    finally:
        ray.shutdown()
    assert summary.pairs_in_file == len(lines(out)) and not shard_dir_for(out).exists()
    meta = json.loads(meta_path_for(out).read_text())
    assert meta["parameters"]["backend"] == "ctranslate2" and meta["execution"]["engine"] == "ray"
    # every passage sampled once (an actor's draws depend on the shards it ran before, so not the same queries
    # as one process: the count, not the text, is what Ray and CTranslate2 promise together)
    assert meta["counts"]["queries_sampled"] == 12 * 3 and meta["counts"]["passages_done"] == 12
    assert {json.loads(line)["passage_id"] for line in lines(out)} <= {r["_id"] for r in records}
