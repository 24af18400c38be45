"""Throughput of ``harness serve`` against the same requests answered in process.

    python benchmarks/bench_serve.py [--model smollm2-135m-instruct] [--requests 32] [--max-tokens 32] [--clients 1,4,16]

One process, one loaded model: first the in-process baseline (the method's batched
``generate`` over every request at once, as ``harness run`` calls it), then the same requests
through ``harness serve`` on loopback, sent by 1, 4 and 16 concurrent clients (the real
``openai`` client, one thread each, each sending its share of the requests one after
another). Requests: MT-Bench first turns from the data mirror as chat turns, greedy. Prints
requests/s, completion tokens/s, the mean batch the server formed, each ratio against the
in-process baseline, and how many answers equal the baseline's (greedy answers can differ in
the last digits of a batch's padding, rarely in text).
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor

from harness import models
from harness.api import ChatMessage, GenerateRequest
from harness.data import DataStore
from harness.method import MethodOptions
from harness.serve import background_server, build_app
from methods.base import BaseArgs, BaseMethod


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--batch-window-ms", type=float, default=None, help="the server's; default harness serve's")
    args = parser.parse_args()

    import openai

    rows = [json.loads(line) for line in DataStore().file("mt_bench/question.jsonl", "mt_bench").read_text().splitlines() if line.strip()]
    questions = [row["turns"][0] for row in rows[: args.requests]]
    method = BaseMethod(models.load(models.resolve(args.model)), BaseArgs(), MethodOptions(show_progress=False))
    requests = [GenerateRequest((ChatMessage("user", q),), args.max_tokens, (), 0.0) for q in questions]

    began = time.perf_counter()
    baseline = method.generate(requests)
    base_s = time.perf_counter() - began
    base_tokens = sum(r.n_tokens for r in baseline)
    print(f"model {args.model}, {len(requests)} MT-Bench chat requests, {args.max_tokens} new tokens, greedy, "
          f"{__import__('torch').get_num_threads()} torch threads")
    print(f"{'way':<22}{'wall s':>8}{'req/s':>8}{'tok/s':>8}{'× req/s':>9}{'mean batch':>12}{'same text':>11}")
    print(f"{'in process (1 call)':<22}{base_s:>8.1f}{len(requests) / base_s:>8.2f}{base_tokens / base_s:>8.1f}{1.0:>9.2f}"
          f"{len(requests):>12}{len(requests):>8}/{len(requests)}")

    window = {} if args.batch_window_ms is None else {"batch_window_s": args.batch_window_ms / 1000}
    app = build_app(method, args.model, **window)
    with background_server(app) as url:
        client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=3600)
        for clients in (int(c) for c in args.clients.split(",")):
            batches_before = app.state.batcher.batches

            def ask(index: int) -> tuple[str, int]:
                reply = client.chat.completions.create(model=args.model, messages=[{"role": "user", "content": questions[index]}],
                                                       max_tokens=args.max_tokens, temperature=0)
                return reply.choices[0].message.content or "", reply.usage.completion_tokens if reply.usage else 0

            began = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                answers = list(pool.map(ask, range(len(requests))))
            wall = time.perf_counter() - began
            tokens = sum(n for _, n in answers)
            same = sum(text == want.text for (text, _), want in zip(answers, baseline, strict=True))
            batches = app.state.batcher.batches - batches_before
            print(f"{f'serve, {clients} client(s)':<22}{wall:>8.1f}{len(requests) / wall:>8.2f}{tokens / wall:>8.1f}"
                  f"{base_s / wall:>9.2f}{len(requests) / max(1, batches):>12.1f}{same:>8}/{len(requests)}")


if __name__ == "__main__":
    main()
