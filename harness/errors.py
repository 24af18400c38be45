"""Errors a user can cause. The CLI prints each as one line and exits non-zero."""

from __future__ import annotations


class HarnessError(Exception):
    """Base class for problems with the user's input or environment (not bugs)."""

    exit_code = 2


class UnknownNameError(HarnessError):
    """A task, method or model name that no registry knows."""


class ArgumentError(HarnessError):
    """A malformed or invalid --task-arg / --method-arg / option value."""


class IncompatibleError(HarnessError):
    """The task needs a capability the method does not provide."""


class DataUnavailableError(HarnessError):
    """A dataset could be found neither in the local mirror nor on the hub."""


class DataCorruptError(HarnessError):
    """A mirrored data file whose sha256 does not match the manifest, or that will not parse."""


class ModelLoadError(HarnessError):
    """A model whose files are missing or that fails to load."""


class RunStoreError(HarnessError):
    """A run id that does not exist, or a run directory in an unusable state."""


def first_line(error: BaseException) -> str:
    """An exception's message, first line only (for one-line errors), else its type's name."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
