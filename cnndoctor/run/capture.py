"""Bounded captures of what a script feeds a model: the first samples, and running statistics.

A ``Stream`` is one phase of one model ("training", "validation", "evaluation", "prediction"):
it keeps the first ``MAX_SAMPLES`` samples exactly as fed (inputs, labels, outputs), and running
per-channel statistics over every sample seen. Nothing here ever holds a whole dataset.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# How many samples of each phase are kept as fed, in memory during a session. Enough for the
# data checks and the evaluation comparison (a few hundred per class is not needed: the checks
# compare statistics and predictions), small enough to stay a few MB for 32x32x3 images
# (1024 x 3072 x 4 bytes = 12 MB).
MAX_SAMPLES = 1024
# How many of those go into the training record kept in the cache when a script saves the model
# (``run/cache.py``), so that a later evaluation session can compare against training: 256
# CIFAR-sized samples are 3 MB.
RECORD_SAMPLES = 256
# Percentiles reported for each channel (of the kept samples).
PERCENTILES = (1, 50, 99)


def to_numpy(value: Any) -> np.ndarray | None:
    """A numpy view/copy of a tensor or array-like; None for things that are not arrays."""
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        return value
    torch = _torch()
    if torch is not None and isinstance(value, torch.Tensor):
        t = value.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.float()
        return t.numpy()
    if hasattr(value, "__array__") and not isinstance(value, (str, bytes, dict)):
        try:
            return np.asarray(value)
        except Exception:
            return None
    if isinstance(value, (list, tuple)) and value and not isinstance(value[0], (dict, str)):
        try:
            arr = np.asarray(value)
        except Exception:
            return None
        return arr if arr.dtype != object else None
    return None


def _torch():
    import sys

    return sys.modules.get("torch")


def canonical(x: np.ndarray, layout: str) -> np.ndarray:
    """Images as float32 N x H x W x C (N x H x W gets C = 1); other shapes as float32 N x D x 1."""
    x = np.asarray(x)
    if x.ndim == 4 and layout == "channels_first":
        x = np.moveaxis(x, 1, -1)
    elif x.ndim == 3:
        x = x[..., None]
    elif x.ndim == 2:
        x = x[:, :, None]
    elif x.ndim == 1:
        x = x[:, None, None]
    return np.asarray(x, dtype=np.float32)


@dataclass
class RunningStats:
    """Per-channel count, mean, std, min and max over every sample seen."""

    channels: int | None = None
    count: int = 0  # values per channel
    total: np.ndarray | None = None
    total_sq: np.ndarray | None = None
    minimum: np.ndarray | None = None
    maximum: np.ndarray | None = None
    samples: int = 0
    dtype: str | None = None

    def update(self, images: np.ndarray, dtype: str | None = None) -> None:
        """``images``: canonical N x ... x C float array."""
        if images.size == 0:
            return
        flat = images.reshape(-1, images.shape[-1]).astype(np.float64, copy=False)
        if self.channels is None:
            self.channels = flat.shape[1]
            self.total = np.zeros(self.channels)
            self.total_sq = np.zeros(self.channels)
            self.minimum = np.full(self.channels, np.inf)
            self.maximum = np.full(self.channels, -np.inf)
        if flat.shape[1] != self.channels:  # a batch of another shape: keep the first kind only
            return
        finite = np.isfinite(flat)
        if not finite.all():
            flat = np.where(finite, flat, 0.0)
        self.total += flat.sum(axis=0)
        self.total_sq += np.square(flat).sum(axis=0)
        self.minimum = np.minimum(self.minimum, flat.min(axis=0))
        self.maximum = np.maximum(self.maximum, flat.max(axis=0))
        self.count += flat.shape[0]
        self.samples += images.shape[0]
        self.dtype = self.dtype or dtype

    def to_dict(self) -> dict:
        if not self.count:
            return {"samples": 0}
        mean = self.total / self.count
        var = np.maximum(self.total_sq / self.count - mean ** 2, 0.0)
        return {
            "samples": int(self.samples),
            "dtype": self.dtype,
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in np.sqrt(var)],
            "min": [float(v) for v in self.minimum],
            "max": [float(v) for v in self.maximum],
        }


@dataclass
class Stream:
    """What one model was fed in one phase, bounded."""

    phase: str  # "training", "validation", "evaluation", "prediction"
    source: str  # where: "model.fit in train.py"
    layout: str = "channels_last"
    max_samples: int = MAX_SAMPLES
    xs: list[np.ndarray] = field(default_factory=list)
    ys: list[np.ndarray | None] = field(default_factory=list)
    outs: list[np.ndarray | None] = field(default_factory=list)
    kept: int = 0
    batches: int = 0
    stats: RunningStats = field(default_factory=RunningStats)
    shape: tuple | None = None  # one sample's shape as fed
    dtype: str | None = None
    notes: dict = field(default_factory=dict)  # phase-specific observations (e.g. module.training)
    select: np.ndarray | None = None  # positions to keep (sorted); None: the first ones
    position: int = 0  # samples seen so far
    last_n: int = 0  # size of the last batch
    limit: int | None = None  # samples in one pass over the data, when known
    repeated: bool = False  # a batch of samples all kept already came: a new epoch began
    _seen: set = field(default_factory=set)  # hashes of the samples kept (when not selected)
    _last_rows: np.ndarray | None = None  # rows of the last batch that were kept

    # ---- feeding -------------------------------------------------------------------------
    def begin(self, n: int | None, spread: bool = False) -> None:
        """A pass over ``n`` samples starts (fit epoch, evaluate, predict on arrays): keep at most
        that pass, spread evenly over it when ``spread`` (data fed in order, e.g. sorted)."""
        if n is None:
            self.select = self.limit = None
            return
        self.limit = self.position + n
        self.select = None
        if spread and n > self.max_samples - self.kept > 0:
            room = self.max_samples - self.kept
            self.select = self.position + np.unique(
                np.linspace(0, n - 1, room).round().astype(np.int64))

    def add(self, x: Any, y: Any = None, out: Any = None) -> None:
        x = to_numpy(x)
        self._last_rows = None
        if x is None or x.ndim == 0:
            return
        self.batches += 1
        if self.shape is None:
            self.shape = tuple(x.shape[1:])
            self.dtype = str(x.dtype)
        if tuple(x.shape[1:]) != self.shape:
            return  # only one input shape per stream; the first one wins
        n = x.shape[0]
        self.last_n = n
        start = self.position
        self.position += n
        if np.issubdtype(x.dtype, np.number) or x.dtype == bool:
            self.stats.update(canonical(x, self.layout), str(x.dtype))
        room = self.max_samples - self.kept
        if room <= 0 or self.repeated or (self.limit is not None and start >= self.limit):
            return
        fresh = None
        if self.select is None and n:
            # A second pass over data smaller than the buffer must not be kept twice, shuffled
            # (a DataLoader with shuffle=True) or not: samples already kept are left out, and a
            # batch made only of them means the data came round again.
            keys = [hash(np.ascontiguousarray(x[i]).tobytes()) for i in range(n)]
            fresh = [i for i, k in enumerate(keys) if k not in self._seen]
            if not fresh:
                self.repeated = True
                return
        if self.limit is not None:
            room = min(room, self.limit - start)
        if self.select is None:
            rows = np.asarray(fresh[:room] if fresh is not None else [], dtype=np.int64)
            self._seen.update(keys[i] for i in rows)
        else:
            lo, hi = np.searchsorted(self.select, [start, start + n])
            rows = (self.select[lo:hi] - start)[:room]
        if rows.size == 0:
            return
        self._last_rows = rows
        kept_x, kept_y, kept_out = np.array(x[rows], copy=True), self._rows(y), self._rows(out)
        # Appended together: a script stopped here (--timeout) leaves at most a shorter list,
        # which the readers below cut to the batches complete in all three.
        self.xs.append(kept_x)
        self.ys.append(kept_y)
        self.outs.append(kept_out)
        self.kept += int(rows.size)

    def _rows(self, value: Any) -> np.ndarray | None:
        arr = to_numpy(value)
        rows = self._last_rows
        if arr is None or rows is None or arr.ndim == 0 or arr.shape[0] <= rows[-1]:
            return None
        return np.array(arr[rows], copy=True)

    def set_last_labels(self, y: Any) -> bool:
        """Attach labels to the last batch added (PyTorch: the loss call after the forward)."""
        if self._last_rows is None or self.ys[-1] is not None:
            return False
        self.ys[-1] = self._rows(y)
        return self.ys[-1] is not None

    def set_last_outputs(self, out: Any) -> None:
        if self._last_rows is not None and self.outs[-1] is None:
            self.outs[-1] = self._rows(out)

    # ---- reading -------------------------------------------------------------------------
    def _complete(self) -> int:
        """Kept batches present in inputs, labels and outputs alike."""
        return min(len(self.xs), len(self.ys), len(self.outs))

    @property
    def x(self) -> np.ndarray | None:
        n = self._complete()
        return np.concatenate(self.xs[:n]) if n else None

    @property
    def y(self) -> np.ndarray | None:
        """Labels of the kept samples, or None unless every kept batch has them."""
        ys = self.ys[:self._complete()]
        if not ys or any(v is None for v in ys):
            return None
        try:
            return np.concatenate(ys)
        except ValueError:
            return None

    @property
    def outputs(self) -> np.ndarray | None:
        outs = self.outs[:self._complete()]
        if not outs or any(v is None for v in outs):
            return None
        try:
            return np.concatenate(outs)
        except ValueError:
            return None

    @property
    def labelled(self) -> bool:
        return self.y is not None

    def summary(self) -> dict:
        """The statistics of this stream (all samples seen) and of the kept samples."""
        out = {
            "phase": self.phase,
            "source": self.source,
            "layout": self.layout,
            "batches": self.batches,
            "kept": self.kept,
            "sample_shape": list(self.shape) if self.shape else None,
            "dtype": self.dtype,
            "stats": self.stats.to_dict(),
        }
        x = self.x
        if x is not None and x.size and np.issubdtype(x.dtype, np.number):
            imgs = canonical(x, self.layout)
            flat = imgs.reshape(-1, imgs.shape[-1])
            pct = np.percentile(flat, PERCENTILES, axis=0)
            out["stats"]["percentiles"] = {
                str(p): [float(v) for v in row] for p, row in zip(PERCENTILES, pct)}
        if self.notes:
            out["notes"] = dict(self.notes)
        return out


