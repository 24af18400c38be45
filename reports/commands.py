"""Command-line verbs over the run index: ``harness table``, ``harness paper``, ``harness publish``.
Wired into ``harness.cli``; kept here so the engine's CLI stays small."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from harness.errors import ArgumentError
from harness.store import default_runs_dir, open_store


def add_parsers(sub: Any) -> None:
    table = sub.add_parser("table", help="an ad-hoc table from the run index (Markdown, LaTeX, CSV, JSON, HTML)")
    table.add_argument("--task", help="only runs of this task")
    table.add_argument("--method", help="only runs of this method")
    table.add_argument("--model", help="only runs on this model")
    table.add_argument("--metric", default="main", help="comma-separated metrics, or 'main' (each run's main metric)")
    table.add_argument("--rows", default="system", help="row label: task, column, variant, method, model, system, metric, seed")
    table.add_argument("--cols", default="column", help="column label (same choices as --rows)")
    table.add_argument("--ci", action="store_true", help="show the 95%% CI beside each value")
    table.add_argument("--format", default="md", choices=["md", "latex", "csv", "json", "html"])
    table.add_argument("--output-dir", type=Path, default=None, help="run store folder")

    publish = sub.add_parser("publish", help="copy finished runs into a published results folder (checked, with a manifest)")
    publish.add_argument("runs", nargs="*", metavar="RUN", help="run ids or unique prefixes")
    publish.add_argument("--check", action="store_true",
                         help="publish nothing; check the folder (every spec hashes to its id, every file matches MANIFEST.json), "
                              "or with --model that carried model's files")
    publish.add_argument("--unfinished", action="store_true",
                         help="also carry runs still under way, samples whole, so another machine resumes them "
                              "(the manifest names the command; conventionally --to progress/)")
    publish.add_argument("--remove", action="store_true", help="drop the named runs (full ids) from --to instead")
    publish.add_argument("--model", default=None, metavar="NAME",
                         help="carry a LoRA-trained zoo model instead: its adapter, config, tokenizer and recipe, not its merged "
                              "weights (conventionally --to models/; 'harness train restore models/NAME' rebuilds it)")
    publish.add_argument("--judgment", type=Path, action="append", default=[], metavar="FILE",
                         help="publish a judgment ('harness judge' JSON) beside its two runs, which --to must hold (repeatable)")
    publish.add_argument("--to", type=Path, default=None, help="published results folder; default ./results (with --model: ./models)")
    publish.add_argument("--output-dir", type=Path, default=None, help="run store the runs are in")
    publish.add_argument("--max-sample-bytes", type=int, default=None,
                         help="compressed samples above this keep whole records for a seeded sample only (default 2,000,000)")
    publish.add_argument("--data-dir", default=None, help="local data mirror (to rebuild each document's input); default $HARNESS_DATA_DIR")

    judge = sub.add_parser("judge", help="a judge model's paired win/tie/lose rates of run B's answers against run A's")
    judge.add_argument("run_a", help="the baseline run")
    judge.add_argument("run_b", help="the run judged against it")
    judge.add_argument("--judge", default="gemma3-270m", help="zoo model, folder or HF id that judges; default gemma3-270m")
    judge.add_argument("--max-new-tokens", type=int, default=32, help="judge output budget (its first line holds the scores)")
    judge.add_argument("--scoring", default="generate", choices=["generate", "loglikelihood"],
                       help="generate: the judge writes the scores (official); loglikelihood: read off its likelihoods of 1..10")
    judge.add_argument("--limit", type=int, default=None, help="judge only the first N shared documents")
    judge.add_argument("--out", type=Path, default=None, help="judgment JSON; default <store>/judgments/<a>-vs-<b>-<judge>.json")
    judge.add_argument("--output-dir", type=Path, default=None, help="run store the runs are in")
    judge.add_argument("--data-dir", default=None, help="local data mirror (to rebuild each question); default $HARNESS_DATA_DIR")
    judge.add_argument("--quiet", action="store_true")

    paper = sub.add_parser("paper", help="regenerate a paper's tables and check its claims (reports/papers/<paper>.yaml)")
    paper.add_argument("paper", nargs="?", help="paper spec name, or 'list'")
    paper.add_argument("--all", action="store_true", help="every paper with a spec")
    paper.add_argument("--out", type=Path, default=None,
                       help="folder for .md/.tex/.html/.json; default ./papers/<paper> (with --all: <out>/<paper>)")
    paper.add_argument("--run", action="store_true", help="run the missing cells whose task and method exist")
    paper.add_argument("--limit", type=int, default=None, help="use (and run) seeded subsets of N documents for every cell")
    paper.add_argument("--runs", "--output-dir", dest="output_dir", type=Path, default=None,
                       help="run store or published results folder (e.g. results/); default $HARNESS_RUNS_DIR or ./runs")
    paper.add_argument("--data-dir", default=None, help="local data mirror; default $HARNESS_DATA_DIR")
    paper.add_argument("--executor", default="local", choices=["local", "ray"], help="with --run: how the missing cells run (harness sweep)")
    paper.add_argument("--jobs", type=int, default=1, help="with --run: cells at once")
    paper.add_argument("--address", default=None, help="with --run --executor ray: a cluster to join")
    paper.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_table(args: argparse.Namespace) -> int:
    from reports.catalog import latest_per_cell, load_entries
    from reports.tables import long_frame, pivot, render

    entries = [e for e in load_entries(open_store(args.output_dir))
               if (args.task is None or e.task == args.task) and (args.method is None or e.method == args.method)
               and (args.model is None or e.model == args.model)]
    if not entries:
        raise ArgumentError("no finished runs match (see 'harness show')")
    frame = long_frame(latest_per_cell(entries), [m.strip() for m in args.metric.split(",") if m.strip()])
    if frame.empty:
        raise ArgumentError(f"no run has the metric(s) {args.metric}")
    print(render(pivot(frame, args.rows, args.cols, with_ci=args.ci), args.format))
    return 0


def _with_limit(spec, limit: int | None):
    def cell(c):
        return dataclasses.replace(c, limit=limit)

    tables = tuple(dataclasses.replace(t, cells=tuple(cell(c) for c in t.cells)) for t in spec.tables)
    claims = tuple(dataclasses.replace(c, cell=cell(c.cell)) for c in spec.claims)
    return dataclasses.replace(spec, tables=tables, claims=claims)


def _run_link(store, folder: Path):
    """Links from a report in ``folder`` to each run's results in the store."""
    return lambda run_id: os.path.relpath(store.root / run_id / "results.json", folder)


