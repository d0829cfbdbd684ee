"""PyTorch adapter: a ``torch.nn.Module`` (and its loss) in, a framework-neutral ``ModelGraph`` out.

Why it is built this way:

* Many PyTorch models do their nonlinearities, softmax, input scaling and residual additions as
  plain function calls inside ``forward`` (``F.relu(x)``, ``x.softmax(1)``, ``x / 255``,
  ``x + identity``). Walking ``model.modules()`` misses all of them, and those are exactly the
  places where the static checks look for bugs. So the model is read with ``torch.fx`` symbolic
  tracing, which records every call in ``forward`` in execution order, and ``ShapeProp`` runs the
  traced graph on two samples of the example to learn the shapes.
* ``torch.fx`` cannot trace ``forward`` methods whose control flow depends on the data
  (``if x.sum() > 0``) or on shapes (``if x.dim() == 3``). Then the model is run once on the
  example with forward hooks on its leaf modules and a ``TorchFunctionMode`` that sees the
  function calls in between; the description holds only the branch that example took, and a note
  says so. Without an example the modules are listed in registration order, with a note saying
  that function calls inside ``forward`` could not be seen.
* The user's model is never touched: everything runs on a deep copy, in eval mode, under
  ``torch.no_grad()``, so weights, buffers, the train/eval flag and the hooks stay as they were.
"""
from __future__ import annotations

import contextlib
import copy as _copy
import functools
import inspect
import io
import math
import operator
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata
from torch.overrides import TorchFunctionMode

from ...errors import InputError
from ...graph import (
    ACTIVATION, DROPOUT, GLOBAL_POOL, LOG_SOFTMAX, MERGE, NORM, OTHER, POOL, RESCALE, SHAPE,
    SOFTMAX, WEIGHTED, Layer, ModelGraph,
)
from .losses import describe_object, parse_torch_loss
from .naming import CONTAINERS, module_source

__all__ = ["describe_torch", "parse_torch_loss"]

#: Samples of the example run through the copy to learn shapes. Two rather than one because a
#: batch of one changes shapes in common code (``x.squeeze()`` drops the batch axis too); more
#: would only add compute (about 7 s for a 40-block 224x224 CNN on two CPU cores, measured here).
EXAMPLE_SAMPLES = 2
#: Longest error text quoted in a note, so that a note stays one readable line.
NOTE_ERROR_CHARS = 160


