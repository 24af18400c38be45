"""Synthetic long-range recall: can a segment-memory model carry a key across segments?

The check issue 25 asks for before any GPU time goes to HMT (He et al.; PAPERS.md §1): a key
is shown at the start of segment 1, random filler follows, and the key is asked for at the
end of segment ``segments`` (3 or later). A model that attends only within a window of one
segment (``sliding-window``) cannot see the key, so it can do no better than chance; a memory
that carries information (HMT's memory embeddings, RMT's memory tokens) can.

Each item is ``#<key><filler>?`` followed by the key, sized so that, with the model's prefix
token, the stream is exactly ``segments × segment`` tokens for a byte-level tokenizer (the
tiny models of ``harness.tiny_models``: one token per character). The key is ``key_length``
letters drawn from the first ``alphabet`` capitals; the filler is random lower-case letters,
so it tells nothing about the key. Items are drawn from ``item_seed`` alone (not the run
seed), so every method and model answers the same items; ``harness train hmt --data recall``
trains on other draws of the same generator.

Metrics: the answer's negative log-likelihood per key token (chance, for a model that has
learnt the answer's alphabet: ln ``alphabet``), and key accuracy: the true key outscores
``choices − 1`` distinct random keys (chance 1/``choices``), each scored as a stream.
"""

from __future__ import annotations

import random
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.api import Capability, Doc, Metric, StreamRequest, StreamResult
from harness.data import DataStore
from harness.stats import mean
from harness.task import EvalSettings, Task, register_task

KEY_MARK, QUERY_MARK = "#", "?"


@dataclass(frozen=True)
class RecallLayout:
    """Where the key and the question sit: the stream is ``segments × segment`` tokens."""

    segment: int = 16  # tokens per segment (the memory method's L)
    segments: int = 3  # the question sits at the end of this segment
    key_length: int = 1  # key letters
    alphabet: int = 8  # key letters come from the first this-many capitals

    def __post_init__(self) -> None:
        if not 1 <= self.key_length or not 2 <= self.alphabet <= 26 or self.segments < 2:
            raise ValueError("need key_length >= 1, 2 <= alphabet <= 26 and segments >= 2")
        if self.filler_length < 1 or 2 * self.key_length + 3 > self.segment:
            raise ValueError("the segment is too short to hold the key and the question")

    @property
    def filler_length(self) -> int:
        """Filler characters: prefix token + '#' + key + filler + '?' + key fills the stream."""
        return self.segments * self.segment - 2 * self.key_length - 3

    def key(self, rng: random.Random) -> str:
        return "".join(rng.choice(string.ascii_uppercase[: self.alphabet]) for _ in range(self.key_length))

    def example(self, rng: random.Random) -> tuple[str, str]:
        """(context, key): the context holds the key at its start and ends with the question mark."""
        key = self.key(rng)
        filler = "".join(rng.choice(string.ascii_lowercase) for _ in range(self.filler_length))
        return f"{KEY_MARK}{key}{filler}{QUERY_MARK}", key


@dataclass(frozen=True)
class MemoryRecallConfig:
    segment: int = 16  # tokens per segment; match the method's segment (or window)
    segments: int = 3  # the question sits at the end of this segment (the key is in segment 1)
    key_length: int = 1  # key letters
    alphabet: int = 8  # key letters come from the first this-many capitals
    items: int = 200  # items drawn
    choices: int = 8  # candidate keys scored per item (the true one and distinct random others)
    item_seed: int = 0  # draws the items (the same for every method, model and run seed)

    def __post_init__(self) -> None:
        _ = self.layout  # validates the geometry
        if self.items < 1 or not 2 <= self.choices <= self.alphabet ** self.key_length:
            raise ValueError("need items >= 1 and 2 <= choices <= alphabet ** key_length")
        if self.segments < 3:
            raise ValueError("segments must be 3 or more: the key must be asked beyond the next segment")

    @property
    def layout(self) -> RecallLayout:
        return RecallLayout(self.segment, self.segments, self.key_length, self.alphabet)


@register_task("memory-recall")
class MemoryRecall(Task):
    """Synthetic recall of a key shown segments earlier: what memory carries that a window cannot."""

    requires = frozenset({Capability.STREAM})
    Config = MemoryRecallConfig

    def load_docs(self, data: DataStore) -> list[Doc]:
        c, layout = self.config, self.config.layout
        docs = []
        for index in range(c.items):
            rng = random.Random(f"memory-recall/{c.item_seed}/{index}")
            context, key = layout.example(rng)
            others: list[str] = []
            while len(others) < c.choices - 1:
                other = layout.key(rng)
                if other != key and other not in others:
                    others.append(other)
            docs.append(Doc(f"recall-{index}", {"context": context, "key": key, "distractors": others}))
        return docs

    def requests(self, doc: Doc, settings: EvalSettings) -> list[StreamRequest]:
        return [StreamRequest(candidate, doc.data["context"]) for candidate in (doc.data["key"], *doc.data["distractors"])]

    def score(self, doc: Doc, results: Sequence[StreamResult], settings: EvalSettings) -> dict[str, Any]:
        truth, *others = (r.logprob for r in results)
        return {"key": doc.data["key"], "logprob": truth, "best_distractor_logprob": max(others),
                "correct": int(truth > max(others)), "answer_nll": -truth / max(1, results[0].n_tokens),
                "n_windows": results[0].n_windows}

    def metrics(self) -> list[Metric]:
        return [
            Metric("key_accuracy", True, ("correct",), mean, ci="wilson",
                   description=f"the true key outscores {self.config.choices - 1} random keys (chance {1 / self.config.choices:.3f})"),
            Metric("answer_nll", False, ("answer_nll",), mean, description="nats per key token (chance: ln alphabet)"),
        ]

    def protocol(self) -> dict[str, Any]:
        import math

        c = self.config
        return {"description": self.summary(), "layout": "prefix token + '#' + key + filler + '?' + key = segments × segment "
                "tokens for a byte-level tokenizer (one token per character)", "segment": c.segment, "segments": c.segments,
                "key_length": c.key_length, "alphabet": c.alphabet, "choices": c.choices, "item_seed": c.item_seed,
                "distance_tokens": c.layout.filler_length + 1, "chance_accuracy": 1 / c.choices, "chance_nll": math.log(c.alphabet)}
