"""Reference ("real-world") samples: load them and prepare them the way the training data was.

A user whose model fails on real inputs has a few of them: photos in a folder, or arrays. To
compare them with the training images (``domain-shift``) and to measure the model on them, they
must be fed exactly as the training images were: same size, channels, layout and value range.
This module infers that from the training data and converts:

    ref = load_folder("my_digits/", like=train_dataset)   # one subfolder per class
    ref = from_arrays(photos_uint8, labels, like=(x_train, y_train))
    report = cnndoctor.diagnose(model, train=(x_train, y_train), reference=ref.as_pair())

What is inferred (``InputSpec.infer``): the image size and channels; the layout (N x H x W x C,
N x C x H x W, or N x H x W); the value range per channel (0-1, 0-255 or standardized: the
training data's own 0.1/99.9 percentiles, so ``(x - mean) / std`` data maps exactly); and the
polarity (bright objects on a dark background, as MNIST, or the reverse). Every conversion made is
listed in ``notes``, since the user's application must make the same ones.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
#: Polarity is matched only when the training images agree on it: at least this share of them
#: has the object brighter than the background (or darker). MNIST: 100% bright on dark.
POLARITY_AGREEMENT = 0.9
#: ITU-R BT.601 luma weights, used to turn a color photo into one gray channel.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass
class InputSpec:
    """What the model's input looks like, as inferred from the training data."""

    height: int
    width: int
    channels: int
    layout: str = "channels_last"  # "channels_last", "channels_first" or "none" (N x H x W)
    low: tuple[float, ...] = (0.0,)  # per channel: the value of black ...
    high: tuple[float, ...] = (1.0,)  # ... and of white
    bright_share: float | None = None  # share of training images with bright objects
    dtype: str = "float32"

    @classmethod
    def infer(cls, like: Any) -> "InputSpec":
        """From a training ``Dataset``, an ``(x, y)`` pair or an array of training images."""
        from .probes.robustness import image_properties, to_unit, value_range

        x, images, layout = _images_of(like)
        lo, hi = value_range(images)
        sub = images[np.linspace(0, len(images) - 1, min(len(images), 500)).astype(int)]
        bright = image_properties(to_unit(sub, (lo, hi)))["bright object share"]
        bright = bright[np.isfinite(bright)]
        return cls(height=int(images.shape[1]), width=int(images.shape[2]),
                   channels=int(images.shape[3]), layout=layout,
                   low=tuple(float(v) for v in lo), high=tuple(float(v) for v in hi),
                   bright_share=float(bright.mean()) if bright.size else None,
                   dtype=str(np.asarray(x[:1]).dtype) if np.asarray(x[:1]).dtype.kind == "f"
                   else "float32")

    @property
    def polarity(self) -> str | None:
        """"bright" (objects brighter than the background), "dark", or None when mixed."""
        if self.bright_share is None:
            return None
        if self.bright_share >= POLARITY_AGREEMENT:
            return "bright"
        if self.bright_share <= 1 - POLARITY_AGREEMENT:
            return "dark"
        return None


@dataclass
class ReferenceSamples:
    x: np.ndarray  # in the model's input form
    y: np.ndarray | None  # integer labels, or None
    classes: list[str] = field(default_factory=list)  # class index -> folder name
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # conversions made, in words

    def as_pair(self):
        """``(x, y)`` for ``diagnose(reference=...)`` (``x`` alone when unlabelled)."""
        return self.x if self.y is None else (self.x, self.y)

    def __len__(self) -> int:
        return int(len(self.x))


def _images_of(like: Any):
    """(x as given, canonical N x H x W x C float32 images, layout) of the training data."""
    if like is None:
        raise InputError("cannot prepare reference samples without the training data: pass "
                         "like=(x_train, y_train) so that they are converted the same way.")
    if hasattr(like, "images") and hasattr(like, "x"):  # a cnndoctor Dataset
        from .probes.robustness import layout_of

        return like.x, like.images, layout_of(like)
    x = like[0] if isinstance(like, (tuple, list)) and len(like) == 2 else like
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim == 3:
        return x, x[..., None].astype(np.float32), "none"
    if x.ndim != 4:
        raise InputError(f"training images of shape {x.shape}: expected N x H x W x C, "
                         f"N x C x H x W or N x H x W.")
    if x.shape[1] in (1, 3, 4) and x.shape[3] not in (1, 3, 4):
        return x, np.transpose(x, (0, 2, 3, 1)).astype(np.float32), "channels_first"
    return x, x.astype(np.float32), "channels_last"


# ---------------------------------------------------------------------------------------------
# Reading image files


