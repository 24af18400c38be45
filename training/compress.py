"""``harness compress``: prune a model and write it as a local zoo model with Endor's sparse
store (Endor, Joo et al., PAPERS.md §10, which prunes before it stores; no public code).

Pruning acts on the weight matrices of the decoder layers' linear maps; embeddings and the
output head stay dense. Two criteria, as locuslab/wanda's ``lib/prune.py`` has them:

- ``magnitude`` (``prune_magnitude``): in each matrix the ``sparsity`` share of weights with
  the smallest |W| is zeroed (exactly that many: ties broken by position, where the official
  ``<=`` threshold may zero a few more).
- ``wanda`` (Sun et al. 2023, ``prune_wanda``): score |W_ij|·‖X_j‖₂ with X the layer's inputs
  over the calibration tokens; the lowest ``sparsity`` share of each output row is zeroed.
  Layers are pruned in order, each calibrated on what the already-pruned layers before it
  output, as the official code does. Calibration: ``calibration_samples`` windows of
  ``calibration_tokens`` tokens from the PG-19 *train* books of the mirror (the paper draws 128
  C4 sequences of the model's context; C4 is not mirrored here), drawn by ``seed``.

Output (``$HARNESS_CACHE_DIR/zoo/<name>``): the pruned weights as an ordinary safetensors
checkpoint (so every method, and Accelerate's offloading, loads exactly these weights), the
tokenizer, the recipe, and the store ``endor/<format>-<dtype>/`` that ``--method endor`` (bitmap)
or ``--method offload`` (dense) streams. Written in a staging folder and renamed into place;
compressing again with the same pruning and another format or dtype adds that store.
Defaults: 50% sparsity, magnitude, bitmap, float32, 128 × 512 calibration tokens, seed 0.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from harness import models, progress, zoo
from harness.data import DataStore
from harness.errors import ArgumentError
from harness.store import now, staged_folder
from methods.bitmap_store import DTYPES, StoreReader
from methods.endor import STORE_FOLDER, decoder_layers, write_model_store

PRUNERS = ("magnitude", "wanda")
FORMATS = ("bitmap", "dense")


@dataclass(frozen=True)
class CompressSpec:
    model: str  # zoo model, local folder or Hugging Face id to prune
    sparsity: float = 0.5  # share of each pruned matrix's weights set to zero, in [0, 1)
    prune: str = "magnitude"  # magnitude or wanda
    format: str = "bitmap"  # the store written beside the checkpoint: bitmap (endor) or dense (offload)
    dtype: str = "float32"  # the store's value dtype: float32, float16 or bfloat16
    calibration_samples: int = 128  # wanda: calibration windows
    calibration_tokens: int = 512  # wanda: tokens per window
    calibration_batch: int = 8  # wanda: windows per forward pass (no effect on the result)
    seed: int = 0  # wanda: which windows
    name: str = ""  # zoo name; default <model>-<prune><sparsity%>

    def __post_init__(self) -> None:
        if not 0 <= self.sparsity < 1:
            raise ArgumentError(f"--sparsity must be in [0, 1), got {self.sparsity}")
        if self.prune not in PRUNERS:
            raise ArgumentError(f"--prune must be one of {', '.join(PRUNERS)}, got '{self.prune}'")
        if self.format not in FORMATS:
            raise ArgumentError(f"--format must be one of {', '.join(FORMATS)}, got '{self.format}'")
        if self.dtype not in DTYPES:
            raise ArgumentError(f"--dtype must be one of {', '.join(DTYPES)}, got '{self.dtype}'")
        if self.calibration_samples < 1 or self.calibration_tokens < 2 or self.calibration_batch < 1:
            raise ArgumentError("calibration samples, tokens and batch must be positive (tokens at least 2)")

    def zoo_name(self) -> str:
        base = self.model.rstrip("/").split("/")[-1]
        return self.name or f"{base}-{self.prune}{round(self.sparsity * 100)}"

    def pruning(self) -> dict[str, Any]:
        """What determines the pruned weights (the store's format and dtype do not)."""
        chosen = {"model": self.model, "sparsity": self.sparsity, "prune": self.prune}
        if self.prune == "wanda":
            chosen |= {"calibration_samples": self.calibration_samples, "calibration_tokens": self.calibration_tokens,
                       "seed": self.seed, "calibration_data": "pg19/train"}
        return chosen

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.pruning(), sort_keys=True).encode()).hexdigest()[:16]


