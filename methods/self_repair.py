"""``self-repair``: the model explains its failing code, then fixes it (DistiLRR's baseline,
PAPERS.md §6: "the base student repairing itself").

On a repair turn (``ActRequest.stage == Stage.REPAIR``) the answer is made in two stages, so a
small model that would jump straight to code still states its rationale first: (1) the
rationale model answers the task's repair prompt and is stopped at its first code fence;
(2) the code model continues that answer — the rationale and an open fence — and writes the
fixed function, stopped at the closing fence. Here both stages are the run's model;
``teacher-rationale`` puts a teacher in stage 1 and ``distilrr`` a distilled student in both.
Other turns (the first program) are plain generation by the run's model. The rationale is
returned in ``GenerateResult.info["rationale"]`` for the task's judge analysis.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.api import ActRequest, Capability, ChatMessage, GenerateRequest, GenerateResult, Stage
from harness.lm import CausalLM, LanguageModel
from harness.method import Method, MethodOptions, register_method
from harness.models import LoadedModel

FENCE = "```"
FENCE_TAG = re.compile(r"```([A-Za-z][\w+#-]*)[ \t]*\n")


@dataclass(frozen=True)
class SelfRepairArgs:
    rationale_tokens: int = 256  # most tokens of a rationale (stage 1)

    def __post_init__(self) -> None:
        if self.rationale_tokens < 1:
            raise ValueError("rationale_tokens must be positive")


def generate_acts(lm: LanguageModel, requests: Sequence[ActRequest], until: tuple[str, ...] | None = None,
                  max_new_tokens: int | None = None) -> list[GenerateResult]:
    """Agent requests as plain generations, optionally with other stop strings or budget."""
    return lm.generate([GenerateRequest(r.messages, max_new_tokens or r.max_new_tokens, r.until if until is None else until,
                                        r.temperature, r.top_p) for r in requests])


def fence_tag(messages: Sequence[ChatMessage]) -> str:
    """The language tag of the code the task showed (```perl ...), to open the fix's block with."""
    for message in reversed(messages):
        match = FENCE_TAG.search(message.content)
        if match:
            return match.group(1)
    return ""


def two_stage_repair(rationale_lm: LanguageModel, code_lm: LanguageModel, requests: Sequence[ActRequest],
                     rationale_tokens: int) -> list[GenerateResult]:
    """Rationale from one model (stopped at a code fence), fixed code from another that continues
    it inside an opened code block (tagged like the task's code, so it writes code, not prose)."""
    rationales = generate_acts(rationale_lm, requests, (FENCE,), rationale_tokens)
    continued = []
    for request, rationale in zip(requests, rationales, strict=True):
        tag = fence_tag(request.messages)
        prefix = (rationale.text.strip() + "\n\n" if rationale.text.strip() else "") + FENCE + (f"{tag}\n" if tag else "")
        continued.append(ActRequest(request.messages + (ChatMessage("assistant", prefix),), request.max_new_tokens,
                                    (FENCE,), request.temperature, request.top_p, request.stage))
    codes = generate_acts(code_lm, continued)
    results = []
    for request, rationale, code in zip(continued, rationales, codes, strict=True):
        text = request.messages[-1].content + code.text + FENCE
        results.append(GenerateResult(text, rationale.n_tokens + code.n_tokens, code.finish_reason,
                                      {"rationale": rationale.text.strip()}))
    return results


class StagedRepairMethod(Method):
    """Routes first-program turns to ``write_lm`` and repair turns to two stages."""

    provides = frozenset({Capability.ACT, Capability.GENERATE})

    write_lm: CausalLM
    rationale_lm: LanguageModel
    code_lm: LanguageModel

    def act(self, requests: Sequence[ActRequest]) -> list[GenerateResult]:
        results: list[GenerateResult | None] = [None] * len(requests)
        repair = [i for i, r in enumerate(requests) if r.stage == Stage.REPAIR]
        other = [i for i, r in enumerate(requests) if r.stage != Stage.REPAIR]
        if other:
            for i, result in zip(other, generate_acts(self.write_lm, [requests[i] for i in other]), strict=True):
                results[i] = result
        if repair:
            answers = self.repair([requests[i] for i in repair])
            for i, result in zip(repair, answers, strict=True):
                results[i] = result
        return results  # type: ignore[return-value]

    def repair(self, requests: Sequence[ActRequest]) -> list[GenerateResult]:
        return two_stage_repair(self.rationale_lm, self.code_lm, requests, self.args.rationale_tokens)

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        return self.write_lm.generate(requests)


@register_method("self-repair")
class SelfRepair(StagedRepairMethod):
    """The model explains its own failing code, then fixes it (two stages, one model)."""

    Args = SelfRepairArgs

    def __init__(self, model: LoadedModel, args: SelfRepairArgs, options: MethodOptions) -> None:
        super().__init__(model, args, options)
        self.write_lm = CausalLM(model, self.cost, options.batch_size, None, options.seed, options.show_progress)
        self.rationale_lm = self.code_lm = self.write_lm

    def describe(self) -> dict[str, Any]:
        return {"rationale_model": self.loaded.identity.name, "code_model": self.loaded.identity.name,
                "rationale_tokens": self.args.rationale_tokens}
