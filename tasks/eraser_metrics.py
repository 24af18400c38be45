"""ERASER's faithfulness and plausibility metrics (DeYoung et al. 2020; jayded/eraserbenchmark
``rationale_benchmark/metrics.py``, Apache-2.0), computed per item so every number gets a CI.

Faithfulness, for the model's *predicted* class ŷ (ERASER reads ``classification``, the
prediction): comprehensiveness = p(ŷ | x) − p(ŷ | x without the rationale), sufficiency =
p(ŷ | x) − p(ŷ | the rationale alone), averaged over items. AOPC: the same differences with
the top-k% words as the rationale for k in 1, 5, 10, 20, 50%, averaged over those five bins
(the code's plain mean; the 0% point is not included). The top k% of n words is ceil(k·n)
words, at least one (ERASER leaves the rounding to whoever wrote the thresholded scores).

Plausibility against human rationales (word positions):
- token F1: per item the F1 of the predicted hard rationale's words against the gold words,
  averaged over items (``instance_macro``; an item with predictions and no gold gets 0);
- IOU F1 (``partial_match_score`` at 0.5): each predicted span is a true positive when its
  best IoU with a gold span is at least 0.5; per item recall = TP / gold spans and precision =
  TP / predicted spans; the score is the F1 of the mean recall (over items with gold spans) and
  the mean precision (over items with predicted spans), ERASER's ``macro`` averaging;
- AUPRC of the soft word scores: per item the area under the precision-recall curve
  (sklearn's ``precision_recall_curve`` then ``auc``), averaged.
Predicted spans are one word each (HateXplain's protocol: its top-5 tokens become five
one-token spans).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from harness.stats import batched_as

THRESHOLDS = (0.01, 0.05, 0.10, 0.20, 0.50)
IOU_THRESHOLD = 0.5


def top_words(scores: Sequence[float], k: int) -> list[int]:
    """The positions of the ``k`` highest scores (ties: the earlier word first), in text order."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return sorted(order[: max(0, k)])


def bin_size(fraction: float, n_words: int) -> int:
    return min(n_words, max(1, math.ceil(fraction * n_words - 1e-9)))


def without(n_words: int, removed: Sequence[int]) -> list[bool]:
    """A keep-mask with ``removed`` taken out."""
    gone = set(removed)
    return [i not in gone for i in range(n_words)]


def only(n_words: int, kept: Sequence[int]) -> list[bool]:
    chosen = set(kept)
    return [i in chosen for i in range(n_words)]


def token_prf(predicted: Sequence[int], gold: Sequence[int]) -> tuple[float, float, float]:
    """Precision, recall and F1 of one item's predicted word positions against the gold ones."""
    predicted_set, gold_set = set(predicted), set(gold)
    hits = len(predicted_set & gold_set)
    precision = hits / len(predicted_set) if predicted_set else 0.0
    recall = hits / len(gold_set) if gold_set else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def iou_true_positives(predicted: Sequence[tuple[int, int]], gold: Sequence[tuple[int, int]], threshold: float = IOU_THRESHOLD) -> int:
    """Predicted spans (start, end exclusive) whose best IoU with a gold span reaches ``threshold``."""
    hits = 0
    for start, end in predicted:
        best = 0.0
        for gold_start, gold_end in gold:
            overlap = len(set(range(start, end)) & set(range(gold_start, gold_end)))
            union = len(set(range(start, end)) | set(range(gold_start, gold_end)))
            best = max(best, overlap / union if union else 0.0)
        hits += best >= threshold
    return hits


def _macro_iou_f1_batched(recalls: np.ndarray, precisions: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: 0.0, as below
        recall, precision = np.nan_to_num(np.nanmean(recalls, axis=-1)), np.nan_to_num(np.nanmean(precisions, axis=-1))
    total = precision + recall
    return np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total != 0)


@batched_as(_macro_iou_f1_batched)
def macro_iou_f1(recalls: np.ndarray, precisions: np.ndarray) -> float:
    """ERASER's macro IOU F1 from per-item recall (NaN for items without gold spans) and
    precision (NaN for items without predicted spans)."""
    recall = float(np.nanmean(recalls)) if np.isfinite(recalls).any() else 0.0
    precision = float(np.nanmean(precisions)) if np.isfinite(precisions).any() else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def auprc(gold: Sequence[int], scores: Sequence[float]) -> float:
    """Area under one item's precision-recall curve of soft word scores against the gold words."""
    from sklearn.metrics import auc, precision_recall_curve

    truth = np.zeros(len(scores), dtype=bool)
    truth[list(gold)] = True
    if not truth.any():
        return float("nan")  # no positive class: the curve is undefined (sklearn warns and returns NaN)
    precision, recall, _ = precision_recall_curve(truth, np.asarray(scores, dtype=float))
    return float(auc(recall, precision))


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (NaN when either side is constant or too short)."""
    if len(a) < 2 or len(set(a)) < 2 or len(set(b)) < 2:
        return float("nan")
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)
