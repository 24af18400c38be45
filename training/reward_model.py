"""Reward models for decoding-time alignment (CARDS, PAPERS.md §5): no reward model installs
offline, so ``harness train reward-model`` trains one on a zoo backbone.

A sequence classifier with one label (``AutoModelForSequenceClassification``, a fresh scalar
head) is trained with TRL's ``RewardTrainer`` (Bradley–Terry: −log σ(r_chosen − r_rejected)),
LoRA on the backbone (the head trained in full) or the whole model (``lora_r=0``), and saved,
merged, as the zoo entry ``<base>-rm``.

Data: the HH-RLHF helpful-base test pairs (``hh_rlhf/helpful-base``, meant for reward-model
training and evaluation) whose prompts are *not* held out by ``tasks.hh_rlhf.held_out`` (a
seeded hash of the prompt text; share 0.2, seed 0), so no prompt the ``hh-rlhf`` task
evaluates is ever trained on. ``hh_rlhf/harmless-base`` is never trained on (the data README
allows it for evaluation only). Each pair is rendered through the backbone's chat template by
``harness.reward.render``, exactly as the scorer renders it, cut from the left to
``max_length`` (TRL would drop longer pairs instead).

After training, the held-out pairs of both subsets measure the model: pair accuracy (chosen
scored above rejected) with a Wilson CI, per subset, and the quantiles of its rewards on
held-out chosen answers (CARDS's r* is picked from these). All of it goes into the zoo
entry's ``harness_zoo.json`` with the whole recipe.

Resumable: the trainer checkpoints every ``save_every`` steps under the zoo's work folder
and a rerun of the same recipe resumes from the last one (optimizer, scheduler, RNG state);
the zoo entry appears only when training and evaluation are done.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness import models, progress, zoo
from harness.data import DataStore
from harness.errors import ArgumentError
from harness.store import now

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


@dataclass(frozen=True)
class RewardModelSpec:
    base_model: str = zoo.DEFAULT_MODEL
    epochs: int = 1
    learning_rate: float = 5e-4
    lora_r: int = 16  # 0: train the whole model
    lora_alpha: int = 32
    batch_size: int = 8
    max_length: int = 512  # tokens per rendered conversation, cut from the left
    held_out_share: float = 0.2  # the hh-rlhf task's held-out rule (tasks.hh_rlhf.held_out)
    split_seed: int = 0
    seed: int = 0
    save_every: int = 50
    n_train: int | None = None  # cap on training pairs (None: all)
    n_eval: int | None = None  # cap on held-out pairs per subset for the accuracy (None: all)
    name: str = ""  # zoo name; default <base_model>-rm

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.max_length < 16 or self.lora_r < 0:
            raise ArgumentError("epochs and batch_size must be >= 1, max_length >= 16 and lora_r >= 0")
        if not 0 < self.held_out_share < 1:
            raise ArgumentError("held_out_share must be in (0, 1)")

    @property
    def zoo_name(self) -> str:
        return self.name or f"{self.base_model}-rm"

    def digest(self) -> str:
        recipe = {k: v for k, v in asdict(self).items() if v is not None and k not in ("name", "n_eval")}
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def split_pairs(spec: RewardModelSpec, data: DataStore) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """(training pairs: helpful-base minus the held-out prompts; held-out pairs per subset)."""
    from tasks.hh_rlhf import held_out, read_pairs

    train, evaluation = [], {}
    for subset in ("helpful", "harmless"):
        pairs = read_pairs(data, subset)
        evaluation[subset] = [p for p in pairs if held_out(p["key"], spec.split_seed, spec.held_out_share)][: spec.n_eval]
        if subset == "helpful":
            train = [p for p in pairs if not held_out(p["key"], spec.split_seed, spec.held_out_share)][: spec.n_train]
    return train, evaluation


def reward_config(spec: RewardModelSpec, output_dir: Path, show_progress: bool) -> Any:
    """TRL's training arguments for the recipe: float32, checkpoints every ``save_every`` steps."""
    import torch
    from trl import RewardConfig

    return RewardConfig(
        output_dir=str(output_dir), num_train_epochs=spec.epochs, learning_rate=spec.learning_rate,
        per_device_train_batch_size=spec.batch_size, seed=spec.seed, data_seed=spec.seed, save_strategy="steps",
        save_steps=spec.save_every, save_total_limit=1, logging_steps=1, report_to=[], max_length=None,
        disable_tqdm=not show_progress, use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
        gradient_checkpointing=False, lr_scheduler_type="linear", warmup_steps=0,
        # TRL turns bf16 autocast on by default, even on a CPU: without native bf16 matrix
        # multiplies (AVX2 machines) every matmul then takes torch's scalar fallback, and a
        # reward-model step did not finish in 20 minutes where float32 takes one.
        bf16=False, fp16=False,
    )


