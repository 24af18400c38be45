"""Wall time of one grid run three ways: serial ``harness run`` calls, ``harness sweep
--executor local --jobs N`` and ``--executor ray --jobs N``, each into a fresh run store, and
the overhead per cell (sweep time minus the cells' own evaluation time, over the cells).

    python benchmarks/bench_sweep.py [--limit 20] [--jobs 2] [--models smollm2-135m-instruct,gemma3-270m]

Default grid (12 cells): pubmedqa and ubench subsets × base / quantize / prune × both zoo
models. The three ways give the same run ids; the script checks it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def grid_flags(limit: int, models: list[str]) -> list[str]:
    flags = ["--task", "pubmedqa", "--task", "ubench", "--method", "base", "--method", "quantize", "--method", "prune",
             "--limit", str(limit)]
    for model in models:
        flags += ["--model", model]
    return flags


def harness(*argv: str) -> str:
    done = subprocess.run([sys.executable, "-m", "harness", *argv], cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"harness {' '.join(argv[:2])} failed: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout


def evaluation_seconds(store: Path) -> tuple[float, set[str]]:
    """Summed in-run evaluation time (results.json) and the run ids in a store."""
    total, ids = 0.0, set()
    for results in store.glob("*/results.json"):
        data = json.loads(results.read_text())
        total += data["timing"]["wall_time_s"] + data["timing"]["model_load_s"]
        ids.add(data["run_id"])
    return total, ids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--models", default="smollm2-135m-instruct,gemma3-270m")
    args = parser.parse_args()
    models = args.models.split(",")
    flags = grid_flags(args.limit, models)
    with tempfile.TemporaryDirectory() as scratch:
        stores = {name: Path(scratch) / name for name in ("serial", "local", "ray")}
        listing = harness("sweep", *flags, "--dry-run", "--output-dir", str(stores["serial"]))
        cells = [line.split() for line in listing.splitlines()[2:] if line.split() and line.split()[0] in ("pubmedqa", "ubench")]
        timings = {}
        began = time.perf_counter()
        for task, method, model, *_ in cells:
            harness("run", "--task", task, "--method", method, "--model", model, "--limit", str(args.limit), "--quiet",
                    "--output-dir", str(stores["serial"]))
        timings["serial"] = time.perf_counter() - began
        for executor in ("local", "ray"):
            began = time.perf_counter()
            harness("sweep", *flags, "--executor", executor, "--jobs", str(args.jobs), "--quiet", "--output-dir", str(stores[executor]))
            timings[executor] = time.perf_counter() - began
        evaluated = {name: evaluation_seconds(store) for name, store in stores.items()}
        same = len({frozenset(ids) for _, ids in evaluated.values()}) == 1
        print(f"{len(cells)} cells, limit {args.limit}, jobs {args.jobs}; same run ids in all three stores: {same}")
        for name, seconds in timings.items():
            inside, _ = evaluated[name]
            print(f"{name:7s} wall {seconds:7.1f} s   ratio to serial {timings['serial'] / seconds:5.2f}x   "
                  f"in-run time {inside:7.1f} s   overhead per cell {(seconds * (1 if name == 'serial' else args.jobs) - inside) / len(cells):5.1f} s")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
