"""ATGR of CleanGen (PAPERS.md §8): per-token decoding time with the defense over per-token
time of plain greedy decoding, same target, same prompts, same process.

Plain greedy uses the same single-sequence KV-cached loop as CleanGen (``IncrementalDecoder``), so the
ratio isolates the defense's own work (reference passes, rejected tokens, re-feeds); HF's
``generate`` on the same prompts is printed beside it as a sanity check. Prompts: the first
turns of MT-Bench (benign, ``mt_bench/question.jsonl``). Target ≤ 1.3 (the paper's reported
overhead), goal ≤ 1.15.

    python benchmarks/bench_cleangen_atgr.py [--target NAME] [--reference NAME] [--prompts 10] [--max-new-tokens 64] [--device cuda]

Default target: the AutoPoison-backdoored SmolLM2 if ``harness attack`` made it (reference:
the clean SmolLM2, the paper's same-tokenizer setting), else the clean SmolLM2 (reference:
Gemma 3 270M, cross-tokenizer mode).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import (
    models,  # noqa: E402
    zoo,
)
from harness.api import GenerateRequest  # noqa: E402
from harness.decoding import IncrementalDecoder  # noqa: E402
from harness.environment import device_description  # noqa: E402
from harness.lm import CausalLM  # noqa: E402
from harness.method import Cost, MethodOptions  # noqa: E402
from methods.cleangen import CleanGenArgs, CleanGenMethod  # noqa: E402


def plain_greedy(method: CleanGenMethod, request: GenerateRequest) -> int:
    """Greedy decoding with the same cached loop CleanGen uses; returns tokens generated."""
    eos = set(method.target_lm.eos_ids())
    stream = IncrementalDecoder(method.loaded, Cost(), "plain_forward_passes")
    prompt = method.target_lm.prompt_tokens(request)
    logprobs = stream.feed(prompt)[-1]
    n = 0
    while n < request.max_new_tokens:
        token = int(logprobs.argmax())
        n += 1
        if token in eos:
            break
        logprobs = stream.feed([token])[-1]
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default=None)
    parser.add_argument("--reference", default=None)
    parser.add_argument("--prompts", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2, help="alternating timed passes of each decoder")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the reference follows the target)")
    args = parser.parse_args()
    backdoored = f"{zoo.DEFAULT_MODEL}-autopoison"
    target = args.target or (backdoored if backdoored in zoo.zoo() else zoo.DEFAULT_MODEL)
    data = Path(os.environ.get("HARNESS_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
    rows = [json.loads(line) for line in (data / "mt_bench" / "question.jsonl").read_text().splitlines() if line.strip()]
    requests = [GenerateRequest(r["turns"][0], args.max_new_tokens, chat=True) for r in rows[: args.prompts]]
    loaded = models.load(models.resolve(target), args.device)
    method = CleanGenMethod(loaded, CleanGenArgs(reference=args.reference), MethodOptions(batch_size=1, show_progress=False))
    hf_lm = CausalLM(loaded, Cost(), "auto", None, 0, False)
    plain_time = defended_time = hf_time = 0.0
    plain_tokens = defended_tokens = hf_tokens = 0
    plain_greedy(method, requests[0])  # warm-up: first-call allocations
    for _ in range(args.repeats):  # alternate, so machine noise hits both decoders alike
        began = time.perf_counter()
        plain_tokens += sum(plain_greedy(method, r) for r in requests)
        plain_time += time.perf_counter() - began
        began = time.perf_counter()
        defended = method.generate(requests)
        defended_time += time.perf_counter() - began
        defended_tokens += sum(max(1, r.n_tokens) for r in defended)
        began = time.perf_counter()
        hf = hf_lm.generate(requests)
        hf_time += time.perf_counter() - began
        hf_tokens += sum(max(1, r.n_tokens) for r in hf)
    counters = method.cost.as_dict()
    derived = CleanGenMethod.derived_cost(counters)
    plain_per, defended_per, hf_per = plain_time / plain_tokens, defended_time / defended_tokens, hf_time / hf_tokens
    print(f"target {target}, reference {method.reference.identity.name} ({method.describe()['mode']}), "
          f"{len(requests)} MT-Bench prompts x {args.repeats}, max_new_tokens {args.max_new_tokens}, "
          f"on {device_description(loaded.device)}, threads {os.environ.get('OMP_NUM_THREADS', 'default')}")
    print(f"plain greedy (cached loop): {plain_per * 1000:.1f} ms/token over {plain_tokens} tokens")
    print(f"HF generate (batched):      {hf_per * 1000:.1f} ms/token over {hf_tokens} tokens")
    print(f"cleangen:                   {defended_per * 1000:.1f} ms/token over {defended_tokens} tokens, "
          f"replacement rate {derived['cleangen_replacement_rate']:.3f}")
    print(f"ATGR = {defended_per / plain_per:.3f}  (target <= 1.3, goal <= 1.15); in-run estimate {derived['cleangen_atgr_estimate']:.3f}")


if __name__ == "__main__":
    main()
