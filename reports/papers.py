"""Paper-table regeneration (``harness paper <paper>``) from ``reports/papers/<paper>.yaml``.

A spec holds, per table, the paper's reported numbers with the table or figure they come
from (copied from ../shared/PAPERS.md; a number nobody could read stays out), the harness
cells that reproduce the protocol, and the paper's directional claims as checks. The
regenerated table puts reported rows beside reproduced rows (value and 95% CI); where a
reported row names the zoo model it was measured on, each metric gets a delta and a
tolerance verdict. A claim is checked on every model that has both runs, with the harness's
paired comparison (paired bootstrap CI of the delta, paired permutation p-value):
"supported" (the expected direction, p < 0.05), "not supported", or "not testable yet"
(its task or method is not built, or no model has both runs).
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from harness.config import build, to_dict
from harness.errors import ArgumentError, HarnessError
from harness.stats import CONFIDENCE
from harness.store import RunStore
from reports.catalog import RunEntry, load_entries
from reports.tables import format_value

SPECS = Path(__file__).parent / "papers"
Verdict = Literal["supported", "not supported", "not testable yet"]


@dataclass(frozen=True)
class Cell:
    """One reproducible protocol: a task config × method config, on the listed models."""

    task: str
    method: str = "base"
    task_args: dict[str, Any] = field(default_factory=dict)
    method_args: dict[str, Any] = field(default_factory=dict)
    models: tuple[str, ...] = ("smollm2-135m-instruct",)
    limit: int | None = None
    seed: int = 0
    label: str = ""

    def runnable(self) -> str | None:
        """Why this cell cannot run here, or None when it can."""
        try:
            self.full_task_config()
            self.full_method_args()
        except HarnessError as error:
            return str(error)
        return None

    def full_task_config(self) -> dict[str, Any]:
        from harness.runner import make_task

        return to_dict(make_task(self.task, self.task_args).config)

    def full_method_args(self) -> dict[str, Any]:
        from harness.method import METHODS

        return to_dict(build(METHODS.get(self.method).Args, self.method_args, f"method '{self.method}'"))

    def find(self, entries: Sequence[RunEntry], model: str) -> RunEntry | None:
        """The latest finished run of exactly this protocol on ``model``."""
        if self.runnable() is not None:
            return None
        task_config, method_args = self.full_task_config(), self.full_method_args()
        found = [
            e for e in entries
            if e.task == self.task and e.method == self.method and e.model == model and e.limit == self.limit
            and e.seed == self.seed and e.task_config == task_config and e.method_args == method_args
        ]
        return found[-1] if found else None


@dataclass(frozen=True)
class ReportedRow:
    model: str
    method: str
    values: dict[str, float]
    zoo_model: str | None = None  # set when the paper measured a model the zoo also has


@dataclass(frozen=True)
class PaperTable:
    id: str
    title: str
    source: str  # where in the paper the reported numbers come from
    metrics: tuple[str, ...]
    reported: tuple[ReportedRow, ...]
    cells: tuple[Cell, ...]
    tolerance: dict[str, float]
    notes: str = ""


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    cell: Cell  # the task protocol and models; its method is the baseline's
    treatment: str
    treatment_args: dict[str, Any]
    metric: str
    source: str = ""
    # Task settings that differ for the treatment (e.g. more trials for an agent with memory);
    # the rest of the protocol, the docs and the pairing are the baseline's.
    treatment_task_args: dict[str, Any] = field(default_factory=dict)
    # The treatment's model, one per baseline model, when the method needs its own weights
    # (a trained HMT model against the untouched backbone); default: the baseline's models.
    treatment_models: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.treatment_models and len(self.treatment_models) != len(self.cell.models):
            raise ValueError(f"claim {self.id}: treatment models must pair one-to-one with the baseline's models")

    def treatment_cell(self) -> Cell:
        return Cell(task=self.cell.task, method=self.treatment, task_args={**self.cell.task_args, **self.treatment_task_args},
                    method_args=self.treatment_args, models=self.treatment_models or self.cell.models, limit=self.cell.limit,
                    seed=self.cell.seed, label=self.treatment)

    def model_pairs(self) -> list[tuple[str, str]]:
        """(baseline model, treatment model) pairs the claim compares."""
        return list(zip(self.cell.models, self.treatment_cell().models, strict=True))


@dataclass(frozen=True)
class PaperSpec:
    paper: str
    title: str
    citation: str
    protocol: str
    paper_models: tuple[str, ...]
    tables: tuple[PaperTable, ...]
    claims: tuple[Claim, ...]


def _cell(raw: dict[str, Any], where: str) -> Cell:
    known = {"task", "method", "task_args", "method_args", "models", "limit", "seed", "label"}
    unknown = set(raw) - known
    if unknown or "task" not in raw:
        raise ArgumentError(f"{where}: a cell needs 'task' and takes only {', '.join(sorted(known))} (got {', '.join(sorted(raw))})")
    return Cell(task=raw["task"], method=raw.get("method", "base"), task_args=dict(raw.get("task_args") or {}),
                method_args=dict(raw.get("method_args") or {}),
                models=tuple(raw.get("models") or Cell.models), limit=raw.get("limit"), seed=int(raw.get("seed", 0)),
                label=raw.get("label") or raw.get("method", "base"))


def parse_spec(raw: dict[str, Any], name: str) -> PaperSpec:
    try:
        tables = tuple(
            PaperTable(
                id=t["id"], title=t["title"], source=t["source"], metrics=tuple(t["metrics"]),
                reported=tuple(ReportedRow(model=r["model"], method=r.get("method", "base"),
                                           values={k: float(v) for k, v in (r.get("values") or {}).items()},
                                           zoo_model=r.get("zoo_model")) for r in t.get("reported") or []),
                cells=tuple(_cell(c, f"{name}.yaml table {t['id']}") for c in t.get("cells") or []),
                tolerance={k: float(v) for k, v in (t.get("tolerance") or {}).items()}, notes=t.get("notes", ""),
            )
            for t in raw.get("tables") or []
        )
        claims = tuple(
            Claim(id=c["id"], text=c["text"], cell=_cell(c["baseline"], f"{name}.yaml claim {c['id']}"),
                  treatment=c["treatment"]["method"], treatment_args=dict(c["treatment"].get("method_args") or {}),
                  metric=c["metric"], source=c.get("source", ""),
                  treatment_task_args=dict(c["treatment"].get("task_args") or {}),
                  treatment_models=tuple(c["treatment"].get("models") or ()))
            for c in raw.get("claims") or []
        )
        return PaperSpec(paper=raw["paper"], title=raw["title"], citation=raw["citation"], protocol=raw.get("protocol", ""),
                         paper_models=tuple(raw.get("paper_models") or ()), tables=tables, claims=claims)
    except (KeyError, TypeError, ValueError) as error:
        raise ArgumentError(f"paper spec {name}.yaml is malformed: {type(error).__name__}: {error}") from None


def available() -> list[str]:
    return sorted(p.stem for p in SPECS.glob("*.yaml"))


def load_spec(paper: str, folder: Path = SPECS) -> PaperSpec:
    path = folder / f"{paper}.yaml"
    if not path.is_file():
        import difflib

        close = difflib.get_close_matches(paper, available(), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; papers with a spec: {', '.join(available())}"
        raise ArgumentError(f"no paper spec '{paper}'{hint}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ArgumentError(f"paper spec {path.name} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ArgumentError(f"paper spec {path.name} must be a mapping")
    return parse_spec(raw, paper)


# --- regeneration -------------------------------------------------------------------------

@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    verdict: Verdict
    per_model: tuple[dict[str, Any], ...]
    reason: str = ""


def check_claim(claim: Claim, entries: Sequence[RunEntry], store: RunStore) -> ClaimResult:
    from harness.runner import compare

    for cell in (claim.cell, claim.treatment_cell()):
        why = cell.runnable()
        if why is not None:
            return ClaimResult(claim, "not testable yet", (), why)
    results = []
    for model, treatment_model in claim.model_pairs():
        baseline, treatment = claim.cell.find(entries, model), claim.treatment_cell().find(entries, treatment_model)
        if baseline is None or treatment is None:
            continue
        comparisons, _ = compare(store, baseline.run_id, treatment.run_id)
        found = next((c for c in comparisons if c.metric == claim.metric), None)
        if found is None:
            return ClaimResult(claim, "not testable yet", (), f"task '{claim.cell.task}' has no metric '{claim.metric}'")
        significant = found.p_value is not None and found.p_value < 1 - CONFIDENCE
        better = (found.delta > 0) == found.higher_is_better and found.delta != 0
        results.append({
            "model": model, "treatment_model": treatment_model, "baseline_run": baseline.run_id,
            "treatment_run": treatment.run_id, "n": found.n_shared,
            "baseline": found.value_a, "treatment": found.value_b, "delta": found.delta,
            "delta_ci": [found.delta_ci_low, found.delta_ci_high], "p_value": found.p_value,
            "verdict": "supported" if significant and better else "not supported",
        })
    if not results:
        missing = ", ".join(claim.cell.models)
        return ClaimResult(claim, "not testable yet", (), f"no model has both runs yet (models: {missing})")
    verdict: Verdict = "supported" if all(r["verdict"] == "supported" for r in results) else "not supported"
    return ClaimResult(claim, verdict, tuple(results))


def regenerate(spec: PaperSpec, store: RunStore, entries: Sequence[RunEntry] | None = None) -> dict[str, Any]:
    """Reported beside reproduced for every table, and every claim's verdict (data only).
    ``entries`` (the store's finished runs) may be passed when regenerating many papers."""
    entries = load_entries(store) if entries is None else entries
    tables = []
    for table in spec.tables:
        rows = [{"source": f"paper ({table.source})", "model": r.model, "method": r.method,
                 "values": {m: {"value": r.values.get(m)} for m in table.metrics}, "zoo_model": r.zoo_model}
                for r in table.reported]
        missing = []
        for cell in table.cells:
            why = cell.runnable()
            for model in cell.models:
                found = cell.find(entries, model)
                if found is None:
                    missing.append({"cell": cell.label, "task": cell.task, "method": cell.method, "model": model,
                                    "why": why or "no finished run with this protocol yet"})
                    continue
                values = {m: {k: found.metrics.get(m, {}).get(k) for k in ("value", "ci_low", "ci_high")} for m in table.metrics}
                rows.append({"source": f"harness ({cell.label})", "model": model, "method": cell.method, "values": values,
                             "run_id": found.run_id, "n": found.n})
        for row in rows:
            if row.get("zoo_model"):
                reproduced = next((r for r in rows if r.get("run_id") and r["model"] == row["zoo_model"] and r["method"] == row["method"]), None)
                if reproduced is not None:
                    row["deltas"] = {}
                    for m in table.metrics:
                        a, b = row["values"][m]["value"], reproduced["values"][m]["value"]
                        if a is not None and b is not None:
                            tol = table.tolerance.get(m)
                            row["deltas"][m] = {"delta": b - a, "tolerance": tol, "within": None if tol is None else abs(b - a) <= tol}
        tables.append({"id": table.id, "title": table.title, "source": table.source, "metrics": list(table.metrics),
                       "notes": table.notes, "rows": rows, "missing": missing})
    claims = []
    for claim in spec.claims:
        result = check_claim(claim, entries, store)
        claims.append({"id": claim.id, "text": claim.text, "source": claim.source, "metric": claim.metric,
                       "task": claim.cell.task, "baseline": claim.cell.method, "treatment": claim.treatment,
                       "verdict": result.verdict, "reason": result.reason, "per_model": list(result.per_model)})
    return {"paper": spec.paper, "title": spec.title, "citation": spec.citation, "protocol": spec.protocol,
            "paper_models": list(spec.paper_models), "tables": tables, "claims": claims}


def runnable_missing(spec: PaperSpec, store: RunStore) -> list[tuple[Cell, str]]:
    """(cell, model) pairs with no run yet whose task, method and model exist: what ``--run`` runs."""
    from harness import zoo

    entries = load_entries(store)
    known_models = zoo.zoo()
    cells = [c for t in spec.tables for c in t.cells]
    cells += [c for claim in spec.claims for c in (claim.cell, claim.treatment_cell())]
    todo, seen = [], set()
    for cell in cells:
        if cell.runnable() is not None:
            continue
        for model in cell.models:
            if model not in known_models and not Path(model).is_dir():
                continue  # e.g. a backdoored variant nobody has made yet (harness attack)
            key = (json.dumps([cell.task, cell.task_args, cell.method, cell.method_args, cell.limit, cell.seed], sort_keys=True), model)
            if key not in seen and cell.find(entries, model) is None:
                seen.add(key)
                todo.append((cell, model))
    return todo


# --- rendering ----------------------------------------------------------------------------

def _value_text(found: dict[str, Any]) -> str:
    return format_value(found.get("value"), found.get("ci_low"), found.get("ci_high")) if found.get("value") is not None else ""


def _delta_text(row: dict[str, Any], metric: str) -> str:
    d = (row.get("deltas") or {}).get(metric)
    if not d:
        return ""
    mark = "" if d["within"] is None else (" ✓" if d["within"] else " ✗")
    return f" (Δ {d['delta']:+.3g}{mark})"


def grid(table: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """A regenerated table as text cells: header, then one row per reported or reproduced row."""
    header = ["source", "model", "method", *table["metrics"]]
    body = [[r["source"], r["model"], r["method"], *[_value_text(r["values"][m]) + _delta_text(r, m) for m in table["metrics"]]]
            for r in table["rows"]]
    return header, body


def claim_line(c: dict[str, Any]) -> str:
    details = "; ".join(
        (f"{r['treatment_model']} vs {r['model']}" if r.get("treatment_model", r["model"]) != r["model"] else r["model"])
        + f": Δ {r['delta']:+.4g} [{format_value(r['delta_ci'][0])}, {format_value(r['delta_ci'][1])}], p={r['p_value']:.3g}, n={r['n']} → {r['verdict']}"
        for r in c["per_model"]
    )
    return f"**{c['verdict']}** — {c['text']} ({c['treatment']} vs {c['baseline']} on {c['task']}, {c['metric']})" + (
        f": {details}" if details else f": {c['reason']}" if c["reason"] else "")


def to_markdown(report: dict[str, Any], run_href: Callable[[str], str] | None = None) -> str:
    """The report as Markdown; with ``run_href``, each reproduced row and claim links its runs."""
    lines = [f"# {report['title']}", "", f"{report['citation']}", "", f"Protocol: {report['protocol']}", ""]
    for table in report["tables"]:
        header, body = grid(table)
        if run_href is not None:
            for row, cells in zip(table["rows"], body, strict=True):
                if row.get("run_id"):
                    cells[0] = f"[{cells[0]}]({run_href(row['run_id'])})"
        lines += [f"## {table['title']}", "", f"Reported numbers: {table['source']}.", ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body]
        if table["notes"]:
            lines += ["", table["notes"]]
        if table["missing"]:
            lines += ["", "Not reproduced yet: " + "; ".join(f"{m['cell']} on {m['model']} ({m['why']})" for m in table["missing"])]
        lines.append("")
    if report["claims"]:
        lines += ["## Claims", ""]
        for c in report["claims"]:
            runs = "".join(f" ([baseline]({run_href(r['baseline_run'])}), [treatment]({run_href(r['treatment_run'])}))"
                           for r in c["per_model"]) if run_href is not None else ""
            lines.append(f"- {claim_line(c)}{runs}")
        lines.append("")
    return "\n".join(lines)


def _latex_escape(text: str) -> str:
    for a, b in [("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("Δ", r"$\Delta$"), ("✓", r"\checkmark{}"), ("✗", r"$\times$"), ("→", r"$\rightarrow$"), ("—", "---")]:
        text = text.replace(a, b)
    return text


def to_latex(report: dict[str, Any]) -> str:
    parts = [f"% {report['title']} -- regenerated by harness"]
    for table in report["tables"]:
        header, body = grid(table)
        parts += [r"\begin{table}[t]", r"\centering\small", r"\begin{tabular}{" + "lll" + "r" * len(table["metrics"]) + "}", r"\toprule",
                  " & ".join(_latex_escape(h) for h in header) + r" \\", r"\midrule"]
        parts += [" & ".join(_latex_escape(c) for c in row) + r" \\" for row in body]
        parts += [r"\bottomrule", r"\end{tabular}", r"\caption{" + _latex_escape(f"{table['title']} (reported: {table['source']})") + "}",
                  r"\end{table}", ""]
    if report["claims"]:
        parts += [r"\begin{itemize}"] + [r"\item " + _latex_escape(claim_line(c).replace("**", "")) for c in report["claims"]] + [r"\end{itemize}"]
    return "\n".join(parts) + "\n"


def to_html(report: dict[str, Any], run_href: Callable[[str], str] | None = None) -> str:
    esc = html.escape
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>", f"<title>{esc(report['title'])}</title>",
             "<style>body{font:14px system-ui,sans-serif;margin:1.5rem}table{border-collapse:collapse}"
             "td,th{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:right}td:nth-child(-n+3){text-align:left}"
             ".supported{color:#1a7f37}.not-supported{color:#cf222e}.not-testable-yet{color:#57606a}</style></head><body>",
             f"<h1>{esc(report['title'])}</h1><p>{esc(report['citation'])}</p><p>Protocol: {esc(report['protocol'])}</p>"]

    def linked(text: str, run_id: str | None) -> str:
        return f"<a href='{esc(run_href(run_id))}'>{esc(text)}</a>" if run_id and run_href else esc(text)

    for table in report["tables"]:
        header, body = grid(table)
        parts.append(f"<h2>{esc(table['title'])}</h2><p>Reported numbers: {esc(table['source'])}.</p><table><tr>")
        parts += [f"<th>{esc(h)}</th>" for h in header] + ["</tr>"]
        parts += ["<tr>" + "".join(f"<td>{linked(c, row.get('run_id')) if i == 0 else esc(c)}</td>" for i, c in enumerate(cells)) + "</tr>"
                  for row, cells in zip(table["rows"], body, strict=True)]
        parts.append("</table>")
        if table["notes"]:
            parts.append(f"<p>{esc(table['notes'])}</p>")
    if report["claims"]:
        parts.append("<h2>Claims</h2><ul>")
        for c in report["claims"]:
            runs = "".join(f" ({linked('baseline', r['baseline_run'])}, {linked('treatment', r['treatment_run'])})"
                           for r in c["per_model"]) if run_href else ""
            parts.append(f"<li class='{c['verdict'].replace(' ', '-')}'>{esc(claim_line(c).replace('**', ''))}{runs}</li>")
        parts.append("</ul>")
    return "".join(parts) + "</body></html>\n"


def write_report(report: dict[str, Any], out: Path, run_href: Callable[[str], str] | None = None) -> list[Path]:
    from harness.store import atomic_write_json

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, text in (("md", to_markdown(report, run_href)), ("tex", to_latex(report)), ("html", to_html(report, run_href))):
        path = out / f"{report['paper']}.{suffix}"
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        written.append(path)
    atomic_write_json(out / f"{report['paper']}.json", report)
    written.append(out / f"{report['paper']}.json")
    return written
