"""Views for the filter family: kernel mosaics and activation maximisation.

The views hold state in traitlets and show ``uint8`` images they are given; they never touch a
model. Controllers in :mod:`cnnwidgets.app.filters` observe the traits and push images back.
"""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as widgets
import traitlets

from cnnwidgets.widgets._base import (
    CheckedBoundedIntText,
    CheckedButton,
    CheckedDropdown,
    CheckedIntProgress,
    ChoiceTrait,
    FlagTrait,
    IndexTrait,
    NameTrait,
)
from cnnwidgets.widgets.controls import wrapping_row
from cnnwidgets.widgets.imagestatus import ImageStatus, png_bytes

__all__ = ["MAX_ACTMAX_STEPS", "ActMaxView", "KernelView", "png_bytes"]

#: The largest index a channel box takes while the chosen layer's channel count is not known.
_NO_COUNT_MAX = 2**31 - 1

#: The largest ``steps`` of an :class:`ActMaxView` (its steps box holds 1..this).
MAX_ACTMAX_STEPS = 10**5


def _box_max(count: int) -> int:
    """The largest index a channel box takes for a layer of ``count`` channels (0: not known)."""
    return count - 1 if count > 0 else _NO_COUNT_MAX


def _checked_count(proposal) -> int:
    """A channel count trait's new value: an int >= 0 (0: not known)."""
    if proposal["value"] < 0:
        raise traitlets.TraitError(
            f"{proposal['trait'].name} is a count >= 0 (0: not known), got {proposal['value']}"
        )
    return proposal["value"]


class KernelView(ImageStatus, widgets.VBox):
    """The kernels of one convolution layer as a mosaic, with a layer menu.

    Traits:
        layers: the convolution layers to choose from.
        layer: the chosen layer (one of ``layers``).
        normalize: ``"layer"``, ``"filter"`` or ``"slice"``.
        out_channel: -1 for all output channels (RGB tiles or the full grid), else one output
            channel's input slices: an index below ``out_channels`` when that is known.
        out_channels: the chosen layer's number of output channels (0 while not known; the
            controller sets it). The ``out ch.`` box is bounded to -1..``out_channels`` - 1, and
            an ``out_channel`` the new count does not have is set back to -1 (all).
        colormaps: the colormaps offered for single-channel tiles (the controller sets them).
        colormap: the chosen one (one of ``colormaps``).
        status, error: the status line.

    ``layer``, ``normalize`` and ``colormap`` are names (a ``str``, NumPy's ``str_`` too, held as
    a plain ``str``; not ``bytes``); ``out_channel`` and ``out_channels`` are ints (a Python int,
    a NumPy integer or a 0-d integer tensor, held as a Python int; not a bool or a float).

    A value the browser sends that a control or these traits refuse (an index outside the menu,
    no layer, a fraction, a value outside the box's range, a value for a trait the kernel owns
    such as the box's bounds or the menu's labels) goes to the status line and the control is
    set back; a closed view refuses new settings (None included).
    """

    _MAKER = "kernel_view(...)"

    layers = traitlets.List(traitlets.Unicode())
    layer = NameTrait(None, allow_none=True)
    normalize = ChoiceTrait(("layer", "filter", "slice"), default_value="layer")
    out_channel = IndexTrait(-1)
    out_channels = IndexTrait(0)
    colormaps = traitlets.List(traitlets.Unicode(), default_value=["gray"])
    colormap = NameTrait("gray")

    def __init__(self, layers: Sequence[str] = (), **kwargs) -> None:
        self._layer_menu = CheckedDropdown(description="layer")
        self._normalize_menu = CheckedDropdown(
            description="scale", options=[("per layer", "layer"), ("per filter", "filter"), ("per slice", "slice")]
        )
        # bounded in the browser too (to the layer's channels once known): a value the trait
        # refuses would stay in the box unexplained
        self._channel_box = CheckedBoundedIntText(value=-1, min=-1, max=_NO_COUNT_MAX, description="out ch.",
                                                  layout=widgets.Layout(width="160px"))
        self._colormap_menu = CheckedDropdown(description="colours", options=list(self.colormaps))
        self._make_image_parts()
        controls = widgets.HBox([self._layer_menu, self._normalize_menu, self._channel_box, self._colormap_menu],
                                layout=wrapping_row())
        super().__init__(children=[controls, self._image, self._status], **kwargs)
        self._report_refusals({"layer": self._layer_menu, "scale": self._normalize_menu,
                               "out ch.": self._channel_box, "colours": self._colormap_menu})
        self.observe(self._sync_menu, names="layers")
        self.observe(self._sync_colormaps, names="colormaps")
        self.observe(self._fit_out_channel, names="out_channels")
        self.layers = list(layers)
        widgets.link((self._layer_menu, "value"), (self, "layer"))
        widgets.link((self._normalize_menu, "value"), (self, "normalize"))
        widgets.link((self._channel_box, "value"), (self, "out_channel"))
        widgets.link((self._colormap_menu, "value"), (self, "colormap"))

    def _sync_menu(self, change) -> None:
        self._layer_menu.options = list(change["new"])

    def _sync_colormaps(self, change) -> None:
        self._colormap_menu.options = list(change["new"])

    def _fit_out_channel(self, change) -> None:
        """A new channel count: an ``out_channel`` it does not have goes back to -1 (all) first,
        then the box is bounded (a box holding more than its new max would clamp it)."""
        count = change["new"]
        if count > 0 and self.out_channel >= count:
            self.out_channel = -1
        self._channel_box.max = _box_max(count)

    @traitlets.validate("layer")
    def _check_layer(self, proposal):
        self._refuse_when_closed(proposal)
        value = proposal["value"]
        if value is not None and value not in self.layers:
            raise traitlets.TraitError(f"unknown layer {value!r}; choose one of {list(self.layers)}")
        return value

    @traitlets.validate("normalize")
    def _check_normalize(self, proposal):
        self._refuse_when_closed(proposal)
        return proposal["value"]

    @traitlets.validate("out_channel")
    def _check_out_channel(self, proposal):
        self._refuse_when_closed(proposal)
        value = proposal["value"]
        if value < -1:
            raise traitlets.TraitError("out_channel is -1 (all) or a channel index >= 0")
        if 0 < self.out_channels <= value:
            raise traitlets.TraitError(
                f"out_channel {value} is out of range: layer {self.layer!r} has {self.out_channels} output "
                f"channels (0..{self.out_channels - 1}, or -1 for all)"
            )
        return value

    @traitlets.validate("out_channels")
    def _check_out_channels(self, proposal):
        self._refuse_when_closed(proposal)
        return _checked_count(proposal)

    @traitlets.validate("layers", "colormaps")
    def _check_menu(self, proposal):
        # a new menu sets the choice: refused first, or the menu would change and the choice not
        self._refuse_when_closed(proposal)
        return proposal["value"]

    @traitlets.validate("colormap")
    def _check_colormap(self, proposal):
        self._refuse_when_closed(proposal)
        value = proposal["value"]
        if value not in self.colormaps:
            raise traitlets.TraitError(f"unknown colormap {value!r}; choose one of {list(self.colormaps)}")
        return value


