"""Running one cell (task x method x model x seed x selection), resuming, rescoring, comparing.

Everything that can be checked without a model is checked first (names, arguments,
capabilities, data), so bad input never loads a model and never leaves a run folder behind.
The run folder appears only once the model has loaded; each chunk of finished documents is
appended and fsynced before the next starts, so a crash loses at most the chunk in flight
and rerunning the same command resumes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

import harness
from harness import models, zoo
from harness.api import Capability, Doc
from harness.config import build, to_dict
from harness.data import DataStore
from harness.environment import environment
from harness.errors import ArgumentError, DataUnavailableError, HarnessError, IncompatibleError
from harness.method import METHODS, Method, MethodOptions
from harness.spec import RunSpec, Selection, select
from harness.stats import PairedComparison, paired_compare
from harness.store import PUBLISHED_MANIFEST, PublishedStore, RunDir, RunStore, default_runs_dir, now, open_store
from harness.task import TASKS, EvalSettings, Task

BOOTSTRAP_SEED = 0  # CIs are seeded too: same samples, same interval


@dataclass(frozen=True)
class RunRequest:
    task: str
    method: str = "base"
    model: str = zoo.DEFAULT_MODEL
    model_args: Mapping[str, Any] = field(default_factory=dict)  # loading options (--model-arg), by model kind
    task_args: Mapping[str, Any] = field(default_factory=dict)
    method_args: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    limit: int | None = None
    batch_size: int | Literal["auto"] = "auto"
    device: str = "auto"
    dtype: str = "auto"
    chat_template: Literal["auto", "on", "off"] = "auto"
    output_dir: Path = field(default_factory=default_runs_dir)
    data_dir: str | None = None
    show_progress: bool = True
    reuse_from: str | None = None  # a run of this protocol on a smaller subset whose samples this run takes over


@dataclass
class Prepared:
    request: RunRequest
    task: Task
    method_cls: type[Method]
    method_args: Any
    data: DataStore
    docs: list[Doc]
    selection: Selection
    resolved: models.ResolvedModel
    device: str
    spec: RunSpec


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    path: Path
    results: dict[str, Any]
    reused: bool


def make_task(name: str, config: Mapping[str, Any]) -> Task:
    task_cls = TASKS.get(name)
    return task_cls(build(task_cls.Config, config, f"task '{name}'"))


def check_compatible(task: Task, method_cls: type[Method]) -> None:
    missing = task.requires - method_cls.provides
    if missing:
        need = ", ".join(sorted(str(c) for c in missing))
        has = ", ".join(sorted(str(c) for c in method_cls.provides)) or "nothing"
        raise IncompatibleError(f"task '{task.name}' needs {need}, which method '{method_cls.name}' does not provide (it provides: {has})")


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ArgumentError("--device cuda was asked for but no CUDA device is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise ArgumentError(f"--device must be cpu, cuda or auto; got '{device}'")
    return device


def prepare(request: RunRequest) -> Prepared:
    """Validate everything and resolve the spec, without loading any model weights."""
    if request.limit is not None and request.limit < 1:
        raise ArgumentError(f"--limit must be a positive integer; got {request.limit}")
    if request.batch_size != "auto" and (not isinstance(request.batch_size, int) or request.batch_size < 1):
        raise ArgumentError(f"--batch-size must be 'auto' or a positive integer; got {request.batch_size}")
    task = make_task(request.task, request.task_args)
    method_cls = METHODS.get(request.method)
    method_args: Any = build(method_cls.Args, request.method_args, f"method '{request.method}'")
    if task.requires - method_cls.provides:
        adapted = type(task).adapt(dict(request.task_args), method_cls.provides)
        if adapted is not None:
            task = make_task(request.task, adapted[0])
            print(f"{task.name}: {adapted[1]} (pass --task-arg to choose otherwise)", file=sys.stderr)
    check_compatible(task, method_cls)
    device = resolve_device(request.device)
    dtype = models.resolve_dtype(request.dtype, device)
    data = DataStore(request.data_dir)
    docs = task.load_docs(data)
    if not docs:
        raise DataUnavailableError(f"task '{task.name}' found no documents")
    chosen, selection = select(docs, request.limit, request.seed)
    resolved = models.resolve(request.model, dtype, request.model_args)
    check_model_kind(task, request.model, resolved.identity.kind)
    second = task.auxiliary_models() | method_cls.auxiliary_models(method_args, resolved.identity.name)
    auxiliary = {role: models.resolve(name, dtype).identity.as_dict() for role, name in sorted(second.items())}
    has_template = resolved.identity.chat_template_sha256 is not None
    if request.chat_template == "on" and not has_template:
        raise ArgumentError(f"model '{request.model}' has no chat template (--chat-template on)")
    chat = has_template and (request.chat_template == "on" or (request.chat_template == "auto" and task.chat_by_default))
    if resolved.remote:
        check_remote(task, method_cls, resolved, chat)
    spec = RunSpec(
        harness_version=harness.__version__,
        task={"name": task.name, "version": task.version, "config": to_dict(task.config)},
        method={"name": method_cls.name, "args": to_dict(method_args)},
        model=resolved.identity.as_dict(),
        seed=request.seed,
        chat_template=chat,
        selection=selection.as_dict(),
        auxiliary=auxiliary,
    )
    return Prepared(request, task, method_cls, method_args, data, chosen, selection, resolved, device, spec)


def load_model(method_cls: type[Method], resolved: models.ResolvedModel, device: str, args: Any) -> models.LoadedModel:
    """The model as the method needs it: its own loading where it has one, else loaded whole."""
    return method_cls.load_model(resolved, device, args) or models.load_for_run(resolved, device)


def check_model_kind(task: Task, model: str, kind: str) -> None:
    """The run's model must read the task's requests: text as a causal LM or a vision-language
    model, images only as the latter. Known from the model's config, before its weights load."""
    if kind == "sequence-classifier":
        raise IncompatibleError(f"model '{model}' is a sequence classifier (a reward model's scalar head): it scores "
                                "text but cannot answer a task; give it to a method that uses a reward model")
    if Capability.VISION in task.requires and kind != "image-text-to-text":
        raise IncompatibleError(f"task '{task.name}' shows the model images, and model '{model}' is a {kind} that reads "
                                "text only: use an image-text-to-text model (harness ls models)")


