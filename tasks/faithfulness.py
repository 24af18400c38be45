"""Faithfulness and plausibility of feature attributions (the explainability survey, Zhao et
al., PAPERS.md §11), as ERASER measures them (``tasks/eraser_metrics.py``).

The run's method is an attribution technique (``methods/attribution.py``); the model classifies
each text zero-shot by label words, the method explains its *predicted* label, and the task
scores the explanation:
- faithfulness: comprehensiveness and sufficiency of the hard rationale (the top
  ``rationale_words`` words, 5 as in HateXplain's protocol), their AOPC over the top 1, 5, 10,
  20 and 50% of words, each perturbed text scored by the same classifier (removed words are
  deleted from the text);
- plausibility, where humans marked rationales: token F1 and IOU F1 of the hard rationale,
  AUPRC of the soft scores;
- the rank correlation (Spearman) of the word scores with leave-one-out's (one deletion per
  word), the model's accuracy on the items, seconds and passes per explanation.
Every explanation (word scores, rationale, perturbed-input probabilities) is in samples.jsonl,
and ``heatmaps.svg`` draws the first items' word scores (gold rationale words underlined).

Data (``dataset=``):
- ``hatexplain`` (default): the official test split in ERASER format
  (``hatexplain/test_eraser_format.jsonl``), posts labelled normal skipped (HateXplain's
  protocol: 1,142 toxic posts), human rationales as shipped (annotator union per HateXplain);
  post text from ``092-HateXplain.csv`` split on whitespace; an evidence span whose words do
  not sit at its offsets is looked up by its words, and a post none of whose spans can be
  placed is dropped (counted in the protocol). Prompt ``"Post: {text}\\nIs this post hateful or
  offensive? Answer:"``, labels " No" / " Yes".
- ``sst2``: the GLUE SST-2 validation sentences (872), faithfulness only. Prompt ``"Review:
  {text}\\nSentiment:"``, labels " negative" / " positive".
- ``movie-reviews``: Pang & Lee's 2,000 polarity reviews (ERASER's Movies documents; their
  rationales are not mirrored), faithfulness only, same prompt as SST-2.
Prompts are plain text (no chat template): the explained probability is the model's own.
"""

from __future__ import annotations

import csv
import html
import io
import json
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from harness.api import AttributeRequest, AttributeResult, Capability, Doc, Metric, dispatch
from harness.data import DataStore
from harness.errors import DataCorruptError
from harness.method import Method
from harness.stats import batched_as, mean
from harness.task import EvalSettings, Task, register_task
from tasks import eraser_metrics as eraser

PROMPTS = {
    "hatexplain": ("Post: {text}\nIs this post hateful or offensive? Answer:", (" No", " Yes"), ("non-toxic", "toxic")),
    "sst2": ("Review: {text}\nSentiment:", (" negative", " positive"), ("negative", "positive")),
    "movie-reviews": ("Review: {text}\nSentiment:", (" negative", " positive"), ("negative", "positive")),
}
HATEXPLAIN = "hatexplain/test_eraser_format.jsonl"
HATEXPLAIN_TEXT = "hatexplain/092-HateXplain.csv"


@dataclass(frozen=True)
class FaithfulnessConfig:
    dataset: Literal["hatexplain", "sst2", "movie-reviews"] = "hatexplain"  # items, and whether human rationales exist
    rationale_words: int = 5  # the hard rationale: the top-k words (HateXplain's protocol: 5)
    loo_correlation: bool = True  # rank correlation with leave-one-out (one more scored text per word)
    heatmap_items: int = 12  # items drawn in heatmaps.svg

    def __post_init__(self) -> None:
        if self.rationale_words < 1:
            raise ValueError("rationale_words must be at least 1")
        if self.heatmap_items < 0:
            raise ValueError("heatmap_items must be 0 or more")


def _align(words: list[str], evidence: dict[str, Any]) -> tuple[int, int] | None:
    """The evidence's word span in ``words``: at its offsets if its words are there, else the
    occurrence of its words nearest to them; None when they are nowhere."""
    start, end, wanted = evidence["start_token"], evidence["end_token"], evidence["text"].split()
    if words[start:end] == wanted:
        return start, end
    found = [i for i in range(len(words) - len(wanted) + 1) if words[i : i + len(wanted)] == wanted] if wanted else []
    if not found:
        return None
    best = min(found, key=lambda i: abs(i - start))
    return best, best + len(wanted)


