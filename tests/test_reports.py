"""Reports: the run catalog, `harness table`, paper specs (reported vs reproduced, deltas,
tolerances) and claim verdicts from paired tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import cli

from harness.store import RunStore
from reports import paper_render, paper_spec, papers
from reports.catalog import load_entries, method_label, variant_label
from reports.tables import long_frame, pivot, render


def test_labels_show_only_what_differs_from_defaults():
    assert variant_label("ubench", {**_ubench_defaults(), "mode": "generate"}, None) == "mode=generate"
    assert variant_label("ubench", _ubench_defaults(), 200) == "n=200"
    assert variant_label("no-such-task", {"a": 1, "b": None}, None) == "a=1"
    assert method_label("base", {"max_length": None}) == "base"
    assert method_label("base", {"max_length": 64}) == "base(max_length=64)"


def _ubench_defaults() -> dict:
    from harness.config import to_dict
    from harness.runner import make_task

    return to_dict(make_task("ubench", {}).config)


def test_entries_and_tables(report_runs):
    entries = load_entries(RunStore(report_runs))
    assert sorted(e.column for e in entries) == ["pubmedqa (n=20)", "pubmedqa (n=20)", "ubench (n=24)"]
    assert {e.system for e in entries} == {"base · tiny-random-llama", "base(max_length=64) · tiny-random-llama"}
    frame = long_frame(entries, ["main"])
    table = pivot(frame, "system", "column", with_ci=True)
    assert list(table.columns) == ["system", "pubmedqa (n=20)", "ubench (n=24)"]
    acc = next(e for e in entries if e.task == "pubmedqa" and e.method_label == "base").metrics["acc"]
    row = table[table["system"] == "base · tiny-random-llama"].iloc[0]
    assert row["pubmedqa (n=20)"].startswith(f"{acc['value']:.4g} [")
    assert row["ubench (n=24)"] != "–"
    assert table[table["system"] == "base(max_length=64) · tiny-random-llama"].iloc[0]["ubench (n=24)"] == "–"
    csv = render(table, "csv").splitlines()
    assert csv[0] == "system,pubmedqa (n=20),ubench (n=24)" and len(csv) == 3
    assert "\\begin{tabular}" in render(table, "latex")


def test_table_cli_refuses_to_merge_runs_into_one_cell(report_runs, capsys):
    assert cli("table", "--output-dir", report_runs, "--rows", "model", "--cols", "metric", "--metric", "acc") == 2
    assert "several runs fall in one cell (they differ in method)" in capsys.readouterr().err
    assert cli("table", "--output-dir", report_runs, "--rows", "model,method", "--cols", "metric", "--metric", "acc,macro_f1") == 0
    out = capsys.readouterr().out
    assert "| model" in out and "acc" in out and "macro_f1" in out and out.count("tiny-random-llama") == 2
    # one run's two metrics in one cell: a clear error, not a pandas traceback
    assert cli("table", "--output-dir", report_runs, "--rows", "system", "--cols", "task", "--metric", "acc,macro_f1") == 2
    assert "several values fall in one cell (they differ in metric)" in capsys.readouterr().err
    assert cli("table", "--output-dir", report_runs, "--rows", "bogus") == 2
    assert "table axis must be one of" in capsys.readouterr().err


def _spec(tmp: Path, claims: str, zoo_acc: float) -> paper_spec.PaperSpec:
    (tmp / "toy.yaml").write_text(f"""
paper: toy
title: Toy paper
citation: nobody 2026
protocol: pubmedqa zero-shot
tables:
  - id: main
    title: PubMedQA accuracy
    source: Table 1
    metrics: [acc, macro_f1]
    tolerance: {{acc: 0.05}}
    reported:
      - {{model: Big-7B, values: {{acc: 0.7}}}}
      - {{model: tiny, zoo_model: tiny-random-llama, values: {{acc: {zoo_acc}}}}}
    cells:
      - {{label: zero-shot, task: pubmedqa, limit: 20, models: [tiny-random-llama, smollm2-135m-instruct]}}
claims:
{claims}
""", encoding="utf-8")
    return paper_spec.load_spec("toy", folder=tmp)


CLAIM = """  - id: short-context-helps
    text: shorter context raises accuracy
    metric: acc
    baseline: {task: pubmedqa, limit: 20, models: [tiny-random-llama]}
    treatment: {method: base, method_args: {max_length: 64}}
  - id: needs-unbuilt
    text: a method nobody has built raises accuracy
    metric: acc
    baseline: {task: pubmedqa, limit: 20, models: [tiny-random-llama]}
    treatment: {method: not-built-yet}
"""


FLIPPED_CLAIM = """  - id: long-context-helps
    text: longer context raises accuracy
    metric: acc
    baseline: {task: pubmedqa, limit: 20, method_args: {max_length: 64}, models: [tiny-random-llama]}
    treatment: {method: base}
