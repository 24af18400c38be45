"""Published results: ``harness publish`` (checks, trimming, manifest, reproduce command),
reading ``results/`` read-only, paper tables and the site built from it, and the committed
``results/`` and ``site/`` staying sound and up to date."""

from __future__ import annotations

import filecmp
import gzip
import json
import shlex
import shutil
from pathlib import Path

import pytest
from conftest import REPO, cli

from harness.store import PublishedStore, RunStore, open_store
from reports import publish
from reports.catalog import load_entries
from training.carry import check_carried


def _run_ids(root: Path, task: str | None = None) -> list[str]:
    return sorted(p.name for p in root.iterdir() if (p / "spec.json").is_file()
                  and (task is None or json.loads((p / "spec.json").read_text())["task"]["name"] == task))


@pytest.fixture(scope="module")
def published(report_runs, tmp_path_factory) -> Path:
    """The report runs published (the data mirror is set by conftest, so inputs are rebuilt)."""
    dest = tmp_path_factory.mktemp("published") / "results"
    publish.publish(RunStore(report_runs), _run_ids(report_runs), dest)
    return dest


def test_published_runs_read_back_with_the_same_numbers(report_runs, published, capsys):
    assert publish.verify(published) == []
    store = open_store(published)
    assert isinstance(store, PublishedStore)
    before = {e.run_id: e.metrics for e in load_entries(RunStore(report_runs))}
    assert {e.run_id: e.metrics for e in load_entries(store)} == before
    manifest = json.loads((published / "MANIFEST.json").read_text())
    pubmedqa = _run_ids(report_runs, "pubmedqa")[0]
    entry = manifest["runs"][pubmedqa]
    assert entry["machine"]["devices"] == ["cpu"] and entry["wall_time_s"] >= 0
    assert "rebuilt from the data" in entry["inputs"]
    assert set(entry["files"]) == {"spec.json", "results.json", "state.json", "samples.jsonl.gz", "inputs.jsonl.gz"}
    inputs = [json.loads(line) for line in gzip.decompress((published / pubmedqa / "inputs.jsonl.gz").read_bytes()).splitlines()]
    assert inputs[0]["requests"][0]["continuations"] == [" yes", " no", " maybe"]
    assert "Question:" in inputs[0]["requests"][0]["context"]
    # Reading never writes into the published folder, and nothing may run into it.
    assert cli("show", "--output-dir", published) == 0
    assert cli("compare", *_run_ids(report_runs, "pubmedqa"), "--output-dir", published) == 0
    assert not (published / "index.sqlite").exists()
    assert cli("run", "--task", "pubmedqa", "--model", "tiny-random-llama", "--limit", "2", "--quiet", "--output-dir", published) == 2
    assert cli("rescore", pubmedqa, "--output-dir", published) == 2
    assert "published runs, which are never written to" in capsys.readouterr().err
    assert publish.verify(published) == []


