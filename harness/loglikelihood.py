"""Loglikelihood scoring: log p(continuation | context) for many requests at once.

Requests that share a context are scored together (tokenization as lm-eval's ``hf``
backend). With sdpa or eager attention each batch is one packed forward pass: a row holds a
context and all its continuations under a tree mask. Otherwise the context runs once
(left-padded batches, logits at its last position) and continuations longer than one token
run as a second, short pass over the context's KV cache.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness.api import LoglikelihoodRequest, LoglikelihoodResult
from harness.batching import BatchedModel

CONTINUATION_CACHE_TOKENS = 16384  # cached context tokens copied per continuation pass


@dataclass(frozen=True)
class TokenLogprobs:
    """A text's tokens with each one's log-probability given those before it (None for the
    first), its character offset, the ``top`` most likely tokens at each position, and the
    ``top`` most likely next tokens after the text: an OpenAI ``echo`` answer."""

    token_ids: list[int]
    tokens: list[str]
    offsets: list[int]
    logprobs: list[float | None]
    top: list[dict[str, float] | None]
    next_top: list[tuple[int, str, float]]


class LoglikelihoodScoring(BatchedModel):
    """``loglikelihood`` over one batched model."""

    @torch.inference_mode()
    def token_logprobs(self, texts: Sequence[str | list[int]], top: int = 1) -> list[TokenLogprobs]:
        """Per-token log-probabilities of whole texts (or token ids), one forward pass each."""
        out = []
        for text in texts:
            ids = list(text) if isinstance(text, list) else self.encode(text)
            if not ids:
                raise ValueError("the prompt encodes to no tokens")
            if len(ids) > self.max_length:
                raise ValueError(f"the prompt has {len(ids)} tokens, more than the context length {self.max_length}")
            logits = self.model(torch.tensor([ids], device=self.device)).logits[0].float()
            logprobs = F.log_softmax(logits, dim=-1)
            self.cost.forward_passes += 1
            self.cost.tokens_processed += len(ids)
            self.cost.tokens_scored += len(ids) - 1
            pieces = [self.tokenizer.decode([i]) for i in ids]
            # A token's offset is the length of the text decoded before it (the whitespace before
            # a word belongs to the word's token, and a character split over tokens is counted once).
            prefixes = self.tokenizer.batch_decode([ids[:i] for i in range(len(ids))], skip_special_tokens=True,
                                                   clean_up_tokenization_spaces=False)
            offsets = [len(prefix) for prefix in prefixes]
            k = max(1, min(top, logprobs.shape[-1]))
            values, indices = logprobs.topk(k, dim=-1)
            top_at = [{self.tokenizer.decode([int(t)]): float(v) for t, v in zip(indices[p].tolist(), values[p].tolist(), strict=True)}
                      for p in range(len(ids))]
            chosen = logprobs[:-1].gather(1, torch.tensor(ids[1:], device=logprobs.device)[:, None])[:, 0].tolist()
            out.append(TokenLogprobs(
                token_ids=ids, tokens=pieces, offsets=offsets, logprobs=[None, *chosen], top=[None, *top_at[:-1]],
                next_top=[(int(t), self.tokenizer.decode([int(t)]), float(v)) for t, v in zip(indices[-1].tolist(), values[-1].tolist(), strict=True)],
            ))
        return out

    @torch.inference_mode()
    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        encoded = self.encode_pairs([(self.context_text(r.context, r.chat), r.continuation) for r in requests])
        for (_, continuation), request in zip(encoded, requests, strict=True):
            if not continuation:
                raise ValueError(f"continuation {request.continuation!r} encodes to no tokens")
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, (context, _) in enumerate(encoded):
            groups.setdefault(tuple(context), []).append(index)
        group_list = []
        for shared, members in groups.items():
            longest = max(len(encoded[i][1]) for i in members)
            if longest > self.max_length:
                raise ValueError(f"a continuation of {longest} tokens exceeds the context length {self.max_length}")
            # Truncate from the left like lm-eval (context + continuation[:-1] must fit).
            keep = self.max_length + 1 - longest
            group_list.append((list(shared[-keep:]), members))
        width = (lambda g: self._packed_width(g, encoded)) if self.pack_continuations else (lambda g: len(g[0]))
        group_list.sort(key=lambda g: (-width(g), g[0]))
        widths = [width(g) for g in group_list]
        results: list[LoglikelihoodResult | None] = [None] * len(requests)
        with self.progress(len(requests), "loglikelihood") as bar:
            for batch in self._batches(widths):
                chosen = [group_list[i] for i in batch]
                if self._can_pack(chosen, encoded):
                    self._score_packed(chosen, encoded, results)
                else:
                    self._score_groups(chosen, encoded, results)
                bar.update(sum(len(members) for _, members in chosen))
        self.cost.model_calls += len(requests)
        return results  # type: ignore[return-value]

    @staticmethod
    def _packed_width(group, encoded) -> int:
        """A packed row: the context, then every continuation but its last token."""
        context, members = group
        return len(context) + sum(len(encoded[i][1]) - 1 for i in members)

    def _can_pack(self, groups, encoded) -> bool:
        if not self.pack_continuations:
            return False
        deepest = max(len(context) + len(encoded[i][1]) for context, members in groups for i in members)
        return not self.sliding_window or deepest <= self.sliding_window

    def _score_packed(self, groups, encoded, results) -> None:
        """One forward pass per batch, whatever the number of continuations: each row is a
        context followed by all its continuations (each without its last token), and a tree
        mask lets every continuation see the context and its own earlier tokens only, at the
        positions it would have right after the context. No cache is copied: copying it per
        continuation was most of the time spent scoring a text-game turn's admissible commands."""
        width = max(self._packed_width(group, encoded) for group in groups)
        input_ids = torch.full((len(groups), width), self.tokenizer.pad_token_id, dtype=torch.long)
        positions = torch.zeros((len(groups), width), dtype=torch.long)
        allowed = torch.zeros((len(groups), 1, width, width), dtype=torch.bool)
        scored: list[list[tuple[int, list[int]]]] = []  # per row: (request index, query positions)
        real_tokens = 0
        for row, (context, members) in enumerate(groups):
            c = len(context)
            input_ids[row, :c] = torch.tensor(context)
            positions[row, :c] = torch.arange(c)
            allowed[row, 0, :c, :c] = torch.ones(c, c, dtype=torch.bool).tril()
            start, queries = c, []
            for index in members:
                tail = encoded[index][1][:-1]
                end = start + len(tail)
                if tail:
                    input_ids[row, start:end] = torch.tensor(tail)
                    positions[row, start:end] = torch.arange(c, c + len(tail))
                    allowed[row, 0, start:end, :c] = True
                    allowed[row, 0, start:end, start:end] = torch.ones(len(tail), len(tail), dtype=torch.bool).tril()
                queries.append((index, [c - 1, *range(start, end)]))
                start = end
            padding = torch.arange(start, width)
            allowed[row, 0, padding, padding] = True  # padding attends to itself: no empty softmax row
            scored.append(queries)
            real_tokens += start
        mask = allowed
        if self.model.config._attn_implementation == "eager":  # eager adds the mask to the scores
            mask = torch.zeros(allowed.shape, dtype=self.model.dtype).masked_fill(~allowed, torch.finfo(self.model.dtype).min)
        hidden = self.model.get_decoder()(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                                          position_ids=positions.to(self.device), use_cache=False).last_hidden_state
        self.cost.forward_passes += 1
        self.cost.tokens_processed += real_tokens
        for row, queries in enumerate(scored):
            flat = [p for _, places in queries for p in places]
            targets = torch.tensor([t for index, _ in queries for t in encoded[index][1]], device=self.device)
            chunks = list(self._target_logprobs(hidden[row, flat], targets, greedy=True))
            logprob = torch.cat([lp for lp, _ in chunks]).tolist()
            hit = torch.cat([g for _, g in chunks]).tolist()
            at = 0
            for index, places in queries:
                n = len(places)
                results[index] = LoglikelihoodResult(float(sum(logprob[at : at + n])), all(hit[at : at + n]), n)
                at += n
                self.cost.tokens_scored += n

    def _score_groups(self, groups, encoded, results) -> None:
        input_ids, mask = self._left_pad([context for context, _ in groups])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        needs_second_pass = any(len(encoded[i][1]) > 1 for _, members in groups for i in members)
        out = self.model(
            input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device), use_cache=needs_second_pass, logits_to_keep=1,
        )
        self.cost.forward_passes += 1
        self.cost.tokens_processed += int(mask.sum())
        first = F.log_softmax(out.logits[:, -1, :].float(), dim=-1)
        first_greedy = first.argmax(dim=-1)

        second_rows: list[tuple[int, int]] = []  # (group row, request index)
        for row, (_, members) in enumerate(groups):
            for index in members:
                continuation = encoded[index][1]
                results[index] = (float(first[row, continuation[0]]), bool(first_greedy[row] == continuation[0]))
                self.cost.tokens_scored += 1
                if len(continuation) > 1:
                    second_rows.append((row, index))
        if second_rows:
            self._score_continuations(out.cache, mask, second_rows, encoded, results)
        for _, members in groups:
            for index in members:
                logprob, greedy = results[index]
                results[index] = LoglikelihoodResult(logprob, greedy, len(encoded[index][1]))

    def _score_continuations(self, cache, context_mask, rows, encoded, results) -> None:
        """Score continuation tokens 2..n over the contexts' KV cache, in passes of at most
        ``CONTINUATION_CACHE_TOKENS`` cached context tokens: each continuation needs its own copy
        of its context's cache, and forty choices over a long prompt would otherwise copy it forty
        times at once (11 GB for ten TextWorld turns)."""
        per_pass = max(1, CONTINUATION_CACHE_TOKENS // context_mask.shape[1])
        for start in range(0, len(rows), per_pass):
            last = start + per_pass >= len(rows)  # the last pass may consume the cache itself
            self._score_continuation_pass(cache if last else copy.deepcopy(cache), context_mask,
                                          rows[start : start + per_pass], encoded, results)

    def _score_continuation_pass(self, cache, context_mask, rows, encoded, results) -> None:
        cache.batch_select_indices(torch.tensor([row for row, _ in rows], device=self.device))
        tails = [encoded[index][1] for _, index in rows]
        width = max(len(t) for t in tails) - 1
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        tail_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, tail in enumerate(tails):
            input_ids[r, : len(tail) - 1] = torch.tensor(tail[:-1])
            tail_mask[r, : len(tail) - 1] = 1
        base_mask = context_mask[[row for row, _ in rows]]
        start = base_mask.sum(-1, keepdim=True)
        positions = start + torch.arange(width).unsqueeze(0)
        out = self.model(
            input_ids=input_ids.to(self.device),
            attention_mask=torch.cat([base_mask, tail_mask], dim=-1).to(self.device),
            position_ids=positions.to(self.device),
            cache=cache, use_cache=True,
        )
        self.cost.forward_passes += 1
        self.cost.tokens_processed += int(tail_mask.sum())
        logprobs = F.log_softmax(out.logits.float(), dim=-1)
        greedy = logprobs.argmax(dim=-1)
        for r, (_, index) in enumerate(rows):
            tail = torch.tensor(tails[r][1:], device=self.device)
            n = len(tail)
            first_logprob, first_greedy = results[index]
            picked = logprobs[r, :n].gather(-1, tail.unsqueeze(-1)).squeeze(-1)
            results[index] = (first_logprob + float(picked.sum()), first_greedy and bool((greedy[r, :n] == tail).all()))
            self.cost.tokens_scored += n

    # rolling / stream scoring ----------------------------------------------------------------
