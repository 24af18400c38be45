"""``endor``: offloaded inference over Endor's bitmap sparse weights (Joo et al., arXiv
2406.11674; PAPERS.md §10; no public code).

The decoder layers' weights never sit in memory all at once. They live in a store
(``methods.bitmap_store``) on disk (``offload=disk``: one read per layer per forward pass) or
in host memory (``offload=host``: one copy, pinned when computing on a GPU); just before a
layer runs its bytes are copied to the compute device and decompressed there, and after it
runs they are freed. While one layer computes, the next layer's read runs on a background
thread (``prefetch``); on a CPU, where the host is the compute device, that thread decompresses
too, so the work overlaps the computation. Embeddings, the final norm and the output head stay resident.

The store is the one ``harness compress`` wrote into the model's folder, or else it is built
once from the model's weights into ``$HARNESS_CACHE_DIR/endor`` (keyed by the weights' sha256,
the encoding and the dtype). The numbers are the model's own: decompression is lossless, so a
pruned model scores the same through ``endor`` as through ``base`` (tested); only speed and
memory differ. Baselines: ``offload`` (the same engine over the same weights stored dense) and
Accelerate's disk offloading (``base`` with ``--model-arg device_map=disk``, which reads each
weight lazily from the checkpoint; ``benchmarks/bench_endor.py`` uses ``accelerate.disk_offload``).
Defaults: ``offload=disk``, prefetch on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from harness import progress
from harness.errors import ModelLoadError, first_line
from harness.method import Cost, MethodOptions, register_method
from harness.models import LoadedModel, ResolvedModel, load
from harness.zoo import cache_dir
from methods.base import BaseMethod, check_max_length
from methods.bitmap_store import DTYPES, RESIDENT, STORE_INDEX, Encoding, StoreReader, store_groups, write_store

STORE_FOLDER = "endor"  # inside a model's folder: <encoding>-<dtype>/ stores written by harness compress
# Layers fetched ahead, each on its own thread: two, so that on a CPU one layer's
# decompression runs beside the next one's read (a one-thread pipeline does them in turn).
PREFETCH_DEPTH = 2


@dataclass(frozen=True)
class EndorArgs:
    offload: str = "disk"  # where the decoder layers' weights wait between uses: disk (read per use) or host (one copy in memory)
    prefetch: bool = True  # read the next layer on a background thread while the current one computes
    max_length: int | None = None  # context length used; default: the model's own

    def __post_init__(self) -> None:
        if self.offload not in ("disk", "host"):
            raise ValueError(f"offload must be disk or host, got '{self.offload}'")
        check_max_length(self.max_length)


def decoder_layers(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList]:
    """The model's stack of decoder layers and the parameter-name prefix of its members
    (``model.layers.``): the module list as long as the config's layer count."""
    config = getattr(model.config, "text_config", None) or model.config
    count = config.num_hidden_layers
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return f"{name}.", module
    raise ModelLoadError(f"cannot find the {count} decoder layers of {type(model).__name__}")


def store_folder(resolved: ResolvedModel, encoding: Encoding, dtype: str) -> Path:
    """Where the model's store of this encoding and dtype is: in its folder if ``harness
    compress`` wrote one there, else in the cache, built there once."""
    name = f"{encoding}-{dtype}"
    shipped = resolved.path / STORE_FOLDER / name
    if (shipped / STORE_INDEX).is_file():
        return shipped
    cached = cache_dir() / STORE_FOLDER / f"{resolved.identity.weights_sha256[:16]}-{name}"
    if not (cached / STORE_INDEX).is_file():
        loaded = load(resolved, "cpu")
        with progress.bar(total=1, desc=f"write {encoding} store of {resolved.identity.name} (once)", unit="store") as bar:
            write_model_store(loaded.model, cached, encoding, dtype)
            bar.update(1)
    return cached


