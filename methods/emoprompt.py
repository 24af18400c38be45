"""``emoprompt``: EmoLLM's EmoPrompt for text (Yang et al. 2024, arXiv 2406.16442; PAPERS.md §4).

EmoLLM guides a model's emotional reasoning with prompts a stronger model (GPT-4V) wrote.
Here a teacher (``teacher=``, any zoo / Hugging Face / local model; default the run's own
model) writes reasoning guidance once per kind of request (``GenerateRequest.family``, e.g.
EmoBench's part and language; without one, per system prompt): which emotional cues to read,
whose perspective to take, how appraisal leads to emotion, how to judge an effective response.
The teacher decodes greedily, so the guidance is the same whenever the run resumes; it is
recorded in results.json (``method_settings.guidance``). The student then answers each request
in two steps, with the request's own sampling settings: it reasons through the scenario under
the guidance (``reasoning_tokens``, 160), then answers the request as the task asked, its
reasoning and the guidance shown before the task's own prompt, so the reply keeps the task's
format and parser.

Not reproducible from EmoLLM (no code, data or weights were released): the multi-perspective
visual projection, the multimodal EmoBench (287K images and videos), GPT-4V's prompts and the
instruction-tuned EmoLLM weights. This is the text part of the idea: teacher-written emotional
reasoning guidance in the prompt, compared with the same model answering without it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from harness import models
from harness.api import Capability, ChatMessage, GenerateRequest, GenerateResult
from harness.lm import language_model
from harness.method import Cost, Method, MethodOptions, register_method
from harness.models import LoadedModel

TEACHER_SYSTEM = "You are an expert in affective science and emotional intelligence who teaches others to reason about emotions."
TEACHER_ASK = (
    "Write reasoning guidance for a model that solves problems of this kind: {family}.\n"
    "The guidance must be general, not about any one scenario, and short: 4 to 6 numbered steps covering "
    "which emotional cues in a scenario to notice (words, actions, tone, what changed), whose perspective to take, "
    "how a person's appraisal of events (goals, expectations, beliefs, relationships) leads to their emotion, "
    "and how to judge which response or action would work best for the person and the relationship. "
    "Do not answer any question.{instructions}"
)
REASON_ASK = (
    "Do not answer yet. First reason through this scenario step by step, following the guidance: "
    "the cues, the person's perspective, their appraisal, what they would feel and what would help."
)
GUIDANCE_HEADER = "Guidance for reasoning about emotions:"


@dataclass(frozen=True)
class EmoPromptArgs:
    teacher: str = ""  # model that writes the guidance (empty: the run's own model)
    guidance_tokens: int = 256  # most tokens of the teacher's guidance
    reasoning_tokens: int = 160  # most tokens of the student's reasoning before it answers

    def __post_init__(self) -> None:
        if self.guidance_tokens < 1 or self.reasoning_tokens < 1:
            raise ValueError("guidance_tokens and reasoning_tokens must be positive")


@register_method("emoprompt")
class EmoPrompt(Method):
    """EmoPrompt: teacher-written emotional reasoning guidance; the student reasons, then answers."""

    provides = frozenset({Capability.GENERATE})
    Args = EmoPromptArgs
    runs_remote = True  # student and teacher only generate: either may be behind an API

    @classmethod
    def auxiliary_models(cls, args: EmoPromptArgs, model: str) -> dict[str, str]:
        return {"teacher": args.teacher} if args.teacher and args.teacher != model else {}

    def __init__(self, model: LoadedModel, args: EmoPromptArgs, options: MethodOptions) -> None:
        super().__init__(model, args, options)
        self.student = language_model(model, self.cost, options.batch_size, None, options.seed, options.show_progress)
        own = not args.teacher or args.teacher == model.identity.name
        self.teacher_name = model.identity.name if own else args.teacher
        self.teacher_cost = self.cost if own else Cost()  # a second model's spending is counted under its role
        teacher = model if own else models.load_auxiliary(args.teacher, like=model)
        self.teacher_weights = teacher.identity.weights_sha256
        self.teacher = self.student if own else language_model(teacher, self.teacher_cost, options.batch_size, None, options.seed, False)
        self.guidance: dict[str, str] = {}
        print(f"emoprompt: guidance written by {self.teacher_name}", file=sys.stderr)

    def describe(self) -> dict[str, Any]:
        return {"teacher": self.teacher_name, "teacher_weights_sha256": self.teacher_weights,
                "guidance_tokens": self.args.guidance_tokens, "reasoning_tokens": self.args.reasoning_tokens,
                "guidance": dict(sorted(self.guidance.items()))}

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        keys = [family_of(r) for r in requests]
        self._write_guidance({key: request for key, request in zip(keys, requests, strict=True)})
        reasoning = self.student.generate([
            replace(request, prompt=reasoning_prompt(request, self.guidance[key]), max_new_tokens=self.args.reasoning_tokens, until=())
            for key, request in zip(keys, requests, strict=True)])
        answers = self.student.generate([
            replace(request, prompt=answer_prompt(request, self.guidance[key], thought.text))
            for key, request, thought in zip(keys, requests, reasoning, strict=True)])
        self.cost.count("reasoning_tokens", sum(r.n_tokens for r in reasoning))
        return [replace(answer, info=answer.info | {"reasoning": thought.text, "family": key})
                for answer, thought, key in zip(answers, reasoning, keys, strict=True)]

    def _write_guidance(self, first_of: dict[str, GenerateRequest]) -> None:
        """The teacher's guidance for each kind not seen yet (greedy: the same on every resume)."""
        missing = sorted(key for key in first_of if key not in self.guidance)
        if not missing:
            return
        before = self.teacher_cost.as_dict()
        asks = [GenerateRequest((ChatMessage("system", TEACHER_SYSTEM), ChatMessage("user", teacher_ask(first_of[key], key))),
                                self.args.guidance_tokens, (), 0.0, chat=True) for key in missing]
        for key, answer in zip(missing, self.teacher.generate(asks), strict=True):
            self.guidance[key] = answer.text.strip()
        self.cost.count("guidance_calls", len(missing))
        if self.teacher_cost is not self.cost:
            spent = Cost()
            spent.add({k: v - before.get(k, 0) for k, v in self.teacher_cost.as_dict().items()})
            self.cost.add_as("teacher", spent)


