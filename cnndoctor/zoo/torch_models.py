"""The PyTorch half of the zoo: small healthy models, written as people write them.

Each builder takes ``(seed, cfg, shape, classes)`` with ``shape`` channels-first and returns
``(model, loss, optimizer)``. The residual network is the ResNet-18 layout (four stages of two
basic blocks, He et al. 2016) at a width a 2-core machine trains in seconds; torchvision cannot
be imported beside the CPU torch here, so it is written out.
"""
from __future__ import annotations

from .config import Config

#: Adam's default rate (Kingma and Ba, 2015)
BASE_LR = 1e-3
#: as in keras_models: label smoothing 0.1 (Szegedy et al. 2016), AdamW weight decay 0.05 (timm)
LABEL_SMOOTHING = 0.1
WEIGHT_DECAY = 0.05
VGG_DROPOUT = 0.3
OVERSIZED_FILTERS = 256
#: OneCycle (Smith and Topin 2019, "Super-convergence"): SGD with Nesterov momentum 0.9 up to a
#: peak rate of 0.1 (torch's OneCycleLR defaults otherwise: 30% warm-up, start at peak / 25), and
#: the weight decay 5e-4 of their CIFAR ResNets
ONECYCLE_MAX_LR = 0.1
SGD_MOMENTUM = 0.9
SGD_WEIGHT_DECAY = 5e-4
#: cosine annealing to a hundredth of the rate (timm's default ``min_lr`` ratio is 1e-2 or lower)
COSINE_FLOOR = 0.01
#: ResNet-18: two basic blocks per stage; our widths are 1/8 of the paper's 64-128-256-512
RESNET18_STAGES = (2, 2, 2, 2)
RESNET_WIDTHS = (8, 16, 32, 64)


def _act(cfg: Config):
    from torch import nn

    return {None: [], "relu": [nn.ReLU()], "relu6": [nn.ReLU6()], "sigmoid": [nn.Sigmoid()],
            "tanh": [nn.Tanh()]}[cfg.act]


def _head(cfg: Config, channels: int, size: int, classes: int, *, pool: str, dropout=None):
    """Layers from the last feature map to the output, and the loss that goes with them."""
    from torch import nn

    layers: list = []
    if cfg.oversized:
        layers += [nn.Conv2d(channels, OVERSIZED_FILTERS, kernel_size=size), *_act(cfg)]
        channels, size = OVERSIZED_FILTERS, 1
    if pool == "gap":
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        features = channels
    else:
        layers += [nn.Flatten()]
        features = channels * size * size
    rate = cfg.dropout if cfg.dropout is not None else dropout
    if rate is not None:
        layers.append(nn.Dropout(rate))
    layers.append(nn.Linear(features, classes + cfg.units_delta))
    if cfg.logit_act == "relu":
        layers.append(nn.ReLU())
    if cfg.head == "double":
        layers.append(nn.Softmax(dim=1))
        loss = nn.CrossEntropyLoss()
    elif cfg.head == "missing":
        loss = nn.NLLLoss()  # wants log-probabilities; gets raw logits
    elif cfg.head == "sigmoid":
        layers.append(nn.Softmax(dim=1))
        loss = nn.NLLLoss()  # wants log-probabilities; gets probabilities
    else:
        loss = nn.CrossEntropyLoss()
    return layers, loss


def _finish(seed, model, loss, cfg: Config, *, adamw=False, params=None, sgd=False):
    import torch

    if cfg.freeze_all:
        for p in model.parameters():
            p.requires_grad_(False)
    params = list(model.parameters()) if params is None else params
    if sgd:
        opt = torch.optim.SGD(params, lr=ONECYCLE_MAX_LR * cfg.lr_factor, momentum=SGD_MOMENTUM,
                              nesterov=True, weight_decay=SGD_WEIGHT_DECAY)
        return model, loss, opt
    lr = BASE_LR * cfg.lr_factor
    opt = (torch.optim.AdamW(params, lr=lr, weight_decay=WEIGHT_DECAY) if adamw
           else torch.optim.Adam(params, lr=lr))
    return model, loss, opt


def scheduler(kind: str, opt, epochs: int, steps_per_epoch: int):
    """The learning-rate scheduler a zoo entry trains with, over its optimizer: ``"onecycle"``
    stepped after every batch, ``"cosine"`` after every epoch (as their docs use them)."""
    import torch

    if kind == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=opt.param_groups[0]["lr"], epochs=epochs, steps_per_epoch=steps_per_epoch)
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=epochs, eta_min=opt.param_groups[0]["lr"] * COSINE_FLOOR)
    raise ValueError(f"unknown schedule {kind!r}")


def _conv(cin, cout, cfg, *, bn=False, stride=1):
    from torch import nn

    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=not bn),
            *([nn.BatchNorm2d(cout)] if bn else []), *_act(cfg)]


def plain_cnn(seed, cfg, shape, classes):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    c, s = shape[0], shape[1]
    body = [*_conv(c, 16, cfg), nn.MaxPool2d(2), *_conv(16, 32, cfg)]
    size = s // 2
    if not cfg.oversized:
        body.append(nn.MaxPool2d(2))
        size //= 2
    head, loss = _head(cfg, 32, size, classes, pool="flatten")
    return _finish(seed, nn.Sequential(*body, *head), loss, cfg)


