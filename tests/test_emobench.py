"""EmoBench: the official parser and vote, both protocols' prompts, the two-stage EU flow,
the released-outputs rescoring, and EmoPrompt (scripted methods and the tiny model; one
SmolLM2 run)."""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pytest

from harness.api import Capability, GenerateRequest, GenerateResult, LoglikelihoodRequest, LoglikelihoodResult
from harness.data import DataStore
from harness.method import Method, MethodOptions
from harness.task import EvalSettings
from methods.emoprompt import EmoPrompt, EmoPromptArgs
from tasks.emobench import EmoBench, EmoBenchConfig
from tasks.emobench_protocol import choice_block, majority_vote, parse_json_response, process_output, system_2025
from tests.conftest import REPO, cli

EU_CHOICES = ["Delight", "Anger", "Gratitude & Joy", "Hopeless", "Pride", "Disappointment"]


@pytest.mark.parametrize(("reply", "expected"), [
    ("(d)", 3), ("D", 3), ("d.", 3), ("D)", 3), ("Answer: D", 3), ("Option C", 2), ("（c）", 2), ("选项 c", 2),
    ("**D**", -1), ("The answer is D", -1), ('{"answer": "B"}', -1),
    ("Answer: apologize", 0),  # ": a" is a letter pattern: the official parser's false hit
    ("(d)\n\nNote: a teacher", 0),  # the last non-empty line decides
    ("(a) or (d)? I pick (d)", 0),  # letters are tried a to f, not by position
])
def test_process_output_reads_as_the_official_parser(reply: str, expected: int) -> None:
    choices = ["Ignore it", "Talk to him", "Leave", "Suggest her brother to talk to a teacher"]
    assert process_output(reply, choices, "en", "EA") == expected


def test_process_output_choice_texts_and_their_blind_spots() -> None:
    assert process_output("inform their parents anyway", ["x", "Inform their parents anyway", "y", "z"], "en", "EA") == 1
    # A choice with " & " is rewritten to " and " before matching, so its own text never matches.
    assert process_output("Gratitude & Joy", EU_CHOICES, "en", "EU") == -1
    assert process_output("gratitude and joy", EU_CHOICES, "en", "EU") == 2
    assert process_output("(f)", ["a", "b", "c", "d"], "en", "EU") == 5  # EU reads six letters even for four causes
    assert process_output("", EU_CHOICES, "en", "EU") == -1


def test_majority_vote_passes_over_failures_and_keeps_the_first_of_a_tie() -> None:
    assert majority_vote([-1, -1, -1, 2, -1]) == 2  # one answer beats four failures
    assert majority_vote([-1, -1, -1]) == -1
    assert majority_vote([1, 2, 2, 1, 3]) == 1  # tie: the first seen
    assert majority_vote([3, 3, 1, 1, 1]) == 1
    assert majority_vote([0, 2, 2, math.nan, math.nan]) == 2  # a released file with three samples


def test_json_reply_parsing_of_the_2025_protocol() -> None:
    assert parse_json_response('Sure.\n```json\n{"answer": "B"}\n```') == {"answer": "B"}
    assert parse_json_response('{"answer_q1": "A", "answer_q2": "C"}') == {"answer_q1": "A", "answer_q2": "C"}
    assert parse_json_response("B") is None and parse_json_response("```json\n{broken\n```") is None


def test_2025_system_prompt_is_rendered_as_the_official_code_joins_it() -> None:
    prompt = system_2025("EA", "en", False)
    assert prompt.startswith("# Instructions\n\nIn this task, you are presented with a scenario, a question, and multiple choices. \n")
    assert prompt.endswith('format:\n\n```json\n    {\n    "answer": "<Respond with the corresponding letter numbering>"\n\n    }\n``` \n    ')
    assert '"reasoning": "<Step by step reasoning>"\n,\n"answer_q1"' in system_2025("EU", "en", True)


# --- the task, with scripted methods --------------------------------------------------------------

class Scripted(Method):
    """Answers each generate request by a rule over its last user message; records what it saw."""

    provides = frozenset({Capability.GENERATE, Capability.LOGLIKELIHOOD})

    def __init__(self, rule, scores=None) -> None:
        self.rule, self.scores, self.seen = rule, scores, []
        self.cost = None

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        self.seen += list(requests)
        return [GenerateResult(self.rule(r.prompt[-1].content if isinstance(r.prompt, tuple) else r.prompt), 1, "stop") for r in requests]

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        self.seen += list(requests)
        return [LoglikelihoodResult(self.scores(r), False, 1) for r in requests]


def _docs(config: EmoBenchConfig, n: int = 3):
    task = EmoBench(config)
    return task, task.load_docs(DataStore())[:n]


