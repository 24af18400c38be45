"""WikiText-103 language modelling (Merity et al. 2016): word perplexity, byte perplexity, bits per byte.

Data: the WikiText-103 v1 test (or validation) split, ``wikitext/wikitext-103/wiki.*.tokens.csv``
in the mirror (one-column CSV of the Hugging Face ``wikitext-103-v1`` rows, which the hub path
reads directly). The original file is rebuilt from the rows (``" \\n"`` for each blank row) and
split into its 62 test articles at the top-level ``" = Title = "`` headings. The test split
holds the same articles as WikiText-2's test.

Protocol (recorded in results):
- ``variant=document`` (default): each article is scored on its own, starting from the
  model's prefix token (BOS, else EOS), as lm-evaluation-harness's ``wikitext`` does.
- ``variant=stream``: the articles form one concatenated stream; each article is scored with
  the text before it as unscored context, so windows cross article boundaries.
- Rolling windows of ``window`` tokens (default: the method's context length) advancing by
  ``stride`` tokens (default: ``window``, i.e. disjoint windows). Each later window sees
  ``window - stride`` tokens of context; stride == window reproduces lm-eval's
  ``loglikelihood_rolling`` exactly.
- ``detokenize=true`` (default) feeds the model lm-eval's ``wikitext_detokenizer`` of the
  tokenized text (``" @-@ "`` -> ``"-"``, spacing around punctuation); ``<unk>`` stays.
- Word count: whitespace tokens of the original tokenized text plus one ``<eos>`` per line,
  the convention behind the usual 245,569 test words. Bytes: UTF-8 bytes of the text fed to
  the model. Word perplexity = exp(-sum log p / words), pooled over articles; CIs are
  bootstrap over articles.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from typing import Any, Literal

from harness.api import Capability, Doc, Metric, StreamRequest
from harness.data import DataStore, HubSource
from harness.errors import DataCorruptError
from harness.stats import bits_per_unit, perplexity
from harness.task import EvalSettings, Task, register_task

FILES = {"test": "wikitext/wikitext-103/wiki.test.tokens.csv", "validation": "wikitext/wikitext-103/wiki.valid.tokens.csv"}
HEADING = re.compile(r"^ = [^=].* = \n$")
STREAM_CONTEXT_CHARS = 200_000  # enough preceding text for any window up to ~50K tokens


@dataclass(frozen=True)
class WikiText103Config:
    split: Literal["test", "validation"] = "test"  # which WikiText-103 split to score
    variant: Literal["document", "stream"] = "document"  # score each article alone, or as one stream with prior text as context
    window: int | None = None  # rolling-window length in tokens (None = the method's context length)
    stride: int | None = None  # tokens each window advances, 1..window (None = window: disjoint)
    detokenize: bool = True  # apply lm-eval's wikitext_detokenizer to the tokenized text

    def __post_init__(self) -> None:
        if self.window is not None and self.window < 1:
            raise ValueError("window must be a positive number of tokens")
        if self.stride is not None and (self.stride < 1 or (self.window is not None and self.stride > self.window)):
            raise ValueError("stride must be between 1 and window")


def rebuild_lines(rows: list[str]) -> list[str]:
    """The original ``wiki.*.tokens`` lines from the HF rows (blank rows are ``" \\n"``)."""
    return [row if row else " \n" for row in rows]


def split_articles(lines: list[str]) -> list[tuple[str, list[str]]]:
    articles: list[tuple[str, list[str]]] = []
    for line in lines:
        if HEADING.match(line) or not articles:
            title = line.strip(" =\n") if HEADING.match(line) else ""
            articles.append((title, []))
        articles[-1][1].append(line)
    if articles and not articles[0][0] and len(articles) > 1:
        # Leading blank line(s) before the first heading belong to the first article.
        lead = articles.pop(0)[1]
        articles[0] = (articles[0][0], lead + articles[0][1])
    return articles


def wikitext_detokenizer(text: str) -> str:
    """lm-evaluation-harness's ``preprocess_wikitext.wikitext_detokenizer``."""
    from lm_eval.tasks.wikitext.preprocess_wikitext import wikitext_detokenizer as detokenize

    return detokenize({"page": text})


@register_task("wikitext103")
class WikiText103(Task):
    """WikiText-103 test: word/byte perplexity and bits per byte over 62 articles (rolling windows)."""

    version = "1"
    requires = frozenset({Capability.STREAM})
    Config = WikiText103Config
    docs_per_chunk = 1  # an article is several windows already

    def load_docs(self, data: DataStore) -> list[Doc]:
        relative = FILES[self.config.split]
        if data.mirror is not None:
            path = data.file(relative, "wikitext103")
            try:
                with path.open(encoding="utf-8", newline="") as handle:
                    rows = [row[0] if row else "" for row in csv.reader(handle)]
            except (UnicodeDecodeError, csv.Error, OSError) as error:
                raise DataCorruptError(f"dataset 'wikitext103': cannot parse {relative}: {error}") from None
        else:
            split = "validation" if self.config.split == "validation" else "test"
            rows = [r["text"] for r in data.hub_rows(HubSource("Salesforce/wikitext", "wikitext-103-v1", split), "wikitext103")]
        docs = []
        preceding = io.StringIO()
        for index, (title, lines) in enumerate(split_articles(rebuild_lines(rows))):
            original = "".join(lines)
            text = wikitext_detokenizer(original) if self.config.detokenize else original
            words = sum(len(line.split()) + 1 for line in lines)
            context = preceding.getvalue()[-STREAM_CONTEXT_CHARS:] if self.config.variant == "stream" else ""
            docs.append(Doc(f"article-{index:03d}", {"title": title, "text": text, "n_words": words, "context": context}))
            preceding.write(text)
        return docs

    def requests(self, doc: Doc, settings: EvalSettings) -> list[StreamRequest]:
        return [StreamRequest(doc.data["text"], doc.data["context"], self.config.window, self.config.stride)]

    def score(self, doc: Doc, results, settings: EvalSettings) -> dict[str, Any]:
        (result,) = results
        return {
            "title": doc.data["title"],
            "logprob": result.logprob,
            "n_tokens": result.n_tokens,
            "n_words": doc.data["n_words"],
            "n_bytes": len(doc.data["text"].encode("utf-8")),
            "n_windows": result.n_windows,
            "window": result.window,
            "stride": result.stride,
        }

    def metrics(self) -> list[Metric]:
        return [
            Metric("word_perplexity", False, ("logprob", "n_words"), perplexity, description="exp(-Σ log p / Σ words), words incl. one <eos> per line"),
            Metric("byte_perplexity", False, ("logprob", "n_bytes"), perplexity),
            Metric("bits_per_byte", False, ("logprob", "n_bytes"), bits_per_unit),
            Metric("token_perplexity", False, ("logprob", "n_tokens"), perplexity, description="model-tokenizer dependent"),
        ]

    def protocol(self) -> dict[str, Any]:
        return {
            "description": self.summary(),
            "split": self.config.split,
            "variant": self.config.variant,
            "window": self.config.window or "method context length (resolved value in samples)",
            "stride": self.config.stride or "equal to window (disjoint windows)",
            "detokenize": self.config.detokenize,
            "word_count": "whitespace tokens of the tokenized text + one <eos> per line",
            "byte_count": "UTF-8 bytes of the text fed to the model",
        }
