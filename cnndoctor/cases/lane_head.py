"""Case 3: a Dense head turned into one giant convolution (seeds/002_*.txt).

The user had a lane-line detector (two classes) with a Flatten -> Dense(128) head at 98%. They
"convolutionalized" it: the head became one convolution whose kernel covers the whole feature map
(256 filters of 90x160 on a 32-channel map, about 118 million weights), dropout 0.5, a 1x1
convolution to 2 channels, flatten and softmax. It reached 49%, a coin flip. An answer in the
thread showed the same on MNIST with a 14x14 convolution in place of Dense(128).

Stand-ins: synthetic dashcam-like frames (``datasets.lane_images``) at 1/5 of the report's size,
and the 5,000 MNIST digits with the 14x14 head of the MNIST variant (which trains in Keras 3:
see MNIST_STORY; registered with ``reproduces=False``). The healthy versions are
the remedy from the same thread: a few more 3x3 convolutions, then 1x1 convolutions and global
average pooling as the head.
"""
from __future__ import annotations

from . import Case, Setup, register
from .datasets import LANE_SIZE, MNIST_CLASSES, lane_images, load_mnist, one_hot, split

REPORT = "seeds/002_71da73cf3a53e11a.txt"
LANE_IMAGES = 800  # enough for a CPU probe; the report's dataset size is not given
LANE_VAL_FRACTION = 0.25  # 600 training and 200 validation frames
LANE_FILTERS = 256  # the report's 256 filters in the whole-map convolution
MNIST_FILTERS = 128  # the MNIST variant's Conv2D(128, (14, 14)) that replaced Dense(128)
VAL_FRACTION = 0.2
BATCH_SIZE = 32
EPOCHS = 10

STORY = ("The user replaced the Flatten/Dense(128) head of a working lane-line detector (98%) by "
         "a convolution whose kernel covers the whole 90x160 feature map (256 filters: about 118 "
         "million weights in one layer), dropout 0.5, a 1x1 convolution to 2 channels, flatten "
         "and softmax, and got 49%: a coin flip.")
MNIST_STORY = ("An answer in the same thread: the Keras MNIST example with Conv2D(128, (14, 14)) "
               "in place of Flatten/Dense(128) and a 1x1 softmax convolution as the output "
               "(Adadelta) does not train either. Rebuilt here in Keras 3 on the 5,000 digits, "
               "it does train: 97.2% over 3 seeds, as the Dense model's 96.8% "
               "(benchmarks/case3_reference.py). So cnndoctor names the oversized layer, as a "
               "warning once its training probe has seen it learn, and --verify reports the "
               "pooled head as not-verified: there is no failure here for it to fix.")
LANE_HEALTHY_STORY = ("The user's model before the change: Flatten, Dense(128) with ReLU, dropout "
                      "0.5 and Dense(2) with softmax, which reached 98% on their frames.")
HEALTHY_STORY = ("The remedy from the thread: more 3x3 convolutions to widen the receptive field, "
                 "then 1x1 convolutions and global average pooling as the head; it reaches the "
                 "Dense model's accuracy with a few thousand head parameters.")


def _lane_data(seed: int):
    x, y = lane_images(LANE_IMAGES, seed=seed, size=LANE_SIZE)
    train_idx, val_idx = split(y, LANE_VAL_FRACTION, seed)
    return ((x[train_idx], one_hot(y[train_idx], 2)), (x[val_idx], one_hot(y[val_idx], 2)))


def _mnist_data(seed: int):
    digits, labels = load_mnist()
    train_idx, val_idx = split(labels, VAL_FRACTION, seed)
    x = (digits[..., None] / 255.0).astype("float32")
    return ((x[train_idx], one_hot(labels[train_idx], MNIST_CLASSES)),
            (x[val_idx], one_hot(labels[val_idx], MNIST_CLASSES)))


