"""Model kinds and images in requests, on tiny random models built from configs (seconds)."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw

from harness import models
from harness.api import Capability, ChatMessage, GenerateRequest, LoglikelihoodRequest
from harness.errors import IncompatibleError
from harness.lm import CausalLM
from harness.method import Cost, MethodOptions


@pytest.fixture(scope="module")
def llava():
    return models.load(models.resolve("tiny-random-llava"))


def _square(colour: str) -> Image.Image:
    image = Image.new("RGB", (40, 32), "white")
    ImageDraw.Draw(image).rectangle([4, 4, 24, 24], fill=colour)
    return image


def _circle(colour: str) -> Image.Image:
    image = Image.new("RGB", (36, 36), "black")
    ImageDraw.Draw(image).ellipse([2, 2, 34, 34], fill=colour)
    return image


def test_each_kind_loads_with_its_head_and_says_what_it_is(llava, tiny):
    assert llava.kind == "image-text-to-text" and llava.processor is not None
    assert llava.identity.as_dict()["kind"] == "image-text-to-text"
    assert tiny.kind == "causal-lm" and "kind" not in tiny.identity.as_dict()  # causal LMs keep their run ids
    reward = models.load(models.resolve("tiny-random-reward"))
    assert reward.kind == "sequence-classifier"
    ids = reward.tokenizer("A helpful answer.", return_tensors="pt")
    assert reward.model(**ids).logits.shape == (1, 1)  # one scalar per sequence


def test_base_answers_requests_with_images_and_the_image_matters(llava):
    from methods.base import BaseArgs, BaseMethod

    method = BaseMethod(llava, BaseArgs(), MethodOptions(show_progress=False))
    red, blue = _square("red"), _circle("blue")
    question = "What shape is this?"
    scored = method.loglikelihood([LoglikelihoodRequest(question, " A square", images=(red,)),
                                   LoglikelihoodRequest(question, " A square", images=(blue,)),
                                   LoglikelihoodRequest(question + " No image.", " A square"),
                                   LoglikelihoodRequest(question, " A square", images=(red,))])
    assert scored[0].logprob != scored[1].logprob  # the pixels reach the model
    assert scored[0] == scored[3] and all(s.n_tokens == len(" A square") for s in scored)  # byte tokens
    alone = method.loglikelihood([LoglikelihoodRequest(question + " No image.", " A square")])[0]
    assert alone.logprob == pytest.approx(scored[2].logprob, abs=1e-4)  # text-only requests keep the batched path

    chat = GenerateRequest((ChatMessage("user", question, (red,)),), max_new_tokens=6)
    first, again = method.generate([chat, chat])
    assert first == again and 0 < first.n_tokens <= 6
    other = method.generate([GenerateRequest((ChatMessage("user", question, (blue,)),), max_new_tokens=6)])[0]
    lm = CausalLM(llava, Cost(), show_progress=False)
    rendered = lm._render([ChatMessage("user", question, (red,))])
    assert rendered.count("<image>") == 1 and rendered.index("<image>") < rendered.index(question)
    assert method.cost.tokens_generated == first.n_tokens * 2 + other.n_tokens


def test_an_image_task_meets_a_text_only_model_or_method_with_one_line():
    from harness.runner import check_compatible, check_model_kind
    from methods.cleangen import CleanGenMethod

    class ImageTask:
        name = "pictures"
        requires = frozenset({Capability.GENERATE, Capability.VISION})

    with pytest.raises(IncompatibleError, match="reads text only"):
        check_model_kind(ImageTask(), "smollm2-135m-instruct", "causal-lm")
    check_model_kind(ImageTask(), "tiny-random-llava", "image-text-to-text")
    with pytest.raises(IncompatibleError, match="needs vision"):
        check_compatible(ImageTask(), CleanGenMethod)  # a text-only method
    with pytest.raises(IncompatibleError, match="sequence classifier"):
        check_model_kind(ImageTask(), "tiny-random-reward", "sequence-classifier")


def test_images_on_a_text_only_model_fail_with_one_line(tiny):
    lm = CausalLM(tiny, Cost(), show_progress=False)
    with pytest.raises(IncompatibleError, match="cannot read images"):
        lm.generate([GenerateRequest("Describe it.", 4, images=(_square("red"),))])


def test_a_second_model_loads_like_the_runs_model_unless_told_otherwise():
    import torch

    run_model = models.load(models.resolve("tiny-random-llama", "bfloat16"))
    judge = models.load_auxiliary("tiny-random-reward", like=run_model)
    assert judge.identity.dtype == "bfloat16" and judge.model.dtype == torch.bfloat16 and judge.device == run_model.device
    assert models.load_auxiliary("tiny-random-reward", like=run_model, dtype="float32").model.dtype == torch.float32
    assert models.load_auxiliary("tiny-random-reward").identity.dtype == "float32"  # no run model: the CPU default


def test_an_original_layout_llava_converts_to_the_same_model(llava, tmp_path, monkeypatch):
    """``harness convert llava``: the tiny LLaVA written back in the original LLaVA layout
    (``LlavaLlamaForCausalLM`` keys and config, no ``<image>`` token, the vision tower in its own
    CLIP folder, as LLaVA-1.5 releases are) converts to a model with the same language model and
    the same image features."""
    import json

    import torch
    from transformers import CLIPVisionModel

    from harness import zoo
    from harness.tiny_models import byte_tokenizer
    from methods.base import BaseArgs, BaseMethod
    from tests.conftest import cli

    monkeypatch.setattr(zoo, "local_zoo_dir", lambda: tmp_path / "zoo")
    source = llava.model
    tokenizer = byte_tokenizer()
    vocab = len(tokenizer)  # without <image>
    original, tower = {}, {}
    for key, value in source.state_dict().items():
        if key.startswith("model.vision_tower."):
            tower[key.removeprefix("model.vision_tower.")] = value
        elif key.startswith("model.multi_modal_projector.linear_"):
            index, rest = key.removeprefix("model.multi_modal_projector.linear_").split(".", 1)
            original[f"model.mm_projector.{ {'1': 0, '2': 2}[index] }.{rest}"] = value
        elif key.startswith("model.language_model."):
            original["model." + key.removeprefix("model.language_model.")] = value
        else:
            original[key] = value
    original["model.embed_tokens.weight"] = original["model.embed_tokens.weight"][:vocab].clone()
    original["lm_head.weight"] = original["lm_head.weight"][:vocab].clone()
    checkpoint = tmp_path / "math-llava-tiny"
    checkpoint.mkdir()
    torch.save(original, checkpoint / "pytorch_model.bin")
    tokenizer.save_pretrained(checkpoint)
    config = source.config.text_config.to_dict() | {"vocab_size": vocab, "architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava_llama",
                                                    "mm_vision_tower": "openai/clip-vit-large-patch14-336", "mm_projector_type": "mlp2x_gelu",
                                                    "mm_hidden_size": 32, "mm_vision_select_layer": source.config.vision_feature_layer,
                                                    "mm_vision_select_feature": "patch", "image_aspect_ratio": "pad"}
    (checkpoint / "config.json").write_text(json.dumps(config))
    vision = tmp_path / "clip"
    clip = CLIPVisionModel(source.config.vision_config)
    clip.load_state_dict(tower)
    clip.save_pretrained(vision)
    llava.processor.image_processor.save_pretrained(vision)

    assert cli("convert", "llava", "--checkpoint", checkpoint, "--name", "tiny-converted") == 2  # no vision tower
    assert cli("convert", "llava", "--checkpoint", checkpoint, "--vision-tower", vision, "--name", "tiny-converted", "--quiet") == 0
    converted = models.load(models.resolve("tiny-converted"))
    assert converted.kind == "image-text-to-text" and converted.processor.tokenizer.convert_tokens_to_ids("<image>") == vocab
    ids = torch.tensor([tokenizer.encode("a short caption of the picture")])
    with torch.no_grad():
        assert torch.allclose(converted.model(input_ids=ids).logits[..., :vocab], source(input_ids=ids).logits[..., :vocab], atol=1e-5)
        pixels = llava.processor.image_processor(Image.new("RGB", (28, 28), "red"), return_tensors="pt")["pixel_values"]
        features = converted.model.get_image_features(pixel_values=pixels)
        expected = source.get_image_features(pixel_values=pixels)
        assert torch.allclose(_image_features(features), _image_features(expected), atol=1e-5)
    method = BaseMethod(converted, BaseArgs(), MethodOptions(show_progress=False))
    (answer,) = method.generate([GenerateRequest("What colour is it?", max_new_tokens=3, chat=True, images=(Image.new("RGB", (28, 28), "red"),))])
    assert answer.n_tokens <= 3


def _image_features(output):
    """The projected image features as one tensor, whichever shape this transformers returns."""
    import torch

    features = getattr(output, "pooler_output", output)
    return torch.cat([f.reshape(-1, f.shape[-1]) for f in features]) if isinstance(features, (list, tuple)) else features
