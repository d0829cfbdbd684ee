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
import copy
import math
import random
import sys
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

#: torch intra-op threads while probes train or predict (the user's setting is restored after).
#: Probe runs are many short runs on small batches, where thread hand-offs cost more than they
#: save; on the shared 2-core machine we measured the standard diagnosis of an 8x8-digit CNN at
#: 260 s with torch's default 2 threads and 4 s with 1 (benchmarks/probe_time.py). Parallelism
#: belongs across runs (DESIGN.md: one executor for many short runs), not inside each.
#: Override with the environment variable CNNDOCTOR_THREADS.
PROBE_THREADS = 1

# ---------------------------------------------------------------------------------------------
# Basics


def framework_of(model: Any) -> str:
    """"keras" or "torch" (raises the adapters' NotAModelError otherwise)."""
    from .adapters import framework_of as _framework_of

    return _framework_of(model)


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


def _torch():
    import torch

    return torch


def _keras():
    import keras

    return keras


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


@contextlib.contextmanager
def probe_threads():
    """Run a block with PROBE_THREADS torch threads (or $CNNDOCTOR_THREADS), then restore."""
    import os

    torch = _torch()
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


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy, torch and (when imported) Keras. Use inside ``preserved_rng``."""
    seed = int(seed) % (2**32)
    if "keras" in sys.modules:
        _keras().utils.set_random_seed(seed)
    else:
        random.seed(seed)
        np.random.seed(seed)
        _torch().manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# Inputs and modes


def _model_device_dtype(model: Any):
    torch = _torch()
    for p in model.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    return torch.device("cpu"), torch.float32


def _as_input(model: Any, framework: str, xb: Any):
    """A batch in the form the model takes: float tensors on the model's device."""
    torch = _torch()
    if framework == "keras":
        if isinstance(xb, torch.Tensor):
            return xb.float() if xb.dtype in (torch.float64, torch.uint8) else xb
        arr = np.asarray(xb)
        if arr.dtype != np.float32 and arr.dtype.kind in "fui":
            arr = arr.astype(np.float32)
        return arr
    device, dtype = _model_device_dtype(model)
    if isinstance(xb, torch.Tensor):
        t = xb
    else:
        t = torch.as_tensor(np.asarray(xb))
    if t.is_floating_point() or t.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32):
        t = t.to(dtype=dtype)
    return t.to(device)


def _take(x: Any, idx: np.ndarray):
    """Rows ``idx`` of a numpy array or a torch tensor."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return x[torch.as_tensor(idx, dtype=torch.long, device=x.device)]
    return np.asarray(x)[idx]


def _length(x: Any) -> int:
    return int(x.shape[0]) if hasattr(x, "shape") else len(x)


@contextlib.contextmanager
def _torch_modes(model: Any, training: bool):
    """Set train/eval for a torch module and restore every submodule's own mode afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield
    finally:
        for m, was in modes:
            m.training = was


def predict(model: Any, x: Any, *, batch_size: int = 256) -> np.ndarray:
    """Raw model outputs for ``x`` (in the model's own layout), in inference mode, without grad.

    Never changes the model: a torch module's train/eval modes are restored afterwards, and no
    batch-norm statistics are updated.
    """
    torch = _torch()
    framework = framework_of(model)
    n = _length(x)
    outs = []
    with torch.no_grad(), probe_threads():
        ctx = _torch_modes(model, False) if framework == "torch" else contextlib.nullcontext()
        with ctx:
            for start in range(0, n, batch_size):
                xb = _as_input(model, framework, _take(x, np.arange(start, min(n, start + batch_size))))
                out = model(xb, training=False) if framework == "keras" else model(xb)
                outs.append(to_numpy(_first_output(out)).astype(np.float32, copy=False))
    if not outs:
        return np.zeros((0,), dtype=np.float32)
    return np.concatenate(outs, axis=0)


