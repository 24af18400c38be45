"""``math-llava``: Math-LLaVA's MathVista evaluation protocol (Shi et al. 2024; PAPERS.md §2;
HZQ950419/Math-LLaVA ``evaluation_mathvista/response.py`` and ``llava/eval/run_llava.py``) as
an adapter over any vision-language model.

Each request's query (MathVista's zero-shot ``query.json`` text, as ``response.py`` reads it)
goes into LLaVA's conversation template, the image token first in the user turn
(``mm_use_im_start_end`` off): ``llava_v1`` (default; the template its fine-tuning used, as
``vicuna_v1``) reads ``"<system> USER: <image>\\n{query} ASSISTANT:"``. Images are padded to a
square with the image processor's mean colour (``image_aspect_ratio=pad``). Decoding samples at
temperature 0.2 (no top-p, one beam), 512 new tokens, stopping at the template's separator.
``response.py`` picks the template from the checkpoint's folder name, so the released folder
(``Math-LLaVA``) would get ``llava_v0``; ``conv_mode=llava_v0`` reproduces that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from harness.api import GenerateRequest, GenerateResult
from harness.method import register_method
from methods.base import BaseMethod, check_max_length

# llava/conversation.py: (system, user role, assistant role, separator after the user turn, stop)
TEMPLATES = {
    "llava_v1": ("A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
                 "detailed, and polite answers to the human's questions.", "USER", "ASSISTANT", " ", "</s>"),
    "vicuna_v1": ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
                  "detailed, and polite answers to the user's questions.", "USER", "ASSISTANT", " ", "</s>"),
    "llava_v0": ("A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
                 "detailed, and polite answers to the human's questions.", "Human", "Assistant", "###", "###"),
}


@dataclass(frozen=True)
class MathLlavaArgs:
    conv_mode: Literal["llava_v1", "vicuna_v1", "llava_v0"] = "llava_v1"  # LLaVA conversation template
    temperature: float = 0.2  # response.py's sampling temperature
    max_new_tokens: int = 512  # response.py's bound
    max_length: int | None = None  # context length used; default: the model's own

    def __post_init__(self) -> None:
        if self.temperature < 0 or self.max_new_tokens < 1:
            raise ValueError("temperature must be 0 or more and max_new_tokens positive")
        check_max_length(self.max_length)


def render(query: str, conv_mode: str, image_token: str, n_images: int) -> str:
    """The conversation prompt ``run_llava.py`` builds (``conv.get_prompt()``)."""
    system, user, assistant, separator, _ = TEMPLATES[conv_mode]
    content = (image_token + "\n") * n_images + query
    if conv_mode == "llava_v0":
        return f"{system}###{user}: {content}###{assistant}:"
    return f"{system}{separator}{user}: {content}{separator}{assistant}:"


def pad_to_square(image: Any, colour: tuple[int, int, int]) -> Any:
    """``llava.mm_utils.expand2square``: the image centred on a square of ``colour``."""
    from PIL import Image

    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    square = Image.new(image.mode, (side, side), colour)
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    return square


@register_method("math-llava")
class MathLlavaMethod(BaseMethod):
    """Math-LLaVA's evaluation protocol: LLaVA's conversation template, padded images, T 0.2, 512 tokens."""

    Args = MathLlavaArgs
    runs_remote = False  # it places the image token in its own template

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        return self.lm.generate([self._adapt(r) for r in requests])

    def _adapt(self, request: GenerateRequest) -> GenerateRequest:
        images = request.all_images()
        query = request.prompt if isinstance(request.prompt, str) else "\n".join(m.content for m in request.prompt if m.role == "user")
        processor = self.loaded.processor
        token = processor.image_token if processor is not None else "<image>"
        if processor is not None and images:
            mean = getattr(processor.image_processor, "image_mean", (0.5, 0.5, 0.5))
            images = tuple(pad_to_square(image, tuple(int(255 * m) for m in mean)) for image in images)
        prompt = render(query, self.args.conv_mode, token, len(images))
        return GenerateRequest(prompt, self.args.max_new_tokens, (TEMPLATES[self.args.conv_mode][4],), self.args.temperature,
                               chat=False, images=images)

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"conv_mode": self.args.conv_mode, "temperature": self.args.temperature,
                                     "max_new_tokens": self.args.max_new_tokens, "image_aspect_ratio": "pad"}
