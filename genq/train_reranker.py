"""Cross-encoder reranker training on synthetic pairs: pairs.jsonl -> a sentence-transformers CrossEncoder.

The second use of GenQ's pairs (InPars-light, Boytsov et al. 2023): a small MiniLM
cross-encoder trained on synthetic queries reranks a first-stage list, and on every
collection they tried it beat BM25 by more than bi-encoder fine-tuning did. Without hub
access no ready reranker is available at all; this one starts from any encoder on disk
(by default the base bi-encoder's transformer, with a new one-logit head), or from a hub
cross-encoder to adapt further.

A cross-encoder learns from contrast, so each query needs passages that are not its own:
the mined negatives ``genq mine-negatives`` wrote (hard ones: BM25 or dense neighbours),
topped up with passages of other pairs drawn at random when a pair has fewer. Two losses
from the library: binary cross-entropy over (query, passage, 1/0) rows (``bce``, the MS MARCO
cross-encoders' recipe), or a listwise softmax over the positive, the pair's negatives and
in-batch passages (``mnrl``).
"""

from __future__ import annotations

import functools
import logging
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from genq import __version__
from genq.hardware import resolve_device, training_bf16
from genq.io import (
    DataError,
    GenqError,
    describe_error,
    follow_umask,
    write_json_atomic,
)
from genq.locks import one_writer
from genq.models import RUN_RECORD, resolve_model
from genq.train import DEFAULT_BASE_MODEL, read_training_pairs
from genq.training_run import (
    Processes,
    check_training_output,
    plot_loss,
    shared_arguments,
    train_in_place_or_beside,
    train_resumably,
    with_length_grouped_batches,
)

logger = logging.getLogger(__name__)

RERANKER_LOSSES = ("bce", "mnrl")
RUN_KEYS = ("base_model", "loss", "negatives", "epochs", "batch_size", "lr", "warmup_ratio", "schedule", "max_length",
            "seed", "group_by_length")
OPTION_NAMES = {  # a setting -> the option that sets it, for messages
    "base_model": "--base-model", "loss": "--loss", "negatives": "--negatives-per-pair", "epochs": "--epochs",
    "batch_size": "--train-batch-size", "lr": "--lr", "warmup_ratio": "--warmup-ratio", "schedule": "--lr-schedule",
    "max_length": "--max-length", "seed": "--train-seed", "group_by_length": "--group-by-length",
}
MAX_LENGTH_CAP = 512  # query and passage together; the MiniLM family was built for 512 positions
SCHEDULES = ("constant_with_warmup", "linear", "cosine")
# The recipe, measured on the whole-Cranfield synthetic pairs (839 pairs, 3 BM25 negatives each, held out by
# passage): a new one-logit head on all-MiniLM-L6-v2 sits at the label prior (BCE 0.562) for its first ~100 steps
# at 2e-5; 1 epoch with a linearly decaying 2e-5 (105 steps) never left it (held-out MRR 0.69, BM25's top 20
# reranked to nDCG@10 0.254 against BM25's 0.362). 3 epochs at a constant 5e-5 did (final loss 0.18, held-out
# MRR 0.97, top 20 reranked 0.348).


@dataclass
class RerankerConfig:
    base_model: str = DEFAULT_BASE_MODEL  # an encoder (a new head is added) or a cross-encoder to adapt further
    loss: str = "bce"
    negatives: int = 3  # per pair: its mined negatives first, then passages of other pairs at random
    epochs: float = 3.0
    batch_size: int = 32
    lr: float = 5e-5
    warmup_ratio: float = 0.1
    schedule: str = "constant_with_warmup"  # after the warmup; see SCHEDULES and the recipe note above
    max_length: int | None = 256  # query and passage together; None: the model's own limit, at most 512
    seed: int = 42
    bf16: bool | None = None  # None: where the device does bf16 natively
    group_by_length: bool = True
    max_steps: int = -1
    time_limit: float | None = None
    save_steps: int = 500
    save_minutes: float = 10.0  # a checkpoint at least this often by the clock (0: by steps only)
    logging_steps: int = 10
    device: str | None = None

    def validate(self) -> None:
        if self.loss not in RERANKER_LOSSES:
            raise GenqError(f"unknown reranker loss {self.loss!r}; choose one of {', '.join(RERANKER_LOSSES)}")
        if self.negatives < 1:
            raise GenqError("--negatives must be at least 1: a cross-encoder learns from passages that are not "
                            "the query's own")
        if self.batch_size < 2:
            raise GenqError("--batch-size must be at least 2")
        if self.time_limit is not None and self.time_limit <= 0:
            raise GenqError("--time-limit must be positive")
        if self.save_minutes < 0:
            raise GenqError("--save-minutes must be 0 (checkpoints by --save-steps only) or more")
        if self.schedule not in SCHEDULES:
            raise GenqError(f"unknown learning-rate schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")


