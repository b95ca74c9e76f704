"""Prompt templates by name or file, and the one a generator tuned by genq learned under.

Apart from :mod:`genq.generation.prompts` (rendering and reading samples) so that the
settings, which resolve a run's default template, depend on nothing above the ground floor.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from genq.io import DataError, GenqError

BUILTIN_TEMPLATES = ("msmarco", "promptagator", "zero-shot")
DEFAULT_TEMPLATE = "msmarco"
# a generator tuned by `genq train-generator` keeps the prompt it learned under beside its weights
TUNED_PROMPT_FILE = "genq_prompt.txt"


def own_prompt(model: str) -> tuple[str | None, str | None]:
    """(template, prompt style) a generator was tuned under by ``genq train-generator``, or (None, None).

    A tuned generator writes its queries under that prompt only, so it is what sampling and
    scoring with it use unless told otherwise. Read from a local model folder; a hub id or a
    GGUF file has no such record.
    """
    import json

    folder = Path(model)
    try:
        record = json.loads((folder / "genq_training.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    if not isinstance(record, dict) or record.get("kind") != "generator":
        return None, None
    settings = record.get("settings") or {}
    template = settings.get("prompt_template")
    if template not in BUILTIN_TEMPLATES and (folder / TUNED_PROMPT_FILE).is_file():
        template = str(folder / TUNED_PROMPT_FILE)
    style = record.get("prompt_style")
    return (template if isinstance(template, str) else None), (style if style in ("chat", "plain") else None)


def load_prompt_template(name_or_path: str) -> str:
    """A built-in few-shot template by name, or the user's file with a ``{passage}`` placeholder."""
    if name_or_path in BUILTIN_TEMPLATES:
        return resources.files("genq").joinpath("prompts", f"{name_or_path}.txt").read_text(encoding="utf-8")
    path = Path(name_or_path)
    if not path.exists():
        raise GenqError(f"prompt template {name_or_path!r} is neither a built-in ({', '.join(BUILTIN_TEMPLATES)}) "
                        "nor an existing file")
    template = path.read_text(encoding="utf-8")
    if "{passage}" not in template:
        raise DataError(path, "prompt template has no {passage} placeholder",
                        "put {passage} where the passage text goes (and optionally {title})")
    return template
