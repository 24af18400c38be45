"""Word perplexity of a finished wikitext103 run vs lm-eval's rolling loglikelihood on the same texts.

Reads the run's per-article log-probabilities, recomputes each article with lm-eval's ``hf``
backend (``loglikelihood_rolling``, same model object and context length) and prints both word
perplexities and their relative difference (target: within 0.5%).

    python benchmarks/agreement_wikitext.py RUN_ID [--output-dir runs]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from tqdm.auto import tqdm

from harness import models
from harness.data import DataStore
from harness.runner import default_runs_dir, make_task, ordered_samples
from harness.store import RunStore


def main() -> None:
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--output-dir", type=Path, default=None)
    args = parser.parse_args()
    run = RunStore(args.output_dir or default_runs_dir()).find(args.run)
    spec = run.spec()
    task = make_task(spec.task["name"], spec.task["config"])
    docs = {d.id: d for d in task.load_docs(DataStore())}
    samples = ordered_samples(run)
    loaded = models.load(models.resolve(spec.model["name"], spec.model["dtype"]))
    window = samples[0]["window"]
    hf = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=1, max_length=window)
    theirs = 0.0
    for sample in tqdm(samples, desc="lm-eval rolling", unit="article"):
        request = Instance("loglikelihood_rolling", {}, (docs[sample["doc_id"]].data["text"],), 0)
        theirs += hf.loglikelihood_rolling([request], disable_tqdm=True)[0]
    words = sum(s["n_words"] for s in samples)
    ours = sum(s["logprob"] for s in samples)
    ppl_ours, ppl_theirs = math.exp(-ours / words), math.exp(-theirs / words)
    print(f"run {run.run_id}: {len(samples)} articles, {words} words, window {window}")
    print(f"word perplexity: harness {ppl_ours:.4f}, lm-eval {ppl_theirs:.4f}, relative difference {abs(ppl_ours / ppl_theirs - 1):.2e}")


if __name__ == "__main__":
    main()
