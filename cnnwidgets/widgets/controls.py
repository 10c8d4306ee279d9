"""Small control groups whose state is traitlets (linked to their child widgets).

The single controls they are made of, checked against what a browser may send, live in
:mod:`cnnwidgets.widgets._base`, shared with the views.
"""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as w
import traitlets as t

from cnnwidgets.widgets._base import CheckedCheckbox, CheckedDropdown, CheckedIntSlider, CheckedToggleButtons

__all__ = [
    "FILLS",
    "DisplayControls",
    "OccluderControls",
    "wrapping_row",
]


FILLS: tuple[str, ...] = ("gray", "mean", "black", "blur", "noise")
"""Occluder fills: mid-gray, the image's mean colour, black, a blurred copy, fixed random noise."""

NORM_LABELS = {"channel": "per channel", "layer": "whole layer", "fixed": "fixed (unoccluded)"}
"""Button labels of the normalisation modes (see ``cnnwidgets.render.normalize``)."""

_NORM_TOOLTIPS = {
    "channel": "each channel stretched to its own range",
    "layer": "one range for the whole layer",
    "fixed": "each channel's range on the unoccluded image: occlusion changes stay visible",
}
#: How each occluder fill is named in menus and captions.
FILL_LABELS = {"gray": "gray", "mean": "image mean", "black": "black", "blur": "blur", "noise": "noise"}


class DisplayControls(w.HBox):
    """How feature maps are drawn.

    Args:
        norm_modes: the normalisation modes offered (the renderer's names, e.g.
            ``cnnwidgets.render.NORM_MODES``).
        colormaps: the colormap names offered.
        **kwargs: initial trait values: those below, and ipywidgets' own, such as ``layout``.

    Traits:
        norm: normalisation mode, one of ``norm_modes``.
        cmap: colormap name, one of ``colormaps``.
        sort: order the grid's channels by their mean activation on the unoccluded image.
        overlay: show the selected channel over the image.
    """

    norm = t.Unicode("fixed")
    cmap = t.Unicode("viridis")
    sort = t.Bool(False)
    overlay = t.Bool(True)

    def __init__(
        self,
        norm_modes: Sequence[str] = ("channel", "layer", "fixed"),
        colormaps: Sequence[str] = ("viridis", "magma", "gray"),
        **kwargs,
    ) -> None:
        self._norm_modes = tuple(norm_modes)
        self._colormaps = tuple(colormaps)
        self.norm_buttons = CheckedToggleButtons(
            options=[(NORM_LABELS.get(m, m), m) for m in self._norm_modes],
            tooltips=[_NORM_TOOLTIPS.get(m, m) for m in self._norm_modes],
            style={"button_width": "auto"},
        )
        self.cmap_dropdown = CheckedDropdown(options=list(self._colormaps), description="colours",
                                       layout=w.Layout(width="170px"))
        self.sort_box = CheckedCheckbox(description="sort by activation", indent=False, layout=w.Layout(width="150px"))
        # it changes the enlarged channel beside the image only, and says so: sitting with the
        # grid's controls, "overlay on image" read as if it drew the grid's tiles over the image
        self.overlay_box = CheckedCheckbox(description="channel over image", indent=False,
                                           tooltip="draw the enlarged channel (beside the input image) over the image",
                                           layout=w.Layout(width="170px"))
        # a description like ipywidgets' own ("colours" ...): 80px wide, right-aligned
        label = w.HTML("<div style='text-align:right'>scale</div>",
                       layout=w.Layout(width="var(--jp-widgets-inline-label-width, 80px)", margin="0 8px 0 0",
                                       flex="0 0 auto"))
        label.add_class("cnnw-scale-label")
        kwargs.setdefault("layout", wrapping_row())
        super().__init__([label, self.norm_buttons, self.cmap_dropdown, self.sort_box, self.overlay_box], **kwargs)
        if self.norm not in self._norm_modes:
            self.norm = self._norm_modes[-1]
        if self.cmap not in self._colormaps:
            self.cmap = self._colormaps[0]
        self._links = [
            t.link((self, "norm"), (self.norm_buttons, "value")),
            t.link((self, "cmap"), (self.cmap_dropdown, "value")),
            t.link((self, "sort"), (self.sort_box, "value")),
            t.link((self, "overlay"), (self.overlay_box, "value")),
        ]

    @t.validate("norm")
    def _check_norm(self, proposal):
        return _one_of(proposal["value"], getattr(self, "_norm_modes", None), "normalisation mode")

    @t.validate("cmap")
    def _check_cmap(self, proposal):
        return _one_of(proposal["value"], getattr(self, "_colormaps", None), "colormap")


