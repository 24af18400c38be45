#!/usr/bin/env bash
# The device tool sends the tracked files with every call (64 MiB at most, carried paths included),
# and the published runs, the built site and the carried models alone fill that. `light` takes them
# out of the index (the files stay on disk) and ignores them, for the length of the device work;
# `restore` puts the index and the ignore list back. Never commit between the two.
#   scripts/device/tree.sh light | restore | size
set -euo pipefail
cd "$(dirname "$0")/../.."
HEAVY=(results site models)
EXCLUDE=.git/info/exclude
size() { git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | awk '{printf "tracked files: %.1f MiB\n", $1 / 1048576}'; }
case "${1:-}" in
    light)
        if ! git diff --cached --quiet; then echo "tree.sh: the index has staged changes; commit or unstage them first" >&2; exit 1; fi
        git rm -r -q --cached "${HEAVY[@]}"
        for folder in "${HEAVY[@]}"; do grep -qx "/$folder/" "$EXCLUDE" 2>/dev/null || echo "/$folder/" >> "$EXCLUDE"; done
        size; echo "tree.sh: light; run 'scripts/device/tree.sh restore' when the device work is done" ;;
    restore)
        for folder in "${HEAVY[@]}"; do sed -i "\|^/$folder/\$|d" "$EXCLUDE"; done
        git reset -q -- "${HEAVY[@]}"
        size; git status --short | head ;;
    size) size ;;
    *) echo "usage: scripts/device/tree.sh light | restore | size" >&2; exit 2 ;;
esac
