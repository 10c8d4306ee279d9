"""Controllers and one-liners for the experiments across images and training.

They wire the computations of :mod:`cnnwidgets.methods` (top-k patches, feature evolution,
invariance, correspondence) to the figures of :mod:`cnnwidgets.render.figures` and the views
of :mod:`cnnwidgets.widgets.experiments`:

=========================  ===============================  ===================================
experiment                 figure (paper layout)             widget
=========================  ===============================  ===================================
top-k patches (Fig. 2)     :func:`plot_topk`                 :func:`topk_view`
feature evolution (Fig. 4) :func:`plot_evolution`            :func:`evolution_view`
invariance (Fig. 5)        :func:`plot_invariance`           :func:`invariance_view`
correspondence (Table 1)   :func:`plot_part_boxes`           :func:`correspondence_view`
=========================  ===============================  ===================================

``denormalize`` everywhere is the model's inverse preprocessing, ``(C, H, W) tensor -> (H, W, 3)
image in [0, 1]`` (a zoo ``Bundle`` has one); without it, images are contrast-stretched.
Controllers compute only what a change invalidates and cache rendered results; errors
go to the view's status line.
"""

from __future__ import annotations

import html
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from cnnwidgets.core.probe import Probe
from cnnwidgets.methods.correspondence import RANDOM, CorrespondenceResult, occlude
from cnnwidgets.methods.evolution import FeatureEvolution, FeatureEvolutionRecorder
from cnnwidgets.methods.invariance import InvarianceResult, describe_transform, transform_images
from cnnwidgets.methods.topk import Projector, TopKActivations
from cnnwidgets.app.reporting import error_text, shown_in_view
from cnnwidgets.render.figures import (
    OUTSIDE,
    draw_boxes,
    evolution_figure,
    evolution_mosaic,
    figure_to_array,
    image_to_rgb,
    invariance_figure,
    part_boxes_figure,
    part_colour,
    projection_to_rgb,
    tile_grid,
    topk_figure,
    topk_mosaic,
)
from cnnwidgets.widgets.experiments import CorrespondenceView, EvolutionView, InvarianceView, TopKView
from cnnwidgets.widgets.summary import table_html

__all__ = [
    "CorrespondenceController",
    "EvolutionController",
    "InvarianceController",
    "TopKController",
    "correspondence_view",
    "evolution_blocks",
    "evolution_view",
    "invariance_view",
    "plot_evolution",
    "plot_invariance",
    "plot_part_boxes",
    "plot_topk",
    "topk_panel",
    "topk_view",
]

Denormalize = Callable[[torch.Tensor], Any]


# ---------------------------------------------------------------------------- display helpers
def display_image(pixels: torch.Tensor | np.ndarray, valid: Any = None, denormalize: Denormalize | None = None) -> np.ndarray:
    """One preprocessed image or patch (C, H, W) -> (H, W, 3) floats in [0, 1] (outside ``valid``: grey)."""
    valid_np = None if valid is None else np.asarray(valid.cpu() if isinstance(valid, torch.Tensor) else valid, dtype=bool)
    if denormalize is None:
        array = pixels.detach().cpu().numpy() if isinstance(pixels, torch.Tensor) else np.asarray(pixels)
        return image_to_rgb(array, valid_np)
    tensor = pixels if isinstance(pixels, torch.Tensor) else torch.from_numpy(np.asarray(pixels, dtype=np.float32))
    shown = denormalize(tensor.detach().cpu())
    rgb = np.asarray(shown.detach().cpu() if isinstance(shown, torch.Tensor) else shown, dtype=np.float32)
    if rgb.ndim == 3 and rgb.shape[0] in (1, 3) and rgb.shape[2] not in (1, 3):
        rgb = rgb.transpose(1, 2, 0)
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    rgb = np.clip(rgb, 0.0, 1.0)
    if valid_np is not None:
        rgb = rgb.copy()
        rgb[~valid_np] = OUTSIDE
    return rgb


