"""Hybrid retrieval: BM25 inside the index, score and rank fusion, cross-encoder reranking, on every surface."""

import json
import logging
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from genq.cli import main
from genq.evaluate import evaluate_systems, parse_alphas
from genq.index import LEXICAL_DIR, META_FILE, add_to_index, build_index, read_index_meta, reindex
from genq.io import GenqError
from genq.retrieval import LexicalIndex, LexicalSettings, Reranker, blend_rerank, fuse
from genq.search import Searcher, SearchOptions

from .conftest import write_jsonl
from .test_evaluate import make_collection

PASSAGES = [
    {"_id": "chain", "title": "Chain care", "text": "clean the chains and oil them when they make noise"},
    {"_id": "brake", "title": "Brake pads", "text": "replace worn brake pad when the lever feels loose"},
    {"_id": "tyre", "title": "Tyre pressure", "text": "inflate the tyre with a pump to the right pressure"},
    {"_id": "gear", "title": "Gear shifting", "text": "adjust the cable when the gear does not shift"},
    {"_id": "hub", "title": "Hub bearings", "text": "grease the hub bearing when the wheel is loose"},
    {"_id": "disc", "title": "Disc rotor", "text": "clean the disc rotor when the brake makes a squeak"},
]


def rows(*values):
    return np.asarray(values, dtype=np.int64)


def scores(*values):
    return np.asarray(values, dtype=np.float32)


# --------------------------------------------------------------------------- fusion arithmetic


def test_minmax_fusion_matches_hand_computation():
    # dense: row 1 (0.9), row 2 (0.7), row 3 (0.5) -> normalised 1, 0.5, 0
    # bm25:  row 3 (12), row 4 (6), row 1 (3)      -> normalised 1, 1/3, 0
    fused = fuse(rows(1, 2, 3), scores(0.9, 0.7, 0.5), rows(3, 4, 1), scores(12, 6, 3), "minmax", alpha=0.5)
    by_row = {f.row: f for f in fused}
    assert by_row[1].score == pytest.approx(0.5 * 1 + 0.5 * 0)
    assert by_row[2].score == pytest.approx(0.5 * 0.5)          # not in the BM25 list: 0 there
    assert by_row[3].score == pytest.approx(0.5 * 0 + 0.5 * 1)
    assert by_row[4].score == pytest.approx(0.5 / 3)
    assert [f.row for f in fused] == [1, 3, 2, 4]  # 1 and 3 tie at 0.5: the better dense rank first
    assert (by_row[3].dense_rank, by_row[3].bm25_rank, by_row[3].bm25_score) == (3, 1, 12.0)
    assert by_row[2].bm25_rank is None and by_row[4].dense_rank is None


def test_alpha_moves_the_ranking_between_the_two_sides():
    dense_rows, dense_scores = rows(1, 2, 3), scores(0.9, 0.7, 0.5)
    bm25_rows, bm25_scores = rows(3, 4, 1), scores(12, 6, 3)
    assert [f.row for f in fuse(dense_rows, dense_scores, bm25_rows, bm25_scores, alpha=1.0)][:3] == [1, 2, 3]
    assert [f.row for f in fuse(dense_rows, dense_scores, bm25_rows, bm25_scores, alpha=0.0)][:3] == [3, 4, 1]


def test_rrf_matches_hand_computation_and_ignores_scores():
    fused = fuse(rows(1, 2), scores(0.9, 0.1), rows(2, 3), scores(50, 1), "rrf")
    by_row = {f.row: f.score for f in fused}
    assert by_row[2] == pytest.approx(1 / 62 + 1 / 61)
    assert by_row[1] == pytest.approx(1 / 61)
    assert by_row[3] == pytest.approx(1 / 62)
    assert [f.row for f in fused] == [2, 1, 3]


def test_fusion_skips_padding_and_handles_an_empty_side():
    fused = fuse(rows(5, -1), scores(0.3, 0.0), rows(-1, -1), scores(0, 0), "minmax")
    assert [(f.row, f.score) for f in fused] == [(5, 0.5)]  # a single candidate normalises to 1


@pytest.mark.parametrize("fusion, alpha", [("minmax", 1.5), ("minmax", -0.1), ("sum", 0.5)])
def test_bad_fusion_settings_are_refused(fusion, alpha):
    with pytest.raises(GenqError):
        fuse(rows(1), scores(1), rows(1), scores(1), fusion, alpha)


