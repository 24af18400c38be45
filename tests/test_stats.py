from __future__ import annotations

import math

import numpy as np
import pytest

from harness.api import Metric
from harness.stats import bits_per_unit, macro_f1, mean, paired_compare, perplexity, summarize, wilson_interval


def test_wilson_matches_hand_computation():
    # p = 0.4, n = 20, z = 1.959964: centre (p + z²/2n)/(1 + z²/n), half-width z/(1+z²/n)·sqrt(p(1-p)/n + z²/4n²)
    z = 1.959963984540054
    p, n = 0.4, 20
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low, high = wilson_interval(8, 20)
    assert low == pytest.approx(centre - half, abs=1e-9)
    assert high == pytest.approx(centre + half, abs=1e-9)


def test_perplexity_is_pooled_not_averaged():
    logprobs = np.array([-10.0, -30.0])
    words = np.array([10.0, 10.0])
    assert perplexity(logprobs, words) == pytest.approx(math.exp(2.0))
    assert bits_per_unit(logprobs, words) == pytest.approx(2.0 / math.log(2))


def test_macro_f1_hand_case():
    gold = np.array([0, 0, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 0])
    # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp1 fn0 -> 0.8; class 2: tp0 fp0 fn1 -> 0
    assert macro_f1(pred, gold, 3) == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def _records(values, field="x"):
    return [{"doc_id": str(i), field: v} for i, v in enumerate(values)]


def test_bootstrap_ci_brackets_the_mean_and_is_seeded():
    rng = np.random.default_rng(1)
    records = _records(rng.normal(5, 1, size=200).tolist())
    metric = Metric("m", True, ("x",), mean)
    first, second = summarize(metric, records, seed=3), summarize(metric, records, seed=3)
    assert first == second
    assert first.ci_low < first.value < first.ci_high
    assert 4.6 < first.ci_low and first.ci_high < 5.4


def test_degenerate_and_tiny_samples():
    metric = Metric("m", True, ("x",), mean)
    same = summarize(metric, _records([1.0] * 5))
    assert (same.ci_low, same.ci_high) == (1.0, 1.0)
    single = summarize(metric, _records([3.0]))
    assert single.value == 3.0 and single.ci_low is None
    empty = summarize(metric, [])
    assert empty.n == 0 and math.isnan(empty.value)


def test_paired_compare_detects_a_real_difference_and_not_a_null_one():
    metric = Metric("acc", True, ("correct",), mean, ci="wilson")
    a = _records([1] * 40 + [0] * 60, "correct")
    b = _records([1] * 90 + [0] * 10, "correct")
    result = paired_compare(metric, a, b)
    assert result.n_shared == 100 and result.delta == pytest.approx(0.5)
    assert result.p_value < 0.001 and result.verdict == "B better"
    assert result.delta_ci_low > 0.3
    same = paired_compare(metric, a, a)
    assert same.delta == 0 and same.p_value == 1.0 and same.verdict == "no significant difference"


def test_paired_compare_uses_only_shared_samples():
    metric = Metric("acc", True, ("correct",), mean)
    a = _records([1, 0, 1], "correct")
    b = [{"doc_id": "1", "correct": 1}, {"doc_id": "9", "correct": 0}]
    assert paired_compare(metric, a, b).n_shared == 1


def test_bootstrap_keeps_the_defined_resamples_of_a_sometimes_undefined_statistic():
    values = np.array([0.9] * 2 + [0.2] * 18)  # about 12% of resamples hold no value above 0.5

    def mean_above_half(x: np.ndarray) -> float:
        kept = x[x > 0.5]
        return float(kept.mean()) if len(kept) else float("nan")

    metric = Metric("m", False, ("x",), mean_above_half)
    result = summarize(metric, _records(values.tolist()))
    assert result.value == pytest.approx(0.9)
    assert result.ci_low == pytest.approx(0.9) and result.ci_high == pytest.approx(0.9)
    assert "undefined" in result.ci_method


def _statistic_records(statistic, n: int, shift: float, rng: np.random.Generator) -> list[dict]:
    """Records for one statistic: normal values; for two-field statistics small counts (zero
    denominators included) or log probabilities over token counts; every 4th item NaN where
    the statistic skips NaNs."""
    from harness import stats

    k = statistic.__code__.co_argcount
    rows = []
    for i in range(n):
        if statistic is stats.perplexity:
            values = [-abs(float(rng.normal(shift, 1.0))) * 5, float(rng.integers(1, 6))]
        elif k == 2:
            values = [float(rng.integers(0, 3)), float(rng.integers(0, 3))]
        else:
            values = [float(rng.normal(shift, 1.0))]
        if i % 4 == 1 and statistic.__name__ in ("_nanmean", "macro_iou_f1"):
            values[0] = float("nan")
        rows.append({"doc_id": str(i), **{f"f{j}": v for j, v in enumerate(values)}})
    return rows


def _batched_statistics():
    import tasks.faithfulness  # noqa: F401  (registers its statistics)
    from harness import stats

    return list(stats.BATCHED)


@pytest.mark.parametrize("statistic", _batched_statistics(), ids=lambda s: s.__name__)
@pytest.mark.parametrize("n", [5, 60])  # 5: scipy enumerates every pairing; 60: random resamples
def test_batched_statistics_give_the_unbatched_tests(statistic, n, monkeypatch):
    """Each registered batched form: row by row the statistic itself, and the same p-value and
    CIs as one call per resample."""
    from harness import stats

    rng = np.random.default_rng(n)
    fields = tuple(f"f{j}" for j in range(statistic.__code__.co_argcount))
    resamples = [_statistic_records(statistic, n, 0.0, rng) for _ in range(4)]
    by_field = [np.asarray([[r[f] for r in rows] for rows in resamples]) for f in fields]
    np.testing.assert_allclose(stats.BATCHED[statistic](*by_field),
                               [statistic(*(np.asarray([r[f] for r in rows]) for f in fields)) for rows in resamples], rtol=1e-12)

    metric = Metric("m", True, fields, statistic)
    a, b = _statistic_records(statistic, n, 0.0, rng), _statistic_records(statistic, n, 0.4, rng)
    batched, batched_ci = paired_compare(metric, a, b, seed=3), summarize(metric, b, seed=3)
    monkeypatch.setattr(stats, "BATCHED", {})
    unbatched, unbatched_ci = paired_compare(metric, a, b, seed=3), summarize(metric, b, seed=3)
    assert batched.p_value == pytest.approx(unbatched.p_value, abs=1e-12)
    # Equal to the last bits or so: nanmean over an axis sums in another order than over a 1-D slice.
    assert [batched.delta_ci_low, batched.delta_ci_high] == pytest.approx([unbatched.delta_ci_low, unbatched.delta_ci_high], rel=1e-12)
    assert batched_ci.ci_method == unbatched_ci.ci_method
    assert [batched_ci.ci_low, batched_ci.ci_high] == pytest.approx([unbatched_ci.ci_low, unbatched_ci.ci_high], rel=1e-12)


def test_every_shared_statistic_has_a_batched_form():
    from harness import stats

    assert {stats.mean, stats.ratio_of_sums, stats.perplexity} <= set(stats.BATCHED)
