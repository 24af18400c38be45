"""MathVista testmini (Lu et al., ICLR 2024; PAPERS.md §3): mathematical reasoning in visual
contexts, 1,000 problems, scored as the official code scores them (``tasks/mathvista_scoring.py``).

Data: ``mathvista/testmini.json`` (problems, answers, metadata), ``query.json`` (the official
zero-shot queries), ``texts/captions_bard.json`` and ``texts/ocrs_easyocr.json`` (the captions and
OCR the paper gave text-only models). The mirror has no images: ``input=image`` reads them from
``images_dir=`` (a folder holding the data's ``images/<pid>.jpg``), else says so in one line.

Settings:
- ``input=image``: the image with the query, for an image-text-to-text model;
  ``input=caption_ocr``: the paper's augmented-LLM setting, the query with "Image description:"
  (Bard's caption, cleaned by ``refine_caption``) and "Image detected text:" (EasyOCR's boxes as
  ``refine_ocr`` writes them); ``input=question``: the query alone.
- ``prompting=zero-shot``: the official ``query.json`` text (hint first) for ``image`` and
  ``question``; ``build_query.create_one_query`` with no demonstrations for ``caption_ocr``.
  ``cot-2shot`` / ``pot-2shot``: ``create_one_query`` with the first two of its three worked
  examples (solutions, or Python programs). A PoT response is run as a Python program in the
  harness sandbox (the system ``python3``, standard library, 10 s) and its printed output is what
  the extractor reads, as the official code reads ``execution`` (the response runs as written, as
  ``exec`` runs it there).
- ``extractor=``: the model that extracts the answer where the official rule shortcuts do not
  (any zoo, Hugging Face or local model, loaded beside the run's, greedy, the first line of up to
  32 tokens after the official five-example prompt; the release used OpenAI's models). Every run
  also scores rules alone (``accuracy_rules``: the shortcuts, else the raw response normalised),
  and ``extractor=rules`` reports only that, never under the extractor's metric name.
Metrics: accuracy (Wilson CI) overall and by question type, answer type, language, source,
category, task, context, grade and skill (``accuracy/<key>=<value>``; the five tasks also as
the paper's ``accuracy_fqa``, ``_gps``, ``_mwp``, ``_tqa``, ``_vqa``, and ``accuracy_rules_fqa`` …
for the rules-only score a judge run reports beside its own), and the paper's two
baselines on the same items, overall and per task: ``random_guess``, the expected accuracy of a
uniform guess (0.179 on all of testmini, the paper's 17.9; the release's per-task figures are one
draw), and ``frequent_guess`` (0.263, every per-task figure as the release's); every query, response,
execution, extraction and prediction is in samples.jsonl. Defaults: image, zero-shot, rules, 512
new tokens.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness.api import Capability, Doc, GenerateRequest, Metric, dispatch
from harness.data import DataStore
from harness.errors import DataCorruptError, DataUnavailableError
from harness.method import Cost, Method
from harness.stats import MetricValue, mean, summarize_all
from harness.task import EvalSettings, Task, register_task
from tasks import mathvista_scoring as scoring

FILES = {"problems": "mathvista/testmini.json", "queries": "mathvista/query.json",
         "captions": "mathvista/texts/captions_bard.json", "ocr": "mathvista/texts/ocrs_easyocr.json"}
EXTRACTION_TOKENS = 32
# The paper's task abbreviations (its per-task columns), reported as <main metric>_<abbreviation> too.
TASK_ABBREVIATIONS = {"figure question answering": "fqa", "geometry problem solving": "gps", "math word problem": "mwp",
                      "textbook question answering": "tqa", "visual question answering": "vqa"}
RULES = "rules"

# build_query.py's shot_examples (pids 799, 681, 615), verbatim; the first two are used.
SHOT_EXAMPLES: list[dict[str, Any]] = [
    {"question": "How much money does Ruth need to buy a baking dish, a casserole dish, and an ice cream scoop? (Unit: $)",
     "caption": "The image shows a table with a variety of items on it, including a baking dish, ice cream scoop, casserole dish, "
                "and rolling pin. The text in the image says:\n\n```\nbaking dish\n$4.00\nice cream scoop\n$6.00\ncasserole dish\n"
                "$3.00\nrolling pin\n$4.00\n```",
     "ocr": "[([5, 3], 'baking dish'), ([177, 5], '$4.00'), ([7, 41], 'ice cream scoop'), ([177, 37], '$6.00'), "
            "([9, 69], 'casserole dish'), ([177, 69], '$3.00'), ([5, 98], 'rolling pin'), ([177, 101], '$4.00')]",
     "solution": "Find the total cost of a baking dish, a casserole dish, and an ice cream scoop.\n\n$4.00 + $3.00 + $6.00 = "
                 "$13.00\n\nRuth needs $13.00.",
     "code": "baking_dish_price = 4.00\ncasserole_dish_price = 3.00\nice_cream_scoop_price = 6.00\n\nans = baking_dish_price + "
             "casserole_dish_price + ice_cream_scoop_price\nprint(ans)"},
    {"question": "What is the largest city in the nation where this plane is headquartered?",
     "choices": ["hong kong", "osaka", "shanghai", "tokyo"],
     "caption": "The image shows a large passenger jet parked on a tarmac at an airport. The jet is white with red trim and has a "
                "red tail. It is sitting on top of a tarmac next to a building. The jet is being loaded with passengers and cargo. "
                "The text on the image says \"Japan. Endless Discovery\".",
     "solution": "The caption mentions that the text on the image says \"Japan. Endless Discovery\". This indicates that the plane "
                 "is headquartered in Japan.\n\nAmong the Japanese cities, Tokyo is the largest city.\n\nThus, the answer is D "
                 "(tokyo).",
     "code": "def largest_city(caption, choices):\n    countries_largest_cities = {\n        'Japan': 'tokyo',\n        'China': "
             "'shanghai'\n    }\n\n    if \"Japan\" in caption:\n        country = 'Japan'\n    elif \"China\" in caption:\n"
             "        country = 'China'\n\n    for choice in choices:\n        if choice == countries_largest_cities[country]:\n"
             "            return choice\n    return \"\"\n\nchoices = ['hong kong', 'osaka', 'shanghai', 'tokyo']\ncaption = "
             "\"The image shows a large passenger jet parked on a tarmac at an airport. The jet is white with red trim and has a "
             "red tail. It is sitting on top of a tarmac next to a building. The jet is being loaded with passengers and cargo. "
             "The text on the image says 'Japan. Endless Discovery'.\"\n\nprint(largest_city(caption, choices))"},
]
CAPTION_NONSENSE = ("Sure. ", "Sure, I can do that.", "Sorry, I can't help with images of people yet.", "I can't process this file.",
                    "I'm unable to help you with that, as I'm only a language model and don't have the necessary information or "
                    "abilities.", "I'm not programmed to assist with that.", "Please let me know if you have any other questions.",
                    "I hope this is helpful!", "I hope this helps!")


@dataclass(frozen=True)
class MathVistaConfig:
    input: Literal["image", "caption_ocr", "question"] = "image"  # what the model is shown besides the query
    prompting: Literal["zero-shot", "cot-2shot", "pot-2shot"] = "zero-shot"  # the MathVista paper's prompting settings
    extractor: str = RULES  # model extracting answers where the rules do not (zoo, HF id or folder), or rules
    images_dir: str = ""  # input=image: folder holding images/<pid>.jpg (the mirror has none)
    max_new_tokens: int = 512  # bound on each response
    quick_extract: bool = False  # also take 'The answer is "x".' before the extractor (the official --quick_extract)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be positive")
        if not self.extractor:
            raise ValueError("extractor must name a model or be 'rules'")


def refine_caption(caption: Any) -> str:
    """``build_query.refine_caption``: Bard's boilerplate removed."""
    if not isinstance(caption, str):
        return ""
    for nonsense in CAPTION_NONSENSE:
        caption = caption.replace(nonsense, "").strip()
    return caption.replace("  ", " ").strip()


