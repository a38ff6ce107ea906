"""One small generic registry: name -> thing, in registration order, with errors that list the choices.

Backbones, CAM methods, unknown detectors, augmentations, report sections and CLI commands are all a
`Registry`; tests iterate them, so whatever is registered is tested.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from monkeysee.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """An insertion-ordered name -> `T` mapping that refuses duplicates and unknown names clearly."""

    def __init__(self, kind: str) -> None:
        self.kind = kind  # what the entries are, for messages: "backbone", "CAM method", ...
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        """Register `item` under `name`; a second registration of the same name is a programming error."""
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of `add`: `@REGISTRY.register("name")`."""

        def decorate(item: T) -> T:
            return self.add(name, item)

        return decorate

    def get(self, name: str) -> T:
        """The entry called `name`, or a ConfigError naming every choice."""
        try:
            return self._items[name]
        except KeyError:
            problem = f"unknown {self.kind} {name!r}"
            raise ConfigError(problem, fix=f"choose one of: {self.choices()}") from None

    def check(self, name: str) -> str:
        """`name` if registered, else the same ConfigError as `get` (to validate options up front)."""
        self.get(name)
        return name

    def choices(self) -> str:
        return ", ".join(self._items)

    def names(self) -> list[str]:
        return list(self._items)

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())

    def values(self) -> list[T]:
        return list(self._items.values())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
