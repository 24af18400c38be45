"""PubMedQA (Jin et al. 2019): biomedical yes/no/maybe questions, scored as loglikelihood multiple choice.

Data: PQA-L, the 1,000 expert-labelled items (``pubmedqa/ori_pqal.json``); ``split=test``
(default) keeps the official 500-item test split given by ``pubmedqa/test_ground_truth.json``
(the same items as lm-evaluation-harness's ``pubmedqa``, bigbio fold 0 test); ``split=all``
keeps all 1,000.

Protocol (as lm-evaluation-harness's ``pubmedqa``): the prompt is
``"Abstract: <contexts joined by newlines>\\nQuestion: <question>\\nAnswer:"``; the choices
``" yes"``, ``" no"``, ``" maybe"`` are scored by summed log-probability and the argmax is the
prediction (zero-shot). With a chat template in use the prompt is the user turn and the
choices carry no leading space. Metrics: accuracy (Wilson CI) and macro-F1 over the three
classes (bootstrap CI).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from harness.api import Capability, Doc, LoglikelihoodRequest, Metric
from harness.data import DataStore, HubSource
from harness.errors import DataCorruptError, DataUnavailableError
from harness.stats import macro_f1, mean
from harness.task import EvalSettings, Task, register_task

CHOICES = ("yes", "no", "maybe")
ITEMS_FILE = "pubmedqa/ori_pqal.json"
TEST_FILE = "pubmedqa/test_ground_truth.json"


@dataclass(frozen=True)
class PubMedQAConfig:
    split: Literal["test", "all"] = "test"  # the 500-question test split, or all 1,000 labelled questions


def prompt(doc: Doc) -> str:
    return "Abstract: {}\nQuestion: {}\nAnswer:".format("\n".join(doc.data["contexts"]), doc.data["question"])


def _macro_f1(predicted: np.ndarray, gold: np.ndarray) -> float:
    return macro_f1(predicted, gold, len(CHOICES))



def read_json(data: DataStore, relative: str) -> dict[str, Any]:
    """A JSON file of the PubMedQA mirror; a file that does not parse is one clear error."""
    path = data.file(relative, "pubmedqa")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataCorruptError(f"dataset 'pubmedqa': cannot parse {relative}: {error}") from None

@register_task("pubmedqa")
class PubMedQA(Task):
    """PubMedQA PQA-L (official 500-item test split): yes/no/maybe by loglikelihood; accuracy, macro-F1."""

    version = "1"
    requires = frozenset({Capability.LOGLIKELIHOOD})
    Config = PubMedQAConfig
    docs_per_chunk = 16

    def load_docs(self, data: DataStore) -> list[Doc]:
        if data.mirror is not None:
            items = read_json(data, ITEMS_FILE)
            test_ids = None
            if self.config.split == "test":
                test_ids = read_json(data, TEST_FILE)
        else:
            if self.config.split == "test":
                raise DataUnavailableError(
                    "dataset 'pubmedqa' split=test needs the official test_ground_truth.json from a local mirror "
                    "(set HARNESS_DATA_DIR or --data-dir), or use --task-arg split=all with the hub"
                )
            rows = data.hub_rows(HubSource("qiaojin/PubMedQA", "pqa_labeled", "train"), "pubmedqa")
            items = {str(r["pubid"]): {"QUESTION": r["question"], "CONTEXTS": r["context"]["contexts"], "final_decision": r["final_decision"]} for r in rows}
            test_ids = None
        ids = list(test_ids) if test_ids is not None else list(items)
        docs = []
        for pmid in ids:
            item = items.get(pmid)
            if item is None or item.get("final_decision") not in CHOICES:
                raise DataCorruptError(f"dataset 'pubmedqa': item {pmid} is missing or has no yes/no/maybe label")
            docs.append(Doc(pmid, {"question": item["QUESTION"], "contexts": item["CONTEXTS"], "gold": item["final_decision"]}))
        return docs

    def requests(self, doc: Doc, settings: EvalSettings) -> list[LoglikelihoodRequest]:
        delimiter = "" if settings.chat else " "
        return [LoglikelihoodRequest(prompt(doc), f"{delimiter}{choice}", chat=settings.chat) for choice in CHOICES]

    def score(self, doc: Doc, results, settings: EvalSettings) -> dict[str, Any]:
        logprobs = [r.logprob for r in results]
        predicted = int(np.argmax(logprobs))
        gold = CHOICES.index(doc.data["gold"])
        return {
            "gold": CHOICES[gold], "pred": CHOICES[predicted], "gold_index": gold, "pred_index": predicted,
            "logprobs": logprobs, "correct": int(predicted == gold),
        }

    def metrics(self) -> list[Metric]:
        return [
            Metric("acc", True, ("correct",), mean, ci="wilson"),
            Metric("macro_f1", True, ("pred_index", "gold_index"), _macro_f1),
        ]

    def protocol(self) -> dict[str, Any]:
        return {
            "description": self.summary(),
            "split": self.config.split,
            "prompt": "Abstract: {contexts}\\nQuestion: {question}\\nAnswer:",
            "choices": [f" {c}" for c in CHOICES],
            "scoring": "argmax of summed continuation log-probability (lm-eval 'acc'), zero-shot",
        }


# PubMedQA as preference pairs conditioned on the abstract: mDPO's text analogue (PAPERS.md §9),
# trained on by ``harness train dpo|mdpo --data pubmedqa`` and measured by the ``preference`` task.
PAIR_PROMPT = "Abstract: {context}\nQuestion: {question}\nAnswer:"
PAIR_RULE = "chosen = the expert label; rejected = its contradiction (yes<->no; maybe -> yes or no, drawn per item)"


def contradiction(label: str, pmid: str) -> str:
    if label == "maybe":
        return random.Random(f"pubmedqa-preference/{pmid}").choice(("yes", "no"))
    return "no" if label == "yes" else "yes"


def pair_rows(data: DataStore, split: Literal["train", "test"]) -> list[dict[str, Any]]:
    """Preference rows (the passage layout of ``harness train dpo|mdpo``) for the PQA-L items
    outside (``train``) or inside (``test``) the official test split, in file order: the
    abstract is the passage, the chosen answer the expert label, the rejected its contradiction."""
    items, test_ids = read_json(data, ITEMS_FILE), set(read_json(data, TEST_FILE))
    rows = []
    for pmid, item in items.items():
        if (pmid in test_ids) != (split == "test"):
            continue
        label = item["final_decision"]
        rows.append({"id": pmid, "context": "\n".join(item["CONTEXTS"]),
                     "prompt": PAIR_PROMPT.replace("{question}", item["QUESTION"]), "chosen": label,
                     "rejected": contradiction(label, pmid)})
    return rows
