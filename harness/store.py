"""The run store: one folder per run id, an append-only sample log, and an SQLite index.

``runs/<id>/spec.json``    the full spec (written once, checked on resume)
``runs/<id>/samples.jsonl`` one record per finished document, appended and fsynced per chunk
``runs/<id>/results.json``  metrics with CIs and everything else needed to cite the number
``runs/<id>/state.json``    per-session options, cost and timings (rewritten atomically)
``runs/index.sqlite``       one row per run, for ``harness show``, tables and leaderboards

A folder of published runs (``results/``, written by ``harness publish``) has the same
layout with ``samples.jsonl.gz`` and a ``MANIFEST.json``; ``open_store`` reads it read-only,
with its index in memory, so reading it never writes into the repository.
"""

from __future__ import annotations

import fcntl
import gzip
import json
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.errors import RunStoreError
from harness.spec import RunSpec, canonical_json

SAMPLES_GZ = "samples.jsonl.gz"  # a published run's samples (compressed, possibly trimmed)
PUBLISHED_MANIFEST = "MANIFEST.json"  # marks a folder of published runs


RUNS_DIR_ENV = "HARNESS_RUNS_DIR"


def default_runs_dir() -> Path:
    return Path(os.environ.get(RUNS_DIR_ENV, "runs"))


def atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def atomic_write_json(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, ensure_ascii=False, sort_keys=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; results are meant to be read and shared
    os.replace(tmp, path)


@contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """A folder built aside and swapped in for ``target`` only when the block completes, so a
    failed build leaves the previous ``target`` (or none) and no half-written one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it owner-only; what is built here is meant to be read
    try:
        yield staging
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def build_once(target: Path, is_built: Callable[[], bool], build: Callable[[], None]) -> None:
    """Run ``build`` unless ``is_built()``, holding a lock file beside ``target``: processes that
    start together on a cold cache (pytest-xdist workers, a sweep's Ray workers, two shells)
    build it once, and the rest wait and find it built. Unlocked, a second builder's
    ``staged_folder`` swap deleted the folder the first was already loading from."""
    if is_built():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released with the file, or with the process if it dies
        if not is_built():
            build()


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The lines of a JSON-lines file written by ``append_jsonl``; a torn last line (crash
    mid-write) is dropped and cut off, so the next append starts on a clean line."""
    if not path.is_file():
        return []
    raw = path.read_bytes()
    records, good_end = [], 0
    for line in raw.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
        good_end += len(line)
    if good_end != len(raw):
        with open(path, "r+b") as handle:
            handle.truncate(good_end)
    return records


def append_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Appends the records in one write and fsyncs, so a crash tears at most this write."""
    payload = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records).encode()
    if not payload:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, payload)
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """What a task has done so far of the chunk in flight (a game's steps, a trial's
    reflection): a task that writes one resumes a crashed chunk where it stopped instead of
    from its start. The runner empties it once the chunk's records are saved. A journal
    without a path (a task called outside a run) keeps nothing."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def entries(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path) if self.path is not None else []

    def write(self, entries: Iterable[dict[str, Any]]) -> None:
        if self.path is not None:
            append_jsonl(self.path, entries)

    def clear(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.run_id = path.name

    spec_path = property(lambda self: self.path / "spec.json")
    samples_path = property(lambda self: self.path / "samples.jsonl")
    results_path = property(lambda self: self.path / "results.json")
    state_path = property(lambda self: self.path / "state.json")

    def exists(self) -> bool:
        return self.spec_path.is_file()

    def spec(self) -> RunSpec:
        try:
            return RunSpec.from_dict(json.loads(self.spec_path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError, KeyError) as error:
            raise RunStoreError(f"run {self.run_id}: unreadable spec.json ({error})") from None

    def create(self, spec: RunSpec) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        if self.exists():
            if canonical_json(self.spec().as_dict()) != canonical_json(spec.as_dict()):
                raise RunStoreError(f"run {self.run_id}: spec.json differs from this run's spec")
            return
        atomic_write_json(self.spec_path, spec.as_dict())
        self.samples_path.touch()

    @contextmanager
    def lock(self, wait: bool = False) -> Iterator[None]:
        """One writer per run: a second process on the same spec fails at once, or with
        ``wait`` blocks until the first is done (the lock goes with its process, even killed)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise RunStoreError(f"run {self.run_id} is being written by another process") from None
            yield

    def samples(self) -> list[dict[str, Any]]:
        """Finished records; a torn last line (crash mid-write) is dropped and cut off. A
        published run (no ``samples.jsonl``) reads its ``samples.jsonl.gz``."""
        published = self.path / SAMPLES_GZ
        if not self.samples_path.is_file() and published.is_file():
            try:
                return [json.loads(line) for line in gzip.decompress(published.read_bytes()).splitlines() if line]
            except (OSError, EOFError, json.JSONDecodeError) as error:
                raise RunStoreError(f"run {self.run_id}: unreadable {SAMPLES_GZ} ({error})") from None
        return read_jsonl(self.samples_path)

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        append_jsonl(self.samples_path, records)  # one write per chunk: a crash tears at most this chunk

    @property
    def journal(self) -> Journal:
        return Journal(self.path / "journal.jsonl")

    def results(self) -> dict[str, Any] | None:
        if not self.results_path.is_file():
            return None
        return json.loads(self.results_path.read_text(encoding="utf-8"))

    def write_results(self, results: dict[str, Any]) -> None:
        atomic_write_json(self.results_path, results)

    def state(self) -> dict[str, Any]:
        if not self.state_path.is_file():
            return {"sessions": []}
        return json.loads(self.state_path.read_text(encoding="utf-8"))

    def write_state(self, state: dict[str, Any]) -> None:
        atomic_write_json(self.state_path, state)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    task TEXT, task_version TEXT, method TEXT, model TEXT, seed INTEGER, n_limit INTEGER,
    status TEXT, n_samples INTEGER, n_selected INTEGER,
    main_metric TEXT, main_value REAL, ci_low REAL, ci_high REAL, higher_is_better INTEGER,
    created_at TEXT, updated_at TEXT, path TEXT, spec_json TEXT, metrics_json TEXT, cost_json TEXT
)
"""


class RunStore:
    read_only = False

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.index_path = self.root / "index.sqlite"

    def run(self, run_id: str) -> RunDir:
        return RunDir(self.root / run_id)

    def find(self, prefix: str) -> RunDir:
        """A run by id or unique id prefix."""
        if (self.root / prefix / "spec.json").is_file():
            return self.run(prefix)
        matches = sorted(p.name for p in self.root.glob(f"{prefix}*") if (p / "spec.json").is_file()) if self.root.is_dir() else []
        if len(matches) == 1:
            return self.run(matches[0])
        if not matches:
            raise RunStoreError(f"no run '{prefix}' in {self.root}")
        raise RunStoreError(f"run id '{prefix}' is ambiguous: {', '.join(matches[:5])}")

    def run_dirs(self) -> list[RunDir]:
        if not self.root.is_dir():
            return []
        return [RunDir(p) for p in sorted(self.root.iterdir()) if (p / "spec.json").is_file()]

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        self.root.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.index_path, timeout=60)  # the timeout is SQLite's busy wait
        try:
            # Write-ahead logging: readers do not block the writers of concurrent runs and sweeps.
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(_SCHEMA)
            yield connection
            connection.commit()
        finally:
            connection.close()

    def index(self, run: RunDir) -> None:
        spec = run.spec()
        results = run.results()
        n_samples = len(run.samples())
        status = "finished" if results else ("running" if n_samples == 0 else "incomplete")
        main = results["metrics"][results["main_metric"]] if results else {}
        row = {
            "run_id": run.run_id, "task": spec.task["name"], "task_version": spec.task["version"],
            "method": spec.method["name"], "model": spec.model["name"], "seed": spec.seed,
            "n_limit": spec.selection.get("limit"), "status": status, "n_samples": n_samples,
            "n_selected": spec.selection.get("n_selected"),
            "main_metric": results["main_metric"] if results else None, "main_value": main.get("value"),
            "ci_low": main.get("ci_low"), "ci_high": main.get("ci_high"),
            "higher_is_better": main.get("higher_is_better"),
            "created_at": run.state().get("created_at"), "updated_at": now(), "path": str(run.path),
            "spec_json": canonical_json(spec.as_dict()),
            "metrics_json": canonical_json(results["metrics"]) if results else None,
            "cost_json": canonical_json(results.get("cost")) if results else None,
        }
        with self._db() as db:
            columns = ", ".join(row)
            marks = ", ".join(f":{k}" for k in row)
            db.execute(f"INSERT OR REPLACE INTO runs ({columns}) VALUES ({marks})", row)

    def reindex(self) -> int:
        runs = self.run_dirs()
        for run in runs:
            self.index(run)
        return len(runs)

    def _needs_index(self) -> bool:
        return not self.index_path.is_file()

    def rows(self, **filters: Any) -> list[dict[str, Any]]:
        if self._needs_index():
            self.reindex()
        with self._db() as db:
            db.row_factory = sqlite3.Row
            where = " AND ".join(f"{k} = :{k}" for k in filters)
            query = "SELECT * FROM runs" + (f" WHERE {where}" if where else "") + " ORDER BY updated_at"
            return [dict(r) for r in db.execute(query, filters)]


class PublishedStore(RunStore):
    """Published runs (``results/``): read-only, indexed in memory when first asked, so
    reading them never writes into the folder (the repository)."""

    read_only = True

    def __init__(self, root: str | Path) -> None:
        super().__init__(root)
        self._connection = sqlite3.connect(":memory:")
        self._connection.execute(_SCHEMA)
        self._indexed = False

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        yield self._connection
        self._connection.commit()

    def _needs_index(self) -> bool:
        return not self._indexed

    def reindex(self) -> int:
        count = super().reindex()
        self._indexed = True
        return count

    def manifest(self) -> dict[str, Any]:
        return json.loads((self.root / PUBLISHED_MANIFEST).read_text(encoding="utf-8"))


def open_store(root: str | Path | None = None) -> RunStore:
    """The run store at ``root`` (default: ``$HARNESS_RUNS_DIR``, else ./runs): a folder of
    published runs (with a ``MANIFEST.json``) opens read-only, any other folder as a working store."""
    root = Path(root) if root is not None else default_runs_dir()
    return PublishedStore(root) if (root / PUBLISHED_MANIFEST).is_file() else RunStore(root)
