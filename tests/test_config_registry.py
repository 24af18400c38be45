from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from typing import Literal

import pytest

from harness.config import build, parse_pairs
from harness.errors import ArgumentError, UnknownNameError
from harness.method import METHODS
from harness.registry import Registry
from harness.task import TASKS


@dataclass(frozen=True)
class Args:
    alpha: float = 20.0
    k: int = 4
    verbose: bool = False
    mode: Literal["a", "b"] = "a"
    reference: str | None = None


def test_typed_arguments_are_converted():
    args = build(Args, parse_pairs(["alpha=2.5", "k=8", "verbose=yes", "mode=b", "reference=none"], "--method-arg"), "method 'x'")
    assert args == Args(alpha=2.5, k=8, verbose=True, mode="b", reference=None)


@pytest.mark.parametrize(
    "pair, message",
    [
        ("k=four", "must be an integer"),
        ("alpha=fast", "must be a number"),
        ("verbose=maybe", "must be true or false"),
        ("mode=c", "must be one of a, b"),
        ("alpah=1", "did you mean 'alpha'"),
    ],
)
def test_bad_arguments_name_the_problem(pair, message):
    with pytest.raises(ArgumentError, match=message):
        build(Args, parse_pairs([pair], "--method-arg"), "method 'x'")


def test_malformed_pair():
    with pytest.raises(ArgumentError, match="expects key=value"):
        parse_pairs(["alpha"], "--method-arg")


def test_unknown_names_suggest_the_closest():
    with pytest.raises(UnknownNameError, match="did you mean 'pubmedqa'"):
        TASKS.get("pubmedq")
    with pytest.raises(UnknownNameError, match="did you mean 'base'"):
        METHODS.get("bsae")


def test_builtin_names_import_lazily_by_convention():
    code = (
        "import sys; from harness.task import TASKS; "
        "assert 'tasks.pubmedqa' not in sys.modules; "
        "TASKS.get('pubmedqa'); "
        "assert 'tasks.pubmedqa' in sys.modules and 'tasks.wikitext103' not in sys.modules and 'lm_eval' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_entry_point_plugins_and_lazy_targets(monkeypatch):
    class FakeEntryPoint:
        name = "plugin-task"
        value = "tasks.pubmedqa:PubMedQA"

    monkeypatch.setattr("harness.registry.entry_points", lambda group: [FakeEntryPoint()] if group == "test.group" else [])
    registry: Registry[type] = Registry("task", "tasks", "test.group")
    assert "plugin-task" in registry.names()
    assert registry.get("plugin-task").__name__ == "PubMedQA"


def test_lazy_module_attr_entries():
    registry: Registry[type] = Registry("task", "tasks", "test.none")
    registry.register_lazy("lazy-pubmedqa", "tasks.pubmedqa:PubMedQA")
    assert registry.get("lazy-pubmedqa").__name__ == "PubMedQA"


def test_prefix_resolution():
    registry: Registry[str] = Registry("task", "tasks", "test.none")
    registry.register_prefix("x:", lambda rest: f"resolved {rest}")
    assert registry.get("x:abc") == "resolved abc"


@dataclass(frozen=True)
class DocumentedArgs:
    alpha: float = 20.0  # suspicion threshold
    # tokens per check,
    # in one forward pass
    k: int = 4
    mode: Literal["a", "b"] = "a"


def test_arguments_carry_type_default_and_the_comment_that_explains_them():
    from harness.config import arguments

    assert [(a.name, a.type, a.default, a.meaning) for a in arguments(DocumentedArgs)] == [
        ("alpha", "float", 20.0, "suspicion threshold"), ("k", "int", 4, "in one forward pass"), ("mode", "'a' | 'b'", "a", "")]


def test_every_task_and_method_argument_says_what_it_means():
    from harness.config import arguments

    silent = [f"task {n}: {a.name}" for n, c in TASKS.items() for a in arguments(c.Config) if not a.meaning]
    silent += [f"method {n}: {a.name}" for n, c in METHODS.items() for a in arguments(c.Args) if not a.meaning]
    assert not silent, "arguments with no comment beside their field: " + ", ".join(silent)


def test_ls_describes_one_task_or_method_and_the_matrix_marks_adaptable_pairs(capsys):
    from conftest import cli

    assert cli("ls", "method", "cleangen") == 0
    out = capsys.readouterr().out
    assert "provides: act, generate" in out and "alpha" in out and "suspicion threshold on P_target / P_ref" in out
    assert cli("ls", "task", "ubench") == 0
    assert "'loglikelihood' | 'generate'" in capsys.readouterr().out
    assert cli("ls", "matrix") == 0
    ubench_row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("ubench "))
    assert "✓ mode=generate" in ubench_row  # ubench x cleangen runs: the task switches to generate mode
    assert cli("ls", "task") == 2 and cli("ls", "method", "nope") == 2
    capsys.readouterr()
    assert cli("ls", "models") == 0
    kinds = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()[2:] if line.startswith("tiny-random-")}
    assert kinds == {"tiny-random-llama": "causal-lm", "tiny-random-llava": "image-text-to-text", "tiny-random-reward": "sequence-classifier"}


@pytest.mark.parametrize("method", ["base", "prune", "quantize"])
def test_every_method_with_a_context_length_refuses_one_shorter_than_two(method):
    """prune and quantize declared max_length without base's check, so max_length=1 got through."""
    cls = METHODS.get(method)
    with pytest.raises(ArgumentError, match="max_length must be at least 2"):
        build(cls.Args, {"max_length": "1"}, f"method '{method}'")