def hatexplain_docs(data: DataStore) -> tuple[list[Doc], int]:
    """The toxic test posts with their aligned rationale spans, and how many were dropped."""
    texts: dict[str, str] = {}
    with data.file(HATEXPLAIN_TEXT, "hatexplain").open(encoding="utf-8", newline="") as handle:
        for row in csv.reader(handle):
            if row and row[0]:  # the header's first column is empty
                texts[row[0]] = row[1]
    docs, dropped = [], 0
    for line in data.file(HATEXPLAIN, "hatexplain").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataCorruptError(f"dataset 'hatexplain': {HATEXPLAIN} does not parse: {error}") from None
        if item["classification"] != "toxic":
            continue  # HateXplain evaluates explanations of hateful and offensive posts only
        post = item["annotation_id"]
        if post not in texts:
            raise DataCorruptError(f"dataset 'hatexplain': post {post} has no text in {HATEXPLAIN_TEXT}")
        words = texts[post].split()
        spans = [s for s in (_align(words, e) for group in item["evidences"] for e in group) if s is not None]
        if not spans or not words:
            dropped += 1
            continue
        docs.append(Doc(post, {"words": words, "gold": 1, "spans": sorted(set(spans))}))
    return docs, dropped


def sst2_docs(data: DataStore) -> list[Doc]:
    rows = list(csv.reader(io.StringIO(data.file("sst2/dev.tsv", "sst2").read_text(encoding="utf-8")), delimiter="\t"))
    return [Doc(f"sst2-{i}", {"words": row[0].split(), "gold": int(row[1])}) for i, row in enumerate(rows[1:]) if row and row[0].split()]


def movie_review_docs(data: DataStore) -> list[Doc]:
    docs = []
    with zipfile.ZipFile(data.file("movie_reviews/movie_reviews.zip", "movie_reviews")) as archive:
        for name in sorted(n for n in archive.namelist() if n.endswith(".txt") and ("/pos/" in n or "/neg/" in n)):
            words = archive.read(name).decode("utf-8", errors="replace").split()
            docs.append(Doc(Path(name).stem, {"words": words, "gold": int("/pos/" in name)}))
    if not docs:
        raise DataCorruptError("dataset 'movie_reviews': movie_reviews.zip holds no pos/ or neg/ reviews")
    return docs


