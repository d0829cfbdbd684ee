"""What probes gather and checks read.

``Evidence`` holds the model description, the data in a canonical form, and the results of the
probes that ran, by name. Probes fill it; checks only read it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .graph import ModelGraph


@dataclass
class Dataset:
    """A set of images and labels, as given and in canonical form.

    ``x`` is exactly what the user gave (the layout the model takes). ``images`` is the same data
    as float32 N x H x W x C, whatever the model's layout, for statistics. ``labels`` are integer
    class indices (from one-hot rows if need be), or None when no labels were given.
    """

    name: str  # "training", "validation", "evaluation", "reference"
    x: Any
    images: np.ndarray
    labels: np.ndarray | None
    label_format: str | None  # "sparse", "onehot", or None
    y: Any = None  # the labels exactly as given
    layout: str = "channels_last"  # the layout ``x`` was given in (may differ from the model's)
    # Where the data came from, for data read from a pipeline (cnndoctor/pipelines/): a folder,
    # a DataLoader, ...; None for arrays given whole. ``total_size``: images in the whole
    # pipeline when known; ``sample_size``: how many were read (= len(self)).
    source: str | None = None
    total_size: int | None = None
    sample_size: int | None = None
    sampling: str | None = None  # how the sample was drawn ("stratified by class, seed 0")
    normalization: list = field(default_factory=list)  # Normalize/ToTensor steps in the pipeline
    notes: list = field(default_factory=list)  # what the reader had to do (resizing, ...)
    class_names: list | None = None  # class index -> folder/class name, when the source says

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes_in_labels(self) -> int | None:
        if self.labels is None or self.labels.size == 0:
            return None
        if self.label_format == "onehot":
            return int(np.asarray(self.y).shape[-1])
        return int(self.labels.max()) + 1


@dataclass
class Evidence:
    graph: ModelGraph
    train: Dataset | None = None
    val: Dataset | None = None
    evaluation: list[Dataset] = field(default_factory=list)  # inputs fed at evaluation/prediction
    reference: Dataset | None = None  # real-world samples
    budget: str = "standard"
    model: Any = None  # the user's model (never modified: probes work on copies)
    loss: Any = None  # the user's loss, as given
    optimizer: Any = None  # the user's optimizer (or its description), as given
    #: the user's torch learning-rate scheduler, replayed (``frameworks/torch/schedules.replay``: the settings
    #: of every parameter group before each step of the run), or None
    schedule: list | None = None
    batch_size: int | None = None
    epochs: int | None = None  # what the user trained for, when known
    probes: dict[str, Any] = field(default_factory=dict)  # probe name -> its result
    figures: dict[str, Any] = field(default_factory=dict)  # figures for the report/JSON

    @property
    def framework(self) -> str:
        return self.graph.framework

    @property
    def num_classes(self) -> int | None:
        """The number of classes: from the labels, else from the model's output units."""
        n = self.train.num_classes_in_labels if self.train is not None else None
        return n if n is not None else self.graph.output_units
