"""``keras.backend`` of Keras 1/2: ``image_dim_ordering`` / ``set_image_dim_ordering`` ('tf' is
channels_last, 'th' channels_first). The image data format is put back after the run."""
from __future__ import annotations

ORDERING = {"tf": "channels_last", "th": "channels_first"}


def install(legacy) -> None:
    import keras

    backend = keras.backend
    before = keras.config.image_data_format()
    legacy.cleanups.append(lambda: keras.config.set_image_data_format(before))
    previous = vars(backend).get("__getattr__")

    def set_image_dim_ordering(value):
        fmt = ORDERING.get(value, value)
        legacy.note(f"`set_image_dim_ordering({value!r})` is Keras 1; ran as "
                    f"`keras.config.set_image_data_format({fmt!r})`", key="set_image_dim_ordering")
        keras.config.set_image_data_format(fmt)

    def image_dim_ordering():
        legacy.note("`image_dim_ordering()` is Keras 1; ran as `keras.config.image_data_format()`",
                    key="image_dim_ordering")
        return "th" if keras.config.image_data_format() == "channels_first" else "tf"

    names = {"set_image_dim_ordering": set_image_dim_ordering,
             "image_dim_ordering": image_dim_ordering}

    def __getattr__(name):
        if name in names and legacy.active:
            return names[name]
        if previous is not None:
            return previous(name)
        raise AttributeError(f"module 'keras.backend' has no attribute {name!r}")

    legacy._patch(backend, "__getattr__", __getattr__)
