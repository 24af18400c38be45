"""``react``: a text-game agent that acts from the current observation and a window of recent
history (the ReAct-style baseline of Introspective Tips, Chen et al. 2023; PAPERS.md §12).

Each turn the prompt is the task's system message (goal, and any notes it carries), the last
``history`` (6) observation/command pairs and the new observation. Action choice that works
for small models (``choice=loglikelihood``, the default, when the task lists the admissible
commands): every admissible command is scored as the answer's continuation and the best
mean log-probability per token wins (``normalize=false``: the summed log-probability);
``choice=generate`` generates a command greedily and leaves matching it to the task. The
agent keeps no memory: between trials (``Stage.REFLECT``) it answers nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from harness.api import MEMORY_STAGES, ActRequest, Capability, ChatMessage, GenerateRequest, GenerateResult, LoglikelihoodRequest
from harness.lm import CausalLM
from harness.method import Method, MethodOptions, register_method
from harness.models import LoadedModel

TRAJECTORY_STEPS = 25  # of a trajectory shown when reflecting (a 135M model's context is short)
OBSERVATION_CHARS = 200


def trajectory_text(request: ActRequest, steps: int = TRAJECTORY_STEPS) -> str:
    """A trajectory as '> command' / observation lines (the last ``steps``), then the outcome."""
    _, *turns = request.messages
    *pairs, outcome = turns
    lines = []
    for message in pairs[-2 * steps :]:
        if message.role == "assistant":
            lines.append(f"> {message.content}")
        else:
            lines.append(message.content[:OBSERVATION_CHARS].replace("\n", " "))
    goal = request.goal.strip()
    return (f"Goal: {goal}\n\n" if goal else "") + "\n".join(lines) + f"\n\n{outcome.content}"


@dataclass(frozen=True)
class ReactArgs:
    history: int = 6  # observation/command pairs kept in the prompt
    choice: Literal["loglikelihood", "generate"] = "loglikelihood"  # score the admissible commands, or generate one
    normalize: bool = True  # loglikelihood choice: mean log-prob per token (false: summed)

    def __post_init__(self) -> None:
        if self.history < 0:
            raise ValueError("history must be >= 0")


class GameAgent(Method):
    """Shared turn handling of the text-game agents; subclasses add memory."""

    provides = frozenset({Capability.ACT})

    def __init__(self, model: LoadedModel, args: Any, options: MethodOptions) -> None:
        super().__init__(model, args, options)
        self.lm = CausalLM(model, self.cost, options.batch_size, None, options.seed, False)

    def memory(self, request: ActRequest) -> str:
        """Text the agent adds to the system message (tips, reflections); none by default."""
        return ""

    def reflect(self, requests: Sequence[ActRequest]) -> list[GenerateResult]:
        """Between trials and for demonstrations: what the agent wants to remember (nothing)."""
        return [GenerateResult("", 0, "stop") for _ in requests]

    def write(self, prompts: Sequence[str], max_new_tokens: int = 160) -> list[str]:
        """Greedy free text from the agent's model, for reflections and tips."""
        requests = [GenerateRequest(prompt, max_new_tokens, (), 0.0, 1.0, chat=True) for prompt in prompts]
        return [answer.text.strip() for answer in self.lm.generate(requests)]

    def window(self, request: ActRequest) -> tuple[ChatMessage, ...]:
        system, *turns = request.messages
        extra = self.memory(request)
        if extra:
            system = ChatMessage("system", f"{system.content}\n\n{extra}")
        history = turns[:-1][-2 * self.args.history :] if self.args.history else []
        return (system, *history, turns[-1])

    def _context(self, messages: tuple[ChatMessage, ...]) -> str:
        if self.lm.loaded.has_chat_template:
            return self.lm.render_chat(messages)
        return "\n\n".join(m.content for m in messages) + "\n> "

    def act(self, requests: Sequence[ActRequest]) -> list[GenerateResult]:
        results: list[GenerateResult | None] = [None] * len(requests)
        reflect = [i for i, r in enumerate(requests) if r.stage in MEMORY_STAGES]
        for i, answer in zip(reflect, self.reflect([requests[i] for i in reflect]) if reflect else [], strict=True):
            results[i] = answer
        steps = [i for i, r in enumerate(requests) if r.stage not in MEMORY_STAGES]
        scored = [i for i in steps if requests[i].choices and self.args.choice == "loglikelihood"]
        generated = [i for i in steps if i not in scored]
        if scored:
            for i, answer in zip(scored, self.choose([requests[i] for i in scored]), strict=True):
                results[i] = answer
        if generated:
            prompts = [GenerateRequest(self.window(requests[i]), requests[i].max_new_tokens, requests[i].until,
                                       requests[i].temperature, requests[i].top_p) for i in generated]
            for i, answer in zip(generated, self.lm.generate(prompts), strict=True):
                results[i] = answer
        self.cost.model_calls += len(requests) - len(generated)
        return results  # type: ignore[return-value]

    def choose(self, requests: Sequence[ActRequest]) -> list[GenerateResult]:
        """Each request's admissible command with the highest (length-normalised) log-likelihood."""
        flat, spans = [], []
        for request in requests:
            context = self._context(self.window(request))
            spans.append((len(flat), len(request.choices)))
            flat += [LoglikelihoodRequest(context, choice) for choice in request.choices]
        scores = self.lm.loglikelihood(flat)
        answers = []
        for request, (start, count) in zip(requests, spans, strict=True):
            values = [s.logprob / max(1, s.n_tokens) if self.args.normalize else s.logprob for s in scores[start : start + count]]
            best = max(range(count), key=lambda j: values[j])
            answers.append(GenerateResult(request.choices[best], scores[start + best].n_tokens, "stop",
                                          {"choice_logprob": values[best], "n_choices": count}))
        return answers


@register_method("react")
class React(GameAgent):
    """Acts from the observation and a window of history; no memory across trials."""

    Args = ReactArgs

    def describe(self) -> dict[str, Any]:
        return {"history": self.args.history, "choice": self.args.choice, "normalize": self.args.normalize}