def refine_ocr(ocr: Any) -> str:
    """``build_query.refine_ocr``: each EasyOCR box as its top-left corner and its text."""
    try:
        boxes = ast.literal_eval(ocr)  # the official code eval()s the same repr; literal_eval reads it without running it
        return str([([int(box[0][0][0]), int(box[0][0][1])], box[1]) for box in boxes]) if boxes else ""
    except (ValueError, SyntaxError, TypeError, IndexError):
        return ""


def build_query(problem: dict[str, Any], shot_num: int, shot_type: str, use_caption: bool, use_ocr: bool) -> str:
    """``build_query.create_one_query``."""
    demos = []
    for example in SHOT_EXAMPLES[:shot_num]:
        prompt = f"Question: {example['question']}"
        if "choices" in example:
            prompt += "\n" + "\n".join(["Choices:", *(f"({chr(ord('A') + i)}) {c}" for i, c in enumerate(example["choices"]))])
        if use_caption and example.get("caption", ""):
            prompt += "\n" + f"Image description: {example['caption']}"
        if use_ocr and example.get("ocr", ""):
            prompt += "\n" + f"Image detected text: {example['ocr']}"
        prompt += "\n" + (f"Solution: {example['solution'].strip()}" if shot_type == "solution" else f"Python code: {example['code'].strip()}")
        demos.append(prompt)
    if shot_type == "code":
        hint = "Hint: Please generate a python code to solve the problem"
    elif problem["question_type"] == "multi_choice":
        hint = "Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end."
    elif problem["answer_type"] == "integer":
        hint = "Hint: Please answer the question requiring an integer answer and provide the final value, e.g., 1, 2, 3, at the end."
    elif problem["answer_type"] == "float" and problem["precision"] == 1:
        hint = ("Hint: Please answer the question requiring a floating-point number with one decimal place and provide the final "
                "value, e.g., 1.2, 1.3, 1.4, at the end.")
    elif problem["answer_type"] == "float":
        hint = ("Hint: Please answer the question requiring a floating-point number with two decimal places and provide the final "
                "value, e.g., 1.23, 1.34, 1.45, at the end.")
    else:
        hint = ("Hint: Please answer the question requiring a Python list as an answer and provide the final list, e.g., [1, 2, 3], "
                "[1.2, 1.3, 1.4], at the end.")
    question = f"Question: {problem['question']}" + (f" (Unit: {problem['unit']})" if problem.get("unit") else "")
    choices = "\n".join(["Choices:", *(f"({chr(ord('A') + i)}) {c}" for i, c in enumerate(problem["choices"]))]) \
        if problem.get("choices") else ""
    caption = f"Image description: {problem['caption']}" if use_caption and problem.get("caption", "") != "" else ""
    ocr = f"Image detected text: {problem['ocr']}" if use_ocr and problem.get("ocr", "") != "" else ""
    cue = "Solution: " if shot_type == "solution" else "Python code: "
    test_query = "\n".join(e for e in (question, choices, caption, ocr, hint, cue) if e != "")
    return ("\n\n".join(demos) + "\n\n" + test_query).strip()


