"""Endor's sparse weight store (Joo et al., PAPERS.md §10; no public code): each pruned matrix
as a packed bitmap of its non-zero positions plus the non-zero values, laid out so that one
decoder layer is one contiguous, page-aligned read.

Layout of a store folder (``FORMAT_VERSION`` 1):

- ``endor.json``: ``{"format_version", "encoding", "dtype", "alignment", "groups": [...]}``.
  A group is one decoder layer (``model.layers.7``) or ``resident`` (embeddings, final norm,
  output head: everything outside the decoder layers, loaded once). Each group has its byte
  ``offset`` in ``endor.bin`` (a multiple of ``alignment``, 4096), its ``nbytes``, and its
  tensors: ``name`` (relative to the group), ``shape``, ``encoding`` (``bitmap`` or ``dense``),
  ``nnz`` and the ``(offset, nbytes)`` of its ``bitmap`` and ``values`` segments, relative to
  the group's start and each aligned to 64 bytes (so values view as their dtype in place).
- ``endor.bin``: the groups' bytes. A bitmap is ``ceil(N / 8)`` bytes, bit ``j`` of byte ``i``
  (least significant first) standing for element ``8i + j`` of the row-major matrix; the values
  are the elements whose bit is set, in order, in the store's dtype. "Non-zero" is judged on
  the bit pattern, so a stored ``-0.0`` survives and the round trip is bit-identical.

At density δ and b-bit values a bitmap matrix takes N·(1 + δ·b) bits against N·b dense: at 50%
sparsity 32/17 = 1.88× smaller in float32, 16/9 = 1.78× in float16. Only the 2-D weights of the
decoder layers' linear maps are bitmap-encoded; norms, biases and the resident group stay dense.
Written by hand: safetensors aligns tensors to 8 bytes and has no per-layer grouping, and no
maintained library stores bitmap-sparse tensors.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from harness.errors import ModelLoadError
from harness.store import atomic_write_json, staged_folder

FORMAT_VERSION = 1
STORE_INDEX = "endor.json"
STORE_DATA = "endor.bin"
ALIGNMENT = 4096  # a group starts on a page: one aligned read per layer (what O_DIRECT and GPUDirect need)
SEGMENT_ALIGNMENT = 64
RESIDENT = "resident"
Encoding = Literal["bitmap", "dense"]
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_SAME_WIDTH_INT = {2: torch.int16, 4: torch.int32}  # bit patterns judged as integers (-0.0 is non-zero)


@dataclass(frozen=True)
class TensorEntry:
    name: str
    shape: tuple[int, ...]
    encoding: Encoding
    nnz: int
    values: tuple[int, int]  # (offset, nbytes) from the group's start
    bitmap: tuple[int, int] | None = None


@dataclass(frozen=True)
class Group:
    name: str
    offset: int
    nbytes: int
    tensors: tuple[TensorEntry, ...]


def _aligned(size: int, alignment: int) -> int:
    return -(-size // alignment) * alignment


def nonzero_mask(tensor: torch.Tensor) -> torch.Tensor:
    """Elements whose bit pattern is not all zeros (a stored -0.0 counts)."""
    return tensor.contiguous().view(_SAME_WIDTH_INT[tensor.element_size()]) != 0


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A boolean tensor, flattened, as bytes: bit j of byte i is element 8i + j."""
    flat = mask.reshape(-1)
    flat = torch.nn.functional.pad(flat.to(torch.uint8), (0, (-flat.numel()) % 8)).view(-1, 8)
    shifts = torch.arange(8, dtype=torch.uint8, device=flat.device)
    return (flat << shifts).sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, numel: int) -> torch.Tensor:
    shifts = torch.arange(8, dtype=torch.uint8, device=packed.device)
    return ((packed.unsqueeze(-1) >> shifts) & 1).view(-1)[:numel].bool()


