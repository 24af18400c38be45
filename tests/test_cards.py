"""Reward models and decoding-time alignment (CARDS, PAPERS.md §5): the reward model's cached
scoring, the trainer (held-out split, resume, zoo entry), CARDS / Best-of-N / ARGS /
rejection sampling against their definitions, and the hh-rlhf task, on tiny random models."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import cli, saved_training_seconds

from harness import models, zoo
from harness.api import ChatMessage, GenerateRequest
from harness.data import DataStore
from harness.errors import ArgumentError, IncompatibleError, UnknownNameError
from harness.method import METHODS, Cost, MethodOptions
from harness.reward import RewardModel
from harness.runner import compare
from harness.store import RunStore
from tasks.hh_rlhf import distinct, distinct_without_each, held_out, official_diversity, split_dialogue

CONVERSATION = (ChatMessage("user", "How do I bake bread?"), ChatMessage("assistant", "With flour."), ChatMessage("user", "And then?"))
TINY_TRAINING = dict(base_model="tiny-random-llama", batch_size=4, n_train=16, n_eval=6, save_every=2, max_length=128)


@pytest.fixture(scope="module")
def reward_model():
    return RewardModel(models.load(models.resolve("tiny-random-reward")), Cost())


def test_cached_continuations_score_as_whole_sequences(reward_model):
    state = reward_model.start(CONVERSATION)
    prefix = reward_model.encode_answer("Knead it")
    reward_model.accept(state, prefix)
    continuations = [reward_model.encode_answer(t) for t in (" well", " for ten minutes", "!", " well")]
    cached = reward_model.score_continuations(state, continuations)
    whole = reward_model.score_ids([state.head + prefix + c + state.tail for c in continuations])
    assert cached == pytest.approx(whole, abs=1e-5)
    assert cached[0] == pytest.approx(cached[3], abs=1e-6)
    # the cache is left as it was: scoring again gives the same numbers
    assert reward_model.score_continuations(state, continuations[:1]) == pytest.approx(cached[:1], abs=1e-6)
    assert reward_model.score_state(state) == pytest.approx(reward_model.score_texts([CONVERSATION], ["Knead it"])[0], abs=1e-5)
    assert reward_model.cost.counters["rm_calls"] == 4 + 4 + 1 + 1 + 1


def test_packed_candidates_score_as_batched_ones_in_one_pass(reward_model):
    """ARGS's candidates run packed into one sequence over the cache: the same rewards as
    batches of rows (each a copy of the cache), one forward pass, the cache left as it was.
    An empty candidate (an EOS among ARGS's top-k: the answer ends) packs too: its piece is the
    template's tail (it fell back to the batched path, twice as slow, on a third of ARGS's steps)."""
    continuations = [reward_model.encode_answer(t) for t in (" well", " for ten minutes", "!", " slowly")] + [[]]
    scores = {}
    for pack in (True, False):
        scorer = RewardModel(reward_model.loaded, Cost(), pack_candidates=pack)
        assert scorer.pack_candidates is pack
        state = scorer.start(CONVERSATION)
        scorer.accept(state, scorer.encode_answer("Knead it"))
        scorer.score_state(state)  # the answer read into the cache
        passes = scorer.cost.counters["rm_forward_passes"]
        scores[pack] = scorer.score_continuations(state, continuations)
        lengths = len({len(c) for c in continuations})
        assert lengths > 1 and scorer.cost.counters["rm_forward_passes"] - passes == (1 if pack else lengths)  # batches: one per length
        assert scorer.cost.counters["rm_calls"] == 1 + 5 and state.cache.get_seq_length() == state.cached
        assert scorer.score_continuations(state, continuations[::-1]) == pytest.approx(scores[pack][::-1], abs=1e-6)
    assert scores[True] == pytest.approx(scores[False], abs=1e-6)
    assert scores[True][-1] == pytest.approx(reward_model.score_texts([CONVERSATION], ["Knead it"])[0], abs=1e-5)


def test_a_sliding_window_reward_model_is_not_packed(reward_model, monkeypatch):
    """Every layer reads the packed mask as given, so a sliding window would be ignored."""
    monkeypatch.setattr(reward_model.loaded.model.config, "sliding_window", 4, raising=False)
    assert not RewardModel(reward_model.loaded, Cost()).pack_candidates


def test_a_reward_model_without_a_chat_template_scores_the_answer_so_far(reward_model, monkeypatch):
    """Without a template nothing follows the answer, so its reward is the cached last token's:
    the cache steps back one token (this transformers' crop takes the count to drop, negated)."""
    monkeypatch.setattr(reward_model.tokenizer, "chat_template", None)
    scorer = RewardModel(reward_model.loaded, Cost())
    state = scorer.start(CONVERSATION)
    assert state.tail == []
    scorer.accept(state, scorer.encode_answer("Knead it"))
    whole = scorer.score_ids([state.head + state.answer])[0]
    assert scorer.score_state(state) == pytest.approx(whole, abs=1e-5)
    assert scorer.score_state(state) == pytest.approx(whole, abs=1e-5)  # and again, from the stepped-back cache


def test_a_causal_lm_is_not_a_reward_model(tiny):
    with pytest.raises(IncompatibleError, match="not a reward model"):
        RewardModel(tiny, Cost())


def _method(name: str, tiny, **args):
    cls = METHODS.get(name)
    return cls(tiny, cls.Args(reward_model="tiny-random-reward", **args), MethodOptions(seed=0, show_progress=False))


REQUEST = GenerateRequest(CONVERSATION, max_new_tokens=24)


def test_cards_segments_follow_the_entropy_rule_and_the_threshold(tiny):
    # Entropy 0 ends every segment at min_segment; a threshold nobody misses accepts each at once.
    easy = _method("cards", tiny, reward_target=-1e9, acceptance="hard", entropy_threshold=0.0, min_segment=5, eos_stop=False)
    [result] = easy.generate([REQUEST])
    assert result.n_tokens == 24 or result.finish_reason == "stop"
    assert result.info["segments"] == result.info["candidates"] == 5  # 5+5+5+5+4 tokens
    # An unreachable threshold: each segment is rejected max_rejections times, then the best is taken.
    hard = _method("cards", tiny, reward_target=1e9, acceptance="hard", entropy_threshold=1e9, max_segment=8, max_rejections=3,
                   eos_stop=False)
    [result] = hard.generate([REQUEST])
    assert result.info["segments"] == 3 and result.info["fallbacks"] == 3 and result.info["candidates"] == 3 * 4
    again = _method("cards", tiny, reward_target=1e9, acceptance="hard", entropy_threshold=1e9, max_segment=8, max_rejections=3,
                    eos_stop=False)
    assert again.generate([REQUEST])[0].text == result.text  # seeded per prompt
    assert hard.cost.counters["rm_calls"] == 1 + 12  # r(prompt) and one call per candidate


def test_cards_falls_back_to_the_best_segment_seen(tiny, monkeypatch):
    method = _method("cards", tiny, reward_target=1e9, acceptance="hard", entropy_threshold=1e9, max_segment=6, max_rejections=4,
                     eos_stop=False)
    seen: list[tuple[float, list[int]]] = []
    real = method.score_extensions

    def record(state, answer, candidates):
        rewards = real(state, answer, candidates)
        if answer == [] and candidates != [[]]:
            seen.append((rewards[0], list(candidates[0])))
        return rewards

    monkeypatch.setattr(method, "score_extensions", record)
    [result] = method.generate([GenerateRequest(CONVERSATION, max_new_tokens=6)])
    best = max(seen, key=lambda pair: pair[0])[1]
    assert len(seen) == 5 and result.text == tiny.tokenizer.decode(best, skip_special_tokens=True)


def test_args_without_the_reward_is_greedy_decoding(tiny):
    from harness.lm import CausalLM

    method = _method("args", tiny, weight=0.0, eos_stop=True)
    greedy = CausalLM(tiny, Cost(), 1, None, 0, False).generate([REQUEST])[0]
    assert method.generate([REQUEST])[0].text == greedy.text
    assert method.cost.counters["rm_calls"] == 40 * method.cost.tokens_generated or greedy.finish_reason == "stop"


def test_args_with_a_heavy_reward_takes_the_best_rewarded_candidate(tiny):
    method = _method("args", tiny, weight=1e6, top_k=5)
    [result] = method.generate([GenerateRequest(CONVERSATION, max_new_tokens=1)])
    prompt = method.prompt_ids(REQUEST)
    top = torch.topk(method.decoder().feed(prompt)[-1], 5).indices.tolist()
    state = method.reward.start(CONVERSATION)
    rewards = method.reward.score_ids([state.head + [t] + state.tail for t in top])
    assert result.text == tiny.tokenizer.decode([top[max(range(5), key=lambda i: rewards[i])]], skip_special_tokens=True)


def test_best_of_n_returns_the_highest_rewarded_sample(tiny):
    method = _method("best-of-n", tiny, n=4)
    [result] = method.generate([REQUEST])
    rewards = result.info["sample_rewards"]
    assert len(rewards) == 4 and result.info["guide_reward"] == pytest.approx(max(rewards), abs=1e-5)
    assert result.n_tokens == 24 or result.finish_reason == "stop"  # the official setting decodes every token
    assert method.cost.counters["policy_forward_passes"] == 1 + 4 * 23  # one prefill, then a pass per sampled token but the last


def test_batched_best_of_n_samples_once_per_step_and_keeps_old_run_ids(tiny):
    from harness.config import to_dict

    method = _method("best-of-n", tiny, n=4, batched=True)
    [result] = method.generate([REQUEST])
    rewards = result.info["sample_rewards"]
    assert len(rewards) == 4 and result.info["guide_reward"] == pytest.approx(max(rewards), abs=1e-5)
    assert len(set(rewards)) > 1  # four different samples
    # one prefill, then one pass per step for all four rows (23 steps after the first token)
    assert method.cost.counters["policy_forward_passes"] == 1 + 23
    # each sample is its own seeded stream: drawn alone, the chosen one comes out the same
    prompt = method.prompt_ids(REQUEST)
    settings = GenerateRequest("", 24, temperature=0.8, top_k=40)
    chosen = result.info["chosen"]
    alone = method.policy.sample_tokens([prompt], [chosen], settings, stop_at_eos=False)[0]
    assert len(alone) == 24 and tiny.tokenizer.decode(alone, skip_special_tokens=True).startswith(result.text)
    # an argument added later is left out of the spec at its default: earlier runs keep their ids
    args = METHODS.get("best-of-n").Args
    assert "batched" not in to_dict(args(reward_model="r")) and to_dict(args(reward_model="r", batched=True))["batched"] is True


def test_rejection_sampling_accepts_or_falls_back(tiny):
    easy = _method("rejection-sampling", tiny, reward_target=-1e9)
    assert easy.generate([REQUEST])[0].info["rejections"] == 0
    hard = _method("rejection-sampling", tiny, reward_target=1e9, acceptance="hard", max_rejections=2)
    result = hard.generate([REQUEST])[0]
    assert result.info["fallback"] and hard.cost.counters["rm_calls"] == 3


def test_reward_guided_methods_need_a_reward_model(tiny):
    with pytest.raises(ValueError, match="reward_model"):
        METHODS.get("cards").Args()
    with pytest.raises(Exception, match="not a reward model"):
        METHODS.get("best-of-n")(tiny, METHODS.get("best-of-n").Args(reward_model="tiny-random-llama"), MethodOptions())


def test_hh_rlhf_transcripts_split_into_turns_and_held_out_prompts_are_never_trained_on(mirror):
    messages, answer = split_dialogue("\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Bye?\n\nAssistant: Goodbye.")
    assert [m.role for m in messages] == ["user", "assistant", "user"] and messages[2].content == "Bye?" and answer == "Goodbye."
    from training.reward_model import RewardModelSpec, split_pairs

    train, evaluation = split_pairs(RewardModelSpec(), DataStore(mirror))
    train_keys = {p["key"] for p in train}
    assert len(train) > 1500 and not train_keys & {p["key"] for pairs in evaluation.values() for p in pairs}
    assert all(not held_out(key) for key in train_keys)
    assert 0.15 < len(evaluation["helpful"]) / (len(train) + len(evaluation["helpful"])) < 0.25


def test_diversity_measures():
    assert official_diversity("a b c d e") == pytest.approx((4 / 5) * (3 / 4) * (2 / 3))
    assert official_diversity("a a a a a a") < official_diversity("a b c d e f")
    assert distinct(["the cat sat", "the cat ran"], 1) == pytest.approx(4 / 6)


def test_distinct_n_interval_holds_its_value():
    """The task's distinct-n intervals contain their values (its bootstrap intervals did not: a
    resample repeats answers, whose n-grams then count as duplicates), and the jackknife's
    leave-one-out values are distinct-n without each answer."""
    import random

    from harness.runner import make_task

    rng = random.Random(0)
    words = [f"w{i}" for i in range(400)]  # Zipf-like frequencies, as in prose
    weights = [1 / (i + 1) for i in range(len(words))]
    texts = [" ".join(rng.choices(words, weights, k=rng.randint(0, 60))) for _ in range(100)]
    records = [{"response": t, "subset": "helpful", "reward": 0.0} for t in texts]
    metrics = make_task("hh-rlhf", {"coherence": False}).aggregate(records, seed=0)
    for n in (1, 2):
        without = distinct_without_each(texts, n)
        assert without == pytest.approx([distinct(texts[:i] + texts[i + 1:], n) for i in range(len(texts))])
        metric = metrics[f"distinct_{n}"]
        assert metric.value == pytest.approx(distinct(texts, n))
        assert metric.ci_low < metric.value < metric.ci_high, metric
    # one answer holds every n-gram: without it distinct-n is undefined, and so is the interval
    lonely = make_task("hh-rlhf", {"coherence": False}).aggregate(
        [{"response": t, "subset": "helpful", "reward": 0.0} for t in ("one two three", "", "")], seed=0)
    assert lonely["distinct_1"].value == 1.0 and lonely["distinct_1"].ci_low is None


def test_an_adapter_merges_exactly_as_peft_would_within_rounding(tiny):
    """The carried models' merge: peft's update (B @ A times the scaling) in fixed-order exact
    steps, the LoRA layers and modules_to_save unloaded as merge_and_unload unloads them."""
    import copy

    from peft import LoraConfig, get_peft_model

    from training.carry import merge_adapter

    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=12, target_modules=["q_proj", "down_proj"], modules_to_save=["lm_head"], init_lora_weights=False)
    trained = get_peft_model(copy.deepcopy(tiny.model), config)
    expected = copy.deepcopy(trained).merge_and_unload().state_dict()
    merged = merge_adapter(trained)
    assert not any("lora_" in k or "modules_to_save" in k for k in merged.state_dict())
    assert expected.keys() == merged.state_dict().keys()
    changed = [k for k, v in merged.state_dict().items() if not torch.equal(v, tiny.model.state_dict()[k])]
    assert changed and all(torch.allclose(v, expected[k], atol=1e-6) for k, v in merged.state_dict().items())


