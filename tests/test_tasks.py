from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.data import DataStore
from harness.errors import DataCorruptError, DataUnavailableError
from tasks.pubmedqa import PubMedQA, PubMedQAConfig, prompt
from tasks.wikitext103 import WikiText103, WikiText103Config


def test_wikitext103_articles_and_word_count(mirror):
    docs = WikiText103().load_docs(DataStore(mirror))
    assert len(docs) == 62
    assert docs[0].data["title"] == "Robert Boulter"
    assert sum(d.data["n_words"] for d in docs) == 245_569  # tokens + one <eos> per line
    assert len({d.id for d in docs}) == 62
    assert " @-@ " not in docs[0].data["text"]  # detokenized like lm-eval
    raw = WikiText103(WikiText103Config(detokenize=False)).load_docs(DataStore(mirror))
    assert " @-@ " in raw[0].data["text"]


def test_wikitext103_stream_variant_carries_preceding_text(mirror):
    docs = WikiText103(WikiText103Config(variant="stream")).load_docs(DataStore(mirror))
    assert docs[0].data["context"] == ""
    assert docs[1].data["context"].endswith(docs[0].data["text"][-500:])


def test_wikitext103_validation_split(mirror):
    docs = WikiText103(WikiText103Config(split="validation")).load_docs(DataStore(mirror))
    assert sum(d.data["n_words"] for d in docs) == 217_646


def test_pubmedqa_splits(mirror):
    test = PubMedQA().load_docs(DataStore(mirror))
    everything = PubMedQA(PubMedQAConfig(split="all")).load_docs(DataStore(mirror))
    assert len(test) == 500 and len(everything) == 1000
    assert {d.id for d in test} <= {d.id for d in everything}
    text = prompt(test[0])
    assert text.startswith("Abstract: ") and text.endswith("\nAnswer:") and "\nQuestion: " in text


def _partial_mirror(mirror: Path, tmp_path: Path, files: list[str]) -> Path:
    root = tmp_path / "mirror"
    for relative in files:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(mirror / relative, root / relative)
    shutil.copy(mirror / "MANIFEST.json", root / "MANIFEST.json")
    return root


def test_missing_data_names_dataset_and_setting(mirror, tmp_path):
    root = _partial_mirror(mirror, tmp_path, ["pubmedqa/ori_pqal.json"])
    with pytest.raises(DataUnavailableError, match="pubmedqa.*test_ground_truth.json.*HARNESS_DATA_DIR"):
        PubMedQA().load_docs(DataStore(root))


def test_no_mirror_and_no_network_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HARNESS_DATA_DIR")
    with pytest.raises(DataUnavailableError, match="wikitext103.*HARNESS_DATA_DIR"):
        WikiText103().load_docs(DataStore(mirror=None))


def test_corrupt_file_fails_the_sha256_check(mirror, tmp_path):
    root = _partial_mirror(mirror, tmp_path, ["pubmedqa/ori_pqal.json", "pubmedqa/test_ground_truth.json"])
    path = root / "pubmedqa/test_ground_truth.json"
    data = json.loads(path.read_text())
    data[next(iter(data))] = "maybe" if data[next(iter(data))] != "maybe" else "yes"
    path.write_text(json.dumps(data))
    with pytest.raises(DataCorruptError, match="sha256"):
        PubMedQA().load_docs(DataStore(root))


def test_the_data_store_records_what_it_serves(mirror, tmp_path):
    from harness.data import HubSource

    data = DataStore(mirror)
    assert data.describe()["files"] == [] and data.describe()["hub"] == []
    WikiText103(WikiText103Config()).load_docs(data)
    data.file("wikitext/wikitext-103/wiki.test.tokens.csv", "wikitext103")  # served twice, recorded once
    local = tmp_path / "rows.jsonl"
    local.write_text('{"q": 1}\n')
    data.note_local(local)
    data.note_local(tmp_path / "missing.jsonl")  # nothing to record; its reader reports it
    data.note_hub(HubSource("org/set", "config", "test"))
    data.note_hub(HubSource("org/set", "config", "test"))
    described = data.describe()
    assert [f["file"] for f in described["files"]] == [str(local.resolve()), "wikitext/wikitext-103/wiki.test.tokens.csv"]
    wiki = described["files"][1]
    assert wiki["sha256"] == data.manifest["wikitext/wikitext-103/wiki.test.tokens.csv"]["sha256"] and wiki["license"]
    assert described["hub"] == [{"hub": "org/set", "name": "config", "split": "test", "revision": None}]
