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

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from genq.io import cache_root, describe_error, sample_fingerprint

logger = logging.getLogger(__name__)

RECORD = "genq_gguf.json"
PARTS = ("tokenizer", "model")


def _key(gguf: Path) -> str:
    import transformers

    return f"{gguf.stem}-{sample_fingerprint(gguf)}-transformers{transformers.__version__}"


def _trusted(folder: Path) -> bool:
    """A copy whose record lists every file at its recorded size (a truncated or half-deleted one is not)."""
    try:
        record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
        return all((folder / name).stat().st_size == size for name, size in record["files"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


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
        if _trusted(folder):  # the model copy holds the tokenizer too
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


def _keep(gguf: Path, target: Path, tokenizer, model, started: float) -> bool:
    """Save the copy atomically; False (and a warning) where it cannot be kept."""
    building = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() and not _trusted(target):
            shutil.rmtree(target)  # our own copy, damaged since: made again below
        building = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        tokenizer.save_pretrained(building)
        if model is not None:
            model.save_pretrained(building)
        files = {p.name: p.stat().st_size for p in building.iterdir() if p.is_file()}
        (building / RECORD).write_text(json.dumps({
            "source": str(gguf), "fingerprint": sample_fingerprint(gguf), "part": target.name, "files": files,
            "seconds": round(time.perf_counter() - started, 1)}, indent=2), encoding="utf-8")
        try:
            building.rename(target)
        except OSError:  # another run finished the same copy first: keep theirs
            if not _trusted(target):
                raise
            shutil.rmtree(building, ignore_errors=True)
        building = None
        return True
    except OSError as exc:  # a full or read-only cache folder costs speed, never the run
        logger.warning("could not keep a copy of %s in %s (%s): it will be read from the GGUF file at every start",
                       gguf.name, target.parent, describe_error(exc))
        return False
    finally:
        if building is not None:
            shutil.rmtree(building, ignore_errors=True)