def cmd_publish(args: argparse.Namespace) -> int:
    from reports.publish import MAX_SAMPLE_BYTES, publish, publish_judgment, remove, verify
    from reports.wintie import JUDGMENTS

    if args.to is None:
        args.to = Path("models") if args.model is not None else Path("results")
    if args.check and args.model is not None:
        from training.carry import check_carried

        check_carried(args.to / args.model)
        print(f"{args.to / args.model}: sound")
        return 0
    if args.check:
        if args.runs:
            raise ArgumentError("--check takes no runs: it checks the whole folder")
        problems = verify(args.to)
        for problem in problems:
            print(f"{args.to}: {problem}", file=sys.stderr)
        print(f"{args.to}: {'sound' if not problems else f'not sound ({len(problems)} found)'}")
        return 1 if problems else 0
    if args.model is not None:
        from training.carry import carry_model

        if args.runs or args.unfinished or args.remove:
            raise ArgumentError("--model carries one zoo model: give no runs, --unfinished or --remove with it")
        folder = carry_model(args.model, args.to)
        print(f"carried {args.model} -> {folder}  (rebuild elsewhere: harness train restore {folder})")
        return 0
    if args.judgment:
        if args.runs or args.unfinished or args.remove:
            raise ArgumentError("--judgment publishes judgments only: publish their runs first, without it")
        for path in args.judgment:
            print(f"published {path} -> {args.to / JUDGMENTS / publish_judgment(path, args.to)}")
        return 0
    if args.remove:
        for run_id in remove(args.to, args.runs):
            print(f"removed {run_id} from {args.to}")
        return 0
    if args.max_sample_bytes is not None and args.max_sample_bytes < 1:
        raise ArgumentError(f"--max-sample-bytes must be a positive integer; got {args.max_sample_bytes}")
    store = open_store(args.output_dir)
    for done in publish(store, args.runs, args.to, args.max_sample_bytes or MAX_SAMPLE_BYTES, args.data_dir, args.unfinished):
        kept = "all" if done.full_records == done.n_samples else f"{done.full_records} of {done.n_samples} whole (the rest: score fields)"
        print(f"published {done.run_id} -> {done.path}  samples: {kept}, {done.samples_bytes / 1e6:.2f} MB")
    print(f"manifest: {args.to / 'MANIFEST.json'}")
    return 0