"""


def test_paper_reported_beside_reproduced_with_deltas(report_runs, tmp_path):
    entries = load_entries(RunStore(report_runs))
    acc = next(e for e in entries if e.task == "pubmedqa" and e.method_label == "base").metrics["acc"]["value"]
    report = papers.regenerate(_spec(tmp_path, CLAIM, zoo_acc=acc + 0.01), RunStore(report_runs))
    rows = report["tables"][0]["rows"]
    assert [r["source"] for r in rows] == ["paper (Table 1)", "paper (Table 1)", "harness (zero-shot)"]
    assert rows[2]["values"]["acc"]["value"] == acc and rows[2]["n"] == 20
    delta = rows[1]["deltas"]["acc"]
    assert delta["delta"] == pytest.approx(-0.01) and delta["within"] is True
    assert "deltas" not in rows[0]  # Big-7B is not a zoo model
    assert report["tables"][0]["missing"] == [{"cell": "zero-shot", "task": "pubmedqa", "method": "base",
                                               "model": "smollm2-135m-instruct", "why": "no finished run with this protocol yet"}]
    markdown = paper_render.to_markdown(report)
    assert "(Δ -0.01 ✓)" in markdown and "| paper (Table 1) | Big-7B | base | 0.7 |" in markdown
    written = paper_render.write_report(report, tmp_path / "out")
    assert sorted(p.suffix for p in written) == [".html", ".json", ".md", ".tex"]
    assert r"$\Delta$" in (tmp_path / "out" / "toy.tex").read_text()


def test_claim_verdicts_come_from_a_paired_test(report_runs, tmp_path):
    store_root = tmp_path / "runs"
    shutil.copytree(report_runs, store_root)
    store = RunStore(store_root)
    spec = _spec(tmp_path, CLAIM, zoo_acc=0.5)
    claims = {c["id"]: c for c in papers.regenerate(spec, store)["claims"]}
    assert claims["needs-unbuilt"]["verdict"] == "not testable yet"
    assert "unknown method 'not-built-yet'" in claims["needs-unbuilt"]["reason"]
    first = claims["short-context-helps"]
    assert first["per_model"][0]["n"] == 20
    # Make the treatment run right on every sample and the baseline wrong: now it must be supported.
    for e in load_entries(store):
        if e.task != "pubmedqa":
            continue
        treated = e.method_label != "base"
        lines = [json.loads(line) for line in (e.path / "samples.jsonl").read_text().splitlines()]
        for record in lines:
            record["correct"] = int(treated)
        (e.path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
        assert cli("rescore", e.run_id, "--output-dir", store_root) == 0
    supported = {c["id"]: c for c in papers.regenerate(spec, store)["claims"]}["short-context-helps"]
    assert supported["verdict"] == "supported"
    result = supported["per_model"][0]
    assert result["delta"] == pytest.approx(1.0) and result["p_value"] < 0.05
    # The opposite claim on the same runs is not supported.
    flipped = papers.regenerate(_spec(tmp_path, FLIPPED_CLAIM, zoo_acc=0.5), store)["claims"][0]
    assert flipped["verdict"] == "not supported" and flipped["per_model"][0]["delta"] == pytest.approx(-1.0)


@pytest.mark.parametrize("paper", paper_spec.available())
def test_every_shipped_spec_regenerates(paper, tmp_path):
    report = papers.regenerate(paper_spec.load_spec(paper), RunStore(tmp_path / "empty"))
    assert report["tables"], f"{paper} has no table"
    for table in report["tables"]:
        for row in table["rows"]:
            assert set(row["values"]) == set(table["metrics"])
    assert all(c["verdict"] == "not testable yet" for c in report["claims"])  # nothing has run here
    assert paper_render.to_markdown(report).startswith("# ")


def test_paper_cli(report_runs, tmp_path, capsys):
    assert cli("paper", "ubench", "--output-dir", report_runs, "--out", tmp_path / "ub") == 0
    out = capsys.readouterr().out
    assert "| paper (UBench v2 board) | GPT-4o | base | 13.64 | 47.75 | 20.9 | 21.39 | 25.92 |" in out
    assert (tmp_path / "ub" / "ubench.html").is_file()
    assert cli("paper", "ubnech", "--output-dir", report_runs) == 2
    assert "no paper spec 'ubnech'; did you mean 'ubench'?" in capsys.readouterr().err
    assert cli("paper", "list") == 0
    assert "hmt" in capsys.readouterr().out


def test_malformed_spec_is_one_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("paper: bad\ntitle: x\ncitation: y\ntables:\n  - id: t\n")
    with pytest.raises(Exception, match="paper spec bad.yaml is malformed: KeyError"):
        paper_spec.load_spec("bad", folder=tmp_path)
    (tmp_path / "worse.yaml").write_text("paper: [unclosed\n")
    with pytest.raises(Exception, match="not valid YAML"):
        paper_spec.load_spec("worse", folder=tmp_path)


def test_claim_treatment_may_change_task_settings():
    """An agent with memory gets more trials than the memoryless baseline it is paired with:
    the treatment's task settings override the baseline's, the rest stays shared."""
    spec = paper_spec.load_spec("introspective-tips")
    claim = next(c for c in spec.claims if c.id == "tips-beat-react")
    assert claim.cell.task_args == {"games_per_level": 10}
    treatment = claim.treatment_cell()
    assert treatment.method == "introspective-tips" and treatment.task_args == {"games_per_level": 10, "trials": 3}
    assert treatment.full_task_config()["trials"] == 3 and claim.cell.full_task_config()["trials"] == 1
    table_cell = next(c for c in spec.tables[0].cells if c.label == "Introspective Tips (own)")
    assert table_cell.full_task_config() == treatment.full_task_config()  # the claim pairs the table's own runs
    expert = next(c for c in spec.claims if c.id == "expert-tips-beat-react").treatment_cell()
    expert_cell = next(c for c in spec.tables[0].cells if c.label == "Introspective Tips (expert)")
    assert expert.full_task_config() == expert_cell.full_task_config() and expert.method_args == {"setting": "expert"}


def test_claim_may_pair_the_baseline_with_the_treatments_own_model(report_runs, tmp_path):
    """A trained memory model is its own zoo model: the claim compares its run with the
    baseline model's run, sample by sample (here: the tiny model vs a copy of it on disk)."""
    from harness import models

    store_root = tmp_path / "runs"
    shutil.copytree(report_runs, store_root)
    copy = tmp_path / "tiny-copy"
    shutil.copytree(models.resolve("tiny-random-llama").path, copy)
    assert cli("run", "--task", "pubmedqa", "--limit", "20", "--model", copy, "--method-arg", "max_length=64",
               "--quiet", "--output-dir", store_root) == 0
    claim = f"""  - id: own-model
    text: the copy with a short context differs
    metric: acc
    baseline: {{task: pubmedqa, limit: 20, models: [tiny-random-llama]}}
    treatment: {{method: base, method_args: {{max_length: 64}}, models: ["{copy}"]}}
"""
    spec = _spec(tmp_path, claim, zoo_acc=0.5)
    assert spec.claims[0].model_pairs() == [("tiny-random-llama", str(copy))]
    result = papers.regenerate(spec, RunStore(store_root))["claims"][0]
    assert result["verdict"] != "not testable yet"
    (found,) = result["per_model"]
    entries = {e.run_id: e for e in load_entries(RunStore(store_root))}
    assert entries[found["treatment_run"]].model == str(copy) and entries[found["baseline_run"]].model == "tiny-random-llama"
    assert f"{copy} vs tiny-random-llama" in paper_render.to_markdown(papers.regenerate(spec, RunStore(store_root)))
    bad = claim.replace(f'models: ["{copy}"]', f'models: ["{copy}", "{copy}"]')
    with pytest.raises(Exception, match="pair one-to-one"):
        _spec(tmp_path, bad, zoo_acc=0.5)


