"""EmoBench (Sabour et al., ACL 2024; MIT): emotional understanding (EU) and application (EA).

200 hand-written scenarios per part, in English and Chinese (``language=``), from the data
mirror's ``emobench/``. EA asks for the most effective action or response for a person (4
choices); EU asks which emotion a person ultimately feels (6 choices), then why (4-6 choices).
Two protocols, recorded with every run because their numbers cannot be compared:

- ``protocol=paper`` (default): the paper-era code (commit cef95c3, ``paper-2024/`` in the
  mirror). Its system and user prompts from ``dicts.json``; EU in two stages, the cause asked
  for the emotion the model itself chose in that sample (a parse failure silently becomes the
  last emotion choice, as in ``generate.py``); ``samples`` (5) replies per question with the
  paper's open-model sampling (T 0.6, top-p 0.9, no repeated 2-grams, 75 new tokens, 500 with
  ``cot=true``); replies parsed by the official ``process_output``; a majority vote per
  question (``evaluate.py``: failures lose to any answer); an EU item counts only when both
  votes are right. The score is the mean over ``orders`` (4): the original choice order and
  the three shipped permutations. Note: the released paper outputs used other permutations
  and an earlier data revision (docs/emobench-protocol.md §6), so the shipped files give a
  re-draw of the paper's protocol, not its exact choice orders.
- ``protocol=2025``: the current repository's single prompt per item asking for a JSON reply
  (EU: both questions at once), one sample (T 0.6, 50 new tokens, 2048 with CoT), the letter
  compared as an exact string, as ``src/data.py`` does.

``mode=loglikelihood`` (paper prompts, for base models): the choice letters "(a)".. are
scored after the prompt and the argmax is the answer; no sampling, one reply per order; EU's
cause question names the emotion so chosen.

Metrics (fractions): accuracy (EU: both right) with a bootstrap CI over items, EU's emotion
and cause accuracy, the unparsed rate (replies ``process_output`` reads as -1), per category
(EA: Relationship-Problem as in the 2025 data; EU: coarse and fine-grained categories), and
two floors computed on the same items: ``chance`` (uniform guessing) and ``random_official``
(the official ``random`` model: a choice's text drawn at random, parsed, voted, so it
inherits the parser's faults; EA 24.12/26.12 and EU 2.62 in the paper). The paper protocol
also reports ``top_position_share``: the share of votes on the most chosen letter, 1.0 for a
model that gives one letter whatever the question.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from string import ascii_uppercase as UPPERCASE  # the 2025 protocol's letters
from typing import Any, Literal

import numpy as np

from harness.api import (
    Capability,
    ChatMessage,
    Doc,
    GenerateRequest,
    LoglikelihoodRequest,
    Metric,
    Request,
    dispatch_groups,
)
from harness.data import DataStore, HubSource
from harness.errors import DataCorruptError, DataUnavailableError
from harness.stats import MetricValue, jackknife_interval, mean, summarize_all
from harness.task import EvalSettings, Task, register_task
from tasks.emobench_protocol import (
    LETTERS,
    USER_2025,
    Part,
    choice_block,
    majority_vote,
    parse_json_response,
    process_output,
    rank_choices_2025,
    system_2025,
)

PARTS: dict[str, Part] = {"understanding": "EU", "application": "EA"}
ORDER_FILES = ("data", "data_permute_1", "data_permute_2", "data_permute_3")
EA_CATEGORIES = ("Personal-Others", "Social-Others", "Personal-Self", "Social-Self")
EU_COARSE = {
    "emotion_transition": "complex_emotions", "mixture_of_emotions": "complex_emotions",
    "unexpected_outcome": "complex_emotions", "visual_cues": "emotional_cues", "vocal_cues": "emotional_cues",
    "cultural_value": "personal_beliefs_and_experiences", "persona": "personal_beliefs_and_experiences",
    "sentimental_value": "personal_beliefs_and_experiences", "false_belief": "perspective_taking",
    "faux_pas": "perspective_taking", "strange_story": "perspective_taking",
}
# Per protocol: samples, orders, temperature, top-p, new tokens (CoT), no-repeat n-gram size.
DEFAULTS = {
    "paper": dict(samples=5, orders=4, temperature=0.6, top_p=0.9, max_new_tokens=75, cot_tokens=500, no_repeat_ngram_size=2),
    "2025": dict(samples=1, orders=1, temperature=0.6, top_p=1.0, max_new_tokens=50, cot_tokens=2048, no_repeat_ngram_size=0),
}


@dataclass(frozen=True)
class EmoBenchConfig:
    part: Literal["understanding", "application"] = "understanding"  # EU or EA
    language: Literal["en", "zh"] = "en"  # English or Chinese items (the same scenarios)
    protocol: Literal["paper", "2025"] = "paper"  # paper-era code (cef95c3) or the 2025 JSON protocol
    mode: Literal["generate", "loglikelihood"] = "generate"  # loglikelihood: score the choice letters (paper prompts)
    cot: bool = False  # the protocol's chain-of-thought prompts
    samples: int | None = None  # replies per question, majority-voted (paper 5, 2025 1)
    orders: int | None = None  # choice orders averaged: original + shipped permutations (paper 4, 2025 1)
    temperature: float | None = None  # paper 0.6 (its open models), 2025 0.6
    top_p: float | None = None  # paper 0.9, 2025 1.0
    max_new_tokens: int | None = None  # paper 75 (CoT 500), 2025 50 (CoT 2048)
    no_repeat_ngram_size: int | None = None  # paper 2, 2025 0 (off)

    def __post_init__(self) -> None:
        if self.mode == "loglikelihood":
            if self.protocol != "paper":
                raise ValueError("mode=loglikelihood scores the paper prompts' choice letters: use protocol=paper")
            if self.cot or (self.samples or 1) != 1:
                raise ValueError("mode=loglikelihood reads one answer per question: no cot, samples=1")
            if any(v is not None for v in (self.temperature, self.top_p, self.max_new_tokens, self.no_repeat_ngram_size)):
                raise ValueError("mode=loglikelihood does not sample: leave temperature, top_p, max_new_tokens unset")
        if self.samples is not None and self.samples < 1:
            raise ValueError("samples must be at least 1")
        if self.protocol == "2025" and (self.samples or 1) != 1:
            raise ValueError("protocol=2025 reads one reply per item: samples=1")
        if self.orders is not None and not 1 <= self.orders <= (4 if self.protocol == "paper" else 1):
            raise ValueError("orders must be 1-4 with protocol=paper (original + 3 shipped permutations), 1 with 2025")
        if self.temperature is not None and self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be positive")

    @property
    def code(self) -> Part:
        return PARTS[self.part]

    def setting(self, name: str) -> Any:
        """A sampling setting: the argument, else the protocol's default."""
        value = getattr(self, name)
        if value is not None:
            return value
        if self.mode == "loglikelihood" and name == "samples":
            return 1
        defaults = DEFAULTS[self.protocol]
        if name == "max_new_tokens" and self.cot:
            return defaults["cot_tokens"]
        return defaults[name]


