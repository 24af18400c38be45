"""MathVista's official extraction shortcuts, normalisation and breakdowns (PAPERS.md §3;
lupantech/MathVista evaluation/), on cases written from the official code, and the
released-outputs rescoring script on a fixture release."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.api import GenerateRequest
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


def test_queries_follow_build_query(mirror):
    from harness.api import Doc
    from harness.data import DataStore
    from tasks.mathvista import MathVista, MathVistaConfig, baseline_record, build_query, refine_caption, refine_ocr
    from tasks.mathvista_scoring import frequent_guesses

    assert refine_caption("Sure. The image shows a plot.  I hope this helps!") == "The image shows a plot."
    assert refine_ocr("[([[161, 39], [766, 39], [766, 120], [161, 120]], 'The spring', 0.91)]") == "[([161, 39], 'The spring')]"
    assert refine_ocr("[]") == "" and refine_ocr("not a list") == ""
    problem = {"question": "What fraction is blue?", "unit": None, "choices": ["3/11", "8/11"], "question_type": "multi_choice",
               "answer_type": "text", "precision": None, "caption": "A shape.", "ocr": ""}
    assert build_query(problem, 0, "solution", True, True) == (
        "Question: What fraction is blue?\nChoices:\n(A) 3/11\n(B) 8/11\nImage description: A shape.\n"
        "Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end.\nSolution:")  # stripped
    two_shot = build_query(problem, 2, "code", False, False)
    assert two_shot.count("Python code:") == 3 and two_shot.endswith("Hint: Please generate a python code to solve the problem\nPython code:")
    docs = {d.id: d for d in MathVista(MathVistaConfig(input="question")).load_docs(DataStore())}
    assert len(docs) == 1000
    task = MathVista(MathVistaConfig(input="question"))
    assert task.query(docs["2"].data).startswith("Hint: Please answer the question requiring an integer answer")  # query.json
    # the harness's baselines over all of testmini: the paper's random guess (17.9) and its frequent
    # guess, overall and per task, to the item (the release's per-task random guess is one draw, ours its expectation)
    metrics = task.aggregate([baseline_record(d) | {"correct_rules": 0} for d in docs.values()], 0)
    assert metrics["random_guess"].value == pytest.approx(0.179, abs=5e-4)
    frequent = {"": 263, "_fqa": 61, "_gps": 71, "_mwp": 38, "_tqa": 49, "_vqa": 44}
    assert {suffix: round(metrics[f"frequent_guess{suffix}"].value * metrics[f"frequent_guess{suffix}"].n) for suffix in frequent} == frequent
    # a tie goes to the answer met first in numeric pid order; a group is per number of choices
    guessed = [baseline_record(Doc(pid, {"answer": a, "choices": c, "question_type": "multi_choice", "answer_type": "text", "metadata": {}}))
           for pid, a, c in (("10", "x", ["y", "x"]), ("9", "p", ["p", "q"]), ("11", "t", ["s", "t", "u"]))]
    assert frequent_guesses(guessed) == [0, 1, 1]
    captioned = MathVista(MathVistaConfig(input="caption_ocr", prompting="cot-2shot")).query(docs["1"].data)
    assert captioned.count("Solution:") == 3 and "Image description: " in captioned


def test_program_of_thought_runs_in_the_sandbox():
    from tasks.mathvista import run_program

    assert run_program("x = 6 * 7\nprint(x)") == ("42", "")
    output, error = run_program("print(1 / 0)")
    assert output == "" and "ZeroDivisionError" in error


def test_text_and_image_runs_end_to_end(tmp_path, mirror, capsys):
    from PIL import Image, ImageDraw

    from tasks.mathvista import TASK_ABBREVIATIONS
    from tests.conftest import cli

    runs = tmp_path / "runs"
    base = ["--task", "mathvista", "--limit", "2", "--quiet", "--output-dir", runs, "--task-arg", "max_new_tokens=4"]
    # caption + OCR with an extractor model: both scores, the extractor's cost counted apart
    assert cli("run", *base, "--model", "tiny-random-llama", "--task-arg", "input=caption_ocr",
               "--task-arg", "extractor=tiny-random-llama") == 0
    [result] = [json.loads(p.read_text()) for p in runs.glob("*/results.json")]
    assert {"accuracy", "accuracy_rules", "random_guess"} <= set(result["metrics"])
    task_of = {s["doc_id"]: s["task"] for s in map(json.loads, next(runs.glob("*/samples.jsonl")).read_text().splitlines())}
    for task_name in set(task_of.values()):  # each extraction mode's score per task, from the one run
        assert {f"accuracy_{TASK_ABBREVIATIONS[task_name]}", f"accuracy_rules_{TASK_ABBREVIATIONS[task_name]}"} <= set(result["metrics"])
    assert any(name.startswith("accuracy/question_type=") for name in result["metrics"])  # the breakdowns
    state = json.loads(next(runs.glob("*/state.json")).read_text())
    samples = [json.loads(line) for line in next(runs.glob("*/samples.jsonl")).read_text().splitlines()]
    needed = sum(s["extraction_rules"] == s["response"] != "" for s in samples)  # what the rules left to the extractor
    assert needed and state["sessions"][-1]["cost"].get("extractor_model_calls", 0) == needed  # counted apart
    assert all({"query", "response", "extraction", "prediction", "extraction_rules", "correct_rules"} <= set(s) for s in samples)
    # the image setting: a tiny LLaVA sees images drawn here
    images = tmp_path / "mathvista" / "images"
    images.mkdir(parents=True)
    for pid in range(1, 1001):
        picture = Image.new("RGB", (28, 28), "white")
        ImageDraw.Draw(picture).rectangle([4, 4, 4 + pid % 20, 20], fill=(pid % 255, 0, 0))
        picture.save(images / f"{pid}.jpg")
    assert cli("run", *base, "--model", "tiny-random-llava", "--task-arg", f"images_dir={images.parent}") == 0
    # Math-LLaVA's protocol over the same model: its template, sampled at T 0.2, 512 tokens (bounded here)
    assert cli("run", *base, "--model", "tiny-random-llava", "--task-arg", f"images_dir={images.parent}",
               "--method", "math-llava", "--method-arg", "max_new_tokens=4") == 0
    assert cli("run", *base, "--model", "tiny-random-llava") == 2
    assert "images_dir" in capsys.readouterr().err
    assert cli("run", *base, "--model", "tiny-random-llama", "--task-arg", f"images_dir={images.parent}") == 2
    assert "image-text-to-text" in capsys.readouterr().err


def test_math_llava_renders_its_conversation_with_padded_images(tmp_path):
    from PIL import Image

    from harness import models
    from harness.method import METHODS, MethodOptions
    from methods.math_llava import render

    assert render("Question: 1+1?", "llava_v1", "<image>", 1) == (
        "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and "
        "polite answers to the human's questions. USER: <image>\nQuestion: 1+1? ASSISTANT:")
    assert render("Q", "llava_v0", "<image>", 1).endswith("###Human: <image>\nQ###Assistant:")
    loaded = models.load(models.resolve("tiny-random-llava"))
    cls = METHODS.get("math-llava")
    method = cls(loaded, cls.Args(max_new_tokens=3), MethodOptions(seed=0, show_progress=False))
    wide = Image.new("RGB", (40, 20), "red")
    adapted = method._adapt(GenerateRequest("Question: what colour?", 64, images=(wide,)))
    assert adapted.images[0].size == (40, 40) and adapted.temperature == 0.2 and adapted.max_new_tokens == 3
    assert adapted.prompt.count(loaded.processor.image_token) == 1 and "USER: " + loaded.processor.image_token in adapted.prompt
    first = method.generate([GenerateRequest("Question: what colour?", 64, images=(wide,))])
    again = cls(loaded, cls.Args(max_new_tokens=3), MethodOptions(seed=0, show_progress=False)).generate(
        [GenerateRequest("Question: what colour?", 64, images=(wide,))])
    assert first[0].text == again[0].text  # sampled, seeded