@register_task("faithfulness")
class Faithfulness(Task):
    """Attributions' faithfulness (ERASER comprehensiveness, sufficiency, AOPC) and plausibility (HateXplain rationales)."""

    version = "1"
    requires = frozenset({Capability.ATTRIBUTE})
    Config = FaithfulnessConfig
    docs_per_chunk = 8

    def load_docs(self, data: DataStore) -> list[Doc]:
        if self.config.dataset == "hatexplain":
            return hatexplain_docs(data)[0]
        if self.config.dataset == "sst2":
            return sst2_docs(data)
        return movie_review_docs(data)

    @property
    def has_rationales(self) -> bool:
        return self.config.dataset == "hatexplain"

    def _request(self, words: Sequence[str], keep: Sequence[bool] | None = None, target: int | None = None,
                 explain: bool = False) -> AttributeRequest:
        template, labels, _ = PROMPTS[self.config.dataset]
        kept = tuple(w for i, w in enumerate(words) if keep is None or keep[i])
        return AttributeRequest(kept, template, labels, target, explain)

    def evaluate(self, docs: Sequence[Doc], method: Method, settings: EvalSettings) -> list[dict[str, Any]]:
        explained = dispatch(method, [self._request(d.data["words"], explain=True) for d in docs])
        plans = [self.perturbations(doc, result) for doc, result in zip(docs, explained, strict=True)]  # type: ignore[arg-type]
        flat = [request for plan in plans for _, request in plan]
        # About a tenth of an item's texts recur in its plan (AOPC bins of equal size; a one-word
        # bin is also a leave-one-out text): each distinct text is scored once.
        distinct = list(dict.fromkeys(flat))
        answer_of = dict(zip(distinct, dispatch(method, distinct), strict=True))
        scored = [answer_of[request] for request in flat]
        records, start = [], 0
        for doc, result, plan in zip(docs, explained, plans, strict=True):
            answers = {name: answer for (name, _), answer in zip(plan, scored[start : start + len(plan)], strict=True)}
            start += len(plan)
            records.append({"doc_id": doc.id, **self._score(doc, result, answers)})  # type: ignore[arg-type]
        return records

    def perturbations(self, doc: Doc, result: AttributeResult) -> list[tuple[str, AttributeRequest]]:
        """The perturbed texts to score: without / only the hard rationale and each AOPC bin, and
        each word left out for the leave-one-out correlation."""
        words, scores, target = doc.data["words"], result.word_scores, result.target
        n = len(words)
        plan = []
        rationale = eraser.top_words(scores, min(self.config.rationale_words, n))
        plan += [("comp", self._request(words, eraser.without(n, rationale), target)),
                 ("suff", self._request(words, eraser.only(n, rationale), target))]
        for fraction in eraser.THRESHOLDS:
            top = eraser.top_words(scores, eraser.bin_size(fraction, n))
            plan += [(f"comp@{fraction}", self._request(words, eraser.without(n, top), target)),
                     (f"suff@{fraction}", self._request(words, eraser.only(n, top), target))]
        if self.config.loo_correlation and n > 1:
            plan += [(f"loo{i}", self._request(words, eraser.without(n, [i]), target)) for i in range(n)]
        return plan

    def _score(self, doc: Doc, result: AttributeResult, answers: dict[str, AttributeResult]) -> dict[str, Any]:
        words, scores, target = doc.data["words"], list(result.word_scores), result.target
        full = result.probabilities[target]
        drop = {name: full - answer.probabilities[target] for name, answer in answers.items()}
        rationale = eraser.top_words(scores, min(self.config.rationale_words, len(words)))
        record: dict[str, Any] = {
            "pred": target, "pred_label": PROMPTS[self.config.dataset][2][target], "gold": doc.data["gold"], "correct": int(target == doc.data["gold"]),
            "probabilities": list(result.probabilities), "n_words": len(words),
            "comprehensiveness": drop["comp"], "sufficiency": drop["suff"],
            "aopc_comprehensiveness": float(np.mean([drop[f"comp@{f}"] for f in eraser.THRESHOLDS])),
            "aopc_sufficiency": float(np.mean([drop[f"suff@{f}"] for f in eraser.THRESHOLDS])),
            "perturbed_probabilities": {name: answer.probabilities[target] for name, answer in answers.items() if not name.startswith("loo")},
            "words": list(words), "rationale": rationale, "word_scores": scores, "token_scores": list(result.token_scores),
            "explain_seconds": result.info.get("seconds", 0.0), "forward_passes": result.info.get("forward_passes", 0),
            "backward_passes": result.info.get("backward_passes", 0),
            **{k: v for k, v in result.info.items() if k not in ("seconds", "forward_passes", "backward_passes")},
        }
        if self.config.loo_correlation:
            loo = [drop[f"loo{i}"] for i in range(len(words))] if len(words) > 1 else []
            record["loo_scores"] = loo
            record["loo_spearman"] = eraser.spearman(scores, loo) if loo else float("nan")
        if self.has_rationales:
            gold_words = sorted({i for start, end in doc.data["spans"] for i in range(start, end)})
            precision, recall, f1 = eraser.token_prf(rationale, gold_words)
            predicted_spans = [(i, i + 1) for i in rationale]
            hits = eraser.iou_true_positives(predicted_spans, doc.data["spans"])
            record |= {"gold_rationale": gold_words, "token_precision": precision, "token_recall": recall, "token_f1": f1,
                       "iou_recall": hits / len(doc.data["spans"]) if doc.data["spans"] else float("nan"),
                       "iou_precision": hits / len(predicted_spans) if predicted_spans else float("nan"),
                       "auprc": eraser.auprc(gold_words, scores)}
        return record

    def metrics(self) -> list[Metric]:
        faithfulness = [
            Metric("comprehensiveness", True, ("comprehensiveness",), mean, description="p(ŷ|x) − p(ŷ|x without the top-k words)"),
            Metric("sufficiency", False, ("sufficiency",), mean, description="p(ŷ|x) − p(ŷ|the top-k words alone)"),
            Metric("aopc_comprehensiveness", True, ("aopc_comprehensiveness",), mean, description="over the top 1/5/10/20/50%"),
            Metric("aopc_sufficiency", False, ("aopc_sufficiency",), mean, description="over the top 1/5/10/20/50%"),
        ]
        plausibility = [
            Metric("token_f1", True, ("token_f1",), mean, description="hard rationale vs human words, per-item mean"),
            Metric("iou_f1", True, ("iou_recall", "iou_precision"), eraser.macro_iou_f1, description="ERASER macro IOU F1 at 0.5"),
            Metric("auprc", True, ("auprc",), _nanmean, description="soft scores vs human words, per-item mean"),
        ] if self.has_rationales else []
        extra = [Metric("loo_spearman", True, ("loo_spearman",), _nanmean, description="rank correlation with leave-one-out")] \
            if self.config.loo_correlation else []
        return [*faithfulness, *plausibility, *extra,
                Metric("accuracy", True, ("correct",), mean, ci="wilson"),
                Metric("seconds_per_explanation", False, ("explain_seconds",), mean)]

    def protocol(self) -> dict[str, Any]:
        template, labels, names = PROMPTS[self.config.dataset]
        out = {"description": self.summary(), "dataset": self.config.dataset, "prompt": template, "labels": list(labels),
               "label_names": list(names), "explained_class": "the model's predicted label",
               "hard_rationale": f"top {self.config.rationale_words} words", "aopc_bins": list(eraser.THRESHOLDS),
               "aopc_bin_words": "ceil(fraction x words), at least 1", "removal": "words deleted from the text"}
        if self.config.dataset == "hatexplain":
            # A fact of the data, not of this run: a task rebuilt to rescore a run has not read it.
            out |= {"items": "toxic test posts (normal skipped); a post none of whose rationale spans can be placed "
                             "in its text is dropped (40 of the mirror's 1,142)",
                    "predicted_spans": "one span per rationale word (HateXplain)"}
        return out

    def artifacts(self, records: Sequence[dict[str, Any]], folder: Path) -> list[str]:
        chosen = sorted(records, key=lambda r: r["doc_id"])[: self.config.heatmap_items]
        if not chosen or "word_scores" not in chosen[0]:
            return []
        (folder / "heatmaps.svg").write_text(heatmap_svg(chosen), encoding="utf-8")
        return ["heatmaps.svg"]


