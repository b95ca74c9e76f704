"""genq adapt --generator-rounds and --queries: self-training rounds and cropped pseudo-queries as stages of a run."""

import json

from click.testing import CliRunner

from genq.cli import main
from genq.search import likelihood_generator

from .test_pipeline import adapt_args, stage_status

ROUND_STAGES = {"prepare": "ran", "generate": "ran", "filter": "ran", "tune generator 2": "ran",
                "generate round 2": "ran", "filter round 2": "ran", "combine": "ran", "train": "ran", "index": "ran"}


def rounds_args(raw_corpus, run_dir, tiny_t5_dir, tiny_encoder_dir, *extra):
    return adapt_args(raw_corpus, run_dir, tiny_t5_dir, tiny_encoder_dir, "--filter-min-score", "-1",
                      "--generator-rounds", "2", "--generator-epochs", "1", "--backend", "torch", *extra)


def test_two_rounds_tune_the_generator_and_train_on_both_rounds_kept_pairs(tmp_path, raw_corpus, tiny_t5_dir,
                                                                          tiny_encoder_dir):
    run_dir = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(main, rounds_args(raw_corpus, run_dir, tiny_t5_dir, tiny_encoder_dir))
    assert result.exit_code == 0, result.output
    assert stage_status(result.output) == ROUND_STAGES
    tuned = run_dir / "generators" / "round2"
    record = json.loads((tuned / "genq_training.json").read_text())
    assert record["kind"] == "generator" and record["complete"] and record["settings"]["generator"] == str(tiny_t5_dir)
    meta = json.loads((run_dir / "pairs.round2.meta.json").read_text())
    assert meta["generator"]["model"] == str(tuned)
    first = (run_dir / "pairs.filtered.jsonl").read_text().splitlines()
    second = (run_dir / "pairs.round2.filtered.jsonl").read_text().splitlines()
    combined = [json.loads(line) for line in (run_dir / "pairs.combined.jsonl").read_text().splitlines()]
    keys = {(p["query"].lower(), p["passage_id"]) for p in map(json.loads, first + second)}
    assert len(combined) == len(keys) and len(combined) > len(first)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["train"]["params"]["pairs"] == "pairs.combined.jsonl"
    # the query-likelihood reranker of this run scores with the generator that learned the corpus
    assert likelihood_generator(None, run_dir / "index").model == str(tuned)

    result = runner.invoke(main, rounds_args(raw_corpus, run_dir, tiny_t5_dir, tiny_encoder_dir))
    assert result.exit_code == 0, result.output
    assert set(stage_status(result.output).values()) == {"skipped"}

    # a tuning setting changes: round 1 is kept, the tuned generator and everything after it run again
    result = runner.invoke(main, rounds_args(raw_corpus, run_dir, tiny_t5_dir, tiny_encoder_dir,
                                             "--generator-lr", "1e-4"))
    assert result.exit_code == 0, result.output
    statuses = stage_status(result.output)
    assert statuses["generate"] == statuses["filter"] == "skipped"
    assert statuses["tune generator 2"] == statuses["generate round 2"] == statuses["train"] == "ran"


def test_a_run_killed_in_round_two_resumes_there(tmp_path, raw_corpus, tiny_t5_dir, tiny_encoder_dir, monkeypatch):
    from genq.generation.torch_backend import QueryGenerator

    run_dir = tmp_path / "run"
    runner = CliRunner()
    real_sample = QueryGenerator.sample
    tuned_batches = []

    def killed_in_round_two(self, batch, seed):
        if "generators" in self.config.model:
            tuned_batches.append(len(batch))
            if len(tuned_batches) == 2:
                raise KeyboardInterrupt
        return real_sample(self, batch, seed)

    monkeypatch.setattr(QueryGenerator, "sample", killed_in_round_two)
    args = rounds_args(raw_corpus, run_dir, tiny_t5_dir, tiny_encoder_dir, "--gen-batch-size", "4")
    result = runner.invoke(main, args)
    assert result.exit_code == 130, result.output
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["generate round 2"]["status"] == "interrupted"
    monkeypatch.setattr(QueryGenerator, "sample", real_sample)
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    statuses = stage_status(result.output)
    assert statuses["tune generator 2"] == "skipped" and statuses["generate round 2"] == "resumed"
    ids = [json.loads(line)["passage_id"] for line in (run_dir / "pairs.round2.jsonl").read_text().splitlines()]
    meta = json.loads((run_dir / "pairs.round2.meta.json").read_text())
    assert meta["counts"]["passages_done"] == 10 and len(ids) == meta["counts"]["pairs"]