# ---------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------
def describe_torch(model: nn.Module, loss: Any = None, example: Any = None) -> ModelGraph:
    """Describe a ``torch.nn.Module`` (and its loss) as a ``ModelGraph``.

    ``example`` is one batch of inputs, NCHW, as a numpy array or a tensor (or a tuple of them for
    models with several inputs); only its first ``EXAMPLE_SAMPLES`` samples are run, on a copy.
    ``loss`` is anything ``parse_torch_loss`` understands. A loss object that is not callable
    raises ``InputError``; a custom loss function whose kind cannot be read leaves ``loss`` as
    None with a note, because a custom loss is legitimate and the other checks still apply.
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"expected a torch.nn.Module, got {type(model).__qualname__}.")
    notes: list[str] = []
    input_shape = _example_input_shape(example)

    try:
        work = _copy.deepcopy(model)
    except Exception as exc:  # e.g. a model holding a lock, a file handle or a generator
        work = None
        notes.append(f"the model could not be copied ({_short(exc)}), so it was only traced "
                     "symbolically, never run: layer shapes are unknown.")
    if work is not None:
        work.eval()
        _drop_user_hooks(work)

    args = None
    if work is not None and example is not None:
        try:
            args = _example_args(example, work)
        except Exception as exc:
            notes.append(f"the example could not be turned into tensors ({_short(exc)}): "
                         "layer shapes are unknown.")
    elif example is None:
        notes.append("no example input was given: layer shapes are unknown.")

    root = work if work is not None else model
    if _module_fields(root)[1]:  # a bare nn.Conv2d / nn.Linear: describe it as one layer
        root = nn.Sequential(OrderedDict([(type(root).__name__, root)]))
    try:
        layers = _describe_with_fx(root, args, notes)
    except Exception as exc:
        reason = _short(exc)
        if args is not None:
            layers = _describe_by_running(root, args, notes, reason)
        else:
            layers = _describe_by_walking(root)
            notes.append(
                f"forward could not be traced symbolically ({reason}) and no example was given "
                "to run it on: layers are listed from the model's modules in registration order, "
                "so functions called inside forward (F.relu, torch.softmax, x / 255, x + y, ...) "
                "could not be seen and connections are assumed to follow that order.")

    counted = sum(layer.params for layer in layers)
    total = sum(p.numel() for p in _unique_params(model) if not _uninitialized(p))
    if counted < total:
        notes.append(f"{total - counted:,} of the model's {total:,} parameters are not used by "
                     "any layer that forward ran (unused modules or tensors cnndoctor could not "
                     "attribute); they are left out of the layer parameter counts.")

    loss_info = None
    if loss is not None:
        try:
            loss_info = parse_torch_loss(loss)
        except InputError:
            if not callable(loss):
                raise
            notes.append(f"the loss {describe_object(loss)} is a custom function that calls "
                         "none of the torch losses cnndoctor knows, so what it expects from the "
                         "model (logits or probabilities) is unknown.")

    return ModelGraph(framework="torch", name=type(model).__name__, layers=layers,
                      input_shape=input_shape, data_format="channels_first", loss=loss_info,
                      notes=notes)


def _drop_user_hooks(work: nn.Module) -> None:
    """Remove the user's forward hooks from the copy, so that running it cannot reach their state.

    A deep copy keeps the hooks, and a hook's closure may append to the user's lists or log to
    their files. Hooks that torch itself installs (old-style weight_norm computes the weight in
    one) are kept, since forward needs them.
    """
    for m in work.modules():
        for hooks, flags in ((m._forward_pre_hooks, ("_forward_pre_hooks_with_kwargs",)),
                             (m._forward_hooks, ("_forward_hooks_with_kwargs",
                                                 "_forward_hooks_always_called"))):
            for hook_id, hook in list(hooks.items()):
                owner = getattr(hook, "__module__", None) or type(hook).__module__
                if not str(owner).startswith("torch."):
                    del hooks[hook_id]
                    for flag in flags:
                        getattr(m, flag, {}).pop(hook_id, None)


# ---------------------------------------------------------------------------------------------
# Example handling
# ---------------------------------------------------------------------------------------------
def _example_items(example: Any) -> list:
    """The example as a list of inputs: a tuple (or list) of arrays means several inputs."""
    if isinstance(example, (tuple, list)) and example and all(
            isinstance(e, (torch.Tensor, np.ndarray)) for e in example):
        return list(example)
    return [example]


def _example_input_shape(example: Any) -> tuple | None:
    if example is None:
        return None
    try:
        first = _example_items(example)[0]
        shape = tuple(first.shape) if hasattr(first, "shape") else np.shape(first)
        return tuple(int(d) for d in shape[1:])
    except Exception:
        return None


def _example_args(example: Any, work: nn.Module) -> tuple:
    """Copies of the first samples of the example, as tensors the copy of the model accepts.

    Copies, so that a forward that edits its input in place (``x.div_(255)``) cannot reach the
    user's array. Integer images (uint8 0..255, three or more axes) become floating point, since
    a convolution refuses integers; integer inputs with fewer axes (token ids) are kept.
    """
    ref = next((t for t in list(work.parameters()) + list(work.buffers())
                if t.is_floating_point() and not _uninitialized(t)), None)
    dtype = ref.dtype if ref is not None else torch.float32
    device = ref.device if ref is not None else torch.device("cpu")
    out = []
    for item in _example_items(example):
        if isinstance(item, torch.Tensor):
            t = item.detach()[:EXAMPLE_SAMPLES].clone()
        else:
            t = torch.tensor(np.array(np.asarray(item)[:EXAMPLE_SAMPLES]))
        if t.is_floating_point():
            t = t.to(dtype)
        elif t.dtype != torch.bool and t.ndim >= 3:
            t = t.to(dtype)
        out.append(t.to(device))
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Values flowing through forward
# ---------------------------------------------------------------------------------------------
DATA = "data"  # computed from the model's inputs: what layers consume and produce
PARAM = "param"  # a parameter, or computed only from parameters (self.weight.t())
CONST = "const"  # a number, buffer or tensor that does not depend on the inputs
META = "meta"  # information about a data tensor that is not a tensor (x.size(0), x.shape)
STAT = "stat"  # a statistic of the raw input used to normalize it (x.mean(), x.std())


@dataclass
class _Value:
    """What the builder knows about one value in forward (an fx node or a live tensor)."""

    cat: str
    producers: tuple = ()  # names of the layers that produced it (DATA)
    pre: bool = False  # DATA only: the raw input, reached through reshapes and rescales only
    params: tuple = ()  # PARAM: the parameter tensors it is made of
    value: Any = None  # CONST: the number or tensor, when known
    shape: tuple | None = None  # full shape including the batch axis, when known
    tuple_out: bool = False  # the producer returned a tuple (chunk, LSTM, max with dim)
    label: str | None = None  # how the user wrote it, e.g. "self.mean"


def _leaves(obj: Any) -> Iterable:
    """Every argument inside nested tuples, lists, dicts and slices, in order."""
    if isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _leaves(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _leaves(item)
    elif isinstance(obj, slice):
        yield from _leaves((obj.start, obj.stop, obj.step))
    else:
        yield obj


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any = None) -> Any:
    if name in kwargs:
        return kwargs[name]
    if len(args) > index:
        return args[index]
    return default


def _prod(values: Iterable[int]) -> int:
    return int(math.prod(int(v) for v in values))


def _uninitialized(t: torch.Tensor) -> bool:
    return isinstance(t, nn.parameter.UninitializedTensorMixin)


def _unique_params(module: nn.Module) -> list:
    seen, out = set(), []
    for p in module.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def _short(exc: BaseException) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= NOTE_ERROR_CHARS else text[:NOTE_ERROR_CHARS - 3] + "..."


# ---------------------------------------------------------------------------------------------
# Function names: what the user called
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _function_table() -> dict:
    """id(callable) -> (name, how the user spells its namespace). F first: users write F.relu."""
    table: dict[int, tuple[str, str]] = {}
    for namespace, head in ((F, "F."), (torch, "torch."), (torch.special, "torch.special."),
                            (operator, "operator.")):
        for name in dir(namespace):
            if name.startswith("_"):
                continue
            obj = getattr(namespace, name, None)
            if callable(obj) and not isinstance(obj, type):
                table.setdefault(id(obj), (name, head))
    return table


def _fn_identity(target: Any) -> tuple[str, str]:
    """(name, namespace as the user writes it): ("relu", "F."), ("softmax", "x."), ...."""
    if isinstance(target, str):  # fx call_method
        return target, "x."
    found = _function_table().get(id(target))
    if found is not None:
        return found
    name = getattr(target, "__name__", None) or type(target).__name__
    qual = getattr(target, "__qualname__", "") or ""
    if qual.startswith(("TensorBase.", "Tensor.", "_TensorBase.")):
        return name, "x."
    if target is getattr:
        return "getattr", ""
    return name, ""


_REFLECTED = {"radd": "add", "rmul": "mul", "rsub": "sub", "rtruediv": "div", "rdiv": "div",
              "rmatmul": "matmul", "rpow": "pow", "rfloordiv": "floordiv"}
_ALIASES = {"truediv": "div", "true_divide": "div", "divide": "div", "multiply": "mul",
            "subtract": "sub", "concat": "cat", "concatenate": "cat", "iadd": "add",
            "isub": "sub", "imul": "mul", "itruediv": "div", "idiv": "div", "expit": "sigmoid",
            "swapdims": "swapaxes", "moveaxis": "movedim", "absolute": "abs",
            "get": "getattr_value"}  # Tensor.__get__: attribute access such as x.data, x.T


def _canonical(name: str) -> tuple[str, bool]:
    """Canonical operation name and whether the operands come reflected (``1 - x`` as rsub)."""
    swapped = False
    if name.startswith("__") and name.endswith("__"):
        name = name[2:-2]
        if name in _REFLECTED:
            name, swapped = _REFLECTED[name], True
    elif name.endswith("_") and not name.endswith("__"):
        name = name[:-1]  # in place: relu_ -> relu
    if name == "rsub":  # torch.rsub(x, c) computes c - x
        name, swapped = "sub", True
    return _ALIASES.get(name, name), swapped


_OPERATOR_SYMBOLS = {"add": "+", "sub": "-", "mul": "*", "div": "/", "floordiv": "//",
                     "matmul": "@", "pow": "**", "mod": "%"}

# Elementwise nonlinearities, by canonical function name -> activation name in graph.py terms.
_ACTIVATION_FNS = {
    "relu": "relu", "relu6": "relu6", "leaky_relu": "leaky_relu", "elu": "elu", "selu": "selu",
    "celu": "celu", "gelu": "gelu", "silu": "silu", "mish": "mish", "sigmoid": "sigmoid",
    "tanh": "tanh", "softplus": "softplus", "softsign": "softsign", "hardsigmoid": "hard_sigmoid",
    "hardswish": "hard_swish", "prelu": "prelu", "rrelu": "rrelu", "hardtanh": "hardtanh",
    "logsigmoid": "log_sigmoid", "glu": "glu", "threshold": "threshold",
    "tanhshrink": "tanhshrink", "softshrink": "softshrink", "hardshrink": "hardshrink",
}
_SOFTMAX_FNS = {"softmax", "softmin"}
_CONV_FNS = {"conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
             "conv_transpose3d"}
_MATMUL_FNS = {"matmul", "mm", "bmm"}
_POOL_FNS = {
    "max_pool1d": "max", "max_pool2d": "max", "max_pool3d": "max",
    "max_pool1d_with_indices": "max", "max_pool2d_with_indices": "max",
    "max_pool3d_with_indices": "max", "avg_pool1d": "avg", "avg_pool2d": "avg",
    "avg_pool3d": "avg", "lp_pool1d": "lp", "lp_pool2d": "lp", "lp_pool3d": "lp",
    "fractional_max_pool2d": "max", "fractional_max_pool3d": "max",
}
_ADAPTIVE_POOL_FNS = {
    "adaptive_avg_pool1d": "avg", "adaptive_avg_pool2d": "avg", "adaptive_avg_pool3d": "avg",
    "adaptive_max_pool1d": "max", "adaptive_max_pool2d": "max", "adaptive_max_pool3d": "max",
    "adaptive_max_pool1d_with_indices": "max", "adaptive_max_pool2d_with_indices": "max",
    "adaptive_max_pool3d_with_indices": "max",
}
_REDUCE_FNS = {"mean": "avg", "nanmean": "avg", "amax": "max", "max": "max", "sum": "sum",
               "amin": "min", "min": "min", "logsumexp": "logsumexp"}
#: Statistics that, taken of the raw input, only serve to normalize it (x - x.mean()) / x.std().
_STAT_FNS = set(_REDUCE_FNS) | {"std", "var", "norm", "std_mean", "var_mean", "aminmax",
                                "median", "quantile"}
_SHAPE_FNS = {"flatten", "unflatten", "view", "view_as", "reshape", "reshape_as", "squeeze",
              "unsqueeze", "permute", "transpose", "t", "swapaxes", "movedim", "expand",
              "expand_as", "repeat", "tile", "narrow", "select", "getitem", "chunk", "split",
              "unbind", "tensor_split", "pixel_shuffle", "pixel_unshuffle", "channel_shuffle",
              "identity", "ravel"}
#: Calls that return the same numbers in another dtype, device or memory layout.
_CAST_FNS = {"float", "double", "half", "bfloat16", "to", "type", "type_as", "contiguous",
             "clone", "detach", "cpu", "cuda", "requires_grad", "long", "int", "getattr_value"}
#: Tensor attributes that are tensors again (fx records ``x.T`` as ``getattr(x, "T")``).
_TENSOR_ATTRIBUTES = {"T", "mT", "H", "mH", "data", "real"}
#: Calls whose result describes a tensor instead of computing from it.
_META_FNS = {"size", "dim", "numel", "nelement", "ndimension", "item", "tolist", "getattr",
             "len", "is_contiguous", "get_device", "stride", "data_ptr", "element_size"}
_DROPOUT_FNS = {"dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
                "feature_alpha_dropout"}
_NORM_FNS = {"batch_norm", "layer_norm", "group_norm", "instance_norm", "local_response_norm",
             "normalize", "rms_norm"}
_MERGE_FNS = {"cat", "stack", "hstack", "vstack", "dstack", "column_stack"}
_ARITHMETIC_FNS = {"add", "sub", "mul", "div", "neg", "floordiv", "pow", "mod", "maximum",
                   "minimum", "addcmul", "addcdiv"}
#: Functions that return several tensors, for when no example run tells.
_TUPLE_FNS = {"chunk", "split", "unbind", "tensor_split", "topk", "sort", "aminmax", "std_mean",
              "var_mean", "max_pool1d_with_indices", "max_pool2d_with_indices",
              "max_pool3d_with_indices", "adaptive_max_pool2d_with_indices"}


# ---------------------------------------------------------------------------------------------
# Modules: what kind of layer each torch.nn class is
# ---------------------------------------------------------------------------------------------
_CONV_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                 nn.ConvTranspose3d)
# Ordered: ReLU6 is a Hardtanh subclass and must be found first.
_ACTIVATION_MODULES = [
    (nn.ReLU6, "relu6"), (nn.ReLU, "relu"), (nn.LeakyReLU, "leaky_relu"), (nn.PReLU, "prelu"),
    (nn.RReLU, "rrelu"), (nn.ELU, "elu"), (nn.CELU, "celu"), (nn.SELU, "selu"),
    (nn.GELU, "gelu"), (nn.SiLU, "silu"), (nn.Mish, "mish"), (nn.Sigmoid, "sigmoid"),
    (nn.Tanh, "tanh"), (nn.Softplus, "softplus"), (nn.Softsign, "softsign"),
    (nn.Hardsigmoid, "hard_sigmoid"), (nn.Hardswish, "hard_swish"), (nn.Hardtanh, "hardtanh"),
    (nn.LogSigmoid, "log_sigmoid"), (nn.Tanhshrink, "tanhshrink"),
    (nn.Softshrink, "softshrink"), (nn.Hardshrink, "hardshrink"), (nn.Threshold, "threshold"),
    (nn.GLU, "glu"),
]
_ADAPTIVE_POOL_MODULES = [
    (nn.AdaptiveAvgPool1d, "avg"), (nn.AdaptiveAvgPool2d, "avg"), (nn.AdaptiveAvgPool3d, "avg"),
    (nn.AdaptiveMaxPool1d, "max"), (nn.AdaptiveMaxPool2d, "max"), (nn.AdaptiveMaxPool3d, "max"),
]
_POOL_MODULES = [
    (nn.MaxPool1d, "max"), (nn.MaxPool2d, "max"), (nn.MaxPool3d, "max"),
    (nn.AvgPool1d, "avg"), (nn.AvgPool2d, "avg"), (nn.AvgPool3d, "avg"),
    (nn.LPPool1d, "lp"), (nn.LPPool2d, "lp"), (nn.FractionalMaxPool2d, "max"),
    (nn.FractionalMaxPool3d, "max"),
]
_SHAPE_MODULES = (nn.Flatten, nn.Unflatten, nn.Identity, nn.PixelShuffle, nn.PixelUnshuffle,
                  nn.ChannelShuffle)
_DROPOUT_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                    nn.FeatureAlphaDropout)
_NORM_MODULES = tuple(c for c in (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.InstanceNorm1d,
    nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
    getattr(nn, "RMSNorm", None)) if c is not None)


def _all_ones(size: Any) -> bool:
    items = size if isinstance(size, (tuple, list)) else (size,)
    return all(s == 1 for s in items)


def _module_fields(m: nn.Module) -> tuple[dict, bool]:
    """(Layer fields, whether the class is one cnndoctor knows) for one module."""
    if isinstance(m, _CONV_MODULES):
        groups = int(m.groups)
        in_ch, out_ch = int(m.in_channels), int(m.out_channels)
        kernel = tuple(int(k) for k in m.kernel_size)
        depthwise = groups > 1 and groups == in_ch
        return dict(kind=WEIGHTED, op="depthwise_conv" if depthwise else "conv",
                    fan_in=_prod(kernel) * (in_ch // groups), units=out_ch,
                    kernel_size=kernel), True
    if isinstance(m, nn.Linear):
        return dict(kind=WEIGHTED, op="dense", fan_in=int(m.in_features),
                    units=int(m.out_features)), True
    for cls, name in _ACTIVATION_MODULES:
        if isinstance(m, cls):
            return dict(kind=ACTIVATION, activation=name), True
    if isinstance(m, (nn.Softmax, nn.Softmax2d, nn.Softmin)):
        return dict(kind=SOFTMAX, activation="softmax"), True
    if isinstance(m, nn.LogSoftmax):
        return dict(kind=LOG_SOFTMAX, activation="log_softmax"), True
    for cls, op in _ADAPTIVE_POOL_MODULES:
        if isinstance(m, cls):
            return dict(kind=GLOBAL_POOL if _all_ones(m.output_size) else POOL, op=op), True
    for cls, op in _POOL_MODULES:
        if isinstance(m, cls):
            return dict(kind=POOL, op=op), True
    if isinstance(m, _SHAPE_MODULES):
        return dict(kind=SHAPE), True
    if isinstance(m, _DROPOUT_MODULES):
        return dict(kind=DROPOUT, rate=float(m.p)), True
    if isinstance(m, _NORM_MODULES):
        return dict(kind=NORM), True
    return dict(kind=OTHER), False


def _is_leaf(m: nn.Module) -> bool:
    """A module described as one layer: a known class, a torch.nn building block, or no children."""
    if _module_fields(m)[1]:
        return True
    if isinstance(m, CONTAINERS):
        return False
    if type(m).__module__.startswith(("torch.nn", "torch.ao.nn")):
        return True
    return next(m.children(), None) is None


def _leaf_modules(root: nn.Module) -> list[tuple[str, nn.Module]]:
    """Leaf modules in registration order, nested containers flattened, each instance once."""
    out, seen = [], set()

    def walk(m: nn.Module, prefix: str) -> None:
        if id(m) in seen:
            return
        seen.add(id(m))
        if _is_leaf(m):
            out.append((prefix, m))
            return
        for name, child in m.named_children():
            walk(child, f"{prefix}.{name}" if prefix else name)

    walk(root, "")
    return out


# ---------------------------------------------------------------------------------------------
# The builder: calls in execution order in, layers out (shared by tracing and running)
# ---------------------------------------------------------------------------------------------
class _Builder:
    """Turns the calls of one forward pass, in order, into ``Layer`` objects.

    Values are keyed by fx node (tracing) or by ``id(tensor)`` (running); the tensors are kept
    alive so that an id is never reused for another tensor during the pass.
    """

    def __init__(self, root: nn.Module, chain_unknown: bool = False):
        self.param_ids = {id(p) for p in root.parameters()}
        self.values: dict = {}
        self.keepalive: list = []
        self.layers: list[Layer] = []
        self.chain_unknown = chain_unknown  # hooks only: unseen tensors come from the last layer
        self._names: set[str] = set()
        self._name_counts: Counter = Counter()
        self._seen_params: set[int] = set()
        self._module_calls: Counter = Counter()

    # -- values ---------------------------------------------------------------------------------
    @staticmethod
    def key(v: Any) -> Any:
        return v if isinstance(v, torch.fx.Node) else id(v)

    def store(self, key: Any, value: _Value, obj: Any = None) -> None:
        """Remember ``value`` under ``key``; for a live output, under every tensor in it."""
        if obj is None:
            self.values[key] = value
            return
        self.keepalive.append(obj)
        for t in _leaves(obj if isinstance(obj, (tuple, list)) else (obj,)):
            if isinstance(t, torch.Tensor):
                self.values[id(t)] = value

    def lookup(self, v: Any) -> _Value | None:
        if isinstance(v, torch.fx.Node):
            return self.values.get(v)
        if isinstance(v, torch.Tensor):
            found = self.values.get(id(v))
            if found is not None:
                return found
            if id(v) in self.param_ids:
                return _Value(PARAM, params=(v,), shape=tuple(v.shape))
            if self.chain_unknown and self.layers:
                return _Value(DATA, producers=(self.layers[-1].name,), shape=tuple(v.shape))
            return _Value(CONST, value=v, shape=tuple(v.shape))
        if isinstance(v, bool) or v is None:
            return None  # flags such as inplace=False, training=False
        if isinstance(v, (int, float)):
            return _Value(CONST, value=v)
        return None

    def operands(self, args: tuple, kwargs: dict) -> tuple[list, list]:
        """(all known operands, distinct DATA operands) as (raw, _Value) pairs."""
        ops, data, seen = [], [], set()
        for raw in _leaves((args, kwargs)):
            value = self.lookup(raw)
            if value is None:
                continue
            ops.append((raw, value))
            if value.cat == DATA:
                k = self.key(raw)
                if k not in seen:
                    seen.add(k)
                    data.append((raw, value))
        return ops, data

    # -- entry points -----------------------------------------------------------------------------
    def input(self, key: Any, shape: tuple | None, obj: Any = None) -> None:
        self.store(key, _Value(DATA, pre=True, shape=shape), obj)

    def attribute(self, key: Any, target: str, obj: Any, shape: tuple | None) -> None:
        """An fx get_attr: a parameter, a buffer or a constant tensor of the module."""
        label = f"self.{target}"
        if isinstance(obj, torch.Tensor) and id(obj) in self.param_ids:
            self.store(key, _Value(PARAM, params=(obj,), shape=shape, label=label))
        else:
            self.store(key, _Value(CONST, value=obj, shape=shape, label=label))

    def module_call(self, key: Any, module: nn.Module, qualname: str, args: tuple, kwargs: dict,
                    out_shape: tuple | None, out_tuple: bool | None, obj: Any = None) -> None:
        _, data = self.operands(args, kwargs)
        base = qualname or type(module).__name__
        self._module_calls[base] += 1
        count = self._module_calls[base]
        name = self._unique(base if count == 1 else f"{base}#{count}")
        fields, _ = _module_fields(module)
        if out_tuple is None:  # no example run: modules known to return (output, state)
            out_tuple = isinstance(module, (nn.RNNBase, nn.MultiheadAttention))
        layer = self._add_layer(name, module_source(module), fields, data,
                                list(module.parameters()), out_shape)
        pre = fields["kind"] == SHAPE and bool(data) and all(v.pre for _, v in data)
        self.store(key, _Value(DATA, producers=(layer.name,), pre=pre, shape=out_shape,
                               tuple_out=bool(out_tuple)), obj)

    def function_call(self, key: Any, name: str, head: str, args: tuple, kwargs: dict,
                      out_shape: tuple | None, out_is_tensor: bool | None,
                      out_tuple: bool | None, obj: Any = None) -> None:
        canon, swapped = _canonical(name)
        if swapped and len(args) >= 2:
            args = (args[1], args[0]) + tuple(args[2:])
        ops, data = self.operands(args, kwargs)
        if not data:
            self.store(key, self._derived(ops, out_shape), obj)
            return
        first = data[0][1]
        if canon == "getattr" and (out_is_tensor or (out_is_tensor is None and len(args) > 1
                                                     and args[1] in _TENSOR_ATTRIBUTES)):
            canon = "getattr_value"  # x.T, x.data: the same numbers, a pass-through
        elif out_is_tensor is False or canon in _META_FNS:
            self.store(key, _Value(META), obj)
            return
        if out_tuple is None:
            out_tuple = canon in _TUPLE_FNS or bool(kwargs.get("return_indices")) or (
                canon in ("max", "min", "median", "mode", "kthvalue")
                and (len(args) > 1 or "dim" in kwargs))
        if canon in _CAST_FNS or (canon == "getitem" and first.tuple_out):
            self.store(key, _Value(DATA, producers=first.producers, pre=first.pre,
                                   shape=out_shape if out_shape is not None else first.shape,
                                   tuple_out=bool(out_tuple)), obj)
            return
        if canon in _STAT_FNS and all(v.pre for _, v in data):
            self.store(key, _Value(STAT, shape=out_shape), obj)
            return
        fields, params = self._classify(canon, args, kwargs, ops, data, out_shape)
        source = self._source(canon, name, head, args, data)
        base = source if head in ("F.", "torch.", "torch.special.", "x.") else canon
        layer = self._add_layer(self._unique(base), source, fields, data, params, out_shape)
        pre = fields["kind"] in (SHAPE, RESCALE) and all(v.pre for _, v in data)
        self.store(key, _Value(DATA, producers=(layer.name,), pre=pre, shape=out_shape,
                               tuple_out=bool(out_tuple)), obj)

    def finish(self, outputs: Any) -> list[Layer]:
        """The layers that feed the model's output, in execution order.

        Side computations whose result forward never returns (the test of an ``if``, an unused
        auxiliary head) are dropped: they would otherwise look like extra outputs or dangling
        branches to the checks.
        """
        _, data = self.operands((outputs,), {})
        needed = {p for _, v in data for p in v.producers}
        if not needed:
            return self.layers
        for layer in reversed(self.layers):
            if layer.name in needed:
                needed.update(layer.inputs)
        return [layer for layer in self.layers if layer.name in needed]

    # -- helpers -----------------------------------------------------------------------------------
    @staticmethod
    def _derived(ops: list, out_shape: tuple | None) -> _Value:
        """The value of a call with no data operand: from parameters, statistics or constants."""
        cats = {v.cat for _, v in ops}
        if PARAM in cats:
            params = tuple(p for _, v in ops if v.cat == PARAM for p in v.params)
            return _Value(PARAM, params=params, shape=out_shape)
        if STAT in cats:
            return _Value(STAT, shape=out_shape)
        if META in cats:
            return _Value(META)
        return _Value(CONST, shape=out_shape)

    def _unique(self, base: str) -> str:
        name = base
        while name in self._names:
            self._name_counts[base] += 1
            name = f"{base}_{self._name_counts[base]}"
        self._names.add(name)
        return name

    def _add_layer(self, name: str, source: str, fields: dict, data: list, params: list,
                   out_shape: tuple | None) -> Layer:
        count = trainable = 0
        for p in params:
            if id(p) in self._seen_params or _uninitialized(p):
                continue  # shared weights count once, at their first use
            self._seen_params.add(id(p))
            count += p.numel()
            trainable += p.numel() if p.requires_grad else 0
        inputs: list[str] = []
        for _, v in data:
            for producer in v.producers:
                if producer not in inputs:
                    inputs.append(producer)
        in_shape = data[0][1].shape if data else None
        fields = dict(fields)
        if fields["kind"] == POOL and _is_global(in_shape, out_shape):
            fields["kind"] = GLOBAL_POOL  # e.g. F.avg_pool2d(x, x.size()[2:]) or AvgPool2d(7)
        layer = Layer(name=name, source=source, params=int(count), trainable_params=int(trainable),
                      input_shape=_drop_batch(in_shape), output_shape=_drop_batch(out_shape),
                      inputs=inputs, **fields)
        self.layers.append(layer)
        return layer

    def _source(self, canon: str, name: str, head: str, args: tuple, data: list) -> str:
        """What the user wrote: "F.relu", "x.softmax", "torch.flatten", "x / 255", "x + y"."""
        if head in ("F.", "torch.", "torch.special.", "x."):
            return head + name
        symbol = _OPERATOR_SYMBOLS.get(canon)
        if symbol and len(args) >= 2:
            left, right = (self._operand_text(a, data) for a in args[:2])
            return f"{left} {symbol} {right}"
        if canon == "neg":
            return "-x"
        if canon == "getitem":
            return "x[...]"
        return head + name if head else name

    def _operand_text(self, raw: Any, data: list) -> str:
        for i, (other, _) in enumerate(data):
            if other is raw:
                return "xyzuvw"[i] if i < 6 else f"x{i}"
        if isinstance(raw, bool):
            return str(raw)
        if isinstance(raw, (int, float)):
            return f"{raw:g}" if isinstance(raw, float) else str(raw)
        value = self.lookup(raw)
        if value is not None and value.label:
            return value.label
        return "c"

    def _classify(self, canon: str, args: tuple, kwargs: dict, ops: list, data: list,
                  out_shape: tuple | None) -> tuple[dict, list]:
        """Layer fields for a function call on data, and the parameters it uses."""
        param_values = [v for _, v in ops if v.cat == PARAM]
        params = [p for v in param_values for p in v.params]
        in_shape = data[0][1].shape
        if canon in _ACTIVATION_FNS:
            return dict(kind=ACTIVATION, activation=_ACTIVATION_FNS[canon]), params
        if canon in _SOFTMAX_FNS:
            return dict(kind=SOFTMAX, activation="softmax"), params
        if canon == "log_softmax":
            return dict(kind=LOG_SOFTMAX, activation="log_softmax"), params
        if canon in _CONV_FNS:
            return self._conv_fields(canon, args, kwargs), params
        if canon in ("linear", "addmm") or canon in _MATMUL_FNS:
            return self._dense_fields(canon, args, kwargs, data), params
        if canon in _POOL_FNS:
            return dict(kind=POOL, op=_POOL_FNS[canon]), params
        if canon in _ADAPTIVE_POOL_FNS:
            size = _arg(args, kwargs, 1, "output_size")
            kind = GLOBAL_POOL if size is not None and _all_ones(size) else POOL
            return dict(kind=kind, op=_ADAPTIVE_POOL_FNS[canon]), params
        if canon in ("max", "min") and len(data) >= 2:  # torch.max(a, b): elementwise, joins
            return dict(kind=MERGE), params
        if canon in _REDUCE_FNS:
            return dict(kind=_reduction_kind(in_shape, out_shape, _arg(args, kwargs, 1, "dim")),
                        op=_REDUCE_FNS[canon]), params
        if canon in _SHAPE_FNS:
            return dict(kind=SHAPE), params
        if canon in _DROPOUT_FNS:
            rate = _arg(args, kwargs, 1, "p", 0.5)
            rate = float(rate) if isinstance(rate, (int, float)) else None
            return dict(kind=DROPOUT, rate=rate), params
        if canon in _NORM_FNS:
            return dict(kind=NORM), params
        if canon in _MERGE_FNS:
            return dict(kind=MERGE if len(data) >= 2 else SHAPE), params
        if canon in _ARITHMETIC_FNS:
            return self._arithmetic_fields(canon, args, ops, data), params
        return dict(kind=OTHER), params

    def _param_shape(self, raw: Any) -> tuple | None:
        value = self.lookup(raw)
        if value is None or value.cat != PARAM:
            return None
        return value.shape

    def _conv_fields(self, canon: str, args: tuple, kwargs: dict) -> dict:
        w = self._param_shape(_arg(args, kwargs, 1, "weight"))
        if not w or len(w) < 3:
            return dict(kind=OTHER)  # weights computed from the data: not a learned filter
        groups = _arg(args, kwargs, 6, "groups", 1)
        groups = int(groups) if isinstance(groups, int) else 1
        kernel = tuple(int(k) for k in w[2:])
        if canon.startswith("conv_transpose"):  # weight: (in, out / groups, *kernel)
            in_ch, out_ch = int(w[0]), int(w[1]) * groups
        else:  # weight: (out, in / groups, *kernel)
            in_ch, out_ch = int(w[1]) * groups, int(w[0])
        depthwise = groups > 1 and groups == in_ch
        return dict(kind=WEIGHTED, op="depthwise_conv" if depthwise else "conv",
                    fan_in=_prod(kernel) * (in_ch // groups), units=out_ch, kernel_size=kernel)

    def _dense_fields(self, canon: str, args: tuple, kwargs: dict, data: list) -> dict:
        if canon == "linear":  # F.linear(x, weight (out, in), bias)
            w = self._param_shape(_arg(args, kwargs, 1, "weight"))
            if w and len(w) == 2:
                return dict(kind=WEIGHTED, op="dense", fan_in=int(w[1]), units=int(w[0]))
            return dict(kind=OTHER)
        # x @ W, torch.mm(x, W), torch.addmm(b, x, W): W is (in, out)
        operands = args[1:3] if canon == "addmm" else args[:2]
        for raw in operands:
            w = self._param_shape(raw)
            if w and len(w) >= 2:
                return dict(kind=WEIGHTED, op="dense", fan_in=int(w[-2]), units=int(w[-1]))
        return dict(kind=MERGE if len(data) >= 2 else OTHER)

    def _arithmetic_fields(self, canon: str, args: tuple, ops: list, data: list) -> dict:
        """x + y joins branches; x / 255 on the raw input rescales it; x * gamma is OTHER."""
        if len(data) >= 2:
            return dict(kind=MERGE)
        x_raw, x = data[0]
        others = [(raw, v) for raw, v in ops if v.cat != DATA]
        if any(v.cat == PARAM for _, v in others):
            return dict(kind=OTHER)  # a learned scale or bias (layer scale, x + self.bias)
        if not x.pre or canon not in ("add", "sub", "mul", "div", "neg"):
            return dict(kind=OTHER)
        data_first = bool(args) and args[0] is x_raw
        other = others[0][1] if others else None
        if canon == "neg":
            return dict(kind=RESCALE, scale=-1.0)
        if canon == "add":
            return dict(kind=RESCALE, scale=1.0)
        if canon == "sub":
            return dict(kind=RESCALE, scale=1.0 if data_first else -1.0)
        factor = _constant_mean(other)
        if canon == "mul":
            return dict(kind=RESCALE, scale=factor)
        if not data_first:
            return dict(kind=OTHER)  # c / x is not a rescaling
        return dict(kind=RESCALE, scale=(1.0 / factor) if factor else None)


def _constant_mean(value: _Value | None) -> float | None:
    """The number a constant operand multiplies by; the mean for per-channel tensors."""
    if value is None or value.cat != CONST or value.value is None:
        return None
    v = value.value
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, torch.Tensor) and v.numel() > 0 and (v.is_floating_point() or
                                                          v.dtype in (torch.int32, torch.int64)):
        return float(v.detach().double().mean())
    return None


def _drop_batch(shape: tuple | None) -> tuple | None:
    if shape is None:
        return None
    return tuple(int(d) for d in shape[1:]) if len(shape) >= 1 else ()


def _is_global(in_shape: tuple | None, out_shape: tuple | None) -> bool:
    """Pooling that leaves one value per channel from a map larger than one pixel."""
    if not in_shape or not out_shape or len(in_shape) < 3 or len(out_shape) < 2:
        return False
    if tuple(out_shape[:2]) != tuple(in_shape[:2]):
        return False
    return all(d == 1 for d in out_shape[2:]) and any(d > 1 for d in in_shape[2:])


def _reduction_kind(in_shape: tuple | None, out_shape: tuple | None, dims: Any) -> str:
    """x.mean((2, 3)) is global average pooling; a partial spatial reduction is pooling."""
    if in_shape and out_shape is not None and len(in_shape) >= 3:
        if len(out_shape) >= 2 and tuple(out_shape[:2]) == tuple(in_shape[:2]):
            if all(d == 1 for d in out_shape[2:]):
                return GLOBAL_POOL
            return POOL if _prod(out_shape) < _prod(in_shape) else OTHER
        return OTHER
    if dims is None:
        return OTHER
    dims = set(dims) if isinstance(dims, (tuple, list)) else {dims}
    if dims in ({2, 3}, {-2, -1}, {2, 3, 4}, {-3, -2, -1}):
        return GLOBAL_POOL
    return OTHER


# ---------------------------------------------------------------------------------------------
# Route 1: symbolic tracing with torch.fx
# ---------------------------------------------------------------------------------------------
class _Tracer(torch.fx.Tracer):
    """fx tracer that also keeps user subclasses of known torch.nn layers as single layers."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return _module_fields(m)[1] or super().is_leaf_module(m, module_qualified_name)


