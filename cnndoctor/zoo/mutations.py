"""Mutation operators: each injects one real bug class into a zoo model (DeepCrime-style).

An operator names the finding code(s) that a right diagnosis puts first (``expect``; any of
them ranked first counts as top-1), says which zoo entries it ``applies`` to, and builds the
mutated setup: either through the model's ``Config`` (the same bug in every architecture and
both frameworks) or by changing the data or the evaluation inputs the user passes.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from ..cases import Setup
from .config import Config
from .registry import ZooEntry

#: raw 8-bit pixels: the zoo's 0-1 images times 255 (what a loader without ``/ 255`` gives)
PIXEL_MAX = 255.0
#: class imbalance: the rare classes keep this share of their training images (about 1/40:
#: far past the 10x warning threshold of checks/class_imbalance.py on ~130-160 images a class)
RARE_SHARE = 0.025
#: duplicate leakage: this share of the validation set replaced by training images
LEAK_SHARE = 0.3
#: NaN in the data: this share of the training images get one NaN pixel
NAN_SHARE = 0.01
#: excessive dropout before the output (checks/excessive_dropout.py: >= 0.8 is an error)
HIGH_DROPOUT = 0.9
#: learning-rate mutations (DeepCrime's "change learning rate" at the two extremes)
LR_HIGH, LR_LOW = 100.0, 1e-3
#: hidden layers added for the saturating deep stack (sigmoid through 2 + 6 dense layers)
DEEP_EXTRA = 6


@dataclass(frozen=True)
class Operator:
    name: str
    expect: tuple[str, ...]  # codes a right diagnosis ranks first
    describe: str
    applies: Callable[[ZooEntry], bool]
    cfg: dict | None = None  # Config fields to change
    data: Callable[[Setup, int], Setup] | None = None  # change the data the user passes
    #: what the bug makes worse, for the kill criterion (killed.py): "accuracy" (validation),
    #: "evaluation" (accuracy on the evaluation inputs) or "leakage" (the validation figure
    #: overstates the accuracy on unseen images)
    harm: str = "accuracy"

    def build(self, entry: ZooEntry, seed: int = 0) -> Setup:
        setup = entry.build(seed, Config(**(self.cfg or {})))
        return self.data(setup, seed) if self.data else setup


def _np(x):
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def _like(ref, arr):
    """``arr`` as the same kind of array as ``ref`` (torch tensor or numpy)."""
    if hasattr(ref, "numpy"):
        import torch

        return torch.from_numpy(np.ascontiguousarray(arr))
    return arr


def _pair(data) -> tuple:
    """(x, y) of a data argument: a pair, or a zoo Dataset (torch_data.AugmentedImages)."""
    return (data.images, data.targets) if hasattr(data, "with_data") else data


def _rebuilt(data, x, y):
    """``data`` of the same kind holding ``x`` and ``y`` (a Dataset keeps its augmentation)."""
    return data.with_data(x, y) if hasattr(data, "with_data") else (x, y)


def _labels(y) -> np.ndarray:
    y = _np(y)
    return y.argmax(1) if y.ndim == 2 else y


def _raw_pixels(s: Setup, seed: int) -> Setup:
    (xt, yt), (xv, yv) = _pair(s.train), s.val
    return replace(s, train=_rebuilt(s.train, _like(xt, _np(xt) * PIXEL_MAX), yt),
                   val=(_like(xv, _np(xv) * PIXEL_MAX), yv))


def _eval_raw(s: Setup, seed: int) -> Setup:
    xv, yv = s.val
    return replace(s, evaluate=(_like(xv, _np(xv) * PIXEL_MAX), yv))


def _imbalance(s: Setup, seed: int) -> Setup:
    xt, yt = _pair(s.train)
    lab = _labels(yt)
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(lab):
        idx = np.flatnonzero(lab == c)
        if c >= len(np.unique(lab)) // 2:  # the upper half of the classes becomes rare
            idx = rng.choice(idx, max(2, int(round(len(idx) * RARE_SHARE))), replace=False)
        keep.append(idx)
    keep = np.sort(np.concatenate(keep))
    return replace(s, train=_rebuilt(s.train, _like(xt, _np(xt)[keep]),
                                     _like(yt, _np(yt)[keep])))


def _shuffle_labels(s: Setup, seed: int) -> Setup:
    xt, yt = _pair(s.train)
    perm = np.random.default_rng(seed).permutation(len(_np(yt)))
    return replace(s, train=_rebuilt(s.train, xt, _like(yt, _np(yt)[perm])))


def _leak(s: Setup, seed: int) -> Setup:
    (xt, yt), (xv, yv) = _pair(s.train), s.val
    n = int(round(len(_np(yv)) * LEAK_SHARE))
    rng = np.random.default_rng(seed)
    src = rng.choice(len(_np(yt)), n, replace=False)
    x, y = _np(xv).copy(), _np(yv).copy()
    x[:n], y[:n] = _np(xt)[src], _np(yt)[src]
    return replace(s, val=(_like(xv, x), _like(yv, y)))


def _swap_layout(s: Setup, seed: int) -> Setup:
    """The images given in the other framework's layout (NCHW to a Keras model, NHWC to torch)."""
    def swap(x):
        a = _np(x)
        # channels-last (N, H, W, C) -> (N, C, H, W), or back
        a = a.transpose(0, 3, 1, 2) if a.shape[-1] in (1, 3) else a.transpose(0, 2, 3, 1)
        return _like(x, a)

    (xt, yt), (xv, yv) = _pair(s.train), s.val
    return replace(s, train=_rebuilt(s.train, swap(xt), yt), val=(swap(xv), yv))


