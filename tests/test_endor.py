"""Endor (PAPERS.md §10): the bitmap store's layout and lossless round trip, magnitude and Wanda
pruning, ``harness compress``, and offloaded inference (``endor``, ``offload``) giving the
model's own numbers."""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

import pytest
import torch

from harness.api import GenerateRequest
from harness.errors import ModelLoadError
from harness.method import MethodOptions
from methods.bitmap_store import (
    ALIGNMENT,
    SEGMENT_ALIGNMENT,
    STORE_DATA,
    STORE_INDEX,
    StoreReader,
    decompress,
    pack_bits,
    unpack_bits,
    write_store,
)
from tests.conftest import cli


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private harness cache: the local zoo and Endor's stores land there."""
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def sparse(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    tensor = torch.randn(shape, generator=generator).to(dtype)
    tensor[torch.rand(shape, generator=generator) < 0.5] = 0
    tensor.view(-1)[:3] = torch.tensor([-0.0, 0.0, -0.0], dtype=dtype)  # a stored -0.0 must survive
    return tensor


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_store_round_trip_is_bit_identical(tmp_path, dtype):
    name = str(dtype).removeprefix("torch.")
    layer = [("mlp.down_proj.weight", sparse((13, 7), dtype, 0)), ("input_layernorm.weight", torch.ones(7, dtype=dtype)),
             ("self_attn.q_proj.weight", sparse((5, 3), dtype, 1))]
    resident = [("model.embed_tokens.weight", sparse((11, 7), dtype, 2))]
    groups = [("resident", resident), ("model.layers.0", layer), ("model.layers.1", layer[:1])]
    write_store(tmp_path / "store", groups, "bitmap", name)
    reader = StoreReader(tmp_path / "store")
    for group, tensors in groups:
        loaded = reader.load(group, torch.device("cpu"), dtype)
        for tensor_name, original in tensors:
            bits = {2: torch.int16, 4: torch.int32}[original.element_size()]
            assert torch.equal(loaded[tensor_name].view(bits), original.view(bits)), (group, tensor_name)
    entries = {t.name: t for t in reader.groups["model.layers.0"].tensors}
    assert entries["mlp.down_proj.weight"].encoding == "bitmap"
    assert entries["input_layernorm.weight"].encoding == "dense"  # norms stay dense
    assert all(t.encoding == "dense" for t in reader.groups["resident"].tensors)  # embeddings stay dense
    down = layer[0][1]
    assert entries["mlp.down_proj.weight"].nnz == int((down.view({2: torch.int16, 4: torch.int32}[down.element_size()]) != 0).sum())
    # host-memory reads give the same bytes as disk reads
    host = StoreReader(tmp_path / "store", in_host_memory=True)
    assert torch.equal(host.read("model.layers.0"), reader.read("model.layers.0"))


def test_layout_is_aligned_and_matches_the_arithmetic(tmp_path):
    weight = torch.zeros(64, 128)
    weight.view(-1)[::2] = 1.0  # exactly 50% dense
    write_store(tmp_path / "bitmap", [("resident", []), ("model.layers.0", [("w.weight", weight)])], "bitmap", "float32")
    write_store(tmp_path / "dense", [("resident", []), ("model.layers.0", [("w.weight", weight)])], "dense", "float32")
    index = json.loads((tmp_path / "bitmap" / STORE_INDEX).read_text())
    for group in index["groups"]:
        assert group["offset"] % ALIGNMENT == 0
        for tensor in group["tensors"]:
            assert tensor["values"][0] % SEGMENT_ALIGNMENT == 0
    (entry,) = index["groups"][1]["tensors"]
    n = weight.numel()
    assert entry["bitmap"][1] == n // 8 and entry["values"][1] == n // 2 * 4  # N·(1 + δ·b) bits with δ = 1/2, b = 32
    bitmap_bytes = StoreReader(tmp_path / "bitmap").sizes()["layer_bytes"]
    dense_bytes = StoreReader(tmp_path / "dense").sizes()["layer_bytes"]
    assert dense_bytes == n * 4
    assert dense_bytes / bitmap_bytes == pytest.approx(32 / 17, rel=0.01)
    assert (tmp_path / "bitmap" / STORE_DATA).stat().st_size % ALIGNMENT == 0


def test_bit_packing_is_vectorised_and_exact_on_odd_sizes():
    mask = torch.rand(1001) < 0.3
    packed = pack_bits(mask)
    assert packed.numel() == math.ceil(1001 / 8)
    assert torch.equal(unpack_bits(packed, 1001), mask)
    values = torch.arange(1, int(mask.sum()) + 1, dtype=torch.float32)
    dense = decompress(packed, values, (7, 143))
    assert torch.equal(dense.view(-1)[mask], values) and not dense.view(-1)[~mask].any()


def test_magnitude_and_wanda_prune_as_the_official_criteria(tiny):
    from methods.endor import decoder_layers
    from training.compress import magnitude_prune, wanda_prune

    windows = torch.randint(3, 200, (4, 24), generator=torch.Generator().manual_seed(0))
    wanda_model, magnitude_model = copy.deepcopy(tiny.model), copy.deepcopy(tiny.model)
    # Wanda's score for layer 0's q_proj by hand: its input is the first norm of the embeddings.
    first = tiny.model.model.layers[0]
    with torch.no_grad():
        inputs = first.input_layernorm(tiny.model.model.embed_tokens(windows)).reshape(-1, first.self_attn.q_proj.in_features)
        score = first.self_attn.q_proj.weight.abs() * inputs.pow(2).sum(0).sqrt()
    expected = torch.zeros_like(score, dtype=torch.bool)
    expected.scatter_(1, torch.sort(score, dim=1, stable=True).indices[:, : score.shape[1] // 2], True)
    wanda_prune(wanda_model, windows, 0.5, batch=2)
    magnitude_prune(magnitude_model, 0.5)
    pruned = wanda_model.model.layers[0].self_attn.q_proj.weight
    assert torch.equal(pruned == 0, expected)
    _, layers = decoder_layers(wanda_model)
    for layer in layers:
        for module in layer.modules():
            if isinstance(module, torch.nn.Linear):
                assert ((module.weight == 0).sum(1) == module.in_features // 2).all()  # per output row
    original = dict(tiny.model.named_modules())
    for name, module in magnitude_model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.startswith("model.layers."):
            zeroed = module.weight == 0
            assert int(zeroed.sum()) == module.weight.numel() // 2  # per matrix
            before = original[name].weight.abs()
            assert before[zeroed].max() <= before[~zeroed].min()  # the smallest magnitudes went
    assert torch.equal(wanda_model.model.embed_tokens.weight, tiny.model.model.embed_tokens.weight)  # embeddings dense
    assert torch.equal(magnitude_model.lm_head.weight, tiny.model.lm_head.weight)  # the output head too


def test_compress_then_endor_and_offload_equal_base_on_the_pruned_model(cache, mirror, tmp_path, capsys):
    assert cli("compress", "--model", "tiny-random-llama", "--prune", "wanda", "--calibration-samples", "8",
               "--calibration-tokens", "32", "--quiet") == 0
    assert "achieved sparsity 0.5000" in capsys.readouterr().out
    folder = cache / "zoo" / "tiny-random-llama-wanda50"
    recipe = json.loads((folder / "harness_zoo.json").read_text())
    assert recipe["pruning"]["prune"] == "wanda" and recipe["sparsity"]["max_per_matrix"] == 0.5
    assert (folder / "endor" / "bitmap-float32" / STORE_INDEX).is_file()
    results = {}
    runs = tmp_path / "runs"
    for method, extra in (("base", []), ("endor", []), ("endor", ["--method-arg", "offload=host"]),
                          ("offload", ["--method-arg", "prefetch=false"])):
        assert cli("run", "--task", "wikitext103", "--model", "tiny-random-llama-wanda50", "--method", method, *extra,
                   "--limit", "2", "--quiet", "--output-dir", runs) == 0
        run = sorted(runs.glob("*/results.json"), key=os.path.getmtime)[-1].parent
        samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
        state = json.loads((run / "state.json").read_text())
        results[(method, *extra)] = ([s["sum_logprob"] if "sum_logprob" in s else s for s in samples], state["sessions"][-1])
    base = results[("base",)][0]
    for key, (samples, session) in results.items():
        assert samples == base, key  # lossless: the offloaded model's numbers are the model's own
        if key[0] != "base":
            assert session["cost"]["offload_layer_loads"] > 0 and session["cost"]["offload_bytes_read"] > 0
    endor = results[("endor",)][1]["method_settings"]
    offload = results[("offload", "--method-arg", "prefetch=false")][1]["method_settings"]
    assert endor["encoding"] == "bitmap" and offload["encoding"] == "dense"
    assert endor["layer_bytes"] < offload["layer_bytes"] and endor["layer_density"] == pytest.approx(0.5, abs=0.01)
    assert (cache / "endor").is_dir()  # the dense store was built once in the cache for offload


def test_endor_generates_what_base_generates(cache, tiny):
    from harness import models
    from methods.base import BaseArgs, BaseMethod
    from methods.endor import EndorArgs, EndorMethod

    resolved = models.resolve("tiny-random-llama")
    options = MethodOptions(batch_size=4, seed=0, show_progress=False)
    requests = [GenerateRequest("Once upon a time", 12), GenerateRequest("The cat", 9, until=("x",)),
                GenerateRequest("The cat", 9, temperature=0.8)]
    base = BaseMethod(models.load(resolved), BaseArgs(), options).generate(requests)
    args = EndorArgs()
    endor = EndorMethod(EndorMethod.load_model(resolved, "cpu", args), args, options)
    assert [r.text for r in endor.generate(requests)] == [r.text for r in base]
    assert endor.cost.counters["offload_layer_loads"] >= 2 * 12  # every decoding step reads every layer


def test_bad_input_is_one_line(cache, tmp_path, capsys):
    from harness import models
    from methods.endor import EndorArgs, EndorMethod

    assert cli("compress", "--model", "tiny-random-llama", "--prune", "snip") == 2
    assert "--prune must be one of magnitude, wanda" in capsys.readouterr().err
    assert cli("compress", "--model", "tiny-random-llama", "--sparsity", "1.5") == 2
    with pytest.raises(ModelLoadError, match="streams causal LMs"):
        EndorMethod.load_model(models.resolve("tiny-random-reward"), "cpu", EndorArgs())
    resolved = models.resolve("tiny-random-llama")
    EndorMethod.load_model(resolved, "cpu", EndorArgs())  # writes the store once
    (store,) = (cache / "endor").glob("*-bitmap-float32")
    data = store / STORE_DATA
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])  # a copy cut short
    with pytest.raises(ModelLoadError, match="truncated"):
        EndorMethod.load_model(resolved, "cpu", EndorArgs())
    with pytest.raises(ValueError, match="offload must be disk or host"):
        EndorArgs(offload="gpu")


def test_streaming_a_real_model_gives_its_logits(smollm2, cache):
    """SmolLM2, magnitude-pruned to 50%, streamed from a bitmap store: the same logits as in memory."""
    from harness.models import ResolvedModel
    from methods.endor import EndorArgs, EndorMethod, decoder_layers, write_model_store
    from training.compress import magnitude_prune

    pruned = copy.deepcopy(smollm2.model)
    magnitude_prune(pruned, 0.5)
    identity = smollm2.identity
    prefix, _ = decoder_layers(pruned)
    assert prefix == "model.layers."
    write_model_store(pruned, cache / "endor" / f"{identity.weights_sha256[:16]}-bitmap-float32", "bitmap", "float32")
    from harness import models

    folder = models.resolve("smollm2-135m-instruct").path
    loaded = EndorMethod.load_model(ResolvedModel(identity, folder), "cpu", EndorArgs())
    ids = smollm2.tokenizer("Offloaded inference moves fewer bytes when", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = pruned(ids).logits
        streamed = loaded.model(ids).logits
    assert torch.equal(streamed, expected)
    reader = loaded.model.endor_streamer.reader
    dense_layer_bytes = sum(math.prod(t.shape) * 4 for g in reader.groups.values() if g.name != "resident" for t in g.tensors)
    assert dense_layer_bytes / reader.sizes()["layer_bytes"] >= 1.85  # the float32 goal at 50%
