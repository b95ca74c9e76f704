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
    failed = target.with_name(target.name + ".failed.json")
    if built_copy_intact(target, RECORD):
        return target
    if failed.is_file():  # tried before and could not: not again at every run
        try:
            reason = json.loads(failed.read_text(encoding="utf-8")).get("error", "")
        except (OSError, ValueError, AttributeError):
            reason = ""
        raise ConversionFailed(f"CTranslate2 could not convert it before ({reason or failed})", remembered=True)
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
        for item in (folder / "model").iterdir():
            item.rename(folder / item.name)
        (folder / "model").rmdir()

    try:
        keep_built_copy(target, build, RECORD, {"source": str(location), "fingerprint": fingerprint,
                                                 "quantization": quantization,
                                                 "seconds": round(time.perf_counter() - started, 1)})
    except Exception as exc:  # unconvertible, or no room to keep it
        if not isinstance(exc, OSError):  # the model itself: remembered, so later runs take the fallback at once
            try:
                failed.parent.mkdir(parents=True, exist_ok=True)
                failed.write_text(json.dumps({"source": str(location), "error": describe_error(exc)}),
                                  encoding="utf-8")
            except OSError:
                pass
        raise ConversionFailed(describe_error(exc)) from None
    logger.info("converted %s in %.1f s", location.name, time.perf_counter() - started)
    return target
