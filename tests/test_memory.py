"""HMT and RMT: memory carries information across segments (a window cannot), the memory
cache stays bounded, scoring equals the training loss's arithmetic, and training on PG-19
train books makes a zoo model that resumes bit-exactly after an interruption."""

from __future__ import annotations

import json

import pytest
import torch

from harness.api import StreamRequest
from harness.data import DataStore
from harness.errors import ArgumentError
from harness.method import MethodOptions
from tests.conftest import cli

OPTIONS = MethodOptions(show_progress=False)


def _hmt(tiny, **kw):
    from methods.hmt import HMT, HMTArgs

    return HMT(tiny, HMTArgs(**{"segment": 16, "sensory": 4, "memories": 3, "untrained": True, **kw}), OPTIONS)


def test_memory_carries_the_first_segment_into_later_ones(tiny):
    from methods.rmt import RMT, RMTArgs

    tail = " the same ending words here and there " * 2
    a, b = "zzzzzzzzzzzzzzzzzzzzzzzz" + tail, "aaaaaaaaaaaaaaaaaaaaaaaa" + tail
    for method in (_hmt(tiny, sensory=0), RMT(tiny, RMTArgs(segment=16, tokens=2, untrained=True), OPTIONS)):
        # score only the tail: its tokens sit in later segments, beyond any 16-token window of the start
        scored = [method.score_stream([StreamRequest(tail, context=prefix[: -len(tail)])])[0].logprob for prefix in (a, b)]
        assert scored[0] != pytest.approx(scored[1], abs=1e-6)


def test_hmt_cache_is_bounded_and_segments_are_counted(tiny):
    method = _hmt(tiny)
    wrapper = method.wrapper
    state = wrapper.initial_state(1)
    ids = torch.randint(3, 200, (1, 16))
    with torch.no_grad():
        for _ in range(6):
            logits, state = wrapper.forward_segment(ids, state)
    assert len(state["cache"]) == 3 and state["sensory"].shape == (1, 4, wrapper.hidden) and logits.shape[1] == 16
    # Memory stays flat with input length only if the cache holds the memories themselves, not
    # views that keep each segment's whole hidden tensor alive.
    for kept in (*state["cache"], state["sensory"]):
        assert kept.untyped_storage().nbytes() == kept.numel() * kept.element_size()
    (result,) = method.score_stream([StreamRequest("word " * 40)])
    assert result.n_windows == -(-result.n_tokens // 16) >= 2  # one backbone pass per segment
    described = method.describe()
    assert described["untrained"] and 0 < described["memory_parameter_share"] < 1


def test_stream_score_matches_the_training_loss(tiny):
    method = _hmt(tiny)
    text = "A long story about a ship and the sea. " * 6
    (result,) = method.score_stream([StreamRequest(text)])
    ids = [method.lm.prefix_token_id, *method.lm.encode(text, add_special_tokens=False)]
    with torch.no_grad():
        loss = method.wrapper.stream_loss(torch.tensor([ids]))
    assert -result.logprob / result.n_tokens == pytest.approx(float(loss), rel=1e-4)


def test_generation_continues_after_the_memory_of_earlier_segments(tiny):
    from harness.api import GenerateRequest

    method = _hmt(tiny)
    (answer,) = method.generate([GenerateRequest("word " * 40, max_new_tokens=6)])
    assert answer.n_tokens <= 6 and answer.finish_reason in ("stop", "length")
    (stopped,) = method.generate([GenerateRequest("word " * 40, max_new_tokens=6, until=(answer.text[:1] or "x",))])
    assert answer.text[:1] == "" or stopped.text == "" and stopped.finish_reason == "stop"


def test_untrained_memory_needs_an_explicit_ablation_flag(tiny):
    from methods.hmt import HMT, HMTArgs

    with pytest.raises(ArgumentError, match="must be trained"):
        HMT(tiny, HMTArgs(segment=16, sensory=4), OPTIONS)


def test_training_makes_a_zoo_model_and_resumes_bit_exactly(mirror, tmp_path, monkeypatch):
    from harness import zoo
    from training.memory import MemoryTrainSpec, train_memory

    spec = MemoryTrainSpec(kind="hmt", model="tiny-random-llama", segment=16, sensory=4, memories=4, stage1_steps=3,
                           stage2_steps=3, unroll=3, lora_r=2, save_every=2, learning_rate=1e-3)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "straight"))
    name = train_memory(spec, DataStore(mirror), show_progress=False)
    straight = json.loads((zoo.local_zoo_dir() / name / zoo.RECIPE_FILE).read_text())
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "interrupted"))
    calls = {"n": 0}
    original = torch.optim.AdamW.step

    def crash_on_fifth(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", crash_on_fifth)
    with pytest.raises(KeyboardInterrupt):
        train_memory(spec, DataStore(mirror), show_progress=False)
    monkeypatch.setattr(torch.optim.AdamW, "step", original)
    assert train_memory(spec, DataStore(mirror), show_progress=False) == name
    resumed = json.loads((zoo.local_zoo_dir() / name / zoo.RECIPE_FILE).read_text())
    assert resumed["training"]["final_loss"] == straight["training"]["final_loss"] and resumed["method"] == "hmt"
    assert set(resumed["data"]["books"]).isdisjoint({p.stem for p in (mirror / "pg19" / "test").glob("*.txt")})
    runs = tmp_path / "runs"
    assert cli("run", "--task", "pg19", "--model", name, "--method", "hmt", "--method-arg", "segment=16", "--method-arg", "sensory=4",
               "--method-arg", "memories=4", "--task-arg", "max_tokens=60", "--limit", "1", "--quiet", "--output-dir", runs) == 0
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    assert json.loads((run / "results.json").read_text())["method_settings"]["checkpoint"] == name
    assert cli("run", "--task", "pg19", "--model", name, "--method", "hmt", "--method-arg", "segment=32",
               "--task-arg", "max_tokens=60", "--limit", "1", "--quiet", "--output-dir", runs) == 2  # trained at another L


def test_a_named_recipe_keeps_its_own_zoo_name_and_the_default_digest():
    """--name gives a second recipe its own zoo model; the name is not part of the recipe, so
    models trained before names existed still match their recipe."""
    from harness.errors import ArgumentError
    from training.memory import MemoryTrainSpec

    default = MemoryTrainSpec(kind="hmt")
    named = MemoryTrainSpec(kind="hmt", zoo_name="smollm2-hmt-full")
    assert default.name == "smollm2-135m-instruct-hmt-L256" and named.name == "smollm2-hmt-full"
    assert named.digest() == default.digest() != MemoryTrainSpec(kind="hmt", full=True).digest()
    with pytest.raises(ArgumentError, match="--name must be"):
        MemoryTrainSpec(kind="hmt", zoo_name="../escape")
