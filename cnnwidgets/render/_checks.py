"""Argument checks shared by the renderers, so that each kind of mistake is refused once, in one wording.

Each check costs a few microseconds of Python and never looks at a whole image: the renderers
run on every frame of a live view. A wrong type raises TypeError, a wrong value ValueError; the
message names the argument, what was given and what is accepted.
"""

from __future__ import annotations

import functools
import math
import numbers
import operator
import re
from collections.abc import Sequence

import numpy as np

__all__ = [
    "as_real_array",
    "check_bool",
    "check_color",
    "check_int",
    "check_lo_hi",
    "check_per_channel",
    "check_real",
    "check_size",
]

_FLOAT32_MAX = float(np.finfo(np.float32).max)
#: The names of torch's integer dtypes, read from a value's ``dtype`` (the renderers do not import torch).
_TORCH_INTEGER = re.compile(r"torch\.u?int\d+")
#: dtype kinds of real numbers: bool, unsigned and signed ints, floats.
_REAL_KINDS = "biuf"


def _given(value: object) -> str:
    return f"{type(value).__name__} {value!r}"


def _integer_tensor(value: object) -> bool:
    """Whether ``value`` is a 0-d tensor of integers (not bools), told by its shape and dtype."""
    shape = getattr(value, "shape", None)
    return (shape is not None and len(shape) == 0 and not isinstance(value, (np.ndarray, np.generic))
            and _TORCH_INTEGER.fullmatch(str(getattr(value, "dtype", ""))) is not None)