def _read_image(path: str) -> np.ndarray:
    """H x W x C float32 in [0, 1] (C = 1, 3 or 4), phone photos turned upright."""
    try:
        from PIL import Image, ImageOps
    except ImportError:  # Pillow missing: matplotlib reads PNG itself
        if not path.lower().endswith(".png"):
            raise InputError(f"cannot read {path}: reading {os.path.splitext(path)[1]} files needs "
                             f"Pillow (pip install pillow); PNG files work without it.")
        import matplotlib.image as mpimg

        arr = np.asarray(mpimg.imread(path), dtype=np.float32)
        if arr.max() > 1.0:  # 16-bit PNGs come back as integers scaled to 0-1 by matplotlib
            arr = arr / 255.0
    else:
        try:
            with Image.open(path) as img:
                img = ImageOps.exif_transpose(img)
                if img.mode not in ("L", "RGB", "RGBA"):
                    img = img.convert("RGBA" if "A" in img.mode else "RGB")
                arr = np.asarray(img, dtype=np.float32) / 255.0
        except OSError as exc:
            raise InputError(f"cannot read the image {path}: {exc}") from exc
    if arr.ndim == 2:
        arr = arr[..., None]
    return arr


def _resize(img: np.ndarray, height: int, width: int, crop: bool) -> np.ndarray:
    """Resize H x W x C in [0, 1]; ``crop``: first cut the centre to the target aspect ratio."""
    h, w = img.shape[:2]
    if crop and h * width != w * height:
        target = width / height
        if w / h > target:
            new_w = max(1, int(round(h * target)))
            left = (w - new_w) // 2
            img = img[:, left:left + new_w]
        else:
            new_h = max(1, int(round(w / target)))
            top = (h - new_h) // 2
            img = img[top:top + new_h]
        h, w = img.shape[:2]
    if (h, w) == (height, width):
        return img
    try:
        from PIL import Image
    except ImportError:
        from scipy import ndimage

        fy, fx = height / h, width / w
        if fy < 1 or fx < 1:  # low-pass before shrinking, against aliasing
            img = ndimage.gaussian_filter(img, (max(0, 0.5 / fy - 0.5), max(0, 0.5 / fx - 0.5), 0))
        out = ndimage.zoom(img, (fy, fx, 1), order=1)
        return np.clip(out[:height, :width], 0.0, 1.0)
    planes = [np.asarray(Image.fromarray(img[..., c], mode="F").resize(
        (width, height), Image.Resampling.BOX if h > height else Image.Resampling.BILINEAR))
        for c in range(img.shape[2])]
    return np.clip(np.stack(planes, axis=-1), 0.0, 1.0)


def _to_channels(img: np.ndarray, channels: int) -> np.ndarray:
    if img.shape[2] == 4:  # composite transparency onto white paper
        img = img[..., :3] * img[..., 3:] + (1.0 - img[..., 3:])
    if img.shape[2] == channels:
        return img
    if channels == 1:
        return (img[..., :3] @ LUMA)[..., None] if img.shape[2] >= 3 else img[..., :1]
    return np.repeat(img[..., :1], channels, axis=2) if img.shape[2] == 1 else img[..., :channels]


