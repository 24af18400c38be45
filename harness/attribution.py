"""Zero-shot classification by label words, as a function attribution methods can take apart
(the explainability survey, PAPERS.md §11): of the input's token embeddings (gradient methods),
of which words are kept (perturbation methods), and with the attention it paid (attention
methods).

A request's prompt is ``template`` with the words joined by single spaces in place of
``{text}``; it is tokenized once (the tokenizer's special tokens included, as the model reads
a document), and each input token is assigned to the word whose characters it overlaps
(offsets from the fast tokenizer). A label's score is the summed log-probability of its tokens
after the prompt; the labels' probabilities are the softmax of those scores, so they are
normalised among the labels. Rows are left-padded with explicit positions so only the last
few positions' logits are computed. A word's score is the sum of its tokens' scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from harness.api import AttributeRequest
from harness.errors import ArgumentError
from harness.method import Cost
from harness.models import LoadedModel

TEXT = "{text}"


@dataclass(frozen=True)
class EncodedInput:
    """A request's prompt as token ids: before the input, the input, after it; each input
    token's word; each label's tokens."""

    before: tuple[int, ...]
    tokens: tuple[int, ...]
    after: tuple[int, ...]
    token_words: tuple[int, ...]
    labels: tuple[tuple[int, ...], ...]
    n_words: int

    @property
    def prompt(self) -> list[int]:
        return [*self.before, *self.tokens, *self.after]


def word_scores(token_scores: Sequence[float], token_words: Sequence[int], n_words: int) -> list[float]:
    """Per-word scores: the sum of the word's tokens' scores (0 for a word with no token)."""
    scores = [0.0] * n_words
    for score, word in zip(token_scores, token_words, strict=True):
        scores[word] += float(score)
    return scores


class LabelClassifier:
    """One causal LM classifying by label words; counts its passes into ``cost``."""

    def __init__(self, loaded: LoadedModel, cost: Cost, batch_rows: int = 16) -> None:
        self.loaded, self.model, self.tokenizer, self.cost = loaded, loaded.model, loaded.tokenizer, cost
        self.device = loaded.device
        self.batch_rows = batch_rows
        self.embedding = self.model.get_input_embeddings()

    # encoding -----------------------------------------------------------------------------------
    def encode(self, request: AttributeRequest, keep: Sequence[bool] | None = None) -> EncodedInput:
        """The request's prompt with the words where ``keep`` is true (all by default)."""
        if request.template.count(TEXT) != 1:
            raise ArgumentError(f"an attribution template needs exactly one {TEXT}: {request.template!r}")
        words = [w for i, w in enumerate(request.words) if keep is None or keep[i]]
        kept_index = [i for i in range(len(request.words)) if keep is None or keep[i]]
        head, tail = request.template.split(TEXT)
        text = " ".join(words)
        prompt = head + text + tail
        spans, position = [], len(head)
        for word in words:
            spans.append((position, position + len(word)))
            position += len(word) + 1
        encoded = self.tokenizer(prompt, return_offsets_mapping=True)
        before: list[int] = []
        inside: list[int] = []
        after: list[int] = []
        token_words: list[int] = []
        start, end = len(head), len(head) + len(text)
        region = before
        for token, (first, last) in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True):
            # In order: the template's head, then every token overlapping the input's characters
            # (a whitespace token between words goes to the next word), then the tail; special
            # tokens (no characters) stay in the part they come in.
            if region is not after and first < end and last > start and last > first:
                region = inside
                owner = next((k for k, (a, b) in enumerate(spans) if first < b and last > a), None)
                if owner is None:
                    owner = next((k for k, (a, _) in enumerate(spans) if a >= last), len(spans) - 1)
                inside.append(token)
                token_words.append(kept_index[owner])
            elif region is inside or (region is before and last > first and first >= end):
                region = after
                after.append(token)
            else:
                region.append(token)
        labels = tuple(tuple(self.tokenizer(label, add_special_tokens=False)["input_ids"]) for label in request.labels)
        if any(not label for label in labels):
            raise ArgumentError(f"a label of {request.labels} encodes to no tokens")
        return EncodedInput(tuple(before), tuple(inside), tuple(after), tuple(token_words), labels, len(request.words))

    # scoring -------------------------------------------------------------------------------------
    def _label_scores(self, rows: list[torch.Tensor], label_ids: list[tuple[int, ...]]) -> torch.Tensor:
        """Summed log-probability of each row's label tokens, the rows given as embeddings
        (prompt and label, shape (length, dim)); left-padded so only the last positions' logits
        are computed."""
        width = max(row.shape[0] for row in rows)
        keep = max(len(label) for label in label_ids) + 1
        dim = rows[0].shape[1]
        embeds = torch.zeros((len(rows), width, dim), dtype=rows[0].dtype, device=self.device)
        mask = torch.zeros((len(rows), width), dtype=torch.long, device=self.device)
        for r, row in enumerate(rows):
            embeds[r, width - row.shape[0] :] = row
            mask[r, width - row.shape[0] :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)  # (rows, keep, vocab): positions width-keep .. width-1
        self.cost.forward_passes += 1
        self.cost.tokens_processed += int(mask.sum())
        scores = []
        for r, label in enumerate(label_ids):
            # label token j sits at width - len + j and is predicted at width - len + j - 1
            offset = keep - len(label) - 1
            picked = logprobs[r, offset : offset + len(label)].gather(-1, torch.tensor(label, device=self.device)[:, None])
            scores.append(picked.sum())
        return torch.stack(scores)

    def _rows(self, prompt_embeds: torch.Tensor, encoded: EncodedInput) -> list[torch.Tensor]:
        return [torch.cat([prompt_embeds, self.embedding(torch.tensor(label, device=self.device))]) for label in encoded.labels]

    @torch.no_grad()
    def probabilities(self, encoded: Sequence[EncodedInput]) -> list[list[float]]:
        """The labels' probabilities for each encoded input, in batches of rows."""
        rows, labels, owners = [], [], []
        for index, item in enumerate(encoded):
            prompt = self.embedding(torch.tensor(item.prompt, device=self.device))
            for row, label in zip(self._rows(prompt, item), item.labels, strict=True):
                rows.append(row)
                labels.append(label)
                owners.append(index)
        scores: list[float] = []
        for start in range(0, len(rows), self.batch_rows):
            scores += self._label_scores(rows[start : start + self.batch_rows], labels[start : start + self.batch_rows]).tolist()
        out: list[list[float]] = [[] for _ in encoded]
        for owner, score in zip(owners, scores, strict=True):
            out[owner].append(score)
        return [torch.softmax(torch.tensor(s), dim=0).tolist() for s in out]

    def input_embeddings(self, encoded: EncodedInput) -> torch.Tensor:
        """The input tokens' embeddings, shape (1, tokens, dim): what gradient methods perturb."""
        return self.embedding(torch.tensor(encoded.tokens, device=self.device))[None].detach()

    def target_function(self, encoded: EncodedInput, target: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """p(target) as a function of the input tokens' embeddings (batch, tokens, dim), the
        prompt's other tokens held fixed: the forward function captum's gradient methods take."""
        with torch.no_grad():
            before = self.embedding(torch.tensor(encoded.before, device=self.device, dtype=torch.long))
            after = self.embedding(torch.tensor(encoded.after, device=self.device, dtype=torch.long))

        def probability(inputs: torch.Tensor) -> torch.Tensor:
            out = []
            for start in range(0, inputs.shape[0], max(1, self.batch_rows // len(encoded.labels))):
                chunk = inputs[start : start + max(1, self.batch_rows // len(encoded.labels))]
                rows, labels = [], []
                for x in chunk:
                    prompt = torch.cat([before, x, after])
                    rows += self._rows(prompt, encoded)
                    labels += list(encoded.labels)
                scores = self._label_scores(rows, labels).view(len(chunk), len(encoded.labels))
                out.append(torch.softmax(scores, dim=-1)[:, target])
            return torch.cat(out)

        return probability

    def words_function(self, request: AttributeRequest, target: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """p(target) as a function of which words are kept (batch, words) of 0/1, a removed word
        deleted from the text: the forward function of LIME, KernelSHAP and leave-one-out."""

        def probability(masks: torch.Tensor) -> torch.Tensor:
            encoded = [self.encode(request, [bool(v) for v in mask.tolist()]) for mask in masks.reshape(masks.shape[0], -1)]
            return torch.tensor([p[target] for p in self.probabilities(encoded)])

        return probability

    @torch.no_grad()
    def attentions(self, encoded: EncodedInput) -> tuple[torch.Tensor, ...]:
        """Each layer's attention over the prompt, (heads, length, length), eager kernel."""
        previous = self.model.config._attn_implementation
        self.model.set_attn_implementation("eager")
        try:
            out = self.model(input_ids=torch.tensor([encoded.prompt], device=self.device), output_attentions=True)
        finally:
            self.model.set_attn_implementation(previous)
        self.cost.forward_passes += 1
        self.cost.tokens_processed += len(encoded.prompt)
        return tuple(layer[0].float() for layer in out.attentions)
