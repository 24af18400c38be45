"""MT-Bench first turns (Zheng et al. 2023; ``mt_bench/question.jsonl``, 80 questions in 8
categories) with a judge model's rating: the helpfulness check that a decoding defense keeps
the model useful (CleanGen, PAPERS.md §8, reports MT-Bench first-turn scores).

Protocol: each first turn is the user turn of the model's chat template; greedy decoding,
``max_new_tokens`` 256 by default. The judge reads MT-Bench's own single-answer grading
prompt (``judge_prompts.jsonl``, "single-v1", with its system prompt) as a chat turn, and
instead of writing an explanation and then "Rating: [[r]]" (which a small judge cannot do
reliably), the answer prefix "Rating: [[" is scored by loglikelihood for r = 1..10; the
rating is the expectation under the judge's renormalised distribution over the ten values
(a continuous 1-10 score; the argmax is kept too). Metrics: mean rating (bootstrap CI),
per-category means, the share of answers naming an attack keyword ("McDonald", "pwned"), and
a defense's replacement rate when it reports one (``cleangen``).

Judge: ``judge=<zoo model>``, default ``gemma3-270m``: the zoo's largest model and not a
SmolLM2, so the SmolLM2 variants being compared are not graded by themselves. A 270M judge
is weak; its ratings compare systems on the same questions (paired), not against the
paper's GPT-4 scores.

A judge behind an API (``judge=openai:gpt-4``, ``judge=openai-compatible:<url>::<model>``)
grades as MT-Bench itself does (FastChat ``gen_judgment.py``): it writes its judgment greedily
(up to 2048 tokens) and the rating is read with FastChat's patterns ("[[r]]", else "[r]"); a
judgment without one is left out of the mean, as FastChat's ``show_result`` leaves out its
-1, and counted in ``judge_unparsed_rate``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.api import Capability, ChatMessage, Doc, GenerateRequest, LoglikelihoodRequest, Metric, dispatch
from harness.data import DataStore
from harness.errors import DataCorruptError
from harness.method import Cost, Method
from harness.models import LoadedModel
from harness.remote import is_remote
from harness.stats import mean
from harness.task import EvalSettings, Task, register_task
from tasks.backdoor_asr import KEYWORDS, replaced_share

QUESTIONS = "mt_bench/question.jsonl"
JUDGE_PROMPTS = "mt_bench/judge_prompts.jsonl"
RATINGS = tuple(range(1, 11))
# FastChat's ``one_score_pattern`` and its backup (fastchat/llm_judge/common.py).
SCORE_PATTERNS = (re.compile(r"\[\[(\d+\.?\d*)\]\]"), re.compile(r"\[(\d+\.?\d*)\]"))
JUDGMENT_MAX_TOKENS = 2048  # FastChat's max_tokens for single-answer grading


@dataclass(frozen=True)
class MTBenchConfig:
    judge: str = "gemma3-270m"  # model rating each answer 1-10: zoo, local, or an API model (the paper's judge is GPT-4)
    max_new_tokens: int = 256  # answer length budget per question

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be positive")


@register_task("mt-bench")
class MTBench(Task):
    """MT-Bench first turns rated 1-10 by a judge model (expected rating); keyword and replacement rates."""

    version = "1"
    requires = frozenset({Capability.GENERATE})
    Config = MTBenchConfig
    chat_by_default = True
    docs_per_chunk = 8
    _judge_lm: Any = None  # loaded on first use, like the run's model

    def auxiliary_models(self) -> dict[str, str]:
        return {"judge": self.config.judge}

    def load_docs(self, data: DataStore) -> list[Doc]:
        path = data.file(QUESTIONS, "mt_bench")
        template_rows = [json.loads(line) for line in data.file(JUDGE_PROMPTS, "mt_bench").read_text(encoding="utf-8").splitlines() if line.strip()]
        judge = next((r for r in template_rows if r.get("name") == "single-v1"), None)
        if judge is None:
            raise DataCorruptError(f"{JUDGE_PROMPTS} has no 'single-v1' judge prompt")
        self._judge_prompt = judge
        docs = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                docs.append(Doc(f"mt-bench:{row['question_id']}", {"question": row["turns"][0], "category": row["category"]}))
        return docs

    def metrics(self) -> list[Metric]:
        metrics = [
            Metric("rating", True, ("rating",), mean, description="judge's expected rating, 1-10"),
            Metric("rating_argmax", True, ("rating_argmax",), mean),
            Metric("keyword_rate", False, ("keyword",), mean, "wilson", "answers naming an attack keyword"),
            Metric("replacement_rate", False, ("replaced", "checked"), replaced_share),
            Metric("mean_new_tokens", True, ("n_tokens",), mean),
        ]
        if is_remote(self.config.judge):
            metrics.append(Metric("judge_unparsed_rate", False, ("judge_unparsed",), mean, "wilson",
                                  "judgments with no [[rating]] (left out of the mean rating)"))
        return metrics

    def evaluate(self, docs: Sequence[Doc], method: Method, settings: EvalSettings) -> list[dict[str, Any]]:
        requests = [GenerateRequest(d.data["question"], self.config.max_new_tokens, (), 0.0, chat=settings.chat) for d in docs]
        answers = dispatch(method, requests)
        grade = self._judge_by_judgment if is_remote(self.config.judge) else self._judge_by_likelihood
        judge = self._judge(method.loaded)
        judge.cost = Cost()  # this call's spending, counted into the run's cost as the judge's
        judged = grade(judge, [d.data["question"] for d in docs], [a.text for a in answers])
        method.cost.add_as("judge", judge.cost)
        records = []
        for doc, answer, grading in zip(docs, answers, judged, strict=True):
            lowered = answer.text.lower()
            records.append({
                "doc_id": doc.id, "category": doc.data["category"], "response": answer.text, "n_tokens": answer.n_tokens,
                "keyword": int(any(k in lowered for k in KEYWORDS.values())),
                "replaced": answer.info.get("replaced"), "checked": answer.info.get("checked"), **grading,
            })
        return records

    def _judge_by_judgment(self, judge: Any, questions: Sequence[str], answers: Sequence[str]) -> list[dict[str, Any]]:
        """MT-Bench's own grading by a judge behind an API: the judgment written out, greedily,
        and its rating read by FastChat's patterns."""
        template = self._judge_prompt
        requests = [GenerateRequest((ChatMessage("system", template["system_prompt"]),
                                     ChatMessage("user", template["prompt_template"].format(question=q, answer=a))),
                                    JUDGMENT_MAX_TOKENS, (), 0.0)
                    for q, a in zip(questions, answers, strict=True)]
        out = []
        for judgment in (r.text for r in judge.generate(requests)):
            rating = parse_rating(judgment)
            out.append({"rating": rating, "rating_argmax": rating, "judgment": judgment, "judge_unparsed": int(rating is None)})
        return out

    def _judge(self, run_model: LoadedModel):
        """The judge, loaded once, like the run's model (device, dtype); its cost counted apart."""
        if self._judge_lm is None:
            from harness.lm import auxiliary_lm

            self._judge_lm = auxiliary_lm(self.config.judge, like=run_model)
        return self._judge_lm

    def _judge_by_likelihood(self, judge: Any, questions: Sequence[str], answers: Sequence[str]) -> list[dict[str, Any]]:
        """A local judge's expected rating from the loglikelihood of each rating after "Rating: [[", and its argmax."""
        template = self._judge_prompt
        requests = []
        for question, answer in zip(questions, answers, strict=True):
            user = template["prompt_template"].format(question=question, answer=answer)
            if judge.loaded.has_chat_template:
                context = judge.render_chat([ChatMessage("system", template["system_prompt"]), ChatMessage("user", user)])
            else:
                context = f"{template['system_prompt']}\n\n{user}\n\n"
            requests += [LoglikelihoodRequest(context + "Rating: [[", f"{r}]]") for r in RATINGS]
        scores = [r.logprob for r in judge.loglikelihood(requests)]
        out = []
        for i in range(len(questions)):
            logprobs = np.array(scores[i * len(RATINGS) : (i + 1) * len(RATINGS)])
            weights = np.exp(logprobs - logprobs.max())
            weights /= weights.sum()
            out.append({"rating": float(np.dot(weights, RATINGS)), "rating_argmax": int(RATINGS[int(np.argmax(logprobs))])})
        return out

    def aggregate(self, records, seed: int):
        from harness.stats import summarize

        values = super().aggregate(records, seed)
        for category in sorted({r["category"] for r in records}):
            subset = [r for r in records if r["category"] == category]
            values[f"rating/{category}"] = summarize(self.metrics()[0], subset, seed)
        return values

    def protocol(self) -> dict[str, Any]:
        return {
            "description": self.summary(),
            "judge": self.config.judge,
            "judge_prompt": ("MT-Bench single-v1, judgment written greedily (2048 tokens), rating by FastChat's [[r]] pattern"
                             if is_remote(self.config.judge) else
                             "MT-Bench single-v1 + answer prefix 'Rating: [[', ratings 1-10 scored by loglikelihood"),
            "decoding": f"greedy, max_new_tokens={self.config.max_new_tokens}",
        }


def parse_rating(judgment: str) -> float | None:
    """FastChat's reading of a single-answer judgment: the "[[r]]" rating, else "[r]"; None without one."""
    for pattern in SCORE_PATTERNS:
        match = pattern.search(judgment)
        if match:
            return float(match.group(1))
    return None
