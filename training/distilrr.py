"""``harness train distilrr``: distil a teacher's code repairs into a student (DistiLRR, Wong et
al. 2024; PAPERS.md §6).

Distillation set (the paper's recipe, from each language's 800-problem MBXP pool, seed-17
split as in ``tasks/code_repair.py``): for each problem, sample student programs
(temperature 0.2, top-p 0.95) until one fails its tests (``student_tries``; a problem the
student always solves is skipped); the teacher then answers the repair prompt with a
rationale and a fixed function (``methods/self_repair.py``'s two stages, both by the
teacher) up to ``teacher_tries`` times (paper: 20), and the first repair that passes is kept.
The set is written as it grows (``distill_set.jsonl`` in the work folder) and resumes.

Fine-tuning: LoRA on "incorrect code + error -> rationale + fixed code" in the student's chat
format (paper: r 128, α 128, lr 5e-6, 5 epochs; all arguments). The result is the local zoo
model ``<student>-distilrr-<languages>``, used by ``--method distilrr --method-arg
checkpoint=<it>``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from tqdm.auto import tqdm

from harness import zoo
from harness.api import ActRequest, GenerateRequest
from harness.data import DataStore
from harness.errors import ArgumentError
from harness.lm import CausalLM, auxiliary_lm
from methods.self_repair import two_stage_repair
from tasks.code_languages import LANGUAGES, assemble, code_block, run_program
from tasks.code_repair import clean_error, load_problems, repair_messages, write_messages
from training import lora


@dataclass(frozen=True)
class DistillSpec:
    teacher: str
    student: str
    languages: tuple[str, ...]
    problems: int = 800  # per language, from the start of the distillation pool
    student_tries: int = 5
    teacher_tries: int = 20
    temperature: float = 0.2
    top_p: float = 0.95
    max_new_tokens: int = 512
    rationale_tokens: int = 256
    timeout_s: float = 5.0
    epochs: int = 5
    learning_rate: float = 5e-6
    lora_r: int = 128
    lora_alpha: int = 128
    lora_dropout: float = 0.05
    batch_size: int = 4
    max_length: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [lang for lang in self.languages if lang not in LANGUAGES]
        if not self.languages or unknown:
            raise ArgumentError(f"--language must name languages from {', '.join(LANGUAGES)}; got {', '.join(self.languages) or 'none'}")
        if self.teacher == self.student:
            raise ArgumentError("the teacher must differ from the student")
        if min(self.problems, self.student_tries, self.teacher_tries, self.epochs, self.batch_size) < 1:
            raise ArgumentError("problems, tries, epochs and batch size must be >= 1")

    @property
    def name(self) -> str:
        return f"{self.student}-distilrr-{'-'.join(self.languages)}"

    def digest(self, part: str = "all") -> str:
        fields = asdict(self)
        if part == "set":  # what shapes the distillation set (training settings excluded)
            fields = {k: fields[k] for k in ("teacher", "student", "languages", "problems", "student_tries", "teacher_tries",
                                             "temperature", "top_p", "max_new_tokens", "rationale_tokens", "timeout_s", "seed")}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def build_distillation_set(spec: DistillSpec, data: DataStore, show_progress: bool = True, device: str = "cpu") -> list[dict[str, Any]]:
    """The kept (incorrect code, error, rationale, fixed code) examples, the student and teacher
    generating on ``device``; resumes from its file."""
    path = zoo.local_zoo_dir() / f".distill-{spec.name}-{spec.digest('set')}" / "distill_set.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    done = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.is_file() else []
    seen = {(row["language"], row["task_id"]) for row in done}
    pools = {lang: load_problems(data, LANGUAGES[lang], "mbxp", "distill")[: spec.problems] for lang in spec.languages}
    todo = [(lang, p) for lang, pool in pools.items() for p in pool if (lang, p["task_id"]) not in seen]
    if not todo:
        return [row for row in done if row["kept"]]
    student = auxiliary_lm(spec.student, seed=spec.seed, device=device)
    teacher = auxiliary_lm(spec.teacher, like=student.loaded, seed=spec.seed)
    with path.open("a", encoding="utf-8") as out, tqdm(total=len(todo), desc="distillation set", unit="problem",
                                                        disable=not show_progress) as bar:
        for lang, problem in todo:
            row = _distil_one(spec, LANGUAGES[lang], problem, student, teacher)
            out.write(json.dumps(row) + "\n")
            out.flush()
            done.append(row)
            bar.update(1)
            bar.set_postfix(kept=sum(r["kept"] for r in done))
    return [row for row in done if row["kept"]]


def _distil_one(spec: DistillSpec, language, problem: dict[str, Any], student: CausalLM, teacher: CausalLM) -> dict[str, Any]:
    row: dict[str, Any] = {"language": language.name, "task_id": problem["task_id"], "kept": False}
    messages = write_messages(language, problem)
    answers = student.generate([GenerateRequest(messages, spec.max_new_tokens, ("```",), spec.temperature, spec.top_p)
                                for _ in range(spec.student_tries)])
    failing = None
    for answer in answers:  # "until one fails": run in order, stop at the first failure
        code, program = assemble(language, problem, messages[-1].content + answer.text + "```")
        execution = run_program(language, program, spec.timeout_s)
        if not execution.passed:
            failing = (code, clean_error(execution))
            break
    if failing is None:
        return row | {"skipped": "the student passed every try"}
    code, error = failing
    request = ActRequest(repair_messages(language, code, error), spec.max_new_tokens, (), spec.temperature, spec.top_p, "repair")
    repairs = two_stage_repair(teacher, teacher, [request] * spec.teacher_tries, spec.rationale_tokens)
    for attempt, repair in enumerate(repairs, 1):
        _, program = assemble(language, problem, repair.text)
        if run_program(language, program, spec.timeout_s).passed:
            fixed = code_block(repair.text, language).strip()
            return row | {"kept": True, "teacher_attempt": attempt, "incorrect_code": code, "error": error,
                          "rationale": repair.info["rationale"], "fixed_code": fixed}
    return row | {"skipped": f"no teacher repair passed in {spec.teacher_tries} tries", "error": error[:200]}


def training_answer(example: dict[str, Any]) -> str:
    """What the student learns to write: the rationale, then the fixed function in a code block."""
    rationale = example["rationale"].strip()
    return (rationale + "\n\n" if rationale else "") + f"```{example['language']}\n{example['fixed_code']}\n```"


def train_distilrr(spec: DistillSpec, data: DataStore, show_progress: bool = True, device: str = "cpu") -> str:
    if lora.existing(spec.name, spec.digest()):
        return spec.name
    examples = build_distillation_set(spec, data, show_progress, device)
    if not examples:
        raise ArgumentError(f"the teacher's repairs never passed (0 examples from {spec.problems} problems per language); "
                            "try more --teacher-tries, more --problems or a stronger --teacher")
    recipe = lora.LoraRecipe(epochs=spec.epochs, learning_rate=spec.learning_rate, lora_r=spec.lora_r,
                             lora_alpha=spec.lora_alpha, lora_dropout=spec.lora_dropout, batch_size=spec.batch_size,
                             seed=spec.seed)

    def encode(tokenizer):
        return [lora.encode_example(tokenizer, repair_messages(LANGUAGES[e["language"]], e["incorrect_code"], e["error"])[0].content,
                                    training_answer(e), spec.max_length) for e in examples]

    meta = {
        "description": f"{spec.student} distilled on {spec.teacher}'s code repairs ({', '.join(spec.languages)}; DistiLRR)",
        "method": "distilrr", "teacher": spec.teacher, "recipe": asdict(spec),
        "data": {"examples": len(examples), "per_language": {lang: sum(e["language"] == lang for e in examples) for lang in spec.languages},
                 "source": "MBXP distillation pool (random.seed(17) shuffle, first 800)"},
    }
    return lora.train_lora(spec.name, spec.digest(), spec.student, recipe, encode, meta, show_progress, device)
