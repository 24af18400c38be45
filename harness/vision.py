"""Requests with images, on an image-text-to-text model (LLaVA family) through its processor.

A message's images go before its text, as content parts of the model's chat template (or, for
a bare prompt, as the processor's image tokens before the text, unless the prompt already holds
one image token per image where it wants them). The processor expands each
image token into the vision tower's patch positions and returns the pixel values beside the
token ids; the model reads both. Requests with images run one at a time: each carries its own
pixel values and expanded prompt, and the zoo's vision models are small.

- ``loglikelihood``: log p(continuation | images, context), tokenized as lm-eval does (trailing
  spaces of the context move to the continuation), from one forward pass over the whole text.
- ``generate``: ``model.generate`` with the pixel values, greedy or seeded sampling, cut at
  EOS and stop strings like text generation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from transformers import StoppingCriteriaList

from harness.api import ChatMessage, GenerateRequest, GenerateResult, LoglikelihoodRequest, LoglikelihoodResult
from harness.batching import BatchedModel
from harness.decoding import StopStrings, cut_answer
from harness.errors import IncompatibleError


def chat_parts(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """Messages in the processor's chat format: each message's images, then its text."""
    return [{"role": m.role, "content": [{"type": "image"} for _ in m.images] + [{"type": "text", "text": m.content}]}
            for m in messages]


class VisionRequests(BatchedModel):
    """Loglikelihood and generation for requests that carry images."""

    def _processor(self) -> Any:
        if self.loaded.processor is None:
            raise IncompatibleError(f"model '{self.loaded.identity.name}' ({self.loaded.kind}) cannot read images: "
                                    "use an image-text-to-text model")
        return self.loaded.processor

    def _render(self, messages: Sequence[ChatMessage]) -> str:
        processor = self._processor()
        final_assistant = bool(messages) and messages[-1].role == "assistant"
        return processor.apply_chat_template(chat_parts(messages), tokenize=False, add_generation_prompt=not final_assistant,
                                             continue_final_message=final_assistant)

    def _text_with_images(self, text: str, images: Sequence[Any], chat: bool) -> str:
        if chat and self.loaded.has_chat_template:
            return self._render([ChatMessage("user", text, tuple(images))])
        token = self._processor().image_token
        if text.count(token) == len(images):
            return text  # a prompt that places its own image tokens (a method's conversation template) keeps them
        return token * len(images) + text

    def _inputs(self, text: str, images: Sequence[Any]) -> dict[str, torch.Tensor]:
        encoded = self._processor()(text=text, images=list(images) or None, return_tensors="pt")
        return {key: value.to(self.device) for key, value in encoded.items()}

    @torch.inference_mode()
    def loglikelihood_with_images(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        results = []
        with self.progress(len(requests), "loglikelihood (images)") as bar:
            for request in requests:
                context = self._text_with_images(request.context, request.images, request.chat)
                continuation = request.continuation
                spaces = len(context) - len(context.rstrip())
                if spaces:  # lm-eval's _encode_pair: trailing context spaces belong to the continuation
                    context, continuation = context[:-spaces], context[-spaces:] + continuation
                context_ids = self._inputs(context, request.images)["input_ids"][0]
                full = self._inputs(context + continuation, request.images)
                ids = full["input_ids"][0]
                if len(ids) <= len(context_ids) or not torch.equal(ids[: len(context_ids)], context_ids):
                    raise ValueError(f"continuation {request.continuation!r} does not extend the context's tokens")
                logits = self.model(**full).logits[0].float()
                logprobs = F.log_softmax(logits[len(context_ids) - 1 : -1], dim=-1)
                targets = ids[len(context_ids):]
                picked = logprobs.gather(-1, targets[:, None])[:, 0]
                results.append(LoglikelihoodResult(float(picked.sum()), bool((logprobs.argmax(-1) == targets).all()), len(targets)))
                self.cost.forward_passes += 1
                self.cost.tokens_processed += len(ids)
                self.cost.tokens_scored += len(targets)
                bar.update(1)
        self.cost.model_calls += len(requests)
        return results

    @torch.inference_mode()
    def generate_with_images(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        results = []
        with self.progress(len(requests), "generate (images)") as bar:
            for request in requests:
                images = request.all_images()
                if isinstance(request.prompt, tuple):
                    text = self._render(request.prompt)
                else:
                    text = self._text_with_images(request.prompt, images, request.chat)
                inputs = self._inputs(text, images)
                width = inputs["input_ids"].shape[1]
                sampling = request.temperature > 0
                kwargs: dict[str, Any] = dict(max_new_tokens=request.max_new_tokens, do_sample=sampling,
                                              pad_token_id=self.tokenizer.pad_token_id)
                if sampling:
                    # Seeded from the run seed and the prompt, so a resumed run draws the same sample.
                    digest = hashlib.sha256(repr((self.seed, inputs["input_ids"].tolist())).encode()).digest()
                    torch.manual_seed(int.from_bytes(digest[:8], "little"))
                    kwargs.update(temperature=request.temperature, top_p=request.top_p)
                    if request.top_k is not None:
                        kwargs["top_k"] = request.top_k
                else:
                    kwargs.update(temperature=None, top_p=None, top_k=None)
                if request.no_repeat_ngram_size:
                    kwargs["no_repeat_ngram_size"] = request.no_repeat_ngram_size
                if request.until:
                    kwargs["stopping_criteria"] = StoppingCriteriaList([StopStrings(request.until, width, 1, self.tokenizer)])
                new = self.model.generate(**inputs, **kwargs)[0, width:].tolist()
                result = cut_answer(self.loaded, new, request.until)
                self.cost.forward_passes += max(1, len(new))
                self.cost.tokens_processed += width + result.n_tokens
                self.cost.tokens_generated += result.n_tokens
                results.append(result)
                bar.update(1)
        self.cost.model_calls += len(requests)
        return results
