"""What `auto` chose is kept on resume; a model whose tokenizer names no end token still converts (issue 42)."""

import json
import shutil

import pytest
from click.testing import CliRunner

from genq.cli import main
from genq.generation.settings import GenerationConfig

from .conftest import StopAfter

pytest.importorskip("ctranslate2")


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GENQ_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture()
def t5_without_end_token(tmp_path, tiny_t5_dir):
    """The tiny T5 with a tokenizer that names no eos_token; its model config still has eos_token_id."""
    from transformers import AutoTokenizer

    folder = tmp_path / "t5-no-eos"
    shutil.copytree(tiny_t5_dir, folder)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = folder / name
        if path.exists():
            settings = json.loads(path.read_text())
            settings.pop("eos_token", None)
            path.write_text(json.dumps(settings))
    assert AutoTokenizer.from_pretrained(folder).eos_token is None
    assert json.loads((folder / "config.json").read_text())["eos_token_id"] is not None
    return folder


PASSAGES = [{"_id": "chain", "title": "", "text": "clean the chain and oil it"},
            {"_id": "brake", "title": "", "text": "replace worn brake pad"}]


def test_a_seq2seq_model_whose_tokenizer_names_no_end_token_converts_and_samples(cache, t5_without_end_token):
    from genq.generation.load import load_generator

    generator = load_generator(GenerationConfig(model=str(t5_without_end_token), backend="ctranslate2", device="cpu",
                                                queries_per_passage=2, max_length=8, batch_size=2))
    assert generator.backend == "ctranslate2"
    sampled = generator.sample(PASSAGES, seed=1)
    assert len(sampled) == 2 and all(len(queries) == 2 for queries in sampled)
    copy = next(p for p in (cache / "ct2").iterdir() if p.is_dir())
    assert json.loads((copy / "config.json").read_text())["eos_token"] == "</s>"  # from the model's eos_token_id


def test_a_copy_ctranslate2_cannot_load_is_remembered_and_not_tried_again(cache, tiny_t5_dir, monkeypatch):
    import ctranslate2

    from genq.generation.load import load_generator

    config = GenerationConfig(model=str(tiny_t5_dir), backend="ctranslate2", device="cpu", max_length=8)
    real = ctranslate2.Translator

    def cannot_load(*args, **kwargs):
        raise RuntimeError("[json.exception.type_error.302] type must be string, but is null")

    monkeypatch.setattr(ctranslate2, "Translator", cannot_load)
    first = load_generator(config)
    assert first.backend == "torch" and "could not load its copy" in first.backend_reason
    assert any(p.name.endswith(".failed.json") for p in (cache / "ct2").iterdir())
    monkeypatch.setattr(ctranslate2, "Translator", real)
    again = load_generator(config)  # straight to torch: the copy that did not load is not tried again
    assert again.backend == "torch" and "could not use it before" in again.backend_reason


def command(passages, out, model, *extra):
    return ["generate", str(passages), "-o", str(out), "--generator", str(model), "--max-query-tokens", "8",
            "--gen-batch-size", "3", "--quality-sample", "0", "--device", "cpu", *extra]


def interrupted_start(runner, monkeypatch, args, ctranslate2_usable: bool) -> None:
    """The command's first start: killed after one batch, with CTranslate2 as (un)usable as said."""
    import genq.generation.load
    import genq.generation.run

    real_load = genq.generation.run.load_generator
    with monkeypatch.context() as patch:
        if not ctranslate2_usable:
            patch.setattr(genq.generation.load, "ctranslate2_installed", lambda: False)
        patch.setattr(genq.generation.run, "load_generator", lambda config: StopAfter(real_load(config), 1))
        result = runner.invoke(main, args)
    assert result.exit_code == 130, result.output


def test_a_resume_keeps_what_auto_chose_and_writes_what_an_uninterrupted_run_would(tmp_path, cache, tiny_t5_dir,
                                                                                   bike_passages, monkeypatch):
    runner = CliRunner()
    out = tmp_path / "pairs.jsonl"
    # first start: auto took torch (CTranslate2 not usable then), killed after one batch
    interrupted_start(runner, monkeypatch, command(bike_passages, out, tiny_t5_dir), ctranslate2_usable=False)
    partial = out.with_name(out.name + ".partial")
    assert partial.exists() and partial.read_text()
    # the same command again, CTranslate2 usable now: auto would take it, the resume keeps torch instead
    result = runner.invoke(main, command(bike_passages, out, tiny_t5_dir))
    assert result.exit_code == 0, result.output
    assert "backend: torch" in result.output and "resumed: 3 passages were already done" in result.output
    reference = tmp_path / "reference.jsonl"
    done = runner.invoke(main, command(bike_passages, reference, tiny_t5_dir, "--backend", "torch"))
    assert done.exit_code == 0, done.output
    assert out.read_text() == reference.read_text()  # every passage once, nothing lost or doubled
    # the finished output: the same command is a no-op, not a refusal (auto would now choose CTranslate2)
    again = runner.invoke(main, command(bike_passages, out, tiny_t5_dir))
    assert again.exit_code == 0 and "already complete" in again.output, again.output


def test_an_explicitly_changed_dtype_is_refused_by_its_option_name(tmp_path, cache, tiny_t5_dir, bike_passages,
                                                                  monkeypatch):
    runner = CliRunner()
    out = tmp_path / "pairs.jsonl"
    interrupted_start(runner, monkeypatch, command(bike_passages, out, tiny_t5_dir, "--backend", "torch",
                                                   "--dtype", "float32"), ctranslate2_usable=True)
    result = runner.invoke(main, command(bike_passages, out, tiny_t5_dir, "--backend", "torch", "--dtype",
                                         "bfloat16"))
    assert result.exit_code == 2, result.output
    assert "--dtype: float32 then, bfloat16 now" in result.output and "None" not in result.output
    # left on auto, the same resume goes on with the dtype the first start chose
    result = runner.invoke(main, command(bike_passages, out, tiny_t5_dir, "--backend", "torch"))
    assert result.exit_code == 0 and "resumed: 3 passages" in result.output, result.output
