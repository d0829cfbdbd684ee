"""The built-in reference cases 1-4 and their offline data: shapes, layouts, determinism, balance.

These tests build every case (case 4 trains its model for a few seconds, once per process) but do
not diagnose anything: that is the business of the demo tests.
"""
import importlib
import socket

import numpy as np
import pytest
import torch

from cnndoctor import cases
from cnndoctor.cases import datasets

MODULES = ["colored_mnist", "grid", "lane_head", "cifar_eval"]
for _name in MODULES:
    importlib.import_module(f"cnndoctor.cases.{_name}")
OUR_KEYS = {"colored-mnist", "row-column", "lane-head", "cifar-eval"}
OUR_CASES = [c for c in cases.CASES if c.key in OUR_KEYS or c.number in (1, 2, 3, 4)]
EXPECTED_IDS = {
    "1-colored-mnist", "1-colored-mnist-healthy", "1-colored-mnist-torch",
    "1-colored-mnist-torch-healthy",
    "2-row-column", "2-row-column-healthy", "2-row-column-torch", "2-row-column-torch-healthy",
    "3-lane-head", "3-lane-head-healthy",
    "4-cifar-eval", "4-cifar-eval-healthy",
}


def _rows(x) -> set:
    """Each sample as bytes, to compare sets of images exactly."""
    x = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    x = np.ascontiguousarray(x.reshape(len(x), -1))
    return {row.tobytes() for row in x}


def _labels(y) -> np.ndarray:
    y = y.numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    return y.argmax(1) if y.ndim == 2 else y


