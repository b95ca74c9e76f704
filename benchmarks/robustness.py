"""Robustness replay (issue 16): malformed inputs, malformed HTTP requests, and `kill -9` at random points.

Three parts, all on tiny random models built on the fly (no hub), so the numbers say how genq
*behaves*, not how fast it is:

1. **Malformed inputs.** Every bad file of the corpus below goes through the commands that
   read it (in process, through the real click CLI). Each run is classified: a clear error
   (exit 1/2, an ``error:`` line, no traceback), a counted skip (``--on-error skip``: exit 0
   and the skip in the summary), accepted as expected (BOM, gzip), a traceback, or accepted
   silently. Every file in the work folder is hashed before and after: a failed run that
   changed one is *damage*.
2. **Malformed HTTP.** Requests a hostile client sends, against the app `genq serve` runs:
   every answer must be a 4xx (or 200 where the request is fine), never a 5xx.
3. **Kills.** Real `genq` processes (generate, pseudo-label, train --resume, index --overwrite,
   adapt) are SIGKILLed after a random delay and rerun, again and again, until a run
   finishes. The final output is compared with an uninterrupted run: pairs *lost* or *doubled*
   (and counters that disagree), a rerun that fails (*stuck*), an index that does not load
   between kills.

    python benchmarks/robustness.py                  # about 5 minutes on 2 cores
    python benchmarks/robustness.py --kills-per-command 2 --skip-kills
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.robustness_harness import Tally  # noqa: E402
from tests.conftest import build_tiny_encoder, build_tiny_t5, build_word_tokenizer, save_tiny_bert  # noqa: E402

GENQ = [sys.executable, "-m", "genq"]
WORDS = ("chain brake tyre wheel gear saddle pedal frame spoke hub valve pressure cable lever oil clean adjust "
         "replace tighten loose worn squeak noise road mountain tube patch pump rim disc pad rotor bolt").split()


def sentence(rng: random.Random, n: int = 12) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


# --------------------------------------------------------------------------- 1. malformed inputs

GOOD = '{"_id": "ok", "title": "Chains", "text": "clean the chain and oil it"}'
BAD_LINES = {
    "malformed JSON": '{"_id": "x", "text": "unclosed',
    "not an object": '["a", "list"]',
    "lone surrogate": '{"_id": "x", "text": "\\ud800 broken"}',
    "nested 100k deep": '{"_id": "x", "text": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "NaN id": '{"_id": NaN, "text": "nan"}',
    "Infinity id": '{"_id": Infinity, "text": "inf"}',
    "number text": '{"_id": "x", "text": 42}',
    "list text": '{"_id": "x", "text": ["a", "b"]}',
    "dict text": '{"_id": "x", "text": {"a": 1}}',
    "dict title": '{"_id": "x", "title": {"a": 1}, "text": "fine"}',
    "list id": '{"_id": [1], "text": "fine"}',
    "bool id": '{"_id": true, "text": "fine"}',
    "missing text": '{"_id": "x", "body2": "fine"}',
    "missing id": '{"text": "fine"}',
    "duplicate id": '{"_id": "ok", "text": "again"}',
}
EMPTY_TEXTS = {  # not errors: an empty passage, dropped and counted
    "control characters only": '{"_id": "x", "text": "\\u0001\\u0002\\u0007"}',
    "whitespace only": '{"_id": "x", "text": "   \\n\\t "}',
}
BAD_PAIRS = {
    "empty query": {"query": "", "passage": "text"},
    "whitespace query": {"query": "  ", "passage": "text"},
    "number query": {"query": 5, "passage": "text"},
    "negatives a number": {"query": "q", "passage": "text", "negatives": 5},
    "negatives a string": {"query": "q", "passage": "text", "negatives": "a string"},
    "negatives of numbers": {"query": "q", "passage": "text", "negatives": [1, 2]},
    "missing passage": {"query": "q"},
}
DELIMITED = {
    "ragged.csv": ("id,text\n1,hello world,extra\n2,fine\n", "error"),
    "short-row.csv": ("id,title,text\n1,only two\n2,t,fine\n", "error"),
    "unterminated.csv": ('id,text\n1,fine\n2,"never closed\n3,swallowed\n', "error"),
    "no-header.tsv": ("1\thello world\n2\tanother\n", "error"),
    "latin1.csv": ("id,text\n1,caf\xe9 au lait\n2,fine\n".encode("latin-1"), "error"),
    "header-only.csv": ("id,text\n", "error"),
    "empty.csv": ("", "error"),
    "bom.csv": ("\ufeffid,text\n1,fine\n", "ok"),
}


def malformed_inputs(work: Path, models: dict[str, Path]) -> list[dict]:
    tally = Tally()
    existing = work / "existing-output.jsonl"  # an output from an earlier run: a failed run must leave it alone
    existing.write_text(GOOD + "\n")
    encoder, t5 = models["encoder"], models["t5"]

    def corpus_file(name: str, content: str | bytes, suffix: str = ".jsonl") -> Path:
        path = work / f"{name.replace(' ', '-')}{suffix}"
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        return path

    for name, line in {**BAD_LINES, **EMPTY_TEXTS}.items():
        source = corpus_file(name, GOOD + "\n" + line + "\n")
        empty = name in EMPTY_TEXTS
        tally.run(work, name, ["corpus", "prepare", source, "-o", existing, "--tokenizer", "words"],
                  "skip" if empty else "error")
        if not empty:
            tally.run(work, name, ["corpus", "prepare", source, "-o", work / "skipped.jsonl", "--tokenizer", "words",
                                   "--on-error", "skip"], "skip")
            (work / "skipped.jsonl").unlink(missing_ok=True)
        if empty:  # generated for the good passage only, the empty one skipped and said
            tally.run(work, name, ["generate", source, "-o", work / "fresh-pairs.jsonl", "--generator", t5,
                                   "--max-length", "4", "--dtype", "float32"], "skip")
            for leftover in work.glob("fresh-pairs*"):
                leftover.unlink()
        else:
            tally.run(work, name, ["generate", source, "-o", existing, "--generator", t5, "--max-length", "4",
                                   "--dtype", "float32"], "error")
        tally.run(work, name, ["index", source, "-m", encoder, "-o", work / "index", "--dtype", "float32"],
                  "error" if not empty else "ok")
        if (work / "index").exists():
            import shutil

            shutil.rmtree(work / "index")

    for name, (content, expect) in DELIMITED.items():
        source = corpus_file(name.rsplit(".", 1)[0], content, "." + name.rsplit(".", 1)[1])
        tally.run(work, name, ["corpus", "prepare", source, "-o", existing, "--tokenizer", "words"], expect)
        if expect == "ok":
            existing.write_text(GOOD + "\n")
        elif name not in ("empty.csv", "header-only.csv", "no-header.tsv"):
            tally.run(work, name, ["corpus", "prepare", source, "-o", work / "skipped.jsonl", "--tokenizer", "words",
                                   "--on-error", "skip"], "skip")
            (work / "skipped.jsonl").unlink(missing_ok=True)

    good_pair = {"query": "oil the chain", "passage_id": "ok", "passage": "clean the chain", "title": ""}
    for name, pair in BAD_PAIRS.items():
        pairs = corpus_file(f"pairs-{name}", json.dumps(good_pair) + "\n" + json.dumps(pair) + "\n")
        tally.run(work, name, ["train", pairs, "-o", work / "model", "--base-model", encoder], "error")
        tally.run(work, name, ["export", pairs, "--format", "flag", "-o", existing, "--overwrite"], "error")

    # files and paths
    bom = corpus_file("bom", b"\xef\xbb\xbf" + GOOD.encode() + b"\n")
    tally.run(work, "UTF-8 BOM jsonl", ["corpus", "prepare", bom, "-o", work / "bom-out.jsonl", "--tokenizer",
                                        "words"], "ok")
    packed = corpus_file("gzip-data", gzip.compress(GOOD.encode() + b"\n"))
    tally.run(work, "gzip without .gz name", ["corpus", "prepare", packed, "-o", work / "gz-out.jsonl",
                                              "--tokenizer", "words"], "ok")
    truncated = corpus_file("truncated", gzip.compress(((GOOD + "\n") * 200).encode())[:60], ".jsonl.gz")
    tally.run(work, "truncated gzip", ["corpus", "prepare", truncated, "-o", existing, "--tokenizer", "words"],
              "error")
    latin = corpus_file("latin1", GOOD.replace("oil", "\xe9").encode("latin-1"))
    tally.run(work, "latin-1 jsonl", ["corpus", "prepare", latin, "-o", existing, "--tokenizer", "words"], "error")
    loop_a, loop_b = work / "loop-a.jsonl", work / "loop-b.jsonl"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    for args in (["corpus", "prepare", loop_a, "-o", existing, "--tokenizer", "words"],
                 ["generate", loop_a, "-o", work / "x.jsonl", "--generator", t5],
                 ["export", loop_a, "--format", "flag", "-o", work / "x.jsonl"]):
        tally.run(work, "symlink loop", args, "error")
    tally.run(work, "missing file", ["corpus", "prepare", work / "nope.jsonl", "-o", existing, "--tokenizer",
                                     "words"], "error")
    tally.run(work, "a directory as the corpus file", ["generate", work, "-o", work / "x.jsonl", "--generator", t5],
              "error")
    good = corpus_file("good", GOOD + "\n")
    link = work / "link-to-good.jsonl"
    link.symlink_to(good)
    tally.run(work, "output == input", ["generate", good, "-o", good, "--overwrite", "--generator", t5], "error")
    tally.run(work, "output symlinked to input", ["corpus", "prepare", good, "-o", link, "--tokenizer", "words"],
              "error")
    blocker = corpus_file("a-plain-file", "x")
    tally.run(work, "output under a file", ["corpus", "prepare", good, "-o", blocker / "out.jsonl", "--tokenizer",
                                            "words"], "error")
    foreign = work / "foreign"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("precious")
    tally.run(work, "index -o a folder genq did not write", ["index", good, "-m", encoder, "-o", foreign,
                                                             "--overwrite"], "error")
    tally.run(work, "export hf into a folder genq did not write", ["export", existing, "--format", "hf", "-o",
                                                                   foreign, "--overwrite"], "error")
    tally.run(work, "adapt into a folder genq did not write", ["adapt", good, "-o", foreign, "--tokenizer",
                                                               "words"], "error")
    here = Path.cwd()
    os.chdir(work)
    try:
        tally.run(work, "index -o .", ["index", good, "-m", encoder, "-o", ".", "--overwrite"], "error")
    finally:
        os.chdir(here)
    tally.run(work, "bad setting with --overwrite", ["generate", good, "-o", existing, "--overwrite", "--top-p", "5",
                                                     "--generator", t5], "error")
    tally.run(work, "missing model with --overwrite", ["train", existing, "-o", work / "model", "--overwrite",
                                                       "--base-model", work / "typo"], "error")
    return tally.rows


# --------------------------------------------------------------------------- 2. malformed HTTP


def malformed_http(work: Path, models: dict[str, Path]) -> dict:
    from fastapi.testclient import TestClient

    from genq.index import build_index
    from genq.search import Searcher
    from genq.serve import create_app
    from genq.serve.app import hosts_for

    passages = work / "http-passages.jsonl"
    rng = random.Random(1)
    passages.write_text("".join(json.dumps({"_id": f"p{i}", "text": sentence(rng)}) + "\n" for i in range(50)))
    build_index(passages, str(models["encoder"]), work / "http-index", dtype="float32", progress=False)
    app = create_app(Searcher.load(work / "http-index", dtype="float32"), allowed_hosts=hosts_for("127.0.0.1"))
    client = TestClient(app, base_url="http://127.0.0.1:8000")
    json_type = {"Content-Type": "application/json"}
    requests = []
    bodies = [b"", b"{", b"null", b"[]", b'"x"', b"1", b"[" * 3000 + b"]" * 3000, b'{"query": "\\ud800"}',
              b'{"query": 5}', b'{"query": ""}', b'{"query": "a", "k": "ten"}', b'{"query": "a", "k": NaN}',
              b'{"query": "a", "k": -1}', b'{"query": "a", "k": 10000}', b'{"query": "a", "alpha": 2}',
              b'{"query": "a", "mode": "magic"}', b'{"query": "a", "fusion": "x"}', b'{"query": "a", "rerank": true}',
              b'{"queries": []}', b'{"queries": "a"}', b'{"queries": [1, 2]}', b'{"queries": ' +
              json.dumps(["q"] * 500).encode() + b"}", b'{"query": "' + b"a" * 5000 + b'"}', b"\xff\xfe\x00",
              b'{"query": "a"}' + b" " * 100_000]
    for body in bodies:
        requests.append(("POST", "/search", body, json_type))
    requests += [("POST", "/search", b'{"query": "chain"}', {"Content-Type": "text/plain"}),
                 ("POST", "/search", b'{"query": "chain"}', {}),
                 ("GET", "/search?q=", b"", {}), ("GET", "/search?q=a&k=x", b"", {}), ("GET", "/search?k=5", b"", {}),
                 ("GET", "/search?q=a&alpha=nan", b"", {}), ("GET", "/search?q=%ED%A0%80", b"", {}),
                 ("GET", "/search?q=" + "a" * 5000, b"", {}), ("GET", "/../../etc/passwd", b"", {}),
                 ("GET", "/static/../../setup.cfg", b"", {}), ("GET", "/docs", b"", {}),
                 ("GET", "/openapi.json", b"", {}), ("DELETE", "/search", b"", {}), ("PUT", "/info", b"", {}),
                 ("GET", "/health", b"", {"Host": "evil.example"}), ("HEAD", "/health", b"", {}),
                 ("GET", "/search?q=chain", b"", {})]
    statuses: Counter = Counter()
    server_errors = []
    for method, path, body, headers in requests:
        response = client.request(method, path, content=body or None, headers=headers)
        statuses[response.status_code // 100 * 100] += 1
        if response.status_code >= 500:
            server_errors.append(f"{method} {path} {body[:40]!r} -> {response.status_code}")
    return {"requests": len(requests), "by_class": {f"{k // 100}xx": v for k, v in sorted(statuses.items())},
            "server_errors": server_errors}


# --------------------------------------------------------------------------- 3. kills


def genq_process(args: list, cwd: Path, log) -> subprocess.Popen:
    return subprocess.Popen([*GENQ, "-q", *[str(a) for a in args]], cwd=cwd, stdout=log, stderr=log,
                            start_new_session=True)


def kill_until_done(name: str, args: list, cwd: Path, kills: int, delay: tuple[float, float], rng: random.Random,
                    check_between=None) -> dict:
    """Start, SIGKILL after a random delay, ``kills`` times; then run to the end. Reruns that fail are 'stuck'."""
    done_kills, stuck, between_failures, log_path = 0, 0, 0, cwd / f"{name}.log"
    with open(log_path, "ab") as log:
        while done_kills < kills:
            process = genq_process(args, cwd, log)
            wait = rng.uniform(*delay)
            try:
                code = process.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                done_kills += 1
                if check_between is not None and not check_between():
                    between_failures += 1
                continue
            if code != 0:
                stuck += 1
                break
            # finished before the kill: that is fine, but the kills must land mid-run: start over
            return {"kills": done_kills, "stuck": stuck, "between_failures": between_failures, "finished_early": True}
        process = genq_process(args, cwd, log)
        code = process.wait()
        if code != 0:
            stuck += 1
    return {"kills": done_kills, "stuck": stuck, "between_failures": between_failures, "finished_early": False,
            "final_exit": code}


def records(path: Path) -> list[str]:
    """Each line as canonical JSON (key order aside), for comparing two runs' outputs as multisets."""
    if not path.exists():
        return []
    return [json.dumps(json.loads(line), sort_keys=True) for line in path.read_text().splitlines()]


