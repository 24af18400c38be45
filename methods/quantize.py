"""``quantize``: weight-only round-to-nearest quantization of the model's linear layers, as a
baseline backdoor defense (CleanGen, PAPERS.md §8, compares against 4-bit quantization).

Each linear weight (not embeddings, not the output head) is split into groups of
``group_size`` inputs per output row; each group is scaled by its absolute maximum and
rounded to the symmetric ``bits``-bit grid, then stored back in the model's dtype. That is
simulated quantization: the numbers are exactly what a bits-bit RTN kernel would multiply
with (GPTQ/AWQ-free, no calibration data), but no int kernel runs, so it costs no speed.
Written by hand because bitsandbytes' 4/8-bit layers need CUDA and this must run on CPUs.
Defaults: 4 bits, groups of 128.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.method import MethodOptions, register_method
from harness.models import LoadedModel
from methods.base import BaseMethod, check_max_length


@dataclass(frozen=True)
class QuantizeArgs:
    bits: int = 4  # bits per weight on the symmetric RTN grid, 2..8 (CleanGen compares 4)
    group_size: int = 128  # input columns sharing one absmax scale per output row
    max_length: int | None = None  # context length used; default: the model's own

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise ValueError("bits must be between 2 and 8")
        if self.group_size < 1:
            raise ValueError("group_size must be positive")
        check_max_length(self.max_length)


def transformer_linears(model: torch.nn.Module) -> list[tuple[str, torch.nn.Linear]]:
    """The linear layers inside the transformer blocks (not the output head)."""
    head = model.get_output_embeddings()
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and module is not head]


@torch.no_grad()
def quantize_rtn(weight: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    rows, columns = weight.shape
    pad = (-columns) % group_size
    grouped = torch.nn.functional.pad(weight.float(), (0, pad)).reshape(rows, -1, group_size)
    levels = 2 ** (bits - 1) - 1
    scale = grouped.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / levels
    quantized = (grouped / scale).round().clamp(-levels, levels) * scale
    return quantized.reshape(rows, -1)[:, :columns].to(weight.dtype)


@register_method("quantize")
class QuantizeMethod(BaseMethod):
    """Weight-only RTN quantization (simulated, group-wise) of the transformer's linear layers."""

    Args = QuantizeArgs
    runs_remote = False  # it changes the weights

    def __init__(self, model: LoadedModel, args: QuantizeArgs, options: MethodOptions) -> None:
        self.n_quantized = 0
        with torch.no_grad():
            for _, layer in transformer_linears(model.model):
                layer.weight.copy_(quantize_rtn(layer.weight, args.bits, args.group_size))
                self.n_quantized += 1
        super().__init__(model, args, options)

    def describe(self) -> dict:
        return super().describe() | {"bits": self.args.bits, "group_size": self.args.group_size,
                                     "layers_quantized": self.n_quantized, "kind": "simulated weight-only RTN"}
