"""Controllers that wire a model to the filter-family views (kernels, activation maximisation, summary).

Each controller observes its view's traits, computes with :mod:`cnnwidgets.methods`, renders
with :mod:`cnnwidgets.render` and pushes ``uint8`` images or text back. Errors go to the view's
status line. One-liners: :func:`kernel_view`, :func:`actmax_view`, :func:`summary_view`.
"""

from __future__ import annotations

import inspect
import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnwidgets.app.cells import open_view
from cnnwidgets.app.reporting import check_one_liner_options, error_text, keyword_options, near_miss, shown_in_view
from cnnwidgets.app.worker import stop_at_exit
from cnnwidgets.core.probe import Probe, class_count, trained_input_size, unwrap_model
from cnnwidgets.core.targets import ChannelActivation, ClassLogit, as_count, as_flag, as_index, class_name_list
from cnnwidgets.methods.actmax import (
    ActMaxResult,
    _image_size,
    bundle_normalization,
    fit_channels,
    maximize_activation,
    zero_gradient_quietly,
)
from cnnwidgets.methods.dead import default_dead_layers
from cnnwidgets.methods.kernels import Kernels, conv_layer_names, kernels
from cnnwidgets.methods.summary import COLUMN_KEY, summary
from cnnwidgets.render._checks import check_int
from cnnwidgets.render.kernels import KERNEL_COLORMAPS, kernel_mosaic
from cnnwidgets.widgets.filters import MAX_ACTMAX_STEPS, ActMaxView, KernelView
from cnnwidgets.widgets.summary import SummaryView

__all__ = [
    "CLASS_TARGET",
    "MAX_KERNEL_HEIGHT",
    "MAX_KERNEL_TILE",
    "MAX_KERNEL_WIDTH",
    "MIN_READABLE_TILE",
    "ActMaxController",
    "KernelController",
    "actmax_view",
    "kernel_view",
    "summary_view",
]

#: The entry of the activation-maximisation target menu that means "a class logit".
CLASS_TARGET = "class logits (output)"

#: The view's traits the kernel controller redraws on: the settings of a kernel view.
_KERNEL_SETTINGS = ["layer", "normalize", "out_channel", "colormap"]

#: The settings of an activation-maximisation view.
_ACTMAX_SETTINGS = ["layer", "channel", "steps"]

#: The largest ``tile`` of :class:`KernelController` (pixels): a tile is about this size on
#: screen, and a layer may have thousands.
MAX_KERNEL_TILE = 256

#: The largest ``width`` and ``height`` of :class:`KernelController` (pixels).
MAX_KERNEL_WIDTH = 4096
MAX_KERNEL_HEIGHT = 16384

#: The smallest tile (pixels, its longer side) the kernel view draws to make a picture fit its
#: ``width`` and ``height``: a 3x3 kernel at 4 px per weight. Where even tiles this small do
#: not fit, the view shows the first output channels (or input slices) and says so.
MIN_READABLE_TILE = 12

#: Extra pixels between the blocks of a grid whose rows are wrapped (one block per output channel).
_BLOCK_GAP = 3


class _Layout:
    """How a kernel picture is laid out: ``zoom``, ``cols`` tiles to a line, ``shown`` of the
    first rows (grid: output channels) or tiles (the other layouts), and, for a grid, ``lines``
    per output channel (> 1: its row is wrapped)."""

    def __init__(self, zoom: int, cols: int, shown: int, lines: int = 1) -> None:
        self.zoom, self.cols, self.shown, self.lines = zoom, cols, shown, lines


