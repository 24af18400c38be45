"""The decoding loop (``harness.decoding.Generation``): greedy text equal to ``model.generate``'s
with and without shared-prefix prefill, on the tiny models (one with a sliding window) and on
both zoo tokenizers; samples drawn per sample, whatever the batch; finished rows leaving."""

from __future__ import annotations

import pytest
import torch
from transformers import StoppingCriteriaList

import harness.decoding as decoding
from harness.api import ChatMessage, GenerateRequest
from harness.decoding import StopStrings
from harness.lm import CausalLM
from harness.method import Cost

SHOTS = "Q: What is 2+2?\nA: 4\n\nQ: What colour is the sky on a clear day?\nA: Blue\n\nQ: "
QUESTIONS = ["Name a fruit.", "What is 3+5?", "Capital of France?", "Say hi.", "Who wrote Hamlet?", "Largest planet?"]


def workload() -> list[GenerateRequest]:
    """Few-shot prompts sharing a prefix (stopped at a blank line), chat turns sharing a system
    prompt, n-gram-banned prompts, and one prompt asked three times."""
    requests = [GenerateRequest(SHOTS + q + "\nA:", 12, ("\n\n",), 0.0) for q in QUESTIONS]
    requests += [GenerateRequest((ChatMessage("system", "You are terse and exact in every answer you give."),  # no template: joined
                                  ChatMessage("user", q)), 10, (), 0.0) for q in QUESTIONS[:3]]
    requests += [GenerateRequest(q, 10, (), 0.0, no_repeat_ngram_size=2) for q in QUESTIONS[:2]]
    return requests + [GenerateRequest("Tell me a story.", 8, (), 0.0)] * 3


def reference(lm: CausalLM, requests: list[GenerateRequest]) -> list[tuple[str, str]]:
    """``model.generate`` on each request alone (left padding cannot matter), cut as the harness cuts."""
    out = []
    for request in requests:
        prompt = torch.tensor([lm.prompt_tokens(request)])
        kwargs = dict(max_new_tokens=request.max_new_tokens, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id,
                      temperature=None, top_p=None, top_k=None)
        if request.no_repeat_ngram_size:
            kwargs["no_repeat_ngram_size"] = request.no_repeat_ngram_size
        if request.until:
            kwargs["stopping_criteria"] = StoppingCriteriaList([StopStrings(request.until, prompt.shape[1], 1, lm.tokenizer)])
        tokens = lm.model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), **kwargs)[0, prompt.shape[1]:]
        answer = lm.answer(tokens.tolist(), request.until)
        out.append((answer.text, answer.finish_reason))
    return out


def tiny_gemma_with_zoo_tokenizer():
    """A random 2-layer Gemma 3 reading Gemma 3's own tokenizer (the second zoo tokenizer)."""
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    from harness import models
    from harness.identity import ModelIdentity
    from harness.models import LoadedModel

    tokenizer = AutoTokenizer.from_pretrained(models.resolve("gemma3-270m").path)
    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=512,
                              max_position_embeddings=1024, layer_types=["sliding_attention", "full_attention"],
                              pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                              eos_token_id=tokenizer.eos_token_id)
    identity = ModelIdentity("tiny-gemma3-zoo-tokenizer", "test", "-", "float32", 0, None, 1024, "Gemma3ForCausalLM")
    return LoadedModel(Gemma3ForCausalLM(config).eval(), tokenizer, identity, torch.device("cpu"))


@pytest.mark.parametrize("model", ["tiny", "tiny_gemma3", "smollm2", "gemma_tokenizer"])
def test_greedy_text_equals_model_generate_shared_or_not(model, request, monkeypatch):
    loaded = tiny_gemma_with_zoo_tokenizer() if model == "gemma_tokenizer" else request.getfixturevalue(model)
    requests = workload()
    shared_lm = CausalLM(loaded, Cost(), show_progress=False)
    shared = [(r.text, r.finish_reason) for r in shared_lm.generate(requests)]
    monkeypatch.setattr(decoding, "MIN_SHARED_PREFIX", 10**9)  # the unshared path
    unshared = [(r.text, r.finish_reason) for r in CausalLM(loaded, Cost(), show_progress=False).generate(requests)]
    assert shared == unshared == reference(shared_lm, requests)
    if model != "tiny_gemma3":  # its 16-token window is shorter than the prompts: nothing is shared there
        assert shared_lm.cost.counters["prefill_tokens_shared"] > 0


def test_identical_requests_are_prefilled_once(tiny):
    lm = CausalLM(tiny, Cost(), show_progress=False)
    prompt = "A prompt asked for five samples."
    lm.generate([GenerateRequest(prompt, 4, (), 1.0)] * 5)
    prompt_tokens = len(lm.prompt_tokens(GenerateRequest(prompt)))
    assert lm.cost.counters["prefill_tokens_shared"] == 4 * prompt_tokens  # four of the five copies were not run


def test_samples_are_seeded_per_sample_whatever_the_batch(tiny):
    ask = GenerateRequest("Sample me", 12, (), 1.0)
    other = GenerateRequest("Something else entirely", 12, (), 0.9, top_p=0.8)
    alone = [r.text for r in CausalLM(tiny, Cost(), show_progress=False).generate([ask] * 4)]
    mixed = CausalLM(tiny, Cost(), batch_size=1, show_progress=False).generate([other, ask, other, ask, ask, ask])
    assert [mixed[i].text for i in (1, 3, 4, 5)] == alone
    assert len(set(alone)) > 1  # four different samples, not one drawn four times
    other_seed = [r.text for r in CausalLM(tiny, Cost(), seed=1, show_progress=False).generate([ask] * 4)]
    assert other_seed != alone


def test_finished_rows_leave_the_batch(tiny, monkeypatch):
    """A row that has met its stop string is not decoded further while the others go on."""
    lm = CausalLM(tiny, Cost(), show_progress=False)
    first = lm.generate([GenerateRequest("abc", 1, (), 0.0)])[0].text
    assert first
    other = next(p for p in ("xyz", "hello", "0123", "qqq", "Zebra") if
                 lm.generate([GenerateRequest(p, 20, (first,), 0.0)])[0].n_tokens == 20)
    fed: list[int] = []
    advance = decoding._Rows.advance
    monkeypatch.setattr(decoding._Rows, "advance", lambda rows, tokens, keep: (fed.append(len(tokens)), advance(rows, tokens, keep))[1])
    stopped, running = lm.generate([GenerateRequest("abc", 20, (first,), 0.0), GenerateRequest(other, 20, (first,), 0.0)])
    assert stopped.n_tokens == 1 and stopped.finish_reason == "stop" and running.n_tokens == 20
    assert fed == [1] * 19  # after the first step only the running row is fed
