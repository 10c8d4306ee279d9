"""Single-channel views: an enlarged map, a heatmap blended over the input image, panels side by side."""

from __future__ import annotations

import math
import numbers

import numpy as np

from cnnwidgets.render._checks import as_real_array, check_bool, check_color, check_int, check_real
from cnnwidgets.render.colormaps import apply_colormap
from cnnwidgets.render.resample import map_to_input, resize

__all__ = ["blend", "channel_image", "desaturate", "draw_rect", "hstack", "overlay_heatmap", "resize_image"]

#: How far outside [0, 1] a float picture may reach and still be drawn (clipped to [0, 1]): the
#: overshoot of bicubic or Lanczos resizing at sharp edges, at most about 0.15 on photographs and
#: on the shipped samples (only pixel-wide stripes or noise, enlarged, overshoot more). A normalised
#: model input reaches well beyond it (``Normalize(0.5, 0.5)`` gives [-1, 1], ImageNet's mean and
#: std about [-2.1, 2.6]), and so do 0-255 values stored as floats.
FLOAT_PICTURE_SLACK = 0.25


def _check_rgb(image: np.ndarray, what: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"{what} must be a uint8 RGB array of shape (H, W, 3), got {image.dtype} {image.shape}")
    return image


def nonfinite_counts(values: np.ndarray) -> tuple[int, int]:
    """``(NaN count, infinite count)`` of ``values``; ``(0, 0)`` after one pass when all are finite."""
    if np.isfinite(values).all():
        return 0, 0
    return int(np.count_nonzero(np.isnan(values))), int(np.count_nonzero(np.isinf(values)))


def check_not_channels_first(picture: np.ndarray, what: str = "image", layout: str = "(H, W, 3)") -> None:
    """Refuse a channels-first (C, H, W) picture (a model input's layout) where ``layout`` is
    expected, saying the reordering to use: ``.transpose(1, 2, 0)`` of a NumPy array,
    ``.permute(1, 2, 0)`` of a torch tensor (whose ``transpose`` swaps two axes only).

    Args:
        picture: the array given.
        what: its name in the message.
        layout: the layout expected, for the message.

    Raises:
        ValueError: for a 3-D array with 1, 3 or 4 leading entries and no 3 or 4 trailing ones.
    """
    if picture.ndim == 3 and picture.shape[0] in (1, 3, 4) and picture.shape[2] not in (3, 4):
        raise ValueError(f"{what} of shape {picture.shape} looks like (C, H, W); the picture is {layout}: "
                         f"pass {what}.transpose(1, 2, 0) for a NumPy array, or {what}.permute(1, 2, 0) for a "
                         "torch tensor")


def check_float_picture(image: np.ndarray, what: str = "image") -> None:
    """Refuse a float picture whose values are plainly not in [0, 1]: 0-255 values stored as
    floats (drawn white) or a normalised model input (its negative half drawn black) would
    otherwise be clipped without a word. Values up to :data:`FLOAT_PICTURE_SLACK` (0.25) outside
    [0, 1], the overshoot of a resized picture, are accepted (and clipped by the caller).

    Raises:
        ValueError: when a value is NaN (it has no colour: drawn, it would be an arbitrary one),
            or more than 0.25 outside [0, 1] (infinities included), saying what the values look
            like and what to pass: negative values are those of a normalised model input (pass
            the denormalised picture), values up to 255 may be 0-255 pixels too.
    """
    if image.size and np.issubdtype(image.dtype, np.floating):
        top, bottom = float(image.max()), float(image.min())  # NaN if there is one
        if math.isnan(top) or math.isnan(bottom):
            count = int(np.count_nonzero(np.isnan(image)))
            raise ValueError(f"a float {what} must hold values in [0, 1], got {count} NaN of {image.size} values; "
                             f"replace them first (np.nan_to_num({what}))")
        slack = FLOAT_PICTURE_SLACK
        if bottom < -slack or top > 1.0 + slack:
            raise ValueError(f"a float {what} must hold values in [0, 1], got values from {bottom:.4g} to {top:.4g} "
                             f"(up to {slack} outside [0, 1], as resizing overshoots, is clipped); "
                             f"{_float_picture_fix(bottom, top, what)}")