@register_task("emobench")
class EmoBench(Task):
    """EmoBench: emotional understanding and application, the paper's or the 2025 protocol."""

    version = "1"
    requires = frozenset({Capability.GENERATE})
    Config = EmoBenchConfig
    chat_by_default = True
    docs_per_chunk = 8

    def __init__(self, config: EmoBenchConfig | None = None) -> None:
        super().__init__(config)
        loglikelihood = self.config.mode == "loglikelihood"
        self.requires = frozenset({Capability.LOGLIKELIHOOD if loglikelihood else Capability.GENERATE})
        self.chat_by_default = not loglikelihood
        self.prompts: dict[str, Any] = {}

    # --- data ---------------------------------------------------------------------------------

    def draws_samples(self) -> bool:
        return self.config.mode == "generate" and self.config.setting("temperature") > 0

    def load_docs(self, data: DataStore) -> list[Doc]:
        config, code = self.config, self.config.code
        if config.protocol == "2025":
            return self._load_2025(data)
        if data.mirror is None:
            raise DataUnavailableError("emobench protocol=paper reads the paper-era files (paper-2024/), which only a local "
                                       "data mirror has (set HARNESS_DATA_DIR or --data-dir); protocol=2025 can read the hub")
        self.prompts = _read_json(data, "emobench/paper-2024/dicts.json")["Prompts"]
        versions = [_read_json(data, f"emobench/paper-2024/{code}_{name}.json") for name in ORDER_FILES[: config.setting("orders")]]
        if any(len(v) != len(versions[0]) for v in versions):
            raise DataCorruptError("emobench: the permutation files do not hold the same items")
        docs = []
        for index, variants in enumerate(zip(*versions, strict=True)):
            first, lang = variants[0], config.language
            fields: dict[str, Any] = {"scenario": first["Scenario"][lang], "subject": first["Subject"][lang]}
            if code == "EA":
                fields |= {"q_type": first["Question"][lang], "problem": first["Problem"], "relationship": first["Relationship"],
                           "category": f"{first['Relationship']}-{'Others' if first['Problem'] == 'Interpersonal' else 'Self'}",
                           "orders": [{"choices": v["Choices"][lang], "label": int(v["Label"])} for v in variants]}
            else:
                fields |= {"category": first["Category"], "coarse_category": EU_COARSE.get(first["Category"], ""),
                           "orders": [_eu_order(v, lang) for v in variants]}
            docs.append(Doc(f"{code}-{lang}-{index + 1}", fields))
        return docs

    def _load_2025(self, data: DataStore) -> list[Doc]:
        code, lang = self.config.code, self.config.language
        if data.mirror is None:  # the current repository's files are also on the hub
            rows = data.hub_rows(HubSource("SahandSab/EmoBench", split="train", data_files=f"{code}.jsonl"), "emobench")
        else:
            path = data.file(f"emobench/{code}.jsonl", "emobench")
            try:
                rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            except (OSError, json.JSONDecodeError) as error:
                raise DataCorruptError(f"emobench: {path.name} is not JSON lines: {error}") from None
        docs = []
        for row in (r for r in rows if r.get("language") == lang):
            fields: dict[str, Any] = {"scenario": row["scenario"], "subject": row["subject"]}
            if code == "EA":
                fields |= {"q_type": row["question type"], "category": row["category"],
                           "orders": [{"choices": row["choices"], "label": _index(row["choices"], row["label"])}]}
            else:
                fields |= {"category": row["finegrained_category"], "coarse_category": row["coarse_category"],
                           "orders": [{"emotion_choices": row["emotion_choices"],
                                       "emotion_label": _index(row["emotion_choices"], row["emotion_label"]),
                                       "cause_choices": row["cause_choices"],
                                       "cause_label": _index(row["cause_choices"], row["cause_label"])}]}
            docs.append(Doc(f"{code}-{lang}-{row['qid']}", fields))
        return docs

    # --- prompts ------------------------------------------------------------------------------

    def family(self) -> str:
        """What a request of this configuration asks, in words a model can read (``GenerateRequest.family``)."""
        what = {"EA": "emotional application: choosing the most effective action or response for a person in an emotional scenario",
                "EU": "emotional understanding: identifying the emotion a person in a scenario ultimately feels, and its cause"}
        return f"EmoBench {what[self.config.code]} ({'English' if self.config.language == 'en' else 'Chinese'})"

    def _paper_user(self, doc: Doc, order: dict[str, Any], emotion: str | None = None) -> str:
        lang, data, prompts = self.config.language, doc.data, self.prompts
        suffix = prompts["cot" if self.config.cot else "no_cot"][lang]
        if self.config.code == "EA":
            return prompts["EA"][lang].format(scenario=data["scenario"], subject=data["subject"], q_type=data["q_type"],
                                              choices=choice_block(order["choices"])) + suffix
        if emotion is None:
            return prompts["EU"]["Emotion"][lang].format(scenario=data["scenario"], subject=data["subject"],
                                                         choices=choice_block(order["emotion_choices"])) + suffix
        return prompts["EU"]["Cause"][lang].format(scenario=data["scenario"], emotions=emotion, subject=data["subject"],
                                                   choices=choice_block(order["cause_choices"])) + suffix

    def _user_2025(self, doc: Doc, order: dict[str, Any]) -> str:
        data, template = doc.data, USER_2025[(self.config.code, self.config.language)]
        if self.config.code == "EA":
            return template.format(scenario=data["scenario"], subject=data["subject"], q_type=data["q_type"],
                                   choices=rank_choices_2025(order["choices"]))
        return template.format(scenario=data["scenario"], subject=data["subject"],
                               emo_choices=rank_choices_2025(order["emotion_choices"]),
                               cause_choices=rank_choices_2025(order["cause_choices"]))

    def _system(self) -> str:
        if self.config.protocol == "2025":
            return system_2025(self.config.code, self.config.language, self.config.cot)
        return self.prompts["System_cot" if self.config.cot else "System"][self.config.language]

    def _generate(self, user: str, settings: EvalSettings) -> list[Request]:
        config, system = self.config, self._system()
        prompt: str | tuple[ChatMessage, ...] = (
            (ChatMessage("system", system), ChatMessage("user", user)) if settings.chat else f"{system}\n\n{user}")
        request = GenerateRequest(prompt, config.setting("max_new_tokens"), (), config.setting("temperature"),
                                  config.setting("top_p"), chat=settings.chat,
                                  no_repeat_ngram_size=config.setting("no_repeat_ngram_size"), family=self.family())
        return [request] * config.setting("samples")

    def _letters(self, user: str, n_choices: int, settings: EvalSettings) -> list[Request]:
        # The system prompt joins the user turn: a loglikelihood request renders one user turn.
        context = f"{self._system()}\n\n{user}"
        return [LoglikelihoodRequest(context, f"({LETTERS[i]})", chat=settings.chat) for i in range(n_choices)]

    def _first_stage(self, doc: Doc, order: dict[str, Any], settings: EvalSettings) -> list[Request]:
        if self.config.protocol == "2025":
            return self._generate(self._user_2025(doc, order), settings)
        user = self._paper_user(doc, order)
        if self.config.mode == "loglikelihood":
            return self._letters(user, len(order["choices" if self.config.code == "EA" else "emotion_choices"]), settings)
        return self._generate(user, settings)

    def requests(self, doc: Doc, settings: EvalSettings) -> list[Request]:
        """Every first-stage request of an item, order by order (EU's cause questions depend
        on the answers to these and are built in ``evaluate``)."""
        return [r for order in doc.data["orders"] for r in self._first_stage(doc, order, settings)]

    # --- evaluation ---------------------------------------------------------------------------

    def evaluate(self, docs: Sequence[Doc], method: Any, settings: EvalSettings) -> list[dict[str, Any]]:
        jobs = [(doc, o, order) for doc in docs for o, order in enumerate(doc.data["orders"])]
        first = [self._first_stage(doc, order, settings) for doc, _, order in jobs]
        answers = dispatch_groups(method, first)
        replies = [self._read(doc, order, batch, "first") for (doc, _, order), batch in zip(jobs, answers, strict=True)]
        if self.config.code == "EU" and self.config.protocol == "paper":
            second = []
            for (doc, _, order), reply in zip(jobs, replies, strict=True):
                emotions = order["emotion_choices"]
                # generate.py: e_c[e_r], where a parse failure (-1) is the last emotion choice.
                second.append([r for pred in reply["preds"] for r in self._cause(doc, order, emotions[pred], settings)])
            answers = dispatch_groups(method, second)
            for (doc, _, order), reply, batch in zip(jobs, replies, answers, strict=True):
                reply["cause"] = self._read(doc, order, batch, "cause")
        records = []
        for doc in docs:
            orders = [(o, order, reply) for (d, o, order), reply in zip(jobs, replies, strict=True) if d is doc]
            records.append({"doc_id": doc.id, **self._score(doc, orders, settings.seed)})
        return records

    def _cause(self, doc: Doc, order: dict[str, Any], emotion: str, settings: EvalSettings) -> list[Request]:
        user = self._paper_user(doc, order, emotion)
        if self.config.mode == "loglikelihood":
            return self._letters(user, len(order["cause_choices"]), settings)
        return self._generate(user, settings)[:1]  # one cause question per emotion sample

    def _read(self, doc: Doc, order: dict[str, Any], answers: Sequence[Any], stage: str) -> dict[str, Any]:
        """Replies and parsed predictions of one order's question (``stage``: first or cause)."""
        config, lang = self.config, self.config.language
        if config.mode == "loglikelihood":
            logprobs = [a.logprob for a in answers]
            return {"logprobs": logprobs, "preds": [int(np.argmax(logprobs))], "responses": []}
        texts = [a.text for a in answers]
        extra = {"info": [a.info for a in answers]} if any(a.info for a in answers) else {}  # a method's notes (reasoning)
        if config.protocol == "2025":
            parsed = [parse_json_response(t) or {} for t in texts]
            return {"responses": texts, "answers": [{k: str(v) for k, v in p.items() if k.startswith("answer")} for p in parsed]} | extra
        choices = order["choices"] if config.code == "EA" else order["cause_choices" if stage == "cause" else "emotion_choices"]
        # generate.py strips each reply before parsing.
        return {"responses": texts, "preds": [process_output(t.strip(), choices, lang, config.code) for t in texts]} | extra

    def _score(self, doc: Doc, orders: list[tuple[int, dict[str, Any], dict[str, Any]]], seed: int) -> dict[str, Any]:
        config = self.config
        record: dict[str, Any] = {"category": doc.data["category"]}
        if config.code == "EU":
            record["coarse_category"] = doc.data["coarse_category"]
        per_order, right, emotion_right, cause_right, failures, replies = [], [], [], [], 0, 0
        for o, order, reply in orders:
            entry: dict[str, Any] = {"order": ORDER_FILES[o] if config.protocol == "paper" else "2025"}
            if config.protocol == "2025":
                entry.update(reply)
                letters = reply["answers"][0]
                if config.code == "EA":
                    label = UPPERCASE[order["label"]]
                    ok = letters.get("answer", "") == label
                    entry.update(label=label)
                    failures += "answer" not in letters
                else:
                    emotion_label, cause_label = UPPERCASE[order["emotion_label"]], UPPERCASE[order["cause_label"]]
                    emotion_ok = letters.get("answer_q1", "") == emotion_label
                    cause_ok = letters.get("answer_q2", "") == cause_label
                    ok = emotion_ok and cause_ok
                    emotion_right.append(emotion_ok)
                    cause_right.append(cause_ok)
                    entry.update(emotion_label=emotion_label, cause_label=cause_label)
                    failures += "answer_q1" not in letters or "answer_q2" not in letters
                replies += 1
            elif config.code == "EA":
                vote = majority_vote(reply["preds"])
                ok = vote == order["label"]
                entry.update(reply, vote=vote, label=order["label"])
                failures += sum(p == -1 for p in reply["preds"])
                replies += len(reply["preds"])
            else:
                cause = reply["cause"]
                emotion_vote, cause_vote = majority_vote(reply["preds"]), majority_vote(cause["preds"])
                emotion_ok, cause_ok = emotion_vote == order["emotion_label"], cause_vote == order["cause_label"]
                ok = emotion_ok and cause_ok
                emotion_right.append(emotion_ok)
                cause_right.append(cause_ok)
                entry.update(emotion={k: v for k, v in reply.items() if k != "cause"} | {"vote": emotion_vote, "label": order["emotion_label"]},
                             cause=cause | {"vote": cause_vote, "label": order["cause_label"]})
                preds = reply["preds"] + cause["preds"]
                failures += sum(p == -1 for p in preds)
                replies += len(preds)
            entry["correct"] = int(ok)
            right.append(ok)
            per_order.append(entry)
        record["orders"] = per_order
        record["accuracy"] = float(np.mean(right))
        if config.code == "EU":
            record["emotion_accuracy"] = float(np.mean(emotion_right))
            record["cause_accuracy"] = float(np.mean(cause_right))
        record["unparsed_rate"] = failures / replies if replies and config.mode == "generate" else 0.0
        record["chance"] = float(np.mean([_chance(config.code, order) for _, order, _ in orders]))
        record["random_official"] = _official_random(doc, [order for _, order, _ in orders], config, seed)
        return record

    # --- metrics ------------------------------------------------------------------------------

    def metrics(self) -> list[Metric]:
        # One order and one reply per item: each item is right or wrong, a proportion.
        how: Literal["wilson", "bootstrap"] = "wilson" if self.config.setting("orders") == 1 else "bootstrap"
        out = [Metric("accuracy", True, ("accuracy",), mean, ci=how,
                      description="EU: emotion and cause both right; mean over choice orders")]
        if self.config.code == "EU":
            out += [Metric("emotion_accuracy", True, ("emotion_accuracy",), mean, ci=how),
                    Metric("cause_accuracy", True, ("cause_accuracy",), mean, ci=how)]
        out += [Metric("unparsed_rate", False, ("unparsed_rate",), mean, description="replies the official parser reads as -1"),
                Metric("chance", True, ("chance",), mean, description="uniform guessing on these items"),
                Metric("random_official", True, ("random_official",), mean,
                       description="the official random model (a choice's text drawn, parsed, voted) on these items")]
        return out

    def aggregate(self, records: Sequence[dict[str, Any]], seed: int) -> dict[str, MetricValue]:
        out = summarize_all(self.metrics(), records, seed)
        if self.config.protocol == "paper" and records:
            out["top_position_share"] = top_position_share(records)
        main = self.metrics()[: 3 if self.config.code == "EU" else 1]
        groups = [("category", sorted({r["category"] for r in records}))]
        if self.config.code == "EU":
            groups.insert(0, ("coarse_category", sorted({r["coarse_category"] for r in records})))
        for field, values in groups:
            # EU's eleven fine categories get accuracy alone; the four coarse ones every main metric.
            chosen = main[:1] if field == "category" else main
            for value in values:
                subset = [r for r in records if r[field] == value]
                for name, metric in summarize_all(chosen, subset, seed).items():
                    out[f"{name}/{value}"] = metric
        return out

    def protocol(self) -> dict[str, Any]:
        config = self.config
        settings = {k: config.setting(k) for k in ("samples", "orders")}
        if config.mode == "generate":
            settings |= {k: config.setting(k) for k in ("temperature", "top_p", "max_new_tokens", "no_repeat_ngram_size")}
        return {
            "description": self.summary(),
            "part": config.code, "language": config.language, "protocol": config.protocol, "mode": config.mode, "cot": config.cot,
            "source": "paper-2024/ (Sahandfer/EmoBench cef95c3)" if config.protocol == "paper" else "EA.jsonl/EU.jsonl (3b4f843)",
            "choice_orders": list(ORDER_FILES[: settings["orders"]]) if config.protocol == "paper" else ["original"],
            **settings,
            "parser": "process_output of generate.py (cef95c3), majority vote of evaluate.py" if config.protocol == "paper"
            else "parse_json_response of src/utils.py, exact letter compare (3b4f843)",
            "eu_scoring": "an item counts when the emotion and the cause are both right" if config.code == "EU" else None,
            "system_prompt": self._system() if config.protocol == "2025" or self.prompts else None,
        }


