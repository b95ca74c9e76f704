"""The resumable generation run: passages in, pairs out, whatever backend samples them.

Pairs are appended batch by batch to ``OUT.partial`` and each batch is then logged in a
journal (:mod:`genq.generation.journal`); a rerun cuts what the journal does not vouch for,
skips the logged passages and refuses to mix settings, inputs or backends. ``OUT`` and
``pairs.meta.json`` (settings, input fingerprint, backend, counts and a fingerprint of OUT
itself) appear only when the run is complete.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm.auto import tqdm

from genq import __version__
from genq.batch_sizing import HalvingBatches
from genq.corpus import iter_passage_file
from genq.durations import format_duration
from genq.generation.backend import QueryBackend, device_kind
from genq.generation.family import generator_family
from genq.generation.journal import Progress, journal_check, read_journal, run_paths
from genq.generation.load import choose_backend, load_generator
from genq.generation.pairs_file import iter_pairs
from genq.generation.prompts import clean_queries
from genq.generation.settings import (
    FAMILY_DEFAULTS,
    SAMPLING_KEYS,
    SCORE_FIELD,
    GenerationConfig,
    GenerationSummary,
    QualityCheck,
)
from genq.hardware import dtype_name, resolve_device, resolve_dtype
from genq.io import (
    GenqError,
    JsonlAppender,
    describe_changes,
    describe_file,
    file_fingerprint,
    is_described_file,
    read_json,
    refuse_same_path,
    write_json_atomic,
)
from genq.locks import one_writer
from genq.quality import QualityReport

logger = logging.getLogger(__name__)


def meta_path_for(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name.removesuffix(".jsonl") + ".meta.json")


def _sampling_settings(config: GenerationConfig, family: str, dtype: str, backend: str) -> dict:
    settings = {k: getattr(config, k) for k in SAMPLING_KEYS if hasattr(config, k)}
    settings["family"] = family
    settings["dtype"] = dtype
    if family == "seq2seq":
        settings.pop("prompt_style")  # no prompt: a T5 run's settings stay those of earlier versions
    if backend != "torch":  # another backend samples other queries; a torch run's settings stay as they were
        settings["backend"] = backend
    return settings


def batches_by_length(passages: Iterator[dict], batching: HalvingBatches, generator: QueryBackend,
             window: int) -> Iterator[list[dict]]:
    """Length-sorted batches from windows of ``window`` batches: little padding, flat memory. Each batch is
    cut at ``batching.size`` as it stands then (it shrinks after an out-of-memory)."""
    buffer: list[dict] = []

    def flush() -> Iterator[list[dict]]:
        buffer.sort(key=generator.input_length, reverse=True)
        start = 0
        while start < len(buffer):
            size = batching.size
            yield buffer[start:start + size]
            start += size
        buffer.clear()

    for passage in passages:
        buffer.append(passage)
        if len(buffer) >= batching.size * window:
            yield from flush()
    yield from flush()


@one_writer("output_path", "pairs file")
def generate_pairs(
    passages_path: str | Path,
    output_path: str | Path,
    config: GenerationConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
    generator: QueryBackend | None = None,
    limit: int | None = None,
    quality: QualityCheck | None = None,
) -> GenerationSummary:
    """Generate queries for every passage of ``passages_path`` and write pairs to ``output_path``.

    Safe to interrupt at any point and to rerun: pairs go to ``OUT.partial`` batch by batch,
    each batch then logged in ``OUT.partial.progress.jsonl`` (its passages, the valid byte
    count and the counters); a rerun cuts whatever the journal does not vouch for and goes
    on. Every passage is sampled from its own seed (run seed + passage id), so a resumed run
    writes exactly what an uninterrupted one would. ``OUT`` appears, or is replaced under
    ``overwrite``, only once complete. ``limit`` caps the passages read (a trial on a sample).
    ``quality``: measure the finished pairs on a sample and record it in the meta.
    """
    config = config or GenerationConfig()
    asked = config  # what the user asked, before a resume fills what was left on auto
    passages_path, output_path = Path(passages_path), Path(output_path)
    meta_path = meta_path_for(output_path)
    partial, journal = run_paths(output_path)
    refuse_same_path([passages_path], output_path)
    refuse_same_path([passages_path], meta_path)
    started = time.perf_counter()
    summary = GenerationSummary(str(output_path))

    if generator is None:
        config = keep_recorded_choices(config, recorded_settings(output_path, journal, overwrite), output_path)
    run = identify_run(passages_path, config, generator, limit)
    config = run.config
    summary.passages_without_text = run.empty_passages
    total, source, settings = run.passages, run.source, run.settings
    previous = finished_output(output_path, run, overwrite)
    if previous is not None:
        summary.already_complete = True
        summary.passages = total
        summary.pairs_in_file = previous["counts"].get("pairs", 0)
        return summary
    judge = quality.load() if quality and quality.sample else None  # before the long part: a bad model shows now

    header, done = _resume_state(journal, partial, settings, source, overwrite, summary)
    if generator is None:
        generator = load_generator(config)
        if _backend_of(generator) != (settings.get("backend", "torch"), settings["dtype"]):
            # CTranslate2 could not take this model and torch samples instead: the run is torch's
            run = identify_run(passages_path, config, generator, limit)
            settings = run.settings
            header, done = _resume_state(journal, partial, settings, source, overwrite, summary)
    elif hasattr(generator, "use_settings"):
        generator.use_settings(config)  # one loaded earlier (a budget's probe) samples with this run's settings
    summary.family, summary.device, summary.dtype = generator.family, generator.device, _backend_of(generator)[1]
    summary.backend, summary.backend_reason = _backend_of(generator)[0], getattr(generator, "backend_reason", "")
    summary.prompt_style = getattr(generator, "prompt_style", "")
    summary.passages = total
    summary.passages_skipped_as_done = len(done.done)
    if header is None:
        partial.parent.mkdir(parents=True, exist_ok=True)
        with JsonlAppender(journal) as log:
            first = {"settings": settings, "source": source, "genq_version": __version__,
                     "asked": {key: getattr(asked, key) for key in AUTO_CHOICES}}
            first["check"] = done.last_check = journal_check(first, "")
            log.write_batch([first])
    batching = HalvingBatches(config.batch_size or generator.auto_batch_size(), generator.device, "generation")
    summary.batch_size = batching.size
    logger.info("generating in batches of %d passages (%s)", batching.size, "--gen-batch-size" if config.batch_size
                else f"auto: by free {generator.device} memory" if str(generator.device).startswith("cuda")
                else f"auto: {generator.device}")
    todo = (p for p in _limited(iter_passage_file(passages_path), limit) if p["_id"] not in done.done)
    bar = tqdm(total=total, initial=len(done.done), desc="generating", unit=" passages", disable=not progress,
               file=sys.stderr, smoothing=0.1)
    loop_started = time.perf_counter()
    with JsonlAppender(partial) as appender, JsonlAppender(journal) as log:
        for batch_number, batch in enumerate(batches_by_length(todo, batching, generator, window=32)):
            batch_started = time.perf_counter()
            emptied_before = dict(getattr(generator, "emptied", {}))
            # per-passage seeds: a batch split in halves after an out-of-memory samples exactly the same queries
            sampled = batching.run(lambda part: generator.sample(part, seed=config.seed), batch)
            records = []
            entry = {"ids": [p["_id"] for p in batch], "pairs": 0, "queries_sampled": 0, "duplicates_dropped": 0,
                     "filtered_out": 0, "passages_without_query": 0}
            for passage, queries in zip(batch, sampled):
                entry["queries_sampled"] += len(queries)
                kept, duplicates, filtered = clean_queries(queries, passage["text"], config)
                entry["duplicates_dropped"] += duplicates
                entry["filtered_out"] += filtered
                entry["passages_without_query"] += not kept
                records.extend({"query": query, "passage_id": passage["_id"], "passage": passage["text"],
                                "title": passage["title"], SCORE_FIELD: logprob} for query, logprob in kept)
            for reason, count in getattr(generator, "emptied", {}).items():
                emptied = entry[f"emptied_{reason}"] = count - emptied_before.get(reason, 0)
                setattr(summary, f"filtered_{reason}", getattr(summary, f"filtered_{reason}") + emptied)
            entry["pairs"] = appender.write_batch(records)
            entry["bytes"] = appender.position
            entry["data"] = appender.last_digest
            entry["seconds"] = round(time.perf_counter() - batch_started, 3)
            entry["check"] = journal_check(entry, done.last_check)
            log.write_batch([entry])  # only now is the batch done: a crash before this line redoes it
            done.last_check = entry["check"]
            done.add(entry)
            for key in ("queries_sampled", "duplicates_dropped", "filtered_out", "passages_without_query"):
                setattr(summary, key, getattr(summary, key) + entry[key])
            summary.pairs_written += entry["pairs"]
            summary.passages_generated += len(batch)
            bar.update(len(batch))
            seconds = time.perf_counter() - loop_started
            rate = summary.queries_sampled / max(seconds, 1e-9)
            bar.set_postfix(queries_per_s=f"{rate:.1f}" if rate >= 1 else f"{rate:.2f}", refresh=False)
            if batch_number == 0 and progress and total - len(done.done) > len(batch):
                rate = len(batch) / max(seconds, 1e-9)
                left = total - len(done.done)
                bar.write(f"first batch: {rate:.2f} passages/s, so about {format_duration(left / rate)} for the "
                          f"{left:,} passages left (--limit N tries a sample first)", file=sys.stderr)
    bar.close()
    summary.sampling_seconds = round(time.perf_counter() - loop_started, 3)
    summary.batch_size = batching.size  # smaller than chosen if an out-of-memory halved it
    # the meta describes the finished file before it takes OUT's place: a kill between the two steps is
    # seen on the next run (OUT does not match the description) and the finished partial is renamed again
    counts = {"passages": total, "passages_done": len(done.done), "pairs": done.pairs,
              "queries_sampled": done.queries_sampled, "duplicates_dropped": done.duplicates_dropped,
              "filtered_out": done.filtered_out, "passages_without_query": done.passages_without_query}
    if generator.family == "causal":  # of filtered_out: samples that held no query at all
        counts.update(filtered_runaway=done.emptied_runaway, filtered_not_a_query=done.emptied_not_a_query)
    if judge is not None and done.pairs:  # nothing kept, nothing to judge: the counts say why
        summary.quality = check_quality(partial, passages_path, quality, judge)
    write_pairs_meta(meta_path, partial, run, config, counts, round(done.wall_seconds, 2),
                     {"batch_size": batching.size, "batch_size_setting": config.batch_size or "auto",
                      "out_of_memory_halvings": batching.halvings, "device": generator.device,
                      "dtype": summary.dtype, "backend": summary.backend,
                      "backend_reason": summary.backend_reason},
                     quality=summary.quality, prompt_style=summary.prompt_style or None)
    os.replace(partial, output_path)
    journal.unlink(missing_ok=True)
    summary.pairs_in_file = done.pairs
    summary.file_counts = counts
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


def _seeding(backend: str) -> str:
    if backend == "ctranslate2":
        from genq.generation.ct2_backend import SEEDING

        return SEEDING
    return "per passage: blake2b(seed, passage id, sample number) drives each sampled token"


# Settings a user may leave on "auto", which genq resolves when a run starts (the backend by what is installed and
# converts, the precision by the hardware): a run that resumes keeps what its first start resolved, so that
# nothing that changed in between (a conversion that failed once, a package installed since) refuses the resume.
AUTO_CHOICES = ("backend", "dtype")


def recorded_settings(output_path: Path, journal: Path | None, overwrite: bool) -> dict | None:
    """The resolved settings of the interrupted run to resume (its journal's first line), or of the finished output
    (its meta), if either is there; None when starting afresh."""
    if overwrite:
        return None
    meta_path = meta_path_for(output_path)
    try:
        if journal is not None and journal.exists():
            with open(journal, "rb") as handle:
                header = json.loads(handle.readline() or b"null")
            return header.get("settings") if isinstance(header, dict) else None
        if output_path.exists() and meta_path.exists():
            return read_json(meta_path, "pairs metadata").get("parameters")
    except (OSError, ValueError, AttributeError, GenqError):
        return None  # unreadable: the run's own checks say so in their words
    return None


def keep_recorded_choices(config: GenerationConfig, recorded: dict | None, output_path: Path) -> GenerationConfig:
    """``config`` with each setting left on "auto" resolved as the recorded run resolved it (said in one line)."""
    if not isinstance(recorded, dict) or "dtype" not in recorded:
        return config
    kept = {}
    if config.backend == "auto":
        kept["backend"] = recorded.get("backend", "torch")  # a torch run records no backend
    if config.dtype == "auto":  # CTranslate2's int8_* compute types are what --dtype int8 resolves to
        kept["dtype"] = "int8" if str(recorded["dtype"]).startswith("int8") else recorded["dtype"]
    if not kept:
        return config
    logger.info("%s: keeping the choices its first start made for what is left on auto (%s)", output_path.name,
                ", ".join(f"--{key} {value}" for key, value in kept.items()))
    return replace(config, **kept)


def _backend_of(generator) -> tuple[str, str]:
    """(backend, precision) of a loaded generator, which together with the sampling knobs decide what it samples."""
    label = getattr(generator, "dtype_label", None) or dtype_name(generator.dtype)
    return getattr(generator, "backend", "torch") or "torch", label


def _resume_state(journal: Path, partial: Path, settings: dict, source: dict, overwrite: bool,
                  summary: GenerationSummary) -> tuple[dict | None, Progress]:
    """The journal's header and progress when it is this run's to resume; otherwise (under --overwrite) a clean start.

    Cuts ``partial`` to what the journal vouches for (a batch written but not logged, a torn line).
    """
    header, done = read_journal(journal, partial)
    usable = header is not None and partial.exists() and partial.stat().st_size >= done.valid_bytes
    if usable and not overwrite:
        _refuse_other_run(partial, header["settings"], header["source"], settings, source, "is an interrupted run",
                          resume=True)
    if not usable or header["settings"] != settings or not _same_source(header["source"], source):
        # no usable journal, or one for other settings (only reached with --overwrite): both files are genq's own
        partial.unlink(missing_ok=True)
        journal.unlink(missing_ok=True)
        header, done = None, Progress(set())
    if partial.exists():
        summary.torn_bytes_dropped = max(0, partial.stat().st_size - done.valid_bytes)
        with open(partial, "rb+") as handle:  # cut a batch written but not yet logged, and any torn line
            handle.truncate(done.valid_bytes)
    return header, done


@dataclass
class RunIdentity:
    """What makes two generation runs the same: the passages read and the sampling settings."""

    passages: int
    empty_passages: int
    source: dict
    settings: dict
    family: str
    config: GenerationConfig  # with the family's defaults filled in


def identify_run(passages_path: Path, config: GenerationConfig, generator: QueryBackend | None = None,
                 limit: int | None = None) -> RunIdentity:
    """Count the passages (bad input fails here, before any model loads) and settle the settings."""
    empty_lines: list[int] = []
    total = sum(1 for _ in _limited(iter_passage_file(passages_path, empty_lines=empty_lines), limit))
    source = {"path": str(passages_path), "fingerprint": file_fingerprint(passages_path), "limit": limit}
    config.validate()
    if generator is not None:
        family = generator.family
        backend, dtype = _backend_of(generator)
    else:
        family = generator_family(config)
        backend = choose_backend(config, family).name
        if backend == "ctranslate2":
            from genq.generation.ct2_backend import compute_type

            dtype = compute_type(config.dtype, device_kind(config.device), family)
        else:
            dtype = dtype_name(resolve_dtype(config.dtype, resolve_device(config.device)))
    config = config.for_family(family)
    config.validate()
    return RunIdentity(total, len(empty_lines), source, _sampling_settings(config, family, dtype, backend), family,
                       config)


def finished_output(output_path: Path, run: RunIdentity, overwrite: bool) -> dict | None:
    """The meta of a finished output of this very run (nothing to do), or None; other outputs are refused."""
    meta_path = meta_path_for(output_path)
    previous = read_json(meta_path, "pairs metadata") if meta_path.exists() else None
    finished = is_described_file((previous or {}).get("output_file"), output_path)
    if output_path.exists() and not finished and not overwrite:
        raise GenqError(f"{output_path} already exists but no {meta_path.name} describes it, so genq did not write "
                        "it (or it was changed since)\n"
                        "  fix: pass --overwrite to replace it once the new pairs are complete, or choose another "
                        "output path")
    if not finished or overwrite:
        return None
    _refuse_other_run(output_path, previous["parameters"], previous.get("source", {}), run.settings, run.source,
                      "was generated")
    return previous


def write_pairs_meta(meta_path: Path, pairs_file: Path, run: RunIdentity, config: GenerationConfig, counts: dict,
                     wall_seconds: float, execution: dict, quality: QualityReport | None = None,
                     prompt_style: str | None = None) -> None:
    """``pairs.meta.json`` for the finished ``pairs_file`` (which then takes the output's name)."""
    causal = run.family == "causal"
    write_json_atomic(meta_path, {
        "genq_version": __version__,
        "passages_file": run.source["path"],
        "source": run.source,
        "generator": {"model": config.model, "gguf_file": config.gguf_file, "family": run.family,
                      "prompt_template": config.prompt_template if causal else None,
                      "prompt_style": (prompt_style or config.prompt_style) if causal else None},
        "parameters": run.settings,
        "family_defaults": FAMILY_DEFAULTS[run.family],
        "seeding": _seeding(run.settings.get("backend", "torch")),
        "scores": "generator_logprob: mean log-probability of the query's tokens (its end included) under the "
                  "generator, before temperature and truncation",
        "quality": quality.to_dict() if quality else None,
        "execution": execution,
        "counts": counts,
        "wall_seconds": wall_seconds,
        "output_file": describe_file(pairs_file),
        "complete": True,
    })


def check_quality(pairs_file: Path, passages_path: Path, check: QualityCheck, encoder) -> QualityReport:
    """The quality report of a sample of ``pairs_file``: ``check.sample`` pairs drawn at random, ranked by
    ``encoder`` among their own passages and a random draw of the others (``check.corpus`` in all)."""
    from genq.quality import Reservoir, measure_quality
    from genq.retrieval import DenseCorpus

    started = time.perf_counter()
    pairs = Reservoir(check.sample).extend(pair for _, pair in iter_pairs(pairs_file))
    own_ids = {str(pair["passage_id"]) for pair in pairs.items}
    own: list[dict] = []

    def others() -> Iterator[dict]:
        for passage in iter_passage_file(passages_path):
            if passage["_id"] in own_ids:
                own.append(passage)
            else:
                yield passage

    drawn = Reservoir(max(check.corpus - len(own_ids), 0)).extend(others())
    report = measure_quality(pairs.items, DenseCorpus(own + drawn.items, encoder))
    report.sampled_from = pairs.seen if pairs.seen > len(pairs.items) else None
    report.seconds = round(time.perf_counter() - started, 2)
    return report


def _same_source(old: dict, new: dict) -> bool:
    """The same passages, wherever they now lie: a run directory that was moved resumes instead of starting over."""
    return old.get("fingerprint") == new["fingerprint"] and old.get("limit") == new["limit"]


def _refuse_other_run(path: Path, old_settings: dict, old_source: dict, settings: dict, source: dict, what: str,
                      resume: bool = False) -> None:
    """Refuse to mix settings or inputs in one pairs file, naming what differs by the options that set it."""
    changed = {k: (old_settings.get(k, _UNRECORDED.get(k)), v) for k, v in settings.items()
               if old_settings.get(k, _UNRECORDED.get(k)) != v}
    if old_source.get("limit") != source["limit"]:
        changed["limit"] = (old_source.get("limit"), source["limit"])
    if changed:
        raise GenqError(f"{path} {what} with other settings ({describe_changes(changed, _OPTION_NAMES)})\n"
                        f"  fix: rerun with the original settings{' to resume' if resume else ''}, pass --overwrite "
                        "to start over, or write to another output path")
    if old_source.get("fingerprint") != source["fingerprint"]:
        raise GenqError(f"{path} {what} from another version of the passages file "
                        f"({old_source.get('path')} has changed since, or another file was given)\n"
                        "  fix: pass --overwrite to generate again for the current passages, or write to another "
                        "output path")


# a setting's key -> the option that sets it, as a user types it (genq generate and genq adapt share them)
_OPTION_NAMES = {
    "model": "--generator", "gguf_file": "--gguf-file", "family": "the generator's family",
    "queries_per_passage": "--queries-per-passage", "top_p": "--top-p", "top_k": "--sample-top-k",
    "max_length": "--max-query-tokens", "max_passage_tokens": "--max-passage-tokens", "temperature": "--temperature",
    "seed": "--seed", "prefix": "--prefix", "prompt_template": "--prompt-template", "prompt_style": "--prompt-style",
    "include_title": "--no-title", "min_query_words": "--min-query-words", "max_query_words": "--max-query-words",
    "drop_copies": "--drop-copies", "dtype": "--dtype", "backend": "--backend", "limit": "--limit",
}
_UNRECORDED = {"backend": "torch"}  # a torch run records no backend: what it means when absent


def _limited(items: Iterator[dict], limit: int | None) -> Iterator[dict]:
    for index, item in enumerate(items):
        if limit is not None and index >= limit:
            return
        yield item
