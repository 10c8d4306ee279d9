"""Resizing maps for display: integer upscaling, resizing, and mapping a feature map to input pixels.

Coordinates follow the pixel-centre convention: pixel ``i`` of a row of length ``n`` covers
``[i, i + 1)`` and has its centre at ``i + 0.5``. Resizing a length ``n`` to ``m`` samples output
pixel ``p`` at source position ``(p + 0.5) * n / m - 0.5`` (``align_corners=False`` in PyTorch's
words), clamped to the valid range.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["RESAMPLE_MODES", "check_heat_orientation", "downscale", "map_to_input", "resize", "upscale"]

RESAMPLE_MODES: tuple[str, ...] = ("nearest", "bilinear")


def _check_mode(mode: str) -> None:
    if mode not in RESAMPLE_MODES:
        raise ValueError(f"unknown resampling mode {mode!r}; accepted: {', '.join(RESAMPLE_MODES)}")


def upscale(image: np.ndarray, factor: int, *, color: bool = False) -> np.ndarray:
    """Enlarge by an integer factor, each pixel becoming a ``factor x factor`` block.

    Args:
        image: a map or stack of shape (..., H, W), or with ``color=True`` an image (H, W, K).
        factor: integer >= 1.
        color: the last axis holds colour components.

    Returns:
        The enlarged array, same dtype.

    Raises:
        ValueError: for a factor < 1.
    """
    factor = int(factor)
    if factor < 1:
        raise ValueError(f"upscale factor must be an integer >= 1, got {factor}")
    if factor == 1:
        return image
    if color:
        return np.repeat(np.repeat(image, factor, axis=-3), factor, axis=-2)
    return np.repeat(np.repeat(image, factor, axis=-2), factor, axis=-1)


def downscale(stack: np.ndarray, factor: int) -> np.ndarray:
    """Shrink the last two axes by an integer factor, averaging ``factor x factor`` blocks.

    Edges that do not fill a whole block are averaged over the pixels they have.

    Args:
        stack: float array of shape (..., H, W).
        factor: integer >= 1.

    Returns:
        float32 array of shape (..., ceil(H / factor), ceil(W / factor)).

    Raises:
        ValueError: for a factor < 1.
    """
    factor = int(factor)
    if factor < 1:
        raise ValueError(f"downscale factor must be an integer >= 1, got {factor}")
    stack = np.asarray(stack, dtype=np.float32)
    if factor == 1:
        return stack
    # sums of strided slices: f elementwise additions per axis, no slow reductions over small axes
    return _block_mean(_block_mean(stack, factor, -1), factor, -2)


def _block_mean(stack: np.ndarray, factor: int, axis: int) -> np.ndarray:
    """Mean over consecutive blocks of ``factor`` along ``axis`` (-1 or -2); a short last block averages what it has."""
    n = stack.shape[axis]
    out_n = -(-n // factor)
    shape = list(stack.shape)
    shape[axis] = out_n
    out = np.zeros(shape, dtype=np.float32)
    tail = (slice(None),) * (-1 - axis)  # the axes after `axis`
    for k in range(min(factor, n)):
        part = stack[(..., slice(k, None, factor), *tail)]
        out[(..., slice(0, part.shape[axis]), *tail)] += part
    counts = np.minimum(factor, n - factor * np.arange(out_n)).astype(np.float32)
    out /= counts.reshape((out_n,) + (1,) * len(tail))
    return out


def _axis_weights(n_in: int, n_out: int, mode: str, positions: np.ndarray | None = None):
    """Source indices and weights along one axis for the output pixels."""
    if positions is None:
        positions = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    positions = np.clip(positions, 0.0, n_in - 1)
    if mode == "nearest":
        idx = np.floor(positions + 0.5).astype(np.int64)
        idx = np.minimum(idx, n_in - 1)
        return idx, idx, np.zeros(n_out, dtype=np.float32)
    lo = np.floor(positions).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = (positions - lo).astype(np.float32)
    return lo, hi, frac


@functools.lru_cache(maxsize=128)
def _axis_table(n_in: int, n_out: int, mode: str, jump: float | None = None, start: float | None = None):
    """:func:`_axis_weights` for a stretch (no ``jump``) or a receptive-field placement, memoised:
    views redraw the same geometry on every frame. The arrays are read-only."""
    positions = None if jump is None else (np.arange(n_out) - start) / jump
    table = _axis_weights(n_in, n_out, mode, positions)
    for array in table:
        array.flags.writeable = False
    return table


def _sample(image: np.ndarray, rows, cols, color: bool = False) -> np.ndarray:
    r0, r1, fr = rows
    c0, c1, fc = cols
    img = image.astype(np.float32, copy=False)
    if color:
        rows0, rows1 = img[..., r0, :, :], img[..., r1, :, :]
        top = rows0[..., c0, :] * (1 - fc)[:, None] + rows0[..., c1, :] * fc[:, None]
        bottom = rows1[..., c0, :] * (1 - fc)[:, None] + rows1[..., c1, :] * fc[:, None]
        return top * (1 - fr)[:, None, None] + bottom * fr[:, None, None]
    top = img[..., r0, :][..., c0] * (1 - fc) + img[..., r0, :][..., c1] * fc
    bottom = img[..., r1, :][..., c0] * (1 - fc) + img[..., r1, :][..., c1] * fc
    return top * (1 - fr)[:, None] + bottom * fr[:, None]


def resize(
    image: np.ndarray, size: tuple[int, int], mode: str = "bilinear", *, color: bool = False
) -> np.ndarray:
    """Resize to ``size = (height, width)`` with pixel-centre alignment.

    Args:
        image: a map or stack of shape (..., H, W), or with ``color=True`` an image (H, W, K).
        size: output (height, width), both >= 1.
        mode: ``"nearest"`` or ``"bilinear"``.
        color: the last axis holds colour components.

    Returns:
        float32 array (uint8 inputs are returned as uint8 for ``"nearest"``).

    Raises:
        ValueError: for an unknown mode or a size < 1.
    """
    _check_mode(mode)
    out_h, out_w = int(size[0]), int(size[1])
    if out_h < 1 or out_w < 1:
        raise ValueError(f"output size must be positive, got {size}")
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
    input_size: tuple[int, int],
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
        input_size: (H, W) of the input image.
        jump: distance in input pixels between neighbouring units, or None.
        start: centre of unit 0 in input pixel coordinates, or None.
        mode: ``"nearest"`` or ``"bilinear"``.

    Returns:
        float32 array (H, W) or (C, H, W).

    Raises:
        ValueError: for an unknown mode, a non-positive jump, or only one of jump/start.
    """
    _check_mode(mode)
    if (jump is None) != (start is None):
        raise ValueError("give both jump and start (receptive-field geometry) or neither")
    out_h, out_w = int(input_size[0]), int(input_size[1])
    fmap = np.asarray(fmap, dtype=np.float32)
    if jump is None:
        return resize(fmap, (out_h, out_w), mode)
    if jump <= 0:
        raise ValueError(f"jump must be positive, got {jump}")
    h, w = fmap.shape[-2:]
    rows = _axis_table(h, out_h, mode, float(jump), float(start))
    cols = _axis_table(w, out_w, mode, float(jump), float(start))
    if mode == "nearest":
        return fmap[..., rows[0], :][..., cols[0]]
    return _sample(fmap, rows, cols)


def check_heat_orientation(heat: np.ndarray, size: tuple[int, ...]) -> None:
    """Refuse a heat map that is the image's shape transposed (rows and columns swapped)."""
    h, w = heat.shape
    if h != w and (h, w) == (size[1], size[0]):
        raise ValueError(f"the heat map's shape {heat.shape} is the image's {tuple(size[:2])} transposed; "
                         "maps are (rows, columns): pass heat.T if it was built column-first")
