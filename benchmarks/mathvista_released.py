"""Rescore MathVista's released model outputs (lupantech/MathVista ``results/*/output_*.json``)
with the harness's normaliser and scorer (``tasks/mathvista_scoring.py``), and print, per file,
the published score (``scores_*.json``) beside the recomputed one.

Each output entry holds the model's ``response``, the LLM-extracted ``extraction``, the
``prediction`` the official code normalised from it and ``true_false``. We renormalise the
stored extraction (the extraction itself needs the GPT extractor the release used, which is not
here), compare with ``answer``, and count the items where our prediction differs from the stored
one, with the pids, so every difference from the published count can be traced.

Most released predictions predate the published scorer: they read an integer answer with
``str(int(x))``, so an extraction such as ``"5.0"`` got no prediction, where the scorer at every
commit since the first one uses ``str(int(float(x)))``. The script therefore also scores each
file with that earlier integer rule (column ``int(x) rule``) and says, per file, under which
rule the published count is reproduced.

    python benchmarks/mathvista_released.py DIR      # DIR: the repository (or its results/ folder)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.mathvista_scoring import is_correct, normalize_extracted_answer  # noqa: E402


def earlier_integer_rule(entry: dict) -> str | None:
    """The integer normalisation the released predictions were made with: ``str(int(x))``."""
    try:
        return str(int(entry.get("extraction", "")))
    except (TypeError, ValueError):
        return None


def rescore(entries: dict[str, dict], earlier: bool = False) -> tuple[int, int, list[str], list[str]]:
    """(correct, total, pids whose prediction differs from the stored one, pids whose verdict differs)."""
    correct, changed, flipped = 0, [], []
    for pid, entry in entries.items():
        if earlier and entry["question_type"] != "multi_choice" and entry["answer_type"] == "integer":
            prediction = earlier_integer_rule(entry)
        else:
            prediction = normalize_extracted_answer(entry.get("extraction", ""), entry.get("choices"), entry["question_type"],
                                                    entry["answer_type"], entry.get("precision"))
        ok = is_correct(prediction, entry["answer"])
        correct += ok
        stored = entry.get("prediction")
        if prediction != stored and not (prediction is None and stored in (None, "")):
            changed.append(pid)
        if "true_false" in entry and bool(entry["true_false"]) != ok:
            flipped.append(pid)
    return correct, len(entries), changed, flipped


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("dir", type=Path)
    args = parser.parse_args()
    root = args.dir / "results" if (args.dir / "results").is_dir() else args.dir
    outputs = sorted(root.glob("*/output_*.json"))
    if not outputs:
        raise SystemExit(f"no results/*/output_*.json under {args.dir}")
    print(f"{'file':52s} {'published':>16s} {'recomputed':>16s} {'int(x) rule':>12s} {'preds differ':>12s} {'verdicts differ':>15s}")
    reproduced, by_rule = 0, 0
    for output in outputs:
        entries = json.loads(output.read_text())
        scores_file = output.with_name(output.name.replace("output_", "scores_", 1))
        published = json.loads(scores_file.read_text())["average"] if scores_file.is_file() else None
        correct, total, changed, flipped = rescore(entries)
        earlier, _, _, _ = rescore(entries, earlier=True)
        label = f"{output.parent.name}/{output.name}"
        pub = f"{published['correct']}/{published['total']} {float(published['accuracy']):.1f}" if published else "-"
        same = published is not None and published["correct"] == correct and published["total"] == total
        either = published is not None and published["total"] == total and published["correct"] in (correct, earlier)
        reproduced += same
        by_rule += either
        verdict = "" if same else ("  <- reproduced by the int(x) rule" if either else "  <- differs")
        print(f"{label:52s} {pub:>16s} {f'{correct}/{total} {100 * correct / total:.1f}':>16s} {earlier:>12d} {len(changed):>12d} "
              f"{len(flipped):>15d}{verdict}")
        for pid in flipped[:5]:
            e = entries[pid]
            print(f"    pid {pid}: extraction {str(e.get('extraction'))[:40]!r} stored prediction {e.get('prediction')!r} "
                  f"answer {e['answer']!r} ({e['answer_type']}, precision {e.get('precision')})")
    print(f"\n{reproduced}/{len(outputs)} files reproduce their published count with the current scorer, "
          f"{by_rule}/{len(outputs)} with it or the earlier integer rule")


if __name__ == "__main__":
    main()
