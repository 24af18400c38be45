"""EmoBench's official protocol pieces (Sabour et al., ACL 2024; github.com/Sahandfer/EmoBench),
shared by the ``emobench`` task and ``benchmarks/emobench_released.py``.

Two protocols, read from the official code (``docs/emobench-protocol.md`` is the full reading):
- paper-era, commit cef95c3 (``generate.py``, ``evaluate.py``, ``data/dicts.json``): prompts
  from ``dicts.json`` (read from the data mirror), choices as "(a) text" lines, replies parsed
  by ``process_output`` (kept verbatim, faults included: it decides what the paper's numbers
  mean), a majority vote over 5 samples that passes over parse failures (``majority_vote``);
- 2025, HEAD 3b4f843 (``src/``): one prompt asking for a JSON reply, choices as "A) text",
  ``parse_json_response`` and an exact string compare of the letter.
"""

from __future__ import annotations

import collections
import json
import re
import string
from collections.abc import Sequence
from typing import Any, Literal

Part = Literal["EA", "EU"]
LETTERS = string.ascii_lowercase


def choice_block(choices: Sequence[str]) -> str:
    """generate.py's rendering: ``(a) first\\n(b) second``."""
    return "\n".join(f"({LETTERS[j]}) {c.strip()}" for j, c in enumerate(choices))


def process_output(pred: str, choices: Sequence[str], language: str, part: Part) -> int:
    """generate.py's ``process_output``: the chosen index, or -1.

    Lines are read from the last one up; in a line, the letter patterns are tried family by
    family ("(a)", "[a]", ": a", "option a", ...) in a-to-f order, then the choice texts, then
    a lone letter or a letter followed by one of ``<[():``. Kept as written: ": a" in "Answer:
    apologize" reads as (a); a choice holding " & " or "." never matches as text; 6 letters
    are read for every EU question (a 4-choice cause can get (e) or (f)).
    """
    n = 4 if part == "EA" else 6
    try:
        pred = pred.lower().replace("（", "(").replace("）", ")").replace(".", "")
        choices = [choice.replace(" & ", " and " if language == "en" else "和") for choice in choices]
        lines = pred.split("\n")
        for j in range(len(lines)):
            output = lines[len(lines) - 1 - j]
            if output:
                alphabets = {
                    "normal": [f"({LETTERS[i]})" for i in range(n)],
                    "paranthese": [f"[{LETTERS[i]}]" for i in range(n)],
                    "dot": [f": {LETTERS[i]}" for i in range(n)],
                    "option": [f"option {LETTERS[i]}" for i in range(n)],
                    "option1": [f"option ({LETTERS[i]})" for i in range(n)],
                    "choice": [f"choice {LETTERS[i]}" for i in range(n)],
                    "choice1": [f"choice ({LETTERS[i]})" for i in range(n)],
                    "选项": [f"选项 {LETTERS[i]}" for i in range(n)],
                    "选项1": [f"选项 ({LETTERS[i]})" for i in range(n)],
                }
                for patterns in alphabets.values():
                    for pattern in patterns:
                        if pattern in output:
                            return patterns.index(pattern)
                for choice in choices:
                    if choice.lower() in output:
                        return choices.index(choice)
                if len(output) == 1 and output in LETTERS[:n]:
                    return LETTERS.index(output)
                if output[0] in LETTERS[:n] and output[1] in ["<", "[", "(", ")", ":"]:
                    return LETTERS.index(output[0])
    except Exception:  # the official parser turns any fault into a failure, -1
        pass
    return -1


def majority_vote(preds: Sequence[float]) -> int:
    """evaluate.py's ``get_pred``: the most common prediction; when that is -1 (a parse
    failure), the runner-up even if seen once; ties go to the one seen first. (A released
    file with missing samples holds NaN, which, as in pandas rows, never equals itself.)"""
    commons = collections.Counter(preds).most_common()
    if not commons:
        return -1
    if commons[0][0] != -1:
        return int(commons[0][0])
    return int(commons[1][0]) if len(commons) > 1 else -1


def paper_score(per_order_correct: Sequence[float]) -> str:
    """evaluate.py's printed score: the mean over choice orders of per-order accuracy (%),
    two decimals (``"{:0.2f}"``, so 24.125 prints as 24.12)."""
    return "{:0.2f}".format(sum(per_order_correct) / len(per_order_correct))


def rank_choices_2025(choices: Sequence[str]) -> str:
    """src/data.py's ``rank_choices``: ``A) first\\nB) second`` (no opening parenthesis)."""
    return "\n".join(f"{string.ascii_uppercase[i]}) {c}" for i, c in enumerate(choices))


