"""Colormaps as 256-entry lookup tables, applied to values already scaled to [0, 1].

The tables come from matplotlib's colormaps, read once per name and cached; ``gray`` is
computed here. Sequential maps (``viridis``, ``magma`` ...) are for activations, diverging
maps (``RdBu_r`` ...) for signed differences, with the midpoint 0.5 meaning "no change".
"""

from __future__ import annotations

import numpy as np

from cnnwidgets.render._checks import as_real_array, check_color, check_int, check_lo_hi

__all__ = [
    "DIVERGING",
    "SEQUENTIAL",
    "apply_colormap",
    "colorize",
    "colormap_names",
    "get_lut",
    "quantize",
]

SEQUENTIAL: tuple[str, ...] = ("viridis", "magma", "inferno", "plasma", "cividis", "gray")
"""Colormaps for values with a natural order (activations, probabilities)."""

DIVERGING: tuple[str, ...] = ("RdBu_r", "coolwarm", "PuOr_r", "seismic")
"""Colormaps for signed values around zero (differences); 0.5 maps to the neutral colour."""

_LUTS: dict[str, np.ndarray] = {}
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def colormap_names() -> list[str]:
    """Every colormap name accepted by :func:`get_lut` and :func:`apply_colormap`."""
    return [*SEQUENTIAL, *DIVERGING]


def get_lut(name: str) -> np.ndarray:
    """The lookup table of a colormap.

    Args:
        name: one of :func:`colormap_names`.

    Returns:
        A read-only ``(256, 3)`` uint8 array; row ``i`` is the colour of value ``i / 255``.

    Raises:
        ValueError: for an unknown name.
        TypeError: for a name that is not a string.
    """
    if not isinstance(name, str):
        raise TypeError(f"a colormap name must be a str, one of {', '.join(colormap_names())}; "
                        f"got {type(name).__name__} {name!r}")
    lut = _LUTS.get(name)
    if lut is not None:
        return lut
    if name not in colormap_names():
        raise ValueError(f"unknown colormap {name!r}; accepted: {', '.join(colormap_names())}")
    if name == "gray":
        ramp = np.arange(256, dtype=np.uint8)
        lut = np.stack([ramp, ramp, ramp], axis=1)
    else:
        from matplotlib import colormaps  # imported on first use: pyplot is never needed

        rgba = colormaps[name](np.linspace(0.0, 1.0, 256))
        lut = np.round(rgba[:, :3] * 255.0).astype(np.uint8)
    lut.setflags(write=False)
    _LUTS[name] = lut
    return lut


_LUTS32: dict[str, np.ndarray] = {}


def get_lut32(name: str) -> np.ndarray:
    """The lookup table of a colormap as one 4-byte pixel per entry: ``(256,)`` uint32.

    The bytes of entry ``i`` are the colour of :func:`get_lut` followed by a padding byte of
    255, so ``get_lut32(name).take(index).view(np.uint8).reshape(*index.shape, 4)[..., :3]``
    colours an index image with one 4-byte copy per pixel (much faster than copying 3-byte
    rows), and :func:`~cnnwidgets.render.encode.encode_jpeg` encodes such a view without
    repacking the pixels.
    """
    lut = _LUTS32.get(name) if isinstance(name, str) else None  # another type: get_lut says what is wrong
    if lut is None:
        rgbx = np.concatenate([get_lut(name), np.full((256, 1), 255, dtype=np.uint8)], axis=1)
        lut = np.ascontiguousarray(rgbx).view(np.uint32).reshape(256)
        lut.setflags(write=False)
        _LUTS32[name] = lut
    return lut


def colormap_strip(name: str, width: int = 64, height: int = 8) -> np.ndarray:
    """A colour key: the colormap ``name`` from its low end (left) to its high end (right).

    Args:
        name: one of :func:`colormap_names`.
        width, height: size in pixels, ints >= 1 (Python or numpy ints; a float, even 2.0, or
            a bool is refused).

    Returns:
        ``(height, width, 3)`` uint8; column ``j`` is the colour of value ``j / (width - 1)``.

    Raises:
        TypeError: for a width or height that is not an int.
        ValueError: for an unknown name or a size below 1.
    """
    width = check_int(width, "colormap_strip width")
    height = check_int(height, "colormap_strip height")
    if width < 1 or height < 1:
        raise ValueError(f"colormap_strip's width and height must be positive ints, got {width} x {height}")
    lut = get_lut(name)
    columns = np.rint(np.linspace(0.0, 255.0, width)).astype(np.intp)
    return np.ascontiguousarray(np.broadcast_to(lut[columns][None], (height, width, 3)))


