"""Model surgery for torch modules: the PyTorch half of the fixes.

Every function returns a changed deep copy of ``model``; ``model`` itself is not touched.
Submodules are replaced by their qualified name ("features.3", "head"); activations and
softmaxes called as functions inside ``forward`` (``F.relu``, ``x.softmax(1)``) are removed
through a ``torch.fx`` trace of the copy. What cannot be changed raises ``CannotApply``.
"""
from __future__ import annotations

import copy
from typing import Any, Callable

from ...errors import CannotApply

#: What a functional call or method is called in a torch.fx graph, by kind of step.
FX_NAMES = {
    "relu": {"relu", "relu_", "relu6", "leaky_relu", "elu", "gelu", "selu", "sigmoid", "tanh",
             "softplus", "hardtanh"},
    "softmax": {"softmax", "log_softmax"},
}


def _nn():
    from torch import nn

    return nn


def _parent(model: Any, name: str):
    parts = name.split(".")
    parent = model
    for p in parts[:-1]:
        parent = getattr(parent, p, None) if not p.isdigit() else parent[int(p)]
        if parent is None:
            raise CannotApply(f"no submodule named {name!r} in the model")
    return parent, parts[-1]


def get_module(model: Any, name: str):
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def replace(model: Any, name: str, make: Callable[[Any], Any]) -> Any:
    """A copy of ``model`` whose submodule ``name`` is ``make(old_submodule)``."""
    return _swap(copy.deepcopy(model), name, make)


def _swap(twin: Any, name: str, make: Callable[[Any], Any]) -> Any:
    """``twin`` (already a copy) with its submodule ``name`` replaced by ``make(old)``."""
    old = get_module(twin, name)
    if old is None or old is twin:
        raise CannotApply(f"{name!r} is not a submodule of the model (an operation written "
                          "inside forward cannot be swapped): apply the change in your code")
    parent, last = _parent(twin, name)
    new = make(old)
    if last.isdigit() and isinstance(parent, (_nn().Sequential, _nn().ModuleList)):
        parent[int(last)] = new
    else:
        setattr(parent, last, new)
    return twin


def _fx_drop(model: Any, kinds: set[str], before_output: int = 2) -> Any:
    """A traced copy without the last call among ``kinds`` within ``before_output`` steps of the
    model's output (a functional ReLU or softmax on the logits)."""
    import torch.fx as fx

    try:
        traced = fx.symbolic_trace(copy.deepcopy(model))
    except Exception as exc:
        raise CannotApply(f"forward cannot be traced to remove a functional call "
                          f"({type(exc).__name__}); apply the change in your code") from exc
    output = next(n for n in traced.graph.nodes if n.op == "output")
    node = output.args[0] if output.args else None
    for _ in range(before_output + 1):
        if not isinstance(node, fx.Node):
            break
        target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
        if node.op in ("call_function", "call_method") and target in kinds:
            node.replace_all_uses_with(node.args[0])
            traced.graph.erase_node(node)
            traced.recompile()
            return traced
        if node.op == "call_module":
            sub = traced.get_submodule(node.target)
            if type(sub).__name__.lower() in kinds:
                node.replace_all_uses_with(node.args[0])
                traced.graph.erase_node(node)
                traced.recompile()
                return traced
        node = node.args[0] if node.args else None
    raise CannotApply("no such call found next to the output in forward")


def remove(model: Any, name: str, kind: str) -> Any:
    """Step ``name`` (an activation or a softmax, ``kind`` "relu"/"softmax") made an identity."""
    if get_module(model, name) not in (None, model):
        return replace(model, name, lambda old: _nn().Identity())
    return _fx_drop(model, FX_NAMES[kind])


def add_activation(model: Any, names: list[str], activation: str = "relu") -> Any:
    """Each weighted submodule in ``names`` followed by its own ReLU."""
    twin = model
    for name in names:
        twin = replace(twin, name, lambda old: _nn().Sequential(old, _nn().ReLU()))
    return twin


def set_dropout(model: Any, rates: dict[str, float]) -> Any:
    twin = copy.deepcopy(model)
    for name, rate in rates.items():
        module = get_module(twin, name)
        if module is None or not hasattr(module, "p"):
            raise CannotApply(f"{name!r} is not a dropout module")
        module.p = float(rate)
    return twin