def _vote_positions(record: dict[str, Any]) -> list[int]:
    """The choice positions a paper-protocol record's votes fell on (EU: the emotion's and the
    cause's), unparsed votes (-1) left out."""
    votes = []
    for entry in record["orders"]:
        if "emotion" in entry:
            votes += [entry["emotion"]["vote"], entry["cause"]["vote"]]
        else:
            votes.append(entry["vote"])
    return [v for v in votes if v >= 0]


def top_position_share(records: Sequence[dict[str, Any]]) -> MetricValue:
    """The share of votes on the single most chosen choice position (A, B, ...) over all items
    and orders: near 1/k for a model that reads the choices, 1.0 for one that answers one letter
    every time, whatever the question; the four shipped orders move the right answer, so such
    a model's accuracy is only the share of right answers at that letter. Pooled over items, so
    the interval is the delete-one jackknife's, as for distinct-n."""
    positions = [_vote_positions(r) for r in records]
    width = 1 + max((p for ps in positions for p in ps), default=0)
    counts = np.array([np.bincount(ps, minlength=width) for ps in positions], dtype=float)
    total = counts.sum(axis=0)

    def share(column_sums: np.ndarray) -> float:
        n = column_sums.sum()
        return float(column_sums.max() / n) if n else float("nan")

    value = share(total)
    without_each = np.array([share(total - row) for row in counts])
    low, high, how = jackknife_interval(value, without_each)
    return MetricValue(value, low, high, len(records), False, how)


