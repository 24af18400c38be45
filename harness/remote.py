"""Models behind an OpenAI-compatible HTTP API: ``openai:<model>`` and
``openai-compatible:<base_url>::<model>`` (vLLM, llama.cpp's server, Ollama, ``harness serve``).

Requests go through the official ``openai`` client, which retries connection errors, 408,
409, 429 and 5xx answers with exponential backoff (honouring ``Retry-After``) and enforces a
timeout per request. What the harness adds:

- a request cache (SQLite under ``$HARNESS_CACHE_DIR``) keyed by the whole request: base URL,
  endpoint, model, prompt or messages, every sampling setting, and the sample's index among
  identical requests of one call (five samples of one prompt are five entries), so a resumed or
  repeated run never pays twice and never gets one sample five times;
- concurrency (``max_concurrency`` threads over one client);
- ``loglikelihood`` through completions with ``echo`` and ``logprobs`` (the prompt's own token
  log-probabilities, as lm-eval's ``local-completions`` reads them), only where the server
  returns them: probed once per server and model, and checked before a run starts;
- the model's identity: base URL, model name, and what the server reports about the model
  (``/v1/models``: id, owner, root, context length) — not its ``created`` time, which some
  servers restamp on every call;
- tokens in and out per run, and their price where one is given.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness import progress
from harness.api import ChatMessage, GenerateRequest, GenerateResult, LoglikelihoodRequest, LoglikelihoodResult, cut_at_stops, sample_indices
from harness.errors import ArgumentError, HarnessError, IncompatibleError, ModelLoadError, first_line
from harness.identity import DEFAULT_MAX_LENGTH, ModelIdentity
from harness.method import Cost
from harness.spec import canonical_json
from harness.zoo import cache_dir

OPENAI_PREFIX = "openai:"
COMPATIBLE_PREFIX = "openai-compatible:"
OPENAI_BASE_URL = "https://api.openai.com/v1"
# Sampling and template options outside OpenAI's API that vLLM (and harness serve) take.
EXTRA_PARAMETERS = ("top_k", "no_repeat_ngram_size", "continue_final_message", "add_generation_prompt")
MAX_STOP_STRINGS = 4  # OpenAI's limit on ``stop``; further stop strings are applied here
# A remote model's chat template is applied by its server, which does not publish it.
SERVER_SIDE_TEMPLATE = "server-side"


def is_remote(name: str) -> bool:
    return name.startswith((OPENAI_PREFIX, COMPATIBLE_PREFIX))


@dataclass(frozen=True)
class RemoteOptions:
    """How to reach a remote model (``--model-arg``); none of it changes an answer, so none of
    it is in the run id."""

    max_concurrency: int = 8  # requests in flight at once
    timeout: float = 600.0  # seconds per request, retries not counted
    max_retries: int = 6  # retries of a failed request (429, 5xx, timeouts), with exponential backoff
    api_key_env: str = "OPENAI_API_KEY"  # environment variable holding the key
    input_price_per_mtok: float | None = None  # price of a million prompt tokens, for results.json's cost
    output_price_per_mtok: float | None = None  # price of a million completion tokens
    request_cache: str | None = None  # SQLite file of answered requests; default $HARNESS_CACHE_DIR/api_requests.sqlite

    def __post_init__(self) -> None:
        if self.max_concurrency < 1 or self.max_retries < 0 or self.timeout <= 0:
            raise ValueError("max_concurrency must be >= 1, max_retries >= 0 and timeout > 0")


@dataclass(frozen=True)
class RemoteAddress:
    base_url: str
    model: str
    official: bool  # api.openai.com: no extra sampling parameters, a key required

    @classmethod
    def parse(cls, name: str) -> RemoteAddress:
        if name.startswith(OPENAI_PREFIX):
            model = name[len(OPENAI_PREFIX):]
            if not model:
                raise ArgumentError("give the model after 'openai:' (e.g. openai:gpt-4o-mini)")
            return cls(OPENAI_BASE_URL, model, official=True)
        rest = name[len(COMPATIBLE_PREFIX):]
        base_url, sep, model = rest.rpartition("::")
        if not sep or not base_url.startswith(("http://", "https://")) or not model:
            raise ArgumentError(f"'{name}': write openai-compatible:<base_url>::<model>, e.g. "
                                "openai-compatible:http://127.0.0.1:8000/v1::my-model")
        return cls(base_url.rstrip("/"), model, official=False)


class RequestCache:
    """Responses by the sha256 of their full request, in one SQLite file shared by all runs."""

    def __init__(self, path: os.PathLike[str] | str | None = None) -> None:
        self.path = str(path or cache_dir() / "api_requests.sqlite")
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, response TEXT NOT NULL)")
        self._db.commit()

    @staticmethod
    def key(request: dict[str, Any]) -> str:
        return hashlib.sha256(canonical_json(request).encode()).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, response: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?)", (key, json.dumps(response)))
            self._db.commit()


class RemoteEndpoint:
    """One model on one server: the client, the cache and the options, shared by every
    ``RemoteLM`` over it. Counts the HTTP errors it retried."""

    def __init__(self, address: RemoteAddress, options: RemoteOptions, cache: RequestCache | None = None) -> None:
        import openai

        self.address, self.options = address, options
        key = os.environ.get(options.api_key_env)
        if address.official and not key:
            raise ModelLoadError(f"model 'openai:{address.model}' needs an API key in ${options.api_key_env}")
        self.retried = 0
        self._retry_lock = threading.Lock()

        def count_failures(response: Any) -> None:
            if response.status_code in (408, 409, 429) or response.status_code >= 500:
                with self._retry_lock:
                    self.retried += 1

        # The client's own HTTP client class (openai 3 moved to httpx2), with a hook that counts
        # the answers its retry loop will retry.
        http = openai.DefaultHttpxClient(event_hooks={"response": [count_failures]})
        self.client = openai.OpenAI(base_url=address.base_url, api_key=key or "EMPTY", timeout=options.timeout,
                                    max_retries=options.max_retries, http_client=http)
        self.cache = cache or RequestCache(options.request_cache)
        self._echo: bool | None = None
        self._card: dict[str, Any] | None = None

    def call(self, endpoint: str, body: dict[str, Any], sample: int = 0) -> tuple[dict[str, Any], bool]:
        """The response to one request (``endpoint`` ``chat`` or ``completions``), from the cache
        when this exact request (and sample index) was answered before; and whether it was."""
        key = RequestCache.key({"base_url": self.address.base_url, "endpoint": endpoint, "body": body, "sample": sample})
        cached = self.cache.get(key)
        if cached is not None:
            return cached, True
        create: Callable[..., Any] = self.client.chat.completions.create if endpoint == "chat" else self.client.completions.create
        extra = {name: body[name] for name in EXTRA_PARAMETERS if name in body}
        standard = {name: value for name, value in body.items() if name not in extra}
        try:
            response = create(**standard, extra_body=extra or None).model_dump(mode="json")
        except Exception as error:
            raise RemoteError(f"{self.address.base_url} ({self.address.model}): {type(error).__name__}: {first_line(error)}") from None
        self.cache.put(key, response)
        return response, False

    def models_card(self) -> dict[str, Any]:
        """What the server says about this model (``/v1/models``), without fields that change per
        call; asked once per process (a run resolves its model, its judge and its protocol's judge)."""
        if self._card is None:
            self._card = self._ask_card()
        return self._card

    def _ask_card(self) -> dict[str, Any]:
        try:
            listed = self.client.with_options(max_retries=1).models.list().model_dump(mode="json").get("data", [])
        except Exception as error:
            raise ModelLoadError(f"cannot reach {self.address.base_url}: {type(error).__name__}: {first_line(error)}") from None
        card = next((m for m in listed if m.get("id") == self.address.model), None)
        if card is None:
            served = ", ".join(str(m.get("id")) for m in listed) or "none"
            raise ModelLoadError(f"{self.address.base_url} does not serve model '{self.address.model}' (it serves: {served})")
        return {k: v for k, v in sorted(card.items()) if k not in ("created", "object") and v is not None}

    def echoes_logprobs(self) -> bool:
        """Whether completions with ``echo`` return the prompt's token log-probabilities (one
        cached probe request)."""
        if self._echo is None:
            try:
                response, _ = self.call("completions", echo_body(self.address.model, "The sky is blue."))
                logprobs = (response["choices"][0].get("logprobs") or {})
                offsets = logprobs.get("text_offset") or []
                self._echo = len(offsets) >= 2 and logprobs.get("token_logprobs", [None, None])[1] is not None
            except RemoteError:
                self._echo = False
        return self._echo


class RemoteError(HarnessError):
    """A request that failed after the client's retries (or that the server refused)."""


def echo_body(model: str, prompt: str) -> dict[str, Any]:
    """A completions request for the prompt's own token log-probabilities: ``echo`` with one
    greedy token (lm-eval's ``local-completions`` asks for the same)."""
    return {"model": model, "prompt": prompt, "echo": True, "logprobs": 1, "max_tokens": 1, "temperature": 0.0}


def remote_identity(name: str, address: RemoteAddress, card: dict[str, Any]) -> ModelIdentity:
    """Base URL, model name and the server's card make the identity (its hash stands where a
    local model's weights sha256 stands), so another server or another served model is another run."""
    described = {"base_url": address.base_url, "model": address.model, "server_card": card}
    digest = hashlib.sha256(canonical_json(described).encode()).hexdigest()
    meta: dict[str, Any] = card["meta"] if isinstance(card.get("meta"), dict) else {}
    max_length = card.get("max_model_len") or meta.get("n_ctx_train") or DEFAULT_MAX_LENGTH
    return ModelIdentity(
        name=name, source=f"{'openai' if address.official else 'openai-compatible'}:{address.base_url}::{address.model}",
        weights_sha256=digest, dtype="remote", n_parameters=int(meta.get("n_params", -1)),
        chat_template_sha256=SERVER_SIDE_TEMPLATE, max_length=int(max_length),
        architecture=str(card.get("root") or card.get("owned_by") or "remote"), kind="api",
    )


def _usage(response: dict[str, Any]) -> tuple[int, int]:
    usage = response.get("usage") or {}
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


class RemoteLM:
    """``generate`` and ``loglikelihood`` for a remote model, with the interface of
    ``harness.lm.CausalLM`` that methods and judges use; counts into ``cost``."""

    def __init__(self, endpoint: RemoteEndpoint, cost: Cost, seed: int = 0, show_progress: bool = True,
                 max_length: int = DEFAULT_MAX_LENGTH) -> None:
        self.endpoint, self.cost, self.seed, self.show_progress = endpoint, cost, seed, show_progress
        self.max_length = max_length
        self._cost_lock = threading.Lock()

    @property
    def model_name(self) -> str:
        return self.endpoint.address.model

    def _map(self, work: Callable[[int], Any], total: int, desc: str) -> list[Any]:
        if total == 0:
            return []
        before = self.endpoint.retried
        with ThreadPoolExecutor(self.endpoint.options.max_concurrency) as pool, \
                progress.bar(total=total, desc=desc, unit="req", disable=not self.show_progress, leave=False) as bar:
            futures = [pool.submit(work, i) for i in range(total)]
            results = []
            for future in futures:
                results.append(future.result())
                bar.update(1)
        self.cost.count("api_retried_responses", self.endpoint.retried - before)
        return results

    def _account(self, response: dict[str, Any], cached: bool) -> None:
        options = self.endpoint.options
        with self._cost_lock:
            self.cost.model_calls += 1
            if cached:
                self.cost.count("api_cache_hits")
                return
            prompt_tokens, completion_tokens = _usage(response)
            self.cost.count("api_requests")
            self.cost.count("api_prompt_tokens", prompt_tokens)
            self.cost.count("api_completion_tokens", completion_tokens)
            self.cost.tokens_processed += prompt_tokens + completion_tokens
            self.cost.tokens_generated += completion_tokens
            if options.input_price_per_mtok is not None or options.output_price_per_mtok is not None:
                price = (prompt_tokens * (options.input_price_per_mtok or 0) + completion_tokens * (options.output_price_per_mtok or 0)) / 1e6
                self.cost.count("api_cost_usd", price)

    # -- generation --------------------------------------------------------------------------
    def generate_body(self, request: GenerateRequest) -> tuple[str, dict[str, Any]]:
        if request.all_images():
            raise IncompatibleError("requests with images are not sent to remote models")
        body: dict[str, Any] = {"model": self.model_name, "max_tokens": request.max_new_tokens,
                                "temperature": request.temperature, "top_p": request.top_p}
        if request.until:
            body["stop"] = list(request.until[:MAX_STOP_STRINGS])
        if not self.endpoint.address.official:
            if request.top_k is not None:
                body["top_k"] = request.top_k
            if request.no_repeat_ngram_size:
                body["no_repeat_ngram_size"] = request.no_repeat_ngram_size
        if isinstance(request.prompt, tuple):
            if request.prompt[-1].role == "assistant" and not self.endpoint.address.official:
                # A final assistant message is a prefix to continue (vLLM's chat-template options; harness serve does it unasked).
                body |= {"continue_final_message": True, "add_generation_prompt": False}
            return "chat", body | {"messages": [_message(m) for m in request.prompt]}
        if request.chat:
            return "chat", body | {"messages": [_message(ChatMessage("user", request.prompt))]}
        return "completions", body | {"prompt": request.prompt}

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        bodies = [self.generate_body(r) for r in requests]
        samples = sample_indices([(endpoint, canonical_json(body)) for endpoint, body in bodies])
        for (_, body), sample in zip(bodies, samples, strict=True):
            if body["temperature"] > 0:  # servers that take a seed draw each sample from its own
                body["seed"] = int.from_bytes(hashlib.sha256(repr((self.seed, sample)).encode()).digest()[:4], "little") >> 1

        def one(i: int) -> GenerateResult:
            endpoint, body = bodies[i]
            response, cached = self.endpoint.call(endpoint, body, samples[i] if body["temperature"] > 0 else 0)
            self._account(response, cached)
            choice = response["choices"][0]
            text = (choice.get("message") or {}).get("content") if endpoint == "chat" else choice.get("text")
            text, stopped = cut_at_stops(text or "", requests[i].until)  # the server saw at most four
            reason: Literal["stop", "length"] = "stop" if stopped or choice.get("finish_reason") != "length" else "length"
            _, completion_tokens = _usage(response)
            return GenerateResult(text=text, n_tokens=completion_tokens, finish_reason=reason,
                                  info={"api_cached": cached} if cached else {})

        return self._map(one, len(requests), "generate (API)")

    # -- scoring ---------------------------------------------------------------------------------
    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        for request in requests:
            if request.chat:
                raise IncompatibleError("a remote model cannot score inside its chat template (its server applies it): "
                                        "use --chat-template off")
            if not request.context:
                raise IncompatibleError("a remote model cannot score a continuation with an empty context "
                                        "(its first token has no log-probability)")

        def one(i: int) -> LoglikelihoodResult:
            request = requests[i]
            prompt = request.context + request.continuation
            response, cached = self.endpoint.call("completions", echo_body(self.model_name, prompt))
            self._account(response, cached)
            logprobs = response["choices"][0].get("logprobs") or {}
            # lm-eval moves the context's trailing spaces to the continuation (``_encode_pair``).
            boundary = len(request.context.rstrip(" "))
            return continuation_logprob(logprobs, boundary, len(prompt))

        return self._map(one, len(requests), "loglikelihood (API)")

    def describe(self) -> dict[str, Any]:
        address, options = self.endpoint.address, self.endpoint.options
        return {"base_url": address.base_url, "model": address.model, "max_concurrency": options.max_concurrency,
                "timeout_s": options.timeout, "max_retries": options.max_retries,
                # the file's name only: a run records no path of the machine that made it
                "request_cache": Path(self.endpoint.cache.path).name}


def continuation_logprob(logprobs: dict[str, Any], boundary: int, end: int) -> LoglikelihoodResult:
    """The continuation's log-probability from an echoed prompt: the tokens that start at or
    after ``boundary`` (characters) and before ``end`` (the generated token starts there). A token
    that straddles the boundary counts to the continuation, as its text does."""
    offsets, tokens, values = logprobs.get("text_offset"), logprobs.get("tokens"), logprobs.get("token_logprobs")
    if not offsets or not tokens or values is None:
        raise IncompatibleError("the server returned no prompt log-probabilities for an echo request")
    tops = logprobs.get("top_logprobs") or [None] * len(tokens)
    chosen = [i for i, offset in enumerate(offsets) if offset < end and (offset >= boundary or
                                                                       (i + 1 < len(offsets) and offsets[i + 1] > boundary))]
    if not chosen or chosen[0] == 0 or any(values[i] is None for i in chosen):
        raise IncompatibleError("the echoed prompt has no log-probability for the continuation's first token")
    greedy = all(not tops[i] or max(tops[i], key=tops[i].get) == tokens[i] for i in chosen)
    return LoglikelihoodResult(logprob=float(sum(values[i] for i in chosen)), is_greedy=greedy, n_tokens=len(chosen))


def _message(message: ChatMessage) -> dict[str, str]:
    if message.images:
        raise IncompatibleError("messages with images are not sent to remote models")
    return {"role": message.role, "content": message.content}


_ENDPOINTS: dict[tuple[RemoteAddress, RemoteOptions], RemoteEndpoint] = {}
_ENDPOINTS_LOCK = threading.Lock()


def endpoint(name: str, options: RemoteOptions) -> RemoteEndpoint:
    """The process's one endpoint per address and options (its echo probe and client are reused)."""
    address = RemoteAddress.parse(name)
    with _ENDPOINTS_LOCK:
        if (address, options) not in _ENDPOINTS:
            _ENDPOINTS[(address, options)] = RemoteEndpoint(address, options)
        return _ENDPOINTS[(address, options)]