def _copy_store(report_runs: Path, tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    shutil.copytree(report_runs, root)
    return root


@pytest.mark.parametrize("damage, message", [
    ("unfinished", "is unfinished"),
    ("spec", "hashes to"),
    ("results", "is not what its samples give"),
])
def test_publish_refuses_a_bad_run_and_writes_nothing(report_runs, tmp_path, damage, message, capsys):
    root = _copy_store(report_runs, tmp_path)
    good, bad = _run_ids(root, "pubmedqa")
    folder = root / bad
    if damage == "unfinished":
        lines = (folder / "samples.jsonl").read_text().splitlines(keepends=True)
        (folder / "samples.jsonl").write_text("".join(lines[:-1]))
    elif damage == "spec":
        spec = json.loads((folder / "spec.json").read_text())
        spec["seed"] = 7
        (folder / "spec.json").write_text(json.dumps(spec))
    else:
        results = json.loads((folder / "results.json").read_text())
        results["metrics"]["acc"]["value"] += 0.1
        (folder / "results.json").write_text(json.dumps(results))
    dest = tmp_path / "results"
    assert cli("publish", good, bad, "--output-dir", root, "--to", dest) == 2
    assert message in capsys.readouterr().err
    assert not dest.exists() or list(dest.iterdir()) == []  # the good run waits for the bad one: nothing half-published


def test_large_samples_keep_score_fields_and_a_seeded_sample_of_whole_records(report_runs, tmp_path):
    ubench = _run_ids(report_runs, "ubench")
    small = tmp_path / "small"
    done = publish.publish(RunStore(report_runs), ubench, small, max_sample_bytes=1_500)
    assert 0 < done[0].full_records < done[0].n_samples and done[0].samples_bytes <= 1_500
    entry = json.loads((small / "MANIFEST.json").read_text())["runs"][ubench[0]]
    assert entry["samples"]["whole_records"] == done[0].full_records and "letter_logprobs" in entry["samples"]["dropped_fields"]
    records = open_store(small).find(ubench[0]).samples()
    assert len(records) == done[0].n_samples and all("label" in r and "confidence" in r for r in records)
    assert sum("letter_logprobs" in r for r in records) == done[0].full_records
    # The trimmed copy gives the same metrics and paired claims as the whole one; and the
    # same run publishes to the same bytes.
    [whole] = [e for e in load_entries(RunStore(report_runs)) if e.run_id == ubench[0]]
    [trimmed] = load_entries(open_store(small))
    assert trimmed.metrics == whole.metrics
    again = tmp_path / "again"
    publish.publish(RunStore(report_runs), ubench, again, max_sample_bytes=1_500)
    assert (again / ubench[0] / "samples.jsonl.gz").read_bytes() == (small / ubench[0] / "samples.jsonl.gz").read_bytes()


def test_manifest_command_reproduces_the_run_id(report_runs, published):
    from harness.cli import build_parser
    from harness.config import parse_pairs
    from harness.runner import RunRequest, prepare

    manifest = json.loads((published / "MANIFEST.json").read_text())
    commands = {run_id: entry["command"] for run_id, entry in manifest["runs"].items()}
    assert any("--method-arg max_length=64" in c for c in commands.values())
    for run_id, command in commands.items():
        argv = shlex.split(command)
        assert argv[:2] == ["harness", "run"]
        args = build_parser().parse_args(argv[1:])
        request = RunRequest(task=args.task, method=args.method, model=args.model, task_args=parse_pairs(args.task_arg, "t"),
                             method_args=parse_pairs(args.method_arg, "m"), seed=args.seed, limit=args.limit,
                             dtype=args.dtype, chat_template=args.chat_template)
        assert prepare(request).spec.run_id == run_id, command


def test_verify_finds_hand_edits_and_strays(published, tmp_path):
    copy = tmp_path / "results"
    shutil.copytree(published, copy)
    run_id = next(iter(json.loads((copy / "MANIFEST.json").read_text())["runs"]))
    results = json.loads((copy / run_id / "results.json").read_text())
    results["metrics"][results["main_metric"]]["value"] = 0.99
    (copy / run_id / "results.json").write_text(json.dumps(results))
    (copy / "0123456789abcdef").mkdir()
    problems = publish.verify(copy)
    assert any("results.json: sha256 differs" in p for p in problems)
    assert any("0123456789abcdef" in p for p in problems)
    assert cli("publish", "--check", "--to", copy) == 1
    assert cli("publish", "--check", "--to", published) == 0


def test_paper_tables_and_site_from_published_runs(report_runs, published, tmp_path, capsys):
    from test_reports import CLAIM, _spec

    from reports import paper_render, paper_spec, papers

    assert cli("paper", "--all", "--runs", published, "--out", tmp_path / "papers") == 0
    assert all((tmp_path / "papers" / name / f"{name}.md").is_file() for name in paper_spec.available())
    # A paper's table and paired claims come out of the published runs as out of the working store.
    spec = _spec(tmp_path, CLAIM, zoo_acc=0.5)
    from_published = papers.regenerate(spec, open_store(published))
    assert from_published == papers.regenerate(spec, RunStore(report_runs))
    assert from_published["claims"][0]["verdict"] in ("supported", "not supported")
    markdown = paper_render.to_markdown(from_published, run_href=lambda run_id: f"runs/{run_id}/index.html")
    reproduced = [r["run_id"] for r in from_published["tables"][0]["rows"] if r.get("run_id")]
    assert reproduced and all(f"](runs/{run_id}/index.html)" in markdown for run_id in reproduced)
    from leaderboards.site import build_site

    first = build_site(open_store(published), tmp_path / "site").parent
    second = build_site(open_store(published), tmp_path / "site2").parent
    assert not _tree_differences(first, second), "the same runs build the same site, byte for byte"
    run_pages = sorted(first.glob("runs/*/index.html"))
    assert len(run_pages) == len(_run_ids(published))
    for page in [first / "index.html", *run_pages, *first.glob("papers/*.html")]:
        html = page.read_text(encoding="utf-8")
        assert "http://" not in html and "https://" not in html
        for link in _local_links(html):
            assert (page.parent / link).is_file(), f"{page.relative_to(first)} links {link}"
    assert sorted(p.stem for p in first.glob("papers/*.html")) == paper_spec.available()


def _local_links(html: str) -> list[str]:
    import re

    return [link for link in re.findall(r'(?:href|src)="([^"#]+)"', html) if not link.startswith("data:")]


def _tree_differences(a: Path, b: Path) -> list[str]:
    """Files that differ between two folders, or are in only one of them."""
    names_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    names_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    differing = [str(n) for n in sorted(names_a & names_b) if not filecmp.cmp(a / n, b / n, shallow=False)]
    only = [f"{n} (only in {a.name})" for n in sorted(names_a - names_b)] + [f"{n} (only in {b.name})" for n in sorted(names_b - names_a)]
    return differing + only


# --- the committed results/ and site/ --------------------------------------------------------

RESULTS, SITE, PROGRESS, MODELS = REPO / "results", REPO / "site", REPO / "progress", REPO / "models"


def test_committed_results_are_sound():
    assert (RESULTS / "MANIFEST.json").is_file(), "results/ is missing its MANIFEST.json"
    assert publish.verify(RESULTS) == []
    if PROGRESS.is_dir():  # the carried unfinished runs: sound too, and none already published
        assert publish.verify(PROGRESS) == []
        carried = set(json.loads((PROGRESS / "MANIFEST.json").read_text())["runs"])
        assert not carried & set(_run_ids(RESULTS)), "finished runs still carried in progress/ (harness publish --remove)"
    for folder in sorted(MODELS.iterdir()) if MODELS.is_dir() else []:  # carried models: every file as carried
        if not folder.name.startswith("."):
            assert check_carried(folder)["model"] == folder.name


def test_nothing_published_names_a_path_of_the_machine_that_ran_it():
    """Runs recorded the data mirror's absolute path; publish writes "local" in its place."""
    import re

    found = [str(path.relative_to(REPO)) for root in (RESULTS, SITE, PROGRESS, MODELS) for path in root.rglob("*.json")
             if re.search(r'"/(work|root|home|tmp|Users)/', path.read_text(encoding="utf-8"))]
    assert not found, f"published files name local paths: {found[:5]}"


def test_nothing_published_is_git_ignored():
    """A CI checkout holds only what git tracks: an ignore rule matching site/runs/ once shipped a site without its run pages."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    import subprocess

    published = [str(path.relative_to(REPO)) for root in (RESULTS, SITE, PROGRESS) for path in root.rglob("*") if path.is_file()]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=REPO, input="\n".join(published),
                             capture_output=True, text=True).stdout.split()
    assert not ignored, f"git ignores published files, so CI would not see them: {ignored[:5]}"


def test_committed_site_is_up_to_date_with_results(tmp_path):
    from leaderboards.site import build_site

    rebuilt = build_site(open_store(RESULTS), tmp_path / "site").parent
    differences = _tree_differences(SITE, rebuilt)
    assert not differences, ("site/ is out of date with results/; rebuild it with "
                             "'harness leaderboard --from results/ --out site/' and commit. Differs: " + ", ".join(differences[:10]))


from test_leaderboard import browser  # noqa: E402,F401  (the headless Chromium fixture)


def test_run_page_searches_filters_and_pages_samples_in_chromium(browser, published, tmp_path):  # noqa: F811
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from leaderboards.site import build_site

    site = build_site(open_store(published), tmp_path / "site").parent
    run_id = _run_ids(published, "ubench")[0]
    records = open_store(published).find(run_id).samples()
    browser.get((site / "runs" / run_id / "index.html").as_uri())
    WebDriverWait(browser, 10).until(lambda d: d.execute_script("return document.body.dataset.samplesLoaded") == "true")

    def shown() -> list[str]:
        return [a.get_attribute("data-doc") for a in browser.find_elements("css selector", "#sample-list article.sample")]

    def count() -> str:
        return browser.find_element("id", "count").text

    assert count() == f"{len(records)} of {len(records)} samples" and len(shown()) == min(25, len(records))
    Select(browser.find_element("id", "page-size")).select_by_visible_text("10")
    first_page = shown()
    assert first_page == [r["doc_id"] for r in records[:10]]
    assert browser.find_element("id", "page-info").text == f"page 1 of {-(-len(records) // 10)}"
    browser.find_element("id", "next").click()
    assert shown() == [r["doc_id"] for r in records[10:20]]
    # Right/wrong on the task's 0/1 field, then any field, then free text.
    Select(browser.find_element("id", "outcome")).select_by_value("1")
    right = [r["doc_id"] for r in records if r["judgement_correct"] == 1]
    assert count() == f"{len(right)} of {len(records)} samples" and shown() == right[:10]
    Select(browser.find_element("id", "outcome")).select_by_value("")
    Select(browser.find_element("id", "field")).select_by_visible_text("category")
    browser.find_element("id", "value").send_keys("reasoning")
    reasoning = [r["doc_id"] for r in records if r["category"] == "reasoning"]
    assert shown() == reasoning[:10]
    browser.find_element("id", "value").clear()
    Select(browser.find_element("id", "field")).select_by_visible_text("–")
    target = records[-1]["doc_id"]
    browser.find_element("id", "search").send_keys(target)
    assert shown() == [target]
    # The document's input (rebuilt at publish time) sits beside its per-choice log-probabilities.
    article = browser.find_element("css selector", "#sample-list article.sample")
    article.find_element("css selector", "details summary").click()
    assert "Candidate answer:" in article.text and '" J"' in article.text
    assert browser.find_element("id", "command").text.startswith("HARNESS_DATA_DIR=")


def test_committed_site_opens_in_chromium(browser):  # noqa: F811
    from selenium.webdriver.support.ui import WebDriverWait

    from reports import paper_spec

    browser.get((SITE / "index.html").as_uri())
    assert browser.title == "harness leaderboard"
    assert [a.text for a in browser.find_elements("css selector", "nav.papers a")] == paper_spec.available()
    manifest = json.loads((RESULTS / "MANIFEST.json").read_text())
    for run_id, entry in manifest["runs"].items():  # every published run's page loads all its samples
        browser.get((SITE / "runs" / run_id / "index.html").as_uri())
        WebDriverWait(browser, 20).until(lambda d: d.execute_script("return document.body.dataset.samplesLoaded") == "true")
        n = entry["samples"]["n"]
        assert browser.find_element("id", "count").text == f"{n} of {n} samples"
    for name in paper_spec.available():
        browser.get((SITE / "papers" / f"{name}.html").as_uri())
        assert browser.find_element("css selector", "h1").text


def test_a_model_the_harness_made_carries_its_recipe(tmp_path, monkeypatch):
    """Runs on local zoo models (source ``zoo:<name>``) publish the model's recipe, like runs on
    a model folder (``local:<folder>``); a hub or PyPI model has none."""
    from types import SimpleNamespace

    from harness import zoo

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    folder = zoo.local_zoo_dir() / "made-model"
    folder.mkdir(parents=True)
    zoo.write_recipe(folder, {"made_by": "harness compress", "pruning": {"prune": "wanda"}})
    for source in ("zoo:made-model", f"local:{folder}"):
        assert publish._model_recipe(SimpleNamespace(model={"source": source}))["made_by"] == "harness compress"
    assert publish._model_recipe(SimpleNamespace(model={"source": "hf:org/model"})) is None


def test_an_unfinished_run_is_carried_in_the_repository_and_resumed_elsewhere(tmp_path, monkeypatch, capsys):
    """A machine that does not outlive its session: its crashed run goes into progress/, and a
    fresh machine's store resumes it with the manifest's command, counting both sessions."""
    from tasks.pubmedqa import PubMedQA

    evaluate, calls = PubMedQA.evaluate, []

    def crash_on_third_chunk(self, docs, method, settings):
        calls.append(len(docs))
        if len(calls) == 3:
            raise RuntimeError("machine lost")
        return evaluate(self, docs, method, settings)

    monkeypatch.setattr(PubMedQA, "docs_per_chunk", 4)
    monkeypatch.setattr(PubMedQA, "evaluate", crash_on_third_chunk)
    first, fresh, scratch, progress = tmp_path / "first", tmp_path / "fresh", tmp_path / "scratch", tmp_path / "progress"
    argv = ["run", "--task", "pubmedqa", "--limit", "20", "--model", "tiny-random-llama", "--quiet"]
    with pytest.raises(RuntimeError, match="machine lost"):
        cli(*argv, "--output-dir", first)
    [crashed] = RunStore(first).run_dirs()
    assert len(crashed.samples()) == 8 and crashed.results() is None
    capsys.readouterr()
    assert cli("publish", crashed.run_id, "--output-dir", first, "--to", progress) == 2
    assert "unfinished (8 of 20 samples)" in capsys.readouterr().err and not progress.exists()
    assert cli("publish", crashed.run_id, "--unfinished", "--output-dir", first, "--to", progress) == 0
    assert publish.verify(progress) == []
    entry = json.loads((progress / "MANIFEST.json").read_text())["runs"][crashed.run_id]
    assert entry["unfinished"] == {"done": 8, "of": 20} and set(entry["files"]) == {"spec.json", "state.json", "samples.jsonl.gz"}
    assert entry["command"].endswith(f"--reuse-from progress/{crashed.run_id}")
    monkeypatch.setattr(PubMedQA, "evaluate", evaluate)
    monkeypatch.chdir(tmp_path)  # the manifest's command runs from the folder holding progress/
    resume = shlex.split(entry["command"])[1:] + ["--quiet", "--output-dir", fresh]
    assert cli(*resume) == 0
    resumed = RunStore(fresh).run(crashed.run_id)
    results = resumed.results()
    first_session = crashed.state()["sessions"][0]
    assert results["n_samples"] == 20 and results["reused_from"] == []
    assert results["timing"]["sessions"] == 2 and results["timing"]["resumed"]
    assert results["cost"]["wall_time_s"] > first_session["cost"]["wall_time_s"] > 0
    carried = {r["doc_id"]: r for r in crashed.samples()}
    assert [r for r in resumed.samples() if r["doc_id"] in carried] == list(carried.values())  # taken over, not recomputed
    # the same predictions as a run never interrupted; the command again takes nothing twice
    assert cli(*argv, "--output-dir", scratch) == 0
    [whole] = RunStore(scratch).run_dirs()
    assert whole.run_id == crashed.run_id
    by_doc = {r["doc_id"]: r["pred"] for r in resumed.samples()}
    assert [r["pred"] for r in whole.samples()] == [by_doc[r["doc_id"]] for r in whole.samples()]
    assert cli(*resume) == 0
    assert len(resumed.state()["sessions"]) == 2 and len(resumed.samples()) == 20
    # once finished and published, the carried copy leaves progress/
    assert cli("publish", crashed.run_id, "--remove", "--to", progress) == 0
    assert not (progress / crashed.run_id).exists() and publish.verify(progress) == []
    assert cli("publish", "0000", "--remove", "--to", progress) == 2
