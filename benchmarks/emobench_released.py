"""Rescore EmoBench's released raw outputs with the harness's parser and aggregation.

The paper-era commit of Sahandfer/EmoBench (cef95c3) ships every evaluated model's outputs,
``data/{EA,EU}/Results/<model>/<model>-<lang>[_cot][1|2|3].csv`` (five replies per question
and the parsed index of each), and ``evaluate.py``, which prints the paper's table. This
script computes the same table with ``tasks/emobench_protocol.py`` (the majority vote, EU's
both-right rule, the mean over the four choice orders, two decimals) and, with ``--official``,
runs the official ``evaluate.py`` on the same files and compares every cell as printed.

    python benchmarks/emobench_released.py DIR [--official] [--reparse]

DIR is a checkout of cef95c3 or a git repository holding that commit (it is extracted to a
temporary folder). ``--reparse`` also parses every stored reply again with the official
``process_output`` and counts where it disagrees with the stored index (the stored indices of
some models come from a more lenient parser; the paper's numbers use the stored ones).
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.emobench_protocol import majority_vote, paper_score, process_output  # noqa: E402

COMMIT = "cef95c3c37e8f35eaa1aad28b8d8dde0dfdda664"
SAMPLES = 5
COLUMNS = (("-en", "English"), ("-zh", "Chinese"), ("-en_cot", "English (CoT)"), ("-zh_cot", "Chinese (CoT)"))


def checkout(source: Path, commit: str, scratch: Path) -> Path:
    """A folder holding the commit's files: ``source`` itself when it is one, else extracted from git."""
    if (source / "data" / "EA" / "Results").is_dir():
        return source
    archive = subprocess.run(["git", "-C", str(source), "archive", commit], capture_output=True, check=False)
    if archive.returncode != 0:
        sys.exit(f"{source}: neither a checkout with data/EA/Results nor a git repository holding {commit[:7]} "
                 f"({archive.stderr.decode().strip()})")
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(scratch, filter="data")
    return scratch


def file_key(path: Path) -> str:
    """evaluate.py's key: the file name without ``.csv`` and without one trailing 1, 2 or 3."""
    name = path.name.removesuffix(".csv")
    return name[:-1] if name[-1] in "123" else name


def file_accuracy(frame: pd.DataFrame, part: str, language: str, reparse: bool, mismatches: list[int]) -> float:
    """Majority-vote accuracy (%) of one 200-row file; EU counts a row when emotion and cause are both right."""
    prefixes = [""] if part == "EA" else ["Emo ", "Cause "]
    right = pd.Series(True, index=frame.index)
    for prefix in prefixes:
        # As evaluate.py reads them: a file with fewer samples has NaN columns (one Llama-2-13b CoT file has 3).
        stored = frame[[f"{prefix}Pred {i + 1}" for i in range(SAMPLES)]].to_numpy(dtype=object).tolist()
        if reparse:
            choices = [ast.literal_eval(c) for c in frame[f"{prefix}Choices"]]
            replies = frame[[f"{prefix}Res {i + 1}" for i in range(SAMPLES)]].fillna("").astype(str).to_numpy().tolist()
            parsed = [[process_output(r, c, language, part) for r in row] for row, c in zip(replies, choices, strict=True)]
            pairs = [(a, b) for row_a, row_b in zip(parsed, stored, strict=True) for a, b in zip(row_a, row_b, strict=True) if b == b]
            mismatches[0] += sum(a != b for a, b in pairs)  # NaN (b != b): a sample the file does not hold
            mismatches[1] += len(pairs)
            stored = parsed
        votes = pd.Series([majority_vote(row) for row in stored], index=frame.index)
        right &= votes == frame[f"{prefix}Label"].astype(int)
    return 100 * float(right.mean())


def ours(root: Path, part: str, reparse: bool) -> tuple[dict[str, dict[str, str]], list[int]]:
    """{model: {file key: score}} for one part, computed here."""
    table: dict[str, dict[str, str]] = {}
    mismatches = [0, 0]
    for folder in sorted((root / "data" / part / "Results").iterdir()):
        scores: dict[str, list[float]] = {}
        for path in sorted(folder.glob("*.csv")):
            frame = pd.read_csv(path)
            if len(frame) != 200:  # evaluate.py skips incomplete files
                continue
            language = "zh" if "-zh" in path.name else "en"
            scores.setdefault(file_key(path), []).append(file_accuracy(frame, part, language, reparse, mismatches))
        table[folder.name] = {key: paper_score(values) for key, values in scores.items()}
    return table, mismatches


OFFICIAL_DRIVER = """
import json, os, sys
sys.argv = ["evaluate.py", "--task", {part!r}, "--eval_all"]
source = open("evaluate.py").read().replace('if __name__ == "__main__":', "if False:")
exec(compile(source, "evaluate.py", "exec"))
directory = "data/{part}/Results"
print(json.dumps({{m: evaluate(m, {part!r}, eval_all=True) for m in sorted(os.listdir(directory))}}))
"""


def official(root: Path, part: str) -> dict[str, dict[str, str]]:
    """evaluate.py's own scores (the strings it prints), run in the checkout."""
    done = subprocess.run([sys.executable, "-c", OFFICIAL_DRIVER.format(part=part)], cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"evaluate.py failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def render(part: str, table: dict[str, dict[str, str]]) -> str:
    lines = [f"{part:<22}" + "".join(f"{title:>15}" for _, title in COLUMNS)]
    for model, scores in table.items():
        lines.append(f"{model:<22}" + "".join(f"{scores.get(model + suffix, '-'):>15}" for suffix, _ in COLUMNS))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a checkout of Sahandfer/EmoBench at cef95c3, or a git repository holding it")
    parser.add_argument("--commit", default=COMMIT)
    parser.add_argument("--official", action="store_true", help="also run the official evaluate.py and compare every cell")
    parser.add_argument("--reparse", action="store_true", help="parse the stored replies again with process_output")
    args = parser.parse_args()
    failed = False
    with tempfile.TemporaryDirectory() as scratch:
        root = checkout(args.source, args.commit, Path(scratch))
        for part in ("EA", "EU"):
            table, mismatches = ours(root, part, reparse=False)
            print(render(part, table), "\n")
            if args.official:
                reference = official(root, part)
                cells = [(m, k) for m in reference for k in reference[m]]
                wrong = [(m, k, table.get(m, {}).get(k), reference[m][k]) for m, k in cells if table.get(m, {}).get(k) != reference[m][k]]
                extra = [(m, k) for m in table for k in table[m] if k not in reference.get(m, {})]
                print(f"{part}: {len(cells) - len(wrong)} of {len(cells)} cells equal evaluate.py's" + (f"; {len(extra)} cells it lacks" if extra else ""))
                for model, key, got, want in wrong:
                    print(f"  {model} {key}: ours {got}, evaluate.py {want}")
                failed |= bool(wrong or extra)
            if args.reparse:
                reparsed, mismatches = ours(root, part, reparse=True)
                print(f"{part}: re-parsing the stored replies with process_output disagrees with the stored index on "
                      f"{mismatches[0]:,} of {mismatches[1]:,} replies; the scores they give:")
                print(render(part, reparsed), "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