@pytest.fixture(scope="module")
def no_network():
    """Any attempt to open a connection during a build fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a case tried to use the network")

    saved = socket.socket.connect, socket.create_connection
    socket.socket.connect = refuse
    socket.create_connection = refuse
    yield
    socket.socket.connect, socket.create_connection = saved


@pytest.fixture(scope="module")
def built(no_network):
    """Every case built once for seed 0, by id."""
    return {c.id: c.build(0) for c in OUR_CASES}


# --- the data ---------------------------------------------------------------------------------

def test_mnist_subset_is_the_shipped_one_and_cached():
    x, y = datasets.load_mnist()
    assert x.shape == (5000, 28, 28) and x.dtype == np.uint8 and x.max() == 255
    assert np.bincount(y).tolist() == [500] * 10
    assert datasets.load_mnist()[0] is x  # parsed once per process
    assert not x.flags.writeable


def test_split_is_shuffled_stratified_disjoint_and_deterministic():
    _, y = datasets.load_mnist()
    train, val = datasets.split(y, 0.2, seed=3)
    assert len(train) == 4000 and len(val) == 1000
    assert not set(train) & set(val) and len(set(train) | set(val)) == 5000
    assert np.bincount(y[val]).tolist() == [100] * 10
    assert len(set(y[train[:50]])) > 5  # shuffled, not sorted by class
    again = datasets.split(y, 0.2, seed=3)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])
    assert not np.array_equal(val, datasets.split(y, 0.2, seed=4)[1])


def test_colored_mnist_one_channel_per_digit_and_balanced_colors():
    x, y, channel = datasets.colored_mnist(0)
    assert x.shape == (5000, 28, 28, 3) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() == 1.0
    lit = (x.reshape(len(x), -1, 3).max(axis=1) > 0)
    assert lit.sum(axis=1).tolist() == [1] * len(x)  # exactly one channel holds the digit
    assert np.array_equal(lit.argmax(axis=1), channel)
    # color carries no information about the digit: each digit is about 1/3 red, green, blue
    shares = np.array([[np.mean(channel[y == c] == k) for k in range(3)] for c in range(10)])
    assert np.all(np.abs(shares - 1 / 3) < 0.08), shares  # 0.08 ~ 4 standard errors at n=500
    x2, _, channel2 = datasets.colored_mnist(0)
    assert np.array_equal(x, x2) and np.array_equal(channel, channel2)
    assert not np.array_equal(channel, datasets.colored_mnist(1)[2])


def test_row_column_grid_is_the_reports_six_images():
    x, y = datasets.row_column_grid()
    assert x.shape == (6, 3, 3, 1) and x.dtype == np.float32
    assert set(np.unique(x)) == {0.0, 255.0}
    assert y.tolist() == [0, 0, 0, 1, 1, 1]
    img = x[..., 0] > 0
    assert all(img[i].all(axis=1).sum() == 1 and img[i].sum() == 3 for i in range(3))  # one row
    assert all(img[i].all(axis=0).sum() == 1 and img[i].sum() == 3 for i in range(3, 6))  # column
    assert len(_rows(x)) == 6


def test_lane_images_deterministic_balanced_and_in_range():
    x, y = datasets.lane_images(101, seed=5, size=(32, 48))
    assert x.shape == (101, 32, 48, 3) and x.dtype == np.float32 and y.dtype == np.int64
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert np.bincount(y).tolist() == [51, 50]
    x2, y2 = datasets.lane_images(101, seed=5, size=(32, 48))
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert not np.array_equal(x, datasets.lane_images(101, seed=6, size=(32, 48))[0])


def test_lane_stripe_is_what_separates_the_classes():
    """Class 1 has a thin bright line: the brightest row-to-row contrast is higher than in class 0."""
    x, y = datasets.lane_images(200, seed=0)
    gray = x.mean(axis=-1)
    edge = np.abs(np.diff(gray, axis=2)).reshape(len(x), -1)
    strength = np.percentile(edge, 99, axis=1)
    assert strength[y == 1].mean() > 1.5 * strength[y == 0].mean()
    # and brightness alone is a poor cue: the class means differ by less than their spread
    mean = gray.reshape(len(x), -1).mean(axis=1)
    assert abs(mean[y == 1].mean() - mean[y == 0].mean()) < mean.std()


def test_mnist_pairs_labels_match_the_digits_shown():
    digits, labels = datasets.load_mnist()
    lookup = {d.tobytes(): int(c) for d, c in zip(digits, labels)}
    x, y = datasets.mnist_pairs(300, seed=2)
    assert x.shape == (300, 28, 56, 1) and x.dtype == np.float32 and x.max() == 255.0
    assert np.bincount(y, minlength=100).tolist() == [3] * 100
    img = x[..., 0].astype(np.uint8)
    for i in range(0, 300, 7):
        assert lookup[np.ascontiguousarray(img[i, :, :28]).tobytes()] == y[i] // 10
        assert lookup[np.ascontiguousarray(img[i, :, 28:]).tobytes()] == y[i] % 10
    assert np.array_equal(x, datasets.mnist_pairs(300, seed=2)[0])


# --- the cases ----------------------------------------------------------------------------------

def test_all_our_cases_are_registered_once():
    ids = [c.id for c in OUR_CASES]
    assert EXPECTED_IDS <= set(ids)
    assert len(ids) == len(set(ids))
    for c in OUR_CASES:
        assert c.variant in ("broken", "healthy") and c.framework in ("keras", "torch")
        assert c.title and c.story and c.extras.get("report", "").startswith("seeds/")
        if c.variant == "healthy":
            assert c.expect_errors == ()
    assert cases.find("1-colored-mnist-torch")[0].framework == "torch"


@pytest.mark.parametrize("case_id", sorted(EXPECTED_IDS))
def test_case_builds_in_the_models_layout(built, case_id):
    case = next(c for c in OUR_CASES if c.id == case_id)
    setup = built[case_id]
    xt, yt = setup.train
    if case.framework == "keras":
        import keras

        assert isinstance(setup.model, keras.Model) and setup.loss is None
        assert setup.model.compiled and setup.model.optimizer is not None
        assert isinstance(xt, np.ndarray) and xt.dtype == np.float32
        assert tuple(setup.model.input_shape[1:]) == xt.shape[1:]  # channels-last, as built
        assert yt.ndim == 2 and yt.shape[1] == setup.model.output_shape[-1]  # one-hot
        out = setup.model.predict(xt[:2], verbose=0)
    else:
        assert isinstance(setup.model, torch.nn.Module) and setup.loss is not None
        assert isinstance(setup.optimizer, torch.optim.Optimizer)
        assert isinstance(xt, torch.Tensor) and xt.dtype == torch.float32 and xt.ndim == 4
        assert yt.dtype == torch.int64 and yt.ndim == 1
        assert xt.shape[1] in (1, 3)  # NCHW
        with torch.no_grad():
            out = setup.model(xt[:2]).numpy()
        params = {id(p) for p in setup.model.parameters()}
        assert {id(p) for g in setup.optimizer.param_groups for p in g["params"]} == params
    assert out.shape == (2, int(_labels(yt).max()) + 1)
    assert len(xt) == len(yt)
    if setup.val is not None:
        xv, yv = setup.val
        assert type(xv) is type(xt) and xv.shape[1:] == xt.shape[1:] and len(xv) == len(yv)
        assert not _rows(xt) & _rows(xv), "validation images also in the training set"


@pytest.mark.parametrize("key", ["colored-mnist", "cifar-eval"])
def test_labels_are_balanced(built, key):
    for case in (c for c in OUR_CASES if c.key == key and c.framework == "keras"):
        setup = built[case.id]
        for _, y in [setup.train, setup.val]:
            counts = np.bincount(_labels(y))
            assert counts.min() >= 0.9 * counts.max()


def test_lane_head_classes_balanced(built):
    for case in (c for c in OUR_CASES if c.key == "lane-head"):
        counts = np.bincount(_labels(built[case.id].train[1]))
        assert len(counts) == 2 and abs(int(counts[0]) - int(counts[1])) <= 1


def test_builds_are_deterministic_for_a_seed(built):
    for case in OUR_CASES:
        if case.key == "lane-head" and case.framework == "keras" and case.variant == "healthy":
            continue  # same data as the broken variant, checked there
        a, b = built[case.id], case.build(0)
        for (xa, ya), (xb, yb) in [(a.train, b.train)] + ([(a.val, b.val)] if a.val else []):
            assert np.array_equal(np.asarray(xa), np.asarray(xb))
            assert np.array_equal(np.asarray(ya), np.asarray(yb))
        if case.framework == "keras":
            wa, wb = a.model.get_weights(), b.model.get_weights()
        else:
            wa = [p.detach().numpy() for p in a.model.parameters()]
            wb = [p.detach().numpy() for p in b.model.parameters()]
        assert all(np.array_equal(u, v) for u, v in zip(wa, wb)), case.id
        assert a.model is not b.model  # a fresh model each time: diagnoses never share one


def _keras_loss(model):
    import keras

    loss = model.loss
    return keras.losses.get(loss) if isinstance(loss, str) else loss


def test_keras_models_are_compiled_with_the_users_loss(built):
    import keras

    for key in ("colored-mnist", "cifar-eval", "lane-head"):
        for case in (c for c in OUR_CASES if c.key == key and c.framework == "keras"):
            assert built[case.id].model.loss == "categorical_crossentropy", case.id
    broken = _keras_loss(built["2-row-column"].model)
    assert isinstance(broken, keras.losses.CategoricalCrossentropy)
    assert broken.get_config()["from_logits"] is True  # the double softmax of the report
    assert isinstance(built["2-row-column"].model.optimizer, keras.optimizers.SGD)
    healthy = _keras_loss(built["2-row-column-healthy"].model)
    assert healthy.get_config()["from_logits"] is False
    assert isinstance(built["1-colored-mnist"].model.optimizer, keras.optimizers.RMSprop)


def test_torch_losses_and_optimizers(built):
    for case in (c for c in OUR_CASES if c.framework == "torch"):
        assert isinstance(built[case.id].loss, torch.nn.CrossEntropyLoss)
    grid = built["2-row-column-torch"]
    assert isinstance(grid.model[-1], torch.nn.Softmax)  # probabilities into CrossEntropyLoss
    assert isinstance(grid.optimizer, torch.optim.SGD) and grid.optimizer.defaults["lr"] == 1e-3
    assert grid.train[0].max() == 255.0
    assert built["2-row-column-torch-healthy"].train[0].max() == 1.0
    colored = built["1-colored-mnist-torch"]
    assert isinstance(colored.model[-1], torch.nn.ReLU)  # ReLU on the logits
    assert not any(isinstance(m, torch.nn.ReLU) for m in list(colored.model)[:-1])


def test_input_scales_as_the_user_had_them(built):
    assert built["1-colored-mnist"].train[0].max() == 1.0  # the report divided by 255 itself
    assert built["2-row-column"].train[0].max() == 255.0
    assert built["2-row-column-healthy"].train[0].max() == 1.0
    for case_id in ("4-cifar-eval", "4-cifar-eval-healthy"):
        setup = built[case_id]
        assert setup.train[0].max() <= 1.0 and setup.val[0].max() <= 1.0
        assert setup.evaluate is not None and len(setup.evaluate[0]) == len(setup.val[0])
    # the broken evaluation script feeds the same validation images without dividing by 255
    broken, healthy = built["4-cifar-eval"], built["4-cifar-eval-healthy"]
    assert np.allclose(broken.evaluate[0], 255.0 * broken.val[0], atol=1e-3)
    assert np.array_equal(healthy.evaluate[0], healthy.val[0])


def test_cifar_eval_model_is_trained(built):
    setup = built["4-cifar-eval-healthy"]
    x, y = setup.val
    accuracy = np.mean(setup.model.predict(x, verbose=0).argmax(1) == y.argmax(1))
    assert accuracy > 0.3  # far above the 1% of chance: the evaluation mismatch is meaningful
    broken = built["4-cifar-eval"]
    assert all(np.array_equal(u, v) for u, v in
               zip(broken.model.get_weights(), setup.model.get_weights()))  # same trained model
