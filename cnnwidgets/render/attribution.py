"""Attribution maps -> uint8 RGB images (numpy only, no torch).

Attribution values have no natural range: a gradient can be 1e-5 or 1e3 and one
extreme pixel can dominate. Every function here therefore scales by a robust
magnitude, the ``percentile``-th percentile of ``|values|`` (99 by default), and clips
what lies beyond it.

* Signed maps (gradients, guided backprop, deconvnet projections, CAM) use a diverging
  colormap centred on zero: ``v = 0.5 + 0.5 * clip(a / s, -1, 1)`` (``RdBu_r``: positive
  red, zero white, negative blue).
* Unsigned maps (saliency magnitudes, Grad-CAM) use a sequential colormap:
  ``v = clip(a / s, 0, 1)`` (``inferno``).
* :func:`gradient_to_rgb` shows a 3-channel attribution as a colour image (zero grey), the
  way guided-backprop and deconvnet reconstructions are shown in their papers;
  :func:`signed_to_rgb` does so for an RGB input's attribution and falls back to the
  diverging colours for inputs with other channel counts (grayscale).
* :func:`attribution_overlay` blends a coloured heatmap over the input image.

Accepted inputs are anything ``numpy.asarray`` turns into an array of real numbers (numpy
arrays, nested lists, CPU tensors that do not require grad: ``tensor.detach()``); complex
numbers, strings, objects and what numpy cannot convert are refused with a TypeError.
"""

from __future__ import annotations

import numpy as np

from cnnwidgets.render._checks import as_real_array, check_bool, check_real
from cnnwidgets.render.overlay import as_picture, desaturate, nonfinite_counts
from cnnwidgets.render.resample import check_heat_orientation

__all__ = [
    "attribution_overlay",
    "attribution_to_rgb",
    "colormap_lut",
    "gradient_to_rgb",
    "reduce_channels",
    "robust_scale",
    "signed_to_rgb",
]

_LUTS: dict[str, np.ndarray] = {}


def matplotlib_colormap(name: object):
    """The matplotlib colormap named ``name`` (matplotlib is imported on first use: only the colour
    tables are needed).

    Raises:
        TypeError: for a name that is not a string.
        ValueError: for a name matplotlib does not know.
    """
    if not isinstance(name, str):
        raise TypeError(f"a colormap name (cmap) must be a str, a matplotlib name such as 'inferno' or 'RdBu_r'; "
                        f"got {type(name).__name__} {name!r}")
    import matplotlib

    try:
        return matplotlib.colormaps[name]
    except KeyError:
        raise ValueError(
            f"unknown matplotlib colormap {name!r}; use a matplotlib name such as 'inferno', 'magma', 'jet' or 'RdBu_r'"
        ) from None


def colormap_lut(name: str) -> np.ndarray:
    """The (256, 3) uint8 lookup table of a matplotlib colormap (read once, then cached).

    Raises:
        ValueError: for a name matplotlib does not know.
        TypeError: for a name that is not a string.
    """
    lut = _LUTS.get(name) if isinstance(name, str) else None  # another type: matplotlib_colormap says what is wrong
    if lut is None:
        cmap = matplotlib_colormap(name)
        lut = np.round(cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)
        _LUTS[name] = lut
    return lut


def _as_map(values: object, what: str = "attribution") -> np.ndarray:
    array = as_real_array(values, f"the {what}")
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]  # a batch of one image, as the methods return it
    if array.ndim == 4:
        raise ValueError(f"expected one {what}, got a batch of {array.shape[0]} (shape {array.shape}); "
                         "pass one image's map, e.g. values[i]")
    if array.ndim not in (2, 3) or array.size == 0:
        raise ValueError(f"expected an {what} of shape (H, W) or (C, H, W), got shape {array.shape}")
    if array.ndim == 3 and array.shape[2] in (1, 3, 4) and min(array.shape[:2]) > 4 * array.shape[2]:
        # a picture's rows and columns on either side of a colour axis: an (H, W, C) array
        raise ValueError(f"the {what} of shape {array.shape} looks like (H, W, C); channels come first: "
                         "pass values.transpose(2, 0, 1)")
    nan, inf = nonfinite_counts(array)
    if nan or inf:
        raise ValueError(
            f"the {what} holds {nan + inf} of {array.size} values that are not finite ({nan} NaN, {inf} infinite, "
            "or beyond float32's range): they have no place on a colour scale (drawn as zero they would read "
            "as no attribution). Check the model's input and weights (has training diverged?), or replace "
            "them first (np.nan_to_num)"
        )
    return array



