"""Turn what the user passes as data into ``Dataset`` objects, or say clearly what is wrong.

Structural problems (empty data, wrong rank, mismatched lengths, labels of an impossible shape)
raise ``InputError`` with a message saying what was expected. Value problems (NaN, labels out of
range) are found by the ``invalid-values`` check, which can explain them with numbers.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InputError
from .evidence import Dataset

# Sizes an axis of channels takes in image data: gray, RGB, RGBA.
CHANNEL_SIZES = (1, 3, 4)
#: A classifier learns to tell classes apart: training data needs at least two of them (and so
#: at least two images); with one, every probe's accuracy is 100% by construction.
MIN_TRAINING_CLASSES = 2


def to_numpy(value: Any, what: str) -> np.ndarray:
    """numpy view of an array-like, tensor (torch/keras) or list; InputError when impossible."""
    if value is None:
        raise InputError(f"{what} is missing: expected an array.")
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch tensor
        value = value.detach().cpu().numpy()
    elif hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        try:
            value = value.numpy()
        except Exception:  # pragma: no cover - exotic tensors
            pass
    try:
        arr = np.asarray(value)
    except Exception as exc:
        shapes = _item_shapes(value)
        if len(shapes) > 1:
            raise InputError(f"{what} are of different shapes ({', '.join(map(str, shapes[:3]))}"
                             f"{', ...' if len(shapes) > 3 else ''}): expected one size; resize "
                             f"them to the model's input size first.") from exc
        raise InputError(f"{what} could not be read as an array ({type(value).__name__}): "
                         f"expected a numpy array or a tensor.") from exc
    if arr.dtype == object:
        raise InputError(f"{what} is an array of Python objects (ragged or mixed types): expected "
                         f"a numeric array with one fixed shape per sample.")
    return arr


def _item_shapes(value: Any) -> list[tuple]:
    """The distinct shapes of the items of a list or tuple (in order of appearance)."""
    if not isinstance(value, (list, tuple)):
        return []
    shapes = []
    for item in value:
        try:
            shape = tuple(np.shape(item))
        except Exception:  # an item that is ragged itself
            shape = ("ragged",)
        if shape not in shapes:
            shapes.append(shape)
    return shapes


def split_pair(pair: Any, what: str) -> tuple[Any, Any]:
    """(x, y) from a tuple/list pair, or (x, None) from a bare array (labels unknown)."""
    if isinstance(pair, (tuple, list)) and len(pair) == 2 and not _looks_like_array_list(pair):
        return pair[0], pair[1]
    if isinstance(pair, dict):
        keys = {k.lower(): k for k in pair}
        xk = next((keys[k] for k in ("x", "images", "inputs", "x_train") if k in keys), None)
        yk = next((keys[k] for k in ("y", "labels", "targets", "y_train") if k in keys), None)
        if xk is None:
            raise InputError(f"{what}: a dict needs an 'x' (images) entry and optionally 'y'.")
        return pair[xk], (pair[yk] if yk else None)
    if isinstance(pair, (tuple, list)):
        raise InputError(f"{what} should be a pair (x, y) of images and labels, or the images "
                         f"alone; got a {type(pair).__name__} of {len(pair)} items.")
    return pair, None


def _looks_like_array_list(pair) -> bool:
    # [img1, img2] where both are same-shaped arrays of rank >= 2: a list of images, not (x, y)
    a, b = pair
    try:
        sa, sb = np.shape(a), np.shape(b)
    except ValueError:  # ragged: a list of images of different sizes, not an array
        return False
    return len(sa) >= 2 and sa == sb


def detect_layout(x: np.ndarray, data_format: str) -> str:
    """Which layout a rank-4 batch is in, judged from the sizes of its axes."""
    if x.ndim != 4:
        return data_format
    first, last = x.shape[1] in CHANNEL_SIZES, x.shape[3] in CHANNEL_SIZES
    if first and not last:
        return "channels_first"
    if last and not first:
        return "channels_last"
    return data_format


def canonical_images(x: np.ndarray, layout: str, what: str = "the data") -> np.ndarray:
    """float32 N x H x W x C."""
    if x.ndim == 2:  # flattened images or features: N x D
        return x.reshape(x.shape[0], x.shape[1], 1, 1).astype(np.float32)
    if x.ndim == 3:  # N x H x W gray
        return x[..., None].astype(np.float32)
    if x.ndim == 4:
        if layout == "channels_first":
            x = np.transpose(x, (0, 2, 3, 1))
        return x.astype(np.float32)
    raise InputError(f"{what} images have rank {x.ndim} (shape {x.shape}): expected a batch of "
                     f"images, N x H x W x C (Keras) or N x C x H x W (PyTorch).")


def labels_of(y: np.ndarray, n: int, what: str) -> tuple[np.ndarray, str]:
    """Integer class labels and the format they were given in."""
    if y.shape[0] != n:
        raise InputError(f"{what} has {n} images but {y.shape[0]} labels: expected one label per "
                         f"image.")
    if y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1):
        flat = y.reshape(-1)
        if flat.dtype.kind == "f" and np.all(np.isfinite(flat)) and np.all(flat == np.round(flat)):
            flat = flat.astype(np.int64)
        if flat.dtype.kind in "iub":
            return flat.astype(np.int64), "sparse"
        if flat.dtype.kind == "f":  # non-integral or non-finite values: invalid-values explains
            return flat, "sparse"
        example = f" (e.g. {flat[0].item()!r})" if flat.size else ""
        raise InputError(f"{what} labels have dtype {flat.dtype}{example}: expected integer class "
                         f"indices or one-hot rows; class names map to numbers with "
                         f"classes = sorted(set(y)); y = np.array([classes.index(v) for v in y]).")
    if y.ndim == 2:
        return np.argmax(np.nan_to_num(y, nan=-np.inf), axis=1).astype(np.int64), "onehot"
    raise InputError(f"{what} labels have shape {y.shape}: expected integer class indices (N,) "
                     f"or one-hot rows (N, classes).")


def make_dataset(name: str, pair: Any, data_format: str, require_labels: bool = False
                 ) -> Dataset:
    what = f"the {name} data"
    x_raw, y_raw = split_pair(pair, what)
    x = to_numpy(x_raw, f"{what} images")
    if x.ndim == 0 or x.shape[0] == 0:
        raise InputError(f"{what} is empty: expected at least one image.")
    if x.dtype.kind not in "fiub":
        raise InputError(f"{what} images have dtype {x.dtype}: expected numbers.")
    layout = detect_layout(x, data_format)
    images = canonical_images(x, layout, what)
    labels, fmt = None, None
    if y_raw is not None:
        y = to_numpy(y_raw, f"{what} labels")
        if y.ndim == 0:
            raise InputError(f"{what} labels are a single value: expected one label per image.")
        labels, fmt = labels_of(y, x.shape[0], what)
    elif require_labels:
        raise InputError(f"{what} has no labels: pass it as a pair (x, y).")
    return Dataset(name=name, x=x_raw, images=images, labels=labels, label_format=fmt, y=y_raw,
                   layout=layout)


def require_trainable(ds: Dataset) -> None:
    """InputError when the training set cannot teach a classifier anything: one image, or labels
    that are all one class (integer labels; non-integral ones are invalid-values' to explain)."""
    if len(ds) < MIN_TRAINING_CLASSES:
        raise InputError(f"the {ds.name} data has {len(ds)} image: expected images of at least "
                         f"{MIN_TRAINING_CLASSES} classes to train a classifier on.")
    if ds.labels is None or ds.labels.dtype.kind not in "iub":
        return
    classes = np.unique(ds.labels)
    if len(classes) < MIN_TRAINING_CLASSES:
        names = getattr(ds, "class_names", None)
        label = names[int(classes[0])] if names and 0 <= classes[0] < len(names) else \
            int(classes[0])
        raise InputError(f"all {len(ds)} {ds.name} labels are class {label!r}: expected at least "
                         f"{MIN_TRAINING_CLASSES} classes to train a classifier on (were the "
                         f"labels loaded, or only one class folder?).")
