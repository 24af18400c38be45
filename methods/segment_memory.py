"""Segment-level recurrence around a causal LM: the machinery ``hmt`` and ``rmt`` share.

A token stream ``[prefix token] + context + text`` is cut into segments of ``segment``
tokens. Each segment is run through the backbone with memory inputs (the subclass decides
which: HMT's memory prompt and sensory memory, RMT's memory tokens) given as input
embeddings, and produces (i) logits aligned with the segment's tokens — position i predicts
the stream's next token, so the last position of a segment predicts the first token of the
next — and (ii) the memory passed on. Memory, not attention, carries information across
segments, so compute per token and memory stay flat however long the input is.

Scoring (the ``stream`` capability) reads only the text's tokens; the context is processed
to build memory. Generation runs the prompt's full segments to build memory, then decodes
from the last (partial) segment with its memory inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness import zoo
from harness.api import GenerateRequest, GenerateResult, StreamRequest, StreamResult
from harness.errors import ArgumentError
from harness.lm import CausalLM
from harness.method import Method, MethodOptions
from harness.models import LoadedModel

MEMORY_FILE = "memory.pt"


class SegmentRecurrentLM(nn.Module):
    """A backbone plus memory parameters; ``forward_segment`` is the recurrence step."""

    def __init__(self, backbone: nn.Module, segment: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.segment = segment
        self.hidden = backbone.get_input_embeddings().weight.shape[1]

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.backbone.get_input_embeddings()(ids)

    def initial_state(self, batch: int) -> Any:
        raise NotImplementedError

    def forward_segment(self, ids: torch.Tensor, state: Any, search: bool = True) -> tuple[torch.Tensor, Any]:
        """(logits aligned with ``ids``, the next state) for one segment of token ids (B, l)."""
        raise NotImplementedError

    def prefix_embeddings(self, state: Any, batch: int) -> torch.Tensor:
        """What precedes a segment's tokens (used for generation)."""
        raise NotImplementedError

    def memory_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("backbone.")}

    def stream_loss(self, ids: torch.Tensor, search: bool = True, scored: torch.Tensor | None = None) -> torch.Tensor:
        """Mean next-token cross-entropy over a (B, T) batch, unrolled segment by segment (BPTT);
        ``scored`` (B, T − 1, bool) picks the targets the mean reads (default: all)."""
        state = self.initial_state(ids.shape[0])
        losses, count = [], 0
        for start in range(0, ids.shape[1] - 1, self.segment):
            chunk = ids[:, start : start + self.segment]
            targets = ids[:, start + 1 : start + self.segment + 1]
            logits, state = self.forward_segment(chunk, state, search)
            logits = logits[:, : targets.shape[1]]
            token_losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="none")
            if scored is not None:
                keep = scored[:, start : start + targets.shape[1]].reshape(-1)
                token_losses = token_losses[keep]
            losses.append(token_losses.sum())
            count += token_losses.numel()
        return torch.stack(losses).sum() / max(1, count)


def logits_of(backbone: nn.Module, embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, last hidden states) of the backbone on input embeddings."""
    out = backbone(inputs_embeds=embeds, output_hidden_states=True, use_cache=False)
    return out.logits, out.hidden_states[-1]


def memory_folder(loaded: LoadedModel, checkpoint: str) -> Path | None:
    """The folder holding trained memory weights: ``checkpoint`` (a zoo model), else the run's model."""
    name = checkpoint or loaded.identity.name
    entry = zoo.zoo().get(name)
    if entry is None:
        raise ArgumentError(f"no zoo model '{name}' (make one with: harness train hmt / harness train rmt)")
    folder = Path(entry.path) if entry.kind == "local" and entry.path else None
    return folder if folder is not None and (folder / MEMORY_FILE).is_file() else None


