"""A zoo of small healthy models of the architectures people train, and mutations that break them.

``ZOO`` maps a name to a ``ZooEntry``; ``entry.build(seed, cfg)`` returns a ``cases.Setup``
(model, data, loss, optimizer, batch size, exactly as ``cnndoctor.diagnose`` takes them).
``mutations.OPERATORS`` inject one bug class each into any entry they apply to.
``benchmarks/mutations.py`` runs the whole matrix; ``tests/test_zoo.py`` a subset.
"""
from .registry import ZOO, ZooEntry, get  # noqa: F401
