"""Targets: small callables that turn a layer's output into one score per image.

Every target has a ``layer`` attribute (``None`` means the model's output) and maps that
layer's activation of shape (N, ...) to a tensor of shape (N,). Methods that explain a
score (occlusion, saliency, Grad-CAM ...) take a target, so class scores and internal
feature maps are handled the same way.

The module also holds :func:`as_index` and :func:`as_flag`, the checks every method applies to
index arguments (class, channel, row and column indices) and to on/off flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np
import torch

__all__ = [
    "INDEX_TYPES", "ChannelActivation", "ClassLogit", "ClassProbability", "OutputTypeError", "Target", "as_flag",
    "as_index", "checked_scores", "class_probabilities", "class_scores", "output_tensor", "resolve_target",
    "target_score",
]

#: The types an index argument may come as (values of other types are refused by :func:`as_index`;
#: of a tensor, only a 0-d integer one is accepted).
INDEX_TYPES = (int, np.integer, torch.Tensor)

_ACCEPTED_INDEX = "a Python int, a numpy integer or a 0-d integer tensor"

#: What a target that gets one tensor of class indices is told to do instead.
_PER_IMAGE_HINT = (
    "; a class target takes one class index for the whole batch. For a different class per image, pass a "
    "target callable with a `layer` attribute (None: the model's output) that maps the output (N, classes) "
    "to one score per image, shape (N,)"
)


def _describe_value(value: object) -> str:
    """A short account of a value for an error message: its type, and its value or shape."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        kind = "tensor" if isinstance(value, torch.Tensor) else "numpy array"
        return f"a {kind} of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, str):
        return f"str {value!r}"
    if isinstance(value, (bool, np.bool_, int, float, np.integer, np.floating)):
        return f"{type(value).__name__} {value}"
    return f"a {type(value).__name__}"


def as_index(value: object, what: str, *, hint: str = "") -> int:
    """``value`` as a Python int, for an index argument (a class, a channel, a row ...).

    Accepts Python ints, numpy integers and 0-d integer tensors. Only the type is checked here:
    the range depends on the layer or model and is checked where the index is used.

    Args:
        value: the index as given.
        what: the argument's name, for the message (``"channel"``, ``"out_channel"`` ...).
        hint: appended to the message of a refusal.

    Raises:
        TypeError: for anything else: bools (``True`` is not channel 1), floats (also whole
            ones such as ``1.0``), strings, tensors or arrays with other shapes or dtypes; the
            message names ``what``, what it got and what is accepted.
    """
    if not isinstance(value, (bool, np.bool_)):
        if isinstance(value, (int, np.integer)):
            return int(value)
        if (
            isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point()
            and not value.is_complex() and value.dtype != torch.bool
        ):
            return int(value)
    raise TypeError(f"{what} must be an int ({_ACCEPTED_INDEX}), got {_describe_value(value)}{hint}")


def as_flag(value: object, what: str) -> bool:
    """``value`` as a bool, for an on/off argument: ``True`` / ``False`` (or a numpy bool) only.

    Raises:
        TypeError: for anything else (a string such as ``"no"`` would read as true), naming ``what``.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{what} must be True or False, got {_describe_value(value)}")


def _class_index(value: object, what: str) -> int:
    """A class index checked by :func:`as_index`; several indices get a hint on per-image targets."""
    several = isinstance(value, (list, tuple)) or (isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim > 0)
    return as_index(value, what, hint=_PER_IMAGE_HINT if several else "")


@runtime_checkable
class Target(Protocol):
    """Anything with a ``layer`` attribute that maps an activation (N, ...) to scores (N,)."""

    layer: str | None

    def __call__(self, activation: torch.Tensor) -> torch.Tensor: ...


#: Keys (or attribute names) under which common model output containers hold the model's scores,
#: in order of preference: Hugging Face outputs (``logits``), torchvision segmentation (``out``).
OUTPUT_KEYS = ("logits", "out")


class OutputTypeError(TypeError):
    """The model's output is not one tensor, nor a container :func:`output_tensor` can read."""


