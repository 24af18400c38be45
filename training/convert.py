"""``harness convert llava``: a checkpoint in the original LLaVA layout (haotian-liu/LLaVA's
``LlavaLlamaForCausalLM``, as Math-LLaVA releases ``Zhiqiang007/Math-LLaVA``) made into a
transformers ``LlavaForConditionalGeneration``, saved as a local zoo model.

What transformers' own ``convert_llava_weights_to_hf.py`` does (it is not shipped in the wheel
and reads everything from the hub), from local folders:
- weights: ``model.embed_tokens/layers/norm`` → the language model, ``lm_head`` kept,
  ``model.mm_projector.0/2`` → ``multi_modal_projector.linear_1/2`` (LLaVA-1.5's ``mlp2x_gelu``;
  other projectors are refused), the vision tower from ``--vision-tower`` (a CLIP vision model
  folder: LLaVA-1.5 checkpoints do not hold it) or from the checkpoint when it does;
- config: the Llama fields of the checkpoint's config, ``mm_vision_select_layer`` →
  ``vision_feature_layer``, ``mm_vision_select_feature`` patch / cls_patch → ``default`` /
  ``full``;
- tokenizer: ``<image>`` added (and ``<pad>`` when there is no pad token); the embeddings and
  output head grow to a multiple of 64 and the new rows are drawn, as the official script does,
  from a normal around the mean embedding with 1e-5 of its covariance (seeded);
- processor: the vision tower's image processor, LLaVA-1.5's chat template
  (``USER: <image>\\n… ASSISTANT:``).
Math-LLaVA's own prompt and image padding are the ``math-llava`` method's business.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from harness import zoo
from harness.errors import ArgumentError
from harness.store import now

# The transformers llava-1.5 conversions' template: the images of a user turn, then its text.
LLAVA_15_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n{% endif %}{% endfor %}{% for item in message['content'] %}"
    "{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{% if message['role'] == 'user' %} {% else %}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
SELECT_STRATEGY = {"patch": "default", "cls_patch": "full"}
IMAGE_TOKEN = "<image>"


def original_weights(folder: Path) -> dict[str, Any]:
    """Every tensor of the checkpoint's safetensors or ``pytorch_model*.bin`` files."""
    import torch
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise ArgumentError(f"no weights (*.safetensors or pytorch_model*.bin) in {folder}")
    weights: dict[str, Any] = {}
    for file in files:
        weights.update(load_file(file) if file.suffix == ".safetensors" else torch.load(file, map_location="cpu", weights_only=True))
    return weights


def renamed(weights: dict[str, Any], vision: dict[str, Any]) -> dict[str, Any]:
    """The original keys under transformers' ``LlavaForConditionalGeneration`` names."""
    out = {}
    for key, value in weights.items():
        if key.endswith(".inv_freq") or key == "model.image_newline":
            continue  # rotary buffers; a LLaVA-NeXT leftover that "flat" merging never used
        if key.startswith("model.vision_tower.vision_tower.vision_model."):
            out["model.vision_tower." + key.removeprefix("model.vision_tower.vision_tower.vision_model.")] = value
        elif key.startswith("model.mm_projector."):
            index, rest = key.removeprefix("model.mm_projector.").split(".", 1)
            out[f"model.multi_modal_projector.linear_{ {'0': 1, '2': 2}[index] }.{rest}"] = value
        elif key.startswith("model."):
            out["model.language_model." + key.removeprefix("model.")] = value
        else:
            out[key] = value  # lm_head
    for key, value in vision.items():
        out.setdefault("model.vision_tower." + key.removeprefix("vision_model."), value)
    if "lm_head.weight" not in out:  # tied checkpoints do not store it
        out["lm_head.weight"] = out["model.language_model.embed_tokens.weight"].clone()
    return out


