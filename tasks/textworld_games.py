"""TextWorld games made offline (``tw-make``), one seeded file per (family, split, level, index),
and opened as TextWorld environments. The game families and GATA's cooking levels are in the
task's docstring (``tasks/textworld.py``)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from harness.errors import DataUnavailableError
from harness.zoo import cache_dir

# GATA's cooking levels (PAPERS.md §12): tw-cooking options per level.
COOKING_LEVELS: dict[int, tuple[str, ...]] = {
    1: ("--recipe", "1", "--take", "1", "--open"),
    2: ("--recipe", "1", "--take", "1", "--open", "--cook"),
    3: ("--recipe", "1", "--take", "1", "--open", "--cut"),
    4: ("--recipe", "1", "--take", "1", "--open", "--go", "6"),
    5: ("--recipe", "1", "--take", "1", "--open", "--go", "9"),
    6: ("--recipe", "1", "--take", "1", "--open", "--go", "12"),
    7: ("--recipe", "1", "--take", "1", "--open", "--cook", "--cut"),
    8: ("--recipe", "3", "--take", "3", "--go", "6", "--open"),
    9: ("--recipe", "3", "--take", "3", "--go", "6", "--open", "--cook", "--cut"),
    10: ("--recipe", "3", "--take", "3", "--go", "12", "--open", "--cook", "--cut"),
}
SEED_BASE = {"test": 100_000, "train": 500_000}


def parse_levels(text: str) -> list[int]:
    """'1-10', '1,4,8' or '3' -> sorted level numbers."""
    levels: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if re.fullmatch(r"\d+-\d+", part):
            low, high = map(int, part.split("-"))
            levels.update(range(low, high + 1))
        elif part.isdigit():
            levels.add(int(part))
        else:
            raise ValueError(f"levels must look like '1-10' or '1,4,8'; got '{text}'")
    return sorted(levels)


def tw_make_args(games: str, level: int, split: str, seed: int) -> list[str]:
    if games == "cooking":
        return ["tw-cooking", *COOKING_LEVELS[level], "--split", "train" if split == "train" else "test", "--seed", str(seed)]
    if games == "coin":
        return ["tw-coin_collector", "--level", str(level), "--seed", str(seed)]
    return ["tw-simple", "--rewards", "dense", "--goal", "detailed", "--seed", str(seed)]


def game_seed(games: str, split: str, level: int, index: int) -> int:
    offset = {"cooking": 0, "coin": 30_000, "simple": 60_000}[games]
    return SEED_BASE[split] + offset + level * 1000 + index


def _tw_make() -> list[str]:
    found = shutil.which("tw-make")
    if found:
        return [found]
    script = Path(sys.executable).with_name("tw-make")
    if script.exists():
        return [str(script)]
    raise DataUnavailableError("textworld's tw-make is not installed (pip install textworld)")


def make_game(path: Path, games: str, level: int, split: str, seed: int) -> Path:
    """Generate one game with tw-make (atomically: a half-written game is never cached)."""
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as staging:
        target = Path(staging) / path.name
        command = [*_tw_make(), *tw_make_args(games, level, split, seed), "--output", str(target), "-f", "--silent"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if result.returncode != 0 or not target.is_file():
            raise DataUnavailableError(f"tw-make failed for {path.name}: {(result.stderr or result.stdout).strip()[-300:]}")
        for produced in Path(staging).iterdir():
            if produced.name.startswith(path.stem):
                produced.replace(path.parent / produced.name)
    return path


def games_dir() -> Path:
    return cache_dir() / "textworld"


def open_game(path: str, expert: bool = False) -> Any:
    """A TextWorld environment for one game file (``reset()`` starts an episode)."""
    import textworld

    # Only the expert needs the winning policy: TextWorld recomputes it after every step,
    # which more than doubles a step's time (9.4 vs 4.4 ms on this machine).
    infos = textworld.EnvInfos(admissible_commands=True, max_score=True, won=True, lost=True, objective=True,
                               policy_commands=expert)
    return textworld.start(path, request_infos=infos)


def close_game(env: Any) -> None:
    try:
        env.close()
    except Exception:  # noqa: BLE001 - closing a finished game must not end the run
        pass
