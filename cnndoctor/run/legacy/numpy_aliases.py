"""numpy's removed aliases (``np.int``, ``np.float``, ``np.bool``, ...; gone since numpy 1.24)
as the builtins they always were."""
from __future__ import annotations

import builtins

ALIASES = {"int": "int", "float": "float", "bool": "bool", "complex": "complex",
           "object": "object", "str": "str", "long": "int", "unicode": "str"}


def install(legacy) -> None:
    import numpy as np

    previous = vars(np).get("__getattr__")

    def __getattr__(name):
        if name in ALIASES and legacy.active:
            legacy.note(f"`np.{name}` was removed in numpy 1.24; ran as the builtin "
                        f"`{ALIASES[name]}`", key=f"np.{name}")
            return getattr(builtins, ALIASES[name])
        if previous is not None:
            return previous(name)
        raise AttributeError(f"module 'numpy' has no attribute {name!r}")

    legacy._patch(np, "__getattr__", __getattr__)
