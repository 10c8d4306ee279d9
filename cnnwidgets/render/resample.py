"""Resizing maps for display: integer upscaling, resizing, and mapping a feature map to input pixels.

Coordinates follow the pixel-centre convention: pixel ``i`` of a row of length ``n`` covers
``[i, i + 1)`` and has its centre at ``i + 0.5``. Resizing a length ``n`` to ``m`` samples output
pixel ``p`` at source position ``(p + 0.5) * n / m - 0.5`` (``align_corners=False`` in PyTorch's
words), clamped to the valid range.

Nearest-neighbour resampling takes the source pixel that covers that position's centre: for a
plain resize, output pixel ``p`` takes source pixel ``floor((p + 0.5) * n / m)``, computed in
integers as ``((2p + 1) * n) // (2m)``. At an exact tie, an output centre on the boundary
between two source pixels, this is the higher index (the pixel whose half-open span starts
there), whatever the sizes: no float rounding decides it. :func:`map_to_input` with receptive-field
geometry rounds the unit position ``(p - start) / jump`` the same way, half up.
"""

from __future__ import annotations

import functools

import numpy as np

from cnnwidgets.render._checks import as_real_array, check_int, check_real, check_size

__all__ = ["RESAMPLE_MODES", "check_heat_orientation", "downscale", "map_to_input", "nearest_indices", "resize", "upscale"]

RESAMPLE_MODES: tuple[str, ...] = ("nearest", "bilinear")


def _check_mode(mode: str) -> None:
    if mode not in RESAMPLE_MODES:
        raise ValueError(f"unknown resampling mode {mode!r}; accepted: {', '.join(RESAMPLE_MODES)}")


def _check_maps(image: np.ndarray, color: bool | None, what: str, *, need_pixels: bool = False) -> bool:
    """Whether the last axis of ``image`` holds colour components (see :func:`upscale`'s ``color``).

    Refuses an array with too few axes for ``color``, with ``need_pixels`` one whose height or
    width is 0 (there is nothing to sample), and - with ``color=None`` - any array (H, W, 3) or
    (H, W, 4) of any dtype: an RGB(A) picture and a stack of H maps of width 3 or 4 look
    the same, and taking one for the other gives an array of the wrong shape.
    """
    if color is None:
        if image.ndim == 3 and image.shape[2] in (3, 4):
            raise ValueError(f"{what}: the {image.dtype} array of shape {image.shape} may be a picture (H, W, "
                             f"{image.shape[2]}) or a stack of {image.shape[0]} maps (C, H, W); say which: "
                             "color=True for a picture, color=False for a stack")
        color = False
    elif not isinstance(color, (bool, np.bool_)):
        raise TypeError(f"color must be True, False or None, got {type(color).__name__} {color!r}")
    if color and image.ndim < 3:
        raise ValueError(f"{what} with color=True needs an image (H, W, K), got shape {image.shape}")
    if image.ndim < 2:
        raise ValueError(f"{what} needs a map (H, W) or a stack (..., H, W), got shape {image.shape}")
    if need_pixels and 0 in (image.shape[-3:-1] if color else image.shape[-2:]):
        raise ValueError(f"{what} needs at least one row and one column, got shape {image.shape}")
    return bool(color)


def upscale(image: np.ndarray, factor: int, *, color: bool | None = None) -> np.ndarray:
    """Enlarge by an integer factor, each pixel becoming a ``factor x factor`` block.

    Args:
        image: a map or stack of shape (..., H, W), or with ``color=True`` an image (H, W, K).
        factor: int >= 1 (a float, even 2.0, is refused).
        color: whether the last axis holds colour components. ``None`` (the default) means
            False, except for an array (H, W, 3) or (H, W, 4) of any dtype, which may be a
            picture or a stack of maps of width 3 or 4: it is refused until ``color`` says which.

    Returns:
        The enlarged array, same dtype.

    Raises:
        TypeError: for a factor that is not an int.
        ValueError: for a factor < 1, too few axes, or an ambiguous (H, W, 3|4) array with ``color=None``.
    """
    factor = check_int(factor, "upscale factor", minimum=1)
    image = np.asarray(image)
    color = _check_maps(image, color, "upscale")
    if factor == 1:
        return image
    if color:
        return np.repeat(np.repeat(image, factor, axis=-3), factor, axis=-2)
    return np.repeat(np.repeat(image, factor, axis=-2), factor, axis=-1)


