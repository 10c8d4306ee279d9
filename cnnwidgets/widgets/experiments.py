"""Views for the experiments across images and training (Zeiler & Fergus 2014, Figs. 2, 4, 5, Table 1).

Each view holds its state in traitlets, validates it at the boundary and shows the ``uint8``
images, text and HTML it is given; none of them touches a model or torch. Controllers in
:mod:`cnnwidgets.app.experiments` observe the traits and push results back. Errors are shown
in the view's status line (never only logged); so are values the browser sends that a view
refuses (an index outside a menu, no choice in a menu that has options, a fraction, a bool or a
string for a number, a position outside a slider's range, a number for a checkbox, a value for a
trait the kernel owns such as a slider's bounds or a menu's labels), and the control is set back.
A closed view refuses new settings.

The settings a user makes take the values the functions of the package take: an index
(``channel``, ``epoch``, ``step``) is a Python int, a NumPy integer or a 0-d integer tensor,
never a bool or a float (not even ``2.0``); an on/off setting (``follow``, ``occluded``) is
``True`` or ``False`` (NumPy's too), never 0 or 1; a name (``layer``, ``transform``, ``part``,
``show``) is a ``str`` (NumPy's ``str_`` too), never ``bytes``. Each is held as the plain Python
value.
"""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as widgets
import numpy as np
import traitlets

from cnnwidgets.widgets._base import (
    CheckedBoundedIntText,
    CheckedButton,
    CheckedCheckbox,
    CheckedDropdown,
    CheckedIntSlider,
    CheckedToggleButtons,
    ChoiceTrait,
    FlagTrait,
    IndexTrait,
    NameTrait,
    browser_int,
    given,
)
from cnnwidgets.widgets.controls import FIT_IN_ROW, wrapping_row
from cnnwidgets.widgets.imagestatus import ImageStatus, show_png

__all__ = ["CorrespondenceView", "EvolutionView", "InvarianceView", "TopKView"]


def _check_member(proposal: dict, options: Sequence, what: str):
    value = proposal["value"]
    if value is not None and value not in options:
        raise traitlets.TraitError(f"unknown {what} {value!r}; choose one of {list(options)}")
    return value


class TopKView(ImageStatus, widgets.VBox):
    """Top-k patches of one channel (Fig. 2): projections grid next to patches grid.

    Traits:
        layers: the scanned layers.
        layer: the chosen layer.
        num_channels: channels of the chosen layer (the controller sets it).
        channel: the chosen channel, ``0 <= channel < num_channels``.
        caption: HTML under the image (the entries' values and sources).
        status, error: the status line.
    """

    _MAKER = "topk_view(...)"

    layers = traitlets.List(traitlets.Unicode())
    layer = NameTrait(None, allow_none=True)
    num_channels = traitlets.Int(1)
    channel = IndexTrait(0)
    caption = traitlets.Unicode("")

    def __init__(self, layers: Sequence[str] = (), **kwargs) -> None:
        self._layer_menu = CheckedDropdown(description="layer")
        self._channel_box = CheckedBoundedIntText(value=0, min=0, max=0, description="channel",
                                                  layout=widgets.Layout(width="170px"))
        self._prev = CheckedButton(icon="chevron-left", tooltip="previous channel", layout=widgets.Layout(width="36px"))
        self._next = CheckedButton(icon="chevron-right", tooltip="next channel", layout=widgets.Layout(width="36px"))
        self._caption = widgets.HTML()
        self._make_image_parts()
        controls = widgets.HBox([self._layer_menu, self._prev, self._channel_box, self._next], layout=wrapping_row())
        super().__init__(children=[controls, self._image, self._caption, self._status], **kwargs)
        self._report_refusals({"layer": self._layer_menu, "channel": self._channel_box,
                               "previous channel": self._prev, "next channel": self._next})
        self.observe(lambda c: setattr(self._layer_menu, "options", list(c["new"])), names="layers")
        self.layers = list(layers)
        widgets.link((self._layer_menu, "value"), (self, "layer"))
        widgets.link((self._channel_box, "value"), (self, "channel"))
        widgets.dlink((self, "num_channels"), (self._channel_box, "max"), transform=lambda n: max(n - 1, 0))
        widgets.dlink((self, "caption"), (self._caption, "value"))
        self._prev.on_click(lambda _: self.step(-1))
        self._next.on_click(lambda _: self.step(+1))

    def step(self, delta: int) -> None:
        """Move ``delta`` channels on (back for a negative one), wrapping around.

        Raises:
            TypeError: for a ``delta`` that is not an int (a bool, a float).
        """
        if isinstance(delta, (bool, np.bool_)) or not isinstance(delta, (int, np.integer)):
            raise TypeError(f"delta must be an int (channels to move on), got {given(delta)}")
        self.channel = (self.channel + int(delta)) % max(self.num_channels, 1)

    @traitlets.validate("layer")
    def _valid_layer(self, proposal):
        self._refuse_when_closed(proposal)
        return _check_member(proposal, self.layers, "layer")

    @traitlets.validate("channel")
    def _valid_channel(self, proposal):
        self._refuse_when_closed(proposal)
        if not 0 <= proposal["value"] < max(self.num_channels, 1):
            raise traitlets.TraitError(f"channel must lie in 0..{self.num_channels - 1}, got {proposal['value']}")
        return proposal["value"]

    @traitlets.observe("num_channels")
    def _clamp_channel(self, change) -> None:
        if self.channel >= change["new"]:
            self.channel = 0

    def _clear_stale(self) -> None:
        """What a failed channel leaves behind: the picture and the previous channel's entries."""
        ImageStatus._clear_stale(self)
        self.caption = ""


