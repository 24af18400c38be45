"""``harness train dpo`` / ``harness train mdpo``: preference optimisation with a frozen
reference, and mDPO's conditional and anchor terms (Wang et al., arXiv 2406.11839; PAPERS.md §9).

Built on TRL's ``DPOTrainer`` (1.16): DPO's term is TRL's own sigmoid loss; ``MDPOTrainer``
adds, as the official ``mdpo_trainer.py`` does (equal weights):
- the conditional term −log σ(β·[(log π/π_ref)(y_w | m) − (log π/π_ref)(y_w | m_corrupted)]):
  the chosen answer must be likelier under the true condition than under a corrupted one;
- the anchor term −log σ(β·(log π/π_ref)(y_w | m) − δ): the chosen answer's reward stays positive.
At initialisation (policy = reference) each term is ln 2: mDPO's loss is 3·ln 2, DPO's ln 2.
``conditional=false`` / ``anchor=false`` drop a term (both: DPO).

The condition ``m`` is an image or, for text-only models, a passage:
- image rows (the mDPO / VLFeedback layout): ``{"img_path" or "image": path relative to the
  data file, "prompt", "chosen", "rejected"}``; a prompt holding the processor's image token
  is used as written (mDPO's rendered prompts), otherwise it becomes a user turn with the
  image. The corruption is the official ``RandomResizedCrop(scale=(0.01, 0.2))``: a crop
  keeping 1–20% of the area, resized back; one crop per example, drawn from the run seed and
  the example (the paper's single m_l; the official code draws policy and reference crops
  apart).
- passage rows: ``{"context", "prompt", "chosen", "rejected"}``; the user turn is the prompt with
  the passage at its ``{context}`` (else the passage, a blank line and the prompt); the
  corruption keeps a random contiguous 1–20% of the passage's words, drawn the same way
  (``training.passages``). ``--data pubmedqa`` builds such rows from the 500 PQA-L items
  outside PubMedQA's test split (``tasks.pubmedqa.pair_rows``), and ``--data shapes`` image rows of
  drawn shapes (``training.shapes``); the ``preference`` task measures models on held-out rows.
``blank_context=true`` trains with the image (a black one) or passage removed: the paper's
"no image" control.

LoRA on the policy (paper: r 64, α 128; the reference is the adapter-free base), lr 1e-5,
batch 32 (per-device × accumulation), 3 epochs, β 0.1, δ 0. Checkpoints every ``save_every``
steps; a rerun of the same recipe resumes from the last (optimizer, scheduler, RNG). The
result is a local zoo model ``<model>-<dpo|mdpo>`` (LoRA merged) with its recipe.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from harness import models, zoo
from harness.data import DataStore
from harness.errors import ArgumentError, DataCorruptError
from harness.store import now
from training.passages import corrupt_passage, example_rng, user_turn

CROP_SCALE = (0.01, 0.2)  # the official RandomResizedCrop scale: 1-20% of the area
CROP_RATIO = (3 / 4, 4 / 3)  # torchvision's default aspect ratios


@dataclass(frozen=True)
class PreferenceSpec:
    objective: Literal["dpo", "mdpo"]
    model: str
    data: str  # a JSON / JSONL file of preference rows (see the module docstring), "pubmedqa" or "shapes"
    conditional: bool = True  # mdpo: the conditional (corrupted image / passage) term
    anchor: bool = True  # mdpo: the anchor term
    beta: float = 0.1
    delta: float = 0.0  # anchor margin
    lora_r: int = 64  # 0: train the whole model
    lora_alpha: int = 128
    learning_rate: float = 1e-5
    batch_size: int = 32  # pairs per optimizer step
    device_batch: int = 4  # pairs per forward (batch_size must be a multiple)
    epochs: int = 3
    max_length: int = 1024  # tokens per prompt + answer (TRL keeps the start)
    blank_context: bool = False  # the "no image" control: train with the image / passage removed
    seed: int = 0
    save_every: int = 50
    limit: int | None = None  # train on the first this-many rows
    name: str = ""  # zoo name; default <model>-<objective>

    def __post_init__(self) -> None:
        if self.objective not in ("dpo", "mdpo"):
            raise ArgumentError(f"unknown preference objective '{self.objective}' (dpo or mdpo)")
        if self.batch_size < 1 or self.device_batch < 1 or self.batch_size % self.device_batch:
            raise ArgumentError("batch_size must be a positive multiple of device_batch")
        if self.epochs < 1 or self.lora_r < 0 or self.beta <= 0 or self.max_length < 16:
            raise ArgumentError("need epochs >= 1, lora_r >= 0, beta > 0 and max_length >= 16")
        if self.name:
            zoo.check_local_name(self.name)

    @property
    def zoo_name(self) -> str:
        """Default ``<model>-<objective>``, with ``-no<term>`` per dropped mDPO term and ``-blank`` for the control."""
        if self.name:
            return self.name
        dropped = "".join(f"-no{t}" for t in ("conditional", "anchor") if self.objective == "mdpo" and t not in self.terms)
        return f"{self.model}-{self.objective}{dropped}{'-blank' if self.blank_context else ''}"

    @property
    def terms(self) -> tuple[str, ...]:
        """mDPO's terms in use beside DPO's (none for dpo)."""
        if self.objective == "dpo":
            return ()
        return tuple(t for t, on in (("conditional", self.conditional), ("anchor", self.anchor)) if on)

    def digest(self, data_sha256: str) -> str:
        recipe = {k: v for k, v in asdict(self).items() if k not in ("name", "data")} | {"data_sha256": data_sha256}
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


# --- data ---------------------------------------------------------------------------------


def read_rows(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Preference rows from a JSON list or JSONL file, checked: every row holds prompt, chosen,
    rejected and one condition (an image path or a passage), all rows the same kind."""
    if not path.is_file():
        raise ArgumentError(f"no preference data at {path}")
    text = path.read_text(encoding="utf-8")
    try:
        rows = json.loads(text) if text.lstrip().startswith("[") else [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as error:
        raise DataCorruptError(f"{path}: not JSON / JSONL ({error})") from None
    rows = rows[:limit] if limit else rows
    if not rows:
        raise DataCorruptError(f"{path} holds no preference rows")
    kinds = set()
    for number, row in enumerate(rows, 1):
        missing = [k for k in ("prompt", "chosen", "rejected") if not isinstance(row.get(k), str)]
        if missing:
            raise DataCorruptError(f"{path} row {number}: missing {', '.join(missing)}")
        if "img_path" in row:
            row["image"] = row.pop("img_path")
        kind = "image" if isinstance(row.get("image"), str) else "passage" if isinstance(row.get("context"), str) else None
        if kind is None:
            raise DataCorruptError(f"{path} row {number}: needs an image path ('image' / 'img_path') or a passage ('context')")
        if kind == "image" and not (path.parent / row["image"]).is_file():
            raise DataCorruptError(f"{path} row {number}: no image at {path.parent / row['image']}")
        kinds.add(kind)
    if len(kinds) > 1:
        raise DataCorruptError(f"{path} mixes image and passage rows")
    return rows


def crop_box(width: int, height: int, rng: random.Random) -> tuple[int, int, int, int]:
    """torchvision ``RandomResizedCrop.get_params`` with scale (0.01, 0.2): a box (left, top,
    right, bottom). Written out because torchvision does not install offline beside our torch
    pin; the ten tries, log-uniform aspect ratio and central fallback are torchvision's."""
    area = width * height
    log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
    for _ in range(10):
        target = area * rng.uniform(*CROP_SCALE)
        ratio = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            top, left = rng.randint(0, height - h), rng.randint(0, width - w)
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < CROP_RATIO[0]:
        w, h = width, round(width / CROP_RATIO[0])
    elif in_ratio > CROP_RATIO[1]:
        h, w = height, round(height * CROP_RATIO[1])
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def corrupt_image(image: Any, rng: random.Random) -> Any:
    """The crop, resized back to the image's size (bilinear, as torchvision's default)."""
    from PIL import Image

    box = crop_box(image.width, image.height, rng)
    return image.crop(box).resize(image.size, Image.BILINEAR)


def passage_examples(rows: list[dict[str, Any]], spec: PreferenceSpec) -> list[dict[str, Any]]:
    """Conversational examples for TRL (the model's chat template renders them), each with its
    corrupted user turn."""
    out = []
    for index, row in enumerate(rows):
        passage = "" if spec.blank_context else row["context"]
        example = {"prompt": [{"role": "user", "content": user_turn(passage, row["prompt"])}],
                   "chosen": [{"role": "assistant", "content": row["chosen"]}],
                   "rejected": [{"role": "assistant", "content": row["rejected"]}]}
        if spec.terms and "conditional" in spec.terms:
            corrupted = corrupt_passage(row["context"], example_rng(spec.seed, index)) if not spec.blank_context else ""
            example["corrupted_prompt"] = [{"role": "user", "content": user_turn(corrupted, row["prompt"])}]
        out.append(example)
    return out


def image_examples(rows: list[dict[str, Any]], folder: Path, spec: PreferenceSpec, image_token: str) -> list[dict[str, Any]]:
    """Examples for TRL's vision collator: the image loaded (black for the control), the prompt
    as written when it holds the image token, else a user turn with the image."""
    from PIL import Image

    out = []
    for index, row in enumerate(rows):
        image = Image.open(folder / row["image"]).convert("RGB")
        if spec.blank_context:
            image = Image.new("RGB", image.size)
        if image_token in row["prompt"]:
            example = {"prompt": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"]}
        else:
            example = {"prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": row["prompt"]}]}],
                       "chosen": [{"role": "assistant", "content": [{"type": "text", "text": row["chosen"]}]}],
                       "rejected": [{"role": "assistant", "content": [{"type": "text", "text": row["rejected"]}]}]}
        example["images"] = [image]
        example["example_index"] = index
        out.append(example)
    return out


