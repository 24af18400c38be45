"""Synthetic image preference pairs for the vision path of ``harness train dpo|mdpo`` (issue 22's
synthetic-image check): a coloured shape drawn on a white canvas; the chosen caption names its
colour and shape, the rejected one gets one attribute wrong. No VLM or VLFeedback image installs
offline, so this is the check that images flow through training and evaluation end to end.

``python3 -m training.shapes OUT [--train N] [--test N] [--seed S]`` writes ``OUT/images/*.png``,
``OUT/train.json`` and ``OUT/test.json`` (the layout ``harness train`` and the ``preference``
task read). ``--data shapes`` (trainer) and ``data=shapes`` (task) use the default set (200
training and 100 test pairs, seed 0), drawn once into the cache folder.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220), "yellow": (235, 210, 30),
           "purple": (140, 50, 170), "orange": (245, 140, 20)}
SHAPES = ("square", "circle", "triangle")
PROMPT = "What is in the image?"
SIZE = 32


def draw(colour: str, shape: str, rng: random.Random) -> Any:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (SIZE, SIZE), "white")
    size = rng.randint(14, 24)
    left, top = rng.randint(0, SIZE - size), rng.randint(0, SIZE - size)
    box = (left, top, left + size - 1, top + size - 1)
    pen = ImageDraw.Draw(image)
    if shape == "square":
        pen.rectangle(box, fill=COLOURS[colour])
    elif shape == "circle":
        pen.ellipse(box, fill=COLOURS[colour])
    else:
        pen.polygon([(left + size // 2, top), (left, top + size - 1), (left + size - 1, top + size - 1)], fill=COLOURS[colour])
    return image


def write_shapes(folder: Path, train: int = 200, test: int = 100, seed: int = 0) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"shapes/{seed}")
    rows = []
    for index in range(train + test):
        colour, shape = rng.choice(sorted(COLOURS)), rng.choice(SHAPES)
        if rng.random() < 0.5:
            wrong = (rng.choice([c for c in sorted(COLOURS) if c != colour]), shape)
        else:
            wrong = (colour, rng.choice([s for s in SHAPES if s != shape]))
        name = f"images/{index:04d}.png"
        draw(colour, shape, rng).save(folder / name)
        rows.append({"id": f"shape-{index:04d}", "img_path": name, "prompt": PROMPT, "chosen": f"A {colour} {shape}.",
                     "rejected": f"A {wrong[0]} {wrong[1]}."})
    (folder / "train.json").write_text(json.dumps(rows[:train], indent=1))
    (folder / "test.json").write_text(json.dumps(rows[train:], indent=1))


def default_set() -> Path:
    """The default set's folder in the cache, drawn on first use (the drawing is deterministic)."""
    from harness import zoo

    folder = zoo.cache_dir() / "data" / "shapes-200-100-0"
    if not (folder / "test.json").is_file():
        staging = folder.with_name(folder.name + ".partial")
        write_shapes(staging)
        staging.rename(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=200)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_shapes(args.out, args.train, args.test, args.seed)
    print(f"wrote {args.train} training and {args.test} test pairs under {args.out}")


if __name__ == "__main__":
    main()
