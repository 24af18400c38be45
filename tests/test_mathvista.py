"""MathVista's official extraction shortcuts, normalisation and breakdowns (PAPERS.md §3;
lupantech/MathVista evaluation/), on cases written from the official code, and the
released-outputs rescoring script on a fixture release."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.mathvista_scoring import breakdowns, extract_by_rules, extraction_prompt, is_correct, normalize_extracted_answer

CHOICES = ["3/11", "8/11", "6/11", "3/5"]


@pytest.mark.parametrize(("extraction", "question_type", "answer_type", "precision", "expected"), [
    ("B", "multi_choice", "text", None, "8/11"),  # a bare capital letter indexes the choices
    ("(c) six", "multi_choice", "text", None, "6/11"),  # "(x)" anywhere, upper-cased
    ("b", "multi_choice", "text", None, "3/5"),  # a bare lowercase letter is not a letter: Levenshtein snaps it
    ("8/12", "multi_choice", "text", None, "8/11"),  # the closest choice
    ("", "multi_choice", "text", None, "3/5"),  # even an empty extraction gets a choice (the shortest)
    ("5.0", "free_form", "integer", None, "5"),  # int(float(x))
    ("7.9", "free_form", "integer", None, "7"),  # truncation, not rounding
    ("seven", "free_form", "integer", None, None),
    ("1.456", "free_form", "float", 2, "1.46"),
    ("0.6", "free_form", "float", 1, "0.6"),
    ("[2014, 2016]", "free_form", "list", None, "[2014, 2016]"),
])
def test_normalisation_follows_calculate_score(extraction, question_type, answer_type, precision, expected):
    assert normalize_extracted_answer(extraction, CHOICES, question_type, answer_type, precision) == expected


def test_rule_shortcuts_and_the_extractor_prompt():
    choice = {"question_type": "multi_choice", "answer_type": "text", "choices": CHOICES}
    integer = {"question_type": "free_form", "answer_type": "integer", "choices": None}
    decimal = {"question_type": "free_form", "answer_type": "float", "choices": None}
    assert extract_by_rules("", integer) == ""
    assert extract_by_rules("6/11", choice) == "6/11"
    assert extract_by_rules("The answer is (C).", choice) is None  # the extractor model must read it
    assert extract_by_rules(" 14 ", integer) == "14"
    assert extract_by_rules("1.50", decimal) == "1.5"
    assert extract_by_rules('The answer is "42".', integer) is None
    assert extract_by_rules('The answer is "42".', integer, quick_extract=True) == "42"
    prompt = extraction_prompt("Hint: ...\nQuestion: How many?", "There are 3.")
    assert prompt.startswith("Please read the following example.") and prompt.count("Extracted answer:") == 6
    assert prompt.endswith("Hint: ...\nQuestion: How many?\n\nThere are 3.\n\nExtracted answer: ")
    assert is_correct("5", "5") and not is_correct(None, "5") and not is_correct("5.0", "5")


def test_breakdowns_count_every_listed_skill():
    records = [
        {"correct": 1, "task": "geometry problem solving", "skills": ["geometry reasoning", "algebraic reasoning"]},
        {"correct": 0, "task": "geometry problem solving", "skills": ["geometry reasoning"]},
        {"correct": 1, "task": "figure question answering", "skills": ["statistical reasoning"]},
    ]
    table = breakdowns(records)
    assert table["task"]["geometry problem solving"] == {"accuracy": 0.5, "correct": 1, "total": 2}
    assert table["skills"]["geometry reasoning"]["total"] == 2 and table["skills"]["algebraic reasoning"]["accuracy"] == 1.0
    assert list(table["task"]) == ["figure question answering", "geometry problem solving"]  # highest accuracy first


def test_released_outputs_script_reproduces_and_explains_counts(tmp_path):
    entries = {
        "1": {"question_type": "free_form", "answer_type": "integer", "precision": None, "choices": None, "answer": "5",
              "extraction": "5.0", "prediction": None, "true_false": False},  # scored before int(float(x))
        "2": {"question_type": "multi_choice", "answer_type": "text", "precision": None, "choices": CHOICES, "answer": "8/11",
              "extraction": "B", "prediction": "8/11", "true_false": True},
        "3": {"question_type": "free_form", "answer_type": "float", "precision": 2, "choices": None, "answer": "1.45",
              "extraction": "1.45", "prediction": "1.45", "true_false": True},
    }
    folder = tmp_path / "results" / "model"
    folder.mkdir(parents=True)
    (folder / "output_model.json").write_text(json.dumps(entries))
    (folder / "scores_model.json").write_text(json.dumps({"average": {"accuracy": "66.67", "correct": 2, "total": 3}}))
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "mathvista_released.py"
    out = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, check=True).stdout
    assert "3/3 100.0" in out and "reproduced by the int(x) rule" in out
    assert "0/1 files reproduce their published count with the current scorer, 1/1 with it or the earlier integer rule" in out