def _nan(s: Setup, seed: int) -> Setup:
    xt, yt = _pair(s.train)
    x = _np(xt).copy()
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(x), max(1, int(round(len(x) * NAN_SHARE))), replace=False)
    flat = x.reshape(len(x), -1)
    flat[rows, rng.integers(0, flat.shape[1], len(rows))] = np.nan
    return replace(s, train=_rebuilt(s.train, _like(xt, x), yt))


def _any(entry) -> bool:
    return True


def _has(*tags):
    return lambda e: all(t in e.tags for t in tags)


def _torch(entry) -> bool:
    return entry.framework == "torch"


OPERATORS: list[Operator] = [
    Operator("activation-before-softmax", ("activation-before-softmax",),
             "a ReLU on the logits before the softmax", _any, cfg={"logit_act": "relu"}),
    Operator("linear-stack", ("missing-nonlinearity",),
             "every hidden activation removed (the layers collapse into one linear map)",
             _any, cfg={"act": None}),
    Operator("double-softmax", ("double-softmax",),
             "softmax in the model and a loss that applies softmax again", _any,
             cfg={"head": "double"}),
    Operator("missing-softmax", ("missing-softmax",),
             "raw logits into a loss that expects probabilities", _any, cfg={"head": "missing"}),
    Operator("output-activation", ("output-activation-mismatch",),
             "Keras: sigmoid output with categorical cross-entropy; PyTorch: probabilities "
             "into NLLLoss", _any, cfg={"head": "sigmoid"}),
    Operator("output-size", ("output-size-mismatch",),
             "three output units fewer than classes", _any, cfg={"units_delta": -3}),
    Operator("oversized-layer", ("oversized-layer",),
             "a whole-map convolution with 256 filters as the head",
             lambda e: "conv" in e.tags and not e.tags & {"frozen", "small-map"},
             cfg={"oversized": True}),
    Operator("excessive-dropout", ("excessive-dropout",),
             f"dropout {HIGH_DROPOUT} before the output", _any, cfg={"dropout": HIGH_DROPOUT}),
    Operator("raw-pixels", ("unnormalized-input",),
             "training and validation images in 0-255", _any,
             data=_raw_pixels),
    Operator("eval-preprocessing", ("preprocessing-mismatch", "train-eval-discrepancy"),
             "evaluation images in 0-255 while training saw 0-1", _any, data=_eval_raw,
             harm="evaluation"),
    Operator("class-imbalance", ("class-imbalance",),
             f"half of the classes keep {RARE_SHARE:.1%} of their training images", _any,
             data=_imbalance),
    Operator("shuffled-labels", ("labels-uninformative",),
             "training labels permuted", _any, data=_shuffle_labels),
    Operator("duplicate-leakage", ("duplicate-leakage",),
             f"{LEAK_SHARE:.0%} of the validation images copied from the training set", _any,
             data=_leak, harm="leakage"),
    Operator("channel-layout", ("channel-layout",),
             "images given in the other framework's layout", _any, data=_swap_layout),
    Operator("lr-x100", ("lr-too-high",), f"learning rate x{LR_HIGH:g}", _any,
             cfg={"lr_factor": LR_HIGH}),
    Operator("lr-div1000", ("lr-too-low",), "learning rate /1000", _any,
             cfg={"lr_factor": LR_LOW}),
    Operator("saturating-deep-stack", ("vanishing-gradient",),
             f"sigmoid activations through {2 + DEEP_EXTRA} dense layers", _has("dense-stack"),
             cfg={"act": "sigmoid", "extra_depth": DEEP_EXTRA}),
    Operator("nan-in-data", ("invalid-values",),
             f"one NaN pixel in {NAN_SHARE:.0%} of the training images", _any, data=_nan),
    Operator("freeze-all", ("no-learning",),
             "every weight frozen by mistake (trainable=False / requires_grad=False)", _any,
             cfg={"freeze_all": True}),
]

#: Bug classes of the issue that ``diagnose()`` cannot see by construction: they live in the
#: user's training or evaluation loop, which ``cnndoctor run`` observes (tests/test_run.py).
RUN_ONLY = {"missing-zero-grad": "missing-zero-grad", "missing-eval": "eval-mode-not-set"}

BY_NAME = {op.name: op for op in OPERATORS}