def run_program(code: str) -> tuple[str, str]:
    """A PoT response run as a Python program in the sandbox: (printed output, error)."""
    from harness.sandbox import Limits, execute

    result = execute(("python3", "program.py"), {"program.py": code}, Limits(wall_s=10.0, cpu_s=10))
    return result.stdout.strip(), result.error


@register_task("mathvista")
class MathVista(Task):
    """MathVista testmini: visual math reasoning; the official extraction, normalisation and breakdowns."""

    version = "1"
    requires = frozenset({Capability.GENERATE, Capability.VISION})  # the default input=image; text inputs drop vision
    Config = MathVistaConfig
    chat_by_default = True
    docs_per_chunk = 16
    _extractor_lm: Any = None

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        needs = {Capability.GENERATE} | ({Capability.VISION} if self.config.input == "image" else set())
        self.requires = frozenset(needs)  # type: ignore[misc]  # an image run needs a vision-language model

    def auxiliary_models(self) -> dict[str, str]:
        return {} if self.config.extractor == RULES else {"extractor": self.config.extractor}

    def load_docs(self, data: DataStore) -> list[Doc]:
        tables = {}
        for key, relative in FILES.items():
            try:
                tables[key] = json.loads(data.file(relative, "mathvista").read_text(encoding="utf-8"))
            except json.JSONDecodeError as error:
                raise DataCorruptError(f"dataset 'mathvista': cannot parse {relative}: {error}") from None
        captions, ocrs = tables["captions"]["texts"], tables["ocr"]["texts"]
        images = Path(self.config.images_dir).expanduser() if self.config.images_dir else None
        if self.config.input == "image":
            if images is None or not images.is_dir():
                raise DataUnavailableError("task 'mathvista' input=image needs the testmini images: --task-arg images_dir=<folder "
                                           "holding images/<pid>.jpg> (the local mirror ships none); or use input=caption_ocr")
        docs = []
        for pid, problem in sorted(tables["problems"].items(), key=lambda item: int(item[0])):
            problem = dict(problem)
            problem["caption"] = refine_caption(captions.get(pid)) if pid in captions else ""
            problem["ocr"] = refine_ocr(ocrs[pid]) if pid in ocrs else ""
            problem["official_query"] = tables["queries"].get(pid, "")
            if images is not None and self.config.input == "image":
                problem["image_path"] = str(_image_path(images, problem["image"]))
            docs.append(Doc(pid, problem))
        return docs

    def query(self, problem: dict[str, Any]) -> str:
        config = self.config
        shot_type = "code" if config.prompting == "pot-2shot" else "solution"
        with_text = config.input == "caption_ocr"
        if config.prompting == "zero-shot" and not with_text:
            return problem["official_query"]
        return build_query(problem, 0 if config.prompting == "zero-shot" else 2, shot_type, with_text, with_text)

    def evaluate(self, docs: Sequence[Doc], method: Method, settings: EvalSettings) -> list[dict[str, Any]]:
        queries = [self.query(doc.data) for doc in docs]
        requests = [GenerateRequest(query, self.config.max_new_tokens, (), 0.0, chat=settings.chat,
                                    images=(_open_image(doc.data["image_path"]),) if self.config.input == "image" else ())
                    for doc, query in zip(docs, queries, strict=True)]
        answers = dispatch(method, requests)
        records = []
        for doc, query, answer in zip(docs, queries, answers, strict=True):
            record = {"pid": doc.id, "query": query, "response": answer.text}  # type: ignore[union-attr]
            if self.config.prompting == "pot-2shot":
                record["execution"], record["execution_error"] = run_program(answer.text)  # type: ignore[union-attr]
            records.append(record)
        read = "execution" if self.config.prompting == "pot-2shot" else "response"
        unresolved = []
        for doc, record in zip(docs, records, strict=True):
            problem = doc.data
            ruled = scoring.extract_by_rules(record[read], problem, self.config.quick_extract)
            record["extraction_rules"] = record[read] if ruled is None else ruled
            self._score(record, problem, "_rules")
            if self.config.extractor != RULES:
                if ruled is None:
                    unresolved.append((record, problem))
                else:
                    record["extraction"] = ruled
        if unresolved:
            extractor = self._extractor(method)
            extractor.cost = Cost()  # this call's spending, counted into the run's cost as the extractor's
            prompts = [GenerateRequest(scoring.extraction_prompt(r["query"], r[read]), EXTRACTION_TOKENS, ("\n",), 0.0)
                       for r, _ in unresolved]
            for (record, _), extracted in zip(unresolved, extractor.generate(prompts), strict=True):
                record["extraction"] = extracted.text.strip()
            method.cost.add_as("extractor", extractor.cost)
        out = []
        for doc, record in zip(docs, records, strict=True):
            if self.config.extractor != RULES:
                self._score(record, doc.data, "")
            out.append(baseline_record(doc) | record)
        return out

    def _score(self, record: dict[str, Any], problem: dict[str, Any], suffix: str) -> None:
        prediction = scoring.normalize_extracted_answer(record[f"extraction{suffix}"], problem.get("choices"), problem["question_type"],
                                                        problem["answer_type"], problem.get("precision"))
        record[f"prediction{suffix}"] = prediction
        record[f"correct{suffix}"] = int(scoring.is_correct(prediction, problem["answer"]))

    def _extractor(self, method: Method) -> Any:
        if self._extractor_lm is None:
            from harness.lm import auxiliary_lm

            self._extractor_lm = auxiliary_lm(self.config.extractor, like=method.loaded)
        return self._extractor_lm

    def metrics(self) -> list[Metric]:
        rules = Metric("accuracy_rules", True, ("correct_rules",), mean, ci="wilson",
                       description="the official rule shortcuts, else the raw response, normalised")
        if self.config.extractor == RULES:
            return [rules]
        return [Metric("accuracy", True, ("correct",), mean, ci="wilson", description=f"answers extracted by {self.config.extractor}"),
                rules]

    def aggregate(self, records: Sequence[dict[str, Any]], seed: int) -> dict[str, MetricValue]:
        # The paper's two baselines on these items (tasks/mathvista_scoring.py): the random guess's
        # expected accuracy, and the frequent guess (records from before it was recorded have no groups).
        baselines = [Metric("random_guess", True, ("random_guess",), mean,
                            description="expected accuracy of a uniform choice (none right on free form)")]
        if records and all("guess_group" in r for r in records):
            records = [r | {"frequent_guess": hit} for r, hit in zip(records, scoring.frequent_guesses(records), strict=True)]
            baselines.append(Metric("frequent_guess", True, ("frequent_guess",), mean, ci="wilson",
                                    description="the most frequent answer of the item's question type, answer type, precision and choices"))
        # Per task every score is broken down (a judge run's rules-only score too, so one run
        # fills both extraction modes' tables); the other breakdowns show the main score alone.
        scores = self.metrics()
        main = scores[0]
        out = summarize_all(scores + baselines, records, seed)
        for key in scoring.BREAKDOWN_KEYS:
            values = sorted({v for r in records for v in (r.get(key) or [] if key == "skills" else [r.get(key)]) if v is not None})
            for value in values:
                subset = [r for r in records if (value in (r.get(key) or []) if key == "skills" else r.get(key) == value)]
                abbreviation = TASK_ABBREVIATIONS.get(value) if key == "task" else None
                for name, metric in summarize_all(scores + baselines if abbreviation else [main], subset, seed).items():
                    if name == main.name:
                        out[f"{name}/{key}={value}"] = metric
                    if abbreviation:
                        out[f"{name}_{abbreviation}"] = metric
        return out

    def protocol(self) -> dict[str, Any]:
        return {"description": self.summary(), "split": "testmini", "input": self.config.input, "prompting": self.config.prompting,
                "extractor": self.config.extractor, "extractor_decoding": f"greedy, first line of up to {EXTRACTION_TOKENS} tokens",
                "captions": "Bard (texts/captions_bard.json, refine_caption)", "ocr": "EasyOCR (texts/ocrs_easyocr.json, refine_ocr)",
                "max_new_tokens": self.config.max_new_tokens, "scorer": "lupantech/MathVista evaluation/ at 53d5258"}


def baseline_record(doc: Doc) -> dict[str, Any]:
    """A record's fields that do not depend on the response: the answer, the breakdown keys and
    what the random and frequent guesses need."""
    meta = doc.data["metadata"]
    return {"doc_id": doc.id, "answer": doc.data["answer"], "question_type": doc.data["question_type"],
            "answer_type": doc.data["answer_type"], **scoring.guess_fields(doc.data),
            **{k: meta.get(k) for k in scoring.BREAKDOWN_KEYS if k in meta}}


def _image_path(folder: Path, relative: str) -> Path:
    for candidate in (folder / relative, folder / Path(relative).name):
        if candidate.is_file():
            return candidate
    raise DataUnavailableError(f"task 'mathvista': image {relative} is not in {folder}")


def _open_image(path: str) -> Any:
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")
