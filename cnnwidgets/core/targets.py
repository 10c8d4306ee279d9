"""Targets: small callables that turn a layer's output into one score per image.

Every target has a ``layer`` attribute (``None`` means the model's output) and maps that
layer's activation of shape (N, ...) to a tensor of shape (N,). Methods that explain a
score (occlusion, saliency, Grad-CAM ...) take a target, so class scores and internal
feature maps are handled the same way. Methods call targets through :func:`call_target` (or
:func:`target_score`), which checks their scores and says what a target that fails was given.

The module also holds :func:`as_index` and :func:`as_flag`, the checks every method applies to
index arguments (class, channel, row and column indices) and to on/off flags.
"""

from __future__ import annotations

import decimal
import math
import numbers
from dataclasses import dataclass, replace
from collections.abc import Callable, Mapping, Sequence, Set
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

__all__ = [
    "INDEX_TYPES", "ChannelActivation", "ClassLogit", "ClassLogits", "ClassProbability", "OutputDtypeError", "OutputScore", "OutputTypeError", "Target",
    "SizeTypeError", "as_flag", "int_pair",
    "FINAL_ACTIVATIONS", "OUTPUT_KINDS", "as_count", "as_index", "as_pair", "as_seed", "as_tolerance", "call_target", "check_channel_output", "check_output_kind",
    "check_finite_activation", "checked_scores", "class_probabilities", "class_scores", "looks_like_independent_probabilities",
    "nonfinite_cause", "output_reduction", "output_tensor", "resolve_target", "single_index", "target_score",
]

#: The types an index argument may come as (values of other types are refused by :func:`as_index`;
#: of a tensor, only a 0-d integer one is accepted).
INDEX_TYPES = (int, np.integer, torch.Tensor)

_ACCEPTED_INDEX = "a Python int, a numpy integer or a 0-d integer tensor"

#: What a target that gets one tensor of class indices is told to do instead.
_PER_IMAGE_HINT = (
    "; a class target takes one class index for the whole batch. For a different class per image, pass the "
    "indices as the target itself (a method's target=labels reads them as ClassLogits(labels)), or a "
    "function of the model's output (N, classes) that gives one score per image, shape (N,): "
    "lambda y: y[torch.arange(len(y)), labels]"
)

