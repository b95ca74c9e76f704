"""``genq adapt``: every stage in order, recorded in a manifest so a rerun does only what is left.

    RUN_DIR/
      manifest.json        one entry per finished stage: parameters, outputs, summary, time
      passages.jsonl       prepare
      pairs.jsonl          generate (+ pairs.meta.json)
      pairs.filtered.jsonl filter            (when --filter-top-k / --filter-min-score)
      pairs.negatives.jsonl mine-negatives   (when --hard-negatives N, or --gpl)
      pairs.labelled.jsonl  pseudo-label     (when --gpl: cross-encoder margins, then MarginMSE training)
      model/               train
      pairs.reranker-negatives.jsonl  reranker negatives (when --reranker without --hard-negatives: BM25's)
      reranker/            train-reranker    (when --reranker: a cross-encoder on the same pairs)
      index/               index
      eval/                evaluate          (when --eval-data)

A stage is skipped when the manifest records it finished with the same parameters, its
outputs exist and nothing before it ran again. A stage that was interrupted is continued
the way its own command continues (generation appends after the last passage, training
resumes from its last checkpoint); a stage whose parameters changed runs again from
scratch, and so does everything after it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from genq import __version__
from genq.batch_sizing import CPU_GENERATION_BATCH
from genq.corpus import DEFAULT_MAX_TOKENS, DEFAULT_OVERLAP, TokenCounter, prepare_corpus
from genq.evaluate import evaluate_systems, format_table
from genq.filter import filter_pairs
from genq.generate import GenerationConfig, QualityCheck, generate_pairs, generator_family, meta_path_for
from genq.index import IndexParams, build_index
from genq.io import GenqError, describe_error, pid_alive, read_json, terminate_as_interrupt, write_json_atomic
from genq.locks import one_writer
from genq.models import resolve_model
from genq.negatives import MiningConfig, mine_negatives
from genq.planning import (
    BUDGET_QUERIES_PER_PASSAGE,
    MAX_EPOCHS,
    SAFETY,
    Fixed,
    Plan,
    format_duration,
    measure_rates,
    plan_run,
)
from genq.pseudo_label import PseudoLabelConfig, pseudo_label
from genq.retrieval import LexicalSettings
from genq.train import RUN_RECORD, TrainConfig, train_bi_encoder
from genq.train_reranker import RerankerConfig, train_reranker
from genq.training_run import last_checkpoint

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"

# Sizing by corpus, where the user leaves it to genq. GPL (Wang et al. 2022) generates about 250k queries
# whatever the corpus (at least one per passage) and trains 140k steps of batch 32 over them: many
# epochs. genq keeps the rule and caps both ends by cost: queries per passage at 5 (each costs a
# generator call, and a passage's later samples repeat its earlier ones), epochs at 10.
TOTAL_QUERIES = 250_000
MAX_AUTO_QUERIES_PER_PASSAGE = 5
MIN_AUTO_STEPS = 1_000  # a small corpus still gets enough optimizer steps to move the model
MAX_AUTO_EPOCHS = 10
MAX_WARMUP_STEPS = 1_000  # GPL's warm-up


def queries_per_passage_for(passages: int) -> tuple[int, str]:
    """Queries per passage by corpus size, with the reason (GPL's ~250k queries in total)."""
    share = TOTAL_QUERIES // max(passages, 1)
    chosen = max(1, min(MAX_AUTO_QUERIES_PER_PASSAGE, share))
    if share > MAX_AUTO_QUERIES_PER_PASSAGE:
        why = (f"{passages:,} passages x {chosen} = {passages * chosen:,} queries (GPL aims at ~250k in total; "
               f"more than {MAX_AUTO_QUERIES_PER_PASSAGE} per passage mostly repeats itself and costs generator time)")
    elif share >= 1:
        why = f"{passages:,} passages x {chosen} = {passages * chosen:,} queries, about GPL's ~250k in total"
    else:
        why = f"{passages:,} passages: at least 1 query each (more than GPL's ~250k in total)"
    return chosen, why


def training_length_for(pairs: int, batch_size: int) -> tuple[float, float, str]:
    """(epochs, warm-up ratio, reason): at least ``MIN_AUTO_STEPS`` optimizer steps, at most ``MAX_AUTO_EPOCHS``."""
    per_epoch = max(1, -(-pairs // batch_size))
    epochs = max(1, min(MAX_AUTO_EPOCHS, -(-MIN_AUTO_STEPS // per_epoch)))
    steps = per_epoch * epochs
    warmup = round(min(0.1, MAX_WARMUP_STEPS / steps), 4)
    why = (f"{pairs:,} pairs / batch {batch_size} = {per_epoch:,} steps per epoch, so {epochs} epoch(s) = "
           f"{steps:,} steps" + (f" (at least {MIN_AUTO_STEPS:,} wanted; capped at {MAX_AUTO_EPOCHS} epochs)"
                                 if epochs > 1 else "") + f", warm-up {warmup:.0%} of them")
    return float(epochs), warmup, why


@dataclass
class CorpusOptions:
    format: str = "auto"
    id_field: str | None = None
    text_field: str | None = None
    title_field: str | None = None
    txt_mode: str = "auto"
    split: str | None = None
    tokenizer: str | None = None  # None: the generator's own tokenizer
    max_tokens: int = DEFAULT_MAX_TOKENS
    overlap: int = DEFAULT_OVERLAP
    on_error: str = "raise"
    dedup: bool = True


@dataclass
class AdaptConfig:
    corpus: CorpusOptions = field(default_factory=CorpusOptions)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    filter_top_k: int | None = None
    filter_min_score: float | None = None
    filter_keep_top_share: float | None = None
    filter_min_logprob: float | None = None
    quality: QualityCheck | None = None  # measured on a sample of the generated pairs
    auto_queries_per_passage: bool = False  # size by corpus (see queries_per_passage_for)
    auto_epochs: bool = False  # size by pairs (see training_length_for)
    auto_warmup: bool = False
    hard_negatives: int = 0
    mining: MiningConfig = field(default_factory=MiningConfig)
    gpl: bool = False  # pseudo-label with a cross-encoder and train with MarginMSE (needs negatives)
    pseudo_label: PseudoLabelConfig = field(default_factory=PseudoLabelConfig)
    training: TrainConfig = field(default_factory=TrainConfig)
    index: IndexParams = field(default_factory=IndexParams)
    lexical: LexicalSettings | None = field(default_factory=LexicalSettings)  # None: a dense-only index
    encode_batch_size: int | None = None  # None: by the GPU's free memory, 64 on a CPU
    eval_data: str | None = None
    limit: int | None = None
    dtype: str = "auto"
    time_budget: float | None = None  # seconds; size passages and steps the user left unset to fit it
    reranker: RerankerConfig | None = None  # None: no reranker stage


@dataclass
class StageResult:
    name: str
    status: str  # "skipped" | "ran" | "resumed"
    seconds: float
    summary: dict


# Settings added to a stage after runs were already recorded, with the value that behaves as before: a run
# recorded without the key matches when the key holds that value, so upgrading genq does not redo finished work.
ADDED_SETTINGS: dict[str, dict] = {"prepare": {"dedup": True},
                                   "generate": {"prompt_style": "auto", "backend": "auto"}}


def same_settings(stage: str, recorded: dict | None, params: dict) -> bool:
    if recorded is None:
        return False
    added = ADDED_SETTINGS.get(stage, {})
    current = {k: v for k, v in params.items() if not (k not in recorded and k in added and added[k] == v)}
    return _fingerprint(recorded) == _fingerprint(current)


def _fingerprint(params: dict) -> str:
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
            write_json_atomic(self.path, self.data)

    def finished(self, name: str, params: dict) -> bool:
        entry = self.data["stages"].get(name)
        return bool(entry and entry.get("status") == "done" and same_settings(name, entry.get("params"), params))

    def previous_params(self, name: str) -> dict | None:
        entry = self.data["stages"].get(name)
        return entry.get("params") if entry else None

    def record(self, name: str, params: dict, status: str, outputs: list[str], summary: dict, seconds: float) -> None:
        self.data["stages"][name] = {"status": status, "params": params, "fingerprint": _fingerprint(params),
                                     "outputs": outputs, "summary": summary, "seconds": round(seconds, 2),
                                     "finished_at": time.strftime("%FT%T%z")}
        self.data["genq_version"] = __version__
        write_json_atomic(self.path, self.data)

    def forget_from(self, names: list[str]) -> None:
        for name in names:
            self.data["stages"].pop(name, None)
        if "plan" in names:  # a new plan: the training steps re-sized under the old one no longer hold
            self.data.pop("replanned_training", None)
        write_json_atomic(self.path, self.data)


def _is_genq_process(pid: int) -> bool:
    """Whether ``pid`` runs genq (its command line names it); where /proc is missing, assume it does."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    except OSError:
        return True
    return b"genq" in command


def _jsonable(obj) -> dict:
    return json.loads(json.dumps(asdict(obj) if hasattr(obj, "__dataclass_fields__") else obj, default=str))


def check_run_dir(run_dir: Path) -> None:
    """A run directory is new, empty, or an earlier run's (it holds the manifest): genq writes into no other folder."""
    if run_dir.exists() and not run_dir.is_dir():
        raise GenqError(f"{run_dir} is a file, not a run directory\n  fix: name a new or empty folder with -o")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not (run_dir / MANIFEST).exists():
        raise GenqError(f"{run_dir} is not empty and is not a genq run directory (it has no {MANIFEST}); genq "
                        "never writes into a folder it did not make\n  fix: name a new or empty folder with -o")


@one_writer("run_dir", "run directory")
def adapt(
    corpus_path: str | Path,
    run_dir: str | Path,
    config: AdaptConfig | None = None,
    progress: bool = True,
    say: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
) -> dict:
    """Run (or continue) the whole pipeline; returns the manifest."""
    config = config or AdaptConfig()
    run_started = time.perf_counter()  # the budget counts from here
    corpus_path, run_dir = Path(corpus_path), Path(run_dir)
    if not corpus_path.exists():
        raise GenqError(f"the corpus {corpus_path} does not exist")
    check_run_dir(run_dir)
    # every model is located before the first stage runs: a typo fails now, not after an hour of generation
    if not config.generation.gguf_file:
        resolve_model(config.generation.model, what="generator")
    resolve_model(config.training.base_model, what="base model")
    if config.gpl:
        resolve_model(config.pseudo_label.cross_encoder, what="cross-encoder")
    if config.reranker:
        resolve_model(config.reranker.base_model, what="reranker base model")
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(run_dir, str(corpus_path))
    paths = {"passages": run_dir / "passages.jsonl", "pairs": run_dir / "pairs.jsonl",
             "filtered": run_dir / "pairs.filtered.jsonl", "negatives": run_dir / "pairs.negatives.jsonl",
             "labelled": run_dir / "pairs.labelled.jsonl",
             "reranker_negatives": run_dir / "pairs.reranker-negatives.jsonl", "reranker": run_dir / "reranker",
             "model": run_dir / "model", "index": run_dir / "index", "eval": run_dir / "eval",
             "cache": run_dir / ".genq-cache"}
    generation, training = config.generation, config.training
    stages: list[tuple[str, dict, Callable[[bool], tuple[dict, str]], list[Path]]] = []
    on_skip: dict[str, Callable[[], None]] = {}  # a skipped stage whose decisions later stages need again

    # -- prepare
    tokenizer = config.corpus.tokenizer or generation.gguf_file or generation.model
    prepare_params = {**_jsonable(config.corpus), "tokenizer": tokenizer, "input": str(corpus_path.resolve())}

    def run_prepare(_resume: bool) -> tuple[dict, str]:
        counter = TokenCounter(tokenizer)
        options = _jsonable(config.corpus)
        options.pop("tokenizer")
        summary = prepare_corpus(corpus_path, paths["passages"], tokenizer=counter, progress=progress, **options)
        return summary.to_dict(), "ran"

    stages.append(("prepare", prepare_params, run_prepare, [paths["passages"]]))

    # -- generate
    # the settings as they will run (the family's defaults filled in), so that leaving a default unset and
    # giving its value are the same run, and runs recorded before per-family defaults still match
    as_run = _jsonable(generation.for_family(generator_family(generation)))
    generate_params = {**as_run, "family": generation.family, "limit": config.limit}
    for execution_only in ("batch_size", "device"):
        generate_params.pop(execution_only)
    if config.auto_queries_per_passage:
        generate_params["queries_per_passage"] = "by corpus size"
    budget = config.time_budget
    if budget:
        generate_params.update(limit="by time budget" if config.limit is None else config.limit)
        if config.auto_queries_per_passage:
            generate_params["queries_per_passage"] = "by time budget"
    probe: dict = {}  # the plan stage's measurement: its loaded generator serves the generate stage

    # -- plan (with --time-budget): measure this machine on this corpus, size what the user left unset
    if budget:
        plan_params = {"budget_seconds": budget, "limit": config.limit, "filter": _filtering(config),
                       "queries_per_passage": None if config.auto_queries_per_passage else
                       generation.queries_per_passage, "epochs": None if config.auto_epochs else training.epochs,
                       "max_steps": training.max_steps if training.max_steps > 0 else None,
                       "eval_data": config.eval_data, "batch_size": training.batch_size}

        def run_plan(_resume: bool) -> tuple[dict, str]:
            plan, rates, generator = _make_plan(config, paths, run_started, say)
            probe["generator"] = generator
            _apply_plan(config, plan)
            return {"plan": plan.to_dict(), "rates": rates.to_dict()}, "ran"

        def restore_plan() -> None:
            stored = manifest.data["stages"]["plan"]["summary"]["plan"]
            _apply_plan(config, Plan.from_dict(stored))
            say(f"  the plan recorded for this budget: {Plan.from_dict(stored).describe()}")

        stages.append(("plan", plan_params, run_plan, []))
        on_skip["plan"] = restore_plan

    def run_generate(resume: bool) -> tuple[dict, str]:
        if config.auto_queries_per_passage and not budget:
            passages = _count_lines(paths["passages"])
            generation.queries_per_passage, why = queries_per_passage_for(min(passages, config.limit or passages))
            say(f"  queries per passage: {generation.queries_per_passage} ({why}; --queries-per-passage sets it)")
        summary = generate_pairs(paths["passages"], paths["pairs"], generation, overwrite=not resume,
                                 progress=progress, limit=config.limit, quality=config.quality,
                                 generator=probe.pop("generator", None))
        # the whole file's counts: after a resume this run's own are only part of it
        counts = summary.file_counts or summary.to_dict()
        runaway = f" ({counts['filtered_runaway']:,} runaway)" if counts.get("filtered_runaway") else ""
        say(f"  {summary.pairs_in_file:,} pairs; {counts['filtered_out']:,} of {counts['queries_sampled']:,} samples "
            f"dropped{runaway}, {counts['duplicates_dropped']:,} duplicates; {counts['passages_without_query']:,} "
            "passages left without a query")
        if summary.quality:
            say(f"  quality: {summary.quality.headline()}")
        return summary.to_dict(), "resumed" if summary.passages_skipped_as_done else "ran"

    stages.append(("generate", generate_params, run_generate, [paths["pairs"], meta_path_for(paths["pairs"])]))
    train_input = paths["pairs"]

    # -- filter
    if _filtering(config):
        filter_params = {"top_k": config.filter_top_k, "min_score": config.filter_min_score,
                         "keep_top_share": config.filter_keep_top_share, "min_logprob": config.filter_min_logprob,
                         "model": training.base_model}
        pairs_in = train_input

        def run_filter(_resume: bool, pairs_in=pairs_in) -> tuple[dict, str]:
            summary = filter_pairs(pairs_in, paths["passages"], training.base_model, paths["filtered"],
                                   top_k=config.filter_top_k, min_score=config.filter_min_score,
                                   keep_top_share=config.filter_keep_top_share,
                                   min_logprob=config.filter_min_logprob, cache_dir=paths["cache"],
                                   dtype=config.dtype, progress=progress)
            if summary.kept < 2:
                raise GenqError(f"the filter kept {summary.kept} of {summary.total} pairs: too few to train on\n"
                                "  fix: raise --filter-top-k, lower --filter-min-score, or generate more queries")
            say(f"  kept {summary.kept:,} of {summary.total:,} pairs; quality after: "
                f"{summary.quality_after.headline()}")
            return summary.to_dict(), "ran"

        stages.append(("filter", filter_params, run_filter, [paths["filtered"]]))
        train_input = paths["filtered"]

    # -- hard negatives
    if config.gpl and not config.hard_negatives:
        raise GenqError("--gpl grades mined negatives: --hard-negatives must be at least 1")
    if config.gpl and training.loss != "margin-mse":
        raise GenqError("--gpl trains on cross-encoder margins: use --loss margin-mse (the --gpl default)")
    if config.hard_negatives:
        config.mining.num_negatives = config.hard_negatives
        mining_params = {**_jsonable(config.mining), "model": training.base_model}
        pairs_in = train_input

        def run_mining(_resume: bool, pairs_in=pairs_in) -> tuple[dict, str]:
            summary = mine_negatives(pairs_in, paths["passages"], paths["negatives"], model=training.base_model,
                                     config=config.mining, cache_dir=paths["cache"], dtype=config.dtype,
                                     progress=progress)
            return summary.to_dict(), "ran"

        stages.append(("negatives", mining_params, run_mining, [paths["negatives"]]))
        train_input = paths["negatives"]

    pairs_for_negatives = train_input  # the pairs with mined negatives, if any, before GPL's labels
    # -- pseudo-label (GPL)
    if config.gpl:
        label_params = {**config.pseudo_label.settings(), "input": train_input.name}
        pairs_in = train_input

        def run_pseudo_label(resume: bool, pairs_in=pairs_in) -> tuple[dict, str]:
            summary = pseudo_label(pairs_in, paths["labelled"], config.pseudo_label, overwrite=not resume,
                                   progress=progress)
            return summary.to_dict(), "resumed" if summary.resumed_after else "ran"

        stages.append(("pseudo-label", label_params, run_pseudo_label, [paths["labelled"]]))
        train_input = paths["labelled"]

    # -- train
    train_params = {**_jsonable(training), "pairs": train_input.name}
    for execution_only in ("device", "save_minutes"):  # where and how often to checkpoint: not the result
        train_params.pop(execution_only)
    if config.auto_epochs and budget:
        train_params.update(epochs="by time budget", max_steps="by time budget")
    elif config.auto_epochs:
        train_params.update(epochs="by pair count")
        if config.auto_warmup:
            train_params.update(warmup_ratio="by pair count")

    def run_train(resume: bool) -> tuple[dict, str]:
        if config.auto_epochs and not budget:
            training.epochs, warmup, why = training_length_for(_count_lines(train_input), training.batch_size)
            training.warmup_ratio = warmup if config.auto_warmup else training.warmup_ratio
            say(f"  training length: {why} (--epochs sets it)")
        can_resume = resume and (paths["model"] / RUN_RECORD).exists() and last_checkpoint(paths["model"])
        if budget and "plan" in manifest.data["stages"]:
            _replan_training(manifest, train_input, training, bool(can_resume), say)
        summary = train_bi_encoder(train_input, paths["model"], training, resume=bool(can_resume),
                                   overwrite=not can_resume, progress=progress)
        for note in summary.notes:
            say(f"  note: {note}")
        if summary.verdict():
            say(f"  {summary.verdict()}")
        return summary.to_dict(), "resumed" if summary.resumed_from else "ran"

    stages.append(("train", train_params, run_train, [paths["model"] / "config.json"]))

    # -- reranker: a cross-encoder on the same pairs, with negatives of its own unless the run mined some
    if config.reranker:
        reranker_input = pairs_for_negatives if config.hard_negatives else paths["reranker_negatives"]
        if not config.hard_negatives:
            # the run's mining knobs (--neg-range-min ...), with BM25 as the retriever: no encoding, and
            # lexical neighbours are the confusions a reranker over BM25 must learn to undo
            reranker_mining = replace(config.mining, num_negatives=config.reranker.negatives, retriever="bm25")
            pairs_in = pairs_for_negatives

            def run_reranker_mining(_resume: bool, pairs_in=pairs_in) -> tuple[dict, str]:
                summary = mine_negatives(pairs_in, paths["passages"], paths["reranker_negatives"], model=None,
                                         config=reranker_mining, cache_dir=paths["cache"], dtype=config.dtype,
                                         progress=progress)
                return summary.to_dict(), "ran"

            stages.append(("reranker negatives", {**_jsonable(reranker_mining), "pairs": pairs_in.name},
                           run_reranker_mining, [paths["reranker_negatives"]]))
        reranker_params = {**_jsonable(config.reranker), "pairs": reranker_input.name}
        for execution_only in ("device", "save_steps", "save_minutes", "logging_steps", "time_limit"):
            reranker_params.pop(execution_only)

        def run_reranker(resume: bool) -> tuple[dict, str]:
            can_resume = resume and (paths["reranker"] / RUN_RECORD).exists() and last_checkpoint(paths["reranker"])
            summary = train_reranker(reranker_input, paths["reranker"], config.reranker, resume=bool(can_resume),
                                     overwrite=not can_resume, progress=progress)
            for note in summary.notes:
                say(f"  note: {note}")
            return summary.to_dict(), "resumed" if summary.resumed_from else "ran"

        stages.append(("reranker", reranker_params, run_reranker, [paths["reranker"] / RUN_RECORD]))

    # -- index
    index_params = {**_jsonable(config.index), "lexical": _jsonable(config.lexical) if config.lexical else None}

    def run_index(_resume: bool) -> tuple[dict, str]:
        summary = build_index(paths["passages"], str(paths["model"]), paths["index"], config.index,
                              batch_size=config.encode_batch_size, dtype=config.dtype, progress=progress,
                              lexical=config.lexical, overwrite=True)
        from genq.query_encoder import prepare

        prepare(str(paths["model"]))  # the run's searches then start without torch
        return summary.to_dict(), "ran"

    stages.append(("index", index_params, run_index, [paths["index"] / "index.json"]))

    # -- evaluate
    if config.eval_data:
        eval_params = {"data": str(Path(config.eval_data).resolve()), "base_model": training.base_model,
                       "hybrid": True}
        if config.reranker:
            eval_params["reranker"] = list(RERANKED_SYSTEMS)

        def run_eval(_resume: bool) -> tuple[dict, str]:
            # BM25 | base | adapted | hybrid(base) | hybrid(adapted): does adaptation help, and does fusion on top;
            # with a reranker, it reranks BM25 alone and the best first stage
            reranker = {"reranker": str(paths["reranker"]), "rerank_systems": list(RERANKED_SYSTEMS),
                        "rerank_label": "adapted reranker", "rerank_depth": RERANK_DEPTH} if config.reranker else {}
            report = evaluate_systems(config.eval_data, models=[training.base_model, str(paths["model"])], bm25=True,
                                      hybrid=True, output_dir=paths["eval"], names=["BM25", "base", "adapted"],
                                      dtype=config.dtype, progress=progress, cache_dir=paths["cache"], **reranker)
            say(format_table(report))
            say(f"  base = {training.base_model}; adapted = {paths['model']}; hybrid = fused with BM25 "
                f"({report['settings']['fusion']}, alpha {report['settings']['alpha']})")
            return {"systems": report["systems"]}, "ran"

        stages.append(("evaluate", eval_params, run_eval, [paths["eval"] / "results.json"]))

    names = [name for name, *_ in stages]
    upstream_ran = False
    results: list[StageResult] = []
    for position, (name, params, run, outputs) in enumerate(stages):
        done = manifest.finished(name, params) and all(p.exists() for p in outputs)
        if done and not upstream_ran:
            say(f"[{name}] finished earlier with the same settings: skipped")
            results.append(StageResult(name, "skipped", 0.0, manifest.data["stages"][name]["summary"]))
            if name in on_skip:
                on_skip[name]()
            continue
        previous = manifest.previous_params(name)
        # resume only an interrupted run of the very same stage settings and inputs
        resume = (not upstream_ran) and same_settings(name, previous, params)
        if not resume and name == "generate" and previous is None and paths["pairs"].exists() and not upstream_ran:
            resume = True  # interrupted before the manifest entry was written: generate checks the settings itself
        manifest.forget_from(names[position:])
        manifest.data["stages"][name] = {"status": "running", "params": params, "fingerprint": _fingerprint(params),
                                         "pid": os.getpid(), "started_at": time.strftime("%FT%T%z")}
        write_json_atomic(manifest.path, manifest.data)
        say(f"[{name}] {'continuing' if resume else 'running'} ...")
        stage_started = time.perf_counter()
        try:
            with terminate_as_interrupt():  # SIGTERM records the stage as interrupted, like Ctrl-C
                summary, status = run(resume)
        except BaseException as exc:
            # the manifest says what happened; a rerun continues the stage the way its own command would
            entry = manifest.data["stages"][name]
            entry["status"] = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            entry["error"] = describe_error(exc) if not isinstance(exc, KeyboardInterrupt) else "interrupted"
            entry["seconds"] = round(time.perf_counter() - stage_started, 2)
            entry["finished_at"] = time.strftime("%FT%T%z")
            write_json_atomic(manifest.path, manifest.data)
            raise
        seconds = time.perf_counter() - stage_started
        manifest.record(name, params, "done", [str(p) for p in outputs], summary, seconds)
        results.append(StageResult(name, status, seconds, summary))
        upstream_ran = True
        say(f"[{name}] {status} in {seconds:.1f}s")
    manifest.data["last_run"] = [asdict(r) | {"summary": None} for r in results]
    if budget and "plan" in manifest.data["stages"]:
        manifest.data["plan_vs_actual"] = _report_plan(manifest.data["stages"]["plan"]["summary"]["plan"], results,
                                                       time.perf_counter() - run_started, say,
                                                       manifest.data.get("replanned_training"))
    write_json_atomic(manifest.path, manifest.data)
    return manifest.data


def _filtering(config: AdaptConfig) -> bool:
    return bool(config.filter_top_k or config.filter_min_score is not None or config.filter_keep_top_share is not None
                or config.filter_min_logprob is not None)


MODEL_LOAD_SECONDS = 2.0  # a bi-encoder from the local cache (measured: 1-3 s for MiniLM on 2 cores)
STEP_HEADROOM = 0.85  # steps planned as if a step took this share of the probe's time; the time limit ends it
RERANKED_SYSTEMS = ("BM25", "hybrid(adapted)")  # the reranker over the plainest and over the best first stage
RERANK_DEPTH = 100  # InPars-light reranks BM25's top 100
FILTER_KEEP_PRIOR = 0.5  # the share of pairs a round-trip filter keeps, before the filter has run (measured: 35-60%)


def _make_plan(config: AdaptConfig, paths: dict, started: float, say: Callable[[str], None]):
    """Measure, then size the run to ``config.time_budget``; prints the plan before the slow stages."""
    from genq.corpus import load_passages

    generation, training = config.generation, config.training
    if config.auto_queries_per_passage:
        generation.queries_per_passage = BUDGET_QUERIES_PER_PASSAGE
    passages = load_passages(paths["passages"])
    keep = FILTER_KEEP_PRIOR if _filtering(config) else 1.0
    measured = measure_rates(passages, generation, training, work_dir=paths["cache"] / "plan",
                             encode_batch_size=config.encode_batch_size, dtype=config.dtype, filter_keep_share=keep,
                             say=say)
    rates = measured.rates
    encode = rates.encode_seconds_per_passage
    load = MODEL_LOAD_SECONDS
    fixed = {"index": len(passages) * encode + load}
    if _filtering(config):
        fixed["filter"] = len(passages) * encode + load
    if config.hard_negatives:
        fixed["negatives"] = len(passages) * encode + load
    if config.quality and config.quality.sample:
        fixed["quality check"] = min(config.quality.corpus, len(passages)) * encode + load
    if config.eval_data:
        documents = _count_lines(Path(config.eval_data) / "corpus.jsonl")
        fixed["evaluate"] = 2 * (documents * encode + load)
    plan = plan_run(config.time_budget, time.perf_counter() - started, len(passages), rates, Fixed(fixed),
                    batch_size=training.batch_size, queries_per_passage=generation.queries_per_passage,
                    limit=config.limit, epochs=None if config.auto_epochs else training.epochs,
                    max_steps=training.max_steps if training.max_steps > 0 else None,
                    min_passages=generation.batch_size or CPU_GENERATION_BATCH,
                    size_queries=config.auto_queries_per_passage)
    say(f"  rates here: {1 / max(rates.generate_seconds_per_passage, 1e-9):.2f} passages/s generating "
        f"({rates.pairs_per_passage:.1f} pairs kept per passage{', after the filter (assumed 50%)' if keep < 1 else ''}"
        f"), {rates.train_seconds_per_step:.1f} s per training step, "
        f"{1 / max(encode, 1e-9):.0f} passages/s encoding")
    say(f"  {plan.describe()}")
    for note in plan.notes:
        say(f"  note: {note}")
    if config.gpl:
        say("  note: pseudo-labelling is not costed in the plan")
    if config.reranker:
        say("  note: the reranker's training is not costed in the plan")
    return plan, rates, measured.generator


def _apply_plan(config: AdaptConfig, plan: Plan) -> None:
    """Set what the plan sized; what the user set stays as it was (the plan was made around it)."""
    if "passages" in plan.chosen:
        config.limit = plan.passages if plan.passages < plan.passages_total else None
    config.generation.queries_per_passage = plan.queries_per_passage
    if "steps" in plan.chosen:
        config.training.max_steps = plan.steps


def _replan_training(manifest: Manifest, pairs_path: Path, training: TrainConfig, resuming: bool,
                     say: Callable[[str], None]) -> None:
    """Size the training steps again from the time actually left, once the pairs exist.

    The plan was made before generation, from one probe batch and an assumed filter share;
    by now the generate and filter stages have run, their real times are in the manifest,
    and the pairs are counted. Only steps the plan chose are re-sized (never a user's
    ``--epochs``/``--max-steps``); a resumed training keeps the count it started with.

    The probe's rate is a few steps' worth, so the steps are planned with headroom
    (``STEP_HEADROOM``) and training stops at the time left whichever comes first: a
    pessimistic probe no longer leaves the budget unspent, an optimistic one no longer
    overruns it.
    """
    stored = manifest.data["stages"]["plan"]["summary"]
    plan, rates = stored["plan"], stored["rates"]
    if "steps" not in plan["chosen"]:
        return
    replanned = manifest.data.get("replanned_training")
    spent = sum(entry.get("seconds") or 0 for name, entry in manifest.data["stages"].items()
                if entry.get("status") == "done")
    after = sum(seconds for name, seconds in plan["estimates"].items() if name in ("index", "evaluate"))
    filtered = manifest.data["stages"].get("filter", {})
    if filtered.get("status") == "done" and plan["estimates"].get("filter"):
        # the filter encoded the whole corpus with the base model, as index and evaluate will: its real time
        # corrects the probe's encoding rate (one batch) for the stages still to come
        after *= min(max(filtered["seconds"] / plan["estimates"]["filter"], 0.5), 2.0)
    left = plan["budget_seconds"] * SAFETY - spent - after - rates.get("train_overhead_seconds", 0)
    training.time_limit = max(left, 1.0)
    if resuming and replanned:
        training.max_steps = replanned["steps"]
        return
    pairs = _count_lines(pairs_path)
    per_epoch = max(1, -(-pairs // training.batch_size))
    per_step = rates["train_seconds_per_step"] * STEP_HEADROOM
    steps = int(left / per_step) if per_step > 0 else per_epoch
    steps = max(min(steps, MAX_EPOCHS * per_epoch), per_epoch)
    training.max_steps = steps
    manifest.data["replanned_training"] = {"steps": steps, "planned_steps": plan["steps"], "pairs": pairs,
                                           "seconds_left": round(left, 1), "seconds_after": round(after, 1),
                                           "estimate": round(min(steps * rates["train_seconds_per_step"], left), 1)}
    write_json_atomic(manifest.path, manifest.data)
    say(f"  training re-planned: up to {steps:,} steps for the {pairs:,} pairs there are, stopping at "
        f"{format_duration(left)} (the budget left for training; the plan said {plan['steps']:,} steps)")


def _report_plan(plan: dict, results: list[StageResult], total: float, say: Callable[[str], None],
                 replanned: dict | None = None) -> dict:
    """Estimate against actual for each stage this invocation ran, printed and returned for the manifest."""
    rows = {}
    for result in results:
        estimate = plan["estimates"].get(result.name)
        if result.name == "generate" and "quality check" in plan["estimates"]:
            estimate = (estimate or 0) + plan["estimates"]["quality check"]
        if result.name == "train" and replanned:
            estimate = replanned["estimate"]
        if estimate is not None and result.status != "skipped":
            rows[result.name] = {"estimate": estimate, "actual": round(result.seconds, 1)}
    say(f"time budget {format_duration(plan['budget_seconds'])}: this run took {format_duration(total)} "
        f"(planned {format_duration(plan['estimated_total_seconds'])})")
    for name, row in rows.items():
        say(f"  {name}: est. {format_duration(row['estimate'])}, took {format_duration(row['actual'])}")
    return {"budget_seconds": plan["budget_seconds"], "planned_seconds": plan["estimated_total_seconds"],
            "actual_seconds": round(total, 1), "stages": rows}


def _count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.strip())
