"""CTranslate2 copies of transformers models, converted once and kept, for the stages that run on CTranslate2.

Query encoding (:mod:`genq.query_encoder`) and generation (:mod:`genq.generation.ct2_backend`)
both convert a model folder with CTranslate2's own converter. A copy is keyed by the folder's
fingerprint (:func:`genq.models.model_files_fingerprint`: it changes when the model is retrained
or replaced in place), the quantization and the CTranslate2 version; it is built beside its
place and renamed in whole with a record of its files' sizes (:func:`genq.io.keep_built_copy`),
so a killed conversion leaves nothing a later run trusts. A model the converter refuses is
remembered beside the cache (``NAME.failed.json``), so the caller's fallback is taken at once
the next time instead of failing the same conversion again.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path

from genq.io import built_copy_intact, cache_root, describe_error, keep_built_copy
from genq.models import model_files_fingerprint

logger = logging.getLogger(__name__)

RECORD = "genq_ct2.json"


class ConversionFailed(Exception):
    """The model could not be converted (or kept); ``reason`` says why in one line."""

    def __init__(self, reason: str, remembered: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.remembered = remembered  # refused by an earlier run, not tried again


def converted_copy(location: Path, quantization: str | None = None, purpose: str = "CTranslate2",
                   expected: str = "a few seconds") -> Path:
    """The kept CTranslate2 copy of the model folder ``location``, converted now if there is none.

    ``quantization``: None keeps the weights' precision (float32 for a float32 model), or a
    CTranslate2 type such as "int8" (weights stored quantised; the compute type is chosen at load).
    Raises :class:`ConversionFailed` where no copy can be had.
    """
    import ctranslate2

    fingerprint = model_files_fingerprint(location)
    if not fingerprint:
        raise ConversionFailed(f"{location} is not a model folder")
    quantized = f"-{quantization}" if quantization else ""  # an unquantised copy keeps its first key
    target = cache_root() / "ct2" / f"{location.name}-{fingerprint}{quantized}-ct2-{ctranslate2.__version__}"
    failed = failure_record(target)
    if failed.is_file():  # tried before and could not (convert, or load the copy): not again at every run
        try:
            reason = json.loads(failed.read_text(encoding="utf-8")).get("error", "")
        except (OSError, ValueError, AttributeError):
            reason = ""
        raise ConversionFailed(f"CTranslate2 could not use it before ({reason or failed})", remembered=True)
    if built_copy_intact(target, RECORD):
        return target
    logger.info("converting %s for %s (once, %s); kept in %s", location, purpose, expected, target)
    started = time.perf_counter()

    def build(folder: Path) -> None:
        from transformers.utils import logging as transformers_logging

        verbosity = transformers_logging.get_verbosity()
        transformers_logging.set_verbosity_error()
        try:
            with warnings.catch_warnings():  # the converter loads with arguments transformers has since renamed
                warnings.simplefilter("ignore")
                ctranslate2.converters.TransformersConverter(str(location)).convert(
                    str(folder / "model"), quantization=quantization, force=True)
        finally:
            transformers_logging.set_verbosity(verbosity)
        name_special_tokens(folder / "model", location)
        for item in (folder / "model").iterdir():
            item.rename(folder / item.name)
        (folder / "model").rmdir()

    try:
        keep_built_copy(target, build, RECORD, {"source": str(location), "fingerprint": fingerprint,
                                                 "quantization": quantization,
                                                 "seconds": round(time.perf_counter() - started, 1)})
    except Exception as exc:  # unconvertible, or no room to keep it
        if not isinstance(exc, OSError):  # the model itself: remembered, so later runs take the fallback at once
            remember_failure(target, location, describe_error(exc))
        raise ConversionFailed(describe_error(exc)) from None
    logger.info("converted %s in %.1f s", location.name, time.perf_counter() - started)
    return target


def failure_record(target: Path) -> Path:
    """Where a copy that could not be made (or loaded) is remembered: beside it, ``NAME.failed.json``."""
    return target.with_name(target.name + ".failed.json")


def remember_failure(target: Path, location: Path | str, reason: str) -> None:
    """Remember that ``target`` cannot serve (its conversion failed, or CTranslate2 could not load the copy), so later
    runs take their fallback at once; a record that cannot be written costs only a second try next time."""
    try:
        record = failure_record(target)
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"source": str(location), "error": reason}), encoding="utf-8")
    except OSError:
        pass


# the converted config's special-token names and the model config ids they stand for (first one set wins)
SPECIAL_TOKENS = {"eos_token": ("eos_token_id",), "bos_token": ("bos_token_id", "decoder_start_token_id"),
                  "decoder_start_token": ("decoder_start_token_id", "pad_token_id"), "unk_token": ("unk_token_id",)}


def name_special_tokens(converted: Path, location: Path) -> None:
    """Fill the special tokens the converter left null with those the model's config names by id.

    CTranslate2's converter reads a seq2seq model's end token from its tokenizer; a tokenizer that names
    none (custom or converted models often set only ``eos_token_id`` in the model config) gives
    ``"eos_token": null``, and the copy then fails to load ("type must be string, but is null").
    """
    config_path = converted / "config.json"
    if not config_path.is_file():
        return
    config = json.loads(config_path.read_text(encoding="utf-8"))
    missing = [name for name in SPECIAL_TOKENS if name in config and config[name] is None]
    if not missing:
        return
    from transformers import AutoConfig, AutoTokenizer

    model_config = AutoConfig.from_pretrained(location)
    tokenizer = AutoTokenizer.from_pretrained(location)
    for name in missing:
        ids = [getattr(model_config, key, None) for key in SPECIAL_TOKENS[name]]
        token_id = next((i[0] if isinstance(i, list) else i for i in ids if i is not None), None)
        if token_id is not None:
            config[name] = tokenizer.convert_ids_to_tokens(int(token_id))
            logger.info("the tokenizer of %s names no %s: took %r (id %d) from the model's config", location.name,
                        name, config[name], token_id)
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
