"""A damaged or inconsistent index, and a query model that is not the index's, are named (issue 24)."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from genq.cli import main
from genq.index import build_index

from .conftest import write_jsonl


def passages(path, n=12, prefix="p"):
    words = ["chain", "brake", "tyre", "gear", "saddle", "tube"]
    return write_jsonl(path, [{"_id": f"{prefix}{i}", "title": f"title {i}", "text": f"{words[i % 6]} text {i}"}
                              for i in range(n)])


@pytest.fixture()
def index_dir(tmp_path, tiny_encoder_dir):
    directory = tmp_path / "index"
    build_index(passages(tmp_path / "passages.jsonl"), str(tiny_encoder_dir), directory, dtype="float32",
                progress=False, save_embeddings=True)
    return directory


def rewrite_meta(directory, change):
    meta = json.loads((directory / "index.json").read_text())
    meta = change(meta)
    (directory / "index.json").write_text(json.dumps(meta))


def other_dimension(directory):
    import faiss

    index = faiss.IndexFlatIP(16)
    index.add(np.random.default_rng(0).random((12, 16), dtype=np.float32))
    faiss.write_index(index, str(directory / "index.faiss"))


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def rotate_lines(path):
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[1:] + lines[:1]))


DAMAGE = {
    "faiss file of another dimension": (other_dimension, "index.faiss"),
    "faiss file of another dimension, index built before genq recorded its files":
        (lambda d: (other_dimension(d), rewrite_meta(d, lambda m: {k: v for k, v in m.items() if k != "files"})),
         "holds 16-d vectors but index.json says 32"),
    "index.json without dimension": (lambda d: rewrite_meta(d, lambda m: {k: v for k, v in m.items()
                                                                           if k != "dimension"}), "index.json"),
    "index.json as a list": (lambda d: rewrite_meta(d, lambda m: [m]), "index.json: is damaged"),
    "params a string": (lambda d: rewrite_meta(d, lambda m: {**m, "params": "flat"}), "index.json: is damaged"),
    "index_type missing": (lambda d: rewrite_meta(d, lambda m: {k: v for k, v in m.items() if k != "index_type"}),
                           "index_type"),
    "wrong passage count": (lambda d: rewrite_meta(d, lambda m: {**m, "passages": 11}),
                            "holds 12 vectors but index.json says 11"),
    "store truncated to half": (lambda d: truncate(d / "passages.jsonl"), "passages.jsonl"),
    "store lines rotated by one": (lambda d: rotate_lines(d / "passages.jsonl"), "passages.jsonl"),
    "offsets random bytes": (lambda d: (d / "passages.offsets.npy").write_bytes(np.random.bytes(200)),
                             "passages.offsets.npy"),
    "offsets past the end, files unrecorded": (
        lambda d: (np.save(d / "passages.offsets.npy", np.arange(12) * 10_000),
                   rewrite_meta(d, lambda m: {k: v for k, v in m.items() if k != "files"})),
        "points outside the passage store"),
    "embeddings truncated": (lambda d: truncate(d / "embeddings.npy"), "embeddings.npy"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_index_is_named_by_search_and_add(tmp_path, index_dir, case):
    damage, expected = DAMAGE[case]
    damage(index_dir)
    runner = CliRunner()
    result = runner.invoke(main, ["search", str(index_dir), "chain", "--device", "cpu"])
    assert result.exit_code != 0 and expected in result.output, result.output
    assert "Traceback" not in result.output and "rebuild" in result.output
    before = {p.name: p.read_bytes() for p in index_dir.iterdir() if p.is_file()}
    result = runner.invoke(main, ["index", str(passages(tmp_path / "more.jsonl", n=3, prefix="q")), "-o",
                                  str(index_dir), "--add", "--device", "cpu"])
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    assert {p.name: p.read_bytes() for p in index_dir.iterdir() if p.is_file()} == before  # nothing built on it


def test_search_with_another_model_of_the_same_dimension_is_refused(tmp_path, index_dir, tiny_encoder_dir):
    import torch
    from sentence_transformers import SentenceTransformer

    other = tmp_path / "other-model"
    model = SentenceTransformer(str(tiny_encoder_dir), device="cpu")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01)
    model.save(str(other))
    result = CliRunner().invoke(main, ["search", str(index_dir), "chain", "-m", str(other), "--device", "cpu"])
    assert result.exit_code != 0 and "another model" in result.output and str(other) in result.output
    assert "Traceback" not in result.output

    # the index's own model folder retrained in place: refused too
    own = tmp_path / "own-model"
    shutil.copytree(tiny_encoder_dir, own)
    second = tmp_path / "index2"
    build_index(passages(tmp_path / "p2.jsonl"), str(own), second, dtype="float32", progress=False)
    assert CliRunner().invoke(main, ["search", str(second), "chain", "--device", "cpu"]).exit_code == 0
    shutil.rmtree(own)
    shutil.copytree(other, own)
    result = CliRunner().invoke(main, ["search", str(second), "chain", "--device", "cpu"])
    assert result.exit_code != 0 and "retrained since" in result.output


def test_a_swap_while_opening_reopens_the_new_version(tmp_path, index_dir, tiny_encoder_dir, monkeypatch):
    import os

    import genq.search as search_module
    from genq.search import Searcher

    newer = tmp_path / "newer"
    build_index(passages(tmp_path / "more.jsonl", n=20, prefix="n"), str(tiny_encoder_dir), newer, dtype="float32",
                progress=False)
    real, calls = search_module.read_index_meta, []

    def swapped_after_reading_meta(directory):
        meta = real(directory)
        calls.append(1)
        if len(calls) == 1:  # `index --overwrite` renames the new version into place right now
            os.rename(index_dir, tmp_path / "old")
            os.rename(newer, index_dir)
        return meta

    monkeypatch.setattr(search_module, "read_index_meta", swapped_after_reading_meta)
    searcher = Searcher.load(index_dir, device="cpu")
    assert len(calls) == 2 and len(searcher) == 20
    assert {hit.id[0] for hit in searcher.search("chain", k=5, mode="bm25")} == {"n"}  # one version, the new one


def test_the_server_answers_json_when_reading_fails_after_start(index_dir):
    from fastapi.testclient import TestClient

    from genq.search import Searcher
    from genq.serve.app import create_app

    searcher = Searcher.load(index_dir, device="cpu")
    client = TestClient(create_app(searcher), raise_server_exceptions=False)
    assert client.get("/search", params={"q": "chain"}).status_code == 200

    def unreadable(row):  # the disk under a running server fails
        raise OSError(5, "Input/output error")

    searcher.store.get = unreadable
    response = client.get("/search", params={"q": "chain"})
    assert response.status_code == 500 and response.json()["error"] == "the search failed: OSError"
    assert client.get("/health").status_code == 200  # and it goes on serving


def test_a_missing_index_path_is_said_to_be_missing(tmp_path):
    result = CliRunner().invoke(main, ["search", str(tmp_path / "nowhere"), "chain"])
    assert result.exit_code != 0 and "does not exist" in result.output and "Traceback" not in result.output


def test_a_trec_run_refuses_ids_it_cannot_carry_and_queries_split_on_newlines_only(tmp_path, tiny_encoder_dir):
    from genq.search import read_queries

    spaced = tmp_path / "spaced"
    build_index(write_jsonl(tmp_path / "p.jsonl", [{"_id": "doc 1", "title": "", "text": "chain text"},
                                                   {"_id": "doc2", "title": "", "text": "brake text"}]),
                str(tiny_encoder_dir), spaced, dtype="float32", progress=False)
    queries = tmp_path / "queries.txt"
    queries.write_text("chain\u2028oil\nbrake\n")
    assert [text for _, text in read_queries(queries)] == ["chain\u2028oil", "brake"]
    result = CliRunner().invoke(main, ["search", str(spaced), "--queries", str(queries), "--run",
                                       str(tmp_path / "out.trec"), "--device", "cpu"])
    assert result.exit_code != 0 and "'doc 1'" in result.output and "TREC run" in result.output
    assert not (tmp_path / "out.trec").exists()
