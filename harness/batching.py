"""Batched forward passes over one model: the shared state and helpers of scoring and generation.

``BatchedModel`` holds what every batched request type needs: the model, its cost counter,
the batch size (a count, or ``auto``: a token budget per batch), the context length, and
the helpers that sort requests into batches, left-pad them and apply the output head.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from harness import progress
from harness.method import Cost
from harness.models import LoadedModel
from harness.tokenization import PromptEncoder

HEAD_CHUNK = 1024  # positions per output-head chunk in rolling scoring
CPU_TOKEN_BUDGET = 2048  # tokens per batch with --batch-size auto on CPU (bigger batches measured slower)
CUDA_TOKEN_BUDGET = 65536
# Generation batches, with --batch-size auto: rows x (prompt + new tokens) under a larger budget
# than scoring's, since a decoding step's cost grows slowly with its rows. SmolLM2 on 2 cores,
# one step over a 300-token cache: 17 tok/s at 1 row, 88 at 8, 182 at 32, 177 at 64.
CPU_GENERATION_BUDGET, CPU_GENERATION_ROWS = 16384, 32
CUDA_GENERATION_BUDGET = 262144
# A generation batch's prompts are prefilled in column slices of about this many tokens on a
# CPU (SmolLM2, 100-token prompts: 693 tok/s over 32 rows at once, 899 over 8).
CPU_PREFILL_TOKENS = 1024


class BatchedModel(PromptEncoder):
    """One loaded model, its cost counter and batching settings."""

    def __init__(
        self,
        loaded: LoadedModel,
        cost: Cost,
        batch_size: int | Literal["auto"] = "auto",
        max_length: int | None = None,
        seed: int = 0,
        show_progress: bool = True,
    ) -> None:
        super().__init__(loaded)
        self.model = loaded.model
        self.device = loaded.device
        self.cost = cost
        self.batch_size = batch_size
        self.max_length = int(max_length or loaded.max_length)
        self.seed = seed
        self.show_progress = show_progress
        self.token_budget = CUDA_TOKEN_BUDGET if self.device.type == "cuda" else CPU_TOKEN_BUDGET
        config = self.model.config
        # Packed continuations (loglikelihood) need a custom 4D attention mask, which sdpa and
        # eager attention take as given; a sliding-window layer would ignore its window under it.
        self.pack_continuations = getattr(config, "_attn_implementation", None) in ("sdpa", "eager")
        self.sliding_window = getattr(config, "sliding_window", None) if getattr(config, "use_sliding_window", True) else None

    def progress(self, total: int, desc: str) -> tqdm:
        """The progress bar of one batched call: transient, hidden when off or nothing is to do."""
        return progress.bar(total=total, desc=desc, unit="req", disable=not self.show_progress or total == 0, leave=False)

    def _batches(self, lengths: Sequence[int], token_budget: int | None = None, max_rows: int | None = None) -> Iterator[list[int]]:
        """Indices (already sorted longest first by the caller) grouped into batches: ``batch_size``
        rows, or with ``auto`` as many as fit ``token_budget`` (default: the scoring budget) and
        ``max_rows``."""
        budget = token_budget or self.token_budget
        batch: list[int] = []
        longest = 0
        for index in range(len(lengths)):
            longest = max(longest, lengths[index]) if batch else lengths[index]
            if batch and (
                len(batch) >= self.batch_size
                if isinstance(self.batch_size, int)
                else (len(batch) + 1) * longest > budget or (max_rows is not None and len(batch) >= max_rows)
            ):
                yield batch
                batch, longest = [], lengths[index]
            batch.append(index)
        if batch:
            yield batch

    def _left_pad(self, sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask, padded on the left so every row ends together."""
        width = max(len(s) for s in sequences)
        input_ids = torch.full((len(sequences), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, sequence in enumerate(sequences):
            input_ids[row, width - len(sequence) :] = torch.tensor(sequence)
            mask[row, width - len(sequence) :] = 1
        return input_ids, mask

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.model.get_output_embeddings()(hidden)
        softcap = getattr(self.model.config, "final_logit_softcapping", None)
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        return logits.float()

    def _target_logprobs(self, hidden: torch.Tensor, targets: torch.Tensor, greedy: bool = False):
        """Per chunk of ``HEAD_CHUNK`` positions: log p(target) at each position of ``hidden``
        (positions, d) and, with ``greedy``, whether the target is the argmax (else None).
        The head runs a chunk at a time because a vocabulary-wide row per position is the
        largest allocation of a long window."""
        for offset in range(0, len(targets), HEAD_CHUNK):
            logprobs = F.log_softmax(self._logits(hidden[offset : offset + HEAD_CHUNK]), dim=-1)
            part = targets[offset : offset + HEAD_CHUNK]
            yield logprobs.gather(-1, part[:, None])[:, 0], (logprobs.argmax(dim=-1) == part) if greedy else None
