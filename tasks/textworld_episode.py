"""One trial of one TextWorld game (``Episode``: the transcript, the step log, the act request
each turn), and a chunk's progress read back from the run's journal (``ChunkJournal``)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from harness.api import ActRequest, ChatMessage, Doc, GenerateResult, Stage
from harness.store import Journal
from tasks.textworld_games import close_game, open_game

if TYPE_CHECKING:
    from tasks.textworld import TextWorldConfig

MATCH_RATIO = 0.8
SYSTEM = ("You are playing a text adventure game. Reach the goal by typing one short command per turn, "
          "such as 'open door', 'take apple from table' or 'go north'. Answer with the command only.")



class ChunkJournal:
    """A chunk's games as far as they got, read back from the run's journal (each game's answers
    per trial, and the method's memory answers), with the journal they add to as they go on."""

    def __init__(self, journal: Journal, doc_ids: Sequence[str]) -> None:
        self.journal = journal
        self.steps: dict[tuple[str, int], list[str]] = {}
        self.memories: dict[tuple[str, str, int], GenerateResult] = {}
        chunk = set(doc_ids)
        for entry in journal.entries():
            if entry.get("doc") not in chunk:
                continue  # a journal left by another chunk: the runner clears it once that chunk is saved
            if entry["stage"] == Stage.STEP:
                steps = self.steps.setdefault((entry["doc"], entry["trial"]), [])
                if entry["step"] == len(steps) + 1:
                    steps.append(entry["text"])
            else:
                self.memories[(entry["doc"], entry["stage"], entry["trial"])] = GenerateResult(
                    entry["text"], 0, "stop", entry.get("info") or {})


class Episode:
    """One trial of one game: the environment, the transcript and the step log."""

    def __init__(self, doc: Doc, trial: int, memory: str, config: TextWorldConfig, expert: bool = False,
                 env: Any = None) -> None:
        self.doc, self.trial, self.memory, self.config = doc, trial, memory, config
        self.owns_env = env is None
        self.env = open_game(doc.data["path"], expert) if env is None else env
        self.state = self.env.reset()
        self.objective = self.state.objective or ""
        self.walkthrough = list(self.state.policy_commands or [])
        self.turns: list[tuple[str, str]] = []  # (observation, command)
        self.log: list[dict[str, Any]] = []
        self.observation = _clean(self.state.feedback)
        self.invalid = 0
        self.done = False

    @property
    def admissible(self) -> list[str]:
        return sorted(self.state.admissible_commands or [])

    def messages(self, window: int | None = None) -> tuple[ChatMessage, ...]:
        system = SYSTEM + (f"\n\nGoal: {self.objective}" if self.objective else "")
        if self.memory:
            system += f"\n\nNotes from earlier attempts:\n{self.memory}"
        messages = [ChatMessage("system", system)]
        for observation, command in self.turns[-window:] if window else self.turns:
            messages += [ChatMessage("user", observation), ChatMessage("assistant", command)]
        return tuple(messages)

    def request(self) -> ActRequest:
        prompt = self.messages() + (ChatMessage("user", self.observation),)
        choices = tuple(self.admissible) if self.config.admissible else ()
        return ActRequest(prompt, 16, ("\n",), 0.0, 1.0, Stage.STEP, choices=choices, episode=self.doc.id, goal=self.objective)

    def step(self, answer: str) -> None:
        typed = answer.strip().splitlines()[0].strip().strip(".").lower() if answer.strip() else "look"
        admissible = self.admissible
        command = typed
        if typed not in admissible and admissible:
            close = difflib.get_close_matches(typed, admissible, n=1, cutoff=MATCH_RATIO)
            command = close[0] if close else typed
        valid = typed in admissible
        self.invalid += not valid
        before = self.state.score
        self.state, _, done = self.env.step(command)
        self.turns.append((self.observation, command))
        self.observation = _clean(self.state.feedback)
        self.log.append({"step": len(self.turns), "answer": answer, "command": command, "admissible": valid,
                         "reward": self.state.score - before, "score": self.state.score, "observation": self.observation,
                         "memory": self.memory})
        self.done = bool(done or self.state.won or self.state.lost or len(self.turns) >= self.config.max_steps)

    def outcome_text(self) -> str:
        result = "won" if self.state.won else ("lost" if self.state.lost else "ran out of steps")
        return (f"The game ended: you {result}, with score {self.state.score} of {self.state.max_score} after {len(self.turns)} "
                "commands. Reflect on what went wrong and write short advice for the next attempt.")

    def summary(self) -> dict[str, Any]:
        max_score = self.state.max_score or 1
        return {"trial": self.trial, "score": self.state.score, "max_score": self.state.max_score,
                "normalized_score": self.state.score / max_score, "won": bool(self.state.won), "lost": bool(self.state.lost),
                "steps": len(self.turns), "invalid_actions": self.invalid, "memory": self.memory,
                "log": self.log}

    def close(self) -> None:
        if self.owns_env:
            close_game(self.env)


def _clean(feedback: str) -> str:
    """The game's text without its prompt padding and the status line."""
    text = re.sub(r"\n>\s.*$", "", feedback or "", flags=re.DOTALL)
    return re.sub(r"\n{3,}", "\n\n", text).strip() or "(nothing happens)"
