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


@pytest.mark.parametrize("n", [5, 60])  # 5: scipy enumerates every pairing; 60: random resamples
def test_batched_statistics_give_the_unbatched_permutation_test(n, monkeypatch):
    """Each registered batched form: the same p-value and CIs as one call per resample,
    on data with NaNs (items a statistic skips) and zero denominators."""
    import tasks.faithfulness  # noqa: F401  (registers its statistics)
    from harness import stats

    rng = np.random.default_rng(n)
    assert len(stats.BATCHED) >= 5
    for statistic in list(stats.BATCHED):
        k = statistic.__code__.co_argcount
        fields = tuple(f"f{i}" for i in range(k))

        def records(shift: float) -> list[dict]:
            rows = []
            for i in range(n):
                values = {f: float(rng.normal(shift, 1.0)) for f in fields}
                if k == 2 and statistic is not stats.perplexity:
                    values = {fields[0]: float(rng.integers(0, 3)), fields[1]: float(rng.integers(0, 3))}
                if statistic is stats.perplexity:
                    values = {fields[0]: -abs(values[fields[0]]) * 5, fields[1]: float(rng.integers(1, 6))}
                if i % 4 == 1 and statistic.__name__ in ("_nanmean", "macro_iou_f1"):
                    values[fields[0]] = float("nan")
                rows.append({"doc_id": str(i), **values})
            return rows

        metric = Metric("m", True, fields, statistic)
        a, b = records(0.0), records(0.4)
        rows = [[[r[f] for r in records(0.0)] for f in fields] for _ in range(4)]  # 4 resamples × fields × n
        by_field = [np.asarray([row[i] for row in rows]) for i in range(k)]
        np.testing.assert_allclose(stats.BATCHED[statistic](*by_field), [statistic(*map(np.asarray, row)) for row in rows],
                                   rtol=1e-12, err_msg=statistic.__name__)
        batched, batched_ci = paired_compare(metric, a, b, seed=3), summarize(metric, b, seed=3)
        monkeypatch.setattr(stats, "BATCHED", {})
        unbatched, unbatched_ci = paired_compare(metric, a, b, seed=3), summarize(metric, b, seed=3)
        monkeypatch.undo()
        # Equal to the last bits or so: nanmean over an axis sums in another order than over a 1-D slice.
        assert batched_ci.ci_method == unbatched_ci.ci_method
        assert [batched_ci.ci_low, batched_ci.ci_high] == pytest.approx([unbatched_ci.ci_low, unbatched_ci.ci_high], rel=1e-12)
        assert batched.p_value == pytest.approx(unbatched.p_value, abs=1e-12), statistic.__name__
        assert [batched.delta_ci_low, batched.delta_ci_high] == pytest.approx([unbatched.delta_ci_low, unbatched.delta_ci_high], rel=1e-12)
