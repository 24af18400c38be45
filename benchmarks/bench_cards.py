"""CARDS vs Best-of-N (PAPERS.md §5) in one process, on the same held-out HH-RLHF prompts: the
guiding reward each reaches, and the ratios of their cost — policy + reward-model tokens, and
wall time per answer. The paper reports CARDS about five times faster than Best-of-N at the
same or better reward; the goal here is at least 3x fewer policy + RM tokens.

    python benchmarks/bench_cards.py --reward-model NAME [--model smollm2-135m-instruct] [--prompts 10]
        [--max-new-tokens 128] [--n 5] [--device cpu]

With ``--batched``, Best-of-N also runs with its samples as one batch (``batched=true``), and
the script prints the time ratio of sequential to batched sampling. Best-of-N runs twice: as
the official code (every sample decodes ``max_new_tokens`` tokens) and
stopping at EOS (``eos_stop``), since CARDS stops at EOS by default; each ratio is CARDS over
that Best-of-N. Both methods load the policy and reward model once (shared), and the prompts
are the hh-rlhf task's seeded order.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from harness import models  # noqa: E402
from harness.api import GenerateRequest  # noqa: E402
from harness.data import DataStore  # noqa: E402
from harness.method import METHODS, MethodOptions  # noqa: E402
from tasks.hh_rlhf import HHRLHF, HHRLHFConfig  # noqa: E402


def run(name: str, model, args: dict, requests: list[GenerateRequest]) -> dict:
    cls = METHODS.get(name)
    method = cls(model, cls.Args(**args), MethodOptions(seed=0, show_progress=True))
    began = time.perf_counter()
    answers = method.generate(requests)
    seconds = time.perf_counter() - began
    rewards = np.array([a.info["guide_reward"] for a in answers])
    tokens = sum(a.info["policy_tokens"] + a.info["rm_tokens"] for a in answers)
    return {"reward": float(rewards.mean()), "reward_se": float(rewards.std(ddof=1) / np.sqrt(len(rewards))) if len(rewards) > 1 else 0.0,
            "tokens": tokens, "seconds": seconds, "rm_calls": sum(a.info["rm_calls"] for a in answers),
            "new_tokens": float(np.mean([a.n_tokens for a in answers]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--reward-model", required=True)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--n", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batched", action="store_true", help="also Best-of-N with batched=true (the n samples as one batch)")
    options = parser.parse_args()
    data = DataStore(os.environ.get("HARNESS_DATA_DIR"))
    docs = HHRLHF(HHRLHFConfig(reward_model=options.reward_model, coherence=False)).load_docs(data)[: options.prompts]
    requests = [GenerateRequest(d.data["messages"], options.max_new_tokens) for d in docs]
    model = models.load(models.resolve(options.model), options.device)
    rm = {"reward_model": options.reward_model}
    results = {
        "cards": run("cards", model, rm, requests),
        f"best-of-{options.n}": run("best-of-n", model, rm | {"n": options.n}, requests),
        f"best-of-{options.n} (eos_stop)": run("best-of-n", model, rm | {"n": options.n, "eos_stop": True}, requests),
    }
    if options.batched:
        results[f"best-of-{options.n} (batched)"] = run("best-of-n", model, rm | {"n": options.n, "batched": True}, requests)
    print(f"\n{options.model}, reward model {options.reward_model}, {len(requests)} held-out prompts, "
          f"max_new_tokens {options.max_new_tokens}, device {options.device}")
    print(f"{'method':28s} {'reward (± se)':>18s} {'policy+RM tokens':>17s} {'RM calls':>9s} {'seconds':>9s} {'new tokens':>10s}")
    for name, r in results.items():
        print(f"{name:28s} {r['reward']:>10.3f} ± {r['reward_se']:.3f} {r['tokens']:>17d} {r['rm_calls']:>9d} {r['seconds']:>9.1f} "
              f"{r['new_tokens']:>10.1f}")
    cards = results["cards"]
    for name, r in list(results.items())[1:]:
        print(f"{name}: tokens ratio (BoN / CARDS) {r['tokens'] / cards['tokens']:.2f}x, time ratio {r['seconds'] / cards['seconds']:.2f}x, "
              f"reward difference (CARDS - BoN) {cards['reward'] - r['reward']:+.3f}")
    if options.batched:
        sequential, batched = results[f"best-of-{options.n}"], results[f"best-of-{options.n} (batched)"]
        print(f"best-of-{options.n}: sequential / batched time {sequential['seconds'] / batched['seconds']:.2f}x "
              f"(reward {sequential['reward']:.3f} vs {batched['reward']:.3f}: the same distribution, other random streams)")


if __name__ == "__main__":
    main()