def convert_llava(checkpoint: Path, vision_tower: Path | None, name: str, seed: int = 0) -> str:
    """Convert and save as the local zoo model ``name``; returns it. ``vision_tower`` is a local
    CLIP vision model folder: its config and image processor (and its weights, unless the
    checkpoint holds them)."""
    import torch
    from transformers import (
        AddedToken,
        AutoImageProcessor,
        AutoTokenizer,
        CLIPVisionConfig,
        CLIPVisionModel,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    original = json.loads((checkpoint / "config.json").read_text()) if (checkpoint / "config.json").is_file() else None
    if original is None or "mm_projector_type" not in original and "mm_hidden_size" not in original:
        raise ArgumentError(f"{checkpoint} is not an original-layout LLaVA checkpoint (its config.json has no mm_ fields)")
    if original.get("mm_projector_type", "linear") != "mlp2x_gelu":
        raise ArgumentError(f"projector '{original.get('mm_projector_type')}' is not LLaVA-1.5's mlp2x_gelu: not convertible to Llava")
    if original.get("mm_use_im_start_end"):
        raise ArgumentError("checkpoints with image start/end tokens (mm_use_im_start_end) are not supported")
    if vision_tower is None or not (vision_tower / "config.json").is_file():
        raise ArgumentError(f"--vision-tower must be a local CLIP vision model folder (this checkpoint names "
                            f"{original.get('mm_vision_tower')}): its config and image processor are needed")
    weights = original_weights(checkpoint)
    has_tower = any(k.startswith("model.vision_tower.vision_tower.") for k in weights)
    vision_config = CLIPVisionConfig.from_pretrained(vision_tower)
    vision = {} if has_tower else CLIPVisionModel.from_pretrained(vision_tower).state_dict()
    llama_keys = set(LlamaConfig().to_dict())
    text_config = LlamaConfig(**{k: v for k, v in original.items() if k in llama_keys and k not in ("architectures", "model_type")})

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    tokenizer.add_tokens(AddedToken(IMAGE_TOKEN, special=True, normalized=False), special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": "<pad>"})
    config = LlavaConfig(text_config=text_config, vision_config=vision_config,
                         vision_feature_layer=original.get("mm_vision_select_layer", -2),
                         vision_feature_select_strategy=SELECT_STRATEGY[original.get("mm_vision_select_feature", "patch")],
                         image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), projector_hidden_act="gelu")
    config.pad_token_id = tokenizer.pad_token_id
    # Built on the meta device and filled with the checkpoint's tensors, as the official script
    # does: a random initialisation of a 13B model first would cost minutes and twice the memory.
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    model.load_state_dict(renamed(weights, vision), strict=True, assign=True)

    # The official script's initialisation of the rows added for <image> (and <pad>).
    generator = torch.Generator().manual_seed(seed)
    embeddings = model.get_input_embeddings().weight.data
    old = embeddings.shape[0]
    mean = embeddings.float().mean(0)
    centred = embeddings.float() - mean
    covariance = 1e-5 * (centred.T @ centred) / old
    model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)
    values, vectors = torch.linalg.eigh(covariance)
    scale = vectors * values.clamp(min=0).sqrt()  # a square root of the covariance, singular or not
    for matrix in (model.get_input_embeddings().weight.data, model.get_output_embeddings().weight.data):
        extra = matrix.shape[0] - old
        matrix[old:] = (mean + torch.randn(extra, mean.shape[0], generator=generator) @ scale.T).to(matrix.dtype)

    image_processor = AutoImageProcessor.from_pretrained(vision_tower)
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=vision_config.patch_size,
                               vision_feature_select_strategy=config.vision_feature_select_strategy,
                               num_additional_image_tokens=1, chat_template=LLAVA_15_TEMPLATE)
    staging = zoo.local_zoo_dir() / f".convert-{name}"
    if staging.exists():
        shutil.rmtree(staging)
    model.save_pretrained(staging)
    processor.save_pretrained(staging)
    # Per-file hashes, remembered by the zoo's hash cache: a 13B checkpoint is not read twice.
    digest = hashlib.sha256()
    for file in sorted(checkpoint.glob("*")):
        if file.is_file():
            digest.update(f"{file.name}:{zoo.cached_sha256(file)}".encode())
    return zoo.install(staging, name, {
        "description": f"{checkpoint.name} converted from the original LLaVA layout to transformers' Llava",
        "model_kind": "image-text-to-text", "method": "base",
        "recipe": {"checkpoint": str(checkpoint), "vision_tower": str(vision_tower), "seed": seed},
        "data": {"checkpoint_sha256": digest.hexdigest(), "vision_tower_in_checkpoint": has_tower,
                 "added_tokens": [t for t in (IMAGE_TOKEN, "<pad>") if t in tokenizer.get_vocab()], "original_vocab": old,
                 "vision_feature_layer": config.vision_feature_layer, "select": config.vision_feature_select_strategy},
        "training": {"finished_at": now()},
    })
