"""name -> healthy model, its data and training setup, in the form ``diagnose()`` takes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..cases import Setup
from ..cases.datasets import one_hot
from . import data, keras_models as km, torch_models as tm
from .config import Config

BATCH_SIZE = 32
EPOCHS = 5


@dataclass
class ZooEntry:
    name: str
    framework: str  # "keras" or "torch"
    dataset: str  # a key of data.SETS
    builder: Callable  # (seed, cfg, shape, classes) -> keras (model, labels) / torch (m, loss, opt)
    #: what the model is made of, for ``Operator.applies``: "conv", "bn", "gap", "flatten-head",
    #: "dense-stack", "dropout", "augment", "smoothing", "adamw", "schedule", "frozen", "residual",
    #: "small-map" (the last feature map is under 8 x 8: a kernel over all of it is an ordinary
    #: convolution, not the dense layer in disguise of the oversized-layer operator)
    tags: frozenset = field(default_factory=frozenset)
    description: str = ""
    smallest: bool = False  # among the quickest to diagnose (the clean models tests/test_zoo.py runs)
    #: torch: the learning-rate scheduler it trains with ("onecycle", "cosine"; torch_models)
    schedule: str | None = None
    #: torch: training images come from a Dataset that augments them (torch_data.AugmentedImages)
    dataset_augment: bool = False

    def build(self, seed: int = 0, cfg: Config | None = None) -> Setup:
        cfg = cfg or Config()
        (xt, yt), (xv, yv) = data.load(self.dataset, seed)
        classes = data.classes(self.dataset)
        if self.framework == "keras":
            model, labels = self.builder(seed, cfg, xt.shape[1:], classes)
            if labels == "one_hot":
                yt, yv = one_hot(yt, classes), one_hot(yv, classes)
            return Setup(model=model, train=(xt, yt), val=(xv, yv), batch_size=BATCH_SIZE,
                         epochs=EPOCHS, description=self.description)
        import torch

        xt, xv = (np.ascontiguousarray(a.transpose(0, 3, 1, 2)) for a in (xt, xv))
        model, loss, opt = self.builder(seed, cfg, xt.shape[1:], classes)
        train = (torch.from_numpy(xt), torch.from_numpy(yt))
        if self.dataset_augment:
            from .torch_data import AugmentedImages

            train = AugmentedImages(*train)
        sched = None
        if self.schedule:
            sched = tm.scheduler(self.schedule, opt, EPOCHS, -(-len(yt) // BATCH_SIZE))
        return Setup(model=model, train=train,
                     val=(torch.from_numpy(xv), torch.from_numpy(yv)), loss=loss, optimizer=opt,
                     batch_size=BATCH_SIZE, epochs=EPOCHS, description=self.description,
                     scheduler=sched)


ZOO: dict[str, ZooEntry] = {}


def _add(name, framework, dataset, builder, tags, description, smallest=False, **kw):
    ZOO[name] = ZooEntry(name, framework, dataset, builder, frozenset(tags), description, smallest,
                         **kw)


CONV = {"conv", "flatten-head"}
_add("keras-cnn", "keras", "digits16", km.plain_cnn, CONV,
     "Keras: Conv-ReLU-Pool x2, Flatten, Dense softmax (digits 16x16)", smallest=True)
_add("keras-bn-gap", "keras", "bars", km.bn_gap, {"conv", "bn", "gap"},
     "Keras: Conv-BN-ReLU x3, global average pooling (colour bars)")
_add("keras-resnet", "keras", "bars", km.resnet, {"conv", "bn", "gap", "residual"},
     "Keras: residual basic blocks 16-32 (colour bars)")
_add("keras-mobilenet", "keras", "bars", km.mobilenet, {"conv", "bn", "gap"},
     "Keras: depthwise-separable blocks, ReLU6 (colour bars)")
_add("keras-vgg-dropout", "keras", "digits16", km.vgg_dropout, CONV | {"dropout"},
     "Keras: VGG-style 3x3 stacks, Dense 64, dropout 0.3 (digits)")
_add("keras-mlp", "keras", "mnist", km.mlp, {"dense-stack"},
     "Keras: MLP 128-64 on MNIST images")
_add("keras-augmented", "keras", "bars", km.augmented,
     {"conv", "bn", "gap", "augment", "smoothing", "adamw", "schedule", "clip"},
     "Keras: RandomRotation/RandomTranslation, label smoothing, AdamW + cosine decay, clipnorm")
_add("keras-frozen-backbone", "keras", "digits16", km.frozen_backbone,
     {"conv", "flatten-head", "frozen"}, "Keras: frozen conv backbone, trainable Dense head")
_add("torch-cnn", "torch", "digits16", tm.plain_cnn, CONV,
     "PyTorch: Conv-ReLU-Pool x2, Linear (digits)", smallest=True)
_add("torch-bn-gap", "torch", "bars", tm.bn_gap, {"conv", "bn", "gap"},
     "PyTorch: Conv-BN-ReLU x3, global average pooling (colour bars)")
_add("torch-resnet18", "torch", "bars", tm.resnet18,
     {"conv", "bn", "gap", "residual", "small-map"},
     "PyTorch: ResNet-18 layout of basic blocks, widths 8-64 (colour bars)")
_add("torch-mobilenet", "torch", "bars", tm.mobilenet, {"conv", "bn", "gap"},
     "PyTorch: depthwise-separable blocks, ReLU6 (colour bars)")
_add("torch-vgg-dropout", "torch", "digits16", tm.vgg_dropout,
     CONV | {"dropout", "smoothing", "adamw"},
     "PyTorch: VGG-style, dropout 0.3, label smoothing 0.1, AdamW weight decay 0.05")
_add("torch-mlp", "torch", "digits16", tm.mlp, {"dense-stack"},
     "PyTorch: MLP 128-64 on digit images", smallest=True)
_add("torch-frozen-backbone", "torch", "digits16", tm.frozen_backbone,
     {"conv", "flatten-head", "frozen"}, "PyTorch: frozen conv backbone, trainable Linear head")
_add("torch-augmented", "torch", "bars", tm.augmented,
     {"conv", "bn", "gap", "augment", "smoothing", "adamw", "schedule"},
     "PyTorch: a Dataset that turns and shifts the images in __getitem__, label smoothing, AdamW "
     "+ CosineAnnealingLR per epoch (colour bars)", schedule="cosine", dataset_augment=True)
_add("torch-onecycle", "torch", "digits16", tm.onecycle,
     {"conv", "bn", "flatten-head", "schedule"},
     "PyTorch: Conv-BN-ReLU-Pool x2, SGD Nesterov + weight decay under OneCycleLR to 0.1 per "
     "batch (digits)", schedule="onecycle")


def get(name: str) -> ZooEntry:
    return ZOO[name]
