"""What both framework halves share: arrays in and out, batches, probe threads, weight records.

Imports nothing from cnndoctor but the errors, so that every framework module (and
``cnndoctor.runtime`` above them) can use it without an import cycle.
"""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

#: torch intra-op threads while probes train or predict (the user's setting is restored after).
#: Probe runs are many short runs on small batches, where thread hand-offs cost more than they
#: save; on the shared 2-core machine we measured the standard diagnosis of an 8x8-digit CNN at
#: 260 s with torch's default 2 threads and 4 s with 1 (benchmarks/probe_time.py). Parallelism
#: belongs across runs (DESIGN.md: one executor for many short runs), not inside each.
#: Override with the environment variable CNNDOCTOR_THREADS.
PROBE_THREADS = 1

NOT_COMPILED = ("the Keras model is not compiled and no loss was given: compile it or pass "
                "loss=...")


def to_numpy(t: Any) -> np.ndarray:
    """A numpy array from a numpy array, a torch tensor, a Keras variable/tensor or a list."""
    if isinstance(t, np.ndarray):
        return t
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(t, torch.Tensor):
        return t.detach().cpu().numpy()
    value = getattr(t, "value", None)  # a Keras Variable wraps a torch tensor
    if torch is not None and isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if hasattr(t, "numpy") and callable(t.numpy):
        return np.asarray(t.numpy())
    return np.asarray(t)


def first_output(out: Any):
    """The first output of a model that returns several (a list, tuple or dict)."""
    if isinstance(out, (list, tuple)):
        return out[0]
    if isinstance(out, dict):
        return next(iter(out.values()))
    return out


def take(x: Any, idx: np.ndarray):
    """Rows ``idx`` of a numpy array or a torch tensor."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return x[torch.as_tensor(idx, dtype=torch.long, device=x.device)]
    return np.asarray(x)[idx]


def length(x: Any) -> int:
    return int(x.shape[0]) if hasattr(x, "shape") else len(x)


def one_hot(y_int: np.ndarray, n_out: int) -> np.ndarray:
    """One-hot rows for ``n_out`` outputs (a single 0/1 column for one output unit)."""
    if n_out <= 1:
        return y_int.astype(np.float32)[:, None]
    out = np.zeros((len(y_int), n_out), dtype=np.float32)
    ok = (y_int >= 0) & (y_int < n_out)
    out[np.arange(len(y_int))[ok], y_int[ok]] = 1.0
    return out


@contextlib.contextmanager
def probe_threads():
    """Run a block with PROBE_THREADS torch threads (or $CNNDOCTOR_THREADS), then restore."""
    import torch

    try:
        wanted = int(os.environ.get("CNNDOCTOR_THREADS", PROBE_THREADS))
    except ValueError:
        wanted = PROBE_THREADS
    before = torch.get_num_threads()
    if wanted > 0 and wanted != before:
        torch.set_num_threads(wanted)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@dataclass
class WeightRef:
    layer: str  # the layer (Keras) or module (torch) name
    name: str  # the parameter's own name: "kernel", "weight", "bias", ...
    param: Any  # the torch Parameter (Keras: the variable's torch value)

    @property
    def is_kernel(self) -> bool:
        return self.param.dim() >= 2


def integer_labels(y: Any) -> np.ndarray | None:
    """Class indices from integer labels, one-hot rows or a single 0/1 column."""
    if y is None:
        return None
    arr = to_numpy(y)
    if arr.ndim == 2 and arr.shape[1] > 1:
        return arr.argmax(axis=1).astype(np.int64)
    arr = arr.reshape(arr.shape[0], -1)[:, 0] if arr.ndim >= 2 else arr
    if arr.dtype.kind == "f":
        return np.rint(arr).astype(np.int64)
    return arr.astype(np.int64)


def loss_name(loss: Any) -> str:
    """The lower-case name of a loss given as a string, a config dict, a class or an object."""
    if loss is None:
        return ""
    if isinstance(loss, str):
        return loss.lower()
    if isinstance(loss, dict):
        return str(loss.get("class_name", "")).lower()
    name = getattr(loss, "__name__", None) or type(loss).__name__
    inner = getattr(loss, "fn", None)  # keras LossFunctionWrapper
    if type(loss).__name__ == "LossFunctionWrapper" and inner is not None:
        name = getattr(inner, "__name__", name)
    return str(name).lower()


#: Words in a loss's name that say it takes one-hot / float targets rather than class indices.
DENSE_LOSS_WORDS = ("categorical", "crossentropy", "bce", "binary", "mse", "mean_squared", "mae",
                    "mean_absolute", "l1", "huber", "smooth", "kl", "hinge", "poisson", "cosine")
