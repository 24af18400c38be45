"""Paper specs (``reports/papers/<paper>.yaml``): what a paper reported and how the harness reproduces it.

A spec holds, per table, the paper's reported numbers with the table or figure they come
from (copied from ../shared/PAPERS.md; a number nobody could read stays out), the harness
cells that reproduce the protocol, and the paper's directional claims as checks. This module
parses and validates specs; ``reports.papers`` regenerates them from runs and
``reports.paper_render`` writes the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from harness.config import build, to_dict
from harness.errors import ArgumentError, HarnessError
from reports.catalog import RunEntry

SPECS = Path(__file__).parent / "papers"
Verdict = Literal["supported", "not supported", "not testable yet"]
WIN_TIE = "win_tie"  # claims and table columns read from a judge's paired verdicts (``harness judge``)


@dataclass(frozen=True)
class Cell:
    """One reproducible protocol: a task config × method config, on the listed models."""

    task: str
    method: str = "base"
    task_args: dict[str, Any] = field(default_factory=dict)
    method_args: dict[str, Any] = field(default_factory=dict)
    models: tuple[str, ...] = ("smollm2-135m-instruct",)
    limit: int | None = None
    seed: int = 0
    label: str = ""

    def runnable(self) -> str | None:
        """Why this cell cannot run here, or None when it can."""
        try:
            self.full_task_config()
            self.full_method_args()
        except HarnessError as error:
            return str(error)
        return None

    def full_task_config(self) -> dict[str, Any]:
        from harness.runner import make_task

        return to_dict(make_task(self.task, self.task_args).config)

    def full_method_args(self) -> dict[str, Any]:
        from harness.method import METHODS

        return to_dict(build(METHODS.get(self.method).Args, self.method_args, f"method '{self.method}'"))

    def find(self, entries: Sequence[RunEntry], model: str) -> RunEntry | None:
        """The latest finished run of exactly this protocol on ``model``."""
        if self.runnable() is not None:
            return None
        task_config, method_args = self.full_task_config(), self.full_method_args()
        found = [
            e for e in entries
            if e.task == self.task and e.method == self.method and e.model == model and e.limit == self.limit
            and e.seed == self.seed and e.task_config == task_config and e.method_args == method_args
        ]
        return found[-1] if found else None


@dataclass(frozen=True)
class ReportedRow:
    model: str
    method: str
    values: dict[str, float]
    zoo_model: str | None = None  # set when the paper measured a model the zoo also has


@dataclass(frozen=True)
class Judge:
    """The judge model and its scoring whose published judgments (``harness judge``) a
    ``win_tie`` claim or table column reads."""

    model: str
    scoring: str = "loglikelihood"


@dataclass(frozen=True)
class PaperTable:
    id: str
    title: str
    source: str  # where in the paper the reported numbers come from
    metrics: tuple[str, ...]
    reported: tuple[ReportedRow, ...]
    cells: tuple[Cell, ...]
    tolerance: dict[str, float]
    notes: str = ""
    # A ``win_tie`` column: each row's answers judged by ``judge`` against those of the cell
    # labelled ``judged_against``.
    judge: Judge | None = None
    judged_against: str = ""

    def __post_init__(self) -> None:
        if (WIN_TIE in self.metrics) != (self.judge is not None):
            raise ValueError(f"table {self.id}: a '{WIN_TIE}' column needs 'judged: {{against: <cell label>, model: ..., scoring: ...}}', "
                             "and only it")
        if self.judge is not None and self.against_cell() is None:
            raise ValueError(f"table {self.id}: judged against '{self.judged_against}', which is no cell's label")

    def against_cell(self) -> Cell | None:
        return next((c for c in self.cells if self.judge is not None and c.label == self.judged_against), None)


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    cell: Cell  # the task protocol and models; its method is the baseline's
    treatment: str
    treatment_args: dict[str, Any]
    metric: str
    source: str = ""
    # Task settings that differ for the treatment (e.g. more trials for an agent with memory);
    # the rest of the protocol, the docs and the pairing are the baseline's.
    treatment_task_args: dict[str, Any] = field(default_factory=dict)
    # The treatment's model, one per baseline model, when the method needs its own weights
    # (a trained HMT model against the untouched backbone); default: the baseline's models.
    treatment_models: tuple[str, ...] = ()
    # A claim on metric ``win_tie`` is checked on this judge's judgment of the treatment's
    # answers against the baseline's (``harness judge``, published beside the runs).
    judge: Judge | None = None

    def __post_init__(self) -> None:
        if self.treatment_models and len(self.treatment_models) != len(self.cell.models):
            raise ValueError(f"claim {self.id}: treatment models must pair one-to-one with the baseline's models")
        if (self.metric == WIN_TIE) != (self.judge is not None):
            raise ValueError(f"claim {self.id}: a claim on '{WIN_TIE}' names its judge (judge: {{model: ..., scoring: ...}}), and only it")

    def treatment_cell(self) -> Cell:
        return Cell(task=self.cell.task, method=self.treatment, task_args={**self.cell.task_args, **self.treatment_task_args},
                    method_args=self.treatment_args, models=self.treatment_models or self.cell.models, limit=self.cell.limit,
                    seed=self.cell.seed, label=self.treatment)

    def model_pairs(self) -> list[tuple[str, str]]:
        """(baseline model, treatment model) pairs the claim compares."""
        return list(zip(self.cell.models, self.treatment_cell().models, strict=True))


@dataclass(frozen=True)
class PaperSpec:
    paper: str
    title: str
    citation: str
    protocol: str
    paper_models: tuple[str, ...]
    tables: tuple[PaperTable, ...]
    claims: tuple[Claim, ...]


def _cell(raw: dict[str, Any], where: str) -> Cell:
    known = {"task", "method", "task_args", "method_args", "models", "limit", "seed", "label"}
    unknown = set(raw) - known
    if unknown or "task" not in raw:
        raise ArgumentError(f"{where}: a cell needs 'task' and takes only {', '.join(sorted(known))} (got {', '.join(sorted(raw))})")
    return Cell(task=raw["task"], method=raw.get("method", "base"), task_args=dict(raw.get("task_args") or {}),
                method_args=dict(raw.get("method_args") or {}),
                models=tuple(raw.get("models") or Cell.models), limit=raw.get("limit"), seed=int(raw.get("seed", 0)),
                label=raw.get("label") or raw.get("method", "base"))


def parse_spec(raw: dict[str, Any], name: str) -> PaperSpec:
    try:
        tables = tuple(
            PaperTable(
                id=t["id"], title=t["title"], source=t["source"], metrics=tuple(t["metrics"]),
                reported=tuple(ReportedRow(model=r["model"], method=r.get("method", "base"),
                                           values={k: float(v) for k, v in (r.get("values") or {}).items()},
                                           zoo_model=r.get("zoo_model")) for r in t.get("reported") or []),
                cells=tuple(_cell(c, f"{name}.yaml table {t['id']}") for c in t.get("cells") or []),
                tolerance={k: float(v) for k, v in (t.get("tolerance") or {}).items()}, notes=t.get("notes", ""),
                judge=Judge(t["judged"]["model"], t["judged"].get("scoring", Judge.scoring)) if t.get("judged") else None,
                judged_against=(t.get("judged") or {}).get("against", ""),
            )
            for t in raw.get("tables") or []
        )
        claims = tuple(
            Claim(id=c["id"], text=c["text"], cell=_cell(c["baseline"], f"{name}.yaml claim {c['id']}"),
                  treatment=c["treatment"]["method"], treatment_args=dict(c["treatment"].get("method_args") or {}),
                  metric=c["metric"], source=c.get("source", ""),
                  treatment_task_args=dict(c["treatment"].get("task_args") or {}),
                  treatment_models=tuple(c["treatment"].get("models") or ()),
                  judge=Judge(**c["judge"]) if c.get("judge") else None)
            for c in raw.get("claims") or []
        )
        return PaperSpec(paper=raw["paper"], title=raw["title"], citation=raw["citation"], protocol=raw.get("protocol", ""),
                         paper_models=tuple(raw.get("paper_models") or ()), tables=tables, claims=claims)
    except (KeyError, TypeError, ValueError) as error:
        raise ArgumentError(f"paper spec {name}.yaml is malformed: {type(error).__name__}: {error}") from None


def available() -> list[str]:
    return sorted(p.stem for p in SPECS.glob("*.yaml"))


def load_spec(paper: str, folder: Path = SPECS) -> PaperSpec:
    path = folder / f"{paper}.yaml"
    if not path.is_file():
        import difflib

        close = difflib.get_close_matches(paper, available(), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; papers with a spec: {', '.join(available())}"
        raise ArgumentError(f"no paper spec '{paper}'{hint}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ArgumentError(f"paper spec {path.name} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ArgumentError(f"paper spec {path.name} must be a mapping")
    return parse_spec(raw, paper)
