"""Python generators and iterables of ``(x, y)`` batches (or single samples), Keras ``PyDataset``.

A generator is read from its start, for at most the sample size (or ``MAX_BATCHES`` batches):
one that never ends cannot hang the diagnosis. Generators are consumed by reading: pass a fresh
one (an iterable such as a list or a class with ``__iter__`` is iterated anew). A ``PyDataset``
is indexed by batch: batches are read in an order drawn from the seed until the sample is full,
then the sample is trimmed by class.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np

from ..errors import InputError
from . import normalization, sampling
from .common import Sample, array_of, check_image, concat_batches, unpack


#: A PyDataset is read for up to this many times the sample size, in batches spread evenly over
#: it, then trimmed to the sample by class: batches hold neighbouring items, and in data stored
#: in class order a sample of whole batches would miss classes (4x covers 10 classes sorted into
#: batches of 20 with a 100-image sample: tests/test_pipelines.py).
OVERREAD = 4


def is_pydataset(obj: Any) -> bool:
    import sys

    keras = sys.modules.get("keras")
    cls = getattr(getattr(keras, "utils", None), "PyDataset", None) if keras else None
    return cls is not None and isinstance(obj, cls)


def is_iterable(obj: Any) -> bool:
    if isinstance(obj, (str, bytes, dict, tuple, list, np.ndarray)) or hasattr(obj, "shape"):
        return False
    return hasattr(obj, "__iter__") or hasattr(obj, "__next__")


def _is_single(x: np.ndarray, y: Any) -> bool:
    """One sample rather than a batch: its label is a single number."""
    if y is None:
        return False
    try:
        return np.ndim(array_of(y, "label")) == 0
    except InputError:
        return False


def read_items(it: Iterator, name: str, kind: str, *, budget: str, require_labels: bool,
               collate: Callable | None = None) -> Sample:
    """Read (x, y) batches or samples from an iterator, up to the sample size."""
    what = f"the {name} {kind}"
    n_max = sampling.sample_size(name, budget)
    xs, ys, single_x, single_y = [], [], [], []
    got, batches, ended = 0, 0, False
    while got < n_max:
        if batches >= sampling.MAX_BATCHES:
            break
        try:
            item = next(it)
        except StopIteration:
            ended = True
            break
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"{what} failed while yielding batch {batches} "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
                             f"): expected it to yield (images, labels).") from exc
        batches += 1
        bx, by = unpack(item, f"item {batches - 1} of {what}", require_labels)
        x = array_of(bx, f"the images of item {batches - 1} of {what}")
        if _is_single(x, by):
            check_image(x, f"item {batches - 1} of {what}", batched=False)
            single_x.append(x)
            single_y.append(array_of(by, "label"))
            got += 1
            if n_max == got or len(single_x) >= 64:
                if collate is not None:
                    import torch

                    cb = collate([(torch.as_tensor(a), torch.as_tensor(b))
                                  for a, b in zip(single_x, single_y)])
                    xs.append(array_of(cb[0], what)), ys.append(array_of(cb[1], what))
                else:
                    xs.append(np.stack(single_x)), ys.append(np.stack(single_y))
                single_x, single_y = [], []
            continue
        if x.ndim == 0 or x.shape[0] == 0:
            continue
        check_image(x, f"item {batches - 1} of {what}", batched=True)
        y = None if by is None else array_of(by, f"the labels of item {batches - 1} of {what}")
        if y is not None and (y.ndim == 0 or y.shape[0] != x.shape[0]):
            raise InputError(f"item {batches - 1} of {what} has {x.shape[0]} images but labels "
                             f"of shape {tuple(y.shape)}: expected one label per image.")
        take = min(len(x), n_max - got)
        xs.append(x[:take])
        ys.append(None if y is None else y[:take])
        got += take
    if single_x:
        xs.append(np.stack(single_x)), ys.append(np.stack(single_y))
    if not xs:
        raise InputError(f"{what} yielded no images"
                         f"{f' in {batches} batches' if batches else ''}: expected (images, "
                         f"labels) batches.")
    x, y = concat_batches(xs, ys, what)
    notes = []
    if not ended:
        stop = (f"it was still yielding after {sampling.MAX_BATCHES} batches"
                if batches >= sampling.MAX_BATCHES and got < n_max else
                f"reading stopped at the sample size of {n_max}")
        notes.append(f"the {name} {kind} was read for its first {len(x)} images ({stop}); "
                     f"a generator's order decides which: shuffle it for a representative "
                     f"sample.")
    return Sample(x=x, y=y, source=kind, total_size=len(x) if ended else None,
                  stratified=False, how=f"the first {len(x)} it yielded", notes=notes)


def read_iterable(obj: Any, name: str, *, budget: str, seed: int, require_labels: bool
                  ) -> Sample:
    kind = "generator" if hasattr(obj, "__next__") else f"iterable {type(obj).__name__}"
    try:
        it = iter(obj)
    except Exception as exc:
        raise InputError(f"the {name} {kind} could not be iterated ({type(exc).__name__}): "
                         f"expected (images, labels) batches.") from exc
    sample = read_items(it, name, kind, budget=budget, require_labels=require_labels)
    sample.normalization = normalization.find(obj)
    return sample


def read_pydataset(obj: Any, name: str, *, budget: str, seed: int, require_labels: bool
                   ) -> Sample:
    kind = f"Keras PyDataset {type(obj).__name__}"
    what = f"the {name} {kind}"
    try:
        n_batches = getattr(obj, "num_batches", None)
        n_batches = len(obj) if n_batches is None else n_batches
    except Exception as exc:
        raise InputError(f"{what} has no length: expected __len__ (the number of batches).") \
            from exc
    if n_batches is None:  # an infinite PyDataset: read it like a generator, by index
        def gen():
            i = 0
            while True:
                yield obj[i]
                i += 1
        sample = read_items(gen(), name, kind, budget=budget, require_labels=require_labels)
        return sample
    if n_batches == 0:
        raise InputError(f"{what} has no batches: expected at least one.")
    n_max = sampling.sample_size(name, budget)
    # Batches evenly spread over the whole dataset (a PyDataset in class order still covers
    # every class), OVERREAD times more images than the sample, then trimmed by class.
    first = obj[0]
    bx0, _ = unpack(first, f"batch 0 of {what}", require_labels)
    per_batch = max(1, len(array_of(bx0, f"batch 0 of {what}")))
    want = int(min(n_batches, np.ceil(OVERREAD * n_max / per_batch)))
    order = np.unique(np.linspace(0, int(n_batches) - 1, want).round().astype(int))
    xs, ys, got, batch_size = [], [], 0, None
    for b in order:
        if got >= OVERREAD * n_max:
            break
        try:
            item = obj[int(b)]
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"{what}: reading batch {int(b)} failed ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:160] if str(exc) else ''}): expected "
                             f"dataset[i] to return (images, labels).") from exc
        bx, by = unpack(item, f"batch {int(b)} of {what}", require_labels)
        x = array_of(bx, f"batch {int(b)} of {what}")
        check_image(x, f"batch {int(b)} of {what}", batched=True)
        y = None if by is None else array_of(by, f"the labels of batch {int(b)} of {what}")
        if y is not None and (y.ndim == 0 or y.shape[0] != x.shape[0]):
            raise InputError(f"batch {int(b)} of {what} has {x.shape[0]} images but labels of "
                             f"shape {tuple(y.shape)}: expected one label per image.")
        batch_size = batch_size or len(x)
        xs.append(x), ys.append(y)
        got += len(x)
    x, y = concat_batches(xs, ys, what)
    stratified = False
    if y is not None and len(x) > n_max:
        from ..runtime import integer_labels

        keep = sampling.stratified(integer_labels(y), n_max, seed)
        x, y, stratified = x[keep], y[keep], True
    elif len(x) > n_max:
        x = x[:n_max]
    total = int(n_batches) * int(batch_size or 0) or None
    return Sample(x=x, y=y, source=kind, total_size=total, stratified=stratified,
                  how=f"{len(xs)} of {n_batches} batches spread over the dataset"
                      + (", trimmed by class" if stratified else ""),
                  normalization=normalization.find(obj))
