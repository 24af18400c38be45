"""Scoring many continuations of one answer with a reward model (ARGS's top-k tokens, PAPERS.md
§5): the candidates packed into one sequence over the reward model's cache (the default) against
a batch of rows, each row a copy of the cache. Both run in one process on the same inputs; the
script prints the time ratio (batched / packed) and the largest reward difference, first for
one scoring call at several answer lengths, then for whole ARGS answers on held-out HH-RLHF
prompts (whose tokens must come out the same).

    python benchmarks/bench_rm_candidates.py [--reward-model NAME] [--model smollm2-135m-instruct]
        [--candidates 40] [--lengths 32,128,256] [--prompts 2] [--max-new-tokens 48] [--repeats 3]

Without ``--reward-model`` the reward model is the policy's backbone with an untrained scalar
head, written to a temporary folder: the time of a forward pass does not depend on the head's
weights, and no reward model installs offline.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from harness import models  # noqa: E402
from harness.api import ChatMessage, GenerateRequest  # noqa: E402
from harness.data import DataStore  # noqa: E402
from harness.method import METHODS, Cost, MethodOptions  # noqa: E402
from harness.reward import RewardModel  # noqa: E402
from tasks.hh_rlhf import HHRLHF, HHRLHFConfig  # noqa: E402


def backbone_reward_model(policy: str, folder: Path) -> str:
    """The policy's weights under a one-label classification head (untrained): a reward model's shape."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source = models.resolve(policy).path
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model.config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def time_call(rm: RewardModel, answer_length: int, candidates: int, repeats: int) -> tuple[float, list[float]]:
    conversation = [ChatMessage("user", "How can I keep bread fresh for a week without a freezer?")]
    state = rm.start(conversation)
    rm.accept(state, [(7 * i + 100) % 20_000 for i in range(answer_length)])
    continuations = [[1_000 + i] for i in range(candidates)]
    rm.score_continuations(state, continuations[:2])  # reads the answer into the cache
    best, rewards = float("inf"), []
    for _ in range(repeats):
        began = time.perf_counter()
        rewards = rm.score_continuations(state, continuations)
        best = min(best, time.perf_counter() - began)
    return best, rewards


def args_answers(policy, reward_model: str, requests: list[GenerateRequest], pack: bool) -> tuple[float, list[str]]:
    cls = METHODS.get("args")
    method = cls(policy, cls.Args(reward_model=reward_model), MethodOptions(seed=0, show_progress=False))
    method.reward.pack_candidates = pack and method.reward.pack_candidates
    began = time.perf_counter()
    answers = method.generate(requests)
    return time.perf_counter() - began, [a.text for a in answers]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--reward-model", default=None)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--candidates", type=int, default=40)
    parser.add_argument("--lengths", default="32,128,256", help="answer tokens already in the cache")
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        name = options.reward_model or backbone_reward_model(options.model, Path(scratch) / "rm")
        loaded = models.load(models.resolve(name))
        print(f"reward model {options.reward_model or options.model + ' backbone, untrained head'}, "
              f"{options.candidates} one-token candidates, torch threads {torch.get_num_threads()}")
        print(f"{'answer tokens':>13s} {'batched s':>10s} {'packed s':>9s} {'ratio':>7s} {'max |Δ reward|':>15s}")
        for length in (int(x) for x in options.lengths.split(",")):
            batched_s, batched = time_call(RewardModel(loaded, Cost(), pack_candidates=False), length, options.candidates, options.repeats)
            packed_s, packed = time_call(RewardModel(loaded, Cost()), length, options.candidates, options.repeats)
            difference = max(abs(a - b) for a, b in zip(batched, packed, strict=True))
            print(f"{length:>13d} {batched_s:>10.3f} {packed_s:>9.3f} {batched_s / packed_s:>6.2f}x {difference:>15.2e}")
        if options.prompts:
            data = DataStore(os.environ.get("HARNESS_DATA_DIR"))
            docs = HHRLHF(HHRLHFConfig(reward_model=name, coherence=False)).load_docs(data)[: options.prompts]
            requests = [GenerateRequest(d.data["messages"], options.max_new_tokens) for d in docs]
            policy = models.load(models.resolve(options.model))
            batched_s, batched_texts = args_answers(policy, name, requests, pack=False)
            packed_s, packed_texts = args_answers(policy, name, requests, pack=True)
            same = sum(a == b for a, b in zip(batched_texts, packed_texts, strict=True))
            print(f"ARGS, {len(requests)} prompts x {options.max_new_tokens} tokens: batched {batched_s:.1f} s, packed {packed_s:.1f} s, "
                  f"ratio {batched_s / packed_s:.2f}x; answers identical: {same} of {len(requests)}")


if __name__ == "__main__":
    main()