#: What a target given the model's scores (a float tensor) is told to do instead.
_SCORES_HINT = (
    "; this looks like the model's scores, not a class index: for the predicted class pass "
    "scores.argmax(1) for one image (or int(scores.argmax()))"
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
    if isinstance(value, (tuple, list)) and len(value) <= 8:
        return f"{type(value).__name__} {value!r}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} items"
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


def as_pair(
    value: object, what: str, names: tuple[str, str] = ("row", "column"), pair: str = "a (row, col) pair of ints"
) -> tuple[int, int]:
    """``value`` as two ints, for a pair such as a unit's (row, col): a tuple or list of two
    indices (see :func:`as_index`), or a 1-D array or tensor of two integers (one row of what
    :func:`~cnnwidgets.methods.strongest_unit` returns, say).

    Args:
        value: the pair to read.
        what: names the argument in messages.
        names: what the two entries are called in messages.
        pair: what is accepted, in messages.

    Raises:
        TypeError: for anything else, naming ``what``; for an entry that is not an int, naming
            it (``"<what> row"`` ...).
    """
    two = isinstance(value, (tuple, list)) or (isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim == 1)
    if not two or len(value) != 2:  # type: ignore[arg-type]
        raise TypeError(f"{what} must be {pair}, got {_describe_value(value)}")
    first, second = value  # type: ignore[misc]
    return as_index(first, f"{what} {names[0]}"), as_index(second, f"{what} {names[1]}")


class SizeTypeError(TypeError, ValueError):
    """A size argument of the wrong type: an occluder ``window`` or ``stride``, or the ``size`` of
    :func:`~cnnwidgets.methods.actmax.maximize_activation`, that is a string, a bool, a float or
    another non-integer, where an int is accepted as :func:`as_index` takes one (a Python int, a
    numpy integer or a 0-d integer tensor).

    A ``TypeError``, as for every count of the package, and a ``ValueError`` too: such sizes were
    refused with a ``ValueError`` before, and code that catches that treats them the same way.
    """


def int_pair(value: object, what: str, accepted: str) -> tuple[int, int]:
    """``value`` as two ints: one int (both entries) or a pair of them (a tuple, a list, or a 1-D
    array or tensor of two), each as :func:`as_index` accepts it. The range is not checked.

    Raises:
        SizeTypeError: for anything else (a ``TypeError`` and a ``ValueError``), naming ``what``,
            ``accepted`` and what it got.
    """
    try:
        return (as_index(value, what),) * 2
    except TypeError:
        pass
    try:
        return as_pair(value, what, pair=accepted)
    except TypeError:
        raise SizeTypeError(f"{what} must be {accepted} (each {_ACCEPTED_INDEX}), got {_describe_value(value)}") from None


def as_count(value: object, what: str, *, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``, for a count or a size argument (a batch size, a
    number of trials): a Python int, a numpy integer or a 0-d integer tensor (the types
    :func:`as_index` and :func:`as_seed` accept), not a bool, a float or a string.

    Raises:
        TypeError: for another type, naming ``what``. ValueError: for a value below ``minimum``.
    """
    try:
        count = as_index(value, what)
    except TypeError:
        raise TypeError(f"{what} must be an int >= {minimum}, got {_describe_value(value)}") from None
    if count < minimum:
        raise ValueError(f"{what} must be an int >= {minimum}, got {count}")
    return count


def as_seed(value: object, what: str = "seed") -> int:
    """``value`` as a seed for torch's and numpy's random generators: an int in [0, 2**64)
    (a Python int, a numpy integer or a 0-d integer tensor, the types :func:`as_count` accepts).

    Raises:
        TypeError: for another type (a bool, a float, a string), naming ``what``.
        ValueError: for a negative value (torch would silently wrap it around) or one of 2**64 or more.
    """
    try:
        seed = as_index(value, what)
    except TypeError:
        raise TypeError(f"{what} must be an int in [0, 2**64), got {_describe_value(value)}") from None
    if not 0 <= seed < 2**64:
        raise ValueError(f"{what} must be an int in [0, 2**64), got {seed}")
    return seed


def _as_float(value: object, refusal: str) -> float:
    """``float(value)`` of a real number; for a number beyond float's range a ValueError: ``refusal``
    (what the value must be), and how many digits it has (an int) or the number itself."""
    try:
        return float(value)  # type: ignore[arg-type]
    except OverflowError:
        if isinstance(value, numbers.Integral):
            raise ValueError(f"{refusal}, got an int of {len(str(abs(int(value))))} digits") from None
        raise ValueError(f"{refusal}, got {type(value).__name__} {str(value):.60} (beyond float's range)") from None


def as_tolerance(value: object, what: str) -> float:
    """``value`` as a finite float >= 0, for a tolerance (``rtol``, ``atol``).

    Any finite real number is accepted: a Python int or float, a numpy integer or float, a
    :class:`fractions.Fraction` or another :class:`numbers.Real`, and a :class:`decimal.Decimal`;
    it is converted with ``float()`` (a value closer to 0 than the smallest float reads as 0.0).

    Raises:
        TypeError: for something that is not a real number (a bool, a string, a complex number, a
            tensor ...), naming ``what``.
        ValueError: for a negative, NaN or infinite value, or a number beyond float's range.
    """
    refusal = f"{what} must be a finite number >= 0"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, decimal.Decimal)):
        raise TypeError(f"{refusal}, got {_describe_value(value)}")
    if isinstance(value, decimal.Decimal) and value.is_nan():
        raise ValueError(f"{refusal}, got nan")  # float() of a signalling NaN raises instead of giving nan
    number = _as_float(value, refusal)
    if math.isinf(number) and isinstance(value, decimal.Decimal) and value.is_finite():
        raise ValueError(f"{refusal}, got Decimal {str(value):.60} (beyond float's range)")
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{refusal}, got {number}")
    return number + 0.0  # -0.0 (of a tiny negative Fraction, say) as 0.0


def as_flag(value: object, what: str) -> bool:
    """``value`` as a bool, for an on/off argument: ``True`` / ``False`` (or a numpy bool) only.

    Raises:
        TypeError: for anything else (a string such as ``"no"`` would read as true), naming ``what``.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{what} must be True or False, got {_describe_value(value)}")


def as_real(value: object, what: str, accepted: str = "", ok: Callable[[float], bool] = lambda v: True) -> float:
    """``value`` as a float, for a number argument: a finite real number (not a bool) for which
    ``ok`` holds; ``accepted`` says which (``"> 0"`` ...) in the message.

    Raises:
        TypeError: for something that is not a real number (a string, a bool, a tensor), naming ``what``.
        ValueError: for NaN, an infinity, or a value ``ok`` refuses.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a number, got {type(value).__name__} {value!r}")
    number = _as_float(value, f"{what} must be a finite number{' ' + accepted if accepted else ''}")
    if not math.isfinite(number) or not ok(number):
        raise ValueError(f"{what} must be a finite number{' ' + accepted if accepted else ''}, got {value!r}")
    return number


def as_callback(value: object, what: str, called: str) -> Callable[..., Any] | None:
    """``value`` unchanged, for an optional callback argument: None or a callable; ``called``
    says how it is called, for the message.

    Raises:
        TypeError: for anything else, checked up front (not when the first call fails mid-run).
    """
    if value is not None and not callable(value):
        raise TypeError(f"{what} must be None or a callable {called}, got {_describe_value(value)}")
    return value


def class_name_list(classes: object, what: str = "classes") -> list[str]:
    """``classes``, the class names in class order (a list, a tuple or a 1-D array of ``str``,
    NumPy's too), as a list of str.

    Raises:
        TypeError: for anything else: one string (its letters would be taken for the names), a set
            or a mapping (no class order), a number, or names that are not strings.
    """
    accepted = f"{what} must be the class names in class order: a list, tuple or 1-D array of str"
    if (isinstance(classes, (str, bytes, Set, Mapping)) or not isinstance(classes, (Sequence, np.ndarray))
            or (isinstance(classes, np.ndarray) and classes.ndim != 1)):
        raise TypeError(f"{accepted}, got {type(classes).__name__} {classes!r:.60}")
    for index, name in enumerate(classes):
        if not isinstance(name, str):
            raise TypeError(f"{accepted}, got {type(name).__name__} {name!r:.40} for class {index}")
    return [str(name) for name in classes]


def as_cancel_check(cancel: object) -> Callable[[], bool]:
    """A function telling whether to stop, for a ``cancel`` argument: ``None`` (never), an object
    with ``is_set()`` (a ``threading.Event``) or a callable returning True to stop.

    Raises:
        TypeError: for anything else (``cancel=True`` would otherwise fail mid-run).
    """
    if cancel is None:
        return lambda: False
    is_set = getattr(cancel, "is_set", None)
    if callable(is_set):
        return is_set
    if callable(cancel):
        return lambda: bool(cancel())
    raise TypeError(
        f"cancel must be a threading.Event or a callable returning True to stop, got {_describe_value(cancel)}"
    )


def _floating(value: torch.Tensor | np.ndarray) -> bool:
    """Whether an array or tensor holds floating-point (or complex) values."""
    if isinstance(value, torch.Tensor):
        return value.is_floating_point() or value.is_complex()
    return bool(np.issubdtype(value.dtype, np.inexact))


def _integer_array(value: object) -> bool:
    """Whether ``value`` is a tensor or array of integers (not floats, complex numbers or bools)."""
    return (isinstance(value, (torch.Tensor, np.ndarray)) and not _floating(value)
            and value.dtype not in (torch.bool, np.bool_))


def single_index(value: object) -> object:
    """The one integer of a tensor or array of shape (1,), as ``model(x).argmax(1)`` gives one
    image's class; anything else is returned as it is, for :func:`as_index` to read or refuse.

    Args:
        value: an index as given.
    """
    if _integer_array(value) and value.shape == (1,):
        return value[0]
    return value


def _class_name_hint(name: str) -> str:
    """How to get the class index of the class name ``name``, for the refusals of a name."""
    return (f"look its index up in the class names, in class order, e.g. classes.index({name!r}) "
            f"(bundle.classes.index({name!r}) for a zoo bundle)")


def _class_index(value: object, what: str) -> int:
    """A class index checked by :func:`as_index`; several indices get a hint on per-image targets.

    One integer in a tensor or array of shape (1,) is taken as that index: it is what
    ``model(x).argmax(1)`` gives for one image.

    Raises:
        TypeError: as :func:`as_index`. IndexError: for a negative index (the range above needs
            the model's output and is checked when the target is evaluated).
    """
    value = single_index(value)  # one image's predicted class, as model(x).argmax(1) gives it
    several = isinstance(value, (list, tuple)) or (isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim > 0)
    scores = several and isinstance(value, (torch.Tensor, np.ndarray)) and _floating(value)
    hint = _SCORES_HINT if scores else _PER_IMAGE_HINT if several else ""
    if isinstance(value, str):
        hint = f"; a class name is not a class index: {_class_name_hint(value)}"
    index = as_index(value, what, hint=hint)
    if index < 0:
        raise IndexError(f"class index {index} is negative; accepted: 0..C-1 for a model with C classes")
    return index


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


class OutputDtypeError(OutputTypeError, ValueError):
    """The model's output is a tensor, but not of floating-point class scores: a bool (thresholded),
    integer (class indices) or complex output, refused by :func:`class_scores`.

    An :class:`OutputTypeError` (so a ``TypeError``) and a ``ValueError`` too: code that takes a
    ``ValueError`` of :func:`class_scores` to mean "not class scores" (and falls back to showing
    feature maps only, or to a target of the user's own) treats it the same way.
    """


#: What a model whose output is not floating point is told, by dtype kind (see :func:`class_scores`).
_DTYPE_ADVICE = {
    "bool": "a bool output looks thresholded (as `logits > 0` gives it): return the scores before the threshold",
    "integer": "an integer output looks like class indices (as `argmax` gives them) or quantized scores: return "
               "the scores before the argmax, or dequantize them to float",
    "complex": "a complex output has no order to rank classes by: return a real score (its real part, or its "
               "magnitude `.abs()`)",
}


def _require_floating(output: torch.Tensor, what: str) -> None:
    """Raise :class:`OutputDtypeError` unless ``output`` is a floating-point tensor (float16,
    bfloat16, float32, float64 ...)."""
    if output.is_floating_point():
        return
    kind = "bool" if output.dtype == torch.bool else "complex" if output.is_complex() else "integer"
    raise OutputDtypeError(
        f"{what}: the model's output has dtype {output.dtype}, but class scores must be floating-point logits or "
        f"probabilities; {_DTYPE_ADVICE[kind]}. Wrap the model in a module whose forward returns float class "
        "scores of shape (N, classes), or explain this output with a target of your own (a callable with "
        "`layer = None` that maps it to one float score per image)"
    )


def _read_output(output: object) -> tuple[torch.Tensor | None, str]:
    """The tensor :func:`output_tensor` takes out of ``output`` and where it came from
    (``""`` for a tensor, ``"its 'out' entry"`` ...), or ``(None, what was found instead)``."""
    if isinstance(output, torch.Tensor):
        return output, ""
    if isinstance(output, Mapping):
        for key in OUTPUT_KEYS:
            if isinstance(output.get(key), torch.Tensor):
                return output[key], f"its {key!r} entry"
        tensors = [(key, value) for key, value in output.items() if isinstance(value, torch.Tensor)]
        if len(tensors) == 1:
            return tensors[0][1], f"its only tensor, entry {tensors[0][0]!r}"
        return None, f"keys {sorted(map(str, output.keys()))}"
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits, "its 'logits' attribute"
    if isinstance(output, (tuple, list)):
        parts = ", ".join(
            f"shape {tuple(v.shape)}" if isinstance(v, torch.Tensor) else type(v).__name__ for v in output[:4]
        )
        return None, f"{len(output)} values ({parts}{', ...' if len(output) > 4 else ''})"
    return None, "no tensor cnnwidgets knows how to read"


def _unwrap_advice(output: object) -> str:
    """How to wrap a model whose output ``output`` cannot be read: index it by one of its own keys."""
    if isinstance(output, Mapping):
        keys = [key for key, value in output.items() if isinstance(value, torch.Tensor)] or list(output.keys())
        if keys:
            return f"`return self.model(x)[{keys[0]!r}]` (the entry to explain)"
    if isinstance(output, (tuple, list)) and output:
        return "`return self.model(x)[0]` (the value to explain)"
    return "`return self.model(x).<the tensor to explain>`"


def output_tensor(output: object) -> torch.Tensor:
    """The one tensor in ``output``, what a model's forward returned, taken out of the usual containers.

    * a tensor is returned as it is;
    * a mapping (a ``dict``, or a Hugging Face ``ModelOutput``): its ``logits`` entry, else its
      ``out`` entry (torchvision segmentation models), else its only tensor value;
    * any other object with a tensor attribute ``logits`` (output dataclasses, a named tuple
      with a ``logits`` field).

    Plain tuples and lists are refused rather than guessed at: ``(features, logits)`` and
    ``(logits, aux)`` both occur, and picking the wrong one would draw wrong pictures.

    Raises:
        OutputTypeError: (a ``TypeError``) for anything else, naming what the model returned, what
            is accepted and how to wrap the model (indexing a dict by one of its own keys).
    """
    tensor, found = _read_output(output)
    if tensor is not None:
        return tensor
    raise OutputTypeError(
        f"the model returned a {type(output).__name__} with {found}; cnnwidgets needs one tensor: the "
        "model's output itself, the 'logits' or 'out' entry of a dict, or a 'logits' attribute. "
        f"Wrap the model in a module whose forward returns the tensor to explain, e.g. {_unwrap_advice(output)}"
    )


def output_reduction(output: object) -> str:
    """How :func:`output_tensor` reduces ``output`` to the tensor targets see, for messages:
    ``""`` for a tensor (or an output it cannot read), else e.g. ``"a dict output is reduced to
    its 'out' entry"``."""
    tensor, source = _read_output(output)
    if tensor is None or not source:
        return ""
    kind = "dict" if isinstance(output, Mapping) else type(output).__name__
    return f"a {kind} output is reduced to {source}"


def class_scores(output: torch.Tensor, what: str = "class scores") -> torch.Tensor:
    """The model output ``output`` as class scores (N, classes).

    An output of shape (N, classes, 1, 1), as fully convolutional classifiers give before
    flattening, is read as (N, classes). ``what`` names the caller in the message. Every
    path that reads a model's output as class scores or probabilities (class targets,
    :func:`class_probabilities`, the explorer's scores, a method's top class) goes through here.

    Raises:
        OutputDtypeError: (a ``TypeError`` and a ``ValueError``) for an output that is not floating
            point: a bool output (thresholded scores, ``logits > 0``), an integer one (class
            indices, ``argmax``) or a complex one, naming the dtype and what to return instead.
        ValueError: for any other shape (a segmentation map (N, classes, H, W), an output whose
            batch dimension was flattened away ...), naming the shape, and for an output with no
            class at all (N, 0).
        OutputTypeError: (a ``TypeError``) for an ``output`` that is not a tensor (a dict, a tuple,
            an array), naming what it is.
    """
    _require_tensor(output, what, "class scores (N, classes)")
    _require_floating(output, what)
    if output.dim() > 2 and all(size == 1 for size in output.shape[2:]):
        output = output.reshape(output.shape[0], output.shape[1])
    if output.dim() != 2:
        single = (
            "; one score per image, as a binary classifier's single logit, is read as class scores of shape "
            "(N, 1): return that (drop the .squeeze(1), or out.unsqueeze(1))" if output.dim() == 1 else ""
        )
        raise ValueError(
            f"{what}: the model output must be class scores of shape (N, classes) (or (N, classes, 1, 1)); "
            f"this one has shape {tuple(output.shape)}{single}"
        )
    if output.shape[1] == 0:
        raise ValueError(
            f"{what}: the model output has shape {tuple(output.shape)}: no class at all; class scores are (N, classes) "
            "with at least one class"
        )
    return output


def _require_tensor(value: object, what: str, expected: str) -> None:
    """Raise :class:`OutputTypeError` unless ``value`` is a tensor; ``expected`` says which, for the message."""
    if isinstance(value, torch.Tensor):
        return
    hint = (
        "; take the tensor out of the model's output first, with cnnwidgets.core.targets.output_tensor(output)"
        if isinstance(value, (Mapping, tuple, list)) or hasattr(value, "logits") else ""
    )
    raise OutputTypeError(f"{what} reads a tensor of {expected}, got {_describe_value(value)}{hint}")


#: A row of scores reads as a probability distribution when it sums to 1 within this tolerance
#: (or within 4 eps of a float16 / bfloat16 output). Float32 softmax outputs of up to 20k classes
#: sum to 1 within a few 1e-6; logits that are all in [0, 1] and also sum to 1 this closely do
#: not occur in practice.
_DISTRIBUTION_TOLERANCE = 1e-4


def _in_unit_interval(scores: torch.Tensor) -> bool:
    """Whether all values of ``scores`` are finite and in [0, 1]."""
    values = scores.detach()
    return bool((torch.isfinite(values) & (values >= 0) & (values <= 1)).all())


def _is_distribution(scores: torch.Tensor) -> bool:
    """Whether every row of ``scores`` (N, classes) is already a probability distribution.

    True when all values are finite and in [0, 1] and each row sums to 1 within
    ``max(1e-4, 4 * eps)`` (``eps`` of the scores' dtype; the sum is taken in float64).
    """
    if scores.numel() == 0 or not scores.is_floating_point() or not _in_unit_interval(scores):
        return False
    values = scores.detach()
    tolerance = max(_DISTRIBUTION_TOLERANCE, 4 * torch.finfo(values.dtype).eps)
    # summed on the CPU: MPS has no float64
    return bool(((values.cpu().double().sum(dim=1) - 1).abs() <= tolerance).all())


#: How a model's outputs become class probabilities (see :func:`class_probabilities`).
OUTPUT_KINDS = ("auto", "logits", "multilabel_logits", "probabilities")

#: The final activations a :class:`~cnnwidgets.core.probe.Probe` recognises (``Probe.output_activation``).
FINAL_ACTIVATIONS = ("sigmoid", "softmax")


def check_output_kind(outputs: object) -> str:
    """``outputs`` checked against :data:`OUTPUT_KINDS`.

    Raises:
        TypeError: for anything but a string. ValueError: for an unknown name.
    """
    if not isinstance(outputs, str):
        raise TypeError(f"outputs must be one of {OUTPUT_KINDS} (a string), got {_describe_value(outputs)}")
    if outputs not in OUTPUT_KINDS:
        raise ValueError(f"outputs must be one of {OUTPUT_KINDS}, got {outputs!r}")
    return outputs


def looks_like_independent_probabilities(output: object) -> bool:
    """Whether the class scores ``output`` look like independent probabilities, as a final sigmoid gives them
    (a multi-label model, a discriminator): all values finite and in (0, 1], and the rows not
    all probability distributions (summing to 1). An exact 0 rules a sigmoid out (in float32 it
    gives one only for logits below about -88) and points to a ReLU before the output instead,
    as in SqueezeNet, whose untrained logits are small, non-negative and often all below 1.

    ``class_probabilities(output, outputs="auto")`` cannot tell such outputs from logits that
    happen to lie in [0, 1], and reads them as logits unless a probe saw the final
    ``nn.Sigmoid`` (``Probe.output_activation``); callers can use this test to point the user to
    ``outputs="probabilities"``. False for an output that is not class scores (see :func:`class_scores`).

    ``output`` may be what the model's forward returned: a dict, a ``ModelOutput`` or an object
    with a ``logits`` attribute is read as :func:`output_tensor` reads it (its ``logits`` entry, its
    ``out`` entry, or its only tensor), the scores every target and method sees. An output that
    holds no tensor :func:`output_tensor` can pick (a tuple, a dict of several other tensors) is
    not class scores either: False, not an error, as for any other answer of this test.
    """
    tensor, _ = _read_output(output)
    if tensor is None:
        return False
    try:
        scores = class_scores(tensor)
    except ValueError:
        return False
    if scores.numel() == 0 or not scores.is_floating_point() or not _in_unit_interval(scores):
        return False
    if bool((scores == 0).any()):
        return False
    return scores.shape[1] == 1 or not _is_distribution(scores)


def class_probabilities(
    output: torch.Tensor,
    what: str = "class probabilities",
    *,
    outputs: str = "auto",
    final_activation: str | None = None,
) -> torch.Tensor:
    """Class probabilities (N, classes) from a model output of class scores.

    ``outputs`` says what the output holds (see :data:`OUTPUT_KINDS`):

    * ``"logits"``: scores of one-of-many classes, ``softmax(y)`` over the classes; with a
      single output unit (a binary classifier trained with a logistic loss) ``sigmoid(y)``,
      the probability of that unit's class (a softmax over one unit would be 1 whatever the
      input). A model that ends in ``log_softmax`` is read right too: ``softmax(log p) = p``.
    * ``"multilabel_logits"``: logits of independent labels, ``sigmoid(y)`` per unit.
    * ``"probabilities"``: probabilities already (a model ending in ``nn.Softmax`` or
      ``nn.Sigmoid``), taken as they are.
    * ``"auto"`` (default): ``y`` as it is when ``final_activation`` says the model ends in an
      ``nn.Sigmoid`` or ``nn.Softmax`` module (``Probe.output_activation``; the functions that
      evaluate targets with a probe pass it); otherwise with 2 or more classes ``y`` as it is when
      every row is a distribution (all values finite and in [0, 1], each row summing to 1 within
      ``max(1e-4, 4 * eps)``, ``eps`` of its float dtype), so that a model ending in a softmax is
      not shown ``softmax(softmax(y))``, else as ``"logits"``. Without ``final_activation``, a
      single unit and independent sigmoid outputs (values in [0, 1], rows not summing to 1) cannot
      be told from logits by their values and are read as logits: pass ``outputs="probabilities"``
      for them (:func:`looks_like_independent_probabilities` spots such outputs).

    Results are float tensors, still attached to the autograd graph.

    Args:
        output: the model's output, (N, classes) or (N, classes, 1, 1).
        what: the name used in error messages.
        outputs: one of :data:`OUTPUT_KINDS`.
        final_activation: ``"sigmoid"``, ``"softmax"`` or None (unknown): the module the model
            ends in, as ``Probe.output_activation`` gives it; used by ``"auto"`` only.

    Raises:
        ValueError: for an output that is not class scores (see :func:`class_scores`), an unknown
            ``outputs`` or ``final_activation``, or ``outputs="probabilities"`` with values
            outside [0, 1].
        OutputDtypeError: (a ``ValueError`` too) for an output that is not floating point (see
            :func:`class_scores`).
        TypeError: for an ``outputs`` that is not a string.
    """
    outputs = check_output_kind(outputs)
    if final_activation is not None and final_activation not in FINAL_ACTIVATIONS:
        raise ValueError(f"final_activation must be one of {FINAL_ACTIVATIONS} or None, got {final_activation!r}")
    scores = class_scores(output, what)
    if outputs == "auto":
        if final_activation is not None or (scores.shape[1] > 1 and _is_distribution(scores)):
            return scores
        outputs = "logits"
    if outputs == "probabilities":
        values = scores.detach()
        if bool(((values < 0) | (values > 1)).any()):
            raise ValueError(
                f"{what}: outputs='probabilities' needs values in [0, 1], but the output ranges from "
                f"{float(values.min()):.4g} to {float(values.max()):.4g}; pass outputs='logits' (or "
                "'multilabel_logits') for raw scores"
            )
        return scores
    if outputs == "multilabel_logits" or scores.shape[1] == 1:
        return torch.sigmoid(scores)
    return torch.softmax(scores, dim=1)


#: What a class target on an output that is not class scores is told to do instead.
_WRITE_A_TARGET = (
    "; a class index reads class scores only. For another output write a target: a callable with a "
    "`layer = None` attribute that maps the output to one score per image, shape (N,), e.g. "
    "`target = lambda out: out[:, k].mean((1, 2)); target.layer = None` for class k of a segmentation "
    "map (N, classes, H, W)"
)


def _target_layer(layer: object, what: str) -> str | None:
    """``layer`` checked for a class target: None (the model's output) or a layer's name, a non-empty str.

    Raises:
        TypeError: for anything else ('' would name the whole model, which is None here).
    """
    if layer is None:
        return None
    if isinstance(layer, str) and layer:
        return str(layer)
    got = f"bytes {bytes(layer)!r}" if isinstance(layer, (bytes, bytearray)) else _describe_value(layer)
    raise TypeError(f"{what}: layer must be None (the model's output) or the name of a layer, a non-empty str, got {got}")


def _check_class_index(index: int, activation: torch.Tensor, what: str, layer: str | None = None) -> torch.Tensor:
    try:
        activation = class_scores(activation, what)
    except OutputDtypeError:
        raise  # says what the dtype is and what to return instead
    except ValueError as exc:
        if layer is not None:  # the scores are read at a layer, not at the model's output
            raise ValueError(
                f"{what}: the output of layer {layer!r} must be class scores of shape (N, classes) (or (N, "
                f"classes, 1, 1)) to read class {index} there; it has shape {tuple(activation.shape)}. Use "
                "ChannelActivation for a channel of a feature map"
            ) from None
        raise ValueError(f"{exc}{_WRITE_A_TARGET}") from None
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
    types; it is stored as an int). A negative index is refused at once; the upper bound needs
    the model's output and is checked when the target is evaluated. ``layer`` names the layer whose
    output holds the scores; None (the default) reads the model's output, and for a model that
    ends in an ``nn.Softmax`` or ``nn.Sigmoid`` module fed by one layer's (classes,) or
    (classes, 1, 1) output the scores that go into it (the logits, see :func:`logit_target`), when evaluated with a probe
    (:func:`target_score`, every method).

    Raises:
        TypeError: for an index that is not an int (a bool, a float, several indices ...), or a
            layer that is neither None nor a non-empty str.
        IndexError: for a negative index, as :func:`resolve_target`.
    """

    index: int
    layer: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", _class_index(self.index, "ClassLogit: the class index"))
        object.__setattr__(self, "layer", _target_layer(self.layer, "ClassLogit"))

    def __call__(self, activation: torch.Tensor) -> torch.Tensor:
        return _check_class_index(self.index, activation, "ClassLogit", self.layer)[:, self.index]


@dataclass(frozen=True)
class ClassLogits:
    """The logit of a class per image: ``y[n, indices[n]]`` for image ``n`` of a batch of
    ``len(indices)`` images (one image's class for each, as ``model(x).argmax(1)`` gives them).

    A method given several class indices as its target (a list, or a 1-D integer tensor or
    array) reads them as this target (see :func:`resolve_target`). A batch of another size is
    refused when the target is evaluated.

    Attributes:
        indices: the class of each image, stored as a tuple of ints (each as :func:`as_index`
            accepts it; none negative).
        layer: the layer whose output holds the scores; None (the default) reads the model's output.

    Raises:
        TypeError: for indices that are not integers, or a layer that is neither None nor a
            non-empty str. IndexError: for a negative index.
        ValueError: for no index at all.
    """

    indices: tuple[int, ...]
    layer: str | None = None

    def __post_init__(self) -> None:
        values = self.indices
        if isinstance(values, (torch.Tensor, np.ndarray)):
            if values.ndim != 1 or not _integer_array(values):
                raise TypeError(f"ClassLogits: the indices must be a 1-D integer tensor or array, a list or a "
                                f"tuple of ints, got {_describe_value(values)}")
            values = values.tolist()
        if not isinstance(values, (list, tuple)):
            raise TypeError(f"ClassLogits: the indices must be a list, a tuple or a 1-D integer tensor or "
                            f"array, got {_describe_value(values)}")
        if not values:
            raise ValueError("ClassLogits: no class index given; give one per image")
        object.__setattr__(self, "indices", tuple(_class_index(v, "ClassLogits: each class index") for v in values))
        object.__setattr__(self, "layer", _target_layer(self.layer, "ClassLogits"))

    def __call__(self, activation: torch.Tensor) -> torch.Tensor:
        _require_tensor(activation, "ClassLogits", "class scores (N, classes)")
        if activation.dim() >= 1 and activation.shape[0] != len(self.indices):
            raise ValueError(
                f"ClassLogits: {len(self.indices)} class indices (one per image) for a batch of "
                f"{activation.shape[0]} images; give one index per image of the batch"
            )
        scores = _check_class_index(max(self.indices), activation, "ClassLogits", self.layer)
        rows = torch.arange(len(self.indices), device=scores.device)
        return scores[rows, torch.tensor(self.indices, device=scores.device)]


@dataclass(frozen=True)
class ClassProbability:
    """The probability of class ``index``: ``p[:, index]`` with ``p = class_probabilities(y, outputs=outputs)``.

    ``outputs`` says how the model's outputs become probabilities (see :func:`class_probabilities`):
    ``"logits"`` (softmax; sigmoid for one unit), ``"multilabel_logits"`` (sigmoid per unit),
    ``"probabilities"`` (taken as they are) or ``"auto"``: ``y`` as it is for a model that ends
    in an ``nn.Softmax`` or ``nn.Sigmoid`` module when the target is evaluated with a probe
    (:func:`target_score` and :func:`call_target` pass ``Probe.output_activation``; called on a
    tensor alone the target cannot know it), else ``y`` as it is when its rows already are
    probability distributions, else as ``"logits"``.

    ``index`` is checked, and ``layer`` read, as for :class:`ClassLogit`.

    Raises:
        TypeError: for an index that is not an int (a bool, a float, several indices ...), a layer
            that is neither None nor a non-empty str, or an ``outputs`` that is not a string.
        IndexError: for a negative index, as :func:`resolve_target`.
        ValueError: for an unknown ``outputs``.
    """

    index: int
    layer: str | None = None
    outputs: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", _class_index(self.index, "ClassProbability: the class index"))
        object.__setattr__(self, "layer", _target_layer(self.layer, "ClassProbability"))
        check_output_kind(self.outputs)

    def __call__(self, activation: torch.Tensor) -> torch.Tensor:
        return self.probability_score(activation)

    def probability_score(self, activation: torch.Tensor, final_activation: str | None = None) -> torch.Tensor:
        """The target's scores for the output ``activation``, with the model's final activation
        ``final_activation`` (``"sigmoid"``, ``"softmax"`` or None) when it is known (see
        :func:`class_probabilities`)."""
        scores = _check_class_index(self.index, activation, "ClassProbability", self.layer)
        return class_probabilities(
            scores, "ClassProbability", outputs=self.outputs, final_activation=final_activation
        )[:, self.index]


_REDUCTIONS = ("mean", "sum", "max")


def check_channel_output(activation: torch.Tensor, layer: str | None, what: str) -> None:
    """Check that ``activation``, the output batch of ``layer`` (channels first), has a channel axis
    to pick from.

    Accepted: (N, C) vectors and (N, C, H, W) maps (channels-last layers are read channels
    first, see :meth:`~cnnwidgets.core.layers.LayerInfo.channels_first`), and outputs with more
    dimensions, (N, C, ...). Refused: (N,) and 3-D outputs (N, A, B), such as the token sequences
    (N, tokens, features) of a vision transformer, where dimension 1 is not a channel axis.

    Raises:
        ValueError: naming the layer, its shape per image, ``what`` needed it, and what is accepted.
        TypeError: for an ``activation`` that is not a tensor, or one of complex numbers (which
            have no order to pick a strongest unit by, nor a real mean).
    """
    if not isinstance(activation, torch.Tensor):
        raise TypeError(f"{what} reads the output of layer {layer!r} as a tensor (N, C, ...), got "
                        f"{_describe_value(activation)}")
    if activation.is_complex():
        raise TypeError(f"layer {layer!r} has complex values (dtype {activation.dtype}); {what} needs real ones, "
                        "which have an order and a mean: read the layer's real part or magnitude instead")
    if activation.dim() >= 2 and activation.dim() != 3:
        return
    shape = tuple(activation.shape[1:])
    hint = (
        " (a 2-D output per image, such as the (tokens, features) sequence of a transformer layer, has no "
        "channel axis to pick)" if activation.dim() == 3 else ""
    )
    raise ValueError(f"layer {layer!r} has output shape {shape}; {what} needs a (C,) or (C, H, W) output{hint}")


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
        TypeError: for a layer that is not a non-empty string (None would read the model's
            output), a channel, row or column that is not an int, or a position that is not a
            (row, col) pair.
        ValueError: for an unknown ``reduce``; when evaluated, for a layer output without a
            channel axis, such as a transformer's (tokens, features) (see :func:`check_channel_output`),
            or for a feature map with no unit at this input size.

    When evaluated, an integer or bool output (counts, a mask) is scored as float32; an output
    that is not a tensor, or holds complex numbers, is refused with a ``TypeError``. An empty
    batch gives empty scores.
    """

    layer: str
    channel: int
    reduce: str = "mean"
    position: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.layer, str) or not self.layer:
            # None (or '') would read the model's output: a class score, not a channel of a layer
            raise TypeError(
                f"ChannelActivation: layer must be the name of an internal layer (a non-empty str), got "
                f"{_describe_value(self.layer)}; for a class score use ClassLogit or ClassProbability"
            )
        object.__setattr__(self, "layer", str(self.layer))  # a numpy str as the plain str it names
        object.__setattr__(self, "channel", as_index(self.channel, "ChannelActivation: channel"))
        if self.position is not None:
            object.__setattr__(self, "position", as_pair(self.position, "ChannelActivation: position"))
        if self.reduce not in _REDUCTIONS:
            raise ValueError(f"reduce must be one of {_REDUCTIONS}, got {self.reduce!r}")

    def __call__(self, activation: torch.Tensor) -> torch.Tensor:
        check_channel_output(activation, self.layer, "a channel target")
        if not 0 <= self.channel < activation.shape[1]:
            raise IndexError(
                f"channel {self.channel} is out of range: layer {self.layer!r} has {activation.shape[1]} channels"
            )
        values = activation[:, self.channel]
        if values.dim() >= 3 and math.prod(values.shape[1:]) == 0:
            raise ValueError(empty_map_message(self.layer, str(tuple(activation.shape[1:]))))
        if self.position is not None:
            if values.dim() != 3:
                raise ValueError(f"a position needs a spatial layer; {self.layer!r} has shape {tuple(activation.shape)}")
            row, col = self.position
            if not (0 <= row < values.shape[1] and 0 <= col < values.shape[2]):
                raise IndexError(f"position {self.position} is outside the {tuple(values.shape[1:])} map")
            return values[:, row, col]
        # the size of the rest spelled out: -1 cannot be inferred for an empty batch
        flat = values.reshape(values.shape[0], math.prod(values.shape[1:]))
        if not flat.is_floating_point():
            flat = flat.float()  # an integer or bool map (counts, a mask): torch has no mean of integers
        if self.reduce == "mean":
            return flat.mean(dim=1)
        if self.reduce == "sum":
            return flat.sum(dim=1)
        return flat.amax(dim=1)


@dataclass(frozen=True)
class OutputScore:
    """A plain function of the model's output as a target: ``fn(y) -> (N,)`` scores.

    :func:`resolve_target` wraps any callable without a ``layer`` attribute in it, so
    ``lambda y: y[:, 3] - y[:, 5]`` (class 3 against class 5) works wherever a target does.
    ``y`` is the model's output as :func:`output_tensor` gives it; the scores are checked by
    :func:`checked_scores`.
    """

    fn: Callable[[torch.Tensor], torch.Tensor]
    layer: str | None = None

    def __call__(self, activation: torch.Tensor) -> torch.Tensor:
        return self.fn(activation)


def _several_indices(value: object) -> bool:
    """Whether ``value`` is a class index per image: a list or tuple of two or more ints (Python
    ints, numpy integers or 0-d integer tensors, as ``list(model(x).argmax(1))`` gives them), or a
    1-D integer tensor or array of two or more (one entry is one index, see :func:`_class_index`)."""
    if isinstance(value, (list, tuple)):
        return len(value) > 1 and all(
            (isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)))
            or (isinstance(v, torch.Tensor) and v.dim() == 0 and _integer_array(v)) for v in value
        )
    return _integer_array(value) and value.ndim == 1 and value.shape[0] > 1


def resolve_target(target: Target | Callable[[torch.Tensor], torch.Tensor] | int) -> Target:
    """Accept a class index as shorthand for :class:`ClassLogit`, and a plain function of the
    model's output for :class:`OutputScore`.

    A class index may be a Python int, a numpy integer or a 0-d integer tensor (see
    :func:`as_index`), or an integer tensor or array of shape (1,) (``model(x).argmax(1)`` for
    one image). Several class indices (a list, or a 1-D integer tensor or array), one per image
    of the batch, are :class:`ClassLogits`. A callable with a ``layer`` attribute is a target as it is (see
    :class:`Target`); one without is a function of the model's output. Every method that takes
    a target reads it here.

    Raises:
        TypeError: if ``target`` is neither a class index nor a callable (a bool, a float,
            a tensor of several indices ...); for a class name (a str) the message says how to
            look its index up (``classes.index('star')``).
        IndexError: for a negative class index (class indices run from 0 to ``classes - 1``;
            an index too large for the model is refused when the target is evaluated).
    """
    if isinstance(target, (bool, np.bool_)):
        raise TypeError("a target is a class index (int) or a target object, not a bool")
    if _several_indices(target):
        return ClassLogits(target)
    if isinstance(target, (list, tuple)) and len(target) == 1 and isinstance(target[0], INDEX_TYPES):
        target = target[0]  # one image's class, as a list
    target = single_index(target)  # one image's class, as an array or tensor of shape (1,)
    if isinstance(target, INDEX_TYPES):
        return ClassLogit(_class_index(target, "a target given as a class index"))
    if callable(target):
        return target if hasattr(target, "layer") else OutputScore(target)
    if isinstance(target, str):
        raise TypeError(f"unsupported target {target!r}: a class name is not a target; pass its class index "
                        f"({_ACCEPTED_INDEX}): {_class_name_hint(target)}; or a target object (ClassLogit, "
                        "ClassProbability ...)")
    raise TypeError(
        f"unsupported target {target!r}: pass a class index ({_ACCEPTED_INDEX}), ClassLogit, ClassProbability, "
        "ChannelActivation, or a callable: of the model's output (N, ...) -> (N,) scores, or with a `layer` "
        "attribute to read that layer's output instead"
    )


def target_score(probe, x: torch.Tensor, target: Target | int, *, grad: bool = False) -> torch.Tensor:
    """Evaluate ``target`` on the batch ``x`` with ``probe`` (prefix-only for internal layers).

    An internal layer's activation reaches the target with channels on dim 1, also for a
    channels-last layer (see :meth:`~cnnwidgets.core.probe.Probe.capture`). The target is
    called by :func:`call_target`.

    Args:
        probe: a :class:`~cnnwidgets.core.probe.Probe` (the methods of :mod:`cnnwidgets.methods`
            take a model or a probe and make one when needed).
        x: a preprocessed batch (N, C, H, W), as :meth:`~cnnwidgets.core.probe.Probe.capture` takes it.
        target: a class index or a target callable (see :func:`resolve_target`).
        grad: ``False`` (default): no autograd, the activation may come from the probe's cache.
            ``True``: the scores stay attached to the autograd graph (``x`` may require grad)
            and nothing is cached.

    Returns:
        Scores of shape (N,), on the probe's device.

    Raises:
        TypeError: for a ``probe`` that is not a Probe (a plain model, say), a ``target`` that is
            neither a class index nor a callable, or a ``grad`` that is not True or False.
        IndexError: for a negative class index, or one out of range for the model's output.
        KeyError: for a target layer the model does not have.
        ValueError: for a batch the probe refuses, or scores that are not (N,) or not finite
            (see :func:`call_target`).
        RuntimeError: if the model fails on the input.
    """
    from cnnwidgets.core.probe import Probe

    if not isinstance(probe, Probe):
        raise TypeError(
            f"target_score needs a cnnwidgets.Probe, got {type(probe).__name__}; wrap the model: "
            "with Probe(model) as probe: target_score(probe, x, target)"
        )
    grad = as_flag(grad, "grad")
    target = logit_target(probe, resolve_target(target), x)
    if target.layer is None:
        activation = probe.logits(x, grad=grad)
    else:
        activation = probe.capture(x, [target.layer], grad=grad, channels_first=True)[target.layer]
    return call_target(target, activation, probe=probe, n=x.shape[0])


def logit_target(probe, target: Target, x: torch.Tensor) -> Target:
    """``target`` as it reads the model's logits for the batch ``x``: a :class:`ClassLogit` or
    :class:`ClassLogits` on the model's output, for a model that ends in an ``nn.Softmax`` or
    ``nn.Sigmoid`` module, becomes the same target on the layer that feeds that module
    (:attr:`~cnnwidgets.core.probe.Probe.scores_layer`), so a class index scores the class's logit
    on every model, not its probability. Every other target is returned as it is (also where the
    scores layer is not known: the output is then scored as it is).

    For such a target the probe describes its layers at ``x``'s size first, if it has not (the
    forward that follows would).
    """
    if not isinstance(target, (ClassLogit, ClassLogits)) or target.layer is not None:
        return target
    from cnnwidgets.core.probe import check_batch

    size = tuple(check_batch(x).shape[1:])
    if probe.input_size != size or not probe.described:
        probe.describe(size)
    if probe.output_activation is not None and probe.scores_layer is not None:
        return replace(target, layer=probe.scores_layer)
    return target


#: The targets this module defines; their errors say what went wrong themselves.
_OWN_TARGETS = (ClassLogit, ClassLogits, ClassProbability, ChannelActivation)


def call_target(target: Target, activation: torch.Tensor, *, probe=None, n: int | None = None) -> torch.Tensor:
    """``target(activation)``, checked by :func:`checked_scores`: the one way methods call a target.

    Args:
        target: a resolved target (see :func:`resolve_target`).
        activation: what the target reads: the model's output as :func:`output_tensor` gives it
            (``target.layer`` None), else the layer's output batch, channels first.
        probe: the :class:`~cnnwidgets.core.probe.Probe` the activation comes from, if any: a
            target of probabilities (one with a ``probability_score(activation, final_activation)``
            method, as :class:`ClassProbability`) then gets ``probe.output_activation``,
            and errors say how the model's output was reduced (``probe.output_reduction``).
        n: the batch size the scores must have (default: ``activation.shape[0]``).

    Raises:
        TypeError, IndexError, KeyError: when a target written by the user fails with one of these
            while reading its input (a target that indexes a tensor by a dict key, say): the same
            kind of error, saying what the target was given (the tensor's shape, and how a dict
            output was reduced) and the original error.
        ValueError, TypeError: for results that are not (N,) tensors (see :func:`checked_scores`).
        ValueError: for scores that are NaN or infinite, saying for which images and whether the
            activation was already non-finite, and then why (see :func:`nonfinite_cause`: the
            probe's model's first non-finite parameter, or its forward on this input).
        OutputDtypeError: for a class target on a model output that is not floating point (see
            :func:`class_scores`).
    """
    try:
        if target.layer is None and probe is not None and callable(getattr(target, "probability_score", None)):
            # targets of probabilities (ClassProbability, occlusion's top class) take the model's
            # final activation into account
            scores = target.probability_score(activation, probe.output_activation)
        else:
            scores = target(activation)
    except (TypeError, IndexError, KeyError) as exc:
        if isinstance(target, _OWN_TARGETS):
            raise
        raise _target_failure(exc, target, activation, probe) from exc
    scores = checked_scores(scores, activation.shape[0] if n is None else n)
    _require_finite(scores, target, activation, _probe_model(probe))
    return scores


def _probe_model(probe) -> object:
    """The model ``probe`` runs (its private copy), or None without a probe or when it cannot say."""
    if probe is None:
        return None
    try:
        return probe.model
    except Exception:  # noqa: BLE001 - a closed probe: the cause is then told without the weights
        return None


def nonfinite_cause(model: object = None) -> str:
    """Why a model gives NaN or inf for a finite input, as a sentence (no final period) to put in a message.

    The model's parameters, then its buffers, are checked in order with one
    ``torch.isfinite(t).all()`` each (floating-point and complex tensors only), stopping at the
    first that is not finite; this costs about one pass over the weights, so call it only once
    something was found not finite.

    Args:
        model: the ``nn.Module`` that computed the values (for a
            :class:`~cnnwidgets.core.probe.Probe`, ``probe.model``, its private copy), or None
            when it is not at hand.

    Returns:
        * for a model with a non-finite parameter or buffer, that one named: ``"the parameter
          'fc.weight' holds NaN: the model has non-finite weights (has training diverged?)"``;
        * for a model whose parameters and buffers are all finite: that its forward computed
          the NaN or inf from this input (an operation such as log, sqrt or a division of this
          input's values), not its weights;
        * for ``model=None`` (or an object without parameters to check): both possibilities, briefly.

    Example:
        ``raise ValueError(f"the output is NaN for a finite input: {nonfinite_cause(model)}")``
    """
    named = getattr(model, "named_parameters", None), getattr(model, "named_buffers", None)
    if not all(callable(f) for f in named):
        return (
            "either the model has non-finite weights (has training diverged? check its parameters with "
            "torch.isfinite) or its forward computes NaN or inf from this input (an operation such as log, "
            "sqrt or a division of the input's values)"
        )
    with torch.no_grad():
        for kind, tensors in (("parameter", named[0]()), ("buffer", named[1]())):
            for name, tensor in tensors:
                if not isinstance(tensor, torch.Tensor) or tensor.is_meta:
                    continue
                if not (tensor.is_floating_point() or tensor.is_complex()) or bool(torch.isfinite(tensor).all()):
                    continue
                value = "NaN" if bool(torch.isnan(tensor).any()) else "inf"
                return f"the {kind} {name!r} holds {value}: the model has non-finite weights (has training diverged?)"
    return (
        "every parameter and buffer of the model is finite, so its forward computed NaN or inf from this input "
        "(an operation such as log, sqrt or a division of this input's values: an occluded or edited image "
        "can reach values the model does not expect)"
    )


def _require_finite(scores: torch.Tensor, target: Target, activation: object, model: object = None) -> None:
    """Raise ``ValueError`` when some of ``scores`` are NaN or infinite, saying for which images and why.

    A method fed non-finite scores returns all-NaN maps (or, for occlusion, an empty heatmap)
    without a word; this check costs one reduction over N numbers. ``model`` (the probe's
    private copy, or None) is checked by :func:`nonfinite_cause` only when the activation itself
    is not finite.
    """
    with torch.no_grad():
        finite = torch.isfinite(scores)
        if bool(finite.all()):
            return
        images = torch.nonzero(~finite).flatten().tolist()
        source = "the model's output" if getattr(target, "layer", None) is None else f"the output of layer {target.layer!r}"
        broken = isinstance(activation, torch.Tensor) and not bool(torch.isfinite(activation.detach()).all())
    shown = ", ".join(str(i) for i in images[:10]) + (", ..." if len(images) > 10 else "")
    plural = "s" if len(images) != 1 else ""
    why = (
        f"{source} itself is not finite for a finite input: {nonfinite_cause(model)}"
        if broken
        else f"{source} is finite, so the target computes NaN or inf from it (a log of 0, a division by 0?)"
    )
    raise ValueError(
        f"the target's score is not finite (NaN or inf) for image{plural} {shown} of {scores.shape[0]}: {why}"
    )


def _target_failure(exc: Exception, target: Target, activation: object, probe) -> Exception:
    """``exc`` (a TypeError, IndexError or KeyError) again, saying what the failing target was given."""
    if isinstance(activation, torch.Tensor):
        given = f"a tensor of shape {tuple(activation.shape)}"
    else:
        given = _describe_value(activation)
    if getattr(target, "layer", None) is None:
        reduction = getattr(probe, "output_reduction", "") if probe is not None else ""
        note = (
            f" ({reduction} before targets see it)" if reduction
            else "" if probe is not None
            else " (a dict output is reduced to its 'logits' or 'out' entry before targets see it)"
        )
        where = f"the model's output, {given}{note}"
    else:
        where = f"the output of layer {target.layer!r}, {given}"
    return same_kind(exc, f"the target failed on {where}: {type(exc).__name__}: {exc}")


def same_kind(exc: Exception, message: str) -> Exception:
    """A new exception of ``exc``'s class (a TypeError, IndexError or KeyError, or a subclass)
    with ``message``, so that a caller's except clause still matches; of the builtin base class
    where the subclass's constructor takes other arguments."""
    try:
        return type(exc)(message)
    except Exception:  # noqa: BLE001 - a subclass whose constructor takes other arguments
        kind = next(k for k in (KeyError, IndexError, TypeError) if isinstance(exc, k))
        return kind(message)


def empty_map_message(layer: str | None, shape: str, size: str = "") -> str:
    """What to say of a layer whose feature map ``shape`` (as text) has no unit at this input size;
    ``size`` names that size (``" (32x32)"``) when known."""
    return (f"layer {layer!r} has an empty feature map {shape} at this input size{size}: pick an earlier layer or "
            "a larger input")


def check_finite_activation(
    activation: torch.Tensor, layer: str | None, what: str, *, model: object = None
) -> None:
    """Refuse an ``activation`` of ``layer`` (or, for ``layer=None``, a model output) that holds NaN or inf.

    The inputs a probe runs are checked finite, so such values come from the model: non-finite
    weights (a diverged training step), or a forward that computes them from this input. One
    ``isfinite(...).all()`` on a tensor already computed when all is well; ``what`` names the
    method in the message. ``model`` (the model that computed ``activation``, e.g. ``probe.model``)
    lets the message say which of the two it is (see :func:`nonfinite_cause`); without it both are named.

    Raises:
        ValueError: saying where, how many values, and what to check.
    """
    finite = torch.isfinite(activation.detach())
    if bool(finite.all()):
        return
    count = int((~finite).sum())
    where = "the model's output is" if layer is None else f"the model's activations at layer {layer!r} are"
    raise ValueError(
        f"{what} needs finite activations, but {where} not finite ({count} of {activation.numel()} values are NaN "
        f"or inf) for a finite input: {nonfinite_cause(model)}"
    )


def checked_scores(scores: object, n: int | None = None) -> torch.Tensor:
    """A target's result ``scores``, checked: a floating-point tensor of shape (N,), one score per image.

    Raises:
        TypeError: for anything but a tensor (a Python number, a numpy array ...), or a complex
            tensor (casting it to float would drop its imaginary part).
        ValueError: for another shape (N is checked when ``n`` is given).
    """
    if not isinstance(scores, torch.Tensor):
        raise TypeError(
            f"a target must return a tensor of one score per image, shape (N,); got a {type(scores).__name__}"
        )
    if scores.is_complex():
        raise TypeError(
            f"a target must return real scores, one per image; got dtype {scores.dtype}: return its real part "
            "(.real) or its magnitude (.abs())"
        )
    if scores.dim() != 1 or (n is not None and scores.shape[0] != n):
        expected = "(N,)" if n is None else f"({n},)"
        raise ValueError(f"a target must return one score per image, shape {expected}; got {tuple(scores.shape)}")
    return scores if scores.is_floating_point() else scores.float()