# --- the trainer --------------------------------------------------------------------------


def mdpo_trainer_class() -> type:
    """``MDPOTrainer``, a ``DPOTrainer`` subclass (built on first use: TRL imports are slow)."""
    import copy

    import torch
    import torch.nn.functional as F
    from accelerate.utils import is_peft_model
    from trl import DPOTrainer
    from trl.data_utils import _tokenize
    from trl.trainer.utils import use_adapter

    class MDPOTrainer(DPOTrainer):
        """DPO's loss from TRL, plus mDPO's conditional and anchor terms on the same forward passes."""

        def __init__(self, *args: Any, terms: tuple[str, ...] = (), delta: float = 0.0, corruption_seed: int = 0,
                     **kwargs: Any) -> None:
            self.terms, self.delta, self.corruption_seed = terms, delta, corruption_seed
            super().__init__(*args, **kwargs)
            if "conditional" in terms:
                self.data_collator = self._with_corrupted_batch(self.data_collator)

        # The condition's corruption rides along with each example: its user turn (passages,
        # tokenized here) or its index (images, cropped in the collator).
        def _set_signature_columns_if_needed(self) -> None:
            super()._set_signature_columns_if_needed()
            self._signature_columns = [*self._signature_columns, "corrupted_prompt_ids", "example_index"]

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            if "corrupted_prompt" not in dataset.column_names:
                return dataset

            def tokenize_corrupted(example):
                full = _tokenize(processing_class, example["prompt"], add_generation_prompt=True)["input_ids"]
                trimmed = len(full) - len(example["prompt_ids"])  # what TRL cut where prompt and answer merge
                ids = _tokenize(processing_class, example["corrupted_prompt"], add_generation_prompt=True)["input_ids"]
                return {"corrupted_prompt_ids": ids[: len(ids) - trimmed]}

            return dataset.map(tokenize_corrupted)

        def _with_corrupted_batch(self, collate):
            seed = self.corruption_seed
            vision = self._is_vision_dataset

            def collate_with_corruption(examples: list[dict[str, Any]]) -> dict[str, Any]:
                if vision:
                    fresh = [{k: (v if k == "images" else copy.deepcopy(v)) for k, v in e.items()} for e in examples]
                    corrupted = [{**{k: copy.deepcopy(v) for k, v in e.items() if k != "images"}, "rejected": copy.deepcopy(e["chosen"]),
                                  "images": [corrupt_image(e["images"][0], example_rng(seed, e["example_index"]))]} for e in examples]
                    batch, other = collate(fresh), collate(corrupted)
                else:
                    batch = collate(examples)
                    other = collate([{"prompt_ids": e["corrupted_prompt_ids"], "chosen_ids": e["chosen_ids"],
                                      "rejected_ids": e["chosen_ids"]} for e in examples])
                half = len(examples)  # rows [0, half) hold the chosen answers under the corrupted condition
                batch["corrupted"] = {k: v[:half] for k, v in other.items() if torch.is_tensor(v) and v.shape[0] == 2 * half}
                return batch

            return collate_with_corruption

        def _compute_loss(self, model, inputs, return_outputs):
            corrupted = inputs.pop("corrupted", None)
            if not self.terms:
                return super()._compute_loss(model, inputs, return_outputs)
            # DPO's forward passes (the policy's, then the reference's unless precomputed) are
            # captured rather than run again: TRL keeps the per-sequence log-probs to itself.
            captured: list[torch.Tensor] = []

            def capture(_module, _args, out) -> None:
                # A wrapper and the module it wraps both report one call: keep it once.
                if getattr(out, "log_probs", None) is not None and not (captured and captured[-1] is out.log_probs):
                    captured.append(out.log_probs)

            watched = {id(m): m for m in (model, self.model, self.ref_model) if m is not None}.values()
            hooks = [m.register_forward_hook(capture) for m in watched]
            try:
                result = super()._compute_loss(model, inputs, return_outputs)
            finally:
                for hook in hooks:
                    hook.remove()
            loss = result[0] if return_outputs else result
            seq_len = inputs["completion_mask"].shape[1] - 1
            policy_chosen = captured[0][:, -seq_len:].sum(dim=1).chunk(2)[0]
            ref_chosen = inputs["ref_chosen_logps"] if self.precompute_ref_logps else captured[1][:, -seq_len:].sum(dim=1).chunk(2)[0]
            chosen_reward = policy_chosen - ref_chosen
            mode = "train" if self.model.training else "eval"
            if "conditional" in self.terms:
                if corrupted is None:
                    raise RuntimeError("mDPO's conditional term needs the corrupted batch its collator adds")
                policy_corrupted, ref_corrupted = self._chosen_logps(model, corrupted)
                corrupted_reward = policy_corrupted - ref_corrupted
                conditional = -F.logsigmoid(self.beta * (chosen_reward - corrupted_reward)).mean()
                loss = loss + conditional
                self._metrics[mode]["mdpo/conditional_loss"].append(conditional.item())
                self._metrics[mode]["rewards/corrupted_chosen"].append((self.beta * corrupted_reward).mean().item())
                self._metrics[mode]["rewards/condition_accuracies"].append((chosen_reward > corrupted_reward).float().mean().item())
            if "anchor" in self.terms:
                anchor = -F.logsigmoid(self.beta * chosen_reward - self.delta).mean()
                loss = loss + anchor
                self._metrics[mode]["mdpo/anchor_loss"].append(anchor.item())
            return (loss, result[1]) if return_outputs else loss

        def _chosen_logps(self, model, batch: dict[str, Any]) -> tuple[Any, Any]:
            """Summed completion log-probs of a batch of chosen answers: (policy, reference)."""
            kwargs = {k: v for k, v in batch.items() if k != "completion_mask"} | {"use_cache": False}
            labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
            seq_len = batch["completion_mask"].shape[1] - 1
            policy = model(**kwargs, labels=labels, fused_lm_head=True).log_probs[:, -seq_len:].sum(dim=1)
            with torch.no_grad():
                if is_peft_model(self.model) and self.ref_model is None:
                    unwrapped = self.accelerator.unwrap_model(self.model)
                    with use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None):
                        reference = self.model(**kwargs, labels=labels, fused_lm_head=True).log_probs
                else:
                    reference = self.ref_model(**kwargs, labels=labels, fused_lm_head=True).log_probs
            return policy, reference[:, -seq_len:].sum(dim=1)

    return MDPOTrainer


