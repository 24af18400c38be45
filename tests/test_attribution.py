"""Attribution methods (the explainability survey, PAPERS.md §11) against their definitions on
the tiny random model, ERASER's metrics on a hand-computed fixture, and the faithfulness task
end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import cli

from harness.api import AttributeRequest, AttributeResult, Doc, LoglikelihoodRequest
from harness.attribution import LabelClassifier
from harness.data import DataStore
from harness.method import METHODS, Cost, MethodOptions
from harness.task import EvalSettings
from tasks import eraser_metrics as eraser
from tasks.faithfulness import Faithfulness, FaithfulnessConfig

REQUEST = AttributeRequest(("this", "movie", "was", "really", "great"), "Review: {text}\nSentiment:", (" negative", " positive"))
TECHNIQUES = ("saliency", "input-x-gradient", "integrated-gradients", "occlusion", "leave-one-out", "lime", "kernel-shap",
              "attention", "attention-rollout", "random")


def method(name: str, tiny, seed: int = 0, **args):
    cls = METHODS.get(name)
    return cls(tiny, cls.Args(**args), MethodOptions(seed=seed, show_progress=False))


def test_classifier_agrees_with_the_loglikelihood_engine_and_maps_tokens_to_words(tiny):
    classifier = LabelClassifier(tiny, Cost())
    encoded = classifier.encode(REQUEST)
    assert len(encoded.tokens) == len(encoded.token_words) and set(encoded.token_words) == set(range(5))
    assert tiny.tokenizer.decode(list(encoded.tokens)).strip() == "this movie was really great"
    [probs] = classifier.probabilities([encoded])
    base = method("base", tiny)
    prompt = REQUEST.template.format(text=" ".join(REQUEST.words))
    logprobs = [r.logprob for r in base.loglikelihood([LoglikelihoodRequest(prompt, label) for label in REQUEST.labels])]
    assert probs == pytest.approx(torch.softmax(torch.tensor(logprobs), 0).tolist(), abs=1e-5)
    kept = classifier.encode(REQUEST, [True, False, True, False, True])
    assert tiny.tokenizer.decode(list(kept.tokens)).strip() == "this was great" and set(kept.token_words) == {0, 2, 4}
    # labels are read from the prompt extended by each label less its last token; labels sharing
    # that prefix share a row (on the zoo's tokenizers every label is one token: one row per input)
    for labels in [(" cab", " cat", " dog", " horse"), (" a", " b")]:
        request = AttributeRequest(REQUEST.words, REQUEST.template, labels)
        item = classifier.encode(request)
        assert len(classifier.label_rows(item)) == len({label[:-1] for label in item.labels}) < len(labels)
        logprobs = [r.logprob for r in base.loglikelihood([LoglikelihoodRequest(prompt, label) for label in labels])]
        expected = torch.softmax(torch.tensor(logprobs), 0).tolist()
        mixed, again = classifier.probabilities([item, encoded])
        assert mixed == pytest.approx(expected, abs=1e-5) and again == pytest.approx(probs, abs=1e-6)


def test_gradient_methods_match_their_definitions(tiny):
    classifier = LabelClassifier(tiny, Cost())
    encoded = classifier.encode(REQUEST)
    target = 1
    forward = classifier.target_function(encoded, target)
    embeds = classifier.input_embeddings(encoded).requires_grad_(True)
    p = forward(embeds)
    (grad,) = torch.autograd.grad(p.sum(), embeds)
    request = AttributeRequest(REQUEST.words, REQUEST.template, REQUEST.labels, target=target)
    [saliency] = method("saliency", tiny).attribute([request])
    assert saliency.token_scores == pytest.approx(grad[0].norm(dim=-1).tolist(), rel=1e-4)
    [ixg] = method("input-x-gradient", tiny).attribute([request])
    assert ixg.token_scores == pytest.approx((embeds * grad)[0].sum(-1).tolist(), rel=1e-4, abs=1e-7)
    per_word = [sum(s for s, w in zip(ixg.token_scores, encoded.token_words, strict=True) if w == k) for k in range(5)]
    assert ixg.word_scores == pytest.approx(per_word, abs=1e-9)  # a word's score sums its tokens
    # integrated gradients: completeness, the scores sum to p(x) - p(baseline)
    [ig] = method("integrated-gradients", tiny, steps=64).attribute([request])
    gap = float((p - forward(torch.zeros_like(embeds))).detach())
    assert sum(ig.token_scores) == pytest.approx(gap, rel=0.02, abs=1e-6)
    assert ig.info["backward_passes"] > 0 and ig.info["forward_passes"] > 0
    assert ig.info["convergence_delta"] == pytest.approx(sum(ig.token_scores) - gap, abs=1e-4)
    # occlusion: token 0's score is the drop when its embedding is zeroed
    [occlusion] = method("occlusion", tiny).attribute([request])
    zeroed = embeds.detach().clone()
    zeroed[0, 0] = 0
    assert occlusion.token_scores[0] == pytest.approx(float(p - forward(zeroed)), abs=1e-6)


def test_perturbation_attention_and_random_methods(tiny):
    classifier = LabelClassifier(tiny, Cost())
    request = AttributeRequest(REQUEST.words, REQUEST.template, REQUEST.labels, target=1)
    [loo] = method("leave-one-out", tiny).attribute([request])
    full = classifier.probabilities([classifier.encode(REQUEST)])[0][1]
    for i in range(5):
        keep = [j != i for j in range(5)]
        assert loo.word_scores[i] == pytest.approx(full - classifier.probabilities([classifier.encode(REQUEST, keep)])[0][1], abs=1e-6)
    encoded = classifier.encode(REQUEST)
    attentions = classifier.attentions(encoded)
    columns = slice(len(encoded.before), len(encoded.before) + len(encoded.tokens))
    [attention] = method("attention", tiny).attribute([request])
    assert attention.token_scores == pytest.approx(attentions[-1].mean(0)[-1, columns].tolist(), abs=1e-6)
    rollout = torch.eye(len(encoded.prompt))
    for layer in attentions:
        mixed = layer.mean(0) + torch.eye(len(encoded.prompt))
        rollout = (mixed / mixed.sum(-1, keepdim=True)) @ rollout
    [rolled] = method("attention-rollout", tiny).attribute([request])
    assert rolled.token_scores == pytest.approx(rollout[-1, columns].tolist(), abs=1e-6)
    for name in ("lime", "kernel-shap", "random"):
        first = method(name, tiny, samples=24).attribute([request])[0] if name != "random" else method(name, tiny).attribute([request])[0]
        again = method(name, tiny, samples=24).attribute([request])[0] if name != "random" else method(name, tiny).attribute([request])[0]
        assert first.word_scores == again.word_scores and len(first.word_scores) == 5  # seeded
        assert any(s != 0 for s in first.word_scores)
    assert method("random", tiny, seed=1).attribute([request])[0].word_scores != first.word_scores
    # probabilities only: no explanation is computed
    [plain] = method("saliency", tiny).attribute([AttributeRequest(REQUEST.words, REQUEST.template, REQUEST.labels, explain=False)])
    assert plain.word_scores == () and plain.target == int(np.argmax(plain.probabilities))


def test_each_distinct_text_is_scored_once(tiny, mirror):
    classifier = LabelClassifier(tiny, Cost())
    request = AttributeRequest(("a", "very", "very", "good", "film"), REQUEST.template, REQUEST.labels)
    forward = classifier.words_function(request, 1)
    real, scored = classifier.probabilities, []
    classifier.probabilities = lambda encoded: scored.append(len(encoded)) or real(encoded)  # type: ignore[method-assign]
    # rows 1 and 2 leave the same text (either "very" removed); row 3 repeats row 1
    masks = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 1, 1, 1], [1, 1, 0, 1, 1], [1, 0, 1, 1, 1], [0, 1, 1, 1, 1]])
    values = forward(masks)
    assert scored == [3] and forward(masks[:2]).tolist() == values[:2].tolist() and scored == [3]
    expected = [real([classifier.encode(request, keep)])[0][1] for keep in masks.bool().tolist()]
    assert values.tolist() == pytest.approx(expected, abs=1e-6)

    # the faithfulness task scores each distinct perturbed text of a chunk once
    task = Faithfulness(FaithfulnessConfig(dataset="sst2"))
    docs = task.load_docs(DataStore(mirror))[:4]
    scorer, asked = method("random", tiny), []
    real_attribute = scorer.attribute
    scorer.attribute = lambda requests: asked.append(list(requests)) or real_attribute(requests)  # type: ignore[method-assign]
    records = task.evaluate(docs, scorer, EvalSettings(chat=False, seed=0))
    explained, perturbed = asked
    planned = [request for doc, result in zip(docs, real_attribute(explained), strict=True) for _, request in task.perturbations(doc, result)]
    assert len(perturbed) == len(set(perturbed)) == len(set(planned)) < len(planned)
    for doc, record in zip(docs, records, strict=True):
        # a one-word AOPC bin is the top word's leave-one-out text: both read the one score
        top = eraser.top_words(record["word_scores"], 1)[0]
        full = record["probabilities"][record["pred"]]
        assert full - record["perturbed_probabilities"]["comp@0.01"] == record["loo_scores"][top]
        words = [w for i, w in enumerate(doc.data["words"]) if i not in record["rationale"]]
        alone = classifier.probabilities([classifier.encode(AttributeRequest(tuple(words), REQUEST.template, REQUEST.labels))])[0]
        assert record["comprehensiveness"] == pytest.approx(full - alone[record["pred"]], abs=1e-5)


def test_eraser_metrics_on_a_hand_computed_fixture():
    # token F1: predicted {1, 2, 7}, gold {2, 3, 7, 8}: P 2/3, R 1/2, F1 4/7
    assert eraser.token_prf([1, 2, 7], [2, 3, 7, 8]) == pytest.approx((2 / 3, 1 / 2, 4 / 7), abs=1e-9)
    assert eraser.token_prf([1], []) == (0.0, 0.0, 0.0)
    # IOU: one-word spans against gold (0,3) (IoU 1/3 each: misses) and (5,6) (IoU 1: a hit); (8,10) vs (8,9): 1/2 hits
    assert eraser.iou_true_positives([(0, 1), (1, 2), (5, 6)], [(0, 3), (5, 6)]) == 1
    assert eraser.iou_true_positives([(8, 9)], [(8, 10)]) == 1
    # macro IOU F1: recalls 1/2, 1 and NaN (no gold); precisions 1/3, NaN (no prediction), 0 -> R 3/4, P 1/6, F1 = 3/11
    recalls, precisions = np.array([0.5, 1.0, np.nan]), np.array([1 / 3, np.nan, 0.0])
    assert eraser.macro_iou_f1(recalls, precisions) == pytest.approx(2 * (3 / 4) * (1 / 6) / (3 / 4 + 1 / 6), abs=1e-9)
    # AUPRC: truth 1,0,1,0 at scores .9,.8,.3,.1: points (R,P) = (1,2/3), (.5,.5), (.5,1), (0,1) -> 19/24
    assert eraser.auprc([0, 2], [0.9, 0.8, 0.3, 0.1]) == pytest.approx(19 / 24, abs=1e-9)
    assert eraser.top_words([0.1, 0.5, 0.5, -1.0, 0.2], 3) == [1, 2, 4]
    assert [eraser.bin_size(f, 30) for f in eraser.THRESHOLDS] == [1, 2, 3, 6, 15]

    # Comprehensiveness, sufficiency and AOPC of one item, from known probabilities.
    task = Faithfulness(FaithfulnessConfig(dataset="hatexplain", rationale_words=2, loo_correlation=False))
    words = ["w0", "w1", "w2", "w3"]
    doc = Doc("post", {"words": words, "gold": 1, "spans": [(1, 3)]})
    explained = AttributeResult((0.2, 0.8), 1, (0.1, 0.9, 0.4, -0.3))
    answers = {"comp": AttributeResult((0.7, 0.3), 1), "suff": AttributeResult((0.4, 0.6), 1)}
    bins = {0.01: (0.5, 0.7), 0.05: (0.5, 0.7), 0.10: (0.5, 0.7), 0.20: (0.5, 0.7), 0.50: (0.3, 0.6)}  # (p without, p only)
    for fraction, (gone, kept) in bins.items():
        answers[f"comp@{fraction}"] = AttributeResult((1 - gone, gone), 1)
        answers[f"suff@{fraction}"] = AttributeResult((1 - kept, kept), 1)
    record = task._score(doc, explained, answers)
    assert record["rationale"] == [1, 2]  # the top two words
    assert record["comprehensiveness"] == pytest.approx(0.8 - 0.3, abs=1e-9)
    assert record["sufficiency"] == pytest.approx(0.8 - 0.6, abs=1e-9)
    assert record["aopc_comprehensiveness"] == pytest.approx(((0.8 - 0.5) * 4 + (0.8 - 0.3)) / 5, abs=1e-9)
    assert record["aopc_sufficiency"] == pytest.approx(((0.8 - 0.7) * 4 + (0.8 - 0.6)) / 5, abs=1e-9)
    assert record["token_f1"] == pytest.approx(1.0)
    # both one-word spans reach IoU 1/2 with the gold span (1,3): two hits against one gold span,
    # so recall 2 (ERASER divides hits by gold spans without capping), precision 1
    assert (record["iou_recall"], record["iou_precision"]) == (2.0, 1.0)
    assert record["correct"] == 1


def test_hatexplain_keeps_the_toxic_posts_whose_rationales_place(mirror):
    from harness.data import DataStore
    from tasks.faithfulness import hatexplain_docs

    docs, dropped = hatexplain_docs(DataStore())
    assert (len(docs), dropped) == (1102, 40)  # what the protocol states of the mirrored files
    assert all(d.data["spans"] and max(end for _, end in d.data["spans"]) <= len(d.data["words"]) for d in docs)


def test_faithfulness_task_end_to_end(tmp_path, mirror, capsys):
    runs = tmp_path / "runs"
    for technique in ("leave-one-out", "random"):
        assert cli("run", "--task", "faithfulness", "--method", technique, "--model", "tiny-random-llama", "--limit", "3",
                   "--quiet", "--output-dir", runs) == 0
    for run in runs.glob("*/results.json"):
        results = json.loads(run.read_text())
        assert {"comprehensiveness", "aopc_sufficiency", "token_f1", "iou_f1", "auprc", "loo_spearman"} <= set(results["metrics"])
        assert results["artifacts"] == ["heatmaps.svg"]
        svg = (run.parent / "heatmaps.svg").read_text()
        assert svg.startswith("<svg") and "text-decoration" in svg  # gold rationale words underlined
        samples = [json.loads(line) for line in (run.parent / "samples.jsonl").read_text().splitlines()]
        assert all(len(s["word_scores"]) == len(s["words"]) == s["n_words"] for s in samples)
        method_name = json.loads((run.parent / "spec.json").read_text())["method"]["name"]
        if method_name == "leave-one-out":
            assert results["metrics"]["loo_spearman"]["value"] == pytest.approx(1.0)
    assert cli("run", "--task", "faithfulness", "--method", "base", "--model", "tiny-random-llama", "--limit", "1",
               "--output-dir", runs) == 2
    assert "attribute" in capsys.readouterr().err
    assert math.isfinite(json.loads(next(runs.glob("*/results.json")).read_text())["metrics"]["comprehensiveness"]["value"])


def test_real_model_explanations_are_scored_as_the_engine_scores(smollm2, mirror):
    """SmolLM2 on two HateXplain posts: the classifier's probabilities equal the loglikelihood
    engine's (the real tokenizer's word-token split included), leave-one-out's scores equal the
    task's own deletions, and the records hold every explanation."""
    from harness.data import DataStore
    from harness.task import EvalSettings

    task = Faithfulness(FaithfulnessConfig())
    docs = task.load_docs(DataStore())[:2]
    loo = method("leave-one-out", smollm2)
    records = task.evaluate(docs, loo, EvalSettings(chat=False, seed=0))
    base = method("base", smollm2)
    for doc, record in zip(docs, records, strict=True):
        prompt = task._request(doc.data["words"]).template.format(text=" ".join(doc.data["words"]))
        logprobs = [r.logprob for r in base.loglikelihood([LoglikelihoodRequest(prompt, label) for label in (" No", " Yes")])]
        assert record["probabilities"] == pytest.approx(torch.softmax(torch.tensor(logprobs), 0).tolist(), abs=1e-4)
        assert record["word_scores"] == pytest.approx(record["loo_scores"], abs=1e-5)
        assert record["loo_spearman"] == pytest.approx(1.0)
        assert len(record["word_scores"]) == len(doc.data["words"]) and 0 <= record["token_f1"] <= 1