def downscale(stack: np.ndarray, factor: int) -> np.ndarray:
    """Shrink the last two axes by an integer factor, averaging ``factor x factor`` blocks.

    Edges that do not fill a whole block are averaged over the pixels they have. A block
    holding NaN averages to NaN, one holding an infinity to that infinity (both infinities:
    NaN), without a numpy warning; finite values average to a finite mean, also near
    float32's limits.

    Args:
        stack: float array of shape (..., H, W).
        factor: int >= 1 (a float, even 2.0, is refused).

    Returns:
        float32 array of shape (..., ceil(H / factor), ceil(W / factor)).

    Raises:
        TypeError: for a factor that is not an int, or a stack that is not real numbers.
        ValueError: for a factor < 1 or an array with fewer than two axes.
    """
    factor = check_int(factor, "downscale factor", minimum=1)
    stack = as_real_array(stack, "the stack to downscale")
    _check_maps(stack, False, "downscale")
    if factor == 1:
        return stack
    # sums of strided slices: f elementwise additions per axis, no slow reductions over small axes
    with np.errstate(over="ignore", invalid="ignore"):
        out = _block_mean(_block_mean(stack, factor, -1), factor, -2)
        if not np.isfinite(out).all():
            # a float32 sum of finite values near 3e38 overflows: summed again in float64 (only
            # then, as NaN and infinite units come here too; they stay NaN and infinite)
            wide = stack.astype(np.float64)
            out = _block_mean(_block_mean(wide, factor, -1), factor, -2).astype(np.float32)
    return out


