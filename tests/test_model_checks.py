"""Static checks (area "model") on Keras 3 and PyTorch models, broken and healthy."""
import keras
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import cnndoctor

MODEL_CODES = {"activation-before-softmax", "missing-nonlinearity", "double-softmax",
               "missing-softmax", "output-activation-mismatch", "output-size-mismatch",
               "oversized-layer", "excessive-dropout"}


def model_findings(report):
    return {f.code: f for f in report.findings if f.area == "model"}


@pytest.fixture(scope="module")
def rgb(mnist):
    """600 MNIST digits, each in one random colour channel (case 1's data), one-hot labels."""
    x, y = mnist
    x, y = x[:600], y[:600]
    out = np.zeros((len(x), 28, 28, 3), np.float32)
    out[np.arange(len(x)), :, :, np.random.default_rng(1).integers(0, 3, len(x))] = x
    return out, np.eye(10)[y]


def case1_keras(fixed=False):
    act = "relu" if fixed else None
    model = keras.Sequential([
        keras.Input((28, 28, 3)),
        keras.layers.Conv2D(8, 3, padding="same", activation=act),
        keras.layers.MaxPool2D(2),
        keras.layers.Conv2D(8, 3, padding="same", activation=act),
        keras.layers.MaxPool2D(2, padding="same"),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation=None if fixed else "relu"),
        keras.layers.Softmax()])
    model.compile("rmsprop", "categorical_crossentropy")
    return model


def test_case1_keras_names_both_root_causes(rgb):
    model = case1_keras()
    report = cnndoctor.diagnose(model, train=rgb, budget="static")
    found = model_findings(report)
    abs_ = found["activation-before-softmax"]
    assert abs_.severity == "error"
    assert abs_.evidence["activation"] == "relu" and abs_.evidence["activation_layer"] == model.layers[-2].name
    mn = found["missing-nonlinearity"]
    assert mn.severity == "error" and mn.evidence["whole_feature_extractor_linear"] is True
    assert mn.evidence["layers_without_activation"] == ["conv2d", "conv2d_1"] or \
        len(mn.evidence["layers_without_activation"]) == 2
    assert "activation='relu'" in mn.fix.code
    # errors rank first, and the colour check ran and passed with its figure
    assert [f.severity for f in report.findings[:2]] == ["error", "error"]
    passed = {p.code: p for p in report.passed}
    assert "spurious-correlation" in passed
    assert passed["spurious-correlation"].figures["dominant color channel"]["cramers_v"] < 0.2


def test_case1_fixed_keras_has_no_model_findings(rgb):
    report = cnndoctor.diagnose(case1_keras(fixed=True), train=rgb, budget="static")
    assert not model_findings(report), report.codes
    assert report.verdict == "healthy"


class Case1Torch(nn.Module):
    """Case 1 translated: F.relu on the logits inside forward, softmax inside the loss."""

    def __init__(self, fixed=False):
        super().__init__()
        self.fixed = fixed
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 7 * 7, 10)

    def forward(self, x):
        if self.fixed:
            x = F.max_pool2d(F.relu(self.c1(x)), 2)
            x = F.max_pool2d(torch.relu(self.c2(x)), 2)
            return self.fc(torch.flatten(x, 1))
        x = F.max_pool2d(self.c1(x), 2)
        x = F.max_pool2d(self.c2(x), 2)
        return F.relu(self.fc(x.flatten(1)))


def test_case1_torch_sees_functional_relu(rgb):
    x, y = rgb
    xt = np.transpose(x, (0, 3, 1, 2))
    report = cnndoctor.diagnose(Case1Torch(), train=(xt, y.argmax(1)), loss=nn.CrossEntropyLoss(), budget="static")
    found = model_findings(report)
    assert found["activation-before-softmax"].severity == "error"
    assert "loss" in found["activation-before-softmax"].evidence["softmax"]
    assert found["missing-nonlinearity"].severity == "error"
    healthy = cnndoctor.diagnose(Case1Torch(fixed=True), train=(xt, y.argmax(1)),
                                 loss=nn.CrossEntropyLoss(), budget="static")
    assert not model_findings(healthy), healthy.codes


def test_double_softmax_keras_and_torch(mnist_small):
    (x, y), _ = mnist_small
    km = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                           keras.layers.Flatten(), keras.layers.Dense(10),
                           keras.layers.Activation("softmax")])
    km.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    f = cnndoctor.diagnose(km, train=(x, y), budget="static").get("double-softmax")
    assert f is not None and f.severity == "error" and f.evidence["loss_expects"] == "logits"
    assert "from_logits=False" in f.fix.code

    tm = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10),
                       nn.Softmax(dim=1))
    xt = np.transpose(x, (0, 3, 1, 2))
    f = cnndoctor.diagnose(tm, train=(xt, y), loss=nn.CrossEntropyLoss(), budget="static").get("double-softmax")
    assert f is not None and f.severity == "error"
    assert "4 (nn.Softmax)" in f.title or "4" in f.evidence["output_layer"]


def test_healthy_output_pairings_give_no_softmax_finding(mnist_small):
    (x, y), _ = mnist_small
    xt = np.transpose(x, (0, 3, 1, 2))
    body = lambda: [nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),  # noqa: E731
                    nn.Linear(4 * 26 * 26, 10)]
    pairs = [(nn.Sequential(*body()), nn.CrossEntropyLoss()),
             (nn.Sequential(*body(), nn.LogSoftmax(dim=1)), nn.NLLLoss()),
             (nn.Sequential(*body()), F.cross_entropy)]
    for model, loss in pairs:
        report = cnndoctor.diagnose(model, train=(xt, y), loss=loss, budget="static")
        assert not model_findings(report), (loss, report.codes)
        assert report.verdict == "healthy"


