"""`genq adapt --time-budget` (issue 22): the planner on fake rates, and the plan run, recorded and resumed."""

import json

import pytest
from click.testing import CliRunner

from genq.cli import main
from genq.durations import format_duration, parse_duration
from genq.io import GenqError
from genq.planning import (
    MAX_BUDGET_QUERIES_PER_PASSAGE,
    MAX_EPOCHS,
    SAFETY,
    Fixed,
    Rates,
    plan_run,
    step_cost,
)

from .test_pipeline import adapt_args, stage_status

RATES = Rates(generate_seconds_per_passage=2.0, pairs_per_passage=3.0, train_seconds_per_step=10.0,
              encode_seconds_per_passage=0.02, train_overhead_seconds=5.0)


def test_durations():
    assert parse_duration("90s") == 90 and parse_duration("30m") == 1800 and parse_duration("2h") == 7200
    assert parse_duration("1h30m") == 5400 and parse_duration("45") == 45
    for bad in ("soon", "30x", "-5m", "0s", "1h 30"):  # a bare number after a unit is ambiguous
        with pytest.raises(GenqError, match="fix:"):
            parse_duration(bad)
    assert format_duration(30) == "30s" and format_duration(1800) == "30m" and format_duration(7200) == "2.0h"


def test_the_plan_fits_the_budget_and_splits_it():
    fixed = Fixed({"index": 40.0})
    plan = plan_run(1800, 60, 2000, RATES, fixed, batch_size=64, queries_per_passage=3)
    assert plan.estimated_total <= 1800 * SAFETY + 1
    assert plan.estimated_total >= 1800 * SAFETY * 0.9  # and uses most of it
    assert 0 < plan.passages < 2000 and plan.steps >= -(-plan.passages * 3 // 64)  # at least one epoch
    assert set(plan.chosen) == {"passages", "steps"} and "generate for" in plan.describe()


def test_a_small_corpus_gets_all_its_passages_and_at_most_the_epoch_cap():
    plan = plan_run(7200, 10, 100, RATES, Fixed(), batch_size=64, queries_per_passage=3)
    assert plan.passages == 100
    assert plan.steps == MAX_EPOCHS * 5  # 300 pairs / 64 = 5 steps per epoch
    assert plan.estimated_total < 7200 * SAFETY  # the rest of the budget is not spent for nothing


def test_a_covered_corpus_with_time_to_spare_buys_more_queries_per_passage_when_unset():
    fixed = Fixed({"index": 40.0})
    tight = plan_run(3600, 60, 1500, RATES, fixed, batch_size=64, queries_per_passage=3, size_queries=True)
    roomy = plan_run(36000, 60, 1500, RATES, fixed, batch_size=64, queries_per_passage=3, size_queries=True)
    assert tight.queries_per_passage == 3 and "queries per passage" not in tight.chosen  # the corpus is not covered
    assert roomy.passages == 1500 and 3 < roomy.queries_per_passage <= MAX_BUDGET_QUERIES_PER_PASSAGE
    assert "queries per passage" in roomy.chosen and "x " + str(roomy.queries_per_passage) in roomy.describe()
    assert roomy.estimated_total <= 36000 * SAFETY + 1
    per_epoch = -(-int(1500 * 3.0 * roomy.queries_per_passage / 3) // 64)
    assert roomy.steps <= MAX_EPOCHS * per_epoch
    # a user's --queries-per-passage is theirs: the corpus is covered and the rest of the budget left
    kept = plan_run(36000, 60, 1500, RATES, fixed, batch_size=64, queries_per_passage=3, size_queries=False)
    assert kept.queries_per_passage == 3 and kept.estimated_total < roomy.estimated_total


def test_fewer_pairs_than_a_batch_are_costed_as_the_smaller_steps_they_are():
    # 10 passages x 3 pairs = 30 pairs, under half a batch of 64: each step costs 30/64 of a full one
    plan = plan_run(100, 0, 10, RATES, Fixed(), batch_size=64, queries_per_passage=3)
    assert plan.passages == 10
    full_batch_steps = int((100 * SAFETY - RATES.train_overhead_seconds - 10 * 2.0) / 10.0)
    assert plan.steps > full_batch_steps  # more steps than full batches would allow
    assert plan.estimates["train"] == pytest.approx(plan.steps * 10.0 * 30 / 64 + 5.0, abs=0.1)
    assert step_cost(10.0, 30, 64) == pytest.approx(10.0 * 30 / 64) and step_cost(10.0, 640, 64) == 10.0
    assert step_cost(10.0, 133, 64) == pytest.approx(10.0 * (133 / 3) / 64)  # steps of 64, 64 and 5


def test_one_epoch_must_fit_so_fewer_passages_are_generated_for():
    slow_training = Rates(**{**RATES.to_dict(), "train_seconds_per_step": 200.0})
    plan = plan_run(1800, 0, 5000, slow_training, Fixed(), batch_size=64, queries_per_passage=3)
    per_epoch = -(-plan.passages * 3 // 64)
    assert plan.steps >= per_epoch
    assert plan.estimated_total <= 1800 * SAFETY + 200  # within one step of the plan


def test_what_the_user_set_is_never_changed():
    limited = plan_run(600, 0, 2000, RATES, Fixed(), batch_size=64, queries_per_passage=5, limit=1500)
    assert limited.passages == 1500 and limited.queries_per_passage == 5 and "passages" not in limited.chosen
    assert any("over the budget" in note for note in limited.notes)  # said, not silently changed
    stepped = plan_run(1800, 0, 2000, RATES, Fixed(), batch_size=64, queries_per_passage=3, max_steps=7)
    assert stepped.steps == 7 and stepped.chosen == ["passages"]
    epochs = plan_run(1800, 0, 2000, RATES, Fixed(), batch_size=64, queries_per_passage=3, epochs=2)
    assert epochs.steps == 2 * -(-epochs.passages * 3 // 64) and epochs.chosen == ["passages"]


def test_a_budget_smaller_than_the_fixed_costs_plans_the_smallest_run():
    plan = plan_run(60, 50, 2000, RATES, Fixed({"index": 40.0}), batch_size=64, queries_per_passage=3,
                    min_passages=16)
    assert plan.passages == 16 and plan.steps == 1
    assert any("no time after the fixed costs" in note for note in plan.notes)


def budget_args(raw_corpus, run_dir, tiny_t5_dir, tiny_encoder_dir, budget, *extra):
    return adapt_args(raw_corpus, run_dir, tiny_t5_dir, tiny_encoder_dir, "--time-budget", budget,
                      "--quality-sample", "0", "--gen-batch-size", "4", "--backend", "torch", *extra)


def test_adapt_plans_records_and_reuses_the_plan(tmp_path, raw_corpus, tiny_t5_dir, tiny_encoder_dir):
    run_dir = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(main, budget_args(raw_corpus, run_dir, tiny_t5_dir, tiny_encoder_dir, "10m"))
    assert result.exit_code == 0, result.output
    assert "budget 10m: generate for" in result.output and "rates here:" in result.output
    assert "time budget 10m: this run took" in result.output and "train: est." in result.output
    manifest = json.loads((run_dir / "manifest.json").read_text())
    recorded = sum(entry["seconds"] for entry in manifest["stages"].values())
    assert manifest["plan_vs_actual"]["actual_seconds"] >= recorded - 0.2  # the whole run, not its last stage
    assert manifest["stages"]["plan"]["summary"]["plan"]["elapsed_seconds"] >= manifest["stages"]["prepare"]["seconds"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    plan = manifest["stages"]["plan"]["summary"]["plan"]
    # ten passages leave a 10-minute budget spare time: every passage, and more queries each (it was left unset)
    assert plan["passages_total"] == 10 and plan["queries_per_passage"] == MAX_BUDGET_QUERIES_PER_PASSAGE
    assert "queries per passage" in plan["chosen"]
    assert json.loads((run_dir / "pairs.meta.json").read_text())["parameters"]["queries_per_passage"] == \
        MAX_BUDGET_QUERIES_PER_PASSAGE
    # and sampled that many (the probe's generator, reused, was loaded at 3)
    assert manifest["stages"]["generate"]["summary"]["queries_sampled"] == 10 * MAX_BUDGET_QUERIES_PER_PASSAGE
    assert set(manifest["stages"]["plan"]["summary"]["rates"]) >= {"generate_seconds_per_passage",
                                                                   "train_seconds_per_step"}
    assert manifest["plan_vs_actual"]["stages"]["train"]["actual"] > 0
    replanned = manifest["replanned_training"]  # sized again once the pairs existed
    assert manifest["stages"]["train"]["summary"]["steps"] == replanned["steps"] and replanned["planned_steps"] == \
        plan["steps"] and "training re-planned" in result.output
    assert not (run_dir / ".genq-cache" / "plan" / "probe-model").exists()

    # the same budget again: nothing re-measured or re-planned, every stage skipped
    result = runner.invoke(main, budget_args(raw_corpus, run_dir, tiny_t5_dir, tiny_encoder_dir, "10m"))
    assert result.exit_code == 0, result.output
    assert set(stage_status(result.output).values()) == {"skipped"} and "the plan recorded" in result.output

    # a user-set value stays as given, whatever the budget
    result = runner.invoke(main, budget_args(raw_corpus, run_dir, tiny_t5_dir, tiny_encoder_dir, "10m",
                                             "--max-steps", "2", "--limit", "6", "--queries-per-passage", "2"))
    assert result.exit_code == 0, result.output
    manifest = json.loads((run_dir / "manifest.json").read_text())
    plan = manifest["stages"]["plan"]["summary"]["plan"]
    assert (plan["passages"], plan["steps"], plan["queries_per_passage"]) == (6, 2, 2) and plan["chosen"] == []
    assert manifest["stages"]["train"]["summary"]["steps"] == 2 and "replanned_training" not in manifest


def test_an_interrupted_budget_run_resumes_with_its_plan(tmp_path, raw_corpus, tiny_t5_dir, tiny_encoder_dir,
                                                         monkeypatch):
    from genq.generate import QueryGenerator

    run_dir = tmp_path / "run"
    runner = CliRunner()
    real_sample, calls = QueryGenerator.sample, []

    def interrupted(self, batch, seed):  # the plan's probe is calls 1-2; Ctrl-C in the generate stage's second batch
        calls.append(len(batch))
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_sample(self, batch, seed)

    monkeypatch.setattr(QueryGenerator, "sample", interrupted)
    args = budget_args(raw_corpus, run_dir, tiny_t5_dir, tiny_encoder_dir, "10m")
    result = runner.invoke(main, args)
    assert result.exit_code == 130, result.output
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["plan"]["status"] == "done" and manifest["stages"]["generate"]["status"] == "interrupted"
    monkeypatch.setattr(QueryGenerator, "sample", real_sample)
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    statuses = stage_status(result.output)
    assert statuses["plan"] == "skipped" and statuses["generate"] == "resumed" and statuses["train"] == "ran"
    assert "the plan recorded" in result.output and "measuring generation" not in result.output


def test_the_index_is_costed_past_encoding_and_grows_with_the_corpus():
    from genq.planning import index_build_seconds

    assert index_build_seconds(50_000, "auto", lexical=False) == 0.0  # flat: nothing to build
    small, big = (index_build_seconds(n, "auto", lexical=True) for n in (200_000, 1_000_000))
    assert 0 < small < big and index_build_seconds(1_000_000, "auto", lexical=False) < big


def test_a_budget_that_cannot_index_the_corpus_is_refused_before_any_slow_stage(tmp_path, raw_corpus, tiny_t5_dir,
                                                                                  tiny_encoder_dir):
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, budget_args(raw_corpus, run_dir, tiny_t5_dir, tiny_encoder_dir, "2s"))
    assert result.exit_code == 2, result.output
    assert "cannot hold this run" in result.output and "fix: --time-budget" in result.output
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert "generate" not in manifest["stages"] and not (run_dir / "pairs.jsonl").exists()


def test_the_plan_samples_a_corpus_evenly_without_holding_it(tmp_path):
    from genq.pipeline.probe import corpus_sample

    path = tmp_path / "passages.jsonl"
    path.write_text("".join(json.dumps({"_id": f"p{n}", "title": "", "text": f"passage {n}"}) + "\n"
                            for n in range(100)))
    total, sample = corpus_sample(path, size=8)
    assert total == 100 and [p["_id"] for p in sample] == [f"p{n}" for n in (0, 12, 25, 37, 50, 62, 75, 87)]
    total, sample = corpus_sample(path, size=500)
    assert total == 100 and [p["_id"] for p in sample] == [f"p{n}" for n in range(100)]


def test_rounds_cost_one_sampling_per_round_and_a_tuning_before_each_later_one():
    tuning = Rates(**{**RATES.to_dict(), "tune_seconds_per_step": 2.0, "tune_overhead_seconds": 20.0})
    one = plan_run(7200, 60, 5000, tuning, Fixed({"index": 40.0}), batch_size=64, queries_per_passage=3)
    three = plan_run(7200, 60, 5000, tuning, Fixed({"index": 40.0}), batch_size=64, queries_per_passage=3, rounds=3,
                     tune_steps=100)
    assert three.estimates["tune generator 2"] == three.estimates["tune generator 3"] == 20.0 + 100 * 2.0
    each = three.passages * 2.0
    assert three.estimates["generate round 2"] == three.estimates["generate round 3"] == pytest.approx(each, abs=0.1)
    assert three.estimates["generate"] == pytest.approx(each, abs=0.1)
    assert three.passages < one.passages  # every passage is sampled three times, and tuning comes off the top
    assert three.estimated_total <= 7200 * SAFETY + 1 and three.estimated_total >= 7200 * SAFETY * 0.9
    # training is planned over every round's pairs (round 1's yield, three times)
    assert three.steps >= -(-three.passages * 3 * 3 // 64)
    assert "2 more rounds, each tuning the generator 100 steps" in three.describe()
    assert "more round" not in one.describe() and "tune generator 2" not in one.estimates
