"""Issue 12: the label-free quality measure, decoder-only defaults and prompting, generator scores, sizing."""

import json
import math

import pytest
from click.testing import CliRunner

from genq.cli import main
from genq.filter import filter_pairs, report_path_for
from genq.generate import (
    FAMILY_DEFAULTS,
    GenerationConfig,
    QualityCheck,
    QueryGenerator,
    SampleStreams,
    chat_prompt,
    few_shot_parts,
    generate_pairs,
    load_prompt_template,
    meta_path_for,
)
from genq.io import DataError, GenqError
from genq.pipeline import queries_per_passage_for, training_length_for
from genq.quality import copies_passage, echoes_template, strip_template_echo
from tests.conftest import write_jsonl


def lines(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def config_for(model, **overrides):
    options = dict(model=str(model), queries_per_passage=3, batch_size=3, max_length=8, dtype="float32", seed=1,
                   backend="torch")
    options.update(overrides)
    return GenerationConfig(**options)


# --------------------------------------------------------------------------- text checks


@pytest.mark.parametrize("raw, query", [
    ("Query: how do i oil a chain", "how do i oil a chain"),
    ('"how do i oil a chain"', "how do i oil a chain"),
    ("1. Question: 'why does the brake squeak'", "why does the brake squeak"),
    ("- search query: tyre pressure for road bikes", "tyre pressure for road bikes"),
    ("how to true a wheel Document: A wheel is true when", "how to true a wheel"),
    ("Document: The chain must be cleaned.", ""),
    ("Answer: use a pump", ""),
    ("what is a q-factor", "what is a q-factor"),
    ("cadence: what is it", "cadence: what is it"),  # a colon alone is no template label
])
def test_strip_template_echo(raw, query):
    assert strip_template_echo(raw) == query


def test_echo_and_copy_flags():
    assert echoes_template("Query: how to oil a chain") and echoes_template('"oil a chain"')
    assert echoes_template("2) oil a chain") and echoes_template("oil a chain Document: the chain")
    assert not echoes_template("how to oil a chain") and not echoes_template("cadence: what is it")
    passage = "Clean the chain, and oil it when it makes noise on long rides."
    assert copies_passage("the chain and oil it when", passage)  # five words, verbatim (punctuation aside)
    assert not copies_passage("oil the chain", passage)  # too short to be a copy
    assert not copies_passage("clean the chain when it rains", passage)


# --------------------------------------------------------------------------- defaults and prompting


def test_family_defaults_filled_and_recorded(tmp_path, tiny_t5_dir, tiny_gpt2_dir, bike_passages):
    for model, family in ((tiny_t5_dir, "seq2seq"), (tiny_gpt2_dir, "causal")):
        out = tmp_path / f"{family}.jsonl"
        generate_pairs(bike_passages, out, GenerationConfig(model=str(model), batch_size=4, dtype="float32"),
                       progress=False)
        meta = json.loads(meta_path_for(out).read_text())
        for key, value in FAMILY_DEFAULTS[family].items():
            assert meta["parameters"][key] == value, (family, key)
        assert meta["family_defaults"] == FAMILY_DEFAULTS[family]
        # a T5 run has no prompt: its settings stay those earlier versions recorded (finished runs still match)
        assert ("prompt_style" in meta["parameters"]) == (family == "causal")
        assert ("filtered_runaway" in meta["counts"]) == (family == "causal")
        if family == "causal":  # a random tiny model rarely ends its line in 32 tokens: runaways, counted
            counts = meta["counts"]
            assert 0 < counts["filtered_runaway"] + counts["filtered_not_a_query"] <= counts["filtered_out"]
    assert FAMILY_DEFAULTS["seq2seq"]["temperature"] == 1.0  # GenQ's, untouched
    # a setting the user gives wins over the family's
    out = tmp_path / "given.jsonl"
    generate_pairs(bike_passages, out, GenerationConfig(model=str(tiny_gpt2_dir), temperature=1.3, max_query_words=0,
                                                        batch_size=4, dtype="float32"), progress=False)
    parameters = json.loads(meta_path_for(out).read_text())["parameters"]
    assert parameters["temperature"] == 1.3 and parameters["max_query_words"] == 0
    assert parameters["max_passage_tokens"] == 200


def test_few_shot_template_becomes_chat_turns(tiny_gpt2_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    tokenizer.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>\n"
                               "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}")
    instruction, examples, final = few_shot_parts(load_prompt_template("msmarco"))
    prompt = chat_prompt(tokenizer, load_prompt_template("msmarco"))
    assert prompt.startswith(f"<system>{instruction} Reply with the query only")
    for text, query in examples:
        assert f"<user>{text}</user>\n<assistant>{query}</assistant>" in prompt
    assert prompt.endswith("<user>Document: {passage}</user>\n<assistant>")
    # a template of another layout becomes a single user turn
    assert chat_prompt(tokenizer, "Ask about: {passage}") == "<user>Ask about: {passage}</user>\n<assistant>"


def test_prompt_style_auto_and_chat(tmp_path, tiny_gpt2_dir, bike_passages):
    from transformers import AutoTokenizer

    # the tiny model has no chat template: auto means plain, and chat is refused with the fix
    assert QueryGenerator(config_for(tiny_gpt2_dir)).prompt_style == "plain"
    with pytest.raises(GenqError, match="no chat template"):
        QueryGenerator(config_for(tiny_gpt2_dir, prompt_style="chat"))
    chatty = tmp_path / "chatty"
    import shutil

    shutil.copytree(tiny_gpt2_dir, chatty)
    tokenizer = AutoTokenizer.from_pretrained(chatty)
    tokenizer.chat_template = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} [SEP] {% endfor %}"
                               "{% if add_generation_prompt %}assistant : {% endif %}")
    tokenizer.save_pretrained(chatty)
    generator = QueryGenerator(config_for(chatty))
    assert generator.prompt_style == "chat" and generator.template.startswith("system : ")
    out = tmp_path / "pairs.jsonl"
    generate_pairs(bike_passages, out, config_for(chatty), progress=False, generator=generator)
    meta = json.loads(meta_path_for(out).read_text())
    assert meta["generator"]["prompt_style"] == "chat" and meta["parameters"]["prompt_style"] == "auto"


