"""Ad-hoc tables from the run index (``harness table``): data first, rendered second.

The long frame has one row per (run, metric); ``pivot`` lays any two of its label columns out
as rows × columns, and ``render`` writes Markdown, LaTeX, CSV, JSON or HTML with pandas.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import pandas as pd

from harness.errors import ArgumentError
from reports.catalog import RunEntry

LABELS = ("task", "column", "variant", "method", "model", "system", "metric", "seed")
Format = Literal["md", "latex", "csv", "json", "html"]


def long_frame(entries: Sequence[RunEntry], metrics: Sequence[str] = ("main",)) -> pd.DataFrame:
    """One row per run and metric; ``"main"`` stands for each run's own main metric."""
    rows = []
    for e in entries:
        names = [e.main_metric if m == "main" else m for m in metrics]
        for name in dict.fromkeys(names):
            found = e.metrics.get(name)
            if found is None:
                continue
            rows.append({
                "run_id": e.run_id, "task": e.task, "column": e.column, "variant": e.variant,
                "method": e.method_label, "model": e.model, "system": e.system, "seed": e.seed,
                "metric": name, "value": found.get("value"), "ci_low": found.get("ci_low"),
                "ci_high": found.get("ci_high"), "n": found.get("n"),
                "higher_is_better": found.get("higher_is_better"),
                "wall_time_s": e.cost.get("wall_time_s"), "tokens_processed": e.cost.get("tokens_processed"),
                "model_calls": e.cost.get("model_calls"),
            })
    columns = ["run_id", *LABELS, "value", "ci_low", "ci_high", "n", "higher_is_better",
               "wall_time_s", "tokens_processed", "model_calls"]
    return pd.DataFrame(rows, columns=list(dict.fromkeys(columns)))


def format_value(value: float | None, low: float | None = None, high: float | None = None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:.{digits}g}"
    if low is not None and high is not None and not (math.isnan(low) or math.isnan(high)):
        text += f" [{low:.{digits}g}, {high:.{digits}g}]"
    return text


def pivot(frame: pd.DataFrame, rows: str, cols: str, with_ci: bool = False) -> pd.DataFrame:
    """Rows × columns of formatted values. ``rows`` and ``cols`` are labels, or several
    joined by commas; runs that differ in a label left out never share a cell silently."""
    row_labels, col_labels = _labels(rows), _labels(cols)
    if set(row_labels) & set(col_labels):
        raise ArgumentError("table rows and columns must use different labels")
    if frame.empty:
        return pd.DataFrame()
    keys = row_labels + col_labels
    # one row per cell, or the pivot fails: several runs, or one run's several metrics
    sizes = frame.groupby(keys).size()
    if (sizes > 1).any():
        clash = frame.set_index(keys).loc[sizes[sizes > 1].index[0]]
        differing = [label for label in ("metric", "column", "method", "model", "seed", "variant", "task")
                     if label not in keys and clash[label].nunique() > 1]
        what = "several values" if clash["run_id"].nunique() == 1 else "several runs"
        raise ArgumentError(f"{what} fall in one cell (they differ in {', '.join(differing) or 'run'}); "
                            "add that label to --rows or --cols, or filter with --task/--method/--model")
    cells = frame.copy()
    cells["cell"] = [
        format_value(v, lo if with_ci else None, hi if with_ci else None)
        for v, lo, hi in zip(cells["value"], cells["ci_low"], cells["ci_high"], strict=True)
    ]
    table = cells.pivot(index=row_labels, columns=col_labels, values="cell").fillna("–")
    if len(col_labels) == 1:  # keep the order asked for (--metric a,b) or first seen, not A-Z
        table = table[list(dict.fromkeys(cells[col_labels[0]]))]
    if isinstance(table.columns, pd.MultiIndex):
        table.columns = [" / ".join(map(str, c)) for c in table.columns]
    table.columns.name = None
    return table.reset_index()


def _labels(axis: str) -> list[str]:
    labels = [label.strip() for label in axis.split(",") if label.strip()]
    for label in labels:
        if label not in LABELS:
            raise ArgumentError(f"table axis must be one of {', '.join(LABELS)}; got '{label}'")
    if not labels:
        raise ArgumentError("table rows and columns need at least one label each")
    return labels


def render(table: pd.DataFrame, fmt: Format) -> str:
    if fmt == "md":
        return table.to_markdown(index=False)
    if fmt == "latex":
        return table.to_latex(index=False, escape=True)
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt == "json":
        return table.to_json(orient="records", indent=2, force_ascii=False)
    if fmt == "html":
        return table.to_html(index=False, escape=True)
    raise ArgumentError(f"unknown table format '{fmt}'")
