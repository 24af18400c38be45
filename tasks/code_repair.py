"""Code generation and iterative repair in low- and high-resource languages (DistiLRR, Wong
et al. 2024; PAPERS.md §6), with every program run in the sandbox (``harness/sandbox.py``).

Data (``../shared/data/mxeval``): MBXP per language, shuffled with ``random.seed(17)`` as the
paper's ``download_data.py`` does; the first 800 problems are the distillation pool
(``split=distill``), the rest the test set (``split=test``, the default). Multi-HumanEval
(``dataset=multi-humaneval``) and HumanEval-XL's English prompts (``dataset=humaneval-xl``,
80 further problems per language) are test-only. Languages: low-resource Perl, Go, Ruby, PHP
(Swift is registered, but no Swift toolchain installs here: a run says so and stops);
high-resource Python, JavaScript, Java.

Protocol (the paper's defaults): round 0 samples ``samples=10`` programs per problem
(temperature 0.2, top-p 0.95); then ``rounds=4`` repair rounds on the first
``repair_samples=5``: each failing program and its error go back to the method, which answers
with a rationale and a fixed function (the ``act`` capability, ``Stage.REPAIR``); a program
that passes stays passed. A program passes with exit 0 and empty stderr within
``timeout_s=5`` seconds (compiled languages get extra build time). pass@k uses the unbiased
estimator (Chen et al. 2021): round 0 over all samples, repair rounds over the repaired ones,
as the paper's scripts do. ``pass@1`` (the main metric) is after the last round.

Analysis (the paper's rationale study): a judge model (``judge=gemma3-270m`` by default;
``judge=none`` to skip) labels each repair rationale good or bad — "yes"/"no" by
loglikelihood to a question about the code, its error and the explanation — and the run
reports the shares of good/bad rationale × fixed/still-wrong code.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from harness.api import ActRequest, Capability, ChatMessage, Doc, LoglikelihoodRequest, Metric, Stage
from harness.data import DataStore
from harness.errors import ArgumentError, DataCorruptError, IncompatibleError
from harness.method import Cost, Method
from harness.models import LoadedModel
from harness.remote import is_remote
from harness.sandbox import Execution
from harness.stats import mean, ratio_of_sums
from harness.task import EvalSettings, Task, register_task
from tasks.code_languages import LANGUAGES, Language, assemble, run_program, syntax_errors

SPLIT_SEED = 17
DISTILL_SIZE = 800
ERROR_CHARS = 1200  # of an error message shown to the model
WRITE_PREFIX = "```{fence}\n"
SANDBOX_PATH = re.compile(r"/\S*harness-sandbox-[^/\s]+/")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k)."""
    if n < k:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def warn_if_not_isolated() -> None:
    """One line on stderr, before any program runs, naming what this machine's sandbox cannot
    give the model's programs (and so what they could reach)."""
    from harness.sandbox import missing_isolation

    missing = missing_isolation()
    if missing:
        print(f"code-repair: warning: model-written programs run without {', '.join(missing)} on this machine "
              "(run as root on a Linux kernel with namespaces for the full sandbox)", file=sys.stderr)


@dataclass(frozen=True)
class CodeRepairConfig:
    language: str = "perl"  # perl, go, ruby, php, swift (low-resource); python, javascript, java
    dataset: Literal["mbxp", "multi-humaneval", "humaneval-xl"] = "mbxp"  # problem set (MBXP has the distillation split)
    split: Literal["test", "distill", "all"] = "test"  # MBXP only
    samples: int = 10  # programs sampled per problem in round 0 (pass@k over them)
    repair_samples: int = 5  # of those, how many go through the repair rounds
    rounds: int = 4  # repair rounds after round 0
    temperature: float = 0.2  # sampling temperature of every round
    top_p: float = 0.95  # nucleus sampling of every round
    max_new_tokens: int = 512  # the paper's 800 is for 7B models' longer answers
    timeout_s: float = 5.0  # wall seconds a program may run (compiled languages get extra build time)
    judge: str = "gemma3-270m"  # zoo model labelling repair rationales good or bad; "none" skips it

    def __post_init__(self) -> None:
        if self.language not in LANGUAGES:
            raise ValueError(f"language must be one of {', '.join(LANGUAGES)}; got '{self.language}'")
        if self.samples < 1 or not 0 <= self.repair_samples <= self.samples:
            raise ValueError("need samples >= 1 and 0 <= repair_samples <= samples")
        if self.rounds < 0 or self.max_new_tokens < 1 or self.timeout_s <= 0 or self.temperature < 0:
            raise ValueError("rounds >= 0, max_new_tokens >= 1, timeout_s > 0 and temperature >= 0 are required")
        if self.dataset != "mbxp" and self.split != "test":
            raise ValueError(f"{self.dataset} is test-only; split must be 'test'")
        if is_remote(self.judge):
            raise ValueError("the rationale judge scores 'yes'/'no' inside its own chat template, which an API model's server "
                             "keeps out of reach: give a local judge")


