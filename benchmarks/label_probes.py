"""Accuracy of the labels-uninformative probes on each built-in case's data, real and shuffled.

    python benchmarks/label_probes.py [SEEDS]    (default: 3)

For each case (one variant per case) and seed, prints the cross-validated accuracy of the four
probes (nearest centroid and 5-NN, on pooled pixels and on position-free statistics) with the
labels as given, and the best probe's accuracy with the labels shuffled (it must stay at chance).
"""
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402

from cnndoctor.cases import all_cases  # noqa: E402
from cnndoctor.checks.labels_uninformative import MAX_IMAGES, probe_accuracies  # noqa: E402
from cnndoctor.data import make_dataset  # noqa: E402


def main(seeds: int) -> None:
    seen = set()
    for case in all_cases():
        if case.key in seen:
            continue
        seen.add(case.key)
        for seed in range(seeds):
            setup = case.build(seed)
            fmt = "channels_first" if case.framework == "torch" else "channels_last"
            ds = make_dataset("training", setup.train, fmt)
            x, y = ds.images, ds.labels
            if len(y) > MAX_IMAGES:
                idx = np.random.default_rng(0).choice(len(y), MAX_IMAGES, replace=False)
                x, y = x[idx], y[idx]
            start = time.perf_counter()
            accs = probe_accuracies(x, y)
            shuffled = probe_accuracies(x, np.random.default_rng(seed).permutation(y))
            print(f"{case.key:14} seed {seed}  {len(y):5d} images  "
                  + "  ".join(f"{k} {v:.3f}" for k, v in accs.items())
                  + f"  | shuffled best {np.nanmax(list(shuffled.values())):.3f}"
                  + f"  ({time.perf_counter() - start:.1f} s)", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
