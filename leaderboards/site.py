"""The static leaderboard site (``harness leaderboard``), built from a run store or from the
published runs in ``results/``.

Output, in one folder that opens from disk (no server, no network):
- ``index.html``: one page (inline CSS and JS). An overview grid
  (systems × task variants, the best cell per column marked, mean win rate), then one table
  per task: every finished run's main metric with its 95% CI, the other metrics, n and cost,
  each row linking to its run's page, and the task's plots. Columns sort best-first in the
  direction their metric prefers; filters by task, method and model. Links to one page per paper.
- ``plots/<task>-<n>.svg``: the task plots the page shows. Files, not data URIs inlined in the
  page: inlined, fifty plots made index.html 2.4 MB, most of it base64 a reader may never open.
- ``papers/<paper>.html`` (and ``.md``): each paper spec's table regenerated from these runs,
  reported rows beside reproduced ones, every reproduced cell and claim linked to its run.
- ``runs/<run_id>/index.html``: one page per run, as HELM's per-instance view: the spec, the
  command that reproduces it, metrics with CIs, cost, plots, then its samples with search, a
  filter on right/wrong or any per-sample field, and paging. The samples travel as
  ``samples.js`` (gzip, base64; the browser inflates them), beside ``spec.json``,
  ``results.json`` and the plot artifacts. The samples view's script is ``assets/run.js``,
  one file for every run page.
- ``data/leaderboard.json`` (everything on the page) and ``data/<table>.csv`` per table.

The build is deterministic (no timestamps, fixed SVG ids), so a committed site can be checked
against a rebuild from ``results/``. It is written into a temporary folder and swapped in at
the end: a failed build never leaves a half-written site behind.
"""

from __future__ import annotations

import base64
import csv
import json
import shlex
import shutil
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

import harness
from harness.errors import HarnessError
from harness.store import SAMPLES_GZ, PublishedStore, RunDir, RunStore, atomic_write_json, staged_folder
from leaderboards.plots import task_plots
from reports.catalog import RunEntry, latest_per_cell, load_entries, metric_order
from reports.tables import format_value

TEMPLATES = Path(__file__).parent / "templates"
RUN_FILES = ("spec.json", "results.json")


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    kind: str  # "higher" / "lower" (metrics), "number", "text"


def _metric_names(entries: Sequence[RunEntry]) -> list[str]:
    """Top-level metrics in the task's own order, main first (breakdowns named
    ``metric/group`` stay in the JSON and the breakdown plot)."""
    names: dict[str, None] = {}
    for e in entries:
        names.setdefault(e.main_metric, None)
    for e in entries:
        for name in [*metric_order(e.task, e.task_config), *e.metrics]:
            if "/" not in name and name in e.metrics:
                names.setdefault(name, None)
    return list(names)


def task_table(entries: Sequence[RunEntry]) -> dict[str, Any]:
    metrics = _metric_names(entries)
    higher = {m: next(e.higher_is_better(m) for e in entries if m in e.metrics) for m in metrics}
    columns = [Column("system", "method · model", "text"), Column("variant", "variant", "text")]
    columns += [Column(m, m, "higher" if higher[m] else "lower") for m in metrics]
    columns += [Column("n", "n", "number"), Column("wall_time_s", "wall s", "number"),
                Column("tokens_processed", "tokens", "number"), Column("model_calls", "calls", "number")]
    rows = []
    for e in entries:
        cells: dict[str, Any] = {"system": e.system, "variant": e.variant, "n": e.n}
        for key in ("wall_time_s", "tokens_processed", "model_calls"):
            cells[key] = e.cost.get(key)
        for m in metrics:
            found = e.metrics.get(m, {})
            cells[m] = {"value": found.get("value"), "ci_low": found.get("ci_low"), "ci_high": found.get("ci_high")}
        rows.append({"run_id": e.run_id, "task": e.task, "method": e.method, "model": e.model, "cells": cells})
    return {"columns": [c.__dict__ for c in columns], "rows": rows, "main_metric": metrics[0] if metrics else None}


def _beats(a: float, b: float, higher: bool) -> float:
    if a == b:
        return 0.5
    return 1.0 if (a > b) == higher else 0.0


