"""Generation throughput of harness's ``base`` method vs lm-eval's ``hf`` backend (``generate_until``).

Same model object, same prompts, one process. Three workloads:

(a) ``--shared`` GSM8K questions after the same 2-shot prefix (two earlier test questions with
    their worked answers), greedy, 128 new tokens, stop at a blank line or "Question:";
(b) ``--sampled`` GSM8K questions (zero-shot) x 5 samples at temperature 0.7, 64 new tokens;
(c) ``--short`` ARC-Challenge questions, zero-shot, greedy, 32 new tokens, stop at a newline.

lm-eval runs at its default batch size (1) and at 8; harness at ``--batch-size auto``. Prints
new tokens/s for each, the ratios harness / lm-eval, and whether greedy texts are the same
(lm-eval cuts at its stop strings and the EOS text; so does harness).

    HARNESS_DATA_DIR=../shared/data python benchmarks/bench_generation.py [--model smollm2-135m-instruct]
        [--shared 64] [--sampled 32] [--short 64] [--skip-lm-eval-batch1] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from harness import models
from harness.api import GenerateRequest
from harness.data import DataStore
from harness.environment import device_description
from harness.method import MethodOptions
from methods.base import BaseArgs, BaseMethod


def gsm8k(n: int, offset: int) -> list[dict]:
    rows = [json.loads(line) for line in DataStore().file("gsm8k/test.jsonl", "gsm8k").read_text().splitlines() if line.strip()]
    return rows[offset : offset + n]


def arc(n: int) -> list[str]:
    path = DataStore().file("arc/ARC-Challenge-Test.jsonl", "arc")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()][:n]
    prompts = []
    for row in rows:
        choices = "\n".join(f"{c['label']}. {c['text']}" for c in row["question"]["choices"])
        prompts.append(f"Question: {row['question']['stem']}\n{choices}\nAnswer:")
    return prompts


def workloads(args) -> dict[str, list[GenerateRequest]]:
    shots = gsm8k(2, 0)
    prefix = "".join(f"Question: {s['question']}\nAnswer: {s['answer']}\n\n" for s in shots)
    shared = [GenerateRequest(f"{prefix}Question: {q['question']}\nAnswer:", 128, ("\n\n", "Question:"), 0.0)
              for q in gsm8k(args.shared, 2)]
    sampled = [GenerateRequest(f"Question: {q['question']}\nAnswer:", 64, (), 0.7, top_p=1.0)
               for q in gsm8k(args.sampled, 2) for _ in range(5)]
    short = [GenerateRequest(p, 32, ("\n",), 0.0) for p in arc(args.short)]
    return {"(a) shared 2-shot prefix, greedy": shared, "(b) 5 samples per prompt, T 0.7": sampled, "(c) short independent prompts": short}


def lm_eval_generate(hf, requests: list[GenerateRequest]) -> list[str]:
    from lm_eval.api.instance import Instance

    instances = []
    for i, r in enumerate(requests):
        kwargs = {"until": list(r.until), "max_gen_toks": r.max_new_tokens, "do_sample": r.temperature > 0}
        if r.temperature > 0:
            kwargs |= {"temperature": r.temperature, "top_p": r.top_p}
        instances.append(Instance("generate_until", {}, (r.prompt, kwargs), i))
    return hf.generate_until(instances, disable_tqdm=True)


def new_tokens(tokenizer, texts: list[str]) -> int:
    return sum(len(tokenizer.encode(t, add_special_tokens=False)) for t in texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--shared", type=int, default=64)
    parser.add_argument("--sampled", type=int, default=32)
    parser.add_argument("--short", type=int, default=64)
    parser.add_argument("--skip-lm-eval-batch1", action="store_true", help="lm-eval at batch 8 only (batch 1 is the slowest part)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (both backends generate with the same model object)")
    args = parser.parse_args()
    from lm_eval.models.huggingface import HFLM

    loaded = models.load(models.resolve(args.model), args.device)
    method = BaseMethod(loaded, BaseArgs(), MethodOptions(show_progress=False))
    lm_eval_sizes = [8] if args.skip_lm_eval_batch1 else [1, 8]
    backends = {size: HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=size) for size in lm_eval_sizes}
    print(f"model {args.model} on {device_description(loaded.device)}, {torch.get_num_threads()} torch threads; "
          "tokens/s counts new tokens (re-encoded texts)")
    for name, requests in workloads(args).items():
        if not requests:
            continue
        began = time.perf_counter()
        ours = [r.text for r in method.generate(requests)]
        ours_s = time.perf_counter() - began
        ours_rate = new_tokens(loaded.tokenizer, ours) / ours_s
        print(f"{name}: {len(requests)} requests")
        print(f"  harness (auto)     {ours_s:7.1f} s  {ours_rate:7.1f} tok/s  prefill tokens shared so far: "
              f"{int(method.cost.counters.get('prefill_tokens_shared', 0))}")
        for size, hf in backends.items():
            began = time.perf_counter()
            theirs = lm_eval_generate(hf, requests)
            theirs_s = time.perf_counter() - began
            theirs_rate = new_tokens(loaded.tokenizer, theirs) / theirs_s
            same = sum(a == b for a, b in zip(ours, theirs, strict=True))
            greedy = all(r.temperature == 0 for r in requests)
            print(f"  lm-eval hf (bs {size}) {theirs_s:7.1f} s  {theirs_rate:7.1f} tok/s  harness/lm-eval = {ours_rate / theirs_rate:.2f}x"
                  + (f"  same text {same}/{len(requests)}" if greedy else "  (sampled: texts differ by design)"))


if __name__ == "__main__":
    main()
