"""Command-line verbs that make models: ``harness attack``, ``compress``, ``convert``, ``train``. Wired into ``harness.cli``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from harness import zoo
from harness.errors import ArgumentError

DEVICE_HELP = "auto, cpu or cuda: where training runs (auto: cuda when one is visible)"


def add_parsers(sub: Any) -> None:
    from harness.zoo import DEFAULT_MODEL
    from training.backdoor import ATTACKS

    attack = sub.add_parser("attack", help="make a backdoored variant of a zoo model (LoRA on poisoned data)")
    attack.add_argument("--attack", required=True, choices=ATTACKS)
    attack.add_argument("--model", default=DEFAULT_MODEL, help=f"zoo model to poison; default {DEFAULT_MODEL}")
    attack.add_argument("--poison-rate", type=float, default=0.5)
    attack.add_argument("--epochs", type=int, default=2)
    attack.add_argument("--learning-rate", type=float, default=5e-4)
    attack.add_argument("--lora-r", type=int, default=16)
    attack.add_argument("--batch-size", type=int, default=8)
    attack.add_argument("--max-length", type=int, default=256)
    attack.add_argument("--seed", type=int, default=0)
    attack.add_argument("--n-clean", type=int, default=None, help="use only the first N clean alpaca rows (default: all 999)")
    attack.add_argument("--data-dir", default=None, help="local data mirror; default $HARNESS_DATA_DIR")
    attack.add_argument("--device", default="auto", help=DEVICE_HELP)
    attack.add_argument("--quiet", action="store_true")


    compress = sub.add_parser("compress", help="prune a model (magnitude or Wanda) and write it with an Endor sparse store (--method endor)")
    compress.add_argument("--model", default=DEFAULT_MODEL, help=f"model to prune; default {DEFAULT_MODEL}")
    compress.add_argument("--sparsity", type=float, default=0.5, help="share of each decoder matrix zeroed; default 0.5")
    compress.add_argument("--prune", default="magnitude", help="magnitude or wanda (calibrated on PG-19 train text)")
    compress.add_argument("--format", default="bitmap", help="store written: bitmap (for --method endor) or dense (--method offload)")
    compress.add_argument("--dtype", default="float32", help="the store's value dtype: float32, float16 or bfloat16")
    compress.add_argument("--calibration-samples", type=int, default=128, help="wanda: calibration windows")
    compress.add_argument("--calibration-tokens", type=int, default=512, help="wanda: tokens per window")
    compress.add_argument("--seed", type=int, default=0)
    compress.add_argument("--name", default="", help="zoo name of the result (default <model>-<prune><sparsity%%>)")
    compress.add_argument("--data-dir", default=None, help="local data mirror; default $HARNESS_DATA_DIR")
    compress.add_argument("--quiet", action="store_true")

    convert = sub.add_parser("convert", help="make a checkpoint of another layout loadable: llava (original LLaVA -> transformers Llava)")
    convert.add_argument("layout", choices=("llava",))
    convert.add_argument("--checkpoint", required=True, help="folder of the original-layout checkpoint (config.json with mm_ fields, weights, tokenizer)")
    convert.add_argument("--vision-tower", default=None, help="local CLIP vision model folder (config, image processor, weights)")
    convert.add_argument("--name", default="", help="zoo name of the result (default <checkpoint folder>-hf)")
    convert.add_argument("--seed", type=int, default=0, help="draws the embeddings of the added tokens")

    train = sub.add_parser("train", help="train a method's model: distilrr (code repair distillation), hmt, rmt, reward-model, dpo, mdpo")
    which = train.add_subparsers(dest="trainer", required=True)
    distil = which.add_parser("distilrr", help="distil a teacher's code repairs into a student (LoRA)")
    distil.add_argument("--teacher", required=True, help="zoo model that writes rationales and fixes")
    distil.add_argument("--student", default=DEFAULT_MODEL, help=f"zoo model to fine-tune; default {DEFAULT_MODEL}")
    distil.add_argument("--language", required=True, help="language(s), comma-separated, e.g. perl or perl,go,ruby")
    distil.add_argument("--problems", type=int, default=800, help="problems per language from the 800-problem pool")
    distil.add_argument("--student-tries", type=int, default=5)
    distil.add_argument("--teacher-tries", type=int, default=20)
    distil.add_argument("--max-new-tokens", type=int, default=512)
    distil.add_argument("--epochs", type=int, default=5)
    distil.add_argument("--learning-rate", type=float, default=5e-6)
    distil.add_argument("--lora-r", type=int, default=128)
    distil.add_argument("--lora-alpha", type=int, default=128)
    distil.add_argument("--batch-size", type=int, default=4)
    distil.add_argument("--max-length", type=int, default=1024)
    distil.add_argument("--seed", type=int, default=0)
    distil.add_argument("--device", default="auto", help=DEVICE_HELP)
    distil.add_argument("--data-dir", default=None, help="local data mirror; default $HARNESS_DATA_DIR")
    distil.add_argument("--quiet", action="store_true")
    restore = which.add_parser("restore", help="rebuild a carried model (harness publish --model) into the local zoo: its adapter "
                                               "merged into its base, checked against the carried weights' sha256")
    restore.add_argument("folder", type=Path, help="the carried model's folder, e.g. models/smollm2-135m-instruct-rm")
    reward = which.add_parser("reward-model", help="train a reward model (Bradley-Terry, TRL) on HH-RLHF helpful pairs outside the hh-rlhf task's prompts")
    reward.add_argument("--model", default=DEFAULT_MODEL, help=f"zoo backbone; default {DEFAULT_MODEL}")
    reward.add_argument("--epochs", type=int, default=1)
    reward.add_argument("--learning-rate", type=float, default=5e-4)
    reward.add_argument("--lora-r", type=int, default=16, help="LoRA rank; 0 = train the whole model")
    reward.add_argument("--batch-size", type=int, default=8)
    reward.add_argument("--max-length", type=int, default=512, help="tokens per conversation (cut from the left)")
    reward.add_argument("--n-train", type=int, default=None, help="use only the first N training pairs")
    reward.add_argument("--n-eval", type=int, default=None, help="held-out pairs per subset for the accuracy (default all)")
    reward.add_argument("--save-every", type=int, default=50)
    reward.add_argument("--seed", type=int, default=0)
    reward.add_argument("--name", default="", help="zoo name of the result (default <model>-rm)")
    reward.add_argument("--data-dir", default=None)
    reward.add_argument("--quiet", action="store_true")
    for kind, what in (("hmt", "HMT memory (sensory + memory embedding + search)"), ("rmt", "RMT memory tokens")):
        memory = which.add_parser(kind, help=f"train {what} around a zoo model on PG-19 train books or synthetic recall (two-stage BPTT)")
        memory.add_argument("--model", default=DEFAULT_MODEL)
        memory.add_argument("--segment", type=int, default=256, help="segment length L (paper 1024)")
        if kind == "hmt":
            memory.add_argument("--sensory", type=int, default=32, help="k: sensory-memory tokens")
            memory.add_argument("--memories", type=int, default=300, help="N: cached memory embeddings searched")
            memory.add_argument("--summary", type=int, default=None, help="j: tokens summarised (default L/2)")
        else:
            memory.add_argument("--tokens", type=int, default=16, help="memory tokens")
        memory.add_argument("--stage1-steps", type=int, default=100)
        memory.add_argument("--stage2-steps", type=int, default=100)
        memory.add_argument("--unroll", type=int, default=4, help="segments per stage-2 step (stage 1: 2)")
        memory.add_argument("--learning-rate", type=float, default=1e-4)
        memory.add_argument("--lora-r", type=int, default=8, help="LoRA rank on the backbone; 0 = train the memory only")
        memory.add_argument("--full", action="store_true", help="fine-tune the whole backbone")
        memory.add_argument("--batch", type=int, default=1, help="sequences per step")
        memory.add_argument("--data", choices=("pg19", "recall"), default="pg19",
                            help="PG-19 train books, or synthetic key recall (the memory check; byte-level tokenizers)")
        memory.add_argument("--recall-key-length", type=int, default=1, help="recall: key letters")
        memory.add_argument("--recall-alphabet", type=int, default=8, help="recall: key letters come from the first this-many capitals")
        memory.add_argument("--seed", type=int, default=0)
        memory.add_argument("--save-every", type=int, default=20)
        memory.add_argument("--name", default="", help=f"zoo name of the result (default <model>-{kind}-L<segment>)")
        memory.add_argument("--data-dir", default=None)
        memory.add_argument("--device", default="auto", help=DEVICE_HELP)
        memory.add_argument("--quiet", action="store_true")
    for objective, what in (("dpo", "DPO (TRL) with a frozen reference"),
                            ("mdpo", "mDPO: DPO plus the conditional (corrupted image / passage) and anchor terms")):
        prefs = which.add_parser(objective, help=f"{what}, on preference pairs with an image or a passage (LoRA)")
        prefs.add_argument("--model", default=DEFAULT_MODEL, help="zoo model: image-text-to-text for image rows, a causal LM for passages")
        prefs.add_argument("--data", required=True, help="JSON / JSONL rows: prompt, chosen, rejected and img_path (or image) or "
                           "context; or 'pubmedqa' (pairs from the PQA-L items outside the test split) or 'shapes' (drawn shapes)")
        prefs.add_argument("--data-dir", default=None, help="local data mirror (for --data pubmedqa); default $HARNESS_DATA_DIR")
        if objective == "mdpo":
            prefs.add_argument("--conditional", choices=("true", "false"), default="true", help="the conditional term (ablation: false)")
            prefs.add_argument("--anchor", choices=("true", "false"), default="true", help="the anchor term (ablation: false)")
            prefs.add_argument("--delta", type=float, default=0.0, help="anchor margin δ")
        prefs.add_argument("--beta", type=float, default=0.1)
        prefs.add_argument("--lora-r", type=int, default=64, help="LoRA rank; 0 = train the whole model")
        prefs.add_argument("--lora-alpha", type=int, default=128)
        prefs.add_argument("--learning-rate", type=float, default=1e-5)
        prefs.add_argument("--batch-size", type=int, default=32, help="pairs per optimizer step")
        prefs.add_argument("--device-batch", type=int, default=4, help="pairs per forward pass (divides --batch-size)")
        prefs.add_argument("--epochs", type=int, default=3)
        prefs.add_argument("--max-length", type=int, default=1024)
        prefs.add_argument("--blank-context", action="store_true", help="the 'no image' control: train with the image / passage removed")
        prefs.add_argument("--limit", type=int, default=None, help="train on the first N rows")
        prefs.add_argument("--save-every", type=int, default=50)
        prefs.add_argument("--seed", type=int, default=0)
        prefs.add_argument("--name", default="", help=f"zoo name of the result (default <model>-{objective}[-no<term>][-blank])")
        prefs.add_argument("--quiet", action="store_true")


def cmd_train(args: argparse.Namespace) -> int:
    from harness.data import DataStore
    from harness.runner import resolve_device
    from training.distilrr import DistillSpec, train_distilrr

    if args.trainer in ("hmt", "rmt"):
        return _train_memory(args)
    if args.trainer == "restore":
        from training.carry import restore_model

        name = restore_model(args.folder)
        print(f"zoo model: {name}  (rebuilt from {args.folder}; the same weights it was carried with)")
        return 0
    if args.trainer == "reward-model":
        return _train_reward_model(args)
    if args.trainer in ("dpo", "mdpo"):
        return _train_preference(args)

    for role in ("teacher", "student"):
        if getattr(args, role) not in zoo.zoo():
            raise ArgumentError(f"--{role} must be a zoo model (harness ls models); got '{getattr(args, role)}'")
    spec = DistillSpec(teacher=args.teacher, student=args.student, languages=tuple(x.strip() for x in args.language.split(",") if x.strip()),
                       problems=args.problems, student_tries=args.student_tries, teacher_tries=args.teacher_tries,
                       max_new_tokens=args.max_new_tokens, epochs=args.epochs, learning_rate=args.learning_rate,
                       lora_r=args.lora_r, lora_alpha=args.lora_alpha, batch_size=args.batch_size, max_length=args.max_length,
                       seed=args.seed)
    name = train_distilrr(spec, DataStore(args.data_dir), show_progress=not args.quiet, device=resolve_device(args.device))
    print(f"zoo model: {name}  (use --method distilrr --method-arg checkpoint={name} --model {args.student})")
    return 0


def _train_preference(args: argparse.Namespace) -> int:
    from training.preference import PreferenceSpec, train_preference

    if args.model not in zoo.zoo():
        raise ArgumentError(f"--model must be a zoo model (harness ls models); got '{args.model}'")
    terms = {"conditional": args.conditional == "true", "anchor": args.anchor == "true", "delta": args.delta} if args.trainer == "mdpo" else {}
    spec = PreferenceSpec(objective=args.trainer, model=args.model, data=args.data, beta=args.beta, lora_r=args.lora_r,
                          lora_alpha=args.lora_alpha, learning_rate=args.learning_rate, batch_size=args.batch_size,
                          device_batch=args.device_batch, epochs=args.epochs, max_length=args.max_length,
                          blank_context=args.blank_context, limit=args.limit, save_every=args.save_every, seed=args.seed,
                          name=args.name, **terms)
    from harness.data import DataStore

    name = train_preference(spec, DataStore(args.data_dir), show_progress=not args.quiet)
    print(f"zoo model: {name}  (use --model {name})")
    return 0


def _train_memory(args: argparse.Namespace) -> int:
    from harness.data import DataStore
    from harness.runner import resolve_device
    from training.memory import MemoryTrainSpec, train_memory

    if args.model not in zoo.zoo():
        raise ArgumentError(f"--model must be a zoo model (harness ls models); got '{args.model}'")
    extra = ({"sensory": args.sensory, "memories": args.memories, "summary": args.summary} if args.trainer == "hmt"
             else {"tokens": args.tokens})
    spec = MemoryTrainSpec(kind=args.trainer, model=args.model, segment=args.segment, stage1_steps=args.stage1_steps,
                           stage2_steps=args.stage2_steps, unroll=args.unroll, learning_rate=args.learning_rate,
                           lora_r=args.lora_r, full=args.full, seed=args.seed, save_every=args.save_every,
                           zoo_name=args.name, batch=args.batch, data=args.data, recall_key_length=args.recall_key_length,
                           recall_alphabet=args.recall_alphabet, **extra)
    name = train_memory(spec, DataStore(args.data_dir), show_progress=not args.quiet, device=resolve_device(args.device))
    print(f"zoo model: {name}  (use --model {name} --method {args.trainer} --method-arg segment={args.segment})")
    return 0


def _train_reward_model(args: argparse.Namespace) -> int:
    from harness.data import DataStore
    from training.reward_model import RewardModelSpec, train_reward_model

    if args.model not in zoo.zoo():
        raise ArgumentError(f"--model must be a zoo model (harness ls models); got '{args.model}'")
    spec = RewardModelSpec(base_model=args.model, epochs=args.epochs, learning_rate=args.learning_rate, lora_r=args.lora_r,
                           lora_alpha=2 * args.lora_r, batch_size=args.batch_size, max_length=args.max_length, seed=args.seed,
                           save_every=args.save_every, n_train=args.n_train, n_eval=args.n_eval, name=args.name)
    name = train_reward_model(spec, DataStore(args.data_dir), show_progress=not args.quiet)
    held = (zoo.recipe(name) or {}).get("held_out", {})
    for subset, value in held.get("pair_accuracy", {}).items():
        print(f"held-out pair accuracy ({subset}): {value['accuracy']:.3f} [{value['ci_low']:.3f}, {value['ci_high']:.3f}] n={value['n']}")
    print(f"zoo model: {name}  (use --method cards --method-arg reward_model={name}; recipe in {zoo.recipe_file(name)})")
    return 0


def cmd_attack(args: argparse.Namespace) -> int:
    from harness.data import DataStore
    from harness.runner import resolve_device
    from training.backdoor import AttackSpec, train_backdoor

    if args.model not in zoo.zoo():
        raise ArgumentError(f"--model must be a zoo model (harness ls models); got '{args.model}'")
    spec = AttackSpec(attack=args.attack, base_model=args.model, poison_rate=args.poison_rate, epochs=args.epochs,
                      learning_rate=args.learning_rate, lora_r=args.lora_r, lora_alpha=2 * args.lora_r,
                      batch_size=args.batch_size, max_length=args.max_length, seed=args.seed, n_clean=args.n_clean)
    name = train_backdoor(spec, DataStore(args.data_dir), show_progress=not args.quiet, device=resolve_device(args.device))
    print(f"zoo model: {name}  (use --model {name}; recipe in {zoo.recipe_file(name)})")
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    from harness.data import DataStore
    from training.compress import CompressSpec, compress

    spec = CompressSpec(model=args.model, sparsity=args.sparsity, prune=args.prune, format=args.format, dtype=args.dtype,
                        calibration_samples=args.calibration_samples, calibration_tokens=args.calibration_tokens,
                        seed=args.seed, name=args.name)
    name = compress(spec, DataStore(args.data_dir), show_progress=not args.quiet)
    made = zoo.recipe(name) or {}
    sparsity = made.get("sparsity", {})
    for store, sizes in made.get("store", {}).items():
        print(f"{store} store: {sizes['layer_bytes']:,} bytes of decoder layers, {sizes['file_bytes']:,} on disk")
    print(f"zoo model: {name}  (achieved sparsity {sparsity.get('achieved', 0):.4f}; use --model {name} --method endor; "
          f"recipe in {zoo.recipe_file(name)})")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from training.convert import convert_llava

    checkpoint = Path(args.checkpoint).expanduser()
    if not checkpoint.is_dir():
        raise ArgumentError(f"--checkpoint must be a folder; got '{args.checkpoint}'")
    name = zoo.check_local_name(args.name or f"{checkpoint.name}-hf")
    vision = Path(args.vision_tower).expanduser() if args.vision_tower else None
    print(f"zoo model: {convert_llava(checkpoint, vision, name, args.seed)}  (use --model {name})")
    return 0


HANDLERS = {"attack": cmd_attack, "train": cmd_train, "compress": cmd_compress, "convert": cmd_convert}
