"""Normalization inside a data pipeline, recognized by what it is (no torchvision needed).

A torchvision-like ``Normalize`` is an object with ``mean`` and ``std`` attributes in a chain of
transforms (``dataset.transform``, ``Compose.transforms``, ...); a ``ToTensor``-like step divides
8-bit pixels by 255. Keras ``PyDataset`` and generators do their scaling in code that cannot be
read: there, the statistics of what the pipeline yields tell.
"""
from __future__ import annotations

from typing import Any

import numpy as np

#: How deep the search follows nested transforms (Compose inside Compose inside a wrapper).
MAX_DEPTH = 6
#: Attribute names under which datasets and wrappers keep their transforms.
CHAIN_ATTRS = ("transform", "transforms", "target_transform_", "dataset", "datasets",
               "base_dataset", "_dataset")
#: Class names of steps that turn 0-255 pixels into 0-1 floats (torchvision's ToTensor, the v2
#: ToImage + ToDtype(scale=True), ConvertImageDtype).
SCALING_STEPS = ("ToTensor", "ConvertImageDtype", "ToDtype")


def _values(v: Any) -> list[float] | None:
    try:
        arr = np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v, dtype=float)
    except Exception:
        return None
    if arr.size == 0 or arr.size > 16 or not np.all(np.isfinite(arr)):
        return None
    return [float(a) for a in arr.reshape(-1)]


def find(obj: Any) -> list[dict]:
    """The normalization steps in ``obj``'s transform chain, in order of discovery."""
    found: list[dict] = []
    seen: set[int] = set()

    def visit(o: Any, depth: int, where: str) -> None:
        if o is None or depth > MAX_DEPTH or id(o) in seen or isinstance(o, (str, bytes, int,
                                                                              float, np.ndarray)):
            return
        seen.add(id(o))
        name = type(o).__name__
        if hasattr(o, "mean") and hasattr(o, "std") and not callable(getattr(o, "mean")):
            mean, std = _values(o.mean), _values(o.std)
            if mean is not None and std is not None:
                found.append({"step": name, "where": where, "mean": mean, "std": std})
                return
        if name in SCALING_STEPS and (name != "ToDtype" or getattr(o, "scale", False)):
            found.append({"step": name, "where": where, "scale": 1 / 255})
            return
        if isinstance(o, (list, tuple)):
            for i, item in enumerate(o):
                visit(item, depth + 1, f"{where}[{i}]")
            return
        for attr in CHAIN_ATTRS:
            try:
                child = getattr(o, attr, None)
            except Exception:
                continue
            if child is not None and not isinstance(child, type):
                visit(child, depth + 1, f"{where}.{attr}")

    visit(obj, 0, type(obj).__name__)
    return found


def describe(steps: list[dict]) -> str:
    parts = []
    for s in steps:
        if "mean" in s:
            parts.append(f"{s['step']}(mean={_short(s['mean'])}, std={_short(s['std'])})")
        else:
            parts.append(f"{s['step']} (/255)")
    return ", ".join(parts)


def _short(values: list[float]) -> str:
    if len(set(values)) == 1:
        return f"{values[0]:.3g}"
    inner = ", ".join(f"{v:.3g}" for v in values)
    return f"({inner})" if len(values) > 1 else inner