def reduce_channels(values: object, how: str = "sum") -> np.ndarray:
    """(C, H, W) -> (H, W); an (H, W) map is returned as float32 unchanged.

    Args:
        values: the attribution.
        how: ``"sum"`` (signed total over channels), ``"max_abs"`` (largest magnitude,
            the saliency map of Simonyan et al.) or ``"l2"`` (Euclidean norm over channels).

    A sum or norm of finite values is computed in float64 where float32 would overflow; one
    beyond float32's range (about 3.4e38) is returned as an infinity.

    Raises:
        ValueError: for another shape or ``how``, or values that are not finite (NaN, inf).
        TypeError: for values that are not real numbers.
    """
    array = _as_map(values)
    if how not in ("sum", "max_abs", "l2"):
        raise ValueError(f"how must be 'sum', 'max_abs' or 'l2', got {how!r}")
    if array.ndim == 2:
        return array
    if how == "max_abs":
        return np.abs(array).max(axis=0)
    with np.errstate(over="ignore"):
        plane = array.sum(axis=0) if how == "sum" else np.sqrt((array * array).sum(axis=0))
        if not np.isfinite(plane).all():  # the values are finite (see _as_map): float32 overflowed
            wide = array.astype(np.float64)
            plane = wide.sum(axis=0) if how == "sum" else np.sqrt((wide * wide).sum(axis=0))
            plane = plane.astype(np.float32)
    return plane


def robust_scale(values: object, percentile: float = 99.0) -> float:
    """The ``percentile``-th percentile of ``|values|`` (finite values only).

    Falls back to the largest magnitude when the percentile is 0, and to 1.0 for an all-zero
    map, so the result can always divide.

    Raises:
        ValueError: percentile outside (0, 100].
        TypeError: for a percentile that is not a real number, or values that are not real numbers.
    """
    percentile = check_real(percentile, "percentile")
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must lie in (0, 100], got {percentile}")
    magnitudes = np.abs(as_real_array(values, "values"))
    magnitudes = magnitudes[np.isfinite(magnitudes)]
    if magnitudes.size == 0:
        return 1.0
    scale = float(np.percentile(magnitudes, percentile))
    if scale <= 0:
        scale = float(magnitudes.max())
    return scale if scale > 0 else 1.0


def _normalised(values: np.ndarray, signed: bool, percentile: float) -> np.ndarray:
    """Values in [0, 1]: diverging around 0.5 if ``signed``, else from 0 (magnitudes)."""
    scale = robust_scale(values, percentile)
    with np.errstate(over="ignore"):  # a huge value over a tiny scale is an infinity, clipped to the end
        if signed:
            return 0.5 + 0.5 * np.clip(values / scale, -1.0, 1.0)
        return np.clip(np.abs(values) / scale, 0.0, 1.0)


def attribution_to_rgb(
    values: object,
    *,
    signed: bool | None = None,
    percentile: float = 99.0,
    cmap: str | None = None,
) -> np.ndarray:
    """Colour an attribution map.

    Args:
        values: (H, W) or (C, H, W), or a batch of one (1, C, H, W) as the methods return it.
            Channels are summed for a signed view and reduced to their largest magnitude for an
            unsigned one (see :func:`reduce_channels`). A batch of CAM maps (N, h, w) cannot be
            told from channels: pass one map, ``maps[i]``.
        signed: ``True``: diverging colours around zero; ``False``: magnitudes ``|a|`` in
            sequential colours; ``None`` (default): signed when any value is negative.
        percentile: robust scale (see :func:`robust_scale`); values beyond it saturate.
        cmap: matplotlib colormap name; default ``"RdBu_r"`` (signed) or ``"inferno"``.

    Returns:
        uint8 array (H, W, 3).

    Raises:
        ValueError: bad shape (a batch of more than one, or an (H, W, C) array), percentile or
            colormap, or values that are not finite (NaN, inf).
        TypeError: for values that are not real numbers, a ``signed`` that is not True, False or
            None, or a colormap name that is not a string.
    """
    signed = None if signed is None else check_bool(signed, "signed")
    array = _as_map(values)
    if signed is None:
        signed = bool(np.nanmin(array) < 0)
    plane = reduce_channels(array, "sum" if signed else "max_abs")
    levels = _normalised(plane, signed, percentile)
    lut = colormap_lut(cmap or ("RdBu_r" if signed else "inferno"))
    return lut[np.round(levels * 255).astype(np.intp)]


def gradient_to_rgb(values: object, *, percentile: float = 99.0) -> np.ndarray:
    """Show a signed (3, H, W) attribution as a colour image: ``0.5 + 0.5 * clip(a / s, -1, 1)``.

    One scale ``s`` (robust, over all channels) keeps the colour balance; zero is mid-gray.

    Returns:
        uint8 array (H, W, 3).

    Raises:
        ValueError: for a shape other than (3, H, W), a bad percentile, or values that are not
            finite (NaN, inf).
    """
    array = _as_map(values)
    if array.ndim != 3 or array.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) attribution of an RGB input, got shape {array.shape}")
    levels = _normalised(array, True, percentile)
    return np.round(levels.transpose(1, 2, 0) * 255).astype(np.uint8, order="C")  # (H, W, 3) contiguous


