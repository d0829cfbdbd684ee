"""What every pipeline reader shares: turning items and batches into arrays, with clear errors."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError


@dataclass
class Sample:
    """What a reader took from a pipeline, before it becomes an ``evidence.Dataset``."""

    x: np.ndarray  # as the model is fed it (the pipeline's output), float32 or as yielded
    y: np.ndarray | None
    source: str  # "image folder /data/train", "torch DataLoader over ImageFolder", ...
    total_size: int | None  # images in the whole pipeline, when known
    stratified: bool  # the sample was drawn per class
    how: str  # "stratified by class, seed 0", "the first 2,000 the generator yielded", ...
    normalization: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    class_names: list[str] | None = None


def array_of(value: Any, what: str) -> np.ndarray:
    """numpy array from a tensor, a PIL image, an array or a number; InputError otherwise."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        t = value.detach().cpu()
        if str(t.dtype) in ("torch.bfloat16", "torch.float16"):
            t = t.float()
        return t.numpy()
    if type(value).__module__.startswith("PIL."):
        return np.asarray(value)
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        try:
            return np.asarray(value.numpy())
        except Exception:
            pass
    try:
        arr = np.asarray(value)
    except Exception as exc:
        raise InputError(f"{what} is a {type(value).__name__}: expected an image array or "
                         f"tensor.") from exc
    if arr.dtype == object or arr.dtype.kind not in "fiub":
        raise InputError(f"{what} is a {type(value).__name__} ({arr.dtype}): expected an image "
                         f"array or tensor of numbers.")
    return arr


def unpack(item: Any, what: str, require_labels: bool) -> tuple[Any, Any]:
    """(x, y) from an (x, y), (x, y, weights) or {'x':..., 'y':...} item; (x, None) from x alone
    when labels are not required."""
    if isinstance(item, dict):
        keys = {str(k).lower(): k for k in item}
        xk = next((keys[k] for k in ("x", "image", "images", "input", "inputs", "pixel_values")
                   if k in keys), None)
        yk = next((keys[k] for k in ("y", "label", "labels", "target", "targets") if k in keys),
                  None)
        if xk is None:
            raise InputError(f"{what} is a dict with keys {sorted(map(str, item))[:6]}: expected "
                             f"(image, label) pairs, or a dict with 'image' and 'label'.")
        item = (item[xk], item[yk]) if yk is not None else item[xk]
    if isinstance(item, (tuple, list)) and len(item) in (2, 3):
        return item[0], item[1]
    if require_labels:
        kind = type(item).__name__
        size = f" of {len(item)} items" if isinstance(item, (tuple, list)) else ""
        raise InputError(f"{what} is a {kind}{size}: expected (image, label) pairs.")
    return item, None


def check_image(x: np.ndarray, what: str, batched: bool) -> None:
    rank = x.ndim - (1 if batched else 0)
    if rank not in (1, 2, 3):
        raise InputError(f"{what} has shape {tuple(x.shape)}: expected "
                         f"{'a batch of images' if batched else 'one image'} (H x W, H x W x C "
                         f"or C x H x W).")


def stack(images: list[np.ndarray], labels: list[Any] | None, what: str
          ) -> tuple[np.ndarray, np.ndarray | None]:
    shapes = {tuple(a.shape) for a in images}
    if len(shapes) > 1:
        raise InputError(f"{what} yields images of different shapes {sorted(shapes)[:3]}: "
                         f"expected one size (resize in the pipeline).")
    x = np.stack(images) if images else np.zeros((0,), np.float32)
    y = None
    if labels is not None:
        try:
            y = np.stack([np.asarray(array_of(v, f"{what} label")) for v in labels])
        except ValueError as exc:
            raise InputError(f"{what} yields labels of different shapes: expected one class "
                             f"index (or one-hot row) per image.") from exc
    return x, y


def concat_batches(xs: list[np.ndarray], ys: list[np.ndarray | None], what: str):
    shapes = {tuple(a.shape[1:]) for a in xs}
    if len(shapes) > 1:
        raise InputError(f"{what} yields batches of different image shapes "
                         f"{sorted(shapes)[:3]}: expected one size.")
    x = np.concatenate(xs) if xs else np.zeros((0,), np.float32)
    y = None
    if ys and all(v is not None for v in ys):
        y = np.concatenate([np.asarray(v).reshape(len(v), *np.shape(v)[1:]) for v in ys])
    return x, y
