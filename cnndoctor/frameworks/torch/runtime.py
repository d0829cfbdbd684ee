"""PyTorch: inputs, modes, copies, weights and one training step.

The framework-neutral entry points are in ``cnndoctor.runtime``; this module is what they call
for a ``torch.nn.Module``.
"""
from __future__ import annotations

import contextlib
import copy
import weakref
from typing import Any

import numpy as np
import torch

from ..common import WeightRef, first_output, one_hot, probe_threads, to_numpy, integer_labels
from . import losses

NAME = "torch"

#: clone -> {id(original parameter): index in clone.parameters()}; lets ``fit`` re-create a torch
#: optimizer built for the original model with the same parameter groups over the copy.
_PARAM_ORIGIN: "weakref.WeakKeyDictionary[Any, dict[int, int]]" = weakref.WeakKeyDictionary()

#: optimizers a name may stand for (``fit(optimizer="sgd")``)
OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop,
              "adamw": torch.optim.AdamW, "adagrad": torch.optim.Adagrad}
#: the optimizer fit uses when none is given, at this learning rate (torch's Adam default)
DEFAULT_LR = 1e-3


def device_dtype(model: Any):
    for p in model.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    return torch.device("cpu"), torch.float32


def device(model: Any):
    return device_dtype(model)[0]


# ---- inputs and modes -----------------------------------------------------------------------

def as_input(model: Any, xb: Any):
    """A batch as the model takes it: a float tensor of the model's dtype, on its device."""
    dev, dtype = device_dtype(model)
    t = xb if isinstance(xb, torch.Tensor) else torch.as_tensor(np.asarray(xb))
    if t.is_floating_point() or t.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32):
        t = t.to(dtype=dtype)
    return t.to(dev)


def call(model: Any, xb: Any, *, training: bool):
    """The model's output for a batch; the mode is set by ``modes`` around the call."""
    return first_output(model(xb))


@contextlib.contextmanager
def modes(model: Any, training: bool):
    """Set train/eval for a torch module and restore every submodule's own mode afterwards."""
    saved = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield
    finally:
        for m, was in saved:
            m.training = was


def disable_augmentation(model: Any) -> list[str]:
    """torch models augment in their data pipeline, which the probes do not use."""
    return []


def reestimate_batchnorm(model: Any, xb: Any) -> int:
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats]
    if not norms:
        return 0
    saved = [(m, m.momentum) for m in norms]
    with torch.no_grad(), probe_threads(), modes(model, False):
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: over one pass, the batch's statistics
            m.train()
        model(xb)
    for m, momentum in saved:
        m.momentum = momentum
    return len(norms)


def reseed(model: Any, seed: int) -> None:
    """torch draws dropout masks from its global generator, seeded by ``fit``."""


# ---- copies ---------------------------------------------------------------------------------

def clone(model: Any, *, reinit: bool):
    twin = copy.deepcopy(model)
    originals = list(model.parameters())
    _PARAM_ORIGIN[twin] = {id(p): i for i, p in enumerate(originals)}
    for p in twin.parameters():
        p.grad = None
    if reinit:
        with torch.no_grad():
            for module in twin.modules():
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()
    return twin


# ---- weights and optimizer ------------------------------------------------------------------

def weight_refs(model: Any, *, trainable: bool) -> list[WeightRef]:
    refs: list[WeightRef] = []
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if p.requires_grad == trainable:
                refs.append(WeightRef(mname or type(model).__name__, pname, p))
    return refs


def own_optimizer(model: Any):
    return None  # a torch module does not carry its optimizer


def learning_rate(optimizer: Any) -> float | None:
    groups = getattr(optimizer, "param_groups", None)
    return float(groups[0]["lr"]) if groups else None


