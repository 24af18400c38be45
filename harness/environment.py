"""What a run or a made model was computed with: the harness version and git revision, Python,
the platform, the machine (CPU model and cores, memory, accelerator) and the versions of the
numeric packages, and torch's thread count. Its own module because runs (``runner``) and made models (``zoo``) both
record it, and the zoo sits below the runner."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import harness


def environment() -> dict[str, Any]:
    def pkg(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {
        "harness_version": harness.__version__,
        "git_revision": git_revision(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": machine(),
        "packages": {name: pkg(name) for name in ("torch", "transformers", "lm-eval", "numpy", "scipy", "tokenizers")},
        # CPU floats are summed in an order that depends on the thread count: a bitwise rerun needs it
        "torch_threads": torch_threads(),
    }


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def device_description(device: Any) -> str:
    """``cpu``, or the CUDA device with its card (``cuda:0 (NVIDIA H100 80GB HBM3)``): where a model
    was trained or a benchmark ran, since a figure is only comparable on the same card."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def machine() -> dict[str, Any]:
    """What the run ran on, for readers of published results: CPU model and cores, memory,
    and the accelerator's name when one is visible."""
    import torch

    cpu = platform.processor() or None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        memory_gb = None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    accelerator = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cpu_cores": cores, "memory_gb": memory_gb, "accelerator": accelerator}


def git_revision() -> str | None:
    root = Path(harness.__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None
