"""The method contract: a paper's technique as an adapter around one or more models."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from harness.api import (
    ActRequest,
    AttributeRequest,
    AttributeResult,
    Capability,
    GenerateRequest,
    GenerateResult,
    LoglikelihoodRequest,
    LoglikelihoodResult,
    StreamRequest,
    StreamResult,
)
from harness.config import NoArgs
from harness.registry import Registry

if TYPE_CHECKING:
    from harness.models import LoadedModel, ResolvedModel


@dataclass
class Cost:
    """What a method spent. Every method counts its own."""

    forward_passes: int = 0  # calls into a model's forward (a batch counts once)
    tokens_processed: int = 0  # non-padding tokens run through a model
    tokens_scored: int = 0  # tokens whose log-probability was read
    tokens_generated: int = 0
    model_calls: int = 0  # requests answered
    wall_time_s: float = 0.0
    # Method-specific sums (a defense's replaced tokens, a reference model's passes); kept
    # flat in results.json beside the fields above, and summed across resumed sessions.
    counters: dict[str, float] = field(default_factory=dict)

    def count(self, name: str, amount: float = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount

    def add(self, other: Cost | dict[str, Any]) -> None:
        values = other.as_dict() if isinstance(other, Cost) else other
        names = {f.name for f in fields(self)} - {"counters"}
        for name in names:
            setattr(self, name, getattr(self, name) + values.get(name, 0))
        for name, value in values.items():
            if name not in names:
                self.count(name, value)

    def as_dict(self) -> dict[str, Any]:
        values = {k: v for k, v in asdict(self).items() if k != "counters"}
        return values | dict(sorted(self.counters.items()))

    def add_as(self, role: str, other: Cost) -> None:
        """Count another model's spending here under its role's name (``judge_forward_passes``, ...),
        so results.json shows what the judge or reference cost beside the run's own model."""
        for name, value in other.as_dict().items():
            if value:
                self.count(f"{role}_{name}", value)


@dataclass(frozen=True)
class MethodOptions:
    """Run-level settings every method receives."""

    batch_size: int | Literal["auto"] = "auto"
    seed: int = 0
    show_progress: bool = True


class Method:
    """Answers the requests of the capabilities in ``provides``."""

    name: ClassVar[str] = ""
    provides: ClassVar[frozenset[Capability]] = frozenset()
    Args: ClassVar[type] = NoArgs
    # Named argument sets from the paper (``--method-arg preset=paper``-style use is by
    # passing their keys); the dataclass defaults are the paper's defaults.
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    # Whether the method runs on a model behind an API (``harness.remote``): only methods that
    # need nothing but the model's generations and scores; one that reads logits, weights or a
    # KV cache cannot.
    runs_remote: ClassVar[bool] = False

    def __init__(self, model: LoadedModel, args: Any, options: MethodOptions) -> None:
        self.loaded = model
        self.args = args
        self.options = options
        self.cost = Cost()

    @classmethod
    def auxiliary_models(cls, args: Any, model: str) -> dict[str, str]:
        """Second models these arguments use beside the run's ``model`` (role -> zoo name), such as
        a reference or a teacher; their identities go into the run spec."""
        return {}

    @classmethod
    def load_model(cls, resolved: ResolvedModel, device: str, args: Any) -> LoadedModel | None:
        """The run's model, for a method that builds it its own way (offloaded inference keeps
        weights out of memory); None, the default: the runner loads it whole
        (``harness.runner.load_model``)."""
        return None

    @classmethod
    def summary(cls) -> str:
        doc = inspect.getdoc(cls) or inspect.getdoc(inspect.getmodule(cls)) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        raise NotImplementedError(f"method '{self.name}' does not provide loglikelihood")

    def score_stream(self, requests: Sequence[StreamRequest]) -> list[StreamResult]:
        raise NotImplementedError(f"method '{self.name}' does not provide stream")

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        raise NotImplementedError(f"method '{self.name}' does not provide generate")

    def act(self, requests: Sequence[ActRequest]) -> list[GenerateResult]:
        raise NotImplementedError(f"method '{self.name}' does not provide act")

    def attribute(self, requests: Sequence[AttributeRequest]) -> list[AttributeResult]:
        raise NotImplementedError(f"method '{self.name}' does not provide attribute")

    def replay(self, requests: Sequence[ActRequest], answers: Sequence[GenerateResult]) -> None:
        """Earlier answers of this method to these requests, read back from a resumed chunk's
        journal instead of asked again: a method that keeps memory between turns (tips,
        reflections) takes it back here. Nothing to do for a method without such memory."""

    def token_scorer(self) -> Any:
        """A ``CausalLM`` whose per-token log-probabilities are this method's (``harness serve``
        returns them as logprobs), or None when the method's scores are not one model's."""
        return None

    def describe(self) -> dict[str, Any]:
        """Settings resolved at load time (e.g. the context length used), for results.json."""
        return {}

    @classmethod
    def derived_cost(cls, cost: dict[str, Any]) -> dict[str, Any]:
        """Ratios computed from a whole run's summed cost (e.g. a defense's overhead)."""
        return {}


METHODS: Registry[type[Method]] = Registry("method", "methods", "harness.methods")


def register_method(name: str):
    return METHODS.register(name)
