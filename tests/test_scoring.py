"""The scoring engine agrees with lm-evaluation-harness's hf backend on tiny random models."""

from __future__ import annotations

import pytest

from harness.api import ChatMessage, GenerateRequest, LoglikelihoodRequest, StreamRequest
from harness.lm import CausalLM
from harness.method import Cost

TEXT = (
    "The quick brown fox jumps over the lazy dog. " * 12
    + "Perplexity measures how well a language model predicts a sample of text. " * 8
)
REQUESTS = [
    LoglikelihoodRequest("Question: is the sky blue?\nAnswer:", " yes"),
    LoglikelihoodRequest("Question: is the sky blue?\nAnswer:", " no"),
    LoglikelihoodRequest("Question: is the sky blue?\nAnswer:", " maybe, it depends on the weather"),
    LoglikelihoodRequest("The cat sat on the ", "mat"),
    LoglikelihoodRequest("", "an empty context"),
    LoglikelihoodRequest("A much longer context " * 20, " that ends here"),
]


def _hflm(loaded, max_length):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=1, max_length=max_length)


def _instances(kind, args):
    from lm_eval.api.instance import Instance

    return [Instance(kind, {}, a, i) for i, a in enumerate(args)]


@pytest.mark.parametrize("batch_size", [1, 3, "auto"])
@pytest.mark.parametrize("which", ["tiny", "tiny_gemma3"])
def test_loglikelihood_matches_lm_eval(which, batch_size, request):
    loaded = request.getfixturevalue(which)
    ours = CausalLM(loaded, Cost(), batch_size=batch_size, show_progress=False).loglikelihood(REQUESTS)
    theirs = _hflm(loaded, loaded.max_length).loglikelihood(
        _instances("loglikelihood", [(r.context, r.continuation) for r in REQUESTS]), disable_tqdm=True
    )
    for mine, (logprob, greedy) in zip(ours, theirs, strict=True):
        assert mine.logprob == pytest.approx(logprob, abs=1e-3)
        assert mine.is_greedy == greedy


MANY = [LoglikelihoodRequest("You are in a kitchen. " * 10, f" take the {thing} from the table")
        for thing in ("apple", "red onion", "cookbook", "knife", "yellow bell pepper")] + REQUESTS


def _unpacked(loaded, cost, batch_size=8):
    lm = CausalLM(loaded, cost, batch_size=batch_size, show_progress=False)
    lm.pack_continuations = False
    return lm


@pytest.mark.parametrize("which", ["tiny", "tiny_gemma3"])
def test_continuations_scored_in_bounded_passes_match_one_pass(which, request, monkeypatch):
    """Without packing, many long continuations of one context are scored over copies of its
    cache in passes (memory stays bounded); the numbers must not depend on how the rows were split."""
    import harness.loglikelihood

    loaded = request.getfixturevalue(which)
    whole = _unpacked(loaded, Cost()).loglikelihood(MANY)
    monkeypatch.setattr(harness.loglikelihood, "CONTINUATION_CACHE_TOKENS", 1)  # one row per pass
    cost = Cost()
    split = _unpacked(loaded, cost).loglikelihood(MANY)
    for a, b in zip(whole, split, strict=True):
        assert b.logprob == pytest.approx(a.logprob, abs=1e-4) and b.is_greedy == a.is_greedy and b.n_tokens == a.n_tokens
    assert cost.forward_passes > len({r.context for r in MANY})  # really split into several passes


@pytest.fixture(scope="module")
def tiny_eager(tiny):
    """The tiny llama with eager attention, which adds a float mask instead of taking a boolean one."""
    import copy
    import dataclasses

    model = copy.deepcopy(tiny.model)
    model.set_attn_implementation("eager")
    return dataclasses.replace(tiny, model=model)


