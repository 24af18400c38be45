"""MathVista's official answer extraction and scoring (Lu et al., ICLR 2024; PAPERS.md §3),
as lupantech/MathVista's ``evaluation/extract_answer.py`` and ``evaluation/calculate_score.py``
have them (HEAD 53d5258), so a number here is the one the leaderboard's code gives.

Extraction: the rule shortcuts first (an empty response gives ""; a multiple-choice response
that is one of the choices is taken as it is; an integer or float answer type takes a response
that parses as one), then, optionally, the quick pattern ``The answer is "(.*)".``, and
otherwise a language model reads ``ext_ans.py``'s five demonstrations followed by the query and
the response and writes the extracted answer (``extraction_prompt``). With no extractor model
(``extractor=rules``), what the rules do not catch is normalised from the raw response.

Normalisation (``normalize_extracted_answer``): multiple choice maps a bare capital letter or
``(x)`` to that choice and snaps anything else to the closest choice by Levenshtein distance (so
every multiple-choice item has a prediction); integer is ``str(int(float(x)))`` (truncation);
float is ``str(round(float(x), precision))``; list is ``str(x)``; a value that does not parse
gives no prediction. A prediction is correct when it equals the answer string exactly.
Breakdowns: accuracy by question_type, answer_type, language, source, category, task, context,
grade and skills (an item counts toward every skill it lists).

Baselines, as the release's ``results/random/`` files have them (``guess_fields``,
``frequent_guesses``): the random guess is a uniform choice on multiple choice and nothing right on
free form (0.179 on testmini); the frequent guess answers each item with the most frequent answer
among the items that share its question type, answer type, precision and number of choices (the
choice letter on multiple choice), ties to the answer met first in pid order (0.263).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

BREAKDOWN_KEYS = ("question_type", "answer_type", "language", "source", "category", "task", "context", "grade", "skills")

# evaluation/prompts/ext_ans.py, verbatim (pids 852, 104, 824, 506, 540)
DEMO_PROMPT = """
Please read the following example. Then extract the answer from the model response and type it at the end of the prompt.

Hint: Please answer the question requiring an integer answer and provide the final value, e.g., 1, 2, 3, at the end.
Question: Which number is missing?

Model response: The number missing in the sequence is 14.

Extracted answer: 14

Hint: Please answer the question requiring a floating-point number with one decimal place and provide the final value, e.g., 1.2, 1.3, 1.4, at the end.
Question: What is the fraction of females facing the camera?

Model response: The fraction of females facing the camera is 0.6, which means that six out of ten females in the group are facing the camera.

Extracted answer: 0.6

Hint: Please answer the question requiring a floating-point number with two decimal places and provide the final value, e.g., 1.23, 1.34, 1.45, at the end.
Question: How much money does Luca need to buy a sour apple candy and a butterscotch candy? (Unit: $)

Model response: Luca needs $1.45 to buy a sour apple candy and a butterscotch candy.

Extracted answer: 1.45

Hint: Please answer the question requiring a Python list as an answer and provide the final list, e.g., [1, 2, 3], [1.2, 1.3, 1.4], at the end.
Question: Between which two years does the line  graph saw its maximum peak?

Model response: The line graph saw its maximum peak between 2007 and 2008.

Extracted answer: [2007, 2008]

Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end.
Question: What fraction of the shape is blue?\nChoices:\n(A) 3/11\n(B) 8/11\n(C) 6/11\n(D) 3/5

Model response: The correct answer is (B) 8/11.

Extracted answer: B
"""


def extraction_prompt(query: str, response: str) -> str:
    """``create_test_prompt``: the demonstrations, the query and the response, then the cue."""
    return f"{DEMO_PROMPT.strip()}\n\n{query}\n\n{response}\n\nExtracted answer: "


def extract_by_rules(response: str, problem: dict[str, Any], quick_extract: bool = False) -> str | None:
    """``extract_answer``'s shortcuts before the model call; None when the model must read it."""
    if response == "":
        return ""
    if problem["question_type"] == "multi_choice" and response in (problem.get("choices") or []):
        return response
    if problem["answer_type"] == "integer":
        try:
            return str(int(response))
        except ValueError:
            pass
    if problem["answer_type"] == "float":
        try:
            return str(float(response))
        except ValueError:
            pass
    if quick_extract:
        found = re.search(r'The answer is "(.*)"\.', response)
        if found:
            return found.group(1)
    return None


