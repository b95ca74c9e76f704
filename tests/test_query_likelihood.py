"""Query likelihood (UPR): log p(query | passage) under the generator, as a score and as a reranker."""

import json

import numpy as np
import pytest
import torch

from genq.generation.settings import GenerationConfig
from genq.generation.torch_backend import QueryGenerator

PASSAGES = [{"_id": "chain", "title": "Chain care", "text": "clean the chain and oil it when it makes noise"},
            {"_id": "brake", "title": "Brake pads", "text": "replace worn brake pad when the lever feels loose"},
            {"_id": "tyre", "title": "", "text": "inflate the tyre"}]
QUERIES = ["oil the chain", "brake pad worn lever", "tyre"]


def loaded(model_dir, **settings) -> QueryGenerator:
    return QueryGenerator(GenerationConfig(model=str(model_dir), device="cpu", dtype="float32", backend="torch",
                                           **settings))


def direct_causal(generator: QueryGenerator, passage: dict, query: str) -> float:
    """The same number the plain way: the whole prompt and the query in one forward pass, no cache, no padding."""
    prompt = generator._inputs([passage])[0]
    lead = "" if generator.prompt_style == "chat" or prompt[-1:].isspace() else " "
    ids = generator._tokenize([prompt])[0]
    target = generator._query_targets([query], lead)[0]
    logits = generator.model(input_ids=torch.tensor([ids + target])).logits[0].float()
    log_probs = torch.log_softmax(logits, dim=-1)
    start = len(ids)
    return float(np.mean([log_probs[start - 1 + i, token].item() for i, token in enumerate(target)]))


def direct_seq2seq(generator: QueryGenerator, passage: dict, query: str) -> float:
    encoded = generator.tokenizer(generator._inputs([passage]), return_tensors="pt")
    target = generator._query_targets([query])[0]
    logits = generator.model(input_ids=encoded["input_ids"], labels=torch.tensor([target])).logits[0].float()
    log_probs = torch.log_softmax(logits, dim=-1)
    return float(np.mean([log_probs[i, token].item() for i, token in enumerate(target)]))


@torch.inference_mode()
def test_decoder_only_scores_equal_the_teacher_forced_log_probability(tiny_gpt2_dir):
    generator = loaded(tiny_gpt2_dir)
    assert generator._shared_prompt_ids() is not None  # the few-shot prefix cache is exercised
    scores = generator.score_queries(PASSAGES, QUERIES, batch_size=2)  # padding inside a batch, two batches
    expected = [direct_causal(generator, p, q) for p, q in zip(PASSAGES, QUERIES)]
    assert scores == pytest.approx(expected, abs=1e-4)
    assert all(s < 0 for s in scores)


@torch.inference_mode()
def test_seq2seq_scores_equal_the_teacher_forced_log_probability(tiny_t5_dir):
    generator = loaded(tiny_t5_dir)
    scores = generator.score_queries(PASSAGES, QUERIES, batch_size=2)
    expected = [direct_seq2seq(generator, p, q) for p, q in zip(PASSAGES, QUERIES)]
    assert scores == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("model_fixture", ["tiny_gpt2_dir", "tiny_t5_dir"])
def test_ctranslate2_scores_what_torch_scores(model_fixture, request):
    """The CTranslate2 backend's score_batch path gives the torch backend's numbers (float32 on both sides)."""
    pytest.importorskip("ctranslate2")
    from genq.generation.ct2_backend import CTranslate2Generator

    model_dir = request.getfixturevalue(model_fixture)
    torch_scores = loaded(model_dir).score_queries(PASSAGES, QUERIES, batch_size=2)
    ct2 = CTranslate2Generator(GenerationConfig(model=str(model_dir), device="cpu", dtype="float32",
                                                backend="ctranslate2"))
    assert ct2.score_queries(PASSAGES, QUERIES, batch_size=2) == pytest.approx(torch_scores, abs=1e-3)
    # the reranker scores on the backend its generation config names
    from genq.generation.likelihood import QueryLikelihoodReranker

    reranker = QueryLikelihoodReranker(GenerationConfig(model=str(model_dir), device="cpu", dtype="float32",
                                                        backend="ctranslate2"), batch_size=2)
    assert isinstance(reranker.generator, CTranslate2Generator)
    assert list(reranker.score(QUERIES[0], PASSAGES)) == pytest.approx(
        loaded(model_dir).score_queries(PASSAGES, [QUERIES[0]] * len(PASSAGES), batch_size=2), abs=1e-3)


def test_auto_scores_seq2seq_on_ctranslate2_and_causal_on_torch_on_a_cpu(tiny_t5_dir, tiny_gpt2_dir):
    """What likelihood_speed.py measured: T5-shaped scoring 1.85x faster on CTranslate2 int8; SmolLM2 on torch."""
    pytest.importorskip("ctranslate2")
    from genq.generation.ct2_backend import CTranslate2Generator
    from genq.generation.likelihood import load_scorer
    from genq.generation.torch_backend import QueryGenerator

    assert isinstance(load_scorer(GenerationConfig(model=str(tiny_t5_dir), device="cpu")), CTranslate2Generator)
    assert isinstance(load_scorer(GenerationConfig(model=str(tiny_gpt2_dir), device="cpu")), QueryGenerator)
    assert isinstance(load_scorer(GenerationConfig(model=str(tiny_t5_dir), device="cpu", backend="torch")),
                      QueryGenerator)


@pytest.fixture()
def bike_index(tmp_path, bike_passages, tiny_encoder_dir):
    from genq.ann import IndexParams
    from genq.index import build_index

    build_index(bike_passages, str(tiny_encoder_dir), tmp_path / "run" / "index", IndexParams(), dtype="float32",
                progress=False)
    return tmp_path / "run" / "index"


