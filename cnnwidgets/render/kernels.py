"""Draw convolution kernels as one ``uint8`` mosaic (numpy only).

Input values are signed and already normalised to [-1, 1] (see
:func:`cnnwidgets.methods.kernels.kernels`). The colour mapping is symmetric, so 0 is always
mid-gray:

* ``"gray"``: ``u = round((v + 1) / 2 * 255)`` - black is the most negative weight, white the most
  positive;
* ``"diverging"``: blue for negative, mid-gray for 0, orange-red for positive, with the
  colour's strength proportional to ``|v|``;
* RGB tiles map each colour channel with the ``"gray"`` rule.

Tiles are enlarged by nearest-neighbour ``zoom`` so single weights stay visible, and separated by
``border`` pixels of ``border_color``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from cnnwidgets.render._checks import as_real_array, check_color, check_int

__all__ = ["KERNEL_COLORMAPS", "MIN_TILE_PIXELS", "kernel_mosaic", "signed_to_rgb", "tile_grid"]

_LAYOUTS = ("rgb", "grid", "slices")
#: Colormaps of single-channel kernel tiles.
KERNEL_COLORMAPS: tuple[str, ...] = ("gray", "diverging")
#: Tiles are enlarged by a whole factor to about this many pixels by default.
MIN_TILE_PIXELS = 24
_COLORMAPS = KERNEL_COLORMAPS
_NEGATIVE = np.array([33.0, 102.0, 230.0])
_POSITIVE = np.array([230.0, 80.0, 20.0])
_MID = np.array([128.0, 128.0, 128.0])


def signed_to_rgb(values: np.ndarray, cmap: str = "gray") -> np.ndarray:
    """Map signed values in [-1, 1] to RGB ``uint8`` (values outside are clipped, infinities
    included).

    Args:
        values: array of any shape.
        cmap: ``"gray"`` or ``"diverging"`` (:data:`KERNEL_COLORMAPS`).

    Returns:
        ``uint8`` array of shape ``values.shape + (3,)``.

    Raises:
        ValueError: for an unknown colormap, or a NaN value (drawn, it would look like a zero
            weight).
        TypeError: for values that are not real numbers.
    """
    if cmap not in _COLORMAPS:
        raise ValueError(f"unknown colormap {cmap!r} for kernel tiles: cmap must be one of {_COLORMAPS}")
    array = as_real_array(values, "kernel values", dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # inf + -inf is NaN too: then looked at closer
        suspect = np.isnan(array.sum())
    if suspect and np.isnan(array).any():
        raise ValueError(f"kernel values must not be NaN (drawn, NaN would look like a zero weight), got "
                         f"{int(np.count_nonzero(np.isnan(array)))} NaN of {array.size}; replace them first")
    v = np.clip(array, -1.0, 1.0)[..., None]
    if cmap == "gray":
        rgb = np.repeat((v + 1.0) * 127.5, 3, axis=-1)
    else:
        rgb = _MID + np.where(v < 0, -v * (_NEGATIVE - _MID), v * (_POSITIVE - _MID))
    return np.rint(rgb).clip(0, 255).astype(np.uint8)


def tile_grid(
    tiles: np.ndarray,
    *,
    zoom: int = 1,
    border: int = 1,
    border_color: Sequence[int] = (255, 255, 255),
) -> np.ndarray:
    """Lay out a 2-D grid of RGB tiles into one image.

    Args:
        tiles: ``uint8`` array (rows, cols, h, w, 3).
        zoom: nearest-neighbour enlargement of every tile (>= 1).
        border: pixels between tiles and around the mosaic (>= 0).
        border_color: RGB colour of the borders.

    Returns:
        ``uint8`` array (rows * (h * zoom + border) + border, cols * (w * zoom + border) + border, 3).

    Raises:
        ValueError: for a wrongly shaped array, a zoom < 1, a border < 0 or a border colour
            outside 0..255.
        TypeError: for a zoom or border that is not an int (2.5 would be truncated), or a
            border colour that is not three ints.
    """
    zoom = check_int(zoom, "zoom", minimum=1)
    border = check_int(border, "border", minimum=0)
    fill = check_color(border_color, "border_color")
    tiles = np.asarray(tiles)
    if tiles.ndim != 5 or tiles.shape[-1] != 3:
        raise ValueError(f"tiles must have shape (rows, cols, h, w, 3), got {tiles.shape}")
    rows, cols, h, w, _ = tiles.shape
    if zoom > 1:
        tiles = tiles.repeat(zoom, axis=2).repeat(zoom, axis=3)
    th, tw = h * zoom, w * zoom
    out = np.empty((rows * (th + border) + border, cols * (tw + border) + border, 3), dtype=np.uint8)
    out[...] = fill
    for r in range(rows):
        top = border + r * (th + border)
        for c in range(cols):
            left = border + c * (tw + border)
            out[top : top + th, left : left + tw] = tiles[r, c]
    return out


def _wrap(tiles: np.ndarray, cols: int | None, fill: Sequence[int]) -> np.ndarray:
    """(T, h, w, 3) -> (rows, cols, h, w, 3), filling empty slots with ``fill``."""
    count = tiles.shape[0]
    cols = max(1, min(count, cols if cols else math.ceil(math.sqrt(count))))
    rows = math.ceil(count / cols)
    grid = np.empty((rows * cols, *tiles.shape[1:]), dtype=np.uint8)
    grid[...] = np.asarray(fill, dtype=np.uint8)
    grid[:count] = tiles
    return grid.reshape(rows, cols, *tiles.shape[1:])


def kernel_mosaic(
    values: np.ndarray,
    layout: str,
    *,
    zoom: int | None = None,
    border: int = 1,
    cols: int | None = None,
    cmap: str = "gray",
    border_color: Sequence[int] = (255, 255, 255),
    block_gap: int = 3,
) -> np.ndarray:
    """One image of all kernels of a layer.

    Args:
        values: normalised weights in [-1, 1], laid out as ``layout`` says.
        layout: ``"rgb"`` - (T, h, w, 3) colour tiles in a near-square grid; ``"slices"`` - (T, h, w)
            single-channel tiles in a near-square grid; ``"grid"`` - (rows, cols, h, w) single-channel
            tiles in that grid (output channel per row, input channel per column).
        zoom: enlargement per weight; default: enough to make tiles about :data:`MIN_TILE_PIXELS`
            pixels (at least 1).
        border: pixels between tiles.
        cols: columns of the near-square grid (``"rgb"`` and ``"slices"``); default ``ceil(sqrt(T))``.
            For ``"grid"``, a ``cols`` below the grid's column count wraps each row (one output
            channel) into lines of ``cols`` tiles, in row-major order: each row becomes a block of
            lines, and blocks are set apart by ``block_gap`` more pixels of ``border_color``.
        cmap: for single-channel tiles, ``"gray"`` (default) or ``"diverging"``
            (:data:`KERNEL_COLORMAPS`; ignored for ``"rgb"``), the keyword the other renderers use.
        border_color: RGB colour of the borders and of empty slots.
        block_gap: extra pixels between the blocks of a wrapped ``"grid"`` (>= 0).

    Returns:
        ``uint8`` array (H, W, 3).

    Raises:
        ValueError: for an unknown layout or colormap, values of the wrong shape or NaN, a
            ``zoom`` or ``cols`` < 1, a ``border`` or ``block_gap`` < 0, or a border colour
            outside 0..255.
        TypeError: for values that are not real numbers, a ``zoom``, ``border``, ``cols`` or
            ``block_gap`` that is not an int, or a border colour that is not three ints.
    """
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {_LAYOUTS}, got {layout!r}")
    values = as_real_array(values, "kernel values", dtype=None)
    cols = None if cols is None else check_int(cols, "cols", minimum=1)
    block_gap = check_int(block_gap, "block_gap", minimum=0)
    zoom = None if zoom is None else check_int(zoom, "zoom", minimum=1)
    border = check_int(border, "border", minimum=0)
    border_color = tuple(int(c) for c in check_color(border_color, "border_color"))
    if values.size == 0:
        raise ValueError("there are no kernels to draw (empty array)")
    if layout == "rgb":
        if values.ndim != 4 or values.shape[-1] != 3:
            raise ValueError(f"layout 'rgb' needs values of shape (T, h, w, 3), got {values.shape}")
        h = values.shape[1]
        tiles = _wrap(signed_to_rgb(values, "gray")[..., 0], cols, border_color)
    elif layout == "slices":
        if values.ndim != 3:
            raise ValueError(f"layout 'slices' needs values of shape (T, h, w), got {values.shape}")
        h = values.shape[1]
        tiles = _wrap(signed_to_rgb(values, cmap), cols, border_color)
    else:
        if values.ndim != 4:
            raise ValueError(f"layout 'grid' needs values of shape (rows, cols, h, w), got {values.shape}")
        h = values.shape[2]
        tiles = signed_to_rgb(values, cmap)
    if zoom is None:
        zoom = max(1, MIN_TILE_PIXELS // max(1, h))
    if layout == "grid" and cols is not None and int(cols) < tiles.shape[1]:
        return _wrapped_grid(tiles, int(cols), zoom=zoom, border=border, border_color=border_color,
                             block_gap=int(block_gap))
    return tile_grid(tiles, zoom=zoom, border=border, border_color=border_color)


def _wrapped_grid(tiles: np.ndarray, cols: int, *, zoom: int, border: int, border_color: Sequence[int],
                  block_gap: int) -> np.ndarray:
    """(rows, n, h, w, 3) tiles -> one image with each row wrapped into lines of ``cols`` tiles
    (a block per row), blocks set apart by ``block_gap`` extra pixels."""
    rows, count = tiles.shape[:2]
    lines = math.ceil(count / cols)
    padded = np.empty((rows, lines * cols, *tiles.shape[2:]), dtype=np.uint8)
    padded[...] = np.asarray(border_color, dtype=np.uint8)
    padded[:, :count] = tiles
    image = tile_grid(padded.reshape(rows * lines, cols, *tiles.shape[2:]), zoom=zoom, border=border,
                      border_color=border_color)
    if block_gap == 0 or rows == 1:
        return image
    block = lines * (tiles.shape[2] * int(zoom) + int(border))
    at = [int(border) + k * block for k in range(1, rows) for _ in range(block_gap)]
    gap = np.empty((len(at), image.shape[1], 3), dtype=np.uint8)
    gap[...] = np.asarray(border_color, dtype=np.uint8)
    return np.insert(image, at, gap, axis=0)
