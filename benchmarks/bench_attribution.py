"""Label-word classification for attribution (``harness.attribution.LabelClassifier``) with
labels sharing a row (the prompt extended by each label's prefix: one row per input when every
label is one token) against one row per label, in one process on the same texts: seconds each,
the ratio, and the largest difference in a label probability.

The workload is what the faithfulness task and the perturbation methods score: every
leave-one-out variant of the first ``--posts`` HateXplain test posts (the ones the task keeps),
with the task's prompt and labels.

    HARNESS_DATA_DIR=../shared/data python benchmarks/bench_attribution.py [--model smollm2-135m-instruct] [--posts 8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.api import AttributeRequest  # noqa: E402
from harness.attribution import EncodedInput, LabelClassifier  # noqa: E402
from harness.data import DataStore  # noqa: E402
from harness.method import Cost  # noqa: E402
from harness.models import load, resolve  # noqa: E402
from tasks.faithfulness import PROMPTS, hatexplain_docs  # noqa: E402


def one_row_per_label(encoded: EncodedInput) -> list[tuple[tuple[int, ...], list[int]]]:
    """The layout before rows were shared: each label scored in a row of its own."""
    return [(label[:-1], [k]) for k, label in enumerate(encoded.labels)]


def timed(classifier: LabelClassifier, encoded: list[EncodedInput], repeats: int) -> tuple[float, list[list[float]], int]:
    best, out, tokens = float("inf"), [], 0
    for _ in range(repeats):
        classifier.cost = Cost()
        start = time.perf_counter()
        out = classifier.probabilities(encoded)
        best = min(best, time.perf_counter() - start)
        tokens = classifier.cost.tokens_processed
    return best, out, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--posts", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    template, labels, _ = PROMPTS["hatexplain"]
    docs = hatexplain_docs(DataStore())[0][: args.posts]
    loaded = load(resolve(args.model))
    classifier = LabelClassifier(loaded, Cost())
    requests = [AttributeRequest(tuple(w for j, w in enumerate(doc.data["words"]) if j != i), template, labels)
                for doc in docs for i in range(len(doc.data["words"]))]
    encoded = [classifier.encode(request) for request in requests]
    shared_seconds, shared, shared_tokens = timed(classifier, encoded, args.repeats)
    classifier.label_rows = one_row_per_label  # type: ignore[method-assign]
    apart_seconds, apart, apart_tokens = timed(classifier, encoded, args.repeats)
    difference = max(abs(a - b) for x, y in zip(shared, apart, strict=True) for a, b in zip(x, y, strict=True))
    print(f"{args.model}: {len(requests)} texts from {len(docs)} posts, labels {labels}")
    print(f"{'layout':<20}{'seconds':>9}{'texts/s':>9}{'tokens':>9}")
    print(f"{'one row per label':<20}{apart_seconds:>9.2f}{len(requests) / apart_seconds:>9.1f}{apart_tokens:>9}")
    print(f"{'labels share a row':<20}{shared_seconds:>9.2f}{len(requests) / shared_seconds:>9.1f}{shared_tokens:>9}")
    print(f"speed-up {apart_seconds / shared_seconds:.2f}x; largest probability difference {difference:.2e}")


if __name__ == "__main__":
    main()
