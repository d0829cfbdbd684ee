"""runtime: predict, clone and fit work the same for Keras and torch, and never touch the original."""
import random

import numpy as np
import pytest
import torch

from cnndoctor import runtime as rt

from conftest import same_weights, weights_of


def _keras_model(seed=0, dropout=0.3):
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.MaxPooling2D(4),
        keras.layers.Flatten(),
        keras.layers.Dropout(dropout),
        keras.layers.Dense(10),
        keras.layers.Softmax(),
    ])
    model.compile(optimizer=keras.optimizers.RMSprop(2e-3), loss="categorical_crossentropy")
    return model


class _TorchNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.drop = torch.nn.Dropout(0.3)
        self.fc = torch.nn.Linear(4 * 6 * 6, 10)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 4)
        return self.fc(self.drop(x.flatten(1)))


def _nchw(x):
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def test_keras_clone_is_independent_and_keeps_compile_config(mnist_small):
    (x, y), _ = mnist_small
    model = _keras_model()
    before = weights_of(model)
    twin = rt.clone(model)
    assert same_weights(before, weights_of(twin))
    assert type(twin.optimizer) is type(model.optimizer)
    assert twin.optimizer is not model.optimizer
    assert rt.current_lr(twin) == pytest.approx(2e-3)
    history = rt.fit(twin, x[:200], y[:200], epochs=1, batch_size=32)  # integer labels -> one-hot
    assert history["steps"] == 7 and all(np.isfinite(history["loss"]))
    assert same_weights(before, weights_of(model))
    assert not same_weights(before, weights_of(twin))
    assert int(rt.to_numpy(model.optimizer.iterations)) == 0  # the user's optimizer never stepped


def test_fit_is_deterministic_and_leaves_global_random_state(mnist_small):
    (x, y), (xv, yv) = mnist_small
    model = _keras_model()
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    runs = [rt.fit(rt.clone(model), x[:256], y[:256], epochs=1, seed=5, val=(xv, yv))
            for _ in range(2)]
    # nothing above moved the user's random streams
    draws = (random.random(), np.random.rand(), float(torch.rand(1)))
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    assert draws == (random.random(), np.random.rand(), float(torch.rand(1)))
    assert runs[0]["loss"] == runs[1]["loss"]  # dropout and shuffling follow the seed
    assert runs[0]["val_acc"] == runs[1]["val_acc"] and runs[0]["val_acc"][0] is not None
    other = rt.fit(rt.clone(model), x[:256], y[:256], epochs=1, seed=6)
    assert other["loss"] != runs[0]["loss"]


def test_reinit_draws_fresh_weights_from_the_seed():
    model = _keras_model()
    a, b, c = (rt.clone(model, seed=s, reinit=True) for s in (3, 3, 4))
    assert same_weights(weights_of(a), weights_of(b))
    assert not same_weights(weights_of(a), weights_of(c))
    assert not same_weights(weights_of(a), weights_of(model))
    net = _TorchNet()
    t1, t2 = rt.clone(net, seed=3, reinit=True), rt.clone(net, seed=3, reinit=True)
    assert same_weights(weights_of(t1), weights_of(t2))
    assert not same_weights(weights_of(t1), weights_of(net))


def test_torch_optimizer_is_recreated_for_the_copy_with_its_groups(mnist_small):
    (x, y), _ = mnist_small
    torch.manual_seed(0)
    net = _TorchNet()
    opt = torch.optim.SGD([{"params": net.conv.parameters(), "lr": 0.05},
                           {"params": list(net.bn.parameters()) + list(net.fc.parameters())}],
                          lr=0.1, momentum=0.9)
    before = weights_of(net)
    twin = rt.clone(net)
    seen = {}

    def on_step(info):
        seen.setdefault("lr", info.lr)

    history = rt.fit(twin, _nchw(x[:128]), y[:128], loss=torch.nn.CrossEntropyLoss(),
                     optimizer=opt, epochs=1, batch_size=32, on_step=on_step)
    assert history["optimizer"].startswith("SGD") and seen["lr"] == pytest.approx(0.05)
    assert same_weights(before, weights_of(net))  # weights and batch-norm statistics
    assert len(opt.state) == 0 and net.training
    assert not same_weights(before, weights_of(twin))
    # lr overrides the first group's rate (the rate current_lr reports) and keeps the ratio of
    # the others to it
    history = rt.fit(rt.clone(net), _nchw(x[:64]), y[:64], loss=torch.nn.CrossEntropyLoss(),
                     optimizer=opt, lr=0.01, epochs=1, batch_size=32)
    assert history["lr"][0] == pytest.approx(0.01) and rt.current_lr(net, opt) == 0.05
    from cnndoctor.frameworks.torch.runtime import Trainer

    trainer = Trainer(rt.clone(net), None, opt, 0.01)
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [pytest.approx(0.01),
                                                                 pytest.approx(0.02)]


def test_predict_restores_modes_and_batch_norm_statistics(mnist_small):
    (x, _), _ = mnist_small
    net = _TorchNet()
    net.train()
    net.drop.eval()  # a mixed state must come back as it was
    before = weights_of(net)
    out = rt.predict(net, _nchw(x[:10]))
    assert out.shape == (10, 10)
    assert net.training and not net.drop.training
    assert same_weights(before, weights_of(net))


def test_output_probabilities():
    logits = np.array([[1.0, 2.0, 3.0]])
    p = rt.output_probabilities(logits, "linear")
    assert p.sum() == pytest.approx(1.0) and p.argmax() == 2
    assert np.allclose(rt.output_probabilities(np.log([[0.2, 0.8]]), "log_softmax"), [[0.2, 0.8]])
    probs = np.array([[0.1, 0.9]], dtype=np.float32)
    assert np.array_equal(rt.output_probabilities(probs, "softmax"), probs)
    assert rt.output_probabilities(np.array([[0.0]]), "linear")[0, 0] == pytest.approx(0.5)


def test_labels_follow_the_loss(mnist_small):
    (x, y), _ = mnist_small
    onehot = np.eye(10, dtype=np.float32)[y[:64]]
    net = _TorchNet()
    for labels, loss in ((onehot, torch.nn.CrossEntropyLoss()), (y[:64], torch.nn.MSELoss())):
        history = rt.fit(rt.clone(net), _nchw(x[:64]), labels, loss=loss, epochs=1)
        assert history["steps"] == 2 and np.isfinite(history["loss"]).all()
    assert rt.label_mode("keras", "sparse_categorical_crossentropy") == "sparse"
    assert rt.label_mode("keras", "categorical_crossentropy") == "onehot"
    assert rt.label_mode("torch", torch.nn.NLLLoss()) == "sparse"
