"""The occluder canvas: an image with a box the user drags and resizes in the browser."""

from __future__ import annotations

import math

import anywidget
import traitlets as t

from cnnwidgets.widgets._base import CSS, BrowserSetsOnly, esm, given

__all__ = ["OccluderCanvas", "clamp_box"]


def clamp_box(
    box: tuple[float, float, float, float], width: int, height: int, *, inside_only: bool = False
) -> tuple[int, int, int, int]:
    """Fit ``box = (x, y, w, h)`` inside a ``width x height`` image: size in [1, image], position inside.

    The numbers are rounded to ints first, halves up (as ``Math.round`` in the browser).

    Args:
        box: (x, y, w, h) in image pixels, any real numbers.
        width, height: the image's size in the same pixels.
        inside_only: refuse a box with no pixel inside the image instead of moving it in
            (a box partly inside is clamped either way).

    Raises:
        ValueError: for a box without positive width and height or with a number that is not
            finite, or (``inside_only``) a box entirely outside the image.
    """
    values = tuple(float(v) for v in box)
    # as written: (2000, 10.5, ...); a huge number as a float (1e+300, not its 301 digits)
    given = tuple(int(v) if v.is_integer() and abs(v) < 2**53 else v for v in values)
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"the occluder box needs finite numbers (x, y, w, h), got {given}")
    x, y, w, h = (math.floor(v + 0.5) for v in values)  # rounds halves up, as Math.round in JS
    if w < 1 or h < 1:
        raise ValueError(f"the occluder box needs a positive width and height, got {given}")
    if inside_only and not (x < width and x + w > 0 and y < height and y + h > 0):
        raise ValueError(f"the occluder box {given} lies entirely outside the {width}x{height} image")
    w, h = min(w, width), min(h, height)
    x = min(max(x, 0), width - w)
    y = min(max(y, 0), height - h)
    return x, y, w, h