def most_similar(prediction: str, choices: Sequence[str]) -> str:
    """``get_most_similar``: the choice at the smallest Levenshtein distance (the first on ties)."""
    from Levenshtein import distance

    distances = [distance(prediction, choice) for choice in choices]
    return choices[distances.index(min(distances))]


def normalize_extracted_answer(extraction: Any, choices: Sequence[str] | None, question_type: str, answer_type: str,
                               precision: Any, ignore_empty_extractions: bool = False) -> str | None:
    """The official normalisation of an extracted answer into a prediction (None: no prediction)."""
    if question_type == "multi_choice":
        extraction = extraction.strip() if isinstance(extraction, str) else str(extraction)
        if ignore_empty_extractions and not extraction:
            return None
        letter = re.findall(r"\(([a-zA-Z])\)", extraction)
        if letter:
            extraction = letter[0].upper()
        options = list(choices or [])
        letters = [chr(ord("A") + i) for i in range(len(options))]
        if extraction in letters:
            return options[letters.index(extraction)]
        return most_similar(extraction, options)
    try:
        if answer_type == "integer":
            return str(int(float(extraction)))
        if answer_type == "float":
            return str(round(float(extraction), int(precision)))
        if answer_type == "list":
            return str(extraction)
    except (TypeError, ValueError, OverflowError):
        return None
    return None


def is_correct(prediction: str | None, answer: str) -> bool:
    """``safe_equal``: exact equality of the strings."""
    return prediction is not None and prediction == answer


def breakdowns(records: Sequence[dict[str, Any]], correct_field: str = "correct") -> dict[str, dict[str, dict[str, float]]]:
    """Accuracy by each breakdown key's values (records carry the problem's metadata fields),
    sorted by accuracy, highest first, as ``calculate_score.py`` writes them."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for key in BREAKDOWN_KEYS:
        groups: dict[str, list[int]] = {}
        for record in records:
            values = record.get(key)
            for value in (values if key == "skills" else [values]) or []:
                if value is not None:
                    groups.setdefault(str(value), []).append(int(record[correct_field]))
        table = {value: {"accuracy": sum(hits) / len(hits), "correct": sum(hits), "total": len(hits)} for value, hits in groups.items()}
        out[key] = dict(sorted(table.items(), key=lambda item: -item[1]["accuracy"]))
    return out


def guess_fields(problem: dict[str, Any]) -> dict[str, Any]:
    """What the two baselines need of a problem, kept in its record: the random guess's expected
    score, the group the frequent guess pools answers over, and the answer as that group counts it."""
    choices = problem.get("choices") or []
    multiple_choice = problem["question_type"] == "multi_choice" and bool(choices)
    answer = problem["answer"]
    return {"random_guess": 1 / len(choices) if multiple_choice else 0.0,
            "guess_group": f"{problem['question_type']}/{problem['answer_type']}/precision={problem.get('precision')}/choices={len(choices)}",
            "answer_key": chr(ord("A") + choices.index(answer)) if multiple_choice and answer in choices else str(answer)}


def frequent_guesses(records: Sequence[dict[str, Any]]) -> list[int]:
    """Whether the frequent guess gets each record right (records carry ``guess_fields``). Like the
    release's, it is an oracle on the answer distribution of the items scored, so on a subset it
    pools that subset's answers."""
    in_pid_order = sorted(records, key=lambda r: (len(r["doc_id"]), r["doc_id"]))  # a document's id is its pid: numeric order
    counts: dict[str, Counter[str]] = {}
    for record in in_pid_order:
        counts.setdefault(record["guess_group"], Counter())[record["answer_key"]] += 1
    # Counter.most_common keeps insertion order among ties: the answer met first wins, as in the release.
    guess = {group: counter.most_common(1)[0][0] for group, counter in counts.items()}
    return [int(record["answer_key"] == guess[record["guess_group"]]) for record in records]