def _nanmean_batched(values: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample with no finite value is NaN, as below
        return np.nanmean(values, axis=-1)


@batched_as(_nanmean_batched)
def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def heatmap_svg(records: Sequence[dict[str, Any]], width: int = 900) -> str:
    """Word heat maps: each word's background from white to red by its score over the item's
    largest |score| (blue for negative); gold rationale words underlined; wrapped lines."""
    char, line_height = 7.2, 20
    lines = ['<text x="4" y="16" font-size="12">red: evidence for the predicted label, blue: against it (scaled per item); '
             'underlined: a human rationale word</text>']
    y = 44
    for record in records:
        words = record["words"]
        scores = record["word_scores"]
        top = max((abs(s) for s in scores), default=0.0) or 1.0
        gold = set(record.get("gold_rationale", []))
        lines.append(f'<text x="4" y="{y}" font-size="12" font-weight="bold">{html.escape(record["doc_id"])}: '
                     f'predicted {html.escape(record.get("pred_label", str(record["pred"])))}, '
                     f'p = {record["probabilities"][record["pred"]]:.3f}</text>')
        y += line_height
        x = 4.0
        for i, word in enumerate(words[: len(scores)]):
            w = char * len(word) + 6
            if x + w > width:
                x, y = 4.0, y + line_height
            share = scores[i] / top
            colour = f"rgb(255,{int(255 * (1 - share))},{int(255 * (1 - share))})" if share >= 0 else \
                f"rgb({int(255 * (1 + share))},{int(255 * (1 + share))},255)"
            lines.append(f'<rect x="{x:.1f}" y="{y - 14}" width="{w:.1f}" height="18" fill="{colour}"/>')
            decoration = ' text-decoration="underline"' if i in gold else ""
            lines.append(f'<text x="{x + 3:.1f}" y="{y}" font-size="12"{decoration}>{html.escape(word)}</text>')
            x += w + 2
        y += line_height + 10
    body = "\n".join(lines)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y}" font-family="monospace">\n'
            f'<rect width="100%" height="100%" fill="white"/>\n{body}\n</svg>\n')
