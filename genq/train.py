"""Bi-encoder training on synthetic pairs: pairs.jsonl -> a sentence-transformers model directory.

Built on ``SentenceTransformerTrainer`` (so checkpoints, logging and callbacks are the
library's) with MultipleNegativesRankingLoss: every other passage in the batch is a
negative for a query. GenQ writes several queries per passage, so a plainly shuffled batch
often holds one passage twice and MNRL would push a query away from its own passage; the
no-duplicates batch sampler is therefore on by default.

``loss="margin-mse"`` is GPL's training step instead: records labelled by ``genq
pseudo-label`` carry a cross-encoder margin per negative, and the bi-encoder learns
``scale * (sim(q, pos) - sim(q, neg))`` to match it (sentence-transformers' MarginMSELoss).
genq indexes normalised vectors (cosine), whose differences live in [-2, 2] while
cross-encoder margins span tens of logits, hence the scale (the MNRL ``--scale``, 20).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from genq import __version__
from genq.corpus import MAX_CHARS_PER_TOKEN, clip_for_model
from genq.generation.pairs_file import iter_pairs
from genq.hardware import training_bf16
from genq.io import (
    DataError,
    GenqError,
    describe_error,
    follow_umask,
    write_json_atomic,
)
from genq.locks import one_writer
from genq.models import RUN_RECORD, resolve_model
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

DEFAULT_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
LOSSES = ("mnrl", "cached-mnrl", "margin-mse")
# Settings that define a run: resuming into a directory with other values is refused.
RUN_KEYS = ("base_model", "loss", "epochs", "batch_size", "lr", "warmup_ratio", "max_seq_length", "seed", "scale",
            "similarity", "eval_share", "no_duplicates", "mini_batch_size", "group_by_length")
OPTION_NAMES = {  # a setting -> the option that sets it, for messages
    "base_model": "--base-model", "loss": "--loss", "epochs": "--epochs", "batch_size": "--train-batch-size",
    "lr": "--lr", "warmup_ratio": "--warmup-ratio", "max_seq_length": "--max-seq-length", "seed": "--train-seed",
    "scale": "--scale", "similarity": "--similarity", "eval_share": "--eval-share",
    "no_duplicates": "--allow-duplicates-in-batch (off: no duplicates)", "mini_batch_size": "--mini-batch-size",
    "group_by_length": "--group-by-length",
}
CLIP_TOKENS_UNTIL_LOADED = 512  # texts are clipped before the model (and its own length limit) is known


@dataclass
class TrainConfig:
    base_model: str = DEFAULT_BASE_MODEL
    loss: str = "mnrl"
    mini_batch_size: int = 32
    scale: float = 20.0
    similarity: str = "cos"
    epochs: float = 1.0
    batch_size: int = 64
    lr: float = 2e-5
    warmup_ratio: float = 0.1
    max_seq_length: int | None = None  # None: the base model's own (256 for all-MiniLM-L6-v2)
    seed: int = 42
    bf16: bool | None = None  # None: where the device does bf16 natively (see hardware.training_bf16)
    eval_share: float = 0.01
    no_duplicates: bool = True
    group_by_length: bool = True  # batches of similar passage length: less padding, same no-duplicates rule
    max_steps: int = -1
    time_limit: float | None = None  # seconds of optimizer steps; training stops at the step that would pass it
    save_steps: int = 500
    save_minutes: float = 10.0  # a checkpoint at least this often by the clock (0: by steps only)
    logging_steps: int = 10
    device: str | None = None

    def validate(self) -> None:
        if self.loss not in LOSSES:
            raise GenqError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        if self.similarity not in ("cos", "dot"):
            raise GenqError("--similarity must be cos or dot")
        if not 0 <= self.eval_share < 0.5:
            raise GenqError("--eval-share must be in [0, 0.5)")
        if self.batch_size < 2:
            raise GenqError("--batch-size must be at least 2: in-batch negatives need company")
        if self.time_limit is not None and self.time_limit <= 0:
            raise GenqError("--time-limit must be positive")
        if self.save_minutes < 0:
            raise GenqError("--save-minutes must be 0 (checkpoints by --save-steps only) or more")


@dataclass
class TrainSummary:
    output: str
    pairs: int = 0
    train_pairs: int = 0
    eval_pairs: int = 0
    passages: int = 0
    negatives_per_pair: int = 0
    duplicates_a_plain_batch_would_hold: int = 0
    steps: int = 0
    seconds: float = 0.0
    seconds_per_step: float | None = None  # mean over the run's steps (warm-up steps left out): predicts totals
    stopped_at_time_limit: bool = False  # fewer steps than planned: the next one would have passed --time-limit
    bf16: bool = False
    max_seq_length: int = 0
    padding_share: float | None = None  # share of the passage tokens in a batch that are padding
    final_loss: float | None = None
    eval_metrics: dict = field(default_factory=dict)
    base_eval_metrics: dict = field(default_factory=dict)  # the same held-out queries, before training

    def verdict(self) -> str | None:
        """Base against adapted on held-out synthetic queries: the label-free sign of whether training helped."""
        def ndcg(metrics: dict) -> float | None:
            return next((v for k, v in metrics.items() if k.endswith("ndcg@10")), None)

        before, after = ndcg(self.base_eval_metrics), ndcg(self.eval_metrics)
        if before is None or after is None:
            return None
        outlook = ("expected to search this corpus better than the base model" if after > before + 0.005 else
                   "not measurably better than the base model on them: more pairs or steps, or a stronger "
                   "generator, would help")
        return (f"held-out synthetic queries ({self.eval_pairs}): nDCG@10 base {before:.3f} -> adapted {after:.3f} "
                f"({after - before:+.3f}): {outlook}")
    resumed_from: str | None = None
    notes: list[str] = field(default_factory=list)  # what the user should know about this run (said by the CLI)

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- data


def _negative_text(negative) -> str | None:
    if isinstance(negative, dict):
        return negative.get("text") if isinstance(negative.get("text"), str) else None
    return negative if isinstance(negative, str) else None


def read_training_pairs(path: str | Path, need_margins: bool = False, max_tokens: int | None = None,
                        uneven_negatives_warning: bool = True, notes: list[str] | None = None
                        ) -> tuple[list[dict], int]:
    """Validated pairs as ``{"query", "passage", "passage_id", "negatives": [str], "margins": [float]}``
    plus negatives per pair.

    Pairs with negatives train on (query, positive, negative_1..n) tuples; n is the smallest
    count present, since every row needs the same columns. ``need_margins`` (MarginMSE)
    requires every negative to carry the cross-encoder margin ``genq pseudo-label`` writes.
    ``max_tokens`` clips texts far longer than the model reads before any tokenizer sees them.
    Degenerate data is said in ``notes``: identical pairs are kept once (a copy teaches nothing
    and, in one batch, would be its own in-batch negative), negatives with no text are dropped.
    """
    rows = []
    clipped = repeated = empty_negatives = 0
    seen: set[bytes] = set()

    def clip(text: str) -> str:
        nonlocal clipped
        if max_tokens is None:
            return text
        short = clip_for_model(text, max_tokens)
        clipped += short is not text
        return short

    for line, record in iter_pairs(path):
        negatives = record.get("negatives")
        if negatives is None and record.get("negative") is not None:
            negatives = [record["negative"]]
        texts, margins = [], []
        for negative in negatives or []:
            text = _negative_text(negative)
            if text is None:
                raise DataError(path, "a negative is neither a string nor {\"text\": ...}",
                                "write negatives as [{\"passage_id\", \"title\", \"text\"}, ...]", line)
            if not text.strip():
                empty_negatives += 1
                continue
            texts.append(text)
            if need_margins:
                margin = negative.get("margin") if isinstance(negative, dict) else None
                if isinstance(margin, bool) or not isinstance(margin, int | float) or not math.isfinite(margin):
                    raise DataError(path, "a negative has no cross-encoder margin (margin-mse learns from it)",
                                    "label the pairs with `genq pseudo-label PAIRS -o LABELLED` and train on its "
                                    "output", line)
                margins.append(float(margin))
        if need_margins and not texts:
            raise DataError(path, "margin-mse needs negatives with cross-encoder margins; this pair has none",
                            "run `genq mine-negatives`, then `genq pseudo-label`, and train on that output", line)
        key = hashlib.blake2b(json.dumps([record["query"], record["passage"], texts]).encode(),
                              digest_size=16).digest()
        if key in seen:
            repeated += 1
            continue
        seen.add(key)
        rows.append({"query": clip(record["query"]), "passage": clip(record["passage"]),
                     "passage_id": str(record.get("passage_id", record["passage"][:200])),
                     "negatives": [clip(t) for t in texts], "margins": margins})
    if clipped:
        logger.warning("%s: %d text(s) are far longer than the model reads (%d tokens): cut to %d characters "
                       "before tokenizing", path, clipped, max_tokens, max_tokens * MAX_CHARS_PER_TOKEN)
    said = notes if notes is not None else []
    if repeated:
        said.append(f"{repeated:,} pair(s) repeat another exactly (query, passage and negatives): each is trained on "
                    "once")
    if empty_negatives:
        said.append(f"{empty_negatives:,} negative(s) have no text: dropped")
    counts = {len(r["negatives"]) for r in rows}
    negatives_per_pair = min(counts) if counts else 0
    if uneven_negatives_warning and negatives_per_pair == 0 and max(counts, default=0) > 0:
        logger.warning("some pairs have no negatives; training on (query, passage) pairs only")
    return rows, negatives_per_pair


def split_by_passage(rows: list[dict], share: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Hold out whole passages (not single pairs) so no evaluation passage was seen in training."""
    if share <= 0:
        return rows, []
    threshold = int(share * 2**32)

    def held_out(passage_id: str) -> bool:
        digest = hashlib.blake2b(f"{seed}:{passage_id}".encode(), digest_size=4).digest()
        return int.from_bytes(digest, "big") < threshold

    train, evaluation = [], []
    for row in rows:
        (evaluation if held_out(row["passage_id"]) else train).append(row)
    if not evaluation or not train:
        return rows, []
    return train, evaluation


