"""``cards``: CARDS, cascade reward sampling (Li et al., COLM 2025; PAPERS.md §5; official code
``seg_rs_generate`` in lblaoke/CARDS ``reward_sampling.py``).

The answer grows by segments. A segment is sampled (top-k 40 at temperature β) until it has
at least ``min_segment`` tokens and the policy's next-token entropy (untempered, nats) reaches
``entropy_threshold`` — the segment ends before that token — or ``max_segment`` tokens. The
guiding reward model scores prompt + answer + segment; the threshold starts at
r0 = (1−α)·r(prompt) + α·r* and rises linearly with the answer's length to r* at
``max_new_tokens``: thr = min(r*, r0 + t·(r* − r0)/max_new_tokens). The segment is accepted
with probability min(1, exp((r − thr)/β)) (``acceptance=hard``: r ≥ thr); after
``max_rejections`` rejections the best segment seen since the last acceptance is taken.

r* must be tuned per reward model (the paper's 8.5 is its Llama-7B RM's scale): by default it
is the ``target_quantile`` of the reward model's scores on held-out chosen answers, recorded
by ``harness train reward-model``; ``reward_target=`` sets it. β is 0.7 (the paper's default;
the later configs pass their temperature, 0.8, as β).

Costs: the policy's KV cache carries over accepted segments and a rejected segment is cropped
away (no prefix recomputation; taking the best segment re-reads only that segment). The
reward model keeps a cache over prompt + accepted answer and reads only each candidate
segment and the template's tail. Differences from the official code, each deliberate: a
segment never runs past ``max_new_tokens`` (the official one may by up to 63 tokens), and an
EOS ends the answer (``eos_stop=false`` decodes to ``max_new_tokens`` as the official code does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from harness.api import GenerateRequest
from harness.method import MethodOptions, register_method
from harness.models import LoadedModel
from methods.rejection_sampling import accepts
from methods.reward_guided import (
    RewardGuidedMethod,
    check_common,
    entropy,
    messages_of,
    require_reward_model,
    reward_target,
    sample_token,
)


@dataclass(frozen=True)
class CardsArgs:
    reward_model: str = ""  # guiding reward model: zoo name, folder or HF id
    reward_target: float | None = None  # r*; default: target_quantile of the RM's held-out chosen rewards
    target_quantile: float = 0.5  # which recorded quantile is r* when reward_target is not given
    alpha: float = 0.5  # r0 = (1 - alpha) * r(prompt) + alpha * r*
    beta: float = 0.7  # sampling temperature and the soft acceptance's scale (later configs: 0.8)
    entropy_threshold: float = 3.0  # nats: a segment ends where the next token's entropy reaches this
    min_segment: int = 4  # tokens before a segment may end
    max_segment: int = 64  # a segment's cap
    top_k: int = 40  # sampling: the k most likely tokens
    acceptance: Literal["soft", "hard"] = "soft"  # soft: accept with min(1, exp((r - thr)/beta)); hard: r >= thr
    max_rejections: int = 20  # after this many rejections the best segment seen is taken
    eos_stop: bool = True  # an EOS ends the answer (the official code always decodes max_new_tokens)

    def __post_init__(self) -> None:
        require_reward_model(self.reward_model, "cards")
        check_common(self.top_k, self.beta)
        if not 0 <= self.alpha <= 1:
            raise ValueError("alpha must be in [0, 1]")
        if not 1 <= self.min_segment <= self.max_segment:
            raise ValueError("need 1 <= min_segment <= max_segment")
        if self.max_rejections < 0:
            raise ValueError("max_rejections must be >= 0")


@register_method("cards")
class CardsMethod(RewardGuidedMethod):
    """CARDS: entropy-cut segments accepted against a rising reward threshold."""

    Args = CardsArgs

    def __init__(self, model: LoadedModel, args: CardsArgs, options: MethodOptions) -> None:
        super().__init__(model, args, options)
        self.target, self.target_reason = reward_target(args.reward_model, args.reward_target, args.target_quantile)

    def describe(self) -> dict[str, Any]:
        a = self.args
        return super().describe() | {"reward_target": self.target, "reward_target_reason": self.target_reason, "alpha": a.alpha,
                                     "beta": a.beta, "entropy_threshold": a.entropy_threshold, "min_segment": a.min_segment,
                                     "max_segment": a.max_segment, "top_k": a.top_k, "acceptance": a.acceptance,
                                     "max_rejections": a.max_rejections, "eos_stop": a.eos_stop}

    def decode(self, request: GenerateRequest, prompt: list[int]) -> tuple[list[int], dict[str, Any]]:
        a, budget = self.args, request.max_new_tokens
        decoder, generator = self.decoder(), self.generator(prompt, "cards")
        next_logprobs = decoder.feed(prompt)[-1]
        state = self.reward.start(messages_of(request))
        r0 = (1 - a.alpha) * self.reward.score_state(state) + a.alpha * self.target
        answer: list[int] = []
        best: tuple[float, list[int]] | None = None
        rejections = segments = candidates = fallbacks = 0
        while len(answer) < budget:
            base = len(prompt) + len(answer)
            segment, after = [], next_logprobs
            while len(segment) < min(a.max_segment, budget - len(answer)):
                if len(segment) >= a.min_segment and entropy(after) >= a.entropy_threshold:
                    break
                token = sample_token(after, a.top_k, a.beta, generator)
                segment.append(token)
                if token in self.eos and a.eos_stop:
                    break
                after = decoder.feed([token])[-1]
            candidates += 1
            reward = self.score_extensions(state, answer, [segment])[0]
            threshold = min(self.target, r0 + (len(answer) + len(segment)) * (self.target - r0) / budget)
            if best is None or reward > best[0]:
                best = (reward, segment)
            if rejections >= a.max_rejections:  # the official order: the fallback comes before the test
                fallbacks += 1
                if best[1] is not segment:
                    segment = best[1]
                    decoder.truncate(base)
                    fed = self.before_eos(segment) if a.eos_stop else segment
                    after = decoder.feed(fed)[-1] if fed else next_logprobs
            elif not accepts(reward, threshold, a.beta, a.acceptance, generator):
                rejections += 1
                decoder.truncate(base)
                continue
            self.accept(state, answer, segment)
            answer += segment
            segments += 1
            best, rejections, next_logprobs = None, 0, after
            if a.eos_stop and self.ended(segment):
                break
        return answer, {"segments": segments, "candidates": candidates, "fallbacks": fallbacks, "reward_prompt_r0": r0}
