import csv
import json

import pytest
from click.testing import CliRunner

from genq.cli import main
from genq.corpus import Chunker, TokenCounter, corpus_stats, iter_documents, prepare_corpus
from genq.io import DataError, ErrorTally, iter_jsonl

from .conftest import SHARED_IR, write_jsonl

WORDS = TokenCounter("words")


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def prepare(tmp_path, source, **options):
    out = tmp_path / "out.jsonl"
    options.setdefault("tokenizer", "words")
    options.setdefault("progress", False)
    summary = prepare_corpus(source, out, **options)
    return summary, read(out)


# ----------------------------------------------------------------------------- readers


def test_beir_corpus(tmp_path):
    src = write_jsonl(tmp_path / "corpus.jsonl", [{"_id": "d1", "title": "T", "text": "hello  world\n again"},
                                                   {"_id": "d2", "title": "", "text": "second"}])
    summary, rows = prepare(tmp_path, src)
    assert rows == [{"_id": "d1", "title": "T", "text": "hello world again", "doc_id": "d1"},
                    {"_id": "d2", "title": "", "text": "second", "doc_id": "d2"}]
    assert summary.documents == 2 and summary.passages == 2


def test_beir_folder_layout(tmp_path):
    (tmp_path / "beir").mkdir()
    write_jsonl(tmp_path / "beir" / "corpus.jsonl", [{"_id": "1", "text": "a b c"}])
    _, rows = prepare(tmp_path, tmp_path / "beir")
    assert rows[0]["_id"] == "1"


def test_jsonl_with_user_fields(tmp_path):
    src = write_jsonl(tmp_path / "docs.jsonl", [{"key": 7, "body": "some text", "heading": "H"}])
    _, rows = prepare(tmp_path, src, id_field="key", text_field="body", title_field="heading")
    assert rows == [{"_id": "7", "title": "H", "text": "some text", "doc_id": "7"}]


def test_json_array(tmp_path):
    src = tmp_path / "docs.json"
    src.write_text(json.dumps([{"id": "a", "text": "x y"}, {"id": "b", "text": "z"}]))
    _, rows = prepare(tmp_path, src)
    assert [r["_id"] for r in rows] == ["a", "b"]


