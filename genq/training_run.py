"""What every genq training run shares, whatever it trains (bi-encoder, reranker).

The output folder's rules (only a folder genq trained into is replaced, and only with
``--overwrite``; a run with the same settings resumes), checkpoints that survive a kill
mid-save, the ``torchrun`` process group's single voice, step timing and the time limit,
and the loss curve. ``train`` and ``train_reranker`` each bring their model, loss and data.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

from genq.hardware import resolve_device
from genq.io import GenqError, check_output_dir, describe_changes, read_json
from genq.models import RUN_RECORD

logger = logging.getLogger(__name__)


def check_training_output(output: Path, settings: dict, resume: bool, overwrite: bool,
                          option_names: dict[str, str] | None = None) -> bool:
    """Whether an earlier genq run at ``output`` is to be replaced (the new one trains beside it).

    Only a directory genq trained into (it holds ``genq_training.json``) is ever replaced,
    and only with ``overwrite``; a run with the same settings may be resumed in place.
    """
    record = output / RUN_RECORD
    if overwrite or not record.exists():
        return check_output_dir(output, RUN_RECORD, "training run", overwrite=True)
    previous = read_json(record, "training record")
    changed = {k: (previous.get("settings", {}).get(k), v) for k, v in settings.items()
               if previous.get("settings", {}).get(k) != v}
    if changed:  # named by the options that set them, as a user types them
        raise GenqError(f"{output} holds a training run with other settings "
                        f"({describe_changes(changed, option_names or {})})\n"
                        "  fix: choose another --output, or pass --overwrite to replace it once the new one is done")
    if previous.get("complete"):
        raise GenqError(f"{output} already holds a finished training run with these settings\n"
                        "  fix: use it as it is, or pass --overwrite to train again (the old model stays until "
                        "the new one is complete)")
    if not resume:
        raise GenqError(f"{output} holds an unfinished training run with these settings\n"
                        "  fix: pass --resume to continue it, or --overwrite to train again")
    return False


CHECKPOINT_PREFIX = "checkpoint-"


def checkpoint_is_complete(directory: Path) -> bool:
    """Whether every file a resume reads in a Trainer checkpoint was written whole.

    The Trainer writes a checkpoint in place, ``trainer_state.json`` last; a kill mid-save
    leaves a folder without it, or with a truncated weights/optimizer file: safetensors files
    are checked against the sizes their header declares, torch files for their zip directory.
    """
    import zipfile

    try:
        json.loads((directory / "trainer_state.json").read_text(encoding="utf-8"))
        for path in directory.rglob("*"):
            if path.suffix == ".safetensors":
                with open(path, "rb") as handle:
                    header_size = int.from_bytes(handle.read(8), "little")
                    header = json.loads(handle.read(header_size))
                end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
                if path.stat().st_size != 8 + header_size + end:
                    return False
            elif path.suffix in (".pt", ".pth", ".bin"):
                with zipfile.ZipFile(path) as archive:
                    archive.namelist()
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
        return False
    return True


def last_checkpoint(output: Path) -> str | None:
    """The newest complete checkpoint of a run; newer, partly written ones (a kill mid-save) are removed."""
    folder = output / "checkpoints"
    if not folder.is_dir():
        return None
    found = sorted((p for p in folder.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)
                    and p.name[len(CHECKPOINT_PREFIX):].isdigit()),
                   key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]), reverse=True)
    for checkpoint in found:
        if checkpoint_is_complete(checkpoint):
            return str(checkpoint)
        logger.warning("removing %s: a save interrupted before it was complete", checkpoint)
        shutil.rmtree(checkpoint, ignore_errors=True)
    return None


class Processes:
    """Where this process stands in a ``torchrun`` / ``accelerate launch`` group (alone, otherwise).

    The sentence-transformers trainer runs data-parallel by itself under those launchers;
    what genq adds is that decisions about the output folder are taken once, by the main
    process, and that only the main process writes genq's own files.
    """

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def agree(self, decide):
        """``decide()`` on the main process; every process gets its result, or raises its GenqError."""
        if self.world == 1:
            return decide()
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
        outcome: list = [None]
        if self.main:
            try:
                outcome = [("ok", decide())]
            except GenqError as exc:
                outcome = [("error", str(exc))]
        dist.broadcast_object_list(outcome, src=0, device=torch.device("cpu"))
        kind, value = outcome[0]
        if kind == "error":
            raise GenqError(value)
        return value

    def finish(self) -> None:
        """Wait for the main process's writes, then close the group (a group left open aborts at exit)."""
        import torch.distributed as dist

        if self.world > 1 and dist.is_available() and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


