"""Query generator fine-tuning: (passage, query) pairs -> a generator that writes queries like them.

GenQ's own generator is a T5 fine-tuned on MS MARCO's (passage, query) pairs; iGFT and
InPars-style self-training tune a generator again on the synthetic pairs a round-trip filter
kept, so that the next round wastes fewer samples. ``genq train-generator`` does both on
genq's generators: a seq2seq model (the passage in, the query out) or a decoder-only LM
(SmolLM2 through its de-quantised copy, any causal LM), from a pairs file or from a labelled
collection's qrels.

The training rows are built by the generator's own scoring code
(:meth:`genq.generation.torch_backend.QueryGenerator.training_rows`): the passage exactly as
sampling reads it (a decoder-only model's prompt, chat rendering included), then the query
and the token that ends it; the loss is on the query and its end only. The prompt is kept
beside the weights (``genq_prompt.txt`` and the run record), and ``genq generate
--generator DIR`` samples under it unless told otherwise. The default prompt is the short
zero-shot one: a tuned model no longer needs the few-shot examples, and a step under them
costs several times more (benchmarks/results/generator_rounds.md).
"""

from __future__ import annotations

import functools
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from genq import __version__
from genq.generation.pairs_file import iter_pairs
from genq.generation.templates import TUNED_PROMPT_FILE, load_prompt_template
from genq.hardware import training_bf16
from genq.io import DataError, GenqError, follow_umask, write_json_atomic
from genq.locks import one_writer
from genq.models import RUN_RECORD
from genq.training_run import (
    Processes,
    check_training_output,
    floor_fraction,
    length_grouping_arguments,
    plot_loss,
    shared_arguments,
    train_in_place_or_beside,
    train_resumably,
)

logger = logging.getLogger(__name__)

RUN_KEYS = ("generator", "gguf_file", "prompt_template", "prompt_style", "max_passage_tokens", "include_title",
            "prefix", "epochs", "batch_size", "lr", "warmup_ratio", "schedule", "seed", "max_steps")
OPTION_NAMES = {
    "generator": "--generator", "gguf_file": "--gguf-file",
    "prompt_template": "--prompt-template (adapt: --tuning-prompt)",
    "prompt_style": "--prompt-style", "max_passage_tokens": "--max-passage-tokens", "include_title": "--no-title",
    "prefix": "--prefix", "epochs": "--epochs (adapt: --generator-epochs)",
    "batch_size": "--train-batch-size (adapt: --generator-batch-size)", "lr": "--lr (adapt: --generator-lr)",
    "warmup_ratio": "--warmup-ratio", "schedule": "--lr-schedule", "seed": "--train-seed", "max_steps": "--max-steps",
}
SCHEDULES = ("linear", "constant_with_warmup", "cosine")


