"""PG-19 long-book language modelling (Rae et al. 2019), as HMT evaluates it (He et al.;
PAPERS.md §1): word and token perplexity per book and overall.

Data: the PG-19 test books in the mirror (``pg19/test/<gutenberg id>.txt``, raw Project
Gutenberg files; ``pg19/pg19_test_ids_titles.tsv`` gives titles and the canonical order).
The Gutenberg header and footer are removed as PG-19 does: everything up to the end of the
``*** START OF THE/THIS PROJECT GUTENBERG EBOOK … ***`` line and from ``*** END OF …`` (or
an earlier "End of the Project Gutenberg EBook of …" line) on;
a book without both markers is reported as corrupt rather than scored with its licence.
The training books (``pg19/train``) are never read here: they are HMT's training data.

Protocols (``protocol=``):
- ``corpus`` (default): each book scored whole with rolling windows of ``window`` tokens
  advancing by ``stride`` (defaults: the method's context, disjoint windows); pooled word /
  token perplexity, bits per byte. ``max_tokens`` (approximately, via 4 characters per token)
  cuts each book's start for quick runs.
- ``last-segment``: the official HMT protocol — from each book, samples of ``sample_tokens``
  (default 8192) consecutive tokens' worth of text; only the last ``segment`` (1024) tokens'
  worth are scored, the rest is unscored context the method may use (a base model sees what
  fits in its window; HMT/RMT carry memory across the whole sample). ``samples_per_book``
  (default 1) samples, evenly spaced.

Words are whitespace tokens of the scored text; tokens are the model's own (token perplexity
compares only models sharing a tokenizer). CIs are bootstrap over books.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from harness.api import Capability, Doc, Metric, StreamRequest
from harness.data import DataStore
from harness.errors import DataCorruptError
from harness.stats import bits_per_unit, perplexity
from harness.task import EvalSettings, Task, register_task

ORDER = "pg19/pg19_test_ids_titles.tsv"
START = re.compile(r"\*\*\*\s*START OF (?:THE|THIS) PROJECT GUTENBERG E-?BOOK.*?\*\*\*", re.IGNORECASE | re.DOTALL)
END = re.compile(r"\*\*\*\s*END OF (?:THE|THIS) PROJECT GUTENBERG E-?BOOK", re.IGNORECASE)
# Older files close the text with "End of the Project Gutenberg EBook of <title>" before the marker.
END_LINE = re.compile(r"^\s*End of (?:the )?Project Gutenberg'?s? (?:E-?Book|Etext)", re.IGNORECASE | re.MULTILINE)
CHARS_PER_TOKEN = 4  # for sizing samples in text before any tokenizer is known


def strip_gutenberg(text: str) -> str | None:
    """The book between the Gutenberg START and END markers, or None if either is missing."""
    start, end = START.search(text), END.search(text)
    if start is None or end is None or end.start() <= start.end():
        return None
    closing = END_LINE.search(text, start.end(), end.start())
    return text[start.end() : closing.start() if closing else end.start()].strip("\r\n ") + "\n"


@dataclass(frozen=True)
class PG19Config:
    protocol: Literal["corpus", "last-segment"] = "corpus"  # whole books, or the tail segment of sampled passages
    window: int | None = None  # corpus: tokens per rolling window (default: the model's context length)
    stride: int | None = None  # corpus: tokens scored per window after the first (default: window)
    max_tokens: int | None = None  # corpus: score only about this many tokens of each book
    sample_tokens: int = 8192  # last-segment: sample length
    segment: int = 1024  # last-segment: scored tail
    samples_per_book: int = 1  # last-segment: passages drawn per book

    def __post_init__(self) -> None:
        if self.window is not None and self.window < 1:
            raise ValueError("window must be positive")
        if self.stride is not None and (self.stride < 1 or (self.window is not None and self.stride > self.window)):
            raise ValueError("stride must be between 1 and window")
        if self.segment < 1 or self.sample_tokens <= self.segment or self.samples_per_book < 1:
            raise ValueError("need 1 <= segment < sample_tokens and samples_per_book >= 1")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError("max_tokens must be positive")


@register_task("pg19")
class PG19(Task):
    """PG-19 test books (Gutenberg boilerplate removed): word/token perplexity per book and overall."""

    version = "1"
    requires = frozenset({Capability.STREAM})
    Config = PG19Config
    docs_per_chunk = 1

    def load_docs(self, data: DataStore) -> list[Doc]:
        order = data.file(ORDER, "pg19").read_text(encoding="utf-8").splitlines()
        titles = dict(line.split("\t", 1) for line in order if "\t" in line)
        mirrored = {relative.split("/")[-1][: -len(".txt")] for relative in data.manifest if relative.startswith("pg19/test/")}
        docs = []
        for book_id in [line.split("\t", 1)[0] for line in order if line.split("\t", 1)[0] in mirrored]:
            raw = data.file(f"pg19/test/{book_id}.txt", "pg19").read_text(encoding="utf-8", errors="replace")
            book = strip_gutenberg(raw)
            if book is None:
                raise DataCorruptError(f"pg19/test/{book_id}.txt has no Project Gutenberg START/END markers")
            docs += self._docs_of(book_id, titles.get(book_id, ""), book)
        if not docs:
            raise DataCorruptError("the mirror lists no PG-19 test books (pg19/test/*.txt)")
        return docs

    def _docs_of(self, book_id: str, title: str, book: str) -> list[Doc]:
        c = self.config
        if c.protocol == "corpus":
            text = book[: c.max_tokens * CHARS_PER_TOKEN] if c.max_tokens else book
            return [Doc(f"book-{book_id}", {"book": book_id, "title": title, "text": text, "context": ""})]
        size, tail = c.sample_tokens * CHARS_PER_TOKEN, c.segment * CHARS_PER_TOKEN
        if len(book) < size:
            return []  # too short for one sample: not scored (counted in the protocol)
        starts = [round(i * (len(book) - size) / max(1, c.samples_per_book - 1)) for i in range(c.samples_per_book)]
        docs = []
        for index, start in enumerate(starts):
            sample = book[start : start + size]
            cut = sample.rfind(" ", 0, len(sample) - tail) + 1 or len(sample) - tail  # split at a word boundary
            docs.append(Doc(f"book-{book_id}-{index}", {"book": book_id, "title": title, "text": sample[cut:], "context": sample[:cut]}))
        return docs

    def requests(self, doc: Doc, settings: EvalSettings) -> list[StreamRequest]:
        return [StreamRequest(doc.data["text"], doc.data["context"], self.config.window, self.config.stride)]

    def score(self, doc: Doc, results, settings: EvalSettings) -> dict[str, Any]:
        (result,) = results
        return {
            "book": doc.data["book"], "title": doc.data["title"], "logprob": result.logprob, "n_tokens": result.n_tokens,
            "n_words": len(doc.data["text"].split()), "n_bytes": len(doc.data["text"].encode("utf-8")),
            "n_context_chars": len(doc.data["context"]), "n_windows": result.n_windows, "window": result.window,
            "stride": result.stride,
        }

    def metrics(self) -> list[Metric]:
        return [
            Metric("word_perplexity", False, ("logprob", "n_words"), perplexity, description="exp(-Σ log p / Σ words), pooled over books"),
            Metric("token_perplexity", False, ("logprob", "n_tokens"), perplexity, description="per model token: compare within a tokenizer"),
            Metric("bits_per_byte", False, ("logprob", "n_bytes"), bits_per_unit),
        ]

    def protocol(self) -> dict[str, Any]:
        c = self.config
        protocol = {"description": self.summary(), "protocol": c.protocol, "window": c.window, "stride": c.stride,
                    "boilerplate": "Project Gutenberg header/footer removed at the START/END markers"}
        if c.protocol == "corpus":
            protocol["max_tokens"] = c.max_tokens
        else:
            protocol.update(sample_tokens=c.sample_tokens, segment=c.segment, samples_per_book=c.samples_per_book,
                            sizing=f"{CHARS_PER_TOKEN} characters per token, cut at a word boundary")
        return protocol
