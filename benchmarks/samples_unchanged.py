"""Whether a change moved any number: the same specs, run before and after it, must give
byte-identical samples.

Run the same ``harness run`` commands into two stores (one from a worktree of the old commit,
one from the new), then::

    python benchmarks/samples_unchanged.py BEFORE_STORE AFTER_STORE [--shared]

A store may be a published folder (``results/``, samples as ``samples.jsonl.gz``). Records
are compared line by line regardless of order (a resumed run appends chunks in the order it
finished them). ``--shared`` compares only the runs both stores hold.

Runs are paired by their spec without second models' identities (``auxiliary``, which
issue 26 added to the run id), so a run whose id changed only by naming its judge or
reference is still compared. Prints one line per run and exits 1 if any pair differs (or a
run is missing from either store).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path


def _runs(store: Path) -> dict[str, Path]:
    """Finished runs keyed by their spec without ``auxiliary``."""
    runs = {}
    for path in sorted(store.iterdir()):
        if path.is_dir() and (path / "results.json").is_file():
            spec = json.loads((path / "spec.json").read_text())
            spec.pop("auxiliary", None)
            runs[json.dumps(spec, sort_keys=True)] = path
    return runs


def _records(run: Path) -> list[bytes]:
    plain = run / "samples.jsonl"
    data = plain.read_bytes() if plain.is_file() else gzip.decompress((run / "samples.jsonl.gz").read_bytes())
    return sorted(data.splitlines())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--shared", action="store_true", help="compare only the runs both stores hold")
    args = parser.parse_args()
    before, after = _runs(args.before), _runs(args.after)
    moved = 0
    for key in sorted(before.keys() | after.keys()):
        if key not in before or key not in after:
            if args.shared:
                continue
            print(f"{(after.get(key) or before[key]).name}  only in {'after' if key in after else 'before'}")
            moved += 1
            continue
        spec = json.loads(key)
        run_id = before[key].name if before[key].name == after[key].name else f"{before[key].name} -> {after[key].name}"
        label = f"{spec['task']['name']} × {spec['method']['name']} × {spec['model']['name']} (limit {spec['selection']['limit']})"
        a, b = _records(before[key]), _records(after[key])
        same = a == b
        moved += not same
        print(f"{run_id}  {'identical' if same else 'DIFFERENT'}  {len(a)} samples  {label}")
    return 1 if moved else 0


if __name__ == "__main__":
    sys.exit(main())