@dataclass
class RerankerSummary:
    output: str
    pairs: int = 0
    passages: int = 0
    rows: int = 0  # training rows: (query, passage, label) for bce, (query, positive, negatives...) for mnrl
    hard_negatives: int = 0  # mined ones the pairs carried
    random_negatives: int = 0  # drawn from other pairs to reach --negatives
    steps: int = 0
    seconds: float = 0.0
    seconds_per_step: float | None = None
    stopped_at_time_limit: bool = False
    bf16: bool = False
    max_length: int = 0
    initialised_from: str = ""  # "cross-encoder" (its head kept) or "encoder" (a new head)
    final_loss: float | None = None
    chance_loss: float | None = None  # what a reranker that tells nothing apart scores (see chance_loss())
    resumed_from: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def negatives_for(rows: list[dict], count: int, seed: int) -> tuple[list[list[str]], int, int]:
    """``count`` negatives per pair: its mined ones first, then passages of other pairs at random.

    A random passage is never the pair's own (by id or by text); with too few distinct
    passages a pair gets what there is. Returns the lists and the hard and random counts.
    """
    rng = random.Random(seed)
    pool = list({row["passage_id"]: row["passage"] for row in rows}.items())
    chosen, hard_total, random_total = [], 0, 0
    for row in rows:
        hard = [text for text in row["negatives"] if text != row["passage"]][:count]
        taken = set(hard) | {row["passage"]}
        extra: list[str] = []
        for _ in range(4 * count):
            if len(hard) + len(extra) >= count or len(pool) <= 1:
                break
            passage_id, text = pool[rng.randrange(len(pool))]
            if passage_id != row["passage_id"] and text not in taken:
                extra.append(text)
                taken.add(text)
        chosen.append(hard + extra)
        hard_total += len(hard)
        random_total += len(extra)
    return chosen, hard_total, random_total


def training_dataset(rows: list[dict], negatives: list[list[str]], loss: str):
    """The trainer's columns for ``loss``, and each row's texts (for length grouping).

    Public so that a probe of other recipes (benchmarks/reranker_recipe.py) trains on the very rows genq does."""
    from datasets import Dataset

    if loss == "bce":
        texts = []
        for row, negs in zip(rows, negatives):
            texts.append((row["query"], row["passage"], 1.0))
            texts += [(row["query"], negative, 0.0) for negative in negs]
        columns = {"query": [t[0] for t in texts], "passage": [t[1] for t in texts],
                   "label": [t[2] for t in texts]}
        return Dataset.from_dict(columns), [[q, p] for q, p, _ in texts]
    width = min(len(n) for n in negatives)  # every row needs the same columns
    columns = {"query": [r["query"] for r in rows], "positive": [r["passage"] for r in rows]}
    for n in range(width):
        columns[f"negative_{n + 1}"] = [negs[n] for negs in negatives]
    return Dataset.from_dict(columns), [[r["query"], r["passage"], *negs[:width]] for r, negs in zip(rows, negatives)]


def load_cross_encoder(location: str, name: str, max_length: int | None, device: str | None):
    """A CrossEncoder with one logit: a cross-encoder as it is, any other encoder with a new head."""
    from sentence_transformers.cross_encoder import CrossEncoder
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(location)
    except Exception as exc:
        raise GenqError(f"could not read the model {name!r}: {describe_error(exc)}") from None
    architectures = getattr(config, "architectures", None) or []
    is_cross_encoder = any(a.endswith("ForSequenceClassification") for a in architectures) and \
        getattr(config, "num_labels", 1) == 1
    try:
        model = CrossEncoder(location, num_labels=1, device=resolve_device(device),
                             **({"max_length": max_length} if max_length else {}))
    except Exception as exc:
        raise GenqError(f"could not load {name!r} as a cross-encoder: {describe_error(exc)}\n"
                        "  fix: pass an encoder (BERT, MiniLM, ...) or a cross-encoder directory or hub id") from None
    return model, "cross-encoder" if is_cross_encoder else "encoder"


