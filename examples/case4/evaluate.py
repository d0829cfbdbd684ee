#!/usr/bin/env python
"""Case 4, script 2 of 2: load the saved model, predict the validation split, confusion matrix.

The bug of the seed report: the inputs are not divided by 255 here, as they were in training.

    python evaluate.py [--model PATH]
"""
import json
import os
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")  # Keras 3 without TensorFlow
import keras  # noqa: E402
import numpy as np

from pairs import load, model_path

n_classes = 100

path = model_path(sys.argv)
model = keras.models.load_model(path)

(X_train, y_train), (X_val, y_val) = load()

# Calculate confusion matrix
y_val_i = y_val.flatten()
y_val_pred = model.predict(X_val, verbose=0)
y_val_pred_i = y_val_pred.argmax(1)
cm = np.zeros((n_classes, n_classes), dtype=int)
for i, j in zip(y_val_i, y_val_pred_i):
    cm[i][j] += 1

acc = sum([cm[i][i] for i in range(n_classes)]) / float(cm.sum())
print("Validation accuracy: %0.4f" % acc)
counts = cm.sum(axis=0)
top = np.argsort(-counts)[:2]
print("most predicted classes:", top.tolist(), "share: %0.2f" % (counts[top].sum() / cm.sum()))

with open(os.path.join(os.path.dirname(os.path.abspath(path)), "cm.json"), "w") as outfile:
    json.dump(cm.tolist(), outfile)
