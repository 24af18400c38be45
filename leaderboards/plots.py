"""Leaderboard plots (matplotlib, SVG text): metric bars with CIs for every task, bars per
breakdown group (UBench categories, TextWorld levels: metrics named ``metric/group``), and
perplexity against input length for streaming tasks whose samples carry token counts.

Tasks with a plot a reader would rather look at than a table register it in ``TASK_PLOTS``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from reports.catalog import RunEntry  # noqa: E402

Plot = tuple[str, str]  # (title, svg text)


def to_svg(figure: Figure) -> str:
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "harness"}):
        # No date in the metadata: the same runs give the same bytes (the committed site is
        # checked against a rebuild).
        figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(figure)
    return buffer.getvalue()


def _label(e: RunEntry) -> str:
    return e.system if e.variant == "default" else f"{e.system} [{e.variant}]"


def metric_bars(entries: Sequence[RunEntry], metric: str) -> Figure | None:
    """One bar per run with its 95% CI; the best run is drawn darker."""
    points = [(e, e.metrics[metric]) for e in entries if metric in e.metrics and _finite(e.metrics[metric].get("value"))]
    if not points:
        return None
    higher = bool(points[0][1].get("higher_is_better", True))
    points.sort(key=lambda p: p[1]["value"], reverse=not higher)  # best at the top
    figure, axes = plt.subplots(figsize=(7, 0.45 * len(points) + 1.2))
    values = [p[1]["value"] for p in points]
    errors = [[_gap(p[1]["value"], p[1].get("ci_low")) for p in points], [_gap(p[1].get("ci_high"), p[1]["value"]) for p in points]]
    colors = ["#1f5fa8" if i == 0 else "#8fb3dc" for i in range(len(points))]
    axes.barh(range(len(points)), values, xerr=errors, color=colors, capsize=3)
    axes.set_yticks(range(len(points)), [_label(p[0]) for p in points], fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel(f"{metric} ({'higher' if higher else 'lower'} is better; bars: 95% CI)")
    axes.grid(axis="x", alpha=0.3)
    return figure


def breakdown_bars(entries: Sequence[RunEntry], metric: str) -> Figure | None:
    """The metric per breakdown group (``metric/group``), one bar series per run."""
    groups = sorted({name.split("/", 1)[1] for e in entries for name in e.metrics if name.startswith(metric + "/")})
    runs = [e for e in entries if any(f"{metric}/{g}" in e.metrics for g in groups)]
    if not groups or not runs:
        return None
    figure, axes = plt.subplots(figsize=(max(6.0, 1.2 * len(groups) + 2), 3.6))
    width = 0.8 / len(runs)
    for i, e in enumerate(runs):
        values = [e.metrics.get(f"{metric}/{g}", {}).get("value") for g in groups]
        values = [v if _finite(v) else math.nan for v in values]
        axes.bar([j + i * width for j in range(len(groups))], values, width=width, label=_label(e))
    axes.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))], groups, fontsize=8)
    axes.set_ylabel(metric)
    axes.legend(fontsize=7, loc="best")
    axes.grid(axis="y", alpha=0.3)
    return figure


def perplexity_vs_length(entries: Sequence[RunEntry]) -> Figure | None:
    """Per-document token perplexity against the document's length in tokens."""
    figure, axes = plt.subplots(figsize=(7, 3.8))
    drawn = False
    for e in entries:
        lengths, ppls = [], []
        for record in _samples(e):
            n, logprob = record.get("n_tokens"), record.get("logprob")
            if n and logprob is not None:
                lengths.append(n)
                ppls.append(math.exp(-logprob / n))
        if lengths:
            axes.scatter(lengths, ppls, s=10, alpha=0.7, label=_label(e))
            drawn = True
    if not drawn:
        plt.close(figure)
        return None
    axes.set_xscale("log")
    axes.set_xlabel("input length (tokens)")
    axes.set_ylabel("token perplexity")
    axes.legend(fontsize=7)
    axes.grid(alpha=0.3)
    return figure


def _samples(e: RunEntry) -> list[dict]:
    from harness.store import RunDir

    return RunDir(e.path).samples()


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _gap(a: float | None, b: float | None) -> float:
    return abs(a - b) if _finite(a) and _finite(b) else 0.0


TASK_PLOTS: dict[str, list[tuple[str, Callable[[Sequence[RunEntry]], Figure | None]]]] = {
    "wikitext103": [("Perplexity vs input length", perplexity_vs_length)],
    "pg19": [("Perplexity vs input length", perplexity_vs_length)],
}


def task_plots(task: str, entries: Sequence[RunEntry]) -> list[Plot]:
    """Every plot for one task's section, as (title, SVG)."""
    plots: list[Plot] = []
    main = entries[0].main_metric
    for title, figure in [
        (f"{main} by run", metric_bars(entries, main)),
        (f"{main} by group", breakdown_bars(entries, main)),
        *[(title, make(entries)) for title, make in TASK_PLOTS.get(task, [])],
    ]:
        if figure is not None:
            plots.append((title, to_svg(figure)))
    return plots
