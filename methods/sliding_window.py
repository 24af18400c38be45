"""``sliding-window``: the model never attends to more than ``window`` tokens (the segment
length L) — HMT's baseline at equal segment length (He et al.; PAPERS.md §1).

Long text is scored in windows of ``window`` tokens that advance by ``stride`` tokens
(default ``window // 2``): each scored token sees between ``window - stride`` and ``window``
tokens of context, at a cost of ``window / stride`` forward tokens per scored token.
Generation keeps the last ``window - max_new_tokens`` prompt tokens. A task's own window and
stride are replaced by the method's, so every task runs at the same segment length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from harness.api import Capability, GenerateRequest, GenerateResult, StreamRequest, StreamResult
from harness.lm import CausalLM
from harness.method import Method, MethodOptions, register_method
from harness.models import LoadedModel


@dataclass(frozen=True)
class SlidingWindowArgs:
    window: int = 1024  # the paper's segment length L
    stride: int | None = None  # default window // 2

    def __post_init__(self) -> None:
        if self.window < 2:
            raise ValueError("window must be at least 2 tokens")
        if self.stride is not None and not 1 <= self.stride <= self.window:
            raise ValueError("stride must be between 1 and window")


@register_method("sliding-window")
class SlidingWindow(Method):
    """Attend to at most ``window`` tokens: rolling windows for scoring, truncated prompts for generation."""

    provides = frozenset({Capability.STREAM, Capability.GENERATE})
    Args = SlidingWindowArgs

    def __init__(self, model: LoadedModel, args: SlidingWindowArgs, options: MethodOptions) -> None:
        super().__init__(model, args, options)
        self.lm = CausalLM(model, self.cost, options.batch_size, args.window, options.seed, options.show_progress)
        self.stride = args.stride or max(1, args.window // 2)

    def score_stream(self, requests: Sequence[StreamRequest]) -> list[StreamResult]:
        return self.lm.score_stream([replace(r, window=self.args.window, stride=self.stride) for r in requests])

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        return self.lm.generate(requests)

    def describe(self) -> dict[str, Any]:
        return {"window": self.args.window, "stride": self.stride}