def test_causal_samples_lose_echoes_few_shot_repeats_and_runaways(tiny_gpt2_dir, monkeypatch):
    from genq.generation.sampling import Samples

    generator = QueryGenerator(config_for(tiny_gpt2_dir))
    fake = ["Query: oil the chain\nmore", "Document: the chain", '"what did the treaty of westphalia establish"',
            "fix a flat tyre", "a sentence that went on and on"]

    def sample_causal(texts, streams):
        samples = Samples(len(fake))
        samples.ended = [True, True, True, True, False]  # the last one hit the length limit
        return samples

    monkeypatch.setattr(generator, "_sample_causal", sample_causal)
    monkeypatch.setattr(generator.tokenizer, "batch_decode", lambda rows, skip_special_tokens=True: fake)
    generator.config.queries_per_passage = len(fake)
    [queries] = generator.generate([{"_id": "p", "title": "", "text": "the chain"}], seed=0)
    assert queries == ["oil the chain", "", "", "fix a flat tyre", ""]
    assert generator.emptied == {"runaway": 1, "not_a_query": 2}  # the meta's filtered_runaway / _not_a_query


# --------------------------------------------------------------------------- generator scores


def test_logprob_is_the_mean_token_logprob_of_the_sample(tiny_t5_dir):
    """The score recorded while sampling equals a teacher-forced pass over the sampled tokens (EOS included)."""
    import torch

    generator = QueryGenerator(config_for(tiny_t5_dir, max_length=6, temperature=1.5))
    model, tokenizer = generator.model, generator.tokenizer
    encoded = tokenizer(["clean the chain and oil it", "pump the tyre"], return_tensors="pt", padding=True)
    streams = SampleStreams(["a", "b"], 3, seed=3)
    with torch.inference_mode():
        samples = generator._sample_seq2seq(dict(encoded), streams)
        start = model.generation_config.decoder_start_token_id
        for row, (tokens, mean) in enumerate(zip(samples.tokens, samples.mean_logprobs())):
            scored = list(tokens) + ([tokenizer.eos_token_id] if len(tokens) < 5 else [])
            source = {k: v[row // 3:row // 3 + 1] for k, v in encoded.items()}
            logits = model(**source, decoder_input_ids=torch.tensor([[start] + scored[:-1] if scored else [start]]))
            logprobs = torch.log_softmax(logits.logits[0].float(), -1)
            expected = sum(logprobs[i, t].item() for i, t in enumerate(scored)) / len(scored)
            assert math.isclose(mean, expected, abs_tol=2e-3), (row, mean, expected)


def scored_pairs(tmp_path, scores):
    passages = write_jsonl(tmp_path / "passages.jsonl", [{"_id": f"p{i}", "title": "", "text": f"word{i} text"}
                                                         for i in range(len(scores))])
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"query": f"word{i}", "passage_id": f"p{i}",
                                                    "passage": f"word{i} text", "generator_logprob": s}
                                                   for i, s in enumerate(scores)])
    return passages, pairs


