"""Live monitors: findings during the user's own training, without changing that training."""
import numpy as np
import pytest
import torch

from cnndoctor import monitor

from conftest import same_weights, weights_of


def _keras_model(relu_logits, seed=3):
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.3),
        keras.layers.Dense(10, activation="relu" if relu_logits else None, name="logits"),
        keras.layers.Softmax(),
    ])
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy")
    return model


def _fit_keras(model, data, callbacks, epochs=1):
    import keras

    (x, y), _ = data
    keras.utils.set_random_seed(7)
    return model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, callbacks=callbacks)


def test_keras_monitor_reports_dead_output_units_and_changes_nothing(mnist_small):
    plain = _keras_model(relu_logits=True)
    _fit_keras(plain, mnist_small, [], epochs=2)
    watched = _keras_model(relu_logits=True)
    seen = []
    cb = monitor.KerasMonitor(every=2, on_finding=seen.append)
    _fit_keras(watched, mnist_small, [cb], epochs=2)
    # bit-identical training: the monitor only reads
    assert same_weights(weights_of(plain), weights_of(watched))
    codes = [f.code for f in seen]
    assert "dead-relu" in codes
    dead = next(f for f in seen if f.code == "dead-relu")
    layer = dead.evidence["dead_layers"][0]
    assert layer["layer"] == "logits" and layer["logits_layer"] and layer["dead_units"] >= 1
    assert dead.evidence["step"] > 0
    # the wrappers are gone after training
    assert not any("call" in vars(layer) for layer in watched.layers)


def test_keras_monitor_quiet_on_healthy_model(mnist_small):
    model = _keras_model(relu_logits=False)
    cb = monitor.KerasMonitor(every=5, on_finding=lambda f: None)
    _fit_keras(model, mnist_small, [cb])
    assert [f.code for f in cb.findings if f.severity == "error"] == []


def test_keras_monitor_stops_on_error(mnist_small):
    model = _keras_model(relu_logits=True)
    cb = monitor.KerasMonitor(every=2, stop_on_error=True, on_finding=lambda f: None)
    history = _fit_keras(model, mnist_small, [cb], epochs=5)
    assert len(history.history["loss"]) < 5
    assert any(f.severity == "error" for f in cb.findings)


class _Net(torch.nn.Module):
    def __init__(self, relu_logits):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 3)
        self.drop = torch.nn.Dropout(0.3)
        self.fc = torch.nn.Linear(13 * 13 * 8, 10)
        self.relu_logits = relu_logits

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
        x = self.fc(self.drop(x.flatten(1)))
        return torch.nn.functional.relu(x) if self.relu_logits else x


def _torch_run(data, relu_logits, watch_kwargs=None, epochs=1):
    (x, y), _ = data
    xt = torch.tensor(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    yt = torch.tensor(y)
    torch.manual_seed(3)
    net = _Net(relu_logits)
    opt = torch.optim.RMSprop(net.parameters(), lr=1e-3)
    crit = torch.nn.CrossEntropyLoss()
    torch.manual_seed(7)
    w = None
    steps = 0

    def loop():
        nonlocal steps
        for _ in range(epochs):
            perm = torch.randperm(len(xt))
            for i in range(0, len(xt), 32):
                idx = perm[i:i + 32]
                opt.zero_grad()
                loss = crit(net(xt[idx]), yt[idx])
                loss.backward()
                opt.step()
                steps += 1

    if watch_kwargs is None:
        loop()
    else:
        with monitor.watch(net, opt, loss_fn=crit, **watch_kwargs) as w:
            loop()
    return net, w, steps


def test_torch_watch_reports_dead_output_units_and_changes_nothing(mnist_small):
    plain, _, _ = _torch_run(mnist_small, relu_logits=True)
    seen = []
    watched, w, _ = _torch_run(mnist_small, relu_logits=True,
                               watch_kwargs=dict(every=2, on_finding=seen.append))
    assert same_weights(weights_of(plain), weights_of(watched))
    dead = next(f for f in seen if f.code == "dead-relu")
    assert dead.evidence["dead_layers"][0]["logits_layer"]
    assert dead.evidence["dead_layers"][0]["dead_units"] >= 1
    # ReLUs called as functions inside forward carry the model description's names from the
    # first recorded step on (not "relu (call 2 in forward)")
    assert [e["layer"] for e in w.watcher.recorder.relu_summary()] == ["torch.relu", "F.relu"]
    # every hook is removed when the block ends
    assert not watched._forward_hooks and not watched._forward_pre_hooks


def test_torch_watch_quiet_on_healthy_model(mnist_small):
    _, w, _ = _torch_run(mnist_small, relu_logits=False,
                         watch_kwargs=dict(every=5, on_finding=lambda f: None))
    assert [f.code for f in w.findings if f.severity == "error"] == []


def test_torch_watch_stops_on_error(mnist_small):
    _, w, steps = _torch_run(mnist_small, relu_logits=True, epochs=3,
                             watch_kwargs=dict(every=2, stop_on_error=True,
                                               on_finding=lambda f: None))
    assert w.stopped_by is not None and w.stopped_by.severity == "error"
    assert steps < 3 * 32  # the with block ended the loop early, without an exception


def test_torch_watch_sees_nan_loss(mnist_small):
    (x, y), _ = mnist_small
    xt = torch.tensor(np.ascontiguousarray(x[:256].transpose(0, 3, 1, 2)))
    xt[:, :, 0, 0] = float("inf")  # one corrupt pixel per image
    torch.manual_seed(0)
    net = _Net(relu_logits=False)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    crit = torch.nn.CrossEntropyLoss()
    with monitor.watch(net, opt, loss_fn=crit, every=1, stop_on_error=True,
                       on_finding=lambda f: None) as w:
        for _ in range(3):
            for i in range(0, 256, 32):
                opt.zero_grad()
                loss = crit(net(xt[i:i + 32]), torch.tensor(y[i:i + 32]))
                loss.backward()
                opt.step()
    assert w.stopped_by is not None and w.stopped_by.code == "nan-loss"
    assert w.watcher.step <= 2


@pytest.mark.parametrize("every", [1, 50])
def test_sampling_interval_bounds_recording(mnist_small, every):
    _, w, steps = _torch_run(mnist_small, relu_logits=False,
                             watch_kwargs=dict(every=every, on_finding=lambda f: None))
    recorded = len(w.watcher.recorder.total_grad)
    assert recorded == -(-steps // every)
