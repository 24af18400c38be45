"""Made models that outlive the machine. A LoRA-trained zoo model is carried in the repository
as its adapter (LoRA matrices and any head trained in full) plus everything of its folder but
the merged weights: config, tokenizer, recipe. For SmolLM2-135M's reward model that is ~23 MB
instead of 540. Another machine rebuilds it by merging the adapter into the same base.

- ``harness publish --model NAME --to models/`` carries a zoo model into ``models/NAME/``
  with ``harness_carried.json``: the sha256 of every carried file and of the merged weights.
- ``harness train restore models/NAME`` rebuilds it into the local zoo. It installs nothing
  unless the carried files are intact, the base is the one it was trained on, and the rebuilt
  weights hash to the carried sha256. Then runs scored by the model keep their ids.

The merge is the trainers' own (``merge_adapter``: exact elementwise steps in a fixed order, so
the same on every CPU), on the base in float32, saved by ``save_pretrained``: the bytes match
where the packages are the ones in the recipe's ``made_with``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness import models, zoo
from harness.data import sha256_file
from harness.errors import ArgumentError, ModelLoadError
from harness.identity import IDENTITY_FILE, weight_files
from harness.store import atomic_write_json, staged_folder

ADAPTER = "adapter"
CARRIED_FILE = zoo.CARRIED_FILE


def keep_adapter(peft_model: Any, staging: Path, base_model: str) -> None:
    """Save a LoRA model's adapter into ``staging/adapter``. Call it before the merge, which
    folds the LoRA matrices into the base and removes them. The adapter names its base by zoo
    name, not by this machine's cache path (restore loads the base itself)."""
    for config in peft_model.peft_config.values():
        config.base_model_name_or_path = base_model
    peft_model.save_pretrained(staging / ADAPTER)
    (staging / ADAPTER / "README.md").unlink(missing_ok=True)  # peft's blank model card


def merge_adapter(peft_model: Any) -> Any:
    """Fold a LoRA model's adapters into its base weights and return the base model (with any
    head trained in full in place), as ``merge_and_unload`` does, but bit for bit the same on
    every CPU. peft computes each update as a matrix product B @ A, whose float sums a BLAS may
    order by the CPU's vector width; here each update is the sum of its rank's outer products,
    added in rank order, every step an exactly rounded elementwise operation. A model rebuilt
    from its carried adapter on another machine then has the weights it was trained to."""
    import torch
    from peft.tuners.lora.layer import Linear as LoraLinear
    from peft.tuners.lora.layer import LoraLayer

    with torch.no_grad():
        for name, module in peft_model.named_modules():
            if not isinstance(module, LoraLayer):
                continue
            if not isinstance(module, LoraLinear) or any(module.use_dora.values()):
                raise ArgumentError(f"{name}: only plain LoRA on linear layers is merged exactly; this is a {type(module).__name__}")
            weight = module.get_base_layer().weight
            for adapter in module.active_adapters:
                a, b = module.lora_A[adapter].weight.float(), module.lora_B[adapter].weight.float()
                delta = torch.zeros(b.shape[0], a.shape[1], dtype=torch.float32, device=b.device)
                for k in range(a.shape[0]):
                    delta += torch.outer(b[:, k], a[k])
                delta = delta.T if module.fan_in_fan_out else delta
                weight += (delta * module.scaling[adapter]).to(weight.dtype)
    return peft_model.unload()


def _carried_files(folder: Path) -> list[Path]:
    """Every file of a zoo folder but its merged weights and its cached identity (rebuilt on restore)."""
    weights = set(weight_files(folder))
    return sorted(p for p in folder.rglob("*") if p.is_file() and p not in weights and p.name != IDENTITY_FILE)


def _copy(source: Path, dest: Path, relatives: Iterable[str]) -> None:
    for relative in relatives:
        (dest / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / relative, dest / relative)


