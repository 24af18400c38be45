"""The task contract: data, prompts, scoring and metrics for one benchmark."""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from harness.api import Capability, Doc, Metric, Request, Result, dispatch_groups
from harness.config import NoArgs
from harness.registry import Registry
from harness.stats import MetricValue, summarize_all
from harness.store import Journal

if TYPE_CHECKING:
    from harness.data import DataStore
    from harness.method import Method


@dataclass(frozen=True)
class EvalSettings:
    """Run-level settings a task may need while building requests."""

    chat: bool  # render prompts through the model's chat template
    seed: int
    journal: Journal = field(default_factory=lambda: Journal(None))  # the chunk in flight, for tasks that resume within one
    show_progress: bool = False  # a task's own long phases (a chunk of games) show a progress bar


SEEDED_SAMPLES = "+per-sample-seeds"


class Task(ABC):
    """A benchmark. Subclasses set ``requires``, ``Config`` and implement the hooks below."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    requires: ClassVar[frozenset[Capability]] = frozenset()
    Config: ClassVar[type] = NoArgs
    chat_by_default: ClassVar[bool] = False  # generation tasks on chat models: True
    docs_per_chunk: ClassVar[int] = 16  # documents evaluated (and logged) together

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.Config()
        if self.draws_samples():
            # Sampled generations are drawn from one seeded generator per sample (harness.decoding,
            # since issue 21), not per batch as before: other numbers than the same configuration
            # gave earlier, so another version. Greedy and scored configurations keep their ids.
            self.version = f"{type(self).version}{SEEDED_SAMPLES}"  # type: ignore[misc]

    def draws_samples(self) -> bool:
        """Whether this configuration asks for sampled generations (a temperature above 0)."""
        return False

    @classmethod
    def summary(cls) -> str:
        doc = inspect.getdoc(cls) or inspect.getdoc(inspect.getmodule(cls)) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    def auxiliary_models(self) -> dict[str, str]:
        """Second models this configuration uses (role -> zoo name), such as a judge; their
        identities go into the run spec, so a different judge is a different run."""
        return {}

    @classmethod
    def adapt(cls, task_args: dict[str, Any], provides: frozenset[Capability]) -> tuple[dict[str, Any], str] | None:
        """Task arguments under which a method with only ``provides`` can run this task, and a
        sentence saying so, when the user left that choice open (None: no such variant)."""
        return None

    @abstractmethod
    def load_docs(self, data: DataStore) -> list[Doc]:
        """All documents of the configured split, in a stable order, with stable ids."""

    @abstractmethod
    def metrics(self) -> list[Metric]:
        """The metrics, main metric first."""

    def requests(self, doc: Doc, settings: EvalSettings) -> list[Request]:
        raise NotImplementedError(f"{type(self).__name__} must implement requests() or evaluate()")

    def score(self, doc: Doc, results: Sequence[Result], settings: EvalSettings) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} must implement score() or evaluate()")

    def evaluate(self, docs: Sequence[Doc], method: Method, settings: EvalSettings) -> list[dict[str, Any]]:
        """One record per document. Single-turn tasks use requests()/score(); multi-turn
        tasks (the ``act`` capability) override this to drive their episodes."""
        answers = dispatch_groups(method, [self.requests(doc, settings) for doc in docs])
        return [{"doc_id": doc.id, **self.score(doc, results, settings)} for doc, results in zip(docs, answers, strict=True)]

    def aggregate(self, records: Sequence[dict[str, Any]], seed: int) -> dict[str, MetricValue]:
        """Metrics with 95% CIs over the records; tasks may add breakdowns (per category)."""
        return summarize_all(self.metrics(), records, seed)

    def artifacts(self, records: Sequence[dict[str, Any]], folder: Path) -> list[str]:
        """Files (plots, trajectories) written into the run folder; names are returned."""
        return []

    def protocol(self) -> dict[str, Any]:
        """What a reader needs to know to compare this number with others (recorded)."""
        return {"description": self.summary()}


TASKS: Registry[type[Task]] = Registry("task", "tasks", "harness.tasks")


def register_task(name: str):
    return TASKS.register(name)


# Any lm-eval task as a harness task; the adapter lives with the tasks and imports lm-eval
# only when such a task is asked for.
TASKS.register_prefix("lm-eval:", "tasks.lm_eval:resolve_task")
