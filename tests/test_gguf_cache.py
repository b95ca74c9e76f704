"""The de-quantised copy of a GGUF generator (issue 26 item 3): made once, trusted only when whole."""

import pytest
import torch

from genq import gguf_cache
from genq.io import built_copy_intact


@pytest.fixture()
def fake_gguf(tmp_path, monkeypatch, tiny_gpt2_dir):
    """A GGUF file whose reading is counted and answered by a tiny GPT-2 (no real GGUF needed)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("GENQ_CACHE_DIR", str(tmp_path / "cache"))
    gguf = tmp_path / "model.Q4_0.gguf"
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    reads = []

    def read(directory, name, part):
        reads.append(part)
        tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
        return tokenizer, (AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir) if part == "model" else None)

    monkeypatch.setattr(gguf_cache, "_load_from_gguf", read)
    return gguf, reads


def same_weights(a, b) -> bool:
    first, second = a.state_dict(), b.state_dict()
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_the_gguf_is_read_once_then_the_kept_copy_is_loaded(fake_gguf):
    gguf, reads = fake_gguf
    tokenizer, model = gguf_cache.load(gguf, "model")
    again_tokenizer, again = gguf_cache.load(gguf, "model")
    assert reads == ["model"] and same_weights(model, again)
    assert tokenizer("clean the chain")["input_ids"] == again_tokenizer("clean the chain")["input_ids"]
    assert gguf_cache.load(gguf, "tokenizer")[1] is None and reads == ["model"]  # the model copy holds it too


def test_a_tokenizer_alone_is_kept_apart_and_does_not_stand_in_for_the_model(fake_gguf):
    gguf, reads = fake_gguf
    gguf_cache.load(gguf, "tokenizer")
    gguf_cache.load(gguf, "tokenizer")
    assert reads == ["tokenizer"]
    gguf_cache.load(gguf, "model")
    assert reads == ["tokenizer", "model"]


def test_a_damaged_or_half_made_copy_is_not_trusted(fake_gguf, monkeypatch):
    from transformers import PreTrainedModel

    gguf, reads = fake_gguf
    real_save = PreTrainedModel.save_pretrained

    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", killed)
    with pytest.raises(KeyboardInterrupt):
        gguf_cache.load(gguf, "model")
    folder = next((gguf_cache.cache_root() / "gguf").iterdir())
    assert list(folder.iterdir()) == []  # no copy, and no temporary folder left behind
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", real_save)
    _, model = gguf_cache.load(gguf, "model")
    weights = folder / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated since
    _, again = gguf_cache.load(gguf, "model")
    assert reads == ["model", "model", "model"] and same_weights(model, again)
    assert built_copy_intact(folder / "model", gguf_cache.RECORD)  # made again, whole


def test_another_gguf_file_gets_its_own_copy(fake_gguf, tmp_path):
    gguf, reads = fake_gguf
    gguf_cache.load(gguf, "model")
    other = tmp_path / "other.gguf"
    other.write_bytes(gguf.read_bytes() + b"requantised")
    gguf_cache.load(other, "model")
    assert reads == ["model", "model"] and len(list((gguf_cache.cache_root() / "gguf").iterdir())) == 2


def test_an_unwritable_cache_costs_speed_not_the_run(fake_gguf, monkeypatch, tmp_path, caplog):
    gguf, reads = fake_gguf
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("GENQ_CACHE_DIR", str(blocker))
    tokenizer, model = gguf_cache.load(gguf, "model")
    assert model is not None and "could not keep a copy" in caplog.text