#: Keras augmentation layers that keep the image's shape: the identity is what they do at
#: inference, and what a fit-one-batch test wants in training too.
AUGMENTATION_LAYERS = ("RandomFlip", "RandomTranslation", "RandomRotation", "RandomZoom",
                       "RandomContrast", "RandomBrightness")


def disable_augmentation(model: Any) -> list[str]:
    """Make a copy's augmentation layers pass their inputs through; returns their names.

    Karpathy's recipe for verifying training ("A recipe for training neural networks", 2019)
    overfits one batch with augmentation off: random flips and shifts of 16 images make a batch
    that is never the same twice. Only for probes on copies; torch models augment in their data
    pipeline, which the probes do not use.
    """
    if framework_of(model) != "keras":
        return []
    names = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if type(layer).__name__ in AUGMENTATION_LAYERS:
            layer.call = lambda inputs, *args, **kwargs: inputs
            names.append(layer.name)
    return names


def reestimate_batchnorm(model: Any, x: Any) -> int:
    """Set every batch-norm layer's running statistics to those of ``x`` (a copy's, in place).

    Batch norm trains on the statistics of each batch but predicts with running averages that
    trail them (momentum 0.9 in torch, 0.99 in Keras): after a few dozen steps on one batch the
    inference-mode outputs still use the statistics of the first steps, and a batch the model has
    fitted in training mode reads as unfitted. Only for probes on copies. Returns how many
    batch-norm layers were re-estimated (0: nothing changed).
    """
    torch = _torch()
    framework = framework_of(model)
    n = _length(x)
    xb = _as_input(model, framework, _take(x, np.arange(n)))
    if framework == "torch":
        norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                 and m.track_running_stats]
        if not norms:
            return 0
        saved = [(m, m.momentum) for m in norms]
        with torch.no_grad(), probe_threads(), _torch_modes(model, False):
            for m in norms:
                m.reset_running_stats()
                m.momentum = None  # a cumulative average: over one pass, the batch's statistics
                m.train()
            model(xb)
        for m, momentum in saved:
            m.momentum = momentum
        return len(norms)
    keras = _keras()
    norms = [layer for layer in model._flatten_layers(include_self=False, recursive=True)
             if isinstance(layer, keras.layers.BatchNormalization)]
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


def _first_output(out: Any):
    if isinstance(out, (list, tuple)):
        return out[0]
    if isinstance(out, dict):
        return next(iter(out.values()))
    return out


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

#: clone -> {id(original parameter): index in clone.parameters()}; lets ``fit`` re-create a torch
#: optimizer built for the original model with the same parameter groups over the copy.
_PARAM_ORIGIN: "weakref.WeakKeyDictionary[Any, dict[int, int]]" = weakref.WeakKeyDictionary()


def clone(model: Any, *, seed: int | None = None, reinit: bool = False) -> Any:
    """An independent deep copy of ``model`` with identical weights.

    ``reinit=True``: the same architecture with fresh weights drawn from ``seed``. Keras copies
    keep the compile configuration (same loss, same optimizer class and settings, a fresh
    optimizer state). The original model, its weights and its optimizer are not touched.
    """
    framework = framework_of(model)
    with preserved_rng():
        seed_everything(0 if seed is None else seed)
        if framework == "keras":
            return _clone_keras(model, reinit=reinit)
        return _clone_torch(model, reinit=reinit)


def _clone_torch(model: Any, *, reinit: bool):
    torch = _torch()
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


def _clone_keras(model: Any, *, reinit: bool):
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
        _compile_keras_like(twin, model)
    return twin


def _fresh_keras_optimizer(optimizer: Any, lr: float | None = None):
    """A new Keras optimizer of the same class and settings (no state), ``lr`` overriding."""
    keras = _keras()
    if optimizer is None:
        opt = keras.optimizers.Adam()
    elif isinstance(optimizer, str):
        opt = keras.optimizers.get(optimizer)
    elif isinstance(optimizer, dict):
        opt = keras.optimizers.deserialize(optimizer)
    else:
        config = optimizer.get_config()
        opt = type(optimizer).from_config(config)
    if lr is not None:
        config = opt.get_config()
        config["learning_rate"] = float(lr)
        opt = type(opt).from_config(config)
    return opt


