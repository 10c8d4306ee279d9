"""All channels of a layer as one mosaic image, with geometry to map a pixel back to a channel.

A mosaic is ``rows x cols`` slots of ``tile_height x tile_width`` pixels, separated and framed
by ``border`` pixels. Slot ``s`` (row-major) shows channel ``order[s]``; slots past the last
channel are left in the border colour. Each feature map is enlarged by an integer factor
(``scale``) or shrunk by block averaging (``shrink``) so that the whole mosaic fits the size
asked for; the layout that gives the largest tiles is chosen.

The same geometry runs in the browser (the grid widget computes the hovered channel
locally), so :meth:`GridLayout.channel_at` is the reference for that arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnnwidgets.render._checks import as_real_array, check_color, check_int, check_lo_hi, check_real
from cnnwidgets.render.colormaps import get_lut32, linear_scale, scale_channels
from cnnwidgets.render.normalize import value_ranges
from cnnwidgets.render.resample import downscale, upscale

__all__ = ["GridLayout", "GridPainter", "feature_grid", "grid_layout", "mosaic"]

BORDER_COLOR = (48, 48, 48)
MARK_COLOR = (230, 40, 40)
DATA_MARK_COLOR = (255, 150, 0)
"""The feature grid's colour for its second set of marks (``data_marked``: the channels dead over a
data set), drawn with the other diagonal: orange, apart from the red marks and every colormap's colours."""
NAN_COLOR = (255, 0, 255)
"""The feature grid's default colour for NaN and infinite units: magenta, far from every colour of
every colormap of :func:`~cnnwidgets.render.colormap_names` and from the border and mark colours."""


