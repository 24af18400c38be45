"""UBench items rebuilt from public multiple-choice sets (the paper's items are unreleased).

Each UBench item is a question and ONE candidate answer, right or wrong. ``build_items``
draws questions from the mirror's multiple-choice sets, seeded, and pairs exactly half of each
source's questions with the gold answer and half with one distractor (drawn from that
question's wrong options). The paper's v1 size is 3,978 items; the default counts below add
up to exactly that, about 1,000 per category.

Category mapping (UBench names four categories; this is how the public sets fit them):

=============  ==============================================  ==========================
category       source (mirror file)                            items (default)
=============  ==============================================  ==========================
knowledge      MMLU test, 57 subjects (mmlu/test)              500
knowledge      ARC-Challenge test (arc)                        250
knowledge      OpenBookQA main test (openbookqa)               250
language       SST-2 validation: sentence sentiment (sst2)     872 (all)
language       Pang & Lee movie reviews: sentiment             128
understanding  CommonsenseQA dev (commonsenseqa)               600
understanding  TruthfulQA MC1: resisting misconceptions        400
reasoning      GSM8K test: the final number (gsm8k)            500
reasoning      LogiQA test: logical reasoning (logiqa)         478
=============  ==============================================  ==========================

Knowledge = recalling facts (academic subjects, grade-school science). Language = judging
what a text says (sentiment of a sentence or review). Understanding = commonsense and
seeing through common misconceptions. Reasoning = multi-step arithmetic and logic.
GSM8K has no options: its distractor is the gold number changed by a seeded random offset
(±1 to ±10, or ×/÷ 2 and 10 for numbers over 20), never equal to the gold number.
SST-2 and movie-review distractors are the opposite sentiment.

A loader for the official UBench items can sit beside ``build_items`` and return the same
``Item`` records.
"""

from __future__ import annotations

import csv
import json
import random
import re
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass

from harness.data import DataStore
from harness.errors import DataCorruptError

CATEGORIES = ("knowledge", "language", "understanding", "reasoning")
LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    options: tuple[str, ...]
    gold: int


@dataclass(frozen=True)
class Item:
    id: str
    category: str
    source: str
    question: str
    candidate: str
    label: int  # 1: the candidate is the right answer

    def as_dict(self) -> dict:
        return asdict(self)


# readers: mirror files -> Questions -------------------------------------------------------------
def _mmlu(data: DataStore) -> list[Question]:
    root = data.file("mmlu/test/abstract_algebra_test.csv", "ubench").parent
    out = []
    for path in sorted(root.glob("*_test.csv")):
        relative = f"mmlu/test/{path.name}"
        with data.file(relative, "ubench").open(encoding="utf-8", newline="") as handle:
            for i, row in enumerate(csv.DictReader(handle)):
                subject = path.name.removesuffix("_test.csv").replace("_", " ")
                out.append(Question(f"mmlu/{path.stem}/{i}", f"({subject}) {row['question']}",
                                    tuple(row[f"choice{k}"] for k in range(4)), int(row["answer"])))
    return out


def _arc(data: DataStore) -> list[Question]:
    out = []
    for line in data.file("arc/ARC-Challenge-Test.jsonl", "ubench").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        labels = [c["label"] for c in row["question"]["choices"]]
        if row["answerKey"] in labels:
            out.append(Question(f"arc/{row['id']}", row["question"]["stem"],
                                tuple(c["text"] for c in row["question"]["choices"]), labels.index(row["answerKey"])))
    return out


def _openbookqa(data: DataStore) -> list[Question]:
    out = []
    with data.file("openbookqa/test.tsv", "ubench").open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            parts = re.split(r"\(([A-D])\) ", row["Choices"])[1:]
            labels, texts = parts[0::2], [t.strip() for t in parts[1::2]]
            out.append(Question(f"openbookqa/{row['ID']}", row["Question Stem"], tuple(texts), labels.index(row["Answer Key"])))
    return out


def _sst2(data: DataStore) -> list[Question]:
    out = []
    with data.file("sst2/dev.tsv", "ubench").open(encoding="utf-8", newline="") as handle:
        for i, row in enumerate(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)):
            text = f'What is the sentiment of this sentence: "{row["sentence"].strip()}"'
            out.append(Question(f"sst2/{i}", text, ("negative", "positive"), int(row["label"])))
    return out


def _movie_reviews(data: DataStore) -> list[Question]:
    out = []
    with zipfile.ZipFile(data.file("movie_reviews/movie_reviews.zip", "ubench")) as archive:
        for name in sorted(archive.namelist()):
            match = re.match(r"movie_reviews/(pos|neg)/(.+)\.txt$", name)
            if match:
                review = archive.read(name).decode("utf-8", errors="replace").strip()
                out.append(Question(f"movie_reviews/{match[1]}/{match[2]}", f"Is this movie review positive or negative?\n{review}",
                                    ("negative", "positive"), int(match[1] == "pos")))
    return out


