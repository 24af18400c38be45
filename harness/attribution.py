"""Zero-shot classification by label words, as a function attribution methods can take apart
(the explainability survey, PAPERS.md §11): of the input's token embeddings (gradient methods),
of which words are kept (perturbation methods), and with the attention it paid (attention
methods).

A request's prompt is ``template`` with the words joined by single spaces in place of
``{text}``; it is tokenized once (the tokenizer's special tokens included, as the model reads
a document), and each input token is assigned to the word whose characters it overlaps
(offsets from the fast tokenizer). A label's score is the summed log-probability of its tokens
after the prompt; the labels' probabilities are the softmax of those scores, so they are
normalised among the labels. A label's tokens are all predicted inside the prompt extended by
the label less its last token, so labels sharing that prefix are read from one row: single-token
labels (" No"/" Yes", " negative"/" positive" on the zoo's tokenizers) cost one row per input
rather than one per label, half the compute of scoring each label in its own row. Rows are
left-padded with explicit positions so only the last few positions' logits are computed. A
word's score is the sum of its tokens' scores.
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
    @staticmethod
    def label_rows(encoded: EncodedInput) -> list[tuple[tuple[int, ...], list[int]]]:
        """The rows an input is scored in: the prompt extended by each distinct label prefix (a
        label less its last token), with the labels read from that row. A label's tokens are all
        predicted inside prompt + prefix, so labels sharing a prefix share a row: every
        single-token label is read from the prompt alone, one row per input, not one per label."""
        rows: dict[tuple[int, ...], list[int]] = {}
        for index, label in enumerate(encoded.labels):
            rows.setdefault(label[:-1], []).append(index)
        return list(rows.items())

    def score_rows(self, rows: list[torch.Tensor], reads: list[list[tuple[int, ...]]]) -> list[torch.Tensor]:
        """Each row's read labels' summed log-probabilities, the rows given as embeddings (prompt
        and label prefix, shape (length, dim)); left-padded so only the last positions' logits are
        computed."""
        width = max(row.shape[0] for row in rows)
        keep = max(len(label) for labels in reads for label in labels)
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
        for r, labels in enumerate(reads):
            # label token j is predicted at the row's position width - len + j (the prompt's last
            # position predicts the first)
            picked = [logprobs[r, keep - len(label) :].gather(-1, torch.tensor(label, device=self.device)[:, None]).sum()
                      for label in labels]
            scores.append(torch.stack(picked))
        return scores

    def label_scores(self, prompts: Sequence[torch.Tensor], encoded: Sequence[EncodedInput]) -> list[torch.Tensor]:
        """Each label's summed log-probability after each prompt (given as embeddings, shape
        (length, dim)), a vector per prompt; the rows in batches of ``batch_rows``, longest first
        so a batch pads little (a sufficiency text of 5 words beside a 40-word comprehensiveness
        text would otherwise be padded to 40). Keeps the graph, so gradient methods
        differentiate through it."""
        rows, reads, owners = [], [], []
        for index, (prompt, item) in enumerate(zip(prompts, encoded, strict=True)):
            for prefix, labels in self.label_rows(item):
                rows.append(torch.cat([prompt, self.embedding(torch.tensor(prefix, device=self.device, dtype=torch.long))]))
                reads.append([item.labels[k] for k in labels])
                owners.append((index, labels))
        order = sorted(range(len(rows)), key=lambda r: -rows[r].shape[0])
        scored: list[torch.Tensor] = [torch.empty(0)] * len(rows)
        for start in range(0, len(rows), self.batch_rows):
            batch = order[start : start + self.batch_rows]
            for r, scores in zip(batch, self.score_rows([rows[r] for r in batch], [reads[r] for r in batch]), strict=True):
                scored[r] = scores
        out: list[list[torch.Tensor | None]] = [[None] * len(item.labels) for item in encoded]
        for (index, labels), scores in zip(owners, scored, strict=True):
            for k, score in zip(labels, scores, strict=True):
                out[index][k] = score
        return [torch.stack(row) for row in out]  # type: ignore[arg-type]

    def inputs_per_batch(self, encoded: EncodedInput) -> int:
        """How many variants of one input fill a batch of rows."""
        return max(1, self.batch_rows // len(self.label_rows(encoded)))

    @torch.no_grad()
    def probabilities(self, encoded: Sequence[EncodedInput]) -> list[list[float]]:
        """The labels' probabilities for each encoded input, in batches of rows."""
        prompts = [self.embedding(torch.tensor(item.prompt, device=self.device)) for item in encoded]
        return [torch.softmax(scores, dim=-1).tolist() for scores in self.label_scores(prompts, encoded)]

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
            prompts = [torch.cat([before, x, after]) for x in inputs]
            return torch.softmax(torch.stack(self.label_scores(prompts, [encoded] * len(prompts))), dim=-1)[:, target]

        return probability

    def words_function(self, request: AttributeRequest, target: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """p(target) as a function of which words are kept (batch, words) of 0/1, a removed word
        deleted from the text: the forward function of LIME, KernelSHAP and leave-one-out. It
        remembers the texts it has scored."""

        known: dict[tuple[str, ...], float] = {}

        def probability(masks: torch.Tensor) -> torch.Tensor:
            # KernelSHAP draws about a fifth of its coalitions more than once (its kernel favours
            # the smallest and largest), LIME up to a tenth (22% and 9-11% of 200 samples over 40
            # SST-2 or HateXplain texts), and removing either of two equal words leaves one text:
            # each distinct text is scored once per explanation.
            keeps = [[bool(v) for v in mask.tolist()] for mask in masks.reshape(masks.shape[0], -1)]
            texts = [tuple(w for w, kept in zip(request.words, keep, strict=True) if kept) for keep in keeps]
            new = {text: keep for text, keep in zip(texts, keeps, strict=True) if text not in known}
            scored = self.probabilities([self.encode(request, keep) for keep in new.values()]) if new else []
            known.update((text, p[target]) for text, p in zip(new, scored, strict=True))
            return torch.tensor([known[text] for text in texts])

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