def parse_json_response(text: str | None) -> dict[str, Any] | None:
    """src/utils.py's ``parse_json_response``: the first ```json block, else the whole reply, as JSON."""
    try:
        if text is None:
            return None
        if "```json" in text:
            match = re.search(r"```json\s*([\s\S]*?)```", text, re.DOTALL)
            text = match.group(0).replace("```json", "").replace("```", "")  # type: ignore[union-attr]
        parsed = json.loads(text)
        return parsed if isinstance(parsed, dict) else None
    except Exception:  # as the official code: any fault is "no JSON found"
        return None


# The 2025 protocol's prompts: src/configs/prompts.yaml and response.yaml at 3b4f843 as YAML
# loads them (block scalars keep their newlines, folded ones join lines with a space; the last
# entry of each file has no final newline), joined as src/model.py and src/utils.py join them.
_SYSTEM_2025 = {
    "en": "# Instructions\n\nIn this task, you are presented with a scenario, a question, and multiple choices. \n"
    "Carefully analyze the scenario and take the perspective of the individual involved.\n"
    "Then, select the option that best reflects their perspective or emotional response.\n\n# Output\n",
    "zh": "# 说明\n在这个任务中，你会面临一个场景、一个问题和多个选项。\n仔细分析场景，并从相关人员的角度进行思考。\n"
    "然后，选择最能反映他们的观点或情绪反应的选项。\n\n# 输出\n",
}
_STATEMENT_2025 = {
    ("en", False): "Provide only one single correct answer to this question.  Do not provide any additional information or explanations. "
    "The response should be in the following JSON format:\n",
    ("en", True): "Provide a step-by-step reasoning that explores each option's potential impact on the individual(s) in question, "
    "considering their emotions, previous experiences mentioned in the scenario, and the possible outcomes of each choice. "
    "Then, select the most appropriate answer based on your reasoning. The response should be in the following JSON format:\n",
    ("zh", False): "只提供一个正确的答案。 不要提供任何额外的信息或解释。 回复应采用以下JSON格式：\n",
    ("zh", True): "提供逐步推理，探索每个选项对相关个人的潜在影响，考虑他们的情绪、场景中提到的先前经历以及每个选择的可能结果。 "
    "然后，根据你的推理选择最合适的答案。 回复应采用以下JSON格式：\n",
}
_KEYS_2025 = {
    ("EA", "en"): '"answer": "<Respond with the corresponding letter numbering>"\n',
    ("EA", "zh"): '"answer": "<用相应的字母进行回答>"\n',
    ("EU", "en"): '"answer_q1": "<Respond to the Question 1 with the corresponding letter numbering>",\n'
    '"answer_q2": "<Respond to the Question 2 with the corresponding letter numbering>"\n',
    ("EU", "zh"): '"answer_q1": "<用相应的字母进行回答问题1>",\n"answer_q2": "<用相应的字母进行回答问题2>"\n',
}
_REASONING_2025 = {"en": '"reasoning": "<Step by step reasoning>"\n', "zh": '"reasoning": "<逐步推理>"'}
USER_2025 = {
    ("EA", "en"): "## Scenario\n{scenario}\n\n## Question \nIn this scenario, what is the most effective {q_type} for {subject}?\n\n"
    "## Choices\n{choices}\n",
    ("EA", "zh"): "## 场景\n{scenario}\n\n## 问题\n在这个场景中，{subject}最有效的{q_type}是什么？\n\n## 选项\n{choices}\n",
    ("EU", "en"): "## Scenario\n{scenario}\n\n## Question 1\nWhat emotion(s) would {subject} ultimately feel in this situation?\n\n"
    "## Choices for Question 1\n{emo_choices}\n\n## Question 2\nWhy would {subject} feel these emotions in this situation?\n\n"
    "## Choices for Question 2\n{cause_choices}\n",
    ("EU", "zh"): "## 场景\n{scenario}\n\n## 问题 1\n在这种情况下，{subject}最终会感受到什么情绪？\n\n## 问题 1 的选项\n{emo_choices}\n\n"
    "## 问题 2\n{subject}为什么会在这种情况下感受到这些情绪？\n\n## 问题 2 的选项\n{cause_choices}",
}


def system_2025(part: Part, language: str, cot: bool) -> str:
    """src/model.py's ``init_prompt``: ``sys[lang]`` + ``get_response_format(task, lang, use_cot)``."""
    conditions = _KEYS_2025[(part, language)]
    if cot:
        conditions = _REASONING_2025[language] + ",\n" + conditions
    return _SYSTEM_2025[language] + f"\n{_STATEMENT_2025[(language, cot)]}\n```json\n    {{\n    {conditions}\n    }}\n``` \n    "