def _compile_keras_like(twin: Any, model: Any, *, loss: Any = None, optimizer: Any = None,
                        lr: float | None = None) -> None:
    loss = loss if loss is not None else getattr(model, "loss", None)
    opt = _fresh_keras_optimizer(optimizer if optimizer is not None
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


# ---------------------------------------------------------------------------------------------
# Labels


def _loss_name(loss: Any) -> str:
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


_SPARSE_WORDS = ("sparse", "crossentropyloss", "cross_entropy", "nllloss", "nll_loss",
                 "multimargin", "multi_margin")
_DENSE_WORDS = ("categorical", "crossentropy", "bce", "binary", "mse", "mean_squared", "mae",
                "mean_absolute", "l1", "huber", "smooth", "kl", "hinge", "poisson", "cosine")


def label_mode(framework: str, loss: Any) -> str:
    """How labels must be given to this loss: "sparse" (class indices), "onehot" or "asis"."""
    name = _loss_name(loss)
    if framework == "torch" and not name:
        return "sparse"  # fit's default torch loss is CrossEntropyLoss
    if "sparse" in name:
        return "sparse"
    if framework == "torch":
        # torch's CrossEntropyLoss and NLLLoss take class indices; BCE/MSE take float targets.
        if any(w in name for w in ("crossentropyloss", "cross_entropy", "nllloss", "nll_loss",
                                   "multimargin", "multi_margin")):
            if "binary" not in name and "bce" not in name:
                return "sparse"
        if any(w in name for w in _DENSE_WORDS):
            return "onehot"
        return "asis"
    if any(w in name for w in _DENSE_WORDS):
        return "onehot"
    return "asis"


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


def _labels_for_loss(framework: str, mode: str, y_raw: Any, y_int: np.ndarray | None,
                     n_out: int, device=None):
    """The label batch in the form the loss expects."""
    torch = _torch()
    if mode == "sparse" and y_int is not None:
        if framework == "keras":
            return y_int.astype(np.int32) if n_out > 1 else y_int.astype(np.float32)[:, None]
        return torch.as_tensor(y_int, dtype=torch.long, device=device)
    if mode == "onehot" and y_int is not None:
        if n_out > 1:
            onehot = np.zeros((len(y_int), n_out), dtype=np.float32)
            ok = (y_int >= 0) & (y_int < n_out)
            onehot[np.arange(len(y_int))[ok], y_int[ok]] = 1.0
        else:
            onehot = y_int.astype(np.float32)[:, None]
        if framework == "keras":
            return onehot
        return torch.as_tensor(onehot, device=device)
    # as given
    if framework == "keras":
        return to_numpy(y_raw)
    t = y_raw if isinstance(y_raw, torch.Tensor) else torch.as_tensor(np.asarray(y_raw))
    if not t.is_floating_point():
        t = t.long()
    return t.to(device) if device is not None else t


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


@dataclass
class WeightRef:
    layer: str  # the layer (Keras) or module (torch) name
    name: str  # the parameter's own name: "kernel", "weight", "bias", ...
    param: Any  # the torch Parameter (Keras: the variable's torch value)

    @property
    def is_kernel(self) -> bool:
        return self.param.dim() >= 2


def named_weights(model: Any) -> list[WeightRef]:
    """Trainable parameters grouped by the layer (Keras) or module (torch) that owns them."""
    return _weight_refs(model, trainable=True)


def frozen_weights(model: Any) -> list[WeightRef]:
    """Learnable parameters that are frozen: Keras variables with ``trainable=False`` (a layer or
    model set ``trainable=False``), torch parameters with ``requires_grad=False``. Batch-norm
    running statistics are not parameters and are not listed."""
    return _weight_refs(model, trainable=False)


def _weight_refs(model: Any, *, trainable: bool) -> list[WeightRef]:
    """The learnable parameters whose trainable flag is ``trainable``, by owning layer/module."""
    refs: list[WeightRef] = []
    if framework_of(model) == "keras":
        seen: set[int] = set()
        for layer in model._flatten_layers(include_self=False, recursive=True):
            for v in getattr(layer, "_trainable_variables", None) or []:
                value = getattr(v, "value", None)
                if value is None or id(value) in seen or \
                        bool(getattr(v, "trainable", True)) != trainable:
                    continue
                seen.add(id(value))
                refs.append(WeightRef(layer.name, str(getattr(v, "name", "w")), value))
        return refs
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if p.requires_grad == trainable:
                refs.append(WeightRef(mname or type(model).__name__, pname, p))
    return refs


def current_lr(model: Any, optimizer: Any = None) -> float | None:
    """The learning rate the optimizer uses now (Keras: compiled optimizer by default)."""
    opt = optimizer
    if opt is None and framework_of(model) == "keras":
        opt = getattr(model, "optimizer", None)
    if opt is None:
        return None
    groups = getattr(opt, "param_groups", None)
    if groups:
        return float(groups[0]["lr"])
    lr = getattr(opt, "learning_rate", None)
    if lr is None:
        return None
    try:
        return float(to_numpy(lr))
    except Exception:
        try:
            return float(to_numpy(lr(getattr(opt, "iterations", 0))))
        except Exception:
            return None


def describe_optimizer(optimizer: Any, model: Any = None) -> str:
    """A short description: "RMSprop(lr=0.001)"."""
    opt = optimizer
    if opt is None and model is not None and framework_of(model) == "keras":
        opt = getattr(model, "optimizer", None)
    if opt is None:
        return "none"
    if isinstance(opt, str):
        return opt
    lr = current_lr(model, opt) if model is not None else None
    name = type(opt).__name__
    return f"{name}(lr={lr:.3g})" if lr is not None else name


def _torch_optimizer_for(model: Any, optimizer: Any, lr: float | None):
    """A torch optimizer of the user's class and settings over ``model``'s parameters."""
    torch = _torch()
    params = list(model.parameters())
    if optimizer is None:
        opt = torch.optim.Adam([p for p in params if p.requires_grad], lr=1e-3 if lr is None else lr)
        return opt
    if isinstance(optimizer, str):  # "adam", "sgd", "rmsprop", "adamw"
        names = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop,
                 "adamw": torch.optim.AdamW, "adagrad": torch.optim.Adagrad}
        optimizer = names.get(optimizer.lower(), torch.optim.Adam)
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