#: What to pass instead of a normalised model input, for the messages of :func:`check_float_picture`.
_DENORMALISED = ("pass the picture, the model input denormalised to [0, 1]: the bundle's denormalize(x) of the "
                 "(C, H, W) input (or x * std + mean with your own normalisation's statistics, clipped to [0, 1])")


def _float_picture_fix(bottom: float, top: float, what: str) -> str:
    """What a float picture with values from ``bottom`` to ``top``, beyond the band
    :func:`check_float_picture` takes, looks like and what to pass instead."""
    if math.isinf(bottom) or math.isinf(top):
        return f"replace the infinite values first (np.nan_to_num({what}, posinf=1, neginf=0))"
    if bottom < -FLOAT_PICTURE_SLACK:
        return (f"negative values: this looks like a normalised model input (Normalize(0.5, 0.5) gives [-1, 1]); "
                f"{_DENORMALISED}")
    if top > 2.0:
        return (f"for 0-255 values pass {what}.astype(np.uint8) (or {what} / 255); if it is a normalised "
                f"model input, {_DENORMALISED}")
    return (f"if it is a normalised model input, {_DENORMALISED}; a picture that overshoots more than resizing "
            f"does: clip it first (np.clip({what}, 0, 1))")


def as_picture(image: object, what: str = "image") -> np.ndarray:
    """An (H, W, 3) picture as uint8, the forms the heatmap overlays accept.

    uint8 is passed through as it is (no copy, no pass over the pixels: the live views call this
    on every frame); floats in [0, 1], as a model bundle's ``denormalize`` returns them, are scaled
    by 255, rounded and clipped (the slight overshoot of a resized picture, up to
    :data:`FLOAT_PICTURE_SLACK` outside [0, 1], is clipped; values plainly outside [0, 1], such as
    a normalised model input's, are refused by :func:`check_float_picture`).

    Args:
        image: (H, W, 3) uint8, or floats in [0, 1].
        what: the argument's name in error messages.

    Returns:
        uint8 array (H, W, 3).

    Raises:
        ValueError: for another shape (a channels-first (3, H, W) one gets the transpose to
            use) or one without pixels, another dtype (0-255 integers get the conversion to
            use), or floats outside [0, 1] or NaN.
    """
    picture = np.asarray(image)
    check_not_channels_first(picture, what)
    if picture.ndim != 3 or picture.shape[2] != 3:
        raise ValueError(f"{what} must be (H, W, 3), uint8 or float in [0, 1], got shape {picture.shape}")
    if picture.shape[0] == 0 or picture.shape[1] == 0:
        raise ValueError(f"{what} has no pixels (shape {picture.shape}): it needs at least one row and one column")
    if picture.dtype == np.uint8:
        return picture
    if not np.issubdtype(picture.dtype, np.floating):
        raise ValueError(f"{what} must be uint8 or float in [0, 1], got dtype {picture.dtype}; "
                         f"for 0-255 integers pass {what}.astype(np.uint8)")
    check_float_picture(picture, what)
    return np.clip(np.round(np.asarray(picture, dtype=np.float32) * 255), 0, 255).astype(np.uint8)


