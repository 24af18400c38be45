"""CleanGen on tiny random models: exactness of the cached decoder against a cache-free
reimplementation, the reference-greedy limit, the closed tail gap, cross-tokenizer mode, and
the run-level wiring (counters, derived ATGR, the ubench default command)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from harness import models
from harness.api import GenerateRequest
from harness.method import MethodOptions
from methods.cleangen import CleanGenArgs, CleanGenMethod

OPTIONS = MethodOptions(batch_size=1, seed=0, show_progress=False)


def _variant(tmp: Path, name: str, change) -> str:
    """A copy of tiny-random-llama with ``change(model)`` applied to its weights."""
    resolved = models.resolve("tiny-random-llama")
    loaded = models.load(resolved)
    with torch.no_grad():
        change(loaded.model)
    folder = tmp / name
    shutil.copytree(resolved.path, folder)
    loaded.model.save_pretrained(folder)
    return str(folder)


def _perturbed(model, scale: float = 4.0, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    for parameter in model.parameters():
        parameter.add_(torch.randn(parameter.shape, generator=generator) * scale * parameter.std())


def _backdoor(model, token: int) -> None:
    """The simplest backdoor: the target always puts nearly all its mass on ``token``."""
    head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight)
        head.bias.zero_()
        head.bias[token] = 100.0
    model.lm_head = head


@pytest.fixture(scope="module")
def perturbed(tmp_path_factory) -> str:
    return _variant(tmp_path_factory.mktemp("cleangen-models"), "perturbed", _perturbed)


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> str:
    """The unpatched tiny model under another name: the clean reference."""
    return _variant(tmp_path_factory.mktemp("cleangen-clean"), "clean", lambda model: None)


def _method(target: str, reference: str, backdoor: bool = False, **args) -> CleanGenMethod:
    loaded = models.load(models.resolve(target))
    if backdoor:
        (x,) = loaded.tokenizer.encode("X", add_special_tokens=False)
        _backdoor(loaded.model, x)
    return CleanGenMethod(loaded, CleanGenArgs(reference=reference, **args), OPTIONS)


def _naive(method: CleanGenMethod, prompt: list[int], max_new: int, check_tail: bool = True) -> list[int]:
    """CleanGen without caches: every distribution recomputed from the full sequence."""
    alpha, k = method.args.alpha, method.args.k
    eos = set(method.target_lm.eos_ids())

    def dist(model, ids):
        with torch.no_grad():
            return torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)

    out: list[int] = []
    while len(out) < max_new:
        pending = []
        while len(pending) < k and len(out) + len(pending) < max_new:
            d = dist(method.loaded.model, prompt + out + [t for t, _ in pending])
            token = int(d.argmax())
            pending.append((token, float(d[token])))
            if token in eos:
                break
        end = pending[-1][0] in eos or len(out) + len(pending) >= max_new
        if len(pending) < k and end and not check_tail:
            return out + [t for t, _ in pending]
        for i, (token, lp) in enumerate(pending):
            ref = dist(method.reference.model, prompt + out + [t for t, _ in pending[:i]])
            if lp - float(ref[token]) >= math.log(alpha):
                out += [t for t, _ in pending[:i]] + [int(ref.argmax())]
                break
        else:
            out += [t for t, _ in pending]
            if end:
                return out
            continue
        if out[-1] in eos:
            return out
    return out


@pytest.mark.parametrize("alpha", [1.5, 3.0, 20.0])
def test_cached_decoder_equals_cache_free_algorithm(perturbed, alpha):
    method = _method("tiny-random-llama", perturbed, alpha=alpha, k=4)
    prompt = method.target_lm.encode("Hello there, how are")
    tokens, stats = method._decode_shared(GenerateRequest("Hello there, how are", max_new_tokens=23), prompt)
    assert tokens == _naive(method, prompt, 23)
    assert stats["checked"] >= len(tokens) - stats["replaced"]
    if alpha == 1.5:
        assert stats["replaced"] > 0  # the comparison exercised replacements, not only acceptances


def test_always_suspicious_target_yields_the_reference_greedy_output(clean):
    method = _method("tiny-random-llama", clean, backdoor=True, alpha=20.0, k=4)
    request = GenerateRequest("The answer is", max_new_tokens=12)
    assert method.target_lm.generate([request])[0].text == "X" * 12  # the backdoor
    defended = method.generate([request])[0]
    reference_greedy = method.reference_lm.generate([request])[0]
    assert defended.text == reference_greedy.text and "X" not in defended.text
    assert defended.info["replaced"] == defended.n_tokens  # every token came from the reference


def test_tail_is_checked_unlike_the_official_code(clean):
    request = GenerateRequest("The answer is", max_new_tokens=6)  # a chunk of 4 + a tail of 2
    closed = _method("tiny-random-llama", clean, backdoor=True, k=4).generate([request])[0]
    official = _method("tiny-random-llama", clean, backdoor=True, k=4, check_tail=False).generate([request])[0]
    assert "X" not in closed.text and closed.n_tokens == 6 and closed.info["replaced"] == 6
    # Unchecked tails: after each replacement the chunk restarts, so the official code lets
    # the target's tokens through once fewer than k remain in the budget.
    assert "X" not in official.text[:3] and official.text[3:] == "XXX" and official.info["replaced"] == 3, official


def test_identical_reference_changes_nothing(clean):
    method = _method("tiny-random-llama", clean)
    request = GenerateRequest("Once upon a time", max_new_tokens=16)
    assert method.generate([request])[0].text == method.target_lm.generate([request])[0].text
    assert method.cost.counters["cleangen_tokens_replaced"] == 0


def test_cross_tokenizer_mode_runs_and_vetoes(tmp_path):
    """A target with one extra vocabulary entry differs in tokenizer; the reference scores text."""
    folder = Path(models.resolve("tiny-random-llama").path)
    other = tmp_path / "other-tokenizer"
    shutil.copytree(folder, other)
    tokenizer_json = json.loads((other / "tokenizer.json").read_text())
    vocab = tokenizer_json["model"]["vocab"]
    vocab["<extra>"] = max(vocab.values()) + 1
    (other / "tokenizer.json").write_text(json.dumps(tokenizer_json))
    method = _method(str(other), "tiny-random-llama", backdoor=True, k=4)
    assert method.cross_tokenizer
    request = GenerateRequest("The answer is", max_new_tokens=10)
    assert method.target_lm.generate([request])[0].text == "X" * 10
    result = method.generate([request])[0]
    assert result.info["replaced"] > 0 and "X" not in result.text


@pytest.mark.parametrize("keep", [10, 30])  # inside the 16-token sliding window, and past it
def test_stream_truncation_matches_a_fresh_stream_with_sliding_windows(tiny_gemma3, keep):
    from harness.decoding import IncrementalDecoder
    from harness.method import Cost

    tokens = list(range(5, 45))
    stream = IncrementalDecoder(tiny_gemma3, Cost(), "passes")
    stream.feed(tokens)
    stream.truncate(keep)
    after = stream.feed([7, 8])
    fresh = IncrementalDecoder(tiny_gemma3, Cost(), "passes")
    expected = fresh.feed(tokens[:keep] + [7, 8])[-2:]
    assert stream.ids == tokens[:keep] + [7, 8]
    assert torch.allclose(after, expected, atol=1e-5)
    synced = stream.sync(tokens[:keep] + [9])  # longest common prefix reused, last token re-fed
    assert torch.allclose(synced[-1], fresh.sync(tokens[:keep] + [9])[-1], atol=1e-5)


@pytest.mark.integration
def test_design_card_command_ubench_cleangen_on_the_embedded_model(tmp_path, capsys):
    """`harness run --task ubench --method cleangen` with no other argument (2 items here)."""
    from conftest import cli

    runs = tmp_path / "runs"
    assert cli("run", "--task", "ubench", "--method", "cleangen", "--limit", "2", "--quiet", "--output-dir", runs) == 0
    err = capsys.readouterr().err
    assert "UBench runs in mode=generate" in err
    assert "cleangen: reference = gemma3-270m ('smollm2-135m-instruct' is the clean embedded model" in err
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    results = json.loads((run / "results.json").read_text())
    assert results["task"]["config"]["mode"] == "generate" and results["n_samples"] == 2
    settings = results["method_settings"]
    assert settings["reference"] == "gemma3-270m" and settings["mode"] == "cross-tokenizer"
    cost = results["cost"]
    assert cost["reference_forward_passes"] > 0 and cost["cleangen_tokens_checked"] >= cost["tokens_generated"]
    assert 0 <= cost["cleangen_replacement_rate"] <= 1 and cost["cleangen_atgr_estimate"] > 0
