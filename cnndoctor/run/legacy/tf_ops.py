"""TensorFlow losses and ops that Keras scripts pass to Keras, as Keras 3 equivalents with the
same meaning, for the TensorFlow stand-in of ``tfcompat`` (TensorFlow is not installed).

A loss that expects logits stays one: ``tf.nn.softmax_cross_entropy_with_logits_v2`` becomes
categorical cross-entropy with ``from_logits=True``, so that a softmax output fed to it is still
seen as the double softmax it is. The losses accept both Keras' ``loss(y_true, y_pred)`` and
TensorFlow's ``labels=..., logits=...`` keywords.
"""
from __future__ import annotations

import types

# tf.nn name -> (Keras 3 loss function, what it is called in the note)
NN_LOSSES = {
    "softmax_cross_entropy_with_logits": ("categorical_crossentropy", "categorical"),
    "softmax_cross_entropy_with_logits_v2": ("categorical_crossentropy", "categorical"),
    "sparse_softmax_cross_entropy_with_logits": ("sparse_categorical_crossentropy", "sparse"),
    "sigmoid_cross_entropy_with_logits": ("binary_crossentropy", "binary"),
}
# tf.nn activations -> keras.activations name
NN_ACTIVATIONS = {"relu": "relu", "softmax": "softmax", "sigmoid": "sigmoid", "tanh": "tanh",
                  "elu": "elu", "selu": "selu", "softplus": "softplus", "relu6": "relu6",
                  "leaky_relu": "leaky_relu", "log_softmax": "log_softmax", "swish": "silu",
                  "silu": "silu", "gelu": "gelu"}
# TF 1 tf.losses.* (labels, logits) losses -> (Keras 3 loss function, from_logits)
TF1_LOSSES = {
    "softmax_cross_entropy": ("categorical_crossentropy", True),
    "sparse_softmax_cross_entropy": ("sparse_categorical_crossentropy", True),
    "sigmoid_cross_entropy": ("binary_crossentropy", True),
    "log_loss": ("binary_crossentropy", False),
}


def _wrapper_class():
    import keras
    from keras.src.losses.losses import LossFunctionWrapper as Base

    class LossFunctionWrapper(Base):  # the Keras name, so that cnndoctor reads it as Keras'
        """A Keras loss that also takes TensorFlow's keyword arguments."""

        def __call__(self, y_true=None, y_pred=None, sample_weight=None, **kwargs):
            for label in ("labels", "onehot_labels", "multi_class_labels"):
                if label in kwargs:
                    y_true = kwargs.pop(label)
            if "logits" in kwargs:
                y_pred = kwargs.pop("logits")
            if "predictions" in kwargs:
                y_pred = kwargs.pop("predictions")
            return Base.__call__(self, y_true, y_pred, sample_weight=sample_weight)

    # Serialized (a copy for the probes) as Keras' own class, which takes the same config.
    LossFunctionWrapper.__module__ = Base.__module__
    LossFunctionWrapper.__qualname__ = Base.__qualname__
    del keras
    return LossFunctionWrapper


def make_loss(fn_name: str, from_logits: bool, name: str):
    import keras

    fn = getattr(keras.losses, fn_name)  # Keras' own function: it serializes by name
    return _wrapper_class()(fn, name=name, from_logits=from_logits)


def nn_module(legacy):
    import keras

    mod = types.ModuleType("tensorflow.nn")
    mod.__doc__ = "cnndoctor stand-in for tf.nn: losses and activations mapped to Keras 3."

    def __getattr__(name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name in NN_LOSSES:
            fn_name, _ = NN_LOSSES[name]
            legacy.note(f"`tf.nn.{name}` is TensorFlow; ran as `keras.losses.{fn_name}` with "
                        f"from_logits=True (it still expects logits)", key=f"tf.nn.{name}")
            return make_loss(fn_name, True, name)
        if name in NN_ACTIVATIONS:
            legacy.note(f"`tf.nn.{name}` is TensorFlow; ran as `keras.activations."
                        f"{NN_ACTIVATIONS[name]}`", key=f"tf.nn.{name}")
            return getattr(keras.activations, NN_ACTIVATIONS[name])
        raise AttributeError(unsupported(f"nn.{name}"))

    mod.__getattr__ = __getattr__
    return mod


def losses_module(legacy):
    import keras

    mod = types.ModuleType("tensorflow.losses")
    mod.__doc__ = "cnndoctor stand-in for tf.losses: Keras 3 losses."

    def __getattr__(name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name in TF1_LOSSES:
            fn_name, logits = TF1_LOSSES[name]
            legacy.note(f"`tf.losses.{name}` is TensorFlow 1; ran as `keras.losses.{fn_name}` "
                        f"with from_logits={logits}", key=f"tf.losses.{name}")
            return make_loss(fn_name, logits, name)
        if hasattr(keras.losses, name):
            legacy.note(f"`tf.losses.{name}` is TensorFlow; ran as `keras.losses.{name}`",
                        key=f"tf.losses.{name}")
            return getattr(keras.losses, name)
        raise AttributeError(unsupported(f"losses.{name}"))

    mod.__getattr__ = __getattr__
    return mod


def set_random_seed(legacy, name: str):
    import keras

    def seed(value):
        legacy.note(f"`tf.{name}` is TensorFlow; ran as `keras.utils.set_random_seed`",
                    key=f"tf.{name}")
        return keras.utils.set_random_seed(int(value))

    seed.__name__ = name.rsplit(".", 1)[-1]
    return seed


def unsupported(name: str) -> str:
    return (f"`tf.{name}` is TensorFlow, which is not installed: cnndoctor runs this script on "
            f"Keras 3 with the torch backend, where only `tf.keras`, `tf.nn` losses and "
            f"activations, `tf.losses` and seeding are mapped. Change `tf.{name}` to its Keras 3 "
            f"equivalent (keras.ops.* for tensor math, keras.utils.set_random_seed for seeding, "
            f"numpy arrays or a keras.utils.PyDataset instead of tf.data), or install TensorFlow "
            f"and set KERAS_BACKEND=torch.")
