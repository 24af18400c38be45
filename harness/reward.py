"""A reward model as a scorer: one number for a conversation and its answer.

Any sequence classifier with a single label (a Hugging Face reward model, or one made by
``harness train reward-model``) scores ``messages + answer`` rendered through its own chat
template, exactly as it was trained; a tokenizer without a template reads the HH-RLHF text
form (``\\n\\nHuman: ...\\n\\nAssistant: ...``).

Decoders that score many continuations of one growing answer (CARDS segments, ARGS's top-k
tokens) keep the reward model's KV cache over the shared part: ``RewardState`` holds the
template's head and the answer so far; each candidate runs only its own tokens and the
template's tail against that cache, cropped back afterwards. Many candidates run packed into
one sequence: each candidate's tokens sit at the positions they would have after the cached
text, and a block-diagonal attention mask lets each see the cache and its own tokens only, so
the cache is read once for all of them instead of being copied once per candidate (a batch
of k rows would copy it k times, and grouped-query attention repeats each copy again: ARGS's
40 candidates spent most of their time copying). ``score_texts`` scores whole answers
(Best-of-N, evaluation).

Costs, in the ``Cost`` given: ``rm_calls`` (sequences scored), ``rm_tokens`` (tokens run
through the reward model, cache extensions included), ``rm_forward_passes``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.api import ChatMessage
from harness.errors import IncompatibleError
from harness.method import Cost
from harness.models import LoadedModel

_MARK = "\x00answer\x00"  # splits a rendered template into the text before and after the answer


def hh_text(messages: Sequence[ChatMessage], answer: str | None = None) -> str:
    """The HH-RLHF text form of a conversation (the official CARDS code scores this)."""
    names = {"user": "Human", "assistant": "Assistant", "system": "Human"}
    text = "".join(f"\n\n{names[m.role]}: {m.content}" for m in messages)
    return text + "\n\nAssistant:" + (f" {answer}" if answer is not None else "")


def frame(tokenizer: Any, messages: Sequence[ChatMessage]) -> tuple[list[int], list[int]]:
    """(head, tail): the token ids a reward model reads before and after an answer to ``messages``:
    its chat template around the answer, or the HH-RLHF text form without one. Training
    (``harness train reward-model``) and scoring both render through this."""
    if getattr(tokenizer, "chat_template", None):
        chat = [{"role": m.role, "content": m.content} for m in messages] + [{"role": "assistant", "content": _MARK}]
        before, after = tokenizer.apply_chat_template(chat, tokenize=False).split(_MARK, 1)
        head = tokenizer.encode(before, add_special_tokens=False)
    else:
        before, after = hh_text(messages) + " ", ""
        head = tokenizer.encode(before, add_special_tokens=True)
    return head, tokenizer.encode(after, add_special_tokens=False) if after else []


def render(tokenizer: Any, messages: Sequence[ChatMessage], answer: str, max_length: int) -> list[int]:
    """Token ids of the conversation with ``answer`` as its last turn, cut from the left to ``max_length``."""
    head, tail = frame(tokenizer, messages)
    return (head + tokenizer.encode(answer, add_special_tokens=False) + tail)[-max_length:]


def _equal_length_batches(sequences: Sequence[Sequence[int]], size: int) -> Iterator[list[int]]:
    """Indices of ``sequences`` in batches of at most ``size`` sharing one length: batches need
    no padding, which would move the token the scalar head reads."""
    by_length: dict[int, list[int]] = {}
    for index, ids in enumerate(sequences):
        by_length.setdefault(len(ids), []).append(index)
    for indices in by_length.values():
        for start in range(0, len(indices), size):
            yield indices[start : start + size]


def load_reward_model(name: str, like: LoadedModel | None = None, cost: Cost | None = None) -> RewardModel:
    """A reward model by zoo name, folder or HF id, loaded like the run's model
    (``models.load_auxiliary``), counting into ``cost`` (its own when none). A checkpoint that
    is not a sequence classifier is refused before its weights load."""
    from harness import models

    if models.resolve(name).identity.kind != "sequence-classifier":
        raise IncompatibleError(f"'{name}' is not a reward model (a sequence classifier with one label); "
                                "make one with: harness train reward-model")
    return RewardModel(models.load_auxiliary(name, like=like), cost if cost is not None else Cost())


@dataclass
class RewardState:
    """One conversation being answered: the template around the answer, the answer's tokens so
    far, and the reward model's cache over the part of them it has read."""

    head: list[int]  # template tokens before the answer
    tail: list[int]  # template tokens after the answer
    answer: list[int] = field(default_factory=list)
    cache: Any = None
    cached: int = 0  # tokens of head + answer the cache holds


