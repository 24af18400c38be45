"""``hmt``: Hierarchical Memory Transformer (He et al., arXiv 2405.06067; PAPERS.md §1) around
any causal LM of the zoo.

Per segment n of L tokens (``segment``, paper 1024):
1. *Representation*: the backbone reads ``[T, first j tokens of the segment, T]`` (T a
   learned summary embedding, j = ``summary``, default L/2); its last hidden state is the
   segment's summary S_n.
2. *Memory search*: S_n attends over the last N (``memories``, paper 300) cached memory
   embeddings (learned W_q, W_k, W_v; scaled dot-product) and gives the memory prompt P_n.
   Before any memory exists P_n = T; with search off (training stage 1) P_n is the last
   memory embedding.
3. *Segment*: the backbone reads ``[P_n, the last k embeddings of segment n-1 (sensory
   memory, ``sensory``, paper 32), the segment, P_n]``; the logits over the segment's tokens
   are the predictions and the last hidden state is the new memory embedding M_n, cached.

Added parameters: T and three d×d projections (0.5-1.3% of the backbone, as the paper says;
recorded in results). HMT must be trained (``harness train hmt``); ``checkpoint=`` names the
trained zoo model (default: the run's model, if it holds HMT weights); ``untrained=true``
runs the random memory as an ablation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harness.api import Capability
from harness.method import register_method
from methods.segment_memory import SegmentMemoryMethod, SegmentRecurrentLM, logits_of


@dataclass(frozen=True)
class HMTArgs:
    segment: int = 1024  # L, tokens per segment (paper 1024)
    sensory: int = 32  # k, embeddings of the previous segment carried as sensory memory (paper 32)
    memories: int = 300  # N, cached memory embeddings searched per segment (paper 300)
    summary: int | None = None  # j; default segment // 2
    checkpoint: str = ""  # zoo model holding trained HMT weights ("" = the run's model)
    untrained: bool = False  # random, untrained memory parameters, even if the model holds trained ones (ablation)

    def __post_init__(self) -> None:
        if self.segment < 2 or not 0 <= self.sensory < self.segment or self.memories < 1:
            raise ValueError("need segment >= 2, 0 <= sensory < segment, memories >= 1")
        if self.summary is not None and not 1 <= self.summary <= self.segment:
            raise ValueError("summary must be between 1 and segment")


class HMTMemory(SegmentRecurrentLM):
    def __init__(self, backbone: nn.Module, segment: int, sensory: int, memories: int, summary: int) -> None:
        super().__init__(backbone, segment)
        self.sensory, self.memories, self.summary = sensory, memories, summary
        scale = backbone.get_input_embeddings().weight.detach().std().item()
        self.summary_token = nn.Parameter(torch.randn(self.hidden) * scale)
        self.query = nn.Linear(self.hidden, self.hidden, bias=False)
        self.key = nn.Linear(self.hidden, self.hidden, bias=False)
        self.value = nn.Linear(self.hidden, self.hidden, bias=False)
        for layer in (self.query, self.key):
            nn.init.normal_(layer.weight, std=1 / math.sqrt(self.hidden))
        nn.init.eye_(self.value.weight)  # start by passing memories through unchanged

    def initial_state(self, batch: int) -> dict[str, Any]:
        return {"cache": [], "sensory": None, "batch": batch}

    def _prompt(self, ids: torch.Tensor, state: dict[str, Any], search: bool) -> torch.Tensor:
        batch = ids.shape[0]
        token = self.summary_token.to(self.query.weight.dtype).expand(batch, 1, -1)
        if not state["cache"]:
            return token
        if not search:
            return state["cache"][-1][:, None]
        head = self.embed(ids[:, : self.summary])
        _, hidden = logits_of(self.backbone, torch.cat([token, head, token], dim=1))
        query = self.query(hidden[:, -1])  # (B, d)
        cache = torch.stack(state["cache"], dim=1)  # (B, n, d)
        weights = torch.softmax(torch.einsum("bd,bnd->bn", query, self.key(cache)) / math.sqrt(self.hidden), dim=-1)
        return torch.einsum("bn,bnd->bd", weights, self.value(cache))[:, None]

    def prefix_embeddings(self, state: dict[str, Any], batch: int) -> torch.Tensor:
        token = self.summary_token.to(self.query.weight.dtype).expand(batch, 1, -1)
        prompt = state["cache"][-1][:, None] if state["cache"] else token
        return torch.cat([prompt] + ([state["sensory"]] if state["sensory"] is not None else []), dim=1)

    def forward_segment(self, ids: torch.Tensor, state: dict[str, Any], search: bool = True) -> tuple[torch.Tensor, dict[str, Any]]:
        prompt = self._prompt(ids, state, search)
        embeds = self.embed(ids)
        parts = [prompt] + ([state["sensory"]] if state["sensory"] is not None else []) + [embeds, prompt]
        logits, hidden = logits_of(self.backbone, torch.cat(parts, dim=1))
        offset = 1 + (state["sensory"].shape[1] if state["sensory"] is not None else 0)
        # Copies, not views: a view keeps its whole segment's tensor alive, and N cached views
        # made memory grow with the input (64K tokens: +462 MB vs +110 MB at 8K).
        cache = (state["cache"] + [hidden[:, -1].clone()])[-self.memories :]
        sensory = embeds[:, -self.sensory :].clone() if self.sensory else None
        return logits[:, offset : offset + ids.shape[1]], {"cache": cache, "sensory": sensory, "batch": state["batch"]}


@register_method("hmt")
class HMT(SegmentMemoryMethod):
    """Hierarchical memory (sensory, memory embedding, search over cached memories) per segment."""

    provides = frozenset({Capability.STREAM, Capability.GENERATE})
    Args = HMTArgs
    kind = "hmt"

    def build(self, backbone: nn.Module, args: HMTArgs) -> HMTMemory:
        return build_hmt(backbone, args)

    def describe(self) -> dict[str, Any]:
        a = self.args
        return super().describe() | {"segment": a.segment, "sensory": a.sensory, "memories": a.memories,
                                     "summary": a.summary or a.segment // 2}


def build_hmt(backbone: nn.Module, args: HMTArgs) -> HMTMemory:
    return HMTMemory(backbone, args.segment, args.sensory, args.memories, args.summary or args.segment // 2)
