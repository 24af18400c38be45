"""AMBER (Wang et al. 2023), the discriminative part: yes/no questions about an image's objects,
attributes and relations, scored as the official ``inference.py`` (junyangwang0410/AMBER) scores
them. AMBER is one of the hallucination benchmarks mDPO reports (PAPERS.md §9), though its
reported HalRate comes from the generative part, which this task does not score (below).

Data: AMBER is not mirrored. ``data_dir=`` names the repository's ``data/`` folder
(``annotations.json``, ``query/query_discriminative*.json``) and ``images_dir=`` the folder of its
images (default ``<data_dir>/image``); without them, one clear line. ``dimension=`` picks the query
file: ``all`` (``query_discriminative.json``), ``existence``, ``attribute`` or ``relation``.

Protocol: the query as the user turn with its image. ``mode=generate`` (default): the answer is
generated greedily (8 tokens) and read as the official code reads it, after one normalisation the
official code leaves to the user: a response whose first word is yes / no (any case, punctuation
stripped) becomes "Yes" / "No"; anything else stays unparsed and, as officially, counts as wrong
and as not answering "No" (its own rate is reported). ``mode=loglikelihood``: " Yes" vs " No".

Metrics (official definitions, "No" the positive class): accuracy; precision = truly-no among
answered-no; recall = answered-no among truly-no; F1 = 2PR / (P + R + ε) with the official ε
(0.0001, or 0.001 for existence). Overall and per dimension: existence (type
``discriminative-hallucination``), attribute (state, number, action), relation (the rest).

The generative part (CHAIR, Cover, Hal, Cog) needs NLTK's tagger and WordNet data and spaCy's
``en_core_web_lg`` vectors, none of which install offline: it is not scored here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from harness.api import Capability, Doc, GenerateRequest, LoglikelihoodRequest, Metric
from harness.data import DataStore
from harness.errors import DataCorruptError, DataUnavailableError
from harness.stats import MetricValue, mean, summarize_all
from harness.task import EvalSettings, Task, register_task

QUERY_FILES = {"all": "query_discriminative.json", "existence": "query_discriminative-existence.json",
               "attribute": "query_discriminative-attribute.json", "relation": "query_discriminative-relation.json"}
ATTRIBUTE_TYPES = {"discriminative-attribute-state", "discriminative-attribute-number", "discriminative-attribute-action"}
EPSILON = {"existence": 0.001}  # the official F1 adds 0.0001 to P + R, 0.001 for existence
ANSWER_TOKENS = 8


def dimension_of(kind: str) -> str:
    if kind == "discriminative-hallucination":
        return "existence"
    return "attribute" if kind in ATTRIBUTE_TYPES else "relation"


def normalise(response: str) -> str:
    """"Yes" / "No" when the response's first word is yes / no; the stripped response otherwise."""
    words = re.findall(r"[A-Za-z]+", response)
    first = words[0].lower() if words else ""
    return {"yes": "Yes", "no": "No"}.get(first, response.strip())


def precision_recall_f1(answered_no: np.ndarray, truly_no: np.ndarray, epsilon: float = 0.0001) -> tuple[float, float, float]:
    """The official precision, recall and F1 of answering "No" (nan where a denominator is 0)."""
    hits = float(np.sum(answered_no * truly_no))
    precision = hits / answered_no.sum() if answered_no.sum() else float("nan")
    recall = hits / truly_no.sum() if truly_no.sum() else float("nan")
    f1 = 2 * precision * recall / (precision + recall + epsilon)
    return precision, recall, f1


@dataclass(frozen=True)
class AmberConfig:
    data_dir: str = ""  # AMBER's data/ folder (annotations.json, query/); not mirrored
    images_dir: str = ""  # AMBER's images (default <data_dir>/image)
    dimension: Literal["all", "existence", "attribute", "relation"] = "all"  # which discriminative query file
    mode: Literal["generate", "loglikelihood"] = "generate"  # a generated answer, or " Yes" vs " No" scored


