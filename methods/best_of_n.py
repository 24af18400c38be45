"""``best-of-n``: Best-of-N sampling under a reward model (the CARDS paper's main baseline,
PAPERS.md §5; official code ``bon_generate`` in lblaoke/CARDS).

``n`` answers are sampled (top-k 40, temperature 0.8), each of exactly ``max_new_tokens``
tokens as the official code decodes them (no EOS stop; ``eos_stop=true`` stops each sample at
EOS, the variant a chat model's users expect), and the one the guiding reward model scores
highest is returned. The reward model reads each sample's answer up to its first EOS (what the
user is shown), through its own chat template. The policy reads the prompt once (its KV cache
is cropped back for each sample); the n answers are scored against one cached prompt.

``batched=true`` samples the n answers as one batch through the decoding engine
(``Generation.sample_tokens``: the prompt prefilled once, its cache copied to n rows, one
forward pass per step for all of them, each sample on its own seeded stream); the default
samples them one after another as before, so runs made before the option keep their ids and
their numbers. The two draw from the same distribution with other random streams.

Defaults: n 5, top-k 40, temperature 0.8, sequential sampling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.api import GenerateRequest
from harness.config import added_later
from harness.method import register_method
from methods.reward_guided import RewardGuidedMethod, check_common, messages_of, require_reward_model


@dataclass(frozen=True)
class BestOfNArgs:
    reward_model: str = ""  # guiding reward model: zoo name, folder or HF id (harness train reward-model makes one)
    n: int = 5  # answers sampled per prompt
    top_k: int = 40  # sampling: the k most likely tokens
    temperature: float = 0.8  # sampling temperature
    eos_stop: bool = False  # stop a sample at EOS (the official code always decodes max_new_tokens)
    batched: bool = added_later(False)  # sample the n answers as one batch (prompt prefilled once); default one after another

    def __post_init__(self) -> None:
        require_reward_model(self.reward_model, "best-of-n")
        check_common(self.top_k, self.temperature)
        if self.n < 1:
            raise ValueError("n must be at least 1")


@register_method("best-of-n")
class BestOfNMethod(RewardGuidedMethod):
    """Best-of-N: n sampled answers, the guiding reward model's favourite returned."""

    Args = BestOfNArgs

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"n": self.args.n, "top_k": self.args.top_k, "temperature": self.args.temperature,
                                     "eos_stop": self.args.eos_stop, "batched": self.args.batched}

    def decode(self, request: GenerateRequest, prompt: list[int]) -> tuple[list[int], dict[str, Any]]:
        samples = self._batched(request, prompt) if self.args.batched else self._sequential(request, prompt)
        state = self.reward.start(messages_of(request))
        rewards = self.score_extensions(state, [], samples)
        best = max(range(len(samples)), key=lambda i: rewards[i])
        return samples[best], {"sample_rewards": rewards, "chosen": best}

    def _sequential(self, request: GenerateRequest, prompt: list[int]) -> list[list[int]]:
        decoder, generator = self.decoder(), self.generator(prompt, "best-of-n")
        first = decoder.feed(prompt)[-1]
        samples = []
        for _ in range(self.args.n):
            decoder.truncate(len(prompt))
            tokens, _ = self.sample(decoder, first, request.max_new_tokens, self.args.top_k, self.args.temperature, generator,
                                    self.args.eos_stop)
            samples.append(tokens)
        return samples

    def _batched(self, request: GenerateRequest, prompt: list[int]) -> list[list[int]]:
        settings = GenerateRequest("", request.max_new_tokens, temperature=self.args.temperature, top_k=self.args.top_k)
        passes = self.cost.forward_passes
        samples = self.policy.sample_tokens([prompt] * self.args.n, list(range(self.args.n)), settings,
                                            stop_at_eos=self.args.eos_stop)
        self.cost.count("policy_forward_passes", self.cost.forward_passes - passes)
        return samples
