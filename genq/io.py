"""File I/O shared by every stage: line-numbered JSONL reading, atomic and resumable writes.

Every stage reads the previous stage's files and writes its own. Two promises hold for all
of them, so they live here once:

* a user's bad data is reported as a :class:`DataError` naming the file, the line and the
  fix -- never a traceback;
* nothing half-written is ever mistaken for a finished file: single-shot outputs are written
  to a temporary file and renamed, long outputs are appended line by line and a torn last
  line (from a crash or ``kill -9``) is detected and cut off before resuming.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)


class GenqError(Exception):
    """An error caused by the user's input or settings; the CLI prints it without a traceback."""

    exit_code = 2


def describe_changes(changed: dict[str, tuple], option_names: dict[str, str]) -> str:
    """``{setting: (then, now)}`` as a user reads it: each setting by the option that sets it, each value as typed
    (never None), e.g. "--dtype: float32 then, bfloat16 now"."""

    def shown(value) -> str:
        if value is None:
            return "not set"
        if isinstance(value, bool):
            return "on" if value else "off"
        return str(value) if value != "" else "empty"

    return "; ".join(f"{option_names.get(key, key)}: {shown(then)} then, {shown(now)} now"
                     for key, (then, now) in changed.items())


class DataError(GenqError):
    """A problem at a precise place in a user's file."""

    def __init__(self, path: str | os.PathLike, problem: str, fix: str = "", line: int | None = None):
        self.path = str(path)
        self.line = line
        self.problem = problem
        self.fix = fix
        where = f"{self.path}:{line}" if line is not None else self.path
        message = f"{where}: {problem}"
        if fix:
            message += f"\n  fix: {fix}"
        super().__init__(message)


