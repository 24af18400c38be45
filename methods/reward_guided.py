"""What the decoding-time alignment methods share (CARDS, Best-of-N, ARGS, rejection sampling;
PAPERS.md §5): a guiding reward model loaded beside the policy, the policy's token sampler
(top-k at a temperature, as the official code's ``from_logit_to_token``), seeded per prompt so
a resumed run draws the same tokens, and the cost every one of them reports.

Costs (results.json): ``policy_forward_passes`` and ``tokens_processed`` (the policy's),
``tokens_generated`` (answer tokens), ``rm_calls`` / ``rm_tokens`` / ``rm_forward_passes``
(the guiding reward model's), and per answer in ``info``: ``guide_reward`` (the guiding
model's reward of the answer returned), ``policy_tokens``, ``rm_tokens``, ``rm_calls``.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

from harness.api import Capability, ChatMessage, GenerateRequest, GenerateResult
from harness.decoding import IncrementalDecoder, cut_answer, eos_ids
from harness.errors import ArgumentError
from harness.lm import CausalLM
from harness.method import Cost, Method, MethodOptions
from harness.models import LoadedModel
from harness.reward import RewardModel, RewardState, load_reward_model


def messages_of(request: GenerateRequest) -> tuple[ChatMessage, ...]:
    return request.prompt if isinstance(request.prompt, tuple) else (ChatMessage("user", request.prompt),)


def sample_token(logprobs: torch.Tensor, top_k: int, temperature: float, generator: torch.Generator) -> int:
    """One token from the top-k of softmax(logits / temperature), renormalised (the official
    code's sampler; log-probabilities give the same distribution as logits)."""
    values, indices = torch.topk(logprobs / temperature, min(top_k, logprobs.shape[-1]))
    choice = torch.multinomial(torch.softmax(values, dim=-1), 1, generator=generator)
    return int(indices[choice])


def entropy(logprobs: torch.Tensor) -> float:
    """Entropy in nats of the untempered next-token distribution (``tools/uncertainty.py``)."""
    return float(-(logprobs.exp() * logprobs).sum())


class RewardGuidedMethod(Method):
    """A policy decoded under a guiding reward model (``--method-arg reward_model=...``)."""

    provides = frozenset({Capability.GENERATE})

    @classmethod
    def auxiliary_models(cls, args: Any, model: str) -> dict[str, str]:
        return {"reward_model": args.reward_model}

    def __init__(self, model: LoadedModel, args: Any, options: MethodOptions) -> None:
        super().__init__(model, args, options)
        self.reward = load_reward_model(args.reward_model, like=model, cost=self.cost)
        # The reward of each answer returned, read for the record: a measurement, not the
        # method's spending, so it is not counted in the method's cost.
        self.probe = RewardModel(self.reward.loaded, Cost())
        self.policy = CausalLM(model, self.cost, 1, None, options.seed, options.show_progress)
        self.eos = set(eos_ids(model))
        self.shared_tokenizer = model.tokenizer.get_vocab() == self.reward.tokenizer.get_vocab()
        print(f"{self.name}: reward model = {args.reward_model}", file=sys.stderr)

    def describe(self) -> dict[str, Any]:
        identity = self.reward.loaded.identity
        return {"reward_model": identity.name, "reward_model_weights_sha256": identity.weights_sha256,
                "shared_tokenizer": self.shared_tokenizer}

    # helpers ---------------------------------------------------------------------------------
    def generator(self, prompt: list[int], salt: str = "") -> torch.Generator:
        """Seeded from the run seed and the prompt: a resumed run draws the same tokens."""
        digest = hashlib.sha256(repr((self.options.seed, salt, prompt)).encode()).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))

    def prompt_ids(self, request: GenerateRequest) -> list[int]:
        return self.policy.prompt_tokens(request)[-max(1, self.policy.max_length - request.max_new_tokens) :]

    def decoder(self) -> IncrementalDecoder:
        return IncrementalDecoder(self.loaded, self.cost, "policy_forward_passes")

    def before_eos(self, tokens: Sequence[int]) -> list[int]:
        """The answer part of generated tokens: those before the first EOS."""
        end = next((i for i, t in enumerate(tokens) if t in self.eos), len(tokens))
        return list(tokens[:end])

    def ended(self, tokens: Sequence[int]) -> bool:
        return any(t in self.eos for t in tokens)

    def rm_ids(self, tokens: Sequence[int]) -> list[int]:
        """Policy answer tokens (before any EOS) as the reward model's tokens: the same ids when
        the tokenizers match, else the text re-encoded."""
        tokens = self.before_eos(tokens)
        if self.shared_tokenizer:
            return tokens
        return self.reward.encode_answer(self.loaded.tokenizer.decode(tokens, skip_special_tokens=True))

    def score_extensions(self, state: RewardState, answer: Sequence[int], candidates: Sequence[Sequence[int]]) -> list[float]:
        """Guiding rewards of ``answer + candidate`` for each candidate. ``state`` holds ``answer``
        (``RewardModel.accept``) when the tokenizers match, and its cache is reused; otherwise
        each text is re-encoded and scored whole."""
        if self.shared_tokenizer:
            done = self.ended(answer)
            return self.reward.score_continuations(state, [[] if done else self.rm_ids(c) for c in candidates])
        return self.reward.score_ids([state.head + self.rm_ids([*answer, *c]) + state.tail for c in candidates])

    def accept(self, state: RewardState, answer: Sequence[int], segment: Sequence[int]) -> None:
        """``segment`` joins ``answer`` (after the call, the caller's answer includes it)."""
        if self.shared_tokenizer and not self.ended(answer):
            self.reward.accept(state, self.rm_ids(segment))

    # the request loop --------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        results = []
        with self.policy.progress(len(requests), self.name) as bar:
            for request in requests:
                before = self.cost.as_dict()
                began = time.perf_counter()
                tokens, info = self.decode(request, self.prompt_ids(request))
                answer = cut_answer(self.loaded, tokens, request.until)
                after = self.cost.as_dict()
                spent = {key: after.get(key, 0) - before.get(key, 0) for key in ("tokens_processed", "rm_tokens", "rm_calls",
                                                                                  "policy_forward_passes")}
                info = info | {"policy_tokens": spent["tokens_processed"], "rm_tokens": spent["rm_tokens"],
                               "rm_calls": spent["rm_calls"], "policy_forward_passes": spent["policy_forward_passes"],
                               "decode_s": time.perf_counter() - began}
                info["guide_reward"] = self._final_reward(request, tokens, answer.text)
                self.cost.tokens_generated += answer.n_tokens
                results.append(GenerateResult(answer.text, answer.n_tokens, answer.finish_reason, info=info))
                bar.update(1)
        self.cost.model_calls += len(requests)
        return results

    def _final_reward(self, request: GenerateRequest, tokens: list[int], text: str) -> float:
        """The guiding reward of the answer returned: of its tokens, as the method scored them,
        unless a stop string cut its text (then of the text)."""
        if self.shared_tokenizer and not request.until:
            state = self.probe.start(messages_of(request))
            return self.probe.score_ids([state.head + self.before_eos(tokens) + state.tail])[0]
        return self.probe.score_texts([messages_of(request)], [text])[0]

    def decode(self, request: GenerateRequest, prompt: list[int]) -> tuple[list[int], dict[str, Any]]:
        """The answer's tokens for one request, and what to record about its decoding."""
        raise NotImplementedError

    def sample(self, decoder: IncrementalDecoder, next_logprobs: torch.Tensor, budget: int, top_k: int, temperature: float,
               generator: torch.Generator, stop_at_eos: bool) -> tuple[list[int], torch.Tensor]:
        """Up to ``budget`` sampled tokens fed through ``decoder``; stops after EOS when told to.
        Returns the tokens and the distribution after them."""
        tokens: list[int] = []
        while len(tokens) < budget:
            token = sample_token(next_logprobs, top_k, temperature, generator)
            tokens.append(token)
            if stop_at_eos and token in self.eos:
                break
            if len(tokens) < budget:
                next_logprobs = decoder.feed([token])[-1]
        return tokens, next_logprobs