def load_problems(data: DataStore, language: Language, dataset: str, split: str) -> list[dict[str, Any]]:
    """Problems of one language, in the paper's order (MBXP: shuffled with seed 17, then split)."""
    relative = {"mbxp": language.mbxp, "multi-humaneval": language.multi_humaneval, "humaneval-xl": language.humaneval_xl}[dataset]
    if relative is None:
        raise ArgumentError(f"{dataset} has no {language.name} problems")
    path = data.file(relative, "humaneval_xl" if dataset == "humaneval-xl" else "mxeval")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append({key: row[key] for key in ("task_id", "prompt", "test", "entry_point")} | {"description": row.get("description", "")})
        except (json.JSONDecodeError, KeyError) as error:
            raise DataCorruptError(f"{relative} line {number}: not a problem record ({error})") from error
    if dataset == "mbxp":
        random.Random(SPLIT_SEED).shuffle(rows)  # == random.seed(17); random.shuffle(rows)
        rows = {"distill": rows[:DISTILL_SIZE], "test": rows[DISTILL_SIZE:], "all": rows}[split]
    return rows


def write_messages(language: Language, problem: dict[str, Any]) -> tuple[ChatMessage, ...]:
    """The first-program turn: the problem, and the answer opened as a code block (the model
    continues it and is stopped at the closing fence), so a small model writes code, not prose."""
    return (
        ChatMessage("user", (
            f"Complete the following {language.label} function. Reply with the whole function in a "
            f"```{language.name} code block.\n\n```{language.name}\n{problem['prompt'].strip()}\n```"
        )),
        ChatMessage("assistant", WRITE_PREFIX.format(fence=language.name)),
    )


def repair_messages(language: Language, code: str, error: str) -> tuple[ChatMessage, ...]:
    """The paper's repair instruction (its fine-tuning prompt), as one user turn."""
    return (ChatMessage("user", (
        f"You are given an incorrect {language.label} function and an error message. Explain how to fix the error, "
        f"and then write an updated {language.label} function with the correct code.\n"
        f"### Incorrect Code:\n```{language.name}\n{code.strip()}\n```\n### Error: {error}"
    )),)


def split_rationale(answer: str) -> str:
    """The explanation part of a repair answer: the text before its first code block."""
    return answer.split("```", 1)[0].strip()


def clean_error(execution: Execution) -> str:
    """The error as the model sees it, without the sandbox's temporary paths."""
    return SANDBOX_PATH.sub("", execution.error.replace("\r", ""))[:ERROR_CHARS]