#: The ``max_width`` of a control in a :func:`wrapping_row`: the row's width less the control's own
#: margins (ipywidgets' 2px on each side), so that a control shrunk to fit shows no scroll bar.
FIT_IN_ROW = "calc(100% - 2 * var(--jp-widgets-margin, 2px))"


def wrapping_row() -> w.Layout:
    """The layout of a row of controls that wraps onto more lines where the output is narrow."""
    return w.Layout(align_items="center", flex_flow="row wrap", max_width="100%")


def _one_of(value: str, options: Sequence[str] | None, what: str) -> str:
    if options is not None and value not in options:
        raise t.TraitError(f"unknown {what} {value!r}; accepted: {', '.join(options)}")
    return value


class OccluderControls(w.HBox):
    """The occluder's switch, fill and size.

    Traits:
        enabled: whether the occluder is applied.
        fill: one of :data:`FILLS`.
        size: the box's longer side in image pixels (a square box's side), bounded by ``max_size``;
            changing it scales the box, keeping its shape.
        max_size: largest side (the image's smaller side).
        window_used: whether the fill and size serve something else while the occluder is off
            (an occlusion scan, whose window they are); when neither, they are greyed out.

    Keyword arguments (``**kwargs``) are initial trait values: those above, and ipywidgets' own,
    such as ``layout``.
    """

    enabled = t.Bool(True)
    fill = t.Enum(FILLS, default_value="gray")
    size = t.Int(16, min=1)
    max_size = t.Int(64, min=1)
    window_used = t.Bool(False)

    def __init__(self, **kwargs) -> None:
        self.enabled_box = CheckedCheckbox(description="occluder", indent=False, layout=w.Layout(width="90px"))
        self.fill_dropdown = CheckedDropdown(
            options=[(FILL_LABELS[f], f) for f in FILLS], description="fill", layout=w.Layout(width="210px")
        )
        self.size_slider = CheckedIntSlider(min=1, max=64, description="size", continuous_update=False,
                                            layout=w.Layout(width="260px"))
        for name, control in (("fill", self.fill_dropdown), ("size", self.size_slider)):
            control.layout.max_width = FIT_IN_ROW
            # why a value the page sends while the control is greyed out is refused
            control.disabled_reason = f"{name} cannot be changed while the occluder is off: switch it on first"
        kwargs.setdefault("layout", wrapping_row())
        super().__init__([self.enabled_box, self.fill_dropdown, self.size_slider], **kwargs)
        self._links = [
            t.link((self, "enabled"), (self.enabled_box, "value")),
            t.link((self, "fill"), (self.fill_dropdown, "value")),
            t.link((self, "max_size"), (self.size_slider, "max")),
            t.link((self, "size"), (self.size_slider, "value")),
        ]
        self._grey_out()

    @t.observe("enabled", "window_used")
    def _grey_out(self, change=None) -> None:
        idle = not (self.enabled or self.window_used)
        self.fill_dropdown.disabled = idle
        self.size_slider.disabled = idle

    @t.validate("size")
    def _clamp_size(self, proposal):
        return max(1, min(int(proposal["value"]), self.max_size))

    @t.observe("max_size")
    def _reclamp(self, change) -> None:
        if self.size > self.max_size:
            self.size = self.max_size


def device_dropdown(devices: Sequence[str], value: str) -> CheckedDropdown:
    """A drop-down of the compute ``devices`` (names), showing ``value``."""
    return CheckedDropdown(options=list(devices), value=value, description="device", layout=w.Layout(width="170px"))
