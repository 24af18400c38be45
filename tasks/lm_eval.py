"""``lm-eval:<name>``: any lm-evaluation-harness task as a harness task.

Runs the task through our methods with our run store (resume, CIs, paired comparison). Its
documents are the task's evaluation docs; ``data_files=<json/jsonl>`` replaces the hub
dataset with a local file of the same rows, for machines with no network. Few-shot examples
are drawn per document from a generator seeded with (task fewshot seed, document index), so
a resumed run sees the same prompts; lm-eval itself draws them in processing order, so
few-shot prompts can differ from its own run (zero-shot prompts are identical).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from numbers import Number
from pathlib import Path
from typing import Any

from lm_eval.api.instance import Instance

from harness.api import Capability, Doc, LoglikelihoodRequest, Metric, StreamRequest
from harness.data import DataStore, HubSource, require_hub
from harness.errors import ArgumentError, DataUnavailableError, UnknownNameError
from harness.lm_eval_model import generate_request
from harness.stats import MetricValue, bootstrap_interval
from harness.task import EvalSettings, Task

PREFIX = "lm-eval:"
FEWSHOT_SEED = 1234  # lm-eval's default few-shot seed
OUTPUT_CAPABILITY = {
    "loglikelihood": Capability.LOGLIKELIHOOD,
    "multiple_choice": Capability.LOGLIKELIHOOD,
    "loglikelihood_rolling": Capability.STREAM,
    "generate_until": Capability.GENERATE,
}


@dataclass(frozen=True)
class LmEvalConfig:
    num_fewshot: int | None = None  # default: the task's own
    data_files: str | None = None  # local json/jsonl of the evaluation rows, instead of the hub
    include_path: str | None = None  # extra folder of lm-eval task YAMLs


@lru_cache(maxsize=4)
def task_manager(include_path: str | None):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path)


class LmEvalTask(Task):
    """Any lm-evaluation-harness task, run through harness methods."""

    lm_eval_name: str = ""
    Config = LmEvalConfig
    docs_per_chunk = 16

    def __init__(self, config: LmEvalConfig | None = None) -> None:
        super().__init__(config)
        manager = task_manager(self.config.include_path)
        entry = manager.task_index.get(self.lm_eval_name)
        if entry is None:
            import difflib

            close = difflib.get_close_matches(self.lm_eval_name, manager.all_subtasks, n=1)
            hint = f"; did you mean 'lm-eval:{close[0]}'?" if close else ""
            raise UnknownNameError(f"lm-eval has no task '{self.lm_eval_name}'{hint}")
        if "TASK" not in str(entry.kind).upper():
            raise ArgumentError(f"lm-eval '{self.lm_eval_name}' is a group or tag; name one of its tasks")
        self._entry = entry
        output_type = (entry.cfg or {}).get("output_type", "generate_until")
        if output_type not in OUTPUT_CAPABILITY:
            raise ArgumentError(f"lm-eval task '{self.lm_eval_name}' has unsupported output type '{output_type}'")
        self.requires = frozenset({OUTPUT_CAPABILITY[output_type]})
        self.version = str(((entry.cfg or {}).get("metadata") or {}).get("version", "?"))
        self._task = None
        self._pending: dict[str, list[Instance]] = {}

    def load_docs(self, data: DataStore) -> list[Doc]:
        from lm_eval.tasks._yaml_loader import load_yaml

        manager = task_manager(self.config.include_path)
        spec: Any = self.lm_eval_name
        dataset_path = str((self._entry.cfg or {}).get("dataset_path") or "")
        if not self.config.data_files and dataset_path not in ("", "json", "csv", "parquet", "text") and not Path(dataset_path).exists():
            require_hub(f"lm-eval:{self.lm_eval_name}", dataset_path,
                        "give a local copy of its rows with --task-arg data_files=<json/jsonl>")
            cfg = self._entry.cfg or {}
            data.note_hub(HubSource(dataset_path, cfg.get("dataset_name"), str(cfg.get("test_split") or cfg.get("validation_split") or "")))
        if self.config.data_files:
            data.note_local(Path(self.config.data_files))
            spec = load_yaml(self._entry.yaml_path)
            spec.update(
                dataset_path="json", dataset_name=None, dataset_kwargs={"data_files": {"test": self.config.data_files}},
                training_split=None, validation_split=None, test_split="test", fewshot_split=None,
            )
            if self.config.num_fewshot:
                spec["fewshot_split"] = "test"
        try:
            self._task = manager.load([spec])["tasks"][self.lm_eval_name]
        except Exception as error:  # hub and dataset failures come in many types
            raise DataUnavailableError(
                f"lm-eval task '{self.lm_eval_name}' could not load its data ({type(error).__name__}: "
                f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}); "
                "give a local copy with --task-arg data_files=<json/jsonl>"
            ) from None
        if self.config.num_fewshot is not None:
            self._task.set_config("num_fewshot", self.config.num_fewshot)
        # Ids carry a hash of each row, so a changed data file gives a new run id, never a
        # stale reuse.
        return [Doc(f"{i}-{_row_hash(doc)}", dict(doc)) for i, doc in enumerate(self._task.eval_docs)]

    @property
    def lm_task(self):
        if self._task is None:
            self.load_docs(DataStore())
        return self._task

    def _instances(self, doc: Doc) -> list[Instance]:
        task = self.lm_task
        shots = task.config.num_fewshot or 0
        if shots and getattr(task, "sampler", None) is not None:
            task.sampler.rnd = random.Random(f"{FEWSHOT_SEED}:{_doc_index(doc)}")
        ctx = task.fewshot_context(doc.data, shots)
        instances = task.construct_requests(doc.data, ctx, metadata=(self.lm_eval_name, _doc_index(doc), 1))
        return instances if isinstance(instances, list) else [instances]

    def requests(self, doc: Doc, settings: EvalSettings) -> list[Any]:
        if settings.chat:
            raise ArgumentError("lm-eval tasks run without a chat template here (use --chat-template off)")
        out = []
        instances = self._instances(doc)
        self._pending[doc.id] = instances  # score() reuses them: the few-shot context is built once
        for instance in instances:
            if instance.request_type == "loglikelihood":
                out.append(LoglikelihoodRequest(*instance.args[:2]))
            elif instance.request_type == "loglikelihood_rolling":
                out.append(StreamRequest(instance.args[0]))
            else:
                out.append(generate_request(*instance.args[:2]))
        return out

    def score(self, doc: Doc, results: Sequence[Any], settings: EvalSettings) -> dict[str, Any]:
        task = self.lm_task
        instances = self._pending.pop(doc.id, None) or self._instances(doc)
        for instance, result in zip(instances, results, strict=True):
            if instance.request_type == "loglikelihood":
                instance.resps = [(result.logprob, result.is_greedy)]
            elif instance.request_type == "loglikelihood_rolling":
                instance.resps = [result.logprob]
            else:
                instance.resps = [result.text]
        record: dict[str, Any] = {}
        for ensemble in task._filters:
            ensemble.apply(instances)
            values = task.process_results(doc.data, [inst.filtered_resps[ensemble.name] for inst in instances])
            for metric, value in values.items():
                record[f"{metric},{ensemble.name}"] = list(value) if isinstance(value, tuple) else value
        return record

    def metrics(self) -> list[Metric]:
        task = self.lm_task
        aggregation, higher = task.aggregation(), task.higher_is_better()
        out = []
        for ensemble in task._filters:
            for metric, function in aggregation.items():
                key = f"{metric},{ensemble.name}"
                out.append(Metric(key, bool(higher.get(metric, True)), (key,), _aggregate_with(function)))
        return out

    def aggregate(self, records: Sequence[dict[str, Any]], seed: int) -> dict[str, MetricValue]:
        out = {}
        for metric in self.metrics():
            (key,) = metric.fields
            values = [r[key] for r in records if key in r]
            value = float(metric.statistic(values))
            arrays = _numeric_columns(values)
            if arrays is None:
                out[key] = MetricValue(value, None, None, len(values), metric.higher_is_better, "none (non-numeric samples)")
                continue
            def statistic(*cols, metric=metric) -> float:
                return float(metric.statistic(list(zip(*cols, strict=True)) if len(cols) > 1 else list(cols[0])))

            low, high, how = bootstrap_interval(arrays, statistic, seed)
            out[key] = MetricValue(value, low, high, len(values), metric.higher_is_better, how)
        return out

    def protocol(self) -> dict[str, Any]:
        task = self.lm_task
        return {
            "description": f"lm-evaluation-harness task '{self.lm_eval_name}' (lm-eval's prompts, metrics and aggregation)",
            "output_type": task.OUTPUT_TYPE,
            "num_fewshot": task.config.num_fewshot,
            "data_files": self.config.data_files,
            "lm_eval_version": _lm_eval_version(),
        }


def _row_hash(row: Any) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(row, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _doc_index(doc: Doc) -> int:
    return int(doc.id.split("-", 1)[0])


def _aggregate_with(function):
    def statistic(values: Sequence[Any]) -> float:
        return float(function([tuple(v) if isinstance(v, list) else v for v in values]))

    return statistic


def _numeric_columns(values: Sequence[Any]):
    import numpy as np

    if values and all(isinstance(v, Number) for v in values):
        return [np.asarray(values, dtype=float)]
    if values and all(isinstance(v, list) and all(isinstance(x, Number) for x in v) and len(v) == len(values[0]) for v in values):
        return [np.asarray(column, dtype=float) for column in zip(*values, strict=True)]
    return None


def _lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm-eval")


def resolve_task(name: str) -> type[Task]:
    if not name:
        raise UnknownNameError("give an lm-eval task name after 'lm-eval:'")
    return type(f"LmEval[{name}]", (LmEvalTask,), {"lm_eval_name": name, "name": f"{PREFIX}{name}"})

