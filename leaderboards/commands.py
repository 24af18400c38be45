"""``harness leaderboard``: the static site from a run store or published results. Wired into ``harness.cli``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from harness.errors import ArgumentError
from harness.store import open_store


def add_parsers(sub: Any) -> None:
    board = sub.add_parser("leaderboard", help="build the static leaderboard site from the run index")
    board.add_argument("--out", type=Path, default=Path("site"), help="site folder (replaced); default ./site")
    board.add_argument("--title", default="harness leaderboard")
    board.add_argument("--from", "--output-dir", dest="output_dir", type=Path, default=None,
                       help="run store or published results folder (e.g. results/); default $HARNESS_RUNS_DIR or ./runs")


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from leaderboards.site import build_site

    store = open_store(args.output_dir)
    if not store.root.is_dir():
        raise ArgumentError(f"no run store at {store.root} (run something first, or pass --output-dir)")
    index = build_site(store, args.out, title=args.title)
    print(f"leaderboard: {index}")
    return 0


HANDLERS = {"leaderboard": cmd_leaderboard}