def _commonsenseqa(data: DataStore) -> list[Question]:
    out = []
    for line in data.file("commonsenseqa/dev_rand_split.jsonl", "ubench").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        out.append(Question(f"commonsenseqa/{row['id']}", row["question"], tuple(row["choices"]["text"]),
                            row["choices"]["label"].index(row["answerKey"])))
    return out


def _truthfulqa(data: DataStore) -> list[Question]:
    rows = json.loads(data.file("truthfulqa/mc_task.json", "ubench").read_text(encoding="utf-8"))
    out = []
    for i, row in enumerate(rows):
        options = tuple(row["mc1_targets"])
        out.append(Question(f"truthfulqa/{i}", row["question"], options, list(row["mc1_targets"].values()).index(1)))
    return out


def _gsm8k(data: DataStore) -> list[Question]:
    out = []
    for i, line in enumerate(data.file("gsm8k/test.jsonl", "ubench").read_text(encoding="utf-8").splitlines()):
        row = json.loads(line)
        answer = row["answer"].split("####")[-1].strip().replace(",", "")
        out.append(Question(f"gsm8k/{i}", row["question"], (answer,), 0))
    return out


def _logiqa(data: DataStore) -> list[Question]:
    lines = data.file("logiqa/Test.txt", "ubench").read_text(encoding="utf-8").splitlines()
    out = []
    for i in range(0, len(lines) - 7, 8):
        block = lines[i : i + 8]
        answer, context, question, options = block[1].strip(), block[2].strip(), block[3].strip(), block[4:8]
        texts = tuple(re.sub(r"^[A-D]\.\s*", "", o.strip()) for o in options)
        if answer not in "abcd" or len(answer) != 1:
            raise DataCorruptError(f"dataset 'ubench': logiqa/Test.txt item {i // 8} has answer '{answer}'")
        out.append(Question(f"logiqa/{i // 8}", f"{context}\n{question}", texts, "abcd".index(answer)))
    return out


@dataclass(frozen=True)
class Source:
    name: str
    category: str
    count: int
    read: Callable[[DataStore], list[Question]]


SOURCES: tuple[Source, ...] = (
    Source("mmlu", "knowledge", 500, _mmlu),
    Source("arc_challenge", "knowledge", 250, _arc),
    Source("openbookqa", "knowledge", 250, _openbookqa),
    Source("sst2", "language", 872, _sst2),
    Source("movie_reviews", "language", 128, _movie_reviews),
    Source("commonsenseqa", "understanding", 600, _commonsenseqa),
    Source("truthfulqa_mc1", "understanding", 400, _truthfulqa),
    Source("gsm8k", "reasoning", 500, _gsm8k),
    Source("logiqa", "reasoning", 478, _logiqa),
)


def _number_distractor(gold: str, rng: random.Random) -> str:
    value = float(gold)
    while True:
        if abs(value) > 20 and rng.random() < 0.3:
            candidate = value * rng.choice([2, 10, 0.5, 0.1])
        else:
            candidate = value + rng.choice([-1, 1]) * rng.randint(1, 10)
        text = f"{candidate:g}" if candidate != int(candidate) else str(int(candidate))
        if text != gold:
            return text


def build_items(data: DataStore, seed: int = 0, scale: float = 1.0) -> list[Item]:
    """The UBench-style item set: seeded, balanced 50/50 per source, in a stable order.

    ``scale`` multiplies every source's count (rounded, at least 2), for quick runs.
    """
    items: list[Item] = []
    for source in SOURCES:
        questions = source.read(data)
        count = min(len(questions), max(2, round(source.count * scale)))
        rng = random.Random(f"ubench:{seed}:{source.name}")
        chosen = sorted(rng.sample(range(len(questions)), count))
        right = set(rng.sample(chosen, count // 2))
        for index in chosen:
            question = questions[index]
            if index in right:
                candidate, label = question.options[question.gold], 1
            elif source.name == "gsm8k":
                candidate, label = _number_distractor(question.options[0], rng), 0
            else:
                wrong = [o for k, o in enumerate(question.options) if k != question.gold]
                candidate, label = rng.choice(wrong), 0
            items.append(Item(question.id, source.category, source.name, question.text, candidate, label))
    return items


def source_counts(items: list[Item]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for item in items:
        entry = counts.setdefault(item.source, {"category": item.category, "items": 0, "right": 0})  # type: ignore[dict-item]
        entry["items"] += 1
        entry["right"] += item.label
    return counts

