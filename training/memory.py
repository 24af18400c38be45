"""``harness train hmt`` / ``harness train rmt``: train segment memory around a zoo model on
PG-19 training books or on synthetic recall (HMT, He et al.; PAPERS.md §1).

Data (``--data``):
- ``pg19`` (default): the PG-19 *train* books in the mirror (``pg19/train``; Gutenberg
  boilerplate removed as in ``tasks/pg19.py``); never the test books. Each step draws, with a
  seed derived from the run seed and the step, ``batch`` (book, offset) pairs, and takes
  ``unroll × segment + 1`` tokens from each.
- ``recall``: the ``memory-recall`` task's generator (a key at the start of segment 1, asked for
  at the end of the last segment; other draws than the task's items), the loss on the answer's
  key tokens only — the check that memory can carry information at all, on a tiny model.

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
import shutil
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

from tqdm.auto import tqdm

from harness import models, zoo
from harness.config import added_later, to_dict
from harness.data import DataStore
from harness.environment import device_description
from harness.errors import ArgumentError, DataCorruptError
from harness.store import now
from methods.segment_memory import MEMORY_FILE
from tasks.memory_recall import RecallLayout
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
    batch: int = added_later(1)  # sequences per step
    data: Literal["pg19", "recall"] = added_later("pg19")  # PG-19 train books, or synthetic recall
    recall_key_length: int = added_later(1)  # recall: key letters
    recall_alphabet: int = added_later(8)  # recall: key letters come from the first this-many capitals

    def __post_init__(self) -> None:
        if self.kind not in ("hmt", "rmt"):
            raise ArgumentError(f"unknown memory kind '{self.kind}'")
        if self.data not in ("pg19", "recall"):
            raise ArgumentError(f"unknown training data '{self.data}' (pg19 or recall)")
        if self.segment < 8 or self.unroll < 2 or self.stage1_steps < 0 or self.stage2_steps < 0 or self.batch < 1:
            raise ArgumentError("need segment >= 8, unroll >= 2, batch >= 1 and non-negative step counts")
        if self.data == "recall":
            try:
                self.recall_layout(2)
            except ValueError as error:
                raise ArgumentError(f"recall data: {error}") from None
        if self.stage1_steps + self.stage2_steps == 0:
            raise ArgumentError("nothing to train: both stages have 0 steps")
        if self.zoo_name:
            zoo.check_local_name(self.zoo_name)

    @property
    def name(self) -> str:
        return self.zoo_name or f"{self.model}-{self.kind}-L{self.segment}"

    def digest(self) -> str:
        # The name does not shape the weights; fields added later count only away from their
        # defaults, so models trained before they existed still match their recipe.
        recipe = {k: v for k, v in to_dict(self).items() if k != "zoo_name"}
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]

    def recall_layout(self, segments: int) -> RecallLayout:
        return RecallLayout(self.segment, segments, self.recall_key_length, self.recall_alphabet)

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


def draw_batch(spec: MemoryTrainSpec, step: int, segments: int, books: list[list[int]], loaded: Any) -> tuple[Any, Any]:
    """A step's token ids, (B, segments × segment + 1) of books or (B, segments × segment) of
    recall items, and which targets the loss reads (None: all); drawn from a seed of the run
    seed and the step alone, so resumes draw the same."""
    import torch

    rng = random.Random(spec.seed * 1_000_003 + step)
    if spec.data == "pg19":
        need = segments * spec.segment + 1
        long_enough = [ids for ids in books if len(ids) > need]
        rows = []
        for _ in range(spec.batch):
            book = rng.choice(long_enough)
            offset = rng.randrange(len(book) - need)
            rows.append(book[offset : offset + need])
        return torch.tensor(rows, device=loaded.device), None
    layout = spec.recall_layout(segments)
    rows, answer = [], []
    for _ in range(spec.batch):
        context, key = layout.example(rng)
        answer = loaded.tokenizer.encode(key, add_special_tokens=False)
        rows.append([loaded.prefix_token_id, *loaded.tokenizer.encode(context, add_special_tokens=False), *answer])
    if len({len(row) for row in rows}) > 1:
        raise ArgumentError(f"recall data needs a tokenizer with one token per character; {spec.model}'s is not")
    ids = torch.tensor(rows, device=loaded.device)
    scored = torch.zeros(ids.shape[0], ids.shape[1] - 1, dtype=torch.bool, device=ids.device)
    scored[:, -len(answer):] = True  # the targets that are the answer's key tokens
    return ids, scored


def build_wrapper(spec: MemoryTrainSpec, backbone):
    if spec.kind == "hmt":
        from methods.hmt import HMTArgs, build_hmt

        return build_hmt(backbone, HMTArgs(**spec.method_args(), untrained=True))
    from methods.rmt import RMTMemory

    return RMTMemory(backbone, spec.segment, spec.tokens)


def train_memory(spec: MemoryTrainSpec, data: DataStore, show_progress: bool = True, device: str = "cpu") -> str:
    """Train (or resume, or reuse) the memory model on ``device``; returns its zoo name."""
    import torch
    from peft import LoraConfig, get_peft_model

    from training.clock import seconds_since

    if lora.existing(spec.name, spec.digest()):
        return spec.name
    books = training_books(data) if spec.data == "pg19" else []
    base = models.resolve(spec.model)
    loaded = models.load(base, device)
    source = [loaded.tokenizer.encode(text, add_special_tokens=False) for _, text in books]
    torch.manual_seed(spec.seed)
    backbone = loaded.model
    if spec.full:
        backbone.requires_grad_(True)
    elif spec.lora_r:
        backbone = get_peft_model(backbone, LoraConfig(r=spec.lora_r, lora_alpha=2 * spec.lora_r, lora_dropout=0.0,
                                                       task_type="CAUSAL_LM", target_modules=lora.LORA_TARGETS))
    else:
        backbone.requires_grad_(False)
    wrapper = build_wrapper(spec, backbone).to(loaded.device)  # the memory's own parameters join the backbone
    wrapper.train()
    trainable = [p for p in wrapper.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=spec.learning_rate)
    total = spec.stage1_steps + spec.stage2_steps
    work = zoo.local_zoo_dir() / f".train-{spec.name}-{spec.digest()}"
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = work / "checkpoint.pt"
    step, losses, began, before = 0, [], time.perf_counter(), 0.0
    names = [n for n, p in wrapper.named_parameters() if p.requires_grad]
    if checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=False, map_location=loaded.device)  # resumable on another device
        wrapper.load_state_dict(state["trainable"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        step, losses, before = state["step"], state["losses"], state.get("seconds")
    with tqdm(total=total, initial=step, desc=f"train {spec.name}", unit="step", disable=not show_progress) as bar:
        while step < total:
            stage2 = step >= spec.stage1_steps
            ids, scored = draw_batch(spec, step, spec.unroll if stage2 else 2, source, loaded)
            loss = wrapper.stream_loss(ids, search=stage2, scored=scored)
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
                            "step": step, "losses": losses, "seconds": seconds_since(before, began)}, tmp)
                tmp.replace(checkpoint)
    merged = backbone.merge_and_unload() if (spec.lora_r and not spec.full) else backbone
    merged.eval()
    staging = work / "model"
    if staging.exists():
        shutil.rmtree(staging)
    merged.save_pretrained(staging)
    loaded.tokenizer.save_pretrained(staging)
    torch.save(wrapper.memory_state_dict(), staging / MEMORY_FILE)
    return zoo.install(staging, spec.name, {
        "description": f"{spec.model} with {spec.kind.upper()} memory (segment {spec.segment}), trained on "
                       + ("PG-19 train books" if spec.data == "pg19" else "synthetic recall"),
        "method": spec.kind, "memory_config": spec.method_args(), "base_model": spec.model,
        "base_identity": base.identity.as_dict(), "recipe": asdict(spec), "recipe_digest": spec.digest(),
        "data": ({"books": [b for b, _ in books], "source": "pg19/train (Gutenberg boilerplate removed)"} if spec.data == "pg19" else
                 {"source": "synthetic recall (tasks/memory_recall.py), answer tokens scored", "key_length": spec.recall_key_length,
                  "alphabet": spec.recall_alphabet, "question_segment": {"stage 1": 2, "stage 2": spec.unroll}}),
        "training": {"steps": step, "first_loss": losses[0] if losses else None,
                     "final_loss": sum(losses[-10:]) / max(1, len(losses[-10:])), "stage1_final_loss":
                     (sum(losses[max(0, spec.stage1_steps - 10): spec.stage1_steps]) / min(10, spec.stage1_steps)) if spec.stage1_steps else None,
                     "wall_time_s": seconds_since(before, began), "device": device_description(loaded.device), "finished_at": now()},
    }, work)
