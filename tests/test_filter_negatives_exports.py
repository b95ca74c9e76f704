import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from genq.cli import main
from genq.encode import Encoder
from genq.exports import export_pairs
from genq.filter import filter_pairs, report_path_for
from genq.io import DataError
from genq.negatives import MiningConfig, mine_negatives
from genq.retrieval import DenseCorpus

from .conftest import WORDS, write_jsonl

# Distinct word pairs: the tiny word-level model gives every passage its own embedding.
CONTENT = [w for w in WORDS if len(w) > 3][:40]


def corpus_file(tmp_path, n=30, duplicate_of=None):
    passages = [{"_id": f"p{i}", "title": "", "text": f"{CONTENT[i]} {CONTENT[(i * 7 + 3) % len(CONTENT)]}"}
                for i in range(n)]
    if duplicate_of is not None:
        passages.append({"_id": "copy", "title": "", "text": passages[duplicate_of]["text"]})
    return write_jsonl(tmp_path / "corpus.jsonl", passages), passages


def test_filter_keeps_and_drops_the_right_pairs(tmp_path, tiny_encoder_dir):
    corpus, passages = corpus_file(tmp_path)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"query": passages[0]["text"], "passage_id": "p0", "passage": passages[0]["text"], "title": ""},
        {"query": passages[5]["text"], "passage_id": "p1", "passage": passages[1]["text"], "title": ""},
        {"query": passages[2]["text"], "passage_id": "p2", "passage": passages[2]["text"], "title": ""},
    ])
    out = tmp_path / "filtered.jsonl"
    summary = filter_pairs(pairs, corpus, str(tiny_encoder_dir), out, top_k=1, dtype="float32", progress=False)
    kept = [json.loads(x) for x in out.read_text().splitlines()]
    assert [p["passage_id"] for p in kept] == ["p0", "p2"]
    assert summary.kept == 2 and summary.dropped == 1 and summary.passages_with_query_after == 2
    report = json.loads(report_path_for(out).read_text())
    assert report["kept"] == 2 and report["passages_left_without_query"] == 1
    assert report["dropped_examples"][0]["passage_id"] == "p1"
    # the corpus embeddings were cached and are reused
    cache = list((tmp_path / ".genq-cache").glob("corpus-*.npy"))
    assert len(cache) == 1
    filter_pairs(pairs, corpus, str(tiny_encoder_dir), tmp_path / "again.jsonl", top_k=1, dtype="float32",
                 progress=False)
    assert list((tmp_path / ".genq-cache").glob("corpus-*.npy")) == cache


def test_filter_min_score(tmp_path, tiny_encoder_dir):
    corpus, passages = corpus_file(tmp_path)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"query": passages[0]["text"], "passage_id": "p0", "passage": passages[0]["text"]},
        {"query": passages[5]["text"], "passage_id": "p1", "passage": passages[1]["text"]},
    ])
    summary = filter_pairs(pairs, corpus, str(tiny_encoder_dir), tmp_path / "f.jsonl", top_k=None, min_score=0.999,
                           dtype="float32", progress=False)
    assert summary.kept == 1


def test_filter_bad_input(tmp_path, tiny_encoder_dir):
    corpus, _ = corpus_file(tmp_path)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"query": "q", "passage_id": "nope", "passage": "x"}])
    with pytest.raises(DataError, match="pairs.jsonl:1.*not in"):
        filter_pairs(pairs, corpus, str(tiny_encoder_dir), tmp_path / "f.jsonl", dtype="float32", progress=False)
    assert not (tmp_path / "f.jsonl").exists()
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = CliRunner().invoke(main, ["filter", str(pairs), "--corpus", str(empty), "-m", str(tiny_encoder_dir),
                                       "-o", str(tmp_path / "f.jsonl")])
    assert result.exit_code == 2 and "empty" in result.output


@pytest.mark.parametrize("retriever", ["dense", "bm25"])
def test_negatives_window_counts_and_no_positive_copies(tmp_path, tiny_encoder_dir, retriever):
    corpus, passages = corpus_file(tmp_path, duplicate_of=3)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"query": passages[i]["text"], "passage_id": f"p{i}", "passage": passages[i]["text"]} for i in range(8)])
    out = tmp_path / "neg.jsonl"
    config = MiningConfig(num_negatives=3, range_min=2, range_max=12, relative_margin=None, retriever=retriever)
    summary = mine_negatives(pairs, corpus, out, model=str(tiny_encoder_dir), config=config, dtype="float32",
                             progress=False)
    mined = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(mined) == 8 and summary.pairs == 8
    text_of = {p["_id"]: p["text"] for p in passages}
    for pair in mined:
        assert len(pair["negatives"]) <= 3
        for negative in pair["negatives"]:
            assert negative["passage_id"] != pair["passage_id"]
            assert negative["text"] != pair["passage"] and text_of[negative["passage_id"]] == negative["text"]
    if retriever == "dense":
        assert all(len(p["negatives"]) == 3 for p in mined)
        encoder = Encoder(str(tiny_encoder_dir), dtype="float32")
        dense = DenseCorpus(passages, encoder)
        for pair in mined:
            _, rows = dense.search(dense.encode_queries([pair["query"]]), 12)
            ranks = {passages[r]["_id"]: rank for rank, r in enumerate(rows[0], start=1)}
            assert all(2 < ranks[n["passage_id"]] <= 12 for n in pair["negatives"])


