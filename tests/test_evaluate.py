import json
import math

import pytest
from click.testing import CliRunner

from genq.cli import main
from genq.evaluate import bm25_run, evaluate_systems, load_collection, score_run
from genq.io import DataError

from .conftest import write_jsonl


def make_collection(root, qrels_lines=None):
    root.mkdir(parents=True, exist_ok=True)
    write_jsonl(root / "corpus.jsonl", [
        {"_id": "1", "title": "Chain", "text": "oil the chain when it squeaks"},
        {"_id": "2", "title": "Brakes", "text": "replace worn brake pads and adjust the brake cable"},
        {"_id": "3", "title": "Tyres", "text": "inflate tyres to the pressure printed on the sidewall"},
        {"_id": "4", "title": "Saddle", "text": "set saddle height so the knee is slightly bent"},
    ])
    write_jsonl(root / "queries.jsonl", [{"_id": "1", "text": "chain squeaks"}, {"_id": "2", "text": "brake pads"},
                                         {"_id": "3", "text": "unjudged query"}])
    (root / "qrels").mkdir(exist_ok=True)
    lines = qrels_lines or ["1\t1\t1", "2\t2\t2", "2\t3\t1"]
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(lines) + "\n")
    return root


def test_metrics_match_hand_computed_values():
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 2, "d3": 1}}
    run = {"q1": {"d2": 0.9, "d1": 0.8}, "q2": {"d3": 0.9, "d2": 0.8}}
    means, per_query = score_run(qrels, run)
    # trec_eval's nDCG uses linear gains: q1 = (1/log2 3) / 1; q2 = (1 + 2/log2 3) / (2 + 1/log2 3)
    q1 = 1 / math.log2(3)
    q2 = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert per_query["q1"]["ndcg@10"] == pytest.approx(q1, abs=1e-4)
    assert per_query["q2"]["ndcg@10"] == pytest.approx(q2, abs=1e-4)
    assert per_query["q1"]["mrr@10"] == pytest.approx(0.5) and per_query["q2"]["mrr@10"] == pytest.approx(1.0)
    assert per_query["q1"]["p@10"] == pytest.approx(0.1) and per_query["q2"]["recall@100"] == pytest.approx(1.0)
    assert per_query["q1"]["map@100"] == pytest.approx(0.5)
    assert means["ndcg@10"] == pytest.approx((q1 + q2) / 2, abs=1e-4)


def test_mrr_is_cut_at_ten_and_missing_queries_score_zero():
    qrels = {"q1": {"d11": 1}, "q2": {"d1": 1}}
    run = {"q1": {f"d{i}": 1.0 - i / 100 for i in range(1, 12)}}
    _, per_query = score_run(qrels, run)
    assert per_query["q1"]["mrr@10"] == 0.0 and per_query["q1"]["recall@100"] == 1.0
    assert per_query["q2"]["ndcg@10"] == 0.0


def test_identical_query_and_doc_ids_are_kept(tmp_path):
    collection = load_collection(make_collection(tmp_path / "c"))
    assert collection.qrels["1"] == {"1": 1}  # query 1's relevant document is document 1
    _, per_query = score_run(collection.qrels, {"1": {"1": 2.0}, "2": {}})
    assert per_query["1"]["ndcg@10"] == 1.0


def test_bm25_finds_the_right_documents(tmp_path):
    collection = load_collection(make_collection(tmp_path / "c"))
    run = bm25_run(collection)
    assert max(run["1"], key=run["1"].get) == "1" and max(run["2"], key=run["2"].get) == "2"
    assert collection.unjudged_queries == 1 and "3" not in collection.queries


def test_missing_qrels_and_unknown_ids(tmp_path):
    root = make_collection(tmp_path / "c")
    (root / "qrels" / "test.tsv").unlink()
    with pytest.raises(DataError, match="qrels/test.tsv"):
        load_collection(root)
    root = make_collection(tmp_path / "d", ["1\t1\t1", "2\t99\t1", "77\t2\t1"])
    collection = load_collection(root)
    assert collection.dropped_qrels == 2 and "2 qrels lines" in collection.notes[0]
    root = make_collection(tmp_path / "e", ["1\t1"])
    with pytest.raises(DataError, match="3 tab-separated columns"):
        load_collection(root)


def test_cli_report_files(tmp_path, tiny_encoder_dir):
    root = make_collection(tmp_path / "c")
    out = tmp_path / "eval"
    result = CliRunner().invoke(main, ["evaluate", "--data", str(root), "--bm25", "--model", str(tiny_encoder_dir),
                                       "--name", "bm25", "--name", "tiny", "-o", str(out), "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    assert "| bm25" in result.output and "| tiny" in result.output
    report = json.loads((out / "results.json").read_text())
    assert [s["name"] for s in report["systems"]] == ["bm25", "tiny", "hybrid(tiny)"]  # hybrid: on with --bm25
    assert set(report["per_query"]["tiny"]) == {"1", "2"}
    assert "nDCG@10" in (out / "results.md").read_text() or "ndcg@10" in (out / "results.md").read_text()
    assert (out / "ndcg10.png").stat().st_size > 1000


def test_evaluate_index_pools_passages_to_documents(tmp_path, tiny_encoder_dir):
    from genq.index import build_index

    root = make_collection(tmp_path / "c")
    passages = write_jsonl(tmp_path / "passages.jsonl", [
        {"_id": "1#0", "title": "Chain", "text": "oil the chain", "doc_id": "1"},
        {"_id": "1#1", "title": "Chain", "text": "when it squeaks", "doc_id": "1"},
        {"_id": "2", "title": "Brakes", "text": "replace worn brake pads", "doc_id": "2"},
    ])
    build_index(passages, str(tiny_encoder_dir), tmp_path / "index", dtype="float32", progress=False)
    report = evaluate_systems(root, index_dirs=[str(tmp_path / "index")], progress=False)
    assert report["systems"][0]["metrics"]["recall@100"] > 0


def test_nothing_to_evaluate(tmp_path):
    result = CliRunner().invoke(main, ["evaluate", "--data", str(make_collection(tmp_path / "c"))])
    assert result.exit_code == 2 and "nothing to evaluate" in result.output


def test_chart_labels_keep_the_role_of_each_bar():
    from genq.evaluate import chart_label

    dense, hybrid = chart_label("/home/me/runs/bike/model"), chart_label("hybrid(/home/me/runs/bike/model)")
    assert dense == "bike/model" and hybrid == "hybrid(bike/model)"
    assert chart_label("hybrid(adapted) + adapted reranker") == "hybrid(adapted)\n+ adapted reranker"
    assert all(len(line) <= 24 for line in chart_label("/x/" + "a" * 80).split("\n"))