#: The evolution slider's position while no epoch is chosen: left of the first epoch (position 0).
_NO_EPOCH = -1


class _PickingSlider(CheckedIntSlider):
    """A slider over the recorded epochs (or steps: its description says which), by position,
    that hands every position the browser sends and the slider takes to ``on_pick``, also the one
    it already holds (a value that did not change fires no trait change). With no epoch chosen
    its knob sits at position ``-1``, left of the first epoch, so that the page sends a press on
    any epoch at all: a press on the position the knob holds sends nothing from the page."""

    on_pick = None

    def set_state(self, sync_data) -> bool:  # type: ignore[no-untyped-def]
        """Take the browser's ``sync_data`` as :class:`CheckedIntSlider` does; a position taken
        goes to ``on_pick`` too when it did not change. Returns whether it was taken."""
        before = self.value
        taken = super().set_state(sync_data)
        # a new value reaches the view as a trait change already
        if taken and "value" in sync_data and self.value == before and self.on_pick is not None:
            self.on_pick({"new": self.value})
        return taken

    def _check_browser_values(self, sync_data: dict) -> None:
        # the value is a position among the recorded epochs, not an epoch: say so
        if "value" in sync_data:
            unit = self.description or "epoch"
            position = browser_int(sync_data["value"], f"the {unit} slider's position")
            if not self.min <= position <= self.max:
                raise traitlets.TraitError(
                    f"the {unit} slider's position must lie in {self.min}..{self.max} (one per recorded {unit}), "
                    f"got {position}"
                )


