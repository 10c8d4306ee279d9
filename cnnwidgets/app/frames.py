"""The render stage: computed activations -> the images and rows the explorer shows (numpy only)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from cnnwidgets import render as R
from cnnwidgets.app.state import ComputeRequest, RenderRequest
from cnnwidgets.render.grid import NAN_COLOR, GridLayout
from cnnwidgets.render.normalize import ChannelStats
from cnnwidgets.widgets.scores import score_rows

__all__ = ["GRID_PAGE", "Baseline", "Computed", "Frame", "LayerGeometry", "grid_pages", "page_channels",
           "render_frame"]

FINAL_QUALITY = 90
DRAFT_QUALITY = 75
BOX_COLOR = (255, 212, 0)
BOX_EDGE_COLOR = (30, 30, 30)  # the line around the box's yellow one

GRID_PAGE = 256
"""The most channels the grid shows at once. A wider layer (resnet50's 2048 maps of 7 x 7) is
shown a page of this many at a time: all of them at once made tiles of a few pixels, a texture
in which no map could be read."""


def grid_pages(channels: int) -> int:
    """How many pages the grid of a layer with ``channels`` channels has."""
    return max(1, -(-channels // GRID_PAGE))


def page_channels(order: np.ndarray | None, channels: int, page: int | None,
                  selected: int) -> tuple[np.ndarray | None, int]:
    """``(shown, page)``: the channels a page of the grid shows, in slot order (None: all of them,
    the layer has at most :data:`GRID_PAGE`), and the page's index.

    Args:
        order: the grid's channel order (sorted by activation), None for channel order.
        channels: the layer's channel count.
        page: the page asked for (clamped to the pages there are); None: the one that holds
            ``selected``.
        selected: the selected channel.
    """
    if channels <= GRID_PAGE:
        return None, 0
    full = np.arange(channels) if order is None else np.asarray(order)
    if page is None:
        found = np.flatnonzero(full == selected)
        page = int(found[0]) // GRID_PAGE if len(found) else 0
    page = min(max(int(page), 0), grid_pages(channels) - 1)
    return full[page * GRID_PAGE:(page + 1) * GRID_PAGE], page


@dataclass(frozen=True)
class LayerGeometry:
    """Where a layer's units sit in the input (from ``LayerInfo``), or Nones when unknown."""

    jump: float | None = None
    start: float | None = None


@dataclass
class Baseline:
    """The unoccluded image's activations at one layer and what is derived from them once.

    Attributes:
        acts: (C, H, W) float32.
        lo, hi: per-channel range (the ``"fixed"`` normalisation).
        order: channels by decreasing mean activation (the ``sort`` order, stable while dragging).
        dead: channels dead on this image: all zero (no positive unit in a layer without negative
            values), or with no positive unit in a layer whose output goes straight into a ReLU
            (``relu_follows``). In a signed layer followed by anything else (a batch norm shifts
            signs) no channel is marked: one with no positive value there may still fire later.
        signed: whether the layer has negative values here (a convolution before its ReLU or
            its batch norm).
        relu_follows: whether a ReLU runs right after the layer (see
            :func:`cnnwidgets.methods.dead.zeroed_by_relu`).
        nonfinite: channels holding a NaN or an infinite value (such units are drawn in
            :data:`~cnnwidgets.render.grid.NAN_COLOR`, magenta, in the grid and the channel view;
            a sign of non-finite weights, e.g. after a diverged training step).
        probs: class probabilities of the unoccluded image, or None.
    """

    acts: np.ndarray
    lo: np.ndarray = field(init=False)
    hi: np.ndarray = field(init=False)
    order: np.ndarray = field(init=False)
    dead: np.ndarray = field(init=False)
    signed: bool = field(init=False)
    nonfinite: np.ndarray = field(init=False)
    probs: np.ndarray | None = None
    relu_follows: bool = False

    def __post_init__(self) -> None:
        if self.acts.size == 0:
            # the explorer offers no such layer; one that the model's change emptied meanwhile lands here
            raise ValueError(
                f"the layer's feature map is empty {tuple(self.acts.shape)} at this input size: pick an earlier "
                "layer or a larger input"
            )
        self.lo, self.hi = _per_channel_ranges(self.acts, "channel")
        self.order = R.activation_order(self.acts, "mean")
        self.signed = bool((self.acts < 0).any())
        self.dead = R.dead_channel_mask(self.acts)
        if self.signed and not self.relu_follows:
            self.dead[:] = False
        self._painters: dict[tuple, R.GridPainter] = {}
        with np.errstate(over="ignore", invalid="ignore"):  # a sum is finite iff all its terms are (or it overflows)
            self.nonfinite = ~np.isfinite(self.acts.reshape(self.acts.shape[0], -1).sum(axis=1, dtype=np.float64))


    def painter(self, layout: GridLayout, cmap: str, data_marked: np.ndarray | None) -> R.GridPainter:
        """The grid painter of this layer's fixed ranges (:attr:`lo`, :attr:`hi`) and dead channels
        on ``layout``, in ``cmap``, with the channels ``data_marked`` marked too (made once: the
        frames of a drag share it)."""
        key = (layout, cmap, None if data_marked is None else data_marked.tobytes())
        found = self._painters.get(key)
        if found is None:
            if len(self._painters) >= 8:
                self._painters.clear()
            found = R.GridPainter(layout, self.lo, self.hi, cmap, marked=self.dead, data_marked=data_marked)
            self._painters[key] = found
        return found


class Computed:
    """Result of the compute stage for one :class:`ComputeRequest`.

    Args:
        key: the request computed.
        acts: the activations (C, H, W): a float32 array, or a zero-argument callable that
            makes the array on first use (the controller passes one, so a draft that draws only
            every few units and one channel never pays for a full copy of a large layer).
        baseline: the unoccluded image's activations at the same layer.
        probs: class probabilities, or None.
        seconds: time the compute stage took.
        strided: optional ``(step, channel) -> (every step-th unit of all channels, channel c
            in full)``: the cheap way to read what a draft draws; without it they are cut from
            ``acts``.
    """

    def __init__(
        self,
        key: ComputeRequest,
        acts: np.ndarray | Callable[[], np.ndarray],
        baseline: Baseline,
        probs: np.ndarray | None,
        seconds: float,
        strided: Callable[[int, int], tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> None:
        self.key = key
        self.baseline = baseline
        self.probs = probs
        self.seconds = seconds
        self._acts = acts if isinstance(acts, np.ndarray) else None
        self._make_acts = None if isinstance(acts, np.ndarray) else acts
        self._strided = strided
        self._stats: ChannelStats | None = None

    def __repr__(self) -> str:
        return f"Computed(key={self.key!r}, seconds={self.seconds:.4f})"

    @property
    def acts(self) -> np.ndarray:
        """The activations, float32 (C, H, W) (made on first use)."""
        if self._acts is None:
            self._acts = self._make_acts()
            self._make_acts = None
        return self._acts

    def draft_view(self, step: int, channel: int) -> tuple[np.ndarray, np.ndarray]:
        """``(acts[:, ::step, ::step], acts[channel])`` without copying the whole stack."""
        if self._acts is None and self._strided is not None:
            return self._strided(step, channel)
        acts = self.acts
        return acts[:, ::step, ::step], acts[channel]

    @property
    def stats(self) -> ChannelStats:
        """Per-channel statistics of ``acts`` (computed once; channel switches reuse them)."""
        if self._stats is None:
            self._stats = R.channel_stats(self.acts)
        return self._stats


@dataclass
class Frame:
    """Everything one update shows, kept so that Python can read what the user sees.

    Images are rendered at their own resolution (one pixel per feature-map unit, or per
    ``shrink x shrink`` units for very large layers and for drafts); the browser enlarges
    them to ``grid_display_width`` / ``panel_display_width`` CSS pixels, so fewer pixels are
    colored, encoded and sent.

    Attributes:
        grid: the feature mosaic, uint8 (H, W, 3).
        layout: its geometry.
        grid_bytes: the mosaic as sent to the browser.
        grid_display_width: width of the mosaic on screen, CSS pixels.
        stats: per-channel statistics of the shown activations (hover text); None in drafts,
            which keep the previous statistics on screen (nobody hovers the grid while dragging).
        panel: the selected channel (left) and what the occluder removed from it (right: unoccluded
            minus occluded, red where the activation fell), uint8.
        panel_bytes: the panel as sent.
        panel_display_width: width of the panel on screen, CSS pixels.
        rows: class-score rows (see :func:`~cnnwidgets.widgets.scores.score_rows`), or None.
        channel: the channel drawn in the panel.
        render_seconds: time spent in this stage.
        computed: the activations and scores drawn.
        image_format: the format of ``grid_bytes``, ``"jpeg"`` or ``"png"``.
        marked: bool (C,) channels marked besides those dead on this image (for example the
            channels dead over a whole data set), or None.
        value_range: the values the selected channel's view draws at the colormap's low and high
            ends (its tile in the grid too; with the ``"layer"`` normalisation, every tile's).
        page: the page of a wide layer the grid shows (its channels: ``layout.order``), 0 for a
            layer shown whole.
        pages: how many pages the layer's grid has (1: shown whole).
    """

    grid: np.ndarray
    layout: GridLayout
    grid_bytes: bytes
    grid_display_width: int
    stats: ChannelStats | None
    panel: np.ndarray
    panel_bytes: bytes
    panel_display_width: int
    rows: list[dict] | None
    channel: int
    render_seconds: float
    computed: Computed
    image_format: str = "jpeg"
    marked: np.ndarray | None = None
    value_range: tuple[float, float] = (0.0, 0.0)
    page: int = 0
    pages: int = 1

    @property
    def dead(self) -> int:
        """Number of channels dead on this image (no positive unit on the unoccluded image)."""
        return int(self.computed.baseline.dead.sum())

    @property
    def dead_in_data(self) -> int:
        """Number of channels marked as dead over a data set (0 when none were given)."""
        return 0 if self.marked is None else int(np.asarray(self.marked, dtype=bool).sum())


class LayoutCache:
    """Mosaic layouts: choosing one is O(C) and the answer for a (shape, order) never changes.

    A layout is rendered at one pixel per unit (``scale`` 1; ``shrink`` > 1 only when even that
    does not fit ``max_width x max_height``) and enlarged on screen to fill that box.
    Draft layouts (while dragging) shrink further until the mosaic has at most
    ``draft_pixels`` pixels, and are shown at the same on-screen size as the final one.
    """

    def __init__(self, max_width: int = 720, max_height: int = 440, draft_pixels: int = 65_536) -> None:
        self.max_width = max_width
        self.max_height = max_height
        self.draft_pixels = draft_pixels
        self._layouts: dict[tuple, tuple[GridLayout, int]] = {}
        self._strided: dict[tuple, GridLayout] = {}

    def get(self, shape: tuple[int, int, int], order: np.ndarray | None, draft: bool = False) -> tuple[GridLayout, int]:
        """``(layout, display_width)`` for a stack shape, a slot order (of some of the channels:
        a page) and draft or final quality."""
        key = (shape, None if order is None else order.tobytes(), draft)
        found = self._layouts.get(key)
        if found is not None:
            return found
        if len(self._layouts) > 64:
            self._layouts.clear()
        if draft:
            final, width = self.get(shape, order, draft=False)
            layout = final
            while layout.width * layout.height > self.draft_pixels and layout.tile_width > 1 and layout.tile_height > 1:
                layout = dataclasses.replace(layout, shrink=layout.shrink + 1)
            found = (layout, width)
        else:
            # maps of a few units (a global pooling's 1 x 1) are drawn with several pixels per unit:
            # at one pixel, the 1-pixel borders between tiles were as wide as the tiles, a field of dots
            side = max(shape[1], shape[2])
            scale = max(1, TINY_TILE_PIXELS // side) if side <= TINY_MAP_SIDE else 1
            count = shape[0] if order is None else len(order)
            layout = R.grid_layout(count, shape[1], shape[2], max_width=self.max_width, max_height=self.max_height,
                                   max_scale=scale, order=order, channels=shape[0])
            # the browser enlarges the mosaic to fill the box (by a fractional factor: an integer
            # one leaves small layers tiny, e.g. 16 maps of 64x64 would stay at 261 px)
            enlarge = max(1.0, min(8.0, self.max_width / layout.width, self.max_height / layout.height))
            found = (layout, round(layout.width * enlarge))
        self._layouts[key] = found
        return found

    def strided(self, layout: GridLayout, size: tuple[int, ...]) -> GridLayout:
        """``layout`` for maps already cut to every ``layout.shrink``-th unit, of ``size`` (h, w):
        the same tiles, drawn from those units one to one."""
        key = (layout, tuple(size))
        found = self._strided.get(key)
        if found is None:
            if len(self._strided) > 64:
                self._strided.clear()
            found = dataclasses.replace(layout, map_height=int(size[0]), map_width=int(size[1]), shrink=1)
            self._strided[key] = found
        return found


DRAFT_PANEL_SIDE = 112

#: Maps at most this many units across are drawn with about TINY_TILE_PIXELS pixels per tile side.
TINY_MAP_SIDE = 4
TINY_TILE_PIXELS = 8


def draft_step(size: tuple[int, int], side: int = DRAFT_PANEL_SIDE) -> int:
    """Pixel step at which a draft draws the channel view of an image of ``size`` = (H, W).

    The largest side is brought to at most ``side`` pixels (step 1 for small images), so a
    drag on a 224 x 224 input colours a quarter of the pixels a final frame does.
    """
    return max(1, -(-max(size) // side))


def _per_channel_ranges(acts: np.ndarray, norm: str) -> tuple[np.ndarray, np.ndarray]:
    """``R.value_ranges(acts, norm)``; for maps of one unit (a global pooling's (C, 1, 1)), whose own
    ranges are all empty (every tile would be the colormap's low end), the layer's range instead, so
    that the tiles compare the channels."""
    if acts.shape[1] * acts.shape[2] == 1:
        norm = "layer"
    return R.value_ranges(acts, norm)


def _ranges(req: RenderRequest, acts: np.ndarray, base: Baseline) -> tuple[np.ndarray, np.ndarray]:
    if req.norm == "fixed":
        return base.lo, base.hi
    return _per_channel_ranges(acts, req.norm)


def _nonfinite_units(values: np.ndarray) -> np.ndarray | None:
    """float32 (h, w): 1 at the NaN and infinite units of ``values``, 0 elsewhere; None when all
    are finite (one reduction)."""
    with np.errstate(over="ignore", invalid="ignore"):  # a sum is finite iff all its terms are (or it overflows)
        if np.isfinite(values.sum(dtype=np.float64)):
            return None
    bad = ~np.isfinite(values)
    return bad.astype(np.float32) if bad.any() else None


def render_frame(
    req: RenderRequest,
    computed: Computed,
    image: np.ndarray,
    box: tuple[int, int, int, int] | None,
    *,
    geometry: LayerGeometry = LayerGeometry(),
    labels: Sequence[str] = (),
    top_k: int = 5,
    layouts: LayoutCache | None = None,
    panel_size: int = 192,
    marked: np.ndarray | None = None,
) -> Frame:
    """Draw one update.

    Args:
        req: how to draw.
        computed: activations (and scores) to draw.
        image: the model's view of the input, uint8 (H, W, 3).
        box: the occluder box drawn on the channel view, or None.
        geometry: receptive-field placement of the layer's units in the image.
        labels: class names.
        top_k: number of classes listed.
        layouts: layout cache (a fresh one if None).
        panel_size: target on-screen size in CSS pixels of each half of the channel view.
        marked: bool (C,) channels to mark besides those dead on this image (for example the
            channels dead over a whole data set), or None.

    Returns:
        The :class:`Frame`.

    Raises:
        ValueError: for a channel out of range, or anything the renderers reject.
    """
    start = time.perf_counter()
    base = computed.baseline
    shape = base.acts.shape
    channels = shape[0]
    if not 0 <= req.channel < channels:
        raise ValueError(f"channel {req.channel} out of range 0..{channels - 1}")
    layouts = layouts or LayoutCache()
    quality = DRAFT_QUALITY if req.draft else FINAL_QUALITY

    ch = req.channel
    # dead on this image: red marks; dead over a data set: orange ones, the other way (a channel both is crossed)
    in_data = None if marked is None else np.asarray(marked, dtype=bool)
    order = base.order if req.sort else None
    shown, page = page_channels(order, channels, req.page, ch)
    layout, grid_width = layouts.get(shape, shown if shown is not None else order, req.draft)
    if shown is not None:
        # the channels on either side of the page, where the arrow keys leave it for the next one
        full = np.arange(channels) if order is None else order
        first = page * GRID_PAGE
        layout = dataclasses.replace(layout, before=int(full[first - 1]) if first > 0 else None,
                                     after=int(full[first + len(shown)]) if first + len(shown) < channels else None)
    if req.draft and req.norm == "fixed":
        # a draft with fixed ranges needs only the units it draws: every shrink-th one, and the
        # selected channel for the channel view
        strided, selected = computed.draft_view(layout.shrink, ch)
        lo, hi = base.lo, base.hi
        drawn = layouts.strided(layout, strided.shape[1:])
        grid = base.painter(drawn, req.cmap, in_data)(strided)
    else:
        acts = computed.acts
        selected = acts[ch]
        lo, hi = _ranges(req, acts, base)
        grid, _ = R.feature_grid(acts, mode="fixed", fixed=(lo, hi), cmap=req.cmap, layout=layout,
                                 marked=base.dead, data_marked=in_data, shrink_mode="stride" if req.draft else "mean")
    grid_bytes = R.encode_jpeg(grid, quality, subsampling=req.draft)

    span = hi[ch] - lo[ch]
    values = (selected - lo[ch]) / span if span > 0 else np.zeros_like(selected)
    # the drawing functions refuse NaN in maps given to them: the non-finite units are drawn
    # without it and painted over afterwards in the grid's colour for them (the status line
    # names the channels that hold some)
    bad_units = _nonfinite_units(selected)
    values = np.clip(np.nan_to_num(values, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    full_size = image.shape[:2]
    # drafts draw the channel view at a reduced resolution (the browser enlarges it to the same
    # on-screen size); the final frame after the drag is drawn at the image's own resolution
    step = draft_step(full_size) if req.draft else 1
    jump, origin = geometry.jump, geometry.start
    if step > 1:
        image = image[step // 2 :: step, step // 2 :: step]
        if jump is not None and origin is not None:
            # input pixel p sits at draft pixel (p + 0.5) / step - 0.5
            jump, origin = jump / step, (origin + 0.5) / step - 0.5
        if box is not None:
            box = tuple(int(round(v / step)) for v in box)
    size = image.shape[:2]
    # both halves resampled alike: the channel over the image smoothly (final frames), the map alone
    # and drafts one block per unit
    mode = "bilinear" if req.overlay and not req.draft else "nearest"
    if req.overlay:
        left = R.overlay_heatmap(image, values, cmap=req.cmap, alpha=0.75, jump=jump, start=origin, mode=mode)
    else:
        left = R.channel_image(values, size, cmap=req.cmap, jump=jump, start=origin)
    magnitude = float(max(abs(base.lo[ch]), abs(base.hi[ch]), 1e-12))
    # what the occluder removed (unoccluded - occluded): red where the activation fell, as in the
    # occlusion map (red: the class falls) and the class scores (red: a fall)
    with np.errstate(invalid="ignore"):  # inf - inf: a non-finite unit, painted below
        diff = (base.acts[ch] - selected) / (2 * magnitude) + 0.5
    right = R.channel_image(diff, size, cmap="RdBu_r", jump=jump, start=origin, mode=mode)
    # a unit non-finite in either map has no difference to show
    bad_diff = _nonfinite_units(diff)
    for half, bad in ((left, bad_units), (right, bad_diff)):
        if bad is not None:
            half[R.map_to_input(bad, size, jump=jump, start=origin, mode="nearest") > 0.5] = NAN_COLOR
    factor = max(1, round(panel_size / max(full_size)))
    if box is not None:
        # yellow with a dark line around it: it stays visible over yellow (viridis' top) and dark parts alike
        x, y, w, h = box
        left = R.draw_rect(left, (x - 1, y - 1, w + 2, h + 2), color=BOX_EDGE_COLOR, copy=False)
        left = R.draw_rect(left, box, color=BOX_COLOR, copy=False)
        right = R.draw_rect(right, box, color=(40, 40, 40), copy=False)
    gap = max(1, 8 // factor)
    panel = R.hstack([left, right], gap=max(1, gap // step))
    panel_bytes = R.encode_jpeg(panel, quality, subsampling=req.draft)
    # on screen the panel has the final frame's width, whatever resolution it was drawn at
    panel_width = (2 * full_size[1] + gap) * factor

    rows = None
    if computed.probs is not None:
        rows = score_rows(computed.probs, labels, reference=base.probs, k=top_k, pinned=req.target)
    return Frame(
        grid=grid,
        layout=layout,
        grid_bytes=grid_bytes,
        grid_display_width=grid_width,
        stats=None if req.draft else computed.stats,
        panel=panel,
        panel_bytes=panel_bytes,
        panel_display_width=panel_width,
        rows=rows,
        channel=ch,
        render_seconds=time.perf_counter() - start,
        computed=computed,
        marked=marked,
        value_range=(float(lo[ch]), float(hi[ch])),
        page=page,
        pages=grid_pages(channels),
    )
