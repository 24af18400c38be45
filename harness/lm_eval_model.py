"""A harness method as an lm-evaluation-harness ``LM``.

``HarnessLM`` answers lm-eval's ``loglikelihood``, ``loglikelihood_rolling`` and
``generate_until`` through any harness method, so our methods drop into
``lm_eval.simple_evaluate``; it is registered as lm-eval model ``harness``
(``model_args="method=base,model=smollm2-135m-instruct"``). The other direction, any lm-eval
task as a harness task, is ``tasks/lm_eval.py``.
"""

from __future__ import annotations

from typing import Any

from lm_eval.api.instance import Instance
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from harness.api import GenerateRequest, LoglikelihoodRequest, StreamRequest
from harness.method import Method


@register_model("harness")
class HarnessLM(LM):
    """An lm-eval ``LM`` answering through a harness method."""

    def __init__(self, method: Method | str = "base", **model_args: Any) -> None:
        super().__init__()
        self.method = method if isinstance(method, Method) else _method_from_args(method, **model_args)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> HarnessLM:
        from lm_eval.utils import simple_parse_args_string

        args = simple_parse_args_string(arg_string)
        extra = {k: v for k, v in (additional_config or {}).items() if k in ("batch_size", "device") and v is not None}
        return cls(**args, **extra)

    def loglikelihood(self, requests: list[Instance], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        answers = self.method.loglikelihood([LoglikelihoodRequest(*r.args[:2]) for r in requests])
        return [(a.logprob, a.is_greedy) for a in answers]

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        return [a.logprob for a in self.method.score_stream([StreamRequest(r.args[0]) for r in requests])]

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        return [a.text for a in self.method.generate([generate_request(*r.args[:2]) for r in requests])]


def generate_request(context: str, gen_kwargs: dict[str, Any]) -> GenerateRequest:
    """lm-eval's ``generate_until`` arguments as a harness request (lm-eval defaults)."""
    kwargs = dict(gen_kwargs or {})
    until = kwargs.get("until") or []
    until = (until,) if isinstance(until, str) else tuple(until)
    sampling = bool(kwargs.get("do_sample")) and float(kwargs.get("temperature", 1.0) or 0) > 0
    return GenerateRequest(
        prompt=context,
        max_new_tokens=int(kwargs.get("max_gen_toks", 256)),
        until=until,
        temperature=float(kwargs.get("temperature", 1.0)) if sampling else 0.0,
        top_p=float(kwargs.get("top_p", 1.0) or 1.0),
    )


def _method_from_args(method: str = "base", model: str | None = None, batch_size: Any = "auto", device: str = "auto",
                      dtype: str = "auto", seed: int = 0, **method_args: Any) -> Method:
    from harness import models, zoo
    from harness.config import build
    from harness.method import METHODS, MethodOptions
    from harness.runner import load_model, resolve_device

    method_cls = METHODS.get(method)
    device = resolve_device(device)
    resolved = models.resolve(model or zoo.DEFAULT_MODEL, models.resolve_dtype(dtype, device))
    args: Any = build(method_cls.Args, {k: v for k, v in method_args.items()}, f"method '{method}'")
    loaded = load_model(method_cls, resolved, device, args)
    size = batch_size if batch_size == "auto" else int(batch_size)
    return method_cls(loaded, args, MethodOptions(size, int(seed)))