def test_alpha_lists():
    assert parse_alphas("0,0.25,...,1") == [0, 0.25, 0.5, 0.75, 1.0]
    assert parse_alphas("0.3, 0.7") == [0.3, 0.7]
    with pytest.raises(GenqError, match="0,0.1,...,1"):
        parse_alphas("a,b")


# --------------------------------------------------------------------------- BM25 index


def test_lexical_index_round_trip_stemming_and_unknown_terms(tmp_path):
    texts = [f"{p['title']} {p['text']}" for p in PASSAGES]
    lexical = LexicalIndex.build(texts)
    lexical.save(tmp_path / "bm25")
    loaded = LexicalIndex.load(tmp_path / "bm25")
    found_scores, found_rows = loaded.search(["oiling", "zebra", "the"], 3)
    assert found_rows[0][0] == 0 and found_scores[0][0] > 0  # "oiling" matches "oil" through the stemmer
    assert (found_rows[1] == -1).all() and (found_rows[2] == -1).all()  # unknown word, stopword: no hits
    assert loaded.score(["oiling"], np.asarray([0]))[0] == pytest.approx(found_scores[0][0])
    unstemmed = LexicalIndex.build(texts, LexicalSettings(language="none"))
    assert (unstemmed.search(["oiling"], 3)[1][0] == -1).all()  # no stemming: "oiling" is not "oil"
    keep_stopwords = LexicalIndex.build(texts, LexicalSettings(stopwords="none"))
    assert keep_stopwords.search(["the"], 3)[1][0][0] >= 0


def test_unknown_language_or_stopwords_name_the_choices():
    with pytest.raises(GenqError, match="english"):
        LexicalSettings(language="klingon").validate()
    with pytest.raises(GenqError, match="en, de"):
        LexicalSettings(stopwords="klingon").validate()


@pytest.fixture()
def passages_file(tmp_path):
    return write_jsonl(tmp_path / "passages.jsonl", PASSAGES)


@pytest.fixture()
def hybrid_index(tmp_path, passages_file, tiny_encoder_dir):
    build_index(passages_file, str(tiny_encoder_dir), tmp_path / "index", dtype="float32", progress=False)
    return tmp_path / "index"


def test_index_holds_a_bm25_part_and_searches_in_three_modes(hybrid_index):
    meta = read_index_meta(hybrid_index)
    assert meta["lexical"]["language"] == "english" and (hybrid_index / LEXICAL_DIR).is_dir()
    assert not list(hybrid_index.joinpath(LEXICAL_DIR).glob("*.pkl"))
    searcher = Searcher.load(hybrid_index, dtype="float32")
    assert searcher.modes == ("hybrid", "dense", "bm25") and searcher.default_mode == "hybrid"
    bm25_hits = searcher.search("squeak rotor", k=3, mode="bm25")
    assert bm25_hits[0].id == "disc" and bm25_hits[0].bm25_rank == 1 and bm25_hits[0].dense_rank is None
    assert all(h.bm25_score > 0 for h in bm25_hits)
    hybrid_hits = searcher.search("squeak rotor", k=6)
    assert len(hybrid_hits) == 6 and all(h.dense_rank is not None for h in hybrid_hits)
    assert [h.score for h in hybrid_hits] == sorted((h.score for h in hybrid_hits), reverse=True)
    disc = next(h for h in hybrid_hits if h.id == "disc")
    assert disc.bm25_rank == 1
    dense_hits = searcher.search("squeak rotor", k=6, mode="dense")
    assert all(h.bm25_rank is None for h in dense_hits) and dense_hits[0].dense_rank == 1
    # alpha 1 is the dense ranking, alpha 0 puts the BM25 hits first
    assert [h.id for h in searcher.search("squeak rotor", k=6, alpha=1.0)] == [h.id for h in dense_hits]
    assert searcher.search("squeak rotor", k=1, alpha=0.0)[0].id == "disc"
    rrf = searcher.search("squeak rotor", k=3, fusion="rrf")
    assert rrf[0].score == pytest.approx(2 * (0.5 / (60 + rrf[0].dense_rank) + 0.5 / (60 + rrf[0].bm25_rank)))
    batch = searcher.search_batch(["squeak rotor", "zebra"], k=2, mode="bm25")
    assert batch[0][0].id == "disc" and batch[1] == []  # a query BM25 cannot match gets no hits, not an error
    with pytest.raises(GenqError, match="mode"):
        searcher.search("x", mode="sparse")
    with pytest.raises(GenqError, match="alpha"):
        searcher.search("x", alpha=2)


