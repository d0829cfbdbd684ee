"""PyTorch losses: what a loss expects from the model (``parse_torch_loss``), a loss from its
name (``by_name``), and how labels must be given to it (``label_mode``). The one place where
torch loss names are resolved."""
from __future__ import annotations

import functools
import inspect
import types
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...errors import InputError
from ...graph import (BINARY, CATEGORICAL, EXPECTS_ANY, EXPECTS_LOG_PROBABILITIES, EXPECTS_LOGITS,
                      EXPECTS_PROBABILITIES, REGRESSION, SPARSE, LossInfo)
from ..common import DENSE_LOSS_WORDS, loss_name
from .naming import module_source

#: How deep parse_torch_loss follows names from a loss function into the functions, closures
#: and attributes it uses (lambda -> helper -> criterion object). Three levels cover the wrappers
#: we have seen in training scripts; deeper chains are more likely to wander into unrelated code.
LOSS_SEARCH_DEPTH = 3


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _LossKind:
    name: str
    expects: str
    family: str
    module: type
    functional: str  # name in torch.nn.functional


_LOSSES = [
    # CrossEntropyLoss also accepts class probabilities as targets; integer targets are the
    # common case, so the family is sparse.
    _LossKind("cross_entropy", EXPECTS_LOGITS, SPARSE, nn.CrossEntropyLoss, "cross_entropy"),
    _LossKind("nll", EXPECTS_LOG_PROBABILITIES, SPARSE, nn.NLLLoss, "nll_loss"),
    _LossKind("bce", EXPECTS_PROBABILITIES, BINARY, nn.BCELoss, "binary_cross_entropy"),
    _LossKind("bce_with_logits", EXPECTS_LOGITS, BINARY, nn.BCEWithLogitsLoss,
              "binary_cross_entropy_with_logits"),
    _LossKind("mse", EXPECTS_ANY, REGRESSION, nn.MSELoss, "mse_loss"),
    _LossKind("l1", EXPECTS_ANY, REGRESSION, nn.L1Loss, "l1_loss"),
    _LossKind("smooth_l1", EXPECTS_ANY, REGRESSION, nn.SmoothL1Loss, "smooth_l1_loss"),
    _LossKind("huber", EXPECTS_ANY, REGRESSION, nn.HuberLoss, "huber_loss"),
    # KL divergence takes log-probabilities and a target distribution.
    _LossKind("kl_div", EXPECTS_LOG_PROBABILITIES, CATEGORICAL, nn.KLDivLoss, "kl_div"),
    _LossKind("multi_margin", EXPECTS_LOGITS, SPARSE, nn.MultiMarginLoss, "multi_margin_loss"),
    _LossKind("multilabel_soft_margin", EXPECTS_LOGITS, BINARY, nn.MultiLabelSoftMarginLoss,
              "multilabel_soft_margin_loss"),
]
#: Transforms that, applied inside the loss function, let it take the model's raw logits.
_LOSS_INPUT_TRANSFORMS = {"log_softmax": EXPECTS_LOG_PROBABILITIES,
                          "sigmoid": EXPECTS_PROBABILITIES, "softmax": EXPECTS_PROBABILITIES}

_UNDERSTOOD = ("pass a torch loss such as nn.CrossEntropyLoss(), nn.NLLLoss(), nn.BCELoss(), "
               "nn.BCEWithLogitsLoss(), nn.MSELoss(), nn.L1Loss() or nn.KLDivLoss(), its "
               "functional form (F.cross_entropy, F.nll_loss, ...), a function that calls one "
               "of them, or its name as a string ('cross_entropy')")


def _loss_by_token(token: str) -> tuple[_LossKind, str] | None:
    """A name seen in code or given as a string -> (loss kind, how it is written)."""
    low = token.lower()
    for kind in _LOSSES:
        if token == kind.functional:
            return kind, f"F.{kind.functional}"
        if token == kind.module.__name__:
            return kind, f"nn.{kind.module.__name__}"
        if low in (kind.name, kind.functional, kind.module.__name__.lower()):
            return kind, f"nn.{kind.module.__name__}"
    return None


