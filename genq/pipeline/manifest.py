"""RUN_DIR/manifest.json: which stages finished, with which settings, so a rerun does only what is left."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from genq import __version__
from genq.io import GenqError, pid_alive, read_json, write_json_atomic

MANIFEST = "manifest.json"

# Settings added to a stage after runs were already recorded, with the value that behaves as before: a run
# recorded without the key matches when the key holds that value, so upgrading genq does not redo finished work.
ADDED_SETTINGS: dict[str, dict] = {"prepare": {"dedup": True},
                                   "generate": {"prompt_style": "auto", "backend": "auto"}}


def same_settings(stage: str, recorded: dict | None, params: dict) -> bool:
    if recorded is None:
        return False
    added = ADDED_SETTINGS.get(stage, {})
    current = {k: v for k, v in params.items() if not (k not in recorded and k in added and added[k] == v)}
    return fingerprint(recorded) == fingerprint(current)


def fingerprint(params: dict) -> str:
    return hashlib.blake2b(json.dumps(params, sort_keys=True, default=str).encode(), digest_size=8).hexdigest()


class Manifest:
    """RUN_DIR/manifest.json, rewritten atomically after every stage."""

    def __init__(self, run_dir: Path, input_path: str):
        self.path = run_dir / MANIFEST
        if self.path.exists():
            self.data = read_json(self.path, "run manifest")
            self._settle_stale_running()
        else:
            self.data = {"genq_version": __version__, "input": input_path, "created": time.strftime("%FT%T%z"),
                         "stages": {}}

    def _settle_stale_running(self) -> None:
        """A stage recorded "running" whose process is gone (kill -9, power cut) was interrupted: say so.

        A stage still running in another live process means two runs on one directory, which
        would interleave their writes: refused.
        """
        changed = False
        for name, entry in self.data.get("stages", {}).items():
            if entry.get("status") != "running":
                continue
            pid = entry.get("pid")
            if isinstance(pid, int) and pid != os.getpid() and pid_alive(pid) and _is_genq_process(pid):
                raise GenqError(f"{self.path.parent} is in use: its {name} stage is running in process {pid}\n"
                                "  fix: wait for that run to end (or stop it), then rerun to continue; two runs on "
                                "one directory would mix their outputs")
            entry["status"] = "interrupted"
            entry["error"] = (f"the process (pid {pid}) ended before the stage finished" if pid
                              else "the process ended before the stage finished")
            changed = True
        if changed:
            self.save()

    def save(self) -> None:
        write_json_atomic(self.path, self.data)

    def finished(self, name: str, params: dict) -> bool:
        entry = self.data["stages"].get(name)
        return bool(entry and entry.get("status") == "done" and same_settings(name, entry.get("params"), params))

    def previous_params(self, name: str) -> dict | None:
        entry = self.data["stages"].get(name)
        return entry.get("params") if entry else None

    def summary(self, name: str) -> dict:
        return self.data["stages"][name]["summary"]

    def start(self, name: str, params: dict) -> None:
        """Record the stage as running in this process (a later run tells a crash from a live run by the pid)."""
        self.data["stages"][name] = {"status": "running", "params": params, "fingerprint": fingerprint(params),
                                     "pid": os.getpid(), "started_at": time.strftime("%FT%T%z")}
        self.save()

    def record(self, name: str, params: dict, status: str, outputs: list[str], summary: dict, seconds: float) -> None:
        self.data["stages"][name] = {"status": status, "params": params, "fingerprint": fingerprint(params),
                                     "outputs": outputs, "summary": summary, "seconds": round(seconds, 2),
                                     "finished_at": time.strftime("%FT%T%z")}
        self.data["genq_version"] = __version__
        self.save()

    def record_stop(self, name: str, error: str, interrupted: bool, seconds: float) -> None:
        """The stage ended without finishing: interrupted (Ctrl-C, SIGTERM) or failed, with what happened."""
        entry = self.data["stages"][name]
        entry["status"] = "interrupted" if interrupted else "failed"
        entry["error"] = error
        entry["seconds"] = round(seconds, 2)
        entry["finished_at"] = time.strftime("%FT%T%z")
        self.save()

    def forget_from(self, names: list[str]) -> None:
        for name in names:
            self.data["stages"].pop(name, None)
        if "plan" in names:  # a new plan: the training steps re-sized under the old one no longer hold
            self.data.pop("replanned_training", None)
        self.save()


def _is_genq_process(pid: int) -> bool:
    """Whether ``pid`` runs genq (its command line names it); where /proc is missing, assume it does."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    except OSError:
        return True
    return b"genq" in command


def check_run_dir(run_dir: Path) -> None:
    """A run directory is new, empty, or an earlier run's (it holds the manifest): genq writes into no other folder."""
    if run_dir.exists() and not run_dir.is_dir():
        raise GenqError(f"{run_dir} is a file, not a run directory\n  fix: name a new or empty folder with -o")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not (run_dir / MANIFEST).exists():
        raise GenqError(f"{run_dir} is not empty and is not a genq run directory (it has no {MANIFEST}); genq "
                        "never writes into a folder it did not make\n  fix: name a new or empty folder with -o")
