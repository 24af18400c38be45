"""``harness serve``: any method over any model as an OpenAI-compatible HTTP server.

Endpoints: ``POST /v1/chat/completions`` and ``POST /v1/completions`` (``n``, ``stop``,
``seed``, ``stream`` as server-sent events, ``logprobs``; completions also ``echo`` with the
prompt's token log-probabilities, which is what a remote ``loglikelihood`` reads),
``GET /v1/models`` (the served model's card, with the method and the model's identity, which a
client run records) and ``GET /health``. On FastAPI and uvicorn.

One worker thread owns the model: requests arriving together (within ``batch_window_s``, up to
``max_batch``) are answered in one batched call of the method, the way ``harness run`` batches
a task's requests. Log-probabilities come from the method's ``token_scorer`` (the model as the
method runs it: ``base``, ``quantize``, ``prune``); a method whose scores are not one model's
answers a logprobs request with a 400. A stream is sent once the method has answered (methods
answer whole batches; no method decodes token by token for a client), in token-sized pieces.
Bad requests get OpenAI's error object and a 4xx; a wrong or missing key a 401.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from harness.api import Capability, ChatMessage, GenerateRequest, GenerateResult
from harness.loglikelihood import TokenLogprobs
from harness.method import Method
from harness.tokenization import PromptEncoder

DEFAULT_MAX_TOKENS = 256  # a chat request that names no limit (OpenAI's is the context; too slow on a CPU)
# How long the first request of a batch waits for others. Clients send their next request tens
# of milliseconds after their last answer (bench_serve.py: at 5 ms, 4 clients made batches of
# 2.3; at 50 ms, of 4.0 and 0.56x -> 0.86x in-process throughput at 16 clients); a CPU batch
# takes seconds, so the wait costs a few percent. Lower it on a GPU (--batch-window-ms).
BATCH_WINDOW_S = 0.05
MAX_N = 16
MAX_TOP_LOGPROBS = 20


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.code, self.param = status, kind, code, param

    def response(self) -> JSONResponse:
        return error_response(self.status, str(self), self.kind, self.code, self.param)


def error_response(status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                   param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status)


# -- request bodies (OpenAI's fields; unknown ones are ignored, as OpenAI-compatible servers do) --
class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class MessageBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart]

    def message(self) -> ChatMessage:
        if isinstance(self.content, str):
            text = self.content
        else:
            if any(part.type != "text" for part in self.content):
                raise ApiError(400, "only text content parts are served", param="messages")
            text = "".join(part.text or "" for part in self.content)
        return ChatMessage("system" if self.role == "developer" else self.role, text)


class SamplingBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    seed: int | None = None
    top_k: int | None = None  # vLLM's extension
    no_repeat_ngram_size: int = 0  # Hugging Face generate's, for protocols that set it (EmoBench's)

    def check(self) -> None:
        if not 1 <= self.n <= MAX_N:
            raise ApiError(400, f"n must be between 1 and {MAX_N}", param="n")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ApiError(400, "temperature must be >= 0 and top_p in (0, 1]", param="temperature")

    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


class ChatBody(SamplingBody):
    messages: list[MessageBody]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None


class CompletionBody(SamplingBody):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int = 16
    echo: bool = False
    logprobs: int | None = None


# -- the worker that owns the model ---------------------------------------------------------------
@dataclass
class Job:
    """One generation (``request``) or one scoring of a text (``score``), with the logprobs asked."""

    request: GenerateRequest | None = None
    score: str | list[int] | None = None
    top: int = 0
    prompt_ids: list[int] | None = None  # a completions prompt given as token ids: decoded into ``request`` by the worker
    stream: bool = False  # cut the answer into token-sized pieces for a stream
    future: Future = field(default_factory=Future)


@dataclass(frozen=True)
class Answer:
    result: GenerateResult | None
    prompt_tokens: int
    scored: TokenLogprobs | None = None  # the prompt (echo) or prompt + completion, scored
    completion_start: int = 0  # index of the completion's first token in ``scored``
    prompt_text: str = ""  # echo: the prompt as text
    pieces: tuple[str, ...] = ()  # a streamed answer, piece by piece


class Batcher:
    """Jobs from concurrent HTTP calls, answered by one thread in the method's batched calls."""

    def __init__(self, method: Method, max_batch: int = 32, batch_window_s: float = BATCH_WINDOW_S) -> None:
        self.method, self.max_batch, self.batch_window_s = method, max_batch, batch_window_s
        self.scorer = method.token_scorer()
        self.encoder = PromptEncoder(method.loaded)
        self.queue: queue.Queue[Job] = queue.Queue()
        self.batches = 0
        threading.Thread(target=self._loop, name="harness-serve-batcher", daemon=True).start()

    def submit(self, jobs: Sequence[Job]) -> list[Future]:
        for job in jobs:
            self.queue.put(job)
        return [job.future for job in jobs]

    def _loop(self) -> None:
        while True:
            batch = [self.queue.get()]
            deadline = time.monotonic() + self.batch_window_s
            while len(batch) < self.max_batch:
                try:
                    batch.append(self.queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            self.batches += 1
            self._answer(batch)

    def _answer(self, batch: list[Job]) -> None:
        # The tokenizer is used here only: a fast tokenizer shared between threads can fail ("Already borrowed").
        for job in batch:
            if job.prompt_ids is not None and job.request is not None:
                job.request = replace(job.request, prompt=self.encoder.tokenizer.decode(job.prompt_ids))
        generating = [job for job in batch if job.request is not None]
        scoring = [job for job in batch if job.request is None]
        try:
            results = self._generate([job.request for job in generating if job.request is not None])
        except Exception as error:  # one bad batch fails its own requests, never the server
            for job in generating:
                job.future.set_exception(error)
            generating = []
        for job, result in zip(generating, results if generating else [], strict=True):
            self._settle(job, lambda job=job, result=result: self._generation_answer(job, result))
        for job in scoring:
            self._settle(job, lambda job=job: self._score_answer(job))

    @staticmethod
    def _settle(job: Job, compute: Any) -> None:
        try:
            job.future.set_result(compute())
        except Exception as error:
            job.future.set_exception(error)

    def _generate(self, requests: list[GenerateRequest]) -> list[GenerateResult]:
        if not requests:
            return []
        if Capability.GENERATE in self.method.provides:
            return self.method.generate(requests)
        from harness.api import ActRequest

        messages = [r.prompt if isinstance(r.prompt, tuple) else (ChatMessage("user", r.prompt),) for r in requests]
        return self.method.act([ActRequest(m, r.max_new_tokens, r.until, r.temperature, r.top_p)
                                for m, r in zip(messages, requests, strict=True)])

    def _generation_answer(self, job: Job, result: GenerateResult) -> Answer:
        assert job.request is not None
        prompt = self.encoder.prompt_tokens(job.request)
        pieces = tuple(self._pieces(result.text)) if job.stream else ()
        if not job.top or self.scorer is None:
            return Answer(result, len(prompt), pieces=pieces)
        completion = self.encoder.encode(result.text, add_special_tokens=False)
        scored = self.scorer.token_logprobs([prompt + completion], top=job.top)[0]
        return Answer(result, len(prompt), scored, len(prompt), pieces=pieces)

    def _pieces(self, text: str) -> Iterator[str]:
        """The answer in token-sized pieces, for a stream (a character split over tokens is sent whole)."""
        ids = self.encoder.encode(text, add_special_tokens=False)
        sent = ""
        for end in range(1, len(ids) + 1):
            decoded = self.encoder.tokenizer.decode(ids[:end])
            if decoded.endswith("\ufffd") and end < len(ids):
                continue
            if decoded.startswith(sent) and len(decoded) > len(sent):
                yield decoded[len(sent):]
                sent = decoded
        if sent != text and text.startswith(sent):
            yield text[len(sent):]

    def _score_answer(self, job: Job) -> Answer:
        assert job.score is not None and self.scorer is not None
        scored = self.scorer.token_logprobs([job.score], top=max(1, job.top))[0]
        text = job.score if isinstance(job.score, str) else self.encoder.tokenizer.decode(job.score, skip_special_tokens=True)
        return Answer(None, len(scored.token_ids), scored, len(scored.token_ids), text)


# -- the app --------------------------------------------------------------------------------------
def build_app(method: Method, served_name: str, api_key: str | None = None, max_batch: int = 32,
              batch_window_s: float = BATCH_WINDOW_S, default_max_tokens: int = DEFAULT_MAX_TOKENS) -> FastAPI:
    """The server over one loaded method; ``served_name`` is the model name clients send."""
    batcher = Batcher(method, max_batch, batch_window_s)
    created = int(time.time())
    identity = method.loaded.identity
    card = {
        "id": served_name, "object": "model", "created": created, "owned_by": "harness",
        "root": f"{method.name}:{identity.name}@{identity.weights_sha256[:16]}",
        "max_model_len": identity.max_length,
        "harness": {"method": method.name, "method_args": _jsonable(method.args), "model": identity.as_dict()},
    }
    app = FastAPI(title="harness serve", version="1")
    app.state.batcher = batcher

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, error: ApiError) -> JSONResponse:
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error_response(400, f"invalid request: {where}: {first.get('msg', 'malformed body')}", param=where or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return error_response(error.status_code, str(error.detail), "invalid_request_error" if error.status_code < 500 else "server_error")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, error: Exception) -> JSONResponse:  # a bug answers 500, the server stays up
        return error_response(500, f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}", "server_error")

    @app.middleware("http")
    async def _authenticate(request: Request, call_next: Any) -> Any:
        if api_key and request.url.path.startswith("/v1/") and request.headers.get("authorization") != f"Bearer {api_key}":
            return error_response(401, "invalid or missing API key (Authorization: Bearer <key>)", "authentication_error", "invalid_api_key")
        return await call_next(request)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": served_name, "method": method.name, "queued": batcher.queue.qsize()}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [card]}

    def check_model(name: str) -> None:
        if name != served_name:
            raise ApiError(404, f"model '{name}' is not served here (this server serves '{served_name}')", code="model_not_found", param="model")

    @app.post("/v1/chat/completions")
    async def chat(body: ChatBody) -> Any:
        check_model(body.model)
        body.check()
        if not body.messages:
            raise ApiError(400, "messages must not be empty", param="messages")
        top = (body.top_logprobs or 1) if body.logprobs else 0
        if top and batcher.scorer is None:
            raise ApiError(400, f"method '{method.name}' gives no token log-probabilities", param="logprobs")
        if top > MAX_TOP_LOGPROBS:
            raise ApiError(400, f"top_logprobs must be at most {MAX_TOP_LOGPROBS}", param="top_logprobs")
        limit = body.max_completion_tokens or body.max_tokens or default_max_tokens
        request = GenerateRequest(tuple(m.message() for m in body.messages), limit, body.stops(), body.temperature,
                                  body.top_p, top_k=body.top_k, no_repeat_ngram_size=body.no_repeat_ngram_size)
        answers = await _await(batcher.submit([Job(request, top=top, stream=body.stream) for _ in range(body.n)]))
        reply_id, model_name = f"chatcmpl-{uuid.uuid4().hex}", served_name
        if body.stream:
            return _sse(_chat_chunks(reply_id, created, model_name, answers, _include_usage(body)))
        choices = []
        for index, answer in enumerate(answers):
            assert answer.result is not None
            choice: dict[str, Any] = {"index": index, "message": {"role": "assistant", "content": answer.result.text},
                                      "finish_reason": answer.result.finish_reason, "logprobs": None}
            if answer.scored is not None:
                choice["logprobs"] = {"content": _chat_logprobs(answer.scored, answer.completion_start, top)}
            choices.append(choice)
        return {"id": reply_id, "object": "chat.completion", "created": int(time.time()), "model": model_name,
                "choices": choices, "usage": _usage(answers)}

    @app.post("/v1/completions")
    async def completions(body: CompletionBody) -> Any:
        check_model(body.model)
        body.check()
        prompts = _prompts(body.prompt)
        top = body.logprobs or 0
        if top > MAX_TOP_LOGPROBS or top < 0:
            raise ApiError(400, f"logprobs must be between 0 and {MAX_TOP_LOGPROBS}", param="logprobs")
        if (top or body.echo and body.logprobs is not None) and batcher.scorer is None:
            raise ApiError(400, f"method '{method.name}' gives no token log-probabilities", param="logprobs")
        if body.echo and body.stream:
            raise ApiError(400, "echo is not served with stream", param="echo")
        scoring_only = body.echo and (body.max_tokens == 0 or (body.max_tokens == 1 and body.temperature == 0))
        if body.echo and batcher.scorer is None:
            raise ApiError(400, f"method '{method.name}' cannot echo a scored prompt", param="echo")
        if body.echo and not scoring_only:
            raise ApiError(400, "echo is served with max_tokens 0, or 1 at temperature 0", param="echo")
        jobs = []
        for prompt in prompts:
            if scoring_only:
                jobs += [Job(score=prompt, top=max(1, top))]
            else:
                request = GenerateRequest(prompt if isinstance(prompt, str) else "", body.max_tokens, body.stops(), body.temperature,
                                          body.top_p, top_k=body.top_k, no_repeat_ngram_size=body.no_repeat_ngram_size)
                ids = None if isinstance(prompt, str) else prompt
                jobs += [Job(request, top=top, prompt_ids=ids, stream=body.stream) for _ in range(body.n)]
        answers = await _await(batcher.submit(jobs))
        reply_id = f"cmpl-{uuid.uuid4().hex}"
        if body.stream:
            return _sse(_completion_chunks(reply_id, created, served_name, answers, _include_usage(body)))
        choices = [_completion_choice(index, answer, body.max_tokens, top if body.logprobs is not None else None)
                   for index, answer in enumerate(answers)]
        return {"id": reply_id, "object": "text_completion", "created": int(time.time()), "model": served_name,
                "choices": choices, "usage": _usage(answers)}

    return app