def test_cropped_queries_need_no_generator(tmp_path, raw_corpus, tiny_t5_dir, tiny_encoder_dir):
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, adapt_args(raw_corpus, run_dir, tiny_t5_dir, tiny_encoder_dir, "--queries",
                                                 "cropped", "--min-words", "2"))
    assert result.exit_code != 0 and "--min-words" in result.output  # crop has its own knobs; adapt uses defaults
    result = CliRunner().invoke(main, adapt_args(raw_corpus, run_dir, tiny_t5_dir, tiny_encoder_dir, "--queries",
                                                 "cropped"))
    assert result.exit_code == 0, result.output
    assert stage_status(result.output) == {"prepare": "ran", "crop": "ran", "train": "ran", "index": "ran"}
    assert not (run_dir / "pairs.jsonl").exists()


def test_generated_and_cropped_pairs_train_together(tmp_path, raw_corpus, tiny_t5_dir, tiny_encoder_dir):
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, adapt_args(raw_corpus, run_dir, tiny_t5_dir, tiny_encoder_dir, "--queries",
                                                 "generated+cropped", "--queries-per-passage", "1"))
    assert result.exit_code == 0, result.output
    assert stage_status(result.output) == {"prepare": "ran", "generate": "ran", "crop": "ran", "combine": "ran",
                                           "train": "ran", "index": "ran"}
    sources = [json.loads(line).get("source") for line in (run_dir / "pairs.combined.jsonl").read_text().splitlines()]
    assert "cropped" in sources and None in sources


def test_a_time_budget_plans_the_rounds_and_their_tuning(tmp_path, raw_corpus, tiny_t5_dir, tiny_encoder_dir,
                                                          monkeypatch):
    from genq.pipeline import budget

    monkeypatch.setattr(budget, "BUDGET_TUNING_STEPS", 6)  # 100 in earnest: the same plan, quicker to run
    run_dir = tmp_path / "run"
    args = adapt_args(raw_corpus, run_dir, tiny_t5_dir, tiny_encoder_dir, "--filter-min-score", "-1",
                      "--generator-rounds", "2", "--backend", "torch", "--time-budget", "10m", "--quality-sample",
                      "0", "--gen-batch-size", "4", "--max-steps", "4")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "measuring the generator's tuning" in result.output and "s per generator tuning step" in result.output
    assert "1 more round, each tuning the generator 6 steps" in result.output
    manifest = json.loads((run_dir / "manifest.json").read_text())
    plan = manifest["stages"]["plan"]["summary"]["plan"]
    rates = manifest["stages"]["plan"]["summary"]["rates"]
    assert plan["rounds"] == 2 and plan["tune_steps"] == 6 and "tuning steps" in plan["chosen"]
    assert rates["tune_seconds_per_step"] > 0
    assert {"tune generator 2", "generate round 2"} <= set(plan["estimates"])
    assert {"tune generator 2", "generate round 2"} <= set(manifest["plan_vs_actual"]["stages"])  # estimate vs actual
    # the tuning ran the steps the plan gave it (not its own rule's: at least 100)
    tuned = json.loads((run_dir / "generators" / "round2" / "genq_training.json").read_text())
    assert tuned["summary"]["steps"] == 6
    assert manifest["stages"]["tune generator 2"]["params"]["max_steps"] == "by time budget"
    assert manifest["stages"]["generate round 2"]["params"]["limit"] == "by time budget"
    assert manifest["stages"]["train"]["summary"]["steps"] == 4
    result = CliRunner().invoke(main, args)  # the same budget again: the plan and every stage skipped
    assert result.exit_code == 0, result.output
    assert set(stage_status(result.output).values()) == {"skipped"}


