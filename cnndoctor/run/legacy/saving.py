"""HDF5 model files (``model.save('model.h5')``, ``load_model('model.h5')``): Keras 3 still
writes and reads them with h5py, in its legacy format; the mapping only says so in a note."""
from __future__ import annotations

import os

H5_SUFFIXES = (".h5", ".hdf5")


def _is_h5(path) -> bool:
    return isinstance(path, (str, os.PathLike)) and os.fspath(path).lower().endswith(H5_SUFFIXES)


def install(legacy) -> None:
    import keras
    from keras.src.models.model import Model

    save = Model.save

    def model_save(self_, filepath, *args, **kwargs):
        if legacy.active and _is_h5(filepath):
            legacy.note(f"`model.save({os.path.basename(os.fspath(filepath))!r})`: HDF5 is a "
                        f"legacy format in Keras 3; saved with h5py (the native format is "
                        f"`.keras`)", key="save-h5")
        return save(self_, filepath, *args, **kwargs)

    model_save.__wrapped__ = save
    model_save.__name__ = "save"
    legacy._patch(Model, "save", model_save)
    for mod in (keras.models, keras.saving):
        orig = getattr(mod, "load_model", None)
        if orig is None:
            continue
        legacy._patch(mod, "load_model", _wrap_load(legacy, orig))


def _wrap_load(legacy, orig):
    def load_model(filepath, *args, **kwargs):
        if legacy.active and _is_h5(filepath):
            legacy.note(f"`load_model({os.path.basename(os.fspath(filepath))!r})`: HDF5 is a "
                        f"legacy format in Keras 3; read with h5py", key="load-h5")
        return orig(filepath, *args, **kwargs)

    load_model.__wrapped__ = orig
    load_model.__name__ = "load_model"
    return load_model