@dataclass(frozen=True)
class GridLayout:
    """Geometry of a mosaic.

    Attributes:
        count: number of channels shown.
        rows: number of slot rows.
        cols: number of slot columns.
        map_height: height of one feature map before scaling.
        map_width: width of one feature map before scaling.
        scale: integer enlargement of each map (1 when shrinking).
        shrink: integer block-average reduction of each map (1 when enlarging).
        border: pixels between and around the tiles.
        order: ``order[s]`` is the channel shown in slot ``s``.
        channels: channels of the stack the mosaic is drawn from (0: ``count``, every one
            shown). A mosaic of some of a stack's channels (a page of a wide layer) shows the
            ``count`` channels named by ``order``.
        before: on a page, the channel just before its first tile in the order of all the
            stack's channels (None: the first page, or the whole stack shown); the browser's
            left arrow key goes there from the first tile.
        after: likewise the channel just after the page's last tile (the right arrow key).
    """

    count: int
    rows: int
    cols: int
    map_height: int
    map_width: int
    scale: int = 1
    shrink: int = 1
    border: int = 1
    order: tuple[int, ...] = field(default=())
    channels: int = 0
    before: int | None = None
    after: int | None = None

    def __post_init__(self) -> None:
        for name in ("count", "rows", "cols", "map_height", "map_width", "scale", "shrink"):
            check_int(getattr(self, name), name, minimum=1)
        check_int(self.border, "border", minimum=0)
        check_int(self.channels, "channels", minimum=0)
        if not self.channels:
            object.__setattr__(self, "channels", self.count)
        if not self.order and self.channels == self.count:
            object.__setattr__(self, "order", tuple(range(self.count)))
        if self.channels == self.count:
            if sorted(self.order) != list(range(self.count)):
                raise ValueError(f"order must be a permutation of range({self.count})")
        elif (len(self.order) != self.count or len(set(self.order)) != self.count
              or not all(0 <= c < self.channels for c in self.order)):
            raise ValueError(f"order must name {self.count} distinct channels of 0..{self.channels - 1}, "
                             f"one per slot; got {len(self.order)}")
        if self.rows * self.cols < self.count:
            raise ValueError(f"{self.rows}x{self.cols} slots cannot hold {self.count} channels")

    @property
    def tile_height(self) -> int:
        """Height of one tile in pixels: ``map_height`` shrunk (rounded up), then scaled."""
        return -(-self.map_height // self.shrink) * self.scale

    @property
    def tile_width(self) -> int:
        """Width of one tile in pixels: ``map_width`` shrunk (rounded up), then scaled."""
        return -(-self.map_width // self.shrink) * self.scale

    @property
    def width(self) -> int:
        """Width of the mosaic in pixels."""
        return self.cols * self.tile_width + (self.cols + 1) * self.border

    @property
    def height(self) -> int:
        """Height of the mosaic in pixels."""
        return self.rows * self.tile_height + (self.rows + 1) * self.border

    def slot_of(self, channel: int) -> int:
        """The slot that shows ``channel``.

        Raises:
            IndexError: for a channel outside ``range(count)``.
        """
        if not 0 <= channel < self.channels:
            raise IndexError(f"channel {channel} out of range 0..{self.channels - 1}")
        if self.count < self.channels and channel not in self.order:
            raise IndexError(f"channel {channel} is not one of the {self.count} channels this mosaic shows")
        return self.order.index(channel)

    def tile_rect(self, channel: int) -> tuple[int, int, int, int]:
        """``(x, y, width, height)`` of the tile that shows ``channel``, in mosaic pixels."""
        slot = self.slot_of(channel)
        row, col = divmod(slot, self.cols)
        x = self.border + col * (self.tile_width + self.border)
        y = self.border + row * (self.tile_height + self.border)
        return x, y, self.tile_width, self.tile_height

    def channel_at(self, x: float, y: float) -> int | None:
        """The channel under mosaic pixel ``(x, y)``, or None on a border, an empty slot or outside.

        Pixel ``(x, y)`` is column ``x`` and row ``y``; fractional coordinates are floored.

        Raises:
            TypeError: for a coordinate that is not a real number.
            ValueError: for a NaN or infinite coordinate.
        """
        x, y = math.floor(check_real(x, "x")), math.floor(check_real(y, "y"))
        if x < 0 or y < 0 or x >= self.width or y >= self.height:
            return None
        col, within_x = divmod(x - self.border, self.tile_width + self.border)
        row, within_y = divmod(y - self.border, self.tile_height + self.border)
        if x < self.border or y < self.border or within_x >= self.tile_width or within_y >= self.tile_height:
            return None
        if col >= self.cols or row >= self.rows:
            return None
        slot = row * self.cols + col
        return self.order[slot] if slot < self.count else None

    def map_position(self, x: float, y: float) -> tuple[int, int, int] | None:
        """``(channel, row, col)`` of the feature-map unit under mosaic pixel ``(x, y)``, or None.

        Within a tile, pixel offset ``d`` (from the tile's corner) is unit ``d // scale`` of an
        enlarged map, the unit :func:`~cnnwidgets.render.resample.upscale` draws there, and unit
        ``d * shrink`` (the first of the block it averages) of a shrunk one; computed in integers.
        """
        channel = self.channel_at(x, y)
        if channel is None:
            return None
        tx, ty, _, _ = self.tile_rect(channel)
        # in integers: with a float step 1 / scale, d * (1 / scale) falls just below a whole number
        # for some d (scale 49, say), which would name the unit before the one upscale() draws there
        row = min((math.floor(y) - ty) * self.shrink // self.scale, self.map_height - 1)
        col = min((math.floor(x) - tx) * self.shrink // self.scale, self.map_width - 1)
        return channel, row, col

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly geometry for the browser."""
        return {
            "count": self.count,
            "rows": self.rows,
            "cols": self.cols,
            "tile_width": self.tile_width,
            "tile_height": self.tile_height,
            "border": self.border,
            "width": self.width,
            "height": self.height,
            "order": list(self.order),
            "channels": self.channels,
            "before": self.before,
            "after": self.after,
        }


def grid_layout(
    count: int,
    map_height: int,
    map_width: int,
    *,
    max_width: int = 720,
    max_height: int = 480,
    border: int = 1,
    max_scale: int = 8,
    order: np.ndarray | list[int] | None = None,
    channels: int | None = None,
) -> GridLayout:
    """Choose rows, columns and tile scale so that the mosaic fits and its tiles are largest.

    Every column count from 1 to ``count`` is tried. For each, the largest integer
    enlargement (at most ``max_scale``) that fits ``max_width x max_height`` is found or, when
    the maps do not fit even at scale 1, the smallest integer block-average reduction that
    does. The column count with the largest tiles wins; ties go to fewer empty slots, then to
    the mosaic shape closest to the box's. The mosaic exceeds the box only when even a
    reduction to 1-pixel tiles does not fit.

    Args:
        count: number of channels (int >= 1).
        map_height: height of one feature map (int >= 1).
        map_width: width of one feature map (int >= 1).
        max_width: width to fit, in pixels (int >= 1).
        max_height: height to fit, in pixels (int >= 1).
        border: pixels between and around tiles (int >= 0).
        max_scale: largest enlargement (int >= 1).
        order: channel shown in each slot (default: channel order).
        channels: channels of the stack (default: ``count``); when larger, ``order`` names the
            ``count`` channels shown (a page of a wide layer).

    Returns:
        The chosen :class:`GridLayout`.

    Raises:
        TypeError: for a count, size, border or scale that is not an int (8.0 included), or an
            ``order`` that is not a sequence of ints.
        ValueError: for non-positive sizes, counts or scales, a negative border, or an ``order``
            that does not name ``count`` distinct channels of the stack.
    """
    count = check_int(count, "count", minimum=1)
    map_height = check_int(map_height, "map_height", minimum=1)
    map_width = check_int(map_width, "map_width", minimum=1)
    max_width = check_int(max_width, "max_width", minimum=1)
    max_height = check_int(max_height, "max_height", minimum=1)
    border = check_int(border, "border", minimum=0)
    max_scale = check_int(max_scale, "max_scale", minimum=1)
    channels = count if channels is None else check_int(channels, "channels", minimum=count)
    order_t = () if order is None else _check_order(order)

    def quantize(fit: float, rows: int, cols: int) -> tuple[int, int]:
        if fit >= 1:
            return max(1, min(max_scale, int(math.floor(fit)))), 1
        # the smallest shrink >= 2 whose tiles fit, computed (a search one shrink at a time took seconds
        # for maps 100000 units wide); tiles of 1 unit, the largest shrink, where none fits
        largest = max(2, map_height, map_width)
        room_w = (max_width - (cols + 1) * border) // cols  # the widest tile that fits
        room_h = (max_height - (rows + 1) * border) // rows
        if room_w < 1 or room_h < 1:
            return 1, largest
        return 1, min(largest, max(2, -(-map_width // room_w), -(-map_height // room_h)))

    box_aspect = max_width / max_height
    best_key: tuple | None = None
    choice = (1, count, 1, 1)
    for cols in range(1, count + 1):
        rows = -(-count // cols)
        fit_w = (max_width - (cols + 1) * border) / (cols * map_width)
        fit_h = (max_height - (rows + 1) * border) / (rows * map_height)
        scale, shrink = quantize(min(fit_w, fit_h), rows, cols)
        tile = (-(-map_width // shrink) * scale) * (-(-map_height // shrink) * scale)
        width = cols * map_width * scale / shrink
        height = rows * map_height * scale / shrink
        key = (tile, -(rows * cols - count), -abs(math.log(width / height / box_aspect)))
        if best_key is None or key > best_key:
            best_key, choice = key, (rows, cols, scale, shrink)
    rows, cols, scale, shrink = choice
    return GridLayout(
        count=count,
        rows=rows,
        cols=cols,
        map_height=map_height,
        map_width=map_width,
        scale=scale,
        shrink=shrink,
        border=border,
        order=order_t,
        channels=channels,
    )


def _check_order(order: object) -> tuple[int, ...]:
    """``order`` (channel per slot: a list, a tuple or a 1-D integer array) as a tuple of ints;
    0.5 is refused rather than truncated to channel 0."""
    accepted = "order must be a sequence of channel indices (ints), one per slot"
    if isinstance(order, (str, bytes)) or not isinstance(order, (Sequence, np.ndarray)):
        raise TypeError(f"{accepted}, got {type(order).__name__} {order!r}")
    if isinstance(order, np.ndarray) and order.ndim != 1:
        raise ValueError(f"{accepted}, got an array of shape {order.shape}")
    return tuple(check_int(channel, "each channel of order") for channel in order)


def _check_layout(layout: object) -> None:
    if not isinstance(layout, GridLayout):
        raise TypeError(f"layout must be a GridLayout (see grid_layout), got {type(layout).__name__} {layout!r}")


def _place(canvas: np.ndarray, ordered: np.ndarray, layout: GridLayout) -> None:
    """Write tiles (C, th, tw[, 3]) in slot order into the canvas interior."""
    th, tw, b = layout.tile_height, layout.tile_width, layout.border
    full_rows = layout.count // layout.cols
    extra = ordered.shape[3:]
    if full_rows:
        # one strided assignment for all complete rows: view the interior as (rows, th+b, cols, tw+b)
        block = ordered[: full_rows * layout.cols].reshape(full_rows, layout.cols, th, tw, *extra)
        region = canvas[b : b + full_rows * (th + b), b : b + layout.cols * (tw + b)]
        region = region.reshape(full_rows, th + b, layout.cols, tw + b, *extra)
        region[:, :th, :, :tw] = np.swapaxes(block, 1, 2)
    for slot in range(full_rows * layout.cols, layout.count):
        row, col = divmod(slot, layout.cols)
        y, x = b + row * (th + b), b + col * (tw + b)
        canvas[y : y + th, x : x + tw] = ordered[slot]


# codes of the index canvas past the colormap's 256 entries (see GridPainter)
_BORDER_CODE, _NAN_CODE, _MARK_CODE, _DATA_MARK_CODE = 256, 257, 258, 259
_PAINTER_LUTS: dict[tuple[str, tuple[int, ...]], np.ndarray] = {}


def _painter_lut(cmap: str, nan_rgb: np.ndarray) -> np.ndarray:
    """The colormap's 256 colours as 4-byte pixels, then the border, NaN, mark and data-mark colours."""
    colours = get_lut32(cmap)  # first: refuses a name that is no colormap's (a list would be unhashable below)
    key = (cmap, tuple(int(v) for v in nan_rgb))
    lut = _PAINTER_LUTS.get(key)
    if lut is None:
        extra = np.array([BORDER_COLOR, key[1], MARK_COLOR, DATA_MARK_COLOR], dtype=np.uint8)
        rgbx = np.concatenate([extra, np.full((4, 1), 255, dtype=np.uint8)], axis=1)
        lut = np.concatenate([colours, np.ascontiguousarray(rgbx).view(np.uint32).reshape(4)])
        lut.setflags(write=False)
        if len(_PAINTER_LUTS) > 64:
            _PAINTER_LUTS.clear()
        _PAINTER_LUTS[key] = lut
    return lut


class GridPainter:
    """Colours stacks into mosaics of one layout, on fixed value ranges, with one colormap and marks.

    What the frames of a drag share (the scale of each channel's range, the borders and empty
    slots, the marks, the colours) is prepared once; each call then scales, tiles and colours
    one stack: unit ``v`` of channel ``c`` gets colour ``round(255 * clip((v - lo[c]) / (hi[c] -
    lo[c]), 0, 1))`` of the colormap (a channel with an empty range, ``hi == lo``, gets colour 0),
    and NaN and infinite units ``nan_color``. :func:`feature_grid` draws through one.

    Args:
        layout: the geometry (a page of a wide layer included).
        lo, hi: the range of every channel of the stack: scalars or shape (``layout.channels``,),
            finite, ``lo <= hi``.
        cmap: colormap name.
        marked: bool (``layout.channels``,) channels to mark as dead on this image (red frame, ``\\``),
            or None.
        data_marked: bool (``layout.channels``,) channels to mark as dead over a data set (orange
            frame, ``/``), or None. A channel in both is crossed, in a red frame.
        nan_color: RGB of NaN and infinite units.

    Raises:
        TypeError: for a layout that is not a :class:`GridLayout`, ranges or a colour that are not numbers.
        ValueError: for ranges :func:`~cnnwidgets.render._checks.check_lo_hi` refuses, an unknown
            colormap, marks of another shape, or a colour outside 0..255.
    """

    def __init__(
        self,
        layout: GridLayout,
        lo: np.ndarray | float,
        hi: np.ndarray | float,
        cmap: str = "viridis",
        *,
        marked: np.ndarray | None = None,
        data_marked: np.ndarray | None = None,
        nan_color: tuple[int, int, int] = NAN_COLOR,
    ) -> None:
        _check_layout(layout)
        self.layout = layout
        low, high = check_lo_hi(lo, hi, layout.channels)
        scale, offset, _ = linear_scale(low, high, 255.0, 0.5)  # + 0.5: rounds to the nearest index
        order = np.asarray(layout.order, dtype=np.int64)
        # a stack of all the channels is coloured in channel order and tiled in slot order; the
        # maps of a page come in slot order
        self._all = (low[:, None, None], scale[:, None, None], offset[:, None, None])
        self._page = (low[order][:, None, None], scale[order][:, None, None], offset[order][:, None, None])
        self._slots = None if np.array_equal(order, np.arange(layout.channels)) else order
        self._lut = _painter_lut(cmap, check_color(nan_color, "nan_color"))
        self._template = np.full((layout.height, layout.width), _BORDER_CODE, dtype=np.uint16)
        marks = np.zeros_like(self._template)
        _paint_marks(marks, layout, data_marked, np.uint16(_DATA_MARK_CODE), "data_marked", rising=True)
        _paint_marks(marks, layout, marked, np.uint16(_MARK_CODE))
        self._mark_at = np.flatnonzero(marks)
        self._mark_codes = marks.ravel()[self._mark_at]

    def __call__(self, maps: np.ndarray) -> np.ndarray:
        """The mosaic of ``maps``, uint8 (layout.height, layout.width, 3).

        Args:
            maps: float (C, h, w): the maps of every channel of the stack in channel order (C =
                ``layout.channels``), or, on a page, those of the shown channels in slot order (C =
                ``layout.count``); at the tiles' resolution before enlargement (``h`` =
                ``ceil(map_height / shrink)``, likewise ``w``).

        Raises:
            ValueError: for maps of another shape.
            TypeError: for maps that are not real numbers.
        """
        layout = self.layout
        maps = as_real_array(maps, "maps")
        h, w = layout.tile_height // layout.scale, layout.tile_width // layout.scale
        if maps.shape == (layout.channels, h, w):
            (low, scale, offset), slots = self._all, self._slots
        elif maps.shape == (layout.count, h, w):
            (low, scale, offset), slots = self._page, None
        else:
            raise ValueError(f"expected maps of shape ({layout.channels}, {h}, {w}) for this layout"
                             + (f" (or ({layout.count}, {h}, {w}), the page's)" if layout.count < layout.channels else "")
                             + f", got {maps.shape}")
        idx = scale_channels(maps, low, scale, offset, 0.5)  # inf * 0 (an empty range) is NaN, drawn as 0
        nonfinite = None
        if not np.isfinite(idx).all():
            # a non-finite unit, or a finite one scaled past float32 (a huge value over a tiny range)
            nonfinite = ~np.isfinite(maps)
            np.nan_to_num(idx, copy=False, nan=0.0)
        np.clip(idx, 0.0, 255.0, out=idx)
        index = idx.astype(np.uint16)
        if nonfinite is not None:
            index[nonfinite] = _NAN_CODE
        if slots is not None:
            index = index[slots]
        if layout.scale > 1:
            index = upscale(index, layout.scale, color=False)
        canvas = self._template.copy()
        _place(canvas, index, layout)
        canvas.ravel()[self._mark_at] = self._mark_codes
        # an RGB view of 4-byte pixels: one copy per pixel to colour, and encoded without repacking
        return self._lut.take(canvas).view(np.uint8).reshape(layout.height, layout.width, 4)[..., :3]


def _paint_frame(out: np.ndarray, layout: GridLayout, color: np.ndarray) -> None:
    """Paint the borders and the empty slots."""
    th, tw, b = layout.tile_height, layout.tile_width, layout.border
    if b:
        for row in range(layout.rows + 1):
            y = row * (th + b)
            out[y : y + b] = color
        for col in range(layout.cols + 1):
            x = col * (tw + b)
            out[:, x : x + b] = color
    for slot in range(layout.count, layout.rows * layout.cols):
        row, col = divmod(slot, layout.cols)
        y, x = b + row * (th + b), b + col * (tw + b)
        out[y : y + th, x : x + tw] = color


def _paint_marks(out: np.ndarray, layout: GridLayout, marked: np.ndarray | None, color: np.ndarray,
                 what: str = "marked", rising: bool = False) -> None:
    """Frame each marked channel's tile in ``color`` and draw a diagonal: from the top left down
    (``\\``), or with ``rising`` from the bottom left up (``/``)."""
    if marked is None:
        return
    marked = np.asarray(marked, dtype=bool)
    if marked.shape != (layout.channels,):
        raise ValueError(f"{what} must have shape ({layout.channels},), got {marked.shape}")
    for channel in layout.order:
        if not marked[channel]:
            continue
        x, y, w, h = layout.tile_rect(int(channel))
        out[y, x : x + w] = color
        out[y + h - 1, x : x + w] = color
        out[y : y + h, x] = color
        out[y : y + h, x + w - 1] = color
        n = min(w, h)
        diag = np.arange(n)
        step = (diag * h) // n  # corner to corner also on a tile taller than wide
        rows = y + h - 1 - step if rising else y + step
        out[rows, x + (diag * w) // n] = color


def mosaic(
    tiles: np.ndarray,
    layout: GridLayout,
    *,
    border_color: tuple[int, int, int] = BORDER_COLOR,
    marked: np.ndarray | None = None,
    mark_color: tuple[int, int, int] = MARK_COLOR,
) -> np.ndarray:
    """Assemble coloured tiles into one image.

    Args:
        tiles: uint8 array (C, tile_height, tile_width, 3) in channel order (already scaled to
            the layout's tile size), C the layout's ``channels``.
        layout: the geometry (its ``order`` places the channels).
        border_color: RGB of the borders and empty slots.
        marked: optional bool array (C,); marked channels get a frame in ``mark_color``
            (drawn on the tile's outermost pixels, so it shows even with ``border=0``) and a
            diagonal stroke, e.g. dead channels.
        mark_color: RGB of the marking.

    Returns:
        uint8 array (layout.height, layout.width, 3).

    Raises:
        TypeError: for a layout that is not a :class:`GridLayout`, or colours that are not
            three ints.
        ValueError: if the tile array does not match the layout, or for colours outside 0..255.
    """
    _check_layout(layout)
    border_rgb = check_color(border_color, "border_color")
    mark_rgb = check_color(mark_color, "mark_color")
    tiles = np.asarray(tiles)
    th, tw = layout.tile_height, layout.tile_width
    if tiles.shape != (layout.channels, th, tw, 3) or tiles.dtype != np.uint8:
        raise ValueError(
            f"tiles must be uint8 of shape ({layout.channels}, {th}, {tw}, 3) for this layout, "
            f"got {tiles.dtype} {tiles.shape}"
        )
    out = np.empty((layout.height, layout.width, 3), dtype=np.uint8)
    _paint_frame(out, layout, border_rgb)
    _place(out, tiles[np.asarray(layout.order, dtype=np.int64)], layout)
    _paint_marks(out, layout, marked, mark_rgb)
    return out


def feature_grid(
    acts: np.ndarray,
    *,
    mode: str = "channel",
    fixed: tuple[np.ndarray | float, np.ndarray | float] | None = None,
    cmap: str = "viridis",
    order: np.ndarray | list[int] | None = None,
    marked: np.ndarray | None = None,
    data_marked: np.ndarray | None = None,
    layout: GridLayout | None = None,
    max_width: int = 720,
    max_height: int = 480,
    border: int = 1,
    shrink_mode: str = "mean",
    nan_color: tuple[int, int, int] = NAN_COLOR,
) -> tuple[np.ndarray, GridLayout]:
    """Normalise, colour and tile a (C, H, W) activation stack into one RGB image.

    Ranges come from :func:`~cnnwidgets.render.value_ranges` (finite values only; a channel
    with no finite unit gets an empty range, which leaves the others' alone) and colours from
    :func:`~cnnwidgets.render.colormaps.quantize`. A NaN or infinite unit (a float64 value beyond
    float32's range is an infinite one) is drawn in ``nan_color``, so that it is not mistaken
    for a dead unit (the lowest colour) or a strong one; the other units of its channel keep
    their colours. With ``shrink_mode="mean"`` a block
    that holds a non-finite unit has a non-finite mean and is drawn in ``nan_color`` too. No
    numpy warning is raised for non-finite units, and finite input pays for no extra pass.

    Args:
        acts: float activations (C, H, W).
        mode: normalisation mode, one of :data:`~cnnwidgets.render.NORM_MODES` (``"channel"``,
            ``"layer"``, ``"fixed"``; see :func:`~cnnwidgets.render.value_ranges`).
        fixed: ``(lo, hi)`` for mode ``"fixed"``.
        cmap: colormap name.
        order: channel per slot, e.g. from :func:`~cnnwidgets.render.activation_order`; fewer
            than C channels: only those are drawn (a page of a wide layer).
        marked: bool (C,) channels to mark (dead channels): a frame in :data:`MARK_COLOR` (red)
            and a diagonal from the top left down.
        data_marked: bool (C,) channels to mark in a second way (dead over a data set): a frame
            in :data:`DATA_MARK_COLOR` (orange) and a diagonal from the bottom left up. A channel
            in both gets the red frame and both diagonals (a cross).
        layout: reuse a layout (its ``channels`` and map size must match C, H, W; it may show
            some of the channels only); otherwise one is chosen with :func:`grid_layout`.
            Ranges of mode ``"layer"`` are those of all C channels, also on a page.
        max_width: passed to :func:`grid_layout`.
        max_height: passed to :func:`grid_layout`.
        border: passed to :func:`grid_layout`.
        shrink_mode: how a layout with ``shrink > 1`` reduces the maps: ``"mean"`` of each
            block, or ``"stride"`` (every ``shrink``-th unit: nearly free, for previews).
        nan_color: RGB of NaN and infinite units, three ints in 0..255 (default
            :data:`NAN_COLOR`, magenta).

    Returns:
        ``(image, layout)``: uint8 (H', W', 3) and the geometry to map pixels to channels.

    Raises:
        ValueError: for a stack that is not (C, H, W), an unknown mode, colormap or
            ``shrink_mode``, a ``fixed`` range :func:`~cnnwidgets.render.value_ranges` refuses
            (reversed, ``lo > hi``, or not finite), a layout that does not fit the stack, or a
            ``nan_color`` outside 0..255 (and see :func:`grid_layout`).
        TypeError: for a ``layout`` that is not a :class:`GridLayout`, activations that are not
            real numbers, or a ``nan_color`` that is not three ints (and see :func:`grid_layout`).
    """
    nan_rgb = check_color(nan_color, "nan_color")
    if shrink_mode not in ("mean", "stride"):  # refused whether or not this layout shrinks
        raise ValueError(f"shrink_mode must be 'mean' or 'stride', got {shrink_mode!r}")
    acts = as_real_array(acts, "the activation stack")
    if acts.ndim != 3:
        raise ValueError(f"expected an activation stack of shape (C, H, W), got shape {acts.shape}")
    c, h, w = acts.shape
    if c == 0 or h == 0 or w == 0:
        raise ValueError(f"the activation stack of shape {acts.shape} has no channels or empty maps (no row or no "
                         "column): there is nothing to draw")
    if layout is None:
        order = None if order is None else _check_order(order)
        count = c if order is None else len(order)
        if count > c:
            raise ValueError(f"order names {count} slots, more than the stack's {c} channels: it names each "
                             f"channel shown once, from 0..{c - 1}")
        layout = grid_layout(count, h, w, max_width=max_width, max_height=max_height, border=border, order=order,
                             channels=c)
    else:
        _check_layout(layout)
        if (layout.channels, layout.map_height, layout.map_width) != (c, h, w):
            raise ValueError(
                f"layout is for ({layout.channels}, {layout.map_height}, {layout.map_width}) maps, got {acts.shape}"
            )
    lo, hi = value_ranges(acts, mode, fixed=fixed)
    if layout.count < c:
        # a page: only its channels are shrunk and coloured, on their ranges among all C
        acts = acts[np.asarray(layout.order, dtype=np.int64)]
    if layout.shrink > 1:
        if shrink_mode == "mean":
            acts = downscale(acts, layout.shrink)  # a block holding +inf and -inf averages to NaN
        else:
            acts = acts[:, :: layout.shrink, :: layout.shrink]
    painter = GridPainter(layout, lo, hi, cmap, marked=marked, data_marked=data_marked, nan_color=nan_rgb)
    return painter(acts), layout
