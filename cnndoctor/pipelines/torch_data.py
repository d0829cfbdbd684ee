"""torch ``Dataset`` and ``DataLoader`` (their transforms included), read in this process.

Only the sampled indices are read (``dataset[i]``), through the loader's own ``collate_fn``, so
the arrays are exactly what the model is fed. Worker processes are never started: a loader's
``num_workers`` is ignored (the items are read here, one by one), which cannot hang and gives the
same items. Labels known without reading (``targets``, ImageFolder's ``samples``) make the sample
stratified by class; otherwise it is a uniform random sample for the seed.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from . import normalization, sampling
from .common import Sample, array_of, check_image, concat_batches, unpack

#: Items collated into one batch while reading (bounds the memory of one step).
READ_BATCH = 64


def is_loader(obj: Any) -> bool:
    from torch.utils.data import DataLoader

    return isinstance(obj, DataLoader)


def is_dataset(obj: Any) -> bool:
    from torch.utils.data import Dataset, IterableDataset

    return isinstance(obj, Dataset) and not isinstance(obj, IterableDataset)


def is_iterable_dataset(obj: Any) -> bool:
    from torch.utils.data import IterableDataset

    return isinstance(obj, IterableDataset)


def known_labels(ds: Any) -> np.ndarray | None:
    """Labels of every item without reading the images (ImageFolder, CIFAR, MNIST, Subset)."""
    from torch.utils.data import Subset

    if isinstance(ds, Subset):
        inner = known_labels(ds.dataset)
        return None if inner is None else inner[np.asarray(ds.indices)]
    for attr in ("targets", "labels"):
        v = getattr(ds, attr, None)
        if v is not None and not callable(v):
            try:
                arr = np.asarray(array_of(v, "labels")).reshape(-1)
            except Exception:
                continue
            if len(arr) == len(ds) and arr.dtype.kind in "iu":
                return arr.astype(np.int64)
    samples = getattr(ds, "samples", None) or getattr(ds, "imgs", None)
    if isinstance(samples, (list, tuple)) and len(samples) == len(ds) and samples and \
            isinstance(samples[0], (tuple, list)) and len(samples[0]) == 2:
        try:
            return np.asarray([int(s[1]) for s in samples], dtype=np.int64)
        except (TypeError, ValueError):
            return None
    return None


def _collate(loader):
    if loader is not None:
        return loader.collate_fn
    from torch.utils.data import default_collate

    return default_collate


def read(obj: Any, name: str, *, budget: str, seed: int, require_labels: bool) -> Sample:
    loader = obj if is_loader(obj) else None
    ds = loader.dataset if loader is not None else obj
    kind = (f"torch DataLoader over {type(ds).__name__}" if loader is not None
            else f"torch {type(ds).__name__}")
    what = f"the {name} {kind}"
    notes = []
    if loader is not None and getattr(loader, "num_workers", 0):
        notes.append(f"the {name} DataLoader has num_workers={loader.num_workers}: cnndoctor read "
                     f"its items in this process (no worker processes), with the same "
                     f"transforms and collate_fn.")
    collate = _collate(loader)
    norm = normalization.find(ds)
    if is_iterable_dataset(ds):
        from .iterables import read_items

        sample = read_items(iter(ds), name, kind, budget=budget, require_labels=require_labels,
                            collate=collate)
        sample.normalization, sample.notes = norm, notes + sample.notes
        return sample
    try:
        total = len(ds)
    except TypeError as exc:
        raise InputError(f"{what} has no length: expected a map-style Dataset (with __len__ and "
                         f"__getitem__) or an IterableDataset.") from exc
    if total == 0:
        raise InputError(f"{what} is empty: expected at least one item.")
    first = _item(ds, 0, what)
    x0, _ = unpack(first, f"{what}'s item 0", require_labels)
    x0 = array_of(x0, f"{what}'s item 0 image")
    check_image(x0, f"{what}'s item 0 image", batched=False)
    n = sampling.sample_size(name, budget, x0.size * 4)
    labels = known_labels(ds)
    idx = sampling.stratified(labels, n, seed) if labels is not None else \
        sampling.uniform(total, n, seed)
    xs, ys = [], []
    for start in range(0, len(idx), READ_BATCH):
        items = [_item(ds, int(i), what) for i in idx[start:start + READ_BATCH]]
        unpack(items[0], f"{what}'s item {int(idx[start])}", require_labels)
        try:
            batch = collate(items)
        except Exception as exc:
            raise InputError(f"{what}: its items could not be put into one batch "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]}): expected "
                             f"(image, label) pairs with images of one size as tensors or "
                             f"arrays (add ToTensor / a resize to the transforms).") from exc
        bx, by = unpack(batch, f"a batch of {what}", require_labels)
        xs.append(array_of(bx, f"a batch of {what}"))
        ys.append(None if by is None else array_of(by, f"the labels of {what}"))
    x, y = concat_batches(xs, ys, what)
    check_image(x, f"{what}'s images", batched=True)
    how = (f"stratified by class (labels read from the dataset's targets), seed {seed}"
           if labels is not None else f"drawn at random, seed {seed}")
    return Sample(x=x, y=y, source=kind, total_size=total, stratified=labels is not None,
                  how=how, normalization=norm, notes=notes,
                  class_names=list(getattr(ds, "classes", []) or []) or None)


def _item(ds, i: int, what: str):
    try:
        return ds[i]
    except InputError:
        raise
    except Exception as exc:
        msg = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise InputError(f"{what}: reading item {i} failed ({type(exc).__name__}: {msg}): "
                         f"expected dataset[i] to return (image, label).") from exc
