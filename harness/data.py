"""Where task data comes from: a local mirror (sha256-verified) or the Hugging Face hub.

With ``HARNESS_DATA_DIR`` (or ``--data-dir``) set, tasks read files from that folder, which
holds a ``MANIFEST.json`` listing ``file`` and ``sha256`` for each file; every file is checked
against it before use. Without a mirror, tasks read the hub through ``datasets``, after a
quick reachability check so that a machine with no network gets one clear line instead of a
hang.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from harness.errors import DataCorruptError, DataUnavailableError

DATA_DIR_ENV = "HARNESS_DATA_DIR"
HUB_HOST = "huggingface.co"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class HubSource:
    """A dataset on the Hugging Face hub, as ``datasets.load_dataset`` names it."""

    path: str
    name: str | None = None
    split: str = "test"
    revision: str | None = None
    data_files: str | None = None  # one file of the repository (a dataset whose files are not configs)


class DataStore:
    """Resolves a task's data to verified local files or hub rows."""

    def __init__(self, mirror: str | Path | None = None, verify: bool = True) -> None:
        root = mirror if mirror is not None else os.environ.get(DATA_DIR_ENV)
        self.mirror = Path(root).expanduser().resolve() if root else None
        self.verify = verify
        self._verified: set[Path] = set()
        # What this store handed out, for results.json: a task's data is whatever it read here.
        self.served: dict[str, dict[str, Any]] = {}
        self.hub: list[dict[str, Any]] = []

    @cached_property
    def manifest(self) -> dict[str, dict[str, Any]]:
        if self.mirror is None:
            return {}
        path = self.mirror / "MANIFEST.json"
        if not path.is_file():
            return {}
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise DataCorruptError(f"cannot read {path}: {error}") from None
        files = entries.get("files", entries) if isinstance(entries, dict) else entries
        return {entry["file"]: entry for entry in files if isinstance(entry, dict) and "file" in entry}

    def describe(self) -> dict[str, Any]:
        """Where the data came from: the mirror, and every file (with its sha256 and source) and
        hub dataset this store served so far."""
        # The mirror's place on this machine is left out: the files' sha256 say what was read.
        return {"mirror": "local" if self.mirror else None, "verified_sha256": self.verify,
                "files": [self.served[k] for k in sorted(self.served)], "hub": list(self.hub)}

    def file(self, relative: str, dataset: str) -> Path:
        """A verified file from the mirror; a clear error if there is no mirror or no file."""
        if self.mirror is None:
            raise DataUnavailableError(
                f"dataset '{dataset}' needs the local file {relative}: set {DATA_DIR_ENV} "
                "(or --data-dir) to a data mirror"
            )
        path = self.mirror / relative
        if not path.is_file():
            raise DataUnavailableError(
                f"dataset '{dataset}': {relative} is missing from the mirror {self.mirror} "
                f"(set {DATA_DIR_ENV} or --data-dir to a mirror that has it)"
            )
        if self.verify and path not in self._verified:
            entry = self.manifest.get(relative)
            if entry is None:
                raise DataCorruptError(f"dataset '{dataset}': {relative} is not listed in {self.mirror}/MANIFEST.json")
            actual = sha256_file(path)
            if actual != entry["sha256"]:
                raise DataCorruptError(
                    f"dataset '{dataset}': {relative} has sha256 {actual[:12]}…, "
                    f"the manifest says {entry['sha256'][:12]}… (file corrupt or changed)"
                )
            self._verified.add(path)
        if relative not in self.served:
            self.served[relative] = self.record(relative) | {"file": relative}
        return path

    def record(self, relative: str) -> dict[str, Any]:
        """Provenance of a mirrored file, for results.json."""
        entry = self.manifest.get(relative, {})
        return {key: entry.get(key) for key in ("file", "sha256", "source_repo", "source_commit", "license")}

    def hub_rows(self, source: HubSource, dataset: str) -> list[dict[str, Any]]:
        """Rows from the hub, or a clear error naming the dataset and the setting."""
        require_hub(dataset, source.path, f"set {DATA_DIR_ENV} (or --data-dir) to a data mirror")
        self.note_hub(source)
        import datasets

        try:
            rows = datasets.load_dataset(source.path, source.name, split=source.split, revision=source.revision,
                                         data_files=source.data_files)
        except Exception as error:  # the hub's failure modes are many; report one line
            raise DataUnavailableError(f"dataset '{dataset}' could not be loaded from the hub ({source.path}): {error}") from None
        return [dict(row) for row in rows]


    def note_local(self, path: Path) -> None:
        """Record a file read from outside the mirror (a user's local copy of a dataset)."""
        if not path.is_file():
            return  # the reader reports the missing file in its own words
        key = str(path.resolve())
        self.served.setdefault(key, {"file": key, "sha256": sha256_file(path), "source_repo": None,
                                     "source_commit": None, "license": None})

    def note_hub(self, source: HubSource) -> None:
        """Record a hub dataset read by other means (lm-eval, a task's own loader)."""
        entry = {"hub": source.path, "name": source.name, "split": source.split, "revision": source.revision,
                 **({"data_files": source.data_files} if source.data_files else {})}
        if entry not in self.hub:
            self.hub.append(entry)


def require_hub(dataset: str, hub_path: str, remedy: str) -> None:
    """Fail at once, in one line, when the hub is switched off or cannot be reached."""
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
    if offline or not hub_reachable():
        raise DataUnavailableError(
            f"dataset '{dataset}' is not available locally and the Hugging Face hub ({hub_path}) cannot be reached: {remedy}"
        )


def hub_reachable(timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False
