"""Publishing finished runs into the repository (``harness publish RUN… --to results/``).

A published run is a folder named by its run id holding ``spec.json``, ``results.json`` and
``state.json`` as the run wrote them (only the data mirror's local path, which older runs
recorded, becomes ``"local"``: the repository names no path of the machine), its plot artifacts, and its samples as
``samples.jsonl.gz`` (deterministic gzip, so publishing twice gives the same bytes). Samples
that would compress past ``max_sample_bytes`` are trimmed: every record keeps its score fields
(numbers, flags, short labels: what metrics, breakdowns and paired claims read), and a seeded
sample of records keeps everything (prompts, responses, logs). Records hold answers and
scores, not prompts, so ``inputs.jsonl.gz`` holds the requests each document was sent,
rebuilt from the data mirror by the task's own ``requests()``. ``MANIFEST.json`` lists each run
with the command that reproduces it, the machine it ran on, its wall time, what was kept of
its samples and the sha256 of every file, so a hand edit shows.

A run is refused, with nothing written, when it is unfinished, when its spec does not hash to
its id, or when its results are not what its samples give.

``--unfinished`` carries runs still under way (conventionally into ``progress/``): a machine
that does not outlive its session leaves its partial runs in the repository, and the next
machine resumes each with the command its manifest entry names (``--reuse-from`` the carried
folder, which takes over its samples and sessions). A carried run keeps ``spec.json``,
``state.json`` and all its samples whole; ``--remove`` drops a run from a folder once it is
finished and published.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.config import cli_value
from harness.errors import ArgumentError, HarnessError, RunStoreError
from harness.spec import RunSpec
from harness.store import PUBLISHED_MANIFEST, SAMPLES_GZ, RunDir, RunStore, atomic_write_json, now, staged_folder
from reports.wintie import JUDGMENTS, judgment_name

MAX_SAMPLE_BYTES = 2_000_000
INPUTS_GZ = "inputs.jsonl.gz"  # the requests each document was sent, rebuilt at publish time
INPUT_CLIP = 4_000  # characters of one input text kept (an article or a book is cut here)
SHORT_TEXT = 120  # a string this long or shorter is a label (kept in trimmed records), not content
COPIED = ("spec.json", "results.json", "state.json")
MANIFEST_ABOUT = (
    "Reference runs published with 'harness publish RUN... --to results/'. Never edit by hand: "
    "each run's spec.json hashes to its folder name and every file's sha256 is listed here. "
    "'command' reproduces a run (same spec, same run id) with HARNESS_DATA_DIR pointing at the data mirror; "
    "a model the harness made itself lists its recipe under 'model_recipe'."
)


@dataclass(frozen=True)
class PublishedRun:
    run_id: str
    path: Path
    n_samples: int
    full_records: int
    samples_bytes: int


# --- checks -------------------------------------------------------------------------------

Checked = tuple[RunSpec, dict[str, Any], list[dict[str, Any]]]  # spec, results, samples in selection order


def _same_number(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def metrics_mismatch(expected: dict[str, Any], actual: dict[str, Any]) -> str | None:
    """The first metric whose value, CI or n differs between two ``results['metrics']``."""
    for name in sorted(set(expected) | set(actual)):
        if name not in expected or name not in actual:
            return f"metric '{name}' is in only one of them"
        for key in ("value", "ci_low", "ci_high", "n"):
            if not _same_number(expected[name].get(key), actual[name].get(key)):
                return f"{name}.{key}: {expected[name].get(key)} in results.json, {actual[name].get(key)} from the samples"
    return None


def _aggregate(spec: RunSpec, records: list[dict[str, Any]]) -> dict[str, Any]:
    from harness.runner import BOOTSTRAP_SEED, make_task

    task = make_task(spec.task["name"], spec.task["config"])
    return {name: value.as_dict() for name, value in task.aggregate(records, BOOTSTRAP_SEED).items()}


def checked_run(run_dir: RunDir) -> Checked:
    """The run's spec, results and samples in selection order, or an error saying why the run
    cannot be published."""
    from harness.runner import ordered_samples

    run_id = run_dir.run_id
    spec = run_dir.spec()
    if spec.run_id != run_id:
        raise RunStoreError(f"run {run_id}: spec.json hashes to {spec.run_id}, not to its folder name (edited or misplaced)")
    records = ordered_samples(run_dir)
    n_selected = spec.selection["n_selected"]
    results = run_dir.results()
    if results is None or len(records) != n_selected or run_dir.journal.entries():
        raise RunStoreError(f"run {run_id} is unfinished ({len(records)} of {n_selected} samples); "
                            "rerun its command to finish it, then publish")
    if results.get("run_id") != run_id:
        raise RunStoreError(f"run {run_id}: results.json belongs to run {results.get('run_id')}")
    if len(run_dir.samples()) != n_selected:
        raise RunStoreError(f"run {run_id}: samples hold records outside its selection or twice")
    mismatch = metrics_mismatch(results["metrics"], _aggregate(spec, records))
    if mismatch:
        raise RunStoreError(f"run {run_id}: results.json is not what its samples give ({mismatch}); "
                            f"'harness rescore {run_id}' recomputes it")
    return spec, results, records


@dataclass(frozen=True)
class Unfinished:
    spec: RunSpec
    records: list[dict[str, Any]]  # the samples so far, in the order they were written


def checked_unfinished(run_dir: RunDir) -> Unfinished:
    """An unfinished run's spec and samples, or an error saying why it cannot be carried."""
    spec = run_dir.spec()
    if spec.run_id != run_dir.run_id:
        raise RunStoreError(f"run {run_dir.run_id}: spec.json hashes to {spec.run_id}, not to its folder name (edited or misplaced)")
    records = run_dir.samples()
    ids = [r["doc_id"] for r in records]
    if len(set(ids)) != len(ids) or not set(ids) <= set(spec.selection["doc_ids"]):
        raise RunStoreError(f"run {run_dir.run_id}: samples hold records outside its selection or twice")
    return Unfinished(spec, records)


