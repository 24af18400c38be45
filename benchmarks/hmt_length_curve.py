"""Perplexity and peak memory against input length for the base model (truncated to its
context), the sliding window, RMT and HMT (HMT, He et al.; PAPERS.md §1, issue 7's plot).

From each of the first ``--books`` PG-19 test books long enough (Gutenberg boilerplate
removed), the same ``--scored`` tokens are scored at every input length: those ending at the
longest length. At input length ``length`` the ``length - scored`` tokens before them are
context the method may use (the official HMT protocol at several lengths), so the curve shows
what more context buys, not how hard different passages are. Base sees the last ``max_length`` tokens of context it fits
(SmolLM2: 8192), the sliding window ``--segment`` tokens, RMT/HMT carry memory over all of
it. PPL is pooled over the books; peak memory is the resident-set growth while scoring (on
a GPU, the peak allocation), the largest over the books. Writes ``curve.csv`` and
``curve.png``/``curve.svg`` to ``--out``; a later call with other ``--methods`` adds its
curves to the same files.

    python benchmarks/hmt_length_curve.py --hmt smollm2-135m-instruct-hmt-L256 \
        --rmt smollm2-135m-instruct-rmt-L256 --segment 256 --out /tmp/hmt_curve
"""

from __future__ import annotations

import argparse
import csv
import gc
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_hmt import PeakSampler, pg19_test_books  # noqa: E402

from harness import (
    models,  # noqa: E402
    zoo,
)
from harness.api import StreamRequest  # noqa: E402
from harness.method import MethodOptions  # noqa: E402
from methods.base import BaseArgs, BaseMethod  # noqa: E402
from methods.hmt import HMT, HMTArgs  # noqa: E402
from methods.rmt import RMT, RMTArgs  # noqa: E402
from methods.sliding_window import SlidingWindow, SlidingWindowArgs  # noqa: E402


def build(kind: str, args: argparse.Namespace):
    """(label, method) for one curve; each loads its own model (HMT/RMT: their trained zoo models)."""
    options = MethodOptions(show_progress=False)
    if kind == "base":
        loaded = models.load(models.resolve(args.model))
        return f"base (truncated to {loaded.identity.max_length})", BaseMethod(loaded, BaseArgs(), options)
    if kind == "sliding-window":
        loaded = models.load(models.resolve(args.model))
        return f"sliding window {args.segment}", SlidingWindow(loaded, SlidingWindowArgs(window=args.segment), options)
    if kind == "rmt":
        return "RMT", RMT(models.load(models.resolve(args.rmt)), RMTArgs(segment=args.segment), options)
    return "HMT", HMT(models.load(models.resolve(args.hmt)), HMTArgs(segment=args.segment), options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=zoo.DEFAULT_MODEL)
    parser.add_argument("--hmt", default="", help="trained HMT zoo model (harness train hmt)")
    parser.add_argument("--rmt", default="", help="trained RMT zoo model (harness train rmt)")
    parser.add_argument("--segment", type=int, default=1024)
    parser.add_argument("--lengths", default="1024,2048,4096,8192,16384")
    parser.add_argument("--scored", type=int, default=256, help="tokens scored at the end of each input")
    parser.add_argument("--books", type=int, default=2)
    parser.add_argument("--methods", default="base,sliding-window,rmt,hmt")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    for kind in ("hmt", "rmt"):
        if kind in args.methods.split(",") and not getattr(args, kind):
            parser.error(f"--methods has {kind}: name its trained zoo model with --{kind}")
    lengths = sorted(int(x) for x in args.lengths.split(","))
    end = max(lengths)  # every length scores the tokens just before this one
    books = pg19_test_books(args.books, end * 6)  # ~4-5 characters per token; re-checked below
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for kind in args.methods.split(","):
        label, method = build(kind, args)
        tokenizer = method.loaded.tokenizer
        ids = {name: tokenizer.encode(book, add_special_tokens=False) for name, book in books}
        short = {name: len(book_ids) for name, book_ids in ids.items() if len(book_ids) < end}
        if short:
            sys.exit(f"too few tokens for --lengths up to {end}: {short}")
        # A first call allocates the framework's pools; unmeasured, so every length is measured warm.
        method.score_stream([StreamRequest(tokenizer.decode(next(iter(ids.values()))[: 2 * args.segment]))])
        for length in lengths:
            logprob, n_tokens, peak, seconds = 0.0, 0, 0.0, 0.0
            for book_ids in ids.values():
                request = StreamRequest(tokenizer.decode(book_ids[end - args.scored : end]),
                                        tokenizer.decode(book_ids[end - length : end - args.scored]))
                with PeakSampler() as sampler:
                    began = time.perf_counter()
                    (result,) = method.score_stream([request])
                    seconds += time.perf_counter() - began
                peak = max(peak, sampler.growth_mb)
                logprob, n_tokens = logprob + result.logprob, n_tokens + result.n_tokens
            # Input tokens per second: a sliding window or a truncating base ignores most of a long
            # input, so theirs grows with length; HMT and RMT read all of it.
            row = {"method": label, "length": length, "token_perplexity": math.exp(-logprob / n_tokens),
                   "scored_tokens": n_tokens, "peak_mb": peak, "input_tokens_per_s": length * len(ids) / seconds}
            rows.append(row)
            print(f"{label:32} {length:>6}: ppl {row['token_perplexity']:8.2f}  peak +{peak:8.1f} MB  "
                  f"{row['input_tokens_per_s']:7.1f} input tok/s", flush=True)
        del method
        gc.collect()
    table = args.out / "curve.csv"
    if table.is_file():  # curves measured by an earlier call (other --methods) stay in the plot
        measured = {r["method"] for r in rows}
        with open(table, newline="") as handle:
            earlier = [{k: v if k == "method" else int(v) if k in ("length", "scored_tokens") else float(v) for k, v in r.items()}
                       for r in csv.DictReader(handle)]
        rows = [r for r in earlier if r["method"] not in measured] + rows
    with open(table, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, args)


def plot(rows: list[dict], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (ppl_axes, memory_axes) = plt.subplots(1, 2, figsize=(11, 4))
    for label in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == label]
        ppl_axes.plot([r["length"] for r in mine], [r["token_perplexity"] for r in mine], marker="o", label=label)
        memory_axes.plot([r["length"] for r in mine], [r["peak_mb"] for r in mine], marker="o", label=label)
    for axes, ylabel in ((ppl_axes, f"token PPL of the last {args.scored} tokens"), (memory_axes, "peak memory growth (MB)")):
        axes.set_xscale("log", base=2)
        axes.set_xlabel("input length (tokens)")
        axes.set_ylabel(ylabel)
        axes.grid(alpha=0.3)
    ppl_axes.legend(fontsize=8)
    figure.suptitle(f"PG-19 test books ({args.books}), segment {args.segment}, {args.model}")
    figure.tight_layout()
    for suffix in ("png", "svg"):
        figure.savefig(args.out / f"curve.{suffix}", dpi=120)


if __name__ == "__main__":
    main()
