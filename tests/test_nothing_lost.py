"""Issue 16, "nothing lost": no command destroys what it did not write, every crash point resumes.

Each test names the numbered defect it reproduces. Resume-after-kill of generate, train and
pseudo-label lives beside each stage's other tests (test_generate, test_train, test_gpl).
"""

from __future__ import annotations

import json
import os
import stat

import pytest
from click.testing import CliRunner

from genq.cli import main
from genq.index import build_index, read_index_meta
from genq.io import recover_interrupted_swap, replacing_directory

from .conftest import write_jsonl


def dead_pid() -> int:
    """A process id that is not running (the child of a finished fork)."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


# 1. a directory genq did not write is never replaced (index, export hf/beir, adapt run dir)
def test_index_refuses_a_folder_it_did_not_write(tmp_path, tiny_encoder_dir, bike_passages):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "thesis.txt").write_text("precious")
    for extra in ([], ["--overwrite"]):
        result = invoke("index", bike_passages, "-m", tiny_encoder_dir, "-o", docs, "--dtype", "float32", *extra)
        assert result.exit_code == 2 and "never replaces what it did not write" in result.output, result.output
    assert [p.name for p in docs.iterdir()] == ["thesis.txt"]
    # its own index: only with --overwrite
    out = tmp_path / "index"
    assert invoke("index", bike_passages, "-m", tiny_encoder_dir, "-o", out, "--dtype", "float32").exit_code == 0
    result = invoke("index", bike_passages, "-m", tiny_encoder_dir, "-o", out, "--dtype", "float32")
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert invoke("index", bike_passages, "-m", tiny_encoder_dir, "-o", out, "--dtype", "float32",
                  "--overwrite").exit_code == 0


def test_index_into_the_current_directory_is_refused(tmp_path, tiny_encoder_dir, bike_passages, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for target in (".", tmp_path.parent):
        result = invoke("index", bike_passages, "-m", tiny_encoder_dir, "-o", target, "--overwrite")
        assert result.exit_code == 2 and "current directory" in result.output, result.output
        assert "Traceback" not in result.output
    assert bike_passages.exists()


def test_export_refuses_a_folder_it_did_not_write(tmp_path, bike_passages):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"query": "oil the chain", "passage_id": "chain",
                                                    "passage": "clean the chain", "title": ""}])
    beir = tmp_path / "beir-data"
    beir.mkdir()
    (beir / "corpus.jsonl").write_text("the user's own corpus\n")
    for fmt in ("hf", "beir"):
        result = invoke("export", pairs, "--format", fmt, "-o", beir, "--overwrite")
        assert result.exit_code == 2 and "never replaces" in result.output, result.output
    assert (beir / "corpus.jsonl").read_text() == "the user's own corpus\n"
    out = tmp_path / "exported"
    assert invoke("export", pairs, "--format", "hf", "-o", out).exit_code == 0
    assert invoke("export", pairs, "--format", "hf", "-o", out).exit_code == 2
    assert invoke("export", pairs, "--format", "hf", "-o", out, "--overwrite").exit_code == 0
    import datasets

    assert len(datasets.load_from_disk(str(out))) == 1


def test_adapt_refuses_a_folder_that_is_not_a_run(tmp_path, bike_passages):
    home = tmp_path / "home"
    home.mkdir()
    (home / "passages.jsonl").write_text("mine\n")
    result = invoke("adapt", bike_passages, "-o", home, "--tokenizer", "words")
    assert result.exit_code == 2 and "not a genq run directory" in result.output, result.output
    assert (home / "passages.jsonl").read_text() == "mine\n"


# 2. output == input is refused in every command, through symlinks too
def test_output_equal_to_input_is_refused_everywhere(tmp_path, tiny_encoder_dir, bike_passages):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"query": "oil the chain", "passage_id": "chain",
                                                    "passage": "clean the chain", "title": ""}])
    link = tmp_path / "link.jsonl"
    link.symlink_to(pairs)
    before = {p: p.read_bytes() for p in (pairs, bike_passages)}
    commands = [
        ("corpus", "prepare", bike_passages, "-o", bike_passages, "--tokenizer", "words"),
        ("filter", pairs, "--corpus", bike_passages, "-o", link, "--base-model", tiny_encoder_dir),
        ("filter", pairs, "--corpus", bike_passages, "-o", bike_passages, "--base-model", tiny_encoder_dir),
        ("mine-negatives", pairs, "--corpus", bike_passages, "-o", pairs, "--base-model", tiny_encoder_dir),
        ("export", pairs, "--format", "flag", "-o", link, "--overwrite"),
        ("pseudo-label", link, "-o", pairs, "--overwrite"),
    ]
    for command in commands:
        result = invoke(*command)
        assert result.exit_code == 2 and "would destroy the input" in result.output, (command, result.output)
    assert {p: p.read_bytes() for p in before} == before


# 6. a kill between the two renames of a swap, and a kill mid-build, are undone on the next run
def test_a_swap_killed_between_its_renames_is_recovered(tmp_path, tiny_encoder_dir, bike_passages):
    out = tmp_path / "index"
    build_index(bike_passages, str(tiny_encoder_dir), out, dtype="float32", progress=False)
    files = sorted(p.name for p in out.iterdir())
    pid = dead_pid()
    os.replace(out, tmp_path / f".index.old-{pid}")  # the old one moved aside, the new one never arrived
    (tmp_path / f".index.building-{pid}").mkdir()
    (tmp_path / f".index.building-{pid}" / "index.faiss").write_bytes(b"half")
    meta = read_index_meta(out)  # the next reader puts it back
    assert meta["passages"] == 8 and sorted(p.name for p in out.iterdir()) == files
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".index") and p.name != ".index.lock"] == []


def test_recovery_leaves_a_live_process_alone(tmp_path):
    out = tmp_path / "thing"
    with replacing_directory(out) as building:
        (building / "a").write_text("1")
        # while this process builds, its own .building-PID sibling is not a leftover
        assert recover_interrupted_swap(out) == []
        assert building.exists()
    assert (out / "a").read_text() == "1"
    old = tmp_path / f".thing.old-{dead_pid()}"
    old.mkdir()
    assert recover_interrupted_swap(out) and not old.exists() and (out / "a").exists()


# 9. an unwritable output is a one-line error, not a PermissionError traceback
def test_unwritable_output_is_a_clear_error(tmp_path, bike_passages, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = invoke("corpus", "prepare", bike_passages, "-o", blocker / "passages.jsonl", "--tokenizer", "words")
    assert result.exit_code == 2 and "is a file, not a folder" in result.output, result.output
    assert "Traceback" not in result.output
    # any other OSError (here: the disk refuses the write) is a one-line error with exit code 1
    import genq.corpus

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "out.jsonl"))

    monkeypatch.setattr(genq.corpus, "atomic_write", refuse)
    result = invoke("corpus", "prepare", bike_passages, "-o", tmp_path / "out.jsonl", "--tokenizer", "words")
    assert result.exit_code == 1 and "Permission denied" in result.output and "Traceback" not in result.output
    if os.geteuid() != 0:  # root writes anywhere: the permission case needs a normal user
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
        result = invoke("corpus", "prepare", bike_passages, "-o", locked / "p.jsonl", "--tokenizer", "words")
        assert result.exit_code == 1 and "Permission denied" in result.output


# 15. every output honours the umask, whether written through io.py or by the index builder
def test_outputs_honour_the_umask(tmp_path, tiny_encoder_dir, bike_passages):
    old = os.umask(0o027)
    try:
        passages = tmp_path / "prepared.jsonl"
        assert invoke("corpus", "prepare", bike_passages, "-o", passages, "--tokenizer", "words").exit_code == 0
        build_index(passages, str(tiny_encoder_dir), tmp_path / "index", dtype="float32", progress=False)
    finally:
        os.umask(old)
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode)
             for p in [passages, *(tmp_path / "index").rglob("*")] if p.is_file()}
    assert set(modes.values()) == {0o640}, modes
    assert json.loads((tmp_path / "index" / "index.json").read_text())["passages"] == 8


# 9-11. every malformed input: a line-numbered error (exit 2) by default, a counted skip with --on-error skip
BAD_JSONL_LINES = {
    "lone surrogate": '{"_id": "x", "text": "\\ud800 broken"}',
    "deep nesting": '{"_id": "x", "text": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "NaN id": '{"_id": NaN, "text": "not a number"}',
    "Infinity id": '{"_id": Infinity, "text": "infinite"}',
    "number text": '{"_id": "x", "text": 42}',
    "list text": '{"_id": "x", "text": ["a", "b"]}',
    "dict title": '{"_id": "x", "text": "fine", "title": {"a": 1}}',
    "list id": '{"_id": [1], "text": "fine"}',
}


@pytest.mark.parametrize("case", sorted(BAD_JSONL_LINES))
def test_malformed_corpus_records_are_named(tmp_path, case):
    good = '{"_id": "ok", "title": "Chains", "text": "a good passage about chains"}'
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(good + "\n" + BAD_JSONL_LINES[case] + "\n", encoding="utf-8")
    out = tmp_path / "passages.jsonl"
    result = invoke("corpus", "prepare", corpus, "-o", out, "--tokenizer", "words")
    assert result.exit_code == 2 and "corpus.jsonl:2" in result.output and "fix:" in result.output, result.output
    assert "Traceback" not in result.output and not out.exists()
    result = invoke("corpus", "prepare", corpus, "-o", out, "--tokenizer", "words", "--on-error", "skip")
    assert result.exit_code == 0 and "bad records skipped: 1" in result.output, result.output
    assert [json.loads(x)["_id"] for x in out.read_text().splitlines()] == ["ok"]


def test_control_characters_alone_are_an_empty_passage(tmp_path):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"_id": "a", "text": "\u0001\u0002\u0007"},
                                                     {"_id": "b", "text": "real text"}])
    out = tmp_path / "passages.jsonl"
    result = invoke("corpus", "prepare", corpus, "-o", out, "--tokenizer", "words")
    assert result.exit_code == 0 and "empty dropped: 1" in result.output
    assert [json.loads(x)["_id"] for x in out.read_text().splitlines()] == ["b"]


def test_bom_and_gzip_jsonl_are_read(tmp_path):
    import gzip

    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + b'{"_id": "a", "text": "with a byte order mark"}\n')
    packed = tmp_path / "packed.jsonl"  # gzip data without a .gz name: found by its magic bytes
    packed.write_bytes(gzip.compress(b'{"_id": "a", "text": "compressed"}\n'))
    named = tmp_path / "named.jsonl.gz"
    named.write_bytes(gzip.compress(b'{"_id": "a", "text": "compressed"}\n'))
    for source in (bom, packed, named):
        out = tmp_path / f"{source.name}.out.jsonl"
        result = invoke("corpus", "prepare", source, "-o", out, "--tokenizer", "words")
        assert result.exit_code == 0, result.output
        assert json.loads(out.read_text())["_id"] == "a"
    # gzip cut short past the first block: named as such, mid-stream, not an EOFError traceback
    truncated = tmp_path / "cut.jsonl.gz"
    lines = b"".join(b'{"passage_id": "%d", "query": "q%d", "passage": "passage %d about a chain"}\n' % (i, i, i)
                     for i in range(20000))
    truncated.write_bytes(gzip.compress(lines)[:30000])
    for args in (("corpus", "prepare", truncated, "-o", tmp_path / "cut.out.jsonl", "--tokenizer", "words"),
                 ("export", truncated, "--format", "flag", "-o", tmp_path / "cut.flag.jsonl")):
        result = invoke(*args)
        assert result.exit_code == 2 and "cut short or corrupt" in result.output, result.output


def test_csv_ragged_rows_unterminated_quotes_and_a_missing_header(tmp_path):
    cases = {
        "ragged.csv": ("id,text\n1,hello world,extra\n2,fine\n", "row has 3 columns, the header has 2"),
        "short.csv": ("id,title,text\n1,only two\n2,t,fine\n", "row has 2 columns, the header has 3"),
        "quote.csv": ('id,text\n1,fine\n2,"never closed\n3,swallowed\n', "never closed"),
        "nohead.tsv": ("1\thello world\n2\tanother\n", "does not look like a header"),
    }
    for name, (content, message) in cases.items():
        source = tmp_path / name
        source.write_text(content)
        result = invoke("corpus", "prepare", source, "-o", tmp_path / "out.jsonl", "--tokenizer", "words")
        assert result.exit_code == 2 and message in result.output, (name, result.output)
        assert "Traceback" not in result.output and not (tmp_path / "out.jsonl").exists()


def test_symlink_loop_input_is_a_clear_error(tmp_path):
    (tmp_path / "a.jsonl").symlink_to(tmp_path / "b.jsonl")
    (tmp_path / "b.jsonl").symlink_to(tmp_path / "a.jsonl")
    for args in (("corpus", "prepare", tmp_path / "a.jsonl", "-o", tmp_path / "out.jsonl", "--tokenizer", "words"),
                 ("export", tmp_path / "a.jsonl", "--format", "flag", "-o", tmp_path / "out.jsonl")):
        result = invoke(*args)
        assert result.exit_code == 2 and "error:" in result.output and "Traceback" not in result.output, result.output


# 10. pairs that would train on garbage are refused, with the line
@pytest.mark.parametrize("pair, message", [
    ({"query": "", "passage": "text"}, "the query is empty"),
    ({"query": "   ", "passage": "text"}, "the query is empty"),
    ({"query": "q", "passage": "text", "negatives": 5}, '"negatives" is a int, not a list'),
    ({"query": "q", "passage": "text", "negatives": "a string"}, '"negatives" is a str, not a list'),
    ({"query": "q", "passage": "text", "negatives": [1, 2]}, "something other than passages"),
])
def test_malformed_pairs_are_refused(tmp_path, tiny_encoder_dir, pair, message):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"query": "oil", "passage": "oil the chain"}, pair])
    result = invoke("train", pairs, "-o", tmp_path / "model", "--base-model", tiny_encoder_dir)
    assert result.exit_code == 2 and "pairs.jsonl:2" in result.output and message in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "model").exists()


def test_empty_passages_get_no_queries(tmp_path, tiny_t5_dir):
    from genq.generate import GenerationConfig, generate_pairs

    passages = write_jsonl(tmp_path / "p.jsonl", [{"_id": "a", "text": "   "}, {"_id": "b", "text": "oil the chain"},
                                                  {"_id": "c", "text": ""}])
    out = tmp_path / "pairs.jsonl"
    summary = generate_pairs(passages, out, GenerationConfig(model=str(tiny_t5_dir), max_length=6, dtype="float32"),
                             progress=False)
    assert summary.passages == 1 and summary.passages_without_text == 2
    assert {json.loads(x)["passage_id"] for x in out.read_text().splitlines()} <= {"b"}


# 12. one huge record: the tokenizer only ever sees bounded pieces, and models get clipped text
def test_a_huge_record_is_tokenized_in_bounded_pieces(tmp_path):
    from genq.corpus import MAX_CHARS_PER_TOKEN, Chunker, TokenCounter, clip_for_model

    seen = []

    class SpyCounter(TokenCounter):
        def count(self, texts):
            seen.extend(len(t) for t in texts)
            return super().count(texts)

    sentence = "the chain needs oil and the brake needs a new pad. "
    text = sentence * 40_000 + "x" * 200_000 + " " + "word " * 50_000  # sentences, one giant word, no punctuation
    chunks = Chunker(SpyCounter("words"), max_tokens=64, overlap=8).chunk(text)
    assert max(seen) <= 64 * MAX_CHARS_PER_TOKEN
    counter = TokenCounter("words")
    assert max(counter.count(chunks)) <= 64 and len(chunks) > 1000
    assert "".join(chunks).count("x") >= 200_000  # the giant word is cut, not dropped
    assert len(clip_for_model(text, 256)) == 256 * MAX_CHARS_PER_TOKEN and clip_for_model("short", 256) == "short"


def test_a_full_disk_is_one_line_and_what_was_finished_stays(tmp_path, tiny_encoder_dir, bike_passages, tiny_t5_dir,
                                                             monkeypatch):
    import errno

    from sentence_transformers import SentenceTransformer

    from genq.io import JsonlAppender

    runner = CliRunner()
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"query": f"question {i}", "passage_id": f"p{i}",
                                                    "passage": f"passage {i} text"} for i in range(8)])
    train = ["train", str(pairs), "-o", str(tmp_path / "model"), "--base-model", str(tiny_encoder_dir),
             "--train-batch-size", "4", "--eval-share", "0", "--device", "cpu"]
    assert runner.invoke(main, train).exit_code == 0
    before = (tmp_path / "model" / "model.safetensors").read_bytes()

    def full(*_args, **_kwargs):  # how safetensors words a full disk
        raise RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space '
                           'left on device" })')

    monkeypatch.setattr(SentenceTransformer, "save", full)
    result = runner.invoke(main, [*train, "--overwrite", "--train-seed", "7"])
    assert result.exit_code == 1 and "the disk is full" in result.output and "free there" in result.output
    assert "Traceback" not in result.output and result.output.count("error:") == 1
    assert (tmp_path / "model" / "model.safetensors").read_bytes() == before  # the finished model is intact
    monkeypatch.undo()

    def no_space(self, records):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(JsonlAppender, "write_batch", no_space)
    result = runner.invoke(main, ["generate", str(bike_passages), "-o", str(tmp_path / "gen.jsonl"), "--generator",
                                  str(tiny_t5_dir), "--max-length", "6", "--device", "cpu"])
    assert result.exit_code == 1 and "the disk is full" in result.output and "Traceback" not in result.output


def test_an_index_on_a_full_disk_is_one_line_not_a_bus_error(tmp_path, tiny_encoder_dir, bike_passages, monkeypatch):
    """The vectors are written through a memory map; over a sparse file a full disk would be a SIGBUS that kills
    the process without a word, so the map's blocks are reserved first and a full disk is an ENOSPC there."""
    import errno
    import os

    reserved = []

    def full(descriptor, offset, length):
        reserved.append(length)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    result = CliRunner().invoke(main, ["index", str(bike_passages), "-m", str(tiny_encoder_dir), "-o",
                                       str(tmp_path / "index"), "--device", "cpu", "--dtype", "float32"])
    assert result.exit_code == 1 and "the disk is full" in result.output and "Traceback" not in result.output
    assert reserved and reserved[0] >= 8 * 32 * 4  # every vector's bytes, asked for before the first is written
    assert not (tmp_path / "index").exists()


def test_torch_noticing_a_short_write_counts_as_a_full_disk_only_where_the_disk_is_nearly_full(tmp_path, monkeypatch):
    """torch.save into a full tmpfs ends in "unexpected pos 29120 vs 29012" (its zip writer seeing a short write):
    a full disk when the output's disk has (almost) nothing left, an unexpected error otherwise."""
    from genq.cli import common as cli

    short_write = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 29120 vs 29012")
    monkeypatch.setattr(cli, "_free_bytes", lambda path: 300_000)
    assert cli.disk_full(short_write, tmp_path / "model")
    assert not cli.disk_full(short_write)  # no output to look at
    monkeypatch.setattr(cli, "_free_bytes", lambda path: 50 * 2**30)
    assert not cli.disk_full(short_write, tmp_path / "model")
