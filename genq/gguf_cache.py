"""De-quantised copies of GGUF generators, made once, so that later starts take a second instead of twenty.

transformers reads a GGUF file by rebuilding its tokenizer in Python and de-quantising every
tensor: about 20 s for the 100 MB SmolLM2-135M on two CPU cores, at every start of every
command that tokenises or generates with it (``corpus stats`` included). The same model saved
as a folder (tokenizer.json, safetensors) loads in about 0.4 s. So the first load writes that
folder, and every later one reads it.

The copy is keyed by the GGUF file's fingerprint and the transformers version (the conversion
is theirs), built in a temporary folder beside its place and renamed into it only when
complete with a record of its files' sizes: a killed conversion leaves nothing a later run
trusts, and a copy damaged since is noticed and made again. It lives under
``$GENQ_CACHE_DIR`` (default ``~/.cache/genq``); deleting it costs only the next start's time.
The weights are stored as float32, exactly as de-quantised (about 5.5x the GGUF's size).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from genq.io import built_copy_intact, cache_root, describe_error, keep_built_copy, sample_fingerprint

logger = logging.getLogger(__name__)

RECORD = "genq_gguf.json"
PARTS = ("tokenizer", "model")


def _key(gguf: Path) -> str:
    import transformers

    return f"{gguf.stem}-{sample_fingerprint(gguf)}-transformers{transformers.__version__}"


def _load_from_gguf(directory: str, name: str, part: str):
    """(tokenizer, model or None), read from the GGUF file itself: the slow path the cache spares."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    if part == "tokenizer":
        return tokenizer, None
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name)
    # the GGUF quantizer marks the model unsaveable; its tensors are plain de-quantised float32 by now
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return tokenizer, model


def load(gguf_path: str | os.PathLike, part: str = "model"):
    """(tokenizer, model) of a local GGUF file (model None for ``part="tokenizer"``), from the kept copy if there
    is a sound one, else from the GGUF file, keeping a copy for the next start."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert part in PARTS
    gguf = Path(gguf_path)
    base = cache_root() / "gguf" / _key(gguf)
    for folder in (base / "model", base / "tokenizer") if part == "tokenizer" else (base / "model",):
        if built_copy_intact(folder, RECORD):  # the model copy holds the tokenizer too
            tokenizer = AutoTokenizer.from_pretrained(folder)
            return tokenizer, (AutoModelForCausalLM.from_pretrained(folder) if part == "model" else None)
    what = "tokenizer" if part == "tokenizer" else "model"
    logger.info("reading %s's %s from its GGUF file (once: %s); later runs load the copy kept in %s",
                gguf.name, what, "a few seconds" if part == "tokenizer" else "about 20 s per 100 MB of GGUF on two "
                "CPU cores", base / part)
    started = time.perf_counter()
    tokenizer, model = _load_from_gguf(str(gguf.parent), gguf.name, part)
    if _keep(gguf, base / part, tokenizer, model, started):
        logger.info("kept %s's %s in %s (%.0f s)", gguf.name, what, base / part, time.perf_counter() - started)
    return tokenizer, model


def model_folder(gguf_path: str | os.PathLike) -> Path | None:
    """The kept model folder of a local GGUF file (made now if there is none yet), for tools that read a folder
    (CTranslate2's converter); None where no copy can be kept."""
    gguf = Path(gguf_path)
    folder = cache_root() / "gguf" / _key(gguf) / "model"
    if not built_copy_intact(folder, RECORD):
        load(gguf, "model")
    return folder if built_copy_intact(folder, RECORD) else None


def _keep(gguf: Path, target: Path, tokenizer, model, started: float) -> bool:
    """Save the copy atomically; False (and a warning) where it cannot be kept."""

    def build(folder: Path) -> None:
        tokenizer.save_pretrained(folder)
        if model is not None:
            model.save_pretrained(folder)

    try:
        keep_built_copy(target, build, RECORD, {"source": str(gguf), "fingerprint": sample_fingerprint(gguf),
                                                 "part": target.name,
                                                 "seconds": round(time.perf_counter() - started, 1)})
        return True
    except OSError as exc:  # a full or read-only cache folder costs speed, never the run
        logger.warning("could not keep a copy of %s in %s (%s): it will be read from the GGUF file at every start",
                       gguf.name, target.parent, describe_error(exc))
        return False
