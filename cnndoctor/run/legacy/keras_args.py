"""Keras 1/2 arguments of layers and optimizers, renamed to their Keras 3 names.

- ``Convolution2D(32, 3, 3)`` / ``Conv2D(32, 3, 3)``: Keras 1's (filters, rows, cols); Keras 2
  converted it the same way (with a warning), Keras 3 would read the second 3 as strides.
- ``border_mode``, ``subsample``, ``init``, ``W_regularizer``, ``b_regularizer``,
  ``dim_ordering``, ``output_dim``, ``nb_filter``, ``bias`` on convolutions, poolings and Dense.
- Optimizers' ``lr`` (Keras 2) and ``decay`` (Keras 2's time decay ``lr / (1 + decay * step)``,
  which is ``InverseTimeDecay(lr, decay_steps=1, decay_rate=decay)``).
"""
from __future__ import annotations

# Keras 1 argument -> Keras 3 argument, on every layer patched below.
RENAMED = {
    "border_mode": "padding",
    "subsample": "strides",
    "init": "kernel_initializer",
    "W_regularizer": "kernel_regularizer",
    "b_regularizer": "bias_regularizer",
    "W_constraint": "kernel_constraint",
    "b_constraint": "bias_constraint",
    "dim_ordering": "data_format",
    "output_dim": "units",
    "nb_filter": "filters",
    "bias": "use_bias",
}
DIM_ORDERING = {"tf": "channels_last", "th": "channels_first"}
CONV_CLASSES = ("Conv2D", "Conv1D", "Conv3D", "SeparableConv2D", "Conv2DTranspose")
OTHER_CLASSES = ("MaxPooling2D", "AveragePooling2D", "MaxPooling1D", "AveragePooling1D",
                 "GlobalAveragePooling2D", "GlobalMaxPooling2D", "Dense", "ZeroPadding2D",
                 "UpSampling2D", "Flatten")


def install(legacy) -> None:
    import keras

    for name in CONV_CLASSES + OTHER_CLASSES:
        cls = getattr(keras.layers, name, None)
        if cls is not None and "__init__" in vars(cls):
            legacy._patch(cls, "__init__", _wrap_layer_init(legacy, cls, vars(cls)["__init__"],
                                                            name in CONV_CLASSES))
    from keras.src.optimizers.base_optimizer import BaseOptimizer

    legacy._patch(BaseOptimizer, "__init__",
                  _wrap_optimizer_init(legacy, vars(BaseOptimizer)["__init__"]))


def _wrap_layer_init(legacy, cls, orig, conv: bool):
    # The first parameter must be called ``self`` and the wrapper must not carry __wrapped__:
    # Keras' Operation.__new__ reads the signature of __init__ to record the call's config.
    def __init__(self, *args, **kwargs):
        self_ = self
        if not legacy.active or type(self_) is not cls:
            return orig(self_, *args, **kwargs)
        changes = []
        if conv and len(args) >= 3 and _is_int(args[1]) and _is_int(args[2]) \
                and "kernel_size" not in kwargs:
            rows, cols = int(args[1]), int(args[2])
            changes.append(f"`{cls.__name__}({args[0]}, {rows}, {cols})` is Keras 1 (filters, "
                           f"rows, cols); ran as `{cls.__name__}({args[0]}, ({rows}, {cols}))`")
            args = (args[0], (rows, cols)) + tuple(args[3:])
        if conv and "nb_row" in kwargs and "nb_col" in kwargs:
            ks = (kwargs.pop("nb_row"), kwargs.pop("nb_col"))
            kwargs["kernel_size"] = ks
            changes.append(f"`nb_row`/`nb_col` are Keras 1; ran as `kernel_size={ks}`")
        for old, new in RENAMED.items():
            if old not in kwargs:
                continue
            value = kwargs.pop(old)
            if old == "dim_ordering":
                value = DIM_ORDERING.get(value)
                if value is None:  # 'default': Keras' own setting
                    changes.append("`dim_ordering` is Keras 1; left to the Keras 3 default")
                    continue
            kwargs[new] = value
            changes.append(f"`{old}=` is Keras 1; ran as `{new}=` ({cls.__name__})")
        for text in changes:
            legacy.note(text)
        return orig(self_, *args, **kwargs)

    __init__.__doc__ = orig.__doc__
    return __init__


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _wrap_optimizer_init(legacy, orig):
    def __init__(self_, *args, **kwargs):
        if not legacy.active or ("lr" not in kwargs and "decay" not in kwargs):
            return orig(self_, *args, **kwargs)
        name = type(self_).__name__
        if "lr" in kwargs:
            lr = kwargs.pop("lr")
            kwargs["learning_rate"] = lr
            if args:  # learning_rate given positionally by the subclass: replace it
                args = (lr,) + tuple(args[1:])
                kwargs.pop("learning_rate")
            legacy.note(f"`{name}(lr={lr})` is Keras 2; ran as `{name}(learning_rate={lr})`")
        if "decay" in kwargs:
            decay = float(kwargs.pop("decay") or 0.0)
            if decay:
                import keras

                lr = args[0] if args else kwargs.get("learning_rate", 0.001)
                sched = keras.optimizers.schedules.InverseTimeDecay(
                    lr, decay_steps=1, decay_rate=decay)
                if args:
                    args = (sched,) + tuple(args[1:])
                else:
                    kwargs["learning_rate"] = sched
                legacy.note(f"`{name}(decay={decay:g})` is Keras 2; ran as `learning_rate="
                            f"keras.optimizers.schedules.InverseTimeDecay({lr}, decay_steps=1, "
                            f"decay_rate={decay:g})`")
            else:
                legacy.note(f"`{name}(decay=0)` is Keras 2; dropped (no decay)")
        return orig(self_, *args, **kwargs)

    __init__.__wrapped__ = orig
    __init__.__doc__ = orig.__doc__
    return __init__
