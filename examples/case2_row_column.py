#!/usr/bin/env python
"""Case 2 as the user wrote it (seeds/001): is there a white row or a white column on a 3x3 grid?

Six images with pixel values 0/255. The loss applies a softmax (from_logits=True) to outputs that
already went through one; the loss stays frozen for all epochs.

    python case2_row_column.py [--epochs N]
"""
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")  # Keras 3 without TensorFlow
import keras  # noqa: E402
import numpy as np  # noqa: E402

epochs = int(sys.argv[sys.argv.index("--epochs") + 1]) if "--epochs" in sys.argv else 100

images, labels = [], []
for i in range(3):
    row = np.zeros((3, 3)); row[i, :] = 255
    col = np.zeros((3, 3)); col[:, i] = 255
    images += [row, col]
    labels += [0, 1]
x = np.array(images, dtype="float32")[..., None]
y = keras.utils.to_categorical(labels, 2)

keras.utils.set_random_seed(1)
model = keras.Sequential([
    keras.Input(shape=(3, 3, 1)),
    keras.layers.Conv2D(2, (2, 2), use_bias=False),
    keras.layers.ReLU(),
    keras.layers.Flatten(),
    keras.layers.Dense(2),
    keras.layers.Softmax(),
])
model.compile(optimizer=keras.optimizers.SGD(learning_rate=1e-3),
              loss=keras.losses.CategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
history = model.fit(x, y, epochs=epochs, batch_size=6, verbose=0)
print("loss: first %.4f, last %.4f" % (history.history["loss"][0], history.history["loss"][-1]))
print("accuracy: %.2f" % history.history["accuracy"][-1])