def desaturate(image: np.ndarray) -> np.ndarray:
    """An (H, W, 3) uint8 picture in shades of gray (ITU-R 601 luma), still (H, W, 3) uint8.

    Used under heatmaps, so that the heatmap's colours are the only colours in the picture: a
    red patch over a blue sky stays red, also for readers who do not tell red from green.

    Raises:
        ValueError: if ``image`` is not (H, W, 3) uint8.
    """
    picture = np.asarray(image)
    if picture.ndim != 3 or picture.shape[2] != 3 or picture.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {picture.dtype} of shape {picture.shape}")
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    gray = np.clip(np.round(picture @ weights), 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def channel_image(
    values: np.ndarray,
    size: tuple[int, int],
    *,
    cmap: str = "viridis",
    mode: str = "nearest",
    jump: float | None = None,
    start: float | None = None,
) -> np.ndarray:
    """Colour a normalised map (h, w) with values in [0, 1] and bring it to ``size`` = (H, W).

    With ``jump``/``start`` the map is placed by receptive-field geometry (see
    :func:`~cnnwidgets.render.resample.map_to_input`), otherwise stretched.

    Args:
        values: the map (h, w), values in [0, 1].
        size: (H, W) of the result.
        cmap: colormap name.
        mode: resampling, ``"nearest"`` or ``"bilinear"``.
        jump: distance in input pixels between neighbouring units, or None.
        start: centre of unit 0 in input pixel coordinates, or None.

    Returns:
        uint8 (H, W, 3).

    Raises:
        ValueError: for a map that is not 2-D, an unknown colormap or resampling mode, or a
            size or geometry :func:`~cnnwidgets.render.resample.map_to_input` refuses (a NaN
            or infinite ``jump``/``start``, for one).
        TypeError: for a size or geometry that is not numbers, or values that are not real numbers.
    """
    values = as_real_array(values, "values")
    if values.ndim != 2:
        raise ValueError(f"expected one map of shape (h, w), got shape {values.shape}")
    placed = map_to_input(values, size, jump=jump, start=start, mode=mode)
    return apply_colormap(placed, cmap)


def blend(image: np.ndarray, color: np.ndarray, alpha: float | np.ndarray) -> np.ndarray:
    """``(1 - alpha) * image + alpha * color`` in uint8; alpha a scalar or an (H, W) array in [0, 1].

    Args:
        image: uint8 (H, W, 3).
        color: uint8 (H, W, 3), the same shape.
        alpha: the weight of ``color``, a scalar or an (H, W) array in [0, 1].

    Raises:
        ValueError: for mismatched shapes, an alpha array of another shape than (H, W), or
            alpha outside [0, 1] (NaN included).
        TypeError: for an alpha that is not real numbers (a string, None, a complex number, a
            bool: an array of bools, a mask, is taken).
    """
    image = _check_rgb(image)
    color = _check_rgb(color, "color")
    if image.shape != color.shape:
        raise ValueError(f"image {image.shape} and color {color.shape} differ in shape")
    # a number, as the other alphas are (not a bool, a string or None), or an array of numbers (a bool mask too)
    if not isinstance(alpha, (np.ndarray, list, tuple)) and (
            isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, numbers.Real)):
        raise TypeError(f"alpha must be a real number or an array of them, got {type(alpha).__name__} {alpha!r}")
    alpha = as_real_array(alpha, "alpha")
    if alpha.ndim != 0 and alpha.shape != image.shape[:2]:
        raise ValueError(f"alpha must be a scalar or an array of the image's shape (H, W) = {image.shape[:2]}, "
                         f"got shape {alpha.shape}")
    # NaN fails both comparisons (its min and max are NaN), so it is refused too
    if alpha.size and not (alpha.min() >= 0 and alpha.max() <= 1):
        raise ValueError(f"alpha must lie in [0, 1], got values from {alpha.min():.4g} to {alpha.max():.4g}")
    return _blend(image, color, alpha)