def _read_json(data: DataStore, relative: str) -> Any:
    path = data.file(relative, "emobench")
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, json.JSONDecodeError) as error:
        raise DataCorruptError(f"emobench: {relative} is not JSON: {error}") from None


def _index(choices: Sequence[str], label: str) -> int:
    try:
        return list(choices).index(label)
    except ValueError:
        raise DataCorruptError(f"emobench: the label {label!r} is not among its choices") from None


def _eu_order(item: dict[str, Any], lang: str) -> dict[str, Any]:
    emotion, cause = item["Emotion"], item["Cause"]
    return {"emotion_choices": emotion["Choices"][lang], "emotion_label": _index(emotion["Choices"][lang], emotion["Label"][lang]),
            "cause_choices": cause["Choices"][lang], "cause_label": _index(cause["Choices"][lang], cause["Label"][lang])}


def _chance(code: Part, order: dict[str, Any]) -> float:
    if code == "EA":
        return 1 / len(order["choices"])
    return 1 / len(order["emotion_choices"]) / len(order["cause_choices"])


def _official_random(doc: Doc, orders: Sequence[dict[str, Any]], config: EmoBenchConfig, seed: int) -> float:
    """generate.py's ``random`` model on this item: each reply is a choice's text drawn
    uniformly, then parsed, voted and scored like a model's (5 replies, paper protocol)."""
    rng = random.Random(f"emobench-random-{seed}-{doc.id}")
    samples, lang, right = 5, config.language, []
    for order in orders:
        if config.code == "EA":
            choices = order["choices"]
            preds = [process_output(rng.choice(choices).strip(), choices, lang, "EA") for _ in range(samples)]
            right.append(majority_vote(preds) == order["label"])
        else:
            emotions, causes = order["emotion_choices"], order["cause_choices"]
            emotion_preds, cause_preds = [], []
            for _ in range(samples):
                emotion_preds.append(process_output(rng.choice(emotions).strip(), emotions, lang, "EU"))
                cause_preds.append(process_output(rng.choice(causes).strip(), causes, lang, "EU"))
            right.append(majority_vote(emotion_preds) == order["emotion_label"] and majority_vote(cause_preds) == order["cause_label"])
    return float(np.mean(right))