def set_units(model: Any, name: str, units: int) -> Any:
    nn = _nn()

    def make(old):
        if isinstance(old, nn.Linear):
            return nn.Linear(old.in_features, int(units), bias=old.bias is not None)
        if isinstance(old, nn.Conv2d):
            return nn.Conv2d(old.in_channels, int(units), old.kernel_size, old.stride,
                             old.padding, bias=old.bias is not None)
        raise CannotApply(f"{name!r} is a {type(old).__name__}, not a Linear or Conv2d")

    return replace(model, name, make)


def widen(model: Any, name: str, units: int, *, same_padding: bool = False,
          downstream: list[str] | None = None, example: Any = None) -> Any:
    """Submodule ``name`` (a Conv2d or a Linear) with ``units`` output channels / features and,
    for a stride-1 Conv2d when asked, ``padding='same'``. The modules in ``downstream`` (the
    batch norm and the next weighted module that read its outputs) become their lazy versions,
    which take their input size from the first batch: ``example`` (one input) is passed through
    the copy once so that they are real modules again before an optimizer sees them."""
    import torch

    nn = _nn()

    def make(old):
        bias = old.bias is not None
        if isinstance(old, nn.Conv2d):
            if not (same_padding and all(s == 1 for s in old.stride)):
                return nn.Conv2d(old.in_channels, int(units), old.kernel_size, old.stride,
                                 old.padding, old.dilation, bias=bias)
            # Keras' 'same': (k - 1) // 2 before, the rest after (one more after for an even
            # kernel, which torch's own padding='same' does with a warning and a copy)
            total = [d * (k - 1) for k, d in zip(old.kernel_size, old.dilation)]
            pads = (total[1] // 2, total[1] - total[1] // 2, total[0] // 2, total[0] - total[0] // 2)
            conv = nn.Conv2d(old.in_channels, int(units), old.kernel_size, 1, 0, old.dilation,
                             bias=bias)
            return nn.Sequential(nn.ZeroPad2d(pads), conv) if any(pads) else conv
        if isinstance(old, nn.Linear):
            return nn.Linear(old.in_features, int(units), bias=bias)
        raise CannotApply(f"{name!r} is a {type(old).__name__}, not a Conv2d or Linear")

    def lazy(old):
        bias = getattr(old, "bias", None) is not None
        if isinstance(old, nn.Linear):
            return nn.LazyLinear(old.out_features, bias=bias)
        if isinstance(old, nn.Conv2d):
            return nn.LazyConv2d(old.out_channels, old.kernel_size, old.stride, old.padding,
                                 old.dilation, 1, bias=bias)
        if isinstance(old, nn.BatchNorm2d):
            return nn.LazyBatchNorm2d(old.eps, old.momentum, old.affine,
                                      old.track_running_stats)
        if isinstance(old, nn.BatchNorm1d):
            return nn.LazyBatchNorm1d(old.eps, old.momentum, old.affine,
                                      old.track_running_stats)
        raise CannotApply(f"{type(old).__name__} after the widened layer cannot take a new "
                          f"input size; widen it by hand")

    twin = replace(model, name, make)
    for after in downstream or []:  # in place: a module still lazy cannot be copied
        twin = _swap(twin, after, lazy)
    if example is not None:
        try:
            with torch.no_grad():
                was = twin.training
                twin.eval()
                from .runtime import as_input

                twin(as_input(twin, example))
                twin.train(was)
        except Exception as exc:
            raise CannotApply(f"the widened model does not run ({type(exc).__name__}: {exc}); "
                              f"its forward may reshape to a fixed size") from exc
    return twin


def pooled_head(model: Any, name: str, filters: int) -> Any:
    """The whole-map convolution ``name`` as max pooling and 3x3 convolutions down to a small
    map (``keras.surgery.pooled_blocks``: the same rule in both frameworks), a 1x1 convolution
    and global average pooling: the same output shape (filters x 1 x 1), a fraction of the
    weights. The activation after the original layer still follows."""
    from ..keras.surgery import pooled_blocks

    nn = _nn()

    def make(old):
        if not isinstance(old, nn.Conv2d):
            raise CannotApply(f"{name!r} is a {type(old).__name__}, not a Conv2d")
        bias = old.bias is not None
        steps, channels = [], old.in_channels
        for _ in range(pooled_blocks(min(old.kernel_size))):
            steps += [nn.MaxPool2d(2), nn.Conv2d(channels, int(filters), 3, padding=1, bias=bias),
                      nn.ReLU()]
            channels = int(filters)
        steps += [nn.Conv2d(channels, int(filters), 1, bias=bias), nn.AdaptiveAvgPool2d(1)]
        return nn.Sequential(*steps)

    return replace(model, name, make)
