"""Plots saved as run artifacts (matplotlib, headless): PNG for a quick look, SVG for pages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness import calibration


def reliability_diagram(
    groups: Mapping[str, Sequence[Mapping[str, Any]]],
    confidence_field: str,
    correct_field: str,
    stem: Path,
    bins: int = calibration.DEFAULT_BINS,
    title: str = "Reliability diagram",
) -> list[str]:
    """One panel per group: accuracy per equal-width confidence bin against the diagonal,
    bar width by bin, with each bin's sample count; ECE in the panel title. Returns the
    file names written (``<stem>.png`` and ``<stem>.svg``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name, records in groups.items() if records]
    figure, axes = plt.subplots(1, max(1, len(names)), figsize=(3.2 * max(1, len(names)), 3.4), squeeze=False)
    for axis, name in zip(axes[0], names, strict=False):
        usable = [r for r in groups[name] if r.get(confidence_field) is not None]
        confidence = [r[confidence_field] for r in usable]
        correct = [r[correct_field] for r in usable]
        width = 1 / bins
        axis.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
        if usable:
            for b, (n, accuracy, _) in enumerate(calibration.equal_width_bins(confidence, correct, bins)):
                if n:
                    axis.bar(b * width, accuracy, width=width, align="edge", color="#4c72b0", edgecolor="white")
                    axis.text(b * width + width / 2, min(accuracy, 0.92) + 0.03, str(n), ha="center", fontsize=6)
            axis.set_title(f"{name} (n={len(usable)}, ECE {100 * calibration.ece(confidence, correct, bins):.1f}%)", fontsize=8)
        else:
            axis.set_title(f"{name} (no parsed answers)", fontsize=8)
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.set_xlabel("stated confidence", fontsize=8)
        axis.set_ylabel("fraction correct", fontsize=8)
        axis.tick_params(labelsize=7)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix in (".png", ".svg"):
        figure.savefig(stem.with_suffix(suffix), dpi=120)
        written.append(stem.with_suffix(suffix).name)
    plt.close(figure)
    return written