def test_eu_paper_protocol_asks_the_cause_of_the_models_own_emotion(mirror: Path) -> None:
    def rule(user: str) -> str:
        if "ultimately feel" in user:
            return "(b)"  # always the second emotion
        return "(a)" if "Anger" in user.split("feel ")[1] else "x"

    task, docs = _docs(EmoBenchConfig(part="understanding", orders=2, samples=3), 2)
    method = Scripted(rule)
    records = task.evaluate(docs, method, EvalSettings(chat=True, seed=0))
    assert len(method.seen) == 2 * 2 * 3 * 2  # items × orders × samples × (emotion, cause)
    causes = [r for r in method.seen if "Why would" in r.prompt[-1].content]
    for request in causes:
        assert request.temperature == 0.6 and request.top_p == 0.9 and request.no_repeat_ngram_size == 2
        assert request.max_new_tokens == 75 and request.family.startswith("EmoBench emotional understanding")
    first = records[0]
    for order, entry in zip(docs[0].data["orders"], first["orders"], strict=True):
        assert entry["emotion"]["preds"] == [1, 1, 1] and entry["emotion"]["vote"] == 1
        chosen = order["emotion_choices"][1]
        assert entry["cause"]["vote"] == (0 if chosen == "Anger" else -1)
        right = entry["emotion"]["vote"] == order["emotion_label"] and entry["cause"]["vote"] == order["cause_label"]
        assert entry["correct"] == int(right)
    assert first["accuracy"] == pytest.approx(sum(e["correct"] for e in first["orders"]) / 2)


def test_eu_parse_failure_asks_about_the_last_emotion_choice(mirror: Path) -> None:
    task, docs = _docs(EmoBenchConfig(part="understanding", orders=1, samples=1), 1)
    method = Scripted(lambda user: "no idea")
    records = task.evaluate(docs, method, EvalSettings(chat=True, seed=0))
    last = docs[0].data["orders"][0]["emotion_choices"][-1]
    assert f"feel {last} in this situation" in method.seen[1].prompt[-1].content  # generate.py's e_c[-1]
    assert records[0]["unparsed_rate"] == 1.0 and records[0]["accuracy"] == 0.0


def test_ea_votes_over_samples_and_averages_orders(mirror: Path) -> None:
    task, docs = _docs(EmoBenchConfig(part="application"), 12)
    # Items whose four choice orders are all different (a shipped permutation may repeat an order).
    docs = [d for d in docs if len({task._paper_user(d, o) for o in d.data["orders"]}) == 4][:4]
    labels = {}

    def rule(user: str) -> str:
        return labels[user]

    for doc in docs:  # right in the original order and the first permutation, wrong in the others
        for o, order in enumerate(doc.data["orders"]):
            letter = "abcd"[order["label"] if o < 2 else (order["label"] + 1) % 4]
            labels[task._paper_user(doc, order)] = f"({letter})"
    records = task.evaluate(docs, Scripted(rule), EvalSettings(chat=True, seed=0))
    assert [r["accuracy"] for r in records] == [0.5] * 4
    metrics = task.aggregate(records, 0)
    assert metrics["accuracy"].value == 0.5 and metrics["chance"].value == 0.25
    assert 0 <= metrics["random_official"].value <= 1 and metrics[f"accuracy/{records[0]['category']}"].n >= 1


def test_2025_protocol_compares_the_json_letter_exactly(mirror: Path) -> None:
    task, docs = _docs(EmoBenchConfig(part="application", protocol="2025"), 2)
    label = "ABCD"[docs[0].data["orders"][0]["label"]]
    replies = iter([f'```json\n{{"answer": "{label}"}}\n```', f'{{"answer": "({label})"}}'])
    method = Scripted(lambda user: next(replies))
    records = task.evaluate(docs, method, EvalSettings(chat=True, seed=0))
    assert "## Choices\nA) " in method.seen[0].prompt[-1].content and method.seen[0].max_new_tokens == 50
    assert records[0]["accuracy"] == 1.0 and records[1]["accuracy"] == 0.0  # "(B)" is not "B"


def test_loglikelihood_mode_scores_the_choice_letters(mirror: Path) -> None:
    task, docs = _docs(EmoBenchConfig(part="understanding", mode="loglikelihood", orders=1), 1)
    method = Scripted(None, scores=lambda r: 1.0 if r.continuation == "(c)" else 0.0)
    records = task.evaluate(docs, method, EvalSettings(chat=False, seed=0))
    order = docs[0].data["orders"][0]
    assert [r.continuation for r in method.seen[:6]] == ["(a)", "(b)", "(c)", "(d)", "(e)", "(f)"]
    assert f"feel {order['emotion_choices'][2]} in this situation" in method.seen[6].context
    assert records[0]["orders"][0]["emotion"]["vote"] == 2 and records[0]["unparsed_rate"] == 0.0
    assert task.aggregate(records, 0)["top_position_share"].value == 1.0  # the emotion's and the cause's votes both (c)
    with pytest.raises(ValueError):
        EmoBenchConfig(mode="loglikelihood", protocol="2025")


