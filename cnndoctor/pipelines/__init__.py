"""Real data pipelines: torch ``Dataset``/``DataLoader``, Keras ``PyDataset``, generators and
iterables of batches, image folders. Each is read for a bounded, deterministic sample (stratified
by class where the labels are known without reading the images) into the same ``Dataset`` that
``(x, y)`` arrays give, recording where it came from, how big the whole set is, and the
normalization the pipeline applies.

    ds = pipelines.load("training", "data/train", model=model, framework="keras",
                        data_format="channels_last", budget="quick", seed=0)
    ds.source, ds.total_size, len(ds)     # "image folder data/train", 50000, 2000

One module per kind of source: ``folder``, ``torch_data``, ``iterables`` (generators, iterables and
``PyDataset``); ``sampling`` holds the sizes, ``normalization`` finds Normalize/ToTensor steps.
Arrays and tensors are not pipelines: ``load`` returns None for them (``data.make_dataset`` reads
them whole, as before). A path to an .npz/.npy file is read whole with ``loading.load_arrays``
(``allow_pickle=False``).
"""
from __future__ import annotations

import os
from typing import Any

from ..data import make_dataset
from ..evidence import Dataset
from . import folder, iterables, normalization, sampling, torch_data
from .common import Sample

__all__ = ["load", "is_pipeline", "model_input", "sampling", "normalization"]


def kind_of(source: Any) -> str | None:
    """"folder", "loader", "dataset", "pydataset", "iterable", or None (arrays, tensors, pairs)."""
    if isinstance(source, (str, os.PathLike)):
        return "folder"
    if torch_data.is_loader(source):
        return "loader"
    if iterables.is_pydataset(source):
        return "pydataset"
    if torch_data.is_dataset(source) or torch_data.is_iterable_dataset(source):
        return "dataset"
    if iterables.is_iterable(source):
        return "iterable"
    return None


def is_pipeline(source: Any) -> bool:
    return kind_of(source) is not None


def model_input(model: Any, framework: str) -> tuple[tuple[int, int] | None, int | None]:
    """The (height, width) and channels the model takes, where it says (None when not)."""
    if framework == "keras":
        try:
            shape = tuple(model.inputs[0].shape)
        except Exception:  # subclassed models have no symbolic inputs
            shape = None
        if shape is None:
            try:
                shape = tuple(model.input_shape)
            except Exception:
                shape = None
        if shape is not None and len(shape) == 4:
            h, w, c = shape[1:]
            return ((int(h), int(w)) if h and w else None), (int(c) if c else None)
        return None, None
    for m in model.modules():
        c = getattr(m, "in_channels", None)
        if isinstance(c, int) and type(m).__name__.startswith("Conv"):
            return None, c
    return None, None


def load(name: str, source: Any, *, model: Any, framework: str, data_format: str,
         budget: str, seed: int, require_labels: bool = False,
         like: Dataset | None = None) -> Dataset | None:
    """A ``Dataset`` from a pipeline (None when ``source`` is arrays). ``like``: the training
    Dataset, whose image size and class names a validation/reference folder is read with."""
    kind = kind_of(source)
    if kind is None:
        return None
    if kind == "folder" and os.fspath(source).lower().endswith((".npz", ".npy")):
        from ..loading import load_arrays  # numpy files, read as the CLI reads --train

        return make_dataset(name, load_arrays(source, f"{name} data"), data_format,
                            require_labels=require_labels)
    if kind == "folder":
        size, channels = model_input(model, framework)
        class_names = None
        if like is not None:
            h, w, c = like.images.shape[1:]
            size, channels = size or (int(h), int(w)), channels or int(c)
            class_names = getattr(like, "class_names", None)
        sample = folder.read(source, name, budget=budget, seed=seed,
                             require_labels=require_labels, size=size, channels=channels,
                             channels_first=data_format == "channels_first",
                             class_names=class_names)
    elif kind in ("loader", "dataset"):
        sample = torch_data.read(source, name, budget=budget, seed=seed,
                                 require_labels=require_labels)
    elif kind == "pydataset":
        sample = iterables.read_pydataset(source, name, budget=budget, seed=seed,
                                          require_labels=require_labels)
    else:
        sample = iterables.read_iterable(source, name, budget=budget, seed=seed,
                                         require_labels=require_labels)
    return _dataset(name, sample, data_format, require_labels)


def _dataset(name: str, sample: Sample, data_format: str, require_labels: bool) -> Dataset:
    pair = (sample.x, sample.y) if sample.y is not None else sample.x
    ds = make_dataset(name, pair, data_format, require_labels=require_labels)
    ds.source = sample.source
    ds.total_size = sample.total_size
    ds.sample_size = len(ds)
    ds.sampling = sample.how
    ds.normalization = sample.normalization
    ds.notes = list(sample.notes)
    ds.class_names = sample.class_names
    return ds


def describe(ds: Dataset) -> str:
    """One line for the report: where the data came from and how much of it was read."""
    of = f" of {ds.total_size:,}" if ds.total_size else ""
    line = (f"{ds.name} data: {ds.source}; {len(ds):,}{of} images read ({ds.sampling}); the "
            f"{ds.name} figures are based on these {len(ds):,}")
    if ds.normalization:
        line += f"; the pipeline normalizes: {normalization.describe(ds.normalization)}"
    return line + "."
