"""Image folders: one sub-folder per class (torchvision ``ImageFolder`` / Keras
``image_dataset_from_directory`` layout), decoded with Pillow.

Only the sampled files are opened. Pixels are read as 0-255 (as ``image_dataset_from_directory``
yields them: the model is fed what is on disk, unless it rescales itself); grayscale and colour
images are converted to the model's channel count, and images of another size are resized to the
model's input size (bilinear), with a note.
"""
from __future__ import annotations

import os
from collections import Counter

import numpy as np

from ..errors import InputError
from . import sampling
from .common import Sample

#: File endings decoded as images (those Pillow reads that image classifiers are stored in).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _images_in(folder: str) -> list[str]:
    out = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out.extend(os.path.join(root, f) for f in sorted(files)
                   if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))
    return out


def list_folder(path: str, what: str, require_labels: bool, class_names: list[str] | None):
    """(files, labels or None, class names) of an image folder; InputError when it is not one."""
    if not os.path.isdir(path):
        raise InputError(f"{what}: {path} is not a folder: expected a folder with one sub-folder "
                         f"of images per class.")
    subdirs = sorted(e.name for e in os.scandir(path) if e.is_dir() and not
                     e.name.startswith("."))
    if not subdirs:
        flat = _images_in(path)
        if require_labels or not flat:
            raise InputError(
                f"{what}: {path} has no class sub-folders"
                f"{f' ({len(flat)} images lie directly in it)' if flat else ''}: expected one "
                f"sub-folder per class, e.g. {os.path.join(path, 'cat', '001.png')}.")
        return flat, None, None
    names = class_names or subdirs
    index = {n: i for i, n in enumerate(names)}
    unknown = [d for d in subdirs if d not in index]
    if unknown:
        raise InputError(f"{what}: {path} has class folders {unknown[:5]} that the training "
                         f"folder does not have (its classes: {names[:10]}): expected the same "
                         f"class names.")
    files, labels = [], []
    for d in subdirs:
        found = _images_in(os.path.join(path, d))
        files += found
        labels += [index[d]] * len(found)
    if not files:
        raise InputError(f"{what}: the class folders of {path} hold no images (expected files "
                         f"ending in {', '.join(IMAGE_EXTENSIONS[:3])}, ...).")
    return files, np.asarray(labels, dtype=np.int64), names


def _open(path: str, what: str):
    from PIL import Image

    try:
        img = Image.open(path)
        img.load()
    except Exception as exc:
        raise InputError(f"{what}: cannot read the image {path} ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'}): expected "
                         f"a PNG or JPEG file.") from exc
    return img


def _header_size(path: str, what: str):
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.size[::-1], img.mode  # (H, W)
    except Exception as exc:
        raise InputError(f"{what}: cannot read the image {path} ({type(exc).__name__}): "
                         f"expected a PNG or JPEG file.") from exc


def read(path, name: str, *, budget: str, seed: int, require_labels: bool,
         size: tuple[int, int] | None, channels: int | None, channels_first: bool,
         class_names: list[str] | None = None) -> Sample:
    from PIL import Image

    path = os.fspath(path)
    what = f"the {name} folder"
    files, labels, names = list_folder(path, what, require_labels, class_names)
    total = len(files)
    # Sizes from the headers of a few files (cheap) decide the target when the model does not.
    probe_idx = sampling.uniform(total, min(total, 64), seed)
    headers = [_header_size(files[i], what) for i in probe_idx]
    if size is None:
        size = Counter(h for h, _ in headers).most_common(1)[0][0]
    if channels not in (1, 3):
        colour = sum(m not in ("L", "1", "I", "I;16", "F", "LA") for _, m in headers)
        channels = 3 if colour * 2 >= len(headers) else 1
    bytes_per_image = size[0] * size[1] * channels * 4
    n = sampling.sample_size(name, budget, bytes_per_image)
    if labels is not None:
        idx = sampling.stratified(labels, n, seed)
    else:
        idx = sampling.uniform(total, n, seed)
    h, w = size
    out = np.empty((len(idx), h, w, channels), dtype=np.uint8)
    resized, converted = Counter(), Counter()
    mode = "L" if channels == 1 else "RGB"
    for row, i in enumerate(idx):
        img = _open(files[i], what)
        if img.mode != mode:
            converted[img.mode] += 1
            img = img.convert(mode)
        if img.size != (w, h):
            resized[f"{img.size[1]}x{img.size[0]}"] += 1
            img = img.resize((w, h), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
        out[row] = arr[..., None] if arr.ndim == 2 else arr
    x = out.astype(np.float32)
    del out
    if channels_first:
        x = np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))
    notes = []
    if resized:
        sizes = ", ".join(f"{k} ({v})" for k, v in resized.most_common(3))
        notes.append(f"{sum(resized.values())} of the {len(idx)} images read from {path} were "
                     f"resized to {h}x{w} (the model's input size) from {sizes}.")
    if converted:
        modes = ", ".join(f"{k} ({v})" for k, v in converted.most_common(3))
        notes.append(f"{sum(converted.values())} images from {path} were converted to "
                     f"{'grayscale' if channels == 1 else 'RGB'} from {modes}.")
    how = (f"stratified by class over {len(names)} classes, seed {seed}" if labels is not None
           else f"drawn at random, seed {seed} (no class folders: no labels)")
    return Sample(x=x, y=None if labels is None else labels[idx],
                  source=f"image folder {path}", total_size=total,
                  stratified=labels is not None, how=how, notes=notes, class_names=names)