class RewardModel:
    """Scores conversations with a sequence classifier's scalar head."""

    def __init__(self, loaded: LoadedModel, cost: Cost, batch_size: int = 8, pack_candidates: bool = True) -> None:
        if loaded.identity.kind != "sequence-classifier" or getattr(loaded.model.config, "num_labels", 1) != 1:
            raise IncompatibleError(f"model '{loaded.identity.name}' is not a reward model (a sequence classifier with one label)")
        self.loaded, self.cost, self.batch_size = loaded, cost, batch_size
        # Packing needs the backbone and the scalar head apart (``score``, as the Llama-family and
        # GPT-2 classifiers name it), and a config without a sliding window: every layer reads the
        # packed mask as given, so a sliding-window layer would see past its window (configs that
        # merely declare one, as Qwen2's do, lose packing too: safe, slower). Other classifiers
        # run candidates as batches.
        self.pack_candidates = (pack_candidates and isinstance(getattr(loaded.model, "score", None), torch.nn.Module)
                                and not getattr(loaded.model.config, "sliding_window", None))
        self.tokenizer, self.device = loaded.tokenizer, loaded.device
        self.max_length = loaded.identity.max_length

    @property
    def name(self) -> str:
        return self.loaded.identity.name

    # rendering -------------------------------------------------------------------------------
    def frame(self, messages: Sequence[ChatMessage]) -> tuple[list[int], list[int]]:
        """(head, tail): the token ids before and after the answer in the rendered conversation."""
        return frame(self.tokenizer, messages)

    def encode_answer(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def render(self, messages: Sequence[ChatMessage], answer: str) -> list[int]:
        return render(self.tokenizer, messages, answer, self.max_length)

    # scoring whole sequences -----------------------------------------------------------------
    @torch.inference_mode()
    def score_ids(self, sequences: Sequence[list[int]]) -> list[float]:
        """Rewards of token sequences, batched by equal length."""
        rewards: list[float | None] = [None] * len(sequences)
        for chunk in _equal_length_batches(sequences, self.batch_size):
            values = self._forward(torch.tensor([sequences[i] for i in chunk], device=self.device))[0]
            for i, value in zip(chunk, values, strict=True):
                rewards[i] = value
            self.cost.count("rm_calls", len(chunk))
        return rewards  # type: ignore[return-value]

    def score_texts(self, conversations: Sequence[Sequence[ChatMessage]], answers: Sequence[str]) -> list[float]:
        return self.score_ids([self.render(m, a) for m, a in zip(conversations, answers, strict=True)])

    def _forward(self, ids: torch.Tensor, cache: Any = None) -> tuple[list[float], Any]:
        out = self.loaded.model(input_ids=ids, cache=cache, use_cache=cache is not None)
        self.cost.count("rm_forward_passes")
        self.cost.count("rm_tokens", ids.numel())
        return out.logits[:, 0].float().tolist(), out.cache

    # scoring continuations of one answer -----------------------------------------------------
    def start(self, messages: Sequence[ChatMessage]) -> RewardState:
        head, tail = self.frame(messages)
        keep = max(1, self.max_length - len(tail) - 256)  # room for an answer; a longer prompt is cut from the left
        return RewardState(head=head[-keep:], tail=tail)

    def accept(self, state: RewardState, tokens: Sequence[int]) -> None:
        """The answer grows by ``tokens`` (read into the cache on the next score)."""
        state.answer += list(tokens)

    @torch.inference_mode()
    def _flush(self, state: RewardState) -> None:
        known = state.head + state.answer
        if state.cached < len(known):
            _, state.cache = self._forward(torch.tensor([known[state.cached :]], device=self.device), self._cache(state))
            state.cached = len(known)

    def _cache(self, state: RewardState) -> Any:
        if state.cache is None:
            from transformers import DynamicCache

            state.cache = DynamicCache(config=self.loaded.model.config)
        return state.cache

    @torch.inference_mode()
    def score_continuations(self, state: RewardState, continuations: Sequence[list[int]]) -> list[float]:
        """Rewards of the answer so far followed by each continuation (then the template's tail).

        Several continuations run packed into one sequence (see the module docstring), or,
        without packing, in batches of equal length against a copy of the cache; the cache
        itself stays as it was. An empty continuation packs as the template's tail alone."""
        self._flush(state)
        if self.pack_candidates and len(continuations) > 1 and (state.tail or all(continuations)):
            return self._score_packed(state, continuations)
        rewards: list[float | None] = [None] * len(continuations)
        # Continuations are short (a token, a segment): batches of up to 64 against one cache copy.
        for chunk in _equal_length_batches(continuations, max(self.batch_size, 64)):
            new = torch.tensor([continuations[i] + state.tail for i in chunk], device=self.device)
            if new.shape[1] == 0:  # nothing after the cached text: its reward is the last cached token's
                new = torch.tensor([[(state.head + state.answer)[-1]]] * len(chunk), device=self.device)
                state.cache.crop(-1)  # this transformers takes the number of tokens to drop, negated
                state.cached -= 1
            cache = copy.deepcopy(state.cache)
            if len(chunk) > 1:
                cache.batch_repeat_interleave(len(chunk))
            values, _ = self._forward(new, cache)
            for i, value in zip(chunk, values, strict=True):
                rewards[i] = value
            self.cost.count("rm_calls", len(chunk))
        return rewards  # type: ignore[return-value]

    def _score_packed(self, state: RewardState, continuations: Sequence[list[int]]) -> list[float]:
        """All continuations (each followed by the template's tail) in one forward pass over the
        cache: positions restart after the cached text for each, and each attends to the cache
        and to its own earlier tokens only; the head reads each one's last token."""
        model, past = self.loaded.model, state.cached
        pieces = [list(c) + state.tail for c in continuations]
        total = sum(len(piece) for piece in pieces)
        ids = torch.tensor([[t for piece in pieces for t in piece]], device=self.device)
        positions = torch.tensor([[past + i for piece in pieces for i in range(len(piece))]], device=self.device)
        dtype = model.dtype
        mask = torch.full((1, 1, total, past + total), torch.finfo(dtype).min, dtype=dtype, device=self.device)
        mask[..., :past] = 0.0
        ends, start = [], 0
        for piece in pieces:
            end = start + len(piece)
            mask[0, 0, start:end, past + start : past + end] = torch.triu(
                torch.full((len(piece), len(piece)), torch.finfo(dtype).min, dtype=dtype, device=self.device), diagonal=1)
            ends.append(end - 1)
            start = end
        hidden = model.base_model(input_ids=ids, position_ids=positions, attention_mask=mask, cache=state.cache,
                                  use_cache=True).last_hidden_state
        state.cache.crop(-total)
        values = model.score(hidden[0, ends]).float()[:, 0].tolist()
        self.cost.count("rm_forward_passes")
        self.cost.count("rm_tokens", total)
        self.cost.count("rm_calls", len(pieces))
        return values

    def score_state(self, state: RewardState) -> float:
        """The reward of the answer so far (the prompt alone when it is empty)."""
        return self.score_continuations(state, [[]])[0]