@dataclass
class GeneratorTrainingConfig:
    """How a generator is tuned. The defaults are the probe's (issue 37): 3 epochs at batch 8, 5e-5."""

    generator: str = "BeIR/query-gen-msmarco-t5-base-v1"
    gguf_file: str | None = None
    prompt_template: str = "zero-shot"  # decoder-only: the prompt it learns (and then samples) under
    prompt_style: str = "auto"
    max_passage_tokens: int | None = None  # None: the family's sampling default
    include_title: bool = True
    prefix: str = ""
    epochs: float | None = None  # None: by pair count (tuning_epochs)
    batch_size: int = 8
    lr: float = 5e-5
    warmup_ratio: float = 0.1
    schedule: str = "linear"
    seed: int = 42
    max_steps: int = -1
    bf16: bool | None = None  # None: where the device does bf16 natively
    time_limit: float | None = None
    save_steps: int = 500
    save_minutes: float = 10.0
    logging_steps: int = 10
    device: str | None = None

    def validate(self) -> None:
        if self.batch_size < 1:
            raise GenqError("--train-batch-size must be at least 1")
        if self.epochs is not None and self.epochs <= 0 and self.max_steps <= 0:
            raise GenqError("--epochs must be positive (or give --max-steps)")
        if self.lr <= 0:
            raise GenqError("--lr must be positive")
        if self.schedule not in SCHEDULES:
            raise GenqError(f"unknown learning-rate schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        if self.time_limit is not None and self.time_limit <= 0:
            raise GenqError("--time-limit must be positive")
        if self.save_minutes < 0:
            raise GenqError("--save-minutes must be 0 (checkpoints by --save-steps only) or more")

    def generation(self):
        """The sampling config whose prompt and passage window the training rows are built with."""
        from genq.generation.settings import GenerationConfig

        return GenerationConfig(model=self.generator, gguf_file=self.gguf_file, prompt_template=self.prompt_template,
                                prompt_style=self.prompt_style, max_passage_tokens=self.max_passage_tokens,
                                include_title=self.include_title, prefix=self.prefix, dtype="float32",
                                device=self.device, backend="torch")


MIN_AUTO_STEPS = 100  # the probe's 33 steps cut runaways from 53% to 8%; a few more for a larger, varied set
MAX_AUTO_EPOCHS = 3


def tuning_epochs(pairs: int, batch_size: int) -> float:
    """Epochs where the user left them to genq: at least MIN_AUTO_STEPS steps, 1 to MAX_AUTO_EPOCHS passes.

    A generator tuned on a few hundred of its own queries learns their form in about a hundred
    steps; more passes over the same pairs narrow it further onto one form (the collapse the
    probe warned of), and on a CPU each step costs seconds. A fraction of an epoch, not a
    whole one more: 776 pairs at batch 8 are 97 steps an epoch, and rounding 100 steps up to
    two epochs would have doubled a 30-minute tuning for three more steps' worth.
    """
    per_epoch = max(1, -(-pairs // batch_size))
    return max(1.0, min(float(MAX_AUTO_EPOCHS), floor_fraction(MIN_AUTO_STEPS / per_epoch)))


@dataclass
class GeneratorTrainingSummary:
    output: str
    pairs: int = 0
    passages: int = 0
    distinct_queries: int = 0  # a labelled set's few queries over many passages teach those queries, not the task
    source: str = ""  # "pairs" or "qrels"
    family: str = ""
    prompt_style: str = ""
    input_tokens_mean: float = 0.0  # per training row: prompt (or encoder input) and query
    epochs: float = 0.0
    steps: int = 0
    seconds: float = 0.0
    seconds_per_step: float | None = None
    stopped_at_time_limit: bool = False
    bf16: bool = False
    first_loss: float | None = None
    final_loss: float | None = None
    resumed_from: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def pairs_from_file(path: str | Path) -> list[dict]:
    """(passage, query) rows of a genq pairs file, each distinct (query, passage) once."""
    rows, seen = [], set()
    for _, record in iter_pairs(path):
        key = (record["query"].strip().lower(), record.get("passage_id"), record["passage"])
        if key in seen:
            continue
        seen.add(key)
        rows.append({"query": record["query"].strip(), "passage": record["passage"],
                     "title": record.get("title") or "", "passage_id": str(record.get("passage_id", ""))})
    return rows


def pairs_from_qrels(data_dir: str | Path, split: str = "test") -> list[dict]:
    """(passage, query) rows of a labelled BEIR collection: each query beside each document judged relevant.

    What a user with some labelled pairs (their own, or a public set) tunes a generator on for
    their domain, as GenQ's generator was tuned on MS MARCO's.
    """
    from genq.evaluate import load_collection

    collection = load_collection(data_dir, split)
    documents = {document["_id"]: document for document in collection.corpus}
    rows = []
    for query_id, judged in collection.qrels.items():
        query = collection.queries.get(query_id, "").strip()
        for document_id, relevance in judged.items():
            document = documents.get(document_id)
            if query and relevance > 0 and document and document.get("text", "").strip():
                rows.append({"query": query, "passage": document["text"], "title": document.get("title") or "",
                             "passage_id": document_id})
    if not rows:
        raise DataError(data_dir, f"its qrels/{split}.tsv names no relevant document with text",
                        "pass a collection whose qrels judge documents relevant (score > 0)")
    return rows


@one_writer("output_dir", "generator directory")
def train_generator(
    rows: list[dict],
    output_dir: str | Path,
    config: GeneratorTrainingConfig | None = None,
    source: str = "pairs",
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> GeneratorTrainingSummary:
    """Fine-tune ``config.generator`` on ``rows`` ({"query", "passage", "title"}) and save it to ``output_dir``."""
    config = config or GeneratorTrainingConfig()
    config.validate()
    started = time.perf_counter()
    output = Path(output_dir)
    if len(rows) < 2:
        raise GenqError(f"{len(rows)} (passage, query) pair(s) to learn from: too few to tune a generator\n"
                        "  fix: generate (and filter) more pairs first, or pass a labelled collection")
    settings = {key: getattr(config, key) for key in RUN_KEYS}
    processes = Processes()
    replacing = processes.agree(lambda: check_training_output(output, settings, resume, overwrite, OPTION_NAMES))
    template = load_prompt_template(config.prompt_template)  # a bad template is refused before the model loads

    import torch

    from genq.generation.torch_backend import QueryGenerator

    torch.manual_seed(config.seed)
    generator = QueryGenerator(config.generation(), backend_reason="training")
    summary = GeneratorTrainingSummary(str(output), pairs=len(rows), source=source, family=generator.family,
                                       passages=len({row["passage_id"] or row["passage"] for row in rows}),
                                       distinct_queries=len({row["query"] for row in rows}),
                                       prompt_style=generator.prompt_style if generator.family == "causal" else "")
    summary.bf16 = training_bf16(config.bf16, config.device)
    examples = generator.training_rows([{"text": row["passage"], "title": row["title"]} for row in rows],
                                       [row["query"] for row in rows])
    summary.input_tokens_mean = round(sum(len(ids) for ids, _ in examples) / len(examples), 1)
    fit = functools.partial(_fit, generator=generator, examples=examples, config=config, settings=settings,
                            template=template, summary=summary, progress=progress, started=started,
                            processes=processes)
    train_in_place_or_beside(output, replacing, fit, resume, processes)
    return summary


def _collate(pad_id: int):
    """Right-padded batches: the rows' own positions, as when they were scored left-padded from their start."""

    def collate(batch: list[dict]) -> dict:
        import torch

        width = max(len(row["input_ids"]) for row in batch)
        label_width = max(len(row["labels"]) for row in batch)
        return {
            "input_ids": torch.tensor([row["input_ids"] + [pad_id] * (width - len(row["input_ids"])) for row in batch]),
            "attention_mask": torch.tensor([[1] * len(row["input_ids"]) + [0] * (width - len(row["input_ids"]))
                                            for row in batch]),
            "labels": torch.tensor([row["labels"] + [-100] * (label_width - len(row["labels"])) for row in batch]),
        }

    return collate


def _fit(output: Path, *, generator, examples: list[tuple[list[int], list[int]]], config: GeneratorTrainingConfig,
         settings: dict, template: str, summary: GeneratorTrainingSummary, resume: bool, progress: bool,
         started: float, processes: Processes) -> None:
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    record = {"genq_version": __version__, "kind": "generator", "settings": settings,
              "prompt_style": summary.prompt_style or None, "complete": False}
    if processes.main:
        output.mkdir(parents=True, exist_ok=True)
        write_json_atomic(output / RUN_RECORD, record)
    summary.epochs = config.epochs if config.epochs is not None else tuning_epochs(len(examples), config.batch_size)
    dataset = Dataset.from_dict({"input_ids": [ids for ids, _ in examples],
                                 "labels": [labels for _, labels in examples],
                                 "length": [len(ids) for ids, _ in examples]})
    batch_size = min(config.batch_size, len(dataset))
    args = TrainingArguments(
        **shared_arguments(config, output, rows=len(dataset), batch_size=batch_size, bf16=summary.bf16,
                           progress=progress, epochs=summary.epochs),
        lr_scheduler_type=config.schedule,
        **length_grouping_arguments(),  # rows of like length together: less padding, and passages differ a lot
        remove_unused_columns=False,
    )
    model = generator.model
    model.config.use_cache = False  # no KV cache is wanted while training
    trainer = Trainer(model=model, args=args, train_dataset=dataset,
                      data_collator=_collate(generator.tokenizer.pad_token_id))
    _, timer, summary.resumed_from = train_resumably(trainer, output, config, resume, processes)
    summary.steps = trainer.state.global_step
    summary.seconds_per_step = timer.steady_mean()
    summary.stopped_at_time_limit = timer.stopped
    if not processes.main:
        return
    model.config.use_cache = True
    model.save_pretrained(str(output))
    generator.tokenizer.padding_side = "right"  # as loaded; sampling sets its own side
    generator.tokenizer.save_pretrained(str(output))
    (output / TUNED_PROMPT_FILE).write_text(template, encoding="utf-8")
    history = trainer.state.log_history
    logged = [h["loss"] for h in history if "loss" in h]
    summary.first_loss = round(float(logged[0]), 4) if logged else None
    summary.final_loss = round(float(logged[-1]), 4) if logged else None
    summary.seconds = round(time.perf_counter() - started, 2)
    write_json_atomic(output / "training_log.json", {"log_history": history, "summary": summary.to_dict()})
    plot_loss(history, output / "loss_curve.png")
    _write_model_card(output, config, summary)
    follow_umask(output)
    write_json_atomic(output / RUN_RECORD, {**record, "complete": True, "summary": summary.to_dict()})
    shutil.rmtree(output / "checkpoints", ignore_errors=True)


def _write_model_card(output: Path, config: GeneratorTrainingConfig, summary: GeneratorTrainingSummary) -> None:
    source = {"pairs": "synthetic (passage, query) pairs", "qrels": "a labelled collection's (query, relevant "
              "document) pairs"}.get(summary.source, summary.source)
    prompt = (f"`{config.prompt_template}` ({summary.prompt_style})" if summary.family == "causal"
              else "none (seq2seq: the passage in, the query out)")
    lines = [
        "# genq query generator", "",
        f"`{config.generator}` fine-tuned with genq {__version__} to write search queries for passages, on "
        f"{source}. The loss covers the query and the token that ends it only.", "",
        "| setting | value |", "|---|---|",
        f"| base generator | `{config.generator}`" + (f" (`{config.gguf_file}`)" if config.gguf_file else "") + " |",
        f"| family / prompt | {summary.family} / {prompt} |",
        f"| pairs / passages / distinct queries | {summary.pairs:,} / {summary.passages:,} / "
        f"{summary.distinct_queries:,} |",
        f"| epochs / batch / lr / warmup / schedule | {summary.epochs} / {config.batch_size} / {config.lr} / "
        f"{config.warmup_ratio} / {config.schedule} |",
        f"| steps / first loss / final loss | {summary.steps} / {summary.first_loss} / {summary.final_loss} |",
        f"| seed | {config.seed} |", "",
        f"Use: `genq generate PASSAGES -o pairs.jsonl --generator {output.name}` (it samples under the prompt above, "
        f"kept in `{TUNED_PROMPT_FILE}`).",
    ]
    (output / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
