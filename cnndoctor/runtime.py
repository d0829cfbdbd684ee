"""Framework-neutral predict, copy and short training, for Keras 3 (torch backend) and torch.

Probes never touch the user's model: they ``clone`` it and ``fit`` the copy. Everything here
works the same for a ``keras.Model`` and a ``torch.nn.Module``:

    outputs = predict(model, x)                    # raw outputs, inference mode, no grad
    copy = clone(model)                            # same weights, independent
    fresh = clone(model, seed=3, reinit=True)      # same architecture, new weights from seed 3
    history = fit(copy, x, y, loss=..., optimizer=..., epochs=1, seed=0)
    probs = output_probabilities(outputs, "linear")

``fit`` reproduces the user's setup: their loss, their optimizer class and settings (re-created
for the copy, with a fresh state), their batch size. It is deterministic for a seed (shuffle
order, dropout, augmentation), and the global random states of Python, NumPy, torch and Keras
are left as they were, so a diagnosis never changes what the user's own script draws next.
"""
from __future__ import annotations

import contextlib
import math
import random
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .frameworks import framework_of, of
from .frameworks.common import (PROBE_THREADS, WeightRef, integer_labels, length, probe_threads,
                                take, to_numpy)

__all__ = ["to_numpy", "predict", "clone", "fit", "output_probabilities", "named_weights",
           "frozen_weights", "current_lr", "describe_optimizer", "integer_labels", "label_mode",
           "accuracy", "loss_on", "preserved_rng", "seed_everything", "StepInfo", "WeightRef",
           "framework_of", "probe_threads", "take", "length", "disable_augmentation",
           "reestimate_batchnorm", "PROBE_THREADS"]


def _torch():
    import torch

    return torch


