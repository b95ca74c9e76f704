"""A stage's settings as the manifest records and compares them."""

from __future__ import annotations

import json
from dataclasses import asdict


def jsonable(obj) -> dict:
    """A config as the plain JSON the manifest records (paths and other objects as strings)."""
    return json.loads(json.dumps(asdict(obj) if hasattr(obj, "__dataclass_fields__") else obj, default=str))


def without(settings: dict, *execution_only: str) -> dict:
    """``settings`` less what says where or how often a stage runs, not what it produces."""
    return {key: value for key, value in settings.items() if key not in execution_only}