class EvolutionView(ImageStatus, widgets.VBox):
    """Feature evolution during training (Fig. 4) with an epoch slider.

    While no epoch is chosen (``epoch`` None) the slider's knob sits left of the first epoch,
    on a position of its own, and the label beside it shows ``-``: any epoch the user presses or
    drags to is then chosen, the one under the knob before included.

    Traits:
        epochs: the recorded epochs (grows while training runs).
        epoch: the chosen epoch; the mosaic shows the recorded epochs up to it.
        follow: on: jump to each newly recorded epoch, whichever epoch is chosen; off: stay on
            the chosen epoch (when an update removes it, the last epoch is chosen).
        unit: what the slider counts (``"epoch"`` or ``"step"``).
        show: ``"projection"`` or ``"patch"``.
        projections: whether projections were recorded; without them ``show`` is ``"patch"``
            and the choice is disabled.
        status, error: the status line.
    """

    _MAKER = "evolution_view(...)"

    epochs = traitlets.List(traitlets.Int())
    epoch = IndexTrait(None, allow_none=True)
    follow = FlagTrait(True)
    show = ChoiceTrait(("projection", "patch"), default_value="projection")
    unit = traitlets.Unicode("epoch")
    projections = traitlets.Bool(True)

    def __init__(self, **kwargs) -> None:
        self._slider = _PickingSlider(value=0, min=0, max=0, description="epoch", readout=False,
                                      continuous_update=True, layout=widgets.Layout(width="300px"))
        self._label = widgets.Label("-", layout=widgets.Layout(margin="0 12px 0 4px"))
        self._follow_box = CheckedCheckbox(value=True, description="follow training", indent=False)
        self._show_menu = CheckedToggleButtons(options=[("projection", "projection"), ("patch", "patch")],
                                               style={"button_width": "90px"})
        self._show_menu.disabled_reason = ("show cannot be changed: the recorder recorded no projections (it was "
                                           "made with projection=None); only 'patch' can be shown")
        self._make_image_parts()
        # wraps rather than squeezing: a shrunk ToggleButtons stacks its buttons
        controls = widgets.HBox([self._slider, self._label, self._follow_box, self._show_menu], layout=wrapping_row())
        super().__init__(children=[controls, self._image, self._status], **kwargs)
        self._report_refusals({"show": self._show_menu, "follow": self._follow_box})
        # the slider counts epochs or steps (``unit``): its refusals say which
        self._slider.on_refused = lambda names, exc: self._refused(self.unit, names, exc)
        widgets.link((self._follow_box, "value"), (self, "follow"))
        widgets.link((self._show_menu, "value"), (self, "show"))
        widgets.dlink((self, "unit"), (self._slider, "description"))
        self._slider.observe(self._from_slider, names="value")
        self._slider.on_pick = self._from_slider  # the browser picks the knob's epoch also with none chosen

    def _from_slider(self, change) -> None:
        if 0 <= change["new"] < len(self.epochs):
            self.epoch = self.epochs[change["new"]]

    @traitlets.observe("epochs")
    def _epochs_changed(self, change) -> None:
        old = list(change["old"]) if isinstance(change["old"], list) else []
        new = list(change["new"])
        added = [e for e in new if e not in old]
        self._slider.max = max(len(new) - 1, 0)
        if not new:
            self.epoch = None
        elif self.follow and added:
            self.epoch = added[-1]
        elif self.epoch not in new:
            self.epoch = new[-1]
        self._show_epoch()

    @traitlets.validate("epoch")
    def _valid_epoch(self, proposal):
        self._refuse_when_closed(proposal)
        return _check_member(proposal, self.epochs, "epoch")

    @traitlets.validate("show", "follow")
    def _valid_setting(self, proposal):
        self._refuse_when_closed(proposal)
        if proposal["trait"].name == "show" and proposal["value"] == "projection" and not self.projections:
            raise traitlets.TraitError("show cannot be 'projection': the recorder recorded no projections "
                                       "(it was made with projection=None); only 'patch' can be shown")
        return proposal["value"]

    @traitlets.observe("projections")
    def _projections_changed(self, change) -> None:
        if not change["new"]:
            self.show = "patch"
        self._show_menu.disabled = not change["new"]
        self._show_menu.tooltip = "" if change["new"] else "no projections were recorded: patches only"

    @traitlets.observe("epoch")
    def _show_epoch(self, change=None) -> None:
        if self.epoch is None:
            self._label.value = "-"
            if not self.epochs:
                self._slider.min = 0  # nothing to pick: one position, picking nothing
            else:
                # no epoch chosen: the knob sits on a position of its own, left of the first
                # epoch, so that a press on any epoch is a new value the page sends (a press on the
                # position the knob already held would send nothing, and pick nothing)
                self._slider.min = _NO_EPOCH
                self._slider.value = _NO_EPOCH
            return
        self._label.value = f"{self.epoch}"
        index = self.epochs.index(self.epoch)
        if self._slider.value != index:
            self._slider.value = index
        self._slider.min = 0  # after the value: a min above the value would move the knob


class InvarianceView(ImageStatus, widgets.VBox):
    """Invariance curves (Fig. 5) and a slider over the transformation parameter.

    Traits:
        transforms: the transformations computed.
        transform: the chosen one.
        num_steps: how many parameter values it has (the controller sets it).
        step: index of the chosen parameter value.
        step_labels: what each step means (e.g. "12 px up"), shown beside the slider in place of
            the bare index; the controller sets it.
        readout: HTML with the values at the chosen step.
        status, error: the status line.

    The transformed images shown are :attr:`examples_png`; the curves are :attr:`png` (and
    :attr:`image`).

    The curves (the main image) do not depend on the chosen step; what does (the transformed
    images and the readout) is taken away when an update fails or nothing is chosen.
    """

    _MAKER = "invariance_view(...)"

    transforms = traitlets.List(traitlets.Unicode())
    transform = NameTrait(None, allow_none=True)
    num_steps = traitlets.Int(1)
    step = IndexTrait(0)
    step_labels = traitlets.List(traitlets.Unicode())
    readout = traitlets.Unicode("")

    def __init__(self, **kwargs) -> None:
        self._menu = CheckedDropdown(description="transform")
        self._slider = CheckedIntSlider(
            value=0, min=0, max=0, description="step", readout=False, continuous_update=True
        )
        self._step_label = widgets.Label()
        self._examples = widgets.Image(format="png", layout=widgets.Layout(display="none"))
        self._readout = widgets.HTML(layout=widgets.Layout(max_width=FIT_IN_ROW))  # its table scrolls by itself
        self._make_image_parts()
        controls = widgets.HBox([self._menu, self._slider, self._step_label], layout=wrapping_row())
        super().__init__(children=[controls, self._examples, self._readout, self._image, self._status], **kwargs)
        self._report_refusals({"transform": self._menu, "step": self._slider})
        self.observe(lambda c: setattr(self._menu, "options", list(c["new"])), names="transforms")
        widgets.link((self._menu, "value"), (self, "transform"))
        widgets.link((self._slider, "value"), (self, "step"))
        widgets.dlink((self, "num_steps"), (self._slider, "max"), transform=lambda n: max(n - 1, 0))
        widgets.dlink((self, "readout"), (self._readout, "value"))
        self.observe(self._show_step_label, names=["step", "step_labels"])

    def _show_step_label(self, change=None) -> None:
        labels = self.step_labels
        self._step_label.value = labels[self.step] if self.step < len(labels) else f"step {self.step}"

    @property
    def examples_png(self) -> bytes:
        """The PNG bytes of the transformed images shown, ``b""`` while none are (read-only)."""
        return bytes(self._examples.value)

    def show_examples(self, image: np.ndarray) -> None:
        """Display the transformed images at the chosen step (``uint8``)."""
        show_png(self._examples, image)

    def clear_curves(self) -> None:
        """Take the curves (the main picture) away, for curves that cannot be drawn."""
        ImageStatus._clear_stale(self)

    def _clear_stale(self) -> None:
        """What a failed step leaves behind is the step's images and readout, not the curves."""
        self._examples.value = b""
        self._examples.layout.display = "none"
        self.readout = ""

    @traitlets.validate("transform")
    def _valid_transform(self, proposal):
        self._refuse_when_closed(proposal)
        return _check_member(proposal, self.transforms, "transformation")

    @traitlets.validate("step")
    def _valid_step(self, proposal):
        self._refuse_when_closed(proposal)
        if not 0 <= proposal["value"] < max(self.num_steps, 1):
            raise traitlets.TraitError(f"step must lie in 0..{self.num_steps - 1}, got {proposal['value']}")
        return proposal["value"]

    @traitlets.observe("num_steps")
    def _clamp_step(self, change) -> None:
        if self.step >= change["new"]:
            self.step = 0