def test_top_position_share_exposes_a_one_letter_answerer(mirror: Path) -> None:
    task, docs = _docs(EmoBenchConfig(part="application", mode="loglikelihood"), 6)
    always_a = task.evaluate(docs, Scripted(None, scores=lambda r: 1.0 if r.continuation == "(a)" else 0.0), EvalSettings(chat=False, seed=0))
    metrics = task.aggregate(always_a, 0)
    labels = [order["label"] for doc in docs for order in doc.data["orders"]]
    assert metrics["top_position_share"].value == 1.0
    assert metrics["accuracy"].value == pytest.approx(labels.count(0) / len(labels))  # right only where the answer is (a)

    def reader(request: LoglikelihoodRequest) -> float:  # picks the right choice, wherever an order put it
        order = next(o for d in docs for o in d.data["orders"]
                     if d.data["scenario"] in request.context and choice_block(o["choices"]) in request.context)
        return 1.0 if request.continuation == f"({'abcd'[order['label']]})" else 0.0

    right = task.evaluate(docs, Scripted(None, scores=reader), EvalSettings(chat=False, seed=0))
    share = task.aggregate(right, 0)["top_position_share"]
    assert share.value == pytest.approx(max(labels.count(k) for k in range(4)) / len(labels)) and share.value < 1.0
    assert share.ci_low is not None and share.ci_low <= share.value <= share.ci_high


def test_paper_files_hold_the_documented_items(mirror: Path) -> None:
    _, ea = _docs(EmoBenchConfig(part="application"), 200)
    _, eu = _docs(EmoBenchConfig(part="understanding", language="zh"), 200)
    assert len(ea) == 200 and {d.data["category"] for d in ea} == {"Personal-Others", "Social-Others", "Personal-Self", "Social-Self"}
    assert len(eu[73].data["orders"][0]["cause_choices"]) == 7  # zh item 74: 7 causes in data.json, 6 in the permutations
    assert len(eu[73].data["orders"][1]["cause_choices"]) == 6


# --- the released-outputs script ----------------------------------------------------------------