def _while_running(name: str) -> str:
    """Why the activation-maximisation view refuses a change of setting ``name`` during a run."""
    return (f"cannot change {name} while a run is going: the image coming in is for the target it started "
            "with; press Stop first")


class ActMaxView(ImageStatus, widgets.VBox):
    """Controls and result of an activation-maximisation run.

    Traits:
        layers: the targets to choose from (layer names; the controller may add a class entry).
        layer: the chosen entry.
        channel: channel (or class) index: below ``channels`` when that is known.
        channels: how many channels (or classes) the chosen target has, 0 while not known (the
            controller sets it when the target changes). The channel box is bounded to
            0..``channels`` - 1, and a ``channel`` the new count does not have is set to the last one.
        channel_names: names of the chosen target's channels (class names), index = channel;
            empty where none are known. The name of the chosen one is shown next to the box.
        steps: number of steps, 1..:data:`MAX_ACTMAX_STEPS` (what the steps box holds).
        running: ``True`` while a run is going; the Run button sets it, Stop clears it.
        progress: steps done in the current run (the progress bar shows it and the steps; the
            browser sets neither, and a disabled Run or Stop button takes no click).
        status, error: the status line.

    ``layer`` is a name (a ``str``, NumPy's ``str_`` too, held as a plain ``str``; not
    ``bytes``); ``channel``, ``channels`` and ``steps`` are ints (a Python int, a NumPy integer or
    a 0-d integer tensor, held as a Python int; not a bool or a float); ``running`` is ``True`` or
    ``False`` (NumPy's too; not 0 or 1).

    While a run is going, the target (``layer``, ``channel``) and ``steps`` are refused (the
    controls are disabled): the picture coming in belongs to the target the run started with.
    A value the browser sends that a control or the traits refuse (see :class:`KernelView`) goes
    to the status line and the control is set back; a closed view refuses new settings (None
    included).
    """

    _MAKER = "actmax_view(...)"

    layers = traitlets.List(traitlets.Unicode())
    layer = NameTrait(None, allow_none=True)
    channel = IndexTrait(0)
    channels = IndexTrait(0)
    channel_names = traitlets.List(traitlets.Unicode())
    steps = IndexTrait(128)
    running = FlagTrait(False)
    progress = traitlets.Int(0)

    def __init__(self, layers: Sequence[str] = (), **kwargs) -> None:
        self._layer_menu = CheckedDropdown(description="target")
        self._channel_box = CheckedBoundedIntText(value=0, min=0, max=_NO_COUNT_MAX, description="channel",
                                                  layout=widgets.Layout(width="170px"))
        self._channel_name = widgets.Label(value="")
        self._steps_box = CheckedBoundedIntText(value=128, min=1, max=MAX_ACTMAX_STEPS, description="steps",
                                                layout=widgets.Layout(width="170px"))
        self._run_button = CheckedButton(description="Run", button_style="primary", icon="play")
        self._stop_button = CheckedButton(description="Stop", icon="stop", disabled=True)
        self._bar = CheckedIntProgress(value=0, min=0, max=128)
        self._make_image_parts()
        controls = widgets.HBox([self._layer_menu, self._channel_box, self._channel_name, self._steps_box],
                                layout=wrapping_row())
        buttons = widgets.HBox([self._run_button, self._stop_button, self._bar], layout=wrapping_row())
        super().__init__(children=[controls, buttons, self._image, self._status], **kwargs)
        self._report_refusals({"target": self._layer_menu, "channel": self._channel_box,
                               "steps": self._steps_box, "Run": self._run_button, "Stop": self._stop_button,
                               "progress": self._bar})
        self.observe(self._sync_menu, names="layers")
        self.layers = list(layers)
        widgets.link((self._layer_menu, "value"), (self, "layer"))
        widgets.link((self._channel_box, "value"), (self, "channel"))
        widgets.link((self._steps_box, "value"), (self, "steps"))
        # one way: the bar shows the run's progress and the steps, and sets neither
        widgets.dlink((self, "progress"), (self._bar, "value"))
        widgets.dlink((self._steps_box, "value"), (self._bar, "max"))
        self.observe(self._fit_channel, names="channels")
        self.observe(self._show_channel_name, names=["channel", "channel_names"])
        self._run_button.on_click(lambda _: setattr(self, "running", True))
        self._stop_button.on_click(lambda _: setattr(self, "running", False))
        self.observe(self._toggle_buttons, names="running")

    def _sync_menu(self, change) -> None:
        self._layer_menu.options = list(change["new"])

    def _fit_channel(self, change) -> None:
        """A new channel count: a ``channel`` it does not have becomes its last one first, then the
        box is bounded (a box holding more than its new max would clamp it)."""
        count = change["new"]
        if count > 0 and self.channel >= count:
            self.channel = count - 1
        self._channel_box.max = _box_max(count)

    def _show_channel_name(self, change=None) -> None:
        names = self.channel_names
        self._channel_name.value = names[self.channel] if 0 <= self.channel < len(names) else ""

    def _toggle_buttons(self, change) -> None:
        self._run_button.disabled = change["new"]
        self._stop_button.disabled = not change["new"]
        for name, box in (("layer", self._layer_menu), ("channel", self._channel_box), ("steps", self._steps_box)):
            box.disabled_reason = _while_running(name)  # a browser value sent meanwhile is refused saying why
            box.disabled = change["new"]

    def _refuse_while_running(self, proposal) -> None:
        name = proposal["trait"].name
        if self.running and proposal["value"] != getattr(self, name):
            raise traitlets.TraitError(_while_running(name))

    @traitlets.validate("layer")
    def _check_layer(self, proposal):
        self._refuse_when_closed(proposal)
        self._refuse_while_running(proposal)
        value = proposal["value"]
        if value is not None and value not in self.layers:
            raise traitlets.TraitError(f"unknown target layer {value!r}; choose one of {list(self.layers)}")
        return value

    @traitlets.validate("channel", "steps")
    def _check_non_negative(self, proposal):
        self._refuse_when_closed(proposal)
        self._refuse_while_running(proposal)
        name, value = proposal["trait"].name, proposal["value"]
        least = 1 if name == "steps" else 0
        if value < least:
            raise traitlets.TraitError(f"{name} must be an int >= {least}, got {value}")
        if name == "steps" and value > MAX_ACTMAX_STEPS:
            raise traitlets.TraitError(
                f"steps must be an int in 1..{MAX_ACTMAX_STEPS} (what the steps box holds), got {value}"
            )
        if name == "channel" and 0 < self.channels <= value:
            raise traitlets.TraitError(
                f"channel {value} is out of range for target {self.layer!r}: accepted 0..{self.channels - 1}"
            )
        return value

    @traitlets.validate("channels")
    def _check_channels(self, proposal):
        self._refuse_when_closed(proposal)
        return _checked_count(proposal)

    @traitlets.validate("layers")
    def _check_targets(self, proposal):
        # a new menu sets the choice: refused first, or the menu would change and the choice not
        self._refuse_when_closed(proposal)
        return proposal["value"]

    @traitlets.validate("running")
    def _check_running(self, proposal):
        if proposal["value"]:
            self._refuse_when_closed(proposal)
        return proposal["value"]