def _zooms(h: int, w: int, tile: int) -> tuple[int, int]:
    """(preferred, smallest readable) zoom of an h x w kernel for a wanted ``tile`` size."""
    side = max(h, w)
    preferred = max(1, tile // side)
    return preferred, min(preferred, max(1, -(-MIN_READABLE_TILE // side)))


def _per_line(width: int, w: int, zoom: int) -> int:
    """How many tiles of kernels ``w`` wide, at ``zoom``, fit a line of ``width`` pixels (1 px borders)."""
    return (width - 1) // (w * zoom + 1)


def _last_resort_zoom(smallest: int, w: int, width: int) -> int:
    """``smallest``, or less where a kernel ``w`` wide does not fit ``width`` even at that zoom."""
    zoom = smallest
    while zoom > 1 and _per_line(width, w, zoom) < 1:
        zoom -= 1
    return zoom


def _flat_layout(count: int, h: int, w: int, *, tile: int, width: int, height: int) -> _Layout:
    """Lay ``count`` tiles out in lines (row-major) to fit ``width`` x ``height``: the largest
    readable zoom at which all fit (a near-square grid where it fits, else full lines); else the
    smallest readable zoom, with the tiles that fit."""
    preferred, smallest = _zooms(h, w, tile)
    for zoom in range(preferred, smallest - 1, -1):
        fit = _per_line(width, w, zoom)
        if fit < 1:
            continue
        for cols in (min(fit, math.ceil(math.sqrt(count))), min(fit, count)):
            if math.ceil(count / cols) * (h * zoom + 1) + 1 <= height:
                return _Layout(zoom, cols, count)
    zoom = _last_resort_zoom(smallest, w, width)
    cols = max(1, min(count, _per_line(width, w, zoom)))
    lines = max(1, (height - 1) // (h * zoom + 1))
    return _Layout(zoom, cols, min(count, cols * lines))


def _grid_layout(rows: int, count: int, h: int, w: int, *, tile: int, width: int, height: int,
                 max_tiles: int) -> _Layout:
    """Lay a grid of ``rows`` output channels x ``count`` input slices out to fit ``width`` x
    ``height``: a row per output channel where it fits, else each row wrapped into a block of
    lines; the largest readable zoom at which every output channel (up to ``max_tiles`` tiles,
    whole rows, at least one) fits, else the smallest readable zoom with the rows that fit."""
    preferred, smallest = _zooms(h, w, tile)
    wanted = rows if rows * count <= max_tiles else max(1, max_tiles // count)

    def at(zoom: int) -> tuple[int, int, int]:
        lines = math.ceil(count / max(1, min(count, _per_line(width, w, zoom))))
        cols = math.ceil(count / lines)  # lines as even as they go
        block = lines * (h * zoom + 1) + (_BLOCK_GAP if lines > 1 else 0)
        return cols, lines, block

    for zoom in range(preferred, smallest - 1, -1):
        cols, lines, block = at(zoom)
        if _per_line(width, w, zoom) >= 1 and wanted * block + 1 <= height + (_BLOCK_GAP if lines > 1 else 0):
            return _Layout(zoom, cols, wanted, lines)
    zoom = _last_resort_zoom(smallest, w, width)
    cols, lines, block = at(zoom)
    fit = max(1, (height - 1 + (_BLOCK_GAP if lines > 1 else 0)) // block)
    return _Layout(zoom, cols, min(wanted, fit), lines)


def _colour_key(k: Kernels, colormap: str) -> str:
    """What the colours of the picture mean, for the status line."""
    if k.normalize == "layer":
        end = f"{float(k.scale.max()):.3g}"
        scale = "one scale for the layer: its largest |w|"
    else:
        group = "output channel" if k.normalize == "filter" else "slice"
        end = f"the largest |w| of each {group}"
        scale = f"a scale per {k.normalize}, largest {float(np.abs(k.weight).max()):.3g}"
    low, high = (f"-{end}", f"+{end}") if k.normalize == "layer" else (f"-({end})", f"+({end})")
    if k.layout == "rgb":
        return (f"colours: each of red, green, blue from none at {low} to full at {high}, mid-gray = all 0 "
                f"({scale})")
    if colormap == "diverging":
        return f"colours: mid-gray = 0, blue = {low}, orange-red = {high} ({scale})"
    return f"gray levels: mid-gray = 0, black = {low}, white = {high} ({scale})"


class KernelController:
    """Shows the kernels of the layer chosen in a :class:`KernelView`.

    The picture fits ``width`` x ``height`` pixels: tiles are drawn at about ``tile`` pixels,
    smaller (down to :data:`MIN_READABLE_TILE`) where that makes everything fit, and wrapped
    into lines (a grid's row per output channel into a block of lines). Where even that does
    not fit, the first output channels (or input slices) are shown and the status line says how
    many of how many, and how to see the others.

    Args:
        model_or_probe: the model (or a probe on it); weights are only read.
        view: the view to drive (a new one by default).
        colormap: ``"gray"`` or ``"diverging"`` (a ``str``) for single-channel slices: the
            view's ``colormap`` to start with (its ``colours`` menu changes it).
        max_tiles: an int >= 1, about the largest number of tiles the full grid of a layer
            (``out ch.`` -1, one row of input slices per output channel) is drawn with: a bigger
            grid shows its first output channels only, in whole rows, and at least one row; the
            status line says so.
        tile: an int in 1..:data:`MAX_KERNEL_TILE`: the size tiles are enlarged to (by a whole
            factor) where the picture fits.
        width: an int in 1..:data:`MAX_KERNEL_WIDTH`: the picture's largest width in pixels
            (only a single kernel wider than that at zoom 1 makes it wider).
        height: an int in 1..:data:`MAX_KERNEL_HEIGHT`: the picture's largest height in pixels;
            at least one line of tiles (one output channel's block) is shown.

    Each int is a Python int, a NumPy integer or a 0-d integer tensor (not a bool or a float).

    Raises:
        ValueError: if the model has no 2-D convolution, for an unknown colormap, or for a
            ``max_tiles``, ``tile``, ``width`` or ``height`` out of range.
        TypeError: for a ``max_tiles``, ``tile``, ``width`` or ``height`` that is not an int, or
            a ``colormap`` that is not a ``str``.
    """

    def __init__(
        self,
        model_or_probe: nn.Module | Probe,
        view: KernelView | None = None,
        *,
        colormap: str = "gray",
        max_tiles: int = 4096,
        tile: int = 48,
        width: int = 480,
        height: int = 960,
    ) -> None:
        if not isinstance(colormap, str):
            raise TypeError(f"colormap must be one of {KERNEL_COLORMAPS} for kernel tiles (a str), got "
                            f"{type(colormap).__name__} {colormap!r:.60}")
        if colormap not in KERNEL_COLORMAPS:
            raise ValueError(f"colormap must be one of {KERNEL_COLORMAPS} for kernel tiles, got {colormap!r}")
        self.max_tiles = as_count(max_tiles, "max_tiles")
        self.tile = check_int(tile, "tile", minimum=1, maximum=MAX_KERNEL_TILE)
        self.width = check_int(width, "width", minimum=1, maximum=MAX_KERNEL_WIDTH)
        self.height = check_int(height, "height", minimum=1, maximum=MAX_KERNEL_HEIGHT)
        names = conv_layer_names(model_or_probe)
        if not names:
            raise ValueError("the model has no Conv2d layer, so there are no kernels to show")
        self.source = model_or_probe
        self.view = view if view is not None else KernelView()
        self._observing = False
        self._settling = False  # while update() bounds out_channel to the layer (see update)
        self._counts = {name: _out_channels(model_or_probe, name) for name in names}
        self.view.colormaps = list(KERNEL_COLORMAPS)
        self.view.colormap = colormap
        self.view.layers = names
        if self.view.layer is None:
            self.view.layer = names[0]
        self.view.out_channels = self._counts.get(self.view.layer, 0)
        self.view.observe(self.update, names=_KERNEL_SETTINGS)
        self._observing = True
        self.update()

    @property
    def colormap(self) -> str:
        """The colormap of single-channel tiles: the view's ``colormap``."""
        return self.view.colormap

    @shown_in_view
    def update(self, change: Any = None) -> None:
        """Recompute and show the mosaic for the view's current state."""
        view = self.view
        if view.layer is None:
            view.out_channels = 0
            view.clear_image("no layer chosen: pick a convolution layer in the menu")
            return
        if self._settling:
            return  # out_channel reset by the line below: drawn once, by the update that set it
        if view.layer not in self._counts:  # a menu entry set by hand
            view.out_channels = 0
            raise ValueError(f"layer {view.layer!r} is not a convolution layer of the model; its convolution "
                             f"layers are {list(self._counts)}")
        self._settling = True
        try:
            view.out_channels = self._counts[view.layer]  # sets out_channel back to -1 where it is not there
        finally:
            self._settling = False
        out_channel = None if view.out_channel < 0 else view.out_channel
        k = kernels(self.source, view.layer, out_channel=out_channel, normalize=view.normalize)
        o, i, h, w = k.weight.shape
        values, layout, note = k.values, k.layout, ""
        options = {"tile": self.tile, "width": self.width, "height": self.height}
        if layout == "grid" and values.shape[1] == 1:
            values, layout = values[:, 0], "slices"  # one input slice per output (depthwise): wrap them
        if layout == "grid":
            fit = _grid_layout(o, i, h, w, max_tiles=self.max_tiles, **options)
            values = values[: fit.shown]
            arrangement = (
                f"each output channel is a block of its {i} input slices, {fit.cols} to a line, in row-major order"
                if fit.lines > 1 else ""
            )
            if fit.shown < o:
                note = (f"showing output channels 0-{fit.shown - 1} of {o}, pick one with 'out ch.' to see its "
                        f"{i} input slices, or pass a larger height= or max_tiles= to kernel_view")
        else:
            fit = _flat_layout(values.shape[0], h, w, **options)
            kind = "input slices" if layout == "slices" and k.layout == "slices" else "output channels"
            arrangement = f"tiles: {kind} in row-major order, {fit.cols} to a line"
            if fit.shown < values.shape[0]:
                values = values[: fit.shown]
                more = ("pass a larger height= to kernel_view to see them all" if kind == "input slices" else
                        "pick one with 'out ch.' to see its input slices, or pass a larger height= to kernel_view")
                note = f"showing {kind} 0-{fit.shown - 1} of {len(k.values)}, {more}"
        mosaic = kernel_mosaic(values, layout, cmap=view.colormap, zoom=fit.zoom, cols=fit.cols,
                               block_gap=_BLOCK_GAP)
        parts = [
            f"{k.layer}: {o}x{i}x{h}x{w} weights ({_layout_text(k, _groups(self.source, k.layer))})",
            arrangement,
            _colour_key(k, view.colormap),
            # an RGB tile is one filter's three slices: scaled together, as 'filter' scales them
            "'slice' scales an RGB tile as 'filter' does: its three colours are the filter's slices"
            if view.normalize == "slice" and k.layout == "rgb" else "",
            note,
            "" if view.out_channel >= 0 or o == 1 or i == 1 else "set 'out ch.' to a channel to see only its slices",
        ]
        view.show_image(mosaic, "; ".join(part for part in parts if part))

    def close(self) -> None:
        """Stop following the view (it keeps what it shows)."""
        if self._observing:
            self.view.unobserve(self.update, names=_KERNEL_SETTINGS)
            self._observing = False


def _out_channels(source: nn.Module | Probe, layer: str) -> int:
    """The number of output channels of the convolution ``layer``."""
    model = source.model if isinstance(source, Probe) else unwrap_model(source)[0]
    return int(model.get_submodule(layer).out_channels)


def _groups(source: nn.Module | Probe, layer: str) -> int:
    """The ``groups`` of the convolution ``layer`` (1 for a plain one)."""
    model = source.model if isinstance(source, Probe) else unwrap_model(source)[0]
    return int(getattr(model.get_submodule(layer), "groups", 1))


def _layout_text(k: Kernels, groups: int) -> str:
    """What the mosaic's tiles, rows and columns are, for the status line.

    In a grouped convolution (``groups`` > 1) output channel ``o`` reads only the input channels
    of its group, ``g * I .. g * I + I - 1`` with ``g = o // (O / groups)``; the weight's second
    axis is the input channel within that group.
    """
    o, i = k.weight.shape[:2]
    if i == 1 and k.layout == "grid":  # drawn as one tile per output channel
        if groups <= 1:
            return "one tile per output channel: its slice of the one input channel"
        return f"one tile per output channel: its slice of the one input channel its group reads; {groups} groups"
    if groups <= 1:
        return {
            "rgb": "RGB tiles",
            "grid": "rows: output, columns: input channel",
            "slices": f"output channel {k.out_channel}",
        }[k.layout]
    if k.layout == "rgb":
        return f"RGB tiles of the 3 input channels of each output's group; {groups} groups"
    if k.layout == "grid":
        return f"rows: output, columns: input channel within the output's group of {i}; {groups} groups"
    group = int(k.out_channel) // max(1, o // groups)
    first = group * i
    reads = f"input channel {first}" if i == 1 else f"input channels {first}-{first + i - 1}"
    return f"output channel {k.out_channel}, which reads {reads} (group {group} of {groups})"


def kernel_view(model_or_probe: nn.Module | Probe, layer: str | None = None, **options: Any) -> KernelView:
    """A ready kernel view of ``model_or_probe`` (see :class:`KernelController` for options).

    ``layer`` (a ``str``, NumPy's ``str_`` too) is the convolution shown first; default: the first.

    Raises:
        ValueError: if the model has no convolution, ``layer`` is not one, or for an unknown
            colormap or options out of range.
        TypeError: for options of the wrong type (a ``layer`` that is not a ``str`` included), an
            unknown option (the message names the options, and a setting of the view such as
            ``normalize`` is told to be set on the view), or ``view``.
    """
    check_one_liner_options(options, KernelController, "kernel_view", ["layer"], _KERNEL_SETTINGS)
    if layer is not None and not isinstance(layer, str):
        raise TypeError(f"layer must be the name of a convolution layer (a str), got {type(layer).__name__} "
                        f"{layer!r:.60}")

    def attach(view: KernelView) -> KernelController:
        controller = KernelController(model_or_probe, view, **options)
        if layer is not None:
            if layer not in view.layers:
                raise ValueError(f"{layer!r} is not a convolution layer; choose one of {view.layers}")
            view.layer = layer
        return controller

    return open_view(KernelView, attach)


def _to_uint8(rgb: torch.Tensor, min_size: int = 256) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H', W', 3) uint8, enlarged by an integer factor to >= min_size."""
    image = (rgb.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    factor = max(1, -(-min_size // max(image.shape[:2])))
    return np.ascontiguousarray(image.repeat(factor, axis=0).repeat(factor, axis=1))


class _OptionsOnly:
    """A target scoring 0 at ``layer`` (the model's output for None): what
    :class:`ActMaxController` runs for 0 steps, so that ``maximize_activation`` checks the size,
    ``mean``, ``std`` and options up front with its own checks, at the cost of a forward pass up
    to that layer."""

    def __init__(self, layer: str | None) -> None:
        self.layer = layer

    def __call__(self, activation: torch.Tensor) -> torch.Tensor:
        return activation.new_zeros(activation.shape[0], dtype=torch.float32)


#: The options of ``maximize_activation`` an actmax controller passes on (it sets the others).
_ACTMAX_OPTIONS = sorted(
    set(inspect.signature(maximize_activation).parameters)
    - {"model_or_probe", "target", "steps", "size", "mean", "std", "progress", "callback", "cancel"}
)


def _describe_target(layer: str | None, channel: int, classes: Sequence[str] = (), calls: int = 1) -> str:
    """The target of an actmax view's ``layer`` entry and ``channel`` in words (``"layer '3'
    channel 5"``, ``"class 7"``, ``"class 7 ('horse')"`` where the class names are known), as its
    status line names it. A layer that runs ``calls`` > 1 times in one pass (a ResNet block's
    shared ReLU) is read at its last call, and the words say so."""
    if layer != CLASS_TARGET:
        last = f" (its last of {calls} calls in a pass)" if calls > 1 else ""
        return f"layer {layer!r}{last} channel {channel}"
    return f"class {channel} ({classes[channel]!r})" if 0 <= channel < len(classes) else f"class {channel}"


def _normalisation_text(mean: Any, std: Any) -> str:
    """The input space a run optimises in, for the status line."""
    if mean is None and std is None:
        return ("no input normalisation: pass mean= and std= (or the bundle) for a model trained on "
                "normalised images")
    def values(v: Any) -> str:
        if v is None:
            return "none"
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu().tolist()  # a 0-d one: a number
        elif isinstance(v, (np.ndarray, np.generic)):
            v = v.tolist()
        if isinstance(v, (int, float)):
            return f"{v:g}"
        return "(" + ", ".join(f"{float(x):g}" for x in v) + ")"
    return f"input normalised with mean {values(mean)}, std {values(std)}"


def _run_size_text(given: Any, probe: Probe, size: Any, input_size: Any) -> str:
    """The size of the images an activation-maximisation view makes, and where it came from, for
    the status line: ``given`` is what the view was opened on (a model, a bundle or a probe),
    ``probe`` the probe its runs use, ``size`` and ``input_size`` the view's options."""
    if input_size is not None:
        channels, height, width = (int(v) for v in input_size)
    elif size is not None:
        channels, (height, width) = probe.input_size[0], _image_size(size)
    else:
        channels, height, width = probe.input_size
    text = f"images {channels}x{height}x{width}"
    if size is not None or input_size is not None:
        return text
    another = "pass size= for another"
    if isinstance(given, Probe):
        return f"{text}, the probe's input size ({another})"
    if not isinstance(given, nn.Module):
        return f"{text}, the bundle's input size ({another})"
    if not _size_assumed(given, probe, size, input_size):
        return f"{text}, the size the model says it was trained at ({another})"
    return f"{text}, a size assumed: the model does not say its input size ({another})"


def _size_assumed(given: Any, probe: Probe, size: Any, input_size: Any) -> bool:
    """Whether the runs of an activation-maximisation view make images of a size nobody gave nor
    said (see :func:`_run_size_text` for the arguments): a bare model given without ``size`` or
    ``input_size``, that says no trained size or another one than its probe runs at."""
    if size is not None or input_size is not None or not isinstance(given, nn.Module) or isinstance(given, Probe):
        return False
    return trained_input_size(unwrap_model(given)[0]) != tuple(int(v) for v in probe.input_size)


class ActMaxController:
    """Runs :func:`~cnnwidgets.methods.actmax.maximize_activation` when the view's Run is pressed.

    A run goes in a background thread (``background=True``), shows the image every
    ``update_every`` steps, and stops when Stop is pressed. Starting a new run cancels the
    previous one, whose late updates are dropped (generation counter). A run keeps the target
    and steps it started with (the view refuses changes while it runs), and every status line
    about an image names the target it belongs to; after a run, picking another target says
    that the image shown is still the last run's.

    Args:
        model_or_probe: the model, a zoo bundle or a probe on a model (a model gets a private
            probe; call :meth:`close`).
        view: the view to drive (a new one by default).
        size: image size (H or (H, W)); default: the probe's input size. A probe passed in is
            left as it is: where its ``input_size`` differs from this size (or from an
            ``input_size`` option), the view works on a private probe of the same model.
        mean, std: the model's input normalisation (see ``maximize_activation``); default: a
            bundle's own (also that of a probe made from a bundle), else none. The status line says
            which input space runs use.
        classes: class names (index = class), shown for class targets: a list, tuple or 1-D
            array of ``str``, one per class the model scores (where that number is known);
            default: a bundle's.
        background: run in a thread (``False``: block, e.g. in tests); True or False.
        update_every: steps between image updates during a run, an int >= 1.
        steps: the number of steps the view starts with, an int in
            1..:data:`~cnnwidgets.widgets.filters.MAX_ACTMAX_STEPS` (the user can change it there).
        options: more keyword arguments for ``maximize_activation`` (``lr``, ``decay``, ...).

    Counts are Python ints, NumPy integers or 0-d integer tensors (not bools or floats). The
    size, ``mean``, ``std`` and options are checked up front by ``maximize_activation``'s own
    checks, run for 0 steps (a forward pass up to the first layer the view offers).

    Raises:
        TypeError: for an option the controller sets itself (``progress``, ``callback``,
            ``cancel``), an unknown option (the message names the options, and a setting of the
            view such as ``layer`` is told to be set on the view), a count that is not an int,
            or ``classes`` that are not a list of names.
        ValueError, TypeError: for a size, ``mean``, ``std`` or option ``maximize_activation``
            refuses (an ``lr`` <= 0, a ``mean`` with neither 1 nor C values ...), for ``steps``
            or ``update_every`` < 1, ``steps`` above the view's largest, and ``classes`` of
            another number than the classes the model scores.
    """

    def __init__(
        self,
        model_or_probe: nn.Module | Probe,
        view: ActMaxView | None = None,
        *,
        size: int | Sequence[int] | None = None,
        mean: Sequence[float] | float | None = None,
        std: Sequence[float] | float | None = None,
        background: bool = True,
        update_every: int = 8,
        steps: int | None = None,
        classes: Sequence[str] | None = None,
        **options: Any,
    ) -> None:
        owned = sorted(set(options) & {"progress", "callback", "cancel"})
        if owned:
            raise TypeError(f"{', '.join(owned)} cannot be given: the controller sets them for each run "
                            "(it shows progress in the view, and its Stop button cancels)")
        unknown = sorted(set(options) - set(_ACTMAX_OPTIONS))
        if unknown:
            own = keyword_options(ActMaxController)
            named = ", ".join(name + near_miss(name, [*own, *_ACTMAX_OPTIONS], _ACTMAX_SETTINGS, "actmax_view")
                              for name in unknown)
            raise TypeError(f"unknown option{'s' if len(unknown) > 1 else ''} {named} for "
                            f"maximize_activation; its options are {', '.join(_ACTMAX_OPTIONS)}; the view's own "
                            f"are {', '.join(own)}")
        self.update_every = as_count(update_every, "update_every")
        if steps is not None:
            steps = as_count(steps, "steps")
            if steps > MAX_ACTMAX_STEPS:
                raise ValueError(f"steps must be an int in 1..{MAX_ACTMAX_STEPS} (what the view's steps box holds), "
                                 f"got {steps}")
        self.background = as_flag(background, "background")
        if mean is None and std is None:
            mean, std = bundle_normalization(model_or_probe)  # a zoo bundle's own input space
        given_classes = classes is not None
        if classes is None and not isinstance(model_or_probe, (nn.Module, Probe)):
            classes = getattr(model_or_probe, "classes", None)  # a zoo bundle's class names
        if given_classes:
            self.classes = class_name_list(classes)
        else:
            self.classes = [str(name) for name in classes] if classes is not None else []
        self.options = dict(options, mean=mean, std=std)
        self.size = size
        if isinstance(model_or_probe, Probe) and not _describes(model_or_probe, size, options.get("input_size")):
            # the user's probe stays described as it was: runs at another size re-describe the probe they use
            self.probe = Probe(model_or_probe.user_model, model_or_probe.device, input_size=model_or_probe.input_size)
            self._owns_probe = True
        elif isinstance(model_or_probe, Probe):
            self.probe, self._owns_probe = model_or_probe, False
        else:
            self.probe, self._owns_probe = Probe(model_or_probe), True
        try:
            if size is not None:  # the probe described at the size, as every run describes it
                fit_channels(self.probe, *_image_size(size))
            # every layer with feature maps is a target; the default is a middle one of the activations
            suggested = default_dead_layers(self.probe)
            layers = [name for name, info in self.probe.layers.items() if info.shows_maps]
            # the size, mean, std and options, checked by maximize_activation itself
            maximize_activation(self.probe, _OptionsOnly(layers[0] if layers else None), steps=0, size=size,
                                progress=False, **self.options)
            self._counts = {name: int(self.probe.layers[name].map_shape[0]) for name in layers}
            self._counts[CLASS_TARGET] = class_count(self.probe) or 0
            scored = self._counts[CLASS_TARGET]
            if given_classes and scored and len(self.classes) != scored:
                raise ValueError(f"classes has {len(self.classes)} names, but the model scores {scored} classes; "
                                 "give one name per class (index = class)")
        except Exception:
            if self._owns_probe:
                self.probe.close()
            raise
        #: the input space runs use, in words (the status lines say it)
        self.input_space = _normalisation_text(mean, std)
        #: the size of the images runs make and where it came from, in words (the status lines say it)
        self.image_size = _run_size_text(model_or_probe, self.probe, size, options.get("input_size"))
        #: the image size in words where it was assumed, for the status lines of a run; else ""
        self._assumed_size = (f"; {self.image_size}"
                              if _size_assumed(model_or_probe, self.probe, size, options.get("input_size")) else "")
        self.result: ActMaxResult | None = None
        #: the target of the image on screen, in words (None while none is shown)
        self.shown_target: str | None = None
        self._shown_status = ""
        self._generation = 0
        self._cancel: threading.Event | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self.view = view if view is not None else ActMaxView()
        if steps is not None:
            self.view.steps = steps
        self.view.layers = [*layers, CLASS_TARGET]
        if self.view.layer is None:
            # a middle layer: a first-layer channel needs no search (its best input is its kernel)
            self.view.layer = (suggested[len(suggested) // 2] if suggested
                               else layers[len(layers) // 2] if layers else CLASS_TARGET)
        self._fit_channels()
        #: what the status line says while no image is shown and nothing went wrong
        self._prompt = f"choose a target and press Run to synthesise its image; {self.input_space}; {self.image_size}"
        if not self.view.status:
            self.view.status = self._prompt
        self.view.observe(self._on_running, names="running")
        self.view.observe(self._fit_channels, names="layer")  # first: the channel fits the target when said
        self.view.observe(self._on_target, names=["layer", "channel"])

    def _fit_channels(self, change: Any = None) -> None:
        """Bound the view's channel box to the chosen target's channels (classes), and name them."""
        view = self.view
        count = self._counts.get(view.layer, 0) if view.layer is not None else 0
        view.channel_names = self.classes if view.layer == CLASS_TARGET and len(self.classes) == count else []
        view.channels = count

    def _target(self) -> ChannelActivation | ClassLogit:
        layer, channel = self.view.layer, self.view.channel
        if layer is None:
            raise ValueError(f"no target chosen: pick a layer or {CLASS_TARGET} in the target menu, then press Run")
        if layer == CLASS_TARGET:
            return ClassLogit(channel)
        return ChannelActivation(layer, channel)

    def _on_running(self, change: Any) -> None:
        if change["new"]:
            self._launch()
        elif self._cancel is not None:
            self._cancel.set()

    def _on_target(self, change: Any) -> None:
        """Another target picked after a run: the image shown stays the last run's, and says so.
        After a run that failed (no image shown), the error was about the target it had: the
        status line asks for a run of the new one instead."""
        view = self.view
        if view.running:
            return
        if self.shown_target is None:
            if view.error:
                view.error = False
                view.status = self._prompt
            return
        if view.layer is None:
            then = "no target is chosen: pick one in the target menu"
        else:
            try:  # the probe re-describes a model changed since the run, which may no longer run
                chosen = _describe_target(view.layer, view.channel, self.classes, self._calls(view.layer))
            except Exception as exc:  # noqa: BLE001 - shown in the view, the widget goes on
                view.show_error(error_text(exc), keep_image=True)
                return
            then = "" if chosen == self.shown_target else f"press Run to synthesise one for {chosen}"
        view.error = False
        shown = self._shown_status
        view.status = f"{shown}. The image shown is for {self.shown_target}; {then}" if then else shown

    def _calls(self, layer: str | None) -> int:
        """How many times ``layer`` runs in one forward pass (1 for the class target or an unknown name)."""
        info = self.probe.layers.get(layer) if layer not in (None, CLASS_TARGET) else None
        return info.calls if info is not None else 1

    def start(self) -> None:
        """Start a run for the view's current target (cancelling any run in progress)."""
        if self.view.running:
            self._launch()
        else:
            self.view.running = True  # the observer launches it

    def _launch(self) -> None:
        view = self.view
        if self._cancel is not None:
            self._cancel.set()
        self._generation += 1
        generation, cancel = self._generation, threading.Event()
        self._cancel = cancel
        view.progress = 0
        try:
            if self._closed:
                raise RuntimeError("this view's controller is closed; make a new view with actmax_view(...)")
            target = self._target()  # read here, not in the thread: the run is for what the view shows now
            # (the probe re-describes a model changed since the view opened, which may no longer run)
            what, steps = _describe_target(view.layer, view.channel, self.classes, self._calls(view.layer)), view.steps
        except Exception as exc:  # noqa: BLE001 - shown in the view, the widget goes on
            self._show(None, "")
            view.show_error(error_text(exc))
            view.running = False
            return
        view.error = False
        view.status = f"running {what} ...{self._assumed_size}"
        if self.background:
            self._thread = threading.Thread(
                target=self._run, args=(generation, cancel, target, what, steps), daemon=True
            )
            stop_at_exit(self._thread, cancel.set)
            self._thread.start()
        else:
            self._run(generation, cancel, target, what, steps)

    def wait(self, timeout: float | None = None) -> None:
        """Block until the current background run has finished."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _show(self, what: str | None, status: str, rgb: torch.Tensor | None = None) -> None:
        """Show ``rgb`` (C, H, W), the image of the target ``what``, with ``status``."""
        self.shown_target, self._shown_status = what, status
        if rgb is not None:
            self.view.show_image(_to_uint8(rgb), status)

    def _run(self, generation: int, cancel: threading.Event, target: ChannelActivation | ClassLogit,
             what: str, steps: int) -> None:
        view = self.view

        def on_step(step: int, value: float, rgb: torch.Tensor) -> None:
            if generation != self._generation:
                cancel.set()
                return
            view.progress = step
            if step % self.update_every == 0:
                self._show(what, f"{what}: step {step} of {steps}, objective {value:.4g}{self._assumed_size}", rgb)

        try:
            # a run that found nothing is said in the status line, not by a warning from this thread
            with zero_gradient_quietly() as left_out:
                result = maximize_activation(
                    self.probe, target, steps=steps, size=self.size, progress=False,
                    callback=on_step, cancel=cancel, **self.options,
                )
            if generation != self._generation:
                return
            self.result = result
            state = "stopped" if result.cancelled else "done"
            quantity = "logit" if isinstance(target, ClassLogit) else "activation"
            warning = "".join(f"; {str(w).removeprefix('maximize_activation: ')}" for w in left_out)
            self._show(
                what,
                f"{state} after {result.steps} steps for {what}: its {quantity} went from "
                f"{result.initial_activation:.4g} to {result.activation:.4g}; {self.input_space}; "
                f"{self.image_size}{warning}",
                torch.from_numpy(result.rgb).permute(2, 0, 1),
            )
            view.running = False
        # also KeyboardInterrupt or SystemExit raised by the user's model in this thread: shown in the
        # view (a background thread has nobody else to tell), and Run is usable again
        except BaseException as exc:
            if generation == self._generation:
                self._show(None, "")
                view.show_error(error_text(exc))
                view.running = False
            if not self.background and not isinstance(exc, Exception):
                raise  # an interrupt of a run in the caller's thread stops the caller too

    def close(self) -> None:
        """Cancel any run and release the probe if this controller created it. Runs are refused
        afterwards."""
        self._closed = True
        if self._cancel is not None:
            self._cancel.set()
        self.wait()
        if self._owns_probe:
            self.probe.close()


def _describes(probe: Probe, size: Any, input_size: Any) -> bool:
    """Whether ``probe`` is described at the size the runs of a view ask for (``size`` H or
    (H, W), or an ``input_size`` (C, H, W); neither: whatever it is described at)."""
    if input_size is not None:
        try:
            return tuple(int(v) for v in input_size) == tuple(probe.input_size)
        except (TypeError, ValueError):
            return True  # refused with maximize_activation's own message below
    if size is None:
        return True
    try:
        return _image_size(size) == tuple(probe.input_size[1:])
    except ValueError:
        return True


def actmax_view(model_or_probe: nn.Module | Probe, layer: str | None = None, channel: int | None = None,
                **options: Any) -> ActMaxView:
    """A ready activation-maximisation view (see :class:`ActMaxController` for options, and
    what it raises; ``view`` is a TypeError: it makes its own).

    ``layer`` (a ``str``, NumPy's ``str_`` too) is the target the view starts on: a layer with
    feature maps, or :data:`CLASS_TARGET` for the class logits; default: a middle layer.
    ``channel`` (an int: a Python int, a NumPy integer or a 0-d integer tensor) is the channel
    (the class, for :data:`CLASS_TARGET`) it starts on; default: 0. Both are start values of
    the view's ``layer`` and ``channel``, which the user changes afterwards.

    Raises:
        TypeError: for a ``layer`` that is not a ``str`` or a ``channel`` that is not an int, and
            what :class:`ActMaxController` raises.
        ValueError: for a ``layer`` that is not one of the view's targets (the message lists
            them), a ``channel`` below 0 or not below the target's channels (or classes), and
            what :class:`ActMaxController` raises.
    """
    if "view" in options:
        raise TypeError("actmax_view(...) makes its own view, so view cannot be given; to drive a view of your own, "
                        "use ActMaxController(..., view=view)")
    if layer is not None and not isinstance(layer, str):
        raise TypeError(f"layer must be the name of a target (a str: a layer with feature maps, or {CLASS_TARGET!r}), "
                        f"got {type(layer).__name__} {layer!r:.60}")
    if channel is not None:
        channel = as_index(channel, "channel")
        if channel < 0:
            raise ValueError(f"channel must be an int >= 0, got {channel}")

    def attach(view: ActMaxView) -> ActMaxController:
        controller = ActMaxController(model_or_probe, view, **options)
        try:
            if layer is not None:
                if layer not in view.layers:
                    raise ValueError(f"layer {layer!r} is not a target of this model; choose one of {view.layers}")
                view.layer = layer
            if channel is not None:
                if 0 < view.channels <= channel:
                    raise ValueError(f"channel {channel} is out of range for target {view.layer!r}: accepted "
                                     f"0..{view.channels - 1}")
                view.channel = channel
        except Exception:
            controller.close()
            raise
        return controller

    return open_view(ActMaxView, attach)


def summary_view(
    model_or_probe: nn.Module | Probe, input_size: Sequence[int] | None = None, *, leaves_only: bool = True
) -> SummaryView:
    """The model summary as a filterable table widget.

    Raises:
        ValueError, RuntimeError: as :func:`cnnwidgets.methods.summary.summary`.
    """
    table = summary(model_or_probe, input_size, leaves_only=leaves_only)
    return SummaryView(
        table.columns,
        table.cells(),
        align=["right" if n else "left" for n in table.numeric],
        caption=f"{table.description()}\n{COLUMN_KEY}",
    )
