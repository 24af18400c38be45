"""Decoding: what a method needs to generate text from a model.

- ``Generation.generate``: left-padded batched ``model.generate`` with stop strings (greedy,
  or seeded sampling that a resumed run draws again identically).
- ``eos_ids`` and ``cut_answer``: generated tokens as an answer, cut at the first EOS and
  then at the first stop string, as every decoder here reports it.
- ``IncrementalDecoder``: one sequence with a KV cache (feed tokens, read next-token
  log-probabilities, crop back): the loop of decoders that intervene token by token
  (CleanGen), and of their plain-greedy baselines.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Literal, cast

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from harness.api import GenerateRequest, GenerateResult
from harness.batching import BatchedModel
from harness.method import Cost
from harness.models import LoadedModel


def eos_ids(loaded: LoadedModel) -> list[int]:
    """Every token id that ends a generation: the generation config's EOS ids and the tokenizer's."""
    ids = loaded.model.generation_config.eos_token_id
    ids = ids if isinstance(ids, list) else [ids]
    return [i for i in ids + [loaded.tokenizer.eos_token_id] if i is not None]


def cut_answer(loaded: LoadedModel, tokens: list[int], until: Sequence[str] = ()) -> GenerateResult:
    """Generated tokens as an answer: cut at the first EOS, then the text at the first stop string."""
    eos = set(eos_ids(loaded))
    finish: Literal["stop", "length"] = "length"
    for position, token in enumerate(tokens):
        if token in eos:
            tokens, finish = tokens[:position], "stop"
            break
    text = loaded.tokenizer.decode(tokens, skip_special_tokens=True)
    for stop in until:
        cut = text.find(stop)
        if cut != -1:
            text, finish = text[:cut], "stop"
    return GenerateResult(text, len(tokens), finish)


class StopStrings(StoppingCriteria):
    """Stop each row once its *generated* text holds a stop string.

    transformers' own ``stop_strings`` also matches across the prompt's end, so a prompt
    ending in "e" would stop at once on "ee"; lm-eval checks only new text, as here,
    decoding a short look-back of tokens per row.
    """

    def __init__(self, stops: Sequence[str], prompt_width: int, batch: int, tokenizer) -> None:
        self.stops = list(stops)
        self.prompt_width = prompt_width
        self.tokenizer = tokenizer
        self.lookback = max(len(tokenizer.encode(s, add_special_tokens=False)) for s in self.stops) + 2
        self.done = torch.zeros(batch, dtype=torch.bool)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        new = input_ids[:, self.prompt_width :]
        tail = new[:, -self.lookback :]
        for row in range(new.shape[0]):
            if not self.done[row]:
                text = self.tokenizer.decode(tail[row])
                self.done[row] = any(stop in text for stop in self.stops)
        return cast(torch.BoolTensor, self.done.to(input_ids.device))


class IncrementalDecoder:
    """One model decoding one sequence with a KV cache: feed tokens, read next-token log-probabilities.

    Each ``feed`` is one forward pass, counted in ``cost`` (and under ``counter`` by name).
    """

    def __init__(self, loaded: LoadedModel, cost: Cost, counter: str) -> None:
        self.model, self.device, self.cost, self.counter = loaded.model, loaded.device, cost, counter
        self.ids: list[int] = []
        self.cache: Any = None

    @torch.inference_mode()
    def feed(self, tokens: Sequence[int]) -> torch.Tensor:
        """Append tokens; returns log-probabilities after each of them, shape (len, vocab)."""
        tokens = list(tokens)
        out = self.model(input_ids=torch.tensor([tokens], device=self.device), cache=self.cache, use_cache=True)
        self.cache = out.cache
        self.ids += tokens
        self.cost.forward_passes += 1
        self.cost.tokens_processed += len(tokens)
        self.cost.count(self.counter)
        return torch.log_softmax(out.logits[0].float(), dim=-1)

    def truncate(self, length: int) -> None:
        """Forget everything after the first ``length`` tokens."""
        if length >= len(self.ids):
            return
        kept, remove = self.ids[:length], len(self.ids) - length
        if self.cache is not None and length > 0:
            try:
                self.cache.crop(-remove)  # this transformers takes the number of tokens to drop, negated
                self.ids = kept
                return
            except (RuntimeError, ValueError):  # a sliding-window layer past its window
                pass
        self.ids, self.cache = [], None  # rebuild from the kept tokens
        if kept:
            self.feed(kept)

    def sync(self, tokens: Sequence[int]) -> torch.Tensor | None:
        """Make ``ids`` equal ``tokens``, reusing the longest common prefix; returns the
        log-probabilities after each newly fed token (at least the last one is fed again, so
        the distribution after ``tokens`` is always in the last row). None for no tokens."""
        common = 0
        for a, b in zip(self.ids, tokens, strict=False):
            if a != b:
                break
            common += 1
        common = min(common, len(tokens) - 1)
        if common < 0:
            return None
        self.truncate(common)
        return self.feed(tokens[common:])


class Generation(BatchedModel):
    """``generate`` over one batched model."""

    @torch.inference_mode()
    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        prompts = [self.prompt_tokens(r) for r in requests]
        keys = [(r.max_new_tokens, r.until, r.temperature, r.top_p, r.top_k, r.no_repeat_ngram_size) for r in requests]
        order = sorted(range(len(requests)), key=lambda i: (keys[i], -len(prompts[i]), i))
        results: list[GenerateResult | None] = [None] * len(requests)
        with self.progress(len(requests), "generate") as bar:
            start = 0
            while start < len(order):
                same = [i for i in order[start:] if keys[i] == keys[order[start]]]
                for batch in self._batches([len(prompts[i]) + keys[i][0] for i in same]):
                    chosen = [same[b] for b in batch]
                    for index, result in zip(chosen, self._generate_batch([prompts[i] for i in chosen], requests[chosen[0]]), strict=True):
                        results[index] = result
                    bar.update(len(chosen))
                start += len(same)
        self.cost.model_calls += len(requests)
        return results  # type: ignore[return-value]

    def _generate_batch(self, prompts: list[list[int]], settings: GenerateRequest) -> list[GenerateResult]:
        limit = max(1, self.max_length - settings.max_new_tokens)
        prompts = [p[-limit:] for p in prompts]
        input_ids, mask = self._left_pad(prompts)
        width = input_ids.shape[1]
        pad = self.tokenizer.pad_token_id
        sampling = settings.temperature > 0
        if sampling:
            # Seed from the run seed and the prompts, so a resumed run draws the same samples.
            digest = hashlib.sha256(repr((self.seed, prompts)).encode()).digest()
            torch.manual_seed(int.from_bytes(digest[:8], "little"))
        kwargs = dict(
            input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
            max_new_tokens=settings.max_new_tokens, do_sample=sampling, pad_token_id=pad,
        )
        if sampling:
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
            if settings.top_k is not None:
                kwargs["top_k"] = settings.top_k
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if settings.no_repeat_ngram_size:
            kwargs["no_repeat_ngram_size"] = settings.no_repeat_ngram_size
        if settings.until:
            kwargs["stopping_criteria"] = StoppingCriteriaList([StopStrings(settings.until, width, len(prompts), self.tokenizer)])
        output = self.model.generate(**kwargs)
        new = output[:, width:]
        self.cost.forward_passes += max(1, new.shape[1])
        self.cost.tokens_processed += int(mask.sum())
        results = []
        for row in range(len(prompts)):
            result = self.answer(new[row].tolist(), settings.until)
            self.cost.tokens_generated += result.n_tokens
            self.cost.tokens_processed += result.n_tokens
            results.append(result)
        return results

    def answer(self, tokens: list[int], until: Sequence[str] = ()) -> GenerateResult:
        """Generated tokens as an answer (``cut_answer``)."""
        return cut_answer(self.loaded, tokens, until)

    def eos_ids(self) -> list[int]:
        return eos_ids(self.loaded)
