"""``offload``: Endor's baseline (Joo et al., PAPERS.md §10): the same offloaded inference as
``endor`` (per-layer reads from disk or host memory, prefetch, free after use) over the same
weights stored dense, so the difference between the two is the bytes moved and the
decompression, nothing else. Defaults as ``endor``.
"""

from __future__ import annotations

from typing import ClassVar

from harness.method import register_method
from methods.bitmap_store import Encoding
from methods.endor import EndorMethod


@register_method("offload")
class OffloadMethod(EndorMethod):
    """Offloaded inference over dense weights, read per layer (Endor's baseline, same engine)."""

    encoding: ClassVar[Encoding] = "dense"
