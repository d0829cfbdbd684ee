"""Keras 3 (torch backend) model and loss -> ``ModelGraph``.

The model is read by running it once on a tiny batch while ``Layer.__call__`` (and the public
``keras.ops`` / ``keras.activations`` functions a subclassed ``call`` may use) are wrapped to record
which layer ran, on which tensors. This sees Sequential, Functional and subclassed models, and
models nested in models, the same way, in execution order. The forward pass runs in inference
mode without gradients: weights, optimizer state and batch-norm statistics are left as they were.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ... import graph as g
from ...errors import InputError
from ...graph import Layer, ModelGraph
from .losses import parse_keras_loss

# Public functional ops that a subclassed model's call() may apply to its tensors: name -> kind,
# activation. Wrapped only while the model is read.
_FUNCTIONAL_OPS = {
    "relu": (g.ACTIVATION, "relu"), "relu6": (g.ACTIVATION, "relu6"),
    "sigmoid": (g.ACTIVATION, "sigmoid"), "tanh": (g.ACTIVATION, "tanh"),
    "gelu": (g.ACTIVATION, "gelu"), "silu": (g.ACTIVATION, "silu"),
    "leaky_relu": (g.ACTIVATION, "leaky_relu"), "elu": (g.ACTIVATION, "elu"),
    "selu": (g.ACTIVATION, "selu"), "softplus": (g.ACTIVATION, "softplus"),
    "softmax": (g.SOFTMAX, "softmax"), "log_softmax": (g.LOG_SOFTMAX, "log_softmax"),
}


def describe_keras(model: Any, loss: Any = None, example: Any = None) -> ModelGraph:
    import keras

    notes: list[str] = []
    subject = model
    if not model.built:
        subject, note = _built_copy(model, example)
        notes.append(note)
    batch = _input_batch(subject, example, notes)
    layers = _trace(subject, batch) if batch is not None else None
    if layers is None:
        layers = _static_layers(subject)
        notes.append("the model could not be run on an example batch, so shapes and the order of "
                     "functional calls inside call() are unknown")
    data_format = "channels_last"
    for layer in subject._flatten_layers(include_self=False, recursive=True):
        if getattr(layer, "data_format", None) == "channels_first":
            data_format = "channels_first"
    input_shape = None
    try:
        input_shape = tuple(subject.input_shape[1:])
    except Exception:
        if batch is not None:
            input_shape = tuple(np.shape(batch)[1:])
    if any(layer.source == "Lambda" for layer in layers):
        notes.append("Lambda layers are opaque: what they compute is not checked")
    return ModelGraph(framework="keras", name=model.name, layers=layers,
                      input_shape=input_shape, data_format=data_format,
                      loss=parse_keras_loss(loss, keras) if loss is not None else None,
                      notes=notes)


# ---- reading the layers ---------------------------------------------------------------------

def _built_copy(model, example):
    """A built copy of an unbuilt model (building the user's model would change it)."""
    import keras

    if example is None:
        raise InputError(f"the Keras model {model.name!r} is not built and no data was given to "
                         f"build it: call model.build(input_shape) or start it with keras.Input.")
    try:
        copy = keras.models.clone_model(model)
        copy.build(tuple(np.shape(example)))
    except Exception as exc:
        raise InputError(f"the Keras model {model.name!r} is not built and cnndoctor could not "
                         f"build a copy for the input shape {tuple(np.shape(example))} "
                         f"({type(exc).__name__}: {exc}); call model.build(input_shape) first."
                         ) from exc
    return copy, "the model was not built: a copy was built for the training data's shape"


def _input_batch(model, example, notes):
    """The batch to run: the user's example if the model accepts its shape, else zeros."""
    declared = None
    try:
        declared = tuple(model.input_shape)
    except Exception:
        pass
    if example is not None:
        ex_shape = tuple(np.shape(example))
        if declared is None or _shape_fits(declared, ex_shape):
            return np.asarray(example, dtype=np.float32)
    if declared is not None and all(d is not None for d in declared[1:]):
        return np.zeros((2, *declared[1:]), dtype=np.float32)
    return None


def _shape_fits(declared, actual) -> bool:
    return len(declared) == len(actual) and all(
        d is None or d == a for d, a in zip(declared[1:], actual[1:]))


def _trace(model, batch) -> list[Layer] | None:
    import keras
    import torch
    from keras.src.layers.layer import Layer as KLayer

    records: list[dict] = []
    producers: dict[int, str] = {}  # id(tensor) -> name of the leaf that produced it
    keep_alive: list = []  # hold tensors so that their ids are not reused during the trace
    stack: list[dict] = []
    names: dict[str, int] = {}
    original_call = KLayer.__call__

    def tensors_in(obj):
        if isinstance(obj, torch.Tensor):
            return [obj]
        if isinstance(obj, (list, tuple)):
            return [t for o in obj for t in tensors_in(o)]
        if isinstance(obj, dict):
            return [t for o in obj.values() for t in tensors_in(o)]
        return []

    def unique(name):
        names[name] = names.get(name, 0) + 1
        return name if names[name] == 1 else f"{name}_{names[name]}"

    def recording_call(layer, *args, **kwargs):
        frame = {"layer": layer, "children": 0}
        if stack:
            stack[-1]["children"] += 1
        stack.append(frame)
        try:
            out = original_call(layer, *args, **kwargs)
        finally:
            stack.pop()
        if frame["children"] == 0 and not isinstance(layer, keras.Model):
            ins = tensors_in((args, kwargs))
            keep_alive.extend(ins)
            outs = tensors_in(out)
            keep_alive.extend(outs)
            name = unique(layer.name)
            records.append({"layer": layer, "name": name,
                            "inputs": _dedupe([producers[id(t)] for t in ins
                                               if id(t) in producers]),
                            "in_shape": tuple(ins[0].shape[1:]) if ins else None,
                            "out_shape": tuple(outs[0].shape[1:]) if outs else None})
            for t in outs:
                producers[id(t)] = name
        return out

    def wrap_op(module, attr, kind, act):
        fn = getattr(module, attr)

        def op(x, *args, **kwargs):
            out = fn(x, *args, **kwargs)
            # Only calls made directly in a model's own call() are steps of their own; the same
            # functions used inside a layer belong to that layer.
            if stack and isinstance(stack[-1]["layer"], keras.Model):
                ins = tensors_in(x)
                keep_alive.extend(ins + tensors_in(out))
                name = unique(f"{module.__name__.split('.')[-1]}.{attr}")
                records.append({"op": (kind, act, f"keras.{module.__name__.split('.')[-1]}."
                                                     f"{attr}"), "name": name,
                                "inputs": _dedupe([producers[id(t)] for t in ins
                                                   if id(t) in producers]),
                                "in_shape": tuple(ins[0].shape[1:]) if ins else None,
                                "out_shape": tuple(out.shape[1:]) if hasattr(out, "shape")
                                else None})
                for t in tensors_in(out):
                    producers[id(t)] = name
            return out

        return fn, op

    patches = []
    for module in (keras.ops, keras.activations):
        for attr, (kind, act) in _FUNCTIONAL_OPS.items():
            if hasattr(module, attr):
                fn, op = wrap_op(module, attr, kind, act)
                patches.append((module, attr, fn, op))
    try:
        KLayer.__call__ = recording_call
        for module, attr, _fn, op in patches:
            setattr(module, attr, op)
        with torch.no_grad():
            model(batch, training=False)
    except Exception:
        return None
    finally:
        KLayer.__call__ = original_call
        for module, attr, fn, _op in patches:
            setattr(module, attr, fn)
    return [_to_layer(r) for r in records]


def _dedupe(seq):
    out = []
    for s in seq:
        if s not in out:
            out.append(s)
    return out


def _static_layers(model) -> list[Layer]:
    """Leaf layers in declaration order, each fed by the one before (no forward pass)."""
    out: list[Layer] = []
    prev = None
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if list(layer._flatten_layers(include_self=False, recursive=False)):
            continue
        if type(layer).__name__ == "InputLayer":
            continue
        rec = {"layer": layer, "name": layer.name, "inputs": [prev] if prev else [],
               "in_shape": None, "out_shape": None}
        out.append(_to_layer(rec))
        prev = layer.name
    return out


def _to_layer(rec: dict) -> Layer:
    if "op" in rec:
        kind, act, source = rec["op"]
        return Layer(name=rec["name"], kind=kind, source=source, activation=act,
                     inputs=rec["inputs"], input_shape=rec["in_shape"],
                     output_shape=rec["out_shape"])
    layer = rec["layer"]
    cls = type(layer).__name__
    kind, op, activation, extra = _classify(layer, cls)
    params = int(layer.count_params()) if layer.built else 0
    trainable = int(sum(int(np.prod(w.shape)) for w in layer.trainable_weights))
    return Layer(name=rec["name"], kind=kind, source=cls, activation=activation, op=op,
                 params=params, trainable_params=trainable, inputs=rec["inputs"],
                 input_shape=rec["in_shape"], output_shape=rec["out_shape"], **extra)


def _activation_name(fn) -> str | None:
    if fn is None:
        return None
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return name.lower()


def _classify(layer, cls: str):
    """kind, op, activation, extra fields for one Keras layer."""
    import keras.layers as L

    extra: dict = {}
    act = _activation_name(getattr(layer, "activation", None))
    if isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D, L.Conv1DTranspose, L.Conv2DTranspose,
                          L.Conv3DTranspose, L.DepthwiseConv1D, L.DepthwiseConv2D,
                          L.SeparableConv1D, L.SeparableConv2D, L.Dense, L.EinsumDense)):
        if isinstance(layer, (L.Dense, L.EinsumDense)):
            op = "dense"
            kernel = getattr(layer, "kernel", None)
            extra["fan_in"] = int(kernel.shape[0]) if kernel is not None else None
            extra["units"] = getattr(layer, "units", None)
        else:
            depthwise = isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D))
            op = "depthwise_conv" if depthwise else "conv"
            ks = tuple(int(k) for k in layer.kernel_size)
            extra["kernel_size"] = ks
            if isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
                kernel = layer.pointwise_kernel
                extra["fan_in"] = int(np.prod(kernel.shape[:-1]))
                extra["units"] = int(layer.filters)
            else:
                kernel = layer.kernel
                if depthwise:
                    extra["fan_in"] = int(np.prod(ks))
                    extra["units"] = int(kernel.shape[-2] * kernel.shape[-1])
                else:
                    extra["fan_in"] = int(np.prod(kernel.shape[:-1]))
                    extra["units"] = int(layer.filters)
        return g.WEIGHTED, op, act, extra
    if isinstance(layer, L.Softmax):
        return g.SOFTMAX, None, "softmax", extra
    if isinstance(layer, L.Activation):
        if act == "softmax":
            return g.SOFTMAX, None, act, extra
        if act == "log_softmax":
            return g.LOG_SOFTMAX, None, act, extra
        return g.ACTIVATION, None, act, extra
    if isinstance(layer, L.ReLU):
        return g.ACTIVATION, None, "relu", extra
    if isinstance(layer, L.LeakyReLU):
        return g.ACTIVATION, None, "leaky_relu", extra
    if isinstance(layer, L.PReLU):
        return g.ACTIVATION, None, "prelu", extra
    if isinstance(layer, L.ELU):
        return g.ACTIVATION, None, "elu", extra
    if isinstance(layer, (L.GlobalAveragePooling1D, L.GlobalAveragePooling2D,
                          L.GlobalAveragePooling3D)):
        return g.GLOBAL_POOL, "avg", None, extra
    if isinstance(layer, (L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D)):
        return g.GLOBAL_POOL, "max", None, extra
    if isinstance(layer, (L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D)):
        return g.POOL, "max", None, extra
    if isinstance(layer, (L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D)):
        return g.POOL, "avg", None, extra
    if isinstance(layer, (L.Flatten, L.Reshape, L.Permute, L.RepeatVector, L.ZeroPadding1D,
                          L.ZeroPadding2D, L.ZeroPadding3D, L.Cropping1D, L.Cropping2D,
                          L.Cropping3D, L.UpSampling1D, L.UpSampling2D, L.UpSampling3D)):
        return g.SHAPE, None, None, extra
    if isinstance(layer, (L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D,
                          L.GaussianDropout, L.AlphaDropout)):
        extra["rate"] = float(layer.rate)
        return g.DROPOUT, None, None, extra
    if isinstance(layer, L.GaussianNoise):
        return g.DROPOUT, "noise", None, extra
    if isinstance(layer, (L.BatchNormalization, L.LayerNormalization, L.GroupNormalization,
                          L.UnitNormalization)):
        return g.NORM, None, None, extra
    if isinstance(layer, L.Rescaling):
        scale = layer.scale
        extra["scale"] = float(scale) if np.ndim(scale) == 0 else None
        return g.RESCALE, None, None, extra
    if isinstance(layer, L.Normalization):
        return g.RESCALE, None, None, extra
    if isinstance(layer, (L.Add, L.Concatenate, L.Multiply, L.Average, L.Subtract, L.Maximum,
                          L.Minimum)):
        return g.MERGE, None, None, extra
    return g.OTHER, None, act if act and act != "linear" else None, extra
