"""UBench (Wang et al. 2024): how far an LLM's stated confidence in a candidate answer can be trusted.

Items: a question and ONE candidate answer, right or wrong, rebuilt from public
multiple-choice sets because the paper's items are unreleased (``tasks/ubench_items.py``:
3,978 items as in UBench v1, four categories, 50/50 right and wrong; sources and counts
there). The model picks one of ten options, A = 0-10% ... J = 90-100% confidence that the
candidate is right; the option's interval midpoint is its confidence.

Modes (``--task-arg mode=...``):
- ``loglikelihood`` (default): the ten option letters are scored after the prompt; the
  argmax letter gives the confidence, and the expected confidence under the normalised
  letter distribution is reported too (``*_expected`` metrics).
- ``generate``: the model writes its answer and the letter is extracted (bracketed, bare,
  "option J", "Answer: J", or a percentage mapped to its interval). Unparsed answers are
  kept, counted in ``unparsed_rate`` and left out of the calibration metrics.

Metrics, in % and lower is better: ECE, MCE (10 equal-width bins), ACE, TACE (10 equal-mass
bins; TACE keeps confidences >= 0.1) and AVG = their mean (UBench's ranking); also Brier
score, AUROC of confidence vs correctness and the accuracy of the implied judgement
(confidence > 50% <=> the candidate is right); overall and per category, each with a
bootstrap CI over items. ``bins`` and ``tace_threshold`` are arguments (UBench does not state
its TACE threshold; Nixon et al.'s 0.01 would exclude nothing, as the lowest confidence is 5%).

The paper's studies: ``chain_of_thought=true`` (reason first, then "Answer: <letter>";
generate mode), ``role_play=true`` (an expert-evaluator system prompt),
``reverse_options=true`` (options listed J..A, letters keep their intervals) and
``temperature`` (generate mode; a sweep is one run per value). A reliability diagram
(PNG and SVG) is saved with every run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from harness import calibration
from harness.api import Capability, ChatMessage, Doc, GenerateRequest, LoglikelihoodRequest, Metric
from harness.data import DataStore
from harness.stats import MetricValue, mean, summarize_all
from harness.task import EvalSettings, Task, register_task
from tasks.ubench_items import CATEGORIES, LETTERS, build_items, source_counts

MIDPOINTS = {letter: (i + 0.5) / 10 for i, letter in enumerate(LETTERS)}
ROLE_PLAY = (
    "You are an experienced examiner who grades answers and knows the limits of their own knowledge. "
    "You report your confidence honestly."
)
INSTRUCTION = "How confident are you that the candidate answer is correct? Choose the option whose interval contains your confidence."


@dataclass(frozen=True)
class UBenchConfig:
    mode: Literal["loglikelihood", "generate"] = "loglikelihood"  # score the ten letters, or generate and parse one
    scale: float = 1.0  # multiplies each source's item count (1.0 = the 3,978 items of v1)
    item_seed: int = 0  # seed of the item builder, independent of the run seed
    chain_of_thought: bool = False  # reason first, then "Answer: <letter>" (needs mode=generate)
    role_play: bool = False  # prepend an expert-examiner system prompt
    reverse_options: bool = False  # list options J..A; letters keep their intervals
    temperature: float = 0.0  # sampling temperature (needs mode=generate; 0 = greedy)
    max_new_tokens: int | None = None  # default 16, or 256 with chain of thought
    bins: int = calibration.DEFAULT_BINS  # calibration bins for ECE/MCE/ACE/TACE (10)
    tace_threshold: float = calibration.DEFAULT_TACE_THRESHOLD  # TACE keeps confidences >= this, in [0, 1) (0.1)

    def __post_init__(self) -> None:
        if not 0 < self.scale <= 1:
            raise ValueError("scale must be in (0, 1]")
        if self.chain_of_thought and self.mode != "generate":
            raise ValueError("chain_of_thought needs mode=generate")
        if self.temperature and self.mode != "generate":
            raise ValueError("temperature needs mode=generate")
        if self.bins < 1 or not 0 <= self.tace_threshold < 1:
            raise ValueError("bins must be >= 1 and tace_threshold in [0, 1)")


def options_block(reverse: bool) -> str:
    lines = [f"{letter}: {i * 10}%-{(i + 1) * 10}%" for i, letter in enumerate(LETTERS)]
    return "\n".join(reversed(lines) if reverse else lines)


def build_prompt(item: dict[str, Any], config: UBenchConfig) -> str:
    if config.chain_of_thought:
        ask = "Think step by step about whether the candidate answer is correct, then finish with a line of the form 'Answer: <letter>'."
    else:
        ask = "Reply with the letter of one option only."
    return (
        f"Question: {item['question']}\nCandidate answer: {item['candidate']}\n\n"
        f"{INSTRUCTION}\n{options_block(config.reverse_options)}\n\n{ask}\nAnswer:"
    )


_ANSWER_IS = re.compile(r"(?:answer|option|choice)\s*(?:is|:|=)?\s*[\[(\"'*]*\s*([A-J])\b(?![%\w])", re.IGNORECASE)
_BRACKETED = re.compile(r"[\[(]\s*([A-J])\s*[\])]")
# A lone letter, or one followed by punctuation: "I am 85% sure" must not read as option I.
_BARE = re.compile(r"^\s*\**\s*([A-J])\s*(?:$|[.:)\],]|\*\*|-)")
_PERCENT_RANGE = re.compile(r"(\d{1,3}(?:\.\d+)?)\s*%?\s*(?:-|–|to)\s*(\d{1,3}(?:\.\d+)?)\s*%")
_PERCENT = re.compile(r"(\d{1,3}(?:\.\d+)?)\s*%")


def extract_letter(text: str) -> tuple[str | None, str]:
    """The chosen option letter and the pattern that found it, or (None, "unparsed").

    Order: the last "answer/option/choice (is|:) X"; a bracketed "[X]" / "(X)"; a bare letter
    opening the reply ("J", "J.", "J: 90%-100%"); a percentage range or a percentage, mapped
    to the interval that holds it (a range by its midpoint; 100% is J).
    """
    matches = _ANSWER_IS.findall(text)
    if matches:
        return matches[-1].upper(), "answer-is"
    match = _BRACKETED.search(text)
    if match:
        return match[1].upper(), "bracketed"
    match = _BARE.match(text)
    if match:
        return match[1].upper(), "bare"
    match = _PERCENT_RANGE.search(text)
    if match:
        value = (float(match[1]) + float(match[2])) / 2
        if 0 <= value <= 100:
            return LETTERS[min(int(value // 10), 9)], "percent-range"
    match = _PERCENT.search(text)
    if match and 0 <= float(match[1]) <= 100:
        return LETTERS[min(int(float(match[1]) // 10), 9)], "percent"
    return None, "unparsed"


def _calibration_metric(name: str, function, field: str, config: UBenchConfig) -> Metric:
    def statistic(confidence: np.ndarray, label: np.ndarray) -> float:
        if name == "tace":
            return 100 * function(confidence, label, config.bins, config.tace_threshold)
        return 100 * function(confidence, label, config.bins)

    return Metric(f"{name}{'_expected' if field != 'confidence' else ''}", False, (field, "label"), statistic)


def _avg_metric(field: str, config: UBenchConfig) -> Metric:
    def statistic(confidence: np.ndarray, label: np.ndarray) -> float:
        return 100 * float(np.mean([
            calibration.ece(confidence, label, config.bins), calibration.mce(confidence, label, config.bins),
            calibration.ace(confidence, label, config.bins), calibration.tace(confidence, label, config.bins, config.tace_threshold),
        ]))

    return Metric("avg" + ("_expected" if field != "confidence" else ""), False, (field, "label"), statistic,
                  description="mean of ECE, MCE, ACE, TACE (UBench's ranking)")


@register_task("ubench")
class UBench(Task):
    """UBench: stated confidence (A-J = 0-100%) in candidate answers; ECE, MCE, ACE, TACE, AVG."""

    version = "1"
    requires = frozenset({Capability.LOGLIKELIHOOD})  # mode=generate needs generate instead
    Config = UBenchConfig
    docs_per_chunk = 16

    @classmethod
    def adapt(cls, task_args: dict[str, Any], provides: frozenset[Capability]) -> tuple[dict[str, Any], str] | None:
        if "mode" in task_args or Capability.GENERATE not in provides:
            return None
        return {**task_args, "mode": "generate"}, "the method generates but does not score, so UBench runs in mode=generate (the paper's protocol)"

    def __init__(self, config: UBenchConfig | None = None) -> None:
        super().__init__(config)
        capability = Capability.GENERATE if self.config.mode == "generate" else Capability.LOGLIKELIHOOD
        self.requires = frozenset({capability})
        self.chat_by_default = self.config.mode == "generate"

    def draws_samples(self) -> bool:
        return self.config.mode == "generate" and self.config.temperature > 0

    def load_docs(self, data: DataStore) -> list[Doc]:
        items = build_items(data, self.config.item_seed, self.config.scale)
        self._counts = source_counts(items)
        return [Doc(f"{i.source}:{i.id}", i.as_dict()) for i in items]

    def _prompt(self, doc: Doc, settings: EvalSettings) -> str | tuple[ChatMessage, ...]:
        text = build_prompt(doc.data, self.config)
        if self.config.role_play:
            if settings.chat:
                return (ChatMessage("system", ROLE_PLAY), ChatMessage("user", text))
            return f"{ROLE_PLAY}\n\n{text}"
        return text

    def requests(self, doc: Doc, settings: EvalSettings) -> list[Any]:
        prompt = self._prompt(doc, settings)
        if self.config.mode == "generate":
            tokens = self.config.max_new_tokens or (256 if self.config.chain_of_thought else 16)
            stops = () if self.config.chain_of_thought else ("\n\n",)
            return [GenerateRequest(prompt, tokens, stops, self.config.temperature, chat=settings.chat)]
        if isinstance(prompt, tuple):  # role play under a chat template: the system turn joins the user turn
            prompt = f"{prompt[0].content}\n\n{prompt[1].content}"
        delimiter = "" if settings.chat else " "
        return [LoglikelihoodRequest(prompt, f"{delimiter}{letter}", chat=settings.chat) for letter in LETTERS]

    def score(self, doc: Doc, results, settings: EvalSettings) -> dict[str, Any]:
        record: dict[str, Any] = {"category": doc.data["category"], "source": doc.data["source"], "label": doc.data["label"]}
        if self.config.mode == "generate":
            (result,) = results
            letter, how = extract_letter(result.text)
            record.update(response=result.text, letter=letter, parsed_by=how, unparsed=int(letter is None))
            record["confidence"] = MIDPOINTS[letter] if letter else None
        else:
            logprobs = np.array([r.logprob for r in results])
            probabilities = np.exp(logprobs - logprobs.max())
            probabilities /= probabilities.sum()
            letter = LETTERS[int(np.argmax(logprobs))]
            record.update(letter=letter, letter_logprobs=logprobs.tolist(), unparsed=0, confidence=MIDPOINTS[letter],
                          expected_confidence=float(probabilities @ np.array(list(MIDPOINTS.values()))))
        if record["confidence"] is not None:
            record["judgement_correct"] = int((record["confidence"] > 0.5) == bool(record["label"]))
        else:
            record["judgement_correct"] = None
        return record

    def metrics(self) -> list[Metric]:
        fields = ["confidence"] + (["expected_confidence"] if self.config.mode == "loglikelihood" else [])
        out: list[Metric] = []
        for field in fields:
            out.append(_avg_metric(field, self.config))
            for name, function in (("ece", calibration.ece), ("mce", calibration.mce), ("ace", calibration.ace), ("tace", calibration.tace)):
                out.append(_calibration_metric(name, function, field, self.config))
            suffix = "_expected" if field != "confidence" else ""
            out.append(Metric(f"brier{suffix}", False, (field, "label"), calibration.brier))
            out.append(Metric(f"auroc{suffix}", True, (field, "label"), calibration.auroc))
        out.append(Metric("judgement_accuracy", True, ("judgement_correct",), mean, ci="wilson",
                          description="confidence > 50% <=> the candidate is right"))
        out.append(Metric("unparsed_rate", False, ("unparsed",), mean, ci="wilson"))
        return out

    def aggregate(self, records: Sequence[dict[str, Any]], seed: int) -> dict[str, MetricValue]:
        out = summarize_all(self.metrics(), records, seed)
        main = [m for m in self.metrics() if m.name in ("avg", "ece", "mce", "ace", "tace", "judgement_accuracy", "unparsed_rate")]
        for category in CATEGORIES:
            subset = [r for r in records if r["category"] == category]
            for name, value in summarize_all(main, subset, seed).items():
                out[f"{name}/{category}"] = value
        return out

    def artifacts(self, records: Sequence[dict[str, Any]], folder: Path) -> list[str]:
        from harness.plots import reliability_diagram

        groups = {"all": records, **{c: [r for r in records if r["category"] == c] for c in CATEGORIES}}
        return reliability_diagram(groups, "confidence", "label", folder / "reliability", self.config.bins,
                                   title=f"UBench reliability ({self.config.mode})")

    def protocol(self) -> dict[str, Any]:
        return {
            "description": self.summary(),
            "items": "rebuilt from public MC sets (tasks/ubench_items.py); the official items are unreleased",
            "sources": getattr(self, "_counts", None),
            "mode": self.config.mode,
            "confidence": "midpoint of the chosen interval (A = 5% ... J = 95%)",
            "bins": self.config.bins,
            "tace_threshold": self.config.tace_threshold,
            "studies": {k: getattr(self.config, k) for k in ("chain_of_thought", "role_play", "reverse_options", "temperature")},
            "prompt_example": build_prompt({"question": "<question>", "candidate": "<candidate>"}, self.config),
        }
