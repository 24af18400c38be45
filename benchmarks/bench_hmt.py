"""HMT's memory and speed (PAPERS.md §1): peak memory while scoring 64K input tokens over
peak memory at 8K (goal ≤ 1.2: memory stays flat), and tokens/s of HMT over the sliding
window at equal segment length, same text, same process.

Memory is the growth of the process's resident set while scoring (sampled every 5 ms by a
thread; the model's own weights, loaded before, are not counted), or the accelerator's peak
allocation on a GPU. The text is PG-19 test-book prose repeated to length (real tokens; HMT
is untrained here unless --checkpoint names a trained zoo model — memory and speed do not
depend on the weights). The base model at full attention is shown beside it for contrast,
up to its context length.

    python benchmarks/bench_hmt.py [--model smollm2-135m-instruct] [--segment 1024] [--lengths 8192,65536]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from harness import (
    models,  # noqa: E402
    zoo,
)
from harness.api import StreamRequest  # noqa: E402
from harness.data import DataStore  # noqa: E402
from harness.method import MethodOptions  # noqa: E402
from methods.hmt import HMT, HMTArgs  # noqa: E402
from methods.sliding_window import SlidingWindow, SlidingWindowArgs  # noqa: E402
from tasks.pg19 import strip_gutenberg  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE


class PeakSampler:
    """Peak resident memory above the level at entry, sampled on a thread."""

    def __enter__(self):
        self.base = self.peak = rss()
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        return self

    def _run(self):
        while self.running:
            self.peak = max(self.peak, rss())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, rss())
        self.growth_mb = (self.peak - self.base) / 2**20
        if torch.cuda.is_available():
            self.growth_mb = torch.cuda.max_memory_allocated() / 2**20


def pg19_test_books(count: int, min_chars: int = 1) -> list[tuple[str, str]]:
    """The first ``count`` PG-19 test books of at least ``min_chars`` characters (boilerplate
    removed), as (mirror path, text); the text is cut at ``min_chars`` when that is given."""
    data = DataStore(None)
    out = []
    for relative in sorted(r for r in data.manifest if r.startswith("pg19/test/")):
        book = strip_gutenberg(data.file(relative, "pg19").read_text(encoding="utf-8", errors="replace"))
        if book is not None and len(book) >= min_chars:
            out.append((relative, book[:min_chars] if min_chars > 1 else book))
        if len(out) == count:
            break
    return out


def text_of_tokens(lm, tokens: int) -> str:
    book = pg19_test_books(1)[0][1]
    ids = lm.encode(book, add_special_tokens=False)
    ids = (ids * (tokens // len(ids) + 1))[:tokens]
    return lm.tokenizer.decode(ids)


def timed(method, request) -> tuple[float, float, int]:
    with PeakSampler() as sampler:
        began = time.perf_counter()
        (result,) = method.score_stream([request])
        seconds = time.perf_counter() - began
    return seconds, sampler.growth_mb, result.n_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=zoo.DEFAULT_MODEL)
    parser.add_argument("--segment", type=int, default=1024)
    parser.add_argument("--lengths", default="8192,65536")
    parser.add_argument("--checkpoint", default="")
    args = parser.parse_args()
    loaded = models.load(models.resolve(args.model))
    options = MethodOptions(show_progress=False)
    hmt = HMT(loaded, HMTArgs(segment=args.segment, checkpoint=args.checkpoint, untrained=not args.checkpoint), options)
    window = SlidingWindow(loaded, SlidingWindowArgs(window=args.segment), options)
    lengths = [int(x) for x in args.lengths.split(",")]
    print(f"model {args.model}, segment {args.segment}, device {loaded.device}, threads {torch.get_num_threads()}")
    warm = StreamRequest(text_of_tokens(hmt.lm, 2 * args.segment))
    for method in (hmt, window):  # first calls allocate the framework's pools: not counted at any length
        method.score_stream([warm])
    memory = {}
    for length in lengths:
        text = text_of_tokens(hmt.lm, length)
        seconds, growth, n = timed(hmt, StreamRequest(text))
        memory[length] = growth
        print(f"HMT            {n:>6} tokens: {seconds:7.1f} s  {n / seconds:7.1f} tok/s  peak +{growth:7.1f} MB")
        if length == lengths[0]:
            w_seconds, w_growth, w_n = timed(window, StreamRequest(text))
            print(f"sliding window {w_n:>6} tokens: {w_seconds:7.1f} s  {w_n / w_seconds:7.1f} tok/s  peak +{w_growth:7.1f} MB")
            print(f"tokens/s HMT ÷ sliding window (stride {window.stride}): {(n / seconds) / (w_n / w_seconds):.2f}")
    if len(lengths) > 1:
        first, last = lengths[0], lengths[-1]
        print(f"peak memory HMT {last} ÷ {first}: {memory[last] / max(memory[first], 1e-9):.2f}  (goal <= 1.2)")


if __name__ == "__main__":
    main()
