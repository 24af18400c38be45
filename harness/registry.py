"""A small typed registry with lazy imports, entry-point plugins and "did you mean".

Built-in entries live in the packages ``tasks`` and ``methods``: a name maps to a module by
convention (``code-repair`` -> ``tasks/code_repair.py``), so nothing is imported until a
name is asked for. Third-party packages add entries through the entry-point groups
``harness.tasks`` / ``harness.methods`` (value ``"module:attr"``). Prefix resolvers handle
open-ended families such as ``lm-eval:<name>``.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from harness.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str, entry_point_group: str) -> None:
        self.kind = kind
        self.package = package
        self.entry_point_group = entry_point_group
        self._entries: dict[str, T] = {}
        self._lazy: dict[str, str] = {}
        self._prefixes: dict[str, Callable[[str], T] | str] = {}
        self._scanned = False

    # registration -------------------------------------------------------------------------
    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            existing = self._entries.get(name)
            if existing is not None and existing is not obj:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = obj
            try:
                obj.name = name  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass
            return obj

        return decorator

    def register_lazy(self, name: str, target: str) -> None:
        """Register ``"module:attr"`` to be imported on first use."""
        self._lazy[name] = target

    def register_prefix(self, prefix: str, resolver: Callable[[str], T] | str) -> None:
        """Names ``prefix<rest>`` resolve by calling ``resolver(rest)``; a ``"module:function"``
        resolver is imported on first use."""
        self._prefixes[prefix] = resolver

    # lookup -------------------------------------------------------------------------------
    def get(self, name: str) -> T:
        for prefix, resolver in self._prefixes.items():
            if name.startswith(prefix):
                if isinstance(resolver, str):
                    module_name, attr = resolver.split(":")
                    resolver = self._prefixes[prefix] = getattr(importlib.import_module(module_name), attr)
                return resolver(name[len(prefix):])
        if name in self._entries:
            return self._entries[name]
        self._import_by_convention(name)
        if name in self._entries:
            return self._entries[name]
        self._load_plugins()
        if name in self._lazy:
            return self._load_lazy(name)
        self.scan()
        if name in self._entries:
            return self._entries[name]
        suggestion = difflib.get_close_matches(name, self.names(), n=1, cutoff=0.5)
        hint = f"; did you mean '{suggestion[0]}'?" if suggestion else ""
        known = ", ".join(self.names())
        raise UnknownNameError(f"unknown {self.kind} '{name}'{hint} (known: {known})")

    def names(self) -> list[str]:
        self.scan()
        return sorted(set(self._entries) | set(self._lazy))

    def items(self) -> Iterator[tuple[str, T]]:
        for name in self.names():
            yield name, self.get(name)

    def prefixes(self) -> list[str]:
        return sorted(self._prefixes)

    # internals ----------------------------------------------------------------------------
    def _import_by_convention(self, name: str) -> None:
        module = f"{self.package}.{name.replace('-', '_').replace('.', '_')}"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module and not module.startswith(f"{error.name}."):
                raise

    def _load_lazy(self, name: str) -> T:
        module_name, _, attr = self._lazy[name].partition(":")
        obj = getattr(importlib.import_module(module_name), attr)
        self._entries.setdefault(name, obj)
        return self._entries[name]

    def _load_plugins(self) -> None:
        for ep in entry_points(group=self.entry_point_group):
            self._lazy.setdefault(ep.name, ep.value)

    def scan(self) -> None:
        """Import every built-in module and read plugins, so listings are complete."""
        if self._scanned:
            return
        self._scanned = True
        package = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")
        self._load_plugins()
