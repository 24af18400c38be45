"""DPO and mDPO (PAPERS.md §9) on TRL's DPOTrainer: the loss against hand computation (each
term ln 2 at initialisation; the ablations reduce to DPO), the corruptions, checked data,
resumable training, and a tiny random LLaVA trained on images drawn here."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
import torch.nn.functional as F
from conftest import saved_training_seconds

from harness import models, zoo
from harness.data import DataStore
from harness.errors import ArgumentError, DataCorruptError
from training.passages import corrupt_passage, example_rng
from training.preference import PreferenceSpec, build_trainer, crop_box, read_rows, train_preference

LN2 = math.log(2)
TINY = {"lora_r": 4, "lora_alpha": 8, "batch_size": 2, "device_batch": 2, "epochs": 1, "learning_rate": 1e-3, "max_length": 256}


def _passage_rows(path, n=4):
    rows = [{"context": f"In the trial, drug {i} lowered blood pressure in most of the {20 + i} patients over twelve weeks.",
             "prompt": f"Does drug {i} lower blood pressure?", "chosen": "Yes, it lowered it.", "rejected": "No, it had no effect."}
            for i in range(n)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def _sequence_logps(model, batch):
    """Σ log p of each row's completion tokens, from full logits (no fused head, no TRL)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    targets = batch["input_ids"][:, 1:]
    token_logps = torch.log_softmax(logits, -1).gather(-1, targets[..., None])[..., 0]
    return (token_logps * batch["completion_mask"][:, 1:]).sum(-1)


def test_each_term_is_ln2_at_initialisation_and_the_loss_matches_a_hand_computation(tmp_path):
    spec = PreferenceSpec(objective="mdpo", model="tiny-random-llama", data=str(_passage_rows(tmp_path / "p.jsonl")), **TINY)
    trainer, _ = build_trainer(spec, read_rows(tmp_path / "p.jsonl"), tmp_path, tmp_path / "out")
    assert not (trainer.args.bf16 or trainer.args.fp16)  # float32 (TRL's default bf16 autocast crawls on AVX2 CPUs)
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    model = trainer.model
    for terms, expected in ((("conditional", "anchor"), 3 * LN2), (("anchor",), 2 * LN2), (("conditional",), 2 * LN2), ((), LN2)):
        trainer.terms = terms
        assert float(trainer.compute_loss(model, dict(batch))) == pytest.approx(expected, rel=1e-5)

    # Away from initialisation: the policy's LoRA moved, the reference (adapters off) did not.
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05)
    trainer.terms = ("conditional", "anchor")
    loss = float(trainer.compute_loss(model, dict(batch)))
    beta = spec.beta
    with torch.no_grad():
        policy = _sequence_logps(model, batch)
        corrupted = _sequence_logps(model, batch["corrupted"])
        with model.disable_adapter():
            reference = _sequence_logps(model, batch)
            corrupted_reference = _sequence_logps(model, batch["corrupted"])
    chosen, rejected = (policy - reference).chunk(2)
    condition = corrupted - corrupted_reference
    by_hand = (-F.logsigmoid(beta * (chosen - rejected)).mean() - F.logsigmoid(beta * (chosen - condition)).mean()
               - F.logsigmoid(beta * chosen).mean())
    assert loss == pytest.approx(float(by_hand), rel=1e-4) and loss != pytest.approx(3 * LN2, rel=1e-3)
    with pytest.warns(FutureWarning):  # TRL's evaluation path asks for the outputs too
        with_outputs, _ = trainer.compute_loss(model, dict(batch), return_outputs=True)
    assert float(with_outputs) == pytest.approx(loss, rel=1e-6)
    # The corrupted rows hold the chosen answers after a shorter passage.
    assert torch.equal(batch["corrupted"]["completion_mask"].sum(1), batch["completion_mask"].chunk(2)[0].sum(1))
    assert (batch["corrupted"]["attention_mask"].sum(1) < batch["attention_mask"].chunk(2)[0].sum(1)).all()


def test_corruptions_keep_one_to_twenty_percent_and_follow_the_seed():
    passage = " ".join(f"w{i}" for i in range(200))
    for index in range(50):
        kept = corrupt_passage(passage, example_rng(0, index)).split()
        assert 2 <= len(kept) <= 40 and " ".join(kept) in passage
        left, top, right, bottom = crop_box(64, 48, example_rng(0, index))
        assert 0 <= left < right <= 64 and 0 <= top < bottom <= 48
        assert 0.005 <= (right - left) * (bottom - top) / (64 * 48) <= 0.23  # 1-20% of the area, up to rounding
    assert corrupt_passage(passage, example_rng(3, 7)) == corrupt_passage(passage, example_rng(3, 7))
    assert crop_box(64, 48, random.Random(1)) == crop_box(64, 48, random.Random(1))