def is_finished(run_dir: RunDir) -> bool:
    return run_dir.results() is not None and not run_dir.journal.entries()


# --- samples ------------------------------------------------------------------------------

def gzip_jsonl(records: list[dict[str, Any]]) -> bytes:
    """Deterministic: sorted keys, no timestamp or file name in the gzip header."""
    payload = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records).encode()
    return gzip.compress(payload, compresslevel=9, mtime=0)


def _is_score_field(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float)) or (isinstance(value, str) and len(value) <= SHORT_TEXT)


def score_fields(record: dict[str, Any], keep: set[str]) -> dict[str, Any]:
    """What a trimmed record keeps: scalars and short labels, plus the fields metrics read."""
    return {k: v for k, v in record.items() if k in keep or _is_score_field(v)}


def trim_samples(records: list[dict[str, Any]], metric_fields: set[str], limit: int, seed: int = 0
                 ) -> tuple[bytes, int, list[str]]:
    """``samples.jsonl.gz`` within ``limit`` bytes where possible: (bytes, records kept whole,
    fields dropped from the others). The whole records are the first of a seeded permutation,
    so a later publish of the same run keeps the same ones."""
    whole = gzip_jsonl(records)
    if len(whole) <= limit:
        return whole, len(records), []
    light = [score_fields(r, metric_fields) for r in records]
    dropped = sorted({k for r, t in zip(records, light, strict=True) for k in r if k not in t})
    order = np.random.default_rng(seed).permutation(len(records))

    def packed(k: int) -> bytes:
        chosen = set(order[:k].tolist())
        return gzip_jsonl([records[i] if i in chosen else light[i] for i in range(len(records))])

    low, high = 0, len(records) - 1  # largest k whose file fits: bisect on the compressed size
    best = packed(0)
    while low < high:
        middle = (low + high + 1) // 2
        candidate = packed(middle)
        if len(candidate) <= limit:
            low, best = middle, candidate
        else:
            high = middle - 1
    return best, low, dropped


