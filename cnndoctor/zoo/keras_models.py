"""The Keras half of the zoo: small healthy models of the architectures people train.

Each builder takes ``(seed, cfg)`` and returns a compiled model and the label form its loss
takes; ``registry.py`` pairs it with its data.
"""
from __future__ import annotations

from .config import Config

#: Adam's default rate (Kingma and Ba, 2015), which Keras also uses.
BASE_LR = 1e-3
#: the zoo's label smoothing and weight decay: the values of the Keras and PyTorch examples
#: (label smoothing 0.1: Szegedy et al. 2016; AdamW's weight decay 0.004 is Keras' default,
#: raised to 0.05 as in timm's training recipes so that it moves the weights visibly).
LABEL_SMOOTHING = 0.1
WEIGHT_DECAY = 0.05
CLIP_NORM = 1.0
#: dropout a VGG-style head uses (Simonyan and Zisserman used 0.5 on 4,096 units; ours are 64)
VGG_DROPOUT = 0.3
#: filters of the oversized head: a 64-position whole-map kernel with this many filters holds
#: most of the parameters of any zoo model (the pattern of reference case 3)
OVERSIZED_FILTERS = 256
#: augmentation of the colour bars that keeps every class what it is: rotations of up to 0.05
#: of a turn (18 degrees: a bar stays horizontal, vertical or diagonal) and shifts of a tenth. No
#: flip: mirroring turns a diagonal bar into the anti-diagonal, another class (with
#: RandomFlip("horizontal") the clean model tops out near 75%, half of two classes mislabelled).
ROTATION, SHIFT = 0.05, 0.1


def _act(h, cfg: Config, name: str | None = None):
    from keras import layers

    if cfg.act is None:
        return h
    return layers.Activation(cfg.act, name=name)(h)


def _head(h, cfg: Config, classes: int, *, pool: str):
    """Features -> (whole-map conv) -> GAP/flatten -> (dropout) -> Dense -> output activation."""
    from keras import layers

    if cfg.oversized:
        h = layers.Conv2D(OVERSIZED_FILTERS, kernel_size=tuple(h.shape[1:3]), name="big_conv")(h)
        h = _act(h, cfg)
    if len(h.shape) == 4:
        h = layers.GlobalAveragePooling2D()(h) if pool == "gap" else layers.Flatten()(h)
    if cfg.dropout is not None:
        h = layers.Dropout(cfg.dropout)(h)
    h = layers.Dense(classes + cfg.units_delta, name="logits")(h)
    if cfg.logit_act:
        h = layers.Activation(cfg.logit_act, name="logit_act")(h)
    if cfg.head in ("match", "double"):
        h = layers.Activation("softmax", name="softmax")(h)
    elif cfg.head == "sigmoid":
        h = layers.Activation("sigmoid", name="sigmoid")(h)
    return h


def _compile(model, cfg: Config, *, smoothing: bool = False, adamw: bool = False,
             schedule: bool = False, clip: bool = False, steps: int = 1000):
    import keras

    lr = BASE_LR * cfg.lr_factor
    if schedule:
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=steps, alpha=0.1)
    kw = {"clipnorm": CLIP_NORM} if clip else {}
    opt = (keras.optimizers.AdamW(lr, weight_decay=WEIGHT_DECAY, **kw) if adamw
           else keras.optimizers.Adam(lr, **kw))
    from_logits = cfg.head == "double"  # "missing": logits into a probability loss
    if smoothing or cfg.head == "sigmoid":
        loss = keras.losses.CategoricalCrossentropy(
            from_logits=from_logits, label_smoothing=LABEL_SMOOTHING if smoothing else 0.0)
        labels = "one_hot"
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
        labels = "int"
    if cfg.freeze_all:
        model.trainable = False
    model.compile(optimizer=opt, loss=loss, metrics=["accuracy"])
    return model, labels


def _conv(h, filters, cfg, *, bn=False, stride=1, name=None):
    from keras import layers

    h = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=not bn, name=name)(h)
    if bn:
        h = layers.BatchNormalization()(h)
    return _act(h, cfg)


def _inputs(shape, seed):
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Input(shape=shape)


def plain_cnn(seed, cfg, shape, classes):
    import keras
    from keras import layers

    x = _inputs(shape, seed)
    h = _conv(x, 16, cfg)
    h = layers.MaxPooling2D()(h)
    h = _conv(h, 32, cfg)
    if not cfg.oversized:
        h = layers.MaxPooling2D()(h)
    h = _head(h, cfg, classes, pool="flatten")
    return _compile(keras.Model(x, h, name="plain_cnn"), cfg)


