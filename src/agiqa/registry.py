"""Name -> factory registries: adding a model, dataset reader or backend touches one module."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from agiqa.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of factories, filled by the ``register`` decorator.

    ``register_lazy`` names the module that registers an entry, imported on first use, so a
    process loads only the libraries of the entries it uses.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._modules: dict[str, str] = {}

    def register_lazy(self, name: str, module: str) -> None:
        self._modules[name] = module

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                raise ConfigError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str) -> T:
        if name not in self._entries and name in self._modules:
            importlib.import_module(self._modules[name])
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, self.names(), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            known = ", ".join(self.names()) or "none"
            raise ConfigError(f"unknown {self.kind} '{name}' (known: {known}).{hint}") from None

    def names(self) -> list[str]:
        return sorted({*self._entries, *self._modules})

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._modules

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
