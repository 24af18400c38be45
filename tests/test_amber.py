"""AMBER's discriminative part (mDPO's hallucination benchmark, PAPERS.md §9): the official
metrics on a fixture written here (AMBER is not mirrored), and the task end to end on a tiny LLaVA."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from harness.data import DataStore
from harness.errors import DataUnavailableError
from harness.task import EvalSettings
from tasks.amber import Amber, AmberConfig, normalise
from tests.conftest import cli

# (type, truth, response): two existence, two attribute, two relation questions
ITEMS = [("discriminative-hallucination", "no", "No, there is none."), ("discriminative-hallucination", "yes", "no"),
         ("discriminative-attribute-state", "no", "Yes."), ("discriminative-attribute-number", "yes", "Yes"),
         ("discriminative-relation", "no", "No"), ("discriminative-relation", "yes", "maybe")]


@pytest.fixture
def amber_dir(tmp_path):
    from PIL import Image

    (tmp_path / "query").mkdir()
    (tmp_path / "image").mkdir()
    annotations = [{"id": 1, "type": "generative", "truth": ["dog"], "hallu": ["cat"]}]
    queries = []
    for index, (kind, truth, _) in enumerate(ITEMS, start=2):
        annotations.append({"id": index, "type": kind, "truth": truth})
        queries.append({"id": index, "image": f"AMBER_{index}.jpg", "query": f"Is there a thing number {index} in this image?"})
        Image.new("RGB", (28, 28), (index * 30, 0, 0)).save(tmp_path / "image" / f"AMBER_{index}.jpg")
    (tmp_path / "annotations.json").write_text(json.dumps(annotations))
    (tmp_path / "query" / "query_discriminative.json").write_text(json.dumps(queries))
    return tmp_path


def test_responses_are_read_and_scored_as_the_official_code(amber_dir):
    assert [normalise(r) for r in ("No, there is none.", "yes!", "  YES", "maybe", "")] == ["No", "Yes", "Yes", "maybe", ""]
    task = Amber(AmberConfig(data_dir=str(amber_dir)))
    docs = task.load_docs(DataStore(None))
    settings = EvalSettings(chat=True, seed=0)
    records = [task.score(doc, [SimpleNamespace(text=response)], settings) for doc, (_, _, response) in zip(docs, ITEMS, strict=True)]
    metrics = {k: v.value for k, v in task.aggregate(records, 0).items()}
    # By hand, "No" positive: correct = items 1, 4, 5 -> 3/6; answered No = {1, 2, 5}, truly no = {1, 3, 5}
    assert metrics["accuracy"] == pytest.approx(3 / 6) and metrics["unparsed_rate"] == pytest.approx(1 / 6)
    assert metrics["precision"] == pytest.approx(2 / 3) and metrics["recall"] == pytest.approx(2 / 3)
    assert metrics["f1"] == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3 + 0.0001))
    # existence: answered No both, truly no one -> P 1/2, R 1, the official ε 0.001
    assert metrics["precision/existence"] == pytest.approx(0.5) and metrics["recall/existence"] == pytest.approx(1.0)
    assert metrics["f1/existence"] == pytest.approx(2 * 0.5 * 1.0 / (1.5 + 0.001))
    assert metrics["accuracy/attribute"] == pytest.approx(0.5) and metrics["accuracy/relation"] == pytest.approx(0.5)


def test_amber_runs_on_a_vision_model_and_says_when_its_data_is_missing(amber_dir, runs_dir):
    with pytest.raises(DataUnavailableError, match="data_dir"):
        Amber().load_docs(DataStore(None))
    for mode in ("loglikelihood", "generate"):
        assert cli("run", "--task", "amber", "--task-arg", f"data_dir={amber_dir}", "--task-arg", f"mode={mode}",
                   "--model", "tiny-random-llava", "--quiet", "--output-dir", runs_dir) == 0
    assert cli("run", "--task", "amber", "--model", "tiny-random-llava", "--quiet", "--output-dir", runs_dir) != 0
