"""Models behind an API and ``harness serve``, end to end over loopback with the real ``openai``
client: the server answers chat and completion calls like the model in process; a remote model
scores and generates like the local one; retries, the request cache, bad requests and keys;
an MT-Bench judge behind the API; ``--model-arg`` loading options."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
import torch

from harness.api import ChatMessage, GenerateRequest, LoglikelihoodRequest
from harness.method import Cost, MethodOptions
from harness.serve import background_server, build_app
from tests.conftest import cli

pytest.importorskip("fastapi")


def base_method(loaded):
    from methods.base import BaseArgs, BaseMethod

    return BaseMethod(loaded, BaseArgs(), MethodOptions(show_progress=False))


@pytest.fixture(scope="module")
def tiny_server(tiny):
    """base × tiny-random-llama served with a key, and a counter of the requests that reached it."""
    app = build_app(base_method(tiny), "tiny-random-llama", api_key="secret-key")
    seen: list[str] = []
    failures: list[int] = []  # statuses to answer with before serving (injected faults)

    @app.middleware("http")
    async def count(request, call_next):
        from fastapi.responses import JSONResponse

        if request.url.path.startswith("/v1/") and request.method == "POST":
            seen.append(request.url.path)
            if failures:
                status = failures.pop(0)
                return JSONResponse({"error": {"message": "injected", "type": "server_error"}}, status_code=status,
                                    headers={"retry-after-ms": "1"})
        return await call_next(request)

    with background_server(app) as url:
        yield {"url": url, "seen": seen, "failures": failures, "app": app}


def remote_lm(url: str, tmp_path: Path, model: str = "tiny-random-llama", **options):
    from harness.remote import RemoteAddress, RemoteEndpoint, RemoteLM, RemoteOptions

    endpoint = RemoteEndpoint(RemoteAddress.parse(f"openai-compatible:{url}::{model}"),
                              RemoteOptions(request_cache=str(tmp_path / "cache.sqlite"), max_retries=3, **options))
    return RemoteLM(endpoint, Cost(), show_progress=False)


def client(url: str, key: str = "secret-key") -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0)


def test_serve_answers_chat_and_completions_as_the_model_does(tiny, tiny_server):
    from harness.lm import CausalLM

    local = CausalLM(tiny, Cost(), show_progress=False)
    api = client(tiny_server["url"])
    messages = (ChatMessage("system", "Be brief."), ChatMessage("user", "Name a colour."))
    want = local.generate([GenerateRequest(messages, 6, (), 0.0)])[0]
    chat = api.chat.completions.create(model="tiny-random-llama", messages=[{"role": m.role, "content": m.content} for m in messages],
                                       max_tokens=6, temperature=0, logprobs=True, top_logprobs=2)
    assert chat.choices[0].message.content == want.text
    assert chat.choices[0].finish_reason == want.finish_reason
    assert chat.usage.completion_tokens == want.n_tokens
    assert len(chat.choices[0].logprobs.content) >= 1 and len(chat.choices[0].logprobs.content[0].top_logprobs) == 2

    streamed = api.chat.completions.create(model="tiny-random-llama", messages=[{"role": m.role, "content": m.content} for m in messages],
                                           max_tokens=6, temperature=0, stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices) == want.text

    plain = local.generate([GenerateRequest("Once upon a time", 5, (), 0.0)])[0]
    completion = api.completions.create(model="tiny-random-llama", prompt="Once upon a time", max_tokens=5, temperature=0)
    assert completion.choices[0].text == plain.text
    sampled = api.completions.create(model="tiny-random-llama", prompt="Once upon a time", max_tokens=5, temperature=1.0, n=3)
    assert len(sampled.choices) == 3
    ids = tiny.tokenizer.encode("Once upon a time", add_special_tokens=False)
    assert api.completions.create(model="tiny-random-llama", prompt=ids, max_tokens=5, temperature=0).choices[0].text == plain.text
    pieces = [c.choices[0].text for c in api.completions.create(model="tiny-random-llama", prompt="Once upon a time", max_tokens=5,
                                                                temperature=0, stream=True) if c.choices]
    assert "".join(pieces) == plain.text

    card = api.models.list().data[0].model_dump()
    assert card["id"] == "tiny-random-llama" and card["harness"]["model"]["weights_sha256"] == tiny.identity.weights_sha256


def test_serve_rejects_bad_requests_and_keys(tiny_server):
    import httpx

    url = tiny_server["url"]
    with pytest.raises(openai.AuthenticationError):
        client(url, key="wrong").completions.create(model="tiny-random-llama", prompt="a", max_tokens=1)
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client(url).completions.create(model="gpt-9", prompt="a", max_tokens=1)
    with pytest.raises(openai.BadRequestError, match="n must be"):
        client(url).completions.create(model="tiny-random-llama", prompt="a", max_tokens=1, n=99)
    with pytest.raises(openai.BadRequestError, match="context length"):
        client(url).completions.create(model="tiny-random-llama", prompt="x" * 2000, max_tokens=1, temperature=0, echo=True, logprobs=1)
    headers = {"authorization": "Bearer secret-key", "content-type": "application/json"}
    for body in (b"{not json", b'{"model": "tiny-random-llama"}', b'{"model": "tiny-random-llama", "messages": "hi"}'):
        answer = httpx.post(f"{url}/chat/completions", content=body, headers=headers)
        assert answer.status_code == 400 and set(answer.json()["error"]) == {"message", "type", "param", "code"}
    assert httpx.get(url.removesuffix("/v1") + "/health").json()["status"] == "ok"  # no key needed


def test_remote_model_scores_and_generates_like_the_local_one(tiny, tiny_server, tmp_path):
    from harness.lm import CausalLM

    local = CausalLM(tiny, Cost(), show_progress=False)
    requests = [LoglikelihoodRequest("The cat sat on the", " mat"), LoglikelihoodRequest("Answer: ", "yes"),
                LoglikelihoodRequest("Question: 2+2=", " 4, obviously")]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TEST_SERVE_KEY", "secret-key")
        remote = remote_lm(tiny_server["url"], tmp_path, api_key_env="TEST_SERVE_KEY")
        got, want = remote.loglikelihood(requests), local.loglikelihood(requests)
        for g, w in zip(got, want, strict=True):
            assert g.logprob == pytest.approx(w.logprob, abs=1e-4) and g.n_tokens == w.n_tokens and g.is_greedy == w.is_greedy
        assert remote.endpoint.echoes_logprobs()

        priced = remote_lm(tiny_server["url"], tmp_path, api_key_env="TEST_SERVE_KEY", input_price_per_mtok=2.0, output_price_per_mtok=8.0)
        priced.generate([GenerateRequest("Price me", 3, (), 0.0)])
        counters = priced.cost.counters
        assert counters["api_cost_usd"] == pytest.approx((2.0 * counters["api_prompt_tokens"] + 8.0 * counters["api_completion_tokens"]) / 1e6)
        assert counters["api_prompt_tokens"] > 0 and counters["api_requests"] == 1

        greedy = GenerateRequest("Hello", 4, (), 0.0)
        sampled = GenerateRequest("Hello", 4, (), 1.0)
        first = remote.generate([greedy, sampled, sampled, sampled])
        assert first[0].text == local.generate([greedy])[0].text
        sent = len(tiny_server["seen"])
        again = remote_lm(tiny_server["url"], tmp_path, api_key_env="TEST_SERVE_KEY")
        second = again.generate([greedy, sampled, sampled, sampled])
        assert len(tiny_server["seen"]) == sent  # the cache answered everything: no request reached the server
        assert [r.text for r in second] == [r.text for r in first]
        assert again.cost.counters["api_cache_hits"] == 4 and "api_requests" not in again.cost.counters
        assert remote.cost.counters["api_requests"] == 4 + len(requests)  # three samples of one prompt are three requests


def test_remote_client_retries_rate_limits_and_server_errors(tiny_server, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "secret-key")
    remote = remote_lm(tiny_server["url"], tmp_path)
    tiny_server["failures"][:] = [429, 500, 503]
    result = remote.generate([GenerateRequest("Retry me", 3, (), 0.0)])[0]
    assert result.n_tokens >= 1 and not tiny_server["failures"]
    assert remote.cost.counters["api_retried_responses"] == 3 and remote.cost.counters["api_requests"] == 1
    tiny_server["failures"][:] = [500] * 5  # more failures than retries: one clear error
    from harness.remote import RemoteError

    with pytest.raises(RemoteError, match="500"):
        remote.generate([GenerateRequest("Fail me", 3, (), 0.0)])
    tiny_server["failures"].clear()


def test_cli_rejects_what_a_remote_model_cannot_do(tiny_server, runs_dir, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "secret-key")
    model = f"openai-compatible:{tiny_server['url']}::tiny-random-llama"
    cases = [
        (["--task", "mt-bench", "--method", "quantize"], "needs the model's weights"),
        (["--task", "wikitext103"], "does not provide"),
        (["--task", "pubmedqa", "--chat-template", "on"], "--chat-template off"),
        (["--task", "pubmedqa", "--model-arg", "max_concurency=2"], "did you mean 'max_concurrency'"),
    ]
    for argv, message in cases:
        assert cli("run", "--model", model, "--output-dir", runs_dir, "--quiet", *argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    monkeypatch.delenv("OPENAI_API_KEY")
    for name, message in (("openai:gpt-4o-mini", "needs an API key"), ("openai-compatible:http://127.0.0.1:9::m", "cannot reach"),
                          ("openai-compatible:nowhere", "openai-compatible:<base_url>::<model>")):
        assert cli("run", "--task", "pubmedqa", "--model", name, "--output-dir", runs_dir, "--quiet") == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert not runs_dir.exists() or not any(p.is_dir() for p in runs_dir.iterdir())  # nothing half-written


def test_mt_bench_with_its_judge_behind_the_api(tiny_server, runs_dir, monkeypatch):
    import tasks.mt_bench as mt_bench
    from harness.runner import RunRequest, run

    monkeypatch.setattr(mt_bench, "JUDGMENT_MAX_TOKENS", 12)  # the tiny judge's context is 512 tokens
    monkeypatch.setenv("OPENAI_API_KEY", "secret-key")
    judge = f"openai-compatible:{tiny_server['url']}::tiny-random-llama"
    sent = len(tiny_server["seen"])
    outcome = run(RunRequest(task="mt-bench", model="tiny-random-llama", task_args={"judge": judge, "max_new_tokens": 4},
                             limit=2, output_dir=runs_dir, show_progress=False))
    samples = [json.loads(line) for line in (outcome.path / "samples.jsonl").read_text().splitlines()]
    assert len(tiny_server["seen"]) - sent == 2 and all("judgment" in s for s in samples)
    assert all(s["judge_unparsed"] == int(s["rating"] is None) for s in samples)
    assert "judge_unparsed_rate" in outcome.results["metrics"]
    assert outcome.results["cost"]["judge_api_requests"] == 2
    assert json.loads((outcome.path / "spec.json").read_text())["auxiliary"]["judge"]["kind"] == "api"


def test_fastchat_rating_patterns():
    from tasks.mt_bench import parse_rating

    assert parse_rating("Good answer. Rating: [[7]]") == 7.0
    assert parse_rating("I'd say [8.5] overall") == 8.5
    assert parse_rating("Rating: [[6]] not [9]") == 6.0
    assert parse_rating("no rating here") is None


def test_continuation_boundary_inside_a_token():
    from harness.remote import continuation_logprob

    echoed = {"tokens": ["The", " cat", "s", " sat", "!"], "token_logprobs": [None, -1.0, -2.0, -3.0, -9.0],
              "text_offset": [0, 3, 7, 8, 12], "top_logprobs": [None, {" cat": -1.0}, {"s": -2.0}, {" sit": -1.0}, {"!": -9.0}]}
    # context "The ca", continuation "ts sat": " cat" straddles the boundary and counts to the continuation
    result = continuation_logprob(echoed, boundary=6, end=12)
    assert result.logprob == -6.0 and result.n_tokens == 3 and not result.is_greedy
    assert continuation_logprob(echoed, boundary=7, end=12).logprob == -5.0


def test_model_args_loading_options(tiny, runs_dir, capsys):
    from harness import models
    from harness.runner import RunRequest, prepare

    plain = models.resolve("tiny-random-llama")
    eager = models.resolve("tiny-random-llama", model_args={"attn_implementation": "eager"})
    assert eager.identity.load_options == (("attn_implementation", "eager"),) and "load_options" not in plain.identity.as_dict()
    base = dict(task="pubmedqa", model="tiny-random-llama", limit=2, output_dir=runs_dir)
    assert prepare(RunRequest(**base)).spec.run_id != prepare(RunRequest(**base, model_args={"attn_implementation": "eager"})).spec.run_id
    assert prepare(RunRequest(**base, model_args={"device_map": "auto"})).spec.run_id == prepare(RunRequest(**base)).spec.run_id
    from harness import sweep

    grid = sweep.grid_from_cli(["pubmedqa"], [], ["tiny-random-llama"], [], [], [], 2, "auto", "auto", ["attn_implementation=eager"])
    cell = sweep.cells_of(grid, runs_dir, None)[0]
    assert "--model-arg attn_implementation=eager" in sweep.command_of(cell)
    assert prepare(cell).spec.run_id == prepare(RunRequest(**base, model_args={"attn_implementation": "eager"})).spec.run_id

    # A split: a memory budget that holds the embeddings and the head, the layers offloaded to disk.
    split = {"device_map": "auto", "max_memory": "cpu:250000", "offload_folder": str(runs_dir.parent / "offload")}
    mapped = models.load(models.resolve("tiny-random-llama", model_args=split))
    assert set(mapped.model.hf_device_map.values()) == {"cpu", "disk"}
    ids = torch.tensor([[5, 6, 7, 8]])
    assert torch.allclose(mapped.model(ids).logits, tiny.model(ids).logits, atol=1e-6)
    # Accelerate's disk offloading of the whole model (Endor's baseline), which auto never picks without a GPU.
    on_disk = models.load(models.resolve("tiny-random-llama", model_args={"device_map": "disk"}))
    assert set(on_disk.model.hf_device_map.values()) == {"disk"}
    assert torch.allclose(on_disk.model(ids).logits, tiny.model(ids).logits, atol=1e-6)
    capsys.readouterr()

    for args, message in ((["--model-arg", "revison=main"], "did you mean 'revision'"),
                          (["--model-arg", "quantization=3bit"], "quantization must be 8bit or 4bit"),
                          (["--model-arg", "device_map=everywhere"], "device_map must be"),
                          (["--model-arg", "max_memory=lots"], "max_memory must read like"),
                          (["--model-arg", "revision=v1.0"], "pins a Hugging Face hub model")):
        assert cli("run", "--task", "pubmedqa", "--model", "tiny-random-llama", "--output-dir", runs_dir, "--quiet", *args) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_run_against_serve_reproduces_a_local_pubmedqa_run(smollm2, runs_dir):
    """The issue's acceptance check: harness run through harness serve (SmolLM2, loglikelihood
    through echo + logprobs) gives the local run's answers, item by item."""
    from harness.runner import RunRequest, run

    with background_server(build_app(base_method(smollm2), "smollm2")) as url:
        remote = run(RunRequest(task="pubmedqa", model=f"openai-compatible:{url}::smollm2", limit=20, output_dir=runs_dir,
                                model_args={"max_concurrency": 4, "request_cache": str(runs_dir.parent / "cache.sqlite")},
                                show_progress=False))
    local = run(RunRequest(task="pubmedqa", limit=20, output_dir=runs_dir, show_progress=False))

    def samples(outcome):
        return {s["doc_id"]: s for s in map(json.loads, (outcome.path / "samples.jsonl").read_text().splitlines())}

    got, want = samples(remote), samples(local)
    assert got.keys() == want.keys() and len(got) == 20
    for doc_id, sample in want.items():
        assert got[doc_id]["pred"] == sample["pred"]
        assert got[doc_id]["logprobs"] == pytest.approx(sample["logprobs"], abs=1e-3)
    assert remote.results["metrics"]["acc"]["value"] == local.results["metrics"]["acc"]["value"]
    spec = json.loads((remote.path / "spec.json").read_text())
    assert spec["model"]["kind"] == "api" and spec["model"]["architecture"].startswith("base:smollm2-135m-instruct@")
    assert remote.results["cost"]["api_requests"] == 60


def test_publish_reproduce_command_carries_model_args_and_no_api_dtype(runs_dir):
    """The published 'command' gives the run id again: identity loading options become --model-arg;
    a model behind an API gets no --dtype (it has none to choose)."""
    import dataclasses

    from harness.cli import build_parser
    from harness.config import parse_pairs
    from harness.runner import RunRequest, prepare
    from reports.publish import reproduce_argv

    spec = prepare(RunRequest(task="pubmedqa", model="tiny-random-llama", limit=2, output_dir=runs_dir,
                              model_args={"attn_implementation": "eager"})).spec
    args = build_parser().parse_args(reproduce_argv(spec, ["cpu"])[1:])
    again = RunRequest(task=args.task, model=args.model, model_args=parse_pairs(args.model_arg, "--model-arg"), limit=args.limit,
                       dtype=args.dtype, output_dir=runs_dir)
    assert prepare(again).spec.run_id == spec.run_id
    remote = dataclasses.replace(spec, model=spec.model | {"kind": "api", "dtype": "remote"})
    assert "--dtype" not in reproduce_argv(remote, ["cpu"])