def test_missing_softmax_and_mismatch(mnist_small):
    (x, y), _ = mnist_small
    km = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                           keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)])
    km.compile("adam", "sparse_categorical_crossentropy")
    assert cnndoctor.diagnose(km, train=(x, y), budget="static").get("missing-softmax").severity == "error"

    tm = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    xt = np.transpose(x, (0, 3, 1, 2))
    assert cnndoctor.diagnose(tm, train=(xt, y), loss=nn.NLLLoss(), budget="static").get("missing-softmax")
    tm2 = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.Softmax(1))
    f = cnndoctor.diagnose(tm2, train=(xt, y), loss=nn.NLLLoss(), budget="static").get("output-activation-mismatch")
    assert f is not None and "log" in f.title.lower()

    one = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                            keras.layers.Dense(1, activation="softmax")])
    one.compile("adam", "binary_crossentropy")
    f = cnndoctor.diagnose(one, train=(x, (y == 3).astype(int)), budget="static").get("output-activation-mismatch")
    assert f is not None and f.severity == "error" and "single output unit" in f.title


def test_output_size_mismatch(mnist_small):
    (x, y), _ = mnist_small
    km = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                           keras.layers.Dense(5, activation="softmax")])
    km.compile("adam", "categorical_crossentropy")
    with pytest.raises(cnndoctor.InputError, match="invalid-values"):
        cnndoctor.diagnose(km, train=(x, y), budget="static")  # labels 5..9 cannot be predicted by 5 units
    report = cnndoctor.diagnose(km, train=(x, np.eye(10)[y]), budget="static")
    f = report.get("output-size-mismatch")
    assert f.severity == "error"
    assert f.evidence["output_units"] == 5 and f.evidence["classes_in_labels"] == 10


def giant_head(fixed=False):
    """MNIST with Dense(128) replaced by a 12x12 convolution covering the whole map (case 3)."""
    inp = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(16, 3, activation="relu")(inp)
    x = keras.layers.Conv2D(32, 3, activation="relu")(x)
    x = keras.layers.MaxPool2D(2)(x)  # 12 x 12 x 32
    if fixed:
        x = keras.layers.Conv2D(64, 1, activation="relu")(x)
        x = keras.layers.Conv2D(10, 1)(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
    else:
        x = keras.layers.Conv2D(128, 12, activation="relu")(x)
        x = keras.layers.Dropout(0.5)(x)
        x = keras.layers.Conv2D(10, 1)(x)
        x = keras.layers.Flatten()(x)
    out = keras.layers.Softmax()(x)
    model = keras.Model(inp, out)
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def test_oversized_layer_reports_share_and_fan_in(mnist_small):
    (x, y), _ = mnist_small
    report = cnndoctor.diagnose(giant_head(), train=(x, y), budget="static")
    f = report.get("oversized-layer")
    assert f is not None and f.severity == "error"
    assert f.evidence["share_of_params"] > 0.9
    assert f.evidence["fan_in"] == 12 * 12 * 32
    # glorot counts the 144 kernel positions in fan_out: sqrt((4608+128) / (4608+144*128))
    assert f.evidence["init_scale_vs_dense"] == pytest.approx(0.453, abs=1e-3)
    assert "GlobalAveragePooling2D" in f.fix.code
    fixed = cnndoctor.diagnose(giant_head(fixed=True), train=(x, y), budget="static")
    assert fixed.get("oversized-layer") is None and "oversized-layer" in fixed.passed_codes


def test_dense_head_is_not_oversized(mnist_small):
    (x, y), _ = mnist_small
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(32, 3, activation="relu"),
                              keras.layers.Conv2D(64, 3, activation="relu"),
                              keras.layers.MaxPool2D(2), keras.layers.Dropout(0.25),
                              keras.layers.Flatten(), keras.layers.Dense(128, activation="relu"),
                              keras.layers.Dropout(0.5), keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    report = cnndoctor.diagnose(model, train=(x, y), budget="static")
    assert not model_findings(report), report.codes  # 98% of params in one Dense(128) is normal


def test_excessive_dropout(mnist_small):
    (x, y), _ = mnist_small
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(64, activation="relu"), keras.layers.Dropout(0.9),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    f = cnndoctor.diagnose(model, train=(x, y), budget="static").get("excessive-dropout")
    assert f.severity == "error" and f.evidence["rate"] == pytest.approx(0.9)


class ResBlockNet(nn.Module):
    """A small hand-written ResNet with a 1x1-conv + global-average-pooling head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.bn_a = nn.BatchNorm2d(8)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.bn_b = nn.BatchNorm2d(8)
        self.head = nn.Conv2d(8, 10, 1)

    def forward(self, x):
        x = self.stem(x)
        r = F.relu(self.bn_a(self.a(x)))
        x = F.relu(x + self.bn_b(self.b(r)))
        return self.head(x).mean(dim=(2, 3))


def test_no_false_alarm_on_residual_and_gap_head(mnist_small):
    (x, y), _ = mnist_small
    xt = np.transpose(x, (0, 3, 1, 2))
    report = cnndoctor.diagnose(ResBlockNet(), train=(xt, y), loss=nn.CrossEntropyLoss(), budget="static")
    assert not model_findings(report), report.codes
    assert report.verdict == "healthy"
    inp = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inp)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.ReLU()(h)
    r = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(h)
    h = keras.layers.Add()([h, r])
    h = keras.layers.Conv2D(10, 1)(h)
    out = keras.layers.GlobalAveragePooling2D()(h)
    km = keras.Model(inp, out)
    km.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    report = cnndoctor.diagnose(km, train=(x, y), budget="static")
    assert not model_findings(report), report.codes