def output_tensor(output: object) -> torch.Tensor:
    """The one tensor a model's forward returned, taken out of the usual containers.

    * a tensor is returned as it is;
    * a mapping (a ``dict``, or a Hugging Face ``ModelOutput``): its ``logits`` entry, else its
      ``out`` entry (torchvision segmentation models), else its only tensor value;
    * any other object with a tensor attribute ``logits`` (output dataclasses, a named tuple
      with a ``logits`` field).

    Plain tuples and lists are refused rather than guessed at: ``(features, logits)`` and
    ``(logits, aux)`` both occur, and picking the wrong one would draw wrong pictures.

    Raises:
        OutputTypeError: (a ``TypeError``) for anything else, naming what the model returned and
            what is accepted.
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        for key in OUTPUT_KEYS:
            if isinstance(output.get(key), torch.Tensor):
                return output[key]
        tensors = [value for value in output.values() if isinstance(value, torch.Tensor)]
        if len(tensors) == 1:
            return tensors[0]
        found = f"keys {sorted(map(str, output.keys()))}"
    else:
        logits = getattr(output, "logits", None)
        if isinstance(logits, torch.Tensor):
            return logits
        if isinstance(output, (tuple, list)):
            parts = ", ".join(
                f"shape {tuple(v.shape)}" if isinstance(v, torch.Tensor) else type(v).__name__ for v in output[:4]
            )
            found = f"{len(output)} values ({parts}{', ...' if len(output) > 4 else ''})"
        else:
            found = "no tensor cnnwidgets knows how to read"
    raise OutputTypeError(
        f"the model returned a {type(output).__name__} with {found}; cnnwidgets needs one tensor: the "
        "model's output itself, the 'logits' or 'out' entry of a dict, or a 'logits' attribute. "
        "Wrap the model in a module whose forward returns the tensor to explain, e.g. "
        "`return self.model(x)[0]`"
    )


def class_scores(output: torch.Tensor, what: str = "class scores") -> torch.Tensor:
    """A model output as class scores (N, classes).

    An output of shape (N, classes, 1, 1), as fully convolutional classifiers give before
    flattening, is read as (N, classes).

    Raises:
        ValueError: for any other shape (a segmentation map (N, classes, H, W), an output whose
            batch dimension was flattened away ...), naming the shape.
    """
    if output.dim() > 2 and all(size == 1 for size in output.shape[2:]):
        output = output.reshape(output.shape[0], output.shape[1])
    if output.dim() != 2:
        raise ValueError(
            f"{what}: the model output must be class scores of shape (N, classes) (or (N, classes, 1, 1)); "
            f"this one has shape {tuple(output.shape)}"
        )
    return output


#: A row of scores reads as a probability distribution when it sums to 1 within this tolerance
#: (or within 4 eps of a float16 / bfloat16 output). Float32 softmax outputs of up to 20k classes
#: sum to 1 within a few 1e-6; logits that are all in [0, 1] and also sum to 1 this closely do
#: not occur in practice.
_DISTRIBUTION_TOLERANCE = 1e-4


def _is_distribution(scores: torch.Tensor) -> bool:
    """Whether every row of ``scores`` (N, classes) is already a probability distribution.

    True when all values are finite and in [0, 1] and each row sums to 1 within
    ``max(1e-4, 4 * eps)`` (``eps`` of the scores' dtype; the sum is taken in float64).
    """
    if scores.numel() == 0 or not scores.is_floating_point():
        return False
    values = scores.detach()
    if not bool((torch.isfinite(values) & (values >= 0) & (values <= 1)).all()):
        return False
    tolerance = max(_DISTRIBUTION_TOLERANCE, 4 * torch.finfo(values.dtype).eps)
    return bool(((values.double().sum(dim=1) - 1).abs() <= tolerance).all())


def class_probabilities(output: torch.Tensor, what: str = "class probabilities") -> torch.Tensor:
    """Class probabilities (N, classes) from a model output of class scores.

    ``softmax(y)`` over the classes, unless the model already outputs probabilities: with 2 or
    more classes, when every row of ``y`` is a distribution (all values finite and in [0, 1],
    each row summing to 1 within ``max(1e-4, 4 * eps)``, ``eps`` of its float dtype), ``y`` is
    returned as it is (as a float tensor, still attached to the autograd graph), so a model that
    ends in ``nn.Softmax`` is not shown ``softmax(softmax(y))``. A model that ends in
    ``log_softmax`` needs no exception: ``softmax(log p) = p``.

    For a model with a single output unit (a binary classifier trained with a logistic loss)
    ``sigmoid(y)``, the probability of that unit's class (a softmax over one unit would be 1
    whatever the input). A single unit is always read as a logit: a sigmoid output in [0, 1]
    cannot be told from a logit by its values, so such a model should output the logit (leave
    the sigmoid to the loss, ``BCEWithLogitsLoss``) to be shown the right probability.
    """
    scores = class_scores(output, what)
    if not scores.is_floating_point():
        scores = scores.float()
    if scores.shape[1] == 1:
        return torch.sigmoid(scores)
    if _is_distribution(scores):
        return scores
    return torch.softmax(scores, dim=1)


def _check_class_index(index: int, activation: torch.Tensor, what: str) -> torch.Tensor:
    activation = class_scores(activation, what)
    classes = activation.shape[1]
    if not 0 <= index < classes:
        raise IndexError(
            f"{what}: class index {index} is out of range for {classes} classes; "
            f"accepted: 0..{classes - 1} (negative indices are not accepted)"
        )
    return activation


@dataclass(frozen=True)
class ClassLogit:
    """The raw score (logit) of class ``index``: ``y[:, index]``, ``0 <= index < classes``.

    ``index`` is one class index for the whole batch (see :func:`as_index` for the accepted
    types; it is stored as an int). A range check needs the model's output and is made when the
    target is evaluated.

    Raises:
        TypeError: for an index that is not an int (a bool, a float, several indices ...).
    """

    index: int
    layer: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", _class_index(self.index, "ClassLogit: the class index"))

    def __call__(self, activation: torch.Tensor) -> torch.Tensor:
        return _check_class_index(self.index, activation, "ClassLogit")[:, self.index]


@dataclass(frozen=True)
class ClassProbability:
    """The probability of class ``index``: ``p[:, index]`` with ``p = class_probabilities(y)``.

    ``p = softmax(y)``; ``p = y`` when every row of ``y`` already is a probability distribution
    (a model ending in ``nn.Softmax``: values in [0, 1], rows summing to 1); ``p = sigmoid(y)``
    for a model with one output unit, which is always read as a logit (a sigmoid output cannot
    be told from a logit, so such a model should output the logit). See
    :func:`class_probabilities`.

    ``index`` is checked as for :class:`ClassLogit`.

    Raises:
        TypeError: for an index that is not an int (a bool, a float, several indices ...).
    """

    index: int
    layer: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", _class_index(self.index, "ClassProbability: the class index"))

    def __call__(self, activation: torch.Tensor) -> torch.Tensor:
        scores = _check_class_index(self.index, activation, "ClassProbability")
        return class_probabilities(scores)[:, self.index]


_REDUCTIONS = ("mean", "sum", "max")


@dataclass(frozen=True)
class ChannelActivation:
    """The activation of one channel of an internal layer, reduced over space.

    Args:
        layer: layer name.
        channel: channel index (see :func:`as_index`; stored as an int).
        reduce: ``"mean"``, ``"sum"`` (the paper's "total activation") or ``"max"``.
        position: optional (row, col) of a single unit instead of a reduction (stored as a
            tuple of ints).

    Raises:
        TypeError: for a channel, row or column that is not an int, or a position that is not a
            (row, col) pair.
        ValueError: for an unknown ``reduce``.
    """

    layer: str
    channel: int
    reduce: str = "mean"
    position: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel", as_index(self.channel, "ChannelActivation: channel"))
        if self.position is not None:
            if not isinstance(self.position, (tuple, list)) or len(self.position) != 2:
                got = _describe_value(self.position)
                raise TypeError(f"ChannelActivation: position must be a (row, col) pair of ints, got {got}")
            row, col = self.position
            row = as_index(row, "ChannelActivation: position row")
            object.__setattr__(self, "position", (row, as_index(col, "ChannelActivation: position column")))
        if self.reduce not in _REDUCTIONS:
            raise ValueError(f"reduce must be one of {_REDUCTIONS}, got {self.reduce!r}")

    def __call__(self, activation: torch.Tensor) -> torch.Tensor:
        if activation.dim() < 2:
            raise ValueError(f"layer {self.layer!r} output has shape {tuple(activation.shape)}; no channels")
        if not 0 <= self.channel < activation.shape[1]:
            raise IndexError(
                f"channel {self.channel} is out of range: layer {self.layer!r} has {activation.shape[1]} channels"
            )
        values = activation[:, self.channel]
        if self.position is not None:
            if values.dim() != 3:
                raise ValueError(f"a position needs a spatial layer; {self.layer!r} has shape {tuple(activation.shape)}")
            row, col = self.position
            if not (0 <= row < values.shape[1] and 0 <= col < values.shape[2]):
                raise IndexError(f"position {self.position} is outside the {tuple(values.shape[1:])} map")
            return values[:, row, col]
        flat = values.reshape(values.shape[0], -1)
        if self.reduce == "mean":
            return flat.mean(dim=1)
        if self.reduce == "sum":
            return flat.sum(dim=1)
        return flat.amax(dim=1)


def resolve_target(target: Target | int) -> Target:
    """Accept a class index as shorthand for :class:`ClassLogit`.

    A class index may be a Python int, a numpy integer or a 0-d integer tensor (see
    :func:`as_index`). Every method that takes a target reads class indices here.

    Raises:
        TypeError: if ``target`` is neither a class index nor a target callable (a bool, a float,
            a tensor of several indices ...).
        IndexError: for a negative class index (class indices run from 0 to ``classes - 1``;
            an index too large for the model is refused when the target is evaluated).
    """
    if isinstance(target, (bool, np.bool_)):
        raise TypeError("a target is a class index (int) or a target object, not a bool")
    if isinstance(target, INDEX_TYPES):
        index = _class_index(target, "a target given as a class index")
        if index < 0:
            raise IndexError(f"class index {index} is negative; accepted: 0..C-1 for a model with C classes")
        return ClassLogit(index)
    if callable(target) and hasattr(target, "layer"):
        return target
    raise TypeError(
        f"unsupported target {target!r}: pass a class index ({_ACCEPTED_INDEX}), ClassLogit, ClassProbability, "
        "ChannelActivation, or a callable with a `layer` attribute"
    )


def target_score(probe, x: torch.Tensor, target: Target | int, *, grad: bool = False) -> torch.Tensor:
    """Evaluate ``target`` on the batch ``x`` with ``probe`` (prefix-only for internal layers).

    An internal layer's activation reaches the target with channels on dim 1, also for a
    channels-last layer (see :meth:`~cnnwidgets.core.probe.Probe.capture`).

    Returns:
        Scores of shape (N,).
    """
    target = resolve_target(target)
    if target.layer is None:
        activation = probe.logits(x, grad=grad)
    else:
        activation = probe.capture(x, [target.layer], grad=grad, channels_first=True)[target.layer]
    return checked_scores(target(activation), x.shape[0])


def checked_scores(scores: object, n: int | None = None) -> torch.Tensor:
    """A target's result, checked: a floating-point tensor of shape (N,), one score per image.

    Raises:
        TypeError: for anything but a tensor (a Python number, a numpy array ...).
        ValueError: for another shape (N is checked when ``n`` is given).
    """
    if not isinstance(scores, torch.Tensor):
        raise TypeError(
            f"a target must return a tensor of one score per image, shape (N,); got a {type(scores).__name__}"
        )
    if scores.dim() != 1 or (n is not None and scores.shape[0] != n):
        expected = "(N,)" if n is None else f"({n},)"
        raise ValueError(f"a target must return one score per image, shape {expected}; got {tuple(scores.shape)}")
    return scores if scores.is_floating_point() else scores.float()
