"""``reflexion``: after a failed trial the agent writes a game-specific reflection and retries
with it (Reflexion, Shinn et al. 2023; the reflection baseline of Introspective Tips, PAPERS.md
§12). Acts like ``react``; on ``Stage.REFLECT`` it reads the trial's trajectory (last 25
steps) and writes a short diagnosis and plan for *this* game. Reflections accumulate per game
(the last ``keep``=3 go back to the task as the next trial's memory); a won trial adds none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.api import ActRequest, GenerateResult, Stage
from harness.method import MethodOptions, register_method
from harness.models import LoadedModel
from methods.react import GameAgent, ReactArgs, trajectory_text

PROMPT = ("You played a text game and did not win. Here is your attempt:\n\n{trajectory}\n\n"
          "In two or three sentences, say what went wrong and what you will do differently in your next attempt at this "
          "same game. Be specific about rooms, objects and commands.")


@dataclass(frozen=True)
class ReflexionArgs(ReactArgs):
    keep: int = 3  # reflections carried into the next trial


@register_method("reflexion")
class Reflexion(GameAgent):
    """Game-specific reflections after failed trials, carried into the retry."""

    Args = ReflexionArgs

    def __init__(self, model: LoadedModel, args: ReflexionArgs, options: MethodOptions) -> None:
        super().__init__(model, args, options)
        self.reflections: dict[str, list[str]] = {}

    def reflect(self, requests: Sequence[ActRequest]) -> list[GenerateResult]:
        failed = [r for r in requests if r.stage == Stage.REFLECT and not r.won]
        written = dict(zip((r.episode for r in failed), self.write([PROMPT.format(trajectory=trajectory_text(r)) for r in failed]), strict=True))
        answers = []
        for request in requests:
            notes = self.reflections.setdefault(request.episode, [])
            if request.episode in written and written[request.episode]:
                notes.append(written[request.episode])
            memory = "\n".join(f"- {note}" for note in notes[-self.args.keep :])
            answers.append(GenerateResult(memory, 0, "stop", {"memory": memory, "new": written.get(request.episode, "")}))
        return answers

    def replay(self, requests: Sequence[ActRequest], answers: Sequence[GenerateResult]) -> None:
        for request, answer in zip(requests, answers, strict=True):
            if request.stage == Stage.REFLECT:
                notes = self.reflections.setdefault(request.episode, [])
                notes += [answer.info["new"]] if answer.info.get("new") else []

    def describe(self) -> dict[str, Any]:
        return {"history": self.args.history, "choice": self.args.choice, "keep": self.args.keep}
