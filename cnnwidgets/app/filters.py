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

from cnnwidgets.app.reporting import error_text, shown_in_view
from cnnwidgets.app.worker import stop_at_exit
from cnnwidgets.core.probe import Probe, unwrap_model
from cnnwidgets.core.targets import ChannelActivation, ClassLogit, as_count, as_flag
from cnnwidgets.methods.actmax import (
    ActMaxResult,
    _image_size,
    bundle_normalization,
    fit_channels,
    maximize_activation,
)
from cnnwidgets.methods.dead import default_dead_layers
from cnnwidgets.methods.kernels import Kernels, conv_layer_names, kernels
from cnnwidgets.methods.summary import summary
from cnnwidgets.render._checks import check_int
from cnnwidgets.render.kernels import KERNEL_COLORMAPS, MIN_TILE_PIXELS, kernel_mosaic
from cnnwidgets.widgets.filters import ActMaxView, KernelView
from cnnwidgets.widgets.summary import SummaryView

__all__ = [
    "CLASS_TARGET",
    "ActMaxController",
    "KernelController",
    "MAX_KERNEL_TILE",
    "MAX_KERNEL_WIDTH",
    "actmax_view",
    "kernel_view",
    "summary_view",
]

#: The entry of the activation-maximisation target menu that means "a class logit".
CLASS_TARGET = "<class logit>"

#: The view's traits the kernel controller redraws on.
_KERNEL_SETTINGS = ["layer", "normalize", "out_channel"]

#: The largest ``tile`` of :class:`KernelController` (pixels): a tile is about this size on
#: screen, and a layer may have thousands.
MAX_KERNEL_TILE = 256

#: The largest ``width`` of :class:`KernelController` (pixels); wider pictures are shrunk to the
#: output's width anyway.
MAX_KERNEL_WIDTH = 4096