def test_rounds_whose_tuning_cannot_fit_the_budget_are_refused_before_generating(tmp_path, raw_corpus, tiny_t5_dir,
                                                                                 tiny_encoder_dir, monkeypatch):
    from genq.pipeline import probe

    monkeypatch.setattr(probe, "_measure_tuning", lambda *args: (30.0, 10.0))  # a CPU's SmolLM2: 100 steps ~ 50 min
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, adapt_args(raw_corpus, run_dir, tiny_t5_dir, tiny_encoder_dir,
                                                 "--generator-rounds", "3", "--backend", "torch", "--time-budget",
                                                 "20m", "--quality-sample", "0"))
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "cannot hold 3 generation rounds" in result.output and "fix: --time-budget 1.7h" in result.output
    assert not (run_dir / "pairs.jsonl").exists() and not (run_dir / "pairs.jsonl.partial").exists()


def test_combinations_that_cannot_work_are_refused_before_any_stage(tmp_path, raw_corpus, tiny_t5_dir,
                                                                   tiny_encoder_dir):
    for extra, says in ((["--queries", "cropped", "--generator-rounds", "2"], "--queries cropped has none"),
                        (["--queries", "generated+cropped", "--time-budget", "5m"], "--time-budget")):
        run_dir = tmp_path / f"run-{len(says)}"
        result = CliRunner().invoke(main, adapt_args(raw_corpus, run_dir, tiny_t5_dir, tiny_encoder_dir, *extra))
        assert result.exit_code != 0 and says in result.output and "Traceback" not in result.output
        assert not (run_dir / "passages.jsonl").exists()


def test_the_rounds_benchmark_tests_a_later_row_against_round_one_scores_kept_from_an_earlier_run(tmp_path,
                                                                                                monkeypatch):
    """A row measured in a later run (``--rows supervised``) is paired with round 1 per query from the results."""
    from benchmarks import generator_rounds as bench

    monkeypatch.setattr(bench, "SHARED", tmp_path)
    monkeypatch.setattr(bench, "funnel", lambda collection, row: {})

    def report(adapted: dict[str, float]) -> dict:
        base = {"q1": 0.2, "q2": 0.4, "q3": 0.6}
        scores = {"base": base, "hybrid(base)": base, "adapted": adapted, "hybrid(adapted)": adapted,
                  "BM25": base}
        return {"systems": [{"name": name, "metrics": {"ndcg@10": sum(s.values()) / 3}} for name, s in scores.items()],
                "per_query": {name: {q: {"ndcg@10": v} for q, v in s.items()} for name, s in scores.items()}}

    collection = bench.Collection("cranfield", tmp_path / "runs")
    first = bench.summarise(collection, {"round1": {42: report({"q1": 0.3, "q2": 0.4, "q3": 0.5})}})
    later = bench.summarise(collection, {"supervised": {42: report({"q1": 0.5, "q2": 0.7, "q3": 0.6}),
                                                        43: report({"q1": 0.3, "q2": 0.5, "q3": 0.6})}},
                            first["per_query"])
    assert later["per_query"]["supervised"]["adapted"] == {"q1": 0.4, "q2": 0.6, "q3": 0.6}
    assert later["tests"]["supervised vs round1: adapted"]["difference"] == 0.1333
    assert later["tests"]["supervised vs round1: adapted"]["queries"] == 3
    merged = bench.merge_rows(first, later)
    assert set(merged["per_query"]) == {"round1", "supervised"}
    assert "supervised vs round1: hybrid(adapted)" in merged["tests"] and "round1: adapted" in merged["rows"]


def test_the_rounds_benchmark_tunes_every_generator_as_long_as_adapt_plans_a_round(tmp_path, monkeypatch):
    """Rows differ in what the generator learns from, never in how long it is tuned."""
    from benchmarks import generator_rounds as bench
    from genq.planning import BUDGET_TUNING_STEPS

    commands = []
    monkeypatch.setattr(bench, "genq", lambda *args: commands.append(args) or 1.0)
    collection = bench.Collection("cranfield", tmp_path / "runs")
    collection.tuned("round3", str(tmp_path / "round2.union.jsonl"))
    collection.tuned("supervised", "--from-beir", str(tmp_path / "cisi"))
    assert [c[0] for c in commands] == ["train-generator", "train-generator"]
    assert all(c[c.index("--max-steps") + 1] == str(BUDGET_TUNING_STEPS) for c in commands)
