"""The PyTorch adapter: a torch module and its loss in, a framework-neutral ModelGraph out."""
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import functools  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import cnndoctor  # noqa: E402,F401  (sets the Keras backend before anything imports keras)
from cnndoctor.adapters import describe  # noqa: E402
from cnndoctor.frameworks.torch import adapter as torch_adapter  # noqa: E402
from cnndoctor.frameworks.torch.adapter import describe_torch  # noqa: E402
from cnndoctor.frameworks.torch.losses import parse_torch_loss  # noqa: E402
from cnndoctor.errors import InputError  # noqa: E402
from cnndoctor.graph import (  # noqa: E402
    ACTIVATION, DROPOUT, GLOBAL_POOL, LOG_SOFTMAX, MERGE, NORM, POOL, RESCALE, SHAPE, SOFTMAX,
    WEIGHTED,
)

torch.manual_seed(0)


def images(n=4, c=3, size=12):
    return np.random.default_rng(0).random((n, c, size, size), dtype=np.float32)


def kinds(graph):
    return [layer.kind for layer in graph.layers]


# ---- models ---------------------------------------------------------------------------------
def sequential_cnn():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
        nn.Flatten(), nn.Dropout(0.25), nn.Linear(8 * 5 * 5, 10))


class FunctionalNet(nn.Module):
    """Activations and softmax as function calls: invisible to module walking."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3)
        self.conv2 = nn.Conv2d(8, 8, 3)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x).softmax(1)


class ScaledInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        x = self.conv(x / 255)
        x = x * 0.5  # after a weighted layer: not an input rescaling
        return self.fc(F.relu(x).mean((2, 3)))


class Standardized(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1))
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        x = (x - self.mean) / 0.25
        return F.relu(self.conv(x)).mean((2, 3))


class Residual(nn.Module):
    def __init__(self, c=8):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(x + self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """A torchvision-style basic block, written by hand, with an in-place add and a shared ReLU."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class SmallResNet(nn.Module):
    """Stem, two residual stages, a 1x1-conv + global-average-pooling head, log_softmax."""

    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU(inplace=True))
        self.layer1 = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 16, stride=2))
        self.head = nn.Conv2d(16, classes, 1)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))

    def forward(self, x):
        x = self.pool(self.head(self.layer1(self.stem(x))))
        return F.log_softmax(torch.flatten(x, 1), dim=1)