def pair_lines(path: Path) -> list[tuple[str, str]]:
    return [(r["passage_id"], r["query"]) for r in map(json.loads, path.read_text().splitlines())]


def kills(work: Path, models: dict[str, Path], per_command: int, passages_count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    corpus = work / "kill-corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "title": rng.choice(WORDS), "text": sentence(rng, 30)})
                              + "\n" for i in range(passages_count)))
    generation = ["--generator", models["t5"], "--max-length", "12", "--dtype", "float32", "--gen-batch-size", "8",
                  "--queries-per-passage", "3"]

    # generate: reference, then killed runs into another file
    subprocess.run([*GENQ, "-q", "generate", corpus, "-o", work / "reference.jsonl", *map(str, generation)],
                   check=True, cwd=work)
    reference = pair_lines(work / "reference.jsonl")
    result = kill_until_done("generate", ["generate", corpus, "-o", work / "killed.jsonl", *generation], work,
                             per_command, (4.0, 9.0), rng)
    got = pair_lines(work / "killed.jsonl") if (work / "killed.jsonl").exists() else []
    counts_ref = json.loads((work / "reference.meta.json").read_text())["counts"]
    counts_got = json.loads((work / "killed.meta.json").read_text())["counts"] if got else {}
    rows.append({"command": "generate", **result, "lost": len(set(reference) - set(got)),
                 "doubled": len(got) - len(set(got)), "extra": len(set(got) - set(reference)),
                 "counters_wrong": sum(counts_ref.get(k) != counts_got.get(k) for k in counts_ref)})

    # pseudo-label: pairs with negatives, a tiny cross-encoder
    subprocess.run([*GENQ, "-q", "mine-negatives", work / "reference.jsonl", "--corpus", corpus, "-o",
                    work / "negatives.jsonl", "--base-model", models["encoder"], "--num-negatives", "2",
                    "--neg-retriever", "bm25", "--dtype", "float32"], check=True, cwd=work)
    label = ["--cross-encoder", models["cross_encoder"], "--dtype", "float32", "--ce-batch-size", "16"]
    subprocess.run([*GENQ, "-q", "pseudo-label", work / "negatives.jsonl", "-o", work / "labelled-ref.jsonl",
                    *map(str, label)], check=True, cwd=work)
    result = kill_until_done("pseudo-label", ["pseudo-label", work / "negatives.jsonl", "-o",
                                              work / "labelled.jsonl", *label], work, per_command, (3.5, 8.0), rng)
    ref, got = (records(work / name) for name in ("labelled-ref.jsonl", "labelled.jsonl"))
    rows.append({"command": "pseudo-label", **result, "lost": len(set(ref) - set(got)),
                 "doubled": len(got) - len(set(got)), "extra": len(set(got) - set(ref)), "counters_wrong": 0})

    # train: killed runs resume from their newest complete checkpoint
    training = ["--base-model", models["encoder"], "--train-batch-size", "8", "--save-steps", "10", "--eval-share",
                "0", "--max-seq-length", "32", "--device", "cpu", "--resume"]
    result = kill_until_done("train", ["train", work / "reference.jsonl", "-o", work / "model", *training], work,
                             per_command, (6.0, 14.0), rng)
    record = json.loads((work / "model" / "genq_training.json").read_text())
    expected_steps = -(-len(reference) // 8)
    rows.append({"command": "train --resume", **result, "lost": int(record["summary"]["steps"] != expected_steps),
                 "doubled": 0, "extra": 0, "counters_wrong": int(not record.get("complete"))})

    # index --overwrite over a finished index: between kills the old index must still load
    subprocess.run([*GENQ, "-q", "index", corpus, "-m", models["encoder"], "-o", work / "index", "--dtype",
                    "float32"], check=True, cwd=work)

    def index_loads() -> bool:
        from genq.search import Searcher

        try:
            return len(Searcher.load(work / "index", dtype="float32")) == passages_count
        except Exception:
            return False

    result = kill_until_done("index", ["index", corpus, "-m", models["encoder"], "-o", work / "index", "--dtype",
                                       "float32", "--overwrite", "--encode-batch-size", "4"], work, per_command,
                             (3.5, 7.0), rng, check_between=index_loads)
    leftovers = [p.name for p in work.iterdir() if p.name.startswith(".index.") and p.name != ".index.lock"]
    rows.append({"command": "index --overwrite", **result, "lost": result["between_failures"],
                 "doubled": len(leftovers), "extra": 0, "counters_wrong": int(not index_loads())})

    # adapt: the whole pipeline, killed anywhere
    run_dir = work / "run"
    adapt = ["adapt", corpus, "-o", run_dir, "--tokenizer", "words", *generation, "--base-model", models["encoder"],
             "--train-batch-size", "8", "--max-seq-length", "32", "--eval-share", "0", "--device", "cpu"]
    result = kill_until_done("adapt", adapt, work, per_command, (4.0, 25.0), rng)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    got = pair_lines(run_dir / "pairs.jsonl")
    rows.append({"command": "adapt", **result, "lost": len(set(reference) - set(got)),
                 "doubled": len(got) - len(set(got)), "extra": len(set(got) - set(reference)),
                 "counters_wrong": sum(s.get("status") != "done" for s in manifest["stages"].values())})
    return rows


# --------------------------------------------------------------------------- report


def markdown(report: dict) -> str:
    lines = ["# Robustness replay (issues 16, 24, 27)", "",
             f"`python benchmarks/robustness.py` on {report['machine']}, "
             f"{report['date']}. Tiny random models; what is measured is behaviour, not speed."
             + (f" Parts run on another date: {report['part_dates']}." if report.get("part_dates") else ""), ""]
    if report.get("inputs"):
        inputs = report["inputs"]
        outcome = Counter(row["outcome"] for row in inputs)
        lines += ["## Malformed inputs", "",
                  "| inputs tried | clear errors | skips counted | accepted (valid input) | tracebacks | accepted "
                  "silently | damage |", "|---:|---:|---:|---:|---:|---:|---:|",
                  f"| {len(inputs)} | {outcome['clear error']} | {outcome['skip counted']} | "
                  f"{outcome['accepted (valid)']} | {outcome['traceback']} | {outcome['accepted silently']} | "
                  f"{sum(r['damage'] for r in inputs)} |", "",
                  "<details><summary>every run</summary>", "",
                  "| input | command | expected | outcome | damage | message |", "|---|---|---|---|---|---|"]
        for row in inputs:
            message = row["first line"].replace("|", "\\|")
            lines.append(f"| {row['input']} | `{row['command']}` | {row['expected']} | {row['outcome']} | "
                         f"{'yes' if row['damage'] else ''} | {message} |")
        lines += ["", "</details>", ""]
    if report.get("http"):
        http = report["http"]
        lines += ["## Malformed HTTP requests", "",
                  f"{http['requests']} requests: " + ", ".join(f"{k}: {v}" for k, v in http["by_class"].items())
                  + f"; server errors (5xx): {len(http['server_errors'])}", ""]
    if report.get("more"):
        from benchmarks import robustness_more

        lines += [*robustness_more.markdown(report["more"]), ""]
    if report.get("kills"):
        rows = report["kills"]
        lines += ["## Kills (SIGKILL after a random delay, then rerun)", "",
                  "| command | kills | lost | doubled | extra | counters wrong | stuck |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for row in rows:
            lines.append(f"| {row['command']} | {row['kills']} | {row['lost']} | {row['doubled']} | {row['extra']} | "
                         f"{row['counters_wrong']} | {row['stuck']} |")
        lines += ["", f"**Total: {sum(r['kills'] for r in rows)} kills, {sum(r['lost'] for r in rows)} lost, "
                  f"{sum(r['doubled'] for r in rows)} doubled, {sum(r['stuck'] for r in rows)} stuck.**", "",
                  "lost/doubled/extra: (passage, query) pairs (or labelled records) against an uninterrupted run; "
                  "for train, 'lost' = the resumed run did not end at the step count of an uninterrupted one and "
                  "'counters wrong' = its record is not complete; for index, 'lost' = a kill after which the old "
                  "index did not load, 'doubled' = leftover temporary folders; for adapt, 'counters wrong' = stages "
                  "not done. A command that finished before its kill landed is marked in the JSON."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills-per-command", type=int, default=4)
    parser.add_argument("--passages", type=int, default=1500, help="Corpus size for the kill runs.")
    parser.add_argument("--skip-kills", action="store_true")
    parser.add_argument("--parts", nargs="+", default=["inputs", "http", "kills", "more"],
                        choices=["inputs", "http", "kills", "more"],
                        help="more = the cases of issues 24 and 27 (damaged files, two writers, the server).")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "robustness")
    args = parser.parse_args()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="genq-robustness-") as tmp:
        tmp = Path(tmp)
        tokenizer = build_word_tokenizer(tmp / "tokenizer")
        models = {"t5": build_tiny_t5(tmp / "t5", tokenizer),
                  "encoder": build_tiny_encoder(tmp / "encoder", tmp / "bert", tokenizer),
                  "cross_encoder": save_tiny_bert(tmp / "cross-encoder", tokenizer, "BertForSequenceClassification",
                                                  num_labels=1)}
        work = tmp / "inputs"
        work.mkdir()
        report = {"date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} CPU cores"}
        if "inputs" in args.parts:
            report["inputs"] = malformed_inputs(work, models)
            print(f"malformed inputs: {len(report['inputs'])} runs", flush=True)
        if "http" in args.parts:
            report["http"] = malformed_http(tmp, models)
            print(f"malformed HTTP: {report['http']['requests']} requests", flush=True)
        if "more" in args.parts:
            from benchmarks import robustness_more

            report["more"] = robustness_more.run(tmp, {**models, "tokenizer": tokenizer})
        if "kills" in args.parts and not args.skip_kills:
            kill_dir = tmp / "kills"
            kill_dir.mkdir()
            report["kills"] = kills(kill_dir, models, args.kills_per_command, args.passages, args.seed)
        report["seconds"] = round(time.time() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.with_suffix(".json").exists():  # a run of some parts keeps the others' last figures
        earlier = json.loads(args.out.with_suffix(".json").read_text())
        report["part_dates"] = {}
        for part in ("inputs", "http", "more", "kills"):
            if part not in report and part in earlier:
                report[part] = earlier[part]
                report["part_dates"][part] = earlier.get("part_dates", {}).get(part, earlier["date"])
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
