"""A name → entry registry that the modules of one package fill as they are imported (heads, tasks). The whole
package is imported on the first lookup, so a new entry is one new file in it."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Generic, TypeVar

from cvpipe.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, package: str, what: str, key: str):
        """`what` names an entry in messages ("head"); `key` is the pipeline key that names one ("model.head.name")."""
        self.package, self.what, self.key = package, what, key
        self.entries: dict[str, T] = {}
        self._imported = False

    def register(self, name: str, entry: T) -> T:
        if name in self.entries and self.entries[name] is not entry:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self.entries[name] = entry
        return entry

    def all(self) -> dict[str, T]:
        if not self._imported:
            package = importlib.import_module(self.package)
            for module in pkgutil.iter_modules(package.__path__):
                importlib.import_module(f"{self.package}.{module.name}")
            self._imported = True
        return self.entries

    def get(self, name: str) -> T:
        entry = self.all().get(name)
        if entry is None:
            raise ConfigError(f"{self.key}: no {self.what} {name!r} is registered; available: "
                              f"{', '.join(sorted(self.all()))}")
        return entry
