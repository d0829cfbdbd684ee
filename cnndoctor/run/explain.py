"""Explain the errors scripts raise, where the cause is known.

Each rule matches the exception's type and message (and what the session saw: the loss, the label
shape, the model's output units) and says, in plain words, what is wrong and what to change.
The messages matched are those Keras 3, PyTorch and Python print today; an error no rule knows is
reported as it is, with where it happened.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable


@dataclass
class Explanation:
    cause: str
    fix: str
    related: str | None = None  # a finding code that covers the cause, when there is one

    def to_dict(self) -> dict:
        return {"cause": self.cause, "fix": self.fix, "related": self.related}


Rule = Callable[[str, str, dict], "Explanation | None"]
RULES: list[Rule] = []


def rule(fn: Rule) -> Rule:
    RULES.append(fn)
    return fn


def explain(exc_type: str, message: str, context: dict | None = None) -> Explanation | None:
    context = context or {}
    for r in RULES:
        try:
            found = r(exc_type, message, context)
        except Exception:  # a rule must never hide the error itself
            found = None
        if found is not None:
            return found
    return None


# ---- labels vs loss -----------------------------------------------------------------------
@rule
def _keras_onehot_expected(t, msg, ctx):
    if "must have the same shape" in msg or ("target.shape" in msg and "output.shape" in msg) \
            or re.search(r"Shapes? .*incompatible", msg):
        loss = str(ctx.get("loss") or "")
        shape = ctx.get("label_shape")
        if "sparse" not in loss and (shape is None or len(shape) == 1 or shape[-1] == 1):
            return Explanation(
                cause=(f"the labels are class indices (shape {tuple(shape) if shape else '(N,)'})"
                       f" but the loss {loss or 'categorical_crossentropy'} expects one-hot rows "
                       f"(N, classes)"),
                fix=("use loss='sparse_categorical_crossentropy', or one-hot encode the labels: "
                     "y = keras.utils.to_categorical(y, num_classes)"),
                related="output-size-mismatch")
        if "sparse" in loss:
            return Explanation(
                cause=(f"the labels are one-hot rows (shape {tuple(shape) if shape else '?'}) but "
                       f"the loss {loss} expects class indices"),
                fix="use loss='categorical_crossentropy', or pass y.argmax(axis=1)")
    return None


@rule
def _keras_sparse_out_of_range(t, msg, ctx):
    if re.search(r"(Received a label value of|label value|labels? .* out of (range|bounds))",
                 msg) or ("Target" in msg and "out of bounds" in msg):
        units = ctx.get("output_units")
        return Explanation(
            cause=("a label is larger than the number of output units"
                   + (f" ({units})" if units else "")
                   + ": the model cannot represent that class"),
            fix=("give the last layer one unit per class (Dense(num_classes) / "
                 "nn.Linear(..., num_classes)), or remap the labels to 0..num_classes-1"),
            related="output-size-mismatch")
    return None


@rule
def _torch_onehot_into_ce(t, msg, ctx):
    if "Expected floating point type for target with class probabilities" in msg:
        return Explanation(
            cause="the labels are one-hot rows of integers, which CrossEntropyLoss reads as class "
                  "probabilities and rejects",
            fix="pass class indices: loss_fn(outputs, y.argmax(1)), or float one-hot rows: "
                "y.float()")
    if "0D or 1D target tensor expected" in msg or "multi-target not supported" in msg:
        return Explanation(
            cause="the labels have an extra axis (e.g. shape (N, 1)); nll_loss/cross_entropy "
                  "expect class indices of shape (N,)",
            fix="flatten the labels: y.view(-1) (or y.squeeze(1))")
    if "expected scalar type Long" in msg or ("expected" in msg and "Long" in msg
                                              and "target" in msg.lower()):
        return Explanation(
            cause="the labels are floats; cross_entropy with class indices needs integer labels",
            fix="y = y.long()")
    return None


# ---- inputs vs model ----------------------------------------------------------------------
@rule
def _channels(t, msg, ctx):
    m = re.search(r"expected input\[(.*?)\] to have (\d+) channels, but got (\d+) channels", msg)
    if m:
        return Explanation(
            cause=(f"the images reach the first convolution with {m.group(3)} channels where it "
                   f"expects {m.group(2)}: they are probably channels-last (N, H, W, C) while "
                   f"PyTorch convolutions take channels-first (N, C, H, W)"),
            fix="x = x.permute(0, 3, 1, 2) (or np.transpose(x, (0, 3, 1, 2))) before the model",
            related="channel-layout")
    return None


@rule
def _shape_mismatch(t, msg, ctx):
    if "mat1 and mat2 shapes cannot be multiplied" in msg:
        return Explanation(
            cause="the flattened features do not match the in_features of a Linear layer: the "
                  "input images are not the size the model was written for",
            fix="resize the inputs to the size the model expects, or set nn.Linear's in_features "
                "to the flattened size printed in the error")
    if "is incompatible with the layer" in msg and "expected" in msg:
        return Explanation(
            cause="the inputs fed do not have the shape the model was built for",
            fix="reshape the inputs as the model's Input/input_shape says (e.g. add the channel "
                "axis: x = x[..., None]), or rebuild the model for the data's shape")
    return None


# ---- older Keras (Keras 1/2, tf.keras) -------------------------------------------------------
LEGACY_ARGUMENTS = {
    "nb_epoch": "epochs",
    "border_mode": "padding",
    "samples_per_epoch": "steps_per_epoch (in batches, not samples)",
    "init": "kernel_initializer",
    "W_regularizer": "kernel_regularizer",
    "subsample": "strides",
    "lr": "learning_rate",
    "decay": "a keras.optimizers.schedules learning-rate schedule",
    "nb_filter": "filters",
    "output_dim": "units",
    "dim_ordering": "data_format",
}


@rule
def _legacy_arguments(t, msg, ctx):
    found = [(old, new) for old, new in LEGACY_ARGUMENTS.items()
             if re.search(rf"['\"`]{re.escape(old)}['\"`]", msg)]
    if found and ("not recognized" in msg.lower() or "unexpected keyword" in msg.lower()
                  or "unrecognized" in msg.lower() or "Invalid" in msg):
        changes = ", ".join(f"{old}= → {new}" for old, new in found)
        return Explanation(
            cause="the script uses Keras 1/2 argument names that Keras 3 removed",
            fix=f"rename: {changes}")
    return None


@rule
def _legacy_api(t, msg, ctx):
    if "fit_generator" in msg or "evaluate_generator" in msg or "predict_generator" in msg:
        return Explanation(
            cause="model.fit_generator/evaluate_generator/predict_generator were removed in "
                  "Keras 3",
            fix="call model.fit / model.evaluate / model.predict with the generator (or a "
                "keras.utils.PyDataset) as x")
    if "ImageDataGenerator" in msg:
        return Explanation(
            cause="keras.preprocessing.image.ImageDataGenerator was removed in Keras 3",
            fix="use preprocessing layers in the model (keras.layers.RandomFlip, "
                "RandomTranslation, RandomRotation, Rescaling) or "
                "keras.utils.image_dataset_from_directory")
    if "tensorflow" in msg and t in ("ModuleNotFoundError", "ImportError"):
        return Explanation(
            cause="the script imports a part of TensorFlow that has no Keras 3 equivalent here "
                  "(TensorFlow is not installed)",
            fix="import from keras directly (import keras; keras.layers...), or install "
                "TensorFlow")
    if "is TensorFlow, which is not installed" in msg:
        return Explanation(cause="the script uses TensorFlow itself, not only tf.keras",
                           fix=msg.split("where only `tf.keras` is available. ", 1)[-1])
    if re.search(r"cannot import name '(\w+)' from 'keras", msg) or \
            re.search(r"module 'keras[\w.]*' has no attribute", msg):
        return Explanation(
            cause="the script uses a Keras 1/2 name that Keras 3 no longer has",
            fix="look the name up in the Keras 3 API (keras.io/api); common moves: "
                "keras.layers.Convolution2D(n, 3, 3) → Conv2D(n, (3, 3)), np_utils.to_categorical "
                "→ keras.utils.to_categorical, keras.optimizers.Adam(lr=) → (learning_rate=)")
    if "h5" in msg.lower() and ("h5py" in msg or "HDF5" in msg):
        return Explanation(cause="the legacy .h5 format needs h5py",
                           fix="save as model.save('model.keras') (the Keras 3 format)")
    return None


# ---- the script ended itself ----------------------------------------------------------------
@rule
def _exited(t, msg, ctx):
    if t == "SystemExit":
        how = msg.removeprefix("the script ")
        return Explanation(
            cause=f"the script ended itself with a failure status ({how}) before it finished",
            fix="look at what the script printed right before it exited (the condition that "
                "made it exit); the findings here were measured on what it did until then")
    return None


# ---- files ----------------------------------------------------------------------------------
@rule
def _missing_file(t, msg, ctx):
    if t in ("FileNotFoundError", "OSError", "ValueError") and (
            "No such file" in msg or "not found" in msg.lower() and "file" in msg.lower()):
        return Explanation(
            cause="a file the script reads is not there (a model not saved yet?)",
            fix="run the script that writes it first, in the same `cnndoctor run` (cnndoctor run "
                "train.py evaluate.py), and check the path")
    return None