# --- inputs -----------------------------------------------------------------------------

def _clip(text: str) -> str:
    return text if len(text) <= INPUT_CLIP else text[:INPUT_CLIP] + f" …[{len(text) - INPUT_CLIP:,} more characters]"


def _describe_requests(requests: list[Any]) -> list[dict[str, Any]]:
    """What a document's requests asked, for a reader: a context once with all the
    continuations scored after it, a text scored in windows, a prompt generated from."""
    from harness.api import GenerateRequest, LoglikelihoodRequest, StreamRequest

    described: list[dict[str, Any]] = []
    for request in requests:
        if isinstance(request, LoglikelihoodRequest):
            if described and described[-1].get("context") == _clip(request.context) and "continuations" in described[-1]:
                described[-1]["continuations"].append(request.continuation)
            else:
                described.append({"context": _clip(request.context), "continuations": [request.continuation]})
        elif isinstance(request, StreamRequest):
            described.append({"text": _clip(request.text), **({"context": _clip(request.context)} if request.context else {}),
                              "window": request.window, "stride": request.stride})
        elif isinstance(request, GenerateRequest):
            prompt = request.prompt if isinstance(request.prompt, str) else [
                {"role": m.role, "content": _clip(m.content)} for m in request.prompt]
            described.append({"prompt": _clip(prompt) if isinstance(prompt, str) else prompt,
                              "max_new_tokens": request.max_new_tokens, **({"until": list(request.until)} if request.until else {})})
    return described


def rebuild_inputs(spec: RunSpec, data_dir: str | None) -> tuple[bytes | None, str]:
    """The requests each selected document was sent, rebuilt from the data mirror by the
    task's own ``requests()`` (records hold answers and scores, not prompts), as
    ``inputs.jsonl.gz`` bytes; None and the reason where they cannot be rebuilt (a multi-turn
    task keeps its transcripts in its records; no data)."""
    from harness.data import DataStore
    from harness.runner import make_task
    from harness.task import EvalSettings, Task

    task = make_task(spec.task["name"], spec.task["config"])
    if type(task).requests is Task.requests:
        return None, "multi-turn task: each record holds its own transcript"
    try:
        docs = {d.id: d for d in task.load_docs(DataStore(data_dir))}
        settings = EvalSettings(spec.chat_template, spec.seed)
        inputs = [{"doc_id": doc_id, "requests": _describe_requests(task.requests(docs[doc_id], settings))}
                  for doc_id in spec.selection["doc_ids"]]
    except (HarnessError, KeyError) as error:
        return None, f"not rebuilt ({type(error).__name__}: {error})"
    return gzip_jsonl(inputs), f"the requests each document was sent, rebuilt from the data by task version {spec.task['version']}"


# --- the command that reproduces a run ------------------------------------------------------

def _changed(values: dict[str, Any], defaults: dict[str, Any] | None) -> list[tuple[str, Any]]:
    if defaults is None:
        return sorted((k, v) for k, v in values.items() if v is not None)
    return sorted((k, v) for k, v in values.items() if defaults.get(k, object()) != v)


