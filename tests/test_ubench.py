"""UBench: calibration metrics on hand-computed cases, letter extraction, items, and a run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import cli

from harness import calibration
from harness.data import DataStore
from tasks.ubench import MIDPOINTS, UBench, UBenchConfig, build_prompt, extract_letter
from tasks.ubench_items import CATEGORIES, build_items, source_counts

P = [0.05, 0.15, 0.95, 0.95]
Y = [0, 0, 1, 0]


def test_ece_mce_with_empty_bins_hand_computed():
    # bins: [0,.1): one item, acc 0, conf .05; [.1,.2): acc 0, conf .15; [.9,1]: acc .5, conf .95; 7 empty bins
    assert calibration.ece(P, Y) == pytest.approx(0.25 * 0.05 + 0.25 * 0.15 + 0.5 * 0.45)
    assert calibration.mce(P, Y) == pytest.approx(0.45)


def test_ace_and_tace_hand_computed():
    # 2 equal-mass bins: {.05,.15} acc 0 conf .1 -> .1; {.95,.95} acc .5 conf .95 -> .45
    assert calibration.ace(P, Y, bins=2) == pytest.approx((0.1 + 0.45) / 2)
    # threshold .1 drops .05; the median edge is .95 and ties stay together: {.15} -> .15; {.95,.95} acc .5 -> .45
    assert calibration.tace(P, Y, bins=2, threshold=0.1) == pytest.approx((0.15 + 0.45) / 2)


def test_all_answers_at_one_confidence():
    p, y = [0.75] * 4, [1, 1, 1, 0]
    assert calibration.ece(p, y) == pytest.approx(0.0)
    assert calibration.mce(p, y) == pytest.approx(0.0)
    assert calibration.ace(p, y) == pytest.approx(0.0)
    assert math.isnan(calibration.auroc(p, [1, 1, 1, 1]))


def test_brier_auroc_and_the_top_bin():
    assert calibration.brier([0.9, 0.2], [1, 0]) == pytest.approx((0.01 + 0.04) / 2)
    assert calibration.auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    counts = calibration.equal_width_bins([1.0, 0.0], [1, 0])
    assert counts[-1][0] == 1 and counts[0][0] == 1
    assert math.isnan(calibration.ece([], []))


@pytest.mark.parametrize(
    "text, letter, how",
    [
        ("J", "J", "bare"),
        ("B.", "B", "bare"),
        ("I: 80%-90%", "I", "bare"),
        ("**H**", "H", "bare"),
        ("[C]", "C", "bracketed"),
        ("My choice would be (D) since", "D", "bracketed"),
        ("I pick option G.", "G", "answer-is"),
        ("The answer is E", "E", "answer-is"),
        ("Reasoning... A is unlikely.\nAnswer: F", "F", "answer-is"),
        ("answer: [j]", "J", "answer-is"),
        ("I am about 85% sure", "I", "percent"),
        ("100%", "J", "percent"),
        ("between 30% and 40%... roughly 30-40%", "D", "percent-range"),
        ("I don't know", None, "unparsed"),
        ("", None, "unparsed"),
        ("A confident guess would be hard", None, "unparsed"),
    ],
)
def test_letter_extraction(text, letter, how):
    assert extract_letter(text) == (letter, how)


def test_midpoints():
    assert MIDPOINTS["A"] == pytest.approx(0.05) and MIDPOINTS["J"] == pytest.approx(0.95)


def test_items_are_seeded_balanced_and_sized_like_v1(mirror):
    items = build_items(DataStore(mirror))
    assert len(items) == 3978
    assert build_items(DataStore(mirror)) == items
    assert build_items(DataStore(mirror), seed=1) != items
    counts = source_counts(items)
    assert all(c["right"] * 2 == c["items"] for c in counts.values())
    per_category = {c: sum(v["items"] for v in counts.values() if v["category"] == c) for c in CATEGORIES}
    assert per_category == {"knowledge": 1000, "language": 1000, "understanding": 1000, "reasoning": 978}
    gsm = [i for i in items if i.source == "gsm8k"]
    assert all(i.candidate.lstrip("-").replace(".", "", 1).isdigit() for i in gsm)
    assert len({i.id for i in items}) == len(items)


def test_reversed_options_and_role_play_prompts():
    item = {"question": "Q?", "candidate": "C"}
    forward = build_prompt(item, UBenchConfig())
    backward = build_prompt(item, UBenchConfig(reverse_options=True))
    assert forward.index("A: 0%-10%") < forward.index("J: 90%-100%")
    assert backward.index("J: 90%-100%") < backward.index("A: 0%-10%")
    assert "Answer: <letter>" in build_prompt(item, UBenchConfig(mode="generate", chain_of_thought=True))


def test_a_category_with_no_items_gives_empty_metrics():
    task = UBench()
    records = [{"doc_id": str(i), "category": "knowledge", "label": i % 2, "confidence": 0.95, "expected_confidence": 0.9,
                "judgement_correct": i % 2, "unparsed": 0} for i in range(6)]
    metrics = task.aggregate(records, seed=0)
    assert metrics["ece/reasoning"].n == 0 and math.isnan(metrics["ece/reasoning"].value)
    assert metrics["ece/knowledge"].value == pytest.approx(45.0)
    assert metrics["avg"].value == pytest.approx(np.mean([45.0, 45.0, 45.0, 45.0]))


def test_invalid_study_combinations():
    with pytest.raises(ValueError, match="chain_of_thought needs mode=generate"):
        UBenchConfig(chain_of_thought=True)


@pytest.mark.parametrize("mode", ["loglikelihood", "generate"])
def test_ubench_run_writes_metrics_and_reliability_diagram(mode, runs_dir):
    assert cli("run", "--task", "ubench", "--task-arg", "scale=0.005", "--task-arg", f"mode={mode}",
               "--model", "tiny-random-llama", "--quiet", "--output-dir", runs_dir) == 0
    (run,) = [p for p in runs_dir.iterdir() if p.is_dir()]
    results = json.loads((run / "results.json").read_text())
    assert results["main_metric"] == "avg"
    assert {"ece", "mce", "ace", "tace", "avg", "brier", "auroc", "judgement_accuracy", "unparsed_rate", "avg/knowledge"} <= set(results["metrics"])
    assert results["artifacts"] == ["reliability.png", "reliability.svg"]
    assert (run / "reliability.png").stat().st_size > 1000
    samples = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == results["n_samples"]
    if mode == "generate":
        assert all("response" in s and "parsed_by" in s for s in samples)
        assert results["metrics"]["unparsed_rate"]["value"] == pytest.approx(np.mean([s["unparsed"] for s in samples]))
    else:
        assert all(0.05 <= s["expected_confidence"] <= 0.95 for s in samples)
