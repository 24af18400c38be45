"""Endor's offloaded inference vs dense offloading vs Accelerate's disk offloading, same process,
same (pruned) weights (Endor, PAPERS.md §10).

Three offloaded set-ups of one model made by ``harness compress``:
- ``endor``: the bitmap store, one ``pread`` per decoder layer, prefetched on a thread,
  decompressed before use (``methods.endor``);
- ``offload``: the same engine over the dense store (same reads, no decompression);
- ``accelerate``: ``accelerate.disk_offload`` of the same model (one ``.dat`` memmap per tensor,
  the offloading a user of transformers reaches for today).
Plus the model in memory (no offloading) as the floor.

Printed: bytes per decoder layer and on disk (dense vs bitmap, float32 and float16, against the
arithmetic N·(1 + δ·b) vs N·b bits), per-layer read and decompression times, end-to-end tokens/s
for scoring (one forward over ``--score-tokens``) and for greedy generation (``--new-tokens`` after
a ``--prompt-tokens`` prompt), and where Endor's time goes (waiting for reads, decompressing,
computing). ``--cold`` (default) drops the page cache of every offloaded file before each decoder
layer runs (``posix_fadvise(DONTNEED)``), so each layer's weights come from the disk as they would
for a model larger than memory; ``--warm`` keeps it (weights served from the page cache).

    HARNESS_DATA_DIR=../shared/data python benchmarks/bench_endor.py --model smollm2-135m-instruct-magnitude50
        [--score-tokens 512] [--prompt-tokens 32] [--new-tokens 16] [--repeats 3] [--warm] [--device cuda]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from harness import models
from harness.environment import device_description
from harness.method import Cost
from methods.bitmap_store import DTYPES, RESIDENT, StoreReader
from methods.endor import EndorArgs, decoder_layers, offloaded_model, store_folder


def drop_cache(paths: list[Path]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def cold_layers(model: torch.nn.Module, files: list[Path]) -> None:
    """Before each decoder layer runs (ahead of the offloading's own hook), forget the cached pages
    of every offloaded file, so the layer's weights and any prefetch are read from the disk."""
    _, layers = decoder_layers(model)
    for layer in layers:
        layer.register_forward_pre_hook(lambda module, args: drop_cache(files), prepend=True)


def layer_bytes(reader: StoreReader) -> tuple[int, int]:
    """(bytes of the decoder layers in the store, elements of those layers)."""
    groups = [g for g in reader.groups.values() if g.name != RESIDENT]
    return sum(g.nbytes for g in groups), sum(math.prod(t.shape) for g in groups for t in g.tensors)


def timed(fn: Any, repeats: int) -> float:
    seconds = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # GPU work is asynchronous: time it to its end
        seconds.append(time.perf_counter() - began)
    return statistics.median(seconds)


def per_layer_times(reader: StoreReader, device: torch.device, dtype: torch.dtype, cold: bool) -> tuple[float, float]:
    """Median seconds to read one decoder layer, and to decompress it."""
    reads, decodes = [], []
    for name in [n for n in reader.groups if n != RESIDENT]:
        if cold:
            reader.drop_page_cache()
        began = time.perf_counter()
        raw = reader.read(name)
        read = time.perf_counter()
        for _ in reader.decode(name, raw, device, dtype):
            pass
        reads.append(read - began)
        decodes.append(time.perf_counter() - read)
    return statistics.median(reads), statistics.median(decodes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a model made by harness compress (or any causal LM)")
    parser.add_argument("--score-tokens", type=int, default=512)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warm", action="store_true", help="keep the page cache (not I/O bound)")
    parser.add_argument("--device", default="cpu", help="compute device: cpu or cuda (host-to-device copies, decompression on the GPU)")
    args = parser.parse_args()
    cold = not args.warm
    torch.manual_seed(0)
    device = torch.device(args.device)
    resolved = models.resolve(args.model, "float32")
    print(f"model {resolved.identity.name} on {device_description(device)}, "
          f"{'cold reads (page cache dropped before every layer)' if cold else 'warm page cache'}, {torch.get_num_threads()} threads")

    # ---- bytes
    print("\nbytes of the decoder layers")
    for dtype in ("float32", "float16"):
        sizes = {}
        for encoding in ("dense", "bitmap"):
            reader = StoreReader(store_folder(resolved, encoding, dtype))  # type: ignore[arg-type]
            sizes[encoding] = layer_bytes(reader)
            sizes[encoding + "_file"] = (reader.path.stat().st_size, 0)
            reader.close()
        density = _density(resolved)
        bits = DTYPES[dtype].itemsize * 8
        predicted = bits / (1 + density * bits)
        print(f"  {dtype}: dense {sizes['dense'][0]:,} B, bitmap {sizes['bitmap'][0]:,} B, ratio {sizes['dense'][0] / sizes['bitmap'][0]:.3f}x "
              f"(arithmetic N*b / N*(1+d*b) at density {density:.4f}: {predicted:.3f}x); "
              f"files {sizes['dense_file'][0]:,} vs {sizes['bitmap_file'][0]:,} B")

    # ---- per-layer load and decompression
    print("\nper decoder layer (median)")
    for encoding in ("dense", "bitmap"):
        reader = StoreReader(store_folder(resolved, encoding, "float32"))  # type: ignore[arg-type]
        read, decode = per_layer_times(reader, device, torch.float32, cold)
        read2, _ = per_layer_times(reader, device, torch.float32, cold)
        print(f"  {encoding:6s}: read {min(read, read2) * 1e3:7.2f} ms, decompress {decode * 1e3:7.2f} ms, "
              f"{layer_bytes(reader)[0] / (len(reader.groups) - 1) / 1e6:.2f} MB")
        reader.close()

    # ---- end to end
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(resolved.path)
    vocab = min(1000, (getattr(config, "text_config", None) or config).vocab_size)
    score_ids = torch.randint(10, vocab, (1, args.score_tokens)).to(device)
    prompt_ids = torch.randint(10, vocab, (1, args.prompt_tokens)).to(device)
    setups = {}
    for name, encoding in (("endor", "bitmap"), ("offload", "dense")):
        cost = Cost()
        loaded = offloaded_model(resolved, args.device, encoding, EndorArgs(), cost)  # type: ignore[arg-type]
        if cold:
            cold_layers(loaded.model, [loaded.model.endor_streamer.reader.path])
        setups[name] = (loaded.model, cost)
    offload_dir = Path(tempfile.mkdtemp(prefix="accelerate-offload-"))
    setups["accelerate"] = (_accelerate(resolved, offload_dir, cold, device), Cost())
    setups["in memory"] = (models.load(resolved, args.device).model, Cost())

    results: dict[str, dict[str, float]] = {}
    for name, (model, cost) in setups.items():
        with torch.no_grad():
            model(score_ids[:, :8])  # warm-up: allocations, kernels, the first prefetch
            cost.counters.clear()
            score_s = timed(lambda m=model: m(score_ids), args.repeats)
            after_score = dict(cost.counters)
            generate_s = timed(lambda m=model: m.generate(prompt_ids, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                                          do_sample=False), args.repeats)
        results[name] = {"score_tok_s": args.score_tokens / score_s, "generate_tok_s": args.new_tokens / generate_s,
                         "score_s": score_s, "generate_s": generate_s}
        if after_score:
            passes = args.repeats
            results[name] |= {"wait_s": after_score.get("offload_wait_s", 0) / passes,
                              "decompress_s": after_score.get("offload_decompress_s", 0) / passes,
                              "read_s": after_score.get("offload_read_s", 0) / passes}

    print(f"\nend to end (median of {args.repeats}): scoring {args.score_tokens} tokens, generating {args.new_tokens} after {args.prompt_tokens}")
    for name, row in results.items():
        print(f"  {name:10s}: scoring {row['score_tok_s']:8.1f} tok/s ({row['score_s']:.3f} s), "
              f"generation {row['generate_tok_s']:7.2f} tok/s ({row['generate_s']:.3f} s)")
    for baseline in ("accelerate", "offload"):
        print(f"  endor / {baseline}: scoring {results['endor']['score_tok_s'] / results[baseline]['score_tok_s']:.2f}x, "
              f"generation {results['endor']['generate_tok_s'] / results[baseline]['generate_tok_s']:.2f}x")
    print("\nwhere one scoring pass's time goes")
    for name in ("endor", "offload"):
        row = results[name]
        print(f"  {name:8s}: waiting for the prefetch thread {row['wait_s']:.3f} s; on that thread: reads {row['read_s']:.3f} s, "
              f"decompression {row['decompress_s']:.3f} s (on a CPU; on a GPU it runs before use); the rest {row['score_s'] - row['wait_s']:.3f} s")


def _density(resolved: models.ResolvedModel) -> float:
    reader = StoreReader(store_folder(resolved, "bitmap", "float32"))
    entries = [t for g in reader.groups.values() if g.name != RESIDENT for t in g.tensors if t.encoding == "bitmap"]
    reader.close()
    return sum(t.nnz for t in entries) / sum(math.prod(t.shape) for t in entries)


def _accelerate(resolved: models.ResolvedModel, folder: Path, cold: bool, device: torch.device) -> torch.nn.Module:
    from accelerate import disk_offload

    model = models.load(resolved).model
    disk_offload(model, str(folder), execution_device=device)
    if cold:
        cold_layers(model, sorted(folder.glob("*.dat")))
    return model


if __name__ == "__main__":
    main()