def test_dense_only_and_pre_hybrid_indexes(tmp_path, passages_file, tiny_encoder_dir, hybrid_index, caplog):
    build_index(passages_file, str(tiny_encoder_dir), tmp_path / "dense", dtype="float32", progress=False,
                lexical=None)
    assert not (tmp_path / "dense" / LEXICAL_DIR).exists() and read_index_meta(tmp_path / "dense")["lexical"] is None
    searcher = Searcher.load(tmp_path / "dense", dtype="float32")
    assert searcher.modes == ("dense",) and searcher.search("chain", k=1)[0].dense_rank == 1
    with pytest.raises(GenqError, match="--mode dense"):
        searcher.search("chain", mode="bm25")
    # an index written before hybrid search: no "lexical" key, no bm25/ folder
    old = tmp_path / "old"
    shutil.copytree(hybrid_index, old)
    shutil.rmtree(old / LEXICAL_DIR)
    meta = json.loads((old / META_FILE).read_text())
    del meta["lexical"], meta["files"], meta["model_fingerprint"]  # nor what later genq versions record
    (old / META_FILE).write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="genq"):
        searcher = Searcher.load(old, dtype="float32")
    assert searcher.default_mode == "dense" and "no BM25 part" in caplog.text
    assert len(searcher.search("chain", k=3)) == 3


def test_add_rebuilds_bm25_and_reindex_keeps_it(tmp_path, passages_file, tiny_encoder_dir):
    build_index(passages_file, str(tiny_encoder_dir), tmp_path / "index", dtype="float32", progress=False,
                save_embeddings=True)
    extra = write_jsonl(tmp_path / "extra.jsonl", [
        {"_id": "spoke", "title": "Spokes", "text": "true the wheel by tightening each spoke"}])
    summary = add_to_index(tmp_path / "index", extra, dtype="float32", progress=False)
    assert summary.lexical is not None
    searcher = Searcher.load(tmp_path / "index", dtype="float32")
    assert searcher.search("spoke", k=1, mode="bm25")[0].id == "spoke"
    from genq.ann import IndexParams

    reindex(tmp_path / "index", tmp_path / "hnsw", IndexParams("hnsw", hnsw_m=8))
    assert Searcher.load(tmp_path / "hnsw", dtype="float32").search("spoke", k=1, mode="bm25")[0].id == "spoke"


# --------------------------------------------------------------------------- reranking


def test_reranker_reorders_the_top_and_keeps_the_rest(hybrid_index, tiny_cross_encoder_dir):
    reranker = Reranker(str(tiny_cross_encoder_dir), dtype="float32")
    searcher = Searcher.load(hybrid_index, dtype="float32", reranker=reranker)
    plain = searcher.search("brake squeak", k=6, rerank=False)
    hits = searcher.search("brake squeak", k=6, rerank_depth=4)
    assert {h.id for h in hits[:4]} == {h.id for h in plain[:4]}  # the depth decides which hits get rescored
    assert [h.id for h in hits[4:]] == [h.id for h in plain[4:]]
    head_scores = [h.rerank_score for h in hits[:4]]
    assert head_scores == sorted(head_scores, reverse=True) and all(h.rerank_score is None for h in hits[4:])
    expected = reranker.score("brake squeak", [{"title": h.title, "text": h.text} for h in plain[:4]])
    assert sorted(head_scores, reverse=True) == pytest.approx(sorted(expected.tolist(), reverse=True), abs=1e-5)
    assert hits[0].dense_rank is not None  # the retrieval ranks are still reported


