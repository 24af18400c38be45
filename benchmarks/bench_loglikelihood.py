"""Loglikelihood throughput of harness's ``base`` method vs lm-eval's ``hf`` backend.

Same model object, same requests, same process, same machine; prints throughput and the
ratio harness / lm-eval (goal: >= 2.0 on PubMedQA, >= 1.0 on wikitext103) and checks that
both give the same answers (PubMedQA accuracy, wikitext word perplexity).

    HARNESS_DATA_DIR=../shared/data python benchmarks/bench_loglikelihood.py --pubmedqa 100 --wikitext 4 [--device cuda]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from harness import models, zoo
from harness.api import StreamRequest
from harness.data import DataStore
from harness.environment import device_description
from harness.method import MethodOptions
from harness.task import EvalSettings
from methods.base import BaseArgs, BaseMethod
from tasks.pubmedqa import PubMedQA
from tasks.wikitext103 import WikiText103


def timed(function):
    start = time.perf_counter()
    value = function()
    return value, time.perf_counter() - start


def bench_pubmedqa(loaded, hf, n: int, batch_size) -> None:
    from lm_eval.api.instance import Instance

    task = PubMedQA()
    docs = task.load_docs(DataStore())[:n]
    settings = EvalSettings(chat=False, seed=0)
    requests = [r for d in docs for r in task.requests(d, settings)]
    instances = [Instance("loglikelihood", {}, (r.context, r.continuation), i) for i, r in enumerate(requests)]
    method = BaseMethod(loaded, BaseArgs(), MethodOptions(batch_size=batch_size, show_progress=False))
    theirs, t_theirs = timed(lambda: hf.loglikelihood(instances, disable_tqdm=True))
    ours, t_ours = timed(lambda: method.loglikelihood(requests))
    acc = lambda lls: np.mean([int(np.argmax(lls[3 * i : 3 * i + 3]) == ["yes", "no", "maybe"].index(d.data["gold"])) for i, d in enumerate(docs)])  # noqa: E731
    acc_ours, acc_theirs = acc([r.logprob for r in ours]), acc([r[0] for r in theirs])
    print(f"pubmedqa  n={n} items ({len(requests)} requests), batch_size={batch_size} (harness) vs {hf.batch_size} (lm-eval)")
    print(f"  lm-eval hf : {n / t_theirs:7.2f} items/s  ({t_theirs:.1f} s)  acc {acc_theirs:.4f}")
    print(f"  harness    : {n / t_ours:7.2f} items/s  ({t_ours:.1f} s)  acc {acc_ours:.4f}")
    print(f"  ratio harness/lm-eval = {t_theirs / t_ours:.2f}x   same accuracy: {acc_ours == acc_theirs}")


def bench_wikitext(loaded, hf, n: int, batch_size) -> None:
    from lm_eval.api.instance import Instance

    docs = WikiText103().load_docs(DataStore())[:n]
    texts = [d.data["text"] for d in docs]
    words = sum(d.data["n_words"] for d in docs)
    method = BaseMethod(loaded, BaseArgs(), MethodOptions(batch_size=batch_size, show_progress=False))
    theirs, t_theirs = timed(lambda: hf.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)], disable_tqdm=True))
    ours, t_ours = timed(lambda: method.score_stream([StreamRequest(t) for t in texts]))
    tokens = sum(r.n_tokens for r in ours)
    ppl_ours, ppl_theirs = math.exp(-sum(r.logprob for r in ours) / words), math.exp(-sum(theirs) / words)
    print(f"wikitext103  n={n} articles ({tokens} tokens, window {ours[0].window}), batch_size={batch_size} vs {hf.batch_size}")
    print(f"  lm-eval hf : {tokens / t_theirs:8.1f} tokens/s  ({t_theirs:.1f} s)  word ppl {ppl_theirs:.4f}")
    print(f"  harness    : {tokens / t_ours:8.1f} tokens/s  ({t_ours:.1f} s)  word ppl {ppl_ours:.4f}")
    print(f"  ratio harness/lm-eval = {t_theirs / t_ours:.2f}x   ppl relative difference {abs(ppl_ours / ppl_theirs - 1):.2e}")


def main() -> None:
    from lm_eval.models.huggingface import HFLM

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=zoo.DEFAULT_MODEL)
    parser.add_argument("--pubmedqa", type=int, default=100, help="items (0 to skip)")
    parser.add_argument("--wikitext", type=int, default=4, help="articles (0 to skip)")
    parser.add_argument("--lm-eval-batch-size", default="1", help="lm-eval's batch size (its default is 1)")
    parser.add_argument("--batch-size", default="auto", help="harness batch size")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (both backends score with the same model object)")
    args = parser.parse_args()
    torch.manual_seed(0)
    loaded = models.load(models.resolve(args.model), args.device)
    print(f"model {loaded.identity.name} on {device_description(loaded.device)}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    size = lambda s: s if s == "auto" else int(s)  # noqa: E731
    hf = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=size(args.lm_eval_batch_size))
    if args.pubmedqa:
        bench_pubmedqa(loaded, hf, args.pubmedqa, size(args.batch_size))
    if args.wikitext:
        bench_wikitext(loaded, hf, args.wikitext, size(args.batch_size))


if __name__ == "__main__":
    main()