def _blend(image: np.ndarray, color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """:func:`blend` for inputs already checked (alpha float32 within [0, 1])."""
    # integer arithmetic in 1/256 steps: (image * (256 - a) + color * a + 128) >> 8
    weight = (alpha * 256.0 + 0.5).astype(np.uint16)
    if weight.ndim == 2:
        weight = weight[..., None]
    out = image.astype(np.uint16) * (256 - weight)
    out += color.astype(np.uint16) * weight
    out += 128
    out >>= 8
    return out.astype(np.uint8, order="C")  # C order also for a transposed picture


def overlay_heatmap(
    image: np.ndarray,
    heat: np.ndarray,
    *,
    cmap: str = "magma",
    alpha: float = 0.6,
    weight_by_value: bool = True,
    jump: float | None = None,
    start: float | None = None,
    mode: str = "bilinear",
) -> np.ndarray:
    """Blend a heatmap over an image at the image's resolution.

    The heatmap (values in [0, 1], any resolution) is brought to the image size - by
    receptive-field geometry when ``jump``/``start`` are given - coloured, and blended with
    opacity ``alpha`` (times the value itself when ``weight_by_value``, so that low values
    leave the image visible).

    Args:
        image: (H, W, 3) uint8, or floats in [0, 1] (e.g. a denormalised input): the forms
            :func:`~cnnwidgets.render.attribution.attribution_overlay` takes (see :func:`as_picture`).
        heat: float map (h, w) in [0, 1].
        cmap: colormap name.
        alpha: maximum opacity of the heatmap, in [0, 1].
        weight_by_value: scale the opacity by the heat value.
        jump: receptive-field jump of the layer, or None.
        start: receptive-field start of the layer, or None.
        mode: resampling mode.

    Returns:
        uint8 (H, W, 3).

    Raises:
        ValueError: for malformed inputs, heat values outside [0, 1] (NaN included) or an alpha
            outside [0, 1].
        TypeError: for heat values that are not real numbers, an alpha that is not a real
            number, or a ``weight_by_value`` that is not True or False.
    """
    alpha = check_real(alpha, "alpha")
    weight_by_value = check_bool(weight_by_value, "weight_by_value")
    image = as_picture(image)
    heat = as_real_array(heat, "heat")
    if heat.ndim != 2:
        raise ValueError(f"expected a heatmap of shape (h, w), got shape {heat.shape}")
    nan, inf = nonfinite_counts(heat)
    if nan or inf:
        raise ValueError(f"heat values must lie in [0, 1], but {nan} are NaN and {inf} infinite (drawn, they would "
                         "read as no heat); replace them first (np.nan_to_num)")
    if heat.size and (heat.min() < -1e-3 or heat.max() > 1 + 1e-3):
        raise ValueError(f"heat values must lie in [0, 1], got {heat.min():.4g}..{heat.max():.4g}; "
                         "normalise the map first, or use attribution_overlay, which scales raw maps itself")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    placed = np.clip(map_to_input(heat, image.shape[:2], jump=jump, start=start, mode=mode), 0, 1)
    colored = apply_colormap(placed, cmap)
    opacity = placed * np.float32(alpha) if weight_by_value else np.asarray(alpha, dtype=np.float32)
    return _blend(image, colored, opacity)  # placed is clipped to [0, 1]: no need to check again


def draw_rect(
    image: np.ndarray,
    rect: tuple[int, int, int, int],
    *,
    color: tuple[int, int, int] = (255, 255, 255),
    width: int = 1,
    copy: bool = True,
) -> np.ndarray:
    """Draw the outline of ``rect = (x, y, w, h)`` (clipped to the image) on a copy of ``image``
    (on ``image`` itself with ``copy=False``).

    Args:
        image: uint8 (H, W, 3).
        rect: four finite numbers ``(x, y, w, h)`` in pixels; fractions are truncated with
            ``int()`` (an occluder box may arrive as floats). An empty rectangle draws nothing.
        color: RGB, three ints in 0..255.
        width: line width in pixels, an int >= 1 (the lines stay inside the rectangle).
        copy: draw on a copy (True) or on ``image`` itself (False: ``image`` must then be a
            writable array, not a read-only one such as a ``np.broadcast_to`` view).

    Raises:
        ValueError: for an image that is not uint8 RGB, a read-only image with ``copy=False``,
            a rect of another length or with a NaN or infinite number, a width < 1, or a
            colour outside 0..255.
        TypeError: for a rect or colour that is not numbers, a width that is not an int, or a
            ``copy`` that is not True or False.
    """
    c = check_color(color)
    t = check_int(width, "width", minimum=1)
    copy = check_bool(copy, "copy")
    if isinstance(rect, (str, bytes)) or not hasattr(rect, "__len__"):
        raise TypeError(f"rect must be four numbers (x, y, w, h), got {type(rect).__name__} {rect!r}")
    if len(rect) != 4:
        raise ValueError(f"rect must be four numbers (x, y, w, h), got {len(rect)} values: {rect!r}")
    x, y, w, h = (int(check_real(v, f"rect {name}")) for v, name in zip(rect, "xywh"))
    out = _check_rgb(image).copy() if copy else _check_rgb(image)
    if not out.flags.writeable:
        raise ValueError("draw_rect with copy=False draws on the image itself, which is read-only "
                         "(a broadcast view or an array marked read-only): pass a writable array "
                         "(np.array(image)), or copy=True (the default) to draw on a copy")
    H, W = out.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x0 >= x1 or y0 >= y1:
        return out
    out[y0 : min(y0 + t, y1), x0:x1] = c
    out[max(y1 - t, y0) : y1, x0:x1] = c
    out[y0:y1, x0 : min(x0 + t, x1)] = c
    out[y0:y1, max(x1 - t, x0) : x1] = c
    return out


def hstack(
    images: list[np.ndarray], *, gap: int = 4, background: tuple[int, int, int] = (255, 255, 255)
) -> np.ndarray:
    """Place RGB images side by side, top-aligned, ``gap`` pixels apart.

    Args:
        images: uint8 (H, W, 3) images, at least one.
        gap: pixels between neighbours, an int >= 0.
        background: RGB (three ints in 0..255) of the gaps and of the space under shorter images.

    Raises:
        ValueError: for an empty list, images that are not uint8 RGB, a negative gap, or a
            background outside 0..255.
        TypeError: for ``images`` that is not a list (or another iterable) of images, a gap that
            is not an int or a background that is not three ints.
    """
    gap = check_int(gap, "gap", minimum=0)
    color = check_color(background, "background")
    if isinstance(images, (np.ndarray, str, bytes)) or not hasattr(images, "__iter__"):
        # an array would be taken row by row, a string letter by letter
        raise TypeError(f"images must be a list of uint8 (H, W, 3) images, got {type(images).__name__}"
                        + (" (one image: pass [image])" if isinstance(images, np.ndarray) else ""))
    images = [_check_rgb(im) for im in images]
    if not images:
        raise ValueError("hstack needs at least one image")
    height = max(im.shape[0] for im in images)
    width = sum(im.shape[1] for im in images) + gap * (len(images) - 1)
    out = np.empty((height, width, 3), dtype=np.uint8)
    x = 0
    for i, im in enumerate(images):
        h, w = im.shape[:2]
        out[:h, x : x + w] = im
        if h < height:
            out[h:, x : x + w] = color
        if i < len(images) - 1 and gap:
            out[:, x + w : x + w + gap] = color
        x += w + gap
    return out


def resize_image(image: np.ndarray, size: tuple[int, int], mode: str = "nearest") -> np.ndarray:
    """Resize a uint8 RGB picture to ``size`` = (H, W), keeping it uint8 RGB.

    The picture counterpart of :func:`~cnnwidgets.render.resample.resize` (same pixel-centre
    alignment), which takes maps of any dtype and defaults to bilinear; here the input must
    already be a uint8 RGB picture and the default is ``"nearest"``, so that upscaled pixels
    stay sharp squares. Bilinear results are rounded back to uint8.

    Args:
        image: uint8 array (H, W, 3), H and W >= 1. Float pictures are refused: convert them
            first (``(image * 255 + 0.5).astype(np.uint8)`` for values in [0, 1]).
        size: output (height, width), a pair of ints >= 1.
        mode: ``"nearest"`` (default) or ``"bilinear"``.

    Returns:
        uint8 array (height, width, 3).

    Raises:
        TypeError: for a size that is not a pair of ints.
        ValueError: for an image that is not uint8 (H, W, 3) (a float or grayscale one, say),
            one without pixels, a size < 1, or an unknown mode.
    """
    out = resize(_check_rgb(image), size, mode, color=True)
    if out.dtype == np.uint8:  # picked pixels keep the layout of a strided picture: made contiguous
        return np.ascontiguousarray(out)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8, order="C")
