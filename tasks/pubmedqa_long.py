"""Long-context PubMedQA as HMT evaluates it (He et al.; PAPERS.md §1): the contexts of M
PubMedQA items concatenated, then each item's question — accuracy on the short answers
(yes/no/maybe) and perplexity on the long answers.

Data: PQA-L (``pubmedqa/ori_pqal.json``), the official 500-item test split by default
(``split=all``: 1,000), in order; consecutive groups of ``contexts`` (M, default 4; the paper
sweeps 2…10) items form one document (a last partial group is dropped). The long context is
``"Abstracts:\\n"`` + every item's abstract sections joined by newlines; each question then
follows it on its own (questions do not see each other's answers).

Scoring uses only the ``stream`` capability, so memory methods (HMT, RMT) and the
sliding-window baseline run it unchanged: a short answer is the argmax of the log-probability
of ``" yes"``, ``" no"``, ``" maybe"`` after ``"<context>\\nQuestion: <q>\\nAnswer:"``; a long
answer is scored after ``"<context>\\nQuestion: <q>\\nLong answer:"``. Metrics: accuracy over
items (pooled per group, bootstrap CI over groups), long-answer word and token perplexity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from harness.api import Capability, Doc, Metric, StreamRequest
from harness.data import DataStore
from harness.stats import perplexity, ratio_of_sums
from harness.task import EvalSettings, Task, register_task
from tasks.pubmedqa import CHOICES, PubMedQA, PubMedQAConfig, read_json


@dataclass(frozen=True)
class PubMedQALongConfig:
    contexts: int = 4  # M: questions whose contexts are concatenated into one long document
    split: Literal["test", "all"] = "test"  # the 500-question test split, or all 1,000 labelled questions

    def __post_init__(self) -> None:
        if not 1 <= self.contexts <= 100:
            raise ValueError("contexts (M) must be between 1 and 100")


def long_context(items: list[dict[str, Any]]) -> str:
    return "Abstracts:\n" + "\n".join("\n".join(item["contexts"]) for item in items)


@register_task("pubmedqa-long")
class PubMedQALong(Task):
    """PubMedQA with M concatenated contexts: short-answer accuracy and long-answer perplexity (stream)."""

    version = "1"
    requires = frozenset({Capability.STREAM})
    Config = PubMedQALongConfig
    docs_per_chunk = 1

    def load_docs(self, data: DataStore) -> list[Doc]:
        base = PubMedQA(PubMedQAConfig(split=self.config.split))
        items = base.load_docs(data)
        raw = read_json(data, "pubmedqa/ori_pqal.json")
        m = self.config.contexts
        docs = []
        for start in range(0, len(items) - m + 1, m):
            group = [{"pmid": d.id, **d.data, "long_answer": raw[d.id].get("LONG_ANSWER", "")} for d in items[start : start + m]]
            docs.append(Doc(f"group-{start // m:03d}", {"items": group, "context": long_context(group)}))
        return docs

    def requests(self, doc: Doc, settings: EvalSettings) -> list[StreamRequest]:
        context, out = doc.data["context"], []
        for item in doc.data["items"]:
            question = f"{context}\nQuestion: {item['question']}\n"
            out += [StreamRequest(f" {choice}", question + "Answer:") for choice in CHOICES]
            out.append(StreamRequest(f" {item['long_answer']}", question + "Long answer:"))
        return out

    def score(self, doc: Doc, results, settings: EvalSettings) -> dict[str, Any]:
        per_item, correct, long_logprob, long_tokens, long_words = [], 0, 0.0, 0, 0
        for index, item in enumerate(doc.data["items"]):
            options = results[4 * index : 4 * index + 3]
            long = results[4 * index + 3]
            predicted = CHOICES[max(range(3), key=lambda j: options[j].logprob)]
            correct += predicted == item["gold"]
            long_logprob += long.logprob
            long_tokens += long.n_tokens
            long_words += len(item["long_answer"].split())
            per_item.append({"pmid": item["pmid"], "gold": item["gold"], "pred": predicted,
                             "logprobs": [o.logprob for o in options], "long_logprob": long.logprob})
        return {"n_items": len(per_item), "n_correct": correct, "long_logprob": long_logprob,
                "long_tokens": long_tokens, "long_words": long_words,
                "context_chars": len(doc.data["context"]), "items": per_item}

    def metrics(self) -> list[Metric]:
        return [
            Metric("acc", True, ("n_correct", "n_items"), ratio_of_sums, description="short answers (yes/no/maybe)"),
            Metric("long_answer_word_perplexity", False, ("long_logprob", "long_words"), perplexity),
            Metric("long_answer_token_perplexity", False, ("long_logprob", "long_tokens"), perplexity),
        ]

    def protocol(self) -> dict[str, Any]:
        return {"description": self.summary(), "contexts": self.config.contexts, "split": self.config.split,
                "context": "'Abstracts:\\n' + the M items' contexts", "short": "argmax over ' yes', ' no', ' maybe' (stream scoring)",
                "long": "log-probability of ' ' + LONG_ANSWER after '...\\nLong answer:'"}