def describe_error(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line`` of an exception, cut at a word and never mid-URL, for a one-line message."""
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    if len(first) > limit:
        words, kept = first.split(" "), ""
        for word in words:
            if len(kept) + len(word) + 1 > limit:
                break
            kept = f"{kept} {word}" if kept else word
        first = kept + " ..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


ON_ERROR_CHOICES = ("raise", "skip")


@dataclass
class ErrorTally:
    """Counts the bad records skipped under ``on_error="skip"`` and keeps a few examples."""

    on_error: str = "raise"
    skipped: int = 0
    examples: list[str] = field(default_factory=list)
    max_examples: int = 5

    def __post_init__(self) -> None:
        if self.on_error not in ON_ERROR_CHOICES:
            raise GenqError(f"on_error must be one of {ON_ERROR_CHOICES}, got {self.on_error!r}")

    def report(self, error: DataError) -> None:
        """Raise ``error`` or, when skipping, count it."""
        if self.on_error == "raise":
            raise error
        self.skipped += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(str(error).split("\n")[0])


def require_file(path: str | os.PathLike, what: str = "input file") -> Path:
    """Return ``path`` as a Path, or fail with a clear message if it is not a readable, non-empty file."""
    path = Path(path)
    if not path.exists():
        if path.is_symlink():
            raise DataError(path, f"{what} is a symbolic link to nothing (or a loop of links)",
                            "point it at a real file")
        raise DataError(path, f"{what} does not exist", "check the path")
    if path.is_dir():
        raise DataError(path, f"{what} is a directory, expected a file", "pass the file inside it")
    if path.stat().st_size == 0:
        raise DataError(path, f"{what} is empty", "pass a file with at least one record")
    return path


GZIP_MAGIC = b"\x1f\x8b"


def open_input(path: str | os.PathLike) -> IO[bytes]:
    """Open an input file for reading bytes; gzip-compressed files (by their magic bytes) are read through."""
    handle = open(path, "rb")  # noqa: SIM115 (the caller closes it)
    if handle.peek(2)[:2] == GZIP_MAGIC:
        import gzip

        return gzip.open(handle, "rb")  # type: ignore[return-value]
    return handle


def input_lines(path: str | os.PathLike) -> Iterator[bytes]:
    """The raw lines of an input file (gzip read through); compressed data cut short is a DataError."""
    import gzip
    import zlib

    try:
        with open_input(path) as handle:
            yield from handle
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(path, f"compressed data is cut short or corrupt ({describe_error(exc)})",
                        "check the file (gzip -t), or pass the uncompressed one") from None


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def parse_json_text(text: str):
    """``json.loads`` that refuses NaN/Infinity and nesting too deep to parse, as ValueError/JSONDecodeError."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("nested too deeply to read") from None


def find_lone_surrogate(value) -> str | None:
    """The JSON path of a string holding a lone UTF-16 surrogate (``"\\ud800"``), which is not text."""
    stack = [("", value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return where or "(the value)"
        elif isinstance(item, dict):
            stack.extend((f"{where}.{key}" if where else str(key), v) for key, v in item.items())
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(item))
    return None


def iter_jsonl(path: str | os.PathLike, errors: ErrorTally | None = None) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)`` for each JSON object line of ``path``, streaming.

    Blank lines are ignored, a UTF-8 byte-order mark is accepted and gzip input is read
    through. A line that is not UTF-8, not JSON (NaN and Infinity included), nested too
    deep, not an object, or that holds a lone surrogate escape is a :class:`DataError` (or
    counted in ``errors`` when it skips).
    """
    path = require_file(path, "JSONL file")
    errors = errors or ErrorTally()
    seen_any = False
    for line_number, raw in enumerate(input_lines(path), start=1):
        if line_number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            errors.report(DataError(path, f"bytes that are not UTF-8 ({exc.reason} at byte {exc.start})",
                                    "re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`", line_number))
            continue
        try:
            record = parse_json_text(text)
        except json.JSONDecodeError as exc:
            errors.report(DataError(path, f"malformed JSON ({exc.msg}, column {exc.colno})",
                                    "each line must be one complete JSON object", line_number))
            continue
        except ValueError as exc:
            errors.report(DataError(path, f"malformed JSON ({exc})",
                                    "write plain JSON: numbers must be finite, nesting shallow", line_number))
            continue
        if not isinstance(record, dict):
            errors.report(DataError(path, f"expected a JSON object, found {type(record).__name__}",
                                    "each line must be one JSON object like {\"_id\": ..., \"text\": ...}",
                                    line_number))
            continue
        if b"\\u" in raw and (where := find_lone_surrogate(record)) is not None:
            errors.report(DataError(path, f"{where} holds a lone UTF-16 surrogate escape (like \"\\ud800\"), "
                                          "which is not text", "fix or drop that value", line_number))
            continue
        seen_any = True
        yield line_number, record
    if not seen_any and errors.skipped == 0:
        raise DataError(path, "holds no records (only blank lines)", "pass a file with at least one JSON line")


def dumps_line(record: dict) -> str:
    """One JSONL line; UTF-8 kept readable rather than \\u-escaped."""
    return json.dumps(record, ensure_ascii=False) + "\n"


def count_records(path: str | os.PathLike) -> int:
    """Non-blank lines of a JSONL file genq wrote: its records, counted without parsing them."""
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.strip())


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Load a JSON document with a user-facing error on failure."""
    path = require_file(path, what)
    try:
        return parse_json_text(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise DataError(path, "is not UTF-8", "re-encode it as UTF-8") from None
    except json.JSONDecodeError as exc:
        raise DataError(path, f"malformed JSON ({exc.msg})", "fix or delete the file", exc.lineno) from None
    except ValueError as exc:
        raise DataError(path, f"malformed JSON ({exc})", "fix or delete the file") from None


# --------------------------------------------------------------------------- paths: never destroy an input


def resolve_path(path: str | os.PathLike) -> Path:
    """``path`` made absolute with symlinks followed; a symlink loop is the user's to fix, not a traceback."""
    path = Path(path)
    try:
        return path.resolve()
    except (RuntimeError, OSError) as exc:  # RuntimeError on Python < 3.13, OSError(ELOOP) after
        if isinstance(exc, OSError) and exc.errno not in (errno.ELOOP, None):
            raise
        raise DataError(path, "is a loop of symbolic links", "point it at a real file or folder") from None


def refuse_same_path(inputs: Iterable[str | os.PathLike | None], output: str | os.PathLike,
                     option: str = "-o/--output") -> None:
    """Fail if ``output`` is, or (as a directory) contains, one of the inputs: writing it would destroy it.

    Compared after following symlinks, so ``out -> in`` is caught too.
    """
    target = resolve_path(output)
    for source in inputs:
        if source is None:
            continue
        resolved = resolve_path(source)
        if resolved == target or (target.is_dir() and resolved.is_relative_to(target)):
            raise GenqError(f"{option} {output} is the input {source}: writing it would destroy the input\n"
                            "  fix: choose another output path")


def file_fingerprint(path: str | os.PathLike) -> str:
    """A digest of a file's bytes: whether an input changed since a run began, whatever its size or date."""
    digest = hashlib.blake2b(digest_size=12)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sample_fingerprint(path: str | os.PathLike, window: int = 1 << 16) -> str:
    """A cheap digest of a file: its size and its first and last ``window`` bytes.

    Reads at most 128 KiB whatever the file's size, so opening a large index or model
    checks every part of it in milliseconds; a truncated, rotated, replaced or retrained
    file changes it (a change confined to the middle of a large file may not).
    """
    digest = hashlib.blake2b(digest_size=8)
    size = Path(path).stat().st_size
    digest.update(str(size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(window))
        if size > window:
            handle.seek(max(window, size - window))
            digest.update(handle.read(window))
    return digest.hexdigest()


def describe_file(path: str | os.PathLike) -> dict:
    """What a finished output's metadata records about it, so a later run knows it is still that file."""
    return {"bytes": Path(path).stat().st_size, "fingerprint": file_fingerprint(path)}


def is_described_file(description: dict | None, path: str | os.PathLike) -> bool:
    """Whether ``path`` is the very file ``description`` was written for (not deleted, replaced or edited)."""
    path = Path(path)
    description = description or {}
    if not path.is_file() or path.stat().st_size != description.get("bytes"):
        return False
    return file_fingerprint(path) == description.get("fingerprint")


# --------------------------------------------------------------------------- output directories


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every stage's interrupt clean-up (flush, record, keep) runs for it too."""


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` instead of ending the process with no clean-up.

    Only the main thread may set signal handlers; elsewhere (a server thread, a test worker)
    this does nothing and SIGTERM keeps its default.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists now (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _leftovers(out_dir: Path, kind: str) -> list[tuple[Path, int]]:
    """``.NAME.KIND-PID`` siblings of ``out_dir`` whose process is gone."""
    prefix = f".{out_dir.name}.{kind}-"
    found = []
    if not out_dir.parent.is_dir():
        return found
    for sibling in out_dir.parent.iterdir():
        if sibling.name.startswith(prefix) and sibling.name[len(prefix):].isdigit():
            pid = int(sibling.name[len(prefix):])
            if not pid_alive(pid):
                found.append((sibling, pid))
    return found


def recover_interrupted_swap(out_dir: str | os.PathLike) -> list[str]:
    """Undo what a killed :func:`replacing_directory` left beside ``out_dir``; returns what was done.

    A kill between the two renames of a swap leaves no ``out_dir`` but the previous one as
    ``.NAME.old-PID``: it is put back. A kill after the swap leaves the old copy (removed),
    and a kill during a build leaves ``.NAME.building-PID`` (removed). Only siblings of
    processes that no longer run are touched.
    """
    out_dir = Path(out_dir)
    actions = []
    for old, pid in sorted(_leftovers(out_dir, "old"), key=lambda item: item[0].stat().st_mtime, reverse=True):
        if not out_dir.exists():
            os.replace(old, out_dir)
            actions.append(f"restored {out_dir} from {old.name}, left by interrupted process {pid}")
        else:
            shutil.rmtree(old, ignore_errors=True)
            actions.append(f"removed {old.name}, the previous copy an interrupted swap (process {pid}) left")
    for building, pid in _leftovers(out_dir, "building"):
        shutil.rmtree(building, ignore_errors=True)
        actions.append(f"removed {building.name}, unfinished output of interrupted process {pid}")
    for action in actions:
        logger.warning(action)
    return actions


def check_output_dir(out_dir: str | os.PathLike, marker: str, what: str, overwrite: bool,
                     command: str = "") -> bool:
    """Whether ``out_dir`` holds an earlier genq ``what`` that may be replaced; refuse anything else.

    genq replaces only a directory it wrote itself, recognised by ``marker``, and only
    with ``--overwrite``; an empty or missing directory is free. The current directory
    and its parents are never replaced (the shell would be left in a deleted folder).
    """
    out_dir = Path(out_dir)
    resolved = resolve_path(out_dir)
    recover_interrupted_swap(resolved)
    if Path.cwd().resolve().is_relative_to(resolved):
        raise GenqError(f"-o {out_dir} is the current directory or one of its parents; genq builds its output "
                        "beside the target and renames it into place\n  fix: name a new folder, e.g. -o my-index")
    if not resolved.exists():
        return False
    if not resolved.is_dir():
        raise GenqError(f"{out_dir} is a file, not a {what} directory; it is left alone\n"
                        "  fix: choose another -o/--output")
    if not any(resolved.iterdir()):
        return False
    if not (resolved / marker).exists():
        raise GenqError(f"{out_dir} is not empty and is not a genq {what} (it has no {marker}); genq never "
                        "replaces what it did not write\n  fix: choose another -o/--output, or empty that "
                        "folder yourself")
    if not overwrite:
        raise GenqError(f"{out_dir} already holds a genq {what}\n  fix: pass --overwrite to replace it once the "
                        f"new one is complete{command}, or choose another -o/--output")
    return True


@contextlib.contextmanager
def replacing_directory(out_dir: str | os.PathLike) -> Iterator[Path]:
    """A temporary sibling that replaces ``out_dir`` only if the block succeeds.

    The old directory stays usable until the final rename; on any failure (or Ctrl-C)
    the temporary one is removed and ``out_dir`` is untouched. A ``kill -9`` at any point
    is undone by :func:`recover_interrupted_swap` on the next run.
    """
    tmp = start_building(out_dir)
    try:
        yield tmp
        finish_building(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def start_building(out_dir: str | os.PathLike) -> Path:
    """The empty ``.NAME.building-PID`` sibling a new ``out_dir`` is built in (leftovers of dead runs cleared)."""
    out_dir = resolve_path(out_dir)
    recover_interrupted_swap(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.building-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def finish_building(tmp: Path, out_dir: str | os.PathLike) -> None:
    """Swap the finished ``tmp`` in for ``out_dir``: two renames, the old copy removed last."""
    out_dir = resolve_path(out_dir)
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


# --------------------------------------------------------------------------- writing files


def make_parent(path: str | os.PathLike) -> None:
    """Create the folder ``path`` goes into; a file standing where a folder must be is the user's to move."""
    parent = Path(path).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [parent, *parent.parents] if p.exists() and not p.is_dir()), parent)
        raise GenqError(f"cannot write {path}: {blocker} is a file, not a folder\n"
                        "  fix: choose another output path, or move that file away") from None


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(directory: str | os.PathLike) -> None:
    """Give a model folder's files the permissions ``open()`` would (safetensors writes 0600 via mkstemp),
    so a service running as another user can load what genq trained."""
    mask = current_umask()
    for path in Path(directory).rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.chmod(path, 0o666 & ~mask)


def cache_root() -> Path:
    """Where genq keeps copies it can make again (converted models): ``$GENQ_CACHE_DIR``, else ~/.cache/genq."""
    if os.environ.get("GENQ_CACHE_DIR"):
        return Path(os.environ["GENQ_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "genq"


def built_copy_intact(folder: Path, record_name: str) -> bool:
    """A copy made by :func:`keep_built_copy` whose record lists every file at its recorded size."""
    try:
        record = json.loads((folder / record_name).read_text(encoding="utf-8"))
        return all((folder / name).stat().st_size == size for name, size in record["files"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def keep_built_copy(target: Path, build, record_name: str, record: dict) -> None:
    """Build a cache folder with ``build(folder)`` beside ``target`` and rename it into place whole, with
    ``record`` (plus the built files' sizes) written last as ``record_name``.

    A killed build leaves only a temporary folder, removed here on any error; a ``target`` that
    is no longer intact (a file truncated or gone since) is replaced; when another process
    finished the same copy first, theirs is kept. Raises OSError where nothing could be kept.
    """
    building = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() and not built_copy_intact(target, record_name):
            shutil.rmtree(target)  # genq's own copy, damaged since: made again
        building = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        build(building)
        files = {p.name: p.stat().st_size for p in building.iterdir() if p.is_file()}
        (building / record_name).write_text(json.dumps({**record, "files": files}, indent=2), encoding="utf-8")
        try:
            building.rename(target)
        except OSError:  # another run finished the same copy first
            if not built_copy_intact(target, record_name):
                raise
        else:
            building = None
    finally:
        if building is not None:
            shutil.rmtree(building, ignore_errors=True)


def reserved_memmap(path: str | os.PathLike, shape: tuple[int, ...], dtype=None):
    """A new .npy opened as a writable memory map, with every byte of it allocated on disk first.

    A memory map over a sparse file takes its disk blocks only when a page is first written;
    on a full disk the kernel then answers with SIGBUS, which kills Python without a word.
    Allocating up front turns a full disk into an ENOSPC here, which genq reports in one line.
    """
    import numpy as np
    from numpy.lib.format import open_memmap

    matrix = open_memmap(path, mode="w+", dtype=np.float32 if dtype is None else dtype, shape=shape)
    try:
        with open(path, "r+b") as handle:
            os.posix_fallocate(handle.fileno(), 0, os.fstat(handle.fileno()).st_size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):  # a file system that cannot reserve
            del matrix
            raise
    except AttributeError:  # no posix_fallocate on this platform (macOS): the map stays sparse
        pass
    return matrix


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Write to a temporary file beside ``path`` and rename it into place only on success.

    A crash mid-write leaves the old file (or none) in place, never a truncated one.
    """
    path = Path(path)
    make_parent(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; a finished file gets what open() would give
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    with atomic_write(path) as handle:
        json.dump(obj, handle, ensure_ascii=False, indent=2)
        handle.write("\n")


def write_jsonl_atomic(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Stream ``records`` into ``path`` atomically; return how many were written."""
    count = 0
    with atomic_write(path) as handle:
        for record in records:
            handle.write(dumps_line(record))
            count += 1
    return count


def repair_torn_tail(path: str | os.PathLike) -> int:
    """Cut a last line that a crash left without its newline (or unparsable); return bytes removed.

    An appending writer flushes whole lines only, so anything after the last newline is a
    torn write. A complete-looking last line that does not parse is torn too (a crash can
    land between the bytes and the newline of a line that was itself split by the OS).
    """
    path = Path(path)
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as handle:
        # Find the start of the last line by scanning backwards in blocks.
        block = 1 << 16
        end = size
        data = b""
        while end > 0:
            start = max(0, end - block)
            handle.seek(start)
            data = handle.read(end - start) + data
            # need the second-to-last newline (or file start) to isolate the last line
            if data.count(b"\n") >= 2 or start == 0:
                break
            end = start
        offset_of_data = size - len(data)
        if data.endswith(b"\n"):
            body = data[:-1]
            last_start = body.rfind(b"\n") + 1
            last_line = body[last_start:]
            try:
                json.loads(last_line.decode("utf-8"))
                return 0
            except (UnicodeDecodeError, json.JSONDecodeError):
                keep = offset_of_data + last_start
        else:
            keep = offset_of_data + data.rfind(b"\n") + 1
        handle.truncate(keep)
        return size - keep


class JsonlAppender:
    """Append records to a JSONL file in flushed batches so an interrupted run can resume.

    Each :meth:`write_batch` writes whole lines, flushes and fsyncs: after it returns the
    batch survives a crash. Before appending to an existing file, its torn tail is repaired.
    """

    def __init__(self, path: str | os.PathLike, fsync: bool = True):
        self.path = Path(path)
        make_parent(self.path)
        self.torn_bytes_dropped = repair_torn_tail(self.path)
        self._fsync = fsync
        self.last_digest = ""  # of the last batch's bytes: a journal records it to vouch for exactly those bytes
        self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())

    def write_batch(self, records: Iterable[dict]) -> int:
        text = "".join(dumps_line(r) for r in records)
        self.last_digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()
        if not text:
            return 0
        self._handle.write(text)
        self._handle.flush()
        if self._fsync:
            os.fsync(self._handle.fileno())
        return text.count("\n")

    @property
    def position(self) -> int:
        """Bytes in the file after the last batch: what a journal records as valid."""
        return os.fstat(self._handle.fileno()).st_size

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