def cmd_paper(args: argparse.Namespace) -> int:
    from reports import paper_render, paper_spec, papers
    from reports.catalog import load_entries

    if args.all:
        if args.paper is not None:
            raise ArgumentError("give a paper name or --all, not both")
        if args.run or args.limit is not None:
            raise ArgumentError("--all regenerates from existing runs; run one paper at a time with --run")
        store = open_store(args.output_dir)
        out = args.out or Path("papers")
        entries = load_entries(store)
        for name in paper_spec.available():
            report = papers.regenerate(paper_spec.load_spec(name), store, entries)
            paper_render.write_report(report, out / name, _run_link(store, out / name))
            verdicts = [c["verdict"] for c in report["claims"]]
            reproduced = sum(1 for t in report["tables"] for r in t["rows"] if r.get("run_id"))
            print(f"{name:20s} {reproduced} reproduced rows; claims: "
                  + (", ".join(f"{verdicts.count(v)} {v}" for v in dict.fromkeys(verdicts)) or "none"))
        print(f"written: {out}/<paper>/<paper>.md|.tex|.html|.json")
        return 0
    if args.paper is None:
        raise ArgumentError("name a paper (harness paper list), or pass --all")
    if args.paper == "list":
        for name in paper_spec.available():
            spec = paper_spec.load_spec(name)
            print(f"{name:20s} {spec.title} ({spec.citation}); {len(spec.tables)} tables, {len(spec.claims)} claims")
        return 0
    if args.limit is not None and args.limit < 1:
        raise ArgumentError(f"--limit must be a positive integer; got {args.limit}")
    spec = paper_spec.load_spec(args.paper)
    if args.limit is not None:
        spec = _with_limit(spec, args.limit)
    store = open_store(args.output_dir)
    if args.run:  # the missing cells as one sweep (harness sweep's executors)
        from harness import sweep
        from harness.runner import RunRequest

        todo = papers.runnable_missing(spec, store)
        requests = [RunRequest(task=cell.task, method=cell.method, model=model, task_args=cell.task_args,
                               method_args=cell.method_args, seed=cell.seed, limit=cell.limit, output_dir=store.root,
                               data_dir=args.data_dir, show_progress=False) for cell, model in todo]
        for i, (cell, model) in enumerate(todo, 1):
            print(f"[{i}/{len(todo)}] {cell.task} × {cell.method} × {model}" + (f" (n={cell.limit})" if cell.limit else ""), file=sys.stderr)
        results = sweep.execute(requests, args.executor, args.jobs, address=args.address, show_progress=not args.quiet) if requests else []
        for request, result in zip(requests, results, strict=True):
            if result.status == "failed":
                print(f"failed: {result.error}\n  rerun alone: {sweep.command_of(request)}", file=sys.stderr)
    report = papers.regenerate(spec, store)
    out = args.out or Path("papers") / spec.paper
    written = paper_render.write_report(report, out, _run_link(store, out))
    print(paper_render.to_markdown(report))
    print("written: " + ", ".join(str(p) for p in written))
    return 0


def cmd_judge(args: argparse.Namespace) -> int:
    from harness import models
    from harness.lm import auxiliary_lm
    from harness.store import atomic_write_json
    from reports import wintie

    if args.limit is not None and args.limit < 1:
        raise ArgumentError(f"--limit must be a positive integer; got {args.limit}")
    store = open_store(args.output_dir)
    pairs = wintie.pairs_of(store, args.run_a, args.run_b, args.data_dir)[: args.limit]
    run_a, run_b = store.find(args.run_a).run_id, store.find(args.run_b).run_id
    judge = auxiliary_lm(args.judge)
    judge.show_progress = not args.quiet
    records = wintie.judge_pairs(pairs, judge, args.max_new_tokens, args.scoring)
    summary = wintie.summarize_verdicts(records)
    # Published runs are never written to: their judgment goes to the working store, whence
    # 'harness publish --judgment' puts it beside them.
    home = default_runs_dir() if store.read_only else store.root
    out = args.out or home / wintie.JUDGMENTS / wintie.judgment_name(run_a, run_b, args.judge, args.scoring)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, {"run_a": run_a, "run_b": run_b, "judge": models.resolve(args.judge).identity.as_dict(),
                            "protocol": wintie.__doc__, "system_prompt": wintie.SYSTEM_PROMPT, "user_prompt": wintie.USER_PROMPT,
                            "scoring": args.scoring, "max_new_tokens": args.max_new_tokens, "summary": summary, "pairs": records})
    print(f"B = {run_b} against A = {run_a}, judge {args.judge}: {summary['n_judged']} of {summary['n_pairs']} pairs judged "
          f"({summary['counts']['unparseable']} unparseable, counted apart)")
    for name in ("win", "tie", "lose", "win_tie"):
        value = summary[name]
        if value["rate"] is not None:
            print(f"  {name:8s} {value['rate']:.3f} [{value['ci_low']:.3f}, {value['ci_high']:.3f}]")
    print(f"written: {out}")
    return 0


HANDLERS = {"table": cmd_table, "paper": cmd_paper, "publish": cmd_publish, "judge": cmd_judge}