def apply_colormap(
    values: np.ndarray, name: str = "viridis", *, nan_color: tuple[int, int, int] = (0, 0, 0)
) -> np.ndarray:
    """Colour an array of values in [0, 1].

    Value ``v`` gets the table entry ``round(clip(v, 0, 1) * 255)``; NaN gets ``nan_color``.

    Args:
        values: float array of any shape, expected in [0, 1] (values outside are clipped); a
            single value (a 0-d array, a Python or numpy float) gives one colour of shape (3,).
        name: colormap name, see :func:`colormap_names`.
        nan_color: RGB colour for NaN values.

    Returns:
        uint8 array of shape ``values.shape + (3,)``.

    Raises:
        ValueError: for an unknown colormap name, or a ``nan_color`` that is not three values in 0..255.
        TypeError: for values that are not real numbers (complex, strings, objects), a name
            that is not a string, or a ``nan_color`` that is not three ints.
    """
    lut = get_lut(name)
    nan_rgb = check_color(nan_color, "nan_color")
    values = as_real_array(values, "values")
    if values.ndim == 0:  # arithmetic on a 0-d array gives a scalar, which out= cannot write to
        values = values.reshape(1)
        return _colormap_pixels(values, lut, nan_rgb)[0]
    return _colormap_pixels(values, lut, nan_rgb)


def _colormap_pixels(values: np.ndarray, lut: np.ndarray, nan_rgb: np.ndarray) -> np.ndarray:
    """:func:`apply_colormap` of a float32 array with at least one axis."""
    with np.errstate(over="ignore"):  # a value beyond 1.3e36 scales to inf: clipped to the top entry
        index = values * np.float32(255.0)
    index += np.float32(0.5)
    # fmax/fmin (not clip) send NaN to 0 without a warning; NaN is looked for only if present
    np.fmin(np.fmax(index, 0.0, out=index), 255.0, out=index)
    out = np.take(lut, index.astype(np.uint8), axis=0)
    with np.errstate(over="ignore", invalid="ignore"):  # inf + -inf, or huge values: looked at closer
        finite_sum = np.isfinite(values.sum())
    if not finite_sum:
        out[np.isnan(values)] = nan_rgb
    return out


