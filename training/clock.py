"""What a training run records about its own time and loss when it was resumed across sessions.

``Trainer.train()`` reports only the session that calls it: after a resume its ``train_runtime``
is that session's seconds, and its ``train_loss`` divides that session's loss sum by every step
(0.0 when the checkpoint was already the last). So the TRL trainers carry ``TrainingClock``,
whose seconds are saved beside each checkpoint and read back on resume, and record the loss
from the log history the checkpoint restores (``logged_mean_loss``); ``train_resuming`` runs a
trainer with its clock. The hand-written loops (``training.lora``, ``training.memory``) keep
their seconds in their own checkpoint dict.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

CLOCK_FILE = "harness_clock.json"


class TrainingClock(TrainerCallback):
    """Seconds spent training, over every session that made the model's steps (the time of
    steps lost to a crash after the last checkpoint is not counted: they were redone).
    ``seconds`` is None when the run resumed from a checkpoint saved without a clock."""

    def __init__(self) -> None:
        self.before: float | None = 0.0
        self.started = time.perf_counter()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.started = time.perf_counter()
        last = last_checkpoint(Path(args.output_dir))
        if last is None:
            self.before = 0.0
        else:  # Trainer.train(resume_from_checkpoint=True) resumes from this same folder
            saved = last / CLOCK_FILE
            self.before = json.loads(saved.read_text())["seconds"] if saved.is_file() else None

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if folder.is_dir() and self.seconds is not None:
            (folder / CLOCK_FILE).write_text(json.dumps({"seconds": self.seconds}))

    @property
    def seconds(self) -> float | None:
        return seconds_since(self.before, self.started)


def last_checkpoint(output: Path) -> Path | None:
    """The checkpoint ``Trainer.train(resume_from_checkpoint=True)`` resumes from, if any."""
    last = get_last_checkpoint(str(output)) if output.is_dir() else None
    return None if last is None else Path(last)


def train_resuming(trainer: Any) -> float | None:
    """``trainer.train()``, resumed from the last checkpoint in its output folder when there is
    one; returns the training seconds over every session (see ``TrainingClock``)."""
    clock = TrainingClock()
    trainer.add_callback(clock)
    resume = last_checkpoint(Path(trainer.args.output_dir)) is not None
    trainer.train(resume_from_checkpoint=True if resume else None)
    return clock.seconds


def seconds_since(before: float | None, began: float) -> float | None:
    """A hand-written loop's training seconds: those its checkpoint saved (None: saved without
    them) plus this session's since ``began`` (a ``time.perf_counter()``)."""
    return None if before is None else before + time.perf_counter() - began


def logged_mean_loss(log_history: list[dict[str, Any]]) -> float | None:
    """The mean training loss per step over the logged steps: each logged loss is the mean over
    the steps since the previous log, so it is weighted by their number."""
    total, steps, previous = 0.0, 0, 0
    for entry in log_history:
        if "loss" in entry and "step" in entry:
            span = entry["step"] - previous
            total, steps, previous = total + entry["loss"] * span, steps + span, entry["step"]
    return total / steps if steps else None