class OccluderCanvas(BrowserSetsOnly, anywidget.AnyWidget):
    """An image with a draggable, resizable occluder box.

    The box moves with the pointer in the browser without waiting for the kernel; the kernel
    gets ``box`` at most once per animation frame while dragging and exactly once more,
    together with ``dragging=False``, when the pointer is released. Pressing outside the box
    centres it on the pointer; the corner handle resizes it (a small box carries the handle just
    outside its bottom-right corner, so that the box itself still moves it; a box at the image's
    right or bottom edge carries it inside, so that it stays on the image). One pointer drives a
    drag; other pointers (a second finger) are ignored until it is released.

    The image is one stop in the tab order (a screen reader hears the image's size and the box as
    x, y, width and height in image pixels), and keys do what the pointer does:

    * arrow keys move the box ``key_step`` image pixels per press, Shift+arrows four times as far;
    * Ctrl+arrow keys move its bottom-right corner, as the corner handle does (Shift: farther);
    * ``+`` (or ``=``) and ``-`` grow and shrink it by ``key_step`` pixels in width and height,
      keeping its centre;
    * Enter or Space places a ``default_size`` box in the middle of the image when there is none.

    A key press is a drag: ``box`` and ``dragging=True`` go to the kernel when it moves the box,
    moves of a held key follow at most once per frame, and the release sends the final ``box``
    with ``dragging=False``. The box stays inside the image, as with the pointer.

    Traits:
        image: encoded image bytes (PNG or JPEG, see ``image_format``).
        image_width, image_height: size of the image in its own pixels (the box's units).
        display_width: width on screen in CSS pixels (the height follows the aspect ratio); an output
            narrower than that shrinks the picture and the box with it.
        box: ``(x, y, w, h)`` in image pixels, or None (no occluder). Clamped into the image.
        dragging: True while the user drags or resizes the box.
        enabled: whether the box is shown and can be moved.
        default_size: side of the box created by a press (or Enter) when there is none.
        key_step: image pixels an arrow key moves the box (and ``+``/``-`` resize it) per press.
        fill_color: CSS colour of the box's fill (a preview of the occluder fill).
        fill_image: a ``data:`` URL of a picture the size of the image whose part under the box
            is the box's fill (a fill that is no flat colour: blur, noise), or ``""`` for
            ``fill_color``.

    The browser sets ``box`` and ``dragging`` only: ``box`` as four JSON numbers or null,
    ``dragging`` as true or false. Anything else it sends (strings or booleans in the box, 0 or 1
    for ``dragging``, a box with no pixel on the image, a value for another trait such as the
    image's size) is refused and the kernel's values are sent back; a box partly off the image is
    clamped into it, as the page itself keeps it (see :class:`~cnnwidgets.widgets.controls.BrowserSetsOnly`).

    Keyword arguments (``**kwargs``) are initial trait values: those above, and ipywidgets' own,
    such as ``layout``.
    """

    _BROWSER_SETS = frozenset({"box", "dragging"})

    _esm = esm("occluder.js")
    _css = CSS

    image = t.Bytes(b"").tag(sync=True)
    image_format = t.Enum(("jpeg", "png"), default_value="png").tag(sync=True)
    image_width = t.Int(64, min=1).tag(sync=True)
    image_height = t.Int(64, min=1).tag(sync=True)
    display_width = t.Int(256, min=16).tag(sync=True)
    # read as real numbers, so that _check_box rounds them as the browser does (CInt would truncate)
    box = t.Tuple(t.CFloat(), t.CFloat(), t.CFloat(), t.CFloat(), default_value=None, allow_none=True).tag(sync=True)
    dragging = t.Bool(False).tag(sync=True)
    enabled = t.Bool(True).tag(sync=True)
    default_size = t.Int(16, min=1).tag(sync=True)
    key_step = t.Int(2, min=1).tag(sync=True)
    fill_color = t.Unicode("rgba(128, 128, 128, 0.8)").tag(sync=True)
    fill_image = t.Unicode("").tag(sync=True)

    @t.validate("fill_image")
    def _check_fill_image(self, proposal):
        url = proposal["value"]
        if url and not url.startswith("data:image/"):
            raise t.TraitError(f"fill_image must be a data:image/... URL or '', got {url[:40]!r}")
        return url

    def _check_browser_values(self, sync_data: dict) -> None:
        # every pointer move of a drag comes through here: a few type checks, nothing more
        if "box" in sync_data:
            box = sync_data["box"]
            if box is not None and not (
                isinstance(box, (list, tuple)) and len(box) == 4
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
            ):
                raise t.TraitError(f"box must be four numbers (x, y, w, h) in image pixels, or null for no "
                                   f"occluder; got {given(box)}")
            if box is not None:
                # a box with no pixel on the image (one placed on a larger image the page still
                # showed) is refused, as Python's explorer.box refuses it, not moved to an edge
                # nobody chose; one partly on the image is clamped (_check_box), as the page does
                try:
                    clamp_box(box, self.image_width, self.image_height, inside_only=True)
                except ValueError as exc:
                    raise t.TraitError(str(exc)) from exc
                except OverflowError as exc:  # an int past what a float holds: no JSON number a page sends
                    raise t.TraitError(f"the occluder box needs finite numbers (x, y, w, h), got {given(box)}") from exc
        if "dragging" in sync_data and not isinstance(sync_data["dragging"], bool):
            raise t.TraitError(f"dragging must be true or false, got {given(sync_data['dragging'])}")

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.layout.width = "auto"
        self.layout.height = "auto"

    @t.validate("box")
    def _check_box(self, proposal):
        box = proposal["value"]
        if box is None:
            return None
        try:
            return clamp_box(box, self.image_width, self.image_height)
        except ValueError as exc:
            raise t.TraitError(str(exc)) from exc

    @t.observe("image_width", "image_height")
    def _reclamp(self, change) -> None:
        if self.box is not None:
            self.box = clamp_box(self.box, self.image_width, self.image_height)

    def set_image(self, data: bytes, fmt: str, width: int, height: int) -> None:
        """Show the encoded image ``data`` (``fmt`` ``"png"`` or ``"jpeg"``) of ``width`` x ``height``
        pixels; the box is kept and clamped to it.

        Raises:
            traitlets.TraitError: for a format other than ``"png"``/``"jpeg"`` or a size < 1.
        """
        # the box is clamped once, to the new width and height together: clamped to the new
        # width and the old height first, it could land outside a smaller new image
        with self.hold_sync(), self.hold_trait_notifications():
            self.image_format = fmt
            self.image = bytes(data)
            self.image_width = int(width)
            self.image_height = int(height)
