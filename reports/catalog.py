"""The run index as report rows: one ``RunEntry`` per finished run, with readable labels.

Tables, the leaderboard and paper specs all read runs through here, so they agree on what a
"variant" is: the task's config where it differs from the task's defaults, plus the subset
size when a run evaluated a ``--limit`` subset (numbers over different subsets are never put
side by side as if comparable).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.store import RunStore


@dataclass(frozen=True)
class RunEntry:
    run_id: str
    path: Path
    task: str
    task_config: dict[str, Any]
    variant: str  # non-default task config (and subset size), "default" when none
    method: str
    method_args: dict[str, Any]
    method_label: str  # method name with its non-default arguments
    model: str
    seed: int
    limit: int | None
    n: int
    main_metric: str
    metrics: dict[str, dict[str, Any]]
    cost: dict[str, Any]
    created_at: str
    auxiliary: dict[str, Any] = field(default_factory=dict)  # role -> identity of each second model (spec)

    @property
    def system(self) -> str:
        """What a leaderboard row ranks: a method (with its arguments) on a model."""
        return f"{self.method_label} · {self.model}"

    @property
    def column(self) -> str:
        """A task variant: entries in one column are comparable (same config, same subset)."""
        return self.task if self.variant == "default" else f"{self.task} ({self.variant})"

    def value(self, metric: str | None = None) -> float | None:
        found = self.metrics.get(metric or self.main_metric)
        return None if found is None else found.get("value")

    def higher_is_better(self, metric: str | None = None) -> bool:
        found = self.metrics.get(metric or self.main_metric) or {}
        return bool(found.get("higher_is_better", True))


def _format_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _label(values: dict[str, Any], defaults: dict[str, Any] | None) -> str:
    if defaults is None:  # a task or method no longer registered: show everything set
        changed = {k: v for k, v in values.items() if v is not None}
    else:
        changed = {k: v for k, v in values.items() if defaults.get(k, object()) != v}
    return ", ".join(f"{k}={_format_value(v)}" for k, v in sorted(changed.items()))


@cache
def _defaults(kind: str, name: str) -> dict[str, Any] | None:
    """A registered task's Config or method's Args defaults (None: no longer registered). Read
    from the dataclass fields, not by building one: an argument with no usable default (a
    method's reward model, a distilled checkpoint) refuses to build empty."""
    import dataclasses

    from harness.method import METHODS
    from harness.task import TASKS

    try:
        cls = TASKS.get(name).Config if kind == "task" else METHODS.get(name).Args
    except HarnessError:
        return None
    return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            for f in dataclasses.fields(cls)}


def task_defaults(task: str) -> dict[str, Any] | None:
    return _defaults("task", task)


def method_defaults(method: str) -> dict[str, Any] | None:
    return _defaults("method", method)


def metric_order(task: str, config: dict[str, Any]) -> list[str]:
    """The task's metrics in its own order (the index stores them sorted by name)."""
    return list(_metric_order(task, json.dumps(config, sort_keys=True)))


@cache
def _metric_order(task: str, config_json: str) -> tuple[str, ...]:
    from harness.runner import make_task

    try:
        return tuple(m.name for m in make_task(task, json.loads(config_json)).metrics())
    except HarnessError:
        return ()


def variant_label(task: str, config: dict[str, Any], limit: int | None) -> str:
    label = _label(config, task_defaults(task))
    if limit is not None:
        label = f"{label}, n={limit}" if label else f"n={limit}"
    return label or "default"


def method_label(method: str, args: dict[str, Any]) -> str:
    label = _label(args, method_defaults(method))
    return f"{method}({label})" if label else method


def entry(row: dict[str, Any]) -> RunEntry:
    spec = json.loads(row["spec_json"])
    task, method = spec["task"], spec["method"]
    limit = spec["selection"].get("limit")
    metrics = json.loads(row["metrics_json"])
    main = row["main_metric"]
    cost = json.loads(row["cost_json"]) if row.get("cost_json") else {}
    return RunEntry(
        run_id=row["run_id"], path=Path(row["path"]), task=task["name"], task_config=task["config"],
        variant=variant_label(task["name"], task["config"], limit), method=method["name"], method_args=method["args"],
        method_label=method_label(method["name"], method["args"]), model=spec["model"]["name"], seed=spec["seed"],
        limit=limit, n=int(metrics.get(main, {}).get("n") or row.get("n_samples") or 0), main_metric=main,
        metrics=metrics, cost=cost, created_at=row.get("created_at") or "", auxiliary=spec.get("auxiliary") or {},
    )


def load_entries(store: RunStore, reindex: bool = True) -> list[RunEntry]:
    """Finished runs, oldest first. Reindexing first picks up runs copied in by hand."""
    if reindex:
        store.reindex()
    return sorted((entry(row) for row in store.rows(status="finished")), key=lambda e: e.created_at)


def latest_per_cell(entries: list[RunEntry]) -> list[RunEntry]:
    """One run per (column, system, seed): the most recently started one."""
    chosen: dict[tuple[str, str, int], RunEntry] = {}
    for e in sorted(entries, key=lambda e: e.created_at):
        chosen[(e.column, e.system, e.seed)] = e
    return list(chosen.values())
