"""Rolling (stream) scoring: the log-likelihood of long texts in windows, for perplexity.

Windows follow lm-eval's ``get_rolling_token_windows``; windows from all requests are
batched by length, and the output head runs only on the scored positions, in chunks, so
memory stays bounded even for 262K-word vocabularies and 32K windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from harness.api import StreamRequest, StreamResult
from harness.batching import BatchedModel


@dataclass(frozen=True)
class Window:
    """One forward pass of a rolling score: the model's input and the tokens it scores."""

    request: int
    tokens: list[int]  # model input
    targets: list[int]  # the last len(targets) inputs' next tokens


class RollingScoring(BatchedModel):
    """``score_stream`` over one batched model."""

    def windows(self, request: StreamRequest, index: int = 0) -> list[Window]:
        """Rolling windows over ``context + text`` scoring only the text's tokens.

        With no context and stride == window this is exactly lm-eval's
        ``get_rolling_token_windows(context_len=1)``: the first window scores ``window``
        tokens after the prefix token, each later window the next ``stride`` tokens with the
        ``window - stride`` tokens before them as context.
        """
        window = request.window or self.max_length
        stride = request.stride or window
        if not 1 <= stride <= window <= self.max_length:
            raise ValueError(f"need 1 <= stride ({stride}) <= window ({window}) <= context length ({self.max_length})")
        context = self.encode(request.context, add_special_tokens=False)[-window:] if request.context else []
        text = self.encode(request.text, add_special_tokens=False)
        full = [self.prefix_token_id, *context, *text]
        out: list[Window] = []
        start = len(context) + 1
        step = window if not context else stride
        while start < len(full):
            end = min(start + step, len(full))
            first_input = max(0, end - 1 - window)
            out.append(Window(index, full[first_input : end - 1], full[start:end]))
            start, step = end, stride
        return out

    @torch.inference_mode()
    def score_stream(self, requests: Sequence[StreamRequest]) -> list[StreamResult]:
        windows = [w for i, r in enumerate(requests) for w in self.windows(r, i)]
        order = sorted(range(len(windows)), key=lambda i: (-len(windows[i].tokens), i))
        totals = [0.0] * len(requests)
        with tqdm(total=sum(len(w.targets) for w in windows), desc="stream", unit="tok",
                  disable=not self.show_progress or not windows, leave=False) as bar:
            for batch in self._batches([len(windows[i].tokens) for i in order]):
                chosen = [windows[order[i]] for i in batch]
                for window, logprob in zip(chosen, self._score_windows(chosen), strict=True):
                    totals[window.request] += logprob
                bar.update(sum(len(w.targets) for w in chosen))
        self.cost.model_calls += len(requests)
        results = []
        for i, request in enumerate(requests):
            mine = [w for w in windows if w.request == i]
            width = request.window or self.max_length
            results.append(StreamResult(totals[i], sum(len(w.targets) for w in mine), width, request.stride or width, len(mine)))
        return results

    def _score_windows(self, windows: Sequence[Window]) -> list[float]:
        # Right padding with no attention mask, as lm-eval does: real positions never
        # attend to the padding that follows them.
        width = max(len(w.tokens) for w in windows)
        input_ids = torch.full((len(windows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        for row, w in enumerate(windows):
            input_ids[row, : len(w.tokens)] = torch.tensor(w.tokens)
        hidden = self.model.get_decoder()(input_ids=input_ids.to(self.device), use_cache=False).last_hidden_state
        self.cost.forward_passes += 1
        self.cost.tokens_processed += sum(len(w.tokens) for w in windows)
        totals = []
        for row, w in enumerate(windows):
            n, length = len(w.targets), len(w.tokens)
            targets = torch.tensor(w.targets, device=self.device)
            totals.append(sum(float(lp.sum()) for lp, _ in self._target_logprobs(hidden[row, length - n : length], targets)))
            self.cost.tokens_scored += n
        return totals
