"""``distilrr``: repairs by a student distilled on a teacher's rationales and fixes (DistiLRR,
Wong et al. 2024; PAPERS.md §6).

The run's ``--model`` is the base student, which writes the first programs (round 0, as in the
paper's ``gen_init``); repair turns go to the distilled checkpoint
(``checkpoint=<zoo model>`` made by ``harness train distilrr --teacher T --student S``), which
answers the repair prompt in the format it was trained on — rationale, then the fixed
function — in one generation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness import models, zoo
from harness.api import ActRequest, GenerateResult
from harness.errors import ArgumentError
from harness.lm import CausalLM
from harness.method import MethodOptions, register_method
from harness.models import LoadedModel
from methods.self_repair import StagedRepairMethod, generate_acts


@dataclass(frozen=True)
class DistilRRArgs:
    checkpoint: str = ""  # the distilled zoo model

    def __post_init__(self) -> None:
        if not self.checkpoint:
            raise ValueError("distilrr needs --method-arg checkpoint=<zoo model from 'harness train distilrr'>")


@register_method("distilrr")
class DistilRR(StagedRepairMethod):
    """A distilled student repairs the base student's programs (rationale + fix, one pass)."""

    Args = DistilRRArgs

    @classmethod
    def auxiliary_models(cls, args: DistilRRArgs, model: str) -> dict[str, str]:
        return {"distilled": args.checkpoint} if args.checkpoint else {}

    def __init__(self, model: LoadedModel, args: DistilRRArgs, options: MethodOptions) -> None:
        super().__init__(model, args, options)
        entry = zoo.zoo().get(args.checkpoint)
        if entry is None:
            raise ArgumentError(f"no zoo model '{args.checkpoint}' (make one with: harness train distilrr --teacher T --student S)")
        meta = (zoo.recipe(args.checkpoint) or {}) if entry.kind == "local" else {}
        if meta.get("method") != "distilrr":
            raise ArgumentError(f"zoo model '{args.checkpoint}' is not a distilrr checkpoint")
        if meta.get("base_model") != model.identity.name:
            raise ArgumentError(f"'{args.checkpoint}' was distilled into {meta.get('base_model')}, not the run's model {model.identity.name}")
        self.meta = meta
        self.distilled = models.load_auxiliary(args.checkpoint, like=model)
        self.write_lm = CausalLM(model, self.cost, options.batch_size, None, options.seed, options.show_progress)
        self.rationale_lm = self.code_lm = CausalLM(self.distilled, self.cost, options.batch_size, None, options.seed, False)

    def repair(self, requests: Sequence[ActRequest]) -> list[GenerateResult]:
        return generate_acts(self.code_lm, requests)

    def describe(self) -> dict[str, Any]:
        return {"checkpoint": self.args.checkpoint, "checkpoint_weights_sha256": self.distilled.identity.weights_sha256,
                "teacher": self.meta.get("teacher"), "distillation_examples": self.meta.get("data", {}).get("examples")}
