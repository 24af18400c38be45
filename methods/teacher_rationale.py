"""``teacher-rationale``: a teacher explains the student's failing code, the student writes
the fix (DistiLRR's ablation, PAPERS.md §6: "the teacher's rationale with the student's
code"). The run's ``--model`` is the student; ``teacher=<zoo model>`` (default
``gemma3-270m``, the zoo's other model) writes stage 1 of ``self-repair``'s two-stage repair;
``teacher_code=true`` gives the teacher the fix as well (the paper's "teacher doing the whole
repair" baseline). First programs are always the student's.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from harness import models
from harness.errors import ArgumentError
from harness.lm import CausalLM, language_model
from harness.method import MethodOptions, register_method
from harness.models import LoadedModel
from methods.self_repair import StagedRepairMethod


@dataclass(frozen=True)
class TeacherRationaleArgs:
    teacher: str = "gemma3-270m"  # zoo model that writes the rationale (must differ from --model)
    teacher_code: bool = False  # the teacher writes the fixed code too (whole-repair baseline)
    rationale_tokens: int = 256  # most tokens of a rationale (stage 1)

    def __post_init__(self) -> None:
        if self.rationale_tokens < 1:
            raise ValueError("rationale_tokens must be positive")


@register_method("teacher-rationale")
class TeacherRationale(StagedRepairMethod):
    """A teacher model's rationale, the student's repaired code."""

    Args = TeacherRationaleArgs

    @classmethod
    def auxiliary_models(cls, args: TeacherRationaleArgs, model: str) -> dict[str, str]:
        return {"teacher": args.teacher}

    def __init__(self, model: LoadedModel, args: TeacherRationaleArgs, options: MethodOptions) -> None:
        super().__init__(model, args, options)
        if args.teacher == model.identity.name:
            raise ArgumentError("teacher-rationale needs a teacher other than the student (--method-arg teacher=...)")
        print(f"teacher-rationale: teacher = {args.teacher}", file=sys.stderr)
        self.teacher = models.load_auxiliary(args.teacher, like=model)
        self.write_lm = CausalLM(model, self.cost, options.batch_size, None, options.seed, options.show_progress)
        self.rationale_lm = language_model(self.teacher, self.cost, options.batch_size, None, options.seed, False)
        self.code_lm = self.rationale_lm if args.teacher_code else self.write_lm

    def describe(self) -> dict[str, Any]:
        return {"rationale_model": self.args.teacher, "teacher_weights_sha256": self.teacher.identity.weights_sha256,
                "code_model": self.args.teacher if self.args.teacher_code else self.loaded.identity.name,
                "rationale_tokens": self.args.rationale_tokens}
