"""PubMedQA as preference pairs conditioned on a passage: mDPO's text-conditional analogue
(PAPERS.md §9). The abstract plays the image: the chosen answer is the expert label the abstract
supports, the rejected one contradicts it (yes ↔ no; for "maybe", yes or no drawn by the seed).

Pairs from the 500 PQA-L items outside the official test split train ``harness train dpo|mdpo
--data pubmedqa``; this task measures a model on the pairs of the 500 test items (``split=test``):
- preference accuracy: log p(chosen | abstract) > log p(rejected | abstract);
- context reliance: log p(chosen | abstract) − log p(chosen | corrupted abstract), the corruption
  mDPO's text analogue (a contiguous 1–20% of the abstract's words, drawn from
  ``corruption_seed`` and the item), and blank reliance, against no abstract at all.
The prompt is the ``pubmedqa`` task's (``Abstract: …\\nQuestion: …\\nAnswer:``) as the user turn
of the model's chat template, the answers the bare label words, as the trainer renders them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

from harness.api import Capability, Doc, LoglikelihoodRequest, Metric
from harness.data import DataStore
from harness.stats import mean
from harness.task import EvalSettings, Task, register_task
from tasks.pubmedqa import ITEMS_FILE, TEST_FILE, read_json
from training.passages import corrupt_passage, example_rng, user_turn

PROMPT = "Abstract: {context}\nQuestion: {question}\nAnswer:"
RULE = "chosen = the expert label; rejected = its contradiction (yes<->no; maybe -> yes or no, drawn per item from seed 0)"


def contradiction(label: str, pmid: str) -> str:
    if label == "maybe":
        return random.Random(f"pubmedqa-preference/{pmid}").choice(("yes", "no"))
    return "no" if label == "yes" else "yes"


def pair_rows(data: DataStore, split: Literal["train", "test"]) -> list[dict[str, Any]]:
    """Preference rows in the passage layout of ``harness train dpo|mdpo`` for the PQA-L items
    outside (``train``) or inside (``test``) the official test split, in file order."""
    items, test_ids = read_json(data, ITEMS_FILE), set(read_json(data, TEST_FILE))
    rows = []
    for pmid, item in items.items():
        if (pmid in test_ids) != (split == "test"):
            continue
        label = item["final_decision"]
        rows.append({"id": pmid, "context": "\n".join(item["CONTEXTS"]),
                     "prompt": PROMPT.replace("{question}", item["QUESTION"]), "chosen": label,
                     "rejected": contradiction(label, pmid)})
    return rows


@dataclass(frozen=True)
class PubMedQAPreferenceConfig:
    split: Literal["test", "train"] = "test"  # the pairs of the 500 test items (train: the 500 the trainer uses)
    corruption_seed: int = 0  # draws each item's corrupted abstract


@register_task("pubmedqa-preference")
class PubMedQAPreference(Task):
    """PubMedQA pairs with their abstract: preference accuracy and reliance on the abstract (mDPO's text analogue)."""

    requires = frozenset({Capability.LOGLIKELIHOOD})
    Config = PubMedQAPreferenceConfig
    chat_by_default = True

    def load_docs(self, data: DataStore) -> list[Doc]:
        return [Doc(row["id"], row) for row in pair_rows(data, self.config.split)]

    def requests(self, doc: Doc, settings: EvalSettings) -> list[LoglikelihoodRequest]:
        row, space = doc.data, "" if settings.chat else " "
        corrupted = corrupt_passage(row["context"], example_rng(self.config.corruption_seed, doc.id))
        turns = (user_turn(row["context"], row["prompt"]), user_turn(row["context"], row["prompt"]),
                 user_turn(corrupted, row["prompt"]), user_turn("", row["prompt"]))
        answers = (row["chosen"], row["rejected"], row["chosen"], row["chosen"])
        return [LoglikelihoodRequest(turn, space + answer, chat=settings.chat) for turn, answer in zip(turns, answers, strict=True)]

    def score(self, doc: Doc, results, settings: EvalSettings) -> dict[str, Any]:
        chosen, rejected, corrupted, blank = (r.logprob for r in results)
        return {"chosen": doc.data["chosen"], "rejected": doc.data["rejected"], "chosen_logprob": chosen,
                "rejected_logprob": rejected, "corrupted_logprob": corrupted, "blank_logprob": blank,
                "prefers_chosen": int(chosen > rejected), "context_reliance": chosen - corrupted, "blank_reliance": chosen - blank}

    def metrics(self) -> list[Metric]:
        return [
            Metric("preference_accuracy", True, ("prefers_chosen",), mean, ci="wilson", description="log p(chosen) > log p(rejected), with the abstract"),
            Metric("context_reliance", True, ("context_reliance",), mean, description="log p(chosen | abstract) − log p(chosen | corrupted abstract)"),
            Metric("blank_reliance", True, ("blank_reliance",), mean, description="log p(chosen | abstract) − log p(chosen | no abstract)"),
            Metric("chosen_logprob", True, ("chosen_logprob",), mean, description="log p(chosen | abstract)"),
        ]

    def protocol(self) -> dict[str, Any]:
        return {"description": self.summary(), "split": self.config.split, "pairs": RULE, "prompt": PROMPT,
                "corruption": "a contiguous 1-20% of the abstract's words", "corruption_seed": self.config.corruption_seed}
