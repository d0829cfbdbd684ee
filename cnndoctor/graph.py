"""The framework-neutral description of a model and its loss.

Adapters (``cnndoctor.adapters``) turn a Keras 3 model or a ``torch.nn.Module`` into a
``ModelGraph``; static checks read only this description, so each check is written once for both
frameworks.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# Layer kinds. A check asks "what kind of thing is this", never "which class is this".
WEIGHTED = "weighted"  # conv / dense / depthwise ...: a learned linear map (see Layer.op)
ACTIVATION = "activation"  # elementwise nonlinearity: relu, sigmoid, tanh, gelu, ...
SOFTMAX = "softmax"  # softmax over classes
LOG_SOFTMAX = "log_softmax"
POOL = "pool"  # max / average pooling that keeps a spatial map
GLOBAL_POOL = "global_pool"  # global average / max pooling
SHAPE = "shape"  # flatten, reshape, permute, squeeze: moves numbers, computes nothing
DROPOUT = "dropout"
NORM = "norm"  # batch / layer / group normalization (learned affine + statistics)
RESCALE = "rescale"  # input scaling inside the model: Rescaling, Normalization, x / 255, (x - m) / s
MERGE = "merge"  # add, concatenate, multiply: joins branches
INPUT = "input"
OTHER = "other"

# Activation names used across adapters (lower case).
LINEAR = "linear"
NONLINEAR_ACTIVATIONS = frozenset(
    {"relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "silu", "swish", "sigmoid", "tanh",
     "softplus", "softsign", "hard_sigmoid", "hard_swish", "mish", "prelu", "exponential",
     "hardtanh", "celu", "rrelu", "log_sigmoid", "glu", "threshold", "softshrink",
     "hardshrink", "tanhshrink", "hardsigmoid", "hardswish"})
#: Layer kinds that pass values through without computing anything a check cares about.
PASS_THROUGH = frozenset({SHAPE, DROPOUT})


@dataclass
class Layer:
    """One step of the model in execution order.

    ``activation`` is the activation fused into the layer (Keras ``Dense(10, activation='relu')``)
    or, for an ``ACTIVATION``/``SOFTMAX`` layer, the function it applies.
    """

    name: str
    kind: str
    source: str  # what the user wrote: "Conv2D", "nn.Linear", "F.relu", "x.softmax(1)"
    activation: str | None = None
    op: str | None = None  # for WEIGHTED: "conv", "dense", "depthwise_conv"; for POOL: "max"/"avg"
    params: int = 0
    trainable_params: int = 0
    fan_in: int | None = None  # inputs feeding one output unit (kernel area x input channels)
    units: int | None = None  # output units / filters
    kernel_size: tuple[int, ...] | None = None
    input_shape: tuple[int | None, ...] | None = None  # without the batch axis
    output_shape: tuple[int | None, ...] | None = None  # without the batch axis
    rate: float | None = None  # dropout rate
    inputs: list[str] = field(default_factory=list)  # names of the layers feeding this one
    scale: float | None = None  # RESCALE: multiplier applied to the input, when known

    @property
    def label(self) -> str:
        """How to name this step to a person: its name, and what it is when the name is a
        bare index (torch nn.Sequential names its children "0", "1", ...)."""
        return f"{self.name} ({self.source})" if self.name.rsplit(".", 1)[-1].isdigit() \
            else self.name

    @property
    def nonlinear(self) -> bool:
        """True when this step applies an elementwise nonlinearity (fused or standalone)."""
        return (self.activation or LINEAR) in NONLINEAR_ACTIVATIONS

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


# What a loss expects from the model's output.
EXPECTS_LOGITS = "logits"
EXPECTS_PROBABILITIES = "probabilities"
EXPECTS_LOG_PROBABILITIES = "log_probabilities"
EXPECTS_ANY = "any"  # regression losses (MSE, MAE): no opinion

# Loss families.
CATEGORICAL = "categorical"  # one-hot labels
SPARSE = "sparse"  # integer labels
BINARY = "binary"  # 0/1 per output unit
REGRESSION = "regression"


@dataclass
class LossInfo:
    name: str  # canonical: "categorical_crossentropy", "cross_entropy", "nll", "bce", "mse", ...
    expects: str  # one of EXPECTS_*
    family: str  # one of CATEGORICAL, SPARSE, BINARY, REGRESSION
    source: str  # what the user wrote: "'categorical_crossentropy'", "nn.CrossEntropyLoss()"

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class ModelGraph:
    framework: str  # "keras" or "torch"
    name: str
    layers: list[Layer]
    input_shape: tuple[int | None, ...] | None  # without the batch axis, as the model takes it
    data_format: str  # "channels_last" or "channels_first"
    loss: LossInfo | None = None
    notes: list[str] = field(default_factory=list)  # what the adapter could not see, in words

    # ---- navigation helpers used by checks -------------------------------------------------
    def by_name(self, name: str) -> Layer | None:
        for layer in self.layers:
            if layer.name == name:
                return layer
        return None

    def predecessors(self, layer: Layer) -> list[Layer]:
        found = [self.by_name(n) for n in layer.inputs]
        return [p for p in found if p is not None]

    def successors(self, layer: Layer) -> list[Layer]:
        return [other for other in self.layers if layer.name in other.inputs]

    def producer(self, layer: Layer, skip=PASS_THROUGH) -> Layer | None:
        """The nearest single predecessor that is not a pass-through step (flatten, dropout...)."""
        preds = self.predecessors(layer)
        while len(preds) == 1 and preds[0].kind in skip:
            preds = self.predecessors(preds[0])
        return preds[0] if len(preds) == 1 else None

    @property
    def weighted(self) -> list[Layer]:
        return [layer for layer in self.layers if layer.kind == WEIGHTED]

    @property
    def total_params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def output_layer(self) -> Layer | None:
        """The last step that computes something (pass-through steps after it are skipped)."""
        for layer in reversed(self.layers):
            if layer.kind not in PASS_THROUGH:
                return layer
        return None

    @property
    def output_activation(self) -> str:
        """What the model's output is: "softmax", "log_softmax", "sigmoid", "relu", ... or "linear"."""
        last = self.output_layer
        if last is None:
            return LINEAR
        if last.kind == SOFTMAX:
            return "softmax"
        if last.kind == LOG_SOFTMAX:
            return "log_softmax"
        return last.activation or LINEAR

    @property
    def output_units(self) -> int | None:
        if self.layers and self.layers[-1].output_shape:
            shape = [d for d in self.layers[-1].output_shape if d is not None]
            if shape:
                return int(shape[-1] if self.data_format == "channels_last" or len(shape) == 1
                           else shape[0])
        last_weighted = self.weighted[-1] if self.weighted else None
        return last_weighted.units if last_weighted else None

    def to_dict(self) -> dict:
        return {
            "framework": self.framework,
            "name": self.name,
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "data_format": self.data_format,
            "total_params": self.total_params,
            "output_activation": self.output_activation,
            "output_units": self.output_units,
            "loss": self.loss.to_dict() if self.loss else None,
            "layers": [layer.to_dict() for layer in self.layers],
            "notes": list(self.notes),
        }
