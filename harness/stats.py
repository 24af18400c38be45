"""Confidence intervals and paired tests (scipy), over per-sample records.

Proportions get Wilson's score interval; every other metric (means, perplexities as ratios
of sums, F1, calibration errors) a paired bootstrap over samples (BCa up to 1,000 samples,
percentile beyond or where BCa is undefined), except statistics that repeated samples bias
(distinct-n), which get a delete-one jackknife interval. Comparisons of two runs resample and permute the shared samples as pairs.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import numpy as np
from scipy import stats as scipy_stats

from harness import progress
from harness.api import Metric

CONFIDENCE = 0.95
N_BOOTSTRAP = 2000
N_PERMUTATIONS = 9999
BCA_MAX_N = 1000

Statistic = TypeVar("Statistic", bound=Callable[..., float])
# Statistics with a batched form (the same statistic over the last axis of arrays shaped
# (resamples, n)): the paired permutation test then scores its 9,999 resamples in a few numpy
# calls instead of one Python call each; the site's 300 paper claims took five minutes unbatched.
BATCHED: dict[Callable[..., float], Callable[..., np.ndarray]] = {}


def batched_as(batched: Callable[..., np.ndarray]) -> Callable[[Statistic], Statistic]:
    """Register ``batched`` as the batched form of the decorated statistic."""

    def register(statistic: Statistic) -> Statistic:
        BATCHED[statistic] = batched
        return statistic

    return register


@dataclass(frozen=True)
class MetricValue:
    value: float
    ci_low: float | None
    ci_high: float | None
    n: int
    higher_is_better: bool
    ci_method: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    ci = scipy_stats.binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def sign_test(wins: int, losses: int) -> float | None:
    """Two-sided p-value that neither side is preferred, from the pairs one of them won (ties
    left out); None when none was won."""
    return float(scipy_stats.binomtest(wins, wins + losses, 0.5).pvalue) if wins + losses else None


def _finite(x: float) -> bool:
    return x is not None and math.isfinite(x)


def _batch(n: int) -> int:
    """Resamples per batched call: about 4M values per array (32 MB), whatever n is. scipy draws
    the same resamples in any batch size, so this changes no number."""
    return max(1, 4_000_000 // n)


def bootstrap_interval(
    arrays: Sequence[np.ndarray], statistic, seed: int, n_resamples: int = N_BOOTSTRAP,
    batched: Callable[..., np.ndarray] | None = None,
) -> tuple[float | None, float | None, str]:
    """Paired bootstrap CI of ``statistic(*arrays)``; arrays are resampled together (in
    batches through ``batched``, the statistic's batched form, when it has one)."""
    n = len(arrays[0])
    if n < 2:
        return None, None, "none (n<2)"
    point = statistic(*arrays)
    if all(np.all(a == a[0]) for a in arrays):
        return float(point), float(point), "degenerate (all samples equal)"
    # BCa's jackknife costs n statistic calls; past BCA_MAX_N its correction is small and
    # the percentile interval is used.
    for method in ("BCa", "percentile") if n <= BCA_MAX_N else ("percentile",):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = scipy_stats.bootstrap(
                tuple(arrays),
                statistic if batched is None else lambda *resampled, axis=-1: batched(*resampled),
                paired=True,
                vectorized=batched is not None,
                batch=_batch(n),
                n_resamples=n_resamples,
                confidence_level=CONFIDENCE,
                method=method,
                random_state=np.random.default_rng(seed),
            )
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
        if _finite(low) and _finite(high):
            return low, high, f"bootstrap-{method} ({n_resamples} resamples, seed {seed})"
    return _nan_tolerant_percentile(arrays, statistic, seed, n_resamples)


def jackknife_interval(point: float, leave_one_out: np.ndarray) -> tuple[float | None, float | None, str]:
    """Normal interval around ``point`` with the delete-one jackknife's standard error, from the
    statistic recomputed without each sample in turn. For statistics that a bootstrap biases:
    a resample repeats samples, and a pooled unique-over-total ratio (distinct-n) then counts
    every repeat as a duplicate, so its bootstrap interval can lie wholly below the estimate."""
    n = len(leave_one_out)
    if n < 2:
        return None, None, "none (n<2)"
    if not (math.isfinite(point) and np.all(np.isfinite(leave_one_out))):
        return None, None, "none (undefined without some sample)"
    se = math.sqrt((n - 1) / n * float(np.sum((leave_one_out - leave_one_out.mean()) ** 2)))
    z = float(scipy_stats.norm.ppf(0.5 + CONFIDENCE / 2))
    return point - z * se, point + z * se, f"jackknife-normal (delete-one, n={n})"


def _nan_tolerant_percentile(arrays: Sequence[np.ndarray], statistic, seed: int, n_resamples: int) -> tuple[float | None, float | None, str]:
    """Percentile bootstrap over the resamples where the statistic is defined.

    scipy returns nan as soon as one resample is undefined (e.g. a thresholded calibration
    error whose resample has nothing above the threshold); this keeps the defined ones and
    says how many were not.
    """
    rng = np.random.default_rng(seed)
    n = len(arrays[0])
    values = []
    for _ in range(n_resamples):
        index = rng.integers(0, n, n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values.append(float(statistic(*(a[index] for a in arrays))))
    defined = np.asarray([v for v in values if _finite(v)])
    if len(defined) < n_resamples / 2:
        return None, None, f"bootstrap undefined ({n_resamples - len(defined)} of {n_resamples} resamples undefined)"
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.quantile(defined, [alpha, 1 - alpha])
    return float(low), float(high), f"bootstrap-percentile over defined resamples ({n_resamples - len(defined)} of {n_resamples} undefined, seed {seed})"


def field_arrays(metric: Metric, records: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
    return [np.asarray([float(r[f]) for r in records], dtype=np.float64) for f in metric.fields]


def summarize(metric: Metric, records: Sequence[Mapping[str, Any]], seed: int = 0) -> MetricValue:
    usable = [r for r in records if all(r.get(f) is not None for f in metric.fields)]
    n = len(usable)
    if n == 0:
        return MetricValue(float("nan"), None, None, 0, metric.higher_is_better, "none (n=0)")
    arrays = field_arrays(metric, usable)
    value = float(metric.statistic(*arrays))
    if metric.ci == "wilson":
        successes = int(round(arrays[0].sum()))
        wilson_low, wilson_high = wilson_interval(successes, n)
        return MetricValue(value, wilson_low, wilson_high, n, metric.higher_is_better, "wilson")
    low, high, how = bootstrap_interval(arrays, metric.statistic, seed, batched=BATCHED.get(metric.statistic))
    return MetricValue(value, low, high, n, metric.higher_is_better, how)


def summarize_all(metrics: Sequence[Metric], records: Sequence[Mapping[str, Any]], seed: int = 0) -> dict[str, MetricValue]:
    bar = progress.bar(iterable=metrics, desc=f"confidence intervals (n={len(records)})", unit="metric", leave=False,
                       disable=len(metrics) < 4)
    return {m.name: summarize(m, records, seed) for m in bar}


@dataclass(frozen=True)
class PairedComparison:
    metric: str
    n_shared: int
    value_a: float
    value_b: float
    delta: float  # b - a
    delta_ci_low: float | None
    delta_ci_high: float | None
    p_value: float | None
    higher_is_better: bool
    test: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def verdict(self) -> str:
        if self.p_value is None or self.p_value >= 1 - CONFIDENCE:
            return "no significant difference"
        better = (self.delta > 0) == self.higher_is_better
        return "B better" if better else "A better"


def paired_compare(
    metric: Metric,
    records_a: Sequence[Mapping[str, Any]],
    records_b: Sequence[Mapping[str, Any]],
    seed: int = 0,
) -> PairedComparison:
    """Compare a metric between two runs on the samples both scored.

    The delta's CI is a paired bootstrap; the p-value a paired permutation test (each
    sample's two outcomes swapped at random), two-sided, for any statistic.
    """
    by_id_b = {r["doc_id"]: r for r in records_b}
    pairs = [
        (a, by_id_b[a["doc_id"]])
        for a in records_a
        if a["doc_id"] in by_id_b and all(a.get(f) is not None and by_id_b[a["doc_id"]].get(f) is not None for f in metric.fields)
    ]
    n = len(pairs)
    if n == 0:
        nan = float("nan")
        return PairedComparison(metric.name, 0, nan, nan, nan, None, None, None, metric.higher_is_better, "none (no shared samples)")
    arrays_a = field_arrays(metric, [a for a, _ in pairs])
    arrays_b = field_arrays(metric, [b for _, b in pairs])
    k = len(arrays_a)
    value_a, value_b = float(metric.statistic(*arrays_a)), float(metric.statistic(*arrays_b))

    batched = BATCHED.get(metric.statistic)

    def delta_stat(*arrays: np.ndarray) -> float:
        return float(metric.statistic(*arrays[k:]) - metric.statistic(*arrays[:k]))

    def batched_delta(*arrays: np.ndarray) -> np.ndarray:
        assert batched is not None
        return batched(*arrays[k:]) - batched(*arrays[:k])

    low, high, _ = bootstrap_interval(arrays_a + arrays_b, delta_stat, seed, batched=batched_delta if batched else None)
    table = [np.concatenate([a, b]) for a, b in zip(arrays_a, arrays_b, strict=True)]

    def permuted_delta(index_a: np.ndarray, index_b: np.ndarray, axis: int = -1) -> float | np.ndarray:
        ia, ib = index_a.astype(int), index_b.astype(int)
        if batched is not None:  # index arrays shaped (resamples, n); scipy always passes axis=-1
            return batched(*(t[ib] for t in table)) - batched(*(t[ia] for t in table))
        return float(metric.statistic(*(t[ib] for t in table)) - metric.statistic(*(t[ia] for t in table)))

    if n < 2 or all(np.array_equal(a, b) for a, b in zip(arrays_a, arrays_b, strict=True)):
        p_value = 1.0
    else:
        result = scipy_stats.permutation_test(
            (np.arange(n, dtype=float), np.arange(n, 2 * n, dtype=float)),
            permuted_delta,
            permutation_type="samples",
            vectorized=batched is not None,
            batch=_batch(2 * n),
            n_resamples=N_PERMUTATIONS,
            alternative="two-sided",
            random_state=np.random.default_rng(seed),
        )
        p_value = float(result.pvalue)
    return PairedComparison(
        metric.name, n, value_a, value_b, value_b - value_a, low, high, p_value, metric.higher_is_better,
        f"paired bootstrap CI; paired permutation test ({N_PERMUTATIONS} resamples, seed {seed})",
    )


# statistics shared by tasks ----------------------------------------------------------------
def _ratio_of_sums_batched(numerators: np.ndarray, denominators: np.ndarray) -> np.ndarray:
    totals = denominators.sum(axis=-1)
    return np.divide(numerators.sum(axis=-1), totals, out=np.full_like(totals, np.nan), where=totals != 0)


@batched_as(_ratio_of_sums_batched)
def ratio_of_sums(numerators: np.ndarray, denominators: np.ndarray) -> float:
    """sum(a) / sum(b): a rate over pooled counts (invalid actions per step, say); NaN when b sums to 0."""
    total = float(denominators.sum())
    return float(numerators.sum()) / total if total else float("nan")


@batched_as(lambda values: values.mean(axis=-1))
def mean(values: np.ndarray) -> float:
    return float(np.mean(values))


@batched_as(lambda logprobs, units: np.exp(-logprobs.sum(axis=-1) / units.sum(axis=-1)))
def perplexity(logprobs: np.ndarray, units: np.ndarray) -> float:
    """exp(-sum log p / sum units): word, byte or token perplexity over the pooled samples."""
    return float(np.exp(-np.sum(logprobs) / np.sum(units)))


def bits_per_unit(logprobs: np.ndarray, units: np.ndarray) -> float:
    return float(-np.sum(logprobs) / np.sum(units) / math.log(2))


def macro_f1(predicted: np.ndarray, gold: np.ndarray, n_classes: int) -> float:
    """Macro-F1 over ``n_classes`` integer labels; a class absent from both scores 0."""
    scores = []
    for label in range(n_classes):
        tp = float(np.sum((predicted == label) & (gold == label)))
        fp = float(np.sum((predicted == label) & (gold != label)))
        fn = float(np.sum((predicted != label) & (gold == label)))
        denominator = 2 * tp + fp + fn
        scores.append(2 * tp / denominator if denominator else 0.0)
    return float(np.mean(scores))