def train_reward_model(spec: RewardModelSpec, data: DataStore, show_progress: bool = True) -> str:
    """Train (or resume, or reuse) the reward model; returns its zoo name."""
    from training.lora import existing

    if existing(spec.zoo_name, spec.digest()):
        return spec.zoo_name
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardTrainer

    from harness.reward import render
    from training.carry import keep_adapter, merge_adapter
    from training.clock import logged_mean_loss, train_resuming

    base = models.resolve(spec.base_model)
    if base.identity.kind != "causal-lm":
        raise ArgumentError(f"--model must be a causal LM backbone; '{spec.base_model}' is a {base.identity.kind}")
    train, evaluation = split_pairs(spec, data)
    tokenizer = AutoTokenizer.from_pretrained(base.path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows = [{"chosen_ids": render(tokenizer, p["messages"], p["chosen"], spec.max_length),
             "rejected_ids": render(tokenizer, p["messages"], p["rejected"], spec.max_length)} for p in train]
    work = zoo.local_zoo_dir() / f".train-{spec.zoo_name}-{spec.digest()}"
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(spec.seed)
    model = AutoModelForSequenceClassification.from_pretrained(base.path, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    lora = None
    if spec.lora_r:
        lora = LoraConfig(r=spec.lora_r, lora_alpha=spec.lora_alpha, lora_dropout=0.0, task_type="SEQ_CLS",
                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    config = reward_config(spec, work / "checkpoints", show_progress)
    trainer = RewardTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                            peft_config=lora)
    training_seconds = train_resuming(trainer)
    trained = trainer.model
    staging = work / "model"
    if staging.exists():
        shutil.rmtree(staging)
    if spec.lora_r:
        keep_adapter(trained, staging, spec.base_model)
    merged = merge_adapter(trained) if spec.lora_r else trained
    merged.eval()
    merged.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    held = evaluate_held_out(staging, evaluation, spec, show_progress)
    meta = {
        "description": f"reward model on {spec.base_model} (Bradley-Terry, TRL RewardTrainer, "
                       f"{'LoRA r=' + str(spec.lora_r) if spec.lora_r else 'full'}), trained on HH-RLHF helpful-base pairs "
                       "outside the hh-rlhf task's held-out prompts",
        "model_kind": "sequence-classifier", "base_model": spec.base_model, "base_identity": base.identity.as_dict(),
        "recipe": asdict(spec), "recipe_digest": spec.digest(),
        "data": {"train": "hh_rlhf/helpful-base/test.jsonl.gz minus held-out prompts", "n_train_pairs": len(rows),
                 "held_out_rule": f"tasks.hh_rlhf.held_out(prompt, seed={spec.split_seed}, share={spec.held_out_share})",
                 "never_trained_on": "hh_rlhf/harmless-base (evaluation only)"},
        "training": {"steps": trainer.state.global_step, "train_loss": logged_mean_loss(trainer.state.log_history),
                     "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
                     "wall_time_s": training_seconds, "finished_at": now(),
                     "trl_version": package_version("trl"), "precision": "float32"},
        "held_out": held,
    }
    return zoo.install(staging, spec.zoo_name, meta, work)


def evaluate_held_out(folder: Path, evaluation: dict[str, list[dict[str, Any]]], spec: RewardModelSpec,
                      show_progress: bool) -> dict[str, Any]:
    """Pair accuracy (Wilson CI) per subset and reward quantiles of held-out chosen answers, scored
    by the saved model as every later use reads it."""
    from harness.reward import load_reward_model
    from harness.stats import wilson_interval

    scorer = load_reward_model(str(folder))
    out: dict[str, Any] = {"pair_accuracy": {}}
    chosen_rewards: list[float] = []
    total = sum(len(pairs) for pairs in evaluation.values())
    with progress.bar(total=total, desc="held-out pairs", unit="pair", disable=not show_progress) as bar:
        for subset, pairs in evaluation.items():
            wins = 0
            for start in range(0, len(pairs), 16):
                chunk = pairs[start : start + 16]
                chosen = scorer.score_ids([scorer.render(p["messages"], p["chosen"])[-spec.max_length :] for p in chunk])
                rejected = scorer.score_ids([scorer.render(p["messages"], p["rejected"])[-spec.max_length :] for p in chunk])
                wins += sum(c > r for c, r in zip(chosen, rejected, strict=True))
                chosen_rewards += chosen
                bar.update(len(chunk))
            low, high = wilson_interval(wins, len(pairs)) if pairs else (None, None)
            out["pair_accuracy"][subset] = {"accuracy": wins / len(pairs) if pairs else None, "ci_low": low, "ci_high": high,
                                            "n": len(pairs)}
    out["chosen_reward_quantiles"] = {f"{q:g}": float(np.quantile(chosen_rewards, q)) for q in QUANTILES} if chosen_rewards else {}
    out["chosen_reward_mean"] = float(np.mean(chosen_rewards)) if chosen_rewards else None
    return out


def package_version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