def test_search_reranks_by_the_generators_likelihood(bike_index, tiny_gpt2_dir):
    from genq.generation.likelihood import QueryLikelihoodReranker
    from genq.search import Searcher

    searcher = Searcher.load(bike_index, dtype="float32", reranker="query-likelihood",
                             rerank_generator=str(tiny_gpt2_dir))
    assert isinstance(searcher.reranker, QueryLikelihoodReranker)
    hits = searcher.search("oil the chain", k=8, rerank_depth=5)
    reranked = [h for h in hits if h.rerank_score is not None]
    assert len(reranked) == 5 and all(h.rerank_score is None for h in hits[5:])
    assert [h.rerank_score for h in reranked] == sorted((h.rerank_score for h in reranked), reverse=True)
    # each score is the generator's own teacher-forced log-probability of the query given that passage
    generator = searcher.reranker.generator
    passages = [{"_id": h.id, "title": h.title, "text": h.text} for h in reranked]
    assert [h.rerank_score for h in reranked] == pytest.approx(
        [direct_causal(generator, p, "oil the chain") for p in passages], abs=1e-3)
    # blended with the first stage: the same five, in the blend's order
    blended = searcher.search("oil the chain", k=8, rerank_depth=5, rerank_fusion="minmax", rerank_weight=0.5)
    assert {h.id for h in blended[:5]} == {h.id for h in reranked}


def test_the_runs_own_generator_scores_when_none_is_named(bike_index, tiny_gpt2_dir):
    from genq.search import likelihood_generator

    (bike_index.parent / "pairs.meta.json").write_text(json.dumps({"generator": {
        "model": str(tiny_gpt2_dir), "gguf_file": None, "family": "causal", "prompt_template": "promptagator",
        "prompt_style": "plain"}}))
    config = likelihood_generator(None, bike_index, device="cpu", dtype="float32")
    assert config.model == str(tiny_gpt2_dir) and config.prompt_template == "promptagator"
    assert config.prompt_style == "plain"
    assert likelihood_generator("other/model", bike_index).model == "other/model"  # a named one wins


def test_cli_search_and_evaluate_rerank_by_likelihood(tmp_path, bike_index, tiny_gpt2_dir, tiny_encoder_dir):
    from click.testing import CliRunner

    from genq.cli import main

    from .conftest import write_tiny_collection

    runner = CliRunner()
    result = runner.invoke(main, ["search", str(bike_index), "oil the chain", "--rerank", "query-likelihood",
                                  "--rerank-generator", str(tiny_gpt2_dir), "--rerank-depth", "3", "--json",
                                  "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.output[result.output.index("{"):])["hits"]
    assert sum("rerank_score" in h for h in hits) == 3
    # --rerank-generator belongs to query-likelihood: with a cross-encoder it is a mistake, said as one
    result = runner.invoke(main, ["search", str(bike_index), "oil", "--rerank", str(tiny_encoder_dir),
                                  "--rerank-generator", str(tiny_gpt2_dir)])
    assert result.exit_code == 2 and "--rerank-generator goes with --rerank query-likelihood" in result.output
    assert "Traceback" not in result.output

    data = write_tiny_collection(tmp_path / "eval", ({"_id": "c", "title": "", "text": "pump the tyre"},))
    result = runner.invoke(main, ["evaluate", "--eval-data", str(data), "--bm25", "--rerank", "query-likelihood",
                                  "--rerank-generator", str(tiny_gpt2_dir), "--rerank-depth", "2", "--no-cache",
                                  "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    assert "BM25 + rerank" in result.output


def test_serve_answers_bad_rerank_options_with_400(bike_index, tiny_gpt2_dir):
    from fastapi.testclient import TestClient

    from genq.search import Searcher, SearchOptions
    from genq.serve import create_app

    searcher = Searcher.load(bike_index, dtype="float32", reranker="query-likelihood",
                             rerank_generator=str(tiny_gpt2_dir))
    client = TestClient(create_app(searcher, defaults=SearchOptions(rerank_depth=3)))
    good = client.get("/search", params={"q": "oil the chain", "k": 5})
    assert good.status_code == 200
    assert sum("rerank_score" in h for h in good.json()["hits"]) == 3
    assert client.get("/info").json()["reranker"].startswith("query-likelihood")
    for bad in ({"rerank": "maybe"}, {"rerank_fusion": "average"}, {"rerank_weight": "2"}):
        answer = client.get("/search", params={"q": "oil", **bad})
        assert answer.status_code == 400, bad


def test_adapt_evaluates_hybrid_adapted_reranked_by_likelihood(tmp_path, raw_corpus, tiny_t5_dir, tiny_encoder_dir):
    from click.testing import CliRunner

    from genq.cli import main

    from .conftest import write_tiny_collection
    from .test_pipeline import adapt_args, stage_status

    data = write_tiny_collection(tmp_path / "eval-data")
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, adapt_args(raw_corpus, run_dir, tiny_t5_dir, tiny_encoder_dir,
                                                 "--eval-likelihood"))
    assert result.exit_code == 2 and "--eval-data" in result.output  # it reranks inside the evaluation
    args = adapt_args(raw_corpus, run_dir, tiny_t5_dir, tiny_encoder_dir, "--eval-data", str(data),
                      "--eval-likelihood")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert stage_status(result.output)["evaluate likelihood"] == "ran"
    report = json.loads((run_dir / "eval" / "likelihood" / "results.json").read_text())
    assert "hybrid(adapted) + likelihood" in [system["name"] for system in report["systems"]]
    assert report["settings"]["rerank_fusion"] == "minmax" and report["settings"]["rerank_depth"] == 20
    again = CliRunner().invoke(main, args)
    assert set(stage_status(again.output).values()) == {"skipped"}
