"""Controllers that wire a model to the filter-family views (kernels, activation maximisation, summary).

Each controller observes its view's traits, computes with :mod:`cnnwidgets.methods`, renders
with :mod:`cnnwidgets.render` and pushes ``uint8`` images or text back. Errors go to the view's
status line. One-liners: :func:`kernel_view`, :func:`actmax_view`, :func:`summary_view`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnwidgets.app.reporting import shown_in_view
from cnnwidgets.app.worker import stop_at_exit
from cnnwidgets.core.probe import Probe
from cnnwidgets.core.targets import ChannelActivation, ClassLogit
from cnnwidgets.methods.actmax import ActMaxResult, bundle_normalization, fit_channels, maximize_activation
from cnnwidgets.methods.dead import default_dead_layers
from cnnwidgets.methods.kernels import conv_layer_names, kernels
from cnnwidgets.methods.summary import summary
from cnnwidgets.render.kernels import KERNEL_COLORMAPS, MIN_TILE_PIXELS, kernel_mosaic
from cnnwidgets.widgets.filters import ActMaxView, KernelView
from cnnwidgets.widgets.summary import SummaryView

__all__ = [
    "CLASS_TARGET",
    "ActMaxController",
    "KernelController",
    "actmax_view",
    "kernel_view",
    "summary_view",
]

#: The entry of the activation-maximisation target menu that means "a class logit".
CLASS_TARGET = "<class logit>"


class KernelController:
    """Shows the kernels of the layer chosen in a :class:`KernelView`.

    Args:
        model_or_probe: the model (or a probe on it); weights are only read.
        view: the view to drive (a new one by default).
        colormap: ``"gray"`` or ``"diverging"`` for single-channel slices.
        max_tiles: largest number of tiles drawn at once; bigger grids show their first output
            channels only (the status line says so).
        tile: tiles are enlarged by a whole factor to about this many pixels where a row of
            them fits ``width``; never below
            :data:`~cnnwidgets.render.kernels.MIN_TILE_PIXELS`, the size
            :func:`~cnnwidgets.render.kernels.kernel_mosaic` draws by default.
        width: pixels a row of tiles may take.

    Raises:
        ValueError: if the model has no 2-D convolution, or for an unknown colormap.
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
        names = conv_layer_names(model_or_probe)
        if not names:
            raise ValueError("the model has no Conv2d layer, so there are no kernels to show")
        self.source = model_or_probe
        self.colormap = colormap
        self.max_tiles = max_tiles
        self.tile, self.width = tile, width
        self.view = view if view is not None else KernelView()
        self.view.layers = names
        if self.view.layer is None:
            self.view.layer = names[0]
        self.view.observe(self.update, names=["layer", "normalize", "out_channel"])
        self.update()

    @shown_in_view
    def update(self, change: Any = None) -> None:
        """Recompute and show the mosaic for the view's current state."""
        view = self.view
        if view.layer is None:
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
        mosaic = kernel_mosaic(values, k.layout, colormap=self.colormap, zoom=zoom)
        o, i, h, w = k.weight.shape
        what = {
            "rgb": "RGB tiles",
            "grid": "rows: output, columns: input channel",
            "slices": f"output channel {k.out_channel}",
        }
        view.show_image(
            mosaic,
            f"{k.layer}: {o}x{i}x{h}x{w} weights ({what[k.layout]}), scale per {k.normalize}, "
            f"max |w| {float(np.abs(k.weight).max()):.3g}{note}"
            + ("" if view.out_channel >= 0 or o == 1 else "; set 'out ch.' to a channel to see only its slices"),
        )


def kernel_view(model_or_probe: nn.Module | Probe, layer: str | None = None, **options: Any) -> KernelView:
    """A ready kernel view of ``model_or_probe`` (see :class:`KernelController` for options).

    Raises:
        ValueError: if the model has no convolution, ``layer`` is not one, or for an unknown colormap.
    """
    view = KernelView()
    controller = KernelController(model_or_probe, view, **options)
    if layer is not None:
        if layer not in view.layers:
            raise ValueError(f"{layer!r} is not a convolution layer; choose one of {view.layers}")
        view.layer = layer
    view.controller = controller  # keep it alive with the view
    return view