REMOTE_CAPABILITIES = frozenset({Capability.LOGLIKELIHOOD, Capability.GENERATE, Capability.ACT})


def check_remote(task: Task, method_cls: type[Method], resolved: models.ResolvedModel, chat: bool) -> None:
    """A model behind an API generates, and scores where its server echoes prompt
    log-probabilities; a method that needs its weights, logits or cache cannot use it."""
    name = resolved.identity.name
    if not method_cls.runs_remote:
        usable = ", ".join(sorted(n for n in METHODS.names() if METHODS.get(n).runs_remote))
        raise IncompatibleError(f"method '{method_cls.name}' needs the model's weights, and model '{name}' is behind an API "
                                f"(methods that run on API models: {usable})")
    missing = task.requires - REMOTE_CAPABILITIES
    if missing:
        raise IncompatibleError(f"task '{task.name}' needs {', '.join(sorted(map(str, missing)))}, which a model behind an API "
                                "does not provide")
    if Capability.LOGLIKELIHOOD in task.requires:
        if chat:
            raise IncompatibleError(f"task '{task.name}' scores text inside the chat template, which the server of '{name}' "
                                    "applies out of reach: use --chat-template off")
        if not models.remote_endpoint(resolved).echoes_logprobs():
            raise IncompatibleError(f"task '{task.name}' scores continuations, and the server of '{name}' returns no prompt "
                                    "log-probabilities (completions with echo and logprobs)")


def run(request: RunRequest, wait_for_lock: bool = False) -> RunOutcome:
    return execute(prepare(request), wait_for_lock)


def execute(prepared: Prepared, wait_for_lock: bool = False) -> RunOutcome:
    """Run, resume or reuse the cell. Another process writing the same run is an error, or with
    ``wait_for_lock`` (sweeps) is waited for, after which its finished run is reused."""
    request, spec, task = prepared.request, prepared.spec, prepared.task
    store = writable_store(request.output_dir)
    run_dir = store.run(spec.run_id)
    source = reuse_source(prepared, store) if request.reuse_from is not None else None
    with run_dir.lock(wait=wait_for_lock):
        existing = run_dir.samples() if run_dir.exists() else []
        done = {r["doc_id"] for r in existing}
        if source is not None and source.run_id == spec.run_id:
            done |= carry_over(prepared, source, run_dir, done)
        elif source is not None:
            done |= reuse_samples(prepared, source, run_dir, done)
        todo = [d for d in prepared.docs if d.id not in done]
        finished = run_dir.results()
        if not todo and finished is not None:
            return RunOutcome(spec.run_id, run_dir.path, finished, reused=True)
        if todo:
            _evaluate(prepared, store, run_dir, done)
        results = finalize(run_dir, task)
        store.index(run_dir)
        return RunOutcome(spec.run_id, run_dir.path, results, reused=False)