@register_task("code-repair")
class CodeRepair(Task):
    """MBXP / Multi-HumanEval code generation + repair rounds, sandboxed; pass@k per round (DistiLRR)."""

    version = "1"
    requires = frozenset({Capability.ACT})
    Config = CodeRepairConfig
    chat_by_default = True
    docs_per_chunk = 4
    _judge_lm: Any = None  # loaded on first use, like the run's model

    def auxiliary_models(self) -> dict[str, str]:
        c = self.config
        return {"judge": c.judge} if c.judge != "none" and c.rounds and c.repair_samples else {}

    @property
    def language(self) -> Language:
        return LANGUAGES[self.config.language]

    def draws_samples(self) -> bool:
        return self.config.temperature > 0

    def load_docs(self, data: DataStore) -> list[Doc]:
        language = self.language
        if not language.available():
            raise IncompatibleError(
                f"language '{language.name}' needs the '{language.binary}' toolchain, which is not installed here"
                + ("" if language.name == "swift" else " (scripts/install.sh installs it)")
            )
        problems = load_problems(data, language, self.config.dataset, self.config.split)
        warn_if_not_isolated()
        return [Doc(p["task_id"], p) for p in problems]

    # -- metrics -------------------------------------------------------------------------------
    def metrics(self) -> list[Metric]:
        c = self.config
        final = f"pass@1/round-{c.rounds}" if c.rounds and c.repair_samples else "pass@1/round-0"
        metrics = [Metric("pass@1", True, (final,), mean, description="pass@1 after the last repair round (round 0 if none)")]
        metrics.append(Metric("pass@1/round-0", True, ("pass@1/round-0",), mean, description=f"pass@1 of the {c.samples} first samples"))
        for k in (5, 10):
            if k <= c.samples:
                metrics.append(Metric(f"pass@{k}/round-0", True, (f"pass@{k}/round-0",), mean))
        if c.repair_samples:
            for r in range(1, c.rounds + 1):
                metrics.append(Metric(f"pass@1/round-{r}", True, (f"pass@1/round-{r}",), mean,
                                      description=f"pass@1 of the first {c.repair_samples} samples after {r} repair round(s)"))
        metrics.append(Metric("syntax_error_rate", False, ("n_syntax_errors", "n_samples"), ratio_of_sums,
                              description="round-0 programs tree-sitter cannot parse"))
        metrics.append(Metric("timeout_rate", False, ("n_timeouts", "n_samples"), ratio_of_sums))
        if c.rounds and c.repair_samples and c.judge != "none":
            metrics.append(Metric("good_rationale_rate", True, ("n_good", "n_rationales"), ratio_of_sums))
            for label in ("good_fixed", "good_wrong", "bad_fixed", "bad_wrong"):
                metrics.append(Metric(f"rationale/{label}", True, (f"n_{label}", "n_rationales"), ratio_of_sums,
                                      description="share of repair rationales: judged good/bad × code fixed/still wrong"))
        return metrics

    # -- the loop --------------------------------------------------------------------------------
    def _run_all(self, items: Sequence[tuple[dict[str, Any], str]]) -> list[tuple[str, str, Execution, list[str]]]:
        """Assemble and run (problem, answer) pairs in parallel: (shown code, program, execution, syntax errors)."""
        language = self.language

        def one(item):
            problem, answer = item
            shown, program = assemble(language, problem, answer)
            return shown, program, run_program(language, program, self.config.timeout_s), syntax_errors(language, program)

        workers = max(1, min(4, os.cpu_count() or 1))
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(one, items))

    def evaluate(self, docs: Sequence[Doc], method: Method, settings: EvalSettings) -> list[dict[str, Any]]:
        c, language = self.config, self.language
        write = [ActRequest(write_messages(language, d.data), c.max_new_tokens, ("```",), c.temperature, c.top_p, Stage.WRITE)
                 for d in docs for _ in range(c.samples)]
        prefix = WRITE_PREFIX.format(fence=language.name)
        answers = [prefix + a.text + "```" for a in method.act(write)]
        runs = self._run_all([(d.data, answers[i * c.samples + j]) for i, d in enumerate(docs) for j in range(c.samples)])
        samples = []  # per doc, per sample: the current state and its history
        for i in range(len(docs)):
            row = []
            for j in range(c.samples):
                shown, program, execution, syntax = runs[i * c.samples + j]
                row.append({"answer": answers[i * c.samples + j], "program": program, "shown": shown,
                            "passed": execution.passed, "round0_passed": execution.passed,
                            "error": "" if execution.passed else clean_error(execution),
                            "timed_out": execution.timed_out, "syntax_errors": syntax, "repairs": []})
            samples.append(row)
        for round_number in range(1, c.rounds + 1):
            pending = [(i, j) for i in range(len(docs)) for j in range(c.repair_samples) if not samples[i][j]["passed"]]
            if not pending:
                break
            requests = [ActRequest(repair_messages(language, samples[i][j]["shown"], samples[i][j]["error"]),
                                   c.max_new_tokens, (), c.temperature, c.top_p, Stage.REPAIR) for i, j in pending]
            replies = method.act(requests)
            runs = self._run_all([(docs[i].data, reply.text) for (i, _), reply in zip(pending, replies, strict=True)])
            for (i, j), reply, (shown, program, execution, syntax) in zip(pending, replies, runs, strict=True):
                state = samples[i][j]
                state["repairs"].append({
                    "round": round_number, "input_error": state["error"], "answer": reply.text,
                    "rationale": reply.info.get("rationale", split_rationale(reply.text)), "passed": execution.passed,
                    "error": "" if execution.passed else clean_error(execution), "syntax_errors": syntax,
                    "input_code": state["shown"],
                })
                state.update(program=program, shown=shown, passed=execution.passed,
                             error="" if execution.passed else clean_error(execution))
        if c.judge != "none" and c.rounds and c.repair_samples:
            self._judge_rationales(samples, method)
        return [self._record(doc, row) for doc, row in zip(docs, samples, strict=True)]

    def _record(self, doc: Doc, row: list[dict[str, Any]]) -> dict[str, Any]:
        c = self.config
        round0 = [s["round0_passed"] for s in row]
        record: dict[str, Any] = {"doc_id": doc.id, "entry_point": doc.data["entry_point"]}
        record["pass@1/round-0"] = pass_at_k(c.samples, sum(round0), 1)
        for k in (5, 10):
            if k <= c.samples:
                record[f"pass@{k}/round-0"] = pass_at_k(c.samples, sum(round0), k)
        if c.repair_samples:
            for r in range(1, c.rounds + 1):
                passed = sum(self._passed_by(s, r) for s in row[: c.repair_samples])
                record[f"pass@1/round-{r}"] = pass_at_k(c.repair_samples, passed, 1)
        record["n_samples"] = c.samples
        record["n_syntax_errors"] = sum(bool(s["syntax_errors"]) for s in row)
        record["n_timeouts"] = sum(s["timed_out"] for s in row)
        repairs = [rep for s in row for rep in s["repairs"]]
        if c.judge != "none" and c.rounds and c.repair_samples:
            record["n_rationales"] = len(repairs)
            record["n_good"] = sum(rep["rationale_good"] for rep in repairs)
            for label, good, fixed in (("good_fixed", True, True), ("good_wrong", True, False),
                                       ("bad_fixed", False, True), ("bad_wrong", False, False)):
                record[f"n_{label}"] = sum(rep["rationale_good"] == good and rep["passed"] == fixed for rep in repairs)
        record["samples"] = [{key: s[key] for key in ("answer", "program", "round0_passed", "passed", "error", "syntax_errors", "repairs")}
                             for s in row]
        return record

    @staticmethod
    def _passed_by(sample: dict[str, Any], round_number: int) -> bool:
        """Whether the sample's program passed after ``round_number`` repair rounds."""
        return sample["round0_passed"] or any(rep["passed"] for rep in sample["repairs"] if rep["round"] <= round_number)

    # -- the judge -------------------------------------------------------------------------------
    def _judge(self, run_model: LoadedModel):
        """The rationale judge, loaded once, like the run's model (device, dtype)."""
        if self._judge_lm is None:
            from harness.lm import auxiliary_lm

            self._judge_lm = auxiliary_lm(self.config.judge, like=run_model)
        return self._judge_lm

    def _judge_rationales(self, samples: list[list[dict[str, Any]]], method: Method) -> None:
        repairs = [rep for row in samples for s in row for rep in s["repairs"]]
        if not repairs:
            return
        judge, label = self._judge(method.loaded), self.language.label
        judge.cost = Cost()  # this call's spending, counted into the run's cost as the judge's
        requests = []
        for rep in repairs:
            question = (
                f"Here is an incorrect {label} function, the error it produced, and an explanation of how to fix it.\n\n"
                f"### Incorrect Code:\n{rep['input_code'].strip()[-2000:]}\n### Error: {rep['input_error'][:600]}\n"
                f"### Explanation: {rep['rationale'][:1500] or '(none)'}\n\n"
                "Does the explanation correctly identify the problem and how to fix it? Answer yes or no."
            )
            context = judge.render_chat([ChatMessage("user", question)]) if judge.loaded.has_chat_template else question + "\nAnswer:"
            requests += [LoglikelihoodRequest(context, " yes"), LoglikelihoodRequest(context, " no")]
        scores = [r.logprob for r in judge.loglikelihood(requests)]
        method.cost.add_as("judge", judge.cost)
        for index, rep in enumerate(repairs):
            yes, no = scores[2 * index], scores[2 * index + 1]
            rep["judge_p_good"] = float(1 / (1 + np.exp(no - yes)))
            rep["rationale_good"] = bool(yes > no) and bool(rep["rationale"])

    def protocol(self) -> dict[str, Any]:
        c = self.config
        from harness.sandbox import isolation

        protocol = {
            "description": self.summary(),
            "language": c.language, "resource": self.language.resource, "dataset": c.dataset,
            "split": f"random.seed({SPLIT_SEED}) shuffle; first {DISTILL_SIZE} = distill, rest = test" if c.dataset == "mbxp" else "test only",
            "sampling": {"temperature": c.temperature, "top_p": c.top_p, "max_new_tokens": c.max_new_tokens},
            "repair": {"rounds": c.rounds, "repaired_samples": c.repair_samples, "prompt": "DistiLRR fine-tuning repair prompt as a user turn"},
            "execution": {"timeout_s": c.timeout_s, "extra_build_s": self.language.compile_s, "pass": "exit 0 and empty stderr",
                          "sandbox": list(isolation())},
            "extraction": "fenced block -> tree-sitter top-level functions replace the prompt's signature; else prompt + answer",
        }
        if "judge" in self.auxiliary_models():  # a judge labels repair rationales only where there are repairs
            protocol["judge"] = {"model": c.judge,
                                 "question": "rationale correct? ' yes' vs ' no' by loglikelihood"}
        return protocol
