"""The ``harness`` command line: run, ls, show, rescore, compare (and, from ``reports``:
table, leaderboard, paper; from ``training``: attack)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from harness import progress
from harness.config import describe, parse_pairs
from harness.errors import ArgumentError, HarnessError

# Verbs outside the engine (reports, training) live with their code.
COMMAND_MODULES = ("reports.commands", "leaderboards.commands", "training.commands")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not usage + error
        self.exit(2, f"harness: error: {message} (see '{self.prog} --help')\n")


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got '{value}'")
    return number


def _batch_size(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return _positive_int(value)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be 'auto' or a positive integer, got '{value}'") from None


def build_parser() -> argparse.ArgumentParser:
    from harness.zoo import DEFAULT_MODEL

    parser = _Parser(prog="harness", description="Reproducible LLM evaluation: tasks x methods x models.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run (or resume, or reuse) one task x method x model cell")
    run.add_argument("--task", required=True, help="task name (harness ls tasks), or lm-eval:<name>")
    run.add_argument("--method", default="base", help="method name (harness ls methods); default: base")
    run.add_argument("--model", default=DEFAULT_MODEL, help=f"zoo name, local folder or Hugging Face id; default: {DEFAULT_MODEL}")
    run.add_argument("--model-arg", action="append", default=[], metavar="K=V",
                     help="model loading option (repeatable): revision, device_map, attn_implementation, trust_remote_code, "
                          "quantization; for API models max_concurrency, timeout, max_retries, prices")
    run.add_argument("--max-concurrency", type=_positive_int, default=None,
                     help="API models: requests in flight at once (same as --model-arg max_concurrency=N)")
    run.add_argument("--task-arg", action="append", default=[], metavar="K=V", help="task argument (repeatable)")
    run.add_argument("--method-arg", action="append", default=[], metavar="K=V", help="method argument (repeatable)")
    run.add_argument("--seed", type=int, default=0, help="seed for the sample subset and any sampling; default 0")
    run.add_argument("--limit", type=_positive_int, default=None, help="evaluate a seeded random subset of N documents")
    run.add_argument("--reuse-from", default=None, metavar="RUN",
                     help="take over the samples of RUN, this protocol on a smaller --limit (recorded; floats may differ "
                          "in the last digits from a fresh run), or resume from a copy of this same run carried from "
                          "another machine (harness publish --unfinished)")
    run.add_argument("--batch-size", type=_batch_size, default="auto", help="'auto' (token budget) or N sequences")
    run.add_argument("--device", default="auto", help="auto, cpu or cuda")
    run.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    run.add_argument("--chat-template", default="auto", choices=["auto", "on", "off"],
                     help="apply the model's chat template: auto = for generation tasks when the model has one")
    run.add_argument("--output-dir", type=Path, default=None, help="run store folder; default $HARNESS_RUNS_DIR or ./runs")
    run.add_argument("--data-dir", default=None, help="local data mirror; default $HARNESS_DATA_DIR")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--json", action="store_true", help="print results.json instead of a table")

    sweep = sub.add_parser("sweep", help="run a task x method x model x seed grid (YAML or flags) on local processes or Ray")
    sweep.add_argument("grid", nargs="?", type=Path, help="grid file (YAML: tasks, methods, models, seeds, limit); or use the flags")
    sweep.add_argument("--task", action="append", default=[], help="task (repeatable)")
    sweep.add_argument("--method", action="append", default=[], help="method (repeatable); default base")
    sweep.add_argument("--model", action="append", default=[], help=f"model (repeatable); default {DEFAULT_MODEL}")
    sweep.add_argument("--seed", action="append", type=int, default=[], help="seed (repeatable); default 0")
    sweep.add_argument("--task-arg", action="append", default=[], metavar="[TASK:]K=V",
                       help="task argument; a key given several times is swept over its values")
    sweep.add_argument("--method-arg", action="append", default=[], metavar="[METHOD:]K=V",
                       help="method argument; a key given several times is swept over its values")
    sweep.add_argument("--model-arg", action="append", default=[], metavar="K=V",
                       help="model loading option given to every model (repeatable; harness run --help lists them)")
    sweep.add_argument("--limit", type=_positive_int, default=None, help="seeded subset of N documents per cell")
    sweep.add_argument("--batch-size", type=_batch_size, default="auto")
    sweep.add_argument("--device", default="auto", help="auto, cpu or cuda")
    sweep.add_argument("--executor", default="local", choices=["local", "ray"], help="local process pool, or Ray")
    sweep.add_argument("--jobs", type=_positive_int, default=1, help="parallel cells (local workers; Ray: CPUs of a local cluster)")
    sweep.add_argument("--address", default=None, help="with --executor ray: join this cluster instead of starting one")
    sweep.add_argument("--retries", type=int, default=2, help="reruns of a cell whose worker died or that raised unexpectedly")
    sweep.add_argument("--dry-run", action="store_true", help="list the cells, which are finished, and estimated cost; run nothing")
    sweep.add_argument("--output-dir", type=Path, default=None, help="run store folder; default $HARNESS_RUNS_DIR or ./runs")
    sweep.add_argument("--data-dir", default=None, help="local data mirror; default $HARNESS_DATA_DIR")

    serve = sub.add_parser("serve", help="serve a method over a model as an OpenAI-compatible HTTP API")
    serve.add_argument("--method", default="base", help="method name (harness ls methods); default: base")
    serve.add_argument("--model", default=DEFAULT_MODEL, help=f"zoo name, local folder or Hugging Face id; default: {DEFAULT_MODEL}")
    serve.add_argument("--method-arg", action="append", default=[], metavar="K=V", help="method argument (repeatable)")
    serve.add_argument("--model-arg", action="append", default=[], metavar="K=V", help="model loading option (repeatable)")
    serve.add_argument("--served-model-name", default=None, help="the model name clients send; default: the --model name")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_positive_int, default=8000)
    serve.add_argument("--api-key", default=os.environ.get("HARNESS_SERVE_API_KEY"),
                       help="require this key (Authorization: Bearer KEY); default $HARNESS_SERVE_API_KEY, else none")
    serve.add_argument("--max-batch", type=_positive_int, default=32, help="requests answered in one batched call")
    serve.add_argument("--batch-window-ms", type=float, default=50.0,
                       help="how long a batch's first request waits for others (default 50; lower on a GPU)")
    serve.add_argument("--seed", type=int, default=0, help="sampling seed")
    serve.add_argument("--batch-size", type=_batch_size, default="auto")
    serve.add_argument("--device", default="auto", help="auto, cpu or cuda")
    serve.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])

    ls = sub.add_parser("ls", help="list tasks, methods, models, or the task x method matrix; or one task or method's arguments")
    ls.add_argument("what", choices=["tasks", "methods", "models", "matrix", "task", "method"])
    ls.add_argument("name", nargs="?", help="with 'task' or 'method': the one to describe")

    show = sub.add_parser("show", help="list runs in the index, or show one run's results")
    show.add_argument("run", nargs="?", help="run id or unique prefix")
    show.add_argument("--output-dir", type=Path, default=None)
    show.add_argument("--json", action="store_true")

    rescore = sub.add_parser("rescore", help="recompute a run's metrics from its saved samples (no model)")
    rescore.add_argument("run")
    rescore.add_argument("--output-dir", type=Path, default=None)

    compare = sub.add_parser("compare", help="paired comparison of two runs on their shared samples")
    compare.add_argument("run_a")
    compare.add_argument("run_b")
    compare.add_argument("--output-dir", type=Path, default=None)
    compare.add_argument("--json", action="store_true")

    for module in COMMAND_MODULES:
        importlib.import_module(module).add_parsers(sub)
    for command in sub.choices.values():  # every verb takes --quiet
        if not any("--quiet" in action.option_strings for action in command._actions):
            command.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.4e}"
    return str(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _metrics_table(results: dict[str, Any]) -> str:
    rows = []
    for name, m in results["metrics"].items():
        ci = f"[{_fmt(m['ci_low'])}, {_fmt(m['ci_high'])}]"
        rows.append([name + (" *" if name == results["main_metric"] else ""), m["value"], ci, m["n"], "higher" if m["higher_is_better"] else "lower"])
    return _table(["metric", "value", "95% CI", "n", "better"], rows)


def _runs_dir(path: Path | None) -> Path:
    from harness.store import default_runs_dir

    return path if path is not None else default_runs_dir()


def cmd_run(args: argparse.Namespace) -> int:
    from harness.runner import RunRequest, run

    model_args = parse_pairs(args.model_arg, "--model-arg")
    if args.max_concurrency is not None:
        model_args["max_concurrency"] = str(args.max_concurrency)
    request = RunRequest(
        task=args.task, method=args.method, model=args.model, model_args=model_args,
        task_args=parse_pairs(args.task_arg, "--task-arg"), method_args=parse_pairs(args.method_arg, "--method-arg"),
        seed=args.seed, limit=args.limit, batch_size=args.batch_size, device=args.device, dtype=args.dtype,
        chat_template=args.chat_template, output_dir=_runs_dir(args.output_dir), data_dir=args.data_dir,
        show_progress=not args.quiet, reuse_from=args.reuse_from,
    )
    try:
        outcome = run(request)
    except KeyboardInterrupt:
        print("harness: interrupted; finished samples are saved, rerun the same command to resume", file=sys.stderr)
        return 130
    results = outcome.results
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    status = "reused finished run" if outcome.reused else "finished run"
    print(f"{status} {outcome.run_id}  ({results['task']['name']} × {results['method']['name']} × {results['model']['name']}, n={results['n_samples']})")
    print(_metrics_table(results))
    print(f"results: {outcome.path / 'results.json'}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import importlib.util

    from harness import models
    from harness.api import Capability
    from harness.config import build
    from harness.method import METHODS, MethodOptions
    from harness.runner import load_model, resolve_device

    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        raise ArgumentError("harness serve needs fastapi and uvicorn: pip install -e '.[serve]'")
    from harness.serve import serve

    method_cls = METHODS.get(args.method)
    method_args: Any = build(method_cls.Args, parse_pairs(args.method_arg, "--method-arg"), f"method '{args.method}'")
    if not {Capability.GENERATE, Capability.ACT} & method_cls.provides:
        raise ArgumentError(f"method '{args.method}' neither generates nor acts: there is nothing to serve")
    device = resolve_device(args.device)
    resolved = models.resolve(args.model, models.resolve_dtype(args.dtype, device), parse_pairs(args.model_arg, "--model-arg"))
    if resolved.remote and not method_cls.runs_remote:
        raise ArgumentError(f"method '{args.method}' needs the model's weights; '{args.model}' is behind an API")
    method = method_cls(load_model(method_cls, resolved, device, method_args), method_args, MethodOptions(args.batch_size, args.seed, False))
    name = args.served_model_name or args.model
    print(f"serving {args.method} × {resolved.identity.name} as '{name}' on http://{args.host}:{args.port}/v1", file=sys.stderr)
    serve(method, name, args.host, args.port, args.api_key, args.max_batch, args.batch_window_ms / 1000)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from harness import sweep
    from harness.zoo import DEFAULT_MODEL

    if args.grid is not None and (args.task or args.method or args.model or args.seed or args.task_arg or args.method_arg
                                  or args.model_arg):
        raise ArgumentError("give a grid file or --task/--method/--model flags, not both")
    if args.grid is None and not args.task:
        raise ArgumentError("a sweep needs a grid file or at least one --task")
    if args.grid is not None:
        grid = sweep.grid_from_yaml(args.grid)
    else:
        grid = sweep.grid_from_cli(args.task, args.method, args.model or [DEFAULT_MODEL], args.seed, args.task_arg,
                                   args.method_arg, args.limit, args.batch_size, args.device, args.model_arg)
    planned, skipped = sweep.plan(sweep.cells_of(grid, _runs_dir(args.output_dir), args.data_dir))
    for reason in skipped:
        print(f"sweep: skipped incompatible cells: {reason}", file=sys.stderr)
    if not planned:
        raise ArgumentError("the grid has no compatible cell")
    if args.dry_run:
        rows = [sweep.cell_label(c.request) + [c.run_id, c.status, f"{c.n_done}/{c.n_docs}", c.estimate_s] for c in planned]
        print(_table(["task", "method", "model", "seed", "args", "run", "status", "done", "est. s"], rows))
        known = [c.estimate_s for c in planned if c.estimate_s is not None]
        todo = sum(c.status != "finished" for c in planned)
        print(f"{len(planned)} cells, {todo} to run" + (f"; about {sum(known):.0f} s where earlier runs tell" if known else ""))
        return 0
    results = sweep.execute([c.request for c in planned], args.executor, args.jobs, args.retries, args.address,
                            show_progress=not args.quiet)
    print(_table(["task", "method", "model", "seed", "args", "run", "status", "metric", "value"], sweep.summary_rows(planned, results)))
    failed = [(c, r) for c, r in zip(planned, results, strict=True) if r.status == "failed"]
    for cell, result in failed:
        print(f"failed: {result.error}\n  rerun alone: {sweep.command_of(cell.request)}", file=sys.stderr)
    print(f"{len(results) - len(failed)} of {len(results)} cells finished; their table: harness table --output-dir {_runs_dir(args.output_dir)}")
    return 1 if failed else 0


def cmd_ls(args: argparse.Namespace) -> int:
    from harness.method import METHODS
    from harness.task import TASKS
    from harness.zoo import zoo

    if args.what in ("task", "method"):
        return _describe_one(args.what, args.name)
    if args.name:
        raise ArgumentError(f"'harness ls {args.what}' takes no name (did you mean 'harness ls {args.what.rstrip('s')} {args.name}'?)")
    if args.what == "tasks":
        rows = [[name, ",".join(sorted(map(str, cls.requires))), cls.summary()] for name, cls in TASKS.items()]
        rows += [[f"{p}<name>", "(from the lm-eval task)", "any lm-evaluation-harness task, run through our methods"] for p in TASKS.prefixes()]
        print(_table(["task", "requires", "description"], rows))
    elif args.what == "methods":
        rows = [[name, ",".join(sorted(map(str, cls.provides))), cls.summary(), describe(cls.Args) or "–"] for name, cls in METHODS.items()]
        print(_table(["method", "provides", "description", "arguments"], rows))
    elif args.what == "models":
        rows = [[name, entry.model_kind, entry.kind, entry.description] for name, entry in sorted(zoo().items())]
        print(_table(["model", "kind", "source", "description"], rows))
        print("(also: any local model folder or Hugging Face id)")
    else:
        methods = list(METHODS.items())
        rows = []
        for task_name, task_cls in TASKS.items():
            cells = []
            for _, method_cls in methods:
                cells.append(_matrix_cell(task_cls, method_cls))
            rows.append([task_name, *cells])
        print(_table(["task \\ method", *[name for name, _ in methods]], rows))
        print("✓ runs as is; '✓ key=value' runs with that task argument, which the task picks itself when it is left open")
    return 0


def _matrix_cell(task_cls: Any, method_cls: Any) -> str:
    missing = task_cls.requires - method_cls.provides
    if not missing:
        return "✓"
    adapted = task_cls.adapt({}, method_cls.provides)
    if adapted is not None:
        return "✓ " + ",".join(f"{k}={v}" for k, v in adapted[0].items())
    return "needs " + ",".join(sorted(map(str, missing)))


def _describe_one(kind: str, name: str | None) -> int:
    """``harness ls task NAME`` / ``harness ls method NAME``: what it is, what it needs or gives, its arguments."""
    from harness.config import arguments
    from harness.method import METHODS
    from harness.task import TASKS

    if not name:
        raise ArgumentError(f"give the {kind}'s name: harness ls {kind} NAME (see 'harness ls {kind}s')")
    if kind == "task":
        task_cls = TASKS.get(name)
        print(f"task {name}: {task_cls.summary()}")
        print(f"requires: {', '.join(sorted(map(str, task_cls.requires)))}")
        options, flag = task_cls.Config, "--task-arg"
    else:
        method_cls = METHODS.get(name)
        print(f"method {name}: {method_cls.summary()}")
        print(f"provides: {', '.join(sorted(map(str, method_cls.provides)))}")
        options, flag = method_cls.Args, "--method-arg"
    rows = [[a.name, a.type, repr(a.default), a.meaning or "–"] for a in arguments(options)]
    if rows:
        print(f"arguments ({flag} key=value):")
        print(_table(["name", "type", "default", "meaning"], rows))
    else:
        print("arguments: none")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from harness.store import open_store

    store = open_store(_runs_dir(args.output_dir))
    if args.run:
        run_dir = store.find(args.run)
        results = run_dir.results()
        if results is None:
            spec = run_dir.spec()
            print(f"run {run_dir.run_id} is incomplete: {len(run_dir.samples())} of {spec.selection['n_selected']} samples; rerun its command to resume")
            return 1
        if args.json:
            print(json.dumps(results, indent=2))
        else:
            cell = f"{results['task']['name']} × {results['method']['name']} × {results['model']['name']}"
            print(f"run {results['run_id']}  {cell}  seed {results['seeds']['run']}  n={results['n_samples']}")
            print(_metrics_table(results))
            cost = results.get("cost", {})
            print("cost: " + ", ".join(f"{k}={_fmt(v)}" for k, v in cost.items()))
            print(f"folder: {run_dir.path}")
        return 0
    store.reindex()
    rows = store.rows()
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print(f"no runs in {store.root}")
        return 0
    table = [[r["run_id"], r["task"], r["method"], r["model"], r["seed"], f"{r['n_samples']}/{r['n_selected']}", r["status"],
              r["main_metric"] or "–", r["main_value"], f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"] for r in rows]
    print(_table(["run", "task", "method", "model", "seed", "samples", "status", "metric", "value", "95% CI"], table))
    return 0


def cmd_rescore(args: argparse.Namespace) -> int:
    from harness.runner import rescore
    from harness.store import open_store

    results = rescore(open_store(_runs_dir(args.output_dir)), args.run)
    print(f"rescored run {results['run_id']} from {results['n_samples']} saved samples")
    print(_metrics_table(results))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.runner import compare
    from harness.store import open_store

    comparisons, notes = compare(open_store(_runs_dir(args.output_dir)), args.run_a, args.run_b)
    if args.json:
        print(json.dumps([c.as_dict() | {"verdict": c.verdict} for c in comparisons], indent=2))
        return 0
    rows = [[c.metric, c.n_shared, c.value_a, c.value_b, c.delta, f"[{_fmt(c.delta_ci_low)}, {_fmt(c.delta_ci_high)}]", c.p_value, c.verdict]
            for c in comparisons]
    print(f"A = {args.run_a}, B = {args.run_b}; paired over shared samples (delta = B - A)")
    print(_table(["metric", "n", "A", "B", "delta", "95% CI", "p", "verdict"], rows))
    for note in notes:
        print(f"note: {note}")
    return 0


def _quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    import logging

    for name in ("lm-eval", "lm_eval", "transformers", "datasets", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_libraries()
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"run": cmd_run, "serve": cmd_serve, "sweep": cmd_sweep, "ls": cmd_ls, "show": cmd_show, "rescore": cmd_rescore, "compare": cmd_compare}
    for module in COMMAND_MODULES:
        handlers.update(importlib.import_module(module).HANDLERS)
    try:
        with _progress_bars(shown=not getattr(args, "quiet", False)):
            return handlers[args.command](args)
    except HarnessError as error:
        print(f"harness: error: {error}", file=sys.stderr)
        return error.exit_code


@contextlib.contextmanager
def _progress_bars(shown: bool) -> Iterator[None]:
    """``--quiet`` silences every progress bar: the harness's own (``harness.progress``) and transformers'."""
    if shown:
        yield
        return
    from transformers.utils import logging as transformers_logging

    progress.set_shown(False)
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers_logging.enable_progress_bar()
        progress.set_shown(True)


if __name__ == "__main__":
    sys.exit(main())