def write_model_store(model: torch.nn.Module, folder: Path, encoding: Encoding, dtype: str,
                      metadata: dict[str, Any] | None = None) -> None:
    prefix, _ = decoder_layers(model)
    state, seen = {}, set()
    for name, tensor in model.state_dict().items():
        if tensor.numel() and tensor.data_ptr() in seen:
            continue  # a tied output head is the embedding: stored once, tied again at load
        seen.add(tensor.data_ptr())
        state[name] = tensor
    write_store(folder, store_groups(lambda: state.items(), prefix), encoding, dtype, metadata)


class LayerStreamer:
    """Forward hooks that give each decoder layer its weights just before it runs and take them
    away after. A layer's weights are read (prefetched on threads, ``PREFETCH_DEPTH`` layers
    ahead, while the layers before compute), copied to the compute device and decompressed there. On a CPU the compute device
    is the host itself, so the prefetch thread decompresses too and that work overlaps the
    computation; on a GPU the bytes are copied and decompressed on the device just before use."""

    def __init__(self, reader: StoreReader, prefix: str, layers: torch.nn.ModuleList, device: torch.device,
                 dtype: torch.dtype, cost: Cost, prefetch: bool) -> None:
        self.reader, self.device, self.dtype, self.cost = reader, device, dtype, cost
        self.groups = [f"{prefix}{i}" for i in range(len(layers))]
        self.pool = ThreadPoolExecutor(PREFETCH_DEPTH, thread_name_prefix="endor-prefetch") if prefetch else None
        self.decode_ahead = device.type == "cpu"
        self.pending: dict[int, Future[dict[str, torch.Tensor] | torch.Tensor]] = {}
        self.lock = threading.Lock()
        # Each layer's parameter slots (module, attribute, name in the store's group) and the
        # meta placeholders they hold while offloaded.
        self.slots: list[list[tuple[torch.nn.Module, str, str, torch.nn.Parameter]]] = []
        for index, layer in enumerate(layers):
            self.slots.append([(module, attr, f"{path}.{attr}" if path else attr, parameter)
                               for path, module in layer.named_modules()
                               for attr, parameter in module._parameters.items() if parameter is not None])
            layer.register_forward_pre_hook(self._before(index))
            layer.register_forward_hook(self._after(index))

    def _read(self, index: int) -> torch.Tensor:
        began = time.perf_counter()
        raw = self.reader.read(self.groups[index])
        with self.lock:
            self.cost.count("offload_read_s", time.perf_counter() - began)
            self.cost.count("offload_bytes_read", raw.numel())
        return raw

    def _decode(self, index: int, raw: torch.Tensor) -> dict[str, torch.Tensor]:
        began = time.perf_counter()
        tensors = dict(self.reader.decode(self.groups[index], raw, self.device, self.dtype))
        with self.lock:
            self.cost.count("offload_decompress_s", time.perf_counter() - began)
        return tensors

    def _fetch(self, index: int) -> dict[str, torch.Tensor] | torch.Tensor:
        """What the prefetch thread hands over: the raw bytes, or on a CPU the decoded tensors."""
        raw = self._read(index)
        return self._decode(index, raw) if self.decode_ahead else raw

    def _before(self, index: int) -> Callable[..., None]:
        def hook(layer: torch.nn.Module, args: Any) -> None:
            waited = time.perf_counter()
            future = self.pending.pop(index, None)
            fetched = future.result() if future is not None else self._read(index)
            if self.pool is not None:
                for ahead in range(1, min(PREFETCH_DEPTH, len(self.groups) - 1) + 1):
                    following = (index + ahead) % len(self.groups)
                    if following not in self.pending:
                        self.pending[following] = self.pool.submit(self._fetch, following)
            with self.lock:
                self.cost.count("offload_wait_s", time.perf_counter() - waited)
                self.cost.count("offload_layer_loads")
            tensors = fetched if isinstance(fetched, dict) else self._decode(index, fetched)
            for module, attr, name, _ in self.slots[index]:
                module._parameters[attr] = torch.nn.Parameter(tensors[name], requires_grad=False)
        return hook

    def _after(self, index: int) -> Callable[..., None]:
        def hook(layer: torch.nn.Module, args: Any, output: Any) -> None:
            for module, attr, _, placeholder in self.slots[index]:
                module._parameters[attr] = placeholder
        return hook


