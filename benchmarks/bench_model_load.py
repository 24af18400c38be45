"""Model load time: cold GGUF load through transformers vs the harness's safetensors cache.

Both in the same process, on the same file; prints seconds and the speed-up.

    python benchmarks/bench_model_load.py --model smollm2-135m-instruct [--model gemma3-270m]
"""

from __future__ import annotations

import argparse
import time

from harness import gguf as gguf_weights
from harness import models, zoo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=None)
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for name in args.model or [zoo.DEFAULT_MODEL]:
        entry = zoo.zoo()[name]
        gguf = gguf_weights.gguf_path(entry)
        start = time.perf_counter()
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        cold = time.perf_counter() - start
        models.resolve(name)  # converts once if the cache is empty (not timed)
        start = time.perf_counter()
        models.load(models.resolve(name))
        warm = time.perf_counter() - start
        print(f"{name}: cold GGUF load {cold:.1f} s, warm harness load (resolve + load) {warm:.2f} s, speed-up {cold / warm:.0f}x")


if __name__ == "__main__":
    main()