def carry_model(name: str, dest: Path) -> Path:
    """Copy the zoo model ``name`` into ``dest/name`` without its merged weights; returns that folder."""
    entry = zoo.local_zoo().get(name)
    if entry is None or entry.path is None:
        raise ArgumentError(f"'{name}' is not a model the harness made (local zoo: {', '.join(sorted(zoo.local_zoo())) or 'empty'})")
    folder = Path(entry.path)
    if not (folder / ADAPTER).is_dir():
        raise ArgumentError(f"zoo model '{name}' kept no adapter (trained in full, with extra modules, or made before "
                            "adapters were kept): only its full weights could carry it")
    made = zoo.recipe(folder) or {}
    if "base_model" not in made or "base_identity" not in made:
        raise ArgumentError(f"zoo model '{name}' has no base model in its recipe: nothing to merge its adapter into")
    with staged_folder(dest / name) as staging:
        files = {file.relative_to(folder).as_posix(): sha256_file(file) for file in _carried_files(folder)}
        _copy(folder, staging, files)
        atomic_write_json(staging / CARRIED_FILE, {
            "model": name, "model_kind": entry.model_kind, "base_model": made["base_model"],
            "base_weights_sha256": made["base_identity"]["weights_sha256"],
            "weights": {file.name: zoo.cached_sha256(file) for file in weight_files(folder)},
            # the command from the repository root, where models are carried by convention
            "files": files, "restore": f"harness train restore {(zoo.CARRIED_MODELS / name).as_posix()}",
        })
    return dest / name


def check_carried(folder: Path) -> dict[str, Any]:
    """A carried model's record, or an error naming the first file that is missing or altered."""
    try:
        carried = json.loads((folder / CARRIED_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise ArgumentError(f"{folder} is not a carried model (no readable {CARRIED_FILE}; see 'harness publish --model')") from None
    for relative, sha in carried["files"].items():
        if not (folder / relative).is_file() or sha256_file(folder / relative) != sha:
            raise ArgumentError(f"{folder}: {relative} is missing or altered (its sha256 is not the carried one)")
    return carried


def restore_model(folder: Path) -> str:
    """Rebuild a carried model into the local zoo; returns its zoo name."""
    import torch
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoModelForSequenceClassification

    carried = check_carried(folder)
    name = zoo.check_local_name(carried["model"])
    here = zoo.recipe(name)
    if here is not None:
        if here == zoo.recipe(folder):
            return name  # already here, made by the same recipe
        raise ArgumentError(f"zoo model '{name}' exists with another recipe; delete {zoo.local_zoo_dir() / name} to restore this one")
    base = models.resolve(carried["base_model"])
    if base.identity.weights_sha256 != carried["base_weights_sha256"]:
        raise ModelLoadError(f"'{name}' was trained on {carried['base_model']} with weights {carried['base_weights_sha256'][:12]}…; "
                             f"this machine's has {base.identity.weights_sha256[:12]}…")
    model_class = {"causal-lm": AutoModelForCausalLM, "sequence-classifier": AutoModelForSequenceClassification,
                   "image-text-to-text": AutoModelForImageTextToText}[carried["model_kind"]]
    # The carried config, not the base's: it holds what the trainer set (a scalar head, the pad token).
    model = model_class.from_pretrained(base.path, config=AutoConfig.from_pretrained(folder), dtype=torch.float32)
    merged = merge_adapter(PeftModel.from_pretrained(model, folder / ADAPTER))
    merged.eval()
    with staged_folder(zoo.local_zoo_dir() / name) as staging:
        merged.save_pretrained(staging / "merged")
        for file, sha in carried["weights"].items():
            rebuilt = staging / "merged" / file
            if not rebuilt.is_file() or sha256_file(rebuilt) != sha:
                raise ModelLoadError(f"the rebuilt {file} of '{name}' is not the carried one (its sha256 differs): the packages "
                                     "or CPU differ from its recipe's made_with; retrain it with its recipe")
            rebuilt.rename(staging / file)
        shutil.rmtree(staging / "merged")
        _copy(folder, staging, carried["files"])
    return name
