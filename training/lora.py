"""LoRA fine-tuning of a zoo model into a new local zoo entry (peft), shared by the model
makers (``harness attack``, ``harness train distilrr``).

Resumable and bit-exact: the LoRA weights, optimizer, step and RNG state are checkpointed
every ``save_every`` steps under ``$HARNESS_CACHE_DIR/zoo/.train-<name>-<digest>``; a rerun
of the same recipe continues from there. The merged model is written to a staging folder and
renamed into place, so a half-written zoo entry never exists.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from harness import models, zoo
from harness.environment import device_description
from harness.errors import ArgumentError
from harness.store import now
from training.carry import keep_adapter, merge_adapter

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class LoraRecipe:
    epochs: int
    learning_rate: float
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    batch_size: int
    seed: int
    save_every: int = 20


def encode_example(tokenizer: Any, user: str, answer: str, max_length: int) -> tuple[list[int], list[int]]:
    """(input ids, labels) in the model's chat format; only the answer's tokens are learned."""
    if getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True)
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    else:
        prompt_ids = tokenizer.encode(f"{user}\n\n", add_special_tokens=True)
    answer_ids = tokenizer.encode(answer, add_special_tokens=False) + [tokenizer.eos_token_id]
    ids = (prompt_ids + answer_ids)[:max_length]
    labels = ([-100] * len(prompt_ids) + answer_ids)[:max_length]
    return ids, labels


def batches(encoded: Sequence[tuple[list[int], list[int]]], batch_size: int, epoch_seed: int, pad: int):
    import torch

    order = list(range(len(encoded)))
    random.Random(epoch_seed).shuffle(order)
    for start in range(0, len(order), batch_size):
        chunk = [encoded[i] for i in order[start : start + batch_size]]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.full((len(chunk), width), pad)
        labels = torch.full((len(chunk), width), -100)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, (x, y) in enumerate(chunk):
            ids[row, : len(x)], labels[row, : len(y)], mask[row, : len(x)] = torch.tensor(x), torch.tensor(y), 1
        yield ids, labels, mask


def existing(name: str, digest: str) -> bool:
    """True when the zoo already holds ``name`` made by this recipe; an error if by another."""
    made = zoo.recipe(name)
    if made is None:
        return False
    if made.get("recipe_digest") == digest:
        return True
    raise ArgumentError(f"zoo model '{name}' exists with another recipe; delete {zoo.local_zoo_dir() / name} to retrain")


def train_lora(
    name: str,
    digest: str,
    base_model: str,
    recipe: LoraRecipe,
    encode: Callable[[Any], list[tuple[list[int], list[int]]]],
    meta: dict[str, Any],
    show_progress: bool = True,
    device: str = "cpu",
) -> str:
    """Fine-tune ``base_model`` with LoRA on ``encode(tokenizer)`` on ``device`` and save it as zoo model ``name``."""
    import torch
    from peft import LoraConfig, get_peft_model

    from training.clock import seconds_since

    if existing(name, digest):
        return name
    base = models.resolve(base_model)
    loaded = models.load(base, device)
    tokenizer = loaded.tokenizer
    encoded = encode(tokenizer)
    if not encoded:
        raise ArgumentError(f"no training examples for '{name}'")
    torch.manual_seed(recipe.seed)
    lora = LoraConfig(r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
                      task_type="CAUSAL_LM", target_modules=LORA_TARGETS)
    model = get_peft_model(loaded.model, lora)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=recipe.learning_rate)
    steps_per_epoch = -(-len(encoded) // recipe.batch_size)
    total = steps_per_epoch * recipe.epochs
    work = zoo.local_zoo_dir() / f".train-{name}-{digest}"
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = work / "checkpoint.pt"
    step, losses, began, before = 0, [], time.perf_counter(), 0.0
    if checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=False, map_location=loaded.device)  # resumable on another device
        model.load_state_dict(state["lora"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        step, losses, before = state["step"], state["losses"], state.get("seconds")
        torch.set_rng_state(state["rng"].cpu())  # dropout masks continue as if never interrupted (map_location moved it)
        if state.get("cuda_rng") is not None and loaded.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), loaded.device)  # on a GPU, dropout draws from its own generator
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with tqdm(total=total, initial=step, desc=f"train {name}", unit="step", disable=not show_progress) as bar:
        for epoch in range(recipe.epochs):
            for index, (ids, labels, mask) in enumerate(batches(encoded, recipe.batch_size, recipe.seed * 1000 + epoch, pad)):
                if epoch * steps_per_epoch + index < step:
                    continue  # done before the resume
                ids, labels, mask = ids.to(loaded.device), labels.to(loaded.device), mask.to(loaded.device)
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                optimizer.zero_grad()
                step += 1
                losses.append(loss.item())
                bar.update(1)
                bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
                if step % recipe.save_every == 0 or step == total:
                    lora_state = {k: v for k, v in model.state_dict().items() if "lora_" in k}
                    tmp = checkpoint.with_suffix(".tmp")
                    torch.save({"lora": lora_state, "optimizer": optimizer.state_dict(), "step": step, "losses": losses,
                                "rng": torch.get_rng_state(), "seconds": seconds_since(before, began),
                                "cuda_rng": torch.cuda.get_rng_state(loaded.device) if loaded.device.type == "cuda" else None}, tmp)
                    tmp.replace(checkpoint)
    staging = work / "model"
    if staging.exists():
        shutil.rmtree(staging)
    keep_adapter(model, staging, base_model)
    merged = merge_adapter(model)
    merged.eval()
    merged.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    meta = meta | {
        "base_model": base_model, "base_identity": base.identity.as_dict(), "recipe_digest": digest,
        "training": {"steps": step, "examples": len(encoded), "final_loss": sum(losses[-20:]) / max(1, len(losses[-20:])),
                     "first_loss": losses[0] if losses else None, "wall_time_s": seconds_since(before, began),
                     "device": device_description(loaded.device), "finished_at": now()},
    }
    return zoo.install(staging, name, meta, work)