def _to_uint8(rgb: torch.Tensor, min_size: int = 256) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H', W', 3) uint8, enlarged by an integer factor to >= min_size."""
    image = (rgb.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    factor = max(1, -(-min_size // max(image.shape[:2])))
    return np.ascontiguousarray(image.repeat(factor, axis=0).repeat(factor, axis=1))


class ActMaxController:
    """Runs :func:`~cnnwidgets.methods.actmax.maximize_activation` when the view's Run is pressed.

    A run goes in a background thread (``background=True``), shows the image every
    ``update_every`` steps, and stops when Stop is pressed. Starting a new run cancels the
    previous one, whose late updates are dropped (generation counter).

    Args:
        model_or_probe: the model or a probe on it (a model gets a private probe; call :meth:`close`).
        view: the view to drive (a new one by default).
        size: image size (H or (H, W)); default: the probe's input size. A probe passed in is
            then described at this size, as any capture at a new size does: its ``input_size``
            and ``layers`` describe the synthesized images afterwards.
        mean, std: the model's input normalisation (see ``maximize_activation``).
        background: run in a thread (``False``: block, e.g. in tests).
        update_every: steps between image updates during a run.
        steps: the number of steps the view starts with (the user can change it there).
        options: more keyword arguments for ``maximize_activation`` (``lr``, ``decay``, ...).

    Raises:
        TypeError: for an option the controller sets itself (``progress``, ``callback``,
            ``cancel``).
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
        if isinstance(model_or_probe, Probe):
            self.probe, self._owns_probe = model_or_probe, False
        else:
            self.probe, self._owns_probe = Probe(model_or_probe), True
        if size is not None:
            h, w = (size, size) if isinstance(size, int) else tuple(size)
            fit_channels(self.probe, h, w)
        self.size = size
        if mean is None and std is None:
            mean, std = bundle_normalization(model_or_probe)  # a zoo bundle's own input space
        self.options = dict(options, mean=mean, std=std)
        self.background = background
        self.update_every = max(1, int(update_every))
        self.result: ActMaxResult | None = None
        self._generation = 0
        self._cancel: threading.Event | None = None
        self._thread: threading.Thread | None = None
        self.view = view if view is not None else ActMaxView()
        if steps is not None:
            self.view.steps = steps
        layers = default_dead_layers(self.probe)
        self.view.layers = [*layers, CLASS_TARGET]
        if self.view.layer is None:
            # a middle layer: a first-layer channel needs no search (its best input is its kernel)
            self.view.layer = layers[len(layers) // 2] if layers else CLASS_TARGET
        if not self.view.status:
            self.view.status = "choose a target and press Run to synthesise its image"
        self.view.observe(self._on_running, names="running")

    def _target(self) -> ChannelActivation | ClassLogit:
        if self.view.layer == CLASS_TARGET:
            return ClassLogit(self.view.channel)
        return ChannelActivation(self.view.layer, self.view.channel)

    def _on_running(self, change: Any) -> None:
        if change["new"]:
            self._launch()
        elif self._cancel is not None:
            self._cancel.set()

    def start(self) -> None:
        """Start a run for the view's current target (cancelling any run in progress)."""
        if self.view.running:
            self._launch()
        else:
            self.view.running = True  # the observer launches it

    def _launch(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
        self._generation += 1
        generation, cancel = self._generation, threading.Event()
        self._cancel = cancel
        self.view.progress = 0
        self.view.error = False
        self.view.status = "running ..."
        if self.background:
            self._thread = threading.Thread(target=self._run, args=(generation, cancel), daemon=True)
            stop_at_exit(self._thread, cancel.set)
            self._thread.start()
        else:
            self._run(generation, cancel)

    def wait(self, timeout: float | None = None) -> None:
        """Block until the current background run has finished."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, generation: int, cancel: threading.Event) -> None:
        view = self.view

        def on_step(step: int, value: float, rgb: torch.Tensor) -> None:
            if generation != self._generation:
                cancel.set()
                return
            view.progress = step
            if step % self.update_every == 0:
                view.show_image(_to_uint8(rgb), f"step {step}: objective {value:.4g}")

        try:
            result = maximize_activation(
                self.probe, self._target(), steps=view.steps, size=self.size, progress=False,
                callback=on_step, cancel=cancel, **self.options,
            )
        except Exception as exc:  # shown in the view; a background thread has nobody else to tell
            if generation == self._generation:
                view.show_error(f"{type(exc).__name__}: {exc}")
                view.running = False
            return
        if generation != self._generation:
            return
        self.result = result
        state = "stopped" if result.cancelled else "done"
        view.show_image(
            _to_uint8(torch.from_numpy(result.rgb).permute(2, 0, 1)),
            f"{state} after {result.steps} steps: target {result.initial_activation:.4g} -> {result.activation:.4g}",
        )
        view.running = False

    def close(self) -> None:
        """Cancel any run and release the probe if this controller created it."""
        if self._cancel is not None:
            self._cancel.set()
        self.wait()
        if self._owns_probe:
            self.probe.close()


def actmax_view(model_or_probe: nn.Module | Probe, **options: Any) -> ActMaxView:
    """A ready activation-maximisation view (see :class:`ActMaxController` for options)."""
    view = ActMaxView()
    view.controller = ActMaxController(model_or_probe, view, **options)
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
