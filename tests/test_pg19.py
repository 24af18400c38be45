"""PG-19: Gutenberg boilerplate removal, the test books only, both protocols; the
sliding-window method's windows; peak memory and tokens/s in results."""

from __future__ import annotations

import json

import pytest

from harness.api import StreamRequest
from harness.data import DataStore
from tasks.pg19 import strip_gutenberg
from tests.conftest import cli


def test_gutenberg_header_and_footer_are_removed():
    raw = ("The Project Gutenberg eBook of X\nLicense blah\n***START OF THE PROJECT GUTENBERG EBOOK A LONG\nTITLE***\n\n"
           "Chapter 1\nIt was night.\n\n*** END OF THIS PROJECT GUTENBERG EBOOK A LONG TITLE ***\nMore license text\n")
    assert strip_gutenberg(raw) == "Chapter 1\nIt was night.\n"
    closing = raw.replace("*** END", "End of the Project Gutenberg EBook of A Long Title\n\n*** END")
    assert strip_gutenberg(closing) == "Chapter 1\nIt was night.\n"
    assert strip_gutenberg("no markers at all") is None
    assert strip_gutenberg(raw.replace("*** END", "END")) is None


def test_test_books_are_loaded_clean_and_in_canonical_order(mirror):
    from harness.runner import make_task

    docs = make_task("pg19", {}).load_docs(DataStore(mirror))
    order = [line.split("\t")[0] for line in (mirror / "pg19" / "pg19_test_ids_titles.tsv").read_text().splitlines()]
    books = [d.data["book"] for d in docs]
    assert len(books) == 20 and books == [b for b in order if b in set(books)]
    train = {p.stem for p in (mirror / "pg19" / "train").glob("*.txt")}
    assert not set(books) & train
    for doc in docs:
        assert "PROJECT GUTENBERG EBOOK" not in doc.data["text"].upper() and "Project Gutenberg License" not in doc.data["text"]
    samples = make_task("pg19", {"protocol": "last-segment", "sample_tokens": 2048, "segment": 256, "samples_per_book": 2}).load_docs(DataStore(mirror))
    first = samples[0].data
    assert len(samples) == 40 and abs(len(first["text"]) - 256 * 4) < 40 and first["context"]
    book = next(d for d in docs if d.data["book"] == first["book"]).data["text"]
    assert first["context"] + first["text"] in book


def test_sliding_window_scores_with_its_own_window_and_stride(tiny):
    from harness.lm import CausalLM
    from harness.method import Cost, MethodOptions
    from methods.sliding_window import SlidingWindow, SlidingWindowArgs

    method = SlidingWindow(tiny, SlidingWindowArgs(window=32), MethodOptions(show_progress=False))
    text = "The quick brown fox jumps over the lazy dog. " * 12
    (result,) = method.score_stream([StreamRequest(text, window=512, stride=512)])  # the task's window is replaced
    assert result.window == 32 and result.stride == 16
    reference = CausalLM(tiny, Cost(), "auto", None, 0, False).score_stream([StreamRequest(text, window=32, stride=16)])[0]
    assert result.logprob == pytest.approx(reference.logprob, rel=1e-5) and result.n_windows == reference.n_windows > 1


def test_pg19_run_records_perplexities_memory_and_speed(tmp_path):
    runs = tmp_path / "runs"
    assert cli("run", "--task", "pg19", "--method", "sliding-window", "--method-arg", "window=64", "--model", "tiny-random-llama",
               "--task-arg", "max_tokens=100", "--limit", "2", "--quiet", "--output-dir", runs) == 0
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    results = json.loads((run / "results.json").read_text())
    assert {"word_perplexity", "token_perplexity", "bits_per_byte"} <= set(results["metrics"])
    assert results["timing"]["peak_rss_mb"] > 100 and results["timing"]["tokens_per_s"] > 0
    assert results["method_settings"] == {"window": 64, "stride": 32}


def test_pubmedqa_long_groups_contexts_and_scores_with_stream_only(mirror, tmp_path):
    from harness.runner import make_task

    task = make_task("pubmedqa-long", {"contexts": 3})
    docs = task.load_docs(DataStore(mirror))
    assert len(docs) == 500 // 3 and len(docs[0].data["items"]) == 3
    first = docs[0].data
    assert all(item["contexts"][0] in first["context"] for item in first["items"]) and first["items"][0]["long_answer"]
    requests = task.requests(docs[0], None)
    assert len(requests) == 12 and [r.text for r in requests[:3]] == [" yes", " no", " maybe"]
    assert requests[0].context.startswith(first["context"]) and requests[3].context.endswith("Long answer:")
    runs = tmp_path / "runs"
    assert cli("run", "--task", "pubmedqa-long", "--task-arg", "contexts=2", "--method", "sliding-window", "--method-arg", "window=128",
               "--model", "tiny-random-llama", "--limit", "2", "--quiet", "--output-dir", runs) == 0
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    results = json.loads((run / "results.json").read_text())
    assert {"acc", "long_answer_word_perplexity", "long_answer_token_perplexity"} <= set(results["metrics"])
    sample = json.loads((run / "samples.jsonl").read_text().splitlines()[0])
    assert sample["n_items"] == 2 and len(sample["items"]) == 2
