"""Torch-free query encoding (issue 26 item 5): a CTranslate2 copy of a BERT-family bi-encoder, same vectors."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from genq.encode import Encoder
from genq.index import build_index
from genq.query_encoder import QueryEncoder, light_query_encoder
from genq.search import Searcher

from .conftest import write_jsonl

pytest.importorskip("ctranslate2")

QUERIES = ["clean the chain", "brake pad worn " * 300, "", "Ünïcödé ✓ tyre"]


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GENQ_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("GENQ_QUERY_ENCODER", raising=False)
    return tmp_path / "cache"


def test_the_ctranslate2_copy_encodes_queries_as_sentence_transformers_does(cache, tiny_encoder_dir):
    light = light_query_encoder(str(tiny_encoder_dir))
    assert isinstance(light, QueryEncoder) and list((cache / "ct2").iterdir())
    expected = Encoder(str(tiny_encoder_dir), dtype="float32").encode_queries(QUERIES)
    assert np.abs(light.encode_queries(QUERIES) - expected).max() < 1e-4
    assert light.encode_queries([]).shape == (0, expected.shape[1])
    again = light_query_encoder(str(tiny_encoder_dir))  # the kept copy, not a second conversion
    assert len(list((cache / "ct2").iterdir())) == 1 and np.allclose(again.encode_queries(QUERIES[:1]), expected[:1])


def test_a_search_process_never_imports_torch_and_ranks_as_the_torch_path(cache, tmp_path, tiny_encoder_dir):
    passages = write_jsonl(tmp_path / "passages.jsonl", [
        {"_id": f"p{i}", "title": "", "text": text} for i, text in enumerate(
            ["clean the chain and oil it", "replace the brake pad", "pump the tyre", "true the wheel spoke"])])
    build_index(passages, str(tiny_encoder_dir), tmp_path / "index", dtype="float32", progress=False)
    torch_hits = Searcher.load(tmp_path / "index", device="cpu", dtype="bfloat16").search("oil chain", k=4,
                                                                                          mode="dense")
    light_query_encoder(str(tiny_encoder_dir))  # the first search converts the model (with torch); later ones:
    script = ("import json, sys\nfrom genq.search import Searcher\n"
              f"hits = Searcher.load({str(tmp_path / 'index')!r}).search('oil chain', k=4, mode='dense')\n"
              "print(json.dumps({'ids': [h.id for h in hits], 'torch': 'torch' in sys.modules}))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"ids": [h.id for h in torch_hits], "torch": False}


def test_other_stacks_a_gpu_or_the_opt_out_keep_the_torch_path(cache, tmp_path, tiny_encoder_dir, monkeypatch):
    assert light_query_encoder(str(tiny_encoder_dir), device="cuda") is None
    monkeypatch.setenv("GENQ_QUERY_ENCODER", "torch")
    assert light_query_encoder(str(tiny_encoder_dir)) is None
    monkeypatch.delenv("GENQ_QUERY_ENCODER")
    dense = tmp_path / "with-dense"
    shutil.copytree(tiny_encoder_dir, dense)
    modules = json.loads((dense / "modules.json").read_text())
    modules.append({"idx": len(modules), "name": str(len(modules)), "path": "9_Dense",
                    "type": "sentence_transformers.models.Dense"})
    (dense / "modules.json").write_text(json.dumps(modules))
    assert light_query_encoder(str(dense)) is None


def test_a_damaged_copy_is_made_again(cache, tiny_encoder_dir):
    expected = light_query_encoder(str(tiny_encoder_dir)).encode_queries(QUERIES)
    [copy] = list((cache / "ct2").iterdir())
    weights = copy / "model.bin"
    weights.write_bytes(weights.read_bytes()[:64])
    again = light_query_encoder(str(tiny_encoder_dir))
    assert again is not None and np.allclose(again.encode_queries(QUERIES), expected, atol=1e-6)
    assert [p.name for p in (cache / "ct2").iterdir()] == [copy.name]  # replaced in place, no leftovers


def test_a_model_the_converter_cannot_take_is_tried_once(cache, tmp_path, tiny_encoder_dir, caplog, monkeypatch):
    import ctranslate2

    def refuses(self, *args, **kwargs):
        raise AttributeError("'BertConfig' object has no attribute 'position_embedding_type'")

    monkeypatch.setattr(ctranslate2.converters.TransformersConverter, "convert", refuses)
    assert light_query_encoder(str(tiny_encoder_dir)) is None and "could not convert" in caplog.text
    caplog.clear()
    assert light_query_encoder(str(tiny_encoder_dir)) is None and "could not convert" not in caplog.text
