"""An index build interrupted while encoding resumes with the same command, encoding only what was left."""

from __future__ import annotations

import json

import numpy as np
import pytest

from genq.encode import Encoder
from genq.index import build_index
from genq.index_progress import PROGRESS_FILE, STORE_FILE, ResumableEncoding, encoding_dir
from tests.test_index_search import many_passages


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(ResumableEncoding, "chunk_size", 4)


def counting_encoder(monkeypatch, fail_on_call: int | None = None) -> list[int]:
    """Counts the passages each encoding call gets; the call numbered ``fail_on_call`` is a Ctrl-C."""
    calls: list[int] = []
    original = Encoder.encode_passages

    def encode_passages(self, passages, progress=False):
        calls.append(len(passages))
        if fail_on_call is not None and len(calls) == fail_on_call:
            raise KeyboardInterrupt
        return original(self, passages, progress)

    monkeypatch.setattr(Encoder, "encode_passages", encode_passages)
    return calls


def index_files(directory) -> dict:
    return {name: (directory / name).read_bytes() for name in ("passages.jsonl", "passages.offsets.npy")}


def test_an_interrupted_encoding_resumes_where_it_stopped(tmp_path, tiny_encoder_dir, small_chunks, monkeypatch):
    passages = many_passages(tmp_path, n=22)
    reference = build_index(passages, str(tiny_encoder_dir), tmp_path / "reference", dtype="float32",
                            save_embeddings=True, progress=False)
    out = tmp_path / "index"
    counting_encoder(monkeypatch, fail_on_call=4)
    with pytest.raises(KeyboardInterrupt):
        build_index(passages, str(tiny_encoder_dir), out, dtype="float32", save_embeddings=True, progress=False)
    assert not out.exists()
    kept = json.loads((encoding_dir(out) / PROGRESS_FILE).read_text())
    assert kept["rows"] == 12
    with open(encoding_dir(out) / STORE_FILE, "ab") as store:  # a kill between the store's write and the record
        store.write(b'{"_id": "half a line')
    monkeypatch.undo()
    monkeypatch.setattr(ResumableEncoding, "chunk_size", 4)
    calls = counting_encoder(monkeypatch)
    summary = build_index(passages, str(tiny_encoder_dir), out, dtype="float32", save_embeddings=True,
                          progress=False)
    assert sum(calls) == 10  # the 12 encoded before are not encoded again
    assert summary.passages == reference.passages == 22
    assert index_files(out) == index_files(tmp_path / "reference")
    np.testing.assert_allclose(np.load(out / "embeddings.npy"), np.load(tmp_path / "reference" / "embeddings.npy"),
                               atol=1e-6)
    assert not encoding_dir(out).exists()


def test_an_encoding_of_other_passages_is_not_resumed(tmp_path, tiny_encoder_dir, small_chunks, monkeypatch):
    out = tmp_path / "index"
    counting_encoder(monkeypatch, fail_on_call=2)
    with pytest.raises(KeyboardInterrupt):
        build_index(many_passages(tmp_path, n=10), str(tiny_encoder_dir), out, dtype="float32", progress=False)
    assert json.loads((encoding_dir(out) / PROGRESS_FILE).read_text())["rows"] == 4
    monkeypatch.undo()
    monkeypatch.setattr(ResumableEncoding, "chunk_size", 4)
    calls = counting_encoder(monkeypatch)
    other = many_passages(tmp_path, n=10, prefix="q", name="other.jsonl")
    summary = build_index(other, str(tiny_encoder_dir), out, dtype="float32", progress=False)
    assert sum(calls) == 10 and summary.passages == 10
    with open(out / "passages.jsonl", encoding="utf-8") as handle:
        assert all(json.loads(line)["_id"].startswith("q") for line in handle)
    assert not encoding_dir(out).exists()
