"""Keras 3 (torch backend): inputs, modes, copies, weights and one training step.

The framework-neutral entry points are in ``cnndoctor.runtime``; this module is what they call
for a ``keras.Model``. Keras layers on the torch backend are torch modules, so gradients live in
the variables' torch values (``variable.value.grad``).
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any

import numpy as np

from ...errors import InputError
from ..common import (NOT_COMPILED, WeightRef, first_output, integer_labels, one_hot,
                      probe_threads, to_numpy)
from . import losses

NAME = "keras"

#: Keras augmentation layers that keep the image's shape: the identity is what they do at
#: inference, and what a fit-one-batch test wants in training too.
AUGMENTATION_LAYERS = ("RandomFlip", "RandomTranslation", "RandomRotation", "RandomZoom",
                       "RandomContrast", "RandomBrightness")


def _keras():
    import keras

    return keras


def layers(model: Any) -> list:
    """Every layer of the model, nested ones included, in order."""
    return list(model._flatten_layers(include_self=False, recursive=True))


# ---- inputs and modes -----------------------------------------------------------------------

def device(model: Any):
    return None  # Keras places its variables itself (keras.device)


def as_input(model: Any, xb: Any):
    """A batch as the model takes it: float32 arrays (or float torch tensors)."""
    import torch

    if isinstance(xb, torch.Tensor):
        return xb.float() if xb.dtype in (torch.float64, torch.uint8) else xb
    arr = np.asarray(xb)
    if arr.dtype != np.float32 and arr.dtype.kind in "fui":
        arr = arr.astype(np.float32)
    return arr


def call(model: Any, xb: Any, *, training: bool):
    return first_output(model(xb, training=training))


def modes(model: Any, training: bool):
    """Keras takes the mode per call (``training=``): nothing to set or restore."""
    return contextlib.nullcontext()


def disable_augmentation(model: Any) -> list[str]:
    names = []
    for layer in layers(model):
        if type(layer).__name__ in AUGMENTATION_LAYERS:
            layer.call = lambda inputs, *args, **kwargs: inputs
            names.append(layer.name)
    return names


def reestimate_batchnorm(model: Any, xb: Any) -> int:
    import torch

    keras = _keras()
    norms = [layer for layer in layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    if not norms:
        return 0
    saved = [(layer, layer.momentum) for layer in norms]
    try:
        for layer in norms:
            layer.momentum = 0.0  # moving = moving * 0 + batch * 1
        with torch.no_grad(), probe_threads():
            model(xb, training=True)
    finally:
        for layer, momentum in saved:
            layer.momentum = momentum
    return len(norms)


def reseed(model: Any, seed: int) -> None:
    """Give every seeded Keras random layer (dropout with a seed, ...) a state from ``seed``."""
    try:
        found = model._flatten_layers(include_self=True, recursive=True)
    except Exception:
        return
    for i, layer in enumerate(found):
        for j, gen in enumerate(getattr(layer, "_seed_generators", []) or []):
            state = getattr(gen, "state", None)
            if state is None:
                continue
            try:
                state.assign(np.asarray([(seed * 7919 + i * 104729 + j) % (2**31 - 1), 0],
                                        dtype=to_numpy(state).dtype))
            except Exception:
                pass


# ---- copies ---------------------------------------------------------------------------------

def clone(model: Any, *, reinit: bool):
    keras = _keras()
    twin = None
    try:
        twin = keras.models.clone_model(model)
    except Exception:
        twin = None
    if twin is None:
        try:  # registered subclassed models
            twin = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
        except Exception:
            twin = None
    if twin is None:
        twin = copy.deepcopy(model)
        if reinit:
            raise NotImplementedError(
                f"cannot re-initialise a copy of {type(model).__name__}: it can be neither cloned "
                "nor rebuilt from its config")
    if not twin.built and model.built:
        shape = getattr(model, "input_shape", None)
        if shape is not None:
            twin.build(shape)
    if not reinit:
        twin.set_weights(model.get_weights())
    if getattr(model, "compiled", False):
        compile_like(twin, model)
    return twin


def fresh_optimizer(optimizer: Any, lr: float | None = None):
    """A new Keras optimizer of the same class and settings (no state), ``lr`` overriding."""
    keras = _keras()
    if optimizer is None:
        opt = keras.optimizers.Adam()
    elif isinstance(optimizer, str):
        opt = keras.optimizers.get(optimizer)
    elif isinstance(optimizer, dict):
        opt = keras.optimizers.deserialize(optimizer)
    else:
        opt = type(optimizer).from_config(optimizer.get_config())
    if lr is not None:
        config = opt.get_config()
        config["learning_rate"] = float(lr)
        opt = type(opt).from_config(config)
    return opt


def compile_like(twin: Any, model: Any, *, loss: Any = None, optimizer: Any = None,
                 lr: float | None = None) -> None:
    """Compile ``twin`` as ``model`` is compiled (fresh optimizer state), with overrides."""
    loss = loss if loss is not None else getattr(model, "loss", None)
    opt = fresh_optimizer(optimizer if optimizer is not None
                          else getattr(model, "optimizer", None), lr)
    kwargs = {}
    try:
        config = model.get_compile_config() or {}
        for key in ("loss_weights", "run_eagerly", "jit_compile"):
            if config.get(key) is not None:
                kwargs[key] = config[key]
    except Exception:
        pass
    kwargs["jit_compile"] = False
    twin.compile(optimizer=opt, loss=loss, **kwargs)


# ---- weights and optimizer ------------------------------------------------------------------

def weight_refs(model: Any, *, trainable: bool) -> list[WeightRef]:
    refs: list[WeightRef] = []
    seen: set[int] = set()
    for layer in layers(model):
        for v in getattr(layer, "_trainable_variables", None) or []:
            value = getattr(v, "value", None)
            if value is None or id(value) in seen or \
                    bool(getattr(v, "trainable", True)) != trainable:
                continue
            seen.add(id(value))
            refs.append(WeightRef(layer.name, str(getattr(v, "name", "w")), value))
    return refs


def own_optimizer(model: Any):
    """The optimizer the model was compiled with (None when it was not)."""
    return getattr(model, "optimizer", None)


def learning_rate(optimizer: Any) -> float | None:
    lr = getattr(optimizer, "learning_rate", None)
    if lr is None:
        return None
    try:
        return float(to_numpy(lr))
    except Exception:
        try:
            return float(to_numpy(lr(getattr(optimizer, "iterations", 0))))
        except Exception:
            return None


# ---- labels and losses ----------------------------------------------------------------------

def labels(mode: str, y_raw: Any, y_int: np.ndarray | None, n_out: int, device=None):
    """The label batch in the form the loss expects (numpy arrays)."""
    if mode == "sparse" and y_int is not None:
        return y_int.astype(np.int32) if n_out > 1 else y_int.astype(np.float32)[:, None]
    if mode == "onehot" and y_int is not None:
        return one_hot(y_int, n_out)
    return to_numpy(y_raw)


def loss_on(model: Any, out: np.ndarray, y: Any, loss: Any = None) -> float:
    """The mean loss of the outputs ``out`` against labels ``y`` (the model's loss by default)."""
    import torch


    loss_obj = loss if loss is not None else getattr(model, "loss", None)
    if loss_obj is None:
        raise InputError(NOT_COMPILED)
    n_out = out.shape[-1] if out.ndim >= 2 else 1
    yb = labels(losses.label_mode(loss_obj), to_numpy(y), integer_labels(y), n_out)
    fn = losses.resolve(loss_obj)
    with torch.no_grad():
        value = fn(torch.as_tensor(np.asarray(yb)), torch.as_tensor(out))
    return float(to_numpy(value).mean())


# ---- one training step ----------------------------------------------------------------------

class Trainer:
    """Forward, loss, backward and update for a Keras model, with its compiled loss/optimizer."""

    def __init__(self, model, loss, optimizer, lr, reset_grads=True):
        self.model = model
        self.reset_grads = reset_grads
        needs_compile = (loss is not None or optimizer is not None or lr is not None
                         or not getattr(model, "compiled", False))
        if needs_compile:
            if loss is None and getattr(model, "loss", None) is None:
                raise InputError(NOT_COMPILED)
            compile_like(model, model, loss=loss, optimizer=optimizer, lr=lr)
        self.loss = model.loss
        self.optimizer = model.optimizer
        self.compute = getattr(model, "_compute_loss", None) or model.compute_loss
        self.device = None
        self.mode = losses.label_mode(self.loss)

    def forward(self, xb):
        return call(self.model, xb, training=True)

    def loss_value(self, out, yb, training=True):
        return self.compute(x=None, y=yb, y_pred=out, sample_weight=None, training=training)

    def eval_loss(self, out: np.ndarray, yb) -> float:
        import torch

        return float(self.loss_value(torch.as_tensor(out), yb, training=False))

    def backward(self, loss):
        if self.reset_grads:
            self.model.zero_grad(set_to_none=True)
        if self.optimizer is not None:
            loss = self.optimizer.scale_loss(loss)
        if loss.requires_grad:  # every weight frozen: as in Keras' fit, nothing to update
            loss.backward()

    def update(self):
        import torch

        weights = self.model.trainable_weights[:]
        grads = [v.value.grad for v in weights]
        with torch.no_grad():
            self.optimizer.apply(grads, weights)

    def set_lr(self, lr: float) -> None:
        self.optimizer.learning_rate = lr

    def schedule(self, replayed: list, steps: int):
        """Keras schedules live in the optimizer and are cloned with it: nothing to follow."""
        return None

    def follow(self, settings: list[dict]) -> None:  # pragma: no cover - schedule() is None
        raise NotImplementedError

    @property
    def lr(self) -> float | None:
        return learning_rate(self.optimizer)