class KernelController:
    """Shows the kernels of the layer chosen in a :class:`KernelView`.

    Args:
        model_or_probe: the model (or a probe on it); weights are only read.
        view: the view to drive (a new one by default).
        colormap: ``"gray"`` or ``"diverging"`` for single-channel slices.
        max_tiles: an int >= 1, about the largest number of tiles the full grid of a layer
            (``out ch.`` -1, one row of input slices per output channel) is drawn with: a bigger
            grid shows its first output channels only, in whole rows, and at least one row (so a
            layer with more input channels than ``max_tiles`` still shows its first row); the
            status line says so. RGB tiles and one output channel's slices are always drawn whole.
        tile: an int in 1..:data:`MAX_KERNEL_TILE`: tiles are enlarged by a whole factor to about
            this many pixels where a row of them fits ``width``; never below
            :data:`~cnnwidgets.render.kernels.MIN_TILE_PIXELS`, the size
            :func:`~cnnwidgets.render.kernels.kernel_mosaic` draws by default.
        width: an int in 1..:data:`MAX_KERNEL_WIDTH`: pixels a row of tiles may take.

    Raises:
        ValueError: if the model has no 2-D convolution, for an unknown colormap, or for a
            ``max_tiles``, ``tile`` or ``width`` out of range.
        TypeError: for a ``max_tiles``, ``tile`` or ``width`` that is not an int.
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
    ) -> None:
        if colormap not in KERNEL_COLORMAPS:
            raise ValueError(f"colormap must be one of {KERNEL_COLORMAPS} for kernel tiles, got {colormap!r}")
        self.max_tiles = as_count(max_tiles, "max_tiles")
        self.tile = check_int(tile, "tile", minimum=1, maximum=MAX_KERNEL_TILE)
        self.width = check_int(width, "width", minimum=1, maximum=MAX_KERNEL_WIDTH)
        names = conv_layer_names(model_or_probe)
        if not names:
            raise ValueError("the model has no Conv2d layer, so there are no kernels to show")
        self.source = model_or_probe
        self.colormap = colormap
        self.view = view if view is not None else KernelView()
        self.view.layers = names
        if self.view.layer is None:
            self.view.layer = names[0]
        self.view.observe(self.update, names=_KERNEL_SETTINGS)
        self._observing = True
        self.update()

    @shown_in_view
    def update(self, change: Any = None) -> None:
        """Recompute and show the mosaic for the view's current state."""
        view = self.view
        if view.layer is None:
            view.clear_image("no layer chosen: pick a convolution layer in the menu")
            return
        out_channel = None if view.out_channel < 0 else view.out_channel
        k = kernels(self.source, view.layer, out_channel=out_channel, normalize=view.normalize)
        values, note = k.values, ""
        if k.layout == "grid" and values.shape[0] * values.shape[1] > self.max_tiles:
            rows = max(1, self.max_tiles // values.shape[1])
            values = values[:rows]
            note = f"; showing output channels 0-{rows - 1} of {k.weight.shape[0]}, pick one with 'out ch.'"
        size = values.shape[2] if k.layout == "grid" else values.shape[1]
        per_row = values.shape[1] if k.layout == "grid" else math.ceil(math.sqrt(values.shape[0]))
        fit = self.width // max(1, per_row * (size + 1))
        zoom = max(1, MIN_TILE_PIXELS // size, min(self.tile // size, fit))
        mosaic = kernel_mosaic(values, k.layout, cmap=self.colormap, zoom=zoom)
        o, i, h, w = k.weight.shape
        view.show_image(
            mosaic,
            f"{k.layer}: {o}x{i}x{h}x{w} weights ({_layout_text(k, _groups(self.source, k.layer))}), "
            f"scale per {k.normalize}, max |w| {float(np.abs(k.weight).max()):.3g}{note}"
            + ("" if view.out_channel >= 0 or o == 1 else "; set 'out ch.' to a channel to see only its slices"),
        )

    def close(self) -> None:
        """Stop following the view (it keeps what it shows)."""
        if self._observing:
            self.view.unobserve(self.update, names=_KERNEL_SETTINGS)
            self._observing = False


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

    Raises:
        ValueError: if the model has no convolution, ``layer`` is not one, or for an unknown
            colormap or options out of range. TypeError: for options of the wrong type.
    """
    view = KernelView()
    try:
        view.controller = KernelController(model_or_probe, view, **options)  # kept alive with the view
        if layer is not None:
            if layer not in view.layers:
                raise ValueError(f"{layer!r} is not a convolution layer; choose one of {view.layers}")
            view.layer = layer
    except Exception:
        view.close()  # no half-made view left open in the widget registry
        raise
    return view


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


def _describe_target(layer: str | None, channel: int) -> str:
    """The target of an actmax view's ``layer`` entry and ``channel`` in words (``"layer '3'
    channel 5"``, ``"class 7"``), as its status line names it."""
    return f"class {channel}" if layer == CLASS_TARGET else f"layer {layer!r} channel {channel}"


class ActMaxController:
    """Runs :func:`~cnnwidgets.methods.actmax.maximize_activation` when the view's Run is pressed.

    A run goes in a background thread (``background=True``), shows the image every
    ``update_every`` steps, and stops when Stop is pressed. Starting a new run cancels the
    previous one, whose late updates are dropped (generation counter). A run keeps the target
    and steps it started with (the view refuses changes while it runs), and every status line
    about an image names the target it belongs to; after a run, picking another target says
    that the image shown is still the last run's.

    Args:
        model_or_probe: the model or a probe on it (a model gets a private probe; call :meth:`close`).
        view: the view to drive (a new one by default).
        size: image size (H or (H, W)); default: the probe's input size. A probe passed in is
            then described at this size, as any capture at a new size does: its ``input_size``
            and ``layers`` describe the synthesized images afterwards.
        mean, std: the model's input normalisation (see ``maximize_activation``).
        background: run in a thread (``False``: block, e.g. in tests).
        update_every: steps between image updates during a run, an int >= 1.
        steps: the number of steps the view starts with, an int >= 1 (the user can change it there).
        options: more keyword arguments for ``maximize_activation`` (``lr``, ``decay``, ...).

    The size, ``mean``, ``std`` and options are checked up front by ``maximize_activation``'s
    own checks, run for 0 steps (a forward pass up to the first layer the view offers).

    Raises:
        TypeError: for an option the controller sets itself (``progress``, ``callback``,
            ``cancel``), an unknown option, or a count that is not an int.
        ValueError, TypeError: for a size, ``mean``, ``std`` or option ``maximize_activation``
            refuses (an ``lr`` <= 0, a ``mean`` with neither 1 nor C values ...), and for
            ``steps`` or ``update_every`` < 1.
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
        **options: Any,
    ) -> None:
        owned = sorted(set(options) & {"progress", "callback", "cancel"})
        if owned:
            raise TypeError(f"{', '.join(owned)} cannot be given: the controller sets them for each run "
                            "(it shows progress in the view, and its Stop button cancels)")
        unknown = sorted(set(options) - set(_ACTMAX_OPTIONS))
        if unknown:
            raise TypeError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} for "
                            f"maximize_activation; its options are {', '.join(_ACTMAX_OPTIONS)}")
        self.update_every = as_count(update_every, "update_every")
        if steps is not None:
            steps = as_count(steps, "steps")
        self.background = as_flag(background, "background")
        if mean is None and std is None:
            mean, std = bundle_normalization(model_or_probe)  # a zoo bundle's own input space
        self.options = dict(options, mean=mean, std=std)
        self.size = size
        if isinstance(model_or_probe, Probe):
            self.probe, self._owns_probe = model_or_probe, False
        else:
            self.probe, self._owns_probe = Probe(model_or_probe), True
        try:
            if size is not None:  # the probe described at the size, as every run describes it
                fit_channels(self.probe, *_image_size(size))
            layers = default_dead_layers(self.probe)
            # the size, mean, std and options, checked by maximize_activation itself
            maximize_activation(self.probe, _OptionsOnly(layers[0] if layers else None), steps=0, size=size,
                                progress=False, **self.options)
        except Exception:
            if self._owns_probe:
                self.probe.close()
            raise
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
            self.view.layer = layers[len(layers) // 2] if layers else CLASS_TARGET
        if not self.view.status:
            self.view.status = "choose a target and press Run to synthesise its image"
        self.view.observe(self._on_running, names="running")
        self.view.observe(self._on_target, names=["layer", "channel"])

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
        """Another target picked after a run: the image shown stays the last run's, and says so."""
        view = self.view
        if view.running or self.shown_target is None:
            return
        if view.layer is None:
            then = "no target is chosen: pick one in the target menu"
        else:
            chosen = _describe_target(view.layer, view.channel)
            then = "" if chosen == self.shown_target else f"press Run to synthesise {chosen}'s"
        view.error = False
        shown = self._shown_status
        view.status = f"{shown} - the image is {self.shown_target}'s; {then}" if then else shown

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
        except Exception as exc:  # noqa: BLE001 - shown in the view, the widget goes on
            self._show(None, "")
            view.show_error(error_text(exc))
            view.running = False
            return
        what, steps = _describe_target(view.layer, view.channel), view.steps
        view.error = False
        view.status = f"running {what} ..."
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
                self._show(what, f"{what}: step {step} of {steps}, objective {value:.4g}", rgb)

        try:
            result = maximize_activation(
                self.probe, target, steps=steps, size=self.size, progress=False,
                callback=on_step, cancel=cancel, **self.options,
            )
        except Exception as exc:  # shown in the view; a background thread has nobody else to tell
            if generation == self._generation:
                self._show(None, "")
                view.show_error(f"{type(exc).__name__}: {exc}")
                view.running = False
            return
        if generation != self._generation:
            return
        self.result = result
        state = "stopped" if result.cancelled else "done"
        self._show(
            what,
            f"{state} after {result.steps} steps for {what}: target {result.initial_activation:.4g} -> "
            f"{result.activation:.4g}",
            torch.from_numpy(result.rgb).permute(2, 0, 1),
        )
        view.running = False

    def close(self) -> None:
        """Cancel any run and release the probe if this controller created it. Runs are refused
        afterwards."""
        self._closed = True
        if self._cancel is not None:
            self._cancel.set()
        self.wait()
        if self._owns_probe:
            self.probe.close()


def actmax_view(model_or_probe: nn.Module | Probe, **options: Any) -> ActMaxView:
    """A ready activation-maximisation view (see :class:`ActMaxController` for options, and
    what it raises)."""
    view = ActMaxView()
    try:
        view.controller = ActMaxController(model_or_probe, view, **options)
    except Exception:
        view.close()  # no half-made view left open in the widget registry
        raise
    return view


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
        caption=table.description(),
    )