def _loss_of_object(obj: Any) -> tuple[_LossKind, str] | None:
    """A loss module instance, loss class or functional loss -> (kind, source text)."""
    for kind in _LOSSES:
        if isinstance(obj, kind.module):
            return kind, f"{module_source(obj)}()"
        if isinstance(obj, type) and issubclass(obj, kind.module):
            return kind, _class_source(obj)
        if obj is getattr(F, kind.functional, None) or obj is getattr(torch, kind.functional, None):
            return kind, f"F.{kind.functional}"
    return None


def _class_source(cls: type) -> str:
    if cls.__module__.startswith("torch.nn"):
        return f"nn.{cls.__name__}"
    return cls.__name__


def describe_object(obj: Any) -> str:
    if isinstance(obj, functools.partial):
        return f"functools.partial({describe_object(obj.func)}, ...)"
    if getattr(obj, "__name__", None) == "<lambda>":
        return "lambda"
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if name:
        name = name.split("<locals>.")[-1]  # a function defined inside another one
    if isinstance(obj, nn.Module):
        return f"{module_source(obj)}()"
    if name and (inspect.isfunction(obj) or inspect.ismethod(obj)):
        return f"{name}()"
    return type(obj).__qualname__ + " object"


def _code_names(code: types.CodeType) -> list[str]:
    """Names a function uses (globals, attributes, closures), nested functions included."""
    names = list(code.co_names) + list(code.co_freevars)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.extend(_code_names(const))
    return names


def _resolve_name(fn: Any, name: str) -> Any:
    """The object a name in ``fn`` refers to: closure cell, bound attribute or global."""
    code = getattr(fn, "__code__", None)
    if code is not None and fn.__closure__ and name in code.co_freevars:
        try:
            return fn.__closure__[code.co_freevars.index(name)].cell_contents
        except ValueError:  # empty cell
            return None
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, nn.Module) and name in owner._modules:
        return owner._modules[name]
    if owner is not None and not isinstance(owner, types.ModuleType):
        found = inspect.getattr_static(owner, name, None)
        if found is not None and not isinstance(found, (property, types.FunctionType)):
            return found
    return getattr(fn, "__globals__", {}).get(name)


def _scan_callable(fn: Any, depth: int, seen: set) -> tuple[list, set]:
    """Losses (kind, text) and input transforms that a loss function calls, in order."""
    found: list = []
    transforms: set = set()
    if id(fn) in seen or depth > LOSS_SEARCH_DEPTH:
        return found, transforms
    seen.add(id(fn))
    direct = _loss_of_object(fn)
    if direct is not None:
        return [direct], transforms
    if isinstance(fn, functools.partial):
        return _scan_callable(fn.func, depth, seen)
    if isinstance(fn, nn.Module) or (not inspect.isroutine(fn) and callable(fn)
                                     and not isinstance(fn, type)):
        call = fn.forward if isinstance(fn, nn.Module) else getattr(fn, "__call__", None)
        return _scan_callable(call, depth + 1, seen) if call is not None else (found, transforms)
    func = getattr(fn, "__func__", fn)
    code = getattr(func, "__code__", None)
    if code is None:
        return found, transforms
    for name in _code_names(code):
        if name in _LOSS_INPUT_TRANSFORMS:
            transforms.add(name)
        by_token = _loss_by_token(name) if name in _LOSS_TOKENS else None
        if by_token is not None:
            _add_loss(found, by_token)
            continue
        target = _resolve_name(fn, name)
        followable = isinstance(target, (nn.Module, functools.partial)) or inspect.isroutine(
            target) or (isinstance(target, type) and _loss_of_object(target) is not None)
        if not followable:
            continue  # modules (torch, F), numbers, strings, unrelated classes
        inner, inner_transforms = _scan_callable(target, depth + 1, seen)
        for item in inner:
            _add_loss(found, item)
        transforms |= inner_transforms
    # A function that computes no loss says nothing about the loss's input: a loss that also
    # reads the model (weight decay by hand) must not pick up the softmax inside model.forward.
    return found, (transforms if found else set())


def _add_loss(found: list, item: tuple) -> None:
    if all(kind is not item[0] for kind, _ in found):
        found.append(item)


#: Exact names that identify a loss when they appear in a function's code.
_LOSS_TOKENS = frozenset([k.functional for k in _LOSSES] + [k.module.__name__ for k in _LOSSES])


