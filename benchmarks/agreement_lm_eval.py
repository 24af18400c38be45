"""A finished run's numbers vs lm-eval's ``hf`` backend on the same items (same model weights).

- wikitext103: recomputes every article with lm-eval's ``loglikelihood_rolling`` (context
  length = the run's window) and compares pooled word perplexity (target: within 0.5%).
- pubmedqa: runs lm-eval's own ``pubmedqa`` task (its prompt and ``acc`` metric) on the run's
  items, from a local copy of their rows, and compares accuracy and per-item predictions.

    python benchmarks/agreement_lm_eval.py RUN_ID [--output-dir runs]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

from tqdm.auto import tqdm

from harness import models
from harness.data import DataStore
from harness.runner import make_task, ordered_samples
from harness.store import RunStore, default_runs_dir


def wikitext(samples, docs, hf) -> None:
    from lm_eval.api.instance import Instance

    theirs = 0.0
    for sample in tqdm(samples, desc="lm-eval rolling", unit="article"):
        request = Instance("loglikelihood_rolling", {}, (docs[sample["doc_id"]].data["text"],), 0)
        theirs += hf.loglikelihood_rolling([request], disable_tqdm=True)[0]
    words = sum(s["n_words"] for s in samples)
    ppl_ours, ppl_theirs = math.exp(-sum(s["logprob"] for s in samples) / words), math.exp(-theirs / words)
    print(f"{len(samples)} articles, {words} words, window {samples[0]['window']}")
    print(f"word perplexity: harness {ppl_ours:.4f}, lm-eval {ppl_theirs:.4f}, relative difference {abs(ppl_ours / ppl_theirs - 1):.2e}")


def pubmedqa(samples, mirror: Path, hf) -> None:
    import lm_eval
    from lm_eval.tasks._yaml_loader import load_yaml

    from tasks.lm_eval import task_manager

    items = json.loads((mirror / "pubmedqa/ori_pqal.json").read_text())
    with tempfile.TemporaryDirectory() as folder:
        rows = Path(folder) / "pubmedqa.jsonl"
        rows.write_text("".join(json.dumps({"pubid": s["doc_id"], **items[s["doc_id"]]}) + "\n" for s in samples))
        manager = task_manager(None)
        config = load_yaml(manager.task_index["pubmedqa"].yaml_path)
        config.update(dataset_path="json", dataset_name=None, dataset_kwargs={"data_files": {"test": str(rows)}},
                      training_split=None, validation_split=None, test_split="test")
        task = manager.load([config])["tasks"]["pubmedqa"]
        output = lm_eval.simple_evaluate(model=hf, tasks=[task], task_manager=manager, log_samples=True)
    theirs = sorted(output["samples"]["pubmedqa"], key=lambda s: s["doc_id"])
    same = sum(int(s["acc"] == t["correct"]) for s, t in zip(theirs, samples, strict=True))
    acc_ours = sum(s["correct"] for s in samples) / len(samples)
    print(f"{len(samples)} items: accuracy harness {acc_ours:.4f}, lm-eval {output['results']['pubmedqa']['acc,none']:.4f}; "
          f"per-item agreement {same}/{len(samples)}")


def main() -> None:
    from lm_eval.models.huggingface import HFLM

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--output-dir", type=Path, default=None)
    args = parser.parse_args()
    run = RunStore(args.output_dir or default_runs_dir()).find(args.run)
    spec = run.spec()
    samples = ordered_samples(run)
    loaded = models.load(models.resolve(spec.model["name"], spec.model["dtype"]))
    print(f"run {run.run_id}: {spec.task['name']} × {spec.method['name']} × {spec.model['name']}")
    if spec.task["name"] == "wikitext103":
        task = make_task(spec.task["name"], spec.task["config"])
        docs = {d.id: d for d in task.load_docs(DataStore())}
        wikitext(samples, docs, HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=1, max_length=samples[0]["window"]))
    elif spec.task["name"] == "pubmedqa":
        pubmedqa(samples, DataStore().mirror, HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=1))
    else:
        raise SystemExit(f"no lm-eval counterpart wired up for task {spec.task['name']}")


if __name__ == "__main__":
    main()