def linear_scale(
    lo: np.ndarray, hi: np.ndarray, top: float, shift: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(scale, offset, valid)`` per channel with ``v * scale + offset == (v - lo) * top / (hi - lo) + shift``,
    as float32 of ``lo``'s shape; ``valid`` is ``hi > lo``, and an empty range gets scale 0 and
    offset ``shift``.

    Computed in float64: two finite float32 ends may lie further apart than float32 reaches
    (-3e38 .. 3e38), and ``v - lo`` itself could overflow, so :func:`scale_channels` forms it
    only for a narrow range far from 0, where it cannot (for the values it matters for). A range so
    narrow that ``scale`` passes float32's range (ends a few denormals apart, e.g. ``(0, 1e-40)``)
    gets float64 ``scale`` and ``offset``, so that its values are still told apart (the result of
    ``v * scale + offset`` is then float64).
    """
    span = hi.astype(np.float64) - lo.astype(np.float64)
    valid = span > 0
    scale = np.where(valid, top / np.where(valid, span, 1.0), 0.0)
    offset = shift - lo * scale
    if np.abs(scale).max(initial=0.0) > _FLOAT32_MAX or np.abs(offset).max(initial=0.0) > _FLOAT32_MAX:
        return scale, offset, valid
    return scale.astype(np.float32), offset.astype(np.float32), valid


#: An offset beyond which ``v * scale + offset`` in float32 loses the low digits (6e-8 of it).
_CANCELLATION = 1e4


def scale_channels(
    values: np.ndarray, lo: np.ndarray, scale: np.ndarray, offset: np.ndarray, shift: float = 0.0
) -> np.ndarray:
    """``(v - lo) * scale + shift`` of a stack (C, ...) as a new array, with ``(scale, offset)`` from
    :func:`linear_scale` and ``lo``, ``scale``, ``offset`` shaped to broadcast per channel ((C, 1, 1)).

    Computed as ``v * scale + offset``, except in the channels whose offset is so large that
    float32 would lose the result's low digits: a narrow range far from 0 (``2817.794 ..
    2817.798`` is off by up to 15 of 255 steps that way). Those are computed as ``(v - lo) *
    scale + shift``: ``v - lo`` is exact for a value in or near such a range, and one far
    outside it can only overflow to the infinity it is clipped to anyway. No numpy warning is
    raised (``inf * 0`` of an empty range is NaN).
    """
    with np.errstate(invalid="ignore", over="ignore"):
        out = values * scale
        out += offset
        precise = np.flatnonzero(np.abs(offset.reshape(-1)) > _CANCELLATION)
        if precise.size:
            part = values[precise] - lo.reshape(-1)[precise].reshape((-1,) + (1,) * (values.ndim - 1))
            part *= scale.reshape(-1)[precise].reshape(part.shape[:1] + (1,) * (values.ndim - 1))
            part += shift
            out[precise] = part
    return out


def quantize(values: np.ndarray, lo: np.ndarray | float, hi: np.ndarray | float) -> np.ndarray:
    """Colormap indices of a stack: ``round(255 * clip((v - lo) / (hi - lo), 0, 1))`` as uint8.

    Non-finite values get the ends of the colormap: NaN and -inf index 0, +inf index 255. A
    channel with an empty range (``hi == lo``, a constant channel) gets index 0 everywhere,
    non-finite values included. A reversed range (``lo > hi``) is refused.

    Args:
        values: float stack (C, H, W).
        lo: lower end per channel, shape (C,) or scalar; finite, ``<= hi``.
        hi: upper end per channel, shape (C,) or scalar; finite.

    Returns:
        uint8 (C, H, W).

    Raises:
        ValueError: for a stack that is not 3-D, ``lo``/``hi`` of another shape than (C,) or
            with a NaN or infinite value, or ``lo > hi`` in some channel (the message names
            the values and, for arrays, the channel).
        TypeError: for values or ``lo``/``hi`` that are not real numbers.
    """
    values = as_real_array(values, "values")
    if values.ndim != 3:
        raise ValueError(f"expected a stack of shape (C, H, W), got shape {values.shape}")
    lo, hi = check_lo_hi(lo, hi, values.shape[0])
    scale, offset, _ = linear_scale(lo, hi, 255.0, 0.5)  # + 0.5: rounds to the nearest index
    # inf * 0 (empty range) is NaN, drawn as 0
    idx = scale_channels(values, lo[:, None, None], scale[:, None, None], offset[:, None, None], 0.5)
    np.nan_to_num(idx, copy=False, nan=0.0)
    np.clip(idx, 0.0, 255.0, out=idx)
    return idx.astype(np.uint8)


def colorize(
    values: np.ndarray,
    lo: np.ndarray | float,
    hi: np.ndarray | float,
    name: str = "viridis",
    *,
    nan_color: tuple[int, int, int] = (0, 0, 0),
) -> np.ndarray:
    """Normalise and colour a stack in one pass: ``lut[quantize(values, lo, hi)]``.

    The same result as ``apply_colormap(normalize(values, lo, hi), name)`` up to one table
    step of rounding (a channel with an empty range, ``hi == lo``, gets colour 0: a constant
    channel), with fewer passes over the data. A reversed range (``lo > hi``) is refused.

    Args:
        values: float stack (C, H, W).
        lo: lower end per channel, shape (C,) or scalar; finite, ``<= hi``.
        hi: upper end per channel, shape (C,) or scalar; finite.
        name: colormap name.
        nan_color: RGB for NaN values (+-inf get the ends of the colormap, see :func:`quantize`).

    Returns:
        uint8 (C, H, W, 3).

    Raises:
        ValueError: for a stack that is not 3-D, an unknown colormap, ``lo``/``hi`` of another
            shape than (C,) or not finite, ``lo > hi`` in some channel, or a ``nan_color``
            outside 0..255.
        TypeError: for values or ``lo``/``hi`` that are not real numbers or a ``nan_color`` that
            is not three ints.
    """
    lut = get_lut(name)
    nan_rgb = check_color(nan_color, "nan_color")
    values = as_real_array(values, "values")
    out = np.take(lut, quantize(values, lo, hi), axis=0)
    nan = np.isnan(values)
    if nan.any():
        out[nan] = nan_rgb
    return out
