"""Case 2 by hand: which layouts of the first layer fit all six 3x3 images, per seed.

    python benchmarks/grid_filters.py [SEEDS] [EPOCHS]      (default: 6 seeds, 300 epochs)

The fixed setup of CASES.md case 2 (inputs / 255, the softmax once, into categorical
cross-entropy, plain SGD, full batch) with the first convolution as the report has it (2
bias-free 2x2 filters, padding 'valid') and as the report's answer has it (6 filters, padding
'same'), plus bias variants. Prints, per layout and learning rate, the training accuracy per seed
and, for the report's layer, on which seeds every ReLU output is zero on every image at
initialisation (nothing can train then, whatever the learning rate). Figures: docs/benchmarks.md.
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from cnndoctor.cases.datasets import one_hot, row_column_grid  # noqa: E402

LAYOUTS = ((2, "valid", False), (6, "same", False), (2, "same", False), (2, "valid", True),
           (6, "valid", True))
RATES = (0.1, 1.0)


def main(seeds: int, epochs: int) -> None:
    torch.set_num_threads(1)
    x, y = row_column_grid()
    x = x / 255.0
    targets = one_hot(y, 2)
    for filters, padding, bias in LAYOUTS:
        for lr in RATES:
            accs, dead = [], []
            for seed in range(seeds):
                keras.utils.set_random_seed(seed)
                conv = keras.layers.Conv2D(filters, 2, padding=padding, use_bias=bias)
                model = keras.Sequential([keras.Input((3, 3, 1)), conv,
                                          keras.layers.Activation("relu"),
                                          keras.layers.Flatten(), keras.layers.Dense(2),
                                          keras.layers.Activation("softmax")])
                relu = keras.Model(model.inputs, model.layers[1].output)
                dead.append(bool(relu(x).detach().numpy().max() <= 0))
                model.compile(optimizer=keras.optimizers.SGD(lr),
                              loss="categorical_crossentropy")
                model.fit(x, targets, batch_size=6, epochs=epochs, verbose=0)
                accs.append(float((model.predict(x, verbose=0).argmax(1) == y).mean()))
            dead_seeds = [s for s, d in enumerate(dead) if d]
            print(f"{filters} filters, padding {padding!r}, bias {bias}, SGD {lr}: "
                  f"{' '.join(f'{a:.0%}' for a in accs)}; dead at init on seeds {dead_seeds}",
                  flush=True)


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    main(*(args + [6, 300][len(args):]))