def test_a_paper_table_warns_when_its_rows_were_scored_by_different_models():
    from reports.catalog import RunEntry

    def run(method: str, weights: str) -> RunEntry:
        scorer = {"name": "smollm2-135m-instruct-rm", "source": "zoo:smollm2-135m-instruct-rm", "weights_sha256": weights}
        return RunEntry(run_id=f"{method}-{weights[:4]}", path=Path("."), task="hh-rlhf", task_config={}, variant="default",
                        method=method, method_args={}, method_label=method, model="smollm2-135m-instruct", seed=0, limit=100,
                        n=100, main_metric="reward", metrics={}, cost={}, created_at="",
                        auxiliary={"evaluation_reward_model": scorer, "reward_model": scorer})
    cells = [paper_spec.Cell(task="hh-rlhf"), paper_spec.Cell(task="hh-rlhf", method="cards")]
    assert papers.scorers_differ(cells, [run("base", "a" * 64), run("cards", "a" * 64)]) == []
    [warning] = papers.scorers_differ(cells, [run("base", "a" * 64), run("cards", "b" * 64)])
    assert warning.startswith("rows scored by different evaluation reward models") and "aaaaaaaaaaaa" in warning \
        and "bbbbbbbbbbbb" in warning  # the guiding reward model is the method's own: not a scorer
    report = {"title": "t", "citation": "c", "protocol": "p", "claims": [],
              "tables": [{"title": "x", "source": "s", "metrics": [], "notes": "", "rows": [], "missing": [], "scorers_differ": [warning]}]}
    assert "**Warning:** rows scored by different" in paper_render.to_markdown(report)
    assert "<strong>Warning:</strong> rows scored by different" in paper_render.to_html(report)
    assert "Warning: rows scored by different" in paper_render.to_latex(report)