def overview(entries: Sequence[RunEntry]) -> dict[str, Any]:
    """Systems × task variants on each variant's main metric, with HELM's mean win rate:
    per column, the share of the other systems a system beats (ties count half), averaged
    over the columns where it has a number and at least one rival."""
    columns = sorted({e.column for e in entries})
    systems = sorted({e.system for e in entries})
    cell = {(e.system, e.column): e for e in entries}
    best: dict[str, str] = {}
    wins: dict[str, list[float]] = defaultdict(list)
    for column in columns:
        scored = [(s, cell[s, column]) for s in systems if (s, column) in cell and _number(cell[s, column].value())]
        if not scored:
            continue
        higher = scored[0][1].higher_is_better()
        pick = max if higher else min
        if len(scored) > 1:  # a lone entry is not "best" of anything
            best[column] = pick(scored, key=lambda p: p[1].value())[0]
        for s, e in scored:
            rivals = [r.value() for t, r in scored if t != s]
            if rivals:
                wins[s].append(sum(_beats(e.value(), r, higher) for r in rivals) / len(rivals))
    rows = []
    for s in systems:
        any_entry = next(e for e in entries if e.system == s)
        row_cells = {}
        for column in columns:
            e = cell.get((s, column))
            if e is not None:
                m = e.metrics[e.main_metric]
                row_cells[column] = {"run_id": e.run_id, "metric": e.main_metric, "value": m.get("value"),
                                     "ci_low": m.get("ci_low"), "ci_high": m.get("ci_high"),
                                     "higher_is_better": e.higher_is_better(), "best": best.get(column) == s}
        win_rate = sum(wins[s]) / len(wins[s]) if wins[s] else None
        rows.append({"system": s, "method": any_entry.method, "model": any_entry.model, "cells": row_cells,
                     "mean_win_rate": win_rate})
    rows.sort(key=lambda r: -1.0 if r["mean_win_rate"] is None else r["mean_win_rate"], reverse=True)
    first = {e.column: e for e in reversed(entries)}
    return {
        "columns": [{"key": c, "task": first[c].task, "metric": first[c].main_metric,
                     "higher_is_better": first[c].higher_is_better()} for c in columns],
        "rows": rows,
    }


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and value == value  # not NaN


def _copy_run(e: RunEntry, site: Path) -> list[str]:
    """Copy the run's files into the site; returns the SVG artifacts (plots) it has."""
    target = site / "runs" / e.run_id
    target.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        if (e.path / name).is_file():
            shutil.copy2(e.path / name, target / name)
    results = json.loads((e.path / "results.json").read_text(encoding="utf-8")) if (e.path / "results.json").is_file() else {}
    svgs = []
    for name in results.get("artifacts", []):
        source = e.path / name
        if source.is_file() and source.suffix in (".svg", ".png"):
            shutil.copy2(source, target / name)
            if source.suffix == ".svg":
                svgs.append(name)
    return svgs


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _csv_value(cell: Any) -> Any:
    return cell.get("value") if isinstance(cell, dict) else cell


def _write_tables(data_dir: Path, tasks: dict[str, dict[str, Any]], grid: dict[str, Any]) -> None:
    for task, table in tasks.items():
        keys = [c["key"] for c in table["columns"]]
        header = ["run_id", *keys]
        for c in table["columns"]:
            if c["kind"] in ("higher", "lower"):
                header += [f"{c['key']}_ci_low", f"{c['key']}_ci_high"]
        rows = []
        for row in table["rows"]:
            line = [row["run_id"], *[_csv_value(row["cells"].get(k)) for k in keys]]
            for c in table["columns"]:
                if c["kind"] in ("higher", "lower"):
                    found = row["cells"].get(c["key"]) or {}
                    line += [found.get("ci_low"), found.get("ci_high")]
            rows.append(line)
        _write_csv(data_dir / f"{task}.csv", header, rows)
    columns = [c["key"] for c in grid["columns"]]
    _write_csv(data_dir / "overview.csv", ["system", *columns, "mean_win_rate"],
               [[r["system"], *[_csv_value(r["cells"].get(c)) for c in columns], r["mean_win_rate"]] for r in grid["rows"]])


def _outcome_field(task: str, config: dict[str, Any]) -> tuple[str | None, bool]:
    """The 0/1 per-sample field of the task's first proportion metric (right/wrong, attack
    succeeded, game won), what the run page's outcome filter splits on, and whether 1 is the
    good outcome (an attack that succeeded is not)."""
    from harness.runner import make_task

    try:
        metrics = make_task(task, config).metrics()
    except HarnessError:
        return None, True
    found = next((m for m in metrics if m.ci == "wilson" and len(m.fields) == 1), None)
    return (found.fields[0], found.higher_is_better) if found else (None, True)


