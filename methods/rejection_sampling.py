"""``rejection-sampling``: item-level rejection sampling under a reward model (a CARDS
baseline, PAPERS.md §5; official code ``rs_generate`` in lblaoke/CARDS).

Whole answers are sampled (top-k 40 at temperature β) and each is accepted with probability
min(1, exp((r − r*)/β)) (``acceptance=hard``: r ≥ r*); after ``max_rejections`` rejections the
best answer seen is taken. r* is ``reward_target`` or, by default, a quantile of the reward
model's scores on held-out chosen answers (recorded by ``harness train reward-model``).
The official code decodes every sample to ``max_new_tokens`` tokens; here a sample ends at
EOS (``eos_stop=false`` for the official behaviour). The policy's prompt cache is reused.

Defaults: β 0.8 (the official configs' temperature), top-k 40, 20 rejections, soft acceptance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from harness.api import GenerateRequest
from harness.method import MethodOptions, register_method
from harness.models import LoadedModel
from methods.reward_guided import RewardGuidedMethod, check_common, messages_of, require_reward_model, reward_target


@dataclass(frozen=True)
class RejectionSamplingArgs:
    reward_model: str = ""  # guiding reward model: zoo name, folder or HF id
    reward_target: float | None = None  # r*; default: target_quantile of the RM's held-out chosen rewards
    target_quantile: float = 0.5  # which recorded quantile is r* when reward_target is not given
    beta: float = 0.8  # sampling temperature and the soft acceptance's scale
    top_k: int = 40  # sampling: the k most likely tokens
    acceptance: Literal["soft", "hard"] = "soft"  # soft: accept with min(1, exp((r - r*)/beta)); hard: r >= r*
    max_rejections: int = 20  # after this many rejections the best answer seen is taken
    eos_stop: bool = True  # end a sample at EOS (the official code always decodes max_new_tokens)

    def __post_init__(self) -> None:
        require_reward_model(self.reward_model, "rejection-sampling")
        check_common(self.top_k, self.beta)
        if self.max_rejections < 0:
            raise ValueError("max_rejections must be >= 0")


def accepts(reward: float, threshold: float, beta: float, acceptance: str, generator: torch.Generator) -> bool:
    """The official accept check: hard r >= thr, or soft with probability min(1, exp((r - thr)/beta))."""
    if acceptance == "hard":
        return reward >= threshold
    return float(torch.rand((), generator=generator)) < min(1.0, math.exp(min(0.0, (reward - threshold) / beta)))


@register_method("rejection-sampling")
class RejectionSamplingMethod(RewardGuidedMethod):
    """Item-level rejection sampling: whole answers accepted against the reward threshold r*."""

    Args = RejectionSamplingArgs

    def __init__(self, model: LoadedModel, args: RejectionSamplingArgs, options: MethodOptions) -> None:
        super().__init__(model, args, options)
        self.target, self.target_reason = reward_target(args.reward_model, args.reward_target, args.target_quantile)

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"reward_target": self.target, "reward_target_reason": self.target_reason,
                                     "beta": self.args.beta, "top_k": self.args.top_k, "acceptance": self.args.acceptance,
                                     "max_rejections": self.args.max_rejections, "eos_stop": self.args.eos_stop}

    def decode(self, request: GenerateRequest, prompt: list[int]) -> tuple[list[int], dict[str, Any]]:
        decoder, generator = self.decoder(), self.generator(prompt, "rejection-sampling")
        first = decoder.feed(prompt)[-1]
        state = self.reward.start(messages_of(request))
        best: tuple[float, list[int]] | None = None
        for rejections in range(self.args.max_rejections + 1):
            decoder.truncate(len(prompt))
            tokens, _ = self.sample(decoder, first, request.max_new_tokens, self.args.top_k, self.args.beta, generator,
                                    self.args.eos_stop)
            reward = self.score_extensions(state, [], [tokens])[0]
            if best is None or reward > best[0]:
                best = (reward, tokens)
            if rejections == self.args.max_rejections:  # as the official code: the last one is not tested
                break
            if accepts(reward, self.target, self.args.beta, self.args.acceptance, generator):
                return tokens, {"rejections": rejections, "fallback": False}
        assert best is not None
        return best[1], {"rejections": self.args.max_rejections, "fallback": True}