def offloaded_model(resolved: ResolvedModel, device: str, encoding: Encoding, args: EndorArgs, cost: Cost) -> LoadedModel:
    """The model with its resident tensors loaded and its decoder layers streamed from the store."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    identity = resolved.identity
    if identity.kind != "causal-lm":
        raise ModelLoadError(f"endor streams causal LMs; '{identity.name}' is a {identity.kind}")
    folder = store_folder(resolved, encoding, identity.dtype)
    torch_device = torch.device(device)
    try:
        reader = StoreReader(folder, in_host_memory=args.offload == "host", pin=torch_device.type == "cuda")
        config = AutoConfig.from_pretrained(resolved.path)
        tokenizer = AutoTokenizer.from_pretrained(resolved.path)
        with init_empty_weights():  # parameters on the meta device, buffers (rotary tables) real
            model = AutoModelForCausalLM.from_config(config, dtype=DTYPES[identity.dtype])
        try:
            model.generation_config = GenerationConfig.from_pretrained(resolved.path)
        except OSError:
            pass  # no generation_config.json: the one derived from the config stays
        model.load_state_dict(reader.load(RESIDENT, torch_device, DTYPES[identity.dtype]), strict=False, assign=True)
        model.tie_weights()
        for module in model.modules():
            for name, buffer in list(module._buffers.items()):
                if buffer is not None:
                    module._buffers[name] = buffer.to(torch_device)
        prefix, layers = decoder_layers(model)
        missing = [n for n, p in model.named_parameters() if p.is_meta and not n.startswith(prefix)]
        if missing:
            raise ModelLoadError(f"the store at {folder} lacks {', '.join(missing[:3])}")
        model.eval()
        model.endor_streamer = LayerStreamer(reader, prefix, layers, torch_device, DTYPES[identity.dtype], cost, args.prefetch)
    except ModelLoadError:
        raise
    except Exception as error:
        raise ModelLoadError(f"model '{identity.name}' failed to load offloaded: {type(error).__name__}: {first_line(error)}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model=model, tokenizer=tokenizer, identity=identity, device=torch_device)


@register_method("endor")
class EndorMethod(BaseMethod):
    """Offloaded inference over bitmap-sparse weights (Endor): read, decompress on the device, run, free."""

    Args = EndorArgs
    encoding: ClassVar[Encoding] = "bitmap"
    runs_remote = False  # it reads the model's weights from its own store

    @classmethod
    def load_model(cls, resolved: ResolvedModel, device: str, args: EndorArgs) -> LoadedModel:
        return offloaded_model(resolved, device, cls.encoding, args, Cost())

    def __init__(self, model: LoadedModel, args: EndorArgs, options: MethodOptions) -> None:
        super().__init__(model, args, options)
        streamer = getattr(model.model, "endor_streamer", None)
        if streamer is None:
            raise ModelLoadError(f"method '{self.name}' needs its model loaded by {type(self).__name__}.load_model")
        streamer.cost = self.cost  # the model is built before the method: from here on it counts into the run's cost
        self.streamer: LayerStreamer = streamer

    def describe(self) -> dict[str, Any]:
        reader = self.streamer.reader
        sizes = reader.sizes()
        entries = [t for g in reader.groups.values() if g.name != RESIDENT for t in g.tensors]
        elements = sum(int(torch.Size(t.shape).numel()) for t in entries)
        dense_bytes = elements * DTYPES[reader.dtype].itemsize
        return super().describe() | {
            "encoding": reader.encoding, "store_dtype": reader.dtype, "offload": self.args.offload, "prefetch": self.args.prefetch,
            "store": reader.folder.name, "layer_bytes": sizes["layer_bytes"], "dense_layer_bytes": dense_bytes,
            "bytes_ratio_dense_over_store": round(dense_bytes / sizes["layer_bytes"], 4) if sizes["layer_bytes"] else None,
            "layer_density": round(sum(t.nnz for t in entries) / elements, 6) if elements else None,
        }