class StepTimer:
    """Wall seconds of each optimizer step (for the summary and for planning runs by measured rates),
    the time limit, and checkpoints by the clock.

    A run sized to a budget from a probe's rate stops at the step that would pass its limit
    rather than overrun when the probe was optimistic; the limit counts optimizer steps only
    (the model load and the save are outside it). ``save_every`` seconds after the last
    checkpoint another is written whatever ``save_steps`` says: on a CPU a 315-step reranker
    takes half an hour, so a step count alone can leave a killed run nothing to resume from.
    Under ``torchrun`` the main process decides and every process follows, so all act at one step.
    """

    def __init__(self, time_limit: float | None = None, processes: Processes | None = None,
                 save_every: float | None = None) -> None:
        from transformers import TrainerCallback

        # a TrainerCallback subclass is made here so that importing genq.train stays free of transformers
        timer = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                timer._began = time.perf_counter()
                if timer._first is None:
                    timer._first = timer._began

            def on_step_end(self, args, state, control, **kwargs):
                if timer._began is not None:
                    timer.seconds.append(time.perf_counter() - timer._began)
                if timer.time_limit is not None and state.global_step < state.max_steps:
                    stop = (timer.processes or Processes()).agree(timer._next_step_passes_limit)
                    if stop:
                        timer.stopped = control.should_training_stop = True
                if timer.save_every and state.global_step < state.max_steps and not control.should_save \
                        and (timer.processes or Processes()).agree(timer._checkpoint_due):
                    control.should_save = True

            def on_save(self, args, state, control, **kwargs):
                timer._saved = time.perf_counter()

        self.time_limit = time_limit
        self.save_every = save_every
        self._saved = time.perf_counter()
        self.processes = processes
        self.seconds: list[float] = []
        self.stopped = False
        self._began: float | None = None
        self._first: float | None = None
        self.callback = Callback()

    def _next_step_passes_limit(self) -> bool:
        spent = time.perf_counter() - (self._first or time.perf_counter())
        recent = self.seconds[-5:]
        return spent + sum(recent) / max(len(recent), 1) > self.time_limit

    def _checkpoint_due(self) -> bool:
        return time.perf_counter() - self._saved >= self.save_every

    def _steady(self) -> list[float]:
        """The steps after warm-up: the first (the first two from four steps on) pays one-off costs."""
        return self.seconds[2:] if len(self.seconds) >= 4 else (self.seconds[1:] or self.seconds)

    def steady_mean(self) -> float | None:
        """The mean step after warm-up: with length-grouped batches steps differ, and totals are sums."""
        steady = self._steady()
        return round(sum(steady) / len(steady), 4) if steady else None


def floor_fraction(epochs: float) -> float:
    """``epochs`` rounded down to a millionth, so that the trainer's ceil(epochs x steps per epoch) is the
    step count wanted (1000 / 313 x 313 is 1000.0000000000001 in floating point: 1,001 steps)."""
    return math.floor(epochs * 1e6) / 1e6


