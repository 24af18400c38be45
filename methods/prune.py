"""``prune``: unstructured magnitude pruning of the model's linear layers, as a baseline
backdoor defense (CleanGen, PAPERS.md §8, compares against pruning; the paper used Wanda,
this is the plain magnitude criterion the issue asks for).

In every linear layer inside the transformer (not embeddings, not the output head) the
``sparsity`` share of weights with the smallest absolute value is set to zero, per layer.
Default sparsity 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.method import MethodOptions, register_method
from harness.models import LoadedModel
from methods.base import BaseMethod, check_max_length
from methods.quantize import transformer_linears


@dataclass(frozen=True)
class PruneArgs:
    sparsity: float = 0.5  # share of each linear layer's weights zeroed by magnitude, in [0, 1)
    max_length: int | None = None  # context length used; default: the model's own

    def __post_init__(self) -> None:
        if not 0 <= self.sparsity < 1:
            raise ValueError("sparsity must be in [0, 1)")
        check_max_length(self.max_length)


@torch.no_grad()
def magnitude_prune(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    k = int(weight.numel() * sparsity)
    if k == 0:
        return weight
    threshold = weight.abs().flatten().kthvalue(k).values
    return torch.where(weight.abs() <= threshold, torch.zeros_like(weight), weight)


@register_method("prune")
class PruneMethod(BaseMethod):
    """Unstructured magnitude pruning of the transformer's linear layers (per layer)."""

    Args = PruneArgs
    runs_remote = False  # it changes the weights

    def __init__(self, model: LoadedModel, args: PruneArgs, options: MethodOptions) -> None:
        zeros = total = 0
        with torch.no_grad():
            for _, layer in transformer_linears(model.model):
                layer.weight.copy_(magnitude_prune(layer.weight, args.sparsity))
                zeros += int((layer.weight == 0).sum())
                total += layer.weight.numel()
        self.achieved = zeros / total if total else 0.0
        super().__init__(model, args, options)

    def describe(self) -> dict:
        return super().describe() | {"sparsity": self.args.sparsity, "achieved_sparsity": self.achieved}