def optimizer_for(model: Any, optimizer: Any, lr: float | None):
    """A torch optimizer of the user's class and settings over ``model``'s parameters."""
    params = list(model.parameters())
    if optimizer is None:
        return torch.optim.Adam([p for p in params if p.requires_grad],
                                lr=DEFAULT_LR if lr is None else lr)
    if isinstance(optimizer, str):  # "adam", "sgd", "rmsprop", "adamw"
        optimizer = OPTIMIZERS.get(optimizer.lower(), torch.optim.Adam)
    if isinstance(optimizer, type):  # an optimizer class
        return optimizer([p for p in params if p.requires_grad],
                         **({} if lr is None else {"lr": lr}))
    own = {id(p) for p in params}
    groups_in = optimizer.param_groups
    if all(id(p) in own for g in groups_in for p in g["params"]):
        mapping = {id(p): p for p in params}  # built for this very model: same tensors
    else:
        origin = _PARAM_ORIGIN.get(model)
        if origin is not None:
            mapping = {pid: params[i] for pid, i in origin.items() if i < len(params)}
        else:
            mapping = {}
    # per-group rates keep their ratio to the first group's, the rate ``current_lr`` reports (a
    # scheduler may have moved every group away from ``defaults["lr"]``: OneCycleLR starts at
    # max_lr / 25)
    base_lr = groups_in[0].get("lr", optimizer.defaults.get("lr")) if groups_in else None
    groups = []
    used: set[int] = set()
    for g in groups_in:
        mapped = [mapping[id(p)] for p in g["params"] if id(p) in mapping]
        if not mapped:
            continue
        used.update(id(p) for p in mapped)
        hyper = {k: v for k, v in g.items() if k != "params"}
        if lr is not None and "lr" in hyper:
            ratio = (float(hyper["lr"]) / float(base_lr)) if base_lr else 1.0
            hyper["lr"] = lr * ratio
        groups.append({"params": mapped, **hyper})
    rest = [p for p in params if id(p) not in used and p.requires_grad]
    if not groups:  # cannot map: one group with the first group's settings over all parameters
        hyper = {k: v for k, v in groups_in[0].items() if k != "params"}
        if lr is not None:
            hyper["lr"] = lr
        groups = [{"params": rest, **hyper}]
    elif rest and not mapping:
        groups[0]["params"] = groups[0]["params"] + rest
    defaults = dict(optimizer.defaults)
    if lr is not None and "lr" in defaults:
        defaults["lr"] = lr
    try:
        return type(optimizer)(groups, **defaults)
    except TypeError:
        # ``defaults`` may hold settings the constructor does not take back (torch 2.13's AdamW
        # keeps ``decoupled_weight_decay``; foreach/fused/capturable on some builds): keep the
        # ones its signature names (the groups still carry every setting)
        import inspect

        accepted = inspect.signature(type(optimizer).__init__).parameters
        defaults = {k: v for k, v in defaults.items() if k in accepted
                    and k not in ("foreach", "fused", "differentiable", "capturable")}
        return type(optimizer)(groups, **defaults)


# ---- labels and losses ----------------------------------------------------------------------

def labels(mode: str, y_raw: Any, y_int: np.ndarray | None, n_out: int, device=None):
    """The label batch in the form the loss expects (tensors on ``device``)."""
    if mode == "sparse" and y_int is not None:
        return torch.as_tensor(y_int, dtype=torch.long, device=device)
    if mode == "onehot" and y_int is not None:
        return torch.as_tensor(one_hot(y_int, n_out), device=device)
    t = y_raw if isinstance(y_raw, torch.Tensor) else torch.as_tensor(np.asarray(y_raw))
    if not t.is_floating_point():
        t = t.long()
    return t.to(device) if device is not None else t


def loss_on(model: Any, out: np.ndarray, y: Any, loss: Any = None) -> float:
    """The mean loss of the outputs ``out`` against labels ``y`` (CrossEntropyLoss by default)."""
    loss_fn = loss if loss is not None else torch.nn.CrossEntropyLoss()
    n_out = out.shape[-1] if out.ndim >= 2 else 1
    dev = device(model)
    yb = labels(losses.label_mode(loss_fn), to_numpy(y), integer_labels(y), n_out, dev)
    with torch.no_grad():
        value = loss_fn(torch.as_tensor(out, device=dev), yb)
    return float(to_numpy(value).mean())


# ---- one training step ----------------------------------------------------------------------

class Trainer:
    """Forward, loss, backward and update for a torch module with the user's loss/optimizer."""

    def __init__(self, model, loss, optimizer, lr, reset_grads=True):
        self.model = model
        self.reset_grads = reset_grads
        self.loss = loss if loss is not None else torch.nn.CrossEntropyLoss()
        self.optimizer = optimizer_for(model, optimizer, lr)
        self.device = device(model)
        self.mode = losses.label_mode(self.loss)

    def forward(self, xb):
        return call(self.model, xb, training=True)

    def loss_value(self, out, yb, training=True):
        return self.loss(out, yb)

    def eval_loss(self, out: np.ndarray, yb) -> float:
        return float(self.loss(torch.as_tensor(out, device=self.device), yb))

    def backward(self, loss):
        if self.reset_grads:
            self.optimizer.zero_grad(set_to_none=True)
        if loss.requires_grad:
            loss.backward()

    def update(self):
        self.optimizer.step()

    def set_lr(self, lr: float) -> None:
        """Every group at ``lr``, keeping the ratios between the groups' own learning rates."""
        opt = self.optimizer
        base = opt.param_groups[0]["lr"]  # ratios to the first group, as in optimizer_for
        for g in opt.param_groups:
            ratio = g.get("_cnndoctor_ratio")
            if ratio is None:
                ratio = (g["lr"] / base) if base else 1.0
                g["_cnndoctor_ratio"] = ratio
            g["lr"] = lr * ratio

    def schedule(self, replayed: list, steps: int):
        """The user's replayed scheduler spread over ``steps``: step -> group settings."""
        from .schedules import follow

        return follow(replayed, steps)

    def follow(self, settings: list[dict]) -> None:
        from .schedules import apply

        apply(self.optimizer, settings)

    @property
    def lr(self) -> float | None:
        return learning_rate(self.optimizer)
