import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from genq.ann import IndexParams
from genq.cli import main
from genq.index import add_to_index, build_index, read_index_meta, reindex
from genq.io import DataError, GenqError
from genq.search import Searcher, read_queries

from .conftest import write_jsonl


def many_passages(tmp_path, n=120, prefix="p", name="passages.jsonl"):
    words = ["chain", "brake", "tyre", "gear", "saddle", "tube", "hub", "disc", "pump", "spoke", "rim", "fork"]
    return write_jsonl(tmp_path / name, [
        {"_id": f"{prefix}{i}", "title": f"title {i}", "text": f"{words[i % 12]} {words[(i * 7) % 12]} {i} text"}
        for i in range(n)])


@pytest.mark.parametrize("params", [IndexParams("flat"), IndexParams("hnsw", hnsw_m=8),
                                    IndexParams("hnsw-sq", hnsw_m=8), IndexParams("ivf-pq", nlist=2, pq_m=8),
                                    IndexParams(faiss_factory="IVF2,Flat"),
                                    IndexParams("auto")])
def test_build_load_round_trip(tmp_path, tiny_encoder_dir, params):
    passages = many_passages(tmp_path)
    out = tmp_path / "index"
    summary = build_index(passages, str(tiny_encoder_dir), out, params, dtype="float32", progress=False)
    assert summary.passages == 120
    meta = read_index_meta(out)
    assert meta["passages"] == 120 and meta["dimension"] == 32 and meta["normalized"]
    expected = "factory" if params.faiss_factory else "flat" if params.index_type == "auto" else params.index_type
    assert meta["index_type"] == summary.index_type == expected
    searcher = Searcher.load(out, dtype="float32")
    # a passage's own text finds itself first on the exact index
    hits = searcher.search("title 7 disc brake 7 text", k=5)
    assert len(hits) == 5 and [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert all(isinstance(h.score, float) and h.text and h.title for h in hits)
    if summary.index_type == "flat":
        # the tiny tokenizer maps numbers to [UNK]: every passage with the same two words is an exact match
        same_words = {f"p{j}" for j in range(120) if (j % 12, (j * 7) % 12) == (7, 1)}
        assert hits[0].id in same_words and "p7" in {h.id for h in hits}
        assert hits[0].score == pytest.approx(1.0, abs=1e-3)


def test_ids_titles_texts_come_back_right(tmp_path, tiny_encoder_dir):
    passages = many_passages(tmp_path, n=30)
    build_index(passages, str(tiny_encoder_dir), tmp_path / "index", dtype="float32", progress=False)
    searcher = Searcher.load(tmp_path / "index", dtype="float32")
    source = {json.loads(line)["_id"]: json.loads(line) for line in passages.read_text().splitlines()}
    for hit in searcher.search("chain", k=30):
        assert source[hit.id]["title"] == hit.title and source[hit.id]["text"] == hit.text
    batch = searcher.search_batch(["chain", "brake"], k=3)
    assert len(batch) == 2 and all(len(hits) == 3 for hits in batch)


def test_add_and_unique_ids(tmp_path, tiny_encoder_dir):
    build_index(many_passages(tmp_path, n=20), str(tiny_encoder_dir), tmp_path / "index", dtype="float32",
                save_embeddings=True, progress=False)
    old_vectors = np.load(tmp_path / "index" / "embeddings.npy")
    more = many_passages(tmp_path, n=5, prefix="new", name="more.jsonl")
    summary = add_to_index(tmp_path / "index", more, dtype="float32", progress=False)
    assert summary.added == 5 and summary.passages == 25
    searcher = Searcher.load(tmp_path / "index", dtype="float32")
    assert len(searcher) == 25 and searcher.search("title 3 gear", k=25)
    joined = np.load(tmp_path / "index" / "embeddings.npy")
    assert joined.shape == (25, 32) and np.array_equal(joined[:20], old_vectors)
    assert np.allclose(np.linalg.norm(joined[20:], axis=1), 1.0, atol=1e-4)  # the new passages' vectors, not zeros
    before = sorted(os.listdir(tmp_path / "index"))
    with pytest.raises(DataError, match="already in the index"):
        add_to_index(tmp_path / "index", more, dtype="float32", progress=False)
    assert sorted(os.listdir(tmp_path / "index")) == before and len(Searcher.load(tmp_path / "index")) == 25


def test_reindex_from_saved_embeddings(tmp_path, tiny_encoder_dir):
    build_index(many_passages(tmp_path), str(tiny_encoder_dir), tmp_path / "flat", dtype="float32",
                save_embeddings=True, progress=False)
    summary = reindex(tmp_path / "flat", tmp_path / "hnsw", IndexParams("hnsw", hnsw_m=8))
    assert summary.index_type == "hnsw" and len(Searcher.load(tmp_path / "hnsw", dtype="float32")) == 120


def test_interrupted_build_leaves_old_index_loadable(tmp_path, tiny_encoder_dir, monkeypatch):
    passages = many_passages(tmp_path)
    out = tmp_path / "index"
    build_index(passages, str(tiny_encoder_dir), out, dtype="float32", progress=False)
    import genq.index as index_module

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(index_module, "build_faiss_index", crash)
    with pytest.raises(KeyboardInterrupt):
        build_index(many_passages(tmp_path, n=10, name="other.jsonl"), str(tiny_encoder_dir), out,
                    dtype="float32", progress=False, overwrite=True)
    assert len(Searcher.load(out, dtype="float32")) == 120
    # what is left is the finished encoding, which the same command resumes from (tests/test_index_resume.py)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".index") and p.name != ".index.lock"] == [
        ".index.encoding"]
    # a fresh build interrupted the same way never leaves a directory that loads
    with pytest.raises(KeyboardInterrupt):
        build_index(passages, str(tiny_encoder_dir), tmp_path / "fresh", dtype="float32", progress=False)
    assert not (tmp_path / "fresh").exists()