def test_blend_rerank_replaces_or_mixes_the_two_scores():
    first, cross = [9.0, 5.0, 1.0], [-2.0, 3.0, 0.5]
    assert blend_rerank(first, cross, "replace").tolist() == cross
    assert np.argsort(-blend_rerank(first, cross, "minmax", 0.0)).tolist() == [0, 1, 2]  # the first stage's order
    assert np.argsort(-blend_rerank(first, cross, "minmax", 1.0)).tolist() == [1, 2, 0]  # the cross-encoder's
    # minmax 0.5, both sides scaled to [0, 1]: first 1, 0.5, 0 and cross 0, 1, 0.5
    assert blend_rerank(first, cross, "minmax", 0.5).tolist() == pytest.approx([0.5, 0.75, 0.25])
    rrf = blend_rerank(first, cross, "rrf", 0.5)
    assert rrf.tolist() == pytest.approx([1 / 63 + 1 / 61, 1 / 61 + 1 / 62, 1 / 62 + 1 / 63])
    assert blend_rerank([], [], "minmax").size == 0
    with pytest.raises(GenqError, match="rerank fusion"):
        blend_rerank(first, cross, "sum")
    with pytest.raises(GenqError, match="between 0 and 1"):
        blend_rerank(first, cross, "minmax", 1.5)


def test_blended_reranking_keeps_the_first_stage_at_weight_zero(hybrid_index, tiny_cross_encoder_dir):
    searcher = Searcher.load(hybrid_index, dtype="float32", reranker=str(tiny_cross_encoder_dir))
    plain = searcher.search("brake squeak", k=6, rerank=False)
    kept = searcher.search("brake squeak", k=6, rerank_depth=4, rerank_fusion="minmax", rerank_weight=0.0)
    assert [h.id for h in kept] == [h.id for h in plain]
    assert all(h.rerank_score is not None for h in kept[:4]) and kept[0].score == pytest.approx(1.0)
    replaced = searcher.search("brake squeak", k=6, rerank_depth=4)
    alone = searcher.search("brake squeak", k=6, rerank_depth=4, rerank_fusion="rrf", rerank_weight=1.0)
    assert [h.id for h in alone[:4]] == [h.id for h in replaced[:4]]
    with pytest.raises(GenqError, match="rerank fusion"):
        searcher.search("brake squeak", rerank_fusion="average")


def test_reranking_needs_a_cross_encoder(hybrid_index, tiny_encoder_dir):
    with pytest.raises(GenqError, match="cross-encoder"):
        Reranker(str(tiny_encoder_dir))
    searcher = Searcher.load(hybrid_index, dtype="float32")
    with pytest.raises(GenqError, match="--rerank MODEL"):
        searcher.search("chain", rerank=True)


# --------------------------------------------------------------------------- CLI


