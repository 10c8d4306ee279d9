"""Drawing occlusion maps: per-position grid -> map at input resolution -> uint8 RGB overlay.

numpy and matplotlib colormaps only (no torch). The grid comes from
:func:`cnnwidgets.methods.occlusion.occlusion_map` (``result.grid``, ``result.drop`` or
``result.labels``), with the window and stride it was computed with: position (i, j) covers
rows ``i*sh .. i*sh + wh - 1`` and columns ``j*sw .. j*sw + ww - 1``.

Partial results (a scan in progress or cancelled) have NaN grid values (``-1`` labels) at
positions not computed yet; every function here fills those from the nearest computed
position first (:func:`fill_nearest`), so a coarse-first scan gives a readable full-image
preview early.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from cnnwidgets.render._checks import as_real_array, check_bool, check_real, check_size
from cnnwidgets.render.attribution import matplotlib_colormap
from cnnwidgets.render.overlay import check_float_picture, check_not_channels_first, desaturate

__all__ = [
    "colorize",
    "fill_nearest",
    "grid_to_pixels",
    "label_colors",
    "label_overlay",
    "occlusion_overlay",
]

_UPSAMPLE = ("nearest", "mean")


def _pair(value: int | Sequence[int], what: str) -> tuple[int, int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (int, np.integer, Sequence, np.ndarray)):
        raise TypeError(f"{what} must be a positive int or a pair of positive ints, got "
                        f"{type(value).__name__} {value!r}")
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if (
        len(pair) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair)
        or min(pair) < 1
    ):
        raise ValueError(f"{what} must be a positive int or a pair of positive ints, got {value!r}")
    return int(pair[0]), int(pair[1])


def _nearest_known(known: np.ndarray, n: int) -> np.ndarray:
    """For each index 0..n-1, the nearest entry of the sorted, non-empty index array ``known``
    (of two equally near, the lower; integer distances, so ties are exact)."""
    queries = np.arange(n)
    right = np.clip(np.searchsorted(known, queries), 0, len(known) - 1)
    left = np.clip(right - 1, 0, len(known) - 1)
    take_left = np.abs(queries - known[left]) <= np.abs(known[right] - queries)
    return np.where(take_left, known[left], known[right])


def fill_nearest(values: np.ndarray, filled: np.ndarray | None = None) -> np.ndarray:
    """Fill the positions not computed yet with the value of a nearby computed position.

    The search runs along rows first (within each row that has computed positions), then
    along columns for rows that have none. For the lattices of a coarse-first scan this is
    the nearest computed position. Of two computed positions equally near, the one with the
    lower index is taken, as :func:`grid_to_pixels` does for window centres.

    Args:
        values: (rows, cols) grid.
        filled: which positions are computed; default ``isfinite(values)``.

    Returns:
        A new array of the same shape and dtype; unchanged if nothing is computed.

    Raises:
        TypeError: for values that are not real numbers (bools, ints or floats).
        ValueError: for a grid that is not 2-D, or ``filled`` of another shape.
    """
    values = as_real_array(values, "values", dtype=None)
    if values.ndim != 2:
        raise ValueError(f"values must be a 2-D (rows, cols) grid, got shape {values.shape}")
    known = np.isfinite(values) if filled is None else np.asarray(filled, dtype=bool)
    if known.shape != values.shape:
        raise ValueError(f"filled has shape {known.shape}, values {values.shape}")
    out = values.copy()
    if known.all() or not known.any():
        return out
    rows_known = np.flatnonzero(known.any(axis=1))
    for row in rows_known:
        out[row] = out[row, _nearest_known(np.flatnonzero(known[row]), values.shape[1])]
    return out[_nearest_known(rows_known, values.shape[0])]


def _covering(n_pixels: int, n_positions: int, window: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """First and last position index whose window covers each pixel (first > last: none)."""
    pixels = np.arange(n_pixels)
    first = np.maximum(0, -((window - 1 - pixels) // stride))  # ceil((p - window + 1) / stride)
    last = np.minimum(n_positions - 1, pixels // stride)
    return first, last


def _nearest_centre(n_pixels: int, n_positions: int, window: int, stride: int) -> np.ndarray:
    """Index of the window centre ``i*stride + (window-1)/2`` nearest to each pixel; ties to the lower index.

    Pixel ``p`` is ``x = (p - (window-1)/2) / stride`` positions from centre 0, and the nearest
    index with ties going down is ``ceil(x - 1/2) = ceil((2p - window + 1 - stride) / (2*stride))``,
    computed in integers so that ties are exact.
    """
    numerator = 2 * np.arange(n_pixels) - (window - 1) - stride
    return np.clip(-(-numerator // (2 * stride)), 0, n_positions - 1)


def grid_to_pixels(
    values: np.ndarray,
    image_size: Sequence[int],
    *,
    window: int | Sequence[int],
    stride: int | Sequence[int],
    upsample: str = "nearest",
    filled: np.ndarray | None = None,
) -> np.ndarray:
    """A per-position grid as an (H, W) map at input resolution.

    Args:
        values: (rows, cols) grid; NaN (or ``~filled``) marks positions not computed yet, which
            are first filled from the nearest computed position (:func:`fill_nearest`).
        image_size: (H, W).
        window, stride: those of the scan.
        upsample: ``"nearest"``: each pixel takes the value of the position whose window centre
            ``(i*sh + (wh-1)/2, j*sw + (ww-1)/2)`` is nearest (ties to the lower index), so every
            pixel gets a value. ``"mean"``: each pixel takes the mean over the windows covering
            it (with ``result.drop`` this is Captum's per-pixel attribution); pixels no window
            covers (past the last window, or gaps when stride > window) are NaN.
        filled: which positions are computed; default ``isfinite(values)`` (see :func:`fill_nearest`).

    Returns:
        (H, W) float32 array (or the grid's dtype for integer grids with ``"nearest"``).

    Raises:
        ValueError: for an unknown upsample mode, a window larger than the image, or a grid
            that does not match the geometry.
        TypeError: for values that are not real numbers, an ``image_size`` that is not a pair
            of ints, or a window or stride that is not ints.
    """
    if upsample not in _UPSAMPLE:
        raise ValueError(f"upsample must be one of {_UPSAMPLE}, got {upsample!r}")
    values = as_real_array(values, "values", dtype=None)
    height, width = check_size(image_size, "image_size")
    wh, ww = _pair(window, "window")
    sh, sw = _pair(stride, "stride")
    if wh > height or ww > width:
        raise ValueError(f"window {(wh, ww)} is larger than the image {(height, width)}: no position fits")
    rows, cols = (height - wh) // sh + 1, (width - ww) // sw + 1
    # A stride beyond the image leaves one position on that axis, as a stride of the image's size
    # does; clamped, it stays within the integers the index arithmetic below works in.
    sh, sw = min(sh, height), min(sw, width)
    if values.shape != (rows, cols):
        raise ValueError(
            f"grid of shape {values.shape} does not match image_size={(height, width)}, window={(wh, ww)}, "
            f"stride={(sh, sw)} (expected {(rows, cols)})"
        )
    grid = fill_nearest(values, filled)
    if upsample == "nearest":
        out = grid[np.ix_(_nearest_centre(height, rows, wh, sh), _nearest_centre(width, cols, ww, sw))]
        return as_real_array(out, "values") if np.issubdtype(out.dtype, np.floating) else out
    data = grid.astype(np.float64)
    known = np.isfinite(data)
    integral = np.zeros((rows + 1, cols + 1))
    integral[1:, 1:] = np.where(known, data, 0.0).cumsum(0).cumsum(1)
    counts = np.zeros((rows + 1, cols + 1))
    counts[1:, 1:] = known.cumsum(0).cumsum(1)
    y0, y1 = _covering(height, rows, wh, sh)
    x0, x1 = _covering(width, cols, ww, sw)
    y1c, x1c = np.maximum(y1, y0 - 1), np.maximum(x1, x0 - 1)  # empty ranges sum to 0

    def box(table: np.ndarray) -> np.ndarray:
        return (
            table[np.ix_(y1c + 1, x1c + 1)] - table[np.ix_(y0, x1c + 1)]
            - table[np.ix_(y1c + 1, x0)] + table[np.ix_(y0, x0)]
        )

    total, count = box(integral), box(counts)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return np.where(count > 0, total / count, np.nan).astype(np.float32)


def colorize(
    values: np.ndarray, *, cmap: str = "viridis", vmin: float | None = None, vmax: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Map values to colours with a matplotlib colormap.

    Args:
        values: any-shape float array; NaN means no value.
        cmap: a matplotlib colormap name.
        vmin, vmax: the values mapped to the ends of the colormap (default: min / max of the
            finite values; equal limits map everything to the middle colour).

    Returns:
        ``(rgb, valid)``: uint8 array ``values.shape + (3,)`` and the bool mask of finite values.

    Raises:
        ValueError: for an unknown colormap name, a NaN or infinite limit, or ``vmin > vmax``
            (a reversed range).
        TypeError: for values or limits that are not real numbers, or a name that is not a string.
    """
    colormap = matplotlib_colormap(cmap)
    values = as_real_array(values, "values", dtype=np.float64)
    valid = np.isfinite(values)
    finite = values[valid]
    if vmin is not None:
        lo = check_real(vmin, "vmin")
    else:
        lo = float(finite.min()) if finite.size else 0.0
    if vmax is not None:
        hi = check_real(vmax, "vmax")
    else:
        hi = float(finite.max()) if finite.size else 1.0
    if vmin is not None and vmax is not None and lo > hi:
        raise ValueError(f"vmin must be <= vmax, got vmin={lo:g}, vmax={hi:g}")
    span = hi - lo
    with np.errstate(over="ignore"):  # a value far beyond a limit may overflow: an infinity, clipped to the end
        if span <= 0:
            scaled = np.full(values.shape, 0.5)
        elif math.isfinite(span):
            scaled = (np.where(valid, values, lo) - lo) / span
        else:  # ends more than float64's range apart: halves, which are exact, fit
            scaled = (np.where(valid, values, lo) * 0.5 - lo * 0.5) / (hi * 0.5 - lo * 0.5)
    rgb = colormap(np.clip(scaled, 0.0, 1.0), bytes=True)[..., :3]
    return rgb.astype(np.uint8), valid


def _argument_order(function: str, values: str) -> str:
    return (f"{function} takes the grid first, then the picture: "
            f"{function}({values}, image, window=..., stride=...)")


def _check_order(values: object, image: object, function: str, name: str) -> None:
    """Refuse a picture passed where the grid goes and the grid where the picture goes.

    The grid is 2-D and never larger than the picture it was computed on (``(H - window) //
    stride + 1 <= H``), so a 3-D first argument over a 2-D second one, or a 2-D first argument
    larger on both sides than a 2-D second one, is the two swapped.
    """
    grid, picture = np.shape(values), np.shape(image)
    order = _argument_order(function, name)
    if len(picture) == 2 and (
        (len(grid) == 3 and grid[2] in (3, 4)) or (len(grid) == 2 and picture[0] < grid[0] and picture[1] < grid[1])
    ):
        raise ValueError(f"the arguments look swapped: {name} has shape {tuple(grid)}, a picture's, and image "
                         f"{tuple(picture)}, a grid's; {order}")
    if len(grid) != 2:
        raise ValueError(f"{name} must be the 2-D (rows, cols) grid, got shape {tuple(grid)}; {order}")


def _as_rgb(image: np.ndarray, size: tuple[int, int], order: str) -> np.ndarray:
    """The picture as float64 (H, W, 3) in 0..255; ``order`` (the caller's argument order) ends each error."""
    try:
        return _picture(image, size)
    except ValueError as exc:
        raise ValueError(f"{exc} ({order})") from None


def _picture(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    check_not_channels_first(image, layout="(H, W, C)")
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.shape[:2] != size:
        raise ValueError(f"image must be (H, W), (H, W, 3) or (H, W, 4) with (H, W) = {size}, got {image.shape}")
    image = image[..., :3]
    if image.dtype == np.uint8:
        return image.astype(np.float64)
    if np.issubdtype(image.dtype, np.floating):
        check_float_picture(image)
        return np.clip(image.astype(np.float64), 0.0, 1.0) * 255.0
    raise ValueError(f"image must be uint8 or float in [0, 1], got dtype {image.dtype}")


def _blend(image: np.ndarray, color: np.ndarray, valid: np.ndarray, alpha: float) -> np.ndarray:
    alpha = check_real(alpha, "alpha")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    mixed = np.where(valid[..., None], (1.0 - alpha) * image + alpha * color, image)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def occlusion_overlay(
    values: np.ndarray,
    image: np.ndarray,
    *,
    window: int | Sequence[int],
    stride: int | Sequence[int],
    upsample: str = "nearest",
    cmap: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    center: float | None = None,
    alpha: float = 0.5,
    filled: np.ndarray | None = None,
    gray_image: bool = False,
) -> np.ndarray:
    """Heatmap of an occlusion grid over the image, as uint8 RGB.

    Args:
        values: (rows, cols) grid: ``result.grid`` (the score per position, the paper's view:
            low where covering the region hurts) or ``result.drop`` (unoccluded - grid).
            Positions not computed yet (NaN) are filled from the nearest computed one.
        image: (H, W, 3) uint8, or float in [0, 1] (e.g. a denormalised input), or (H, W).
        window, stride: those of the scan.
        upsample: ``"nearest"`` or ``"mean"``, see :func:`grid_to_pixels`. Pixels without a value
            show the image unchanged.
        cmap: matplotlib colormap; default ``"RdBu_r"`` with ``center``, else ``"viridis"``.
        vmin, vmax: colour limits (default: range of the values).
        center: if given, the limits are made symmetric around it (e.g. 0 for ``result.drop``),
            unless vmin / vmax are given.
        alpha: heatmap opacity.
        filled: computed positions (default: finite values).
        gray_image: show the image in shades of gray under the heatmap, so that red and blue
            are the heatmap's alone (a blue sky does not read as "rises").

    Returns:
        (H, W, 3) uint8.

    Raises:
        ValueError: for a grid that is not 2-D or does not match the geometry, an image of
            another shape or dtype, a float image outside [0, 1], the two swapped (the picture
            first, as :func:`~cnnwidgets.render.attribution.attribution_overlay` takes it: the
            message says the order), a bad upsample mode, colormap or alpha, or a NaN or
            infinite ``center``, ``vmin`` or ``vmax`` (or ``vmin > vmax``).
        TypeError: for values, limits, ``center`` or alpha that are not real numbers, a window
            or stride that is not ints, or a ``gray_image`` that is not True or False.
    """
    _check_order(values, image, "occlusion_overlay", "values")
    center = None if center is None else check_real(center, "center")
    gray_image = check_bool(gray_image, "gray_image")
    rgb_image = _as_rgb(image, tuple(np.asarray(image).shape[:2]), _argument_order("occlusion_overlay", "values"))
    if gray_image:
        rgb_image = desaturate(np.clip(np.rint(rgb_image), 0, 255).astype(np.uint8)).astype(np.float64)
    size = rgb_image.shape[:2]
    pixels = grid_to_pixels(values, size, window=window, stride=stride, upsample=upsample, filled=filled)
    if center is not None and vmin is None and vmax is None:
        finite = pixels[np.isfinite(pixels)]
        half = float(np.abs(finite - center).max()) if finite.size else 1.0
        vmin, vmax = center - half, center + half
    color, valid = colorize(
        pixels, cmap=cmap or ("RdBu_r" if center is not None else "viridis"), vmin=vmin, vmax=vmax
    )
    return _blend(rgb_image, color.astype(np.float64), valid, alpha)


def label_colors(labels: np.ndarray, *, cmap: str = "tab20") -> dict[int, tuple[int, int, int]]:
    """The colour :func:`label_overlay` gives each class present in ``labels`` (for a legend).

    Args:
        labels: class indices (ints; -1, or NaN in a float array, where not computed).
        cmap: a matplotlib colormap name.

    Raises:
        ValueError: for an unknown colormap, or labels that are not whole numbers (0.5, inf).
        TypeError: for labels that are not real numbers, or a name that is not a string.
    """
    colormap = matplotlib_colormap(cmap)
    present = sorted(int(v) for v in np.unique(_check_labels(labels)) if v >= 0)
    # An integer indexes the colormap's table directly: class k gets entry k mod N.
    return {k: tuple(int(c) for c in colormap(k % colormap.N, bytes=True)[:3]) for k in present}


def label_overlay(
    labels: np.ndarray,
    image: np.ndarray,
    *,
    window: int | Sequence[int],
    stride: int | Sequence[int],
    alpha: float = 0.5,
    cmap: str = "tab20",
) -> np.ndarray:
    """The most probable class per occluder position (``result.labels``) as colours over the image.

    Each pixel takes the label of the nearest window centre; positions not computed yet
    (label -1) take the nearest computed label. Colours come from :func:`label_colors`.

    Returns:
        (H, W, 3) uint8.

    Raises:
        ValueError: as :func:`occlusion_overlay` (the grid comes first here too), or for labels
            that are not whole numbers (0.5 is no class).
        TypeError: as :func:`occlusion_overlay`, or for labels that are not real numbers.
    """
    _check_order(labels, image, "label_overlay", "labels")
    labels = _check_labels(labels)
    rgb_image = _as_rgb(image, tuple(np.asarray(image).shape[:2]), _argument_order("label_overlay", "labels"))
    size = rgb_image.shape[:2]
    known = labels >= 0
    pixels = grid_to_pixels(labels, size, window=window, stride=stride, upsample="nearest", filled=known)
    colors = label_colors(pixels, cmap=cmap)
    color = np.zeros((*size, 3))
    for label, rgb in colors.items():
        color[pixels == label] = rgb
    return _blend(rgb_image, color, pixels >= 0, alpha)


def _check_labels(labels: object) -> np.ndarray:
    """``labels`` as an array of class indices: ints, or floats that are whole numbers or NaN
    (not computed, as -1 is)."""
    array = as_real_array(labels, "labels", dtype=None)
    if array.dtype.kind == "f":
        known = array[~np.isnan(array)]
        if known.size and not (np.isfinite(known).all() and (known == np.round(known)).all()):
            bad = known[~(np.isfinite(known) & (known == np.round(known)))][0]
            raise ValueError(f"labels must be class indices (whole numbers; -1 or NaN where not computed), got {bad}")
    return array
