"""The stage loop on its own: stages as plain records, run, skipped, resumed and recorded by one loop."""

import json

import pytest

from genq.io import GenqError
from genq.pipeline import AdaptConfig, Manifest, RunContext, RunPaths, Stage, run_stages


def context_for(run_dir, said):
    run_dir.mkdir(exist_ok=True)
    return RunContext(run_dir / "corpus.jsonl", AdaptConfig(), RunPaths.under(run_dir), Manifest(run_dir, "corpus"),
                      progress=False, say=said.append)


def writing_stage(name, path, settings, calls, inputs=(), restore=None):
    def run(context, resume):
        calls.append((name, resume))
        path.write_text(name)
        return {"wrote": path.name}, "resumed" if resume else "ran"

    return Stage(name, settings, run, outputs=[path], inputs=list(inputs), restore=restore)


def test_a_rerun_skips_what_finished_and_a_changed_stage_reruns_what_follows(tmp_path):
    calls, said, restored = [], [], []
    a, b, c = (tmp_path / "run" / name for name in ("a.txt", "b.txt", "c.txt"))

    def stages(b_setting):
        return [writing_stage("first", a, {"x": 1}, calls, restore=lambda context: restored.append("first")),
                writing_stage("second", b, {"y": b_setting}, calls, inputs=[a]),
                writing_stage("third", c, {"z": 3}, calls, inputs=[b])]

    results = run_stages(context_for(tmp_path / "run", said), stages(2))
    assert [(r.name, r.status) for r in results] == [("first", "ran"), ("second", "ran"), ("third", "ran")]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert {name: entry["status"] for name, entry in manifest["stages"].items()} == {
        "first": "done", "second": "done", "third": "done"}
    assert manifest["stages"]["second"]["summary"] == {"wrote": "b.txt"}

    calls.clear()
    results = run_stages(context_for(tmp_path / "run", said), stages(2))
    assert {r.status for r in results} == {"skipped"} and calls == [] and restored == ["first"]

    results = run_stages(context_for(tmp_path / "run", said), stages(5))
    assert [(r.name, r.status) for r in results] == [("first", "skipped"), ("second", "ran"), ("third", "ran")]
    assert calls == [("second", False), ("third", False)]  # settings changed: from scratch, not resumed


def test_an_interrupted_stage_is_recorded_and_resumed_with_the_same_settings(tmp_path):
    said = []
    out = tmp_path / "run" / "out.txt"
    attempts = []

    def flaky(context, resume):
        attempts.append(resume)
        if len(attempts) == 1:
            raise KeyboardInterrupt
        out.write_text("done")
        return {}, "resumed" if resume else "ran"

    stages = [Stage("slow", {"n": 1}, flaky, outputs=[out])]
    with pytest.raises(KeyboardInterrupt):
        run_stages(context_for(tmp_path / "run", said), stages)
    entry = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]["slow"]
    assert entry["status"] == "interrupted" and entry["error"] == "interrupted"
    results = run_stages(context_for(tmp_path / "run", said), stages)
    assert attempts == [False, True] and results[0].status == "resumed"
    assert "[slow] continuing ..." in said


def test_a_failed_stage_says_why_in_the_manifest(tmp_path):
    def failing(context, resume):
        raise GenqError("the disk is full")

    with pytest.raises(GenqError):
        run_stages(context_for(tmp_path / "run", []), [Stage("doomed", {}, failing, outputs=[tmp_path / "x"])])
    entry = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]["doomed"]
    assert entry["status"] == "failed" and "the disk is full" in entry["error"]


def test_a_missing_input_is_named_before_the_stage_runs(tmp_path):
    calls = []
    gone = tmp_path / "run" / "pairs.jsonl"
    stage = writing_stage("train", tmp_path / "run" / "model.txt", {}, calls, inputs=[gone])
    with pytest.raises(GenqError, match="pairs.jsonl, which is missing"):
        run_stages(context_for(tmp_path / "run", []), [stage])
    assert calls == []