@pytest.mark.parametrize("which", ["tiny", "tiny_eager"])
@pytest.mark.parametrize("batch_size", [1, 8])
def test_packed_continuations_match_cache_copies(which, batch_size, request):
    """Continuations packed behind their context under a tree mask score exactly as over copies
    of the context's cache, in one forward pass per batch."""
    loaded = request.getfixturevalue(which)
    reference = _unpacked(loaded, Cost(), batch_size).loglikelihood(MANY)
    cost = Cost()
    lm = CausalLM(loaded, cost, batch_size=batch_size, show_progress=False)
    assert lm.pack_continuations
    packed = lm.loglikelihood(MANY)
    for a, b in zip(reference, packed, strict=True):
        assert b.logprob == pytest.approx(a.logprob, abs=1e-4) and b.is_greedy == a.is_greedy and b.n_tokens == a.n_tokens
    if batch_size == 8:
        assert cost.forward_passes == 1


def test_sliding_window_models_pack_only_within_the_window(tiny_gemma3):
    """A custom mask would override a sliding-window layer's window (16 tokens here), so only
    batches that fit inside it are packed; the rest take the cache-copy path, same numbers."""
    short = [LoglikelihoodRequest("Go", " north"), LoglikelihoodRequest("Go", " south now"), LoglikelihoodRequest("Go", " up")]
    for requests, passes in ((short, 1), (MANY, None)):
        cost = Cost()
        lm = CausalLM(tiny_gemma3, cost, batch_size=8, show_progress=False)
        assert lm.sliding_window == 16
        packed = lm.loglikelihood(requests)
        reference = _unpacked(tiny_gemma3, Cost()).loglikelihood(requests)
        for a, b in zip(reference, packed, strict=True):
            assert b.logprob == pytest.approx(a.logprob, abs=1e-4) and b.is_greedy == a.is_greedy
        if passes:
            assert cost.forward_passes == passes
        else:
            assert cost.forward_passes > 1  # the long contexts were not packed


def test_shared_context_is_run_once(tiny):
    cost = Cost()
    context = "Question: is the sky blue?\nAnswer:"
    requests = [LoglikelihoodRequest(context, "A"), LoglikelihoodRequest(context, "B")]  # one byte token each
    CausalLM(tiny, cost, batch_size="auto", show_progress=False).loglikelihood(requests)
    assert cost.forward_passes == 1  # two single-token continuations, one context pass
    context_tokens = len(tiny.tokenizer.encode(context))
    assert cost.tokens_processed == context_tokens


@pytest.mark.parametrize("which", ["tiny", "tiny_gemma3"])
def test_rolling_matches_lm_eval(which, request):
    loaded = request.getfixturevalue(which)
    texts = [TEXT, TEXT[:300], "short"]
    ours = CausalLM(loaded, Cost(), show_progress=False).score_stream([StreamRequest(t) for t in texts])
    theirs = _hflm(loaded, loaded.max_length).loglikelihood_rolling(_instances("loglikelihood_rolling", [(t,) for t in texts]), disable_tqdm=True)
    for mine, logprob in zip(ours, theirs, strict=True):
        assert mine.logprob == pytest.approx(logprob, rel=1e-5)
    assert ours[0].n_windows > 1  # the long text really was split


@pytest.mark.parametrize("window, stride", [(64, 64), (64, 16), (100, 1), (37, 20)])
def test_windows_score_every_token_once_within_the_window(tiny, window, stride):
    lm = CausalLM(tiny, Cost(), show_progress=False)
    text_tokens = tiny.tokenizer.encode(TEXT, add_special_tokens=False)
    windows = lm.windows(StreamRequest(TEXT, window=window, stride=stride))
    assert [t for w in windows for t in w.targets] == text_tokens
    assert all(len(w.tokens) <= window for w in windows)
    assert all(len(w.tokens) >= len(w.targets) for w in windows)
    later = windows[1:-1]
    assert all(len(w.targets) == stride for w in later)
    # each later window keeps window - stride tokens of context (the sequence is long enough)
    assert all(len(w.tokens) == window for w in later)


