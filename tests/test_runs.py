"""The run store and CLI: results contents, reuse, resume after SIGKILL, rescore, compare, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli

from harness.api import Capability
from harness.method import METHODS, Method
from harness.store import RunStore

TINY = ["--model", "tiny-random-llama", "--quiet"]


def _only_run(runs_dir: Path) -> Path:
    runs = [p for p in runs_dir.iterdir() if p.is_dir()]
    assert len(runs) == 1
    return runs[0]


def test_quiet_silences_every_progress_bar_model_loading_included(runs_dir, capsys):
    argv = ["run", "--task", "pubmedqa", "--limit", "2", "--output-dir", runs_dir, "--model", "tiny-random-llama"]
    assert cli(*argv) == 0
    assert "load tiny-random-llama" in capsys.readouterr().err  # the bars are there without --quiet
    assert cli(*argv, "--seed", "1", "--quiet") == 0
    assert capsys.readouterr().err == ""
    assert cli("rescore", _only_runs(runs_dir)[0].name, "--output-dir", runs_dir, "--quiet") == 0
    assert capsys.readouterr().err == ""


def _only_runs(runs_dir: Path) -> list[Path]:
    return sorted(p for p in runs_dir.iterdir() if p.is_dir())


def test_run_writes_a_citable_result_and_is_reused(runs_dir, capsys):
    assert cli("run", "--task", "pubmedqa", "--limit", "12", "--output-dir", runs_dir, *TINY) == 0
    run = _only_run(runs_dir)
    spec = json.loads((run / "spec.json").read_text())
    results = json.loads((run / "results.json").read_text())
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == results["n_samples"] == 12
    assert spec["model"]["weights_sha256"] and spec["model"]["n_parameters"] > 0 and spec["model"]["chat_template_sha256"]
    assert spec["selection"]["limit"] == 12 and len(spec["selection"]["doc_ids"]) == 12
    acc = results["metrics"]["acc"]
    assert acc["ci_method"] == "wilson" and acc["ci_low"] <= acc["value"] <= acc["ci_high"] and acc["higher_is_better"]
    assert results["metrics"]["macro_f1"]["ci_method"].startswith("bootstrap")
    assert results["cost"]["forward_passes"] > 0 and results["cost"]["tokens_processed"] > 0 and results["cost"]["tokens_scored"] >= 36
    assert results["environment"]["packages"]["torch"] and "git_revision" in results["environment"]
    assert results["seeds"] == {"run": 0, "selection": 0, "bootstrap": 0}
    assert results["timing"]["wall_time_s"] > 0
    capsys.readouterr()
    assert cli("run", "--task", "pubmedqa", "--limit", "12", "--output-dir", runs_dir, *TINY) == 0
    assert "reused finished run" in capsys.readouterr().out
    assert json.loads((run / "results.json").read_text()) == results


def test_subsets_are_seeded_and_identical_across_methods_and_models(runs_dir):
    assert cli("run", "--task", "pubmedqa", "--limit", "5", "--output-dir", runs_dir, *TINY) == 0
    assert cli("run", "--task", "pubmedqa", "--limit", "5", "--method-arg", "max_length=256", "--output-dir", runs_dir, *TINY) == 0
    assert cli("run", "--task", "pubmedqa", "--limit", "5", "--seed", "1", "--output-dir", runs_dir, *TINY) == 0
    specs = [json.loads(p.read_text()) for p in sorted(runs_dir.glob("*/spec.json"))]
    assert len({s["method"]["args"]["max_length"] for s in specs}) == 2
    by_seed = {}
    for s in specs:
        by_seed.setdefault(s["seed"], set()).add(tuple(s["selection"]["doc_ids"]))
    assert len(by_seed[0]) == 1 and by_seed[0] != by_seed[1]


def test_rescore_show_and_compare(runs_dir, capsys):
    assert cli("run", "--task", "pubmedqa", "--limit", "20", "--output-dir", runs_dir, *TINY) == 0
    assert cli("run", "--task", "pubmedqa", "--limit", "20", "--method-arg", "max_length=64", "--output-dir", runs_dir, *TINY) == 0
    run_a, run_b = sorted(RunStore(runs_dir).run_dirs(), key=lambda r: r.spec().method["args"]["max_length"] or 0)
    before = run_a.results()["metrics"]
    # provenance comes from the data store: every file the task read, with its sha256 and source
    data = run_a.results()["data"]
    assert [f["file"] for f in data["files"]] == ["pubmedqa/ori_pqal.json", "pubmedqa/test_ground_truth.json"]
    assert all(len(f["sha256"]) == 64 and f["license"] for f in data["files"]) and data["hub"] == []
    assert "data" not in run_a.results()["protocol"]  # no private copy kept by the task
    capsys.readouterr()
    assert cli("rescore", run_a.run_id, "--output-dir", runs_dir) == 0
    assert run_a.results()["metrics"] == before
    assert run_a.results()["data"] == data  # rescoring reads no data, and keeps what the run read
    assert cli("show", "--output-dir", runs_dir) == 0
    listing = capsys.readouterr().out
    assert run_a.run_id in listing and run_b.run_id in listing and "finished" in listing
    assert cli("compare", run_a.run_id[:8], run_b.run_id, "--output-dir", runs_dir, "--json") == 0
    comparison = json.loads(capsys.readouterr().out)
    assert {c["metric"] for c in comparison} == {"acc", "macro_f1"}
    assert all(c["n_shared"] == 20 and 0 <= c["p_value"] <= 1 for c in comparison)


def test_a_larger_subset_reuses_a_smaller_runs_samples_when_asked(tmp_path, capsys):
    small, fresh = tmp_path / "small", tmp_path / "fresh"
    base = ["run", "--task", "pubmedqa", *TINY]
    assert cli(*base, "--limit", "6", "--output-dir", small) == 0
    [source] = RunStore(small).run_dirs()
    capsys.readouterr()
    # a different protocol, or a subset that is not inside this one, is refused, and nothing written
    assert cli(*base, "--limit", "12", "--method-arg", "max_length=64", "--reuse-from", source.run_id, "--output-dir", small) == 2
    assert "method differ from this run's" in capsys.readouterr().err
    assert cli(*base, "--limit", "12", "--seed", "1", "--reuse-from", source.run_id, "--output-dir", small) == 2
    assert "seed differ" in capsys.readouterr().err
    assert len(RunStore(small).run_dirs()) == 1
    assert cli(*base, "--limit", "12", "--reuse-from", source.run_id[:8], "--output-dir", small) == 0
    [extended] = [r for r in RunStore(small).run_dirs() if r.run_id != source.run_id]
    results = extended.results()
    assert results["n_samples"] == 12 and results["reused_from"] == [{"run_id": source.run_id, "n": 6}]
    by_doc = {r["doc_id"]: r for r in extended.samples()}
    assert all(by_doc[r["doc_id"]] == r for r in source.samples())  # copied, not recomputed
    assert not results["timing"]["resumed"]
    # the same spec as a run made from scratch: same id, same predictions
    assert cli(*base, "--limit", "12", "--output-dir", fresh) == 0
    [scratch] = RunStore(fresh).run_dirs()
    assert scratch.run_id == extended.run_id and scratch.results()["reused_from"] == []
    assert scratch.results()["cost"]["model_calls"] == results["cost"]["model_calls"]  # the source's cost counts
    assert [r["pred"] for r in scratch.samples()] == [by_doc[r["doc_id"]]["pred"] for r in scratch.samples()]
    # rerunning the same command finds the finished run; the source is never taken over twice
    assert cli(*base, "--limit", "12", "--reuse-from", source.run_id, "--output-dir", small) == 0
    assert len(extended.samples()) == 12
    # a published run's folder serves when its samples were kept whole
    published, elsewhere = tmp_path / "results", tmp_path / "elsewhere"
    assert cli("publish", source.run_id, "--output-dir", small, "--to", published) == 0
    manifest = json.loads((published / "MANIFEST.json").read_text())
    manifest["runs"][source.run_id]["samples"]["whole_records"] = 3
    (published / "MANIFEST.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert cli(*base, "--limit", "12", "--reuse-from", published / source.run_id, "--output-dir", elsewhere) == 2
    assert "trimmed (3 of 6 whole)" in capsys.readouterr().err and not elsewhere.exists()
    manifest["runs"][source.run_id]["samples"]["whole_records"] = 6
    (published / "MANIFEST.json").write_text(json.dumps(manifest))
    assert cli(*base, "--limit", "12", "--reuse-from", published / source.run_id, "--output-dir", elsewhere) == 0
    assert RunStore(elsewhere).run(extended.run_id).results()["reused_from"] == [{"run_id": source.run_id, "n": 6}]


def test_kill_and_resume_equals_an_uninterrupted_run(tmp_path):
    args = ["run", "--task", "wikitext103", "--task-arg", "window=64", "--limit", "16", *TINY]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    killed_dir = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "harness.cli", *args, "--output-dir", str(killed_dir)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    lines = 0
    while time.time() < deadline and process.poll() is None:
        files = list(killed_dir.glob("*/samples.jsonl"))
        lines = files[0].read_text().count("\n") if files else 0
        if lines >= 2:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    run = _only_run(killed_dir)
    assert not (run / "results.json").exists()
    partial = (run / "samples.jsonl").read_text().count("\n")
    assert 2 <= partial < 16
    assert cli(*args, "--output-dir", killed_dir) == 0
    state = json.loads((run / "state.json").read_text())
    assert state["sessions"][-1]["n_done_before"] == partial  # finished samples were not recomputed
    assert cli(*args, "--output-dir", tmp_path / "clean") == 0
    clean = _only_run(tmp_path / "clean")
    assert clean.name == run.name
    resumed, uninterrupted = (json.loads((p / "results.json").read_text()) for p in (run, clean))
    assert resumed["metrics"] == uninterrupted["metrics"]
    assert resumed["timing"]["resumed"] and not uninterrupted["timing"]["resumed"]
    key = lambda r: r["doc_id"]  # noqa: E731
    samples = [sorted((json.loads(x) for x in (p / "samples.jsonl").read_text().splitlines()), key=key) for p in (run, clean)]
    assert samples[0] == samples[1]


def test_torn_last_line_is_dropped(runs_dir):
    assert cli("run", "--task", "pubmedqa", "--limit", "3", "--output-dir", runs_dir, *TINY) == 0
    run = RunStore(runs_dir).run_dirs()[0]
    with run.samples_path.open("a") as handle:
        handle.write('{"doc_id": "torn", "correc')
    assert [r["doc_id"] for r in run.samples()] == list(run.spec().selection["doc_ids"])
    assert run.samples_path.read_text().endswith("}\n")


def test_processes_starting_on_a_cold_cache_build_a_model_once(tmp_path, monkeypatch):
    """Two runs (or pytest-xdist workers) starting together: the second waits on the first's
    build and then uses it, rather than rebuilding it and deleting the folder being loaded."""
    import fcntl
    import threading

    from transformers import LlamaForCausalLM  # noqa: F401  (imported once here, not by two threads at once)

    from harness import models
    from harness.zoo import zoo

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "models" / "tiny-random-llama"
    folder.parent.mkdir(parents=True)
    resolved: list[models.ResolvedModel] = []
    with open(folder.parent / ".tiny-random-llama.lock", "w") as other_builder:
        fcntl.flock(other_builder, fcntl.LOCK_EX)
        waiting = threading.Thread(target=lambda: resolved.append(models.resolve("tiny-random-llama")))
        waiting.start()
        waiting.join(timeout=1.0)
        assert waiting.is_alive() and not folder.exists(), "a second process built the model beside the first"
        zoo()["tiny-random-llama"].builder(folder.parent / "built-by-other")
        (folder.parent / "built-by-other").rename(folder)
        built = folder.stat().st_ino
    waiting.join(timeout=60)
    assert resolved and resolved[0].path == folder and folder.stat().st_ino == built  # used, not rebuilt


class _GenerateOnly(Method):
    """A test method that can only generate."""

    provides = frozenset({Capability.GENERATE})


@pytest.fixture
def generate_only():
    METHODS._entries["test-generate-only"] = _GenerateOnly
    _GenerateOnly.name = "test-generate-only"
    yield
    METHODS._entries.pop("test-generate-only")


def _broken_model(tmp_path: Path) -> Path:
    folder = tmp_path / "broken-model"
    folder.mkdir()
    (folder / "config.json").write_text("{not json")
    return folder


BAD_INPUTS = {
    "unknown task": (["--task", "pubmedq"], "unknown task 'pubmedq'; did you mean 'pubmedqa'"),
    "unknown method": (["--task", "pubmedqa", "--method", "bse"], "unknown method 'bse'; did you mean 'base'"),
    "unknown model": (["--task", "pubmedqa", "--model", "smollm2-135m"], "unknown model 'smollm2-135m'; did you mean"),
    "malformed method arg": (["--task", "pubmedqa", "--method-arg", "max_length"], "expects key=value"),
    "unknown method arg": (["--task", "pubmedqa", "--method-arg", "max_lenght=5"], "did you mean 'max_length'"),
    "mistyped method arg": (["--task", "pubmedqa", "--method-arg", "max_length=long"], "must be an integer"),
    "invalid task arg": (["--task", "wikitext103", "--task-arg", "variant=novel"], "must be one of document, stream"),
    "bad limit": (["--task", "pubmedqa", "--limit", "0"], "must be a positive integer"),
    "bad batch size": (["--task", "pubmedqa", "--batch-size", "many"], "must be 'auto' or a positive integer"),
    "incompatible pair": (["--task", "pubmedqa", "--method", "test-generate-only"], "needs loglikelihood, which method 'test-generate-only' does not provide"),
    "missing data": (["--task", "pubmedqa", "--data-dir", "{empty}"], "dataset 'pubmedqa'"),
    "model that fails to load": (["--task", "pubmedqa", "--model", "{broken}"], "cannot be read"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_nonzero_and_writes_nothing(case, runs_dir, tmp_path, capsys, generate_only):
    argv, message = BAD_INPUTS[case]
    (tmp_path / "empty").mkdir()
    argv = [a.replace("{empty}", str(tmp_path / "empty")).replace("{broken}", str(_broken_model(tmp_path)) if "{broken}" in a else a) for a in argv]
    if "--model" not in argv:
        argv += ["--model", "tiny-random-llama"]
    with pytest.raises(SystemExit) if case in ("bad limit", "bad batch size") else _no_exit() as caught:
        code = cli("run", *argv, "--quiet", "--output-dir", runs_dir)
    code = caught.value.code if caught is not None and hasattr(caught, "value") else code
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1, err
    assert err.startswith("harness: error:") and message in err
    assert not runs_dir.exists() or not any(runs_dir.glob("*/spec.json"))


class _no_exit:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
