"""Measured rates kept between runs (issue 41): reused, stale, damaged, corrected; a short probe; a too-small budget."""

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from genq.cli import main
from genq.rate_cache import correct_rates, load_rates, save_rates

from .test_time_budget import budget_args


def test_rates_are_kept_reused_and_corrected(rates_file):
    save_rates("k", {"train_seconds_per_step": 2.0, "generate_seconds_per_passage": 0.5}, {"generator": "g"})
    entry = load_rates("k")
    assert entry["rates"] == {"train_seconds_per_step": 2.0, "generate_seconds_per_passage": 0.5}
    assert load_rates("other") is None
    correct_rates("k", train_seconds_per_step=3.0)
    assert load_rates("k")["rates"] == {"train_seconds_per_step": 3.0, "generate_seconds_per_passage": 0.5}
    correct_rates("missing", train_seconds_per_step=3.0)  # nothing kept under a key: nothing to correct
    assert load_rates("missing") is None


def test_two_cpus_with_one_name_but_other_instruction_sets_keep_rates_apart(monkeypatch):
    from genq import rate_cache

    monkeypatch.setattr(rate_cache, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16", "sse2"}))
    with_bf16 = rate_cache.machine_facts()
    monkeypatch.setattr(rate_cache, "cpu_flags", lambda: frozenset({"avx2", "sse2"}))
    without = rate_cache.machine_facts()
    assert with_bf16["isa"] == ["avx2", "avx512_bf16", "avx512f"] and without["isa"] == ["avx2"]
    assert rate_cache.rate_key({"machine": with_bf16}) != rate_cache.rate_key({"machine": without})


def test_stale_rates_are_measured_again(rates_file):
    save_rates("k", {"train_seconds_per_step": 2.0})
    stored = json.loads(rates_file.read_text())
    stored["rates"]["k"]["measured_at"] = time.time() - 31 * 86_400
    rates_file.write_text(json.dumps(stored))
    assert load_rates("k") is None and load_rates("k", max_age_days=40) is not None


def test_a_damaged_cache_is_answered_by_measuring_again(rates_file, caplog):
    rates_file.write_text('{"format": 1, "rates": {"k": {"rates": {"train_sec')  # cut mid-write by another tool
    assert load_rates("k") is None and "unreadable" in caplog.text
    save_rates("k", {"train_seconds_per_step": 2.0})  # and the next measurement replaces it whole
    assert load_rates("k")["rates"] == {"train_seconds_per_step": 2.0}
    rates_file.write_text(json.dumps({"format": 1, "rates": {"k": {"rates": {"train_seconds_per_step": "fast"},
                                                                   "measured_at": time.time()}}}))
    assert load_rates("k") is None


def test_a_second_run_reuses_the_rates_instead_of_measuring(tmp_path, raw_corpus, tiny_t5_dir, tiny_encoder_dir,
                                                            rates_file, monkeypatch):
    runner = CliRunner()
    quick = ("--max-steps", "2", "--limit", "4")  # the run itself short: what is tested is the plan stage
    first = runner.invoke(main, budget_args(raw_corpus, tmp_path / "one", tiny_t5_dir, tiny_encoder_dir, "3m", *quick))
    assert first.exit_code == 0, first.output
    assert "measuring training (3 steps)" in first.output  # a short budget: a short probe
    # the probe sampled 8 passages from across the corpus: the limit's 4 are taken from them, not sampled again
    assert "4 passages' queries taken from the plan's probe" in first.output, first.output
    probed = json.loads((tmp_path / "one" / "manifest.json").read_text())["stages"]["plan"]["summary"][
        "probe_passages"]
    written = {json.loads(line)["passage_id"] for line in (tmp_path / "one" / "pairs.jsonl").open()}
    assert len(probed) == 8 and written and written <= set(probed[:4])
    kept = json.loads(rates_file.read_text())["rates"]
    assert len(kept) == 1 and next(iter(kept.values()))["rates"]["train_seconds_per_step"] > 0

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr("genq.pipeline.budget.measure_rates", no_measuring)
    second = runner.invoke(main, budget_args(raw_corpus, tmp_path / "two", tiny_t5_dir, tiny_encoder_dir, "3m",
                                             *quick))
    assert second.exit_code == 0, second.output
    assert "reused" in second.output and "measuring generation" not in second.output, second.output
    planned = json.loads((tmp_path / "two" / "manifest.json").read_text())["stages"]["plan"]["summary"]
    stored = next(iter(kept.values()))["rates"]
    assert planned["rates"]["train_seconds_per_step"] == pytest.approx(stored["train_seconds_per_step"], abs=1e-4)
    # the generator was not loaded by a probe this time: its measured load is planned into the generate stage
    assert planned["rates"]["generator_load_seconds"] == pytest.approx(stored["generator_load_seconds"], abs=1e-4)


def test_a_budget_that_buys_too_few_steps_says_what_would(tmp_path, raw_corpus, tiny_t5_dir, tiny_encoder_dir):
    from genq.pipeline.budget import USEFUL_STEPS, too_little_note
    from genq.pipeline.config import AdaptConfig
    from genq.planning import Fixed, Rates, plan_run

    rates = Rates(generate_seconds_per_passage=2.0, pairs_per_passage=1.0, train_seconds_per_step=10.0,
                  encode_seconds_per_passage=0.02)
    config = AdaptConfig(time_budget=120.0)
    config.training.batch_size = 8
    plan = plan_run(120.0, 30.0, 500, rates, Fixed(), batch_size=8, queries_per_passage=3)
    assert plan.steps < USEFUL_STEPS
    note = too_little_note(config, plan, rates, 500, 30.0)
    assert note.startswith(f"2.0m buys {plan.steps} training step") and f"buys {USEFUL_STEPS}" in note
    bigger = float(note.split("about ")[1].split("m buys")[0]) * 60
    assert plan_run(bigger, 30.0, 500, rates, Fixed(), batch_size=8, queries_per_passage=3).steps >= USEFUL_STEPS


def test_the_probes_samples_are_the_ones_the_generate_stage_would_draw(tiny_t5_dir):
    from genq.generation.load import load_generator
    from genq.generation.settings import GenerationConfig
    from genq.pipeline.probe import PresampledGenerator

    config = GenerationConfig(model=str(tiny_t5_dir), backend="torch", device="cpu", queries_per_passage=2,
                              max_length=8)
    generator = load_generator(config)
    passages = [{"_id": f"p{i}", "text": f"passage number {i} about bicycle chains and gears"} for i in range(4)]
    probed = generator.sample(passages[1:3], seed=7)
    kept = PresampledGenerator(generator, {p["_id"]: q for p, q in zip(passages[1:3], probed)}, seed=7)
    kept.use_settings(config)
    assert kept.sample(passages, seed=7) == generator.sample(passages, seed=7) and kept.reused == 2
    # sampled differently (more queries per passage), the probe's samples are not the run's: dropped
    kept = PresampledGenerator(generator, {p["_id"]: q for p, q in zip(passages[1:3], probed)}, seed=7)
    kept.use_settings(GenerationConfig(**{**config.__dict__, "queries_per_passage": 3}))
    assert kept.sample(passages, seed=7) == generator.sample(passages, seed=7) and kept.reused == 0
    assert all(len(queries) == 3 for queries in kept.sample(passages[:1], seed=7))
    kept = PresampledGenerator(generator, {p["_id"]: q for p, q in zip(passages[1:3], probed)}, seed=7)
    kept.sample(passages, seed=8)  # another seed draws other queries
    assert kept.reused == 0


def test_a_short_probe_trains_a_quarter_batch_and_scales_the_step(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from genq.pipeline import probe
    from genq.train import TrainConfig

    trained = []

    def fake_training(pairs, output, config, **kwargs):
        trained.append((config.batch_size, config.max_steps, len(Path(pairs).read_text().splitlines())))
        return SimpleNamespace(seconds_per_step=1.5, seconds=3 * 1.5 + 4.0, steps=3)

    monkeypatch.setattr(probe, "train_bi_encoder", fake_training)
    passages = [{"_id": str(i), "text": f"passage {i} about gears and chains"} for i in range(100)]
    per_step, overhead = probe._measure_training(passages, TrainConfig(batch_size=64), tmp_path, 3, 0.25)
    assert trained == [(16, 3, 48)] and per_step == pytest.approx(6.0) and overhead == pytest.approx(4.0)
    per_step, _ = probe._measure_training(passages, TrainConfig(batch_size=64), tmp_path, 3)
    assert trained[-1] == (64, 3, 192) and per_step == pytest.approx(1.5)