_OCCLUDE_NEEDS_PART = "pick one part to occlude it"


class CorrespondenceView(ImageStatus, widgets.VBox):
    """Correspondence analysis (Table 1): the images with part boxes and the table.

    Traits:
        parts: the part names.
        part: the highlighted part (``None``: all boxes).
        occluded: show the images with the chosen part occluded. It needs one part: while
            "all parts" is chosen its checkbox is disabled and it has no effect (the status
            line says so when it is on).
        table_html: the table.
        status, error: the status line.
    """

    _MAKER = "correspondence_view(...)"

    parts = traitlets.List(traitlets.Unicode())
    part = NameTrait(None, allow_none=True)
    occluded = FlagTrait(False)
    table_html = traitlets.Unicode("")

    def __init__(self, **kwargs) -> None:
        self._menu = CheckedDropdown(description="part")
        self._occluded_box = CheckedCheckbox(value=False, description="occluded", indent=False, disabled=True,
                                             tooltip=_OCCLUDE_NEEDS_PART)
        self._table = widgets.HTML()
        self._make_image_parts()
        # why a value the page sends while the box is disabled is refused
        self._occluded_box.disabled_reason = f"occluded cannot be set: {_OCCLUDE_NEEDS_PART}"
        controls = widgets.HBox([self._menu, self._occluded_box], layout=wrapping_row())
        super().__init__(children=[controls, self._image, self._table, self._status], **kwargs)
        self._report_refusals({"part": self._menu, "occluded": self._occluded_box})
        self.observe(self._sync_menu, names="parts")
        # The menu is driven by position: a Dropdown shows nothing when its value is None, and
        # None is what "all parts" means here.
        self._menu.observe(self._menu_picked, names="index")
        self.observe(self._show_part, names="part")
        widgets.link((self._occluded_box, "value"), (self, "occluded"))
        widgets.dlink((self, "table_html"), (self._table, "value"))

    def _sync_menu(self, change) -> None:
        self._menu.options = ["all parts", *change["new"]]
        if self.part is not None and self.part not in change["new"]:
            self.part = None  # its part is gone: all parts (the menu follows)
        else:
            self._show_part({"new": self.part})

    def _menu_picked(self, change) -> None:
        if change["new"] is None:  # nothing picked: the menu names the part shown again
            self._show_part({"new": self.part})
            return
        self.part = None if change["new"] == 0 else self.parts[change["new"] - 1]

    def _show_part(self, change) -> None:
        self._menu.index = 0 if change["new"] is None else self.parts.index(change["new"]) + 1
        # one part is occluded at a time: with all parts shown the box would do nothing
        self._occluded_box.disabled = change["new"] is None
        self._occluded_box.tooltip = _OCCLUDE_NEEDS_PART if change["new"] is None else f"occlude {change['new']}"

    @traitlets.validate("part")
    def _valid_part(self, proposal):
        self._refuse_when_closed(proposal)
        return _check_member(proposal, self.parts, "part")

    @traitlets.validate("occluded")
    def _valid_occluded(self, proposal):
        self._refuse_when_closed(proposal)
        return proposal["value"]
