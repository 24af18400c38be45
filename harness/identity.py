"""A model's identity: what a run records about the model it ran (source, weights sha256, dtype,
parameter count, chat-template hash, context length, architecture and kind), read from the
model's folder without loading its weights, so a finished run can be found before any model
loads."""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from harness.errors import ModelLoadError, first_line
from harness.store import atomic_write_text
from harness.zoo import cached_sha256

ModelKind = Literal["causal-lm", "sequence-classifier", "image-text-to-text", "api"]  # api: behind an HTTP API (harness.remote)
DEFAULT_MAX_LENGTH = 2048  # lm-eval's fallback when a config states no context length
IDENTITY_FILE = "harness_identity.json"


@dataclass(frozen=True)
class ModelIdentity:
    name: str
    source: str
    weights_sha256: str
    dtype: str
    n_parameters: int
    chat_template_sha256: str | None
    max_length: int
    architecture: str
    kind: ModelKind = "causal-lm"
    # Loading options that change what the model computes (a pinned revision, the attention
    # kernel, quantized loading), as sorted (key, value) pairs; none by default.
    load_options: tuple[tuple[str, Any], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        identity = asdict(self)
        if self.kind == "causal-lm":
            del identity["kind"]  # the kind every run had before kinds existed: their run ids stay
        if self.load_options:
            identity["load_options"] = dict(self.load_options)
        else:
            del identity["load_options"]  # likewise: runs without options keep their ids
        return identity


def weight_files(folder: Path) -> list[Path]:
    """A model folder's weight files (safetensors, else .bin); an error when it has none."""
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not files:
        raise ModelLoadError(f"no model weights (*.safetensors or *.bin) in {folder}")
    return files


def _safetensors_parameter_count(files: list[Path]) -> int | None:
    total = 0
    for file in files:
        if file.suffix != ".safetensors":
            return None
        with file.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        for key, info in header.items():
            if key != "__metadata__":
                count = 1
                for dim in info["shape"]:
                    count *= dim
                total += count
    return total


def context_length(config: Any, tokenizer: Any | None = None) -> int:
    for attr in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = getattr(config, attr, None) or getattr(getattr(config, "text_config", None), attr, None)
        if value:
            return int(value)
    limit = getattr(tokenizer, "model_max_length", None)
    if limit and limit < 1_000_000:
        return int(limit)
    return DEFAULT_MAX_LENGTH


def _template_hash(tokenizer: Any) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return None
    text = template if isinstance(template, str) else json.dumps(template, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def folder_identity(name: str, source: str, folder: Path, dtype: str, weights_sha256: str | None = None) -> ModelIdentity:
    from transformers import AutoConfig, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as error:
        raise ModelLoadError(f"model '{name}' at {folder} cannot be read: {type(error).__name__}: {first_line(error)}") from None
    files = weight_files(folder)
    if weights_sha256 is None:
        digest = hashlib.sha256()
        for file in files:
            digest.update(f"{file.name}:{cached_sha256(file)}\n".encode())
        weights_sha256 = digest.hexdigest()
    n_parameters = _safetensors_parameter_count(files)
    if n_parameters is None:
        n_parameters = -1  # *.bin checkpoints carry no cheap header to count from
    return ModelIdentity(
        name=name, source=source, weights_sha256=weights_sha256, dtype=dtype, n_parameters=n_parameters,
        chat_template_sha256=_template_hash(tokenizer), max_length=context_length(config, tokenizer),
        architecture=(config.architectures or [config.model_type])[0], kind=model_kind(config),
    )


def model_kind(config: Any) -> ModelKind:
    """What a checkpoint is, from its config: a causal LM, a sequence classifier (a reward model's
    scalar head) or an image-text-to-text model (a vision-language model such as LLaVA)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    architecture = (config.architectures or [""])[0]
    if architecture.endswith("ForSequenceClassification"):
        return "sequence-classifier"
    if architecture.endswith("ForCausalLM"):
        return "causal-lm"
    if config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        return "image-text-to-text"
    return "causal-lm"


def cached_identity(name: str, source: str, folder: Path, dtype: str, sha: str) -> ModelIdentity:
    stored = json.loads((folder / IDENTITY_FILE).read_text())
    if stored.get("weights_sha256") != sha:
        stored = folder_identity(name, source, folder, "float32", sha).as_dict()
        atomic_write_text(folder / IDENTITY_FILE, json.dumps(stored, indent=2))
    return ModelIdentity(**{**stored, "name": name, "source": source, "dtype": dtype})