def test_filter_by_generator_score(tmp_path, tiny_encoder_dir):
    scores = [-0.5, -2.0, -1.0, -0.5, -3.0, -1.5, -0.2]
    passages, pairs = scored_pairs(tmp_path, scores)
    out = tmp_path / "kept.jsonl"
    summary = filter_pairs(pairs, passages, str(tiny_encoder_dir), out, top_k=None, keep_top_share=0.5,
                           progress=False)
    kept = [p["generator_logprob"] for p in lines(out)]
    assert len(kept) == math.ceil(0.5 * len(scores)) == summary.kept
    assert sorted(kept, reverse=True) == sorted(scores, reverse=True)[:4]
    assert summary.logprob_cut == -1.0 and summary.dropped_by_generator_score == 3
    summary = filter_pairs(pairs, passages, str(tiny_encoder_dir), out, top_k=None, min_logprob=-1.0,
                           progress=False)
    assert sorted(p["generator_logprob"] for p in lines(out)) == [-1.0, -0.5, -0.5, -0.2]
    # combined with the round trip: a pair must pass both
    both = filter_pairs(pairs, passages, str(tiny_encoder_dir), out, top_k=1, min_logprob=-1.0, progress=False)
    alone = filter_pairs(pairs, passages, str(tiny_encoder_dir), tmp_path / "rt.jsonl", top_k=1, progress=False)
    rt_ids = {p["passage_id"] for p in lines(tmp_path / "rt.jsonl")}
    assert {p["passage_id"] for p in lines(out)} == {p["passage_id"] for p in lines(pairs)
                                                     if p["passage_id"] in rt_ids and p["generator_logprob"] >= -1}
    assert both.kept <= alone.kept


def test_filter_reports_quality_before_and_after(tmp_path, tiny_encoder_dir):
    passages, pairs = scored_pairs(tmp_path, [-1.0] * 6)
    out = tmp_path / "kept.jsonl"
    summary = filter_pairs(pairs, passages, str(tiny_encoder_dir), out, top_k=3, progress=False)
    report = json.loads(report_path_for(out).read_text())
    before, after = report["quality_before"], report["quality_after"]
    assert before["queries"] == 6 and after["queries"] == summary.kept
    assert before["passages_ranked"] == 6
    assert after["round_trip"]["top3"] == 1.0 if summary.kept else True  # kept = in the top 3, by definition
    assert 0 <= before["round_trip"]["top1"] <= before["round_trip"]["top3"] <= 1
    assert summary.kept == round(before["round_trip"]["top3"] * 6)


def test_score_filter_names_a_pair_without_score(tmp_path, tiny_encoder_dir):
    passages, pairs = scored_pairs(tmp_path, [-1.0, -2.0])
    with open(pairs, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"query": "word0", "passage_id": "p0", "passage": "word0 text"}) + "\n")
    with pytest.raises(DataError, match=r"pairs.jsonl:3: the pair has no generator_logprob") as error:
        filter_pairs(pairs, passages, str(tiny_encoder_dir), tmp_path / "kept.jsonl", top_k=None,
                     keep_top_share=0.5, progress=False)
    assert "round trip alone" in str(error.value)
    assert not (tmp_path / "kept.jsonl").exists()
    result = CliRunner().invoke(main, ["filter", str(pairs), "--corpus", str(passages), "-m", str(tiny_encoder_dir),
                                       "-o", str(tmp_path / "k.jsonl"), "--keep-top-share", "0.5"])
    assert result.exit_code == 2 and "generator_logprob" in result.output  # 2: bad input


# --------------------------------------------------------------------------- the quality check of generate


