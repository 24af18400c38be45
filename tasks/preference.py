"""Held-out preference pairs with their condition (an image or a passage): does the model prefer
the chosen answer, and does it rely on the condition? What mDPO (Wang et al.; PAPERS.md §9)
claims its conditional term raises over DPO.

Data (``data=``): ``pubmedqa`` (default; the pairs of PubMedQA's 500 test items, the abstract as
the passage: ``tasks.pubmedqa.pair_rows``), ``shapes`` (the 100 test pairs of drawn shapes,
``training.shapes``) or a JSON / JSONL file in the layout ``harness train dpo|mdpo`` reads
(image or passage rows). Per pair, four scores of the answer's log-probability:
- preference accuracy: log p(chosen | condition) > log p(rejected | condition);
- condition reliance: log p(chosen | condition) − log p(chosen | corrupted condition), the
  corruption mDPO's (a 1–20% crop of the image resized back, or a contiguous 1–20% of the
  passage's words), drawn from ``corruption_seed`` and the pair;
- blank reliance: the same against no condition (a black image, or no passage).
Prompts are user turns of the model's chat template, rendered as the trainer renders them;
image rows whose prompt already holds the image token are used as written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness.api import Capability, Doc, LoglikelihoodRequest, Metric
from harness.data import DataStore
from harness.stats import mean
from harness.task import EvalSettings, Task, register_task
from tasks.pubmedqa import PAIR_PROMPT, PAIR_RULE, pair_rows
from training.passages import corrupt_passage, example_rng, user_turn
from training.preference import corrupt_image, read_rows

IMAGE_TOKEN = "<image>"


@dataclass(frozen=True)
class PreferenceConfig:
    data: str = "pubmedqa"  # "pubmedqa" (its test items' pairs), "shapes" (drawn shapes' test pairs) or a JSON / JSONL file
    split: Literal["test", "train"] = "test"  # pubmedqa: the 500 test items' pairs (train: the 500 the trainer uses)
    corruption_seed: int = 0  # draws each pair's corrupted condition


@register_task("preference")
class Preference(Task):
    """Preference pairs with an image or passage: preference accuracy and reliance on the condition."""

    requires = frozenset({Capability.LOGLIKELIHOOD})
    Config = PreferenceConfig
    chat_by_default = True

    def load_docs(self, data: DataStore) -> list[Doc]:
        if self.config.data == "pubmedqa":
            return [Doc(row["id"], row) for row in pair_rows(data, self.config.split)]
        if self.config.data == "shapes":
            from training.shapes import default_set

            path = default_set() / "test.json"
        else:
            path = Path(self.config.data).expanduser().resolve()
        docs = []
        for index, row in enumerate(read_rows(path)):
            if "image" in row:
                row["image"] = str(path.parent / row["image"])
            docs.append(Doc(str(row.get("id", index)), row))
        return docs

    def requests(self, doc: Doc, settings: EvalSettings) -> list[LoglikelihoodRequest]:
        row, rng = doc.data, example_rng(self.config.corruption_seed, doc.id)
        answers = (row["chosen"], row["rejected"], row["chosen"], row["chosen"])
        if "image" not in row:
            corrupted = corrupt_passage(row["context"], rng)
            turns = [user_turn(passage, row["prompt"]) for passage in (row["context"], row["context"], corrupted, "")]
            space = "" if settings.chat else " "
            return [LoglikelihoodRequest(turn, space + answer, chat=settings.chat) for turn, answer in zip(turns, answers, strict=True)]
        from PIL import Image

        image = Image.open(row["image"]).convert("RGB")
        images = (image, image, corrupt_image(image, rng), Image.new("RGB", image.size))
        chat = settings.chat and IMAGE_TOKEN not in row["prompt"]
        space = "" if chat else " "
        return [LoglikelihoodRequest(row["prompt"], space + answer, chat=chat, images=(picture,))
                for picture, answer in zip(images, answers, strict=True)]

    def score(self, doc: Doc, results, settings: EvalSettings) -> dict[str, Any]:
        chosen, rejected, corrupted, blank = (r.logprob for r in results)
        return {"chosen": doc.data["chosen"], "rejected": doc.data["rejected"], "chosen_logprob": chosen,
                "rejected_logprob": rejected, "corrupted_logprob": corrupted, "blank_logprob": blank,
                "prefers_chosen": int(chosen > rejected), "condition_reliance": chosen - corrupted, "blank_reliance": chosen - blank}

    def metrics(self) -> list[Metric]:
        return [
            Metric("preference_accuracy", True, ("prefers_chosen",), mean, ci="wilson", description="log p(chosen) > log p(rejected), with the condition"),
            Metric("condition_reliance", True, ("condition_reliance",), mean, description="log p(chosen | condition) − log p(chosen | corrupted condition)"),
            Metric("blank_reliance", True, ("blank_reliance",), mean, description="log p(chosen | condition) − log p(chosen | no condition)"),
            Metric("chosen_logprob", True, ("chosen_logprob",), mean, description="log p(chosen | condition)"),
        ]

    def protocol(self) -> dict[str, Any]:
        c = self.config
        protocol = {"description": self.summary(), "data": c.data, "corruption_seed": c.corruption_seed,
                    "corruption": "image: a 1-20% crop resized back (RandomResizedCrop scale (0.01, 0.2)); passage: a contiguous 1-20% of its words",
                    "blank": "a black image of the same size, or no passage"}
        if c.data == "pubmedqa":
            protocol.update(split=c.split, pairs=PAIR_RULE, prompt=PAIR_PROMPT)
        return protocol