def reproduce_argv(spec: RunSpec, devices: list[str]) -> list[str]:
    """``harness run`` arguments that give this spec again (same run id) on a machine with the
    data mirror and the model: non-default task and method settings, model, seed, subset, and
    dtype and chat-template use where they differ from what ``auto`` picks."""
    from harness import models, zoo
    from harness.runner import make_task
    from reports.catalog import method_defaults, task_defaults

    argv = ["harness", "run", "--task", spec.task["name"]]
    for key, value in _changed(spec.task["config"], task_defaults(spec.task["name"])):
        argv += ["--task-arg", f"{key}={cli_value(value)}"]
    if spec.method["name"] != "base":
        argv += ["--method", spec.method["name"]]
    for key, value in _changed(spec.method["args"], method_defaults(spec.method["name"])):
        argv += ["--method-arg", f"{key}={cli_value(value)}"]
    if spec.model["name"] != zoo.DEFAULT_MODEL:
        argv += ["--model", spec.model["name"]]
    if spec.seed != 0:
        argv += ["--seed", str(spec.seed)]
    if spec.selection.get("limit") is not None:
        argv += ["--limit", str(spec.selection["limit"])]
    device = "cuda" if any(d.startswith("cuda") for d in devices) else "cpu"
    if spec.model.get("kind") != "api" and spec.model.get("dtype") and spec.model["dtype"] != models.resolve_dtype("auto", device):
        argv += ["--dtype", spec.model["dtype"]]  # a model behind an API has no dtype to choose
    for key, value in sorted((spec.model.get("load_options") or {}).items()):
        argv += ["--model-arg", f"{key}={cli_value(value)}"]  # options in the identity make the run id
    has_template = spec.model.get("chat_template_sha256") is not None
    try:
        by_default = make_task(spec.task["name"], spec.task["config"]).chat_by_default
    except HarnessError:
        by_default = spec.chat_template
    if spec.chat_template != (has_template and by_default):
        argv += ["--chat-template", "on" if spec.chat_template else "off"]
    return argv


def machine_summary(state: dict[str, Any]) -> dict[str, Any]:
    """Where the run's sessions ran: devices, accelerator cards, CPUs (from state.json)."""
    sessions = state.get("sessions", [])
    found = [s.get("environment", {}).get("machine") or {} for s in sessions]

    def distinct(values: Any) -> list[Any]:
        return sorted({v for v in values if v is not None}, key=str)

    return {
        "devices": distinct(s.get("device") for s in sessions),
        "accelerators": distinct(m.get("accelerator") for m in found),
        "cpus": distinct(f"{m['cpu']} × {m['cpu_cores']} cores" for m in found if m.get("cpu")),
        "platforms": distinct(s.get("environment", {}).get("platform") for s in sessions),
        "sessions": len(sessions),
        **({} if any(found) else {"note": "machine details not recorded (run made before the harness recorded them)"}),
    }


def _model_recipe(spec: RunSpec) -> dict[str, Any] | None:
    """How a model the harness made (``harness attack``, ``train``, ``compress``) was made: by its
    zoo name (source ``zoo:<name>``) or its folder (``local:<folder>``)."""
    from harness import zoo

    source = str(spec.model.get("source", ""))
    if source.startswith("zoo:"):
        return zoo.recipe(source.removeprefix("zoo:"))
    if source.startswith("local:"):
        return zoo.recipe(Path(source.removeprefix("local:")))
    return None


def _copy_without_machine_paths(source: Path, target: Path) -> None:
    """Copy a run's JSON file, replacing the absolute data-mirror path that runs made before
    ``DataStore.describe`` stopped recording it; any other file is copied byte for byte."""
    data = json.loads(source.read_text(encoding="utf-8"))
    records = [data.get("data")] + [s.get("data") for s in data.get("sessions", [])] if isinstance(data, dict) else []
    local = [r for r in records if isinstance(r, dict) and str(r.get("mirror") or "").startswith("/")]
    if not local:
        shutil.copyfile(source, target)
        return
    for record in local:
        record["mirror"] = "local"
    atomic_write_json(target, data)  # the writer the run used, so only that field differs


# --- publish ------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_manifest(dest: Path) -> dict[str, Any]:
    path = dest / PUBLISHED_MANIFEST
    if not path.is_file():
        return {"about": MANIFEST_ABOUT, "runs": {}}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise RunStoreError(f"{path} is not valid JSON ({error})") from None


def _entry_head(spec: RunSpec) -> dict[str, Any]:
    """What a manifest entry says first: the cell (task variant, method, model, seed)."""
    from reports.catalog import method_label, variant_label

    return {"task": spec.task["name"], "variant": variant_label(spec.task["name"], spec.task["config"], spec.selection.get("limit")),
            "method": method_label(spec.method["name"], spec.method["args"]), "model": spec.model["name"], "seed": spec.seed}