def check_common(top_k: int, temperature: float) -> None:
    if top_k < 1:
        raise ValueError("top_k must be at least 1")
    if temperature <= 0:
        raise ValueError("temperature must be positive")


def require_reward_model(reward_model: str, method: str) -> None:
    if not reward_model:
        raise ValueError(f"{method} needs --method-arg reward_model=<a reward model> (make one with: harness train reward-model)")


def reward_target(reward_model: str, given: float | None, quantile: float) -> tuple[float, str]:
    """CARDS's r* (and rejection sampling's threshold): the value given, else the ``quantile`` of
    the reward model's scores on held-out chosen answers, which ``harness train reward-model``
    records (r* must be tuned per reward model; the paper's 8.5 is its Llama-7B RM's scale)."""
    if given is not None:
        return given, "given by --method-arg reward_target"
    from harness import zoo

    quantiles = (zoo.recipe(reward_model) or {}).get("held_out", {}).get("chosen_reward_quantiles", {})
    key = f"{quantile:g}"
    if key not in quantiles:
        raise ArgumentError(f"reward model '{reward_model}' records no {key} quantile of held-out chosen rewards; "
                            f"give --method-arg reward_target=<r*> (recorded quantiles: {', '.join(quantiles) or 'none'})")
    return float(quantiles[key]), f"the {key} quantile of '{reward_model}''s rewards on held-out chosen answers"
