"""mDPO's condition for text-only models (PAPERS.md §9): a passage the answer depends on, in
the place of the image; its corruption, in the place of the image's random crop, keeps a
contiguous 1–20% of the passage's words (the crop keeps 1–20% of the area)."""

from __future__ import annotations

import random

SPAN_SHARE = (0.01, 0.2)  # passage words kept by the corruption
PLACEHOLDER = "{context}"


def example_rng(seed: int, example: int | str) -> random.Random:
    """The corruption's generator for one example: the seed and the example alone."""
    return random.Random(f"mdpo-corruption/{seed}/{example}")


def corrupt_passage(passage: str, rng: random.Random) -> str:
    """A random contiguous span keeping 1-20% of the passage's words (at least one)."""
    words = passage.split()
    if not words:
        return passage
    keep = max(1, round(len(words) * rng.uniform(*SPAN_SHARE)))
    start = rng.randrange(len(words) - keep + 1)
    return " ".join(words[start : start + keep])


def user_turn(passage: str, prompt: str) -> str:
    """The user's message: the prompt with the passage at its ``{context}``, or the passage, a
    blank line and the prompt (the prompt alone when the passage is blanked)."""
    if PLACEHOLDER in prompt:
        return prompt.replace(PLACEHOLDER, passage)
    return f"{passage}\n\n{prompt}" if passage else prompt
