"""The static leaderboard: contents, links, the overview's best cells and win rates, atomic
builds, and (in headless Chromium) rendering, sorting and filtering."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from conftest import cli

from harness.store import RunStore
from leaderboards import site
from reports.catalog import RunEntry


def _entry(system_method: str, model: str, column_task: str, value: float, higher: bool = True) -> RunEntry:
    return RunEntry(run_id=f"{system_method}-{model}-{column_task}", path=Path("."), task=column_task, task_config={},
                    variant="default", method=system_method, method_args={}, method_label=system_method, model=model,
                    seed=0, limit=None, n=10, main_metric="m",
                    metrics={"m": {"value": value, "ci_low": value - 1, "ci_high": value + 1, "higher_is_better": higher}},
                    cost={}, created_at="")


def test_overview_marks_best_per_column_and_mean_win_rate():
    entries = [_entry("a", "x", "t1", 3.0), _entry("b", "x", "t1", 2.0), _entry("c", "x", "t1", 2.0),
               _entry("a", "x", "t2", 5.0, higher=False), _entry("b", "x", "t2", 4.0, higher=False),
               _entry("c", "x", "t3", 1.0)]
    grid = site.overview(entries)
    rows = {r["system"]: r for r in grid["rows"]}
    assert rows["a · x"]["cells"]["t1"]["best"] and not rows["b · x"]["cells"]["t1"]["best"]
    assert rows["b · x"]["cells"]["t2"]["best"]  # lower is better in t2
    assert not rows["c · x"]["cells"]["t3"]["best"]  # alone in its column: not "best" of anything
    # a: t1 beats both (1.0), t2 loses (0.0) -> 0.5; b: t1 ties c, loses to a (0.25), t2 wins (1.0) -> 0.625
    assert rows["a · x"]["mean_win_rate"] == pytest.approx(0.5)
    assert rows["b · x"]["mean_win_rate"] == pytest.approx(0.625)
    assert rows["c · x"]["mean_win_rate"] == pytest.approx(0.25)  # t3 has no rival, so it does not count
    assert [r["system"] for r in grid["rows"]][0] == "b · x"


def test_site_is_self_contained_with_working_links(report_runs, tmp_path):
    index = site.build_site(RunStore(report_runs), tmp_path / "site")
    html = index.read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html  # opens offline, no CDN
    links = set(re.findall(r'href="([^"]+)"', html))
    assert links and all((index.parent / link).is_file() for link in links), "every link resolves inside the site"
    data = json.loads((index.parent / "data" / "leaderboard.json").read_text())
    assert set(data["tasks"]) == {"pubmedqa", "ubench"} and data["n_runs"] == 3
    pubmedqa = data["tasks"]["pubmedqa"]
    assert [c["key"] for c in pubmedqa["columns"]][:4] == ["system", "variant", "acc", "macro_f1"]
    with (index.parent / "data" / "pubmedqa.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and {"acc", "acc_ci_low", "acc_ci_high", "wall_time_s", "n"} <= set(rows[0])
    images = re.findall(r'<img [^>]*src="([^"]+)"', html)
    assert len(images) >= 3 and all((index.parent / src).is_file() for src in images)  # bars per task + UBench's reliability diagram
    assert "data:image" not in html and len(html) < 200_000  # plots are files beside the page, not base64 inside it
    assert "★" in html or "td.best" in html


def test_failed_build_keeps_the_previous_site(report_runs, tmp_path, monkeypatch):
    out = tmp_path / "site"
    site.build_site(RunStore(report_runs), out)
    before = (out / "index.html").read_text()

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(site, "overview", broken)
    with pytest.raises(RuntimeError):
        site.build_site(RunStore(report_runs), out)
    assert (out / "index.html").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["site"]  # no staging folder left behind


def test_leaderboard_cli(report_runs, tmp_path, capsys):
    assert cli("leaderboard", "--output-dir", report_runs, "--out", tmp_path / "board") == 0
    assert (tmp_path / "board" / "index.html").is_file()
    assert cli("leaderboard", "--output-dir", tmp_path / "nothing", "--out", tmp_path / "b2") == 2
    assert "no run store at" in capsys.readouterr().err


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
REQUIRE_BROWSER = os.environ.get("HARNESS_REQUIRE_BROWSER") == "1"


@pytest.fixture
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        if REQUIRE_BROWSER:
            pytest.fail("HARNESS_REQUIRE_BROWSER=1 but chromium/chromedriver are not installed (scripts/install.sh installs them)")
        pytest.skip("headless Chromium not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # The background-networking flags keep Chromium from dialling out on a closed network.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _column(driver, table_id: str, index: int) -> list[str]:
    rows = driver.find_elements("css selector", f"#{table_id} tbody tr")
    return [r.find_elements("css selector", "td")[index].get_attribute("data-sort") for r in rows if r.is_displayed()]


def _with_second_model(report_runs: Path, tmp_path: Path) -> RunStore:
    """The report runs plus a copy of one PubMedQA run relabelled as another model that got
    every item right (so sorting has distinct values to order)."""
    root = tmp_path / "runs"
    shutil.copytree(report_runs, root)
    (root / "index.sqlite").unlink()
    source = next(p for p in root.iterdir() if p.is_dir() and '"pubmedqa"' in (p / "spec.json").read_text()
                  and '"max_length": null' in (p / "spec.json").read_text())
    copy = root / "0000other"
    shutil.copytree(source, copy)
    spec = json.loads((copy / "spec.json").read_text())
    spec["model"]["name"] = "other-model"
    (copy / "spec.json").write_text(json.dumps(spec))
    records = [json.loads(line) | {"correct": 1} for line in (copy / "samples.jsonl").read_text().splitlines()]
    (copy / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert cli("rescore", copy.name, "--output-dir", root) == 0
    return RunStore(root)


def test_page_renders_sorts_and_filters_in_chromium(browser, report_runs, tmp_path):
    index = site.build_site(_with_second_model(report_runs, tmp_path), tmp_path / "site")
    browser.get(index.as_uri())
    assert browser.title == "harness leaderboard"
    tables = browser.find_elements("css selector", "table.sortable")
    assert len(tables) == 3  # overview + pubmedqa + ubench
    headers = browser.find_elements("css selector", "#table-ubench thead th")
    names = [h.text.split(" ")[0] for h in headers]
    avg = names.index("avg")  # lower is better: the first click sorts ascending
    headers[avg].click()
    values = [float(v) for v in _column(browser, "table-ubench", avg) if v]
    assert values == sorted(values)
    acc = [h.text.split(" ")[0] for h in browser.find_elements("css selector", "#table-pubmedqa thead th")].index("acc")
    acc_header = browser.find_elements("css selector", "#table-pubmedqa thead th")[acc]
    acc_header.click()  # higher is better: best (largest) first
    first = [float(v) for v in _column(browser, "table-pubmedqa", acc)]
    assert first[0] == 1.0 and first[-1] < 1.0 and first == sorted(first, reverse=True) and acc_header.get_attribute("aria-sort") == "descending"
    acc_header.click()
    assert [float(v) for v in _column(browser, "table-pubmedqa", acc)] == sorted(first)
    # Filters: a model leaves its rows only; a task hides the other task's section.
    from selenium.webdriver.support.ui import Select

    assert len(_column(browser, "table-pubmedqa", 0)) == 3
    Select(browser.find_element("id", "filter-model")).select_by_visible_text("other-model")
    assert _column(browser, "table-pubmedqa", 0) == ["base · other-model"]
    assert len(_column(browser, "table-overview", 0)) == 1
    Select(browser.find_element("id", "filter-model")).select_by_visible_text("all")
    Select(browser.find_element("id", "filter-method")).select_by_visible_text("base")
    assert len(_column(browser, "table-pubmedqa", 0)) == 3  # every run uses method 'base'
    Select(browser.find_element("id", "filter-task")).select_by_visible_text("ubench")
    assert not browser.find_element("id", "task-pubmedqa").is_displayed()
    assert browser.find_element("id", "task-ubench").is_displayed()
    images = browser.find_elements("css selector", "#task-ubench figure img")
    assert images and browser.execute_script("return arguments[0].naturalWidth", images[0]) > 0  # SVG decoded
    shot_dir = Path(os.environ.get("HARNESS_SCREENSHOT_DIR", tmp_path))
    shot_dir.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(shot_dir / "leaderboard.png"))


def test_perplexity_vs_length_plot_reads_samples(tmp_path):
    from leaderboards.plots import perplexity_vs_length, to_svg

    run = tmp_path / "run"
    run.mkdir()
    records = [{"doc_id": str(i), "n_tokens": 100 * (i + 1), "logprob": -200.0 * (i + 1)} for i in range(5)]
    (run / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"torn')
    entry = dataclasses.replace(_entry("base", "x", "wikitext103", 1.0), path=run)
    figure = perplexity_vs_length([entry])
    assert figure is not None
    points = figure.axes[0].collections[0].get_offsets()
    assert len(points) == 5 and points[0][1] == pytest.approx(7.38905609893065, rel=1e-9)  # exp(200 / 100)
    assert to_svg(figure).lstrip().startswith("<?xml")
    assert perplexity_vs_length([_entry("base", "x", "pubmedqa", 1.0)]) is None  # no samples: no plot