def signed_to_rgb(values: object, *, percentile: float = 99.0) -> np.ndarray:
    """Show a signed (C, H, W) attribution of an input with C channels, sign included.

    Three channels (an RGB input) are shown as a colour image around mid-gray
    (:func:`gradient_to_rgb`); any other count (a grayscale input, a multispectral one) as
    the channels' signed sum in diverging colours (:func:`attribution_to_rgb` with
    ``signed=True``: positive red, zero white, negative blue).

    Returns:
        uint8 array (H, W, 3).

    Raises:
        ValueError: for a shape other than (C, H, W) (or a batch of one), a bad percentile, or
            values that are not finite (NaN, inf).
    """
    array = _as_map(values)
    if array.ndim != 3:
        raise ValueError(f"expected a (C, H, W) attribution, one plane per input channel, got shape {array.shape}")
    if array.shape[0] == 3:
        return gradient_to_rgb(array, percentile=percentile)
    return attribution_to_rgb(array, signed=True, percentile=percentile)


def _resize_axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    source = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    low = np.floor(source).astype(np.intp)
    high = np.minimum(low + 1, n_in - 1)
    return low, high, (source - low).astype(np.float32)


def _resize_bilinear(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize with aligned pixel centres (the convention of torch ``align_corners=False``)."""
    if plane.shape == size:
        return plane
    r0, r1, rt = _resize_axis(plane.shape[0], size[0])
    c0, c1, ct = _resize_axis(plane.shape[1], size[1])
    top = plane[r0][:, c0] * (1 - ct) + plane[r0][:, c1] * ct
    bottom = plane[r1][:, c0] * (1 - ct) + plane[r1][:, c1] * ct
    return top * (1 - rt[:, None]) + bottom * rt[:, None]


def attribution_overlay(
    image: object,
    heat: object,
    *,
    alpha: float = 0.5,
    cmap: str = "inferno",
    percentile: float = 99.0,
    weight_by_value: bool = False,
    gray_image: bool = False,
) -> np.ndarray:
    """Blend a heatmap over an image: ``(1 - a) * image + a * cmap(v)``.

    Args:
        image: (H, W, 3) uint8, or floats in [0, 1] (e.g. a denormalised input).
        heat: (h, w) map (magnitudes are used: ``|heat|``), resized bilinearly to (H, W)
            when it has another size (the magnitudes are resized, so +1 next to -1 has no zero
            between them). A (C, H, W) attribution (guided backprop's, one plane per
            input channel), or a batch of one (1, C, H, W), is reduced to its largest magnitude
            over channels first, ``reduce_channels(heat, "max_abs")``, as
            :func:`attribution_to_rgb` does for an unsigned view; for another reduction pass
            ``reduce_channels(heat, how)``. A batch of CAM maps (N, h, w) cannot be told from
            channels: pass one map, ``maps[i]``.
        alpha: opacity of the heatmap in [0, 1].
        cmap: matplotlib colormap name; inferno (perceptually uniform, readable in gray and by
            colour-blind readers) unless another is asked for.
        percentile: robust scale of ``|heat|`` (see :func:`robust_scale`), taken over the map as
            given (after the channel reduction, before any resizing), so that the colours of a map
            do not depend on the size of the image it is shown over: resizing a small map to a
            large image would otherwise weigh each value by the area it covers and add the values
            interpolated between them.
        weight_by_value: make the opacity ``alpha * v``, so weak regions stay transparent.
        gray_image: show the image in shades of gray under the heatmap, so that its colours
            are the heatmap's alone.

    Returns:
        uint8 array (H, W, 3).

    Raises:
        ValueError: for bad shapes (a batch of more than one, an (H, W, C) heat), alpha outside
            [0, 1], a bad colormap or percentile, or heat values that are not finite (NaN, inf).
        TypeError: for heat values that are not real numbers, an alpha or percentile that is not
            a real number, or a ``weight_by_value`` or ``gray_image`` that is not True or False.
    """
    alpha = check_real(alpha, "alpha")
    weight_by_value = check_bool(weight_by_value, "weight_by_value")
    gray_image = check_bool(gray_image, "gray_image")
    picture = as_picture(image)
    heat_map = _as_map(heat, "attribution (heat)")
    plane = reduce_channels(heat_map, "max_abs")
    check_heat_orientation(plane, picture.shape)
    if gray_image:
        picture = desaturate(picture)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    scale = robust_scale(plane, percentile)  # over the map as computed: not the display size's
    magnitudes = _resize_bilinear(np.abs(plane), picture.shape[:2])  # +1 next to -1 is no zero between them
    with np.errstate(over="ignore"):  # a huge value over a tiny scale is an infinity, clipped to the end
        levels = np.clip(magnitudes / scale, 0.0, 1.0)
    colour = colormap_lut(cmap)[np.round(levels * 255).astype(np.intp)].astype(np.float32)
    opacity = (alpha * levels)[..., None] if weight_by_value else alpha
    blended = picture.astype(np.float32) * (1 - opacity) + colour * opacity
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)
