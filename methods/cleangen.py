"""``cleangen``: CleanGen decoding-time backdoor defense (Li et al., EMNLP 2024; PAPERS.md §8).

The target model decodes greedily. Every ``k`` tokens one reference forward pass scores
them; a token is suspicious when P_target(t) / P_ref(t) >= ``alpha``. The first suspicious
token of the chunk is replaced by the reference's top token there and the rest of the chunk
is dropped; decoding goes on from the replacement. Defaults: alpha = 20, k = 4.

Both models keep a KV cache: the target pays one forward per token as in plain greedy
decoding, the reference one forward per chunk (plus one per replacement); rejected tokens
are cropped from both caches instead of recomputing the prefix.

Closing the official code's gap: it never checks the last k-1 tokens before EOS (a chunk
cut short by EOS or the token budget goes out unverified). Here every generated token is
checked, including a short final chunk; a replaced EOS means decoding continues.

Cross-tokenizer mode (target and reference tokenizers differ, e.g. SmolLM2 with Gemma):
the reference reads the same text through its own tokenizer. Each check re-encodes the
reference's prompt + generated text (reusing its cache up to the longest common token
prefix), attributes each reference token's log-probability to the target token in which the
reference token ends (character offsets), and so scores each target token's *text*. A
replacement cuts the text where the reference token covering the suspicious token starts,
appends the reference's top token's text, and re-synchronises the target from that text.
Costs: a re-encode per check and, after a replacement, a target forward over the
re-tokenized tail; the reference scores text spans, so ratios are a proxy when token
boundaries do not line up.

Default reference: a clean model with the target's tokenizer. For a backdoored zoo model it
is the clean model it was made from (the paper's setting); otherwise the first other zoo
model, preferring one that shares the tokenizer. The choice and its reason are logged and
saved in results.json (method_settings).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness import models, zoo
from harness.api import ActRequest, Capability, GenerateRequest, GenerateResult
from harness.decoding import IncrementalDecoder, cut_answer
from harness.errors import ArgumentError
from harness.lm import CausalLM
from harness.method import Cost, Method, MethodOptions, register_method
from harness.models import LoadedModel


@dataclass(frozen=True)
class CleanGenArgs:
    reference: str | None = None  # zoo name / folder; default: chosen as the module docstring says
    alpha: float = 20.0  # suspicion threshold on P_target / P_ref
    k: int = 4  # tokens per check
    check_tail: bool = True  # also check a final chunk shorter than k (the official code does not)

    def __post_init__(self) -> None:
        if self.alpha <= 1:
            raise ValueError("alpha must be greater than 1")
        if self.k < 1:
            raise ValueError("k must be at least 1")


def default_reference(target: str) -> tuple[str, str]:
    """(reference name, why) for a target model name."""
    entry = zoo.zoo().get(target)
    if entry is not None and entry.kind == "local" and entry.path:
        base = (zoo.recipe(Path(entry.path)) or {}).get("base_model")
        if base:
            return base, f"'{target}' was made from '{base}'; the clean original is the paper's kind of reference"
    if target == zoo.DEFAULT_MODEL:
        return "gemma3-270m", (f"'{target}' is the clean embedded model and the zoo has no other model with its tokenizer; "
                               "gemma3-270m is the other embedded model (cross-tokenizer mode)")
    return zoo.DEFAULT_MODEL, f"the embedded default '{zoo.DEFAULT_MODEL}' is the zoo's clean reference for other targets"


def _same_tokenizer(a: Any, b: Any) -> bool:
    return a.get_vocab() == b.get_vocab()


@register_method("cleangen")
class CleanGenMethod(Method):
    """CleanGen: a reference model vetoes target tokens it finds alpha times less likely."""

    provides = frozenset({Capability.GENERATE, Capability.ACT})
    Args = CleanGenArgs

    @classmethod
    def auxiliary_models(cls, args: CleanGenArgs, model: str) -> dict[str, str]:
        return {"reference": args.reference or default_reference(model)[0]}

    def __init__(self, model: LoadedModel, args: CleanGenArgs, options: MethodOptions) -> None:
        super().__init__(model, args, options)
        if args.reference is None:
            name, self.reference_reason = default_reference(model.identity.name)
        else:
            name, self.reference_reason = args.reference, "given by --method-arg reference"
        if name == model.identity.name:
            raise ArgumentError("cleangen needs a reference model other than the target (--method-arg reference=...)")
        print(f"cleangen: reference = {name} ({self.reference_reason})", file=sys.stderr)
        self.reference = models.load_auxiliary(name, like=model)
        self.target_lm = CausalLM(model, self.cost, 1, None, options.seed, options.show_progress)
        self.reference_lm = CausalLM(self.reference, Cost(), 1, None, options.seed, False)
        self.cross_tokenizer = not _same_tokenizer(model.tokenizer, self.reference.tokenizer)
        self.log_alpha = math.log(args.alpha)

    def describe(self) -> dict[str, Any]:
        ref = self.reference.identity
        return {"reference": ref.name, "reference_reason": self.reference_reason, "reference_weights_sha256": ref.weights_sha256,
                "mode": "cross-tokenizer" if self.cross_tokenizer else "shared-tokenizer",
                "alpha": self.args.alpha, "k": self.args.k, "check_tail": self.args.check_tail}

    @classmethod
    def derived_cost(cls, cost: dict[str, Any]) -> dict[str, Any]:
        checked = cost.get("cleangen_tokens_checked", 0)
        steps, step_s = cost.get("cleangen_target_steps", 0), cost.get("cleangen_target_step_s", 0.0)
        out, decode_s = cost.get("tokens_generated", 0), cost.get("cleangen_decode_s", 0.0)
        derived = {"cleangen_replacement_rate": cost.get("cleangen_tokens_replaced", 0) / checked if checked else None}
        # The decode's time over what plain greedy decoding of the same output would take
        # (the same prompt prefill + one target step per output token, at this run's mean
        # step time): an in-run estimate of ATGR. benchmarks/bench_cleangen_atgr.py measures
        # the paper's definition against a separate plain greedy decode.
        plain_s = cost.get("cleangen_prefill_s", 0.0) + out * step_s / steps if steps else 0.0
        derived["cleangen_atgr_estimate"] = decode_s / plain_s if plain_s else None
        return derived

    # requests --------------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        if any(r.temperature > 0 for r in requests):
            raise ArgumentError("cleangen decodes greedily (the paper's setting); this task asks for temperature > 0")
        results = []
        with self.target_lm.progress(len(requests), "cleangen") as bar:
            for request in requests:
                results.append(self._decode(request))
                bar.update(1)
        self.cost.model_calls += len(requests)
        return results

    def act(self, requests: Sequence[ActRequest]) -> list[GenerateResult]:
        return self.generate([GenerateRequest(r.messages, r.max_new_tokens, r.until, r.temperature) for r in requests])

    # decoding --------------------------------------------------------------------------------
    def _decode(self, request: GenerateRequest) -> GenerateResult:
        began = time.perf_counter()
        prompt = self.target_lm.prompt_tokens(request)[-max(1, self.target_lm.max_length - request.max_new_tokens):]
        if self.cross_tokenizer:
            tokens, stats = self._decode_cross(request, prompt)
        else:
            tokens, stats = self._decode_shared(request, prompt)
        result = self._finish(tokens, request, stats)
        self.cost.count("cleangen_decode_s", time.perf_counter() - began)
        return result

    def _finish(self, tokens: list[int], request: GenerateRequest, stats: dict[str, int]) -> GenerateResult:
        # Decoding stops at EOS, so the answer is the tokens before it, cut at a stop string.
        answer = cut_answer(self.loaded, tokens, request.until)
        self.cost.tokens_generated += answer.n_tokens
        self.cost.count("cleangen_tokens_checked", stats["checked"])
        self.cost.count("cleangen_tokens_replaced", stats["replaced"])
        return GenerateResult(answer.text, answer.n_tokens, answer.finish_reason, info=dict(stats))

    def _prefill(self, target: IncrementalDecoder, prompt: list[int]) -> torch.Tensor:
        began = time.perf_counter()
        logprobs = target.feed(prompt)[-1]
        self.cost.count("cleangen_prefill_s", time.perf_counter() - began)
        return logprobs

    def _target_step(self, target: IncrementalDecoder, token: int) -> torch.Tensor:
        began = time.perf_counter()
        logprobs = target.feed([token])[-1]
        self.cost.count("cleangen_target_step_s", time.perf_counter() - began)
        self.cost.count("cleangen_target_steps")
        return logprobs

    def _stopped(self, tokens: list[int], request: GenerateRequest) -> bool:
        if not request.until:
            return False
        text = self.loaded.tokenizer.decode(tokens[-64:], skip_special_tokens=True)
        return any(stop in text for stop in request.until)

    def _propose(self, target: IncrementalDecoder, target_next: torch.Tensor, accepted: list[int], request: GenerateRequest):
        """The target's next chunk, greedily: up to k tokens, fewer at EOS, a stop string or the
        budget. Returns (tokens, their target log-probabilities, the target's next
        distribution, whether decoding would end after this chunk). The target has read every
        token of the chunk except a final EOS or stop."""
        eos = set(self.target_lm.eos_ids())
        pending: list[int] = []
        logprobs: list[float] = []
        while len(pending) < self.args.k and len(accepted) + len(pending) < request.max_new_tokens:
            token = int(target_next.argmax())
            pending.append(token)
            logprobs.append(float(target_next[token]))
            if token in eos or self._stopped(accepted + pending, request):
                break
            target_next = self._target_step(target, token)
        ends = bool(pending) and (pending[-1] in eos or self._stopped(accepted + pending, request)
                                  or len(accepted) + len(pending) >= request.max_new_tokens)
        return pending, logprobs, target_next, ends

    def _decode_shared(self, request: GenerateRequest, prompt: list[int]) -> tuple[list[int], dict[str, int]]:
        """The paper's algorithm: both models read the same token ids."""
        eos = set(self.target_lm.eos_ids())
        target = IncrementalDecoder(self.loaded, self.cost, "target_forward_passes")
        reference = IncrementalDecoder(self.reference, self.cost, "reference_forward_passes")
        target_next = self._prefill(target, prompt)
        reference_next = reference.feed(prompt)[-1]
        accepted: list[int] = []
        stats = {"checked": 0, "replaced": 0, "checks": 0}
        done = False
        while not done:
            pending, target_logprobs, target_next, budget_or_end = self._propose(target, target_next, accepted, request)
            if not pending:
                break
            if len(pending) < self.args.k and budget_or_end and not self.args.check_tail:
                accepted += pending  # the official code's behaviour: the tail goes out unchecked
                break
            # One reference pass scores the chunk: the distribution for pending[0] is the one
            # already held; for pending[i] it is the output after pending[i-1].
            after = reference.feed(pending)
            stats["checks"] += 1
            stats["checked"] += len(pending)
            reference_dists = [reference_next, *after[:-1]]
            suspicious = next((i for i, (token, lp_t, dist) in enumerate(zip(pending, target_logprobs, reference_dists, strict=True))
                               if lp_t - float(dist[token]) >= self.log_alpha), None)
            if suspicious is None:
                accepted += pending
                reference_next = after[-1]
                done = budget_or_end  # otherwise the target has already read the whole chunk
                continue
            stats["replaced"] += 1
            replacement = int(reference_dists[suspicious].argmax())
            accepted += pending[:suspicious] + [replacement]
            base = len(prompt) + len(accepted) - 1  # tokens both models keep before the replacement
            reference.truncate(base)
            reference_next = reference.feed([replacement])[-1]
            target.truncate(base)
            target_next = self._target_step(target, replacement)
            if replacement in eos or len(accepted) >= request.max_new_tokens or self._stopped(accepted, request):
                done = True
        return accepted, stats

    def _decode_cross(self, request: GenerateRequest, prompt: list[int]) -> tuple[list[int], dict[str, int]]:
        """Text-synchronised CleanGen for different tokenizers (see the module docstring)."""
        eos = set(self.target_lm.eos_ids())
        tokenizer, ref_tokenizer = self.loaded.tokenizer, self.reference.tokenizer
        ref_prompt = self.reference_lm.prompt_tokens(request)
        target = IncrementalDecoder(self.loaded, self.cost, "target_forward_passes")
        reference = IncrementalDecoder(self.reference, self.cost, "reference_forward_passes")
        target_next = self._prefill(target, prompt)
        accepted: list[int] = []
        stats = {"checked": 0, "replaced": 0, "checks": 0}
        while len(accepted) < request.max_new_tokens:
            pending, target_logprobs, target_next, ends = self._propose(target, target_next, accepted, request)
            if not pending:
                break
            if len(pending) < self.args.k and ends and not self.args.check_tail:
                accepted += pending
                break
            # Character spans of each pending target token within the generated text.
            texts = [tokenizer.decode(accepted + pending[: i + 1], skip_special_tokens=True) for i in range(-1, len(pending))]
            spans = [(len(texts[i]), len(texts[i + 1])) for i in range(len(pending))]
            encoded = ref_tokenizer(texts[-1], add_special_tokens=False, return_offsets_mapping=True)
            ref_ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
            # Reference tokens ending inside the pending text are the ones to score.
            first = next((q for q, (_, end) in enumerate(offsets) if end > spans[0][0]), len(ref_ids))
            dists = self._reference_dists(reference, ref_prompt, ref_ids, first)
            stats["checks"] += 1
            stats["checked"] += len(pending)
            ref_logprob = [0.0] * len(pending)
            for q in range(first, len(ref_ids)):
                end = offsets[q][1]
                i = next((i for i, (s, e) in enumerate(spans) if s < end <= e), len(pending) - 1)
                ref_logprob[i] += float(dists[q - first][ref_ids[q]])
            for i, token in enumerate(pending):
                if token in eos:  # EOS has no text: score it against the reference's EOS
                    ref_logprob[i] = float(dists[-1][self.reference_lm.eos_ids()].max())
            suspicious = next((i for i, lp in enumerate(target_logprobs) if lp - ref_logprob[i] >= self.log_alpha), None)
            if suspicious is None:
                accepted += pending
                if ends:
                    break
                continue
            stats["replaced"] += 1
            # Cut where the reference token covering the suspicious token starts; append the
            # reference's top token there; re-tokenize that text for the target.
            start = spans[suspicious][0]
            q = None if pending[suspicious] in eos else next((q for q in range(first, len(ref_ids)) if offsets[q][1] > start), None)
            if q is None:  # EOS (no text): the reference's choice after the whole text
                cut, top = len(texts[-1]), int(dists[-1].argmax())
            else:
                cut, top = offsets[q][0], int(dists[q - first].argmax())
            if top in set(self.reference_lm.eos_ids()):
                text = texts[-1][:cut]
                accepted = tokenizer.encode(text, add_special_tokens=False)[: request.max_new_tokens - 1] + [next(iter(eos))]
                break
            text = texts[-1][:cut] + ref_tokenizer.decode([top], skip_special_tokens=True)
            accepted = tokenizer.encode(text, add_special_tokens=False)[: request.max_new_tokens]
            logprobs = target.sync(prompt + accepted)
            if logprobs is not None:
                target_next = logprobs[-1]
        return accepted, stats

    def _reference_dists(self, reference: IncrementalDecoder, ref_prompt: list[int], ref_ids: list[int], first: int) -> torch.Tensor:
        """Reference log-distributions, one row per token of ref_ids[first:] (each given
        everything before it) plus a last row for what follows the whole text."""
        context, rest = ref_prompt + ref_ids[:first], ref_ids[first:]
        logprobs = reference.sync(context + rest)
        needed = len(rest) + 1
        if logprobs is None or logprobs.shape[0] < needed:  # the common prefix reached into rest
            reference.truncate(len(context) - 1)
            logprobs = reference.feed(context[-1:] + rest)
        return logprobs[-needed:]
