"""A healthy Keras script in the style of a published benchmark port: it calls model.evaluate on
a training batch at step 0, before any training (a sanity check of the initial loss), then
trains and evaluates on the test split. The step-0 call is monitoring, not an evaluation path.
Data: scikit-learn's 1,797 digits (8 x 8, offline), scaled to [0, 1]."""
import os

os.environ.setdefault("KERAS_BACKEND", "torch")
import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

keras.utils.set_random_seed(0)
digits = load_digits()
x = (digits.images / 16.0).astype("float32")[..., None]
y = digits.target
order = np.random.default_rng(0).permutation(len(x))
x, y = x[order], y[order]
x_train, y_train, x_test, y_test = x[:1400], y[:1400], x[1400:], y[1400:]

model = keras.Sequential([
    keras.Input((8, 8, 1)),
    keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
    keras.layers.MaxPooling2D(2),
    keras.layers.Flatten(),
    keras.layers.Dense(64, activation="relu"),
    keras.layers.Dense(10, activation="softmax"),
])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
loss0, acc0 = model.evaluate(x_train[:128], y_train[:128], verbose=0)
print(f"step 0 on a training batch: loss {loss0:.3f}, accuracy {acc0:.1%}")
model.fit(x_train, y_train, epochs=8, batch_size=32, verbose=0)
loss, acc = model.evaluate(x_test, y_test, verbose=0)
print(f"test: loss {loss:.3f}, accuracy {acc:.1%}")