def test_preference_rows_are_checked(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "chosen": "c"}))
    with pytest.raises(DataCorruptError, match="missing rejected"):
        read_rows(bad)
    bad.write_text(json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"}))
    with pytest.raises(DataCorruptError, match="needs an image path"):
        read_rows(bad)
    bad.write_text(json.dumps({"img_path": "nowhere.png", "prompt": "p", "chosen": "c", "rejected": "r"}))
    with pytest.raises(DataCorruptError, match="no image at"):
        read_rows(bad)
    with pytest.raises(ArgumentError, match="no preference data"):
        read_rows(tmp_path / "missing.jsonl")
    with pytest.raises(ArgumentError, match="multiple of device_batch"):
        PreferenceSpec(objective="dpo", model="m", data="d", batch_size=3, device_batch=2)
    spec = PreferenceSpec(objective="mdpo", model="tiny-random-llava", data=str(_passage_rows(tmp_path / "p.jsonl")), **TINY)
    with pytest.raises(ArgumentError, match="need a causal LM"):
        train_preference(spec, DataStore(None), show_progress=False)


def test_mdpo_training_resumes_after_a_crash(tmp_path, monkeypatch):
    from transformers import Trainer

    data = _passage_rows(tmp_path / "p.jsonl", n=6)
    spec = PreferenceSpec(objective="mdpo", model="tiny-random-llama", data=str(data), save_every=1, **TINY)
    monkeypatch.setattr(zoo, "local_zoo_dir", lambda: tmp_path / "clean")
    name = train_preference(spec, DataStore(None), show_progress=False)
    reference = models.load(models.resolve(name)).model.state_dict()
    meta = json.loads(zoo.recipe_file(name).read_text())
    assert meta["training"]["steps"] == 3 and meta["training"]["first_loss"] == pytest.approx(3 * LN2, rel=1e-4)
    assert meta["training"]["train_loss"] == pytest.approx(sum(e["loss"] for e in meta["training"]["log"]) / 3)
    assert name == "tiny-random-llama-mdpo" and meta["data"]["condition"] == "passage"

    monkeypatch.setattr(zoo, "local_zoo_dir", lambda: tmp_path / "crashed")
    real_step, calls = Trainer.training_step, {"n": 0}

    def crash_at_three(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", crash_at_three)
    with pytest.raises(KeyboardInterrupt):
        train_preference(spec, DataStore(None), show_progress=False)
    assert not (tmp_path / "crashed" / name).exists()
    seconds_at_crash = saved_training_seconds(tmp_path / "crashed")
    monkeypatch.setattr(Trainer, "training_step", real_step)
    assert train_preference(spec, DataStore(None), show_progress=False) == name
    resumed = models.load(models.resolve(name)).model.state_dict()
    assert all(torch.allclose(resumed[k], reference[k], atol=1e-6) for k in reference)
    training = json.loads(zoo.recipe_file(name).read_text())["training"]
    assert training["train_loss"] == pytest.approx(meta["training"]["train_loss"], rel=1e-5)
    assert training["wall_time_s"] > seconds_at_crash > 0


def test_a_tiny_llava_trains_with_mdpo_on_drawn_images(tmp_path, monkeypatch):
    from PIL import Image, ImageDraw

    rows = []
    for i, (colour, other) in enumerate((("red", "blue"), ("blue", "red"), ("green", "red"), ("red", "green"))):
        image = Image.new("RGB", (28, 28), "white")
        ImageDraw.Draw(image).rectangle((4 + i, 4, 22, 20), fill=colour)
        image.save(tmp_path / f"{i}.png")
        rows.append({"img_path": f"{i}.png", "prompt": "What colour is the square?", "chosen": f"A {colour} square.",
                     "rejected": f"A {other} square."})
    (tmp_path / "prefs.json").write_text(json.dumps(rows))
    monkeypatch.setattr(zoo, "local_zoo_dir", lambda: tmp_path / "zoo")
    spec = PreferenceSpec(objective="mdpo", model="tiny-random-llava", data=str(tmp_path / "prefs.json"), **TINY)
    name = train_preference(spec, DataStore(None), show_progress=False)
    meta = json.loads(zoo.recipe_file(name).read_text())
    log = meta["training"]["log"]
    assert meta["training"]["steps"] == 2 and meta["data"]["condition"] == "image"
    assert log[0]["loss"] == pytest.approx(3 * LN2, rel=1e-4) and "mdpo/conditional_loss" in log[0]
    trained = models.load(models.resolve(name))
    assert trained.kind == "image-text-to-text" and trained.processor is not None
    # The preference task reads the same rows: the answer's log-probability under the image, a
    # crop of it and a black one.
    from tests.conftest import cli

    runs = tmp_path / "runs"
    assert cli("run", "--task", "preference", "--task-arg", f"data={tmp_path / 'prefs.json'}", "--model", name, "--quiet",
               "--output-dir", runs) == 0
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    metrics = json.loads((run / "results.json").read_text())["metrics"]
    assert metrics["preference_accuracy"]["n"] == 4 and metrics["condition_reliance"]["value"] != 0
    with pytest.raises(ArgumentError, match="need an image-text-to-text model"):
        train_preference(PreferenceSpec(objective="dpo", model="tiny-random-llama", data=str(tmp_path / "prefs.json"), **TINY),
                         DataStore(None), show_progress=False)


def test_pubmedqa_pairs_split_by_the_official_test_ids_and_the_task_measures_reliance(mirror, runs_dir):
    from tasks.preference import Preference
    from tasks.pubmedqa import pair_rows
    from tests.conftest import cli

    train, test = pair_rows(DataStore(mirror), "train"), pair_rows(DataStore(mirror), "test")
    assert len(train) == len(test) == 500 and not {r["id"] for r in train} & {r["id"] for r in test}
    for row in train + test:
        assert row["chosen"] in ("yes", "no", "maybe") and row["rejected"] in ("yes", "no") and row["rejected"] != row["chosen"]
        assert row["prompt"].startswith("Abstract: {context}\nQuestion: ") and row["prompt"].endswith("\nAnswer:")
    doc = Preference().load_docs(DataStore(mirror))[0]
    from harness.task import EvalSettings

    full, rejected, corrupted, blank = Preference().requests(doc, EvalSettings(chat=True, seed=0))
    assert full.context == rejected.context and full.context.startswith("Abstract: ") and full.chat
    assert (full.continuation, rejected.continuation) == (doc.data["chosen"], doc.data["rejected"])
    assert len(corrupted.context) < len(full.context) and blank.context.startswith("Abstract: \nQuestion")
    assert cli("run", "--task", "preference", "--model", "tiny-random-llama", "--limit", "3", "--quiet",
               "--output-dir", runs_dir) == 0
