"""What a mutation may change in a zoo model: one ``Config`` read by every builder.

The defaults build the healthy model. A mutation operator (``mutations.py``) changes one field,
and every builder turns that field into the same bug in its own framework, so one operator
injects its bug into any model that ``applies``.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    #: hidden activation: "relu" (healthy), None (a linear stack) or "sigmoid" (saturating)
    act: str | None = "relu"
    #: extra hidden layers of the same width (a deep stack for the saturating mutation)
    extra_depth: int = 0
    #: an activation applied to the logits before the softmax ("relu"), or None
    logit_act: str | None = None
    #: "match": output and loss agree; "double": softmax in the model and a logits loss;
    #: "missing": logits out of the model into a probability loss; "sigmoid": a sigmoid output
    #: into categorical cross-entropy (Keras) / probabilities into NLLLoss (PyTorch)
    head: str = "match"
    #: output units minus the number of classes
    units_delta: int = 0
    #: dropout rate right before the output layer (None: the model's own)
    dropout: float | None = None
    #: a whole-map convolution with many filters as the head (a dense layer disguised as a conv)
    oversized: bool = False
    #: factor on the model's learning rate
    lr_factor: float = 1.0
    #: every weight frozen by mistake (Keras ``trainable=False``, torch ``requires_grad=False``)
    freeze_all: bool = False
