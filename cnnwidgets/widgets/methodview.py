"""The method panel: pick a visualization method and see its map over the input image."""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as w
import traitlets as t

from cnnwidgets.widgets._base import CheckedCheckbox, CheckedDropdown, CheckedFloatProgress, close_parts
from cnnwidgets.widgets.controls import wrapping_row

__all__ = ["MIN_WIDTH", "MethodView"]

MIN_WIDTH = 240
"""The narrowest the view gets (CSS pixels, unless the output is narrower): the method menu fits."""


#: The height kept for the controls while a method is shown: two lines of controls.
ACTIVE_CONTROLS_HEIGHT = "64px"

_LAST_MAP = "(above, faded: the map shown until now)"


def time_left_text(seconds: float) -> str:
    """An estimate of the time a scan still needs, in words: ``"about 40 s left"``, ``"about 3 min
    left"``; empty under a second."""
    if not seconds >= 1:
        return ""
    if seconds < 90:
        return f"about {seconds:.0f} s left"
    return f"about {seconds / 60:.0f} min left"


class MethodView(w.VBox):
    """A method menu, an occlusion stride menu, a progress bar, a sign switch and the rendered map.

    The view holds no computation: a controller observes :attr:`method` and :attr:`stride`,
    and calls :meth:`computing`, :meth:`show`, :meth:`progress_to` and :meth:`clear` with what
    it computes. The caption sits under the map, so a longer or shorter caption never moves the
    map; while a new map is computed the previous one stays in its place, faded, so the panel
    keeps its size and nothing on screen passes the old map off as the new one.

    Args:
        methods: method names offered; the first one means "no method".
        strides: occlusion strides offered, in input pixels.
        signed_methods: the methods whose maps have a sign: the "signed colour" switch shows with
            them only.
        display_width: on-screen width of the map in CSS pixels. The view keeps one width
            whatever its menus and caption show (the caption wraps, the menus wrap onto a second
            line), at least :data:`MIN_WIDTH`, and no wider than the output.

    Traits:
        method: the selected method.
        stride: the selected occlusion stride, any positive int (a stride the menu does not offer
            yet is added to it).
        signed: show a signed method's map with its sign, in colour (True), or its strength
            over the image (False).
    """

    method = t.Unicode()
    stride = t.Int(8)
    signed = t.Bool(False)

    def __init__(
        self,
        methods: Sequence[str],
        strides: Sequence[int] = (4, 8, 16),
        display_width: int = 256,
        signed_methods: Sequence[str] = (),
    ) -> None:
        methods = list(methods)
        strides = [int(s) for s in strides]
        if not methods:
            raise ValueError("MethodView needs at least one method name")
        if not strides or min(strides) < 1:
            raise ValueError(f"strides must be positive ints, got {strides}")
        self.methods = tuple(methods)
        unknown = [name for name in signed_methods if name not in self.methods]
        if unknown:
            raise ValueError(f"signed_methods {unknown} are not among the methods {self.methods}")
        self.signed_methods = frozenset(signed_methods)
        self.display_width = int(display_width)
        self.menu = CheckedDropdown(options=methods, value=methods[0], description="method",
                                    layout=w.Layout(width="230px"))
        self.stride_menu = CheckedDropdown(options=strides, value=8 if 8 in strides else strides[0],
                                           description="stride", layout=w.Layout(width="140px"))
        self.bar = CheckedFloatProgress(min=0.0, max=1.0, value=0.0, layout=w.Layout(width="100px"))
        # the time a scan still needs, beside its bar (in its own fixed room: the row stays still)
        self.time_left = w.HTML("", layout=w.Layout(width="120px"))
        self.signed_box = CheckedCheckbox(value=False, description="signed colour", indent=False,
                                     tooltip="show the map with its sign, one colour per input channel, "
                                             "as the papers show reconstructions",
                                     layout=w.Layout(width="auto"))
        # no side margins: the image is exactly as wide as the column (ipywidgets' default 2px on
        # each side would overflow it and show a horizontal scrollbar under the map)
        self.image = w.Image(format="jpeg", layout=w.Layout(width=f"{self.display_width}px", height="auto",
                                                            margin="2px 0px"))
        self.image.add_class("cnnw-method-image")
        self.caption = w.HTML()
        self.caption.add_class("cnnw-caption")
        controls = w.HBox([self.menu, self.stride_menu, self.bar, self.time_left, self.signed_box],
                          layout=wrapping_row())
        controls.layout.align_content = "flex-start"  # lines at the top of the room kept (the menu stays put)
        self._controls = controls
        width = f"{max(self.display_width, MIN_WIDTH)}px"
        super().__init__([controls, self.image, self.caption], layout=w.Layout(width=width, max_width="100%"))
        self.add_class("cnnw-methods")
        self.method = self.menu.value
        self.stride = self.stride_menu.value
        self._links = [t.link((self, "method"), (self.menu, "value")),
                       t.link((self, "signed"), (self.signed_box, "value"))]
        self._offering = False
        self._syncs = [(self, self._stride_to_menu, "stride"), (self.stride_menu, self._stride_from_menu, "value"),
                       (self.image, self._image_display, "value")]
        for owner, handler, name in self._syncs:
            owner.observe(handler, names=name)
        self.observe(self._visibility, names="method")
        self._visibility()

    @t.validate("method")
    def _check_method(self, proposal):
        if proposal["value"] not in self.methods:
            raise t.TraitError(f"unknown method {proposal['value']!r}; accepted: {', '.join(self.methods)}")
        return proposal["value"]

    @t.validate("stride")
    def _check_stride(self, proposal):
        value = proposal["value"]
        if isinstance(value, bool) or value < 1:
            raise t.TraitError(f"the occlusion stride must be a positive int (input pixels), got {value!r}")
        return int(value)

    def _stride_to_menu(self, change) -> None:
        value = change["new"]
        if value not in self.stride_menu.options:
            self._offering = True  # new options reset the menu's selection: not a user's choice
            try:
                self.stride_menu.options = sorted({*self.stride_menu.options, value})
            finally:
                self._offering = False
        self.stride_menu.value = value

    def _stride_from_menu(self, change) -> None:
        if not self._offering:
            self.stride = change["new"]

    def _visibility(self, change=None) -> None:
        occlusion = self.method == "occlusion"
        self.stride_menu.layout.display = None if occlusion else "none"
        self.bar.layout.display = None if occlusion else "none"
        self.time_left.layout.display = None if occlusion else "none"
        self.signed_box.layout.display = None if self.method in self.signed_methods else "none"
        active = self.method != self.methods[0]
        # while a method is shown, room for two lines of controls whichever of them it has (the
        # stride menu, the signed switch or neither), so that switching methods moves nothing below
        self._controls.layout.min_height = ACTIVE_CONTROLS_HEIGHT if active else None
        self.caption.layout.display = None if active else "none"
        if not active:
            self.clear()
        self._image_display()

    def _image_display(self, change=None) -> None:
        # the map shows only while there is one: an empty image would show the browser's
        # broken-image icon (above a failed method's error, or before the first map)
        self.image.layout.display = None if self.method != self.methods[0] and self.image.value else "none"

    @property
    def stale(self) -> bool:
        """Whether the map on screen is an earlier one, faded while a new one is computed."""
        return "cnnw-stale" in self.image._dom_classes

    def computing(self, note: str) -> None:
        """Say (HTML ``note``, as the caption) that a new map is being computed: the map on screen,
        if any, stays in its place, faded, and the progress bar starts again."""
        with self.hold_sync():
            if self.image.value:
                self.image.add_class("cnnw-stale")
            self.caption.value = note + (f" {_LAST_MAP}" if self.image.value else "")
            self.progress_to(0, 0)

    def show(self, data: bytes, caption: str, image_format: str = "jpeg") -> None:
        """Show an encoded map with a caption (HTML)."""
        with self.hold_sync():
            self.image.format = image_format
            self.image.value = data
            self.caption.value = caption
            self.image.remove_class("cnnw-stale")

    def progress_to(self, done: int, total: int, seconds_left: float | None = None) -> None:
        """Move the progress bar to ``done`` of ``total``, with the time still needed beside it
        (``seconds_left``, an estimate; None: not known); a finished bar is hidden (the caption
        counts the positions), keeping its place so that the row does not move."""
        finished = bool(total) and done >= total
        with self.hold_sync():
            self.bar.value = done / total if total else 0.0
            self.bar.bar_style = "success" if finished else ""
            self.bar.layout.visibility = "hidden" if finished else "visible"
            self.time_left.value = "" if finished or seconds_left is None else time_left_text(seconds_left)

    def clear(self) -> None:
        """Empty the map, caption and progress: no image shows until the next :meth:`show` (a
        failed method's panel shows its caption only)."""
        self.image.layout.display = "none"  # hidden before it is emptied: no broken-image icon between
        self.image.value = b""
        self.caption.value = ""
        self.progress_to(0, 0)
        self.image.remove_class("cnnw-stale")

    def close(self) -> None:
        """Close the view and its parts (safe to call twice)."""
        links, self._links = getattr(self, "_links", []), []
        for link in links:
            link.unlink()
        syncs, self._syncs = getattr(self, "_syncs", []), []
        for owner, handler, name in syncs:
            owner.unobserve(handler, names=name)
        close_parts(self)  # the controls' row, every part's layout and style too
        for name in ("menu", "stride_menu", "bar", "signed_box", "image", "caption"):
            child = getattr(self, name, None)  # (absent when the constructor refused its arguments)
            if child is not None:
                child.close()  # (closed already when shown; a part taken out of the view is closed too)
        super().close()
