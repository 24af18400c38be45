"""Sweeps: grids from YAML and flags, the plan, the local and Ray executors (same run ids and
samples as serial runs), a worker killed mid-cell, and two sweeps over one store at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from harness import sweep
from harness.errors import HarnessError
from harness.runner import RunRequest, run
from tests.conftest import REPO, cli

TINY = "tiny-random-llama"


def _samples(runs: Path, run_id: str) -> list[dict]:
    return [json.loads(line) for line in (runs / run_id / "samples.jsonl").read_text().splitlines()]


def test_yaml_grid_expands_args_and_keeps_model_major_order(tmp_path: Path) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text("tasks: [pubmedqa, {name: ubench, args: {mode: loglikelihood}}]\n"
                    "methods: [base, {name: quantize, args: {group_size: 32}, grid: {bits: [4, 8]}}]\n"
                    "models: [a, b]\nseeds: [0, 1]\nlimit: 5\n")
    cells = sweep.cells_of(sweep.grid_from_yaml(path), tmp_path, None)
    assert len(cells) == 2 * 2 * 3 * 2
    assert [c.model for c in cells[:12]] == ["a"] * 12  # a worker goes through one model's cells first
    quantized = [c for c in cells if c.method == "quantize" and c.task == "ubench" and c.model == "a" and c.seed == 0]
    assert [dict(c.method_args) for c in quantized] == [{"group_size": 32, "bits": 4}, {"group_size": 32, "bits": 8}]
    assert all(c.limit == 5 and dict(c.task_args) == {"mode": "loglikelihood"} for c in cells if c.task == "ubench")
    path.write_text("methods: [base]\n")
    with pytest.raises(HarnessError, match="tasks"):
        sweep.grid_from_yaml(path)


def test_flag_grid_sweeps_repeated_keys_and_scopes_named_ones(tmp_path: Path) -> None:
    grid = sweep.grid_from_cli(["pubmedqa"], ["base", "quantize"], [TINY], [], ["split=all"],
                               ["quantize:bits=4", "quantize:bits=8", "max-length=64"], 8, "auto", "cpu")
    cells = sweep.cells_of(grid, tmp_path, None)
    assert [(c.method, dict(c.method_args)) for c in cells] == [
        ("base", {"max_length": "64"}), ("quantize", {"max_length": "64", "bits": "4"}), ("quantize", {"max_length": "64", "bits": "8"})]
    assert all(dict(c.task_args) == {"split": "all"} and c.seed == 0 for c in cells)
    assert "--method-arg bits=4" in sweep.command_of(cells[1]) and "--limit 8" in sweep.command_of(cells[1])


def test_plan_drops_incompatible_pairs_once_and_refuses_bad_names(tmp_path: Path, mirror: Path) -> None:
    grid = sweep.grid_from_cli(["pubmedqa"], ["base", "cards"], [TINY], [0, 1], [], ["cards:reward_model=tiny-random-reward"],
                               4, "auto", "cpu")
    planned, skipped = sweep.plan(sweep.cells_of(grid, tmp_path / "runs", None))
    assert [c.request.method for c in planned] == ["base", "base"] and len(skipped) == 1 and "loglikelihood" in skipped[0]
    bad = sweep.grid_from_cli(["pubmedqa"], ["no-such-method"], [TINY], [], [], [], 4, "auto", "cpu")
    with pytest.raises(HarnessError, match="no-such-method"):
        sweep.plan(sweep.cells_of(bad, tmp_path / "runs", None))


def test_local_sweep_matches_serial_runs_and_dry_run_knows_it(tmp_path: Path, mirror: Path, capsys) -> None:
    runs, serial = tmp_path / "runs", tmp_path / "serial"
    flags = ["--task", "pubmedqa", "--task", "ubench", "--method", "base", "--method", "quantize", "--method-arg", "quantize:bits=4",
             "--model", TINY, "--limit", "6"]
    assert cli("sweep", *flags, "--jobs", "2", "--quiet", "--output-dir", runs) == 0
    out = capsys.readouterr().out
    assert "4 of 4 cells finished" in out
    for task, method, args in (("pubmedqa", "quantize", {"bits": "4"}), ("ubench", "base", {})):
        outcome = run(RunRequest(task=task, method=method, model=TINY, method_args=args, limit=6, output_dir=serial, show_progress=False))
        assert _samples(runs, outcome.run_id) == _samples(serial, outcome.run_id)
    assert cli("sweep", *flags, "--dry-run", "--output-dir", runs) == 0
    listing = capsys.readouterr().out
    assert listing.count("finished") == 4 and "0 to run" in listing


def _worker_of(sweep_process: subprocess.Popen) -> psutil.Process | None:
    for child in psutil.Process(sweep_process.pid).children(recursive=True):
        line = " ".join(child.cmdline())
        if "spawn_main" in line and "resource_tracker" not in line:
            return child
    return None


def test_a_worker_killed_mid_cell_is_replaced_and_the_cell_resumes(tmp_path: Path, mirror: Path) -> None:
    runs, serial = tmp_path / "runs", tmp_path / "serial"
    argv = ["--task", "pubmedqa", "--model", TINY, "--limit", "160", "--batch-size", "1"]
    outcome = run(RunRequest(task="pubmedqa", model=TINY, limit=160, batch_size=1, output_dir=serial, show_progress=False))
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "harness", "sweep", *argv, "--quiet", "--output-dir", str(runs)],
                               cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples = runs / outcome.run_id / "samples.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (samples.is_file() and samples.stat().st_size > 0):
        time.sleep(0.05)
    worker = _worker_of(process)
    assert worker is not None and not (runs / outcome.run_id / "results.json").exists(), "the cell ended before it could be killed"
    worker.send_signal(signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert "a worker died" in stderr and "1 of 1 cells finished" in stdout
    assert _samples(runs, outcome.run_id) == _samples(serial, outcome.run_id)
    state = json.loads((runs / outcome.run_id / "state.json").read_text())
    assert len(state["sessions"]) == 2 and state["sessions"][1]["n_done_before"] > 0  # resumed, not restarted


def test_two_sweeps_over_one_grid_end_each_cell_once(tmp_path: Path, mirror: Path) -> None:
    runs = tmp_path / "runs"
    argv = [sys.executable, "-m", "harness", "sweep", "--task", "pubmedqa", "--task", "ubench", "--method", "base",
            "--method", "prune", "--model", TINY, "--limit", "32", "--quiet", "--output-dir", str(runs)]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    both = [subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for process in both:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr
    folders = [p for p in runs.iterdir() if (p / "spec.json").is_file()]
    assert len(folders) == 4
    for folder in folders:
        ids = [r["doc_id"] for r in _samples(runs, folder.name)]
        assert len(ids) == len(set(ids)) == 32 and json.loads((folder / "results.json").read_text())["n_samples"] == 32
        sessions = json.loads((folder / "state.json").read_text())["sessions"]
        assert len(sessions) == 1  # written by one sweep; the other waited and reused it
    import sqlite3

    rows = sqlite3.connect(runs / "index.sqlite").execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall()
    assert rows == [("finished", 4)]


def test_ray_sweep_on_a_local_cluster_matches_serial_runs(tmp_path: Path, mirror: Path) -> None:
    ray = pytest.importorskip("ray")
    runs, serial = tmp_path / "runs", tmp_path / "serial"
    grid = sweep.grid_from_cli(["pubmedqa"], ["base", "quantize"], [TINY], [], [], ["quantize:bits=4"], 6, "auto", "cpu")
    planned, _ = sweep.plan(sweep.cells_of(grid, runs, None))
    try:
        results = sweep.execute([c.request for c in planned], "ray", jobs=2, show_progress=False)
    finally:
        ray.shutdown()
    assert [r.status for r in results] == ["finished", "finished"]
    for cell, result in zip(planned, results, strict=True):
        outcome = run(RunRequest(task="pubmedqa", method=cell.request.method, model=TINY, method_args=cell.request.method_args,
                                 limit=6, output_dir=serial, show_progress=False))
        assert result.run_id == outcome.run_id == cell.run_id
        assert _samples(runs, result.run_id) == _samples(serial, outcome.run_id)


def test_paper_run_builds_its_missing_cells_as_a_sweep(tmp_path: Path, mirror: Path, monkeypatch, capsys) -> None:
    from reports import paper_spec

    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "toy.yaml").write_text(
        "paper: toy\ntitle: Toy\ncitation: none\ntables:\n  - id: t\n    title: T\n    source: none\n    metrics: [acc]\n"
        "    cells:\n      - {task: pubmedqa, models: [tiny-random-llama], limit: 4}\n"
        "      - {task: pubmedqa, method: quantize, method_args: {bits: 4}, models: [tiny-random-llama], limit: 4}\n"
        "claims: []\n")
    load = paper_spec.load_spec
    monkeypatch.setattr(paper_spec, "load_spec", lambda name, folder=specs: load(name, specs))
    runs = tmp_path / "runs"
    assert cli("paper", "toy", "--run", "--jobs", "2", "--runs", runs, "--out", tmp_path / "out", "--quiet") == 0
    report = json.loads((tmp_path / "out" / "toy.json").read_text())
    assert [(row["method"], bool(row.get("run_id"))) for row in report["tables"][0]["rows"]] == [("base", True), ("quantize", True)]


def test_bad_sweeps_are_one_line_and_run_nothing(tmp_path: Path, mirror: Path, capsys) -> None:
    runs = tmp_path / "runs"
    assert cli("sweep", tmp_path / "missing.yaml", "--output-dir", runs) == 2
    assert cli("sweep", "--output-dir", runs) == 2
    assert cli("sweep", "--task", "pubmedqa", "--method", "cards", "--method-arg", "reward_model=tiny-random-reward",
               "--model", TINY, "--output-dir", runs) == 2
    errors = capsys.readouterr().err.splitlines()
    assert errors[0].startswith("harness: error: cannot read grid") and "no compatible cell" in errors[-1]
    assert not runs.exists() or not any(runs.iterdir())
