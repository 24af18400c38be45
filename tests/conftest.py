"""Shared fixtures. Tests read the local data mirror (../shared/data unless HARNESS_DATA_DIR
is set) and keep converted models in the harness cache (HARNESS_CACHE_DIR or ~/.cache/harness)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("HARNESS_DATA_DIR") or REPO.parent / "shared" / "data")
os.environ["HARNESS_DATA_DIR"] = str(MIRROR)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    # Workers share the cores: torch's default of one thread per core in every worker
    # oversubscribes them (two 2-thread workers on 2 cores ran several times slower than one).
    threads = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, threads)


# The slowest files (minutes each) first: pytest-xdist hands out whole files in collection order,
# and a slow file handed out last keeps one worker busy while the other idles.
SLOWEST_FILES = ("test_sweep.py", "test_publish.py", "test_remote.py", "test_code_repair.py", "test_memory.py", "test_endor.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOWEST_FILES)))  # stable: each file keeps its order


@pytest.fixture(scope="session")
def mirror() -> Path:
    if not (MIRROR / "MANIFEST.json").is_file():
        pytest.fail(f"data mirror not found at {MIRROR}; set HARNESS_DATA_DIR")
    return MIRROR


@pytest.fixture(scope="session")
def tiny():
    from harness import models

    return models.load(models.resolve("tiny-random-llama"))


@pytest.fixture(scope="session")
def smollm2():
    from harness import models

    return models.load(models.resolve("smollm2-135m-instruct"))


@pytest.fixture(scope="session")
def tiny_gemma3(tiny):
    """A random 2-layer Gemma 3 with a 16-token sliding window (tests windowed attention)."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from harness.identity import ModelIdentity
    from harness.models import LoadedModel

    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=len(tiny.tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=16,
        max_position_embeddings=256, layer_types=["sliding_attention", "full_attention"],
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    model = Gemma3ForCausalLM(config).eval()
    identity = ModelIdentity("tiny-gemma3", "test", "-", "float32", 0, None, 256, "Gemma3ForCausalLM")
    return LoadedModel(model, tiny.tokenizer, identity, torch.device("cpu"))


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


def cli(*argv: str) -> int:
    from harness.cli import main

    return main([str(a) for a in argv])


def saved_training_seconds(zoo_dir: Path) -> float:
    """The training seconds a TRL trainer saved beside its (one kept) checkpoint under a zoo folder."""
    from training.clock import CLOCK_FILE

    (saved,) = zoo_dir.glob(f".train-*/checkpoints/checkpoint-*/{CLOCK_FILE}")
    return float(json.loads(saved.read_text())["seconds"])


@pytest.fixture(scope="session")
def report_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small run store for report, table, leaderboard and browser tests: PubMedQA with two
    method settings and UBench, all on the tiny random model (seconds)."""
    root = tmp_path_factory.mktemp("report-runs") / "runs"
    tiny = ["--model", "tiny-random-llama", "--quiet", "--output-dir", root]
    for argv in (["--task", "pubmedqa", "--limit", "20"],
                 ["--task", "pubmedqa", "--limit", "20", "--method-arg", "max_length=64"],
                 ["--task", "ubench", "--limit", "24"]):
        assert cli("run", *argv, *tiny) == 0
    return root