async def _await(futures: list[Future]) -> list[Answer]:
    import asyncio

    try:
        return list(await asyncio.gather(*(asyncio.wrap_future(f) for f in futures)))
    except (ValueError, NotImplementedError) as error:  # the method refused the request (too long, unsupported)
        raise ApiError(400, str(error).splitlines()[0] if str(error) else type(error).__name__) from None


def _prompts(prompt: str | list[str] | list[int] | list[list[int]]) -> list[str | list[int]]:
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise ApiError(400, "prompt must not be empty", param="prompt")
    if all(isinstance(p, int) for p in prompt):
        return [list(prompt)]  # type: ignore[arg-type]
    return list(prompt)  # type: ignore[arg-type]


def _include_usage(body: SamplingBody) -> bool:
    return bool((body.stream_options or {}).get("include_usage"))


def _usage(answers: Sequence[Answer]) -> dict[str, int]:
    prompt = sum(a.prompt_tokens for a in answers)
    completion = sum(a.result.n_tokens for a in answers if a.result is not None)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _chat_logprobs(scored: TokenLogprobs, start: int, top: int) -> list[dict[str, Any]]:
    out = []
    for i in range(start, len(scored.token_ids)):
        alternatives = sorted((scored.top[i] or {}).items(), key=lambda kv: -kv[1])[:top]
        out.append({"token": scored.tokens[i], "logprob": scored.logprobs[i], "bytes": list(scored.tokens[i].encode()),
                    "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())} for t, v in alternatives]})
    return out


def _completion_choice(index: int, answer: Answer, max_tokens: int, top: int | None) -> dict[str, Any]:
    scored = answer.scored
    logprobs = None
    if answer.result is None:  # echo: the prompt, then the one greedy token when one was asked
        assert scored is not None
        text = answer.prompt_text
        tokens, offsets, values, tops = list(scored.tokens), list(scored.offsets), list(scored.logprobs), list(scored.top)
        finish = "length"
        if max_tokens:
            _, token, value = scored.next_top[0]
            offsets.append(len(text))
            text += token
            tokens.append(token)
            values.append(value)
            tops.append({t: v for _, t, v in scored.next_top})
        if top is not None:
            logprobs = {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}
        return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}
    if scored is not None and top is not None:
        start = answer.completion_start
        base = scored.offsets[start] if start < len(scored.offsets) else 0
        logprobs = {"tokens": scored.tokens[start:], "token_logprobs": scored.logprobs[start:], "top_logprobs": scored.top[start:],
                    "text_offset": [o - base for o in scored.offsets[start:]]}
    return {"index": index, "text": answer.result.text, "logprobs": logprobs, "finish_reason": answer.result.finish_reason}


def _chat_chunks(reply_id: str, created: int, model: str, answers: list[Answer], usage: bool) -> Iterator[dict]:
    base = {"id": reply_id, "object": "chat.completion.chunk", "created": created, "model": model}
    for index, answer in enumerate(answers):
        assert answer.result is not None
        yield base | {"choices": [{"index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
        for piece in answer.pieces:
            yield base | {"choices": [{"index": index, "delta": {"content": piece}, "finish_reason": None}]}
        yield base | {"choices": [{"index": index, "delta": {}, "finish_reason": answer.result.finish_reason}]}
    if usage:
        yield base | {"choices": [], "usage": _usage(answers)}


def _completion_chunks(reply_id: str, created: int, model: str, answers: list[Answer], usage: bool) -> Iterator[dict]:
    base = {"id": reply_id, "object": "text_completion", "created": created, "model": model}
    for index, answer in enumerate(answers):
        assert answer.result is not None
        for piece in answer.pieces:
            yield base | {"choices": [{"index": index, "text": piece, "logprobs": None, "finish_reason": None}]}
        yield base | {"choices": [{"index": index, "text": "", "logprobs": None, "finish_reason": answer.result.finish_reason}]}
    if usage:
        yield base | {"choices": [], "usage": _usage(answers)}


def _sse(chunks: Iterator[dict]) -> StreamingResponse:
    def events() -> Iterator[str]:
        for chunk in chunks:
            yield f"data: {json.dumps(chunk)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


def _jsonable(args: Any) -> Any:
    from harness.config import to_dict

    try:
        return to_dict(args)
    except TypeError:
        return {}


@contextlib.contextmanager
def background_server(app: FastAPI, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve ``app`` from a thread on a free port for the ``with`` block; yields its ``/v1`` URL
    (tests and benchmarks talk to it over loopback)."""
    import socket

    import uvicorn

    with socket.socket() as probe:
        probe.bind((host, 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def serve(method: Method, served_name: str, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          max_batch: int = 32, batch_window_s: float = BATCH_WINDOW_S) -> None:
    """Serve until interrupted."""
    import uvicorn

    uvicorn.run(build_app(method, served_name, api_key, max_batch, batch_window_s), host=host, port=port, log_level="warning")
