"""Progress bars with one process-wide switch: ``--quiet`` turns every bar off.

Most phases take a ``show_progress`` flag from the run request; a few (loading a model,
generating games, bootstrapping CIs) run where no request reaches, so they ask this module.
"""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm

_shown = True


def set_shown(shown: bool) -> None:
    global _shown
    _shown = shown


def shown() -> bool:
    return _shown


def bar(*, disable: bool = False, **kwargs: Any) -> tqdm:
    """A tqdm bar (rate and ETA), off when ``disable`` or when the process is quiet."""
    return tqdm(disable=disable or not _shown, **kwargs)
