"""What a training run records about its own time and loss when it was resumed across sessions.

``Trainer.train()`` reports only the session that calls it: after a resume its ``train_runtime``
is that session's seconds, and its ``train_loss`` divides that session's loss sum by every step
(0.0 when the checkpoint was already the last). So the TRL trainers carry ``TrainingClock``,
whose seconds are saved beside each checkpoint and read back on resume, and record the loss
from the log history the checkpoint restores (``logged_mean_loss``). The hand-written loops
(``training.lora``, ``training.memory``) keep their seconds in their own checkpoint dict.
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
        self.stopped: float | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.started, self.stopped = time.perf_counter(), None
        output = Path(args.output_dir)
        last = get_last_checkpoint(str(output)) if output.is_dir() else None
        if last is None:
            self.before = 0.0
        else:  # Trainer.train(resume_from_checkpoint=True) resumes from this same folder
            saved = Path(last) / CLOCK_FILE
            self.before = json.loads(saved.read_text())["seconds"] if saved.is_file() else None

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if folder.is_dir() and self.seconds is not None:
            (folder / CLOCK_FILE).write_text(json.dumps({"seconds": self.seconds}))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.stopped = time.perf_counter()

    @property
    def seconds(self) -> float | None:
        if self.before is None:
            return None
        return self.before + (time.perf_counter() if self.stopped is None else self.stopped) - self.started


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