def in_batch_duplicates(passage_ids: list[str], batch_size: int, seed: int) -> int:
    """How many pairs a plainly shuffled batching would put beside another pair of the same passage."""
    order = list(range(len(passage_ids)))
    random.Random(seed).shuffle(order)
    duplicates = 0
    for start in range(0, len(order), batch_size):
        seen: set[str] = set()
        for index in order[start:start + batch_size]:
            if passage_ids[index] in seen:
                duplicates += 1
            seen.add(passage_ids[index])
    return duplicates


def _to_dataset(rows: list[dict], negatives_per_pair: int, with_margins: bool = False):
    from datasets import Dataset

    columns = {"anchor": [r["query"] for r in rows], "positive": [r["passage"] for r in rows]}
    for n in range(negatives_per_pair):
        columns[f"negative_{n + 1}"] = [r["negatives"][n] for r in rows]
    if with_margins:  # the trainer hands a "label" column to the loss: one margin per negative
        columns["label"] = [r["margins"][:negatives_per_pair] for r in rows]
    return Dataset.from_dict(columns)


def _ir_evaluator(train: list[dict], evaluation: list[dict], max_corpus: int = 20000):
    """Held-out queries searched over held-out passages plus training passages as distractors."""
    from sentence_transformers.evaluation import InformationRetrievalEvaluator

    corpus: dict[str, str] = {}
    for row in evaluation:
        corpus[row["passage_id"]] = row["passage"]
    for row in train:
        if len(corpus) >= max_corpus:
            break
        corpus.setdefault(row["passage_id"], row["passage"])
    queries, relevant = {}, {}
    for number, row in enumerate(evaluation):
        queries[f"q{number}"] = row["query"]
        relevant[f"q{number}"] = {row["passage_id"]}
    return InformationRetrievalEvaluator(queries, corpus, relevant, name="heldout", show_progress_bar=False,
                                         mrr_at_k=[10], ndcg_at_k=[10], accuracy_at_k=[1, 10],
                                         precision_recall_at_k=[10], map_at_k=[100])