def prepare(images, like: Any = None, *, spec: InputSpec | None = None, polarity: str = "auto",
            crop: bool = True) -> tuple[np.ndarray, list[str]]:
    """Convert images (a list of H x W x C arrays, or an N x H x W x C array, values 0-1 or 0-255)
    to the model's input: size, channels, polarity, value range, layout. Returns (x, notes).

    ``polarity``: "auto" inverts the images when the training images agree on the opposite
    polarity (MNIST: bright digits on black; a photo: dark ink on white); "keep" or "invert".
    """
    spec = spec or InputSpec.infer(like)
    notes: list[str] = []
    out = []
    resized = crop_note = False
    for img in images:
        arr = np.asarray(img, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.max(initial=0.0) > 1.0:
            arr = arr / 255.0
        if arr.shape[:2] != (spec.height, spec.width):
            resized = True
            if crop and arr.shape[0] * spec.width != arr.shape[1] * spec.height:
                crop_note = True
            arr = _resize(arr, spec.height, spec.width, crop)
        out.append(_to_channels(arr, spec.channels))
    if not out:
        raise InputError("no reference images to prepare.")
    u = np.stack(out).astype(np.float32)
    if resized:
        notes.append(f"resized to {spec.height}x{spec.width}"
                     + (" (centre cropped to that aspect ratio first)" if crop_note else ""))
    if polarity not in ("auto", "keep", "invert"):
        raise InputError(f"polarity={polarity!r}: expected 'auto', 'keep' or 'invert'.")
    if polarity != "keep":
        from .probes.robustness import image_properties

        bright = image_properties(u)["bright object share"]
        ref_bright = float(np.nanmean(bright)) if np.isfinite(bright).any() else None
        flip = polarity == "invert" or (
            spec.polarity is not None and ref_bright is not None
            and ((spec.polarity == "bright" and ref_bright < 0.5)
                 or (spec.polarity == "dark" and ref_bright > 0.5)))
        if flip:
            u = 1.0 - u
            notes.append(
                "inverted (the training images have "
                + ("bright objects on a dark background" if spec.polarity == "bright" else
                   "dark objects on a bright background")
                + ", these the reverse): your application must invert its inputs the same way")
    lo = np.asarray(spec.low, dtype=np.float32)
    hi = np.asarray(spec.high, dtype=np.float32)
    x = lo + u * (hi - lo)
    if not (np.allclose(lo, 0) and np.allclose(hi, 1)):
        notes.append("scaled to the training value range "
                     + ", ".join(f"{a:g}..{b:g}" for a, b in zip(spec.low, spec.high)))
    if spec.layout == "channels_first":
        x = np.transpose(x, (0, 3, 1, 2))
    elif spec.layout == "none":
        x = x[..., 0]
    return np.ascontiguousarray(x, dtype=np.float32), notes


# ---------------------------------------------------------------------------------------------
# Entry points


def load_folder(path: str, like: Any = None, *, spec: InputSpec | None = None,
                class_names: list[str] | None = None, polarity: str = "auto",
                crop: bool = True) -> ReferenceSamples:
    """Load an image folder: one subfolder per class (``0/``, ``1/``, ... or class names), or
    images directly in ``path`` (unlabelled). PNG, JPEG and other common formats.

    Labels: subfolders named by integers take that integer as the class index; otherwise the
    subfolders in alphabetical order are classes 0, 1, ... (as ``keras.utils.
    image_dataset_from_directory`` does), unless ``class_names`` gives the order.
    """
    if not os.path.isdir(path):
        raise InputError(f"reference folder {path!r} does not exist or is not a folder: expected "
                         f"a folder with one subfolder of images per class.")
    subdirs = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d))
                     and not d.startswith("."))
    files: list[str] = []
    labels: list[int] = []
    classes: list[str] = []
    if subdirs:
        if class_names is not None:
            unknown = [d for d in subdirs if d not in class_names]
            if unknown:
                raise InputError(f"subfolders {unknown} are not in class_names={class_names}.")
            index = {name: i for i, name in enumerate(class_names)}
            classes = list(class_names)
        elif all(d.lstrip("-").isdigit() for d in subdirs):
            index = {d: int(d) for d in subdirs}
            classes = [str(i) for i in range(max(index.values()) + 1)]
        else:
            index = {d: i for i, d in enumerate(subdirs)}
            classes = list(subdirs)
        for d in subdirs:
            for f in sorted(os.listdir(os.path.join(path, d))):
                if f.lower().endswith(IMAGE_EXTENSIONS):
                    files.append(os.path.join(path, d, f))
                    labels.append(index[d])
    else:
        files = [os.path.join(path, f) for f in sorted(os.listdir(path))
                 if f.lower().endswith(IMAGE_EXTENSIONS)]
    if not files:
        raise InputError(f"no images found in {path!r}: expected PNG or JPEG files, in one "
                         f"subfolder per class (e.g. {path}/0/a.png, {path}/1/b.jpg).")
    images = [_read_image(f) for f in files]
    x, notes = prepare(images, like, spec=spec, polarity=polarity, crop=crop)
    y = np.asarray(labels, dtype=np.int64) if labels else None
    notes.insert(0, f"{len(files)} images from {path}"
                 + (f", {len(subdirs)} class folders" if subdirs else ", no class folders "
                                                                      "(unlabelled)"))
    return ReferenceSamples(x=x, y=y, classes=classes, files=files, notes=notes)


def from_arrays(x: Any, y: Any = None, like: Any = None, *, spec: InputSpec | None = None,
                polarity: str = "keep", crop: bool = True) -> ReferenceSamples:
    """Reference samples from arrays. Arrays already in the training data's form (same shape
    per image, values within the training range) are kept as they are; anything else (other
    sizes, 0-255 photos for a 0-1 model, RGB for a gray model) is prepared like the training
    data. ``polarity`` defaults to "keep": arrays are taken as what the application feeds."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    labels = None
    if y is not None:
        from .runtime import integer_labels

        labels = integer_labels(y)
    spec = spec or InputSpec.infer(like)
    if isinstance(x, np.ndarray) and x.ndim >= 3 and _matches(x, spec):
        return ReferenceSamples(x=np.asarray(x, dtype=np.float32), y=labels,
                                notes=["kept as given: same form as the training data"])
    images = list(x) if not isinstance(x, np.ndarray) else [img for img in x]
    if isinstance(x, np.ndarray) and x.ndim == 4 and x.shape[1] in (1, 3, 4) \
            and x.shape[3] not in (1, 3, 4):  # channels-first photos
        images = [np.transpose(img, (1, 2, 0)) for img in x]
    xx, notes = prepare(images, spec=spec, polarity=polarity, crop=crop)
    if labels is not None and len(labels) != len(xx):
        raise InputError(f"{len(xx)} reference images but {len(labels)} labels: expected one "
                         f"label per image.")
    return ReferenceSamples(x=xx, y=labels, notes=notes)


def _matches(x: np.ndarray, spec: InputSpec) -> bool:
    shapes = {"channels_last": (spec.height, spec.width, spec.channels),
              "channels_first": (spec.channels, spec.height, spec.width),
              "none": (spec.height, spec.width)}
    if tuple(x.shape[1:]) != shapes[spec.layout]:
        return False
    lo, hi = min(spec.low), max(spec.high)
    margin = 0.05 * (hi - lo)
    return float(np.nanmin(x)) >= lo - margin and float(np.nanmax(x)) <= hi + margin


__all__ = ["InputSpec", "ReferenceSamples", "load_folder", "from_arrays", "prepare"]
