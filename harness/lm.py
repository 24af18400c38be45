"""``CausalLM``: scoring and generation with a Hugging Face causal LM, the engine under every method.

Tokenization mirrors lm-evaluation-harness's ``hf`` backend (``_encode_pair``, the
BOS-else-EOS prefix token, rolling windows) so numbers agree with it. Each job lives in its
own module and ``CausalLM`` joins them over one model and one cost counter:

- ``harness.tokenization``: prompts and (context, continuation) pairs to token ids;
- ``harness.batching``: batches under a token budget, padding, the chunked output head;
- ``harness.loglikelihood``: log p(continuation | context), shared contexts packed;
- ``harness.rolling``: rolling-window log-likelihood of long texts (perplexity);
- ``harness.decoding``: batched generation with stop strings, and the pieces a method needs
  to decode by itself (EOS ids, answer cutting, the incremental KV-cached decoder);
- ``harness.vision``: requests that carry images, on an image-text-to-text model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, TypeVar

from harness.api import GenerateRequest, GenerateResult, LoglikelihoodRequest, LoglikelihoodResult
from harness.decoding import Generation
from harness.loglikelihood import LoglikelihoodScoring
from harness.method import Cost
from harness.models import LoadedModel
from harness.remote import RemoteLM
from harness.rolling import RollingScoring
from harness.vision import VisionRequests

R = TypeVar("R")
A = TypeVar("A")


def _split(requests: Sequence[R], with_images: list[bool], text_only: Callable[[list[R]], list[A]],
           images: Callable[[list[R]], list[A]]) -> list[A]:
    """Answer the text-only requests in batches and those with images one by one, in order."""
    plain = [r for r, has in zip(requests, with_images, strict=True) if not has]
    shown = [r for r, has in zip(requests, with_images, strict=True) if has]
    answers = iter(text_only(plain) if plain else []), iter(images(shown) if shown else [])
    return [next(answers[has]) for has in with_images]


class CausalLM(LoglikelihoodScoring, RollingScoring, Generation, VisionRequests):
    """Batched scoring and generation over one loaded model, counting its cost."""

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        with_images = [bool(r.images) for r in requests]
        if not any(with_images):
            return super().loglikelihood(requests)
        return _split(requests, with_images, super().loglikelihood, self.loglikelihood_with_images)

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        with_images = [bool(r.all_images()) for r in requests]
        if not any(with_images):
            return super().generate(requests)
        return _split(requests, with_images, super().generate, self.generate_with_images)


LanguageModel = CausalLM | RemoteLM  # what methods and judges generate and score with


def language_model(loaded: LoadedModel, cost: Cost, batch_size: int | Literal["auto"] = "auto", max_length: int | None = None,
                   seed: int = 0, show_progress: bool = True) -> LanguageModel:
    """Generation and scoring over a loaded model: a ``CausalLM`` over local weights, or a
    ``RemoteLM`` over a model behind an API (which generates and, where its server echoes
    prompt log-probabilities, scores; nothing that needs the weights)."""
    if loaded.remote:
        return RemoteLM(loaded.model, cost, seed, show_progress, max_length or loaded.max_length)
    return CausalLM(loaded, cost, batch_size, max_length, seed, show_progress)


def auxiliary_lm(name: str, like: LoadedModel | None = None, seed: int = 0, device: str | None = None) -> LanguageModel:
    """A second model (a judge, a teacher) as a quiet language model with its own cost, loaded
    like the run's model (``models.load_auxiliary``), or on ``device`` where there is no run's
    model; a model behind an API serves too."""
    from harness import models

    return language_model(models.load_auxiliary(name, like=like, device=device), Cost(), "auto", None, seed, False)