# --------------------------------------------------------------------------- the run


@one_writer("output_dir", "model directory")
def train_bi_encoder(
    pairs_path: str | Path,
    output_dir: str | Path,
    config: TrainConfig | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> TrainSummary:
    """Fine-tune ``config.base_model`` on the pairs and save a sentence-transformers model to ``output_dir``."""
    config = config or TrainConfig()
    config.validate()
    started = time.perf_counter()
    pairs_path, output = Path(pairs_path), Path(output_dir)
    location = resolve_model(config.base_model, what="base model")  # a wrong name fails before anything is touched
    margin_mse = config.loss == "margin-mse"
    notes: list[str] = []
    rows, negatives_per_pair = read_training_pairs(pairs_path, need_margins=margin_mse,
                                                   max_tokens=config.max_seq_length or CLIP_TOKENS_UNTIL_LOADED,
                                                   notes=notes)
    settings = {k: getattr(config, k) for k in RUN_KEYS}
    processes = Processes()
    replacing = processes.agree(lambda: check_training_output(output, settings, resume, overwrite, OPTION_NAMES))
    if len(rows) < 2:
        repeats = "".join(f" ({note})" for note in notes if "repeat" in note)
        raise DataError(pairs_path, f"holds {len(rows)} distinct pair(s){repeats}; training needs at least 2",
                        "generate more queries, or relax the filters")

    import torch
    from sentence_transformers import SentenceTransformer, losses
    from sentence_transformers import util as st_util

    torch.manual_seed(config.seed)
    train_rows, eval_rows = split_by_passage(rows, config.eval_share, config.seed)
    summary = TrainSummary(str(output), pairs=len(rows), train_pairs=len(train_rows), eval_pairs=len(eval_rows),
                           passages=len({r["passage_id"] for r in rows}), negatives_per_pair=negatives_per_pair,
                           notes=notes)
    summary.duplicates_a_plain_batch_would_hold = in_batch_duplicates(
        [r["passage_id"] for r in train_rows], config.batch_size, config.seed)
    planned = config.max_steps if config.max_steps > 0 else \
        math.ceil(len(train_rows) / min(config.batch_size, len(train_rows))) * config.epochs
    if planned < FEW_STEPS or len(train_rows) < FEW_PAIRS:
        summary.notes.append(
            f"only {len(train_rows):,} pairs and {math.ceil(planned)} optimizer step(s): too little to move the model "
            "reliably (it may end up no better than the base model); more helps: generate for more passages or "
            "more queries per passage, loosen the filter, or train more epochs")

    try:
        model = SentenceTransformer(location, device=config.device)
    except Exception as exc:
        raise GenqError(f"could not load the base model {config.base_model!r}: "
                        f"{describe_error(exc)}") from None
    summary.max_seq_length = model.max_seq_length = config.max_seq_length or model.max_seq_length or \
        CLIP_TOKENS_UNTIL_LOADED
    summary.bf16 = training_bf16(config.bf16, config.device)
    similarity = st_util.cos_sim if config.similarity == "cos" else st_util.dot_score
    # under torchrun each process holds its share of the batch: gather the embeddings so that every query
    # still meets the whole global batch as in-batch negatives, as in a single-process run of that batch size
    gather = {"gather_across_devices": True} if processes.world > 1 else {}
    if config.loss == "mnrl":
        loss = losses.MultipleNegativesRankingLoss(model, scale=config.scale, similarity_fct=similarity, **gather)
    elif margin_mse:
        pairwise = st_util.pairwise_cos_sim if config.similarity == "cos" else st_util.pairwise_dot_score
        loss = losses.MarginMSELoss(model, similarity_fct=ScaledSimilarity(pairwise, config.scale))
    else:
        loss = losses.CachedMultipleNegativesRankingLoss(model, scale=config.scale, similarity_fct=similarity,
                                                         mini_batch_size=config.mini_batch_size,
                                                         show_progress_bar=False, **gather)
    if 0 < len(eval_rows) < MIN_HELDOUT_PAIRS:
        logger.info("only %d held-out pairs: too few for a meaningful metric; they train instead", len(eval_rows))
        train_rows, eval_rows = rows, []
        summary.train_pairs, summary.eval_pairs = len(rows), 0
    evaluator = _ir_evaluator(train_rows, eval_rows) if eval_rows else None
    if evaluator is not None and processes.main and len(evaluator.corpus) <= BASE_EVAL_MAX_PASSAGES:
        # the base model on the same held-out queries: what the adapted model's figure is worth
        summary.base_eval_metrics = {k: round(float(v), 4) for k, v in evaluator(model).items()}
    batch_size = min(config.batch_size, len(train_rows))
    fit = functools.partial(_fit, model=model, loss=loss, evaluator=evaluator, train_rows=train_rows,
                            batch_size=batch_size, negatives_per_pair=negatives_per_pair, margin_mse=margin_mse,
                            config=config, settings=settings, pairs_path=pairs_path, summary=summary,
                            progress=progress, started=started, processes=processes)
    train_in_place_or_beside(output, replacing, fit, resume, processes)
    return summary


def _fit(output: Path, *, model, loss, evaluator, train_rows: list[dict], batch_size: int, negatives_per_pair: int,
         margin_mse: bool, config: TrainConfig, settings: dict, pairs_path: Path, summary: TrainSummary,
         resume: bool, progress: bool, started: float, processes: Processes) -> None:
    """Train into ``output`` (checkpoints under it), save the model, its log, curve and card, then mark it done.

    Every process trains; only the main one writes genq's files (the trainer saves its
    checkpoints from the main process too).
    """
    from sentence_transformers import SentenceTransformerTrainingArguments

    if processes.main:
        output.mkdir(parents=True, exist_ok=True)
        write_json_atomic(output / RUN_RECORD, {"genq_version": __version__, "pairs_file": str(pairs_path),
                                                "settings": settings, "precision": _precision(summary),
                                                "complete": False})
    args = SentenceTransformerTrainingArguments(
        **shared_arguments(config, output, rows=len(train_rows), batch_size=batch_size, bf16=summary.bf16,
                           progress=progress),
        per_device_eval_batch_size=batch_size,
        batch_sampler=_library_batch_sampler(config),
        eval_strategy="steps" if evaluator else "no",
        eval_steps=config.save_steps if evaluator else None,
    )
    trainer_class = _trainer_class(config, train_rows, negatives_per_pair)
    trainer = trainer_class(model=model, args=args, loss=loss, evaluator=evaluator,
                            train_dataset=_to_dataset(train_rows, negatives_per_pair, margin_mse))
    output_of_training, timer, summary.resumed_from = train_resumably(trainer, output, config, resume, processes)
    summary.steps = trainer.state.global_step
    summary.seconds_per_step = timer.steady_mean()
    summary.stopped_at_time_limit = timer.stopped
    if timer.stopped and processes.main:
        logger.warning("stopped after step %d of %d: the next step would have passed the time limit (%s)",
                       summary.steps, trainer.state.max_steps, f"{config.time_limit:.0f}s")
    if not processes.main:
        return
    summary.padding_share = padding_share(model.tokenizer, [r["passage"] for r in train_rows], batch_size,
                                          summary.max_seq_length, config.group_by_length, config.seed)
    if evaluator is not None:
        summary.eval_metrics = {k: round(float(v), 4) for k, v in evaluator(model).items()}
    model.save(str(output))
    history = trainer.state.log_history
    losses_logged = [h["loss"] for h in history if "loss" in h]
    final = losses_logged[-1] if losses_logged else getattr(output_of_training, "training_loss", None)
    summary.final_loss = round(float(final), 4) if final is not None else None
    summary.seconds = round(time.perf_counter() - started, 2)
    write_json_atomic(output / "training_log.json", {"log_history": history, "summary": summary.to_dict()})
    plot_loss(history, output / "loss_curve.png")
    _append_model_card(output, config, pairs_path, summary)
    follow_umask(output)
    write_json_atomic(output / RUN_RECORD, {"genq_version": __version__, "pairs_file": str(pairs_path),
                                            "settings": settings, "precision": _precision(summary), "complete": True,
                                            "summary": summary.to_dict()})
    # checkpoints (optimizer state included: several times the model's size) serve only a resume; the run is done
    shutil.rmtree(output / "checkpoints", ignore_errors=True)


MIN_HELDOUT_PAIRS = 20  # fewer held-out queries than this make an nDCG that says nothing
FEW_STEPS, FEW_PAIRS = 20, 100  # below either, fine-tuning barely moves a pretrained bi-encoder
BASE_EVAL_MAX_PASSAGES = 5000  # the base model is scored on the held-out queries too where that is cheap


def _precision(summary: TrainSummary) -> str:
    return "bf16 autocast" if summary.bf16 else "float32"


def _library_batch_sampler(config: TrainConfig):
    """The library's sampler named in the training arguments (saved with checkpoints, so a plain name)."""
    try:
        from sentence_transformers.base.sampler import BatchSamplers
    except ImportError:  # sentence-transformers 3.x - 5.x
        from sentence_transformers.training_args import BatchSamplers

    return BatchSamplers.NO_DUPLICATES if config.no_duplicates else BatchSamplers.BATCH_SAMPLER


def _trainer_class(config: TrainConfig, rows: list[dict], negatives_per_pair: int):
    """The sentence-transformers trainer, with genq's length-grouped batches when asked."""
    from sentence_transformers import SentenceTransformerTrainer

    if not config.group_by_length:
        return SentenceTransformerTrainer
    return with_length_grouped_batches(SentenceTransformerTrainer,
                                       [[r["query"], r["passage"], *r["negatives"][:negatives_per_pair]] for r in rows],
                                       config.no_duplicates)


def padding_share(tokenizer, passages: list[str], batch_size: int, max_length: int, grouped: bool,
                  seed: int) -> float | None:
    """Share of passage-column tokens that are padding under this batching (the cost grouping removes)."""
    if not passages:
        return None
    from genq.batching import batches_by_length

    lengths = [len(ids) for ids in tokenizer(passages, truncation=True, max_length=max_length,
                                             return_attention_mask=False)["input_ids"]]
    order = list(range(len(passages)))
    if grouped:  # as the sampler groups them: by characters, no duplicates
        batches = batches_by_length([[p] for p in passages], [len(p) for p in passages], batch_size,
                                    random.Random(seed))
    else:
        random.Random(seed).shuffle(order)
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    padded = sum(max(lengths[i] for i in batch) * len(batch) for batch in batches)
    return round(1 - sum(lengths) / padded, 4) if padded else None


class ScaledSimilarity:
    """``scale * similarity(a, b)``: puts cosine differences on the scale of cross-encoder margins."""

    def __init__(self, similarity, scale: float):
        self.similarity, self.scale = similarity, scale
        self.__name__ = f"scaled_{getattr(similarity, '__name__', 'similarity')}"

    def __call__(self, a, b):
        return self.scale * self.similarity(a, b)


def _append_model_card(output: Path, config: TrainConfig, pairs_path: Path, summary: TrainSummary) -> None:
    card = output / "README.md"
    text = card.read_text(encoding="utf-8") if card.exists() else "# genq model\n"
    loss_name = {"mnrl": "MultipleNegativesRankingLoss", "cached-mnrl": "CachedMultipleNegativesRankingLoss",
                 "margin-mse": "MarginMSELoss on cross-encoder margins (GPL)"}[config.loss]
    section = [
        "", "## Trained with genq", "",
        f"Adapted with genq {__version__} on synthetic queries (GenQ: Thakur et al., BEIR 2021).", "",
        "| setting | value |", "|---|---|",
        f"| base model | `{config.base_model}` |", f"| pairs file | `{pairs_path}` |",
        f"| pairs (train / held out) | {summary.train_pairs:,} / {summary.eval_pairs:,} |",
        f"| passages | {summary.passages:,} |", f"| negatives per pair | {summary.negatives_per_pair} |",
        f"| loss | {loss_name} (scale {config.scale}, {config.similarity}) |",
        f"| epochs / batch / lr / warmup | {config.epochs} / {config.batch_size} / {config.lr} / "
        f"{config.warmup_ratio} |",
        f"| max sequence length | {config.max_seq_length} |", f"| seed | {config.seed} |",
        f"| batch sampler | {'no duplicates' if config.no_duplicates else 'plain'} |",
        f"| steps / final loss | {summary.steps} / {summary.final_loss} |",
    ]
    if summary.eval_metrics and summary.eval_pairs >= MIN_HELDOUT_PAIRS:
        section += ["", f"Held-out synthetic queries ({summary.eval_pairs}):", ""]
        section += [f"- {k}: {v}" for k, v in summary.eval_metrics.items() if "ndcg" in k or "mrr" in k]
    card.write_text(text.rstrip() + "\n" + "\n".join(section) + "\n", encoding="utf-8")
