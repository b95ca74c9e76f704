"""Robustness replay, issues 24 and 27: damaged files genq wrote, foreign inputs, odd ids, a real full disk,
two writers on one output, a search during a rebuild, the server over a damaged index, oversized requests.

Called by ``benchmarks/robustness.py`` (which builds the tiny models and writes the report); every case is
classified like the first part's malformed inputs (clear error, counted skip, valid, traceback, accepted
silently, damage), except the concurrency and HTTP rows, which count their own outcomes.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENQ = [sys.executable, "-m", "genq"]
DEVICE = ["--device", "cpu", "--dtype", "float32"]


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def words_corpus(path: Path, n: int, prefix: str = "p", marker: str = "") -> Path:
    rng = random.Random(n)
    vocabulary = "chain brake tyre gear saddle pedal spoke hub valve cable lever oil clean adjust".split()
    return write_jsonl(path, [{"_id": f"{prefix}{i}", "title": rng.choice(vocabulary),
                               "text": " ".join([marker, *(rng.choice(vocabulary) for _ in range(14))]).strip()}
                              for i in range(n)])


def run_cli(args: list) -> tuple[int, str]:
    from click.testing import CliRunner

    from genq.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


# --------------------------------------------------------------------------- issue 24


def damaged_indexes(tally, work: Path, models: dict) -> None:
    """Every damage of the damaged-files issue, each against `search` and `index --add`."""
    from genq.index import build_index
    from tests.test_index_damage import DAMAGE, passages

    pristine = work / "pristine-index"
    build_index(passages(work / "idx-passages.jsonl"), str(models["encoder"]), pristine, dtype="float32",
                progress=False, save_embeddings=True)
    more = passages(work / "idx-more.jsonl", n=3, prefix="q")
    for case, (damage, _) in DAMAGE.items():
        directory = work / "damaged-index"
        shutil.rmtree(directory, ignore_errors=True)
        shutil.copytree(pristine, directory)
        damage(directory)
        tally.run(work, case, ["search", directory, "chain", "--device", "cpu"], "error")
        tally.run(work, case, ["index", more, "-o", directory, "--add", "--device", "cpu"], "error")
    shutil.rmtree(work / "damaged-index", ignore_errors=True)

    # the query model is not the index's
    tally.run(work, "another model of the same dimension", ["search", pristine, "chain", "-m", models["encoder_b"],
                                                            "--device", "cpu"], "error")
    own = work / "own-model"
    shutil.copytree(models["encoder"], own)
    built = work / "index-of-own-model"
    build_index(passages(work / "idx-passages.jsonl"), str(own), built, dtype="float32", progress=False)
    shutil.rmtree(own)
    shutil.copytree(models["encoder_b"], own)  # the model folder retrained (replaced) in place
    tally.run(work, "index's model folder replaced in place", ["search", built, "chain", "--device", "cpu"], "error")


def caches_and_foreign_pairs(tally, work: Path, models: dict) -> None:
    corpus = words_corpus(work / "cache-corpus.jsonl", 40)
    records = [json.loads(line) for line in corpus.read_text().splitlines()]
    pairs = write_jsonl(work / "cache-pairs.jsonl", [
        {"query": " ".join(r["text"].split()[:4]), "passage_id": r["_id"], "passage": r["text"], "title": r["title"]}
        for r in records])
    model = work / "replaced-model"
    shutil.copytree(models["encoder"], model)
    filter_args = ["filter", pairs, "--corpus", corpus, "-m", model, "--filter-top-k", "1", *DEVICE]
    run_cli([*filter_args, "-o", work / "filtered-a.jsonl"])  # fills .genq-cache with model A's vectors
    shutil.rmtree(model)
    shutil.copytree(models["encoder_b"], model)
    fresh = work / "fresh-cache"
    fresh.mkdir()
    shutil.copy(pairs, fresh / "pairs.jsonl")
    shutil.copy(corpus, fresh / "corpus.jsonl")
    run_cli(["filter", fresh / "pairs.jsonl", "--corpus", fresh / "corpus.jsonl", "-m", models["encoder_b"],
             "--filter-top-k", "1", *DEVICE, "-o", fresh / "filtered.jsonl"])
    expected = (fresh / "filtered.jsonl").read_text()
    tally.run(work, "model folder replaced in place, cache kept", [*filter_args, "-o", work / "filtered-b.jsonl"],
              "ok", check=lambda: (work / "filtered-b.jsonl").read_text() == expected)

    other = write_jsonl(work / "other-corpus.jsonl", [{**r, "text": r["text"] + " rewritten"} for r in records])
    tally.run(work, "pairs from another corpus with the same ids", ["filter", pairs, "--corpus", other, "-m",
                                                                    models["encoder"], *DEVICE, "-o",
                                                                    work / "foreign.jsonl"], "error")
    tally.run(work, "pairs from another corpus with the same ids", ["mine-negatives", pairs, "--corpus", other,
                                                                    "--neg-retriever", "bm25", "-o",
                                                                    work / "foreign-neg.jsonl"], "error")


ODD_IDS = {"empty id": "", "whitespace id": "   ", "tab in id": "a\tb", "newline in id": "a\nb",
           "U+2028 in id": "a\u2028b", "U+2029 in id": "a\u2029b", "U+0085 in id": "a\u0085b", "NUL in id": "a\x00b"}


def odd_ids(tally, work: Path, models: dict) -> None:
    for name, bad in ODD_IDS.items():
        source = write_jsonl(work / f"{name.replace(' ', '-')}.jsonl",
                             [{"_id": "ok", "text": "clean the chain"}, {"_id": bad, "text": "oil the chain"}])
        tally.run(work, name, ["corpus", "prepare", source, "-o", work / "ids-out.jsonl", "--tokenizer", "words"],
                  "error")
        tally.run(work, name, ["index", source, "-m", models["encoder"], "-o", work / "ids-index", *DEVICE], "error")
    chunked = write_jsonl(work / "chunk-ids.jsonl", [{"_id": "a#1", "text": "a short document"},
                                                     {"_id": "a", "text": " ".join(f"word{i}" for i in range(400))}])
    out = work / "chunk-ids-out.jsonl"

    def unique() -> bool:
        ids = [json.loads(line)["_id"] for line in out.read_text().splitlines()]
        return len(ids) == len(set(ids)) > 2

    tally.run(work, "a document id equal to another's chunk id", ["corpus", "prepare", chunked, "-o", out,
                                                                  "--tokenizer", "words", "--max-tokens", "64",
                                                                  "--overlap", "8"],
              "ok", check=unique)
    index = work / "ids-good-index"
    run_cli(["index", words_corpus(work / "ids-corpus.jsonl", 10), "-m", models["encoder"], "-o", index, *DEVICE])
    queries = write_jsonl(work / "queries-tab.jsonl", [{"_id": "q\t1", "text": "chain"}])
    tally.run(work, "tab in a query id (TREC run)", ["search", index, "--queries", queries, "--run",
                                                     work / "run.trec", "--device", "cpu"], "error")
    spaced = write_jsonl(work / "queries-space.jsonl", [{"_id": "q 1", "text": "chain oil"}])
    tally.run(work, "space in a query id (TREC run)", ["search", index, "--queries", spaced, "--run",
                                                       work / "run2.trec", "--device", "cpu"], "error")


def journal_damage(tally, work: Path, models: dict) -> None:
    """An interrupted generation whose journal was then damaged: the rerun must neither lose nor double a pair."""
    corpus = words_corpus(work / "journal-corpus.jsonl", 24)
    args = ["generate", corpus, "--generator", models["t5"], "--max-length", "6", "--gen-batch-size", "4", *DEVICE]
    reference = work / "journal-reference.jsonl"
    run_cli([*args, "-o", reference])
    expected = sorted((r["passage_id"], r["query"]) for r in map(json.loads, reference.read_text().splitlines()))

    def lines_of(path: Path) -> list:
        return sorted((r["passage_id"], r["query"]) for r in map(json.loads, path.read_text().splitlines()))

    damages = {
        "journal: a middle entry not JSON": lambda lines: lines.__setitem__(2, "{not json"),
        "journal: a middle entry's ids altered": lambda lines: lines.__setitem__(
            2, json.dumps({**json.loads(lines[2]), "ids": ["p0", "p1", "p2", "p3"]})),
        "journal: the last entry 50 bytes short": lambda lines: lines.__setitem__(
            -1, json.dumps({**json.loads(lines[-1]), "bytes": json.loads(lines[-1]).get("bytes", 60) - 50})),
    }
    out = work / "journal-pairs.jsonl"
    for name, damage in damages.items():
        for leftover in work.glob("journal-pairs*"):
            leftover.unlink()
        interrupted_after(4, lambda: run_cli([*args, "-o", out]))
        journal = next(work.glob("journal-pairs.jsonl.partial.progress.jsonl"))
        lines = journal.read_text().splitlines()
        damage(lines)
        journal.write_text("\n".join(lines) + "\n")
        tally.run(work, name, [*args, "-o", out], "ok", check=lambda: out.exists() and lines_of(out) == expected)


def interrupted_after(batches: int, command) -> None:
    """Run ``command`` with generation interrupted (Ctrl-C) after ``batches`` batches."""
    import genq.generate as generate_module

    real_sample, calls = generate_module.QueryGenerator.sample, {"n": 0}

    def stopping(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > batches:
            raise KeyboardInterrupt
        return real_sample(self, *args, **kwargs)

    generate_module.QueryGenerator.sample = stopping
    try:
        command()
    finally:
        generate_module.QueryGenerator.sample = real_sample


def degenerate_training(tally, work: Path, models: dict) -> None:
    same = write_jsonl(work / "identical-pairs.jsonl", [{"query": "oil the chain", "passage_id": "p1",
                                                         "passage": "clean the chain and oil it"}] * 40)
    train = ["--base-model", models["encoder"], "--train-batch-size", "8", "--eval-share", "0", "--device", "cpu"]
    tally.run(work, "40 identical pairs", ["train", same, "-o", work / "model-same", *train], "error")
    empty_negatives = write_jsonl(work / "empty-negatives.jsonl", [
        {"query": f"question {i}", "passage_id": f"p{i}", "passage": f"passage {i} about the chain",
         "negatives": [{"passage_id": "n", "text": ""}]} for i in range(16)])
    tally.run(work, "negatives with empty text", ["train", empty_negatives, "-o", work / "model-empty-neg", *train],
              "ok", must_say="have no text")
    lonely = write_jsonl(work / "only-positive.jsonl", [{"_id": "p1", "text": "clean the chain and oil it"}])
    pairs = write_jsonl(work / "lonely-pairs.jsonl", [{"query": "oil the chain", "passage_id": "p1",
                                                       "passage": "clean the chain and oil it"}])
    tally.run(work, "a corpus holding only the positive", ["mine-negatives", pairs, "--corpus", lonely,
                                                           "--neg-retriever", "bm25", "-o", work / "lonely-neg.jsonl"],
              "ok", must_say="no negatives were found")


def folder_input(tally, work: Path) -> None:
    folder = work / "mixed-folder"
    folder.mkdir()
    write_jsonl(folder / "three.jsonl", [{"_id": f"j{i}", "text": f"jsonl document {i}"} for i in range(3)])
    (folder / "table.csv").write_text("id,text\nc1,a csv row\n")
    (folder / "notes.md").write_text("# Notes\n\nA markdown note about chains.\n")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    (folder / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    out = work / "folder-out.jsonl"  # a folder reads .txt and .md; every other file must be named as not read
    tally.run(work, "folder of mixed files", ["corpus", "prepare", folder, "-o", out, "--tokenizer", "words",
                                              "--on-error", "skip"], "ok",
              check=lambda: "notes" in out.read_text(),
              must_say=["three.jsonl", "table.csv", "broken.pdf", "image.png"])


def full_disk(tally, work: Path, models: dict) -> str:
    """Real ENOSPC on a small tmpfs (needs root to mount one); returns a note when it cannot run."""
    small = work / "small-disk"
    small.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(small)],
                                           capture_output=True).returncode != 0:
        return "skipped: mounting a small tmpfs needs root"
    try:
        corpus = words_corpus(work / "disk-corpus.jsonl", 200)
        pairs = write_jsonl(work / "disk-pairs.jsonl", [
            {"query": f"question {i}", "passage_id": f"p{i}", "passage": f"passage {i} about chains " * 20}
            for i in range(200)])
        filler = small / "filler.bin"

        def leave_free(free_bytes: int) -> None:
            filler.unlink(missing_ok=True)
            stats = os.statvfs(small)
            filler.write_bytes(b"\0" * max(0, stats.f_bavail * stats.f_frsize - free_bytes))

        leave_free(16_000)
        tally.run(work, "disk full: generate", ["generate", corpus, "-o", small / "pairs.jsonl", "--generator",
                                                models["t5"], "--max-length", "6", *DEVICE], "error")
        leave_free(20_000)
        tally.run(work, "disk full: index", ["index", corpus, "-m", models["encoder"], "-o", small / "index",
                                             *DEVICE], "error")
        leave_free(20_000)
        tally.run(work, "disk full: export", ["export", pairs, "--format", "beir", "-o", small / "export"], "error")
        filler.unlink()
        model = small / "model"
        train = ["train", pairs, "-o", model, "--base-model", models["encoder"], "--train-batch-size", "32",
                 "--eval-share", "0", "--device", "cpu"]
        run_cli(train)
        before = {p.name: p.read_bytes() for p in model.iterdir() if p.is_file()}
        leave_free(300_000)
        tally.run(work, "disk full: train --overwrite over a finished model", [*train, "--overwrite"], "error",
                  check=lambda: {p.name: p.read_bytes() for p in model.iterdir() if p.is_file()} == before)
        return ""
    finally:
        subprocess.run(["umount", "--lazy", str(small)], capture_output=True)  # models loaded here stay mapped


# --------------------------------------------------------------------------- issue 27


def concurrent_writers(work: Path, models: dict) -> list[dict]:
    """Two processes on one output, started 0.3 s apart: one must be refused at once, the other finish right."""
    corpus = words_corpus(work / "two-corpus.jsonl", 400)  # enough work that the two runs overlap
    records = [json.loads(line) for line in corpus.read_text().splitlines()]
    pairs = write_jsonl(work / "two-pairs.jsonl", [
        {"query": " ".join(r["text"].split()[:4]), "passage_id": r["_id"], "passage": r["text"], "title": r["title"]}
        for r in records])
    subprocess.run([*GENQ, "-q", "mine-negatives", pairs, "--corpus", corpus, "--neg-retriever", "bm25", "-o",
                    work / "two-negatives.jsonl"], check=True, cwd=work)
    commands = {
        "generate": ["generate", corpus, "--generator", models["t5"], "--max-length", "8", *DEVICE, "-o",
                     "{out}.jsonl"],
        "filter": ["filter", pairs, "--corpus", corpus, "-m", models["encoder"], *DEVICE, "-o", "{out}.jsonl"],
        "mine-negatives": ["mine-negatives", pairs, "--corpus", corpus, "-m", models["encoder"], *DEVICE, "-o",
                           "{out}.jsonl"],
        "pseudo-label": ["pseudo-label", work / "two-negatives.jsonl", "--cross-encoder", models["cross_encoder"],
                         *DEVICE, "-o", "{out}.jsonl"],
        "train": ["train", pairs, "--base-model", models["encoder"], "--eval-share", "0", "--device", "cpu", "-o",
                  "{out}"],
        "index": ["index", corpus, "-m", models["encoder"], *DEVICE, "-o", "{out}"],
        "export": ["export", pairs, "--format", "beir", "-o", "{out}"],
        "adapt": ["adapt", corpus, "--tokenizer", "words", "--generator", models["t5"], "--max-length", "8",
                  "--base-model", models["encoder"], "--eval-share", "0", *DEVICE, "-o", "{out}"],
    }
    rows = []
    for name, template in commands.items():
        out = work / f"two-{name}"
        args = [str(a).replace("{out}", str(out)) for a in template]
        first = subprocess.Popen([*GENQ, *args], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        time.sleep(0.3)
        started = time.perf_counter()
        second = subprocess.run([*GENQ, *args], cwd=work, capture_output=True, text=True)
        refused_in = time.perf_counter() - started
        first_output = first.communicate()[0].decode()
        codes = sorted([first.returncode, second.returncode])
        outputs = first_output + second.stdout + second.stderr
        refused = codes[0] == 0 and codes[1] != 0 and "being written by another genq run" in outputs \
            and "PID" in outputs
        output_path = Path(args[args.index("-o") + 1])
        valid = output_path.exists()
        if output_path.suffix == ".jsonl" and valid:
            lines = output_path.read_text().splitlines()
            meta = output_path.with_name(output_path.name.removesuffix(".jsonl") + ".meta.json")
            valid = len(lines) == len(set(lines)) and (not meta.exists() or json.loads(meta.read_text())
                                                       .get("counts", {}).get("pairs", len(lines)) == len(lines))
        outcome = ("traceback" if "Traceback" in outputs else "second refused at once, first complete"
                   if refused and valid else "both ran" if codes == [0, 0]
                   else "first finished before the second began; second refused (output exists)"
                   if codes[0] == 0 and "error:" in outputs and valid else f"exits {codes}")
        rows.append({"command": name, "outcome": outcome, "refused_after_s": round(refused_in, 1),
                     "output_valid": valid})
    return rows


def search_during_rebuild(work: Path, models: dict, seconds: float = 40) -> dict:
    """`index --overwrite` alternating two corpora of different sizes, in a loop, while the CLI searches it."""
    a = words_corpus(work / "swap-a.jsonl", 40, prefix="a", marker="alphaword")
    b = words_corpus(work / "swap-b.jsonl", 70, prefix="b", marker="betaword")
    index = work / "swap-index"
    run_cli(["index", a, "-m", models["encoder"], "-o", index, *DEVICE])
    stop = threading.Event()
    rebuilds = Counter()

    def rebuild() -> None:
        corpora = [b, a]
        while not stop.is_set():
            source = corpora[rebuilds["done"] % 2]
            code = subprocess.run([*GENQ, "-q", "index", source, "-m", models["encoder"], "-o", index, "--overwrite",
                                   *DEVICE], cwd=work, capture_output=True).returncode
            rebuilds["done" if code == 0 else "failed"] += 1

    thread = threading.Thread(target=rebuild, daemon=True)
    thread.start()
    outcomes = Counter()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline or rebuilds["done"] < 2:
        for word in ("alphaword", "betaword"):
            code, output = run_cli(["search", index, word, "--mode", "bm25", "-k", "5", "--json", "--device", "cpu"])
            if code != 0:
                outcomes["failed"] += 1
                continue
            hits = json.JSONDecoder().raw_decode(output[output.index("{"):])[0]["hits"]  # after any notes
            mixed = any((hit["id"].startswith("a") and "alphaword" not in hit["text"]) or
                        (hit["id"].startswith("b") and "betaword" not in hit["text"]) or
                        word not in hit["text"] for hit in hits)
            outcomes["mixed versions" if mixed else "consistent"] += 1
        if time.monotonic() > deadline + 120:
            break
    stop.set()
    thread.join(timeout=120)
    return {"searches": sum(outcomes.values()), **outcomes, "rebuilds": rebuilds["done"],
            "rebuilds_failed": rebuilds["failed"]}


def serve_damaged(work: Path, models: dict) -> list[dict]:
    from genq.index import build_index
    from tests.test_index_damage import DAMAGE, passages

    pristine = work / "serve-pristine"
    build_index(passages(work / "serve-passages.jsonl"), str(models["encoder"]), pristine, dtype="float32",
                progress=False)
    rows = []
    for case in ("store truncated to half", "store lines rotated by one", "wrong passage count",
                 "faiss file of another dimension", "offsets random bytes"):
        directory = work / "serve-damaged"
        shutil.rmtree(directory, ignore_errors=True)
        shutil.copytree(pristine, directory)
        DAMAGE[case][0](directory)
        process = subprocess.Popen([*GENQ, "serve", directory, "--port", str(free_port()), "--device", "cpu"],
                                   cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            output = process.communicate(timeout=60)[0].decode()
            outcome = ("traceback" if "Traceback" in output else "refused to start" if process.returncode != 0
                       and "error:" in output else f"exit {process.returncode}")
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            outcome = "started serving (silently)"
        rows.append({"damage": case, "outcome": outcome})
    return rows


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`genq serve` in its own process, as users run it."""

    def __init__(self, index: Path, cwd: Path):
        self.port = free_port()
        self.process = subprocess.Popen([*GENQ, "-q", "serve", index, "--port", str(self.port), "--device", "cpu"],
                                        cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if self.get("/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("genq serve did not start")

    def get(self, path: str) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def raw(self, data: bytes) -> list[int]:
        """The statuses of every response the server sent on one connection for these bytes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            sock.sendall(data)
            received = b""
            while part := sock.recv(65536):
                received += part
        return [int(chunk.split(b" ", 2)[0]) for chunk in received.split(b"HTTP/1.1 ")[1:]
                if chunk[:3].isdigit()]

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
        return float("nan")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def oversized_requests(server: Server) -> list[dict]:
    host = f"Host: 127.0.0.1:{server.port}\r\n"
    close = "Connection: close\r\n\r\n"
    cases = {
        "GET with a 300 KB query string": (f"GET /search?q={'a' * 300_000} HTTP/1.1\r\n{host}{close}", [414]),
        "GET with a 1 MB query string": (f"GET /search?q={'a' * 1_000_000} HTTP/1.1\r\n{host}{close}", [414]),
        "GET with a 50 KB query string": (f"GET /search?q={'a' * 50_000} HTTP/1.1\r\n{host}{close}", [414]),
        "a 100 KB header": (f"GET /health HTTP/1.1\r\n{host}X-Big: {'a' * 100_000}\r\n{close}", [431]),
        "1,000 headers": (f"GET /health HTTP/1.1\r\n{host}" + "".join(f"X-{i}: a\r\n" for i in range(1000)) + close,
                          [431]),
        "Content-Length and Transfer-Encoding, a request smuggled behind": (
            f"POST /search HTTP/1.1\r\n{host}Content-Type: application/json\r\nContent-Length: 4\r\n"
            f"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /health HTTP/1.1\r\n{host}{close}", [400]),
        "k=5_0": (f"GET /search?q=chain&k=5_0 HTTP/1.1\r\n{host}{close}", [400]),
        "k in Arabic-Indic digits": (f"GET /search?q=chain&k=%D9%A5 HTTP/1.1\r\n{host}{close}", [400]),
        "q=%00": (f"GET /search?q=%00 HTTP/1.1\r\n{host}{close}", [400]),
        "invalid UTF-8 in q": (f"GET /search?q=%ff%fe%c0 HTTP/1.1\r\n{host}{close}", [400]),
        "bytes that are not HTTP": ("\x00\x01 nonsense\r\n\r\n", [400]),
        "a fine request (control)": (f"GET /search?q=chain HTTP/1.1\r\n{host}{close}", [200]),
    }
    rows = []
    for name, (request, expected) in cases.items():
        try:
            statuses = server.raw(request.encode("latin-1"))
        except OSError as exc:
            statuses = [f"{type(exc).__name__}"]
        rows.append({"request": name, "expected": expected, "got": statuses, "as_expected": statuses == expected})
    return rows


def load_test(server: Server, clients: int = 16, seconds: float = 20) -> dict:
    """Many keep-alive clients at once; every answer must be a 200, and memory must not grow."""
    rss_before = server.rss_mib()
    latencies, errors, lock = [], Counter(), threading.Lock()
    deadline = time.monotonic() + seconds
    words = "chain brake tyre gear saddle pedal spoke hub valve cable".split()

    def client(number: int) -> None:
        rng = random.Random(number)
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        while time.monotonic() < deadline:
            query = "+".join(rng.sample(words, 3))
            started = time.perf_counter()
            try:
                connection.request("GET", f"/search?q={query}&k=5")
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as exc:
                status = type(exc).__name__
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            with lock:
                latencies.append((time.perf_counter() - started) * 1000)
                if status != 200:
                    errors[str(status)] += 1
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies.sort()
    return {"clients": clients, "seconds": seconds, "requests": len(latencies), "errors": sum(errors.values()),
            "errors_by_kind": dict(errors), "p50_ms": round(statistics.median(latencies), 1),
            "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 1), "rss_mib_before": rss_before,
            "rss_mib_after": server.rss_mib()}


# --------------------------------------------------------------------------- both


def run(tmp: Path, models: dict) -> dict:
    import torch

    from benchmarks.robustness_harness import Tally
    from tests.conftest import build_tiny_encoder

    torch.manual_seed(1)  # a second encoder of the same shape: same dimension, other weights
    models = {**models, "encoder_b": build_tiny_encoder(tmp / "encoder-b", tmp / "bert-b", models["tokenizer"])}
    _perturb(models["encoder_b"])
    work = tmp / "damage"
    work.mkdir()
    tally = Tally()
    damaged_indexes(tally, work, models)
    caches_and_foreign_pairs(tally, work, models)
    odd_ids(tally, work, models)
    journal_damage(tally, work, models)
    degenerate_training(tally, work, models)
    folder_input(tally, work)
    disk_note = full_disk(tally, work, models)
    print(f"damaged files and foreign inputs: {len(tally.rows)} runs", flush=True)
    concurrency = tmp / "concurrency"
    concurrency.mkdir()
    report = {"damage": tally.rows, "full_disk_note": disk_note,
              "concurrent_writers": concurrent_writers(concurrency, models)}
    print("concurrent writers done", flush=True)
    report["search_during_rebuild"] = search_during_rebuild(concurrency, models)
    report["serve_damaged"] = serve_damaged(concurrency, models)
    index = concurrency / "served-index"
    run_cli(["index", words_corpus(concurrency / "served.jsonl", 300), "-m", models["encoder"], "-o", index, *DEVICE])
    server = Server(index, concurrency)
    try:
        report["oversized_requests"] = oversized_requests(server)
        report["load"] = load_test(server)
    finally:
        server.close()
    return report


def _perturb(model_dir: Path) -> None:
    """Nudge every weight so the two tiny encoders disagree even where they were seeded alike."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    model.save(str(model_dir))


def markdown(report: dict) -> list[str]:
    rows = report["damage"]
    outcome = Counter(row["outcome"] for row in rows)
    lines = ["## Damaged files, foreign inputs, odd ids, a full disk (issue 24)", "",
             "| runs | clear errors | skips counted | valid | tracebacks | accepted silently | damage |",
             "|---:|---:|---:|---:|---:|---:|---:|",
             f"| {len(rows)} | {outcome['clear error']} | {outcome['skip counted']} | {outcome['accepted (valid)']} | "
             f"{outcome['traceback']} | {outcome['accepted silently']} | {sum(r['damage'] for r in rows)} |", ""]
    if report.get("full_disk_note"):
        lines += [f"Full disk: {report['full_disk_note']}.", ""]
    lines += ["<details><summary>every run</summary>", "", "| case | command | expected | outcome | damage | message |",
              "|---|---|---|---|---|---|"]
    for row in rows:
        message = row["first line"].replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {row['input']} | `{row['command']}` | {row['expected']} | {row['outcome']} | "
                     f"{'yes' if row['damage'] else ''} | {message} |")
    lines += ["", "</details>", "", "## Two writers, a search during a rebuild, the server (issue 27)", "",
              "Two processes on one output, the second started 0.3 s after the first:", "",
              "| command | outcome | second refused after (s) | output valid |", "|---|---|---:|---|"]
    for row in report["concurrent_writers"]:
        lines.append(f"| {row['command']} | {row['outcome']} | {row['refused_after_s']} | "
                     f"{'yes' if row['output_valid'] else 'no'} |")
    swap = report["search_during_rebuild"]
    lines += ["", f"CLI searches (`--mode bm25`) while `index --overwrite` rebuilt the index {swap['rebuilds']} times "
              f"alternating a 40- and a 70-passage corpus: {swap['searches']} searches, "
              f"{swap.get('consistent', 0)} consistent, {swap.get('failed', 0)} failed, "
              f"{swap.get('mixed versions', 0)} mixing two versions.", "",
              "`genq serve` over a damaged index:", "", "| damage | outcome |", "|---|---|"]
    lines += [f"| {row['damage']} | {row['outcome']} |" for row in report["serve_damaged"]]
    lines += ["", "Hostile requests through a real `genq serve` socket:", "", "| request | expected | got |",
              "|---|---|---|"]
    lines += [f"| {row['request']} | {row['expected']} | {row['got']}{'' if row['as_expected'] else ' ✗'} |"
              for row in report["oversized_requests"]]
    load = report["load"]
    lines += ["", f"Load: {load['clients']} keep-alive clients for {load['seconds']:.0f} s: {load['requests']:,} "
              f"requests, {load['errors']} errors, p50 {load['p50_ms']} ms, p99 {load['p99_ms']} ms, server RSS "
              f"{load['rss_mib_before']} MiB before and {load['rss_mib_after']} MiB after."]
    return lines
