"""``rmt``: Recurrent Memory Transformer (Bulatov et al. 2022), HMT's main baseline (PAPERS.md
§1), decoder-only form: each segment of ``segment`` tokens is read as ``[read memory,
segment, write memory]`` where the read memory is ``tokens`` (16) embeddings — learned for
the first segment, then the last hidden states at the previous segment's write positions —
and the write memory is ``tokens`` learned placeholder embeddings. Must be trained
(``harness train rmt``); ``checkpoint=`` / ``untrained=true`` as for ``hmt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harness.api import Capability
from harness.method import register_method
from methods.segment_memory import SegmentMemoryMethod, SegmentRecurrentLM, logits_of


@dataclass(frozen=True)
class RMTArgs:
    segment: int = 1024  # tokens per segment
    tokens: int = 16  # memory tokens read before and written after each segment
    checkpoint: str = ""  # zoo model holding trained RMT weights ("" = the run's model)
    untrained: bool = False  # random, untrained memory parameters, even if the model holds trained ones (ablation)

    def __post_init__(self) -> None:
        if self.segment < 2 or self.tokens < 1:
            raise ValueError("need segment >= 2 and tokens >= 1")


class RMTMemory(SegmentRecurrentLM):
    def __init__(self, backbone: nn.Module, segment: int, tokens: int) -> None:
        super().__init__(backbone, segment)
        scale = backbone.get_input_embeddings().weight.detach().std().item()
        self.read_init = nn.Parameter(torch.randn(tokens, self.hidden) * scale)
        self.write = nn.Parameter(torch.randn(tokens, self.hidden) * scale)
        self.tokens = tokens

    def initial_state(self, batch: int) -> torch.Tensor:
        return self.read_init.expand(batch, -1, -1)

    def prefix_embeddings(self, state: torch.Tensor, batch: int) -> torch.Tensor:
        return state

    def forward_segment(self, ids: torch.Tensor, state: torch.Tensor, search: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        batch = ids.shape[0]
        embeds = torch.cat([state.to(self.write.dtype), self.embed(ids), self.write.expand(batch, -1, -1)], dim=1)
        logits, hidden = logits_of(self.backbone, embeds)
        return logits[:, self.tokens : self.tokens + ids.shape[1]], hidden[:, -self.tokens :]


@register_method("rmt")
class RMT(SegmentMemoryMethod):
    """Memory tokens read before and written after each segment."""

    provides = frozenset({Capability.STREAM, Capability.GENERATE})
    Args = RMTArgs
    kind = "rmt"

    def build(self, backbone: nn.Module, args: RMTArgs) -> RMTMemory:
        return RMTMemory(backbone, args.segment, args.tokens)

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"segment": self.args.segment, "tokens": self.args.tokens}
