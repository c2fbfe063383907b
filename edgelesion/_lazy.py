"""A package face that names its entry points and imports each on first use, so importing the face stays light."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module


def lazy_entry_points(face: str, entries: dict[str, str]) -> tuple[Callable[[str], object], list[str]]:
    """`__getattr__` and `__all__` for the face module `face`: `entries` maps each name to the module defining it."""

    def __getattr__(name: str) -> object:
        if name not in entries:
            raise AttributeError(f"module {face!r} has no attribute {name!r}")
        return getattr(import_module(entries[name]), name)

    return __getattr__, sorted(entries)