@one_writer("output_dir", "reranker directory")
def train_reranker(
    pairs_path: str | Path,
    output_dir: str | Path,
    config: RerankerConfig | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> RerankerSummary:
    """Train a cross-encoder on the pairs (and their negatives) and save it to ``output_dir``."""
    config = config or RerankerConfig()
    config.validate()
    started = time.perf_counter()
    pairs_path, output = Path(pairs_path), Path(output_dir)
    location = resolve_model(config.base_model, what="reranker base model")
    notes: list[str] = []
    rows, _ = read_training_pairs(pairs_path, max_tokens=config.max_length or MAX_LENGTH_CAP,
                                  uneven_negatives_warning=False, notes=notes)  # each pair's own, then topped up
    settings = {k: getattr(config, k) for k in RUN_KEYS}
    processes = Processes()
    replacing = processes.agree(lambda: check_training_output(output, settings, resume, overwrite, OPTION_NAMES))
    passages = len({r["passage_id"] for r in rows})
    if len(rows) < 2 or passages < 2:
        raise DataError(pairs_path, f"holds {len(rows)} pair(s) over {passages} passage(s); a reranker needs at "
                        "least 2 passages to tell apart", "generate more queries, or relax the filters")

    import torch

    torch.manual_seed(config.seed)
    summary = RerankerSummary(str(output), pairs=len(rows), passages=passages, notes=notes)
    negatives, summary.hard_negatives, summary.random_negatives = negatives_for(rows, config.negatives, config.seed)
    if not summary.hard_negatives:
        summary.notes.append("the pairs carry no mined negatives: all negatives are passages of other pairs drawn "
                             "at random (`genq mine-negatives` gives harder ones)")
    model, summary.initialised_from = load_cross_encoder(location, config.base_model, config.max_length,
                                                         config.device)
    summary.max_length = model.max_length = min(config.max_length or model.max_length or MAX_LENGTH_CAP,
                                                MAX_LENGTH_CAP)
    summary.bf16 = training_bf16(config.bf16, config.device)
    fit = functools.partial(_fit, model=model, rows=rows, negatives=negatives, config=config, settings=settings,
                            pairs_path=pairs_path, summary=summary, progress=progress, started=started,
                            processes=processes)
    train_in_place_or_beside(output, replacing, fit, resume, processes)
    return summary


LEARNED_LITTLE = 0.9  # a final loss above this share of the chance loss: next to nothing was learned


def chance_loss(loss: str, negatives: int, batch_size: int) -> float:
    """The loss of a reranker that scores every passage alike, the floor of knowing nothing.

    bce: one positive per ``negatives`` negatives, so answering their share everywhere scores the
    entropy of that share (0.562 at 1:3). mnrl: a uniform softmax over the positive, the
    negatives and the other rows' passages of the batch, ln(batch x (1 + negatives)).
    """
    if loss == "bce":
        share = 1 / (1 + negatives)
        return -(share * math.log(share) + (1 - share) * math.log(1 - share))
    return math.log(max(1, batch_size) * (1 + negatives))


def learned_little_note(summary: RerankerSummary) -> str | None:
    """Said when training ended no better than chance: reranking with such a model scrambles the first stage."""
    if summary.final_loss is None or summary.chance_loss is None or \
            summary.final_loss < LEARNED_LITTLE * summary.chance_loss:
        return None
    return (f"the final loss {summary.final_loss:.3f} is no better than {summary.chance_loss:.3f}, what a reranker "
            "that tells passages apart not at all scores: it learned next to nothing and would scramble the "
            "ranking it reranks. Start from a trained cross-encoder (--base-model), give it more pairs or "
            "epochs, or do not rerank with it")


def learned_little_record(directory: str | Path) -> str | None:
    """What is wrong with the reranker at ``directory`` if its own record says it learned next to nothing, else None."""
    from genq.io import read_json

    try:
        record = read_json(Path(directory) / RUN_RECORD, "reranker record")
        summary, settings = record.get("summary") or {}, record.get("settings") or {}
        final, chance = summary.get("final_loss"), summary.get("chance_loss")
        if chance is None and settings.get("loss") in RERANKER_LOSSES:  # recorded before genq kept it
            chance = chance_loss(settings["loss"], int(settings["negatives"]), int(settings["batch_size"]))
    except (GenqError, AttributeError, KeyError, TypeError, ValueError):
        return None
    if not isinstance(final, int | float) or not isinstance(chance, int | float) or final < LEARNED_LITTLE * chance:
        return None
    return (f"learned next to nothing in training (final loss {final:.3f}, no better than the {chance:.3f} of "
            "telling nothing apart)")


def training_loss(model, loss: str, negatives: int):
    """The sentence-transformers loss behind each of RERANKER_LOSSES (public for the same probe)."""
    from sentence_transformers.cross_encoder import losses

    if loss == "bce":
        return losses.BinaryCrossEntropyLoss(model)
    # every negative of the row plus in-batch passages of the other rows, softmax over the lot
    return losses.MultipleNegativesRankingLoss(model, num_negatives=negatives)


def _fit(output: Path, *, model, rows: list[dict], negatives: list[list[str]], config: RerankerConfig,
         settings: dict, pairs_path: Path, summary: RerankerSummary, resume: bool, progress: bool, started: float,
         processes: Processes) -> None:
    from sentence_transformers.cross_encoder import CrossEncoderTrainingArguments

    if processes.main:
        output.mkdir(parents=True, exist_ok=True)
        write_json_atomic(output / RUN_RECORD, {"genq_version": __version__, "kind": "reranker",
                                                "pairs_file": str(pairs_path), "settings": settings,
                                                "complete": False})
    dataset, texts = training_dataset(rows, negatives, config.loss)
    summary.rows = len(dataset)
    batch_size = min(config.batch_size, len(dataset))
    args = CrossEncoderTrainingArguments(
        **shared_arguments(config, output, rows=len(dataset), batch_size=batch_size, bf16=summary.bf16,
                           progress=progress),
        lr_scheduler_type=config.schedule,
    )
    trainer = _trainer_class(config, texts)(model=model, args=args, train_dataset=dataset,
                                            loss=training_loss(model, config.loss, config.negatives))
    result, timer, summary.resumed_from = train_resumably(trainer, output, config, resume, processes)
    summary.steps = trainer.state.global_step
    summary.seconds_per_step = timer.steady_mean()
    summary.stopped_at_time_limit = timer.stopped
    if not processes.main:
        return
    model.save(str(output))
    history = trainer.state.log_history
    logged = [h["loss"] for h in history if "loss" in h]
    final = logged[-1] if logged else getattr(result, "training_loss", None)
    summary.final_loss = round(float(final), 4) if final is not None else None
    summary.chance_loss = round(chance_loss(config.loss, config.negatives, batch_size), 4)
    warning = learned_little_note(summary)
    if warning:
        summary.notes.append(warning)  # `genq train-reranker` and `adapt` print the notes
    summary.seconds = round(time.perf_counter() - started, 2)
    write_json_atomic(output / "training_log.json", {"log_history": history, "summary": summary.to_dict()})
    plot_loss(history, output / "loss_curve.png")
    _append_model_card(output, config, pairs_path, summary)
    follow_umask(output)
    write_json_atomic(output / RUN_RECORD, {"genq_version": __version__, "kind": "reranker",
                                            "pairs_file": str(pairs_path), "settings": settings, "complete": True,
                                            "summary": summary.to_dict()})
    shutil.rmtree(output / "checkpoints", ignore_errors=True)


def _trainer_class(config: RerankerConfig, texts: list[list[str]]):
    """The library's CrossEncoderTrainer, with length-grouped batches when asked (as in ``genq train``)."""
    from sentence_transformers.cross_encoder import CrossEncoderTrainer

    if not config.group_by_length:
        return CrossEncoderTrainer
    # bce rows repeat a query beside each of its passages, and that is fine; mnrl keeps in-batch negatives honest
    return with_length_grouped_batches(CrossEncoderTrainer, texts, no_duplicates=config.loss == "mnrl")


def _append_model_card(output: Path, config: RerankerConfig, pairs_path: Path, summary: RerankerSummary) -> None:
    card = output / "README.md"
    text = card.read_text(encoding="utf-8") if card.exists() else "# genq reranker\n"
    loss = {"bce": "BinaryCrossEntropyLoss over (query, passage, 1/0)",
            "mnrl": "MultipleNegativesRankingLoss (softmax over positive, negatives and in-batch passages)"}
    section = [
        "", "## Trained with genq", "",
        f"A reranker adapted with genq {__version__} on synthetic queries (InPars-light: Boytsov et al., 2023).", "",
        "| setting | value |", "|---|---|",
        f"| base model | `{config.base_model}` ({summary.initialised_from}) |", f"| pairs file | `{pairs_path}` |",
        f"| pairs / passages / rows | {summary.pairs:,} / {summary.passages:,} / {summary.rows:,} |",
        f"| negatives (mined / random) | {summary.hard_negatives:,} / {summary.random_negatives:,} |",
        f"| loss | {loss[config.loss]} |",
        f"| epochs / batch / lr / warmup / schedule | {config.epochs} / {config.batch_size} / {config.lr} / "
        f"{config.warmup_ratio} / {config.schedule} |",
        f"| max length | {summary.max_length} |", f"| seed | {config.seed} |",
        f"| steps / final loss | {summary.steps} / {summary.final_loss} |",
        "", "Use: `genq search INDEX --rerank " + output.name + "` or sentence-transformers' `CrossEncoder`.",
    ]
    card.write_text(text.rstrip() + "\n" + "\n".join(section) + "\n", encoding="utf-8")
