"""Tiny randomly initialised models, built from configs offline, for tests and smoke runs:
one per model kind (a causal LM, a reward model's sequence classifier, a LLaVA-style
vision-language model), all on the same byte-level tokenizer and seeded, so a build is the
same model every time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

IMAGE_TOKEN = "<image>"
SPECIALS = ["<pad>", "<s>", "</s>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)
# The same turns, with a message's content parts (images first, then text) as processors write them.
VISION_CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for part in m['content'] %}{% if part['type'] == 'image' %}<image>{% else %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% endif %}</s>\n{% endfor %}{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)


def byte_tokenizer(extra_specials: tuple[str, ...] = ()) -> Any:
    """A byte-level BPE tokenizer with no merges: every byte a token, plus the special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate(SPECIALS + list(extra_specials) + alphabet)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    if extra_specials:
        tokenizer.add_special_tokens({"additional_special_tokens": list(extra_specials)})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _llama_config(vocab_size: int, **extra: Any) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, **extra,
    )


def build_tiny_random_llama(path: Path) -> None:
    """A seeded 2-layer Llama with a byte-level BPE tokenizer and a chat template, saved at ``path``."""
    import torch
    from transformers import LlamaForCausalLM

    tokenizer = byte_tokenizer()
    torch.manual_seed(0)
    LlamaForCausalLM(_llama_config(len(tokenizer), tie_word_embeddings=True)).save_pretrained(path)
    tokenizer.save_pretrained(path)


def build_tiny_random_reward(path: Path) -> None:
    """A seeded 2-layer Llama with a scalar head (``LlamaForSequenceClassification``, one label):
    the shape of a reward model, which scores a whole conversation with one number."""
    import torch
    from transformers import LlamaForSequenceClassification

    tokenizer = byte_tokenizer()
    torch.manual_seed(0)
    LlamaForSequenceClassification(_llama_config(len(tokenizer), num_labels=1)).save_pretrained(path)
    tokenizer.save_pretrained(path)


def build_tiny_random_llava(path: Path) -> None:
    """A seeded LLaVA: a 2-layer CLIP vision tower on 28x28 images (4 patches of 14) and a 2-layer
    Llama, joined by LLaVA's projector; with its processor (CLIP image preprocessing, the byte
    tokenizer with an ``<image>`` token, a chat template that places images)."""
    import torch
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tokenizer = byte_tokenizer((IMAGE_TOKEN,))
    tokenizer.chat_template = VISION_CHAT_TEMPLATE
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=28, patch_size=14, projection_dim=32)
    config = LlavaConfig(vision_config=vision, text_config=_llama_config(len(tokenizer)),
                         image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                         vision_feature_select_strategy="default", vision_feature_layer=-1)
    # CLIP's PIL image processor: torchvision is not installed here, and the PIL one is the same
    # preprocessing (resize the short side, centre crop, normalise).
    images = CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    processor = LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=14, num_additional_image_tokens=1,
                               vision_feature_select_strategy="default", chat_template=VISION_CHAT_TEMPLATE)
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(path)
    processor.save_pretrained(path)
