"""One writer per output (issue 27): a second run on an output another is writing is refused, naming the first."""

import fcntl
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from genq.cli import main
from genq.io import GenqError
from genq.locks import lock_path, output_lock

from .conftest import write_jsonl


class HeldBy:
    """Another process's hold on an output's lock, as a second open file description sees it."""

    def __init__(self, output, pid=4242, command="genq generate ..."):
        self.path = lock_path(output)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT)
        fcntl.flock(self.descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(self.descriptor, json.dumps({"pid": pid, "command": command, "started": "then"}).encode())

    def release(self):
        os.close(self.descriptor)


def test_the_lock_lives_beside_the_output_and_is_reentrant(tmp_path):
    assert lock_path(tmp_path / "run" / "model") == tmp_path / "run" / ".model.lock"
    with output_lock(tmp_path / "pairs.jsonl"), output_lock(tmp_path / "pairs.jsonl"):
        descriptor = os.open(lock_path(tmp_path / "pairs.jsonl"), os.O_RDWR)
        with pytest.raises(BlockingIOError):  # another open file description is refused while we hold it
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(descriptor)
    holder = HeldBy(tmp_path / "pairs.jsonl")  # released at the end of the block: free again
    holder.release()


def test_a_second_writer_is_refused_at_once_and_nothing_is_written(tmp_path, bike_passages, tiny_t5_dir,
                                                                   tiny_encoder_dir):
    runner = CliRunner()
    pairs = tmp_path / "pairs.jsonl"
    holder = HeldBy(pairs, pid=4242, command="genq generate passages.jsonl -o pairs.jsonl")
    result = runner.invoke(main, ["generate", str(bike_passages), "-o", str(pairs), "--generator", str(tiny_t5_dir),
                                  "--max-length", "6", "--device", "cpu"])
    assert result.exit_code != 0 and "being written by another genq run" in result.output
    assert "PID 4242" in result.output and "Traceback" not in result.output
    assert not pairs.exists() and not (tmp_path / "pairs.jsonl.partial").exists()
    holder.release()
    result = runner.invoke(main, ["generate", str(bike_passages), "-o", str(pairs), "--generator", str(tiny_t5_dir),
                                  "--max-length", "6", "--device", "cpu", "--queries-per-passage", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads(lock_path(pairs).read_text())["pid"] == os.getpid()  # the last holder, for the next refusal

    for command, output in (
            (["train", str(pairs), "-o", str(tmp_path / "model"), "--base-model", str(tiny_encoder_dir)],
             tmp_path / "model"),
            (["index", str(bike_passages), "-o", str(tmp_path / "index"), "-m", str(tiny_encoder_dir)],
             tmp_path / "index"),
            (["train-reranker", str(pairs), "-o", str(tmp_path / "reranker"), "--base-model", str(tiny_encoder_dir)],
             tmp_path / "reranker"),
            (["export", str(pairs), "--format", "dpr", "-o", str(tmp_path / "dpr.json")], tmp_path / "dpr.json")):
        holder = HeldBy(output)
        result = runner.invoke(main, command)
        holder.release()
        assert result.exit_code != 0 and "being written by another genq run" in result.output, command
        assert not output.exists(), command


def test_adapt_refuses_a_run_directory_in_use(tmp_path, raw_corpus, tiny_t5_dir, tiny_encoder_dir):
    from .test_pipeline import adapt_args

    holder = HeldBy(tmp_path / "run")
    result = CliRunner().invoke(main, adapt_args(raw_corpus, tmp_path / "run", tiny_t5_dir, tiny_encoder_dir))
    holder.release()
    assert result.exit_code != 0 and "run directory" in result.output and "another genq run" in result.output


def test_a_killed_writer_leaves_no_stale_lock(tmp_path):
    output = tmp_path / "pairs.jsonl"
    script = ("import sys, time\nfrom genq.locks import output_lock\n"
              f"with output_lock({str(output)!r}):\n    print('held', flush=True)\n    time.sleep(120)\n")
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    with pytest.raises(GenqError, match=f"PID {child.pid}"), output_lock(output):
        pass
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    deadline = time.monotonic() + 10
    while True:  # the kernel drops the lock with the process
        try:
            with output_lock(output):
                break
        except GenqError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_a_folder_and_a_file_output_get_distinct_locks(tmp_path):
    write_jsonl(tmp_path / "x.jsonl", [])
    assert lock_path(tmp_path / "x.jsonl") != lock_path(tmp_path / "x")
