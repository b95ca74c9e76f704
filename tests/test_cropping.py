"""genq crop: pseudo-queries cut from the passage itself (the generator-free baseline)."""

import json
import random

from click.testing import CliRunner

from genq.cli import main
from genq.cropping import crop_queries, crops_of
from genq.generation.pairs_file import iter_pairs

from .conftest import write_jsonl

TEXT = ("The chain needs oil every few weeks. A dry chain wears the cassette and the rings. "
        "Wipe it clean first, then oil each link and wipe off what is left.")


def test_crops_are_sentences_first_then_runs_of_words_all_distinct_and_inside_the_passage():
    crops = crops_of(TEXT, 5, random.Random(0), min_words=4, max_words=12)
    assert len(crops) == 5
    kinds = [kind for _, kind in crops]
    assert kinds[:2] == ["sentence", "sentence"] and set(kinds[2:]) == {"span"}
    assert len({crop.lower() for crop, _ in crops}) == 5
    words = TEXT.split()
    for crop, kind in crops:
        assert 4 <= len(crop.split()) <= 12
        assert crop in TEXT or kind == "sentence" and crop.rstrip(".") in TEXT
        assert len(crop.split()) < len(words)


def test_a_passage_too_short_gives_no_crop():
    assert crops_of("oil the chain", 3, random.Random(0), min_words=4) == []


def test_the_pairs_file_is_what_training_reads(tmp_path):
    passages = write_jsonl(tmp_path / "passages.jsonl", [{"_id": "a", "title": "Chain", "text": TEXT},
                                                          {"_id": "b", "title": "", "text": "too short"}])
    summary = crop_queries(passages, tmp_path / "pairs.jsonl", per_passage=3, seed=1)
    pairs = [record for _, record in iter_pairs(tmp_path / "pairs.jsonl")]
    assert summary.pairs == len(pairs) == 3 and summary.passages_without_crop == 1
    assert {p["passage_id"] for p in pairs} == {"a"} and all(p["passage"] == TEXT for p in pairs)
    assert all(p["source"] == "cropped" for p in pairs)
    again = tmp_path / "again.jsonl"
    crop_queries(passages, again, per_passage=3, seed=1)
    assert again.read_bytes() == (tmp_path / "pairs.jsonl").read_bytes()  # seeded: the same crops
    assert json.loads((tmp_path / "pairs.meta.json").read_text())["source"] == "cropped"


def test_cli_crop(tmp_path, bike_passages):
    result = CliRunner().invoke(main, ["crop", str(bike_passages), "-o", str(tmp_path / "c.jsonl"),
                                       "--queries-per-passage", "2", "--min-words", "3"])
    assert result.exit_code == 0, result.output
    assert "cropped 16 pseudo-queries from 8 passages" in result.output
    bad = CliRunner().invoke(main, ["crop", str(bike_passages), "-o", str(tmp_path / "d.jsonl"), "--min-words",
                                    "9", "--max-words", "5"])
    assert bad.exit_code != 0 and "--min-words" in bad.output and "Traceback" not in bad.output
