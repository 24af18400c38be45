"""Sweeps: a task × method × model × seed grid, each cell a normal run in the shared run store.

A grid comes from YAML (``harness sweep GRID.yaml``) or the command line (repeated
``--task``/``--method``/``--model``/``--seed``; a ``--task-arg``/``--method-arg`` key given
several times is swept over its values, and ``NAME:key=value`` scopes one to a single task or
method). Cells whose task needs a capability the method lacks are dropped, said once up front;
any other bad input (a name, an argument) stops the sweep before anything runs.

Executors run the cells; both give the run ids and samples of a serial ``harness run``, since
a cell is exactly a ``RunRequest``:
- ``local``: a process pool (``jobs`` workers, spawned). A worker keeps the last model it
  loaded and hands each cell a fresh copy (methods such as quantize change weights in place),
  so a worker going through one model's cells loads it once. A worker that dies (killed, out of
  memory) breaks the pool: the cells in flight are run again in a new pool, where the run
  store resumes them from their last saved chunk.
- ``ray``: one Ray task per cell (``ray.init()`` starts a local cluster, ``address`` joins one),
  ``num_cpus`` 1 and ``num_gpus`` 1 for a CUDA cell; Ray retries a lost worker and, with
  ``retry_exceptions=True``, an unexpected exception, ``retries`` times.
Bad input inside a cell (``HarnessError``) is a failed cell, not retried. Two sweeps over one
store never write one run: a cell another process is writing is waited for, then reused.
"""

from __future__ import annotations

import itertools
import json
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

from harness.config import cli_value
from harness.errors import ArgumentError, HarnessError, IncompatibleError

Executor = Literal["local", "ray"]


@dataclass(frozen=True)
class Axis:
    """A task or a method with its fixed arguments and the arguments swept over (cross product)."""

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)
    grid: Mapping[str, Sequence[Any]] = field(default_factory=dict)

    def expand(self) -> list[dict[str, Any]]:
        keys = sorted(self.grid)
        return [{**self.args, **dict(zip(keys, values, strict=True))} for values in itertools.product(*(self.grid[k] for k in keys))]


@dataclass(frozen=True)
class Grid:
    tasks: tuple[Axis, ...]
    methods: tuple[Axis, ...] = (Axis("base"),)
    models: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0,)
    limit: int | None = None
    batch_size: int | Literal["auto"] = "auto"
    device: str = "auto"
    model_args: dict[str, Any] = field(default_factory=dict)  # loading options given to every model (--model-arg)


@dataclass(frozen=True)
class CellResult:
    """How one cell ended: ``finished`` (run now or earlier) or ``failed`` (with one line)."""

    index: int
    status: Literal["finished", "failed"]
    run_id: str | None = None
    reused: bool = False
    seconds: float = 0.0
    main_metric: str | None = None
    value: float | None = None
    error: str | None = None


# --- grids ----------------------------------------------------------------------------------

def _axis(raw: Any, where: str) -> Axis:
    if isinstance(raw, str):
        return Axis(raw)
    if not isinstance(raw, dict) or "name" not in raw or set(raw) - {"name", "args", "grid"}:
        raise ArgumentError(f"{where}: each entry is a name or {{name, args, grid}}; got {raw!r}")
    grid = raw.get("grid") or {}
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise ArgumentError(f"{where} '{raw['name']}': grid maps each argument to a non-empty list of values")
    return Axis(str(raw["name"]), dict(raw.get("args") or {}), {k: list(v) for k, v in grid.items()})


