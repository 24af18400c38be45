"""Paired comparisons and bootstrap CIs with and without the statistics' batched forms
(``harness.stats.BATCHED``), in one process on the same synthetic records: seconds each and the
ratio, and whether the numbers agree. The site build spends most of its time here (a paired
bootstrap and a 9,999-resample permutation test per claim and metric).

    python benchmarks/bench_stats.py [--n 50 300 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from harness import stats  # noqa: E402
from harness.api import Metric  # noqa: E402
from tasks import eraser_metrics  # noqa: E402

METRICS = [Metric("mean", True, ("x",), stats.mean),
           Metric("macro_iou_f1", True, ("recall", "precision"), eraser_metrics.macro_iou_f1)]


def records(n: int, shift: float, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        recall = float(rng.uniform()) if i % 5 else float("nan")
        rows.append({"doc_id": str(i), "x": float(rng.normal(shift, 1.0)), "recall": recall, "precision": float(rng.uniform())})
    return rows


def timed(metric: Metric, a: list[dict], b: list[dict], repeats: int) -> tuple[float, tuple]:
    best, numbers = float("inf"), ()
    for _ in range(repeats):
        start = time.perf_counter()
        compared, summary = stats.paired_compare(metric, a, b, seed=0), stats.summarize(metric, b, seed=0)
        best = min(best, time.perf_counter() - start)
        numbers = (compared.p_value, compared.delta_ci_low, compared.delta_ci_high, summary.ci_low, summary.ci_high)
    return best, numbers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[50, 300, 1000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    batched_forms = dict(stats.BATCHED)
    print(f"{'metric':<14}{'n':>6}{'batched s':>11}{'one call s':>12}{'ratio':>8}  same numbers")
    for metric in METRICS:
        for n in args.n:
            a, b = records(n, 0.0, 1), records(n, 0.2, 2)
            stats.BATCHED.clear()
            stats.BATCHED.update(batched_forms)
            fast, fast_numbers = timed(metric, a, b, args.repeats)
            stats.BATCHED.clear()
            slow, slow_numbers = timed(metric, a, b, args.repeats)
            same = bool(np.allclose(fast_numbers, slow_numbers, rtol=1e-12, atol=0, equal_nan=True))
            print(f"{metric.name:<14}{n:>6}{fast:>11.3f}{slow:>12.3f}{slow / fast:>7.1f}x  {same}")
    stats.BATCHED.update(batched_forms)


if __name__ == "__main__":
    main()