def check_int(value: object, what: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an ``int``: a Python or numpy integer or a 0-d integer tensor (not a bool,
    float or string), as the package takes an int everywhere, within the bounds.

    Raises:
        TypeError: for anything but an integer.
        ValueError: for an integer outside ``minimum..maximum``.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        if not _integer_tensor(value):
            raise TypeError(f"{what} must be an int, got {_given(value)}")
        value = operator.index(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if maximum is None:
            accepted = f">= {minimum}"
        elif minimum is None:
            accepted = f"<= {maximum}"
        else:
            accepted = f"in {minimum}..{maximum}"
        raise ValueError(f"{what} must be an int {accepted}, got {value}")
    return int(value)


def check_bool(value: object, what: str) -> bool:
    """``value`` as a ``bool``: True or False (Python or numpy); not 0/1, a string or None.

    Raises:
        TypeError: for anything else (``"no"`` is truthy: it would silently mean True).
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what} must be True or False, got {_given(value)}")
    return bool(value)


def check_real(value: object, what: str, *, positive: bool = False) -> float:
    """``value`` as a finite ``float`` (an int or float, Python or numpy; not a bool), ``> 0`` if ``positive``.

    Raises:
        TypeError: for anything but a real number.
        ValueError: for NaN, an infinity (an int too large for a float included), or
            (``positive``) a number <= 0.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a real number, got {_given(value)}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond float's range
        raise ValueError(f"{what} must be a finite number, got an int of {len(str(abs(value)))} digits") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a finite number, got {number}")
    if positive and number <= 0:
        raise ValueError(f"{what} must be positive, got {number}")
    return number


def check_size(size: object, what: str = "size") -> tuple[int, int]:
    """``size`` as ``(height, width)``: a pair of ints >= 1 (a tuple, a list, an array or ``shape[:2]``).

    Raises:
        TypeError: for something that is not a pair of ints (a lone int, floats, a set or
            a dict, which have no order).
        ValueError: for a sequence of another length or a side < 1.
    """
    accepted = f"{what} must be a pair (height, width) of ints >= 1"
    # a set or a dict has a length but no order: (h, w) could come out as (w, h)
    if (isinstance(size, (str, bytes)) or not isinstance(size, (Sequence, np.ndarray))
            or (isinstance(size, np.ndarray) and size.ndim != 1)):
        raise TypeError(f"{accepted}, got {_given(size)}")
    if len(size) != 2:
        raise ValueError(f"{accepted}, got {len(size)} values: {size!r}")
    height, width = size
    for side in (height, width):
        if isinstance(side, (bool, np.bool_)) or not isinstance(side, (int, np.integer)):
            raise TypeError(f"{accepted}, got {size!r} (a {type(side).__name__})")
        if side < 1:
            raise ValueError(f"{accepted}, got {size!r}")
    return int(height), int(width)


def check_color(color: object, what: str = "color") -> np.ndarray:
    """``color`` as a ``(3,)`` uint8 array: three ints in 0..255 (a tuple, a list or an integer array).

    A tuple (the renderers' defaults, and what the views pass on every frame) is checked once and
    its array kept, read-only.

    Raises:
        TypeError: for something that is not a sequence of ints (floats are refused: 0.5 is no
            0-255 component).
        ValueError: for another number of components or a component outside 0..255.
    """
    if type(color) is tuple:
        try:
            # the types are part of the key: (1.0, 2, 3) == (1, 2, 3), but floats are refused
            return _checked_tuple(color, tuple(map(type, color)), what)
        except TypeError as exc:
            if "unhashable" not in str(exc):
                raise
    return _check_color(color, what)


@functools.lru_cache(maxsize=64)
def _checked_tuple(color: tuple, _types: tuple, what: str) -> np.ndarray:
    array = _check_color(color, what)
    array.setflags(write=False)
    return array


def _check_color(color: object, what: str) -> np.ndarray:
    accepted = f"{what} must be an RGB triple of ints in 0..255"
    if (isinstance(color, (str, bytes)) or not isinstance(color, (Sequence, np.ndarray))
            or (isinstance(color, np.ndarray) and color.ndim == 0)):
        raise TypeError(f"{accepted}, got {_given(color)}")
    if len(color) != 3:
        raise ValueError(f"{accepted}, got {len(color)} values: {color!r}")
    for part in color:
        if isinstance(part, (bool, np.bool_)) or not isinstance(part, (int, np.integer)):
            raise TypeError(f"{accepted}, got {color!r} (a {type(part).__name__})")
        if not 0 <= part <= 255:
            raise ValueError(f"{accepted}, got {color!r}")
    return np.array(color, dtype=np.uint8)


def check_per_channel(value: object, what: str, channels: int) -> np.ndarray:
    """``value`` as a float32 array of shape ``(channels,)``: a finite scalar (repeated) or one
    finite value per channel, within float32's range.

    Raises:
        TypeError: for something that is not real numbers (strings such as ``"1.5"`` and complex
            numbers included).
        ValueError: for an array of another shape, a NaN or infinite value, or one beyond
            float32's range (about 3.4e38).
    """
    accepted = f"{what} must be a number or an array of {channels} numbers"
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        raise TypeError(f"{accepted}, got {_given(value)}") from None
    if array.dtype.kind not in _REAL_KINDS:
        raise TypeError(f"{accepted}, got {_given(value)}")
    array = array.astype(np.float64, copy=False)
    if array.ndim == 0:
        array = np.full(channels, array, dtype=np.float64)
    elif array.shape != (channels,):
        raise ValueError(f"{what} must be a scalar or an array of shape ({channels},), one value per channel, "
                         f"got shape {array.shape}")
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        where = "" if np.ndim(value) == 0 else f" (channel {bad})"
        raise ValueError(f"{what} must be finite, got {array[bad]}{where}")
    beyond = np.abs(array) > _FLOAT32_MAX
    if beyond.any():
        bad = int(np.flatnonzero(beyond)[0])
        where = "" if np.ndim(value) == 0 else f" (channel {bad})"
        raise ValueError(f"{what} must lie within float32's range (+-3.4e38), got {array[bad]:.4g}{where}")
    return array.astype(np.float32)


def check_lo_hi(lo: object, hi: object, channels: int, what: str = "") -> tuple[np.ndarray, np.ndarray]:
    """A display range ``(lo, hi)`` as two float32 arrays of shape ``(channels,)``: each a finite
    scalar (repeated) or one finite value per channel (see :func:`check_per_channel`), with
    ``lo <= hi`` in every channel. ``lo == hi`` (an empty range: a constant channel) is accepted.

    ``what`` prefixes the names in the messages (``"fixed"``: ``fixed lo``, ``fixed hi``).

    Raises:
        TypeError: for a part that is not numbers.
        ValueError: for a part of another shape, with a NaN or infinite value, or ``lo > hi``
            (a reversed range; the message names the values and, for arrays, the channel).
    """
    lo_name, hi_name = (f"{what} lo", f"{what} hi") if what else ("lo", "hi")
    low = check_per_channel(lo, lo_name, channels)
    high = check_per_channel(hi, hi_name, channels)
    reversed_ = low > high
    if reversed_.any():
        bad = int(np.flatnonzero(reversed_)[0])
        where = "" if np.ndim(lo) == 0 and np.ndim(hi) == 0 else f" (channel {bad})"
        raise ValueError(f"{lo_name} must be <= {hi_name}, got lo={_short(low[bad])}, "
                         f"hi={_short(high[bad])}{where}")
    return low, high


def _short(value: np.float32) -> str:
    """The shortest text that reads back as ``value`` (``1`` rather than ``1.0``): two ends that differ
    are never written alike."""
    return str(value).removesuffix(".0")


def as_real_array(values: object, what: str, dtype: type | None = np.float32) -> np.ndarray:
    """``values`` as an array of real numbers, converted to ``dtype`` (None: kept as it is).

    Takes what :func:`numpy.asarray` turns into bools, ints or floats: arrays, nested lists,
    scalars, CPU tensors. Finite values beyond the range of ``dtype`` (a float64 1e300 as
    float32) become infinities, without a numpy warning: the renderers draw them as the
    infinities they are at their precision.

    Raises:
        TypeError: for what holds no real numbers: complex numbers (their imaginary part would
            be dropped), strings (``"0.5"`` would be read as a number), objects (``None`` would
            be read as NaN), or something numpy cannot convert (a tensor that requires grad,
            one on a GPU); the message names ``what``.
    """
    try:
        array = np.asarray(values)
    except Exception as exc:  # noqa: BLE001 - whatever the object raises, the message says what is accepted
        raise TypeError(f"{what} must be an array of real numbers (a numpy array, a nested list or a CPU "
                        f"tensor), got {type(values).__name__} that numpy cannot convert: {exc}") from None
    if array.dtype.kind not in _REAL_KINDS:
        raise TypeError(f"{what} must hold real numbers (bool, int or float), got an array of dtype "
                        f"{array.dtype}" + (": convert them first, e.g. np.asarray(values, dtype=float)"
                                             if array.dtype.kind in "OUS" else ""))
    if dtype is None or array.dtype == dtype:
        return array
    with np.errstate(over="ignore"):
        return array.astype(dtype)