def bn_gap(seed, cfg, shape, classes):
    import keras
    from keras import layers

    x = _inputs(shape, seed)
    h = _conv(x, 16, cfg, bn=True)
    h = _conv(h, 32, cfg, bn=True, stride=2)
    h = _conv(h, 32, cfg, bn=True)
    h = _head(h, cfg, classes, pool="gap")
    return _compile(keras.Model(x, h, name="bn_gap"), cfg)


def _basic_block(h, filters, cfg, stride):
    from keras import layers

    shortcut = h
    out = _conv(h, filters, cfg, bn=True, stride=stride)
    out = layers.Conv2D(filters, 3, padding="same", use_bias=False)(out)
    out = layers.BatchNormalization()(out)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False)(shortcut)
        shortcut = layers.BatchNormalization()(shortcut)
    return _act(layers.Add()([out, shortcut]), cfg)


def resnet(seed, cfg, shape, classes):
    """A small residual network of ResNet basic blocks (He et al. 2016): 16 -> 32 filters."""
    import keras

    x = _inputs(shape, seed)
    h = _conv(x, 16, cfg, bn=True)
    h = _basic_block(h, 16, cfg, 1)
    h = _basic_block(h, 32, cfg, 2)
    h = _head(h, cfg, classes, pool="gap")
    return _compile(keras.Model(x, h, name="resnet"), cfg)


def mobilenet(seed, cfg, shape, classes):
    """Depthwise-separable blocks (MobileNet, Howard et al. 2017) with ReLU6 and batch norm."""
    import keras
    from keras import layers

    act = cfg if cfg.act != "relu" else Config(**{**cfg.__dict__, "act": "relu6"})
    x = _inputs(shape, seed)
    h = _conv(x, 16, act, bn=True)
    for filters, stride in ((32, 2), (32, 1)):
        h = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(h)
        h = layers.BatchNormalization()(h)
        h = _act(h, act)
        h = layers.Conv2D(filters, 1, use_bias=False)(h)
        h = layers.BatchNormalization()(h)
        h = _act(h, act)
    h = _head(h, cfg, classes, pool="gap")
    return _compile(keras.Model(x, h, name="mobilenet"), cfg)


def vgg_dropout(seed, cfg, shape, classes):
    import keras
    from keras import layers

    x = _inputs(shape, seed)
    h = _conv(x, 16, cfg)
    h = _conv(h, 16, cfg)
    h = layers.MaxPooling2D()(h)
    h = _conv(h, 32, cfg)
    h = _conv(h, 32, cfg)
    if not cfg.oversized:
        h = layers.MaxPooling2D()(h)
        h = layers.Flatten()(h)
        h = layers.Dense(64)(h)
        h = _act(h, cfg)
    h = _head(h, Config(**{**cfg.__dict__, "dropout": cfg.dropout if cfg.dropout is not None
                           else VGG_DROPOUT}), classes, pool="flatten")
    return _compile(keras.Model(x, h, name="vgg_dropout"), cfg)


def mlp(seed, cfg, shape, classes):
    import keras
    from keras import layers

    x = _inputs(shape, seed)
    h = layers.Flatten()(x)
    for width in (128, 64) + (64,) * cfg.extra_depth:
        h = _act(layers.Dense(width)(h), cfg)
    h = _head(h, cfg, classes, pool="flatten")
    return _compile(keras.Model(x, h, name="mlp"), cfg)


def augmented(seed, cfg, shape, classes):
    """Augmentation layers in the model, label smoothing, AdamW with a cosine schedule, clipping."""
    import keras
    from keras import layers

    x = _inputs(shape, seed)
    h = layers.RandomRotation(ROTATION)(x)
    h = layers.RandomTranslation(SHIFT, SHIFT)(h)
    h = _conv(h, 16, cfg, bn=True)
    h = _conv(h, 32, cfg, bn=True, stride=2)
    h = _head(h, cfg, classes, pool="gap")
    return _compile(keras.Model(x, h, name="augmented"), cfg, smoothing=True, adamw=True,
                    schedule=True, clip=True)


def frozen_backbone(seed, cfg, shape, classes):
    """A convolutional backbone frozen as a pretrained one would be, a trainable dense head."""
    import keras
    from keras import layers

    x = _inputs(shape, seed)
    backbone_in = x
    h = _conv(backbone_in, 16, cfg, name="backbone_conv1")
    h = layers.MaxPooling2D()(h)
    h = _conv(h, 32, cfg, name="backbone_conv2")
    backbone = keras.Model(backbone_in, h, name="backbone")
    backbone.trainable = False
    h = backbone(x)
    h = layers.MaxPooling2D()(h)
    h = layers.Flatten()(h)
    h = _act(layers.Dense(64)(h), cfg)
    h = _head(h, cfg, classes, pool="flatten")
    return _compile(keras.Model(x, h, name="frozen_backbone"), cfg)
