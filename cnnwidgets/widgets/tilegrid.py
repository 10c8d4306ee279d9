"""The feature grid: one mosaic image; hover shows a channel's statistics, a click or an arrow key selects it."""

from __future__ import annotations

from typing import Any, Protocol

import anywidget
import numpy as np
import traitlets as t

from cnnwidgets.widgets._base import CSS, BrowserSetsOnly, browser_int, esm

__all__ = ["GridGeometry", "GridStats", "TileGrid"]


class GridGeometry(Protocol):
    """What the grid needs to know about a mosaic (``cnnwidgets.render.GridLayout`` is one)."""

    width: int

    def channel_at(self, x: float, y: float) -> int | None:
        """The channel under mosaic pixel ``(x, y)``, or None on a border, an empty slot or outside."""
        ...

    def tile_rect(self, channel: int) -> tuple[int, int, int, int]:
        """``(x, y, width, height)`` of the tile that shows ``channel``, in mosaic pixels."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly geometry for the browser."""
        ...


class GridStats(Protocol):
    """Per-channel statistics for the hover text (``cnnwidgets.render.ChannelStats`` is one)."""

    def as_array(self) -> np.ndarray:
        """A (C, 5) array: mean, std, min, max and active fraction per channel."""
        ...

    def describe(self, channel: int) -> str:
        """The hover text of ``channel``."""
        ...


class TileGrid(BrowserSetsOnly, anywidget.AnyWidget):
    """A mosaic of feature maps that knows which channel is under each pixel.

    The browser computes the hovered channel from the synced geometry and shows its
    statistics without asking the kernel, in a tooltip kept inside the grid; ``hover`` is
    reported back (at most once per frame) and a click sets ``selected``.

    The grid is one stop in the tab order. Arrow keys select the tile beside, above or below
    the selected one (Home and End: the first and the last tile), as a click on it does; on a
    page of a wider layer the left arrow on the first tile and the right arrow on the last select
    the channel before or after the page (the geometry's ``before`` and ``after``); while
    the grid has the keyboard focus a text line under it shows the selected channel's statistics
    (the tooltip's text, :meth:`describe`, on one line), which screen readers announce.

    Traits:
        image: encoded mosaic (see ``image_format``).
        geometry: the mosaic geometry, :meth:`GridLayout.to_dict` form (``layout`` stays the
            ipywidgets ``Layout`` of the widget).
        stats: float32 bytes, 5 numbers per channel (mean, std, min, max, active fraction).
        selected: the selected channel (outlined).
        hover: the channel under the pointer, -1 for none.
        display_width: width on screen in CSS pixels (0: the mosaic's own width). Where the
            output is narrower the grid shrinks to fit it, keeping its aspect ratio; hover and
            click map the pointer through the size shown.

    The browser sets ``hover`` and ``selected`` only, each a whole number (``7.0`` is 7); a bool,
    a fraction, anything else or a value for another trait is refused and the kernel's values are
    sent back (see :class:`~cnnwidgets.widgets.controls.BrowserSetsOnly`).

    Keyword arguments (``**kwargs``) are initial trait values: those above, and ipywidgets' own,
    such as ``layout``.
    """

    _BROWSER_SETS = frozenset({"hover", "selected"})

    _esm = esm("tilegrid.js")
    _css = CSS

    image = t.Bytes(b"").tag(sync=True)
    image_format = t.Enum(("jpeg", "png"), default_value="jpeg").tag(sync=True)
    geometry = t.Dict().tag(sync=True)
    stats = t.Bytes(b"").tag(sync=True)
    selected = t.Int(0).tag(sync=True)
    hover = t.Int(-1).tag(sync=True)
    display_width = t.Int(0, min=0).tag(sync=True)

    def _check_browser_values(self, sync_data: dict) -> None:
        for name, what in (("hover", "the tile under the pointer (hover)"),
                           ("selected", "the tile clicked (selected)")):
            if name in sync_data:
                browser_int(sync_data[name], what)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._grid: GridGeometry | None = None
        self._stats: GridStats | None = None

    @property
    def grid(self) -> GridGeometry | None:
        """The geometry of the mosaic shown, or None before the first image."""
        return self._grid

    def show(
        self,
        data: bytes,
        fmt: str,
        grid: GridGeometry,
        stats: GridStats | None = None,
        *,
        display_width: int | None = None,
    ) -> None:
        """Show a new encoded mosaic (``data``, format ``fmt``) with its geometry ``grid`` and
        statistics, in one message.

        ``display_width`` (CSS pixels) enlarges a mosaic rendered at one pixel per unit.
        ``stats=None`` keeps the statistics already shown (cheap frames while dragging).
        """
        self._grid = grid
        if stats is not None:
            self._stats = stats
        with self.hold_sync():
            if display_width is not None and display_width != self.display_width:
                self.display_width = int(display_width)
            self.image_format = fmt
            self.image = data
            geometry = grid.to_dict()
            if geometry != self.geometry:
                self.geometry = geometry
            if stats is not None:
                self.stats = np.ascontiguousarray(stats.as_array(), dtype="<f4").tobytes()

    def channel_at(self, x: float, y: float) -> int | None:
        """The channel under mosaic pixel ``(x, y)`` (None on borders or before the first image)."""
        return None if self._grid is None else self._grid.channel_at(x, y)

    def click(self, x: float, y: float) -> int | None:
        """Do what a click at mosaic pixel ``(x, y)`` does in the browser; returns the channel or None."""
        channel = self.channel_at(x, y)
        if channel is not None:
            self.selected = channel
        return channel

    def describe(self, channel: int) -> str:
        """The hover text of ``channel`` (its statistics), as the browser shows it.

        Without statistics for that channel (none yet, or those of a grid with fewer channels) it
        is ``"channel N"``, as in the browser.
        """
        if self._stats is None or not 0 <= channel < len(self._stats.as_array()):
            return f"channel {channel}"
        return self._stats.describe(channel)