@contextlib.contextmanager
def preserved_rng():
    """Run a block with its own random draws, then put every global random state back.

    Covers Python's ``random``, NumPy's global generator, torch (CPU and CUDA) and Keras'
    global seed generator, so that probes seeded inside never shift the user's random streams.
    """
    torch = _torch()
    py_state = random.getstate()
    np_state = np.random.get_state()
    torch_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    keras_attrs = None
    if "keras" in sys.modules:
        try:
            from keras.src.backend.common import global_state
            from keras.src.random import seed_generator as _sg
            from keras.src.utils import rng_utils as _rng

            names = (_sg.GLOBAL_SEED_GENERATOR, _rng.GLOBAL_RANDOM_SEED)
            keras_attrs = (global_state, {n: global_state.get_global_attribute(n) for n in names})
        except Exception:  # pragma: no cover - Keras internals moved
            keras_attrs = None
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        if keras_attrs is not None:
            state, attrs = keras_attrs
            for name, value in attrs.items():
                state.set_global_attribute(name, value)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy, torch and (when imported) Keras. Use inside ``preserved_rng``."""
    seed = int(seed) % (2**32)
    if "keras" in sys.modules:
        import keras

        keras.utils.set_random_seed(seed)
    else:
        random.seed(seed)
        np.random.seed(seed)
        _torch().manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# Inputs and modes


def predict(model: Any, x: Any, *, batch_size: int = 256, training: bool = False) -> np.ndarray:
    """Raw model outputs for ``x`` (in the model's own layout), without grad; in inference mode
    unless ``training`` (a torch module then runs in train mode, as code that forgets
    ``model.eval()`` does; no gradient, but batch-norm statistics move as they would).

    Never changes the model's modes: a torch module's train/eval modes are restored afterwards.
    """
    torch = _torch()
    fw = of(model)
    n = length(x)
    outs = []
    with torch.no_grad(), probe_threads(), fw.modes(model, training):
        for start in range(0, n, batch_size):
            xb = fw.as_input(model, take(x, np.arange(start, min(n, start + batch_size))))
            out = fw.call(model, xb, training=training)
            outs.append(to_numpy(out).astype(np.float32, copy=False))
    if not outs:
        return np.zeros((0,), dtype=np.float32)
    return np.concatenate(outs, axis=0)


def disable_augmentation(model: Any) -> list[str]:
    """Make a copy's augmentation layers pass their inputs through; returns their names.

    Karpathy's recipe for verifying training ("A recipe for training neural networks", 2019)
    overfits one batch with augmentation off: random flips and shifts of 16 images make a batch
    that is never the same twice. Only for probes on copies; torch models augment in their data
    pipeline, which the probes do not use.
    """
    return of(model).disable_augmentation(model)


def reestimate_batchnorm(model: Any, x: Any) -> int:
    """Set every batch-norm layer's running statistics to those of ``x`` (a copy's, in place).

    Batch norm trains on the statistics of each batch but predicts with running averages that
    trail them (momentum 0.9 in torch, 0.99 in Keras): after a few dozen steps on one batch the
    inference-mode outputs still use the statistics of the first steps, and a batch the model has
    fitted in training mode reads as unfitted. Only for probes on copies. Returns how many
    batch-norm layers were re-estimated (0: nothing changed).
    """
    fw = of(model)
    return fw.reestimate_batchnorm(model, fw.as_input(model, take(x, np.arange(length(x)))))


def output_probabilities(outputs: Any, output_activation: str | None) -> np.ndarray:
    """Class probabilities from raw outputs.

    ``output_activation`` is what the model's last step applies ("softmax", "sigmoid",
    "log_softmax", "linear", "relu", ...; see ``ModelGraph.output_activation``): softmax and
    sigmoid outputs are returned unchanged, log-softmax outputs exponentiated, and anything else
    is treated as logits (softmax over classes; sigmoid for a single output unit).
    """
    out = to_numpy(outputs).astype(np.float64)
    act = (output_activation or "linear").lower()
    if act in ("softmax", "sigmoid"):
        return out.astype(np.float32)
    if act == "log_softmax":
        return np.exp(out).astype(np.float32)
    if out.ndim >= 2 and out.shape[-1] > 1:
        z = out - out.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-out))).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Copies


def clone(model: Any, *, seed: int | None = None, reinit: bool = False) -> Any:
    """An independent deep copy of ``model`` with identical weights.

    ``reinit=True``: the same architecture with fresh weights drawn from ``seed``. Keras copies
    keep the compile configuration (same loss, same optimizer class and settings, a fresh
    optimizer state). The original model, its weights and its optimizer are not touched.
    """
    fw = of(model)
    with preserved_rng():
        seed_everything(0 if seed is None else seed)
        return fw.clone(model, reinit=reinit)


# ---------------------------------------------------------------------------------------------
# Labels, weights, optimizers


def label_mode(framework: str, loss: Any) -> str:
    """How labels must be given to this loss: "sparse" (class indices), "onehot" or "asis"."""
    from .frameworks import module

    return module(framework, "losses").label_mode(loss)


def named_weights(model: Any) -> list[WeightRef]:
    """Trainable parameters grouped by the layer (Keras) or module (torch) that owns them."""
    return of(model).weight_refs(model, trainable=True)


def frozen_weights(model: Any) -> list[WeightRef]:
    """Learnable parameters that are frozen: Keras variables with ``trainable=False`` (a layer or
    model set ``trainable=False``), torch parameters with ``requires_grad=False``. Batch-norm
    running statistics are not parameters and are not listed."""
    return of(model).weight_refs(model, trainable=False)


def current_lr(model: Any, optimizer: Any = None) -> float | None:
    """The learning rate the optimizer uses now (Keras: compiled optimizer by default)."""
    fw = of(model)
    opt = optimizer if optimizer is not None else fw.own_optimizer(model)
    return None if opt is None else fw.learning_rate(opt)


def user_lr(model: Any, optimizer: Any, schedule: list | None = None) -> float | None:
    """The learning rate the user trains at: the peak of their torch schedule (a
    ``frameworks/torch/schedules.replay``), else the optimizer's rate now (a OneCycleLR leaves the
    optimizer at its starting rate, ``max_lr / div_factor``)."""
    if schedule:
        from .frameworks.torch.schedules import peak

        top = peak(schedule)
        if top is not None:
            return top
    return current_lr(model, optimizer)


def describe_optimizer(optimizer: Any, model: Any = None) -> str:
    """A short description: "RMSprop(lr=0.001)"."""
    opt = optimizer
    if opt is None and model is not None:
        opt = of(model).own_optimizer(model)
    if opt is None:
        return "none"
    if isinstance(opt, str):
        return opt
    lr = current_lr(model, opt) if model is not None else None
    name = type(opt).__name__
    return f"{name}(lr={lr:.3g})" if lr is not None else name


# ---------------------------------------------------------------------------------------------
# Training


@dataclass
class StepInfo:
    """What ``on_step`` sees: called after the backward pass, before the optimizer update.

    Gradients are in the parameters' ``.grad`` (``named_weights`` lists them per layer). Return
    True from ``on_step`` to stop training.
    """

    step: int  # 0-based index of this update
    epoch: int
    loss: float
    outputs: Any  # the model's outputs for this batch (detached torch tensor)
    labels: np.ndarray | None  # integer labels of this batch
    model: Any
    framework: str
    lr: float | None = None


def fit(model: Any, x: Any, y: Any, *, loss: Any = None, optimizer: Any = None, epochs: int = 1,
        batch_size: int = 32, seed: int = 0, lr: float | None = None, val: tuple | None = None,
        augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
        max_steps: int | None = None, max_seconds: float | None = None,
        on_step: Callable[[StepInfo], Any] | None = None,
        lr_schedule: Callable[[int], float] | None = None,
        forward_context: Callable[[int], Any] | None = None,
        reset_grads: bool = True, user_schedule: list | None = None) -> dict:
    """Train ``model`` in place (callers pass a ``clone``) and return its history.

    ``loss``/``optimizer`` are the user's: for Keras, None means the model's ``compile()``
    settings; a torch optimizer built for another model (the original) is re-created over this
    model's parameters with the same class, settings and per-group learning rates. ``lr``
    overrides the learning rate; ``lr_schedule(step) -> lr`` sets it before every step (range
    tests). ``augment(x_batch, rng)`` transforms training batches. ``on_step(StepInfo)`` runs
    after each backward pass; returning True stops. ``forward_context(step)`` returns a context
    manager wrapped around that step's forward pass (recorders switch on there). Training also
    stops at the first non-finite
    loss, after ``max_steps`` updates or ``max_seconds``. ``reset_grads=False`` reproduces a
    training loop that never calls ``zero_grad()`` (gradients pile up across steps).
    ``user_schedule``: the user's torch learning-rate scheduler as
    ``frameworks/torch/schedules.replay`` gives it, followed over this run in proportion to its
    length, unless ``lr`` or ``lr_schedule`` sets the rate.

    Returns ``{"loss": per step, "epoch_loss", "acc" (running training accuracy per epoch),
    "epoch_samples" (samples each epoch actually trained on),
    "val_acc", "val_loss" (per epoch, when ``val`` is given), "lr": per step, "steps",
    "seconds", "stopped": None | "max_steps" | "time" | "nonfinite" | "callback",
    "nonfinite_step"}``.
    """
    torch = _torch()
    framework = framework_of(model)
    fw = of(model)
    n = length(x)
    if n == 0:
        from .errors import InputError

        raise InputError("no training samples were given (the training set is empty)")
    y_int = integer_labels(y)
    y_np = None if y is None else to_numpy(y)
    history: dict[str, Any] = {"loss": [], "epoch_loss": [], "acc": [], "epoch_samples": [],
                               "val_acc": [],
                               "val_loss": [], "lr": [], "steps": 0, "seconds": 0.0,
                               "stopped": None, "nonfinite_step": None}
    start = time.perf_counter()
    with preserved_rng(), probe_threads():
        seed_everything(seed)
        fw.reseed(model, seed)
        if lr is None and lr_schedule is not None:
            # a Keras optimizer built on a LearningRateSchedule refuses a new rate: the copy gets
            # one of the same class and settings with a plain rate, set at every step
            lr = float(lr_schedule(0))
        trainer = fw.Trainer(model, loss, optimizer, lr, reset_grads)
        history["optimizer"] = describe_optimizer(trainer.optimizer, model)
        plan = None
        if user_schedule and lr is None and lr_schedule is None:
            planned = max(1, int(epochs)) * math.ceil(n / batch_size)
            plan = trainer.schedule(user_schedule, min(planned, max_steps) if max_steps
                                    else planned)
        history["scheduled"] = plan is not None
        rng = np.random.default_rng(seed)
        aug_rng = np.random.default_rng([seed, 1])
        step = 0
        n_out = None
        with fw.modes(model, True):
            for epoch in range(max(1, int(epochs))):
                order = rng.permutation(n)
                losses, correct, seen = [], 0, 0
                for b in range(0, n, batch_size):
                    idx = order[b:b + batch_size]
                    xb = take(x, idx)
                    if augment is not None:
                        xb = augment(to_numpy(xb), aug_rng)
                    if lr_schedule is not None:
                        trainer.set_lr(float(lr_schedule(step)))
                    elif plan is not None:
                        trainer.follow(plan(step))
                    xin = fw.as_input(model, xb)
                    if forward_context is not None:
                        with forward_context(step):
                            out = trainer.forward(xin)
                    else:
                        out = trainer.forward(xin)
                    if n_out is None:
                        n_out = int(out.shape[-1]) if out.dim() >= 2 else 1
                    yb_int = None if y_int is None else y_int[idx]
                    yb = fw.labels(trainer.mode, None if y_np is None else y_np[idx], yb_int,
                                   n_out, trainer.device)
                    loss_t = trainer.loss_value(out, yb)
                    value = float(loss_t.detach())
                    history["loss"].append(value)
                    history["lr"].append(trainer.lr)
                    if not math.isfinite(value):
                        history["stopped"] = "nonfinite"
                        history["nonfinite_step"] = step
                        break
                    trainer.backward(loss_t)
                    if yb_int is not None:
                        correct += int((_predicted(out.detach()) == torch.as_tensor(
                            yb_int, device=out.device)).sum())
                        seen += len(idx)
                    losses.append(value)
                    if on_step is not None:
                        info = StepInfo(step=step, epoch=epoch, loss=value, outputs=out.detach(),
                                        labels=yb_int, model=model, framework=framework,
                                        lr=history["lr"][-1])
                        if on_step(info):
                            trainer.update()
                            step += 1
                            history["stopped"] = "callback"
                            break
                    trainer.update()
                    step += 1
                    if max_steps is not None and step >= max_steps:
                        history["stopped"] = "max_steps"
                        break
                    if max_seconds is not None and time.perf_counter() - start > max_seconds:
                        history["stopped"] = "time"
                        break
                history["epoch_loss"].append(float(np.mean(losses)) if losses else float("nan"))
                history["acc"].append(correct / seen if seen else None)
                history["epoch_samples"].append(seen)
                if val is not None:
                    vacc, vloss = _evaluate(model, trainer, val)
                    history["val_acc"].append(vacc)
                    history["val_loss"].append(vloss)
                if history["stopped"]:
                    break
        history["steps"] = step
    history["seconds"] = time.perf_counter() - start
    return history


def _predicted(out):
    if out.dim() >= 2 and out.shape[-1] > 1:
        return out.argmax(dim=-1)
    flat = out.reshape(out.shape[0])
    threshold = 0.5 if bool(((flat >= 0) & (flat <= 1)).all()) else 0.0
    return (flat > threshold).long()


def accuracy(outputs: Any, labels: Any) -> float | None:
    """Share of samples whose predicted class (argmax, or a threshold for one unit) is right."""
    if labels is None:
        return None
    torch = _torch()
    out = torch.as_tensor(to_numpy(outputs))
    if out.shape[0] == 0:
        return None
    pred = to_numpy(_predicted(out))
    return float((pred == integer_labels(labels)).mean())


def _evaluate(model, trainer, val: tuple):
    torch = _torch()
    fw = of(model)
    xv, yv = val[0], val[1] if len(val) > 1 else None
    out = predict(model, xv)
    vacc = accuracy(out, yv)
    vloss = None
    if yv is not None:
        try:
            n_out = out.shape[-1] if out.ndim >= 2 else 1
            yb = fw.labels(trainer.mode, to_numpy(yv), integer_labels(yv), n_out, trainer.device)
            with torch.no_grad():
                vloss = trainer.eval_loss(out, yb)
        except Exception:
            vloss = None
    return vacc, vloss


def loss_on(model: Any, x: Any, y: Any, *, loss: Any = None, batch_size: int = 256,
            outputs: np.ndarray | None = None) -> float:
    """The mean loss of ``model`` on (x, y) in inference mode, with the user's loss.

    ``outputs``: the model's raw outputs for ``x`` when already computed (saves a pass).
    """
    out = outputs if outputs is not None else predict(model, x, batch_size=batch_size)
    return of(model).loss_on(model, out, y, loss)