def _concrete_args(root: nn.Module, n_given: int) -> dict | None:
    """Keep forward's optional arguments (mask=None, ...) at their defaults while tracing."""
    try:
        params = list(inspect.signature(root.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    out = {}
    for i, p in enumerate(params):
        if i >= max(n_given, 1) and p.default is not inspect.Parameter.empty and p.kind in (
                p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            out[p.name] = p.default
    return out or None


def _meta_info(meta: Any, known: bool) -> tuple[tuple | None, bool | None, bool | None]:
    """(output shape with batch, output is a tensor, output is a tuple) from fx ShapeProp."""
    if not known:
        return None, None, None
    if isinstance(meta, TensorMetadata):
        return tuple(int(d) for d in meta.shape), True, False
    first = _first_metadata(meta)
    if first is not None:
        return tuple(int(d) for d in first.shape), True, True
    return None, False, False


def _first_metadata(meta: Any) -> TensorMetadata | None:
    """The first tensor's metadata in a nested output (TensorMetadata is itself a tuple)."""
    if isinstance(meta, TensorMetadata):
        return meta
    items = meta.values() if isinstance(meta, dict) else meta
    if isinstance(meta, (tuple, list, dict)):
        for item in items:
            found = _first_metadata(item)
            if found is not None:
                return found
    return None


def _describe_with_fx(root: nn.Module, args: tuple | None, notes: list[str]) -> list[Layer]:
    tracer = _Tracer()
    graph = tracer.trace(root, concrete_args=_concrete_args(root, len(args) if args else 1))
    gm = torch.fx.GraphModule(tracer.root, graph)
    known = False
    if args is not None:
        try:
            # ShapeProp prints the traceback of a failing node to stderr before raising; the
            # reason goes into the note instead (the user sees one line, not torch internals).
            with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
                ShapeProp(gm).propagate(*args)
            known = True
        except Exception as exc:
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            notes.append(f"the model could not run on the example ({_short(cause)}): layer "
                         "shapes are unknown.")
    builder = _Builder(root)
    for node in graph.nodes:
        shape, is_tensor, is_tuple = _meta_info(node.meta.get("tensor_meta"), known)
        if node.op == "placeholder":
            builder.input(node, shape)
        elif node.op == "get_attr":
            obj = functools.reduce(getattr, node.target.split("."), gm)
            if shape is None and isinstance(obj, torch.Tensor):
                shape = tuple(obj.shape)
            builder.attribute(node, node.target, obj, shape)
        elif node.op == "call_module":
            builder.module_call(node, gm.get_submodule(node.target), node.target, node.args,
                                node.kwargs, shape, is_tuple)
        elif node.op in ("call_function", "call_method"):
            name, head = _fn_identity(node.target)
            builder.function_call(node, name, head, node.args, node.kwargs, shape, is_tensor,
                                  is_tuple)
        elif node.op == "output":
            return builder.finish(node.args)
    return builder.layers


# ---------------------------------------------------------------------------------------------
# Route 2: one recorded run (forward that fx cannot trace)
# ---------------------------------------------------------------------------------------------
def _first_tensor(obj: Any) -> torch.Tensor | None:
    for item in _leaves(obj if isinstance(obj, (tuple, list, dict)) else (obj,)):
        if isinstance(item, torch.Tensor):
            return item
    return None


def _run_info(obj: Any) -> tuple[tuple | None, bool]:
    first = _first_tensor(obj)
    return (tuple(int(d) for d in first.shape) if first is not None else None,
            isinstance(obj, (tuple, list)))


class _Recorder(TorchFunctionMode):
    """Sees every torch function call made outside the hooked leaf modules."""

    def __init__(self, builder: _Builder, depth: list[int]):
        super().__init__()
        self.builder, self.depth = builder, depth

    def __torch_function__(self, func, types_, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.depth[0] == 0 and _first_tensor(out) is not None:
            name, head = _fn_identity(func)
            shape, is_tuple = _run_info(out)
            self.builder.function_call(id(_first_tensor(out)), name, head, args, kwargs, shape,
                                       True, is_tuple, obj=out)
        return out


def _record_run(root: nn.Module, args: tuple, see_functions: bool) -> list[Layer]:
    builder = _Builder(root, chain_unknown=not see_functions)
    for t in args:
        builder.input(id(t), tuple(int(d) for d in t.shape), obj=t)
    depth = [0]
    handles = []

    def enter(module, inputs):
        depth[0] += 1

    def leave_for(qualname: str):
        def leave(module, inputs, output):
            depth[0] -= 1
            if depth[0] == 0:
                shape, is_tuple = _run_info(output)
                first = _first_tensor(output)
                builder.module_call(id(first), module, qualname, inputs, {}, shape, is_tuple,
                                    obj=output)
        return leave

    try:
        for qualname, module in _leaf_modules(root):
            handles.append(module.register_forward_pre_hook(enter))
            handles.append(module.register_forward_hook(leave_for(qualname)))
        with torch.no_grad():
            if see_functions:
                with _Recorder(builder, depth):
                    outputs = root(*args)
            else:
                outputs = root(*args)
    finally:
        for handle in handles:
            handle.remove()
    return builder.finish(outputs)


def _describe_by_running(root: nn.Module, args: tuple, notes: list[str],
                         reason: str) -> list[Layer]:
    try:
        layers = _record_run(root, args, see_functions=True)
        notes.append(f"forward could not be traced symbolically ({reason}), so it was recorded "
                     "from one run on the example: only the branch that this example took is "
                     "described.")
        return layers
    except Exception:
        pass
    try:
        layers = _record_run(root, args, see_functions=False)
        notes.append(f"forward could not be traced symbolically ({reason}); layers were recorded "
                     "with hooks on the model's modules during one run on the example, so "
                     "functions called inside forward (F.relu, torch.softmax, x / 255, x + y, "
                     "...) could not be seen and connections are assumed to follow execution "
                     "order.")
        return layers
    except Exception as exc:
        notes.append(f"forward could not be traced symbolically ({reason}) nor run on the "
                     f"example ({_short(exc)}): layers are listed from the model's modules in "
                     "registration order, so functions called inside forward could not be seen "
                     "and connections are assumed to follow that order.")
        return _describe_by_walking(root)


def _describe_by_walking(root: nn.Module) -> list[Layer]:
    """Last resort: leaf modules in registration order, each fed by the one before."""
    builder = _Builder(root, chain_unknown=True)
    for qualname, module in _leaf_modules(root):
        token = object()
        builder.module_call(id(token), module, qualname, (), {}, None, False, obj=token)
        builder.keepalive.append(token)
        if len(builder.layers) > 1:
            builder.layers[-1].inputs = [builder.layers[-2].name]
    return builder.layers
