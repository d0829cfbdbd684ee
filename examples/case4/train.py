#!/usr/bin/env python
"""Case 4, script 1 of 2: train a CNN on a 100-class problem with inputs divided by 255, save it.

    python train.py [--model PATH] [--epochs N]
"""
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")  # Keras 3 without TensorFlow
import keras  # noqa: E402

from pairs import load, model_path

nb_classes = 100
epochs = int(sys.argv[sys.argv.index("--epochs") + 1]) if "--epochs" in sys.argv else 4

(X_train, y_train), (X_val, y_val) = load()
print("X_train shape:", X_train.shape)
print(X_train.shape[0], "train samples")
print(X_val.shape[0], "validation samples")

Y_train = keras.utils.to_categorical(y_train, nb_classes)
Y_val = keras.utils.to_categorical(y_val, nb_classes)

keras.utils.set_random_seed(0)
model = keras.Sequential([
    keras.Input(shape=X_train.shape[1:]),
    keras.layers.Conv2D(16, 3, padding="same", activation="tanh"),
    keras.layers.MaxPooling2D(2),
    keras.layers.Conv2D(32, 3, padding="same", activation="tanh"),
    keras.layers.MaxPooling2D(2),
    keras.layers.Flatten(),
    keras.layers.Dense(128, activation="tanh"),  # as in the seed report
    keras.layers.Dense(nb_classes, activation="softmax"),
])
model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])

X_train = X_train.astype("float32")
X_val = X_val.astype("float32")
X_train /= 255
X_val /= 255

model.fit(X_train, Y_train, batch_size=128, epochs=epochs, validation_data=(X_val, Y_val),
          shuffle=True, verbose=2)
path = model_path(sys.argv)
model.save(path)
print("saved", path)