@pytest.mark.parametrize("suffix,delimiter", [(".csv", ","), (".tsv", "\t")])
def test_csv_tsv(tmp_path, suffix, delimiter):
    src = tmp_path / f"docs{suffix}"
    with open(src, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(["id", "title", "text"])
        writer.writerow(["1", "One", "text, with a comma"])
        writer.writerow(["2", "Two", "multi\nline"])
    _, rows = prepare(tmp_path, src)
    assert rows[0]["text"] == "text, with a comma" and rows[1]["text"] == "multi line"


def test_txt_lines_and_paragraphs(tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("first passage\nsecond passage\n")
    _, rows = prepare(tmp_path, lines)
    assert [r["_id"] for r in rows] == ["lines-1", "lines-2"]
    paragraphs = tmp_path / "paras.txt"
    paragraphs.write_text("para one\ncontinues\n\npara two\n")
    _, rows = prepare(tmp_path, paragraphs)
    assert [r["text"] for r in rows] == ["para one continues", "para two"]


def test_folder_titles(tmp_path):
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "guide.md").write_text("# Fixing Brakes\n\nSqueeze the lever.\n")
    (folder / "chain_care.txt").write_text("Oil the chain.\n")
    _, rows = prepare(tmp_path, folder)
    by_id = {r["_id"]: r for r in rows}
    assert by_id["sub/guide"]["title"] == "Fixing Brakes" and by_id["sub/guide"]["text"] == "Squeeze the lever."
    assert by_id["chain_care"]["title"] == "chain care"


def test_hf_dataset_and_parquet(tmp_path):
    import datasets

    dataset = datasets.Dataset.from_list([{"doc": "x1", "text": "alpha beta"}, {"doc": "x2", "text": "gamma"}])
    dataset.save_to_disk(str(tmp_path / "hf"))
    _, rows = prepare(tmp_path, tmp_path / "hf", id_field="doc")
    assert [r["_id"] for r in rows] == ["x1", "x2"]
    dataset.to_parquet(str(tmp_path / "docs.parquet"))
    _, rows = prepare(tmp_path, tmp_path / "docs.parquet", id_field="doc")
    assert [r["text"] for r in rows] == ["alpha beta", "gamma"]


def test_format_override(tmp_path):
    src = tmp_path / "docs.data"
    src.write_text('{"_id": "1", "text": "x"}\n')
    with pytest.raises(DataError, match="--format"):
        prepare(tmp_path, src)
    _, rows = prepare(tmp_path, src, format="jsonl")
    assert rows[0]["_id"] == "1"


# ----------------------------------------------------------------------------- chunking


def test_chunker_respects_budget_and_overlap():
    text = " ".join(f"Sentence number {i} has six words." for i in range(40))
    chunker = Chunker(WORDS, max_tokens=30, overlap=8)
    chunks = chunker.chunk(text)
    assert len(chunks) > 1
    assert all(n <= 30 for n in WORDS.count(chunks))
    # neighbours share their boundary sentence, and every chunk ends on a sentence end
    for left, right in zip(chunks, chunks[1:]):
        assert left.endswith(".")
        assert right.startswith(left.split(". ")[-1].rstrip(".")[:10])
    assert chunks[0].startswith("Sentence number 0") and "Sentence number 39" in chunks[-1]


def test_chunker_splits_overlong_sentence_between_words():
    text = " ".join(["word"] * 100)
    chunks = Chunker(WORDS, max_tokens=20, overlap=0).chunk(text)
    assert all(n <= 20 for n in WORDS.count(chunks)) and sum(WORDS.count(chunks)) == 100


LONG_WORDS = ["brake", "gear", "tube", "hub", "pump"] * 12


def test_chunk_ids_and_model_tokenizer(tmp_path, word_tokenizer_dir):
    src = write_jsonl(tmp_path / "c.jsonl", [{"_id": "long", "text": " ".join(f"chain {w} oil ." for w in LONG_WORDS)},
                                             {"_id": "short", "text": "brake pad"}])
    summary, rows = prepare(tmp_path, src, tokenizer=str(word_tokenizer_dir), max_tokens=40, overlap=10)
    ids = [r["_id"] for r in rows]
    assert ids[:2] == ["long#0", "long#1"] and ids[-1] == "short"
    assert {r["doc_id"] for r in rows} == {"long", "short"}
    assert summary.chunked_documents == 1


def test_chunker_rejects_bad_settings():
    with pytest.raises(Exception, match="overlap"):
        Chunker(WORDS, max_tokens=20, overlap=15)


def test_cleanup_counts(tmp_path):
    src = write_jsonl(tmp_path / "c.jsonl", [{"_id": "1", "text": "same  text"}, {"_id": "2", "text": "same text"},
                                             {"_id": "3", "text": "   "}, {"_id": "4", "text": "other"}])
    summary, rows = prepare(tmp_path, src)
    assert [r["_id"] for r in rows] == ["1", "4"]
    assert summary.duplicates_dropped == 1 and summary.empty_dropped == 1


# ----------------------------------------------------------------------------- bad input


BAD_CASES = {
    "malformed": (b'{"_id": "1", "text": "ok"}\n{"_id": "2", "text": \n{"_id": "3", "text": "ok3"}\n', 2,
                  "malformed JSON"),
    "missing_text": (b'{"_id": "1", "text": "ok"}\n{"_id": "2", "body": "x"}\n{"_id": "3", "text": "ok3"}\n', 2,
                     "no text field"),
    "missing_id": (b'{"_id": "1", "text": "ok"}\n{"text": "x"}\n{"_id": "3", "text": "ok3"}\n', 2, "no id"),
    "not_utf8": (b'{"_id": "1", "text": "ok"}\n{"_id": "2", "text": "caf\xe9"}\n{"_id": "3", "text": "ok3"}\n', 2,
                 "not UTF-8"),
    "duplicate_id": (b'{"_id": "1", "text": "ok"}\n{"_id": "1", "text": "again"}\n{"_id": "3", "text": "ok3"}\n', 2,
                     "duplicate id"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_stops_with_file_line_and_fix(tmp_path, case):
    content, line, message = BAD_CASES[case]
    src = tmp_path / "bad.jsonl"
    src.write_bytes(content)
    out = tmp_path / "out.jsonl"
    out.write_text("previous result\n")
    result = CliRunner().invoke(main, ["corpus", "prepare", str(src), "-o", str(out), "--tokenizer", "words"])
    assert result.exit_code == 2, result.output
    assert f"bad.jsonl:{line}" in result.output and message in result.output and "fix:" in result.output
    assert "Traceback" not in result.output
    assert out.read_text() == "previous result\n"  # nothing damaged


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_skipped_and_counted(tmp_path, case):
    content, _, _ = BAD_CASES[case]
    src = tmp_path / "bad.jsonl"
    src.write_bytes(content)
    summary, rows = prepare(tmp_path, src, on_error="skip")
    assert summary.bad_records_skipped == 1 and len(rows) == 2


def test_empty_file_and_missing_file(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    runner = CliRunner()
    result = runner.invoke(main, ["corpus", "prepare", str(empty), "-o", str(tmp_path / "o.jsonl"),
                                  "--tokenizer", "words"])
    assert result.exit_code == 2 and "is empty" in result.output
    result = runner.invoke(main, ["corpus", "prepare", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "o.jsonl"),
                                  "--tokenizer", "words"])
    assert result.exit_code == 2 and "does not exist" in result.output
    assert not (tmp_path / "o.jsonl").exists()


def test_csv_bad_utf8_names_line(tmp_path):
    src = tmp_path / "d.csv"
    src.write_bytes(b"id,text\n1,ok\n2,caf\xe9\n")
    with pytest.raises(DataError, match=r"d.csv:3"):
        list(iter_documents(src))


def test_iter_jsonl_streams_without_loading(tmp_path):
    src = write_jsonl(tmp_path / "big.jsonl", ({"_id": str(i), "text": "x"} for i in range(1000)))
    iterator = iter_jsonl(src, ErrorTally())
    assert next(iterator) == (1, {"_id": "0", "text": "x"})


# ----------------------------------------------------------------------------- CLI and real data


def test_cli_round_trip_and_stats(tmp_path):
    src = write_jsonl(tmp_path / "corpus.jsonl", [{"_id": str(i), "title": f"t{i}", "text": f"text number {i}"}
                                                  for i in range(5)])
    out = tmp_path / "passages.jsonl"
    runner = CliRunner()
    result = runner.invoke(main, ["corpus", "prepare", str(src), "-o", str(out), "--tokenizer", "words"])
    assert result.exit_code == 0, result.output
    assert "wrote 5 passages" in result.output
    # a prepared file is itself a valid input and comes back unchanged
    again = tmp_path / "again.jsonl"
    assert runner.invoke(main, ["corpus", "prepare", str(out), "-o", str(again), "--tokenizer", "words"]).exit_code == 0
    assert again.read_text() == out.read_text()
    result = runner.invoke(main, ["corpus", "stats", str(out), "--tokenizer", "words", "--json"])
    stats = json.loads(result.stdout)
    assert stats["documents"] == 5 and stats["passages"] == 5 and stats["token_percentiles"]["p100"] == 3


def test_version_and_help():
    runner = CliRunner()
    assert runner.invoke(main, ["--version"]).output.startswith("genq, version")
    assert "corpus" in runner.invoke(main, ["--help"]).output


@pytest.mark.skipif(not (SHARED_IR / "cranfield").exists(), reason="../shared/data/ir/cranfield not present")
def test_real_cranfield(tmp_path):
    summary, rows = prepare(tmp_path, SHARED_IR / "cranfield" / "corpus.jsonl", max_tokens=120, overlap=20)
    assert summary.documents == 1400 and summary.passages > 1400
    assert max(WORDS.count([r["text"] for r in rows])) <= 120
    stats = corpus_stats(tmp_path / "out.jsonl", "words", progress=False)
    assert stats.documents <= 1400 and stats.passages == summary.passages


CSV_CASES = {  # header and rows -> (extra options, expected (id, title, text) of the first passage, said)
    "id_like_column": ("plant_id,title,text\nP7,Fern,water weekly\nP8,Cactus,water monthly\n", [],
                       ("P7", "Fern", "water weekly"), "using the column 'plant_id' as the document id"),
    "no_id_column": ("title,text\nFern,water weekly\nCactus,water monthly\n", [],
                     ("1", "Fern", "water weekly"), "documents are numbered by row"),
    "text_field_alone": ("plant_id,headline,care_notes\nP7,Fern,water weekly\n", ["--text-field", "care_notes"],
                         ("P7", "", "water weekly"), "pass --title-field headline"),
    "all_named": ("plant_id,headline,care_notes\nP7,Fern,water weekly\n",
                  ["--text-field", "care_notes", "--id-field", "plant_id", "--title-field", "headline"],
                  ("P7", "Fern", "water weekly"), ""),
}


@pytest.mark.parametrize("case", sorted(CSV_CASES))
def test_csv_columns_are_found_or_numbered_and_unread_ones_named(tmp_path, case, caplog):
    content, options, expected, said = CSV_CASES[case]
    src = tmp_path / "plants.csv"
    src.write_text(content)
    out = tmp_path / "passages.jsonl"
    result = CliRunner().invoke(main, ["corpus", "prepare", str(src), "-o", str(out), "--tokenizer", "words",
                                       *options])
    assert result.exit_code == 0, result.output
    first = json.loads(out.read_text().splitlines()[0])
    assert (first["_id"], first["title"], first["text"]) == expected
    assert said in caplog.text
    if not said:
        assert "not read" not in caplog.text and "numbered" not in caplog.text
    if case == "no_id_column":
        assert [json.loads(x)["_id"] for x in out.read_text().splitlines()] == ["1", "2"]


@pytest.mark.parametrize(("content", "message"), [
    ("plant_id,headline,care_notes\nP7,Fern,water weekly\n", "pass --text-field NAME"),
    ("7,Fern,water the fern once a week in summer\n8,Cactus,water monthly\n", "looks like data"),
])
def test_csv_without_a_known_text_column_names_the_option(tmp_path, content, message):
    src = tmp_path / "plants.csv"
    src.write_text(content)
    result = CliRunner().invoke(main, ["corpus", "prepare", str(src), "-o", str(tmp_path / "out.jsonl"),
                                       "--tokenizer", "words"])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output
    assert not isinstance(result.exception, UnboundLocalError)


def test_passage_ids_stay_unique_and_ids_that_break_files_are_refused(tmp_path):
    from click.testing import CliRunner

    from genq.cli import main

    long_text = " ".join(f"word{i}" for i in range(120))
    source = write_jsonl(tmp_path / "docs.jsonl", [{"_id": "a", "text": long_text},  # chunks a#0, a#1, ...
                                                   {"_id": "a#1", "text": "a document really named a#1"}])
    out = tmp_path / "passages.jsonl"
    result = CliRunner().invoke(main, ["corpus", "prepare", str(source), "-o", str(out), "--tokenizer", "words",
                                       "--max-tokens", "50", "--overlap", "0"])
    assert result.exit_code == 0, result.output
    ids = [json.loads(line)["_id"] for line in out.read_text().splitlines()]
    assert len(ids) == len(set(ids)) and "a#1~2" in ids and "got a suffix to stay unique" in result.output

    for bad in ("", "   ", "tab\there", "line\nbreak", "nul\x00", "sep\u2028arator", "next\x85line"):
        source = write_jsonl(tmp_path / "bad.jsonl", [{"_id": bad, "text": "some text"}])
        result = CliRunner().invoke(main, ["corpus", "prepare", str(source), "-o", str(tmp_path / "p.jsonl"),
                                           "--tokenizer", "words"])
        assert result.exit_code == 2 and "bad.jsonl:1" in result.output and "Traceback" not in result.output, bad


def test_a_folder_names_the_files_it_does_not_read(tmp_path, caplog):
    import logging

    from genq.corpus import prepare_corpus

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# Chain\nclean the chain")
    (folder / "b.txt").write_text("brake pads wear out")
    (folder / "c.jsonl").write_text('{"_id": "x", "text": "three documents"}\n')
    (folder / "d.csv").write_text("id,text\n1,hello\n")
    (folder / ".DS_Store").write_bytes(b"\x00")
    with caplog.at_level(logging.WARNING, logger="genq"):
        summary = prepare_corpus(folder, tmp_path / "p.jsonl", tokenizer="words", progress=False)
    assert summary.documents == 2
    assert "2 file(s) that are not .txt or .md are not read: c.jsonl, d.csv" in caplog.text
    assert ".DS_Store" not in caplog.text