def _recipe_field(spec: RunSpec) -> dict[str, Any]:
    """``model_recipe`` for a model the harness made, else nothing."""
    recipe = _model_recipe(spec)
    return {} if recipe is None else {"model_recipe": recipe}


def _copy_run_files(run_dir: RunDir, staging: Path) -> None:
    for name in COPIED:
        if (run_dir.path / name).is_file():
            _copy_without_machine_paths(run_dir.path / name, staging / name)


def _devices(state: dict[str, Any]) -> list[str]:
    return [str(s.get("device")) for s in state.get("sessions", [])]


def publish_run(run_dir: RunDir, dest: Path, max_sample_bytes: int = MAX_SAMPLE_BYTES,
                checked: Checked | None = None, data_dir: str | None = None) -> tuple[PublishedRun, dict[str, Any]]:
    """Copy one run (checked here unless ``checked`` holds what ``checked_run`` gave) into
    ``dest/<run_id>/``, built aside and then swapped in; returns it and its manifest entry."""
    from harness.runner import make_task

    spec, results, records = checked or checked_run(run_dir)
    state = run_dir.state()
    task = make_task(spec.task["name"], spec.task["config"])
    metric_fields = {f for m in task.metrics() for f in m.fields} | {"doc_id"}
    samples, kept, dropped = trim_samples(records, metric_fields, max_sample_bytes)
    if kept < len(records):  # the trimmed records must still give the published metrics
        trimmed = [json.loads(line) for line in gzip.decompress(samples).splitlines()]
        mismatch = metrics_mismatch(results["metrics"], _aggregate(spec, trimmed))
        if mismatch:
            raise RunStoreError(f"run {run_dir.run_id}: its samples exceed {max_sample_bytes} bytes and the trimmed copy "
                                f"no longer gives its metrics ({mismatch}); publish with a larger --max-sample-bytes")
    inputs, inputs_note = rebuild_inputs(spec, data_dir)
    with staged_folder(dest / run_dir.run_id) as staging:
        _copy_run_files(run_dir, staging)
        (staging / SAMPLES_GZ).write_bytes(samples)
        if inputs is not None:
            (staging / INPUTS_GZ).write_bytes(inputs)
        for name in results.get("artifacts", []):
            if (run_dir.path / name).is_file():
                shutil.copyfile(run_dir.path / name, staging / name)
        files = {p.name: _sha256(p) for p in sorted(staging.iterdir())}
    main = results["metrics"][results["main_metric"]]
    entry = {
        **_entry_head(spec),
        "main_metric": {"name": results["main_metric"], **{k: main.get(k) for k in ("value", "ci_low", "ci_high", "n")}},
        "command": shlex.join(reproduce_argv(spec, _devices(state))),
        "machine": machine_summary(state),
        "wall_time_s": round(results.get("timing", {}).get("wall_time_s") or 0.0, 1),
        "finished_at": results.get("finished_at"),
        "harness_version": spec.harness_version,
        "git_revision": results.get("environment", {}).get("git_revision"),
        "samples": {"n": len(records), "whole_records": kept,
                    **({"trimmed": f"records outside a seeded sample (seed 0) keep only their score fields; "
                                   f"dropped from them: {', '.join(dropped)}", "dropped_fields": dropped} if dropped else {})},
        "inputs": inputs_note,
        "files": files,
    }
    return PublishedRun(run_dir.run_id, dest / run_dir.run_id, len(records), kept, len(samples)), entry | _recipe_field(spec)