def reuse_source(prepared: Prepared, store: RunStore) -> RunDir:
    """``--reuse-from``'s run, checked before anything is written: the same spec but for its
    subset, a smaller ``--limit`` of the same seed (whose documents are then all in this run's).
    It is an id (or prefix) in this run's store, or a run folder's path, such as a published run
    in ``results/`` whose samples were kept whole; or a copy of this same run carried from
    another machine (``progress/``), which is resumed from."""
    name = prepared.request.reuse_from
    assert name is not None
    folder = Path(name)
    if (folder / "spec.json").is_file():
        source = RunDir(folder)
        if (folder.parent / PUBLISHED_MANIFEST).is_file():
            kept = PublishedStore(folder.parent).manifest()["runs"].get(source.run_id, {}).get("samples", {})
            if kept.get("whole_records") != kept.get("n"):
                raise ArgumentError(f"--reuse-from {name}: its published samples were trimmed ({kept.get('whole_records')} "
                                    f"of {kept.get('n')} whole), so they cannot stand for computed ones")
    else:
        source = store.find(name)
    if source.run_id == prepared.spec.run_id:
        if source.path.resolve() == store.run(source.run_id).path.resolve():
            raise ArgumentError(f"--reuse-from {source.run_id} names this run itself (rerun without it to resume)")
        if source.spec().run_id != source.run_id:
            raise ArgumentError(f"--reuse-from {name}: its spec.json hashes to {source.spec().run_id}, not to its folder name")
        return source  # a copy of this very run, carried from another machine: resumed from
    spec, source_spec = prepared.spec.as_dict(), source.spec().as_dict()
    differing = sorted(k for k in spec.keys() | source_spec.keys() if k != "selection" and spec.get(k) != source_spec.get(k))
    if differing:
        raise ArgumentError(f"--reuse-from {source.run_id}: that run's {', '.join(differing)} differ from this run's; "
                            "only a run of the same protocol on a smaller --limit can be reused")
    if source_spec["selection"]["seed"] != spec["selection"]["seed"] or \
            not set(source_spec["selection"]["doc_ids"]) <= set(prepared.selection.doc_ids):
        raise ArgumentError(f"--reuse-from {source.run_id}: its documents are not a subset of this run's "
                            "(a smaller --limit with the same --seed is)")
    return source


def reuse_samples(prepared: Prepared, source: RunDir, run_dir: RunDir, done: set[str]) -> set[str]:
    """Take over ``source``'s samples: its records are copied in, not recomputed, and its cost
    counts as a session of this run, named in ``state.json`` and the results. A copied record
    was computed in other batches than a fresh run of this spec would use, so its floats may
    differ from that run's in the last digits: that is why reuse is asked for, not automatic.
    Returns the documents taken over (none when already taken over: a resume)."""
    state = run_dir.state()
    if any(s.get("reused_from") == source.run_id for s in state["sessions"]):
        return set()
    records = [r for r in source.samples() if r["doc_id"] not in done]
    sessions = source.state().get("sessions", [])
    cost = summed_cost(sessions)
    run_dir.create(prepared.spec)
    run_dir.append(records)
    state.setdefault("created_at", now())
    state["sessions"].append({"reused_from": source.run_id, "started_at": now(), "finished_at": now(),
                              "n_done_before": len(done), "n_done": len(done) + len(records), "cost": cost,
                              "model_load_s": sum(s.get("model_load_s", 0.0) for s in sessions)})
    run_dir.write_state(state)
    return {r["doc_id"] for r in records}


def carry_over(prepared: Prepared, source: RunDir, run_dir: RunDir, done: set[str]) -> set[str]:
    """Resume from a copy of this same run made elsewhere (``harness publish --unfinished``: a
    machine that does not outlive its session carries its runs in the repository). Its samples
    and its sessions become this run's, as if it had been resumed here: the cost, wall time and
    machines of every session count once, so a run carried over many machines reports what it
    took in all. Sessions already here (by start time) are not taken twice. Returns the
    documents taken over."""
    state, source_state = run_dir.state(), source.state()
    known = {s.get("started_at") for s in state["sessions"]}
    records = [r for r in source.samples() if r["doc_id"] not in done]
    carried = [s for s in source_state.get("sessions", []) if s.get("started_at") not in known]
    if not records and not carried:
        return set()
    run_dir.create(prepared.spec)
    run_dir.append(records)
    state.setdefault("created_at", source_state.get("created_at") or now())
    state["sessions"] = sorted(state["sessions"] + carried, key=lambda s: str(s.get("started_at")))
    run_dir.write_state(state)
    return {r["doc_id"] for r in records}