def _lane_trunk(shape) -> list:
    """The report's two 3x3 convolutions, pooling and dropout, shared by both heads."""
    import keras
    from keras import layers

    return [keras.Input(shape=shape),
            layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1-1"),
            layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1-2"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Dropout(0.25)]


def _giant_lane_model(shape):
    import keras
    from keras import layers

    h, w = shape[0] // 2, shape[1] // 2  # the whole feature map after the 2x2 pooling
    return keras.Sequential(_lane_trunk(shape) + [
        layers.Conv2D(LANE_FILTERS, (h, w), activation="relu", name="conv7"),
        layers.Dropout(0.5),
        layers.Conv2D(2, (1, 1), name="conv8"),
        layers.Flatten(),
        layers.Activation("softmax"),
    ], name="lane_fcn")


def _mnist_trunk() -> list:
    """The Keras MNIST example's convolutions, pooling and dropout, shared by both its heads."""
    import keras
    from keras import layers

    return [keras.Input(shape=(28, 28, 1)),
            layers.Conv2D(32, (3, 3), activation="relu", padding="same"),
            layers.Conv2D(64, (3, 3), activation="relu", padding="same"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Dropout(0.25)]


def _giant_mnist_model():
    import keras
    from keras import layers

    return keras.Sequential(_mnist_trunk() + [
        layers.Conv2D(MNIST_FILTERS, (14, 14), activation="relu", padding="valid"),
        layers.Dropout(0.5),
        layers.Conv2D(MNIST_CLASSES, (1, 1), activation="softmax"),
        layers.Flatten(),
    ], name="mnist_fcn")


def _dense_mnist_model():
    """The Keras MNIST example as written (the reference of benchmarks/case3_reference.py):
    Flatten and Dense(128) where the answer put the 14x14 convolution."""
    import keras
    from keras import layers

    return keras.Sequential(_mnist_trunk() + [
        layers.Flatten(),
        layers.Dense(MNIST_FILTERS, activation="relu"),
        layers.Dropout(0.5),
        layers.Dense(MNIST_CLASSES, activation="softmax"),
    ], name="mnist_dense")


def _gap_model(shape, classes: int):
    """The answer's fully convolutional network: 3x3 blocks, then 1x1 convolutions and GAP."""
    import keras
    from keras import layers

    return keras.Sequential([
        keras.Input(shape=shape),
        layers.Conv2D(32, (3, 3), activation="relu"),
        layers.Conv2D(32, (3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Dropout(0.25),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Dropout(0.25),
        layers.Conv2D(128, (3, 3), activation="relu"),
        layers.Conv2D(128, (1, 1), activation="relu"),
        layers.Conv2D(classes, (1, 1)),
        layers.GlobalAveragePooling2D(),
        layers.Activation("softmax"),
    ], name="gap_head")


def _dense_lane_model(shape):
    """The user's working model before the change: the same trunk, Flatten and Dense(128)."""
    import keras
    from keras import layers

    return keras.Sequential(_lane_trunk(shape) + [
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dropout(0.5),
        layers.Dense(2, activation="softmax"),
    ], name="lane_dense")


def _lane_setup(seed: int, healthy: bool) -> Setup:
    import keras

    train, val = _lane_data(seed)
    keras.utils.set_random_seed(seed)
    shape = train[0].shape[1:]
    model = _dense_lane_model(shape) if healthy else _giant_lane_model(shape)
    # the report does not say which optimizer; Adam is the common choice for this model
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    head = "Flatten + Dense(128)" if healthy else "whole-map convolution"
    return Setup(model=model, train=train, val=val, batch_size=BATCH_SIZE, epochs=EPOCHS,
                 description=f"Keras, synthetic lane frames {shape[0]}x{shape[1]}, head: {head}")


def _mnist_setup(seed: int, healthy: bool) -> Setup:
    import keras

    train, val = _mnist_data(seed)
    keras.utils.set_random_seed(seed)
    if healthy:
        model = _gap_model((28, 28, 1), MNIST_CLASSES)
        optimizer = "adam"  # as in the answer that showed the remedy
    else:
        model = _giant_mnist_model()
        # the answer used keras.optimizers.Adadelta() of Keras 2, whose learning rate was 1.0
        optimizer = keras.optimizers.Adadelta(learning_rate=1.0)
    model.compile(loss="categorical_crossentropy", optimizer=optimizer, metrics=["accuracy"])
    head = "1x1 convolutions + global average pooling" if healthy else "Conv2D(128, (14, 14))"
    return Setup(model=model, train=train, val=val, batch_size=128, epochs=EPOCHS,
                 description=f"Keras, 5,000 MNIST digits, head: {head}")


TITLE = "Dense head turned into one giant convolution: a coin flip"
EXTRAS = {"report": REPORT, "reported": "49% accuracy on two classes; the Dense version had 98%"}

register(Case(key="lane-head", number=3, title=TITLE, framework="keras", variant="broken",
              build=lambda seed: _lane_setup(seed, healthy=False),
              expect_errors=("oversized-layer",), story=STORY, extras=dict(EXTRAS)))
register(Case(key="lane-head", number=3, title=TITLE, framework="keras", variant="healthy",
              build=lambda seed: _lane_setup(seed, healthy=True), story=LANE_HEALTHY_STORY,
              extras=dict(EXTRAS)))
register(Case(key="mnist-head", number=3, title=TITLE + " (MNIST)", framework="keras",
              variant="broken", build=lambda seed: _mnist_setup(seed, healthy=False),
              expect_errors=("oversized-layer",), story=MNIST_STORY, reproduces=False,
              extras=dict(EXTRAS)))
register(Case(key="mnist-head", number=3, title=TITLE + " (MNIST)", framework="keras",
              variant="healthy", build=lambda seed: _mnist_setup(seed, healthy=True),
              story=HEALTHY_STORY, extras=dict(EXTRAS)))
