"""Feature attribution methods, the local explanations of the explainability survey (Zhao et
al., PAPERS.md §11), each a method providing ``attribute``: the model classifies a text
zero-shot by the log-probability of label words (``harness.attribution``), and the method
scores every input word for the probability of the explained label.

Registered techniques (one entry each):
- ``saliency``: |∂p/∂e| of each input token's embedding, the L2 norm over its dimensions
  (captum ``Saliency``; Simonyan et al. 2014).
- ``input-x-gradient``: e·∂p/∂e summed over dimensions (captum ``InputXGradient``).
- ``integrated-gradients``: captum ``IntegratedGradients`` from a baseline (``baseline=zero``
  embeddings, or ``pad``: the pad token's embedding) in ``steps`` steps (Gauss-Legendre, captum's
  default), summed over dimensions; defaults 50 steps, zero baseline. Each explanation records
  captum's convergence delta (how far the scores' sum is from p(input) − p(baseline)).
- ``occlusion``: captum ``Occlusion``, each token's embedding replaced by zeros, the drop in p.
- ``leave-one-out``: each word deleted from the text, the drop in p (one pass per word).
- ``lime``: captum ``Lime`` over words (a removed word is deleted from the text), ``samples``
  perturbations (default 200, each word kept with probability 1/2), with the ``lime`` package's
  text settings: a Ridge surrogate (α 1) and the exponential kernel on cosine distance of width
  0.25 (lime's width 25 on distances ×100). Captum's default Lasso (α 0.01) zeroes every word
  when p moves by only a few hundredths, as it does on small models. Seeded.
- ``kernel-shap``: captum ``KernelShap`` over words, ``samples`` coalitions (default 200); seeded.
- ``attention``: the last layer's attention from the prompt's last token (where the label is
  predicted) to each input token, heads averaged.
- ``attention-rollout``: Abnar & Zuidema (2020): per layer the head-averaged attention plus the
  identity, rows renormalised, multiplied through the layers; the last token's row.
- ``random``: uniform random scores, seeded by the run seed and the words: the floor every
  real method must beat.
Token scores become word scores by summing a word's tokens. Each explanation records its cost:
forward and backward passes and seconds.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from harness.api import AttributeRequest, AttributeResult, Capability
from harness.attribution import EncodedInput, LabelClassifier, word_scores
from harness.method import Method, MethodOptions, register_method
from harness.models import LoadedModel


@dataclass(frozen=True)
class GradientArgs:
    pass


@dataclass(frozen=True)
class IntegratedGradientsArgs:
    steps: int = 50  # interpolation steps from the baseline to the input
    baseline: Literal["zero", "pad"] = "zero"  # zero embeddings, or the pad token's embedding at every input position

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError("steps must be at least 1")


@dataclass(frozen=True)
class SamplingArgs:
    samples: int = 200  # perturbed inputs the surrogate is fitted on

    def __post_init__(self) -> None:
        if self.samples < 2:
            raise ValueError("samples must be at least 2")


class AttributionMethod(Method):
    """Classifies by label words; ``explain_tokens`` or ``explain_words`` gives the scores."""

    provides = frozenset({Capability.ATTRIBUTE})
    granularity: ClassVar[Literal["token", "word"]] = "token"

    def __init__(self, model: LoadedModel, args: Any, options: MethodOptions) -> None:
        super().__init__(model, args, options)
        self.classifier = LabelClassifier(model, self.cost)
        self.model = model.model
        self.noted: dict[str, Any] = {}  # what the last explanation adds to its record (IG's convergence delta)

    def attribute(self, requests: Sequence[AttributeRequest]) -> list[AttributeResult]:
        encoded = [self.classifier.encode(r) for r in requests]
        probabilities = self.classifier.probabilities(encoded)
        results = []
        for request, item, probs in zip(requests, encoded, probabilities, strict=True):
            target = request.target if request.target is not None else max(range(len(probs)), key=probs.__getitem__)
            if not request.explain:
                results.append(AttributeResult(tuple(probs), target))
                continue
            before = self.cost.as_dict()
            began = time.perf_counter()
            if self.granularity == "token":
                tokens = [float(s) for s in self.explain_tokens(request, item, target)]
                words = word_scores(tokens, item.token_words, item.n_words)
            else:
                tokens, words = [], [float(s) for s in self.explain_words(request, item, target)]
            seconds = time.perf_counter() - began
            after = self.cost.as_dict()
            info = {"seconds": seconds, "forward_passes": after["forward_passes"] - before["forward_passes"],
                    "backward_passes": after.get("backward_passes", 0) - before.get("backward_passes", 0), **self.noted}
            self.noted = {}
            self.cost.count("explanations")
            results.append(AttributeResult(tuple(probs), target, tuple(words), tuple(tokens), item.token_words, info))
        self.cost.model_calls += len(requests)
        return results

    def explain_tokens(self, request: AttributeRequest, item: EncodedInput, target: int) -> Sequence[float]:
        raise NotImplementedError

    def explain_words(self, request: AttributeRequest, item: EncodedInput, target: int) -> Sequence[float]:
        raise NotImplementedError

    def seed_for(self, request: AttributeRequest) -> int:
        digest = hashlib.sha256(repr((self.options.seed, self.name, request.words)).encode()).digest()
        return int.from_bytes(digest[:8], "little")

    def backward(self, count: int = 1) -> None:
        self.cost.count("backward_passes", count)

    def describe(self) -> dict[str, Any]:
        return {"granularity": self.granularity, "word_score": "sum of the word's token scores" if self.granularity == "token"
                else "scored per word directly"}


class CaptumGradientMethod(AttributionMethod):
    """A captum gradient attribution over the input tokens' embeddings."""

    def _gradient_input(self, item: EncodedInput) -> torch.Tensor:
        return self.classifier.input_embeddings(item).requires_grad_(True)