class DataDependent(nn.Module):
    """Control flow on a tensor value: torch.fx cannot trace this forward."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        x = self.conv(x)
        if x.abs().sum() > 0:  # always true for these inputs
            x = F.relu(x)
        x = x.mean((2, 3))
        return torch.softmax(self.fc(self.drop(x)), dim=1)


# ---- structure -------------------------------------------------------------------------------
def test_sequential_cnn_is_flattened_with_shapes_and_counts():
    graph = describe_torch(sequential_cnn(), example=images())
    assert graph.framework == "torch" and graph.data_format == "channels_first"
    assert graph.input_shape == (3, 12, 12)
    assert kinds(graph) == [WEIGHTED, ACTIVATION, POOL, WEIGHTED, NORM, ACTIVATION, SHAPE,
                            DROPOUT, WEIGHTED]
    first = graph.layers[0]
    assert (first.name, first.source, first.op) == ("0", "nn.Conv2d", "conv")
    assert (first.fan_in, first.params, first.units, first.kernel_size) == (27, 224, 8, (3, 3))
    assert first.input_shape == (3, 12, 12) and first.output_shape == (8, 10, 10)
    assert graph.by_name("3.0").fan_in == 72  # nested Sequential, qualified name kept
    assert graph.by_name("5").rate == 0.25
    dense = graph.layers[-1]
    assert (dense.op, dense.fan_in, dense.units, dense.output_shape) == ("dense", 200, 10, (10,))
    assert graph.layers[1].inputs == ["0"] and graph.layers[1].activation == "relu"
    assert graph.total_params == sum(p.numel() for p in sequential_cnn().parameters())
    assert graph.output_activation == "linear" and graph.output_units == 10
    assert graph.notes == []


def test_functional_activations_and_softmax_are_seen_in_order():
    graph = describe_torch(FunctionalNet(), example=images())
    acts = [layer for layer in graph.layers if layer.kind == ACTIVATION]
    assert [(a.source, a.activation, a.inputs) for a in acts] == [
        ("F.relu", "relu", ["conv1"]), ("torch.relu", "relu", ["conv2"])]
    names = [layer.name for layer in graph.layers]
    assert names.index("conv1") < names.index(acts[0].name) < names.index("conv2")
    softmax = graph.layers[-1]
    assert softmax.kind == SOFTMAX and softmax.source == "x.softmax"
    assert softmax.inputs == ["fc"] and graph.producer(softmax).op == "dense"
    assert graph.by_name("F.adaptive_avg_pool2d").kind == GLOBAL_POOL
    assert graph.output_activation == "softmax" and graph.output_units == 10


def test_functional_calls_are_seen_without_an_example():
    graph = describe_torch(FunctionalNet())
    assert [layer.source for layer in graph.layers if layer.kind in (ACTIVATION, SOFTMAX)] == [
        "F.relu", "torch.relu", "x.softmax"]
    assert graph.layers[0].output_shape is None and graph.input_shape is None
    assert any("no example" in note for note in graph.notes)


def test_input_division_is_a_rescale_but_later_arithmetic_is_not():
    graph = describe_torch(ScaledInput(), example=images())
    first = graph.layers[0]
    assert first.kind == RESCALE and first.source == "x / 255"
    assert first.scale == pytest.approx(1 / 255)
    assert graph.layers[1].inputs == [first.name]
    later = graph.by_name("mul")
    assert later is not None and later.kind != RESCALE
    assert graph.by_name("x.mean").kind == GLOBAL_POOL  # global average pooling as a mean


def test_mean_subtraction_and_std_division_are_rescales():
    graph = describe_torch(Standardized(), example=images())
    sub, div = graph.layers[:2]
    assert (sub.kind, sub.source, sub.scale) == (RESCALE, "x - self.mean", 1.0)
    assert (div.kind, div.scale) == (RESCALE, pytest.approx(4.0))
    assert div.inputs == [sub.name] and graph.layers[2].inputs == [div.name]


def test_residual_add_is_a_merge_of_both_branches():
    graph = describe_torch(Residual(), example=images(c=8))
    merge = graph.by_name("add")
    assert merge.kind == MERGE and merge.source == "x + y"
    assert merge.inputs == ["bn"]  # the other branch is the model input itself
    assert graph.successors(merge)[0].activation == "relu"


def test_hand_written_resnet_reads_as_healthy_structure():
    model = SmallResNet()
    graph = describe_torch(model, loss=nn.NLLLoss(), example=images(size=16))
    merges = [layer for layer in graph.layers if layer.kind == MERGE]
    assert len(merges) == 2
    assert sorted(merges[1].inputs) == ["layer1.1.bn2", "layer1.1.downsample.1"]
    # the shared ReLU module is one layer per call, each after the step that feeds it
    assert graph.by_name("layer1.0.relu#2").inputs == [merges[0].name]
    # every weighted layer except the head is followed by norm -> relu or by a merge
    for layer in graph.weighted[:-1]:
        nxt = graph.successors(layer)[0]
        assert nxt.kind == NORM, layer.name
    head = graph.by_name("head")
    assert (head.fan_in, head.units) == (16, 10)
    assert graph.successors(head)[0].kind == GLOBAL_POOL
    assert graph.output_activation == "log_softmax" and graph.output_units == 10
    assert graph.loss.name == "nll" and graph.loss.expects == "log_probabilities"
    assert graph.total_params == sum(p.numel() for p in model.parameters())


def test_functional_conv_with_own_parameter_and_shared_module():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(6, 1, 3, 3))  # depthwise: groups == 6
            self.stem = nn.Conv2d(3, 6, 1)
            self.fc = nn.Linear(6, 6)

        def forward(self, x):
            x = F.conv2d(self.stem(x), self.weight, padding=1, groups=6)
            x = F.gelu(x).mean((2, 3))
            return self.fc(F.gelu(self.fc(x)))  # the same Linear twice

    graph = describe_torch(Net(), example=images())
    conv = graph.by_name("F.conv2d")
    assert (conv.kind, conv.op, conv.params, conv.fan_in, conv.units) == (
        WEIGHTED, "depthwise_conv", 54, 9, 6)
    assert [layer.name for layer in graph.layers if layer.source == "nn.Linear"] == ["fc", "fc#2"]
    assert graph.by_name("fc").params == 42 and graph.by_name("fc#2").params == 0
    assert graph.total_params == 24 + 54 + 42


def test_branches_joined_by_cat_and_gating_and_tuple_outputs():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 3, padding=1)
            self.gate = nn.Linear(8, 8)
            self.rnn = nn.GRU(8, 6, batch_first=True)
            self.fc = nn.Linear(6, 3)

        def forward(self, x):
            z = torch.cat([F.relu(self.a(x)), F.relu(self.b(x))], dim=1)
            z = z * torch.sigmoid(self.gate(z.mean((2, 3)))).view(-1, 8, 1, 1)
            seq, _ = self.rnn(z.flatten(2).transpose(1, 2))
            return self.fc(seq[:, -1])

    for example in (images(), None):
        graph = describe_torch(Net(), example=example)
        cat, mul = graph.by_name("torch.cat"), graph.by_name("mul")
        assert cat.kind == MERGE and cat.inputs == ["F.relu", "F.relu_1"]
        assert mul.kind == MERGE and mul.inputs == ["torch.cat", "x.view"]
        # unpacking the GRU's (output, state) is not a layer; indexing the output is
        assert graph.by_name("getitem").inputs == ["rnn"]
        assert graph.layers[-1].name == "fc"
    assert graph.layers[-1].output_shape is None
    assert describe_torch(Net(), example=images()).layers[-1].output_shape == (3,)


def test_a_bare_layer_is_one_layer():
    graph = describe_torch(nn.Linear(3, 2), example=torch.rand(2, 3))
    assert [(layer.name, layer.source, layer.params) for layer in graph.layers] == [
        ("Linear", "nn.Linear", 8)]


def test_dispatch_through_adapters_describe():
    graph = describe(FunctionalNet(), loss=nn.CrossEntropyLoss(), example=images())
    assert graph.framework == "torch" and graph.loss.name == "cross_entropy"


# ---- fallback --------------------------------------------------------------------------------
def test_data_dependent_control_flow_is_recorded_from_a_run():
    graph = describe_torch(DataDependent(), example=images())
    assert any("could not be traced" in note and "one run" in note for note in graph.notes)
    assert [layer.kind for layer in graph.layers] == [
        WEIGHTED, ACTIVATION, GLOBAL_POOL, DROPOUT, WEIGHTED, SOFTMAX]
    relu = graph.layers[1]
    assert relu.source == "F.relu" and relu.inputs == ["conv"]
    assert graph.layers[-1].inputs == ["fc"] and graph.layers[0].output_shape == (4, 10, 10)
    # the test of the `if` computes nothing the output depends on: it is not a layer
    assert not any(layer.source == "x.abs" for layer in graph.layers)


def test_fallback_to_module_hooks_says_functions_were_not_seen(monkeypatch):
    class Broken(torch_adapter._Recorder):
        def __enter__(self):
            raise RuntimeError("function recording unavailable")

    monkeypatch.setattr(torch_adapter, "_Recorder", Broken)
    graph = describe_torch(DataDependent(), example=images())
    assert [layer.name for layer in graph.layers] == ["conv", "drop", "fc"]
    assert graph.layers[1].inputs == ["conv"] and graph.layers[2].inputs == ["drop"]
    assert any("could not be seen" in note for note in graph.notes)


def test_untraceable_without_example_lists_modules_with_a_note():
    graph = describe_torch(DataDependent())
    assert [layer.name for layer in graph.layers] == ["conv", "drop", "fc"]
    assert any("could not be seen" in note for note in graph.notes)


# ---- the user's model is never modified ----------------------------------------------------
@pytest.mark.parametrize("model_factory", [SmallResNet, DataDependent])
@pytest.mark.parametrize("training", [True, False])
def test_users_model_is_untouched(model_factory, training):
    model = model_factory()
    model.train(training)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    describe_torch(model, loss=nn.CrossEntropyLoss(), example=images(size=16))
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [m.training for m in model.modules()] == modes
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("model_factory", [FunctionalNet, DataDependent])
def test_users_hooks_do_not_fire_and_stay_registered(model_factory):
    model, calls = model_factory(), []
    model.fc.register_forward_hook(lambda module, inputs, output: calls.append(output.shape))
    describe_torch(model, example=images())
    assert calls == [] and len(model.fc._forward_hooks) == 1


def test_example_array_is_not_modified_by_an_in_place_forward():
    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3)

        def forward(self, x):
            return self.conv(x.div_(255))

    x = images()
    keep = x.copy()
    describe_torch(InPlace(), example=x)
    assert np.array_equal(x, keep)


def test_example_the_model_cannot_take_leaves_a_note():
    graph = describe_torch(FunctionalNet(), example=images(c=1))  # one channel, conv wants three
    assert graph.layers[0].output_shape is None
    assert any("could not run on the example" in note for note in graph.notes)


# ---- losses ----------------------------------------------------------------------------------
@pytest.mark.parametrize("loss, name, expects, family", [
    (nn.CrossEntropyLoss(), "cross_entropy", "logits", "sparse"),
    (F.cross_entropy, "cross_entropy", "logits", "sparse"),
    (nn.NLLLoss(), "nll", "log_probabilities", "sparse"),
    (F.nll_loss, "nll", "log_probabilities", "sparse"),
    (nn.BCELoss(), "bce", "probabilities", "binary"),
    (F.binary_cross_entropy, "bce", "probabilities", "binary"),
    (nn.BCEWithLogitsLoss(), "bce_with_logits", "logits", "binary"),
    (F.binary_cross_entropy_with_logits, "bce_with_logits", "logits", "binary"),
    (nn.MSELoss(), "mse", "any", "regression"),
    (F.mse_loss, "mse", "any", "regression"),
    (nn.L1Loss(), "l1", "any", "regression"),
    (F.l1_loss, "l1", "any", "regression"),
    (nn.KLDivLoss(reduction="batchmean"), "kl_div", "log_probabilities", "categorical"),
    (F.kl_div, "kl_div", "log_probabilities", "categorical"),
])
def test_known_losses(loss, name, expects, family):
    info = parse_torch_loss(loss)
    assert (info.name, info.expects, info.family) == (name, expects, family)


def test_loss_sources_say_what_the_user_wrote():
    assert parse_torch_loss(nn.CrossEntropyLoss()).source == "nn.CrossEntropyLoss()"
    assert parse_torch_loss(F.nll_loss).source == "F.nll_loss"
    partial = parse_torch_loss(functools.partial(F.cross_entropy, label_smoothing=0.1))
    assert (partial.name, partial.source) == (
        "cross_entropy", "functools.partial(F.cross_entropy, ...)")
    assert parse_torch_loss("cross_entropy").name == "cross_entropy"
    assert parse_torch_loss(None) is None


def test_loss_functions_are_read_through_lambdas_closures_and_modules():
    info = parse_torch_loss(lambda out, y: F.cross_entropy(out, y))
    assert (info.name, info.expects, info.source) == (
        "cross_entropy", "logits", "lambda calling F.cross_entropy")

    criterion = nn.BCELoss()

    def sigmoid_bce(out, y):  # applies the sigmoid itself: the model should give logits
        return criterion(torch.sigmoid(out), y)

    info = parse_torch_loss(sigmoid_bce)
    assert (info.name, info.expects) == ("bce", "logits") and "sigmoid" in info.source

    info = parse_torch_loss(lambda out, y: F.nll_loss(F.log_softmax(out, 1), y))
    assert (info.name, info.expects) == ("nll", "logits")

    class Weighted(nn.Module):
        def __init__(self):
            super().__init__()
            self.ce = nn.CrossEntropyLoss()

        def forward(self, out, y):
            return self.ce(out, y)

    info = parse_torch_loss(Weighted())
    assert (info.name, info.expects) == ("cross_entropy", "logits")
    assert info.source.startswith("Weighted()")


@pytest.mark.parametrize("bad", [42, "hinge", lambda out, y: (out - y).abs().mean()])
def test_unknown_loss_is_an_input_error(bad):
    with pytest.raises(InputError, match="nn.CrossEntropyLoss"):
        parse_torch_loss(bad)


def test_describe_keeps_going_with_a_custom_loss_but_not_with_a_non_loss():
    graph = describe_torch(FunctionalNet(), loss=lambda out, y: (out - y).abs().mean())
    assert graph.loss is None and any("custom function" in note for note in graph.notes)
    with pytest.raises(InputError):
        describe_torch(FunctionalNet(), loss=42)