def _samples_js(run: RunDir) -> tuple[str, list[str]]:
    """The run's samples as a script the page loads from disk (base64 of the gzip: a browser
    cannot fetch files next to a page opened from disk, but it runs a script tag), and the
    per-sample fields with scalar values (the filter's choices)."""
    from harness.runner import ordered_samples
    from reports.publish import INPUTS_GZ, gzip_jsonl

    published = run.path / SAMPLES_GZ
    records = ordered_samples(run)
    packed = published.read_bytes() if not run.samples_path.is_file() and published.is_file() else gzip_jsonl(records)
    fields = sorted({k for r in records for k, v in r.items() if k != "doc_id" and (v is None or isinstance(v, (bool, int, float, str)))})
    script = "window.HARNESS_SAMPLES_GZ = " + json.dumps(base64.b64encode(packed).decode("ascii")) + ";\n"
    if (run.path / INPUTS_GZ).is_file():
        script += "window.HARNESS_INPUTS_GZ = " + json.dumps(base64.b64encode((run.path / INPUTS_GZ).read_bytes()).decode("ascii")) + ";\n"
    return script, fields


def _metric_rows(e: RunEntry) -> list[dict[str, Any]]:
    """Main metric first, then the task's own order, then breakdowns (``metric/group``)."""
    order = [e.main_metric, *metric_order(e.task, e.task_config)]
    names = list(dict.fromkeys([n for n in order if n in e.metrics] + sorted(e.metrics)))
    return [{"name": n, "main": n == e.main_metric, **e.metrics[n]} for n in names]


def _run_page(e: RunEntry, site: Path, environment: Environment, manifest: dict[str, Any], papers_for: list[str]) -> None:
    """``runs/<id>/index.html`` and its samples script."""
    from reports.publish import machine_summary, reproduce_argv

    run = RunDir(e.path)
    spec, results, state = run.spec(), run.results() or {}, run.state()
    published = manifest.get(e.run_id, {})
    devices = [str(s.get("device")) for s in state.get("sessions", [])]
    script, fields = _samples_js(run)
    folder = site / "runs" / e.run_id
    (folder / "samples.js").write_text(script, encoding="utf-8")
    page = {
        "run_id": e.run_id, "task": e.task, "variant": e.variant, "method": e.method_label, "model": e.model,
        "system": e.system, "seed": e.seed, "n": e.n, "limit": e.limit,
        "command": published.get("command") or shlex.join(reproduce_argv(spec, devices)),
        "machine": published.get("machine") or machine_summary(state),
        "samples_note": (published.get("samples") or {}).get("trimmed"),
        "dropped_fields": (published.get("samples") or {}).get("dropped_fields", []),
        "spec": spec.as_dict() | {"selection": {k: v for k, v in spec.selection.items() if k != "doc_ids"}},
        "metrics": _metric_rows(e), "cost": results.get("cost", {}), "timing": results.get("timing", {}),
        "protocol": results.get("protocol") or {}, "method_settings": results.get("method_settings") or {},
        "data_files": _data_files(results), "data_hub": (results.get("data") or {}).get("hub") or [],
        "artifacts": [a for a in results.get("artifacts", []) if a.endswith((".svg", ".png")) and (folder / a).is_file()],
        "fields": fields, "papers": papers_for,
    }
    page["outcome_field"], page["outcome_one_is_good"] = _outcome_field(e.task, e.task_config)
    html = environment.get_template("run.html.j2").render(page=page, title=f"run {e.run_id}")
    (folder / "index.html").write_text(html, encoding="utf-8")