@register_method("saliency")
class SaliencyMethod(CaptumGradientMethod):
    """Gradient saliency: the L2 norm of dp/d(embedding) per input token (captum Saliency)."""

    Args = GradientArgs

    def explain_tokens(self, request: AttributeRequest, item: EncodedInput, target: int) -> Sequence[float]:
        from captum.attr import Saliency

        grads = Saliency(self.classifier.target_function(item, target)).attribute(self._gradient_input(item), abs=True)
        self.backward()
        return grads[0].norm(dim=-1).tolist()


@register_method("input-x-gradient")
class InputXGradientMethod(CaptumGradientMethod):
    """Input x gradient, summed over embedding dimensions (captum InputXGradient)."""

    Args = GradientArgs

    def explain_tokens(self, request: AttributeRequest, item: EncodedInput, target: int) -> Sequence[float]:
        from captum.attr import InputXGradient

        scores = InputXGradient(self.classifier.target_function(item, target)).attribute(self._gradient_input(item))
        self.backward()
        return scores[0].sum(dim=-1).tolist()


@register_method("integrated-gradients")
class IntegratedGradientsMethod(CaptumGradientMethod):
    """Integrated gradients from a zero (or pad) embedding baseline (captum IntegratedGradients)."""

    Args = IntegratedGradientsArgs

    def explain_tokens(self, request: AttributeRequest, item: EncodedInput, target: int) -> Sequence[float]:
        from captum.attr import IntegratedGradients

        inputs = self._gradient_input(item)
        if self.args.baseline == "pad":
            pad = self.loaded.tokenizer.pad_token_id
            baseline = self.classifier.embedding(torch.full((1, inputs.shape[1]), pad, device=inputs.device)).detach()
        else:
            baseline = torch.zeros_like(inputs)
        internal = self.classifier.inputs_per_batch(item)
        scores, delta = IntegratedGradients(self.classifier.target_function(item, target)).attribute(
            inputs, baselines=baseline, n_steps=self.args.steps, internal_batch_size=internal, return_convergence_delta=True)
        self.backward(-(-self.args.steps // internal))
        # completeness error: sum of scores - (p(input) - p(baseline)); large when steps are too few
        self.noted = {"convergence_delta": float(delta.detach()[0])}
        return scores[0].sum(dim=-1).tolist()

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"steps": self.args.steps, "baseline": self.args.baseline}


@register_method("occlusion")
class OcclusionMethod(AttributionMethod):
    """Occlusion: each input token's embedding zeroed, the drop in p (captum Occlusion)."""

    Args = GradientArgs

    @torch.no_grad()
    def explain_tokens(self, request: AttributeRequest, item: EncodedInput, target: int) -> Sequence[float]:
        from captum.attr import Occlusion

        inputs = self.classifier.input_embeddings(item)
        scores = Occlusion(self.classifier.target_function(item, target)).attribute(
            inputs, sliding_window_shapes=(1, inputs.shape[2]), baselines=0.0,
            perturbations_per_eval=self.classifier.inputs_per_batch(item))
        return scores[0, :, 0].tolist()  # every dimension of a token carries the token's drop


@register_method("leave-one-out")
class LeaveOneOutMethod(AttributionMethod):
    """Leave-one-out: each word deleted from the text, the drop in p."""

    Args = GradientArgs
    granularity = "word"

    @torch.no_grad()
    def explain_words(self, request: AttributeRequest, item: EncodedInput, target: int) -> Sequence[float]:
        n = len(request.words)
        probability = self.classifier.words_function(request, target)
        full = float(probability(torch.ones((1, n)))[0])
        masks = torch.ones((n, n)) - torch.eye(n)
        return (full - probability(masks)).tolist()


class CaptumSurrogateMethod(AttributionMethod):
    """A captum perturbation-surrogate method over words (a removed word is deleted)."""

    Args = SamplingArgs
    granularity = "word"
    technique: ClassVar[str] = ""

    @torch.no_grad()
    def explain_words(self, request: AttributeRequest, item: EncodedInput, target: int) -> Sequence[float]:
        from captum._utils.models.linear_model import SkLearnRidge
        from captum.attr import KernelShap, Lime
        from captum.attr._core.lime import get_exp_kernel_similarity_function

        n = len(request.words)
        forward = self.classifier.words_function(request, target)
        explainer = Lime(forward, interpretable_model=SkLearnRidge(alpha=1.0),
                         similarity_func=get_exp_kernel_similarity_function("cosine", kernel_width=0.25)) \
            if self.technique == "lime" else KernelShap(forward)
        state = torch.random.get_rng_state()
        torch.manual_seed(self.seed_for(request) % 2**63)  # captum samples with the global generator
        try:
            scores = explainer.attribute(torch.ones((1, n)), baselines=torch.zeros((1, n)), n_samples=self.args.samples,
                                         perturbations_per_eval=self.classifier.batch_rows)
        finally:
            torch.random.set_rng_state(state)
        return scores[0].tolist()

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"samples": self.args.samples}