def family_of(request: GenerateRequest) -> str:
    """The kind a request belongs to: the task's ``family``, else its system prompt, else one kind for all."""
    if request.family:
        return request.family
    system = system_of(request)
    return f"requests with the instructions: {system}" if system else "emotional reasoning questions"


def system_of(request: GenerateRequest) -> str:
    if isinstance(request.prompt, tuple):
        return "\n\n".join(m.content for m in request.prompt if m.role == "system")
    return ""


def teacher_ask(request: GenerateRequest, family: str) -> str:
    system = system_of(request)
    instructions = f"\n\nThe model is given these instructions:\n{system}" if system else ""
    return TEACHER_ASK.format(family=family, instructions=instructions)


def _with_guidance(request: GenerateRequest, guidance: str, lead: str, tail: str) -> str | tuple[ChatMessage, ...]:
    """The request's prompt with the guidance first and ``lead``/``tail`` around its last user text."""
    block = f"{GUIDANCE_HEADER}\n{guidance}"
    if isinstance(request.prompt, str):
        return f"{block}\n\n{lead}{request.prompt}{tail}"
    messages = list(request.prompt)
    last = max(i for i, m in enumerate(messages) if m.role == "user")
    messages[last] = replace(messages[last], content=f"{lead}{messages[last].content}{tail}")
    if messages[0].role == "system":
        messages[0] = replace(messages[0], content=f"{messages[0].content}\n\n{block}")
    else:
        messages.insert(0, ChatMessage("system", block))
    return tuple(messages)


def reasoning_prompt(request: GenerateRequest, guidance: str) -> str | tuple[ChatMessage, ...]:
    return _with_guidance(request, guidance, "", f"\n\n{REASON_ASK}")


def answer_prompt(request: GenerateRequest, guidance: str, reasoning: str) -> str | tuple[ChatMessage, ...]:
    return _with_guidance(request, guidance, f"Your reasoning about this scenario:\n{reasoning.strip()}\n\n", "")
