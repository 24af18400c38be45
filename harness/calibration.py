"""Calibration metrics for stated confidences: ECE, MCE, ACE, TACE, Brier, AUROC.

All take ``confidence`` (the model's probability that the judged statement is true, in
[0, 1]) and ``correct`` (1 if it is true, else 0), and return fractions (multiply by 100
for the percentages UBench reports). Hand-written because no maintained library computes
ACE/TACE for binary confidence; the definitions follow Naeini et al. 2015 (ECE, MCE) and
Nixon et al. 2019 (ACE, TACE):

- ECE: ``bins`` equal-width bins over [0, 1]; sum over bins of (bin share) x |accuracy -
  mean confidence|. Empty bins contribute nothing. A confidence of exactly 1.0 falls in
  the last bin.
- MCE: the largest |accuracy - mean confidence| over non-empty equal-width bins.
- ACE: ``bins`` equal-mass bins (edges at the confidence quantiles; equal confidences stay
  in one bin); the unweighted mean over non-empty bins of |accuracy - mean confidence|.
- TACE: ACE over the samples whose confidence is at least ``threshold`` only.
- Brier: mean squared error of confidence against correctness.
- AUROC: how well confidence ranks true above false statements (the Mann-Whitney U from
  scipy's midranks);
  undefined (nan) when only one class is present.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as scipy_stats

DEFAULT_BINS = 10
DEFAULT_TACE_THRESHOLD = 0.1


def _arrays(confidence, correct) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(confidence, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    if p.shape != y.shape:
        raise ValueError("confidence and correct must have the same length")
    if np.any((p < 0) | (p > 1)):
        raise ValueError("confidences must lie in [0, 1]")
    return p, y


def _bin_sums(index: np.ndarray, p: np.ndarray, y: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin count, sum of correctness and sum of confidence (bincount: these run inside
    bootstrap loops, thousands of times per metric)."""
    return (np.bincount(index, minlength=size), np.bincount(index, weights=y, minlength=size),
            np.bincount(index, weights=p, minlength=size))


def _width_index(p: np.ndarray, bins: int) -> np.ndarray:
    return np.minimum((p * bins).astype(int), bins - 1)


def equal_width_bins(confidence, correct, bins: int = DEFAULT_BINS) -> list[tuple[int, float, float]]:
    """(count, accuracy, mean confidence) for each equal-width bin, empty bins as (0, nan, nan)."""
    p, y = _arrays(confidence, correct)
    counts, hits, total = _bin_sums(_width_index(p, bins), p, y, bins)
    return [(int(n), h / n if n else float("nan"), t / n if n else float("nan")) for n, h, t in zip(counts, hits, total, strict=True)]


def ece(confidence, correct, bins: int = DEFAULT_BINS) -> float:
    p, y = _arrays(confidence, correct)
    if len(p) == 0:
        return float("nan")
    _, hits, total = _bin_sums(_width_index(p, bins), p, y, bins)
    return float(np.abs(hits - total).sum() / len(p))


def mce(confidence, correct, bins: int = DEFAULT_BINS) -> float:
    p, y = _arrays(confidence, correct)
    counts, hits, total = _bin_sums(_width_index(p, bins), p, y, bins)
    filled = counts > 0
    return float(np.max(np.abs(hits[filled] - total[filled]) / counts[filled])) if filled.any() else float("nan")


def ace(confidence, correct, bins: int = DEFAULT_BINS) -> float:
    p, y = _arrays(confidence, correct)
    if len(p) == 0:
        return float("nan")
    # Edges at the confidence quantiles; equal confidences always share a bin (splitting a
    # tie across bins would invent miscalibration), so heavy ties give fewer, larger bins.
    inner_edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1))[1:-1])
    index = np.searchsorted(inner_edges, p, side="right")
    counts, hits, total = _bin_sums(index, p, y, len(inner_edges) + 1)
    filled = counts > 0
    return float(np.mean(np.abs(hits[filled] - total[filled]) / counts[filled]))


def tace(confidence, correct, bins: int = DEFAULT_BINS, threshold: float = DEFAULT_TACE_THRESHOLD) -> float:
    p, y = _arrays(confidence, correct)
    keep = p >= threshold
    return ace(p[keep], y[keep], bins)


def brier(confidence, correct) -> float:
    p, y = _arrays(confidence, correct)
    return float(np.mean((p - y) ** 2)) if len(p) else float("nan")


def auroc(confidence, correct) -> float:
    p, y = _arrays(confidence, correct)
    n_positive = int((y == 1).sum())
    n_negative = len(y) - n_positive
    if n_positive == 0 or n_negative == 0:
        return float("nan")
    # Mann-Whitney U from midranks (ties count one half), i.e. the area under the ROC curve.
    ranks = scipy_stats.rankdata(p)
    u = ranks[y == 1].sum() - n_positive * (n_positive + 1) / 2
    return float(u / (n_positive * n_negative))
