"""Keras losses: what a loss expects from the model (``parse_keras_loss``), a loss object from a
name or a parsed loss (``resolve``, ``with_from_logits``), and how labels must be given to it
(``label_mode``). The one place where Keras loss names are resolved."""
from __future__ import annotations

from typing import Any

from ... import graph as g
from ...errors import InputError
from ...graph import LossInfo
from ..common import DENSE_LOSS_WORDS, loss_name

# canonical name -> (expects when from_logits is False, family)
_KERAS_LOSSES = {
    "categorical_crossentropy": (g.EXPECTS_PROBABILITIES, g.CATEGORICAL),
    "sparse_categorical_crossentropy": (g.EXPECTS_PROBABILITIES, g.SPARSE),
    "binary_crossentropy": (g.EXPECTS_PROBABILITIES, g.BINARY),
    "categorical_focal_crossentropy": (g.EXPECTS_PROBABILITIES, g.CATEGORICAL),
    "binary_focal_crossentropy": (g.EXPECTS_PROBABILITIES, g.BINARY),
    "kl_divergence": (g.EXPECTS_PROBABILITIES, g.CATEGORICAL),
    "poisson": (g.EXPECTS_ANY, g.REGRESSION),
    "mean_squared_error": (g.EXPECTS_ANY, g.REGRESSION),
    "mean_absolute_error": (g.EXPECTS_ANY, g.REGRESSION),
    "mean_absolute_percentage_error": (g.EXPECTS_ANY, g.REGRESSION),
    "mean_squared_logarithmic_error": (g.EXPECTS_ANY, g.REGRESSION),
    "huber": (g.EXPECTS_ANY, g.REGRESSION),
    "log_cosh": (g.EXPECTS_ANY, g.REGRESSION),
    "hinge": (g.EXPECTS_ANY, g.BINARY),
    "squared_hinge": (g.EXPECTS_ANY, g.BINARY),
    "categorical_hinge": (g.EXPECTS_ANY, g.CATEGORICAL),
    "cosine_similarity": (g.EXPECTS_ANY, g.REGRESSION),
}
_ALIASES = {"mse": "mean_squared_error", "mae": "mean_absolute_error",
            "mape": "mean_absolute_percentage_error", "msle": "mean_squared_logarithmic_error",
            "kld": "kl_divergence", "kullback_leibler_divergence": "kl_divergence",
            "logcosh": "log_cosh", "crossentropy": "categorical_crossentropy",
            "huber_loss": "huber"}


def _snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def parse_keras_loss(loss: Any, keras) -> LossInfo:
    """What a Keras loss (string, function or Loss object) expects from the model's output."""
    if isinstance(loss, dict) or (isinstance(loss, (list, tuple)) and len(loss) != 1):
        raise InputError("the model has several outputs or losses; cnndoctor diagnoses "
                         "classifiers with one output and one loss.")
    if isinstance(loss, (list, tuple)):
        loss = loss[0]
    from_logits = False
    if isinstance(loss, str):
        key = _ALIASES.get(loss.lower(), loss.lower())
        source = repr(loss)
    elif isinstance(loss, keras.losses.Loss):
        cfg = {}
        try:
            cfg = loss.get_config()
        except Exception:
            pass
        from_logits = bool(cfg.get("from_logits", getattr(loss, "from_logits", False)))
        fn = getattr(loss, "fn", None)
        key = _snake(type(loss).__name__)
        if key == "loss_function_wrapper" and fn is not None:
            key = fn.__name__
            from_logits = bool(getattr(loss, "_fn_kwargs", {}).get("from_logits", from_logits))
        key = _ALIASES.get(key, key)
        source = f"keras.losses.{type(loss).__name__}(from_logits={from_logits})"
    elif callable(loss):
        name = getattr(loss, "__name__", type(loss).__name__)
        source = f"{getattr(loss, '__module__', '')}.{name}".lstrip(".")
        lowered = name.lower()
        if "softmax_cross_entropy_with_logits" in lowered:
            return LossInfo(name="softmax_cross_entropy_with_logits", expects=g.EXPECTS_LOGITS,
                            family=g.CATEGORICAL, source=source)
        key = _ALIASES.get(lowered, lowered)
        if key not in _KERAS_LOSSES:
            return LossInfo(name=name, expects=g.EXPECTS_ANY, family=g.REGRESSION,
                            source=f"{source} (custom: cnndoctor cannot tell what it expects)")
    else:
        raise InputError(f"unknown loss {loss!r}: expected a Keras loss name such as "
                         f"'categorical_crossentropy', a keras.losses.Loss object, or a function.")
    if key not in _KERAS_LOSSES:
        if isinstance(loss, str):
            raise InputError(f"unknown loss {loss!r}: expected a Keras loss name such as "
                             f"'categorical_crossentropy' or 'sparse_categorical_crossentropy'.")
        return LossInfo(name=key, expects=g.EXPECTS_ANY, family=g.REGRESSION,
                        source=f"{source} (custom: cnndoctor cannot tell what it expects)")
    expects, family = _KERAS_LOSSES[key]
    if from_logits and expects == g.EXPECTS_PROBABILITIES:
        expects = g.EXPECTS_LOGITS
    return LossInfo(name=key, expects=expects, family=family, source=source)


#: Keras loss classes that take ``from_logits``, by canonical name.
FROM_LOGITS_CLASSES = {"sparse_categorical_crossentropy": "SparseCategoricalCrossentropy",
                       "binary_crossentropy": "BinaryCrossentropy",
                       "categorical_crossentropy": "CategoricalCrossentropy"}


def class_name(info: LossInfo | None) -> str | None:
    """The ``keras.losses`` class of a parsed loss that takes ``from_logits`` (None: none)."""
    return FROM_LOGITS_CLASSES.get(info.name if info else "")


def with_from_logits(info: LossInfo | None, from_logits: bool):
    """A new loss object of the parsed loss's class with ``from_logits`` set (None: no such)."""
    import keras

    name = class_name(info)
    return None if name is None else getattr(keras.losses, name)(from_logits=from_logits)


def resolve(loss: Any):
    """A callable loss from what ``compile(loss=...)`` accepts (a name, a config or a loss)."""
    import keras

    return keras.losses.get(loss) if isinstance(loss, (str, dict)) else loss


def label_mode(loss: Any) -> str:
    """How labels must be given to this loss: "sparse" (class indices), "onehot" or "asis"."""
    name = loss_name(loss)
    if "sparse" in name:
        return "sparse"
    if any(w in name for w in DENSE_LOSS_WORDS):
        return "onehot"
    return "asis"