def _evaluate(prepared: Prepared, store: RunStore, run_dir: RunDir, done: set[str]) -> None:
    request, task = prepared.request, prepared.task
    load_began = time.perf_counter()
    loaded = load_model(prepared.method_cls, prepared.resolved, prepared.device, prepared.method_args)  # may fail: nothing written yet
    load_seconds = time.perf_counter() - load_began
    method = prepared.method_cls(loaded, prepared.method_args, MethodOptions(request.batch_size, request.seed, request.show_progress))
    run_dir.create(prepared.spec)
    state = run_dir.state()
    state.setdefault("created_at", now())
    session = {
        "started_at": now(), "finished_at": None, "device": prepared.device, "batch_size": request.batch_size,
        "model_load_s": round(load_seconds, 3),
        "docs_per_chunk": task.docs_per_chunk, "n_done_before": len(done), "n_done": len(done),
        "method_settings": method.describe(), "data": prepared.data.describe(), "cost": method.cost.as_dict(),
        "environment": environment(),
    }
    state["sessions"].append(session)
    run_dir.write_state(state)
    store.index(run_dir)
    settings = EvalSettings(prepared.spec.chat_template, request.seed, run_dir.journal, request.show_progress)
    label = f"{task.name} × {prepared.method_cls.name} × {loaded.identity.name}"
    docs = prepared.docs
    with tqdm(total=len(docs), initial=len(done), desc=label, unit="doc", disable=not request.show_progress) as bar:
        for start in range(0, len(docs), task.docs_per_chunk):
            chunk = [d for d in docs[start : start + task.docs_per_chunk] if d.id not in done]
            if not chunk:
                continue
            began = time.perf_counter()
            records = task.evaluate(chunk, method, settings)
            method.cost.wall_time_s += time.perf_counter() - began
            expected = [d.id for d in chunk]
            if [r.get("doc_id") for r in records] != expected:
                raise RuntimeError(f"task '{task.name}' returned records for the wrong documents")
            run_dir.append(records)
            settings.journal.clear()
            done.update(expected)
            # Settings a method resolves as it meets requests (EmoPrompt's guidance per kind) are read again.
            session.update(n_done=len(done), cost=method.cost.as_dict(), method_settings=method.describe(),
                           finished_at=now(), **peak_memory(prepared.device))
            run_dir.write_state(state)
            bar.update(len(chunk))


