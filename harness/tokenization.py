"""Prompt tokenization as lm-evaluation-harness's ``hf`` backend does it.

``encode`` is lm-eval's ``tok_encode`` (the tokenizer's special-token default, no second BOS),
``encode_pairs`` its ``_encode_pair`` batched over many requests, and ``prompt_tokens`` the
token ids a generation request decodes from (the chat template when the model has one).
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.api import ChatMessage, GenerateRequest
from harness.models import LoadedModel


class PromptEncoder:
    """A loaded model's tokenizer, used the way lm-eval uses it."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        self.prefix_token_id = loaded.prefix_token_id
        self._bos_text = self.tokenizer.decode([self.prefix_token_id]) if self.prefix_token_id is not None else None
        self._special_texts = [t.content for t in getattr(self.tokenizer, "added_tokens_decoder", {}).values()
                               if t.special and t.content]

    def encode(self, text: str, add_special_tokens: bool | None = None) -> list[int]:
        """lm-eval's ``tok_encode``: the tokenizer's own special-token default, except that a
        string already starting with the BOS text gets no second BOS."""
        if add_special_tokens is None:
            add_special_tokens = not (self._bos_text and text.startswith(self._bos_text))
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens)

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        """The chat template's text; a final assistant message is left open, to be continued."""
        chat = [{"role": m.role, "content": m.content} for m in messages]
        if messages and messages[-1].role == "assistant":
            return self.tokenizer.apply_chat_template(chat, tokenize=False, continue_final_message=True)
        return self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)

    def context_text(self, context: str, chat: bool) -> str:
        """A loglikelihood context as the model reads it: inside a user turn when ``chat`` asks and the model has a template."""
        if chat and self.loaded.has_chat_template:
            return self.render_chat([ChatMessage("user", context)])
        return context

    def encode_many(self, texts: Sequence[str], add_special_tokens: bool | None = None) -> list[list[int]]:
        """``encode`` for many texts in one batched tokenizer call."""
        flags = [add_special_tokens if add_special_tokens is not None else not (self._bos_text and t.startswith(self._bos_text))
                 for t in texts]
        out: list[list[int]] = [[] for _ in texts]
        for flag in set(flags):
            chosen = [i for i, f in enumerate(flags) if f == flag]
            ids = self.tokenizer([texts[i] for i in chosen], add_special_tokens=flag)["input_ids"]
            for i, tokens in zip(chosen, ids, strict=True):
                out[i] = list(tokens)
        return out

    def encode_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        """lm-eval's ``_encode_pair`` (trailing context spaces move to the continuation) for many
        requests: each distinct context tokenized once, everything in batched calls. A text-game
        turn's forty commands share one long prompt, and encoding it twice per command was most
        of a turn's time on a GPU."""
        split = []
        for context, continuation in pairs:
            n_spaces = len(context) - len(context.rstrip())
            split.append((context[:-n_spaces], context[-n_spaces:] + continuation) if n_spaces else (context, continuation))
        out: list[tuple[list[int], list[int]] | None] = [None] * len(pairs)
        bare = [i for i, (context, _) in enumerate(split) if context == ""]
        for i, tokens in zip(bare, self.encode_many([split[i][1] for i in bare], add_special_tokens=False), strict=True):
            out[i] = (tokens[:1], tokens[1:]) if tokens and tokens[0] == self.prefix_token_id else ([self.prefix_token_id], tokens)
        groups: dict[str, list[int]] = {}
        for i, (context, _) in enumerate(split):
            if context != "":
                groups.setdefault(context, []).append(i)
        contexts = list(groups)
        for context, tokens in zip(contexts, self.encode_many(contexts), strict=True):
            members = groups[context]
            tails = self._continuations_after_last_special(context, tokens, [split[i][1] for i in members]) if len(members) > 1 else None
            if tails is None:
                wholes = self.encode_many([context + split[i][1] for i in members])
                tails = [whole[len(tokens):] for whole in wholes]
            for i, tail in zip(members, tails, strict=True):
                out[i] = (tokens, tail)
        return out  # type: ignore[return-value]

    def _continuations_after_last_special(self, context: str, context_tokens: list[int],
                                          continuations: Sequence[str]) -> list[list[int]] | None:
        """The continuations' tokens after ``context``, from encoding only the context's text from
        its last special token on (a fast tokenizer splits its input at added tokens and encodes
        the pieces independently), checked against the full encoding for the first continuation;
        None when that check fails or the context holds no special token."""
        start = max((context.rfind(token) for token in self._special_texts), default=-1)
        if start <= 0:
            return None
        tail = context[start:]
        tail_tokens = self.encode(tail, add_special_tokens=False)
        if context_tokens[-len(tail_tokens):] != tail_tokens:
            return None
        wholes = self.encode_many([tail + c for c in continuations], add_special_tokens=False)
        if any(w[: len(tail_tokens)] != tail_tokens for w in wholes):
            return None
        out = [w[len(tail_tokens):] for w in wholes]
        if self.encode(context + continuations[0])[len(context_tokens):] != out[0]:
            return None
        return out

    def prompt_tokens(self, request: GenerateRequest) -> list[int]:
        """The token ids a generation request decodes from: its chat messages (or a bare
        prompt with ``chat``) through the chat template, else the plain text."""
        if isinstance(request.prompt, tuple):
            if not self.loaded.has_chat_template:
                text = "\n\n".join(m.content for m in request.prompt)
                return self.encode(text)
            return self.encode(self.render_chat(request.prompt), add_special_tokens=False)
        if request.chat and self.loaded.has_chat_template:
            return self.encode(self.render_chat([ChatMessage("user", request.prompt)]), add_special_tokens=False)
        return self.encode(request.prompt)

