"""``args``: ARGS, alignment as reward-guided search (Khanov et al., ICLR 2024; a CARDS baseline,
PAPERS.md §5; official code deeplearning-wisc/args and ``token_bon_generate`` in lblaoke/CARDS).

Each step the policy's top-k next tokens are scored as logit + w · r(prompt + answer + token)
and the best is taken (greedy). The k reward-model calls of a step are one batch that reads
only the candidate token and the template's tail against the reward model's cached prefix (the
official code re-reads the whole sequence k times: the same rewards, k·length tokens per step).
Log-probabilities stand in for logits: they differ by one constant per step, so the choice is
the same. The official code decodes ``max_new_tokens`` tokens with no EOS stop; here an EOS
choice ends the answer (``eos_stop=false`` for the official behaviour).

Defaults: w 1.5, k 40 (the paper's; the CARDS configs' ``top_k: 5`` is not passed to ARGS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from harness.api import GenerateRequest
from harness.method import register_method
from methods.reward_guided import RewardGuidedMethod, messages_of, require_reward_model


@dataclass(frozen=True)
class ArgsSearchArgs:
    reward_model: str = ""  # guiding reward model: zoo name, folder or HF id
    weight: float = 1.5  # w in logit + w * reward
    top_k: int = 40  # candidate tokens scored per step
    eos_stop: bool = True  # an EOS choice ends the answer (the official code always decodes max_new_tokens)

    def __post_init__(self) -> None:
        require_reward_model(self.reward_model, "args")
        if self.top_k < 1:
            raise ValueError("top_k must be at least 1")


@register_method("args")
class ArgsSearchMethod(RewardGuidedMethod):
    """ARGS: greedy over the top-k tokens by logit + w * reward."""

    Args = ArgsSearchArgs

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"weight": self.args.weight, "top_k": self.args.top_k, "eos_stop": self.args.eos_stop}

    def decode(self, request: GenerateRequest, prompt: list[int]) -> tuple[list[int], dict[str, Any]]:
        decoder = self.decoder()
        next_logprobs = decoder.feed(prompt)[-1]
        state = self.reward.start(messages_of(request))
        answer: list[int] = []
        while len(answer) < request.max_new_tokens:
            values, indices = torch.topk(next_logprobs, min(self.args.top_k, next_logprobs.shape[-1]))
            candidates = [[int(i)] for i in indices]
            rewards = torch.tensor(self.score_extensions(state, answer, candidates))
            token = candidates[int(torch.argmax(values.float() + self.args.weight * rewards))][0]
            self.accept(state, answer, [token])
            answer.append(token)
            if token in self.eos and self.args.eos_stop:
                break
            if len(answer) < request.max_new_tokens:
                next_logprobs = decoder.feed([token])[-1]
        return answer, {}