def condition_of(rows: list[dict[str, Any]]) -> str:
    """"image" or "passage": what the (checked, single-kind) rows condition on."""
    return "image" if "image" in rows[0] else "passage"


def build_trainer(spec: PreferenceSpec, rows: list[dict[str, Any]], folder: Path, output_dir: Path,
                  show_progress: bool = False, base: models.ResolvedModel | None = None) -> tuple[Any, Any]:
    """(the TRL trainer for ``spec`` on ``rows``, the tokenizer or processor it uses); ``folder``
    holds the rows' images, ``output_dir`` its checkpoints."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig

    from training.lora import LORA_TARGETS

    base = base or models.resolve(spec.model)
    kind = condition_of(rows)
    if kind == "image" and base.identity.kind != "image-text-to-text":
        raise ArgumentError(f"image preference rows need an image-text-to-text model; '{spec.model}' is a {base.identity.kind}")
    if kind == "passage" and base.identity.kind != "causal-lm":
        raise ArgumentError(f"passage preference rows need a causal LM; '{spec.model}' is a {base.identity.kind}")
    loaded = models.load(base)
    processing_class = loaded.processor if kind == "image" else loaded.tokenizer
    if loaded.tokenizer.pad_token is None:
        loaded.tokenizer.pad_token = loaded.tokenizer.eos_token
    if kind == "image":
        examples = image_examples(rows, folder, spec, getattr(loaded.processor, "image_token", "<image>"))
    else:
        examples = passage_examples(rows, spec)
    torch.manual_seed(spec.seed)
    lora = None
    if spec.lora_r:
        # On a vision-language model only the language model is adapted (the vision tower has q/k/v too).
        targets: Any = LORA_TARGETS if kind == "passage" else rf".*language_model.*\.({'|'.join(LORA_TARGETS)})"
        lora = LoraConfig(r=spec.lora_r, lora_alpha=spec.lora_alpha, lora_dropout=0.0, task_type="CAUSAL_LM",
                          target_modules=targets)
    config = DPOConfig(
        output_dir=str(output_dir), num_train_epochs=spec.epochs, learning_rate=spec.learning_rate,
        per_device_train_batch_size=spec.device_batch, gradient_accumulation_steps=spec.batch_size // spec.device_batch,
        seed=spec.seed, data_seed=spec.seed, save_strategy="steps", save_steps=spec.save_every, save_total_limit=1,
        logging_steps=1, report_to=[], max_length=spec.max_length, beta=spec.beta, disable_tqdm=not show_progress,
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, gradient_checkpointing=False,
        lr_scheduler_type="linear", warmup_steps=0, remove_unused_columns=kind == "passage",
        bf16=False, fp16=False,  # float32 as the reward model trainer, and for the same reason (training/reward_model.py)
    )
    trainer = mdpo_trainer_class()(
        model=loaded.model, args=config, train_dataset=Dataset.from_list(examples), processing_class=processing_class,
        peft_config=lora, terms=spec.terms, delta=spec.delta, corruption_seed=spec.seed,
    )
    return trainer, processing_class


def preference_rows(spec: PreferenceSpec, data: DataStore) -> tuple[list[dict[str, Any]], Path, dict[str, Any]]:
    """(the rows ``spec.data`` names, the folder their images are relative to, what they are)."""
    if spec.data == "pubmedqa":
        from tasks.pubmedqa import PAIR_RULE, pair_rows

        rows = pair_rows(data, "train")[: spec.limit]
        return rows, Path.cwd(), {"source": "pubmedqa: PQA-L items outside the official test split", "rule": PAIR_RULE}
    if spec.data == "shapes":
        from training.shapes import default_set

        path = default_set() / "train.json"
        return read_rows(path, spec.limit), path.parent, {"source": "shapes: drawn shapes with right and wrong captions (training.shapes)"}
    path = Path(spec.data).expanduser().resolve()
    return read_rows(path, spec.limit), path.parent, {"path": str(path), "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def train_preference(spec: PreferenceSpec, data: DataStore, show_progress: bool = True) -> str:
    """Train (or resume, or reuse) the DPO / mDPO model; returns its zoo name."""
    from training.carry import keep_adapter, merge_adapter
    from training.clock import logged_mean_loss, train_resuming
    from training.lora import existing
    from training.reward_model import package_version

    rows, folder, source = preference_rows(spec, data)
    content = hashlib.sha256(json.dumps(rows, sort_keys=True).encode())
    for row in rows:
        if "image" in row:  # the pixels shape the weights as much as the text does
            content.update(zoo.cached_sha256(folder / row["image"]).encode())
    data_sha256 = content.hexdigest()
    digest = spec.digest(data_sha256)
    if existing(spec.zoo_name, digest):
        return spec.zoo_name
    base = models.resolve(spec.model)
    work = zoo.local_zoo_dir() / f".train-{spec.zoo_name}-{digest}"
    work.mkdir(parents=True, exist_ok=True)
    trainer, processing_class = build_trainer(spec, rows, folder, work / "checkpoints", show_progress, base)
    kind = condition_of(rows)
    training_seconds = train_resuming(trainer)
    trained = trainer.model
    staging = work / "model"
    if staging.exists():
        shutil.rmtree(staging)
    if spec.lora_r:
        keep_adapter(trained, staging, spec.model)
    merged = merge_adapter(trained) if spec.lora_r else trained
    merged.eval()
    merged.save_pretrained(staging)
    processing_class.save_pretrained(staging)
    history = [entry for entry in trainer.state.log_history if "loss" in entry]
    return zoo.install(staging, spec.zoo_name, {
        "description": f"{spec.model} trained with {spec.objective.upper()}"
                       + (f" ({' + '.join(('dpo', *spec.terms))})" if spec.objective == "mdpo" else "")
                       + f" on {len(rows)} {kind} preference pairs" + (" with the condition blanked (control)" if spec.blank_context else ""),
        "method": "base", "base_model": spec.model, "base_identity": base.identity.as_dict(),
        "recipe": asdict(spec), "recipe_digest": digest,
        "data": {**source, "rows_sha256": data_sha256, "pairs": len(rows), "condition": kind,
                 "corruption": "RandomResizedCrop scale (0.01, 0.2), resized back" if kind == "image" else
                 "a contiguous span of 1-20% of the passage's words", "corruption_seed": spec.seed},
        "training": {"steps": trainer.state.global_step, "train_loss": logged_mean_loss(trainer.state.log_history),
                     "first_loss": history[0]["loss"] if history else None, "last_loss": history[-1]["loss"] if history else None,
                     "log": [{k: v for k, v in entry.items() if isinstance(v, int | float)} for entry in history],
                     "wall_time_s": training_seconds, "finished_at": now(), "trl_version": package_version("trl"),
                     "precision": "float32"},
    }, work)

