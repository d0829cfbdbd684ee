"""Case 1: colored MNIST (seeds/000_*.txt).

The user put each MNIST digit into one random RGB channel and trained a small Keras CNN whose
convolutions have no activation and whose logits pass through a ReLU before the softmax. Accuracy
swung between 30% and 70% from one weight initialisation to the next; they suspected the colors.
"""
from __future__ import annotations

import numpy as np

from . import Case, Setup, register
from .datasets import MNIST_CLASSES, colored_mnist, one_hot, split

REPORT = "seeds/000_b4781cf94afb1326.txt"
VAL_FRACTION = 0.2  # 4,000 training and 1,000 validation digits from the 5,000 we have
BATCH_SIZE = 12  # the report's model.fit(batch_size=12)
EPOCHS = 25  # the report's model.fit(epochs=25)
FILTERS = 64  # the report's Conv2D(64, kernel_size=(3, 3))
RMSPROP_LR = 1e-3  # Keras' default for optimizer='rmsprop', used by the report
RMSPROP_RHO = 0.9  # Keras' default; torch calls it alpha (its own default is 0.99)
RMSPROP_EPS = 1e-7  # Keras' default epsilon; torch's default is 1e-8

STORY = ("The user put each MNIST digit into one random RGB channel and trained a small CNN: two "
         "3x3 convolutions with max pooling, then Dense(10, activation='relu') and a softmax, "
         "RMSprop and categorical cross-entropy. Plain MNIST had reached 95%; colored MNIST gave "
         "30-70% depending on the weight initialisation. They suspected color leaking into the "
         "labels and checked by hand that every digit is about one third red, green and blue.")
TORCH_NOTE = (" PyTorch translation: the model ends in Linear(3136, 10) followed by ReLU and the "
              "loss is nn.CrossEntropyLoss, which applies the softmax itself; that is the same bug "
              "as Keras' ReLU then Softmax then cross-entropy on probabilities.")
HEALTHY_STORY = ("The verified fix: a ReLU after each convolution and plain logits (no ReLU) into "
                 "the softmax. Same data, optimizer and batch size.")


def load(seed: int):
    """The colored digits split into training and validation: (x, y) pairs, NHWC, integer labels."""
    x, y, _ = colored_mnist(seed)
    train_idx, val_idx = split(y, VAL_FRACTION, seed)
    return (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx])


def _keras_setup(seed: int, healthy: bool) -> Setup:
    import keras
    from keras import layers

    (xt, yt), (xv, yv) = load(seed)
    keras.utils.set_random_seed(seed)
    act = "relu" if healthy else None  # the report's convolutions had no activation
    model = keras.Sequential([
        keras.Input(shape=xt.shape[1:]),
        layers.Conv2D(FILTERS, kernel_size=(3, 3), padding="same", activation=act, name="conv2d"),
        layers.MaxPool2D(pool_size=(2, 2), name="max_pooling2d"),
        layers.Conv2D(FILTERS, kernel_size=(3, 3), padding="same", activation=act, name="conv2d_1"),
        layers.MaxPool2D(pool_size=(2, 2), padding="same", name="max_pooling2d_1"),
        layers.Flatten(name="flatten"),
        layers.Dense(MNIST_CLASSES, activation=None if healthy else "relu", name="dense"),
        layers.Softmax(name="softmax"),
    ], name="sequential")
    model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=RMSPROP_LR),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    return Setup(model=model, train=(xt, one_hot(yt, MNIST_CLASSES)),
                 val=(xv, one_hot(yv, MNIST_CLASSES)), batch_size=BATCH_SIZE, epochs=EPOCHS,
                 description="Keras, colored MNIST, " + ("fixed model" if healthy else "as reported"))


def _torch_setup(seed: int, healthy: bool) -> Setup:
    import torch
    from torch import nn

    (xt, yt), (xv, yv) = load(seed)
    torch.manual_seed(seed)

    def act():
        return [nn.ReLU()] if healthy else []

    model = nn.Sequential(
        nn.Conv2d(3, FILTERS, kernel_size=3, padding=1), *act(),
        nn.MaxPool2d(2),
        nn.Conv2d(FILTERS, FILTERS, kernel_size=3, padding=1), *act(),
        nn.MaxPool2d(2, ceil_mode=True),  # Keras' padding='same' pooling (14x14 -> 7x7)
        nn.Flatten(),
        nn.Linear(FILTERS * 7 * 7, MNIST_CLASSES),
        *([] if healthy else [nn.ReLU()]),  # ReLU on the logits, right before the loss's softmax
    )
    optimizer = torch.optim.RMSprop(model.parameters(), lr=RMSPROP_LR, alpha=RMSPROP_RHO,
                                    eps=RMSPROP_EPS)

    def nchw(x):
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

    return Setup(model=model, train=(nchw(xt), torch.from_numpy(yt)),
                 val=(nchw(xv), torch.from_numpy(yv)), loss=nn.CrossEntropyLoss(),
                 optimizer=optimizer, batch_size=BATCH_SIZE, epochs=EPOCHS,
                 description="PyTorch, colored MNIST, " + ("fixed model" if healthy else "as reported"))


TITLE = "Colored MNIST: accuracy swings with the weight initialisation"
EXTRAS = {"report": REPORT,
          "reported": "30-70% accuracy depending on the weight initialisation; 95% on plain MNIST"}

register(Case(key="colored-mnist", number=1, title=TITLE, framework="keras", variant="broken",
              build=lambda seed: _keras_setup(seed, healthy=False),
              expect_errors=("activation-before-softmax", "missing-nonlinearity"),
              expect_passed=("spurious-correlation",), story=STORY, extras=dict(EXTRAS)))
register(Case(key="colored-mnist", number=1, title=TITLE, framework="keras", variant="healthy",
              build=lambda seed: _keras_setup(seed, healthy=True),
              expect_passed=("spurious-correlation",), story=HEALTHY_STORY, extras=dict(EXTRAS)))
register(Case(key="colored-mnist", number=1, title=TITLE, framework="torch", variant="broken",
              build=lambda seed: _torch_setup(seed, healthy=False),
              expect_errors=("activation-before-softmax", "missing-nonlinearity"),
              expect_passed=("spurious-correlation",), story=STORY + TORCH_NOTE,
              extras=dict(EXTRAS)))
register(Case(key="colored-mnist", number=1, title=TITLE, framework="torch", variant="healthy",
              build=lambda seed: _torch_setup(seed, healthy=True),
              expect_passed=("spurious-correlation",), story=HEALTHY_STORY, extras=dict(EXTRAS)))
