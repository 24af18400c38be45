"""``harness train hmt`` / ``harness train rmt``: train segment memory around a zoo model on
PG-19 training books (HMT, He et al.; PAPERS.md §1).

Data: the PG-19 *train* books in the mirror (``pg19/train``; Gutenberg boilerplate removed as
in ``tasks/pg19.py``); never the test books. Each step draws, with a seed derived from the run
seed and the step, a book and an offset, and takes ``unroll × segment + 1`` tokens.

The paper's two stages, as BPTT through the segment recurrence:
- stage 1 (``--stage1-steps``): 2 segments, no memory search (HMT's memory prompt is the last
  memory embedding) — learns to write and read memory;
- stage 2 (``--stage2-steps``): ``--unroll`` segments (deeper), with memory search.
RMT runs the same schedule (it has no search). Trainable: the memory parameters, plus LoRA
adapters on the backbone (``--lora-r``, 0 = memory only) or the whole backbone (``--full``).
Checkpoints every ``--save-every`` steps hold everything a resume needs (bit-exact). The
result is a local zoo model ``<model>-<hmt|rmt>-L<segment>``: the backbone (LoRA merged)
plus ``memory.pt`` and the recipe; use it as ``--model <it> --method hmt``.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import time
from dataclasses import asdict, dataclass
from typing import Literal

from tqdm.auto import tqdm

from harness import models, zoo
from harness.data import DataStore
from harness.errors import ArgumentError, DataCorruptError
from harness.store import now
from methods.segment_memory import MEMORY_FILE
from tasks.pg19 import strip_gutenberg
from training import lora


@dataclass(frozen=True)
class MemoryTrainSpec:
    kind: Literal["hmt", "rmt"]
    model: str = zoo.DEFAULT_MODEL
    segment: int = 256  # scaled down from the paper's 1024 for CPU training
    sensory: int = 32
    memories: int = 300
    summary: int | None = None
    tokens: int = 16  # rmt memory tokens
    stage1_steps: int = 100
    stage2_steps: int = 100
    unroll: int = 4  # stage 2 segments (stage 1 uses 2)
    learning_rate: float = 1e-4
    lora_r: int = 8
    full: bool = False
    seed: int = 0
    save_every: int = 20
    zoo_name: str = ""  # default <model>-<kind>-L<segment>; name another recipe's model so both are kept

    def __post_init__(self) -> None:
        if self.kind not in ("hmt", "rmt"):
            raise ArgumentError(f"unknown memory kind '{self.kind}'")
        if self.segment < 8 or self.unroll < 2 or self.stage1_steps < 0 or self.stage2_steps < 0:
            raise ArgumentError("need segment >= 8, unroll >= 2 and non-negative step counts")
        if self.stage1_steps + self.stage2_steps == 0:
            raise ArgumentError("nothing to train: both stages have 0 steps")
        if self.zoo_name and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.zoo_name):
            raise ArgumentError(f"--name must be letters, digits, '.', '_' or '-'; got '{self.zoo_name}'")

    @property
    def name(self) -> str:
        return self.zoo_name or f"{self.model}-{self.kind}-L{self.segment}"

    def digest(self) -> str:
        recipe = {k: v for k, v in asdict(self).items() if k != "zoo_name"}  # the name does not shape the weights
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]

    def method_args(self) -> dict:
        if self.kind == "hmt":
            return {"segment": self.segment, "sensory": self.sensory, "memories": self.memories, "summary": self.summary}
        return {"segment": self.segment, "tokens": self.tokens}


def training_books(data: DataStore) -> list[tuple[str, str]]:
    """(book id, text) of the PG-19 train books in the mirror, boilerplate removed."""
    books = []
    for relative in sorted(r for r in data.manifest if r.startswith("pg19/train/") and r.endswith(".txt")):
        text = strip_gutenberg(data.file(relative, "pg19").read_text(encoding="utf-8", errors="replace"))
        if text is None:
            raise DataCorruptError(f"{relative} has no Project Gutenberg START/END markers")
        books.append((relative.split("/")[-1][:-4], text))
    if not books:
        raise DataCorruptError("the mirror has no PG-19 training books (pg19/train/*.txt)")
    return books


def build_wrapper(spec: MemoryTrainSpec, backbone):
    if spec.kind == "hmt":
        from methods.hmt import HMTArgs, build_hmt

        return build_hmt(backbone, HMTArgs(**spec.method_args(), untrained=True))
    from methods.rmt import RMTMemory

    return RMTMemory(backbone, spec.segment, spec.tokens)


def train_memory(spec: MemoryTrainSpec, data: DataStore, show_progress: bool = True) -> str:
    """Train (or resume, or reuse) the memory model; returns its zoo name."""
    import torch
    from peft import LoraConfig, get_peft_model

    if lora.existing(spec.name, spec.digest()):
        return spec.name
    books = training_books(data)
    base = models.resolve(spec.model)
    loaded = models.load(base)
    tokenized = [loaded.tokenizer.encode(text, add_special_tokens=False) for _, text in books]
    torch.manual_seed(spec.seed)
    backbone = loaded.model
    if spec.full:
        backbone.requires_grad_(True)
    elif spec.lora_r:
        backbone = get_peft_model(backbone, LoraConfig(r=spec.lora_r, lora_alpha=2 * spec.lora_r, lora_dropout=0.0,
                                                       task_type="CAUSAL_LM", target_modules=lora.LORA_TARGETS))
    else:
        backbone.requires_grad_(False)
    wrapper = build_wrapper(spec, backbone)
    wrapper.train()
    trainable = [p for p in wrapper.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=spec.learning_rate)
    total = spec.stage1_steps + spec.stage2_steps
    work = zoo.local_zoo_dir() / f".train-{spec.name}-{spec.digest()}"
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = work / "checkpoint.pt"
    step, losses, began = 0, [], time.perf_counter()
    names = [n for n, p in wrapper.named_parameters() if p.requires_grad]
    if checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=False)
        wrapper.load_state_dict(state["trainable"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        step, losses = state["step"], state["losses"]
    with tqdm(total=total, initial=step, desc=f"train {spec.name}", unit="step", disable=not show_progress) as bar:
        while step < total:
            stage2 = step >= spec.stage1_steps
            unroll = spec.unroll if stage2 else 2
            rng = random.Random(spec.seed * 1_000_003 + step)  # the step's sample, independent of resumes
            need = unroll * spec.segment + 1
            book = rng.choice([ids for ids in tokenized if len(ids) > need])
            offset = rng.randrange(len(book) - need)
            ids = torch.tensor([book[offset : offset + need]], device=loaded.device)
            loss = wrapper.stream_loss(ids, search=stage2)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(stage=2 if stage2 else 1, loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
            if step % spec.save_every == 0 or step == total:
                state_dict = wrapper.state_dict()
                tmp = checkpoint.with_suffix(".tmp")
                torch.save({"trainable": {n: state_dict[n] for n in names if n in state_dict}, "optimizer": optimizer.state_dict(),
                            "step": step, "losses": losses}, tmp)
                tmp.replace(checkpoint)
    merged = backbone.merge_and_unload() if (spec.lora_r and not spec.full) else backbone
    merged.eval()
    staging = work / "model"
    if staging.exists():
        shutil.rmtree(staging)
    merged.save_pretrained(staging)
    loaded.tokenizer.save_pretrained(staging)
    torch.save(wrapper.memory_state_dict(), staging / MEMORY_FILE)
    zoo.write_recipe(staging, {
        "description": f"{spec.model} with {spec.kind.upper()} memory (segment {spec.segment}), trained on PG-19 train books",
        "method": spec.kind, "memory_config": spec.method_args(), "base_model": spec.model,
        "base_identity": base.identity.as_dict(), "recipe": asdict(spec), "recipe_digest": spec.digest(),
        "data": {"books": [b for b, _ in books], "source": "pg19/train (Gutenberg boilerplate removed)"},
        "training": {"steps": step, "first_loss": losses[0] if losses else None,
                     "final_loss": sum(losses[-10:]) / max(1, len(losses[-10:])), "stage1_final_loss":
                     (sum(losses[max(0, spec.stage1_steps - 10): spec.stage1_steps]) / min(10, spec.stage1_steps)) if spec.stage1_steps else None,
                     "wall_time_s": time.perf_counter() - began, "finished_at": now()},
    })
    final = zoo.local_zoo_dir() / spec.name
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
    shutil.rmtree(work, ignore_errors=True)
    return spec.name