def peak_memory(device: str) -> dict[str, float]:
    """High-water marks so far: the process's resident memory, and the accelerator's allocations."""
    import resource

    import torch

    peaks = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}  # Linux: KiB
    if device.startswith("cuda") and torch.cuda.is_available():
        peaks["peak_accelerator_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peaks


def ordered_samples(run_dir: RunDir) -> list[dict[str, Any]]:
    spec = run_dir.spec()
    by_id = {r["doc_id"]: r for r in run_dir.samples()}
    return [by_id[i] for i in spec.selection["doc_ids"] if i in by_id]


def finalize(run_dir: RunDir, task: Task) -> dict[str, Any]:
    """Aggregate saved samples into results.json (used by run and by rescore)."""
    spec = run_dir.spec()
    records = ordered_samples(run_dir)
    n_selected = spec.selection["n_selected"]
    if len(records) != n_selected:
        raise RuntimeError(f"run {run_dir.run_id} has {len(records)} of {n_selected} samples")
    metrics = task.aggregate(records, BOOTSTRAP_SEED)
    state = run_dir.state()
    sessions = state.get("sessions", [])
    total_cost = summed_cost(sessions)
    wall = total_cost.get("wall_time_s", 0.0)
    last = sessions[-1] if sessions else {}
    results = {
        "run_id": run_dir.run_id,
        "task": spec.task,
        "method": spec.method,
        "model": spec.model,
        "main_metric": task.metrics()[0].name,
        "metrics": {name: value.as_dict() for name, value in metrics.items()},
        "n_samples": len(records),
        "selection": {k: v for k, v in spec.selection.items() if k != "doc_ids"},
        "seeds": {"run": spec.seed, "selection": spec.selection["seed"], "bootstrap": BOOTSTRAP_SEED},
        "chat_template": spec.chat_template,
        # Each task-scoring model's identity as the spec recorded it when the run began, never
        # resolved again: a rescore needs no model, and one retrained under the same name does
        # not relabel the run.
        "protocol": task.protocol() | {f"{role}_identity": spec.auxiliary.get(role) for role in sorted(task.auxiliary_models())},
        "method_settings": last.get("method_settings", {}),
        "data": last.get("data", {}),
        "cost": total_cost | _derived_cost(spec.method["name"], total_cost),
        "timing": {
            "wall_time_s": wall,
            "samples_per_s": len(records) / wall if wall else None,
            "model_load_s": sum(s.get("model_load_s", 0.0) for s in sessions),
            "tokens_per_s": total_cost.get("tokens_processed", 0) / wall if wall else None,
            "peak_rss_mb": max((s.get("peak_rss_mb", 0.0) for s in sessions), default=None),
            "peak_accelerator_mb": max((s.get("peak_accelerator_mb", 0.0) for s in sessions), default=None) or None,
            "sessions": len(sessions),
            "resumed": sum(not s.get("reused_from") for s in sessions) > 1,
        },
        "reused_from": [{"run_id": s["reused_from"], "n": s["n_done"] - s["n_done_before"]} for s in sessions if s.get("reused_from")],
        "environment": last.get("environment", environment()),
        "batch_sizes": sorted({str(s.get("batch_size")) for s in sessions}),
        "devices": sorted({str(s.get("device")) for s in sessions}),
        "harness_version": spec.harness_version,
        "created_at": state.get("created_at"),
        "finished_at": now(),
    }
    results["artifacts"] = task.artifacts(records, run_dir.path)
    run_dir.write_results(results)
    return results


def summed_cost(sessions: list[dict[str, Any]]) -> dict[str, Any]:
    """A run's cost over its sessions (a taken-over run's counts as one)."""
    total: dict[str, Any] = {}
    for session in sessions:
        for key, value in session.get("cost", {}).items():
            total[key] = total.get(key, 0) + value
    return total


def _derived_cost(method: str, cost: dict[str, Any]) -> dict[str, Any]:
    try:
        return METHODS.get(method).derived_cost(cost)
    except HarnessError:  # a method no longer installed: the raw counters stay
        return {}


def refuse_published(store: RunStore) -> None:
    if store.read_only:
        raise ArgumentError(f"{store.root} holds published runs, which are never written to: run into a working store "
                            "(--output-dir or $HARNESS_RUNS_DIR) and 'harness publish' the finished run")


def writable_store(root: Path) -> RunStore:
    store = open_store(root)
    refuse_published(store)
    return store


def rescore(store: RunStore, run_id: str) -> dict[str, Any]:
    refuse_published(store)
    run_dir = store.find(run_id)
    spec = run_dir.spec()
    task = make_task(spec.task["name"], spec.task["config"])
    results = finalize(run_dir, task)
    results["rescored_with_task_version"] = task.version
    run_dir.write_results(results)
    store.index(run_dir)
    return results


def compare(store: RunStore, run_a: str, run_b: str) -> tuple[list[PairedComparison], list[str]]:
    """Paired comparison of every metric on the samples both runs scored."""
    dir_a, dir_b = store.find(run_a), store.find(run_b)
    spec_a, spec_b = dir_a.spec(), dir_b.spec()
    if spec_a.task["name"] != spec_b.task["name"]:
        raise ArgumentError(f"runs are on different tasks ({spec_a.task['name']} vs {spec_b.task['name']})")
    notes = []
    if spec_a.task != spec_b.task:
        notes.append("task versions or configs differ between the runs")
    task = make_task(spec_a.task["name"], spec_a.task["config"])
    for role in sorted(task.auxiliary_models()):
        # A model that scores the task (judge, evaluation reward model, extractor) under one name
        # but with other weights (a retrained local zoo model) makes the two numbers incomparable.
        scorer_a, scorer_b = spec_a.auxiliary.get(role), spec_b.auxiliary.get(role)
        if scorer_a is not None and scorer_b is not None and scorer_a != scorer_b:
            raise IncompatibleError(
                f"runs {run_a} and {run_b} were scored by different {role.replace('_', ' ')}s "
                f"({identity_label(scorer_a)} vs {identity_label(scorer_b)}): their numbers are not comparable")
    samples_a, samples_b = ordered_samples(dir_a), ordered_samples(dir_b)
    return [paired_compare(m, samples_a, samples_b, BOOTSTRAP_SEED) for m in task.metrics()], notes


def identity_label(identity: dict[str, Any]) -> str:
    """A model identity in a few words: its name and the start of its weights' sha256."""
    weights = identity.get("weights_sha256")
    return f"{identity.get('name')} with weights {weights[:12]}" if weights else f"{identity.get('name')} from {identity.get('source')}"