def _data_files(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The files a run read: recorded by its data store (``results["data"]["files"]``), or by
    the task's protocol in runs made before the store recorded them."""
    files = (results.get("data") or {}).get("files")
    if files is None:
        legacy = (results.get("protocol") or {}).get("data") or []
        files = [legacy] if isinstance(legacy, dict) else legacy
    return [f for f in files if isinstance(f, dict) and f.get("file")]

def _run_page_link(run_id: str) -> str:
    return f"../runs/{run_id}/index.html"  # from papers/<paper>.html


def _paper_pages(store: RunStore, entries: Sequence[RunEntry], site: Path, environment: Environment) -> list[dict[str, Any]]:
    """``papers/<paper>.html`` and ``.md`` for every paper spec; returns their summaries."""
    from reports import paper_render, paper_spec, papers

    folder = site / "papers"
    folder.mkdir()
    summaries = []
    for name in paper_spec.available():
        report = papers.regenerate(paper_spec.load_spec(name), store, list(entries))
        (folder / f"{name}.md").write_text(paper_render.to_markdown(report, run_href=_run_page_link), encoding="utf-8")
        tables = [{"table": t, "grid": paper_render.grid(t)} for t in report["tables"]]
        claims = [{"claim": c, "line": paper_render.claim_line(c)} for c in report["claims"]]
        html = environment.get_template("paper.html.j2").render(report=report, tables=tables, claims=claims,
                                                                 title=report["title"])
        (folder / f"{name}.html").write_text(html, encoding="utf-8")
        verdicts = [c["verdict"] for c in report["claims"]]
        summaries.append({
            "paper": name, "title": report["title"], "citation": report["citation"],
            "reproduced": sum(1 for t in report["tables"] for r in t["rows"] if r.get("run_id")),
            "missing": sum(len(t["missing"]) for t in report["tables"]),
            "claims": {v: verdicts.count(v) for v in dict.fromkeys(verdicts)},
            "runs": sorted({r["run_id"] for t in report["tables"] for r in t["rows"] if r.get("run_id")}
                           | {m[k] for c in report["claims"] for m in c["per_model"] for k in ("baseline_run", "treatment_run")}),
        })
    return summaries


def build_site(store: RunStore, out: Path, title: str = "harness leaderboard") -> Path:
    """Build the site into ``out`` (replacing an earlier build); returns index.html's path."""
    every_run = load_entries(store)
    entries = latest_per_cell(every_run)
    manifest = store.manifest()["runs"] if isinstance(store, PublishedStore) else {}
    out = out.resolve()
    with staged_folder(out) as staging:
        (staging / "data").mkdir()
        (staging / "plots").mkdir()
        (staging / "assets").mkdir()
        shutil.copy2(TEMPLATES / "run.js", staging / "assets" / "run.js")  # the run pages' script, once
        environment = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))
        environment.filters.update(fmt=_cell_text, ci=_cell_ci, sortkey=_sort_key)
        by_task: dict[str, list[RunEntry]] = defaultdict(list)
        for e in sorted(entries, key=lambda e: (e.task, e.variant, e.system)):
            by_task[e.task].append(e)
        run_svgs = {e.run_id: _copy_run(e, staging) for e in every_run}
        tasks, sections = {}, []
        for task, task_entries in sorted(by_task.items()):
            tasks[task] = task_table(task_entries)
            run_plots = [(f"{name} · {e.system} [{e.variant}]", f"runs/{e.run_id}/{name}")
                         for e in task_entries for name in run_svgs[e.run_id]]
            plots = []
            for number, (title_, svg) in enumerate(task_plots(task, task_entries), 1):
                (staging / "plots" / f"{task}-{number}.svg").write_text(svg, encoding="utf-8")
                plots.append((title_, f"plots/{task}-{number}.svg"))
            sections.append({"task": task, "table": tasks[task], "plots": plots, "run_plots": run_plots})
        paper_list = _paper_pages(store, every_run, staging, environment)
        for e in every_run:
            _run_page(e, staging, environment, manifest, [p["paper"] for p in paper_list if e.run_id in p["runs"]])
        grid = overview(entries)
        payload = {"title": title, "source": store.root.name, "harness_version": harness.__version__,
                   "n_runs": len(entries), "n_runs_in_store": len(every_run), "overview": grid, "tasks": tasks,
                   "papers": paper_list}
        atomic_write_json(staging / "data" / "leaderboard.json", payload)
        _write_tables(staging / "data", tasks, grid)
        html = environment.get_template("index.html.j2").render(
            title=title, payload=payload, sections=sections, grid=grid, papers=paper_list,
            methods=sorted({e.method for e in entries}), models=sorted({e.model for e in entries}),
        )
        (staging / "index.html").write_text(html, encoding="utf-8")
    return out / "index.html"


def _cell_text(cell: Any) -> str:
    value = cell.get("value") if isinstance(cell, dict) else cell
    if isinstance(value, float):
        return format_value(value)
    return "–" if value is None else str(value)


def _cell_ci(cell: Any) -> str:
    if not isinstance(cell, dict) or cell.get("ci_low") is None or cell.get("ci_high") is None:
        return ""
    return f"[{format_value(cell['ci_low'])}, {format_value(cell['ci_high'])}]"


def _sort_key(cell: Any) -> str:
    """The value a column sorts on, as the page's script reads it (empty = missing)."""
    value = cell.get("value") if isinstance(cell, dict) else cell
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return repr(float(value)) if isinstance(value, (int, float)) else str(value)
