"""Paper-table regeneration (``harness paper <paper>``) from a spec (``reports.paper_spec``) and a run store.

The regenerated table puts reported rows beside reproduced rows (value and 95% CI); where a
reported row names the zoo model it was measured on, each metric gets a delta and a
tolerance verdict. A claim is checked on every model that has both runs, with the harness's
paired comparison (paired bootstrap CI of the delta, paired permutation p-value):
"supported" (the expected direction, p < 0.05), "not supported", or "not testable yet"
(its task or method is not built, or no model has both runs). A claim on ``win_tie`` reads a
judge's published judgment of the two runs instead (``harness judge``, a sign test of wins
against losses).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.stats import CONFIDENCE
from harness.store import RunStore
from reports.catalog import RunEntry, load_entries
from reports.paper_spec import WIN_TIE, Cell, Claim, Judge, PaperSpec, Verdict


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
        if claim.judge is not None:
            judged = judged_result(claim.judge, store, baseline.run_id, treatment.run_id)
            if judged is not None:
                results.append({"model": model, "treatment_model": treatment_model, **judged})
            continue
        try:
            comparisons, _ = compare(store, baseline.run_id, treatment.run_id)
        except HarnessError as error:  # scored by different evaluation models: no verdict until rerun
            return ClaimResult(claim, "not testable yet", (), str(error))
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
        needs = f"both runs and {claim.judge.model}'s published judgment of them" if claim.judge else "both runs"
        return ClaimResult(claim, "not testable yet", (), f"no model has {needs} yet (models: {missing})")
    verdict: Verdict = "supported" if all(r["verdict"] == "supported" for r in results) else "not supported"
    return ClaimResult(claim, verdict, tuple(results))


def judged_result(judge: Judge, store: RunStore, baseline_run: str, treatment_run: str) -> dict[str, Any] | None:
    """A win-tie claim on one model: supported when the judge prefers the treatment's answers
    (more wins than losses, two-sided sign test p < 0.05); None without a judgment."""
    found = judgment(judge, store, baseline_run, treatment_run)
    if found is None:
        return None
    summary = found["summary"]
    wins, losses = summary["counts"]["win"], summary["counts"]["lose"]
    p_value = summary.get("sign_test_p")
    supported = wins > losses and p_value is not None and p_value < 1 - CONFIDENCE
    return {"baseline_run": baseline_run, "treatment_run": treatment_run, "n": summary["n_judged"], "judge": judge.model,
            "scoring": judge.scoring, "counts": summary["counts"], "win_tie": summary["win_tie"], "p_value": p_value,
            "verdict": "supported" if supported else "not supported"}


def judgment(judge: Judge, store: RunStore, run_a: str, run_b: str) -> dict[str, Any] | None:
    """``judge``'s judgment of run B's answers against run A's in the store, or None."""
    from reports.wintie import find_judgment

    return find_judgment(store.root, run_a, run_b, judge.model, judge.scoring)


def judged_value(judge: Judge, store: RunStore, against: RunEntry | None, run_id: str) -> dict[str, Any]:
    """A row's win-tie rate (Wilson CI) against the table's baseline cell's run, from the
    published judgment of the two; empty without one (and for the baseline's own row)."""
    found = None if against is None else judgment(judge, store, against.run_id, run_id)
    if found is None:
        return {"value": None, "ci_low": None, "ci_high": None}
    rate = found["summary"]["win_tie"]
    return {"value": rate["rate"], "ci_low": rate["ci_low"], "ci_high": rate["ci_high"]}


def regenerate(spec: PaperSpec, store: RunStore, entries: Sequence[RunEntry] | None = None) -> dict[str, Any]:
    """Reported beside reproduced for every table, and every claim's verdict (data only).
    ``entries`` (the store's finished runs) may be passed when regenerating many papers."""
    entries = load_entries(store) if entries is None else entries
    tables = []
    for table in spec.tables:
        against = table.against_cell()
        rows = [{"source": f"paper ({table.source})", "model": r.model, "method": r.method,
                 "values": {m: {"value": r.values.get(m)} for m in table.metrics}, "zoo_model": r.zoo_model}
                for r in table.reported]
        missing, scored = [], []
        for cell in table.cells:
            why = cell.runnable()
            for model in cell.models:
                found = cell.find(entries, model)
                scored.append(found)
                if found is None:
                    missing.append({"cell": cell.label, "task": cell.task, "method": cell.method, "model": model,
                                    "why": why or "no finished run with this protocol yet"})
                    continue
                values = {m: {k: found.metrics.get(m, {}).get(k) for k in ("value", "ci_low", "ci_high")} for m in table.metrics}
                if table.judge is not None and against is not None:
                    values[WIN_TIE] = judged_value(table.judge, store, against.find(entries, model), found.run_id)
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
                       "notes": table.notes, "rows": rows, "missing": missing,
                       "scorers_differ": scorers_differ(table.cells, [found for found in scored if found is not None])})
    claims = []
    for claim in spec.claims:
        result = check_claim(claim, entries, store)
        claims.append({"id": claim.id, "text": claim.text, "source": claim.source, "metric": claim.metric,
                       "task": claim.cell.task, "baseline": claim.cell.method, "treatment": claim.treatment,
                       "verdict": result.verdict, "reason": result.reason, "per_model": list(result.per_model)})
    return {"paper": spec.paper, "title": spec.title, "citation": spec.citation, "protocol": spec.protocol,
            "paper_models": list(spec.paper_models), "tables": tables, "claims": claims}


def scorers_differ(cells: Sequence[Cell], runs: Sequence[RunEntry]) -> list[str]:
    """The task-scoring models (judge, evaluation reward model, extractor) that differ between a
    table's runs (another model, or one name with other weights: a local zoo model retrained
    elsewhere): rows scored by different models are not comparable."""
    from harness.runner import identity_label, make_task

    roles = {role for cell in cells if cell.runnable() is None for role in make_task(cell.task, cell.task_args).auxiliary_models()}
    found = []
    for role in sorted(roles):
        identities = {json.dumps(run.auxiliary[role], sort_keys=True): run.auxiliary[role] for run in runs if role in run.auxiliary}
        if len(identities) > 1:
            labels = ", ".join(identity_label(identity) for identity in identities.values())
            found.append(f"rows scored by different {role.replace('_', ' ')}s ({labels}) are not comparable")
    return found


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
