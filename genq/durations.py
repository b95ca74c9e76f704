"""Durations as people write them (``90s``, ``30m``, ``1h30m``) and read them: the ground floor for budgets, ETAs
and time limits, so that no stage imports the planner to print a time."""

from __future__ import annotations

import re

from genq.io import GenqError

__all__ = ["format_duration", "parse_duration"]


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``30m``, ``2h``, ``1h30m`` or a plain number of seconds."""
    cleaned = str(text).strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", cleaned):
        seconds = float(cleaned)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)(h|m|s)", cleaned)
        if not parts or "".join(n + u for n, u in parts) != cleaned:
            raise GenqError(f"cannot read the duration {text!r}\n  fix: write it like 90s, 30m, 2h or 1h30m")
        seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
    if seconds <= 0:
        raise GenqError(f"the duration {text!r} is not positive\n  fix: write it like 90s, 30m, 2h or 1h30m")
    return seconds


def format_duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.1f}m" if seconds < 600 else f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