def test_stream_context_is_conditioned_on_but_not_scored(tiny):
    lm = CausalLM(tiny, Cost(), show_progress=False)
    alone, with_context = lm.score_stream([StreamRequest("the lazy dog"), StreamRequest("the lazy dog", context=TEXT, window=128, stride=32)])
    assert alone.n_tokens == with_context.n_tokens == len(tiny.tokenizer.encode("the lazy dog", add_special_tokens=False))
    assert alone.logprob != with_context.logprob


def test_smaller_stride_gives_more_context(tiny):
    lm = CausalLM(tiny, Cost(), show_progress=False)
    disjoint, overlapping = lm.score_stream([StreamRequest(TEXT, window=64), StreamRequest(TEXT, window=64, stride=16)])
    assert disjoint.n_tokens == overlapping.n_tokens
    assert overlapping.n_windows > disjoint.n_windows


def test_greedy_generation_is_deterministic_and_stops(tiny):
    lm = CausalLM(tiny, Cost(), show_progress=False)
    requests = [GenerateRequest("Once upon a time", max_new_tokens=12), GenerateRequest("Hello", max_new_tokens=5)]
    first, second = lm.generate(requests), lm.generate(requests)
    assert first == second
    assert first[0].n_tokens <= 12 and first[1].n_tokens <= 5
    stop = first[0].text[2:4] if len(first[0].text) > 4 else None
    if stop:
        cut = lm.generate([GenerateRequest("Once upon a time", max_new_tokens=12, until=(stop,))])[0]
        assert stop not in cut.text and cut.finish_reason == "stop"


def test_chat_template_is_applied(tiny):
    lm = CausalLM(tiny, Cost(), show_progress=False)
    rendered = lm.render_chat([ChatMessage("user", "hi")])
    assert rendered == "<s>user\nhi</s>\n<s>assistant\n"
    plain, chat = lm.loglikelihood([LoglikelihoodRequest("hi", " there"), LoglikelihoodRequest("hi", " there", chat=True)])
    assert plain.logprob != chat.logprob


CONTINUATIONS = [" yes", "open door", "take the red onion from the counter", "  go  north", ".", "café au lait", "\n> look", "a"]


def _chat_context(lm):
    messages = [ChatMessage("system", "You play a game. Goal: cook a meal."), ChatMessage("user", "You are in a kitchen."),
                ChatMessage("assistant", "look"), ChatMessage("user", "There is a fridge here. Some text ends with space ")]
    return lm.render_chat(messages)


@pytest.mark.parametrize("which", ["tiny", "smollm2"])
def test_shared_context_pairs_encode_as_lm_eval_does(which, request):
    """Continuations of a context with special tokens are encoded from its last special token
    on; the tokens must equal lm-eval's ``_encode_pair`` (whole minus context, both in full)."""
    loaded = request.getfixturevalue(which)
    lm = CausalLM(loaded, Cost(), show_progress=False)
    context = _chat_context(lm)
    stem = context.rstrip()
    moved = context[len(stem):]
    full_context = lm.encode(stem)
    assert lm._continuations_after_last_special(stem, full_context, [moved + c for c in CONTINUATIONS]) is not None  # the shortcut ran
    pairs = lm.encode_pairs([(context, c) for c in CONTINUATIONS] + [("plain text, no special token ", c) for c in CONTINUATIONS])
    for (context_tokens, tail), (ctx, continuation) in zip(pairs, [(context, c) for c in CONTINUATIONS]
                                                          + [("plain text, no special token ", c) for c in CONTINUATIONS], strict=True):
        c_stem = ctx.rstrip()
        whole = lm.encode(c_stem + ctx[len(c_stem):] + continuation)
        assert context_tokens == lm.encode(c_stem)
        assert tail == whole[len(context_tokens):]
