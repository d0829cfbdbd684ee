"""Seeding the scripts' random generators, so that running the same scripts twice gives the same
diagnosis.

A script that never seeds draws its initial weights, its shuffles and its augmentations from
generators that Python and NumPy seed from the operating system at start-up: two plain runs train
two different models. Under ``cnndoctor run`` that made the diagnosis of one unmodified script
change from run to run (the seed-002 lane script: 170 of 256 units of its giant convolution dead
in one run, no dead-unit warning and exit 0 instead of 1 in another; the seed-003 CIFAR script:
its label probe at p = 7e-6 in one run and an error, p >= 0.05, in another). So before each script, as a fresh interpreter
would start it, Python's, NumPy's, torch's and (once imported) Keras' global generators are seeded
with the run's seed. A script that seeds its own generators keeps its seeds: it sets them after.
"""
from __future__ import annotations

import random
import sys

import numpy as np


def seed_generators(seed: int) -> list[str]:
    """Seed the global random generators a script draws from; the names of those seeded."""
    random.seed(seed)
    np.random.seed(seed)
    seeded = ["Python", "NumPy"]
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)
        seeded.append("torch")
    if "keras" in sys.modules:
        # Keras draws unseeded initialisers and layers from Python's generator; this also drops
        # its global SeedGenerator so that an earlier script's draws do not carry over.
        try:
            from keras.utils import set_random_seed
        except ImportError:  # pragma: no cover - a Keras without it (older than 2.7)
            pass
        else:
            set_random_seed(seed)
            seeded.append("Keras")
    return seeded