def decompress(bitmap: torch.Tensor, values: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The dense matrix from its packed bitmap and values, on their device, vectorised: on a
    GPU one unpack and one masked scatter; on a CPU numpy's ``unpackbits`` and the non-zero
    positions assigned at once, three times as fast there as torch's masked scatter (single
    threaded, ~7 ns an element: 25 ms against 7 ms for a 3.5M-element matrix)."""
    numel = math.prod(shape)
    if values.device.type == "cpu" and values.dtype != torch.bfloat16:  # numpy has no bfloat16
        import numpy as np

        positions = np.flatnonzero(np.unpackbits(bitmap.numpy(), count=numel, bitorder="little").view(bool))
        flat = np.zeros(numel, dtype=values.numpy().dtype)
        flat[positions] = values.numpy()
        return torch.from_numpy(flat).view(shape)
    mask = unpack_bits(bitmap, numel)
    dense = torch.zeros(numel, dtype=values.dtype, device=values.device)
    dense.masked_scatter_(mask, values)
    return dense.view(shape)


def _encode(name: str, tensor: torch.Tensor, encoding: Encoding) -> tuple[TensorEntry, list[bytes]]:
    """The entry (offsets relative to the start of this tensor's segments) and its segments' bytes."""
    tensor = tensor.detach().contiguous().cpu()
    if encoding == "bitmap":
        mask = nonzero_mask(tensor)
        bitmap = pack_bits(mask).numpy().tobytes()
        values = tensor.reshape(-1)[mask.reshape(-1)].view(torch.uint8).numpy().tobytes()
        first = _aligned(len(bitmap), SEGMENT_ALIGNMENT)
        entry = TensorEntry(name, tuple(tensor.shape), "bitmap", int(mask.sum()), (first, len(values)), (0, len(bitmap)))
        return entry, [bitmap, b"\0" * (first - len(bitmap)), values]
    data = tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
    return TensorEntry(name, tuple(tensor.shape), "dense", tensor.numel(), (0, len(data))), [data]


def _shifted(entry: TensorEntry, by: int) -> TensorEntry:
    return TensorEntry(entry.name, entry.shape, entry.encoding, entry.nnz, (entry.values[0] + by, entry.values[1]),
                       None if entry.bitmap is None else (entry.bitmap[0] + by, entry.bitmap[1]))


def bitmap_encodable(name: str, tensor: torch.Tensor) -> bool:
    """Which tensors the bitmap encoding stores sparse: a decoder layer's linear weight matrices."""
    return tensor.dim() == 2 and name.endswith(".weight")


def write_store(folder: Path, groups: Iterable[tuple[str, Iterable[tuple[str, torch.Tensor]]]], encoding: Encoding,
                dtype: str, metadata: dict[str, Any] | None = None) -> None:
    """Write a store from (group name, (tensor name, tensor) pairs), atomically: staged beside
    ``folder`` and renamed into place. Tensors are cast to ``dtype``; in ``bitmap`` encoding the
    decoder layers' 2-D weights are bitmap-encoded, every other tensor is stored dense."""
    with staged_folder(folder) as staging:
        written: list[Group] = []
        with open(staging / STORE_DATA, "wb") as data:
            for group_name, tensors in groups:
                start = data.tell()
                position, entries = 0, []
                for name, tensor in tensors:
                    cast = tensor.to(DTYPES[dtype])
                    sparse = encoding == "bitmap" and group_name != RESIDENT and bitmap_encodable(name, cast)
                    entry, parts = _encode(name, cast, "bitmap" if sparse else "dense")
                    entries.append(_shifted(entry, position))
                    for part in parts:
                        data.write(part)
                        position += len(part)
                    pad = _aligned(position, SEGMENT_ALIGNMENT) - position
                    data.write(b"\0" * pad)
                    position += pad
                data.write(b"\0" * (_aligned(position, ALIGNMENT) - position))
                written.append(Group(group_name, start, position, tuple(entries)))
            data.flush()
            os.fsync(data.fileno())
        index = {"format_version": FORMAT_VERSION, "encoding": encoding, "dtype": dtype, "alignment": ALIGNMENT,
                 "metadata": metadata or {}, "groups": [asdict(g) for g in written]}
        atomic_write_json(staging / STORE_INDEX, index)


def _group(raw: dict[str, Any]) -> Group:
    tensors = tuple(TensorEntry(t["name"], tuple(t["shape"]), t["encoding"], t["nnz"], tuple(t["values"]),  # type: ignore[arg-type]
                                None if t["bitmap"] is None else tuple(t["bitmap"]))  # type: ignore[arg-type]
                    for t in raw["tensors"])
    return Group(raw["name"], raw["offset"], raw["nbytes"], tensors)


class StoreReader:
    """Reads a store's groups: from disk with one ``pread`` per group (``offload=disk``), or from
    one copy of the whole file in host memory (``offload=host``, pinned when the compute device
    is a GPU, so copies to it run asynchronously)."""

    def __init__(self, folder: Path, in_host_memory: bool = False, pin: bool = False) -> None:
        try:
            index = json.loads((folder / STORE_INDEX).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ModelLoadError(f"no readable Endor store in {folder} ({type(error).__name__})") from None
        if index.get("format_version") != FORMAT_VERSION:
            raise ModelLoadError(f"Endor store {folder} has format {index.get('format_version')}, this harness reads {FORMAT_VERSION}")
        self.folder = folder
        self.encoding: Encoding = index["encoding"]
        self.dtype: str = index["dtype"]
        self.metadata: dict[str, Any] = index.get("metadata", {})
        self.groups = {g["name"]: _group(g) for g in index["groups"]}
        self.path = folder / STORE_DATA
        try:
            self._fd = os.open(self.path, os.O_RDONLY)
        except OSError as error:
            raise ModelLoadError(f"Endor store {folder} has no readable {STORE_DATA} ({type(error).__name__})") from None
        needed = max((g.offset + g.nbytes for g in self.groups.values()), default=0)
        if os.fstat(self._fd).st_size < needed:
            os.close(self._fd)
            raise ModelLoadError(f"Endor store {self.path} is truncated: {os.path.getsize(self.path):,} bytes, its index needs {needed:,}")
        self._host: torch.Tensor | None = None
        if in_host_memory:
            size = os.fstat(self._fd).st_size
            host = torch.empty(size, dtype=torch.uint8, pin_memory=pin)
            with open(self.path, "rb", buffering=0) as handle:
                handle.readinto(memoryview(host.numpy()))
            self._host = host

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def drop_page_cache(self) -> None:
        """Ask the kernel to forget this store's cached pages, so the next reads come from the disk."""
        os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_DONTNEED)

    def read(self, name: str) -> torch.Tensor:
        """A group's bytes as a uint8 tensor on the host."""
        group = self.groups[name]
        if self._host is not None:
            return self._host[group.offset : group.offset + group.nbytes]
        buffer = bytearray(group.nbytes)
        view, done = memoryview(buffer), 0
        while done < group.nbytes:  # pread may return short
            chunk = os.preadv(self._fd, [view[done:]], group.offset + done)
            if chunk <= 0:
                raise ModelLoadError(f"Endor store {self.path} is truncated at group '{name}'")
            done += chunk
        return torch.frombuffer(buffer, dtype=torch.uint8) if buffer else torch.empty(0, dtype=torch.uint8)

    def decode(self, name: str, raw: torch.Tensor, device: torch.device, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
        """The group's tensors, dense, on ``device`` in ``dtype``: its bytes are copied there once
        and decompressed there."""
        on_device = raw.to(device, non_blocking=True)
        stored = DTYPES[self.dtype]
        for entry in self.groups[name].tensors:
            offset, nbytes = entry.values
            values = on_device[offset : offset + nbytes].view(stored)
            if entry.encoding == "bitmap":
                assert entry.bitmap is not None
                bits = on_device[entry.bitmap[0] : entry.bitmap[0] + entry.bitmap[1]]
                tensor = decompress(bits, values, entry.shape)
            else:
                tensor = values.view(entry.shape)
            yield entry.name, tensor.to(dtype)

    def load(self, name: str, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """A group's tensors (cloned off the read buffer)."""
        return {n: t.clone() for n, t in self.decode(name, self.read(name), device, dtype)}

    def sizes(self) -> dict[str, int]:
        """Bytes of the decoder layers' groups and of the resident group."""
        layers = sum(g.nbytes for n, g in self.groups.items() if n != RESIDENT)
        return {"layer_bytes": layers, "resident_bytes": self.groups[RESIDENT].nbytes if RESIDENT in self.groups else 0,
                "file_bytes": os.fstat(self._fd).st_size}


def store_groups(tensors: Callable[[], Iterable[tuple[str, torch.Tensor]]], layer_prefix: str) -> list[tuple[str, list[tuple[str, torch.Tensor]]]]:
    """(group, tensors) in store order: the resident tensors first, then layer 0, 1, ... by
    the index after ``layer_prefix`` (``model.layers.``)."""
    resident: list[tuple[str, torch.Tensor]] = []
    layers: dict[int, list[tuple[str, torch.Tensor]]] = {}
    for name, tensor in tensors():
        if name.startswith(layer_prefix):
            index, _, rest = name[len(layer_prefix):].partition(".")
            layers.setdefault(int(index), []).append((rest, tensor))
        else:
            resident.append((name, tensor))
    return [(RESIDENT, resident)] + [(f"{layer_prefix}{i}", layers[i]) for i in sorted(layers)]
