"""Shared fixtures: tiny models built on the fly, so no test touches a model hub."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_IR = Path(__file__).resolve().parents[2] / "shared" / "data" / "ir"

WORDS = (
    "the a of to and in is for on with bike chain brake tyre wheel gear saddle pedal frame "
    "spoke hub valve pressure cable lever shift oil clean adjust replace tighten loose worn "
    "squeak noise how what why when which does do can should my your it this that road mountain "
    "tube patch pump inflate rim disc pad rotor bolt torque grease bearing headset fork "
    "suspension "
).split()


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


class StopAfter:
    """A generator that is interrupted (KeyboardInterrupt) after ``batches`` batches: a killed run."""

    def __init__(self, real, batches):
        self.real, self.left = real, batches

    def __getattr__(self, name):  # family, device, dtype, backend...: the real generator's
        return getattr(self.real, name)

    def input_length(self, passage):
        return self.real.input_length(passage)

    def sample(self, batch, seed):
        if self.left == 0:
            raise KeyboardInterrupt
        self.left -= 1
        return self.real.sample(batch, seed)


def write_tiny_collection(directory: Path, extra_documents: tuple[dict, ...] = ()) -> Path:
    """A labelled BEIR-layout collection of two (or more) passages and one query: evaluate's smallest input."""
    (directory / "qrels").mkdir(parents=True)
    write_jsonl(directory / "corpus.jsonl", [{"_id": "a", "title": "", "text": "oil the chain"},
                                             {"_id": "b", "title": "", "text": "brake pad"}, *extra_documents])
    write_jsonl(directory / "queries.jsonl", [{"_id": "q", "text": "chain oil"}])
    (directory / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq\ta\t1\n")
    return directory


def build_word_tokenizer(directory: Path) -> Path:
    """A WordLevel tokenizer trained on the fly, saved as a transformers tokenizer directory."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "</s>"])
    tokenizer.train_from_iterator([" ".join(WORDS)] * 3 + ["? . , ! ' -"], trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tokenizer.token_to_id("[CLS]")), ("[SEP]", tokenizer.token_to_id("[SEP]"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", eos_token="</s>")
    fast.save_pretrained(directory)
    return directory


def build_tiny_t5(directory: Path, word_tokenizer_dir: Path) -> Path:
    """A randomly initialised two-layer T5 saved with save_pretrained, so the real loading path runs."""
    import torch
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(word_tokenizer_dir)
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_ff=64, d_kv=8, num_layers=2, num_heads=2,
                      decoder_start_token_id=tokenizer.pad_token_id, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id)
    T5ForConditionalGeneration(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory, word_tokenizer_dir) -> Path:
    """A randomly initialised two-layer GPT-2 (decoder-only) with the same word tokenizer."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny-gpt2")
    tokenizer = AutoTokenizer.from_pretrained(word_tokenizer_dir)
    tokenizer.bos_token = "[CLS]"  # as the model's bos_token_id: CTranslate2's converter needs it named
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=512,
                        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def save_tiny_bert(directory: Path, tokenizer_dir: Path, model_class_name: str, **config_extra) -> Path:
    """A randomly initialised two-layer, 32-wide BERT of the given transformers class, with the word tokenizer."""
    import torch
    import transformers

    torch.manual_seed(0)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=512,
                                     **config_extra)
    getattr(transformers, model_class_name)(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def build_tiny_encoder(directory: Path, bert_dir: Path, word_tokenizer_dir: Path) -> Path:
    """A randomly initialised small BERT saved as a sentence-transformers model (mean pooling)."""
    from sentence_transformers import SentenceTransformer, models

    # all-MiniLM-L6-v2's config.json names its position embeddings; CTranslate2's converter reads the key
    save_tiny_bert(bert_dir, word_tokenizer_dir, "BertModel", position_embedding_type="absolute")
    transformer = models.Transformer(str(bert_dir), max_seq_length=128)
    pooling = models.Pooling(transformer.get_word_embedding_dimension(), pooling_mode="mean")
    model = SentenceTransformer(modules=[transformer, pooling], device="cpu")
    model.save(str(directory))
    return directory


@pytest.fixture(scope="session", autouse=True)
def genq_cache_dir(tmp_path_factory):
    """Converted models (GGUF, CTranslate2 copies) go to a folder of the test session, not the user's cache."""
    import os

    previous = os.environ.get("GENQ_CACHE_DIR")
    os.environ["GENQ_CACHE_DIR"] = str(tmp_path_factory.mktemp("genq-cache"))
    yield
    if previous is None:
        os.environ.pop("GENQ_CACHE_DIR", None)
    else:
        os.environ["GENQ_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def word_tokenizer_dir(tmp_path_factory) -> Path:
    return build_word_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory, word_tokenizer_dir) -> Path:
    return build_tiny_t5(tmp_path_factory.mktemp("tiny-t5"), word_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory, word_tokenizer_dir) -> Path:
    return build_tiny_encoder(tmp_path_factory.mktemp("tiny-st"), tmp_path_factory.mktemp("tiny-bert"),
                              word_tokenizer_dir)


@pytest.fixture()
def bike_passages(tmp_path) -> Path:
    """A small prepared passages file on one topic."""
    texts = [
        ("chain", "Chain care", "clean the chain and oil it when it makes noise"),
        ("brake", "Brake pads", "replace worn brake pad when the lever feels loose"),
        ("tyre", "Tyre pressure", "inflate the tyre with a pump to the right pressure"),
        ("gear", "Gear shifting", "adjust the cable when the gear does not shift"),
        ("saddle", "Saddle height", "tighten the saddle bolt to the right torque"),
        ("tube", "Tube repair", "patch the tube when the tyre is flat"),
        ("hub", "Hub bearings", "grease the hub bearing when the wheel is loose"),
        ("disc", "Disc rotor", "clean the disc rotor when the brake makes a squeak"),
    ]
    return write_jsonl(tmp_path / "passages.jsonl",
                       [{"_id": i, "title": t, "text": x, "doc_id": i} for i, t, x in texts])


@pytest.fixture(scope="session")
def tiny_cross_encoder_dir(tmp_path_factory, word_tokenizer_dir) -> Path:
    """A randomly initialised small BERT with a one-label head: what sentence-transformers' CrossEncoder loads."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-cross-encoder"), word_tokenizer_dir,
                          "BertForSequenceClassification", num_labels=1)


@pytest.fixture()
def raw_corpus(tmp_path):
    texts = ["clean the chain and oil it", "replace worn brake pad", "inflate the tyre with a pump",
             "adjust the gear cable", "tighten the saddle bolt", "patch the tube", "grease the hub bearing",
             "clean the disc rotor", "true the wheel spoke", "check the fork suspension"]
    return write_jsonl(tmp_path / "docs.jsonl", [{"id": f"d{i}", "title": t.split()[-1], "text": t}
                                                  for i, t in enumerate(texts)])


@pytest.fixture(autouse=True)
def rates_file(tmp_path, monkeypatch) -> Path:
    """Each test keeps measured rates (genq.rate_cache) in its own file: a plan never reuses another test's."""
    path = tmp_path / "rates.json"
    monkeypatch.setattr("genq.rate_cache.rates_path", lambda: path)
    return path
