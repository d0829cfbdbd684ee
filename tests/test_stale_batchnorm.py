"""stale-batchnorm: a Conv-BN model trained for 160 steps with Keras' momentum 0.99 predicts
held-out digits with statistics that are still mostly the initial ones. cnndoctor measures it on
a copy (statistics re-estimated on training images), ranks it above the collapse it causes, and
verifies the re-estimation on the trained weights; the same model trained with momentum 0.9, and
a torch Conv-BN model, are left alone."""
import numpy as np
import pytest

import cnndoctor
from cnndoctor.checks.stale_batchnorm import ERROR_GAIN, mcnemar_p
from cnndoctor.cases.datasets import load_mnist

TRAIN, HELD_OUT = 300, 120  # as examples/keras_bn_few_steps.py, with more held-out digits
EPOCHS = 20  # 20 epochs of 10 steps: 0.99^200 = 13% of the initial statistics remain


def _digits():
    x, y = load_mnist()
    order = np.random.default_rng(0).permutation(len(x))[:TRAIN + HELD_OUT]
    x = (x[order][..., None] / 255.0).astype("float32")
    return (x[:TRAIN], y[order][:TRAIN]), (x[TRAIN:], y[order][TRAIN:])


def _trained_keras(momentum: float):
    import keras
    from keras import layers

    (xt, yt), _ = _digits()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        layers.Conv2D(16, 3, padding="same", use_bias=False),
        layers.BatchNormalization(momentum=momentum), layers.ReLU(), layers.MaxPooling2D(2),
        layers.Conv2D(32, 3, padding="same", use_bias=False),
        layers.BatchNormalization(momentum=momentum), layers.ReLU(), layers.MaxPooling2D(2),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.GlobalAveragePooling2D(), layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(xt, yt, batch_size=32, epochs=EPOCHS, verbose=0)
    return model


@pytest.fixture(scope="module")
def stale():
    model = _trained_keras(0.99)
    weights = [w.copy() for w in model.get_weights()]
    train, held_out = _digits()
    report = cnndoctor.diagnose(model, train=train, val=held_out, evaluate=held_out,
                                budget="static", verify=True, executor="inprocess")
    return model, weights, report


def test_stale_statistics_are_the_first_error_with_their_figures(stale):
    _, _, report = stale
    f = report.findings[0]
    assert f.code == "stale-batchnorm" and f.severity == "error", report.codes
    e = f.evidence
    assert e["batchnorm_layers"] == 2 and e["samples"] == HELD_OUT
    # the figures behind the title: the weights have learned, the statistics have not
    assert e["accuracy_reestimated"] - e["accuracy_as_given"] >= ERROR_GAIN
    assert e["accuracy_reestimated"] > 0.6 and e["images_fixed"] > 5 * e["images_broken"]
    assert e["p_value"] < 0.001
    assert f"{e['accuracy_as_given']:.0%} with them" in f.title
    assert "momentum=0.9" in f.fix.code
    # the collapse it causes, where the evaluation shows one, is ranked below it
    collapse = report.get("prediction-collapse")
    if collapse is not None:
        assert "stale-batchnorm" in collapse.explained_by
        assert report.codes.index("prediction-collapse") > 0


def test_reestimating_the_statistics_is_verified_on_the_trained_weights(stale):
    model, weights, report = stale
    v = report.get("stale-batchnorm").verified
    assert v["verdict"] == "verified" and v["retrained"] is False
    assert v["fix"] == "reestimate-batchnorm"
    assert v["after"]["mean"] - v["before"]["mean"] >= ERROR_GAIN
    assert v["difference"]["low"] > 0
    # probing and verifying worked on copies: the user's weights are bit-identical
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))


def test_momentum_09_statistics_that_keep_up_are_not_flagged():
    model = _trained_keras(0.9)
    train, held_out = _digits()
    report = cnndoctor.diagnose(model, train=train, val=held_out, budget="static")
    assert report.get("stale-batchnorm") is None, report.codes
    passed = next(p for p in report.passed if p.code == "stale-batchnorm")
    assert passed.figures["accuracy_as_given"] > 0.6


def test_torch_conv_bn_model_trained_normally_is_not_flagged():
    import torch
    from torch import nn

    (xt, yt), (xv, yv) = _digits()
    xt, xv = np.moveaxis(xt, -1, 1).copy(), np.moveaxis(xv, -1, 1).copy()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    x, y = torch.from_numpy(xt), torch.from_numpy(yt).long()
    shuffle = torch.Generator().manual_seed(0)
    for epoch in range(30):
        order = torch.randperm(TRAIN, generator=shuffle)
        for i in range(0, TRAIN, 32):
            batch = order[i:i + 32]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            opt.step()
    model.eval()
    report = cnndoctor.diagnose(model, train=(xt, yt), val=(xv, yv), loss=nn.CrossEntropyLoss(),
                                optimizer=opt, budget="static")
    assert report.get("stale-batchnorm") is None, report.codes
    passed = next(p for p in report.passed if p.code == "stale-batchnorm")
    # torch's momentum 0.1 keeps the statistics current: re-estimating changes little
    assert abs(passed.figures["gain"]) < 0.05, passed.figures


def test_mcnemar_p_value():
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(5, 5) == 1.0
    assert mcnemar_p(10, 0) == pytest.approx(2 / 1024)
    assert mcnemar_p(42, 0) < 1e-10