def _block_mean(stack: np.ndarray, factor: int, axis: int) -> np.ndarray:
    """Mean over consecutive blocks of ``factor`` along ``axis`` (-1 or -2); a short last block averages what it has."""
    n = stack.shape[axis]
    out_n = -(-n // factor)
    shape = list(stack.shape)
    shape[axis] = out_n
    out = np.zeros(shape, dtype=stack.dtype)
    tail = (slice(None),) * (-1 - axis)  # the axes after `axis`
    for k in range(min(factor, n)):
        part = stack[(..., slice(k, None, factor), *tail)]
        out[(..., slice(0, part.shape[axis]), *tail)] += part
    counts = np.minimum(factor, n - factor * np.arange(out_n)).astype(stack.dtype)
    out /= counts.reshape((out_n,) + (1,) * len(tail))
    return out


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """The source index of each of ``n_out`` output pixels when a length ``n_in`` is resized to
    ``n_out`` by nearest neighbour: ``floor((p + 0.5) * n_in / n_out)``, the source pixel that
    covers output pixel ``p``'s centre.

    Computed in integers, ``((2p + 1) * n_in) // (2 * n_out)``, so an exact tie (an output centre on
    the boundary between two source pixels) always goes to the higher index, for every pair of
    sizes (in floating point, ``n_in / n_out`` is rounded, and a tie could fall either way). When
    ``n_out`` is a multiple of ``n_in`` this is ``p // (n_out // n_in)``, the blocks of
    :func:`upscale`.

    Args:
        n_in: source length, an int >= 1.
        n_out: output length, an int >= 1.

    Returns:
        int64 array of shape (n_out,), values in ``0..n_in - 1``, non-decreasing.

    Raises:
        TypeError: for a length that is not an int. ValueError: for a length < 1.
    """
    n_in = check_int(n_in, "n_in", minimum=1)
    n_out = check_int(n_out, "n_out", minimum=1)
    return (2 * np.arange(n_out, dtype=np.int64) + 1) * n_in // (2 * n_out)


def _round_half_up(positions: np.ndarray) -> np.ndarray:
    """The nearest integers to ``positions`` (finite floats), ties up: ``floor(x)`` plus one where
    the fraction ``x - floor(x)`` (exact in floating point) is at least 0.5. ``floor(x + 0.5)``
    would round ``0.49999999999999994`` up too, as the sum rounds to 1.0."""
    low = np.floor(positions)
    return (low + (positions - low >= 0.5)).astype(np.int64)


def _axis_weights(n_in: int, n_out: int, mode: str, positions: np.ndarray | None = None):
    """Source indices and weights along one axis for the output pixels."""
    if mode == "nearest":
        if positions is None:
            idx = nearest_indices(n_in, n_out)
        else:
            idx = np.minimum(_round_half_up(np.clip(positions, 0.0, n_in - 1)), n_in - 1)
        return idx, idx, np.zeros(n_out, dtype=np.float32)
    if positions is None:
        positions = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    positions = np.clip(positions, 0.0, n_in - 1)
    lo = np.floor(positions).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = (positions - lo).astype(np.float32)
    return lo, hi, frac


@functools.lru_cache(maxsize=128)
def _axis_table(n_in: int, n_out: int, mode: str, jump: float | None = None, start: float | None = None):
    """:func:`_axis_weights` for a stretch (no ``jump``) or a receptive-field placement, memoised:
    views redraw the same geometry on every frame. The arrays are read-only."""
    with np.errstate(over="ignore"):  # a denormal jump sends far pixels to +-inf: clamped to the ends
        positions = None if jump is None else (np.arange(n_out) - start) / jump
    table = _axis_weights(n_in, n_out, mode, positions)
    for array in table:
        array.flags.writeable = False
    return table


def _sample(image: np.ndarray, rows, cols, color: bool = False) -> np.ndarray:
    """Bilinear samples of ``image`` (float32). A NaN or infinite unit reaches only the pixels
    that take a share of it (weight > 0), as NaN or that infinity (both infinities: NaN); a
    pixel on a finite unit's centre keeps its value, without a numpy warning."""
    r0, r1, fr = rows
    c0, c1, fc = cols
    with np.errstate(over="ignore"):  # float64 values beyond float32's range are its infinities
        img = image.astype(np.float32, copy=False)
    if np.isfinite(img).all():
        def mix(a, b, f):
            return a * (1 - f) + b * f
    else:
        def mix(a, b, f):  # b's weight f may be 0: 0 * inf would be NaN
            with np.errstate(invalid="ignore"):
                return a * (1 - f) + np.where(f > 0, b * f, np.float32(0))
    if color:
        rows0, rows1 = img[..., r0, :, :], img[..., r1, :, :]
        top = mix(rows0[..., c0, :], rows0[..., c1, :], fc[:, None])
        bottom = mix(rows1[..., c0, :], rows1[..., c1, :], fc[:, None])
        return mix(top, bottom, fr[:, None, None])
    top = mix(img[..., r0, :][..., c0], img[..., r0, :][..., c1], fc)
    bottom = mix(img[..., r1, :][..., c0], img[..., r1, :][..., c1], fc)
    return mix(top, bottom, fr[:, None])


def resize(
    image: np.ndarray, size: tuple[int, int], mode: str = "bilinear", *, color: bool | None = None
) -> np.ndarray:
    """Resize to ``size = (height, width)`` with pixel-centre alignment.

    Args:
        image: a map or stack of shape (..., H, W), or with ``color=True`` an image (H, W, K);
            H and W >= 1.
        size: output (height, width), a pair of ints >= 1.
        mode: ``"nearest"`` (the source pixel covering each output pixel's centre, ties to the
            higher index, see :func:`nearest_indices`) or ``"bilinear"``.
        color: whether the last axis holds colour components; ``None`` as in :func:`upscale`
            (False, but an (H, W, 3) or (H, W, 4) array of any dtype is refused as ambiguous).

    Returns:
        ``"bilinear"``: a float32 array; ``"nearest"``: an array of the input's dtype (a uint8
        picture stays uint8, a float64 map float64).

    Raises:
        TypeError: for a size that is not a pair of ints, or an image that is not real numbers
            (bools, ints or floats).
        ValueError: for an unknown mode, a size < 1, an image with too few axes or no pixels,
            or an ambiguous (H, W, 3|4) array with ``color=None``.
    """
    _check_mode(mode)
    out_h, out_w = check_size(size)
    image = as_real_array(image, "the image to resize", dtype=None)
    color = _check_maps(image, color, "resize", need_pixels=True)
    h, w = image.shape[-3:-1] if color else image.shape[-2:]
    rows = _axis_table(h, out_h, mode)
    cols = _axis_table(w, out_w, mode)
    if mode == "nearest":
        if color:
            return image[..., rows[0], :, :][..., cols[0], :]
        return image[..., rows[0], :][..., cols[0]]
    return _sample(image, rows, cols, color)


def map_to_input(
    fmap: np.ndarray,
    input_size: tuple[int, int] | tuple[int, int, int],
    *,
    jump: float | None = None,
    start: float | None = None,
    mode: str = "bilinear",
) -> np.ndarray:
    """Bring a feature map (h, w) to input resolution (H, W).

    With receptive-field geometry (``jump`` and ``start`` from the layer's ``LayerInfo``),
    unit ``i`` sits at the centre ``start + i * jump`` of its receptive field in input pixel
    coordinates, so input pixel ``p`` samples the map at ``(p - start) / jump``; values beyond
    the first and last unit are held constant. Without geometry the map is stretched over
    the input (:func:`resize`).

    Args:
        fmap: float array (h, w) or (C, h, w).
        input_size: (H, W) of the input image, ints >= 1; or (C, H, W), as a probe's
            ``input_size`` gives it (C is not used).
        jump: distance in input pixels between neighbouring units (a finite number > 0), or None.
        start: centre of unit 0 in input pixel coordinates (a finite number), or None.
        mode: ``"nearest"`` (with geometry: the unit whose centre is nearest, ties to the higher
            index; without: as :func:`resize`) or ``"bilinear"``.

    Returns:
        float32 array (H, W) or (C, H, W).

    Raises:
        ValueError: for an unknown mode, a NaN, infinite or non-positive jump, a NaN or
            infinite start, only one of jump/start, an input size < 1, or a map with fewer
            than two axes or no units.
        TypeError: for a jump or start that is not a number, an input size that is not a
            pair of ints, or a map that is not real numbers.
    """
    _check_mode(mode)
    if (jump is None) != (start is None):
        raise ValueError("give both jump and start (receptive-field geometry) or neither")
    if isinstance(input_size, (tuple, list)) and len(input_size) == 3:
        input_size = tuple(input_size[1:])  # (C, H, W)
    out_h, out_w = check_size(input_size, "input_size")
    fmap = as_real_array(fmap, "the feature map")
    if jump is None:
        return resize(fmap, (out_h, out_w), mode, color=False)
    jump = check_real(jump, "jump", positive=True)
    start = check_real(start, "start")
    _check_maps(fmap, False, "map_to_input", need_pixels=True)
    h, w = fmap.shape[-2:]
    rows = _axis_table(h, out_h, mode, jump, start)
    cols = _axis_table(w, out_w, mode, jump, start)
    if mode == "nearest":
        return fmap[..., rows[0], :][..., cols[0]]
    return _sample(fmap, rows, cols)


def check_heat_orientation(heat: np.ndarray, size: tuple[int, ...]) -> None:
    """Refuse a ``heat`` map (h, w) that is the image's shape transposed (rows and columns swapped);
    ``size`` is the image's (H, W, ...).

    Raises:
        ValueError: for a transposed map, or a ``heat`` that is not one map (h, w).
    """
    if np.ndim(heat) != 2:
        raise ValueError(f"the heat map must be one map (h, w), got shape {np.shape(heat)}")
    h, w = np.shape(heat)
    if h != w and (h, w) == (size[1], size[0]):
        raise ValueError(f"the heat map's shape {heat.shape} is the image's {tuple(size[:2])} transposed; "
                         "maps are (rows, columns): pass heat.T if it was built column-first")