def logging_steps_for(config, train_pairs: int, batch_size: int, epochs: float | None = None) -> int:
    """Log often enough that even a short run draws a loss curve (about ten points at least)."""
    epochs = config.epochs if epochs is None else epochs
    steps = config.max_steps if config.max_steps > 0 else \
        max(1, int(math.ceil(train_pairs / batch_size) * epochs))
    return max(1, min(config.logging_steps, steps // 10 or 1))


def shared_arguments(config, output: Path, *, rows: int, batch_size: int, bf16: bool, progress: bool,
                     epochs: float | None = None) -> dict:
    """The training arguments every genq trainer sets alike (checkpoints, schedule, logging, device).

    ``config`` is the trainer's own config (epochs, max_steps, lr, warmup_ratio, seed, save_steps,
    logging_steps, device); ``epochs`` overrides its epochs where genq sized them.
    """
    import torch

    epochs = config.epochs if epochs is None else epochs
    return {
        "output_dir": str(output / "checkpoints"), "num_train_epochs": epochs, "max_steps": config.max_steps,
        "per_device_train_batch_size": batch_size, "learning_rate": config.lr,
        **warmup_arguments(config.warmup_ratio), "seed": config.seed, "bf16": bf16,
        "save_strategy": "steps", "save_steps": config.save_steps, "save_total_limit": 2,
        "logging_steps": logging_steps_for(config, rows, batch_size, epochs), "report_to": "none",
        "disable_tqdm": not progress,
        "use_cpu": resolve_device(config.device) == "cpu",  # bf16 autocast on a CPU needs it said
        "dataloader_pin_memory": torch.cuda.is_available(),  # pinning without a GPU only prints a warning
    }


def train_resumably(trainer, output: Path, config, resume: bool, processes: Processes):
    """Run ``trainer`` from the last complete checkpoint when resuming, quiet, timed and time-limited.

    Returns (what ``trainer.train`` returned, the step timer, the checkpoint resumed from or None).
    """
    checkpoint = processes.agree(lambda: last_checkpoint(output)) if resume else None
    if resume and checkpoint is None:
        logger.warning("no complete checkpoint in %s; training from the start", output / "checkpoints")
    elif checkpoint is not None:
        logger.warning("resuming from %s", checkpoint)
    quiet_trainer(trainer)
    timer = StepTimer(config.time_limit, processes, config.save_minutes * 60 or None)
    trainer.add_callback(timer.callback)
    return trainer.train(resume_from_checkpoint=checkpoint), timer, checkpoint


def quiet_trainer(trainer) -> None:
    """No raw log dicts on the terminal (the summary says what matters); the bar stays."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class BarOnly(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            return None

    trainer.remove_callback(PrinterCallback)
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(BarOnly)


def warmup_arguments(ratio: float) -> dict:
    """transformers v5 takes the warmup ratio as a float ``warmup_steps``; v4 as ``warmup_ratio``."""
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        return {"warmup_steps": float(ratio)}
    return {"warmup_ratio": ratio}


def length_grouping_arguments() -> dict:
    """transformers v5 asks for length-grouped batches as a sampling strategy; v4 as ``group_by_length``."""
    import inspect

    from transformers import TrainingArguments

    if "train_sampling_strategy" in inspect.signature(TrainingArguments).parameters:
        return {"train_sampling_strategy": "group_by_length"}
    return {"group_by_length": True}


def plot_loss(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    figure, axis = plt.subplots(figsize=(6, 3.5))
    if len(points) >= 2:
        axis.plot(*zip(*points), marker="." if len(points) < 50 else None)
    else:
        axis.text(0.5, 0.5, f"too few steps to plot ({len(points)} logged)", ha="center", va="center",
                  transform=axis.transAxes, color="#5f6b7a")
    axis.set_xlabel("step")
    axis.set_ylabel("training loss")
    axis.set_title("genq train: loss")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def train_in_place_or_beside(output: Path, replacing: bool, fit, resume: bool, processes: Processes) -> None:
    """Run ``fit(directory, resume=...)`` into ``output``; when replacing an earlier run, into a folder beside
    it that is swapped in only once complete, so the old model stays usable until then (and after a kill)."""
    from genq.io import finish_building, start_building

    if not replacing:
        fit(output, resume=resume)
        processes.finish()
        return
    building = Path(processes.agree(lambda: str(start_building(output))))
    try:
        fit(building, resume=False)
    except BaseException:
        if processes.main:
            shutil.rmtree(building, ignore_errors=True)
        raise
    if processes.main:
        finish_building(building, output)
    processes.finish()


def with_length_grouped_batches(trainer_class, texts: list[list[str]], no_duplicates: bool):
    """``trainer_class`` (a sentence-transformers trainer) drawing its training batches from genq's
    length-grouped sampler over each row's ``texts``.

    The sampler is handed over by overriding ``get_batch_sampler`` (the library's documented
    hook) rather than through the arguments, which are pickled into every checkpoint.
    """
    from genq.batching import length_grouped_sampler

    sampler_class = length_grouped_sampler(texts, no_duplicates)

    class LengthGroupedTrainer(trainer_class):
        def get_batch_sampler(self, dataset, batch_size, drop_last, valid_label_columns=None, generator=None,
                              seed=0):
            if dataset is not self.train_dataset:
                return super().get_batch_sampler(dataset, batch_size, drop_last, valid_label_columns, generator, seed)
            return sampler_class(dataset, batch_size=batch_size, drop_last=drop_last,
                                 valid_label_columns=valid_label_columns, generator=generator, seed=seed)

    return LengthGroupedTrainer