def carry_run(run_dir: RunDir, dest: Path, checked: Unfinished) -> tuple[PublishedRun, dict[str, Any]]:
    """Copy an unfinished run into ``dest/<run_id>/`` with all its samples whole (a resume needs
    every record); returns it and its manifest entry, whose command resumes it."""
    from harness.runner import summed_cost

    spec, records = checked.spec, checked.records
    state = run_dir.state()
    samples = gzip_jsonl(records)
    with staged_folder(dest / run_dir.run_id) as staging:
        _copy_run_files(run_dir, staging)
        (staging / SAMPLES_GZ).write_bytes(samples)
        files = {p.name: _sha256(p) for p in sorted(staging.iterdir())}
    entry = {
        **_entry_head(spec),
        "unfinished": {"done": len(records), "of": spec.selection["n_selected"]},
        # Run from the folder that holds ``dest`` (the repository root): no path of this machine.
        "command": shlex.join(reproduce_argv(spec, _devices(state)) + ["--reuse-from", f"{dest.name}/{run_dir.run_id}"]),
        "machine": machine_summary(state),
        "wall_time_s": round(summed_cost(state.get("sessions", [])).get("wall_time_s", 0.0), 1),
        "harness_version": spec.harness_version,
        "samples": {"n": len(records), "whole_records": len(records)},
        "files": files,
    }
    return PublishedRun(run_dir.run_id, dest / run_dir.run_id, len(records), len(records), len(samples)), entry | _recipe_field(spec)


def publish(store: RunStore, run_ids: list[str], dest: Path, max_sample_bytes: int = MAX_SAMPLE_BYTES,
            data_dir: str | None = None, unfinished: bool = False) -> list[PublishedRun]:
    """Publish runs (ids or unique prefixes) from ``store`` into ``dest``; with ``unfinished``,
    runs still under way are carried whole (finished ones are published as ever). Every run is
    checked before any is written, so one bad run publishes nothing."""
    if not run_ids:
        raise ArgumentError("name at least one run to publish (see 'harness show')")
    if dest.resolve() == store.root.resolve():
        raise ArgumentError("--to must be another folder than the run store")
    run_dirs = list({run_dir.run_id: run_dir for run_dir in (store.find(run_id) for run_id in run_ids)}.values())
    checked: list[Checked | Unfinished] = [
        checked_unfinished(run_dir) if unfinished and not is_finished(run_dir) else checked_run(run_dir) for run_dir in run_dirs]
    manifest = read_manifest(dest)
    published = []
    for run_dir, found in zip(run_dirs, checked, strict=True):
        if isinstance(found, Unfinished):
            done, entry = carry_run(run_dir, dest, found)
        else:
            done, entry = publish_run(run_dir, dest, max_sample_bytes, found, data_dir)
        manifest["runs"][done.run_id] = entry | {"published_at": manifest["runs"].get(done.run_id, {}).get("published_at") or now()}
        published.append(done)
    manifest["about"] = MANIFEST_ABOUT
    manifest["runs"] = dict(sorted(manifest["runs"].items()))
    atomic_write_json(dest / PUBLISHED_MANIFEST, manifest)
    return published


def publish_judgment(path: Path, dest: Path) -> str:
    """Copy a judgment (``harness judge``'s JSON) into ``dest/judgments/``, listed in the manifest
    with its sha256; both its runs must be published, finished, in ``dest``. Returns its name."""
    try:
        judgment = json.loads(path.read_text(encoding="utf-8"))
        run_a, run_b, judge, scoring = judgment["run_a"], judgment["run_b"], judgment["judge"]["name"], judgment["scoring"]
        summary = judgment["summary"]
    except FileNotFoundError:
        raise ArgumentError(f"--judgment {path}: no such file") from None
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ArgumentError(f"--judgment {path}: not a judgment written by 'harness judge' ({type(error).__name__}: {error})") from None
    manifest = read_manifest(dest)
    unpublished = [r for r in (run_a, run_b) if r not in manifest["runs"] or "unfinished" in manifest["runs"][r]]
    if unpublished:
        raise ArgumentError(f"--judgment {path}: run {', '.join(unpublished)} is not published in {dest}; publish the runs first")
    name = judgment_name(run_a, run_b, judge, scoring)
    (dest / JUDGMENTS).mkdir(parents=True, exist_ok=True)
    atomic_write_json(dest / JUDGMENTS / name, judgment)
    judgments = manifest.setdefault("judgments", {})
    judgments[name] = {
        "run_a": run_a, "run_b": run_b, "judge": judge, "judge_weights_sha256": judgment["judge"].get("weights_sha256"),
        "scoring": scoring, "n_pairs": summary["n_pairs"], "win_tie": summary["win_tie"], "sign_test_p": summary.get("sign_test_p"),
        "sha256": _sha256(dest / JUDGMENTS / name), "published_at": judgments.get(name, {}).get("published_at") or now(),
    }
    manifest["judgments"] = dict(sorted(judgments.items()))
    atomic_write_json(dest / PUBLISHED_MANIFEST, manifest)
    return name