def test_incomplete_index_refused(tmp_path, tiny_encoder_dir):
    build_index(many_passages(tmp_path, n=10), str(tiny_encoder_dir), tmp_path / "index", dtype="float32",
                progress=False)
    (tmp_path / "index" / "index.faiss").unlink()
    with pytest.raises(DataError, match="missing index.faiss"):
        Searcher.load(tmp_path / "index")


def test_cli_index_search_json_and_run(tmp_path, tiny_encoder_dir):
    runner = CliRunner()
    passages = many_passages(tmp_path, n=40)
    result = runner.invoke(main, ["index", str(passages), "--model", str(tiny_encoder_dir), "-o",
                                  str(tmp_path / "index"), "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    assert "flat" in result.output
    result = runner.invoke(main, ["search", str(tmp_path / "index"), "chain brake", "-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["query"] == "chain brake" and len(payload["hits"]) == 3
    result = runner.invoke(main, ["search", str(tmp_path / "index"), "chain brake", "-k", "2"])
    assert "1. title" in result.output and "2. title" in result.output
    queries = write_jsonl(tmp_path / "queries.jsonl", [{"_id": "q1", "text": "chain"}, {"_id": "q2", "text": "hub"}])
    run = tmp_path / "run.trec"
    result = runner.invoke(main, ["search", str(tmp_path / "index"), "--queries", str(queries), "--run", str(run),
                                  "-k", "5"])
    assert result.exit_code == 0, result.output
    lines = run.read_text().splitlines()
    assert len(lines) == 10 and lines[0].split()[:2] == ["q1", "Q0"] and lines[0].split()[3] == "1"
    plain = tmp_path / "queries.txt"
    plain.write_text("chain\n\nhub\n")
    assert read_queries(plain) == [("1", "chain"), ("2", "hub")]


def test_cli_index_bad_inputs(tmp_path, tiny_encoder_dir):
    runner = CliRunner()
    result = runner.invoke(main, ["index", str(tmp_path / "nope.jsonl"), "--model", str(tiny_encoder_dir), "-o",
                                  str(tmp_path / "index")])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = runner.invoke(main, ["search", str(tmp_path / "nope"), "q"])
    assert result.exit_code == 2 and "nope: does not exist" in result.output
    with pytest.raises(GenqError, match="pq-m"):
        IndexParams("ivf-pq", pq_m=5).resolved(1000, 32)


def test_auto_follows_the_measured_thresholds():
    from genq.ann import FLAT_UP_TO, HNSW_UP_TO, auto_index_type

    assert [auto_index_type(n) for n in (FLAT_UP_TO, FLAT_UP_TO + 1, HNSW_UP_TO, HNSW_UP_TO + 1)] == \
        ["flat", "hnsw", "hnsw", "hnsw-sq"]  # past 2M the graph over 8-bit codes, not IVF-PQ (results/scale.md)
    assert IndexParams().resolved(HNSW_UP_TO + 1, 384).index_type == "hnsw-sq"
