"""Scoring each distinct text once, against scoring every text asked for, in one process on the
same posts: LIME and KernelSHAP explanations (``LabelClassifier.words_function`` remembers the
texts an explanation has scored) and the faithfulness task's evaluation plan (``Faithfulness.evaluate``
scores each distinct perturbed text of a chunk once). Prints seconds, texts scored, the ratio
and the largest difference in a word score or probability.

    HARNESS_DATA_DIR=../shared/data python benchmarks/bench_distinct_texts.py [--model smollm2-135m-instruct] [--posts 4]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from harness.api import AttributeRequest, AttributeResult  # noqa: E402
from harness.attribution import LabelClassifier  # noqa: E402
from harness.data import DataStore  # noqa: E402
from harness.method import METHODS, Cost, MethodOptions  # noqa: E402
from harness.models import load, resolve  # noqa: E402
from tasks.faithfulness import PROMPTS, Faithfulness, FaithfulnessConfig, hatexplain_docs  # noqa: E402


def every_text(classifier: LabelClassifier) -> Callable[[AttributeRequest, int], Callable[[torch.Tensor], torch.Tensor]]:
    """``words_function`` as before: every mask's text scored, repeats included."""

    def words_function(request: AttributeRequest, target: int) -> Callable[[torch.Tensor], torch.Tensor]:
        def probability(masks: torch.Tensor) -> torch.Tensor:
            encoded = [classifier.encode(request, [bool(v) for v in mask.tolist()]) for mask in masks.reshape(masks.shape[0], -1)]
            return torch.tensor([p[target] for p in classifier.probabilities(encoded)])

        return probability

    return words_function


def timed(run: Callable[[], list[list[float]]], classifier: LabelClassifier) -> tuple[float, list[list[float]], int]:
    classifier.cost = Cost()
    start = time.perf_counter()
    out = run()
    return time.perf_counter() - start, out, classifier.cost.tokens_processed


def largest_difference(a: list[list[float]], b: list[list[float]]) -> float:
    return max(abs(x - y) for row_a, row_b in zip(a, b, strict=True) for x, y in zip(row_a, row_b, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--posts", type=int, default=4)
    args = parser.parse_args()
    task = Faithfulness(FaithfulnessConfig(dataset="hatexplain"))
    docs = hatexplain_docs(DataStore())[0][: args.posts]
    loaded = load(resolve(args.model))
    template, labels, _ = PROMPTS["hatexplain"]
    requests = [AttributeRequest(tuple(doc.data["words"]), template, labels) for doc in docs]
    print(f"{args.model}: {len(docs)} HateXplain posts, {sum(len(d.data['words']) for d in docs)} words")
    print(f"{'workload':<28}{'seconds':>9}{'tokens':>9}{'  seconds':>10}{'tokens':>9}{'speed-up':>10}{'max diff':>10}")
    for name in ("kernel-shap", "lime"):
        method = METHODS.get(name)(loaded, METHODS.get(name).Args(), MethodOptions(seed=0, show_progress=False))
        classifier = method.classifier
        explain = lambda method=method: [list(r.word_scores) for r in method.attribute(requests)]  # noqa: E731
        once = timed(explain, classifier)
        remembered = classifier.words_function
        classifier.words_function = every_text(classifier)  # type: ignore[method-assign]
        every = timed(explain, classifier)
        classifier.words_function = remembered  # type: ignore[method-assign]
        print(f"{name + ' explanations':<28}{every[0]:>9.1f}{every[2]:>9}{once[0]:>10.1f}{once[2]:>9}"
              f"{every[0] / once[0]:>9.2f}x{largest_difference(once[1], every[1]):>10.1e}")
    generator = torch.Generator().manual_seed(0)
    plan = []
    for doc in docs:
        scores = tuple(torch.rand(len(doc.data["words"]), generator=generator).tolist())
        plan += [request for _, request in task.perturbations(doc, AttributeResult((0.5, 0.5), 1, scores))]
    scorer = LabelClassifier(loaded, Cost())
    distinct = list(dict.fromkeys(plan))
    # the plan is quick to score: the fastest of three, as the machine is noisy
    every = min((timed(lambda: scorer.probabilities([scorer.encode(r) for r in plan]), scorer) for _ in range(3)), key=lambda t: t[0])
    once = min((timed(lambda: scorer.probabilities([scorer.encode(r) for r in distinct]), scorer) for _ in range(3)), key=lambda t: t[0])
    answer_of = dict(zip(distinct, once[1], strict=True))
    print(f"{'evaluation plan':<28}{every[0]:>9.1f}{every[2]:>9}{once[0]:>10.1f}{once[2]:>9}"
          f"{every[0] / once[0]:>9.2f}x{largest_difference([answer_of[r] for r in plan], every[1]):>10.1e}")
    print(f"(left: every text scored; right: each distinct text once. The plan has {len(plan)} texts, {len(distinct)} distinct.)")


if __name__ == "__main__":
    main()
