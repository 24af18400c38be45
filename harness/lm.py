"""Scoring and generation with a Hugging Face causal LM: the engine under every method.

Tokenization mirrors lm-evaluation-harness's ``hf`` backend (``_encode_pair``, the
BOS-else-EOS prefix token, rolling windows) so numbers agree with it; the work is organised
differently for speed:

- loglikelihood: requests that share a context are scored together. The context runs once
  (left-padded batches, logits only at its last position); continuations longer than one
  token run as a second, short pass over the context's KV cache.
- stream (rolling perplexity): windows from all requests are batched by length, and the
  output head runs only on the scored positions, in chunks, so memory stays bounded even for
  262K-word vocabularies and 32K windows.
- generate: left-padded batched ``model.generate`` with stop strings.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import StoppingCriteria, StoppingCriteriaList

from harness.api import (
    ChatMessage,
    GenerateRequest,
    GenerateResult,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    StreamRequest,
    StreamResult,
)
from harness.method import Cost
from harness.models import LoadedModel

HEAD_CHUNK = 1024  # positions per output-head chunk in rolling scoring
CPU_TOKEN_BUDGET = 2048  # tokens per batch with --batch-size auto on CPU (bigger batches measured slower)
CUDA_TOKEN_BUDGET = 65536
CONTINUATION_CACHE_TOKENS = 16384  # cached context tokens copied per continuation pass


@dataclass(frozen=True)
class _Window:
    request: int
    tokens: list[int]  # model input
    targets: list[int]  # the last len(targets) inputs' next tokens


class _StopStrings(StoppingCriteria):
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
        return self.done.to(input_ids.device)


class CausalLM:
    """Batched scoring and generation over one loaded model, counting its cost."""

    def __init__(
        self,
        loaded: LoadedModel,
        cost: Cost,
        batch_size: int | Literal["auto"] = "auto",
        max_length: int | None = None,
        seed: int = 0,
        show_progress: bool = True,
    ) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.device = loaded.device
        self.cost = cost
        self.batch_size = batch_size
        self.max_length = int(max_length or loaded.max_length)
        self.prefix_token_id = loaded.prefix_token_id
        self.seed = seed
        self.show_progress = show_progress
        self.token_budget = CUDA_TOKEN_BUDGET if self.device.type == "cuda" else CPU_TOKEN_BUDGET
        self._bos_text = self.tokenizer.decode([self.prefix_token_id]) if self.prefix_token_id is not None else None
        self._special_texts = [t.content for t in getattr(self.tokenizer, "added_tokens_decoder", {}).values()
                               if t.special and t.content]
        config = self.model.config
        # Packed continuations need a custom 4D attention mask, which sdpa and eager attention
        # take as given; a sliding-window layer would ignore its window under it.
        self.pack_continuations = getattr(config, "_attn_implementation", None) in ("sdpa", "eager")
        self.sliding_window = getattr(config, "sliding_window", None) if getattr(config, "use_sliding_window", True) else None

    # tokenization ----------------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool | None = None) -> list[int]:
        """lm-eval's ``tok_encode``: the tokenizer's own special-token default, except that a
        string already starting with the BOS text gets no second BOS."""
        if add_special_tokens is None:
            add_special_tokens = not (self._bos_text and text.startswith(self._bos_text))
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens)

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        """The chat template's text; a final assistant message is left open, to be continued."""
        chat = [{"role": m.role, "content": m.content} for m in messages]
        if messages and messages[-1].role == "assistant":
            return self.tokenizer.apply_chat_template(chat, tokenize=False, continue_final_message=True)
        return self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)

    def _context_text(self, context: str, chat: bool) -> str:
        if chat and self.loaded.has_chat_template:
            return self.render_chat([ChatMessage("user", context)])
        return context

    def encode_many(self, texts: Sequence[str], add_special_tokens: bool | None = None) -> list[list[int]]:
        """``encode`` for many texts in one batched tokenizer call."""
        flags = [add_special_tokens if add_special_tokens is not None else not (self._bos_text and t.startswith(self._bos_text))
                 for t in texts]
        out: list[list[int]] = [[] for _ in texts]
        for flag in set(flags):
            chosen = [i for i, f in enumerate(flags) if f == flag]
            ids = self.tokenizer([texts[i] for i in chosen], add_special_tokens=flag)["input_ids"]
            for i, tokens in zip(chosen, ids, strict=True):
                out[i] = list(tokens)
        return out

    def encode_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        """lm-eval's ``_encode_pair`` (trailing context spaces move to the continuation) for many
        requests: each distinct context tokenized once, everything in batched calls. A text-game
        turn's forty commands share one long prompt, and encoding it twice per command was most
        of a turn's time on a GPU."""
        split = []
        for context, continuation in pairs:
            n_spaces = len(context) - len(context.rstrip())
            split.append((context[:-n_spaces], context[-n_spaces:] + continuation) if n_spaces else (context, continuation))
        out: list[tuple[list[int], list[int]] | None] = [None] * len(pairs)
        bare = [i for i, (context, _) in enumerate(split) if context == ""]
        for i, tokens in zip(bare, self.encode_many([split[i][1] for i in bare], add_special_tokens=False), strict=True):
            out[i] = (tokens[:1], tokens[1:]) if tokens and tokens[0] == self.prefix_token_id else ([self.prefix_token_id], tokens)
        groups: dict[str, list[int]] = {}
        for i, (context, _) in enumerate(split):
            if context != "":
                groups.setdefault(context, []).append(i)
        contexts = list(groups)
        for context, tokens in zip(contexts, self.encode_many(contexts), strict=True):
            members = groups[context]
            tails = self._continuations_after_last_special(context, tokens, [split[i][1] for i in members]) if len(members) > 1 else None
            if tails is None:
                wholes = self.encode_many([context + split[i][1] for i in members])
                tails = [whole[len(tokens):] for whole in wholes]
            for i, tail in zip(members, tails, strict=True):
                out[i] = (tokens, tail)
        return out  # type: ignore[return-value]

    def _continuations_after_last_special(self, context: str, context_tokens: list[int],
                                          continuations: Sequence[str]) -> list[list[int]] | None:
        """The continuations' tokens after ``context``, from encoding only the context's text from
        its last special token on (a fast tokenizer splits its input at added tokens and encodes
        the pieces independently), checked against the full encoding for the first continuation;
        None when that check fails or the context holds no special token."""
        start = max((context.rfind(token) for token in self._special_texts), default=-1)
        if start <= 0:
            return None
        tail = context[start:]
        tail_tokens = self.encode(tail, add_special_tokens=False)
        if context_tokens[-len(tail_tokens):] != tail_tokens:
            return None
        wholes = self.encode_many([tail + c for c in continuations], add_special_tokens=False)
        if any(w[: len(tail_tokens)] != tail_tokens for w in wholes):
            return None
        out = [w[len(tail_tokens):] for w in wholes]
        if self.encode(context + continuations[0])[len(context_tokens):] != out[0]:
            return None
        return out

    # batching --------------------------------------------------------------------------------
    def _batches(self, lengths: Sequence[int]) -> Iterator[list[int]]:
        """Indices (already sorted longest first by the caller) grouped into batches."""
        batch: list[int] = []
        longest = 0
        for index in range(len(lengths)):
            longest = max(longest, lengths[index]) if batch else lengths[index]
            if batch and (
                len(batch) >= self.batch_size
                if isinstance(self.batch_size, int)
                else (len(batch) + 1) * longest > self.token_budget
            ):
                yield batch
                batch, longest = [], lengths[index]
            batch.append(index)
        if batch:
            yield batch

    def _left_pad(self, sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask, padded on the left so every row ends together."""
        width = max(len(s) for s in sequences)
        input_ids = torch.full((len(sequences), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, sequence in enumerate(sequences):
            input_ids[row, width - len(sequence) :] = torch.tensor(sequence)
            mask[row, width - len(sequence) :] = 1
        return input_ids, mask

    def _progress(self, total: int, desc: str):
        return tqdm(total=total, desc=desc, unit="req", disable=not self.show_progress or total == 0, leave=False)

    # loglikelihood ---------------------------------------------------------------------------
    @torch.inference_mode()
    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        encoded = self.encode_pairs([(self._context_text(r.context, r.chat), r.continuation) for r in requests])
        for (_, continuation), request in zip(encoded, requests, strict=True):
            if not continuation:
                raise ValueError(f"continuation {request.continuation!r} encodes to no tokens")
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, (context, _) in enumerate(encoded):
            groups.setdefault(tuple(context), []).append(index)
        group_list = []
        for context, members in groups.items():
            longest = max(len(encoded[i][1]) for i in members)
            if longest > self.max_length:
                raise ValueError(f"a continuation of {longest} tokens exceeds the context length {self.max_length}")
            # Truncate from the left like lm-eval (context + continuation[:-1] must fit).
            keep = self.max_length + 1 - longest
            group_list.append((list(context[-keep:]), members))
        width = (lambda g: self._packed_width(g, encoded)) if self.pack_continuations else (lambda g: len(g[0]))
        group_list.sort(key=lambda g: (-width(g), g[0]))
        widths = [width(g) for g in group_list]
        results: list[LoglikelihoodResult | None] = [None] * len(requests)
        with self._progress(len(requests), "loglikelihood") as bar:
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
    def windows(self, request: StreamRequest, index: int = 0) -> list[_Window]:
        """Rolling windows over ``context + text`` scoring only the text's tokens.

        With no context and stride == window this is exactly lm-eval's
        ``get_rolling_token_windows(context_len=1)``: the first window scores ``window``
        tokens after the prefix token, each later window the next ``stride`` tokens with the
        ``window - stride`` tokens before them as context.
        """
        window = request.window or self.max_length
        stride = request.stride or window
        if not 1 <= stride <= window <= self.max_length:
            raise ValueError(f"need 1 <= stride ({stride}) <= window ({window}) <= context length ({self.max_length})")
        context = self.encode(request.context, add_special_tokens=False)[-window:] if request.context else []
        text = self.encode(request.text, add_special_tokens=False)
        full = [self.prefix_token_id, *context, *text]
        out: list[_Window] = []
        start = len(context) + 1
        step = window if not context else stride
        while start < len(full):
            end = min(start + step, len(full))
            first_input = max(0, end - 1 - window)
            out.append(_Window(index, full[first_input : end - 1], full[start:end]))
            start, step = end, stride
        return out

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.model.get_output_embeddings()(hidden)
        softcap = getattr(self.model.config, "final_logit_softcapping", None)
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        return logits.float()

    @torch.inference_mode()
    def score_stream(self, requests: Sequence[StreamRequest]) -> list[StreamResult]:
        windows = [w for i, r in enumerate(requests) for w in self.windows(r, i)]
        order = sorted(range(len(windows)), key=lambda i: (-len(windows[i].tokens), i))
        totals = [0.0] * len(requests)
        with tqdm(total=sum(len(w.targets) for w in windows), desc="stream", unit="tok",
                  disable=not self.show_progress or not windows, leave=False) as bar:
            for batch in self._batches([len(windows[i].tokens) for i in order]):
                chosen = [windows[order[i]] for i in batch]
                for window, logprob in zip(chosen, self._score_windows(chosen), strict=True):
                    totals[window.request] += logprob
                bar.update(sum(len(w.targets) for w in chosen))
        self.cost.model_calls += len(requests)
        results = []
        for i, request in enumerate(requests):
            mine = [w for w in windows if w.request == i]
            window = request.window or self.max_length
            results.append(StreamResult(totals[i], sum(len(w.targets) for w in mine), window, request.stride or window, len(mine)))
        return results

    def _score_windows(self, windows: Sequence[_Window]) -> list[float]:
        # Right padding with no attention mask, as lm-eval does: real positions never
        # attend to the padding that follows them.
        width = max(len(w.tokens) for w in windows)
        input_ids = torch.full((len(windows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        for row, w in enumerate(windows):
            input_ids[row, : len(w.tokens)] = torch.tensor(w.tokens)
        hidden = self.model.get_decoder()(input_ids=input_ids.to(self.device), use_cache=False).last_hidden_state
        self.cost.forward_passes += 1
        self.cost.tokens_processed += sum(len(w.tokens) for w in windows)
        totals = []
        for row, w in enumerate(windows):
            n, length = len(w.targets), len(w.tokens)
            targets = torch.tensor(w.targets, device=self.device)
            totals.append(sum(float(lp.sum()) for lp, _ in self._target_logprobs(hidden[row, length - n : length], targets)))
            self.cost.tokens_scored += n
        return totals

    def _target_logprobs(self, hidden: torch.Tensor, targets: torch.Tensor, greedy: bool = False):
        """Per chunk of ``HEAD_CHUNK`` positions: log p(target) at each position of ``hidden``
        (positions, d) and, with ``greedy``, whether the target is the argmax (else None).
        The head runs a chunk at a time because a vocabulary-wide row per position is the
        largest allocation of a long window."""
        for offset in range(0, len(targets), HEAD_CHUNK):
            logprobs = F.log_softmax(self._logits(hidden[offset : offset + HEAD_CHUNK]), dim=-1)
            part = targets[offset : offset + HEAD_CHUNK]
            yield logprobs.gather(-1, part[:, None])[:, 0], (logprobs.argmax(dim=-1) == part) if greedy else None

    # generation ------------------------------------------------------------------------------
    def _prompt_tokens(self, request: GenerateRequest) -> list[int]:
        if isinstance(request.prompt, tuple):
            if not self.loaded.has_chat_template:
                text = "\n\n".join(m.content for m in request.prompt)
                return self.encode(text)
            return self.encode(self.render_chat(request.prompt), add_special_tokens=False)
        if request.chat and self.loaded.has_chat_template:
            return self.encode(self.render_chat([ChatMessage("user", request.prompt)]), add_special_tokens=False)
        return self.encode(request.prompt)

    @torch.inference_mode()
    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        prompts = [self._prompt_tokens(r) for r in requests]
        keys = [(r.max_new_tokens, r.until, r.temperature, r.top_p) for r in requests]
        order = sorted(range(len(requests)), key=lambda i: (keys[i], -len(prompts[i]), i))
        results: list[GenerateResult | None] = [None] * len(requests)
        with self._progress(len(requests), "generate") as bar:
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
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if settings.until:
            kwargs["stopping_criteria"] = StoppingCriteriaList([_StopStrings(settings.until, width, len(prompts), self.tokenizer)])
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
        """Generated tokens as an answer: cut at the first EOS, then the text at the first stop string."""
        eos = set(self._eos_ids())
        finish: Literal["stop", "length"] = "length"
        for position, token in enumerate(tokens):
            if token in eos:
                tokens, finish = tokens[:position], "stop"
                break
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        for stop in until:
            cut = text.find(stop)
            if cut != -1:
                text, finish = text[:cut], "stop"
        return GenerateResult(text, len(tokens), finish)

    def _eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        ids = ids if isinstance(ids, list) else [ids]
        return [i for i in ids + [self.tokenizer.eos_token_id] if i is not None]