def test_negatives_margin_excludes_near_positives(tmp_path, tiny_encoder_dir):
    corpus, passages = corpus_file(tmp_path)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"query": passages[0]["text"], "passage_id": "p0", "passage": passages[0]["text"]}])
    loose = mine_negatives(pairs, corpus, tmp_path / "a.jsonl", model=str(tiny_encoder_dir), dtype="float32",
                           config=MiningConfig(num_negatives=5, range_min=0, range_max=30, relative_margin=None),
                           progress=False)
    strict = mine_negatives(pairs, corpus, tmp_path / "b.jsonl", model=str(tiny_encoder_dir), dtype="float32",
                            config=MiningConfig(num_negatives=5, range_min=0, range_max=30, relative_margin=0.9),
                            progress=False)
    assert strict.excluded_by_margin > 0 and loose.excluded_by_margin == 0


def pairs_with_negatives(tmp_path):
    return write_jsonl(tmp_path / "pairs.jsonl", [
        {"query": "how to oil a chain", "passage_id": "p1", "passage": "oil the chain", "title": "Chain",
         "negatives": [{"passage_id": "p2", "title": "Brakes", "text": "brake pads"}]},
        {"query": "brake pads worn", "passage_id": "p2", "passage": "brake pads", "title": "Brakes",
         "negatives": [{"passage_id": "p1", "title": "Chain", "text": "oil the chain"}]},
    ])


def test_export_beir(tmp_path):
    result = export_pairs(pairs_with_negatives(tmp_path), "beir", tmp_path / "beir")
    queries = [json.loads(x) for x in (tmp_path / "beir" / "gen-queries.jsonl").read_text().splitlines()]
    with open(tmp_path / "beir" / "gen-qrels" / "train.tsv") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    corpus = [json.loads(x) for x in (tmp_path / "beir" / "corpus.jsonl").read_text().splitlines()]
    assert rows[0] == ["query-id", "corpus-id", "score"] and rows[1] == [queries[0]["_id"], "p1", "1"]
    assert {c["_id"] for c in corpus} == {"p1", "p2"} and result["queries"] == 2


def test_export_dpr(tmp_path):
    export_pairs(pairs_with_negatives(tmp_path), "dpr", tmp_path / "dpr.json")
    data = json.loads((tmp_path / "dpr.json").read_text())
    assert len(data) == 2
    item = data[0]
    assert set(item) >= {"question", "answers", "positive_ctxs", "negative_ctxs", "hard_negative_ctxs"}
    assert item["positive_ctxs"][0] == {"title": "Chain", "text": "oil the chain", "passage_id": "p1"}
    assert item["hard_negative_ctxs"][0]["passage_id"] == "p2" and item["answers"] == []


def test_export_flag(tmp_path):
    export_pairs(pairs_with_negatives(tmp_path), "flag", tmp_path / "flag.jsonl")
    rows = [json.loads(x) for x in (tmp_path / "flag.jsonl").read_text().splitlines()]
    assert rows[0] == {"query": "how to oil a chain", "pos": ["oil the chain"], "neg": ["brake pads"]}


def test_export_simpletransformers(tmp_path):
    import pandas as pd

    export_pairs(pairs_with_negatives(tmp_path), "simpletransformers", tmp_path / "st.tsv")
    frame = pd.read_csv(tmp_path / "st.tsv", sep="\t")
    assert list(frame.columns) == ["query_text", "gold_passage", "hard_negative"]
    assert frame.iloc[0].tolist() == ["how to oil a chain", "oil the chain", "brake pads"]
    plain = write_jsonl(tmp_path / "plain.jsonl", [{"query": "q", "passage": "p", "passage_id": "1"}])
    export_pairs(plain, "simpletransformers", tmp_path / "plain.tsv")
    assert list(pd.read_csv(tmp_path / "plain.tsv", sep="\t").columns) == ["query_text", "gold_passage"]


def test_export_hf(tmp_path):
    import datasets

    export_pairs(pairs_with_negatives(tmp_path), "hf", tmp_path / "hf")
    dataset = datasets.load_from_disk(str(tmp_path / "hf"))
    assert dataset.column_names == ["query", "passage_id", "passage", "title", "negatives"]
    assert dataset[0]["negatives"] == ["brake pads"]
    export_pairs(pairs_with_negatives(tmp_path), "hf", tmp_path / "pairs.parquet")
    parquet = datasets.load_dataset("parquet", data_files=str(tmp_path / "pairs.parquet"), split="train")
    assert len(parquet) == 2 and np.array_equal(parquet["passage_id"], ["p1", "p2"])


def test_export_cli(tmp_path):
    result = CliRunner().invoke(main, ["export", str(pairs_with_negatives(tmp_path)), "--format", "flag", "-o",
                                       str(tmp_path / "f.jsonl")])
    assert result.exit_code == 0 and (tmp_path / "f.jsonl").exists()


def test_pairs_from_another_corpus_are_refused_by_filter_and_mining(tmp_path, tiny_encoder_dir):
    corpus_b = write_jsonl(tmp_path / "b.jsonl", [{"_id": f"p{i}", "title": "", "text": f"other text {i}"}
                                                 for i in range(6)])
    pairs_a = write_jsonl(tmp_path / "pairs.jsonl", [{"query": f"q{i}", "passage_id": f"p{i}",
                                                      "passage": f"the text of corpus a {i}"} for i in range(6)])
    # the model named does not exist: the pairs are checked before any model loads, so the pairs are the error
    for command in (["filter", str(pairs_a), "--corpus", str(corpus_b), "-m", str(tmp_path / "no-model"), "-o",
                     str(tmp_path / "f.jsonl")],
                    ["mine-negatives", str(pairs_a), "--corpus", str(corpus_b), "--neg-retriever", "bm25", "-o",
                     str(tmp_path / "n.jsonl")]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 2 and "pairs.jsonl:1" in result.output and "another corpus" in result.output
        assert not (tmp_path / command[-1]).exists()
