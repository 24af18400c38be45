"""Command-line verbs that make models: ``harness attack``. Wired into ``harness.cli``."""

from __future__ import annotations

import argparse
from typing import Any

from harness.errors import ArgumentError


def add_parsers(sub: Any) -> None:
    from harness.models import DEFAULT_MODEL
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
    attack.add_argument("--quiet", action="store_true")


def cmd_attack(args: argparse.Namespace) -> int:
    from harness import models
    from harness.data import DataStore
    from training.backdoor import AttackSpec, train_backdoor

    if args.model not in models.zoo():
        raise ArgumentError(f"--model must be a zoo model (harness ls models); got '{args.model}'")
    spec = AttackSpec(attack=args.attack, base_model=args.model, poison_rate=args.poison_rate, epochs=args.epochs,
                      learning_rate=args.learning_rate, lora_r=args.lora_r, lora_alpha=2 * args.lora_r,
                      batch_size=args.batch_size, max_length=args.max_length, seed=args.seed, n_clean=args.n_clean)
    name = train_backdoor(spec, DataStore(args.data_dir), show_progress=not args.quiet)
    print(f"zoo model: {name}  (use --model {name}; recipe in {models.local_zoo_dir() / name / models.ZOO_META})")
    return 0


HANDLERS = {"attack": cmd_attack}
