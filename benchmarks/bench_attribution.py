"""Label-word classification for attribution (``harness.attribution.LabelClassifier``) as it
scores now (labels sharing a row: the prompt extended by each label's prefix, one row per input
when every label is one token; rows batched longest first) against the layout before (a row per
label, batched in request order), in one process on the same texts: seconds each, the ratio,
and the largest difference in a label probability.

The workload is what the faithfulness task scores after each explanation: for the first
``--posts`` HateXplain test posts (the ones the task keeps), the comprehensiveness, sufficiency
and AOPC texts of a random ranking of the words, and every leave-one-out text, in the task's
order, with its prompt and labels.

    HARNESS_DATA_DIR=../shared/data python benchmarks/bench_attribution.py [--model smollm2-135m-instruct] [--posts 8]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from harness.api import AttributeResult  # noqa: E402
from harness.attribution import EncodedInput, LabelClassifier  # noqa: E402
from harness.data import DataStore  # noqa: E402
from harness.method import Cost  # noqa: E402
from harness.models import load, resolve  # noqa: E402
from tasks.faithfulness import Faithfulness, FaithfulnessConfig, hatexplain_docs  # noqa: E402


def layout_before(classifier: LabelClassifier) -> None:
    """Each label scored in a row of its own, the rows batched in request order."""

    def label_scores(prompts: Sequence[torch.Tensor], encoded: Sequence[EncodedInput]) -> list[torch.Tensor]:
        out = []
        for start in range(0, len(prompts), classifier.batch_rows // 2):
            items, chunk = encoded[start : start + classifier.batch_rows // 2], prompts[start : start + classifier.batch_rows // 2]
            rows = [torch.cat([p, classifier.embedding(torch.tensor(label[:-1], dtype=torch.long))]) for p, item in zip(chunk, items, strict=True)
                    for label in item.labels]
            scores = classifier.score_rows(rows, [[label] for item in items for label in item.labels])
            at = 0
            for item in items:
                out.append(torch.cat(scores[at : at + len(item.labels)]))
                at += len(item.labels)
        return out

    classifier.label_scores = label_scores  # type: ignore[method-assign]


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
    task = Faithfulness(FaithfulnessConfig(dataset="hatexplain"))
    docs = hatexplain_docs(DataStore())[0][: args.posts]
    generator = torch.Generator().manual_seed(0)
    requests = []
    for doc in docs:
        scores = tuple(torch.rand(len(doc.data["words"]), generator=generator).tolist())
        requests += [request for _, request in task.perturbations(doc, AttributeResult((0.5, 0.5), 1, scores))]
    classifier = LabelClassifier(load(resolve(args.model)), Cost())
    encoded = [classifier.encode(request) for request in requests]
    shared_seconds, shared, shared_tokens = timed(classifier, encoded, args.repeats)
    layout_before(classifier)
    apart_seconds, apart, apart_tokens = timed(classifier, encoded, args.repeats)
    difference = max(abs(a - b) for x, y in zip(shared, apart, strict=True) for a, b in zip(x, y, strict=True))
    print(f"{args.model}: {len(requests)} texts from {len(docs)} posts, labels {requests[0].labels}")
    print(f"{'layout':<34}{'seconds':>9}{'texts/s':>9}{'tokens':>9}")
    print(f"{'a row per label, request order':<34}{apart_seconds:>9.2f}{len(requests) / apart_seconds:>9.1f}{apart_tokens:>9}")
    print(f"{'labels share a row, longest first':<34}{shared_seconds:>9.2f}{len(requests) / shared_seconds:>9.1f}{shared_tokens:>9}")
    print(f"speed-up {apart_seconds / shared_seconds:.2f}x; largest probability difference {difference:.2e}")


if __name__ == "__main__":
    main()