class SegmentMemoryMethod(Method):
    """Stream scoring and generation through a ``SegmentRecurrentLM`` (one request at a time)."""

    wrapper: SegmentRecurrentLM
    kind: str = ""

    def __init__(self, model: LoadedModel, args: Any, options: MethodOptions) -> None:
        super().__init__(model, args, options)
        self.lm = CausalLM(model, self.cost, 1, None, options.seed, False)
        self.wrapper = self.build(model.model, args).to(model.device)
        if args.untrained and args.checkpoint:
            raise ArgumentError("untrained=true runs random memory: it takes no checkpoint")
        # untrained=true is the ablation: random memory even around a backbone trained with its own.
        folder = None if args.untrained else memory_folder(model, args.checkpoint)
        self.trained_from = None
        if folder is not None:
            meta = zoo.recipe(folder) or {}
            if meta.get("method") != self.kind:
                raise ArgumentError(f"'{folder.name}' holds {meta.get('method')} memory, not {self.kind}")
            trained = meta.get("memory_config", {})
            mismatched = {k: (v, getattr(args, k)) for k, v in trained.items() if hasattr(args, k) and getattr(args, k) != v}
            if mismatched:
                raise ArgumentError(f"'{folder.name}' was trained with other settings: {mismatched} (trained, given)")
            self.wrapper.load_state_dict(torch.load(folder / MEMORY_FILE, map_location=model.device), strict=False)
            self.trained_from = folder.name
        elif not args.untrained:
            raise ArgumentError(f"{self.kind} must be trained: run 'harness train {self.kind}' and pass --method-arg "
                                f"checkpoint=<its zoo model> (or untrained=true for an ablation)")
        self.wrapper.eval()

    def build(self, backbone: nn.Module, args: Any) -> SegmentRecurrentLM:
        raise NotImplementedError

    @torch.inference_mode()
    def score_stream(self, requests: Sequence[StreamRequest]) -> list[StreamResult]:
        results = []
        for request in requests:
            context = self.lm.encode(request.context, add_special_tokens=False) if request.context else []
            text = self.lm.encode(request.text, add_special_tokens=False)
            stream = torch.tensor([[self.lm.prefix_token_id, *context, *text]], device=self.loaded.device)
            first_scored = 1 + len(context)  # stream position of the first text token
            state, logprob, segments = self.wrapper.initial_state(1), 0.0, 0
            for start in range(0, stream.shape[1] - 1, self.wrapper.segment):
                chunk = stream[:, start : start + self.wrapper.segment]
                logits, state = self.wrapper.forward_segment(chunk, state)
                segments += 1
                targets = stream[0, start + 1 : start + chunk.shape[1] + 1]
                positions = torch.arange(start + 1, start + 1 + targets.shape[0], device=stream.device)
                keep = positions >= first_scored
                if keep.any():
                    logp = torch.log_softmax(logits[0, : targets.shape[0]].float(), dim=-1)
                    logprob += float(logp[keep].gather(1, targets[keep, None]).sum())
                self.cost.forward_passes += 1
                self.cost.tokens_processed += int(chunk.shape[1])
            self.cost.tokens_scored += len(text)
            self.cost.model_calls += 1
            results.append(StreamResult(logprob, len(text), self.wrapper.segment, self.wrapper.segment, segments))
        return results

    @torch.inference_mode()
    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        results = []
        for request in requests:
            ids = self.lm.prompt_tokens(request)
            stream = torch.tensor([ids], device=self.loaded.device)
            state = self.wrapper.initial_state(1)
            full = (stream.shape[1] - 1) // self.wrapper.segment * self.wrapper.segment
            for start in range(0, full, self.wrapper.segment):
                _, state = self.wrapper.forward_segment(stream[:, start : start + self.wrapper.segment], state)
            tail = stream[:, full:]
            embeds = torch.cat([self.wrapper.prefix_embeddings(state, 1), self.wrapper.embed(tail)], dim=1)
            output = self.wrapper.backbone.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long,
                                                    device=embeds.device), max_new_tokens=request.max_new_tokens, do_sample=False,
                                                    pad_token_id=self.lm.tokenizer.pad_token_id or self.lm.tokenizer.eos_token_id)
            result = self.lm.answer(output[0].tolist(), request.until)
            self.cost.tokens_generated += result.n_tokens
            self.cost.model_calls += 1
            results.append(result)
        return results

    def describe(self) -> dict[str, Any]:
        params = sum(p.numel() for p in self.wrapper.memory_state_dict().values())
        backbone = sum(p.numel() for p in self.wrapper.backbone.parameters())
        return {"checkpoint": self.trained_from, "untrained": self.trained_from is None, "memory_parameters": params,
                "memory_parameter_share": params / backbone}