@register_method("lime")
class LimeMethod(CaptumSurrogateMethod):
    """LIME over words (captum Lime with the lime package's Ridge surrogate and cosine kernel)."""

    technique = "lime"


@register_method("kernel-shap")
class KernelShapMethod(CaptumSurrogateMethod):
    """KernelSHAP over words (captum KernelShap)."""

    technique = "kernel-shap"


def _input_columns(item: EncodedInput) -> slice:
    return slice(len(item.before), len(item.before) + len(item.tokens))


@register_method("attention")
class AttentionMethod(AttributionMethod):
    """Last-layer attention from the label-predicting position to each input token, heads averaged."""

    Args = GradientArgs

    def explain_tokens(self, request: AttributeRequest, item: EncodedInput, target: int) -> Sequence[float]:
        last = self.classifier.attentions(item)[-1].mean(dim=0)
        return last[-1, _input_columns(item)].tolist()


@register_method("attention-rollout")
class AttentionRolloutMethod(AttributionMethod):
    """Attention rollout (Abnar & Zuidema 2020): (A + I) renormalised, multiplied through the layers."""

    Args = GradientArgs

    def explain_tokens(self, request: AttributeRequest, item: EncodedInput, target: int) -> Sequence[float]:
        rollout = None
        for layer in self.classifier.attentions(item):
            mixed = layer.mean(dim=0) + torch.eye(layer.shape[-1])
            mixed = mixed / mixed.sum(dim=-1, keepdim=True)
            rollout = mixed if rollout is None else mixed @ rollout
        assert rollout is not None
        return rollout[-1, _input_columns(item)].tolist()


@register_method("random")
class RandomMethod(AttributionMethod):
    """Random word scores (seeded): the floor every attribution method must beat."""

    Args = GradientArgs
    granularity = "word"

    def explain_words(self, request: AttributeRequest, item: EncodedInput, target: int) -> Sequence[float]:
        generator = torch.Generator().manual_seed(self.seed_for(request) % 2**63)
        return torch.rand(len(request.words), generator=generator).tolist()
