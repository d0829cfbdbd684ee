"""``keras.preprocessing.image.ImageDataGenerator`` (removed from Keras 3's public API) as Keras'
own legacy implementation, whose ``flow`` returns a ``keras.utils.PyDataset``: shifts, flips,
rotations, featurewise centering and normalization (``fit``) behave as in Keras 2."""
from __future__ import annotations

# Names of keras.preprocessing.image in Keras 2 that Keras 3 keeps only in its legacy module.
LEGACY_NAMES = ("ImageDataGenerator", "NumpyArrayIterator", "DirectoryIterator", "Iterator",
                "DataFrameIterator", "apply_affine_transform", "random_shift", "random_rotation",
                "random_zoom", "random_shear", "random_brightness", "random_channel_shift")


def install(legacy) -> None:
    import importlib

    try:
        image = importlib.import_module("keras.preprocessing.image")
        from keras.src.legacy.preprocessing import image as old
    except ImportError:  # pragma: no cover - another Keras layout
        return
    previous = vars(image).get("__getattr__")

    def __getattr__(name):
        if name in LEGACY_NAMES and hasattr(old, name) and legacy.active:
            legacy.note(f"`keras.preprocessing.image.{name}` is Keras 2 (not in Keras 3); ran as "
                        f"Keras' legacy {name} (a keras.utils.PyDataset; to port: "
                        f"keras.layers.RandomTranslation/RandomFlip in the model, or a "
                        f"PyDataset)", key=f"image.{name}")
            return getattr(old, name)
        if previous is not None:
            return previous(name)
        raise AttributeError(f"module 'keras.preprocessing.image' has no attribute {name!r}")

    legacy._patch(image, "__getattr__", __getattr__)