def parse_torch_loss(loss: Any) -> LossInfo | None:
    """What a torch loss expects from the model's output, or None when no loss was given.

    Understands loss modules (``nn.CrossEntropyLoss()``, subclasses too), their classes, the
    functional forms (``F.cross_entropy``), ``functools.partial`` of them, names as strings, and
    lambdas, functions, methods and custom loss modules that call one of them: the names their
    code uses are read (no source file needed), following closures, globals and attributes. When
    such a function applies the matching transform itself (``F.nll_loss(F.log_softmax(out))``,
    ``F.binary_cross_entropy(torch.sigmoid(out))``) the model is expected to give logits.
    Raises ``InputError`` for anything else.
    """
    if loss is None:
        return None
    if isinstance(loss, str):
        found = _loss_by_token(loss.strip())
        if found is None:
            raise InputError(f"unknown loss name {loss!r}: {_UNDERSTOOD}.")
        kind = found[0]
        return LossInfo(kind.name, kind.expects, kind.family, repr(loss))
    direct = _loss_of_object(loss)
    if direct is not None:
        kind, text = direct
        return LossInfo(kind.name, kind.expects, kind.family, text)
    if isinstance(loss, functools.partial):
        inner = _loss_of_object(loss.func)
        if inner is not None:
            kind, text = inner
            return LossInfo(kind.name, kind.expects, kind.family,
                            f"functools.partial({text}, ...)")
    if not callable(loss):
        raise InputError(f"cnndoctor does not understand the loss "
                         f"{type(loss).__qualname__} object: {_UNDERSTOOD}.")
    found, transforms = _scan_callable(loss, 0, set())
    if not found:
        raise InputError(f"cnndoctor cannot tell which loss {describe_object(loss)} computes: "
                         f"{_UNDERSTOOD}.")
    kind, text = found[0]
    expects = kind.expects
    source = f"{describe_object(loss)} calling {text}"
    applied = sorted(t for t in transforms if t in ("log_softmax", "sigmoid", "softmax"))
    if applied:
        source += " after " + ", ".join(applied)
    fitting = [t for t in applied if _LOSS_INPUT_TRANSFORMS[t] == expects]
    if expects == EXPECTS_LOG_PROBABILITIES and "log_softmax" in fitting:
        expects = EXPECTS_LOGITS
    elif expects == EXPECTS_PROBABILITIES and fitting:
        expects = EXPECTS_LOGITS
    if len(found) > 1:
        source += " (also " + ", ".join(t for _, t in found[1:]) + ")"
    return LossInfo(kind.name, expects, kind.family, source)


#: Short names a user may give on the command line (``--loss``), beside the torch names.
SHORT_NAMES = {"cross_entropy": "CrossEntropyLoss", "nll": "NLLLoss", "bce": "BCELoss",
               "bce_with_logits": "BCEWithLogitsLoss", "mse": "MSELoss"}


def by_name(name: str | None):
    """A loss from its name: "cross_entropy", "CrossEntropyLoss" (a new module), or
    "F.cross_entropy" (the function); None when torch has no such loss."""
    if not name:
        return None
    if name.startswith("F."):
        return getattr(F, name[2:], None)
    cls = getattr(nn, SHORT_NAMES.get(name, name), None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        return None
    try:
        return cls()
    except TypeError:
        return None


#: Words in a torch loss's name that say it takes class indices.
_SPARSE_WORDS = ("crossentropyloss", "cross_entropy", "nllloss", "nll_loss", "multimargin",
                 "multi_margin")


def label_mode(loss: Any) -> str:
    """How labels must be given to this loss: "sparse" (class indices), "onehot" or "asis"."""
    name = loss_name(loss)
    if not name or "sparse" in name:
        return "sparse"  # fit's default torch loss is CrossEntropyLoss
    # CrossEntropyLoss and NLLLoss take class indices; BCE/MSE take float targets.
    if any(w in name for w in _SPARSE_WORDS) and "binary" not in name and "bce" not in name:
        return "sparse"
    if any(w in name for w in DENSE_LOSS_WORDS):
        return "onehot"
    return "asis"
