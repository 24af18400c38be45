"""TextWorld games and the react agent: the level scheme and seeds, episodes played by a
scripted walkthrough agent and a babbling one, trials with reflections, the agent's windowing
and loglikelihood action choice, and a CLI run with per-level metrics."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from harness.api import ActRequest, ChatMessage, GenerateResult, LoglikelihoodResult, Stage
from harness.data import DataStore
from harness.task import EvalSettings
from tasks.textworld_games import COOKING_LEVELS, game_seed, parse_levels, tw_make_args
from tests.conftest import cli

pytest.importorskip("textworld")


@pytest.fixture(scope="module")
def games(tmp_path_factory):
    """Two level-1 and one level-8 cooking games (generated once, cached for the module)."""
    import os

    from harness.runner import make_task

    cache = tmp_path_factory.mktemp("tw-cache")
    old = os.environ.get("HARNESS_CACHE_DIR")
    os.environ["HARNESS_CACHE_DIR"] = str(cache)
    task = make_task("textworld", {"levels": "1,8", "games_per_level": 1, "max_steps": 40})
    docs = task.load_docs(DataStore(None))
    yield task, docs, cache
    if old is None:
        os.environ.pop("HARNESS_CACHE_DIR")
    else:
        os.environ["HARNESS_CACHE_DIR"] = old


def _walkthrough(path: str) -> list[str]:
    import textworld

    env = textworld.start(path, request_infos=textworld.EnvInfos(policy_commands=True))
    commands = list(env.reset().policy_commands)
    env.close()
    return commands


def test_level_scheme_and_seeds_follow_gata():
    assert parse_levels("1-3,8") == [1, 2, 3, 8] and parse_levels("5") == [5]
    with pytest.raises(ValueError):
        parse_levels("one")
    assert tw_make_args("cooking", 1, "test", 7)[:7] == ["tw-cooking", "--recipe", "1", "--take", "1", "--open", "--split"]
    assert set(COOKING_LEVELS[10]) >= {"--cook", "--cut", "--open"} and COOKING_LEVELS[10][:4] == ("--recipe", "3", "--take", "3")
    assert COOKING_LEVELS[5][-2:] == ("--go", "9")
    seeds = {game_seed("cooking", split, level, index) for split in ("test", "train") for level in range(1, 11) for index in range(20)}
    assert len(seeds) == 400  # disjoint across split, level and index


class Scripted:
    """Plays a fixed list of commands per game (or babbles), and reflects with a fixed note."""

    def __init__(self, plans: dict[str, list[str]] | None = None, babble: str = "") -> None:
        self.plans, self.babble, self.requests = plans or {}, babble, []

    def act(self, requests):
        self.requests += requests
        out = []
        for r in requests:
            if r.stage in ("reflect", "demonstration"):
                out.append(GenerateResult("Read the cookbook first.", 5, "stop"))
                continue
            played = sum(1 for m in r.messages if m.role == "assistant")
            plan = self.plans.get(r.episode, [])
            out.append(GenerateResult(plan[played] if played < len(plan) else self.babble or "look", 2, "stop"))
        return out


def test_walkthrough_wins_and_babble_is_counted_invalid(games):
    task, docs, _ = games
    plans = {d.id: _walkthrough(d.data["path"]) for d in docs}
    records = task.evaluate(docs, Scripted(plans), EvalSettings(True, 0))
    assert all(r["won"] == 1 and r["normalized_score"] == 1.0 and r["invalid_actions"] == 0 for r in records)
    assert [r["steps"] for r in records] == [len(plans[d.id]) for d in docs]
    log = records[0]["trials"][0]["log"]
    assert log[-1]["score"] == records[0]["max_score"] and all(step["admissible"] for step in log)
    babbling = task.evaluate(docs[:1], Scripted(babble="dance wildly"), EvalSettings(True, 0))[0]
    assert babbling["steps"] == 40 and babbling["invalid_actions"] == 40 and babbling["won"] == 0
    values = task.aggregate([{**r, "doc_id": d.id} for r, d in zip(records, docs, strict=True)], 0)
    assert values["win_rate"].value == 1.0 and "normalized_score/level-8" in values


def test_near_miss_commands_are_matched_but_still_counted(games):
    task, docs, _ = games
    plan = _walkthrough(docs[0].data["path"])
    sloppy = [plan[0].upper() + "."] + plan[1:]  # "TAKE ... ." matches after normalisation
    record = task.evaluate(docs[:1], Scripted({docs[0].id: sloppy}), EvalSettings(True, 0))[0]
    assert record["won"] == 1 and record["invalid_actions"] == 0
    typo = [plan[0][:-1] + "x"] + plan[1:]  # one letter off: matched to the admissible command, counted invalid
    record = task.evaluate(docs[:1], Scripted({docs[0].id: typo}), EvalSettings(True, 0))[0]
    assert record["won"] == 1 and record["invalid_actions"] == 1 and record["trials"][0]["log"][0]["command"] == plan[0]


def test_trials_carry_the_methods_reflection_into_the_next_prompt(games):
    from harness.runner import make_task

    task = make_task("textworld", {"levels": "1", "games_per_level": 1, "max_steps": 3, "trials": 2})
    _, docs, _ = games
    method = Scripted()
    (record,) = task.evaluate(docs[:1], method, EvalSettings(True, 0))
    reflect = [r for r in method.requests if r.stage == Stage.REFLECT]
    assert len(reflect) == 2 and "ran out of steps" in reflect[0].messages[-1].content  # between trials, and after the last
    # what agents used to read out of the prompt text comes typed
    assert all(r.won is False and r.goal and f"Goal: {r.goal}" in r.messages[0].content for r in reflect)
    assert record["final_memory"] == "Read the cookbook first."
    second = [r for r in method.requests if r.stage == Stage.STEP][3:]
    assert "Read the cookbook first." in second[0].messages[0].content
    assert record["trials"][1]["memory"] == "Read the cookbook first." and len(record["trials"]) == 2
    assert "first_trial_win_rate" in {m.name for m in task.metrics()}


def test_each_trial_restarts_the_same_loaded_game(games, monkeypatch):
    """Games are loaded once per run and reset per trial: the second trial replays from the start."""
    import textworld

    from harness.runner import make_task

    _, docs, _ = games
    task = make_task("textworld", {"levels": "1,8", "games_per_level": 1, "max_steps": 40, "trials": 2})
    plans = {d.id: _walkthrough(d.data["path"]) for d in docs}
    starts = []
    real_start = textworld.start
    monkeypatch.setattr(textworld, "start", lambda *a, **k: starts.append(a[0]) or real_start(*a, **k))
    records = task.evaluate(docs, Scripted(plans), EvalSettings(True, 0))
    assert len(starts) == len(docs)
    for record in records:
        first, second = record["trials"]
        assert first["won"] and second["won"] and first["steps"] == second["steps"]
        assert [s["observation"] for s in first["log"]] == [s["observation"] for s in second["log"]]


def test_react_windows_history_and_picks_the_best_scored_command(tiny):
    from harness.method import MethodOptions
    from methods.react import React, ReactArgs

    agent = React(tiny, ReactArgs(history=1), MethodOptions(show_progress=False))
    messages = (ChatMessage("system", "goal"), ChatMessage("user", "o1"), ChatMessage("assistant", "a1"),
                ChatMessage("user", "o2"), ChatMessage("assistant", "a2"), ChatMessage("user", "o3"))
    request = ActRequest(messages, 8, (), 0.0, 1.0, "step", choices=("go north", "take apple"), episode="g")
    assert [m.content for m in agent.window(request)] == ["goal", "o2", "a2", "o3"]
    table = {"go north": LoglikelihoodResult(-6.0, False, 2), "take apple": LoglikelihoodResult(-4.0, False, 2)}
    agent.lm = SimpleNamespace(loglikelihood=lambda reqs: [table[r.continuation] for r in reqs],
                               loaded=SimpleNamespace(has_chat_template=False))
    (answer,) = agent.act([request])
    assert answer.text == "take apple" and answer.info["n_choices"] == 2
    (silent,) = agent.act([ActRequest(messages, 8, stage=Stage.REFLECT, episode="g")])
    assert silent.text == ""


def test_cli_runs_react_on_generated_games_with_per_level_metrics(games, tmp_path, monkeypatch):
    _, _, cache = games
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(cache))  # the module's games: no generation here
    runs = tmp_path / "runs"
    assert cli("run", "--task", "textworld", "--method", "react", "--model", "tiny-random-llama", "--quiet",
               "--task-arg", "levels=1,8", "--task-arg", "games_per_level=1", "--task-arg", "max_steps=3",
               "--output-dir", runs) == 0
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    results = json.loads((run / "results.json").read_text())
    assert {"normalized_score", "win_rate", "steps", "invalid_action_rate", "win_rate/level-1"} <= set(results["metrics"])
    assert results["metrics"]["steps"]["value"] == 3 and results["protocol"]["max_steps"] == 3
    assert not (run / "journal.jsonl").exists()  # emptied once the chunk was saved


def test_reflexion_and_tips_agents_write_memory_and_freeze_tips(tiny, tmp_path):
    from harness.method import MethodOptions
    from methods.introspective_tips import IntrospectiveTips, IntrospectiveTipsArgs, tip_lines
    from methods.reflexion import Reflexion, ReflexionArgs

    trajectory = (ChatMessage("system", "Play.\n\nGoal: cook"), ChatMessage("user", "A kitchen."), ChatMessage("assistant", "look"),
                  ChatMessage("user", "The game ended: you ran out of steps, with score 0 of 3. Reflect."))
    reflect = ActRequest(trajectory, 64, stage=Stage.REFLECT, episode="g1", goal="cook", won=False)
    options = MethodOptions(show_progress=False)
    reflexion = Reflexion(tiny, ReflexionArgs(keep=2), options)
    reflexion.write = lambda prompts, n=160: [f"note {len(reflexion.reflections.get('g1', []))}" for _ in prompts]
    for _ in range(3):
        (answer,) = reflexion.act([reflect])
    assert answer.info["memory"] == "- note 1\n- note 2"  # the last `keep` reflections of this game
    won = ActRequest(trajectory[:-1] + (ChatMessage("user", "The game ended: you won, with score 3 of 3."),), 64,
                     stage=Stage.REFLECT, episode="g2", goal="cook", won=True)
    assert reflexion.act([won])[0].info["memory"] == ""  # nothing to reflect on after a win (the request says so)

    assert tip_lines("1. Read the cookbook.\n\n* Open containers\n- x\n- y", 3) == "- Read the cookbook.\n- Open containers\n- x"
    tips = IntrospectiveTips(tiny, IntrospectiveTipsArgs(setting="own", max_tips=2), options)
    tips.write = lambda prompts, n=200: ["- Examine the cookbook first\n- Take what the recipe lists\n- extra"]
    (answer,) = tips.act([reflect])
    assert answer.info["memory"] == "- Examine the cookbook first\n- Take what the recipe lists" and tips.tips["g1"] == answer.info["memory"]

    run = tmp_path / "train-run"
    run.mkdir()
    rows = [{"doc_id": f"g{i}", "trials": [{"memory": ""}], "final_memory": f"- tip {i}"} for i in range(3)]
    (run / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    seen = []
    original = IntrospectiveTips.write
    IntrospectiveTips.write = lambda self, prompts, n=200: seen.extend(prompts) or ["- Merged tip"]
    try:
        frozen = IntrospectiveTips(tiny, IntrospectiveTipsArgs(setting="generalize", tips_from=str(run)), options)
    finally:
        IntrospectiveTips.write = original
    assert "- tip 0" in seen[0] and "- tip 2" in seen[0] and frozen.frozen == "- Merged tip"
    step = ActRequest(trajectory[:-1] + (ChatMessage("user", "A kitchen."),), 8, stage=Stage.STEP, choices=("look",), episode="g9")
    assert "Tips:\n- Merged tip" in frozen.window(step)[0].content
    assert frozen.act([reflect])[0].info["memory"] == ""  # frozen: experience changes nothing
    with pytest.raises(ValueError, match="tips_from"):
        IntrospectiveTipsArgs(setting="generalize")


def test_expert_demonstrations_reach_the_method_before_the_first_trial(games):
    from harness.runner import make_task

    _, docs, _ = games
    task = make_task("textworld", {"levels": "1", "games_per_level": 1, "max_steps": 2, "demonstrations": True})
    method = Scripted()
    (record,) = task.evaluate(docs[:1], method, EvalSettings(True, 0))
    (demo,) = [r for r in method.requests if r.stage == Stage.DEMONSTRATION]
    walkthrough = _walkthrough(docs[0].data["path"])
    assert [m.content for m in demo.messages if m.role == "assistant"] == walkthrough and "won" in demo.messages[-1].content
    assert record["trials"][0]["memory"] == "Read the cookbook first."


class Crashing(Scripted):
    """A scripted agent whose process dies at its ``crash_at``-th call into ``act``."""

    def __init__(self, plans: dict[str, list[str]], crash_at: int = 0) -> None:
        super().__init__(plans)
        self.calls, self.crash_at, self.replayed = 0, crash_at, []

    def act(self, requests):
        self.calls += 1
        if self.calls == self.crash_at:
            self.crashed_on = requests[0].stage
            raise KeyboardInterrupt
        return super().act(requests)

    def replay(self, requests, answers):
        self.replayed += [(r.stage, r.episode, a.text) for r, a in zip(requests, answers, strict=True)]


def test_a_crashed_chunk_resumes_from_its_journal_at_the_step_it_reached(games, tmp_path):
    """Demonstrations, trial 1, its reflections and part of trial 2 are read back, not asked
    again; the records equal those of a run that never stopped."""
    from harness.runner import make_task
    from harness.store import Journal

    _, docs, _ = games
    task = make_task("textworld", {"levels": "1,8", "games_per_level": 1, "max_steps": 6, "trials": 2,
                                   "demonstrations": True})
    plans = {d.id: _walkthrough(d.data["path"])[:4] + ["dance"] for d in docs}
    whole = Crashing(plans)
    expected = task.evaluate(docs, whole, EvalSettings(True, 0, Journal(tmp_path / "whole.jsonl")))
    journal = Journal(tmp_path / "journal.jsonl")
    journal.write([{"doc": "another-chunk", "trial": 0, "stage": "step", "step": 1, "text": "look"}])
    crashing = Crashing(plans, crash_at=whole.calls - 2)  # two turns before the end of trial 2
    with pytest.raises(KeyboardInterrupt):
        task.evaluate(docs, crashing, EvalSettings(True, 0, journal))
    assert crashing.crashed_on == "step"
    resumed = Crashing(plans)
    assert task.evaluate(docs, resumed, EvalSettings(True, 0, journal)) == expected
    assert resumed.calls == 3  # the turn in flight, the last turn, the final reflections
    assert [r.stage for r in resumed.requests].count("demonstration") == 0
    assert sorted(resumed.replayed) == sorted([("demonstration", d.id, "Read the cookbook first.") for d in docs]
                                              + [("reflect", d.id, "Read the cookbook first.") for d in docs])
    second_trial = [r for r in resumed.requests if r.stage == Stage.STEP]
    assert all(sum(m.role == "assistant" for m in r.messages) >= 4 for r in second_trial)  # trial 2 went on, not restarted


def test_game_agents_take_their_memory_back_from_a_replay(tiny):
    """A resumed chunk hands each method its earlier memory answers: the next reflection
    builds on them as if the run had not stopped."""
    from harness.method import MethodOptions
    from methods.introspective_tips import IntrospectiveTips, IntrospectiveTipsArgs
    from methods.reflexion import Reflexion, ReflexionArgs

    trajectory = (ChatMessage("system", "Play."), ChatMessage("user", "A kitchen."), ChatMessage("assistant", "look"),
                  ChatMessage("user", "The game ended: you ran out of steps, with score 0 of 3."))
    reflect = ActRequest(trajectory, 64, stage=Stage.REFLECT, episode="g1")
    options = MethodOptions(show_progress=False)
    original = Reflexion(tiny, ReflexionArgs(), options)
    original.write = lambda prompts, n=160: ["note A"]
    (first,) = original.act([reflect])
    restarted = Reflexion(tiny, ReflexionArgs(), options)
    restarted.replay([reflect], [first])
    restarted.write = original.write = lambda prompts, n=160: ["note B"]
    assert restarted.act([reflect])[0].info["memory"] == original.act([reflect])[0].info["memory"] == "- note A\n- note B"

    tips = IntrospectiveTips(tiny, IntrospectiveTipsArgs(), options)
    tips.replay([reflect], [GenerateResult("- Open the fridge", 0, "stop", {"memory": "- Open the fridge"})])
    prompts = []
    tips.write = lambda batch, n=200: prompts.extend(batch) or ["- Read the cookbook"]
    tips.act([reflect])
    assert "Current tips:\n- Open the fridge" in prompts[0]
