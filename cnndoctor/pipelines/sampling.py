"""How many images a pipeline is read for, and which ones: bounded, deterministic, stratified.

Data checks and training probes work on one sample per dataset, read once, never on the whole
set: memory and time stay flat however large the data is (``benchmarks/scale.py``).
"""
from __future__ import annotations

import numpy as np

#: Images read from the training pipeline, per budget. Each covers what the probes of that budget
#: use: quick trains on at most 1,024 and holds out 500 (probes/training.py MAX_TRAIN + MAX_VAL),
#: standard 2,048 + 1,000 and the spurious-correlation check reads 3,000; thorough 5,000 + 2,000.
#: "static" reads as many as quick: the data statistics use up to 2,000 (probes/datastats.py).
SAMPLE_SIZE = {"static": 2000, "quick": 2000, "standard": 3100, "thorough": 7000}
#: Images read from a validation, evaluation or reference pipeline, per budget: the evaluation
#: probe compares at most 1,024 (probes/evaluation.py MAX_EVAL_IMAGES); thorough keeps 2,000.
OTHER_SAMPLE_SIZE = {"static": 1024, "quick": 1024, "standard": 1024, "thorough": 2000}
#: Upper bound on one dataset's sample in memory (float32, as the model takes it; the canonical
#: copy doubles it): 256 MB is 2,000 images of 3 x 100 x 100, or 445 ImageNet-sized 224 x 224 x 3.
#: Larger images get a smaller sample and the report says so.
MAX_SAMPLE_BYTES = 256 * 2**20
#: A generator or iterable is read for at most this many batches (empty or one-image batches
#: included), so that one that never ends, or yields nothing useful, cannot hang a diagnosis.
MAX_BATCHES = 4096


def sample_size(name: str, budget: str, bytes_per_image: int | None = None) -> int:
    table = SAMPLE_SIZE if name == "training" else OTHER_SAMPLE_SIZE
    n = table.get(budget, table["standard"])
    if bytes_per_image:
        n = max(1, min(n, MAX_SAMPLE_BYTES // max(1, int(bytes_per_image))))
    return n


def stratified(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` items with each class represented in proportion to its size.

    Deterministic for a seed. Every class present keeps at least one item when ``n`` allows.
    """
    labels = np.asarray(labels)
    total = len(labels)
    if n >= total:
        return np.arange(total)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.floor(counts * n / total).astype(int)
    if n >= len(classes):
        quota = np.maximum(quota, 1)
    # hand out what rounding left, largest remainders first (deterministic order)
    left = n - int(quota.sum())
    if left > 0:
        rema = counts * n / total - np.floor(counts * n / total)
        for i in np.argsort(-rema, kind="stable")[:left]:
            quota[i] += 1
    while quota.sum() > n:  # minimum of one per class overshot: trim the largest quotas
        quota[int(np.argmax(quota))] -= 1
    picked = []
    for c, q in zip(classes, np.minimum(quota, counts)):
        members = np.flatnonzero(labels == c)
        picked.append(rng.permutation(members)[:q])
    return np.sort(np.concatenate(picked)) if picked else np.arange(0)


def uniform(total: int, n: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` of ``total`` items drawn without replacement (labels unknown)."""
    if n >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, n, replace=False))
