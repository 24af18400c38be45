"""Both directions of the lm-eval bridge, offline, on a local copy of PubMedQA's test rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import cli

from harness.data import DataStore
from harness.lm_eval_model import HarnessLM
from harness.method import MethodOptions
from harness.task import TASKS, EvalSettings
from methods.base import BaseArgs, BaseMethod
from tasks.lm_eval import task_manager
from tasks.pubmedqa import PubMedQA

N_ITEMS = 10


@pytest.fixture(scope="module")
def pubmedqa_rows(mirror, tmp_path_factory) -> Path:
    """The first PubMedQA test items in lm-eval's (bigbio source) row format."""
    items = json.loads((mirror / "pubmedqa/ori_pqal.json").read_text())
    test_ids = list(json.loads((mirror / "pubmedqa/test_ground_truth.json").read_text()))[:N_ITEMS]
    path = tmp_path_factory.mktemp("lm_eval_data") / "pubmedqa_test.jsonl"
    path.write_text("".join(json.dumps({"pubid": i, **items[i]}) + "\n" for i in test_ids))
    return path


def _local_lm_eval_pubmedqa(rows: Path):
    from lm_eval.tasks._yaml_loader import load_yaml

    manager = task_manager(None)
    config = load_yaml(manager.task_index["pubmedqa"].yaml_path)
    config.update(dataset_path="json", dataset_name=None, dataset_kwargs={"data_files": {"test": str(rows)}},
                  training_split=None, validation_split=None, test_split="test")
    return manager.load([config])["tasks"]["pubmedqa"]


def test_lm_eval_task_through_harness_equals_native_task(tiny, mirror, pubmedqa_rows, runs_dir):
    assert cli("run", "--task", "lm-eval:pubmedqa", "--task-arg", f"data_files={pubmedqa_rows}",
               "--model", "tiny-random-llama", "--quiet", "--output-dir", runs_dir) == 0
    (run,) = [p for p in runs_dir.iterdir() if p.is_dir()]
    via_lm_eval = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    task = PubMedQA()
    docs = task.load_docs(DataStore(mirror))[:N_ITEMS]
    method = BaseMethod(tiny, BaseArgs(), MethodOptions(show_progress=False))
    native = task.evaluate(docs, method, EvalSettings(chat=False, seed=0))
    assert [r["acc,none"] for r in via_lm_eval] == [r["correct"] for r in native]
    results = json.loads((run / "results.json").read_text())
    assert results["metrics"]["acc,none"]["value"] == pytest.approx(sum(r["correct"] for r in native) / N_ITEMS)


def test_harness_method_inside_simple_evaluate(tiny, mirror, pubmedqa_rows):
    import lm_eval

    method = BaseMethod(tiny, BaseArgs(), MethodOptions(show_progress=False))
    output = lm_eval.simple_evaluate(model=HarnessLM(method), tasks=[_local_lm_eval_pubmedqa(pubmedqa_rows)], task_manager=task_manager(None))
    task = PubMedQA()
    native = task.evaluate(task.load_docs(DataStore(mirror))[:N_ITEMS], method, EvalSettings(chat=False, seed=0))
    assert output["results"]["pubmedqa"]["acc,none"] == pytest.approx(sum(r["correct"] for r in native) / N_ITEMS)


def test_lm_eval_task_capabilities_come_from_its_output_type():
    assert {str(c) for c in TASKS.get("lm-eval:pubmedqa")().requires} == {"loglikelihood"}
    assert {str(c) for c in TASKS.get("lm-eval:wikitext")().requires} == {"stream"}
    assert {str(c) for c in TASKS.get("lm-eval:gsm8k")().requires} == {"generate"}


def test_lm_eval_task_without_data_is_one_clear_error(runs_dir, capsys):
    assert cli("run", "--task", "lm-eval:arc_easy", "--model", "tiny-random-llama", "--quiet", "--output-dir", runs_dir) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "arc_easy" in err and "data_files" in err


def test_unknown_lm_eval_task_suggests_a_name():
    from harness.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="did you mean 'lm-eval:pubmedqa'"):
        TASKS.get("lm-eval:pubmedq")()


def test_changed_rows_change_the_document_ids(pubmedqa_rows, tmp_path):
    task_cls = TASKS.get("lm-eval:pubmedqa")
    first = task_cls(task_cls.Config(data_files=str(pubmedqa_rows))).load_docs(DataStore())
    changed = tmp_path / "changed.jsonl"
    lines = pubmedqa_rows.read_text().splitlines()
    row = json.loads(lines[0])
    row["final_decision"] = "maybe" if row["final_decision"] != "maybe" else "no"
    changed.write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n")
    second = task_cls(task_cls.Config(data_files=str(changed))).load_docs(DataStore())
    assert first[0].id != second[0].id and [d.id for d in first[1:]] == [d.id for d in second[1:]]
