"""The contract between tasks and methods: capabilities, requests, results, metrics.

A task turns documents into requests of a few kinds and scores the answers into one record
per document; a method answers the requests. Which kinds a method answers is its set of
capabilities, checked against the task's before any model loads.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal


class Capability(str, enum.Enum):
    LOGLIKELIHOOD = "loglikelihood"  # log P(continuation | context): multiple choice
    STREAM = "stream"  # rolling or stateful scoring of long text: perplexity
    GENERATE = "generate"  # free text from a prompt
    ACT = "act"  # multi-turn: agent steps, repair rounds
    VISION = "vision"  # requests carry images (needs an image-text-to-text model)
    ATTRIBUTE = "attribute"  # zero-shot classification by label words, and one score per input word explaining it

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class LoglikelihoodRequest:
    context: str
    continuation: str
    chat: bool = False  # render ``context`` as a user turn through the model's chat template
    images: tuple[Any, ...] = ()  # PIL images shown with the context, before its text


@dataclass(frozen=True)
class LoglikelihoodResult:
    logprob: float
    is_greedy: bool
    n_tokens: int


@dataclass(frozen=True)
class StreamRequest:
    """Score ``text`` conditioned on ``context`` (which is not scored).

    ``window`` is the most tokens one forward pass sees and ``stride`` how many new tokens
    each later window scores (the rest is carried-over context); ``None`` means the
    method's maximum length and a stride equal to the window (disjoint windows).
    """

    text: str
    context: str = ""
    window: int | None = None
    stride: int | None = None


@dataclass(frozen=True)
class StreamResult:
    logprob: float
    n_tokens: int
    window: int
    stride: int
    n_windows: int


@dataclass(frozen=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str
    images: tuple[Any, ...] = ()  # PIL images in this message, before its text


@dataclass(frozen=True)
class GenerateRequest:
    prompt: str | tuple[ChatMessage, ...]
    max_new_tokens: int = 256
    until: tuple[str, ...] = ()
    temperature: float = 0.0
    top_p: float = 1.0
    chat: bool = False  # render a string prompt as one user turn through the chat template
    top_k: int | None = None  # sampling: only the k most likely tokens (None: the model's generation config)
    images: tuple[Any, ...] = ()  # PIL images shown with a string prompt, before its text
    no_repeat_ngram_size: int = 0  # sampling: never repeat an n-gram of this size (0: off), as HF generate
    # Requests of one kind (a task's part and language) share this short description, which a
    # model can read: a method that prepares something once per kind (EmoPrompt's guidance)
    # keys it here. Empty: the task names no kind.
    family: str = ""

    def all_images(self) -> tuple[Any, ...]:
        if isinstance(self.prompt, tuple):
            return tuple(image for message in self.prompt for image in message.images)
        return self.images


@dataclass(frozen=True)
class GenerateResult:
    text: str
    n_tokens: int
    finish_reason: Literal["stop", "length"]
    info: dict[str, Any] = field(default_factory=dict)  # method-specific, e.g. tokens a defense replaced


class Stage(str, enum.Enum):
    """What a task asks for at an agent turn, so a method may route it (to another model, to memory)."""

    TURN = ""  # a turn with nothing special about it
    WRITE = "write"  # code repair: the first program
    REPAIR = "repair"  # code repair: fix a failing program (its error is in the last message)
    STEP = "step"  # games: the next command
    REFLECT = "reflect"  # games, between trials: the answer is memory for the next trial
    DEMONSTRATION = "demonstration"  # games, before trial 1: an expert's play; the answer is memory

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


MEMORY_STAGES = frozenset({Stage.REFLECT, Stage.DEMONSTRATION})  # turns that ask for memory, not an action


@dataclass(frozen=True)
class ActRequest:
    """One agent turn: the conversation so far; the method answers with the next message.

    ``stage`` names what the task asks for at this turn (``Stage``), so a method may route a
    stage to another model. A final assistant message is a prefix the answer continues.
    ``choices``, when given, are the valid answers (a game's admissible commands): a method may
    score them instead of generating. ``episode`` names the game or problem the turn belongs
    to, for methods that keep memory per episode; ``goal`` is the episode's objective and
    ``won`` (on a ``REFLECT`` turn) whether the trial just played was won, so agents need not
    read them out of the prompt.

    On a memory stage (``MEMORY_STAGES``) the answer is the memory the task keeps and puts in
    the next trial's prompt: the result's ``info["memory"]`` when the method sets it, else its
    ``text``. A task that replays a journaled memory hands it back through ``Method.replay``."""

    messages: tuple[ChatMessage, ...]
    max_new_tokens: int = 256
    until: tuple[str, ...] = ()
    temperature: float = 0.0
    top_p: float = 1.0
    stage: Stage = Stage.TURN
    choices: tuple[str, ...] = ()
    episode: str = ""
    goal: str = ""
    won: bool | None = None


@dataclass(frozen=True)
class AttributeRequest:
    """Classify ``words`` (joined by single spaces into ``template``'s ``{text}``) among
    ``labels`` by the log-probability of each label as the continuation, and, when ``explain``,
    score each word for the probability of ``target`` (None: the predicted label)."""

    words: tuple[str, ...]
    template: str  # the prompt, "{text}" where the input goes
    labels: tuple[str, ...]  # label verbalisers as continuations, e.g. (" negative", " positive")
    target: int | None = None
    explain: bool = True  # False: probabilities only (a perturbed input being scored)


@dataclass(frozen=True)
class AttributeResult:
    probabilities: tuple[float, ...]  # over the labels, normalised among them
    target: int  # the label explained (the predicted one unless the request named one)
    word_scores: tuple[float, ...] = ()  # one per word: higher = more evidence for the target
    token_scores: tuple[float, ...] = ()  # one per input token, before the per-word rule
    token_words: tuple[int, ...] = ()  # each input token's word
    info: dict[str, Any] = field(default_factory=dict)  # cost: passes, seconds


Request = LoglikelihoodRequest | StreamRequest | GenerateRequest | ActRequest | AttributeRequest
Result = LoglikelihoodResult | StreamResult | GenerateResult | AttributeResult


@dataclass(frozen=True)
class Doc:
    """One evaluation unit. ``id`` is stable across runs and methods (used for pairing)."""

    id: str
    data: dict[str, Any] = field(compare=False)


@dataclass(frozen=True)
class Metric:
    """How to aggregate per-sample record fields into one number with a 95% CI.

    ``statistic`` receives one numpy array per name in ``fields`` (values across samples)
    and returns the metric; ``ci`` picks Wilson's interval for proportions (``fields`` must
    be one 0/1 field) or a paired bootstrap over samples for anything else.
    """

    name: str
    higher_is_better: bool
    fields: tuple[str, ...]
    statistic: Callable[..., float]
    ci: Literal["wilson", "bootstrap"] = "bootstrap"
    description: str = ""


def dispatch(method: Any, requests: Sequence[Request]) -> list[Result]:
    """Answer a mixed list of requests, one batched method call per request kind."""
    results: list[Result | None] = [None] * len(requests)
    by_kind: dict[type, list[int]] = {}
    for index, request in enumerate(requests):
        by_kind.setdefault(type(request), []).append(index)
    handlers = {
        LoglikelihoodRequest: method.loglikelihood,
        StreamRequest: method.score_stream,
        GenerateRequest: method.generate,
        ActRequest: method.act,
        AttributeRequest: method.attribute,
    }
    for kind, indices in by_kind.items():
        answers = handlers[kind]([requests[i] for i in indices])
        for index, answer in zip(indices, answers, strict=True):
            results[index] = answer
    return results  # type: ignore[return-value]


def dispatch_groups(method: Any, groups: Sequence[Sequence[Request]]) -> list[list[Result]]:
    """``dispatch`` over several groups of requests (a document's, an order's) in one batched
    call, the answers handed back group by group."""
    answers = dispatch(method, [request for group in groups for request in group])
    out, start = [], 0
    for group in groups:
        out.append(answers[start : start + len(group)])
        start += len(group)
    return out


def sample_indices(keys: Sequence[Any]) -> list[int]:
    """Each request's index among the identical requests (equal ``keys``) before it in one call:
    sample 0, 1, ... of one prompt, whatever else the call holds."""
    seen: dict[Any, int] = {}
    out = []
    for key in keys:
        out.append(seen.get(key, 0))
        seen[key] = out[-1] + 1
    return out


def cut_at_stops(text: str, until: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to its first stop string, and whether one was there."""
    stopped = False
    for stop in until:
        cut = text.find(stop)
        if cut != -1:
            text, stopped = text[:cut], True
    return text, stopped
