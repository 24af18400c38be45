"""Whether a change moved any number: the same specs, run before and after it, must give
byte-identical samples.

Run the same ``harness run`` commands into two stores (one from a worktree of the old commit,
one from the new), then::

    python benchmarks/samples_unchanged.py BEFORE_STORE AFTER_STORE

Same spec = same run id, so runs are paired by id. Prints one line per run and exits 1 if
any pair differs (or a run is missing from either store).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _runs(store: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(store.iterdir()) if (p / "results.json").is_file()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    before, after = _runs(args.before), _runs(args.after)
    moved = 0
    for run_id in sorted(before.keys() | after.keys()):
        if run_id not in before or run_id not in after:
            print(f"{run_id}  only in {'after' if run_id in after else 'before'}")
            moved += 1
            continue
        spec = json.loads((before[run_id] / "spec.json").read_text())
        label = f"{spec['task']['name']} × {spec['method']['name']} × {spec['model']['name']} (limit {spec['selection']['limit']})"
        a, b = (before[run_id] / "samples.jsonl").read_bytes(), (after[run_id] / "samples.jsonl").read_bytes()
        same = a == b
        moved += not same
        print(f"{run_id}  {'identical' if same else 'DIFFERENT'}  {len(a.splitlines())} samples  {label}")
    return 1 if moved else 0


if __name__ == "__main__":
    sys.exit(main())