def _strip(images: Sequence[np.ndarray], factor: int = 1) -> np.ndarray:
    tiles = [img.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else img for img in images]
    return tile_grid(tiles, len(tiles), pad=2)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def _factor(size: int, target: int) -> int:
    return max(1, -(-target // max(size, 1)))


# ---------------------------------------------------------------------------- top-k (Fig. 2)
def topk_panel(
    topk: TopKActivations,
    layer: str,
    channel: int,
    model_or_probe: nn.Module | Probe | None = None,
    *,
    projection: str | Projector | None = "auto",
    images: Any = None,
    denormalize: Denormalize | None = None,
) -> tuple[np.ndarray | None, np.ndarray]:
    """Displayable projections and patches of one channel's top entries.

    Args:
        topk: a scan result.
        layer, channel: which feature map.
        model_or_probe: the scanned model; ``None`` skips the projections.
        projection: see :meth:`TopKActivations.projections`.
        images: the data set, when the scan did not keep its images.
        denormalize: inverse preprocessing for the patches.

    Returns:
        ``(projections (k, h, w, 3) or None, patches (k, h, w, 3))`` floats in [0, 1].
    """
    patch_rgb = _patch_rgb(topk, layer, channel, images, denormalize)
    proj_rgb = None
    if model_or_probe is not None:
        proj_rgb = _projection_rgb(topk, layer, channel, model_or_probe, projection, images)
    return proj_rgb, patch_rgb


def _patch_rgb(topk: TopKActivations, layer: str, channel: int, images: Any,
               denormalize: Denormalize | None) -> np.ndarray:
    """Displayable patches (k, h, w, 3) of one channel's top entries (no model needed)."""
    patches = topk.patches(layer, channel, images)
    if not patches:
        raise ValueError(f"channel {channel} of {layer!r} has no entries yet")
    return np.stack([display_image(p.pixels, p.valid, denormalize) for p in patches])


def _projection_rgb(topk: TopKActivations, layer: str, channel: int, model_or_probe: nn.Module | Probe,
                    projection: str | Projector | None, images: Any) -> np.ndarray | None:
    """Displayable projections (k, h, w, 3) of one channel's top entries, ``None`` without a projector."""
    projected = topk.projections(model_or_probe, layer, channel, projection=projection, images=images)
    if projected is None:
        return None
    return np.stack([projection_to_rgb(p.pixels.numpy(), p.valid.numpy()) for p in projected])


def plot_topk(
    topk: TopKActivations,
    layer: str,
    channels: Sequence[int] | int = 6,
    model_or_probe: nn.Module | Probe | None = None,
    *,
    projection: str | Projector | None = "auto",
    images: Any = None,
    denormalize: Denormalize | None = None,
    columns: int = 2,
) -> Figure:
    """Fig. 2 for one layer: per channel, the top-9 projections next to their image patches.

    Args:
        channels: channel indices, or a number of channels evenly spaced over the layer.
        columns: channels per figure row.
        Others: see :func:`topk_panel`.
    """
    count = topk.num_channels(layer)
    if isinstance(channels, int):
        chosen = sorted({int(round(v)) for v in np.linspace(0, count - 1, min(channels, count))})
    else:
        chosen = list(channels)
    panels = []
    for channel in chosen:
        proj, patches = topk_panel(topk, layer, channel, model_or_probe, projection=projection, images=images,
                                   denormalize=denormalize)
        panels.append((f"{layer} · channel {channel}", proj, patches))
    title = f"{layer}: top {topk.k} activations over {topk.consumed} images" + ("" if topk.complete else " (partial scan)")
    return topk_figure(panels, columns=columns, title=title)


class TopKController:
    """Shows, for the layer and channel chosen in a :class:`TopKView`, the top patches and projections.

    The patches need no model, so they are shown even when the projections cannot be made (the
    model's weights changed since the scan, or another model was given); the status line then
    says why the projections are missing, as an error.

    Args:
        topk: the scan result.
        model_or_probe: the scanned model (for projections); ``None``: patches only.
        view: the view to drive (a new one by default).
        projection, images, denormalize: see :func:`topk_panel`.
        tile: tiles are enlarged to at least this many pixels.
        cache: rendered channels kept.
        class_names: names of the classes, for the labels in the table of entries.
    """

    def __init__(
        self,
        topk: TopKActivations,
        model_or_probe: nn.Module | Probe | None = None,
        view: TopKView | None = None,
        *,
        projection: str | Projector | None = "auto",
        images: Any = None,
        denormalize: Denormalize | None = None,
        tile: int = 56,
        cache: int = 64,
        class_names: Sequence[str] | None = None,
    ) -> None:
        self.topk = topk
        self.class_names = list(class_names) if class_names is not None else None
        self._owned = isinstance(model_or_probe, nn.Module)
        self.probe = Probe(model_or_probe) if isinstance(model_or_probe, nn.Module) else model_or_probe
        self.projection, self.images, self.denormalize, self.tile = projection, images, denormalize, tile
        self._cache: OrderedDict[tuple[str, int], tuple[np.ndarray, str, bool, str]] = OrderedDict()
        self._cache_size = cache
        self.view = view if view is not None else TopKView()
        self.view.layers = [name for name in topk.layers if name in topk.values]
        self.view.observe(self._layer_changed, names="layer")
        self.view.observe(self.update, names="channel")
        if self.view.layer is None and self.view.layers:
            self.view.layer = self.view.layers[0]
        else:
            self._layer_changed()

    def _layer_changed(self, change: Any = None) -> None:
        if self.view.layer is None:
            return
        self.view.num_channels = self.topk.num_channels(self.view.layer)
        self.update()

    def render(self, layer: str, channel: int) -> tuple[np.ndarray, str, bool, str]:
        """The ``uint8`` mosaic, the caption, whether projections are shown and why they are
        missing (``""`` when they are shown or were not asked for), for one channel.

        A failed projection leaves the patches only; such a mosaic is not cached, so the
        projections come back once the model matches the scan again.
        """
        key = (layer, channel)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        patches = _patch_rgb(self.topk, layer, channel, self.images, self.denormalize)
        proj, missing = None, ""
        if self.probe is not None:
            try:
                proj = _projection_rgb(self.topk, layer, channel, self.probe, self.projection, self.images)
            except Exception as exc:  # noqa: BLE001 - the patches are still valid; the reason goes to the status
                missing = error_text(exc)
        mosaic = topk_mosaic(proj, patches, tile=self.tile)
        rows = [
            [str(e.rank + 1), f"{e.value:.4g}", str(e.image_index), f"({e.row}, {e.col})", self._label_text(e.label)]
            for e in self.topk.entries(layer, channel)
        ]
        table = table_html(["#", "activation", "image", "unit (row, col)", "label"], rows,
                           ["right", "right", "right", "left", "left"])
        caption = f"<details><summary>entries (click to open)</summary>{table}</details>"
        entry = (mosaic, caption, proj is not None, missing)
        if not missing:
            self._cache[key] = entry
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return entry

    def _label_text(self, label: int | None) -> str:
        if label is None:
            return ""
        names = self.class_names
        return f"{names[label]} ({label})" if names is not None and 0 <= label < len(names) else str(label)

    @shown_in_view
    def update(self, change: Any = None) -> None:
        """Show the view's current channel."""
        view = self.view
        if view.layer is None:
            return
        mosaic, caption, projected, missing = self.render(view.layer, view.channel)
        view.caption = caption
        left = "projections (left) and patches (right)" if projected else "patches"
        status = (
            f"{view.layer} channel {view.channel}: {left}, strongest first (row by row); "
            f"{self.topk.consumed} images scanned" + ("" if self.topk.complete else " (partial)")
        )
        view.show_image(mosaic, status)
        if missing:
            view.show_error(f"{status}; no projections: {missing}")

    def close(self) -> None:
        """Release a probe this controller created."""
        if self._owned and self.probe is not None:
            self.probe.close()


def topk_view(topk: TopKActivations, model_or_probe: nn.Module | Probe | None = None, **options: Any) -> TopKView:
    """A ready top-k view (options: see :class:`TopKController`)."""
    view = TopKView()
    view.controller = TopKController(topk, model_or_probe, view, **options)
    return view


# ---------------------------------------------------------------------------- evolution (Fig. 4)
def evolution_blocks(
    evolution: FeatureEvolution,
    epochs: Sequence[int] | None = None,
    *,
    show: str = "projection",
    denormalize: Denormalize | None = None,
) -> dict[str, np.ndarray]:
    """Displayable cells ``{layer: (channels, epochs, h, w, 3)}`` for :func:`evolution_figure`.

    Args:
        epochs: the columns (default: all recorded epochs).
        show: ``"projection"`` (falls back to the patch where none was recorded) or ``"patch"``.

    Raises:
        ValueError: for a bad ``show`` or nothing recorded.
    """
    if show not in ("projection", "patch"):
        raise ValueError(f"show must be 'projection' or 'patch', got {show!r}")
    epochs = list(evolution.epochs if epochs is None else epochs)
    if not epochs:
        raise ValueError("nothing has been recorded yet")
    blocks = {}
    for layer, channels in evolution.channels.items():
        rows = []
        for channel in channels:
            row = []
            for epoch in epochs:
                frame = evolution.frame(layer, channel, epoch)
                if show == "projection" and frame.projection is not None:
                    row.append(projection_to_rgb(frame.projection, frame.valid))
                else:
                    row.append(display_image(frame.patch, frame.valid, denormalize))
            rows.append(np.stack(row))
        blocks[layer] = np.stack(rows)
    return blocks


def plot_evolution(
    source: FeatureEvolution | FeatureEvolutionRecorder,
    *,
    show: str = "projection",
    denormalize: Denormalize | None = None,
    epochs: Sequence[int] | None = None,
) -> Figure:
    """Fig. 4: a block per layer, a row per channel, a column per recorded epoch."""
    evolution = source.result() if isinstance(source, FeatureEvolutionRecorder) else source
    epochs = list(evolution.epochs if epochs is None else epochs)
    blocks = evolution_blocks(evolution, epochs, show=show, denormalize=denormalize)
    what = "projection of the strongest activation" if show == "projection" else "patch of the strongest activation"
    return evolution_figure(blocks, epochs, evolution.channels, title=f"Feature evolution ({what})",
                            unit=evolution.unit)


class EvolutionController:
    """Drives an :class:`EvolutionView` from a recorder (live) or a finished :class:`FeatureEvolution`.

    With a recorder, each ``record`` of a new epoch adds it to the slider. When the view's
    ``follow`` is on, the view jumps to that epoch, whichever epoch was chosen, so a class can
    watch the features form while training runs; when it is off, the view stays on the chosen
    epoch. Recording an epoch again refreshes its frames without moving the view.

    Args:
        source: a :class:`FeatureEvolutionRecorder` or a :class:`FeatureEvolution`.
        view: the view to drive (a new one by default).
        denormalize: inverse preprocessing for patches.
        tile: size of a cell on screen, in pixels.
        labelled: draw the cells as a figure whose rows name the layers and channels and whose
            columns name the epochs (as :func:`plot_evolution`); ``False``: the bare mosaic
            (cheaper: no matplotlib).
        dpi: resolution of the labelled figure.
    """

    def __init__(
        self,
        source: FeatureEvolution | FeatureEvolutionRecorder,
        view: EvolutionView | None = None,
        *,
        denormalize: Denormalize | None = None,
        tile: int = 40,
        labelled: bool = True,
        dpi: float = 90,
    ) -> None:
        self.recorder = source if isinstance(source, FeatureEvolutionRecorder) else None
        self.evolution = source.result() if isinstance(source, FeatureEvolutionRecorder) else source
        self.denormalize, self.tile = denormalize, tile
        self.labelled, self.dpi = labelled, dpi
        self.view = view if view is not None else EvolutionView()
        self.view.unit = self.evolution.unit
        if self.recorder is not None and self.recorder.projector is None:
            self.view.show = "patch"
        self.view.observe(self.update, names=["epoch", "show"])
        if self.recorder is not None:
            self.recorder.add_callback(self._recorded)
        self.view.epochs = list(self.evolution.epochs)
        self.update()

    def _recorded(self, recorder: FeatureEvolutionRecorder, epoch: int) -> None:
        before = self.view.epoch
        self.view.epochs = list(self.evolution.epochs)
        if self.view.epoch == before:  # no jump, but the frames of this epoch may have changed
            self.update()

    @shown_in_view
    def update(self, change: Any = None) -> None:
        """Show the recorded epochs up to the chosen one."""
        view = self.view
        if view.epoch is None:
            view.status = f"nothing recorded yet; call recorder.record({self.evolution.unit}) in the training loop"
            return
        epochs = [e for e in self.evolution.epochs if e <= view.epoch]
        blocks = evolution_blocks(self.evolution, epochs, show=view.show, denormalize=self.denormalize)
        what = f"{view.show} of each channel's strongest activation"
        if self.labelled:
            figure = evolution_figure(blocks, epochs, self.evolution.channels, title=None,
                                      cell_inches=self.tile / self.dpi, unit=self.evolution.unit)
            view.show_image(figure_to_array(figure, dpi=self.dpi), f"{self.evolution.unit}s {epochs}: {what}")
            return
        mosaic = evolution_mosaic(blocks, tile=self.tile)
        layers = ", ".join(f"{name}: ch {list(ch)}" for name, ch in self.evolution.channels.items())
        view.show_image(mosaic, f"{self.evolution.unit}s {epochs} (columns); rows: {layers}; {what}")

    def close(self) -> None:
        """Stop listening to the recorder."""
        if self.recorder is not None and self._recorded in self.recorder._callbacks:
            self.recorder.remove_callback(self._recorded)


def evolution_view(source: FeatureEvolution | FeatureEvolutionRecorder, **options: Any) -> EvolutionView:
    """A ready evolution view (options: see :class:`EvolutionController`)."""
    view = EvolutionView()
    view.controller = EvolutionController(source, view, **options)
    return view


# ---------------------------------------------------------------------------- invariance (Fig. 5)
def _examples(result: InvarianceResult, images: torch.Tensor, kind: str, values: Sequence[float],
              denormalize: Denormalize | None) -> np.ndarray:
    shown = [
        display_image(transform_images(images[:1], kind, v, interpolation=result.interpolation, fill=result.fill)[0],
                      None, denormalize)
        for v in values
    ]
    return np.stack(shown)


def plot_invariance(
    result: InvarianceResult,
    images: torch.Tensor | None = None,
    *,
    denormalize: Denormalize | None = None,
    image_names: Sequence[str] | None = None,
    examples: int = 5,
    title: str | None = None,
) -> Figure:
    """Fig. 5 (one column per transformation): distances per layer and true-class probability.

    Args:
        result: from :func:`~cnnwidgets.methods.invariance.invariance_curves`.
        images: the images used; with them a first row shows the first image transformed at
            ``examples`` parameter values.
        image_names: legend entries.
    """
    rows = None
    if images is not None and examples > 0:
        rows = {}
        for kind, values in result.values.items():
            picks = values[np.unique(np.round(np.linspace(0, len(values) - 1, min(examples, len(values)))).astype(int))]
            rows[kind] = (list(picks), _examples(result, images, kind, picks, denormalize))
    return invariance_figure(
        result.values, result.distances, result.probabilities, units=result.units, image_names=image_names,
        examples=rows, normalized=result.normalized, title=title,
    )


class InvarianceController:
    """Drives an :class:`InvarianceView`: the curves once, the transformed images per step.

    Args:
        result: from :func:`~cnnwidgets.methods.invariance.invariance_curves`.
        images: the images used (to show them transformed).
        view: the view to drive (a new one by default).
        denormalize: inverse preprocessing.
        image_names: names per image.
        class_names: names of the classes (for the readout).
        dpi: resolution of the curves (pixels per inch; the figure is at most 10 inches wide).

    Raises:
        ValueError: when ``images`` is not (N, C, H, W), or it or ``image_names`` does not have one
            entry per image of the result.
    """

    def __init__(
        self,
        result: InvarianceResult,
        images: torch.Tensor,
        view: InvarianceView | None = None,
        *,
        denormalize: Denormalize | None = None,
        image_names: Sequence[str] | None = None,
        class_names: Sequence[str] | None = None,
        dpi: float = 90,
    ) -> None:
        self.result, self.images, self.denormalize = result, images.detach().cpu(), denormalize
        n = len(result.labels)
        if self.images.dim() != 4:
            raise ValueError(f"images must be a tensor (N, C, H, W), got shape {tuple(self.images.shape)}")
        if self.images.shape[0] != n:
            raise ValueError(f"the result has {n} images, but {self.images.shape[0]} images were given; "
                             "pass the images the curves were computed on")
        if image_names is not None and len(image_names) != n:
            raise ValueError(f"the result has {n} images, but {len(image_names)} image names were given; "
                             "give one name per image")
        self.image_names = list(image_names) if image_names is not None else [f"image {i}" for i in range(n)]
        self.class_names = class_names
        self.view = view if view is not None else InvarianceView()
        try:
            figure = invariance_figure(result.values, result.distances, result.probabilities, units=result.units,
                                       image_names=self.image_names, normalized=result.normalized)
            self.view.show_image(figure_to_array(figure, dpi=dpi), "curves: one line per image")
        except Exception as exc:  # noqa: BLE001 - shown in the view, the widget goes on
            self.view.show_error(error_text(exc))
        self.view.transforms = list(result.values)
        self.view.observe(self._transform_changed, names="transform")
        self.view.observe(self.update, names="step")
        if self.view.transform is None and self.view.transforms:
            self.view.transform = self.view.transforms[0]
        else:
            self._transform_changed()

    def _transform_changed(self, change: Any = None) -> None:
        if self.view.transform is None:
            return
        kind = self.view.transform
        values = self.result.values[kind]
        self.view.step_labels = [describe_transform(kind, v) for v in values]
        self.view.num_steps = len(values)
        self.update()

    @shown_in_view
    def update(self, change: Any = None) -> None:
        """Show the images and values at the chosen step."""
        view, result = self.view, self.result
        kind = view.transform
        if kind is None:
            return
        value = float(result.values[kind][view.step])
        moved = transform_images(self.images, kind, value, interpolation=result.interpolation, fill=result.fill)
        shown = [display_image(img, None, self.denormalize) for img in moved]
        view.show_examples(_to_uint8(_strip(shown, _factor(max(shown[0].shape[:2]), 96))))
        rows = []
        for n, name in enumerate(self.image_names):
            label = int(result.labels[n])
            label_name = self.class_names[label] if self.class_names is not None else str(label)
            pred = int(result.predictions[kind][view.step, n])
            pred_name = self.class_names[pred] if self.class_names is not None else str(pred)
            rows.append([
                name,
                *(f"{result.distances[kind][l][view.step, n]:.4g}" for l in result.layers),
                f"{result.probabilities[kind][view.step, n]:.3f} ({label_name})",
                pred_name,
            ])
        distance = "||φ(x) − φ(T x)|| / ||φ(x)||" if result.normalized else "||φ(x) − φ(T x)||"
        columns = ["image", *result.layers, "P(true class)", "predicted"]
        align = ["left", *(["right"] * len(result.layers)), "left", "left"]
        view.readout = (
            f"<b>{html.escape(kind)}: {html.escape(describe_transform(kind, value))}</b><br>"
            f"feature distance {html.escape(distance)} at each layer, the true class's probability and "
            f"the prediction{table_html(columns, rows, align)}"
        )


def invariance_view(result: InvarianceResult, images: torch.Tensor, **options: Any) -> InvarianceView:
    """A ready invariance view (options: see :class:`InvarianceController`)."""
    view = InvarianceView()
    try:
        view.controller = InvarianceController(result, images, view, **options)
    except Exception:
        view.close()
        raise
    return view


# ---------------------------------------------------------------------------- correspondence (Table 1)
def plot_part_boxes(
    images: torch.Tensor,
    parts: Mapping[str, Sequence[Sequence[int]]],
    *,
    denormalize: Denormalize | None = None,
    titles: Sequence[str] | None = None,
) -> Figure:
    """The correspondence images with their part boxes (one colour per part)."""
    shown = [display_image(img, None, denormalize) for img in images.detach().cpu()]
    return part_boxes_figure(shown, parts, titles=titles)


class CorrespondenceController:
    """Drives a :class:`CorrespondenceView`: the table, and the images with the chosen part's boxes.

    Args:
        result: from :func:`~cnnwidgets.methods.correspondence.correspondence`.
        images: the images used.
        parts: the part boxes used.
        view: the view to drive (a new one by default).
        denormalize: inverse preprocessing.
        fill: the occluder value used (to show occluded images).
        tile: images are enlarged to at least this many pixels.

    Raises:
        ValueError: when ``images`` is not (N, C, H, W), or it or a part's boxes does not have one
            entry per image of the result.
    """

    def __init__(
        self,
        result: CorrespondenceResult,
        images: torch.Tensor,
        parts: Mapping[str, Sequence[Sequence[int]]],
        view: CorrespondenceView | None = None,
        *,
        denormalize: Denormalize | None = None,
        fill: float | Sequence[float] = 0.0,
        tile: int = 128,
    ) -> None:
        self.result, self.images, self.parts = result, images.detach().cpu(), dict(parts)
        n = result.num_images
        if self.images.dim() != 4:
            raise ValueError(f"images must be a tensor (N, C, H, W), got shape {tuple(self.images.shape)}")
        if self.images.shape[0] != n:
            raise ValueError(f"the result has {n} images, but {self.images.shape[0]} images were given; "
                             "pass the images the table was computed on")
        scored = [part for part in result.parts if part != RANDOM]
        unknown = [name for name in self.parts if name not in scored]
        if unknown:
            raise ValueError(f"part {unknown[0]!r} is not a part of the result; its parts are "
                             f"{', '.join(map(repr, scored))}")
        for name, boxes in self.parts.items():
            if len(boxes) != n:
                raise ValueError(f"part {name!r} has {len(boxes)} boxes, but the result has {n} images; "
                                 "give one box per image")
        self.denormalize, self.fill, self.tile = denormalize, fill, tile
        self.view = view if view is not None else CorrespondenceView()
        self.view.table_html = result.to_html()
        self.view.parts = list(self.parts)
        self.view.observe(self.update, names=["part", "occluded"])
        self.update()

    @shown_in_view
    def update(self, change: Any = None) -> None:
        """Draw the images with the chosen part's boxes (all parts when none is chosen)."""
        view = self.view
        names = [view.part] if view.part is not None else list(self.parts)
        images = self.images
        if view.occluded and view.part is not None:
            images = occlude(images, self.parts[view.part], self.fill)
        factor = _factor(max(images.shape[2:]), self.tile)
        order = list(self.parts)
        drawn = []
        for i, img in enumerate(images):
            rgb = _to_uint8(display_image(img, None, self.denormalize))
            rgb = rgb.repeat(factor, axis=0).repeat(factor, axis=1)
            boxes = {name: [v * factor for v in self.parts[name][i]] for name in names}
            palette = {name: part_colour(order.index(name)) for name in names}
            drawn.append(draw_boxes(rgb, boxes, width=max(1, factor // 2), colours=palette))
        view.show_image(_to_uint8(_strip([d.astype(np.float32) / 255 for d in drawn])),
                        "parts: " + ", ".join(names) + (" (occluded)" if view.occluded and view.part else ""))


def correspondence_view(
    result: CorrespondenceResult, images: torch.Tensor, parts: Mapping[str, Sequence[Sequence[int]]], **options: Any
) -> CorrespondenceView:
    """A ready correspondence view (options: see :class:`CorrespondenceController`)."""
    view = CorrespondenceView()
    try:
        view.controller = CorrespondenceController(result, images, parts, view, **options)
    except Exception:
        view.close()
        raise
    return view