class _Trainer:
    """One training step for either framework: forward, loss, backward, (hook), update."""

    def __init__(self, model, framework, loss, optimizer, lr, reset_grads=True):
        torch = _torch()
        self.model, self.framework = model, framework
        self.reset_grads = reset_grads
        if framework == "keras":
            needs_compile = (loss is not None or optimizer is not None or lr is not None
                             or not getattr(model, "compiled", False))
            if needs_compile:
                if loss is None and getattr(model, "loss", None) is None:
                    from .errors import InputError

                    raise InputError("the Keras model is not compiled and no loss was given: "
                                     "compile it or pass loss=...")
                _compile_keras_like(model, model, loss=loss, optimizer=optimizer, lr=lr)
            self.loss = model.loss
            self.optimizer = model.optimizer
            self.compute = getattr(model, "_compute_loss", None) or model.compute_loss
            self.device = None
        else:
            self.loss = loss if loss is not None else torch.nn.CrossEntropyLoss()
            self.optimizer = _torch_optimizer_for(model, optimizer, lr)
            self.device = _model_device_dtype(model)[0]
        self.mode = label_mode(framework, self.loss)

    def forward(self, xb):
        if self.framework == "keras":
            return _first_output(self.model(xb, training=True))
        return _first_output(self.model(xb))

    def loss_value(self, out, yb, training=True):
        if self.framework == "keras":
            return self.compute(x=None, y=yb, y_pred=out, sample_weight=None, training=training)
        return self.loss(out, yb)

    def backward(self, loss):
        if self.framework == "keras":
            if self.reset_grads:
                self.model.zero_grad(set_to_none=True)
            if self.optimizer is not None:
                loss = self.optimizer.scale_loss(loss)
            if loss.requires_grad:  # every weight frozen: as in Keras' fit, nothing to update
                loss.backward()
        else:
            if self.reset_grads:
                self.optimizer.zero_grad(set_to_none=True)
            if loss.requires_grad:
                loss.backward()

    def update(self):
        torch = _torch()
        if self.framework == "keras":
            weights = self.model.trainable_weights[:]
            grads = [v.value.grad for v in weights]
            with torch.no_grad():
                self.optimizer.apply(grads, weights)
        else:
            self.optimizer.step()

    @property
    def lr(self) -> float | None:
        return current_lr(self.model, self.optimizer)


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
    ``user_schedule``: the user's torch learning-rate scheduler as ``lr_schedules.replay`` gives
    it, followed over this run in proportion to its length, unless ``lr`` or ``lr_schedule`` sets
    the rate.

    Returns ``{"loss": per step, "epoch_loss", "acc" (running training accuracy per epoch),
    "epoch_samples" (samples each epoch actually trained on),
    "val_acc", "val_loss" (per epoch, when ``val`` is given), "lr": per step, "steps",
    "seconds", "stopped": None | "max_steps" | "time" | "nonfinite" | "callback",
    "nonfinite_step"}``.
    """
    torch = _torch()
    framework = framework_of(model)
    n = _length(x)
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
        if framework == "keras":
            _reseed_keras_generators(model, seed)
        if lr is None and lr_schedule is not None and framework == "keras":
            # a Keras optimizer built on a LearningRateSchedule refuses a new rate: the copy
            # gets one of the same class and settings with a plain rate, set at every step
            lr = float(lr_schedule(0))
        trainer = _Trainer(model, framework, loss, optimizer, lr, reset_grads)
        history["optimizer"] = describe_optimizer(trainer.optimizer, model)
        plan = None
        if user_schedule and lr is None and lr_schedule is None and framework == "torch":
            from .lr_schedules import follow

            planned = max(1, int(epochs)) * math.ceil(n / batch_size)
            plan = follow(user_schedule, min(planned, max_steps) if max_steps else planned)
        history["scheduled"] = plan is not None
        rng = np.random.default_rng(seed)
        aug_rng = np.random.default_rng([seed, 1])
        step = 0
        n_out = None
        modes = _torch_modes(model, True) if framework == "torch" else contextlib.nullcontext()
        with modes:
            for epoch in range(max(1, int(epochs))):
                order = rng.permutation(n)
                losses, correct, seen = [], 0, 0
                for b in range(0, n, batch_size):
                    idx = order[b:b + batch_size]
                    xb = _take(x, idx)
                    if augment is not None:
                        xb = augment(to_numpy(xb), aug_rng)
                    if lr_schedule is not None:
                        _set_lr(trainer, float(lr_schedule(step)))
                    elif plan is not None:
                        from .lr_schedules import apply

                        apply(trainer.optimizer, plan(step))
                    xin = _as_input(model, framework, xb)
                    if forward_context is not None:
                        with forward_context(step):
                            out = trainer.forward(xin)
                    else:
                        out = trainer.forward(xin)
                    if n_out is None:
                        n_out = int(out.shape[-1]) if out.dim() >= 2 else 1
                    yb_int = None if y_int is None else y_int[idx]
                    yb = _labels_for_loss(framework, trainer.mode,
                                          None if y_np is None else y_np[idx], yb_int, n_out,
                                          trainer.device)
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
                    vacc, vloss = _evaluate(model, framework, trainer, val)
                    history["val_acc"].append(vacc)
                    history["val_loss"].append(vloss)
                if history["stopped"]:
                    break
        history["steps"] = step
    history["seconds"] = time.perf_counter() - start
    return history


def _set_lr(trainer: _Trainer, lr: float) -> None:
    opt = trainer.optimizer
    if trainer.framework == "torch":
        base = opt.param_groups[0]["lr"]  # ratios to the first group, as in _torch_optimizer_for
        for g in opt.param_groups:
            ratio = g.get("_cnndoctor_ratio")
            if ratio is None:
                ratio = (g["lr"] / base) if base else 1.0
                g["_cnndoctor_ratio"] = ratio
            g["lr"] = lr * ratio
    else:
        opt.learning_rate = lr


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


def _evaluate(model, framework, trainer: _Trainer, val: tuple):
    torch = _torch()
    xv, yv = val[0], val[1] if len(val) > 1 else None
    out = predict(model, xv)
    vacc = accuracy(out, yv)
    vloss = None
    if yv is not None:
        try:
            n_out = out.shape[-1] if out.ndim >= 2 else 1
            yb = _labels_for_loss(framework, trainer.mode, to_numpy(yv), integer_labels(yv),
                                  n_out, trainer.device)
            with torch.no_grad():
                if framework == "keras":
                    vloss = float(trainer.loss_value(torch.as_tensor(out), yb, training=False))
                else:
                    vloss = float(trainer.loss(torch.as_tensor(out, device=trainer.device), yb))
        except Exception:
            vloss = None
    return vacc, vloss


def _reseed_keras_generators(model: Any, seed: int) -> None:
    """Give every seeded Keras random layer (dropout with a seed, ...) a state from ``seed``."""
    try:
        layers = model._flatten_layers(include_self=True, recursive=True)
    except Exception:
        return
    for i, layer in enumerate(layers):
        for j, gen in enumerate(getattr(layer, "_seed_generators", []) or []):
            state = getattr(gen, "state", None)
            if state is None:
                continue
            try:
                state.assign(np.asarray([(seed * 7919 + i * 104729 + j) % (2**31 - 1), 0],
                                        dtype=to_numpy(state).dtype))
            except Exception:
                pass


def loss_on(model: Any, x: Any, y: Any, *, loss: Any = None, batch_size: int = 256,
            outputs: np.ndarray | None = None) -> float:
    """The mean loss of ``model`` on (x, y) in inference mode, with the user's loss.

    ``outputs``: the model's raw outputs for ``x`` when already computed (saves a pass).
    """
    torch = _torch()
    framework = framework_of(model)
    out = outputs if outputs is not None else predict(model, x, batch_size=batch_size)
    n_out = out.shape[-1] if out.ndim >= 2 else 1
    if framework == "keras":
        loss_obj = loss if loss is not None else getattr(model, "loss", None)
        if loss_obj is None:
            from .errors import InputError

            raise InputError("the Keras model is not compiled and no loss was given: "
                             "compile it or pass loss=...")
        mode = label_mode(framework, loss_obj)
        yb = _labels_for_loss(framework, mode, to_numpy(y), integer_labels(y), n_out)
        fn = _keras().losses.get(loss_obj) if isinstance(loss_obj, (str, dict)) else loss_obj
        with torch.no_grad():
            value = fn(torch.as_tensor(np.asarray(yb)), torch.as_tensor(out))
        return float(to_numpy(value).mean())
    loss_fn = loss if loss is not None else torch.nn.CrossEntropyLoss()
    mode = label_mode(framework, loss_fn)
    device = _model_device_dtype(model)[0]
    yb = _labels_for_loss(framework, mode, to_numpy(y), integer_labels(y), n_out, device)
    with torch.no_grad():
        value = loss_fn(torch.as_tensor(out, device=device), yb)
    return float(to_numpy(value).mean())


__all__ = ["to_numpy", "predict", "clone", "fit", "output_probabilities", "named_weights",
           "current_lr", "describe_optimizer", "integer_labels", "label_mode", "accuracy",
           "loss_on", "preserved_rng", "seed_everything", "StepInfo", "WeightRef", "framework_of"]
