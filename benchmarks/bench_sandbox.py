"""The sandbox's minimal file-system tree against the read-only host file system: the
reference solutions of MBXP, Multi-HumanEval and HumanEval-XL must pass at the same rate in
both (the tree holds everything the toolchains need), and the tree's cost per program run.

    HARNESS_DATA_DIR=../shared/data python benchmarks/bench_sandbox.py [--problems 8] [--languages python,perl]

For each language with a toolchain and each dataset, the first N problems with a reference
solution are assembled the way mxeval assembles a completion (prompt + solution + tests) and
run once per mode, the two modes alternating per problem in one process. Prints pass rates
per mode and the ratio of total wall time (tree / host). Needs root (the tree is a mount
namespace); elsewhere it says so and exits.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import sandbox  # noqa: E402
from harness.data import DataStore  # noqa: E402
from tasks.code_languages import LANGUAGES, assemble, run_program  # noqa: E402
from tasks.code_repair import load_problems  # noqa: E402

DATASETS = ("mbxp", "multi-humaneval", "humaneval-xl")


def _reference_solutions(data: DataStore, language, dataset: str) -> dict[str, str]:
    """task id -> reference solution (the task's loader keeps only what a model may see)."""
    relative = {"mbxp": language.mbxp, "multi-humaneval": language.multi_humaneval, "humaneval-xl": language.humaneval_xl}[dataset]
    if relative is None:
        return {}
    path = data.file(relative, "humaneval_xl" if dataset == "humaneval-xl" else "mxeval")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {row["task_id"]: row.get("canonical_solution") or "" for row in rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=8, help="problems per language and dataset")
    parser.add_argument("--languages", default="", help="comma-separated; default every language with a toolchain")
    args = parser.parse_args()
    full = sandbox.isolation()
    if "minimal-root" not in full:
        print(f"the minimal tree is not available here (isolation: {', '.join(full)}); run as root on Linux")
        return 1
    host = tuple(p for p in full if p != "minimal-root")
    names = [n for n in args.languages.split(",") if n] or [n for n, lang in LANGUAGES.items() if lang.available()]
    data = DataStore(None)
    totals = {"tree": 0.0, "host": 0.0}
    print(f"{'language':12s} {'dataset':16s} {'n':>3s} {'pass tree':>9s} {'pass host':>9s} {'same verdicts':>13s}")
    for name in names:
        language = LANGUAGES[name]
        for dataset in DATASETS:
            solutions = _reference_solutions(data, language, dataset)
            problems = [p | {"canonical_solution": solutions[p["task_id"]]} for p in load_problems(data, language, dataset, "all")
                        if solutions.get(p["task_id"])][: args.problems]
            verdicts: dict[str, list[bool]] = {"tree": [], "host": []}
            for problem in problems:
                _, program = assemble(language, problem, problem["canonical_solution"])
                for mode, applied in (("tree", full), ("host", host)):
                    sandbox.isolation = lambda applied=applied: applied  # noqa: B023 (the mode under test)
                    began = time.perf_counter()
                    verdicts[mode].append(run_program(language, program).passed)
                    totals[mode] += time.perf_counter() - began
            same = sum(a == b for a, b in zip(verdicts["tree"], verdicts["host"], strict=True))
            n = len(problems)
            if n:
                print(f"{name:12s} {dataset:16s} {n:3d} {sum(verdicts['tree']) / n:9.3f} {sum(verdicts['host']) / n:9.3f} {same:>10d}/{n}")
    if not totals["host"]:
        print("no problem with a reference solution was run")
        return 1
    print(f"wall time: tree {totals['tree']:.1f} s, host {totals['host']:.1f} s, ratio {totals['tree'] / totals['host']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