@register_task("amber")
class Amber(Task):
    """AMBER's discriminative hallucination questions (yes/no about objects, attributes, relations), officially scored."""

    Config = AmberConfig
    chat_by_default = True
    requires = frozenset({Capability.GENERATE})  # mode=loglikelihood needs loglikelihood instead

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.requires = frozenset({Capability.GENERATE if self.config.mode == "generate" else Capability.LOGLIKELIHOOD})

    def load_docs(self, data: DataStore) -> list[Doc]:
        c = self.config
        if not c.data_dir:
            raise DataUnavailableError("task 'amber' needs AMBER's data: --task-arg data_dir=<the AMBER repository's data/ folder> "
                                       "(and images_dir=<its images>); it is not mirrored")
        folder = Path(c.data_dir).expanduser()
        images = Path(c.images_dir).expanduser() if c.images_dir else folder / "image"
        try:
            truth = {item["id"]: item for item in json.loads((folder / "annotations.json").read_text(encoding="utf-8"))}
            queries = json.loads((folder / "query" / QUERY_FILES[c.dimension]).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise DataCorruptError(f"task 'amber': cannot read {folder} ({error})") from None
        docs = []
        for query in queries:
            item = truth.get(query["id"])
            if item is None or item.get("type", "generative") == "generative":
                raise DataCorruptError(f"task 'amber': query {query['id']} has no discriminative annotation")
            image = images / query["image"]
            if not image.is_file():
                raise DataUnavailableError(f"task 'amber': no image {image} (pass --task-arg images_dir=<AMBER's images>)")
            docs.append(Doc(str(query["id"]), {"query": query["query"], "image": str(image), "truth": item["truth"],
                                               "type": item["type"], "dimension": dimension_of(item["type"])}))
        return docs

    def requests(self, doc: Doc, settings: EvalSettings) -> list[Any]:
        from PIL import Image

        image = (Image.open(doc.data["image"]).convert("RGB"),)
        if self.config.mode == "generate":
            return [GenerateRequest(doc.data["query"], max_new_tokens=ANSWER_TOKENS, chat=settings.chat, images=image)]
        space = "" if settings.chat else " "
        return [LoglikelihoodRequest(doc.data["query"], f"{space}{answer}", chat=settings.chat, images=image) for answer in ("Yes", "No")]

    def score(self, doc: Doc, results, settings: EvalSettings) -> dict[str, Any]:
        if self.config.mode == "generate":
            raw = results[0].text
            response = normalise(raw)
        else:
            raw, response = None, "Yes" if results[0].logprob >= results[1].logprob else "No"
        truly_no = doc.data["truth"] == "no"
        correct = response == ("No" if truly_no else "Yes")
        return {"raw_response": raw, "response": response, "truth": doc.data["truth"], "type": doc.data["type"],
                "dimension": doc.data["dimension"], "correct": int(correct), "answered_no": int(response == "No"),
                "truly_no": int(truly_no), "unparsed": int(response not in ("Yes", "No"))}

    def metrics(self) -> list[Metric]:
        return [
            Metric("accuracy", True, ("correct",), mean, ci="wilson", description="official: exact 'Yes' / 'No' against the truth"),
            Metric("precision", True, ("answered_no", "truly_no"), lambda a, t: precision_recall_f1(a, t)[0],
                   description="truly 'no' among answered 'No'"),
            Metric("recall", True, ("answered_no", "truly_no"), lambda a, t: precision_recall_f1(a, t)[1],
                   description="answered 'No' among truly 'no'"),
            Metric("f1", True, ("answered_no", "truly_no"), lambda a, t: precision_recall_f1(a, t)[2], description="official ε 0.0001"),
            Metric("unparsed_rate", False, ("unparsed",), mean, ci="wilson", description="responses neither yes nor no (count as wrong)"),
        ]

    def aggregate(self, records: Sequence[dict[str, Any]], seed: int) -> dict[str, MetricValue]:
        out = summarize_all(self.metrics(), records, seed)
        for dimension in ("existence", "attribute", "relation"):
            subset = [r for r in records if r["dimension"] == dimension]
            if not subset:
                continue
            epsilon = EPSILON.get(dimension, 0.0001)
            metrics = [*self.metrics()[:3], Metric("f1", True, ("answered_no", "truly_no"), lambda a, t, e=epsilon: precision_recall_f1(a, t, e)[2])]
            for name, value in summarize_all(metrics, subset, seed).items():
                out[f"{name}/{dimension}"] = value
        return out

    def protocol(self) -> dict[str, Any]:
        c = self.config
        return {"description": self.summary(), "dimension": c.dimension, "mode": c.mode, "query_file": QUERY_FILES[c.dimension],
                "answer": f"greedy, {ANSWER_TOKENS} tokens, first word yes/no -> 'Yes'/'No'" if c.mode == "generate" else "' Yes' vs ' No' by log-probability",
                "scorer": "junyangwang0410/AMBER inference.py (discriminative part)",
                "generative_part": "not scored (needs NLTK data and spaCy en_core_web_lg)"}