def _script():
    spec = importlib.util.spec_from_file_location("emobench_released", REPO / "benchmarks" / "emobench_released.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ea_file(path: Path, right: int, failures: bool = False) -> None:
    """A 200-row EA result file whose first ``right`` rows vote for the label."""
    rows = []
    for i in range(200):
        preds = [2, 2, 1, -1, -1] if i < right else [0, 0, 1, 1, 2]
        if failures and i < right:
            preds = [-1, -1, -1, -1, 2]  # the vote passes over failures
        row = {"Choices": str(["a", "b", "c", "d"]), "Label": 2}
        for k, p in enumerate(preds):
            row |= {f"Res {k + 1}": f"({'abcd'[p]})" if p >= 0 else "?", f"Pred {k + 1}": p}
        rows.append(row)
    pd.DataFrame(rows).to_csv(path, index=False)


def test_released_outputs_are_scored_as_evaluate_py_scores_them(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "EA" / "Results" / "toy"
    folder.mkdir(parents=True)
    (tmp_path / "data" / "EU" / "Results").mkdir(parents=True)
    for name, right in (("toy-en", 150), ("toy-en1", 100), ("toy-en2", 49), ("toy-en3", 50)):
        _ea_file(folder / f"{name}.csv", right, failures=name == "toy-en1")
    _ea_file(folder / "toy-zh.csv", 1)
    pd.DataFrame({"Choices": [], "Label": []}).to_csv(folder / "toy-zh1.csv", index=False)  # too short: skipped
    script = _script()
    table, _ = script.ours(tmp_path, "EA", reparse=False)
    # mean(75, 50, 24.5, 25) = 43.625, printed with two decimals as evaluate.py prints it
    assert table == {"toy": {"toy-en": "43.62", "toy-zh": "0.50"}}
    reparsed, mismatches = script.ours(tmp_path, "EA", reparse=True)
    assert reparsed == table and mismatches[0] == 0


# --- EmoPrompt ----------------------------------------------------------------------------------

def test_emoprompt_writes_guidance_once_per_family_and_reasons_first(tiny) -> None:
    method = EmoPrompt(tiny, EmoPromptArgs(guidance_tokens=8, reasoning_tokens=4), MethodOptions(show_progress=False))
    from harness.api import ChatMessage

    prompt = (ChatMessage("system", "Answer with a letter."), ChatMessage("user", "Scenario: x\nChoices:\n(a) y\n(b) z\n"))
    requests = [GenerateRequest(prompt, 6, (), 0.6, 0.9, chat=True, family="kind one")] * 3
    requests += [GenerateRequest(prompt, 6, (), 0.6, 0.9, chat=True, family="kind two")]
    answers = method.generate(requests)
    assert set(method.guidance) == {"kind one", "kind two"} and method.cost.counters["guidance_calls"] == 2
    assert all("reasoning" in a.info for a in answers) and answers[0].info["family"] == "kind one"
    method.generate(requests[:1])
    assert method.cost.counters["guidance_calls"] == 2  # cached
    assert method.describe()["guidance"] == method.guidance and method.describe()["teacher"] == "tiny-random-llama"


def test_emoprompt_prompt_keeps_the_task_format() -> None:
    from harness.api import ChatMessage
    from methods.emoprompt import answer_prompt, reasoning_prompt

    request = GenerateRequest((ChatMessage("system", "SYS"), ChatMessage("user", "Q\nAnswer:\n")), 10)
    reasoning = reasoning_prompt(request, "1. Read cues.")
    assert reasoning[0].content == "SYS\n\nGuidance for reasoning about emotions:\n1. Read cues."
    assert reasoning[1].content.startswith("Q\nAnswer:\n\n\nDo not answer yet")
    answer = answer_prompt(request, "1. Read cues.", " She feels hurt. ")
    assert answer[1].content == "Your reasoning about this scenario:\nShe feels hurt.\n\nQ\nAnswer:\n"
    assert answer_prompt(GenerateRequest("Q", 5), "G", "R").startswith("Guidance for reasoning about emotions:\nG\n\n")


def test_emobench_runs_from_the_cli_and_records_its_protocol(tmp_path: Path, mirror: Path) -> None:
    runs = tmp_path / "runs"
    assert cli("run", "--task", "emobench", "--method", "emoprompt", "--model", "tiny-random-llama", "--limit", "1",
               "--task-arg", "orders=1", "--task-arg", "samples=2", "--quiet", "--output-dir", runs) == 0
    (results,) = [json.loads(p.read_text()) for p in runs.glob("*/results.json")]
    assert results["protocol"]["protocol"] == "paper" and results["protocol"]["samples"] == 2
    assert list(results["method_settings"]["guidance"]) == [EmoBench(EmoBenchConfig()).family()]
    assert cli("run", "--task", "emobench", "--task-arg", "orders=5", "--model", "tiny-random-llama", "--quiet", "--output-dir", runs) != 0


@pytest.mark.integration
def test_smollm2_answers_emobench_in_the_paper_format(smollm2, mirror: Path) -> None:
    """The real model through the paper protocol: replies the official parser can read."""
    from methods.base import BaseArgs, BaseMethod

    task, docs = _docs(EmoBenchConfig(part="application", orders=1, samples=2), 2)
    method = BaseMethod(smollm2, BaseArgs(), MethodOptions(show_progress=False))
    records = task.evaluate(docs, method, EvalSettings(chat=True, seed=0))
    preds = [p for r in records for p in r["orders"][0]["preds"]]
    assert len(preds) == 4 and any(p >= 0 for p in preds)


def test_no_repeat_ngram_size_reaches_generation(tiny) -> None:
    """The paper's sampling bans repeated 2-grams: the setting reaches decoding and changes the text."""
    import torch

    from harness.lm import CausalLM
    from harness.method import Cost

    lm = CausalLM(tiny, Cost(), 1, None, 0, False)
    plain, banned = lm.generate([GenerateRequest("xyz", 40), GenerateRequest("xyz", 40, no_repeat_ngram_size=2)])
    prompt = torch.tensor([lm.encode("xyz")])
    reference = tiny.model.generate(input_ids=prompt, max_new_tokens=40, do_sample=False, no_repeat_ngram_size=2,
                                    pad_token_id=tiny.tokenizer.pad_token_id)
    assert plain.text != banned.text and banned.text == lm.answer(reference[0, prompt.shape[1]:].tolist()).text


def test_without_a_mirror_the_paper_protocol_says_where_its_files_are(monkeypatch) -> None:
    from harness.errors import DataUnavailableError

    monkeypatch.delenv("HARNESS_DATA_DIR")
    with pytest.raises(DataUnavailableError, match="paper-2024"):
        EmoBench(EmoBenchConfig()).load_docs(DataStore())
    with pytest.raises(DataUnavailableError, match="SahandSab/EmoBench"):  # offline in tests: the hub cannot be reached
        EmoBench(EmoBenchConfig(protocol="2025")).load_docs(DataStore())
