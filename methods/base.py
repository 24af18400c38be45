"""``base``: the model as it is — every capability forwarded to the model, no technique.

The reference point every paper's method is compared against. Scoring follows
lm-evaluation-harness's ``hf`` backend (same tokenization, prefix token and rolling
windows), with shared-context batching for multiple choice; see ``harness/lm.py``.
``act`` renders the conversation through the chat template and generates the next turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.api import (
    ActRequest,
    Capability,
    GenerateRequest,
    GenerateResult,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    StreamRequest,
    StreamResult,
)
from harness.lm import CausalLM, language_model
from harness.method import Method, MethodOptions, register_method
from harness.models import LoadedModel
from harness.remote import RemoteLM


@dataclass(frozen=True)
class BaseArgs:
    max_length: int | None = None  # context length used; default: the model's own

    def __post_init__(self) -> None:
        check_max_length(self.max_length)


def check_max_length(max_length: int | None) -> None:
    """A context must hold at least a prefix token and one scored token."""
    if max_length is not None and max_length < 2:
        raise ValueError("max_length must be at least 2")


@register_method("base")
class BaseMethod(Method):
    """The model as it is: all capabilities forwarded to the model, no technique."""

    provides = frozenset(Capability) - {Capability.ATTRIBUTE}  # explaining is the attribution methods' job
    Args = BaseArgs
    runs_remote = True

    def __init__(self, model: LoadedModel, args: BaseArgs, options: MethodOptions) -> None:
        super().__init__(model, args, options)
        self.lm = language_model(model, self.cost, options.batch_size, args.max_length, options.seed, options.show_progress)

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        return self.lm.loglikelihood(requests)

    def score_stream(self, requests: Sequence[StreamRequest]) -> list[StreamResult]:
        return self._local().score_stream(requests)

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        return self.lm.generate(requests)

    def act(self, requests: Sequence[ActRequest]) -> list[GenerateResult]:
        return self.lm.generate(
            [GenerateRequest(r.messages, r.max_new_tokens, r.until, r.temperature, r.top_p) for r in requests]
        )

    def _local(self) -> CausalLM:
        assert isinstance(self.lm, CausalLM), "a remote model streams nothing (the runner checks this first)"
        return self.lm

    def token_scorer(self) -> CausalLM | None:
        return self.lm if isinstance(self.lm, CausalLM) else None

    def describe(self) -> dict[str, Any]:
        if isinstance(self.lm, RemoteLM):
            return {"max_length": self.lm.max_length, "api": self.lm.describe()}
        return {"max_length": self.lm.max_length, "prefix_token_id": self.lm.prefix_token_id}