def test_generate_measures_a_sample(tmp_path, tiny_t5_dir, tiny_encoder_dir, bike_passages):
    out = tmp_path / "pairs.jsonl"
    summary = generate_pairs(bike_passages, out, config_for(tiny_t5_dir), progress=False,
                             quality=QualityCheck(model=str(tiny_encoder_dir), sample=10, corpus=5))
    quality = json.loads(meta_path_for(out).read_text())["quality"]
    assert quality == summary.quality.to_dict()
    assert quality["queries"] == 10 and quality["sampled_from"] == summary.pairs_in_file
    assert 5 <= quality["passages_ranked"] <= 8  # the sample's own passages, topped up to 5 when fewer
    assert set(quality["round_trip"]) == {"top1", "top3"}
    result = CliRunner().invoke(main, ["generate", str(bike_passages), "-o", str(tmp_path / "cli.jsonl"),
                                       "--generator", str(tiny_t5_dir), "--max-query-tokens", "6",
                                       "--quality-model", str(tiny_encoder_dir), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "quality: round trip top-1" in result.output
    result = CliRunner().invoke(main, ["generate", str(bike_passages), "-o", str(tmp_path / "off.jsonl"),
                                       "--generator", str(tiny_t5_dir), "--max-query-tokens", "6",
                                       "--quality-sample", "0", "--device", "cpu"])
    assert result.exit_code == 0 and "quality:" not in result.output
    assert json.loads(meta_path_for(tmp_path / "off.jsonl").read_text())["quality"] is None


def test_an_unloadable_judge_skips_the_check_not_the_run(tmp_path, tiny_t5_dir, bike_passages, caplog):
    out = tmp_path / "pairs.jsonl"
    summary = generate_pairs(bike_passages, out, config_for(tiny_t5_dir), progress=False,
                             quality=QualityCheck(model=str(tmp_path / "no-such-model")))
    assert out.exists() and summary.quality is None
    assert "quality check is skipped" in caplog.text


def test_a_run_that_keeps_no_query_finishes_without_a_quality_sample(tmp_path, tiny_t5_dir, tiny_encoder_dir,
                                                                    bike_passages):
    """Every query filtered (here: none reaches 1,000 words) leaves nothing to judge; the run still ends, its
    counts saying why, instead of failing on its own empty file."""
    out = tmp_path / "pairs.jsonl"
    summary = generate_pairs(bike_passages, out, config_for(tiny_t5_dir, min_query_words=1000), progress=False,
                             quality=QualityCheck(model=str(tiny_encoder_dir), sample=10, corpus=5))
    meta = json.loads(meta_path_for(out).read_text())
    assert summary.pairs_in_file == 0 and out.exists() and out.stat().st_size == 0
    assert meta["quality"] is None and meta["counts"]["filtered_out"] == meta["counts"]["queries_sampled"] > 0


# --------------------------------------------------------------------------- sizing by corpus


def test_sizing_rules():
    assert queries_per_passage_for(1_000)[0] == 5  # capped: 250 per passage would mostly repeat itself
    assert queries_per_passage_for(100_000)[0] == 2
    assert queries_per_passage_for(250_000)[0] == 1 and queries_per_passage_for(3_000_000)[0] == 1
    epochs, warmup, why = training_length_for(500, 64)  # 8 steps an epoch: capped at 10 epochs
    assert epochs == 10 and warmup == 0.1 and "80 steps" in why
    epochs, warmup, why = training_length_for(20_000, 64)  # 313 steps an epoch: 3.19 epochs reach 1,000 steps
    assert epochs == pytest.approx(1_000 / 313, abs=1e-5) and warmup == 0.1 and "1,000 steps" in why
    epochs, _, why = training_length_for(63_000, 64)  # 985 steps an epoch: a little more than one, not two
    assert epochs == pytest.approx(1_000 / 985, abs=1e-5) and "1,000 steps" in why
    epochs, warmup, _ = training_length_for(1_000_000, 32)  # one epoch is plenty; warm-up capped at 1,000 steps
    assert epochs == 1 and warmup == round(1_000 / 31_250, 4)


def test_adapt_sizes_by_corpus_and_says_why(tmp_path, tiny_t5_dir, tiny_encoder_dir):
    corpus = write_jsonl(tmp_path / "docs.jsonl", [{"id": f"d{i}", "text": f"clean the chain number {i} and oil it"}
                                                   for i in range(6)])
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "adapt", str(corpus), "-o", str(run_dir), "--tokenizer", "words", "--generator", str(tiny_t5_dir),
        "--max-query-tokens", "6", "--base-model", str(tiny_encoder_dir), "--train-batch-size", "4",
        "--max-seq-length", "32", "--eval-share", "0", "--device", "cpu", "--dtype", "float32",
        "--quality-sample", "0"])
    assert result.exit_code == 0, result.output
    assert "queries per passage: 5 (6 passages x 5 = 30 queries" in result.output
    assert "training length:" in result.output and "10 epoch(s)" in result.output
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["generate"]["params"]["queries_per_passage"] == "by corpus size"
    assert json.loads((run_dir / "pairs.meta.json").read_text())["parameters"]["queries_per_passage"] == 5
    training = json.loads((run_dir / "model" / "genq_training.json").read_text())
    assert training["settings"]["epochs"] == 10.0


def test_queries_that_ignore_their_passages_are_warned_of_with_the_fix():
    from genq.quality import QualityReport

    ignoring = QualityReport(queries=200, round_trip={"top1": 0.0, "top3": 0.01})
    assert "1% of the queries find their own passage" in ignoring.warning() and "fix:" in ignoring.warning()
    assert QualityReport(queries=200, round_trip={"top1": 0.4, "top3": 0.55}).warning() == ""
    assert QualityReport(queries=10, round_trip={"top1": 0.0, "top3": 0.0}).warning() == ""  # too few to tell
    assert QualityReport().warning() == ""  # no round trip measured
