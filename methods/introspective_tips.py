"""``introspective-tips``: the agent distils trajectories into short, general tips that go
into its prompt, instead of long trajectories or game-specific reflections (Chen et al. 2023,
arXiv 2305.11598; PAPERS.md §12). No public code: the prompts are ours.

Settings (``setting=``):

- ``own`` — learning from its own attempts: run with ``--task-arg trials=N``; after each
  trial the agent reads its trajectory and its current tips and rewrites the tips (at most
  ``max_tips``=5 lines), which the next trial's prompt carries.
- ``expert`` — learning from expert demonstrations: run with ``--task-arg
  demonstrations=true``; the agent reads the transcript of TextWorld's walkthrough for the
  game and writes tips before its first trial (and, with more trials, refines them).
- ``generalize`` — tips learned on training games, frozen, used on test games:
  ``tips_from=<file>`` names a text file of tips, or a finished run folder of this method on
  ``split=train`` whose final tips (every game's last memory) are merged by the model into
  ``max_tips`` general tips once, at load time. They are added to every prompt; reflect and
  demonstration turns change nothing.

The tips in force are in every step's log (the task logs each trial's memory); the merged
frozen tips are recorded in the run's method settings.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness.api import MEMORY_STAGES, ActRequest, GenerateResult
from harness.errors import ArgumentError
from harness.method import MethodOptions, register_method
from harness.models import LoadedModel
from methods.react import GameAgent, ReactArgs, trajectory_text

FROM_TRAJECTORY = ("Here is an attempt at a text game:\n\n{trajectory}\n\nCurrent tips:\n{tips}\n\n"
                   "Rewrite the tips so they would help a player in any game of this kind: at most {n} short, general "
                   "tips, one per line, each starting with '- '. Do not mention this game's particular objects.")
MERGE = ("Here are tips written after playing several text games:\n\n{tips}\n\n"
         "Merge them into at most {n} short, general tips for playing such games, one per line, each starting with '- '.")


def tip_lines(text: str, limit: int) -> str:
    """The first ``limit`` non-empty lines of a model's answer, as '- tip' lines."""
    lines = [line.strip().lstrip("-*0123456789.) ").strip() for line in text.splitlines()]
    return "\n".join(f"- {line}" for line in [x for x in lines if x][:limit])


@dataclass(frozen=True)
class IntrospectiveTipsArgs(ReactArgs):
    setting: Literal["own", "expert", "generalize"] = "own"  # tips from own trials, expert walkthroughs, or frozen from training games
    max_tips: int = 5  # most tip lines kept in the prompt
    tips_from: str = ""  # generalize: a tips file or a training run's folder

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.setting == "generalize" and not self.tips_from:
            raise ValueError("setting=generalize needs tips_from=<tips file or training run folder>")
        if self.max_tips < 1:
            raise ValueError("max_tips must be >= 1")


@register_method("introspective-tips")
class IntrospectiveTips(GameAgent):
    """Short general tips distilled from trajectories (own, expert, or frozen from training games)."""

    Args = IntrospectiveTipsArgs

    def __init__(self, model: LoadedModel, args: IntrospectiveTipsArgs, options: MethodOptions) -> None:
        super().__init__(model, args, options)
        self.tips: dict[str, str] = {}
        self.frozen = self._load_frozen(Path(args.tips_from)) if args.setting == "generalize" else ""

    def _load_frozen(self, source: Path) -> str:
        if source.is_file():
            return tip_lines(source.read_text(encoding="utf-8"), self.args.max_tips)
        samples = source / "samples.jsonl"
        if not samples.is_file():
            raise ArgumentError(f"tips_from: {source} is neither a tips file nor a run folder with samples.jsonl")
        learned = []
        for line in samples.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            memories = [t.get("memory", "") for t in record.get("trials", [])] + [record.get("final_memory", "")]
            learned += [m for m in memories if m][-1:]
        if not learned:
            raise ArgumentError(f"tips_from: the run in {source} holds no tips")
        (merged,) = self.write([MERGE.format(tips="\n".join(learned)[-6000:], n=self.args.max_tips)], 200)
        return tip_lines(merged, self.args.max_tips)

    def memory(self, request: ActRequest) -> str:
        return f"Tips:\n{self.frozen}" if self.frozen else ""

    def reflect(self, requests: Sequence[ActRequest]) -> list[GenerateResult]:
        if self.args.setting == "generalize":
            return [GenerateResult("", 0, "stop", {"memory": ""}) for _ in requests]
        prompts = [FROM_TRAJECTORY.format(trajectory=trajectory_text(r), tips=self.tips.get(r.episode) or "(none yet)",
                                          n=self.args.max_tips) for r in requests]
        answers = []
        for request, text in zip(requests, self.write(prompts, 200), strict=True):
            tips = tip_lines(text, self.args.max_tips) or self.tips.get(request.episode, "")
            self.tips[request.episode] = tips
            answers.append(GenerateResult(tips, 0, "stop", {"memory": tips}))
        return answers

    def replay(self, requests: Sequence[ActRequest], answers: Sequence[GenerateResult]) -> None:
        for request, answer in zip(requests, answers, strict=True):
            if request.stage in MEMORY_STAGES and self.args.setting != "generalize":
                self.tips[request.episode] = answer.info.get("memory", answer.text)

    def describe(self) -> dict[str, Any]:
        return {"setting": self.args.setting, "max_tips": self.args.max_tips, "history": self.args.history,
                "choice": self.args.choice, "tips_from": self.args.tips_from, "frozen_tips": self.frozen}
