"""The code's module boundaries: no module reaches into another's private names, and no import cycles.

A private name (one leading underscore) is a module's own business; when another module needs
it, it becomes public API (``harness.decoding`` was made that way). Tests may look inside.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import REPO

PACKAGES = ("harness", "tasks", "methods", "reports", "leaderboards", "training", "benchmarks")


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages."""
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _defined_private_names(tree: ast.Module) -> set[str]:
    """Private names a module defines: its functions, classes, methods, and attributes it assigns."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and _private(node.name):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and _private(node.id):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _private(node.attr):
            names.add(node.attr)
    return names


def _package(module: str) -> str:
    return module.rsplit(".", 1)[0] if "." in module else module


def _private_reaches(sources: dict[str, str]) -> list[str]:
    """'module:line: the reach' for each cross-module private access among ``sources`` (module name -> code)."""
    modules = set(sources)
    trees = {name: ast.parse(code) for name, code in sources.items()}
    defined = {name: _defined_private_names(tree) for name, tree in trees.items()}
    ours = set().union(*defined.values())
    found = []
    for name, tree in trees.items():
        where = name
        own = defined[name]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
                source = node.module
                for alias in node.names:
                    target = f"{source}.{alias.name}"
                    # a package's private submodule is the package's own business
                    if _private(alias.name) and not (target in modules and _package(target) == _package(name)):
                        found.append(f"{where}:{node.lineno}: from {source} import {alias.name}")
                if any(_private(part) for part in source.split(".")) and _package(source) != _package(name):
                    found.append(f"{where}:{node.lineno}: from {source} import ...")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in PACKAGES and any(_private(p) for p in alias.name.split(".")) \
                            and _package(alias.name) != _package(name):
                        found.append(f"{where}:{node.lineno}: import {alias.name}")
            elif isinstance(node, ast.Attribute) and _private(node.attr):
                base = node.value
                if isinstance(base, ast.Name) and base.id in ("self", "cls"):
                    continue
                if isinstance(base, ast.Call) and isinstance(base.func, ast.Name) and base.func.id == "super":
                    continue
                # a private name of another of our modules, reached through something else
                if node.attr in ours and node.attr not in own:
                    found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    return sorted(found, key=lambda line: (line.split(":")[0], int(line.split(":")[1])))


def test_no_module_reaches_into_another_modules_private_names():
    found = _private_reaches({name: path.read_text(encoding="utf-8") for name, path in _modules().items()})
    assert not found, "cross-module private access (make the name public API):\n" + "\n".join(found)


def test_the_check_catches_each_kind_of_private_reach():
    sources = {
        "harness.engine": "class Engine:\n    def _step(self):\n        self._state = 1\n\ndef _helper():\n    pass\n",
        "harness._internal": "VALUE = 1\n",
        "harness.peer": "from harness import _internal\n",  # a package's private module, within the package: allowed
        "methods.user": (
            "from harness.engine import _helper\n"  # importing a private name
            "import harness._internal\n"  # importing another package's private module
            "def run(engine):\n"
            "    engine._step()\n"  # calling a private method of another module's class
            "    return engine._state\n"  # reading a private attribute it assigns
        ),
    }
    found = _private_reaches(sources)
    assert found == ["methods.user:1: from harness.engine import _helper", "methods.user:2: import harness._internal",
                     "methods.user:4: engine._step", "methods.user:5: engine._state"]


def _imports(sources: dict[str, str]) -> dict[str, set[str]]:
    """Module -> the project modules it imports, anywhere in its code (a function-level import is a
    dependency too; it only hides the cycle from Python). ``if TYPE_CHECKING:`` imports are left out."""
    modules = set(sources)
    graph: dict[str, set[str]] = {}
    for name, code in sources.items():
        tree = ast.parse(code)
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
                       for n in ast.walk(block)}
        targets = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                            for alias in node.names}
        graph[name] = {t for t in targets if t in modules and t != name and not name.startswith(t + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_no_import_cycles():
    graph = _imports({name: path.read_text(encoding="utf-8") for name, path in _modules().items()})
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_check_sees_a_function_level_import():
    sources = {"harness.a": "import harness.b\n", "harness.b": "def f():\n    from harness.a import x\n",
               "harness.c": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from harness.a import y\n"}
    assert _cycles(_imports(sources)) == [["harness.a", "harness.b"]]


def _layout_rows() -> dict[str, str]:
    """README's Layout table: path column -> its 'what' cell."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells[1]
    return rows


def test_readme_layout_names_every_module():
    rows = _layout_rows()
    missing = []
    for package in ("harness", "tasks", "methods", "training", "reports", "leaderboards"):
        cell = rows.get(f"{package}/", "")
        for path in sorted((REPO / package).glob("*.py")):
            if path.stem != "__init__" and f"`{path.stem}`" not in cell:
                missing.append(f"{package}/{path.name}")
        named = re.findall(r"`([a-z_]+)`", cell)  # a bare lower-case name in a package's row is a module
        missing += [f"{package}/{name}.py (named, but no such module)" for name in named
                    if not (REPO / package / f"{name}.py").is_file()]
    assert not missing, "README's Layout table does not match the tree: " + ", ".join(missing)


def test_only_the_zoo_module_touches_recipe_files():
    """Made models' recipes are read and written through ``harness.zoo`` alone."""
    touching = [name for name, path in _modules().items() if name != "harness.zoo"
                and ("RECIPE_FILE" in path.read_text(encoding="utf-8") or '"harness_zoo.json"' in path.read_text(encoding="utf-8"))]
    assert not touching, f"modules reading or writing recipes around harness.zoo: {touching}"
