"""What both robustness benchmarks share: running one genq command in process and classifying what came back.

``robustness.py`` (malformed inputs, HTTP, kills) and ``robustness_more.py`` (damaged files, two
writers, the server) both tally their cases here; neither imports the other's internals.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path


def snapshot(folder: Path) -> dict[str, str]:
    """Every file's hash, except genq's lock files (they record their last holder: rewriting one is no damage)."""
    return {str(p.relative_to(folder)): hashlib.blake2b(p.read_bytes(), digest_size=8).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not (p.name.startswith(".")
                                                                         and p.name.endswith(".lock"))}


class Said(logging.Handler):
    """Collects what genq logged during one run (its warnings are part of what the user is told)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage() + "\n")


class Tally:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def run(self, work: Path, name: str, args: list, expect: str, check=None,
            must_say: str | list[str] | None = None) -> None:
        """Run one command in process; classify what came back.

        ``check`` (a callable) says whether an accepted run's result is right, and ``must_say`` is what an
        accepted run has to tell the user (a warning): without either, an accepted run counts as wrong.
        """
        from click.testing import CliRunner

        from genq.cli import main

        before = snapshot(work)
        said = Said()
        logging.getLogger("genq").addHandler(said)
        try:
            result = CliRunner().invoke(main, [str(a) for a in args])
        finally:
            logging.getLogger("genq").removeHandler(said)
        output = result.output + "".join(said.lines)  # warnings go through logging, which the runner does not see
        traceback = (result.exception is not None and not isinstance(result.exception, SystemExit)) \
            or "Traceback" in output
        after = snapshot(work)
        changed = [p for p in before if after.get(p) != before[p]]
        if traceback:
            outcome = "traceback"
        elif result.exit_code in (1, 2) and "error:" in output:
            outcome = "clear error" if check is None or expect != "error" or check() else "error, with damage"
        elif result.exit_code == 0 and expect == "skip" and ("skipped: 1" in output or "skipped 1" in output
                                                            or "dropped: 1" in output):
            outcome = "skip counted"
        elif result.exit_code == 0 and expect == "ok":
            needed = [must_say] if isinstance(must_say, str) else must_say or []
            right = (check is None or check()) and all(words in output for words in needed)
            outcome = "accepted (valid)" if right else "accepted silently"
        elif result.exit_code == 0:
            outcome = "accepted silently"
        else:
            outcome = f"exit {result.exit_code}"
        damage = (bool(changed) and outcome != "accepted (valid)" and expect != "skip") \
            or outcome == "error, with damage"
        command = " ".join(str(a) for a in args[:2]) if args[0] == "corpus" else str(args[0])
        message = next((line for line in output.splitlines() if line.startswith("error:")), "")
        self.rows.append({"input": name, "command": command, "expected": expect, "outcome": outcome,
                          "damage": damage, "first line": message.replace(str(work) + "/", "")[:140]})
