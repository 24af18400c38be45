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
from collections.abc import Iterator, Sequence
from typing import Any, Literal, cast

import torch
from transformers import StoppingCriteria
from transformers.generation.logits_process import (
    NoRepeatNGramLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from harness.api import GenerateRequest, GenerateResult, cut_at_stops, sample_indices
from harness.batching import CPU_GENERATION_BUDGET, CPU_GENERATION_ROWS, CPU_PREFILL_TOKENS, CUDA_GENERATION_BUDGET, BatchedModel
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
    text, stopped = cut_at_stops(loaded.tokenizer.decode(tokens, skip_special_tokens=True), until)
    return GenerateResult(text, len(tokens), "stop" if stopped else finish)


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


MIN_SHARED_PREFIX = 16  # shorter shared prefixes are prefilled with each row (a broadcast costs more than it saves)


def seeded_generator(seed: int, prompt: Sequence[int], sample: int) -> torch.Generator:
    """A sample's own random stream: from the run seed, the prompt's tokens and the sample's index."""
    digest = hashlib.sha256(repr((seed, tuple(prompt), sample)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


class _Rows:
    """The rows being decoded: their KV cache, attention mask, next positions and last logits.
    ``advance`` feeds one token per kept row, dropping the rows that ended."""

    def __init__(self, model: Any, cache: Any, mask: torch.Tensor, positions: torch.Tensor, logits: torch.Tensor,
                 device: torch.device, passes: int, tokens: int) -> None:
        self.model, self.cache, self.mask, self.positions, self.logits = model, cache, mask, positions, logits
        self.device, self.passes, self.tokens = device, passes, tokens

    def advance(self, tokens: list[int], keep: list[int]) -> None:
        if len(keep) < self.mask.shape[0]:
            index = torch.tensor(keep)
            self.cache.batch_select_indices(index.to(self.device))
            self.mask, self.positions = self.mask[index], self.positions[index]
        self.mask = torch.cat([self.mask, torch.ones((len(keep), 1), dtype=torch.long)], dim=-1)
        out = self.model(input_ids=torch.tensor([[t] for t in tokens], device=self.device), attention_mask=self.mask.to(self.device),
                         position_ids=self.positions[:, None].to(self.device), cache=self.cache, use_cache=True)
        self.cache, self.logits = out.cache, out.logits[:, -1, :].float()
        self.positions = self.positions + 1
        self.passes, self.tokens = self.passes + 1, self.tokens + len(tokens)


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
    """``generate`` over one batched model, by its own KV-cached decoding loop.

    Why not ``model.generate``: it prefills every row in full and decodes finished rows until
    the last one ends. Here, within a batch of requests with the same settings,
    - identical requests are samples of one prompt: the prompt is prefilled once and its cache
      copied to each sample's row (EmoBench's five votes, code repair's programs);
    - a token prefix shared by every prompt (a system prompt, few-shot demonstrations) is
      prefilled once and broadcast, the rest of each prompt padded in the middle and placed at
      the positions it would have alone;
    - a row that has ended (EOS or a stop string) leaves the batch.
    Batches are formed as before (same settings, longest first, under the token budget), and the
    logits go through transformers' own processors (no-repeat n-grams, temperature, top-k,
    top-p, in ``generate``'s order), so greedy text equals ``model.generate``'s. Sampling draws
    each sample from its own generator, seeded by the run seed, the prompt's tokens and the
    sample's index among identical requests: the same samples whatever the batch around them,
    so a resumed run or another batch size draws them again.
    """

    @torch.inference_mode()
    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        prompts = [self.prompt_tokens(r) for r in requests]
        keys = [(r.max_new_tokens, r.until, r.temperature, r.top_p, r.top_k, r.no_repeat_ngram_size) for r in requests]
        samples = sample_indices([(keys[i], tuple(prompts[i])) for i in range(len(requests))])
        order = sorted(range(len(requests)), key=lambda i: (keys[i], -len(prompts[i]), i))
        results: list[GenerateResult | None] = [None] * len(requests)
        with self.progress(len(requests), "generate") as bar:
            start = 0
            while start < len(order):
                same = [i for i in order[start:] if keys[i] == keys[order[start]]]
                for batch in self._generation_batches([len(prompts[i]) + keys[i][0] for i in same]):
                    chosen = [same[b] for b in batch]
                    answers = self._decode([prompts[i] for i in chosen], [samples[i] for i in chosen], requests[chosen[0]])
                    for index, result in zip(chosen, answers, strict=True):
                        results[index] = result
                    bar.update(len(chosen))
                start += len(same)
        self.cost.model_calls += len(requests)
        return results  # type: ignore[return-value]

    def _generation_batches(self, lengths: Sequence[int]) -> Iterator[list[int]]:
        if self.device.type == "cuda":
            return self._batches(lengths, CUDA_GENERATION_BUDGET)
        return self._batches(lengths, CPU_GENERATION_BUDGET, CPU_GENERATION_ROWS)

    def _decode(self, prompts: list[list[int]], samples: list[int], settings: GenerateRequest) -> list[GenerateResult]:
        results = []
        for tokens in self.sample_tokens(prompts, samples, settings):
            result = self.answer(tokens, settings.until)
            self.cost.tokens_generated += result.n_tokens
            results.append(result)
        return results

    @torch.inference_mode()
    def sample_tokens(self, prompts: list[list[int]], samples: list[int], settings: GenerateRequest,
                      stop_at_eos: bool = True) -> list[list[int]]:
        """The tokens generated for each prompt row as one batch (EOS included where a row met
        it), ``samples`` giving each row's index among identical prompts (its random stream).
        ``stop_at_eos=False`` decodes every row to ``max_new_tokens``, as Best-of-N's official
        code does."""
        limit = max(1, self.max_length - settings.max_new_tokens)
        prompts = [p[-limit:] for p in prompts]
        state = self._prefill(prompts, settings.max_new_tokens)
        sampling = settings.temperature > 0
        processors = self._processors(settings)
        generators = [seeded_generator(self.seed, prompt, sample) for prompt, sample in zip(prompts, samples, strict=True)] \
            if sampling else []
        eos = set(self.eos_ids())
        stops = [s for s in settings.until if s]
        lookback = max((len(self.tokenizer.encode(s, add_special_tokens=False)) for s in stops), default=0) + 2
        generated: list[list[int]] = [[] for _ in prompts]
        alive = list(range(len(prompts)))
        steps = 0
        while alive:
            # The n-gram ban reads each row's whole sequence, left-padded as ``generate``'s is.
            history = self._left_pad([prompts[r] + generated[r] for r in alive])[0].to(self.device) \
                if settings.no_repeat_ngram_size else None
            scores = state.logits
            for processor in processors:  # only the n-gram ban reads the history (None without one)
                scores = processor(history, scores)
            if sampling:
                probs = torch.softmax(scores, dim=-1)
                chosen = [int(torch.multinomial(probs[k], 1, generator=generators[r])) for k, r in enumerate(alive)]
            else:
                chosen = scores.argmax(dim=-1).tolist()
            steps += 1
            keep = []
            for k, (r, token) in enumerate(zip(alive, chosen, strict=True)):
                generated[r].append(token)
                if stop_at_eos and token in eos:
                    continue
                if stops and any(stop in self.tokenizer.decode(generated[r][-lookback:]) for stop in stops):
                    continue
                keep.append(k)
            if steps >= settings.max_new_tokens or not keep:
                break
            state.advance([chosen[k] for k in keep], keep)
            alive = [alive[k] for k in keep]
        self.cost.forward_passes += state.passes
        self.cost.tokens_processed += state.tokens
        return generated

    def _processors(self, settings: GenerateRequest) -> list[Any]:
        """``generate``'s logits processors for these settings, in its order."""
        processors: list[Any] = []
        if settings.no_repeat_ngram_size:
            processors.append(NoRepeatNGramLogitsProcessor(settings.no_repeat_ngram_size))
        if settings.temperature > 0:
            top_k = settings.top_k if settings.top_k is not None else self.model.generation_config.top_k
            if settings.temperature != 1.0:
                processors.append(TemperatureLogitsWarper(settings.temperature))
            if top_k:
                processors.append(TopKLogitsWarper(top_k))
            if settings.top_p < 1.0:
                processors.append(TopPLogitsWarper(settings.top_p))
        return processors

    def _prefill(self, prompts: list[list[int]], max_new_tokens: int) -> _Rows:
        """The prompts' KV cache, one row per prompt: each distinct prompt run once, a prefix
        they all share run once before them when it is long enough and safe to share."""
        distinct: dict[tuple[int, ...], int] = {}
        row_of = [distinct.setdefault(tuple(p), len(distinct)) for p in prompts]
        unique = [list(p) for p in distinct]
        shared = self._shared_prefix(unique, max_new_tokens)
        passes = tokens = 0
        cache: Any = None
        if shared:
            out = self.model(input_ids=torch.tensor([unique[0][:shared]], device=self.device), use_cache=True, logits_to_keep=1)
            cache, passes, tokens = out.cache, 1, shared
            cache.batch_repeat_interleave(len(unique))
        block, block_mask = self._left_pad([u[shared:] for u in unique])
        mask = torch.cat([torch.ones((len(unique), shared), dtype=torch.long), block_mask], dim=-1)
        positions = shared + (block_mask.cumsum(-1) - 1).clamp(min=0)
        # In column slices of about CPU_PREFILL_TOKENS tokens: one long pass over many rows runs
        # slower per token on a CPU than several shorter ones over the same cache.
        step = block.shape[1] if self.device.type == "cuda" else max(1, CPU_PREFILL_TOKENS // len(unique))
        for start in range(0, block.shape[1], step):
            end = min(start + step, block.shape[1])
            out = self.model(input_ids=block[:, start:end].to(self.device), attention_mask=mask[:, : shared + end].to(self.device),
                             position_ids=positions[:, start:end].to(self.device), cache=cache, use_cache=True, logits_to_keep=1)
            cache, passes = out.cache, passes + 1
        tokens += int(block_mask.sum())
        logits = out.logits[:, -1, :].float()
        if row_of != list(range(len(unique))):
            index = torch.tensor(row_of, device=self.device)
            cache.batch_select_indices(index)
            logits, mask = logits[index], mask[index.cpu()]
        self.cost.count("prefill_tokens_shared", sum(len(p) for p in prompts) - tokens)
        return _Rows(self.model, cache, mask, torch.tensor([len(p) for p in prompts]), logits, self.device, passes, tokens)

    def _shared_prefix(self, unique: list[list[int]], max_new_tokens: int) -> int:
        """How many leading tokens every distinct prompt shares, to prefill once; 0 when too
        few to matter, or when the model cannot take a mask with a hole in it (an attention
        kernel without custom masks) or would see the hole inside its sliding window's reach
        past the window (positions there count keys, not tokens)."""
        if len(unique) < 2 or not self.pack_continuations:
            return 0
        shortest = min(len(u) for u in unique)
        shared = 0
        while shared < shortest - 1 and all(u[shared] == unique[0][shared] for u in unique):
            shared += 1
        if shared < MIN_SHARED_PREFIX:
            return 0
        if self.sliding_window and max(len(u) for u in unique) + max_new_tokens > self.sliding_window:
            return 0
        return shared

    def answer(self, tokens: list[int], until: Sequence[str] = ()) -> GenerateResult:
        """Generated tokens as an answer (``cut_answer``)."""
        return cut_answer(self.loaded, tokens, until)

    def eos_ids(self) -> list[int]:
        return eos_ids(self.loaded)
