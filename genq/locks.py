"""One writer per output: a second genq command on an output another one is writing is refused at once.

Two ``genq generate -o pairs.jsonl`` started a second apart used to interleave their appends
(240 lines where the meta said 120). Every command that writes an output now holds an
exclusive ``flock`` on a small lock file beside it, ``.NAME.lock`` (beside, not inside, so
that swapping a finished directory in does not touch it). The kernel releases the lock when
the process ends, however it ends, so a ``kill -9`` never leaves a stale lock behind; the
file itself stays (removing it would let a waiting opener lock a file no one else sees) and
holds the PID and command of its last holder, which the refusal names.

A process may take the lock of an output it already holds (``adapt`` locks the run
directory, then each stage its own output), and under ``torchrun`` only the main process
locks: the others write nothing of genq's.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from genq.io import GenqError, make_parent

try:
    import fcntl
except ImportError:  # Windows: no flock; outputs are then unguarded, as before
    fcntl = None

_held: dict[str, int] = {}  # lock files this process holds, with how many times it took each


def lock_path(output: str | os.PathLike) -> Path:
    """Where the lock of ``output`` lives: a hidden file beside it."""
    absolute = Path(os.path.abspath(output))
    return absolute.parent / f".{absolute.name}.lock"


def _holder(path: Path) -> str:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
        return f"PID {holder['pid']}, `{holder['command']}`, since {holder['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextmanager
def output_lock(output: str | os.PathLike, what: str = "output") -> Iterator[None]:
    """Hold the exclusive lock of ``output`` for the block, or raise a GenqError naming its holder."""
    if fcntl is None or os.environ.get("RANK", "0") != "0":
        yield
        return
    path = lock_path(output)
    key = str(path)
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    created = [folder for folder in (path.parent, *path.parent.parents) if not folder.exists()]
    make_parent(path)  # a file where a folder should be is named as such
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise GenqError(f"the {what} {output} is being written by another genq run ({_holder(path)})\n"
                            "  fix: wait for that run to finish, or stop it; two runs on one output would mix "
                            "their writes") from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, json.dumps({"pid": os.getpid(), "command": " ".join(["genq", *sys.argv[1:]])[:300],
                                         "started": time.strftime("%FT%T%z")}).encode())
        _held[key] = 1
        try:
            yield
        finally:
            del _held[key]
            if created and not os.path.lexists(output):  # a run that wrote nothing leaves no folder behind
                _remove_created(path, created)
    finally:
        os.close(descriptor)  # releases the lock


def _remove_created(path: Path, created: list[Path]) -> None:
    try:
        path.unlink()
        for folder in created:  # innermost first
            folder.rmdir()
    except OSError:
        pass  # something else is in there now: it stays


def one_writer(argument: str, what: str = "output") -> Callable:
    """Decorator: the function runs holding the output lock of its parameter ``argument``."""

    def decorate(function: Callable) -> Callable:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def locked(*args, **kwargs):
            output = signature.bind(*args, **kwargs).arguments[argument]
            with output_lock(output, what):
                return function(*args, **kwargs)

        return locked

    return decorate