def grid_from_yaml(path: Path) -> Grid:
    import yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ArgumentError(f"cannot read grid {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ArgumentError(f"grid {path} is not valid YAML: {str(error).splitlines()[0]}") from None
    known = {"tasks", "methods", "models", "seeds", "limit", "batch_size", "device", "model_args"}
    if not isinstance(raw, dict) or "tasks" not in raw or set(raw) - known:
        raise ArgumentError(f"grid {path}: a mapping with 'tasks' and any of {', '.join(sorted(known - {'tasks'}))}")
    from harness.zoo import DEFAULT_MODEL

    return Grid(
        tasks=tuple(_axis(t, "tasks") for t in _list(raw["tasks"])),
        methods=tuple(_axis(m, "methods") for m in _list(raw.get("methods") or ["base"])),
        models=tuple(str(m) for m in _list(raw.get("models") or [DEFAULT_MODEL])),
        seeds=tuple(int(s) for s in _list(raw.get("seeds") if raw.get("seeds") is not None else [0])),
        limit=raw.get("limit"), batch_size=raw.get("batch_size", "auto"), device=str(raw.get("device", "auto")),
        model_args=_model_args(raw.get("model_args"), path),
    )


def _model_args(raw: Any, path: Path) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ArgumentError(f"grid {path}: model_args maps loading options to values (e.g. {{max_concurrency: 4}})")
    return {str(k): v for k, v in raw.items()}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def grid_from_cli(tasks: Sequence[str], methods: Sequence[str], models: Sequence[str], seeds: Sequence[int],
                  task_args: Sequence[str], method_args: Sequence[str], limit: int | None,
                  batch_size: int | Literal["auto"], device: str, model_args: Sequence[str] = ()) -> Grid:
    """Repeated ``--task-arg k=v`` with one key sweeps its values; ``NAME:k=v`` applies to NAME
    alone. ``--model-arg k=v`` goes to every model, unswept."""
    from harness.config import parse_pairs

    return Grid(tasks=tuple(_cli_axis(t, task_args, "--task-arg") for t in tasks),
                methods=tuple(_cli_axis(m, method_args, "--method-arg") for m in methods or ["base"]),
                models=tuple(models), seeds=tuple(seeds or [0]), limit=limit, batch_size=batch_size, device=device,
                model_args=parse_pairs(model_args, "--model-arg"))


def _cli_axis(name: str, pairs: Sequence[str], flag: str) -> Axis:
    values: dict[str, list[Any]] = {}
    for pair in pairs:
        scope, _, assignment = pair.rpartition(":") if ":" in pair.split("=", 1)[0] else ("", "", pair)
        if scope and scope != name:
            continue
        key, sep, raw = assignment.partition("=")
        if not sep or not key:
            raise ArgumentError(f"{flag} expects [NAME:]KEY=VALUE; got '{pair}'")
        values.setdefault(key.strip().replace("-", "_"), []).append(raw.strip())  # typed later, like harness run's
    fixed = {k: v[0] for k, v in values.items() if len(v) == 1}
    return Axis(name, fixed, {k: v for k, v in values.items() if len(v) > 1})


def cells_of(grid: Grid, output_dir: Path, data_dir: str | None) -> list[Any]:
    """Every RunRequest of the grid, in a stable order (model-major, so a worker reuses its model)."""
    from harness.runner import RunRequest

    cells = []
    for model in grid.models:
        for task in grid.tasks:
            for task_args in task.expand():
                for method in grid.methods:
                    for method_args in method.expand():
                        for seed in grid.seeds:
                            cells.append(RunRequest(task=task.name, method=method.name, model=model, model_args=grid.model_args,
                                                    task_args=task_args,
                                                    method_args=method_args, seed=seed, limit=grid.limit,
                                                    batch_size=grid.batch_size, device=grid.device, output_dir=output_dir,
                                                    data_dir=data_dir, show_progress=False))
    return cells


# --- planning -------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlannedCell:
    request: Any  # RunRequest
    run_id: str
    n_docs: int
    status: Literal["finished", "partial", "new"]
    n_done: int
    estimate_s: float | None  # from earlier finished runs of the same task, method and model


def plan(cells: Sequence[Any]) -> tuple[list[PlannedCell], list[str]]:
    """Each cell validated and resolved (no weights load) with its run id and state; the
    incompatible pairs dropped, each reason once. Other bad input raises."""
    from harness.runner import prepare
    from harness.store import RunStore

    planned, skipped = [], []
    for request in cells:
        try:
            prepared = prepare(request)
        except IncompatibleError as error:
            if str(error) not in skipped:
                skipped.append(str(error))
            continue
        store = RunStore(request.output_dir)
        run = store.run(prepared.spec.run_id)
        done = len(run.samples()) if run.exists() else 0
        status: Literal["finished", "partial", "new"] = (
            "finished" if run.exists() and run.results() is not None else "partial" if done else "new")
        per_doc = _seconds_per_doc(store, request)
        remaining = len(prepared.docs) - done
        planned.append(PlannedCell(request, prepared.spec.run_id, len(prepared.docs), status, done,
                                   None if per_doc is None or status == "finished" else per_doc * remaining))
    return planned, skipped


def _seconds_per_doc(store: Any, request: Any) -> float | None:
    rates = []
    for row in store.rows(task=request.task, method=request.method, status="finished"):
        cost = json.loads(row["cost_json"] or "{}")
        spec = json.loads(row["spec_json"])
        if spec["model"]["name"] == request.model or row["model"] == request.model:
            if cost.get("wall_time_s") and row["n_samples"]:
                rates.append(cost["wall_time_s"] / row["n_samples"])
    return sum(rates) / len(rates) if rates else None


def command_of(request: Any) -> str:
    """The ``harness run`` command that runs one cell alone."""
    words = ["harness", "run", "--task", request.task, "--method", request.method, "--model", request.model]
    for flag, args in (("--model-arg", request.model_args), ("--task-arg", request.task_args), ("--method-arg", request.method_args)):
        words += [word for key, value in sorted(args.items()) for word in (flag, f"{key}={cli_value(value)}")]
    if request.seed:
        words += ["--seed", str(request.seed)]
    if request.limit:
        words += ["--limit", str(request.limit)]
    if request.batch_size != "auto":
        words += ["--batch-size", str(request.batch_size)]
    if request.device != "auto":
        words += ["--device", request.device]
    words += ["--output-dir", str(request.output_dir)]
    return shlex.join(words)


# --- one cell -------------------------------------------------------------------------------

def run_cell(index: int, request: Any) -> CellResult:
    """Run one cell in this process: a failed cell for bad input; any other exception is raised
    so the executor retries it (a worker that dies is retried by the executor too)."""
    from harness import models, progress
    from harness.runner import run

    progress.set_shown(False)
    models.share_loaded(True)
    began = time.perf_counter()
    try:
        outcome = run(replace(request, show_progress=False), wait_for_lock=True)
    except HarnessError as error:
        return CellResult(index, "failed", seconds=time.perf_counter() - began, error=str(error))
    results = outcome.results
    main = results["metrics"].get(results["main_metric"], {})
    return CellResult(index, "finished", outcome.run_id, outcome.reused, time.perf_counter() - began,
                      results["main_metric"], main.get("value"))


# --- executors ------------------------------------------------------------------------------

Report = Callable[[CellResult], None]


def run_local(cells: Sequence[Any], jobs: int, retries: int, report: Report, started: Callable[[int], None]) -> list[CellResult]:
    """A spawned process pool; cells in flight when a worker dies run again in a new pool."""
    results: dict[int, CellResult] = {}
    attempts = dict.fromkeys(range(len(cells)), 0)
    pending = list(range(len(cells)))
    while pending:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futures: dict[Future[CellResult], int] = {}
            for index in pending:
                futures[pool.submit(run_cell, index, cells[index])] = index
                started(index)
            pending = []
            broken = False
            remaining = set(futures)
            while remaining:
                done, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                for future in done:
                    index = futures[future]
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        broken = True
                        _retry_or_fail(index, attempts, retries, pending, results, report, "a worker process died")
                        continue
                    except Exception as error:  # an unexpected failure inside the cell
                        _retry_or_fail(index, attempts, retries, pending, results, report, f"{type(error).__name__}: {error}")
                        continue
                    results[index] = result
                    report(result)
            if broken:
                print(f"sweep: a worker died; running {len(pending)} cell(s) again (the run store resumes them)", file=sys.stderr)
    return [results[i] for i in range(len(cells))]


def _retry_or_fail(index: int, attempts: dict[int, int], retries: int, pending: list[int], results: dict[int, CellResult],
                   report: Report, why: str) -> None:
    attempts[index] += 1
    if attempts[index] <= retries:
        pending.append(index)
    else:
        results[index] = CellResult(index, "failed", error=f"{why} (after {retries} retries)")
        report(results[index])


def run_ray(cells: Sequence[Any], address: str | None, jobs: int | None, retries: int, report: Report,
            started: Callable[[int], None]) -> list[CellResult]:
    try:
        import ray
    except ImportError:
        raise ArgumentError("--executor ray needs Ray: pip install 'harness[ray]'") from None
    if not ray.is_initialized():
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if address:
            options["address"] = address
        else:
            # A local cluster's workers import the harness from where this process did, installed or not.
            import os

            root = str(Path(__file__).resolve().parents[1])
            options["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}}
            if jobs:
                options["num_cpus"] = jobs
        ray.init(**options)
    remote = ray.remote(run_cell)
    refs = {}
    for index, request in enumerate(cells):
        gpu = 1 if str(request.device).startswith("cuda") else 0
        refs[remote.options(num_cpus=1, num_gpus=gpu, max_retries=retries, retry_exceptions=True).remote(index, request)] = index
        started(index)
    results: dict[int, CellResult] = {}
    while refs:
        done, _ = ray.wait(list(refs), num_returns=1)
        for ref in done:
            index = refs.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as error:  # retries exhausted: the worker died or the cell kept raising
                result = CellResult(index, "failed", error=f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''} "
                                                          f"(after {retries} retries)")
            results[index] = result
            report(result)
    return [results[i] for i in range(len(cells))]


def execute(cells: Sequence[Any], executor: Executor, jobs: int, retries: int = 2, address: str | None = None,
            show_progress: bool = True) -> list[CellResult]:
    """Run the cells; a progress bar counts done / running / failed with an ETA from finished cells."""
    from harness.progress import bar

    running: set[int] = set()
    failed = 0
    with bar(total=len(cells), desc="sweep", unit="cell", disable=not show_progress) as progress:
        def started(index: int) -> None:
            running.add(index)
            progress.set_postfix(running=min(len(running), jobs), failed=failed, refresh=True)

        def report(result: CellResult) -> None:
            nonlocal failed
            running.discard(result.index)
            failed += result.status == "failed"
            progress.update(1)
            progress.set_postfix(running=min(len(running), jobs), failed=failed, refresh=True)

        if executor == "ray":
            return run_ray(cells, address, jobs, retries, report, started)
        return run_local(cells, jobs, retries, report, started)


def cell_label(request: Any) -> list[Any]:
    """A cell's task, method, model, seed and arguments, as the sweep's tables show them."""
    args = ", ".join(f"{k}={cli_value(v)}" for k, v in sorted({**request.task_args, **request.method_args}.items()))
    return [request.task, request.method, request.model, request.seed, args or "-"]


def summary_rows(planned: Iterable[PlannedCell], results: Sequence[CellResult]) -> list[list[Any]]:
    return [cell_label(cell.request) + [result.run_id or cell.run_id, "reused" if result.reused else result.status,
                                        result.main_metric or "-", result.value]
            for cell, result in zip(planned, results, strict=True)]