def prune_lowest(scores: torch.Tensor, weight: torch.Tensor, sparsity: float, per_row: bool) -> int:
    """Zero the weights with the lowest scores, in place: the ``sparsity`` share of the whole
    matrix or of each row. Returns how many were zeroed."""
    if per_row:
        k = int(weight.shape[1] * sparsity)
        order = torch.sort(scores, dim=1, stable=True).indices[:, :k]
        weight.scatter_(1, order, 0.0)
        return k * weight.shape[0]
    k = int(weight.numel() * sparsity)
    order = torch.sort(scores.reshape(-1), stable=True).indices[:k]
    weight.view(-1)[order] = 0.0
    return k


def layer_linears(layer: torch.nn.Module) -> list[tuple[str, torch.nn.Linear]]:
    return [(n, m) for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear)]


@torch.no_grad()
def magnitude_prune(model: torch.nn.Module, sparsity: float) -> None:
    _, layers = decoder_layers(model)
    with progress.bar(total=len(layers), desc="magnitude pruning", unit="layer") as bar:
        for layer in layers:
            for _, linear in layer_linears(layer):
                prune_lowest(linear.weight.abs(), linear.weight, sparsity, per_row=False)
            bar.update(1)


class _StopForward(Exception):
    pass


@torch.no_grad()
def wanda_prune(model: torch.nn.Module, windows: torch.Tensor, sparsity: float, batch: int) -> None:
    """Wanda, layer by layer on the calibration windows (n × tokens ids)."""
    _, layers = decoder_layers(model)
    batches = list(windows.split(batch))
    # Each layer's keyword inputs (masks, rotary tables): they depend on positions, not weights,
    # so one pass over the first batch gives them for every batch of that shape.
    layer_kwargs: dict[int, dict[str, Any]] = {}
    first_inputs: list[torch.Tensor] = []

    def keep_kwargs(index: int):
        def hook(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            layer_kwargs.setdefault(index, {k: v for k, v in kwargs.items() if k != "hidden_states"})
        return hook

    def stop_at_first(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        first_inputs.append(args[0] if args else kwargs["hidden_states"])
        raise _StopForward

    handles = [layer.register_forward_pre_hook(keep_kwargs(i), with_kwargs=True) for i, layer in enumerate(layers)]
    model(input_ids=batches[0], use_cache=False)
    for handle in handles:
        handle.remove()
    handle = layers[0].register_forward_pre_hook(stop_at_first, with_kwargs=True)
    for ids in batches:
        try:
            model(input_ids=ids, use_cache=False)
        except _StopForward:
            pass
    handle.remove()

    hidden = first_inputs
    with progress.bar(total=len(layers), desc="wanda pruning", unit="layer") as bar:
        for index, layer in enumerate(layers):
            hidden = _wanda_layer(layer, layer_kwargs[index], hidden, sparsity)
            bar.update(1)


@torch.no_grad()
def _wanda_layer(layer: torch.nn.Module, kwargs: dict[str, Any], hidden: list[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
    """Prune one layer by Wanda's score on its inputs; return its outputs (the next layer's inputs)."""
    linears = layer_linears(layer)
    squares = {name: torch.zeros(linear.in_features, dtype=torch.float64) for name, linear in linears}

    def accumulate(name: str):
        def hook(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
            flat = args[0].reshape(-1, args[0].shape[-1]).double()
            squares[name] += (flat * flat).sum(dim=0).cpu()
        return hook

    hooks = [linear.register_forward_hook(accumulate(name)) for name, linear in linears]
    for states in hidden:
        layer(states, **kwargs)
    for hook in hooks:
        hook.remove()
    for name, linear in linears:
        scores = linear.weight.abs().double() * squares[name].sqrt().to(linear.weight.device)
        prune_lowest(scores, linear.weight, sparsity, per_row=True)
    outputs = [layer(states, **kwargs) for states in hidden]
    return [out[0] if isinstance(out, tuple) else out for out in outputs]


def calibration_windows(tokenizer: Any, data: DataStore, samples: int, tokens: int, seed: int) -> torch.Tensor:
    """``samples`` windows of ``tokens`` tokens from PG-19 train books, drawn by ``seed``."""
    from training.memory import training_books

    books = training_books(data)
    rng = random.Random(seed)
    rows = []
    while len(rows) < samples:
        _, text = books[rng.randrange(len(books))]
        start = rng.randrange(max(1, len(text) - tokens * 8))
        ids = tokenizer(text[start : start + tokens * 8]).input_ids
        if len(ids) >= tokens:
            rows.append(ids[:tokens])
    return torch.tensor(rows)


def matrix_sparsity(model: torch.nn.Module) -> dict[str, float]:
    _, layers = decoder_layers(model)
    zeros = total = 0
    shares = []
    for layer in layers:
        for _, linear in layer_linears(layer):
            zero = int((linear.weight == 0).sum())
            zeros, total = zeros + zero, total + linear.weight.numel()
            shares.append(zero / linear.weight.numel())
    return {"achieved": zeros / total if total else 0.0, "min_per_matrix": min(shares, default=0.0),
            "max_per_matrix": max(shares, default=0.0), "matrices": len(shares), "pruned_parameters": total}


def store_sizes(folder: Path) -> dict[str, int]:
    reader = StoreReader(folder)
    try:
        return reader.sizes()
    finally:
        reader.close()


def compress(spec: CompressSpec, data: DataStore, show_progress: bool = True) -> str:
    """Prune (or reuse the pruned model) and write the asked store; returns the zoo name."""
    name = spec.zoo_name()
    made = zoo.recipe(name)
    final = zoo.local_zoo_dir() / name
    store_name = f"{spec.format}-{spec.dtype}"
    if made is not None:
        if made.get("recipe_digest") != spec.digest():
            raise ArgumentError(f"zoo model '{name}' exists with another recipe; pass --name or delete {final}")
        if not (final / STORE_FOLDER / store_name / "endor.json").is_file():
            loaded = models.load(models.resolve(str(final), "float32"))
            write_model_store(loaded.model, final / STORE_FOLDER / store_name, spec.format, spec.dtype)  # type: ignore[arg-type]
            made["store"] = made.get("store", {}) | {store_name: store_sizes(final / STORE_FOLDER / store_name)}
            zoo.write_recipe(final, made)
        return name
    began = time.perf_counter()
    base = models.resolve(spec.model, "float32")
    loaded = models.load(base)
    if spec.prune == "wanda":
        windows = calibration_windows(loaded.tokenizer, data, spec.calibration_samples, spec.calibration_tokens, spec.seed)
        wanda_prune(loaded.model, windows, spec.sparsity, spec.calibration_batch)
    else:
        magnitude_prune(loaded.model, spec.sparsity)
    with staged_folder(final) as staging:
        loaded.model.save_pretrained(staging)
        loaded.tokenizer.save_pretrained(staging)
        write_model_store(loaded.model, staging / STORE_FOLDER / store_name, spec.format, spec.dtype)  # type: ignore[arg-type]
        zoo.write_recipe(staging, {
            "description": f"{spec.model} pruned to {spec.sparsity:.0%} by {spec.prune}, with an Endor {spec.format} store",
            "made_by": "harness compress", "base_model": spec.model, "base_identity": base.identity.as_dict(),
            "recipe": asdict(spec), "recipe_digest": spec.digest(), "pruning": spec.pruning(),
            "sparsity": matrix_sparsity(loaded.model), "store": {store_name: store_sizes(staging / STORE_FOLDER / store_name)},
            "wall_time_s": round(time.perf_counter() - began, 1), "finished_at": now(),
        })
    return name