def test_reward_model_training_resumes_and_records_its_held_out_accuracy(mirror, tmp_path, monkeypatch, capsys):
    from transformers import Trainer

    from training.reward_model import RewardModelSpec, train_reward_model

    data = DataStore(mirror)
    monkeypatch.setattr(zoo, "local_zoo_dir", lambda: tmp_path / "clean")
    name = train_reward_model(RewardModelSpec(**TINY_TRAINING), data, show_progress=False)
    reference = models.load(models.resolve(name)).model.state_dict()
    uninterrupted = json.loads(zoo.recipe_file(name).read_text())["training"]
    weights = models.resolve(name).identity.weights_sha256
    # A retrain of the recipe (same machine and threads) gives the same weights bit for bit, so
    # runs scored by it keep their ids: a machine that lost the model can remake it.
    # Carried in a few files (adapter, config, tokenizer, recipe; no merged weights), it is
    # rebuilt on a machine that never trained it, bit for bit, or not at all.
    carried = tmp_path / "models"
    assert cli("publish", "--model", name, "--to", str(carried)) == 0
    assert not list((carried / name).glob("*.safetensors")) and (carried / name / "adapter").is_dir()
    adapter_config = json.loads((carried / name / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == "tiny-random-llama"  # its zoo name, no path of this machine
    monkeypatch.setattr(zoo, "local_zoo_dir", lambda: tmp_path / "restored")
    record = json.loads((carried / name / "harness_carried.json").read_text())
    (carried / name / "harness_carried.json").write_text(json.dumps(record | {"weights": {"model.safetensors": "0" * 64}}))
    assert cli("train", "restore", str(carried / name)) == 2
    assert "is not the carried one" in capsys.readouterr().err and name not in zoo.zoo()
    monkeypatch.setattr(zoo, "CARRIED_MODELS", carried)
    with pytest.raises(UnknownNameError, match=f"harness train restore {carried / name}"):
        models.resolve(name)  # a run naming it says where it is carried
    (carried / name / "harness_carried.json").write_text(json.dumps(record))
    assert cli("train", "restore", str(carried / name)) == 0
    assert models.resolve(name).identity.weights_sha256 == weights
    assert zoo.recipe(name) == json.loads((tmp_path / "clean" / name / "harness_zoo.json").read_text())
    adapter = next((carried / name / "adapter").glob("*.safetensors"))
    assert cli("publish", "--check", "--model", name, "--to", str(carried)) == 0
    adapter.write_bytes(adapter.read_bytes()[:-4] + b"\0\0\0\0")
    assert cli("publish", "--check", "--model", name, "--to", str(carried)) == 2
    assert cli("train", "restore", str(carried / name)) == 2
    assert "adapter/adapter_model.safetensors is missing or altered" in capsys.readouterr().err

    monkeypatch.setattr(zoo, "local_zoo_dir", lambda: tmp_path / "remade")
    assert train_reward_model(RewardModelSpec(**TINY_TRAINING), data, show_progress=False) == name
    assert models.resolve(name).identity.weights_sha256 == weights

    monkeypatch.setattr(zoo, "local_zoo_dir", lambda: tmp_path / "crashed")
    real_step, calls = Trainer.training_step, {"n": 0}

    def crash_at_three(self, *args, **kwargs):
        calls["n"] += 1
        # float32: TRL's default bf16 autocast crawls on a CPU without bf16 matmuls
        assert not (self.args.bf16 or self.args.fp16)
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", crash_at_three)
    with pytest.raises(KeyboardInterrupt):
        train_reward_model(RewardModelSpec(**TINY_TRAINING), data, show_progress=False)
    assert not (tmp_path / "crashed" / name).exists()
    seconds_at_crash = saved_training_seconds(tmp_path / "crashed")
    monkeypatch.setattr(Trainer, "training_step", real_step)
    assert train_reward_model(RewardModelSpec(**TINY_TRAINING), data, show_progress=False) == name
    resumed = models.load(models.resolve(name)).model.state_dict()
    assert all(torch.allclose(resumed[k], reference[k], atol=1e-6) for k in reference)
    # the recorded loss and time cover every session's steps, not only the resumed one's
    training = json.loads(zoo.recipe_file(name).read_text())["training"]
    assert training["train_loss"] == pytest.approx(uninterrupted["train_loss"], rel=1e-5)
    assert training["wall_time_s"] > seconds_at_crash > 0

    assert zoo.zoo()[name].model_kind == "sequence-classifier" and models.resolve(name).identity.kind == "sequence-classifier"
    meta = json.loads(zoo.recipe_file(name).read_text())
    held = meta["held_out"]
    assert held["pair_accuracy"]["helpful"]["n"] == 6 and held["pair_accuracy"]["harmless"]["n"] == 6
    assert 0 <= held["pair_accuracy"]["helpful"]["ci_low"] <= held["pair_accuracy"]["helpful"]["accuracy"] <= 1
    assert set(held["chosen_reward_quantiles"]) == {"0.1", "0.25", "0.5", "0.75", "0.9"}
    assert meta["data"]["n_train_pairs"] == 16 and meta["training"]["steps"] == 4
    # what a bitwise retrain needs: the packages, the CPU and the threads the floats were summed on
    assert meta["made_with"]["torch_threads"] >= 1 and meta["made_with"]["packages"]["torch"] and meta["made_with"]["machine"]

    # CARDS's r* defaults to the recorded median of held-out chosen rewards.
    from methods.reward_guided import reward_target

    assert reward_target(name, None, 0.5)[0] == pytest.approx(held["chosen_reward_quantiles"]["0.5"])


def test_hh_rlhf_run_with_cards_end_to_end(runs_dir, monkeypatch):
    assert cli("run", "--task", "hh-rlhf", "--task-arg", "reward_model=tiny-random-reward", "--task-arg", "max_new_tokens=12",
               "--task-arg", "coherence=false", "--model", "tiny-random-llama", "--method", "cards",
               "--method-arg", "reward_model=tiny-random-reward", "--method-arg", "reward_target=0", "--limit", "3", "--quiet",
               "--output-dir", runs_dir) == 0
    [run] = [p for p in runs_dir.iterdir() if (p / "results.json").is_file()]
    results = json.loads((run / "results.json").read_text())
    assert {"reward", "guide_reward", "rm_calls", "distinct_1", "self_bleu"} <= set(results["metrics"])
    spec = json.loads((run / "spec.json").read_text())
    assert spec["auxiliary"].keys() == {"reward_model", "evaluation_reward_model"}
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3 and all(s["doc_id"].startswith("hh-rlhf:") and s["rm_calls"] >= 2 for s in samples)
    assert results["cost"]["rm_calls"] > 0 and results["cost"]["evaluation_reward_model_rm_calls"] == 6

    # The judge pairs the two runs' answers by document; a tiny judge's outputs are unparseable,
    # counted apart (not as ties).
    assert cli("run", "--task", "hh-rlhf", "--task-arg", "reward_model=tiny-random-reward", "--task-arg", "max_new_tokens=12",
               "--task-arg", "coherence=false", "--model", "tiny-random-llama", "--limit", "3", "--quiet", "--output-dir", runs_dir) == 0
    base = next(p.name for p in runs_dir.iterdir() if p.name != run.name and (p / "results.json").is_file())
    out = runs_dir.parent / "judgment.json"
    assert cli("judge", base, run.name, "--judge", "tiny-random-llama", "--max-new-tokens", "6", "--out", out, "--quiet",
               "--output-dir", runs_dir) == 0
    judgment = json.loads(out.read_text())
    assert judgment["summary"]["n_pairs"] == 3 and sum(judgment["summary"]["counts"].values()) == 3
    assert [p["doc_id"] for p in judgment["pairs"]] == [s["doc_id"] for s in samples]
    assert cli("judge", base, run.name, "--judge", "tiny-random-llama", "--scoring", "loglikelihood", "--out", out, "--quiet",
               "--output-dir", runs_dir) == 0
    summary = json.loads(out.read_text())["summary"]
    assert summary["n_judged"] == 3 and summary["counts"]["unparseable"] == 0  # likelihoods always give two scores

    # A judgment publishes beside its two runs, hash-checked, and a paper claim on win_tie reads it.
    from harness.store import open_store
    from reports import paper_render, papers, publish
    from reports.paper_spec import parse_spec

    published = runs_dir.parent / "published"
    with pytest.raises(ArgumentError, match="not published"):
        publish.publish_judgment(out, published)
    publish.publish(RunStore(runs_dir), [base, run.name], published)
    name = publish.publish_judgment(out, published)
    assert publish.verify(published) == []
    # judging published runs writes to the working store, never beside them
    working = runs_dir.parent / "working"
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(working))
    assert cli("judge", base, run.name, "--judge", "tiny-random-llama", "--scoring", "loglikelihood", "--limit", "1", "--quiet",
               "--output-dir", published) == 0
    assert [p.name for p in (working / "judgments").iterdir()] == [name] and publish.verify(published) == []
    task_args = {"reward_model": "tiny-random-reward", "max_new_tokens": 12, "coherence": False}
    cells = [{"task": "hh-rlhf", "task_args": task_args, "models": ["tiny-random-llama"], "limit": 3, "label": "vanilla"},
             {"task": "hh-rlhf", "task_args": task_args, "models": ["tiny-random-llama"], "limit": 3, "label": "CARDS", "method": "cards",
              "method_args": {"reward_model": "tiny-random-reward", "reward_target": 0}}]
    table = {"id": "t", "title": "t", "source": "s", "metrics": ["reward", "win_tie"], "cells": cells,
             "judged": {"against": "vanilla", "model": "tiny-random-llama", "scoring": "loglikelihood"}}
    with pytest.raises(ArgumentError, match="no cell's label"):
        parse_spec({"paper": "p", "title": "t", "citation": "c", "tables": [table | {"judged": {"against": "greedy", "model": "m"}}]}, "p")
    spec = parse_spec({"paper": "p", "title": "t", "citation": "c", "tables": [table], "claims": [{
        "id": "wins", "text": "CARDS wins", "metric": "win_tie", "judge": {"model": "tiny-random-llama", "scoring": "loglikelihood"},
        "baseline": {"task": "hh-rlhf", "task_args": task_args, "models": ["tiny-random-llama"], "limit": 3},
        "treatment": {"method": "cards", "method_args": {"reward_model": "tiny-random-reward", "reward_target": 0}}}]}, "p")
    report = papers.regenerate(spec, open_store(published))
    [claim] = report["claims"]
    vanilla_row, cards_row = report["tables"][0]["rows"]
    assert vanilla_row["values"]["win_tie"]["value"] is None  # nothing judges the baseline against itself
    assert cards_row["values"]["win_tie"]["value"] == summary["win_tie"]["rate"]
    [evidence] = claim["per_model"]
    assert (evidence["baseline_run"], evidence["treatment_run"], evidence["n"]) == (base, run.name, 3)
    assert evidence["counts"] == summary["counts"] and claim["verdict"] == "not supported"  # three pairs decide nothing
    assert "judge tiny-random-llama (loglikelihood): win-tie" in paper_render.claim_line(claim)
    judged = published / "judgments" / name
    judged.write_text(judged.read_text().replace('"win"', '"lose"', 1))
    assert any("sha256 differs" in problem for problem in publish.verify(published))
    publish.remove(published, [base])
    assert not judged.exists() and publish.verify(published) == []

    # Runs scored by an evaluation reward model of the same name but other weights (a reward
    # model retrained on another machine) are not compared.
    store = RunStore(runs_dir)
    assert {c.metric for c in compare(store, base, run.name)[0]} >= {"reward"}
    retrained = runs_dir / ("f" * 16)
    shutil.copytree(runs_dir / base, retrained)
    other = json.loads((retrained / "spec.json").read_text())
    other["auxiliary"]["evaluation_reward_model"]["weights_sha256"] = "0" * 64
    (retrained / "spec.json").write_text(json.dumps(other))
    with pytest.raises(IncompatibleError, match="different evaluation reward models .*not comparable"):
        compare(store, retrained.name, run.name)

    # Rescoring reads the saved rewards: it needs no reward model (none may be installed any
    # more, or another under the same name), and the run's recorded identity stays its own.
    def unavailable(name, *args, **kwargs):
        raise UnknownNameError(f"no model '{name}' here")

    monkeypatch.setattr(models, "resolve", unavailable)
    assert cli("rescore", run.name, "--output-dir", runs_dir) == 0
    rescored = json.loads((run / "results.json").read_text())
    assert rescored["metrics"] == results["metrics"]
    recorded = json.loads((run / "spec.json").read_text())["auxiliary"]["evaluation_reward_model"]
    assert rescored["protocol"]["evaluation_reward_model_identity"] == recorded and recorded["weights_sha256"]


def test_judge_scores_parse_and_both_orders_count():
    from reports.wintie import parse_scores, verdict

    assert parse_scores("\n8 7\nBecause ...") == (8.0, 7.0) and parse_scores("9,10") == (9.0, 10.0)
    assert parse_scores("Assistant 1 gets 8") is None and parse_scores("11 3") is None
    assert verdict((8, 7), (6, 9)) == "win"  # B: 8 + 9, A: 7 + 6
    assert verdict((4, 7), None) == "lose" and verdict(None, (5, 5)) == "tie" and verdict(None, None) == "unparseable"


def test_judge_pairs_answers_by_document_and_keeps_unparseable_apart():
    from types import SimpleNamespace

    from harness.api import GenerateResult
    from harness.stats import sign_test
    from reports.wintie import Pair, judge_pairs, summarize_verdicts

    class ScriptedJudge:
        """Prefers the answer saying 'good'; cannot read the third question."""

        loaded = SimpleNamespace(has_chat_template=False)

        def generate(self, requests):
            out = []
            for r in requests:
                first = r.prompt.split("Assistant 1's Answer]\n")[1].split("\n")[0]
                text = "garbled" if "q3" in r.prompt else ("9 2" if first == "good" else "2 9") if "good" in r.prompt else "5 5"
                out.append(GenerateResult(text, 2, "stop"))
            return out

    pairs = [Pair("d1", "q1", "bad", "good"), Pair("d2", "q2", "good", "bad"), Pair("d3", "q3", "x", "y"), Pair("d4", "q4", "x", "y")]
    records = judge_pairs(pairs, ScriptedJudge())
    assert [r["verdict"] for r in records] == ["win", "lose", "unparseable", "tie"]
    summary = summarize_verdicts(records)
    assert summary["n_judged"] == 3 and summary["win_tie"]["rate"] == pytest.approx(2 / 3) and summary["unparseable_rate"] == 0.25
    assert summary["sign_test_p"] == pytest.approx(1.0)  # one win, one loss: no preference
    assert sign_test(9, 1) == pytest.approx(22 / 1024) and sign_test(0, 0) is None  # 2 * P(X <= 1), X ~ Bin(10, 1/2)


def test_a_win_tie_claim_names_its_judge():
    from reports.paper_spec import parse_spec

    claim = {"id": "c", "text": "t", "metric": "win_tie", "baseline": {"task": "hh-rlhf"}, "treatment": {"method": "cards"}}
    with pytest.raises(ArgumentError, match="names its judge"):
        parse_spec({"paper": "p", "title": "t", "citation": "c", "claims": [claim]}, "p")
    with pytest.raises(ArgumentError, match="names its judge"):
        parse_spec({"paper": "p", "title": "t", "citation": "c", "claims": [claim | {"metric": "reward", "judge": {"model": "j"}}]}, "p")


def test_vanilla_sampling_honours_the_requests_top_k(tiny):
    from harness.lm import CausalLM

    lm = CausalLM(tiny, Cost(), 4, None, 0, False)
    greedy = lm.generate([GenerateRequest("Once upon a time", 12)])[0].text
    top_one = lm.generate([GenerateRequest("Once upon a time", 12, temperature=5.0, top_k=1)])[0].text
    wide = lm.generate([GenerateRequest("Once upon a time", 12, temperature=5.0, top_k=200)])[0].text
    assert top_one == greedy != wide


def test_runs_of_a_method_with_a_required_argument_get_labels():
    """The catalog (tables, publish, leaderboard) reads a method's defaults; a required reward
    model must not stop it (publishing a cards run failed on exactly this)."""
    from reports.catalog import method_defaults, method_label

    assert method_defaults("cards")["reward_model"] == "" and method_defaults("distilrr") == {"checkpoint": ""}
    label = method_label("cards", {**method_defaults("cards"), "reward_model": "rm", "target_quantile": 0.9})
    assert "reward_model=rm" in label and "target_quantile=0.9" in label