def test_cli_search_modes_and_bad_values(hybrid_index, tmp_path, tiny_cross_encoder_dir):
    runner = CliRunner()
    result = runner.invoke(main, ["search", str(hybrid_index), "squeak rotor", "--mode", "bm25", "--json",
                                  "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["mode"] == "bm25" and body["hits"][0]["id"] == "disc" and "bm25_rank" in body["hits"][0]
    result = runner.invoke(main, ["search", str(hybrid_index), "squeak rotor", "--dtype", "float32"])
    assert result.exit_code == 0 and "dense #" in result.output and "bm25 #1" in result.output
    result = runner.invoke(main, ["search", str(hybrid_index), "chain", "--alpha", "1.5"])
    assert result.exit_code == 2 and "alpha" in result.output
    result = runner.invoke(main, ["search", str(hybrid_index), "chain", "--fusion", "sum"])
    assert result.exit_code == 2 and "fusion" in result.output
    queries = write_jsonl(tmp_path / "queries.jsonl", [{"_id": "q1", "text": "squeak rotor"},
                                                       {"_id": "q2", "text": "tyre pump"}])
    run = tmp_path / "run.trec"
    result = runner.invoke(main, ["search", str(hybrid_index), "--queries", str(queries), "--run", str(run),
                                  "--fusion", "rrf", "-k", "3", "--dtype", "float32",
                                  "--rerank", str(tiny_cross_encoder_dir), "--rerank-fusion", "minmax",
                                  "--rerank-weight", "0.3"])
    assert result.exit_code == 0, result.output
    lines = run.read_text().splitlines()
    assert len(lines) == 6 and lines[0].split()[:2] == ["q1", "Q0"]
    result = runner.invoke(main, ["search", str(hybrid_index), "chain", "--rerank-weight", "2"])
    assert result.exit_code == 2 and "rerank-weight" in result.output


def test_cli_dense_only_index_refuses_bm25_with_the_fix(tmp_path, passages_file, tiny_encoder_dir):
    runner = CliRunner()
    result = runner.invoke(main, ["index", str(passages_file), "-m", str(tiny_encoder_dir), "-o",
                                  str(tmp_path / "dense"), "--no-lexical", "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["search", str(tmp_path / "dense"), "chain", "--mode", "bm25"])
    assert result.exit_code == 2 and "no BM25 part" in result.output and "genq index" in result.output
    result = runner.invoke(main, ["index", str(passages_file), "-m", str(tiny_encoder_dir), "-o",
                                  str(tmp_path / "x"), "--lexical-language", "klingon"])
    assert result.exit_code == 2 and "lexical-language" in result.output and not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- HTTP


@pytest.fixture()
def client(hybrid_index, tiny_cross_encoder_dir):
    from fastapi.testclient import TestClient

    from genq.serve import create_app

    searcher = Searcher.load(hybrid_index, dtype="float32", reranker=str(tiny_cross_encoder_dir))
    return TestClient(create_app(searcher, defaults=SearchOptions(rerank=False)))


def test_http_modes_alpha_fusion_and_rerank(client):
    info = client.get("/info").json()
    assert info["modes"] == ["hybrid", "dense", "bm25"] and info["defaults"]["mode"] == "hybrid"
    assert info["reranker"] and not info["defaults"]["rerank"] and not info["index"].startswith("/")
    body = client.get("/search", params={"q": "squeak rotor", "mode": "bm25"}).json()
    assert body["mode"] == "bm25" and body["hits"][0]["id"] == "disc"
    body = client.get("/search", params={"q": "squeak rotor"}).json()
    assert body["mode"] == "hybrid" and {"dense_rank", "dense_score"} <= set(body["hits"][0])
    body = client.get("/search", params={"q": "squeak rotor", "alpha": "0", "fusion": "minmax"}).json()
    assert body["hits"][0]["id"] == "disc"
    body = client.get("/search", params={"q": "squeak rotor", "rerank": "true", "k": 3}).json()
    assert all("rerank_score" in h for h in body["hits"])
    info = client.get("/info").json()["defaults"]
    assert info["rerank_fusion"] == "replace" and info["rerank_weight"] == 0.5
    blended = client.get("/search", params={"q": "squeak rotor", "rerank": "true", "k": 3, "rerank_fusion": "minmax",
                                            "rerank_weight": "0"}).json()
    plain = client.get("/search", params={"q": "squeak rotor", "k": 3}).json()
    assert [h["id"] for h in blended["hits"]] == [h["id"] for h in plain["hits"]]
    assert all("rerank_score" in h for h in blended["hits"])
    response = client.post("/search", json={"queries": ["squeak rotor", "tyre"], "mode": "dense", "alpha": 0.3})
    assert response.status_code == 200 and response.json()["mode"] == "dense"


@pytest.mark.parametrize("params", [{"mode": "sparse"}, {"alpha": "2"}, {"alpha": "abc"}, {"alpha": "nan"},
                                    {"fusion": "sum"}, {"rerank": "maybe"}, {"rerank_fusion": "sum"},
                                    {"rerank_weight": "2"}, {"rerank_weight": "x"}])
def test_http_bad_search_settings_get_a_400(client, params):
    response = client.get("/search", params={"q": "chain", **params})
    assert response.status_code == 400 and response.json()["error"]


@pytest.mark.parametrize("body", [{"query": "chain", "alpha": True}, {"query": "chain", "alpha": -1},
                                  {"query": "chain", "mode": 3}, {"query": "chain", "rerank": "yes please"},
                                  {"query": "chain", "rerank_weight": True}, {"query": "chain", "rerank_fusion": 1}])
def test_http_bad_post_settings_get_a_400(client, body):
    response = client.post("/search", json=body)
    assert response.status_code == 400 and response.json()["error"]


def test_http_dense_only_index_answers_bm25_with_a_400(tmp_path, passages_file, tiny_encoder_dir):
    from fastapi.testclient import TestClient

    from genq.serve import create_app

    build_index(passages_file, str(tiny_encoder_dir), tmp_path / "dense", dtype="float32", progress=False,
                lexical=None)
    client = TestClient(create_app(Searcher.load(tmp_path / "dense", dtype="float32")))
    response = client.get("/search", params={"q": "chain", "mode": "bm25"})
    assert response.status_code == 400 and "no BM25 part" in response.json()["error"]
    assert client.get("/info").json()["modes"] == ["dense"]
    response = client.get("/search", params={"q": "chain", "rerank": "true"})
    assert response.status_code == 400 and "--rerank" in response.json()["error"]


# --------------------------------------------------------------------------- evaluate


def test_evaluate_reports_dense_bm25_hybrid_sweep_and_rerank(tmp_path, tiny_encoder_dir, tiny_cross_encoder_dir):
    root = make_collection(tmp_path / "c")
    report = evaluate_systems(root, models=[str(tiny_encoder_dir)], bm25=True, names=["BM25", "tiny"],
                              alpha_sweep=[0.0, 0.5, 1.0], reranker=str(tiny_cross_encoder_dir), rerank_depth=2,
                              output_dir=tmp_path / "out", progress=False, dtype="float32")
    names = [s["name"] for s in report["systems"]]
    assert names == ["BM25", "tiny", "hybrid(tiny)", "BM25 + rerank", "tiny + rerank", "hybrid(tiny) + rerank"]
    ndcg = {s["name"]: s["metrics"]["ndcg@10"] for s in report["systems"]}
    sweep = report["alpha_sweep"]["ndcg@10"]["tiny"]
    # alpha 1 is the dense ranking; alpha 0 ranks BM25's matches first, then the dense-only ones (so >= BM25)
    assert sweep[2] == pytest.approx(ndcg["tiny"]) and sweep[0] >= ndcg["BM25"]
    assert sweep[1] == pytest.approx(ndcg["hybrid(tiny)"])
    assert "nDCG@10 by alpha" in (tmp_path / "out" / "results.md").read_text()
    assert evaluate_systems(root, bm25=True, progress=False)["systems"][0]["name"] == "BM25"  # no model: no hybrid
    with pytest.raises(GenqError, match="--model"):
        evaluate_systems(root, bm25=True, hybrid=True, progress=False)


def test_evaluate_blended_rerank_at_weight_zero_keeps_each_system(tmp_path, tiny_encoder_dir, tiny_cross_encoder_dir):
    root = make_collection(tmp_path / "c")
    result = CliRunner().invoke(main, ["evaluate", "--data", str(root), "--bm25", "--model", str(tiny_encoder_dir),
                                       "--rerank", str(tiny_cross_encoder_dir), "--rerank-depth", "3",
                                       "--rerank-fusion", "minmax", "--rerank-weight", "0", "--dtype", "float32",
                                       "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    assert report["settings"]["rerank_fusion"] == "minmax" and report["settings"]["rerank_weight"] == 0
    per_query = report["per_query"]
    for name in ("BM25", "hybrid(" + str(tiny_encoder_dir) + ")"):
        assert per_query[name + " + rerank"] == per_query[name]
    result = CliRunner().invoke(main, ["evaluate", "--data", str(root), "--bm25", "--rerank-fusion", "mean"])
    assert result.exit_code == 2 and "rerank-fusion" in result.output


def test_evaluate_scores_a_document_two_systems_found_once(tmp_path, tiny_encoder_dir, tiny_cross_encoder_dir):
    root = make_collection(tmp_path / "c")
    reranker = Reranker(str(tiny_cross_encoder_dir), dtype="float32")
    seen, score = [], reranker.score

    def counted(query, passages):
        seen.extend((query, p["_id"]) for p in passages)
        return score(query, passages)

    reranker.score = counted
    report = evaluate_systems(root, models=[str(tiny_encoder_dir)], bm25=True, names=["BM25", "tiny"],
                              reranker=reranker, rerank_depth=3, progress=False, dtype="float32")
    assert len([s for s in report["systems"] if s["name"].endswith("+ rerank")]) == 3
    queries = report["queries"]
    assert len(seen) == len(set(seen)) and queries * 3 <= len(seen) < 3 * queries * 3


def test_cli_evaluate_prints_the_sweep(tmp_path, tiny_encoder_dir):
    root = make_collection(tmp_path / "c")
    result = CliRunner().invoke(main, ["evaluate", "--data", str(root), "--bm25", "--model", str(tiny_encoder_dir),
                                       "--alpha-sweep", "0,0.5,...,1", "--fusion", "rrf", "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    assert "hybrid(" in result.output and "nDCG@10 by alpha (rrf" in result.output
    result = CliRunner().invoke(main, ["evaluate", "--data", str(root), "--bm25", "--model", str(tiny_encoder_dir),
                                       "--no-hybrid"])
    assert result.exit_code == 0 and "hybrid(" not in result.output
