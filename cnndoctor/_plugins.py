"""Import the modules of a registry package (checks, probes) so that they register themselves."""
from __future__ import annotations

import importlib


def import_modules(package: str, modules: list[str], optional: list[str]) -> None:
    """Import ``package.<name>`` for every name; an optional module that is absent is skipped
    (a failure *inside* a module that exists still raises)."""
    for name in modules:
        importlib.import_module(f"{package}.{name}")
    for name in optional:
        try:
            importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{package}.{name}":
                raise


def sort_by_module(registry: list, order: list[str]) -> None:
    """Order registry entries (each with a registered function ``fn``) by their module's place in
    ``order``, keeping registration order within a module: whichever module happened to be
    imported first must not decide what runs first."""
    def place(entry):
        name = entry.fn.__module__.rsplit(".", 1)[-1]
        return order.index(name) if name in order else len(order)

    registry.sort(key=place)