def remove(dest: Path, run_ids: list[str]) -> list[str]:
    """Drop runs (full ids) from a folder of published runs: their folders and manifest entries
    (a carried run once it is finished and published, or a run withdrawn). Returns the ids."""
    manifest = read_manifest(dest)
    unknown = [run_id for run_id in run_ids if run_id not in manifest["runs"]]
    if not run_ids or unknown:
        raise ArgumentError(f"--remove: {', '.join(unknown) or 'no run named'}: not in {dest / PUBLISHED_MANIFEST}")
    for run_id in run_ids:
        shutil.rmtree(dest / run_id, ignore_errors=True)
        del manifest["runs"][run_id]
    judgments = manifest.get("judgments", {})
    for name in [n for n, j in judgments.items() if {j["run_a"], j["run_b"]} & set(run_ids)]:  # a judgment of a removed run goes too
        (dest / JUDGMENTS / name).unlink(missing_ok=True)
        del judgments[name]
    atomic_write_json(dest / PUBLISHED_MANIFEST, manifest)
    return run_ids


def verify(dest: Path) -> list[str]:
    """Problems with a folder of published runs (empty when sound): a run folder the manifest
    does not list or the reverse, a spec that does not hash to its folder name, or a file whose
    sha256 is not the manifest's."""
    if not (dest / PUBLISHED_MANIFEST).is_file():
        return [f"no {PUBLISHED_MANIFEST}: not a folder of published runs"]
    manifest = read_manifest(dest)
    problems = []
    folders = {p.name for p in dest.iterdir() if p.is_dir() and not p.name.startswith(".")} - {JUDGMENTS} if dest.is_dir() else set()
    for run_id in sorted(folders - set(manifest["runs"])):
        problems.append(f"{run_id}: a run folder MANIFEST.json does not list")
    for run_id, entry in sorted(manifest["runs"].items()):
        folder = dest / run_id
        if not folder.is_dir():
            problems.append(f"{run_id}: listed in MANIFEST.json but missing")
            continue
        spec_id = RunDir(folder).spec().run_id
        if spec_id != run_id:
            problems.append(f"{run_id}: spec.json hashes to {spec_id}")
        problems += _file_problems(folder, entry["files"])
    judgments = manifest.get("judgments", {})
    problems += _file_problems(dest / JUDGMENTS, {name: judgment["sha256"] for name, judgment in judgments.items()})
    for name, judgment in sorted(judgments.items()):
        for run_id in sorted({judgment["run_a"], judgment["run_b"]} - set(manifest["runs"])):
            problems.append(f"{JUDGMENTS}/{name}: judges run {run_id}, which MANIFEST.json does not list")
    return problems


def _file_problems(folder: Path, listed: dict[str, str]) -> list[str]:
    """The files of ``folder`` that ``listed`` (name -> sha256) does not list, that it lists but
    are missing, and whose sha256 is not the listed one."""
    present = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    where = folder.name
    problems = [f"{where}/{name}: " + ("not in MANIFEST.json" if name in present else "missing") for name in sorted(present ^ set(listed))]
    return problems + [f"{where}/{name}: sha256 differs from MANIFEST.json (edited by hand?)"
                       for name in sorted(present & set(listed)) if _sha256(folder / name) != listed[name]]