def bn_gap(seed, cfg, shape, classes):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    body = [*_conv(shape[0], 16, cfg, bn=True), *_conv(16, 32, cfg, bn=True, stride=2),
            *_conv(32, 32, cfg, bn=True)]
    head, loss = _head(cfg, 32, shape[1] // 2, classes, pool="gap")
    return _finish(seed, nn.Sequential(*body, *head), loss, cfg)


def _make_block(cin, cout, stride, cfg):
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.act1 = nn.Sequential(*_act(cfg))
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.act2 = nn.Sequential(*_act(cfg))
            self.shortcut = nn.Sequential()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                              nn.BatchNorm2d(cout))

        def forward(self, x):
            out = self.act1(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.act2(out + self.shortcut(x))

    del torch
    return BasicBlock()


def resnet18(seed, cfg, shape, classes):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    layers = [*_conv(shape[0], RESNET_WIDTHS[0], cfg, bn=True)]
    cin, size = RESNET_WIDTHS[0], shape[1]
    for i, (blocks, width) in enumerate(zip(RESNET18_STAGES, RESNET_WIDTHS)):
        for b in range(blocks):
            stride = 2 if (b == 0 and i > 0) else 1
            layers.append(_make_block(cin, width, stride, cfg))
            cin = width
            size = (size + stride - 1) // stride
    head, loss = _head(cfg, cin, size, classes, pool="gap")
    return _finish(seed, nn.Sequential(*layers, *head), loss, cfg)


def mobilenet(seed, cfg, shape, classes):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    act = cfg if cfg.act != "relu" else Config(**{**cfg.__dict__, "act": "relu6"})
    layers = [*_conv(shape[0], 16, act, bn=True)]
    cin, size = 16, shape[1]
    for cout, stride in ((32, 2), (32, 1)):
        layers += [nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False),
                   nn.BatchNorm2d(cin), *_act(act),
                   nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), *_act(act)]
        cin, size = cout, (size + stride - 1) // stride
    head, loss = _head(cfg, cin, size, classes, pool="gap")
    return _finish(seed, nn.Sequential(*layers, *head), loss, cfg)


def vgg_dropout(seed, cfg, shape, classes):
    """VGG-style stacks of 3x3 convolutions, dropout before the output; AdamW + label smoothing."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    c, s = shape[0], shape[1]
    body = [*_conv(c, 16, cfg), *_conv(16, 16, cfg), nn.MaxPool2d(2),
            *_conv(16, 32, cfg), *_conv(32, 32, cfg)]
    size = s // 2
    if not cfg.oversized:
        body += [nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * (s // 4) ** 2, 64), *_act(cfg)]
        head, loss = _head(cfg, 64, 1, classes, pool="flatten", dropout=VGG_DROPOUT)
    else:
        head, loss = _head(cfg, 32, size, classes, pool="flatten", dropout=VGG_DROPOUT)
    if isinstance(loss, nn.CrossEntropyLoss):
        loss = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    return _finish(seed, nn.Sequential(*body, *head), loss, cfg, adamw=True)


def mlp(seed, cfg, shape, classes):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    n = 1
    for d in shape:
        n *= d
    layers: list = [nn.Flatten()]
    for width in (128, 64) + (64,) * cfg.extra_depth:
        layers += [nn.Linear(n, width), *_act(cfg)]
        n = width
    head, loss = _head(cfg, n, 1, classes, pool="flatten")
    return _finish(seed, nn.Sequential(*layers, *head[1:]), loss, cfg)


def frozen_backbone(seed, cfg, shape, classes):
    """A frozen convolutional backbone (``requires_grad=False``) and a trainable head; the
    optimizer gets only the trainable parameters, as fine-tuning tutorials write it."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    c, s = shape[0], shape[1]
    backbone = nn.Sequential(*_conv(c, 16, cfg), nn.MaxPool2d(2), *_conv(16, 32, cfg),
                             nn.MaxPool2d(2))
    for p in backbone.parameters():
        p.requires_grad_(False)
    head, loss = _head(cfg, 32, s // 4, classes, pool="flatten")
    model = nn.Sequential(backbone, *head)
    params = [p for p in model.parameters() if p.requires_grad] if not cfg.freeze_all else None
    return _finish(seed, model, loss, cfg, params=params)


def augmented(seed, cfg, shape, classes):
    """Conv-BN-ReLU + global average pooling, trained from a ``Dataset`` that augments in
    ``__getitem__`` (``torch_data.AugmentedImages``), label smoothing, AdamW, cosine annealing."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    body = [*_conv(shape[0], 16, cfg, bn=True), *_conv(16, 32, cfg, bn=True, stride=2),
            *_conv(32, 32, cfg, bn=True)]
    head, loss = _head(cfg, 32, shape[1] // 2, classes, pool="gap")
    if isinstance(loss, nn.CrossEntropyLoss):
        loss = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    return _finish(seed, nn.Sequential(*body, *head), loss, cfg, adamw=True)


def onecycle(seed, cfg, shape, classes):
    """Conv-BN-ReLU-Pool x2 and a Linear head, SGD with Nesterov momentum and weight decay under
    a OneCycle schedule (the super-convergence recipe)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    c, s = shape[0], shape[1]
    body = [*_conv(c, 16, cfg, bn=True), nn.MaxPool2d(2), *_conv(16, 32, cfg, bn=True)]
    size = s // 2
    if not cfg.oversized:
        body.append(nn.MaxPool2d(2))
        size //= 2
    head, loss = _head(cfg, 32, size, classes, pool="flatten")
    return _finish(seed, nn.Sequential(*body, *head), loss, cfg, sgd=True)
