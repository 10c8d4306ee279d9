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
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from cnnwidgets.core.probe import Probe
from cnnwidgets.core.targets import as_callback, as_count, as_flag, as_index, as_real
from cnnwidgets.methods.correspondence import RANDOM, CorrespondenceResult, occlude
from cnnwidgets.methods.evolution import FeatureEvolution, FeatureEvolutionRecorder
from cnnwidgets.methods.invariance import (
    InvarianceResult, check_fill, describe_transform, images_mismatch, transform_images,
)
from cnnwidgets.methods.topk import Projector, TopKActivations, _indexable, resolve_projector
from cnnwidgets.app.cells import open_view
from cnnwidgets.app.reporting import check_one_liner_options, error_text, shown_in_view
from cnnwidgets.render._checks import check_int
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
from cnnwidgets.widgets.summary import scrolling, table_html, wrapped_text

__all__ = [
    "CorrespondenceController",
    "EvolutionController",
    "InvarianceController",
    "MAX_DPI",
    "MAX_TILE",
    "MIN_DPI",
    "TopKController",
    "correspondence_view",
    "display_image",
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

#: The largest ``tile`` the controllers take (pixels): a tile is about this size on screen, and
#: a view draws many (9 + 9 per top-k channel, channels x epochs cells in the evolution view).
MAX_TILE = 512

#: The resolution range of the drawn figures (``dpi``, pixels per inch): below :data:`MIN_DPI`
#: the labels' fonts are less than a pixel high (matplotlib cannot draw them); above
#: :data:`MAX_DPI` a figure of a few inches is many thousand pixels wide.
MIN_DPI = 10
MAX_DPI = 600

#: What ``denormalize`` is called with and returns, for messages.
_DENORMALIZE_CALL = "(C, H, W) tensor -> (H, W, 3) image in [0, 1]"


def _bundle_denormalize(model: object) -> Denormalize | None:
    """The ``denormalize`` of a bundle (an object with an ``nn.Module`` in ``.model``, such as a
    zoo ``Bundle``), or None for a model, a probe or a bundle without one."""
    if isinstance(model, (nn.Module, Probe)) or not isinstance(getattr(model, "model", None), nn.Module):
        return None
    denormalize = getattr(model, "denormalize", None)
    return denormalize if callable(denormalize) else None


def _tile(value: object) -> int:
    """``tile`` as an int in 1..:data:`MAX_TILE`: a Python int, a NumPy integer or a 0-d integer
    tensor (the ints every count of the package takes)."""
    return check_int(value, "tile", minimum=1, maximum=MAX_TILE)


def _dpi(value: object) -> float:
    return as_real(value, "dpi", f"in {MIN_DPI}..{MAX_DPI} (pixels per inch)", lambda v: MIN_DPI <= v <= MAX_DPI)


def _denormalize(value: object) -> Denormalize | None:
    """``denormalize`` checked up front: None or a callable (not found out when the first image is shown)."""
    return as_callback(value, "denormalize", _DENORMALIZE_CALL)


def _names(value: object, what: str) -> list[str] | None:
    """``value`` as a list of names (None stays None): a list, tuple or array of them, not one
    string (whose letters would be taken for the names)."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or isinstance(value, Mapping):
        raise TypeError(f"{what} must be a list of names, got {type(value).__name__} {value!r:.60}")
    try:
        return [str(name) for name in value]  # type: ignore[union-attr]
    except TypeError:
        raise TypeError(f"{what} must be a list of names, got {type(value).__name__}") from None


def _require(value: object, kind: type, what: str, made_by: str) -> None:
    if not isinstance(value, kind):
        article = "an" if kind.__name__[0] in "AEIOU" else "a"
        raise TypeError(f"{what} must be {article} {kind.__name__} (from {made_by}), got {type(value).__name__}")


def _image_batch(images: object, result: InvarianceResult | CorrespondenceResult, used: str,
                 made_by: str) -> torch.Tensor:
    """``images`` checked as the (N, C, H, W) tensor of the images ``result`` was computed on (by
    ``made_by``): their number, and the shape and fingerprints the result records (a result that
    records none, made by hand or before they were recorded, is checked for what it records).

    Raises:
        TypeError: for ``images`` that are not a tensor.
        ValueError: for another shape, another number of images, or other images (another order
            included), saying what differs and what to pass.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a tensor (N, C, H, W), got {type(images).__name__}")
    images = images.detach().cpu()
    if images.dim() != 4:
        raise ValueError(f"images must be a tensor (N, C, H, W), got shape {tuple(images.shape)}")
    n = result.num_images if isinstance(result, CorrespondenceResult) else len(result.labels)
    if images.shape[0] != n:
        raise ValueError(f"the result has {n} images, but {images.shape[0]} images were given; "
                         f"pass the images the {used} computed on")
    mismatch = images_mismatch(images, getattr(result, "image_shape", None),
                               getattr(result, "image_fingerprints", None), f"the {used} computed")
    if mismatch:
        raise ValueError(f"these are not the images of the result: {mismatch}; pass the (N, C, H, W) tensor "
                         f"given to {made_by} as it was (the same images, in the same order, at the same size), "
                         "so that the pictures match the numbers")
    return images


# ---------------------------------------------------------------------------- display helpers
def display_image(pixels: torch.Tensor | np.ndarray, valid: Any = None, denormalize: Denormalize | None = None) -> np.ndarray:
    """One preprocessed image or patch -> (H, W, 3) floats in [0, 1]; NaN values are shown black,
    infinite ones black or white (by sign).

    Args:
        pixels: the image, (C, H, W) or (H, W): a tensor or an array; without ``denormalize``, C
            is 1 or 3.
        valid: an (H, W) mask of the pixels inside the image (the others are shown
            :data:`~cnnwidgets.render.figures.OUTSIDE` grey), or None (all are).
        denormalize: the model's inverse preprocessing, ``(C, H, W) tensor -> (H, W, 3) image in
            [0, 1]`` (``(C, H, W)`` is taken too, also for an image 1 or 3 pixels wide; the
            ``(3, 3, 3)`` result of a 3 x 3 image, which reads both ways, is read in the layout it
            returns for an image one pixel wider, for which it is called once more); None: the
            image is contrast-stretched (over its finite values) unless it lies in [0, 1] already.

    Raises:
        TypeError: for ``pixels`` that are not real numbers, or a ``denormalize`` that is not callable.
        ValueError: for an image of another shape, a ``valid`` mask of another size than the image,
            or a ``denormalize`` that returns an image of another shape.
        RuntimeError: when ``denormalize`` fails (its error is named).
    """
    denormalize = _denormalize(denormalize)
    real = not pixels.is_complex() if isinstance(pixels, torch.Tensor) else np.asarray(pixels).dtype.kind in "biuf"
    if not real:
        raise TypeError(f"pixels must be an image of real numbers, (C, H, W) or (H, W): a tensor or an array, got "
                        f"{type(pixels).__name__} {pixels!r:.40}")
    shape = tuple(np.shape(pixels))
    if denormalize is not None and len(shape) not in (2, 3):  # denormalize takes the channels the model takes
        raise ValueError(f"pixels must be an image (C, H, W) or (H, W); got shape {shape}")
    if denormalize is None and not (len(shape) == 2 or (len(shape) == 3 and shape[0] in (1, 3))):
        raise ValueError(f"pixels must be an image (C, H, W) with C = 1 or 3, or (H, W) (or pass denormalize= for "
                         f"other channels); got shape {shape}")
    valid_np = None if valid is None else np.asarray(valid.cpu() if isinstance(valid, torch.Tensor) else valid, dtype=bool)
    if valid_np is not None and valid_np.shape != shape[-2:]:
        raise ValueError(f"valid must be an (H, W) mask of the image's size {shape[-2:]}, got shape {valid_np.shape}")
    if denormalize is None:
        array = pixels.detach().cpu().numpy() if isinstance(pixels, torch.Tensor) else np.asarray(pixels)
        return image_to_rgb(array, valid_np)
    tensor = pixels if isinstance(pixels, torch.Tensor) else torch.from_numpy(np.asarray(pixels, dtype=np.float32))
    plain, size = tensor.detach().cpu(), tuple(tensor.shape[-2:])
    given, why = plain, ""  # the image denormalize is called on, for its error
    try:
        rgb = _denormalized(denormalize, plain)
        # the layout is read against the image's size: (C, H, W) where the last two axes are its size
        first = rgb.ndim == 3 and rgb.shape[0] in (1, 3) and tuple(rgb.shape[1:]) == size
        last = rgb.ndim == 3 and rgb.shape[2] in (1, 3) and tuple(rgb.shape[:2]) == size
        if first and last and rgb.shape[0] > 1:
            # (3, 3, 3) for a 3 x 3 image reads both ways: an image a pixel wider shows which axis is the width
            given = torch.cat([plain, plain[..., -1:]], dim=-1)
            why = (f" (the image of shape {tuple(tensor.shape)} one pixel wider, to tell which axis of its "
                   f"{tuple(rgb.shape)} result is the width)")
            wider = _denormalized(denormalize, given)
            first = wider.ndim == 3 and wider.shape[-1] == size[1] + 1
            last = not first
    except Exception as exc:  # noqa: BLE001 - the user's function: named as the cause
        raise RuntimeError(f"denormalize failed on an image of shape {tuple(given.shape)}{why}: "
                           f"{type(exc).__name__}: {exc}") from exc
    if first and not last:
        rgb = rgb.transpose(1, 2, 0)
    if rgb.ndim != 3 or rgb.shape[2] not in (1, 3) or rgb.shape[:2] != size:
        raise ValueError(f"denormalize must return the image as (C, H, W) or (H, W, C) with C = 1 or 3 and the "
                         f"input's size {tuple(tensor.shape[-2:])}; it returned shape {rgb.shape} for an image of "
                         f"shape {tuple(tensor.shape)}")
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    rgb = np.clip(np.nan_to_num(rgb, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    if valid_np is not None:
        rgb = rgb.copy()
        rgb[~valid_np] = OUTSIDE
    return rgb


def _denormalized(denormalize: Denormalize, image: torch.Tensor) -> np.ndarray:
    """What ``denormalize`` returns for ``image``, as a float32 array."""
    shown = denormalize(image)
    return np.asarray(shown.detach().cpu() if isinstance(shown, torch.Tensor) else shown, dtype=np.float32)


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

    Raises:
        TypeError: for a ``topk`` that is not a scan result, a ``layer`` that is no name, a
            ``channel`` that is not an int, a ``projection`` or ``denormalize`` that is neither
            None nor a callable (nor a projection's name), or ``images`` that give no images by index.
        KeyError: for a layer that was not scanned. IndexError: for a channel out of range.
        ValueError: for an unknown projection name (and as :meth:`TopKActivations.patches`).
    """
    _check_topk_options(topk, projection, images, denormalize)
    layer = _plain_name(layer)
    patch_rgb = _patch_rgb(topk, layer, channel, images, denormalize)
    proj_rgb = None
    if model_or_probe is not None:
        proj_rgb = _projection_rgb(topk, layer, channel, model_or_probe, projection, images)
    return proj_rgb, patch_rgb


def _check_topk_options(topk: object, projection: object, images: object, denormalize: object) -> None:
    """The arguments of the top-k functions that are not read until an image is drawn, checked
    up front: the scan result, the projection, the images' kind and ``denormalize``."""
    _require(topk, TopKActivations, "topk", "scan_topk(...)")
    resolve_projector(projection)  # type: ignore[arg-type]
    _indexable(images)
    _denormalize(denormalize)


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
        channels: channel indices, or a number (>= 1) of channels evenly spaced over the layer.
        columns: channels per figure row.
        topk, layer, model_or_probe, projection, images, denormalize: see :func:`topk_panel`.

    Raises:
        TypeError: for ``channels`` that are neither an int nor a list of channel indices, a
            ``columns`` that is not an int, and as :func:`topk_panel`.
        ValueError: for a number of channels < 1, an empty list or a ``columns`` < 1.
        IndexError: for a channel out of range. KeyError: for a layer that was not scanned.
    """
    _check_topk_options(topk, projection, images, denormalize)
    layer = _plain_name(layer)
    columns = as_count(columns, "columns")
    count = topk.num_channels(layer)
    if _zero_dim(channels):  # a number of channels as a 0-d array or tensor (np.int64(6) is one already)
        channels = as_count(channels.item() if isinstance(channels, np.ndarray) else channels,  # type: ignore[union-attr]
                            "channels (a number of channels)")
    if isinstance(channels, (bool, np.bool_, int, np.integer)):
        number = as_count(channels, "channels (a number of channels)")
        chosen = sorted({int(round(v)) for v in np.linspace(0, count - 1, min(number, count))})
    else:
        if isinstance(channels, (str, bytes)) or not isinstance(channels, (Sequence, np.ndarray, torch.Tensor)):
            raise TypeError(f"channels must be a number of channels or a list of channel indices, got "
                            f"{type(channels).__name__}")
        chosen = [as_index(c, "channel") for c in channels]
        if not chosen:
            raise ValueError(f"channels is empty; give channel indices of {layer!r} (0..{count - 1}) or a number of "
                             "channels")
        for channel in chosen:
            if not 0 <= channel < count:
                raise IndexError(f"channel {channel} is out of range: layer {layer!r} has {count} channels "
                                 f"(0..{count - 1})")
    panels = []
    for channel in chosen:
        proj, patches = topk_panel(topk, layer, channel, model_or_probe, projection=projection, images=images,
                                   denormalize=denormalize)
        panels.append((f"{layer} · channel {channel}", proj, patches))
    title = f"{layer}: top {topk.k} activations over {topk.consumed} images" + ("" if topk.complete else " (partial scan)")
    return topk_figure(panels, columns=columns, title=title)


def _plain_name(name: Any) -> Any:
    """A name given as a ``str`` subclass (NumPy's ``str_``) as a plain ``str``, for messages and
    titles; anything else as it is (for the check that refuses it)."""
    return str(name) if isinstance(name, str) else name


def _zero_dim(value: object) -> bool:
    """Whether ``value`` is a 0-d array or tensor (one number, which has no items to iterate)."""
    return isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim == 0


def _aligned(values: Sequence[float]) -> list[str]:
    """Numbers for one table column, all with as many decimals as give the largest four significant
    digits (10.58, 10.10, 9.889, 8.990 became 10.58, 10.10, 9.89, 8.99), so that they line up."""
    finite = [abs(v) for v in values if math.isfinite(v) and v != 0]
    if not finite:
        return [f"{v:.4g}" for v in values]
    largest = max(finite)
    if largest >= 1e6 or largest < 1e-3:
        return [f"{v:.3e}" for v in values]
    decimals = max(0, 3 - math.floor(math.log10(largest)))
    return [f"{v:.{decimals}f}" for v in values]


def _attach(controller: Any, view: Any) -> None:
    """Let ``view`` close ``controller`` with it (releasing a probe it made, leaving a recorder it
    listens to) when the view has no controller yet: one the controller made, or one given bare."""
    if getattr(view, "controller", None) is None:
        view.controller = controller


class TopKController:
    """Shows, for the layer and channel chosen in a :class:`TopKView`, the top patches and projections.

    The patches need no model, so they are shown even when the projections cannot be made (the
    model's weights changed since the scan, or another model was given); the status line then
    says why the projections are missing, as an error. Rendered channels are kept for the model
    version they were drawn with: after the weights change, every channel is drawn again, so
    one viewed before and one not say the same.

    Args:
        topk: the scan result.
        model_or_probe: the scanned model, a zoo bundle or a probe on it (for projections);
            ``None``: patches only.
        view: the view to drive (a new one by default).
        projection, images, denormalize: see :func:`topk_panel`; with a zoo bundle and no
            ``denormalize``, the bundle's ``denormalize`` is used. The status line says how the
            patches and projections are scaled.
        tile: tiles are enlarged to at least this many pixels, an int in 1..:data:`MAX_TILE`.
        cache: rendered channels kept, an int >= 0.
        class_names: names of the classes, for the labels in the table of entries (a list, one
            name per class the scan's labels name).

    Raises:
        TypeError: for a ``topk`` that is not a scan result, a model that is neither a model, a
            bundle nor a probe, ``class_names`` that are not a list, a ``tile`` or ``cache``
            that is not an int, a ``projection`` or ``denormalize`` that is neither None nor a
            callable (nor a projection's name), or ``images`` that give no images by index.
        ValueError: for a ``tile`` or ``cache`` out of range, an unknown projection name, or
            ``class_names`` without a name for a class the scan's labels name.
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
        _check_topk_options(topk, projection, images, denormalize)
        self.topk = topk
        self.class_names = _names(class_names, "class_names")
        if self.class_names is not None:  # the labels of the entries, named in the table
            labels = [int(v.max()) for v in getattr(topk, "labels", {}).values() if v.numel()]
            largest = max(labels, default=-1)
            if largest >= len(self.class_names):
                raise ValueError(f"class_names has {len(self.class_names)} names, but the scan's labels name class "
                                 f"{largest}; give one name per class")
        self.tile = _tile(tile)
        self._cache_size = as_count(cache, "cache", minimum=0)
        if denormalize is None:
            denormalize = _bundle_denormalize(model_or_probe)
        self.projection, self.images, self.denormalize = projection, images, denormalize
        self._owned = model_or_probe is not None and not isinstance(model_or_probe, Probe)
        # a model or a bundle gets one probe for all projections (raises for anything else)
        self.probe = Probe(model_or_probe) if self._owned else model_or_probe
        self._cache: OrderedDict[tuple[str, int], tuple[int | None, tuple[np.ndarray, str, bool, str]]] = OrderedDict()
        self.view = view if view is not None else TopKView()
        _attach(self, self.view)
        self.view.layers = [name for name in topk.layers if name in topk.values]
        self._switching_layer = False
        self.view.observe(self._layer_changed, names="layer")
        self.view.observe(self._channel_changed, names="channel")
        self._observing = True
        if self.view.layer is None and self.view.layers:
            self.view.layer = self.view.layers[0]
        else:
            self._layer_changed()

    @shown_in_view
    def _layer_changed(self, change: Any = None) -> None:
        """One render per layer change: the channel the view clamps into the new layer's range
        (see :class:`TopKView`) is drawn once, after the layer's channels are set. A layer the
        scan does not have (put in the view's ``layers`` by hand) is said in the status line."""
        if self.view.layer is not None:
            self._switching_layer = True
            try:
                self.view.num_channels = self.topk.num_channels(self.view.layer)
            finally:
                self._switching_layer = False
        self.update()

    def _channel_changed(self, change: Any = None) -> None:
        if not self._switching_layer:  # a clamp while the layer changes: _layer_changed draws it
            self.update()

    def _scaling_text(self, projected: bool) -> str:
        """How the tiles' grey levels are set, for the status line."""
        if self.denormalize is not None:
            patches = "patches un-normalised with denormalize (as the model saw them)"
        else:
            patches = ("patches each contrast-stretched on its own (min to max) unless already in [0, 1]; "
                       "pass denormalize= (or a zoo bundle) to show them as the model saw them")
        if not projected:
            return patches
        return f"projections each scaled on their own (0.5 + 0.5·p/max|p|, mid-gray = 0); {patches}"

    def _model_version(self) -> int | None:
        """The probe's version of the model (see :attr:`Probe.version`), brought up to date;
        None when it cannot say (a closed probe)."""
        if self.probe is None:
            return 0
        try:
            self.probe.sync()
        except Exception:  # noqa: BLE001 - the projections fail and say why
            return None
        return self.probe.version

    def render(self, layer: str, channel: int) -> tuple[np.ndarray, str, bool, str]:
        """The ``uint8`` mosaic, the caption, whether projections are shown and why they are
        missing (``""`` when they are shown or were not asked for), for one channel.

        A failed projection leaves the patches only; such a mosaic is not cached, so the
        projections come back once the model matches the scan again. A kept mosaic is used for
        the model version it was drawn with only.
        """
        key = (layer, channel)
        version = self._model_version()
        if key in self._cache and version is not None and self._cache[key][0] == version:
            self._cache.move_to_end(key)
            return self._cache[key][1]
        self._cache.pop(key, None)
        patches = _patch_rgb(self.topk, layer, channel, self.images, self.denormalize)
        proj, missing = None, ""
        if self.probe is not None:
            try:
                proj = _projection_rgb(self.topk, layer, channel, self.probe, self.projection, self.images)
            except Exception as exc:  # noqa: BLE001 - the patches are still valid; the reason goes to the status
                missing = error_text(exc)
        mosaic = topk_mosaic(proj, patches, tile=self.tile)
        entries = self.topk.entries(layer, channel)
        values = _aligned([e.value for e in entries])
        rows = [
            [str(e.rank + 1), value, str(e.image_index), f"({e.row}, {e.col})", self._label_text(e.label)]
            for e, value in zip(entries, values)
        ]
        table = table_html(["#", "activation", "image", "unit (row, col)", "label"], rows,
                           ["right", "right", "right", "left", "left"])
        caption = f"<details><summary>the {len(rows)} entries: activation, image, unit, label</summary>{table}</details>"
        entry = (mosaic, caption, proj is not None, missing)
        if not missing and version is not None:
            self._cache[key] = (version, entry)
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
            view.caption = ""
            view.clear_image("no layer chosen: pick a scanned layer in the menu")
            return
        mosaic, caption, projected, missing = self.render(view.layer, view.channel)
        view.caption = caption
        left = "projections (left) and patches (right)" if projected else "patches"
        status = (
            f"{view.layer} channel {view.channel}: {left}, strongest first (row by row); "
            f"{self.topk.consumed} images scanned" + ("" if self.topk.complete else " (partial)")
            + f"; {self._scaling_text(projected)}"
        )
        view.show_image(mosaic, status)
        if missing:  # the patches shown are this channel's: only the projections are missing
            view.show_error(f"{status}; no projections: {missing}", keep_image=True)

    def close(self) -> None:
        """Stop following the view and release a probe this controller created."""
        if self._observing:
            self.view.unobserve(self._layer_changed, names="layer")
            self.view.unobserve(self._channel_changed, names="channel")
            self._observing = False
        if self._owned and self.probe is not None:
            self.probe.close()


def topk_view(topk: TopKActivations, model_or_probe: nn.Module | Probe | None = None, layer: str | None = None,
              channel: int | None = None, **options: Any) -> TopKView:
    """A ready top-k view (options: see :class:`TopKController`, and what it raises; an unknown
    option, or ``view``, is a TypeError that names the options).

    ``layer`` (a ``str``, NumPy's ``str_`` too) is the scanned layer the view starts on (default:
    the first), ``channel`` (an int: a Python int, a NumPy integer or a 0-d integer tensor) the
    channel (default: 0); both are start values of the view's ``layer`` and ``channel``.

    Raises:
        TypeError: for a ``layer`` that is not a ``str``, a ``channel`` that is not an int, and
            what :class:`TopKController` raises.
        ValueError: for a ``layer`` the scan does not hold (the message lists those it holds), a
            ``channel`` outside the layer's channels, and what :class:`TopKController` raises.
    """
    check_one_liner_options(options, TopKController, "topk_view", ["layer", "channel"], ["layer", "channel"])
    if layer is not None and not isinstance(layer, str):
        raise TypeError(f"layer must be the name of a scanned layer (a str), got {type(layer).__name__} {layer!r:.60}")
    if channel is not None:
        channel = as_index(channel, "channel")

    def attach(view: TopKView) -> TopKController:
        controller = TopKController(topk, model_or_probe, view, **options)
        try:
            if layer is not None:
                if layer not in view.layers:
                    raise ValueError(f"layer {layer!r} is not a layer of the scan; choose one of {view.layers}")
                view.layer = layer
            if channel is not None:
                if not 0 <= channel < max(view.num_channels, 1):
                    raise ValueError(f"channel {channel} is out of range for layer {view.layer!r}: accepted "
                                     f"0..{view.num_channels - 1}")
                view.channel = channel
        except Exception:
            controller.close()
            raise
        return controller

    return open_view(TopKView, attach)


# ---------------------------------------------------------------------------- evolution (Fig. 4)
def _evolution_of(source: object, what: str) -> FeatureEvolution:
    """The :class:`FeatureEvolution` of ``source`` (itself, or what a recorder records).

    Raises:
        TypeError: for anything else, naming the argument ``what``.
    """
    if isinstance(source, FeatureEvolutionRecorder):
        return source.result()
    if not isinstance(source, FeatureEvolution):
        raise TypeError(f"{what} must be a FeatureEvolutionRecorder or the FeatureEvolution it records "
                        f"(recorder.result()), got {type(source).__name__}")
    return source


def _chosen_epochs(evolution: FeatureEvolution, epochs: object) -> list[int]:
    """``epochs`` checked as recorded epochs (or steps), each once, as a list of ints; all the
    recorded ones for None.

    Raises:
        TypeError: for ``epochs`` that are not a list of ints (one number, a string, floats, bools).
        ValueError: for no epochs, one that was not recorded or one given twice.
    """
    unit, recorded = evolution.unit, list(evolution.epochs)
    if not recorded:
        raise ValueError("nothing has been recorded yet")
    if epochs is None:
        return recorded
    if (isinstance(epochs, (str, bytes, Mapping)) or _zero_dim(epochs)
            or not isinstance(epochs, (Sequence, np.ndarray, torch.Tensor))):
        raise TypeError(f"epochs must be a list of recorded {unit}s ({recorded}), got {type(epochs).__name__} "
                        f"{epochs!r:.40}")
    chosen = [as_index(epoch, f"an entry of epochs (a recorded {unit})") for epoch in epochs]  # type: ignore[union-attr]
    if not chosen:
        raise ValueError(f"epochs is empty; give some of the recorded {unit}s {recorded}, or None for all")
    for epoch in chosen:
        if epoch not in recorded:
            raise ValueError(f"epochs: {unit} {epoch} was not recorded; recorded {unit}s: {recorded}")
    twice = sorted({epoch for epoch in chosen if chosen.count(epoch) > 1})
    if twice:
        raise ValueError(f"epochs gives {unit} {twice[0]} more than once; give each {unit} once")
    return chosen


def evolution_blocks(
    evolution: FeatureEvolution | FeatureEvolutionRecorder,
    epochs: Sequence[int] | None = None,
    *,
    show: str = "projection",
    denormalize: Denormalize | None = None,
) -> dict[str, np.ndarray]:
    """Displayable cells ``{layer: (channels, epochs, h, w, 3)}`` for :func:`evolution_figure`.

    Args:
        evolution: the recorded evolution, or the :class:`FeatureEvolutionRecorder` recording it.
        epochs: the columns, recorded epochs (or steps), each once (default: all recorded epochs).
        show: ``"projection"`` (falls back to the patch where none was recorded) or ``"patch"``.
        denormalize: inverse preprocessing for patches.

    Raises:
        TypeError: for an ``evolution`` of another kind, ``epochs`` that are not a list of ints,
            or a ``denormalize`` that is not callable.
        ValueError: for a bad ``show``, nothing recorded, no epochs, an epoch that was not
            recorded or one given twice.
    """
    evolution = _evolution_of(evolution, "evolution")
    if show not in ("projection", "patch"):
        raise ValueError(f"show must be 'projection' or 'patch', got {show!r}")
    epochs = _chosen_epochs(evolution, epochs)
    denormalize = _denormalize(denormalize)
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


def _evolution_row_labels(evolution: FeatureEvolution, class_names: Sequence[str] | None) -> dict[str, list[str]]:
    """The row labels of the class layers of ``evolution`` (``"3 koala"``, or ``"class 3"`` without
    names; see :meth:`~cnnwidgets.methods.evolution.FeatureEvolution.row_labels`); other layers'
    rows are labelled by channel.

    Raises:
        ValueError: for class names that are not one per class of a class layer.
    """
    return {layer: evolution.row_labels(layer, class_names) for layer in evolution.class_layers
            if layer in evolution.channels}


def plot_evolution(
    source: FeatureEvolution | FeatureEvolutionRecorder,
    *,
    show: str = "projection",
    denormalize: Denormalize | None = None,
    epochs: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
) -> Figure:
    """Fig. 4: a block per layer, a row per channel, a column per recorded epoch.

    Args:
        source: a :class:`FeatureEvolutionRecorder` or the :class:`FeatureEvolution` it records.
        show: ``"projection"`` or ``"patch"`` (see :func:`evolution_blocks`).
        denormalize: inverse preprocessing for patches.
        epochs: the columns (default: all recorded epochs).
        class_names: names of the model's classes (a list, index = class), for the rows of a
            recorded layer whose channels are the classes (the classifier: ``"3 koala"``; see
            :attr:`FeatureEvolution.class_layers`). Default: the names the recorder was given (or
            its bundle's); without any, such rows read ``"class 3"``. Rows of other layers read
            ``"ch 3"``.

    Raises:
        TypeError: for a ``source`` of another kind, ``class_names`` that are not a list of names,
            and as :func:`evolution_blocks`.
        ValueError: for class names that are not one per class of a recorded class layer, and
            as :func:`evolution_blocks`.
    """
    evolution = _evolution_of(source, "source")
    class_names = _names(class_names, "class_names")
    row_labels = _evolution_row_labels(evolution, class_names)
    epochs = _chosen_epochs(evolution, epochs)
    blocks = evolution_blocks(evolution, epochs, show=show, denormalize=denormalize)
    what = "projection of the strongest activation" if show == "projection" else "patch of the strongest activation"
    return evolution_figure(blocks, epochs, evolution.channels, title=f"Feature evolution ({what})",
                            unit=evolution.unit, row_labels=row_labels)


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
        dpi: resolution of the labelled figure, pixels per inch in :data:`MIN_DPI`..:data:`MAX_DPI`.
        class_names: names of the model's classes (a list, index = class), for the rows of a
            recorded layer whose channels are the classes (as :func:`plot_evolution`); default:
            the names the recorder was given (or its bundle's).

    Raises:
        TypeError: for a ``source`` of another kind, options of the wrong type, or a
            ``denormalize`` that is not callable.
        ValueError: for a ``tile`` outside 1..:data:`MAX_TILE` or a ``dpi`` outside
            :data:`MIN_DPI`..:data:`MAX_DPI`, or class names that are not one per class of a
            recorded class layer.
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
        class_names: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(source, (FeatureEvolution, FeatureEvolutionRecorder)):
            raise TypeError(f"source must be a FeatureEvolutionRecorder or the FeatureEvolution it records "
                            f"(recorder.result()), got {type(source).__name__}")
        self.tile, self.labelled, self.dpi = _tile(tile), as_flag(labelled, "labelled"), _dpi(dpi)
        self.recorder = source if isinstance(source, FeatureEvolutionRecorder) else None
        self.evolution = source.result() if isinstance(source, FeatureEvolutionRecorder) else source
        self.class_names = _names(class_names, "class_names")
        _evolution_row_labels(self.evolution, self.class_names)  # names that do not fit are refused now
        self.denormalize = _denormalize(denormalize)
        self.view = view if view is not None else EvolutionView()
        _attach(self, self.view)
        self.view.unit = self.evolution.unit
        self.view.projections = (self.recorder.projector is not None if self.recorder is not None else any(
            frame.projection is not None for frames in self.evolution.frames.values() for frame in frames))
        self.view.observe(self.update, names=["epoch", "show"])
        if self.recorder is not None:
            self.recorder.add_callback(self._recorded)
        self.view.epochs = list(self.evolution.epochs)
        self.update()

    def _recorded(self, recorder: FeatureEvolutionRecorder, epoch: int) -> None:
        if getattr(self.view, "_closed", False):
            self.close()  # the view was closed: training goes on without it
            return
        before = self.view.epoch
        self.view.epochs = list(self.evolution.epochs)
        if self.view.epoch == before:  # no jump, but the frames of this epoch may have changed
            self.update()

    def _nothing_yet_text(self) -> str:
        """The status before anything is recorded: how to record, and at which epochs."""
        unit = self.evolution.unit
        wanted = None if self.recorder is None else self.recorder.epochs
        if wanted is None:
            return f"nothing recorded yet; call recorder.record({unit}) in the training loop"
        shown = ", ".join(str(e) for e in wanted[:12]) + (" ..." if len(wanted) > 12 else "")
        return (f"nothing recorded yet; call recorder.record({unit}) in the training loop: this recorder records "
                f"at {unit}s {shown} only, and calls at other {unit}s do nothing (make it with epochs=None to "
                "record at every call, or force=True for one)")

    @shown_in_view
    def update(self, change: Any = None) -> None:
        """Show the recorded epochs up to the chosen one."""
        view = self.view
        if view.epoch is None:
            unit = self.evolution.unit
            view.clear_image(
                f"no {unit} chosen: pick one with the slider" if view.epochs else self._nothing_yet_text()
            )
            return
        epochs = [e for e in self.evolution.epochs if e <= view.epoch]
        blocks = evolution_blocks(self.evolution, epochs, show=view.show, denormalize=self.denormalize)
        what = f"{view.show} of each channel's strongest activation; {self._scaling_text(view.show)}"
        row_labels = _evolution_row_labels(self.evolution, self.class_names)
        if self.labelled:
            figure = evolution_figure(blocks, epochs, self.evolution.channels, title=None,
                                      cell_inches=self.tile / self.dpi, unit=self.evolution.unit,
                                      row_labels=row_labels)
            view.show_image(figure_to_array(figure, dpi=self.dpi), f"{self.evolution.unit}s {epochs}: {what}")
            return
        mosaic = evolution_mosaic(blocks, tile=self.tile)
        layers = ", ".join(self._rows_text(name, channels, row_labels.get(name))
                           for name, channels in self.evolution.channels.items())
        view.show_image(mosaic, f"{self.evolution.unit}s {epochs} (columns); rows: {layers}; {what}")

    @staticmethod
    def _rows_text(layer: str, channels: Sequence[int], labels: Sequence[str] | None) -> str:
        """What the rows of ``layer`` are, for the status line: ``"conv2: ch [0, 5]"``, and for a class
        layer ``"fc: classes [0 cat, 1 dog]"`` (``"fc: classes [0, 1]"`` without names)."""
        if labels is None:
            return f"{layer}: ch {list(channels)}"
        named = any(label != f"class {c}" for label, c in zip(labels, channels))
        return f"{layer}: classes [{', '.join(labels)}]" if named else f"{layer}: classes {list(channels)}"

    def _scaling_text(self, show: str) -> str:
        """How the cells' grey levels are set, for the status line."""
        if self.denormalize is not None:
            patches = "patches un-normalised with denormalize"
        else:
            patches = "patches each contrast-stretched on its own (min to max) unless already in [0, 1]"
        if show == "patch":
            return f"each cell on its own: {patches}"
        return (f"each cell scaled on its own: projections 0.5 + 0.5·p/max|p| (mid-gray = 0; a cell without a "
                f"projection shows the patch), {patches}")

    def close(self) -> None:
        """Stop listening to the recorder."""
        if self.recorder is not None and self._recorded in self.recorder._callbacks:
            self.recorder.remove_callback(self._recorded)


def evolution_view(source: FeatureEvolution | FeatureEvolutionRecorder, **options: Any) -> EvolutionView:
    """A ready evolution view (options: see :class:`EvolutionController`, and what it raises; an
    unknown option, or ``view``, is a TypeError that names the options)."""
    check_one_liner_options(options, EvolutionController, "evolution_view")
    return open_view(EvolutionView, lambda view: EvolutionController(source, view, **options))


# ---------------------------------------------------------------------------- invariance (Fig. 5)
def _examples(result: InvarianceResult, images: torch.Tensor, kind: str, values: Sequence[float],
              denormalize: Denormalize | None, example: int = 0) -> np.ndarray:
    one = images[example:example + 1]
    shown = [
        display_image(transform_images(one, kind, v, interpolation=result.interpolation, fill=result.fill)[0],
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
    example: int | str = 0,
) -> Figure:
    """Fig. 5 (one column per transformation): distances per layer and true-class probability.

    Args:
        result: from :func:`~cnnwidgets.methods.invariance.invariance_curves`.
        images: the images used; with them a first row shows one image (``example``) transformed
            at ``examples`` parameter values.
        denormalize: inverse preprocessing for that row.
        examples: how many parameter values the row shows (0: no row).
        image_names: legend entries, one per image of the result.
        title: figure title.
        example: the image that row shows: its index, or its name in ``image_names``. Pick one
            without rotational symmetry to see a rotation (a circle looks the same at every angle).

    Raises:
        ValueError: for ``image_names`` that are not one per image, ``images`` that are not
            the (N, C, H, W) images of the result (their number, shape and fingerprints, as the
            result records them), an ``example`` that names no image, or a
            negative ``examples``.
        TypeError: an ``example`` that is neither an int nor a str, an ``examples`` that is not
            an int, a ``title`` that is neither a str nor None, or a ``denormalize`` that is not
            callable.
    """
    _require(result, InvarianceResult, "result", "invariance_curves(...)")
    examples = as_count(examples, "examples (how many parameter values the row of images shows)", minimum=0)
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a str or None, got {type(title).__name__} {title!r:.40}")
    denormalize = _denormalize(denormalize)
    n = len(result.labels)
    image_names = _names(image_names, "image_names")
    if image_names is not None and len(image_names) != n:
        raise ValueError(f"the result has {n} images, but {len(image_names)} image names were given; "
                         "give one name per image")
    if images is not None:
        images = _image_batch(images, result, "curves were", "invariance_curves(...)")
    if isinstance(example, str):
        if image_names is None or example not in image_names:
            raise ValueError(f"example {example!r} names no image; the image names are "
                             f"{list(image_names) if image_names is not None else 'not given (pass image_names=)'}")
        example = list(image_names).index(example)
    else:
        example = as_index(example, "example")
        if not -n <= example < n:
            raise ValueError(f"example must be an image's index, 0..{n - 1} (or from the end, -{n}..-1), got {example}")
        example %= n
    rows = None
    if images is not None and examples > 0:
        rows = {}
        for kind, values in result.values.items():
            picks = values[np.unique(np.round(np.linspace(0, len(values) - 1, min(examples, len(values)))).astype(int))]
            rows[kind] = (list(picks), _examples(result, images, kind, picks, denormalize, example))
    return invariance_figure(
        result.values, result.distances, result.probabilities, units=result.units, image_names=image_names,
        examples=rows, normalized=result.normalized, title=title,
    )


def _identity_step(kind: str, values: Sequence[float]) -> int:
    """The step of ``values`` that leaves the images unchanged (shift 0, rotation 0, scale 1;
    :func:`describe_transform` reads it "no shift", "no rotation", "original size"), or the
    step nearest to it when the range leaves it out."""
    values = np.asarray(values, dtype=np.float64)
    if kind == "scale":
        with np.errstate(divide="ignore", invalid="ignore"):
            away = np.abs(np.log(np.where(values > 0, values, np.nan)))
        away = np.where(np.isnan(away), np.inf, away)
    else:
        away = np.abs(values)
    return int(np.argmin(away)) if away.size else 0


class InvarianceController:
    """Drives an :class:`InvarianceView`: the curves with a line at the chosen step, the
    transformed images per step.

    The view opens on the identity step (no shift, no rotation, original size) of the first
    transformation, and switching to another transformation goes to its identity step, not to
    the index the previous one was on, whose meaning differs. The curves
    keep the line of the last step shown while no transformation is chosen or a step fails.

    Args:
        result: from :func:`~cnnwidgets.methods.invariance.invariance_curves`.
        images: the images used (to show them transformed).
        view: the view to drive (a new one by default).
        denormalize: inverse preprocessing.
        image_names: names per image.
        class_names: names of the classes (for the readout), one per class the result names.
        dpi: resolution of the curves, pixels per inch in :data:`MIN_DPI`..:data:`MAX_DPI` (the
            figure is at most 10 inches wide).

    Raises:
        TypeError: for a ``result`` that is not an :class:`InvarianceResult`, ``images`` that are
            not a tensor, names that are not lists, a ``dpi`` that is no number or a
            ``denormalize`` that is not callable.
        ValueError: when ``images`` is not (N, C, H, W), or it or ``image_names`` does not have one
            entry per image of the result, when ``images`` are not the images the curves were computed
            on (another size, order or images: the result records their shape and fingerprints, see
            :func:`~cnnwidgets.methods.invariance.image_fingerprints`), when ``class_names`` has no
            name for a class the result names (a label or a prediction), or for a ``dpi`` outside
            :data:`MIN_DPI`..:data:`MAX_DPI`.
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
        _require(result, InvarianceResult, "result", "invariance_curves(...)")
        n = len(result.labels)
        self.result, self.images = result, _image_batch(images, result, "curves were", "invariance_curves(...)")
        self.denormalize = _denormalize(denormalize)
        image_names = _names(image_names, "image_names")
        if image_names is not None and len(image_names) != n:
            raise ValueError(f"the result has {n} images, but {len(image_names)} image names were given; "
                             "give one name per image")
        self.image_names = image_names if image_names is not None else [f"image {i}" for i in range(n)]
        self.class_names = _names(class_names, "class_names")
        if self.class_names is not None:
            named = [np.asarray(result.labels).ravel(), *(np.asarray(p).ravel() for p in result.predictions.values())]
            largest = max((int(a.max()) for a in named if a.size), default=-1)
            if largest >= len(self.class_names):
                raise ValueError(f"class_names has {len(self.class_names)} names, but the result names class "
                                 f"{largest} (a label or a prediction); give one name per class")
        self.dpi = _dpi(dpi)
        self.view = view if view is not None else InvarianceView()
        _attach(self, self.view)
        #: the status line about the curves, shown with every step (an error if they failed)
        self._curves_status, self._curves_failed = "curves: one line per image", False
        #: curves drawn, by marked step ``(transform, step)`` (None: no marker)
        self._curves: OrderedDict[tuple[str, int] | None, np.ndarray] = OrderedDict()
        self._show_curves(None)
        self.view.transforms = list(result.values)
        self._switching = False
        self._last_transform: str | None = None  # the transformation whose steps the view shows
        self.view.observe(self._transform_changed, names="transform")
        self.view.observe(self._step_changed, names="step")
        if self.view.transform is None and self.view.transforms:
            self.view.transform = self.view.transforms[0]
        else:
            self._transform_changed()

    def _show_curves(self, marked: tuple[str, int] | None) -> None:
        """Show the curves with a vertical line at the step ``marked`` (none for None); sets
        the curves' part of the status line (an error when they cannot be drawn)."""
        result = self.result
        try:
            if marked not in self._curves:
                marker = None if marked is None else {marked[0]: float(result.values[marked[0]][marked[1]])}
                figure = invariance_figure(result.values, result.distances, result.probabilities, units=result.units,
                                           image_names=self.image_names, normalized=result.normalized, marker=marker)
                self._curves[marked] = figure_to_array(figure, dpi=self.dpi)
                while len(self._curves) > 16:
                    self._curves.popitem(last=False)
            self._curves.move_to_end(marked)
            self._curves_status, self._curves_failed = "curves: one line per image", False
            self.view.show_image(self._curves[marked], self._curves_status)
        except Exception as exc:  # noqa: BLE001 - shown in the view, the widget goes on
            self._curves_status, self._curves_failed = error_text(exc), True
            self.view.clear_curves()  # no curves marking another step
            self.view.show_error(self._curves_status, keep_image=True)

    @shown_in_view
    def _transform_changed(self, change: Any = None) -> None:
        """Set the steps of the transformation chosen and draw it; one the result does not have
        (put in the view's ``transforms`` by hand) is said in the status line."""
        if self.view.transform is None:
            self.update()
            return
        kind = self.view.transform
        if kind not in self.result.values:
            raise ValueError(f"the result has no transformation {kind!r}; it has {', '.join(map(repr, self.result.values))}")
        values = self.result.values[kind]
        # the first transformation shown opens on its identity step; a switch from another one (also by
        # way of none) goes there too: the step index means something else here
        switched = self._last_transform != kind
        self._last_transform = kind
        self._switching = True  # the step settles below; draw once, at the end
        try:
            self.view.step_labels = [describe_transform(kind, v) for v in values]
            self.view.num_steps = len(values)
            if switched:
                self.view.step = _identity_step(kind, values)
        finally:
            self._switching = False
        self.update()

    def _step_changed(self, change: Any = None) -> None:
        if not self._switching:
            self.update()

    @shown_in_view
    def update(self, change: Any = None) -> None:
        """Show the images and values at the chosen step."""
        view, result = self.view, self.result
        kind = view.transform
        if kind is None:
            view.clear_image(f"{self._curves_status}; no transformation chosen: pick one in the menu")  # curves stay
            view.error = self._curves_failed
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
        view.readout = wrapped_text(
            f"<b>{html.escape(kind)}: {html.escape(describe_transform(kind, value))}</b><br>"
            f"feature distance {html.escape(distance)} at each layer, the true class's probability and "
            f"the prediction (the dashed line on the curves marks this step)"
        ) + table_html(columns, rows, align)
        self._show_curves((kind, view.step))  # after the step's images: a step that fails leaves the curves
        view.error, view.status = self._curves_failed, self._curves_status  # a failed step said otherwise


def invariance_view(result: InvarianceResult, images: torch.Tensor, **options: Any) -> InvarianceView:
    """A ready invariance view (options: see :class:`InvarianceController`, and what it raises; an
    unknown option, or ``view``, is a TypeError that names the options)."""
    check_one_liner_options(options, InvarianceController, "invariance_view")
    return open_view(InvarianceView, lambda view: InvarianceController(result, images, view, **options))


# ---------------------------------------------------------------------------- correspondence (Table 1)
def plot_part_boxes(
    images: torch.Tensor,
    parts: Mapping[str, Sequence[Sequence[int]]],
    *,
    denormalize: Denormalize | None = None,
    titles: Sequence[str] | None = None,
) -> Figure:
    """The correspondence images with their part boxes (one colour per part).

    Args:
        images: the images, a tensor (N, C, H, W).
        parts: ``{part: [one (x0, y0, x1, y1) box per image]}``, boxes in whole pixels inside the
            images, as :func:`~cnnwidgets.methods.correspondence.correspondence` takes them.
        denormalize: the model's inverse preprocessing, or None (see :func:`display_image`).
        titles: one title per image, or None.

    Raises:
        TypeError: for ``images`` that are not a tensor, ``parts`` that are not a mapping,
            ``titles`` that are not a list, or a ``denormalize`` that is not callable.
        ValueError: for ``images`` that are not (N, C, H, W) with N >= 1, a part without one box
            per image, a box ``correspondence`` refuses (not whole pixels, not inside the image,
            empty), or ``titles`` that are not one per image.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a tensor (N, C, H, W), got {type(images).__name__}")
    if images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a tensor (N, C, H, W) of at least one image, got shape {tuple(images.shape)}")
    images = images.detach().cpu()
    denormalize = _denormalize(denormalize)
    if not isinstance(parts, Mapping):
        raise TypeError(f"parts must be a mapping {{part name: [one (x0, y0, x1, y1) box per image]}}, got "
                        f"{type(parts).__name__}")
    checked = {name: _part_boxes(name, boxes, images) for name, boxes in parts.items()}
    titles = _names(titles, "titles")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"{len(titles)} titles were given for {len(images)} images; give one title per image")
    shown = [display_image(img, None, denormalize) for img in images]
    return part_boxes_figure(shown, checked, titles=titles)


def _part_boxes(name: object, boxes: object, images: torch.Tensor,
                whose: str = "images has") -> list[tuple[int, int, int, int]]:
    """The boxes of part ``name``, one ``(x0, y0, x1, y1)`` per image of ``images``, checked as
    :func:`~cnnwidgets.methods.correspondence.correspondence` checks them (whole pixels, inside
    the image, not empty), as tuples of ints; ``whose`` says whose images are counted.

    Raises:
        ValueError: for anything else, naming the part (and the image).
    """
    n = images.shape[0]
    if isinstance(boxes, (str, bytes)) or not hasattr(boxes, "__len__"):
        raise ValueError(f"part {name!r} must be a list of one (x0, y0, x1, y1) box per image ({n}), got {boxes!r:.60}")
    if len(boxes) != n:  # type: ignore[arg-type]
        raise ValueError(f"part {name!r} has {len(boxes)} boxes, but {whose} {n} images; "  # type: ignore[arg-type]
                         "give one box per image")
    try:  # the check correspondence() makes: whole pixels, inside the image, not empty
        occlude(images, boxes)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ValueError(f"part {name!r}, {exc}") from exc
    return [tuple(int(v) for v in box) for box in boxes]  # type: ignore[union-attr,misc]


class CorrespondenceController:
    """Drives a :class:`CorrespondenceView`: the table, and the images with the chosen part's boxes.

    Args:
        result: from :func:`~cnnwidgets.methods.correspondence.correspondence`.
        images: the images used.
        parts: the part boxes to show, ``{part: [one (x0, y0, x1, y1) box per image]}``; None
            (the default): all the boxes the result records. Boxes given are checked as
            :func:`~cnnwidgets.methods.correspondence.correspondence` checks them (whole pixels,
            inside the image, not empty) and must be the boxes the table was computed with (a
            result made by hand, which records none, cannot tell).
        view: the view to drive (a new one by default).
        denormalize: inverse preprocessing.
        fill: the occluder value used (to show occluded images): one value or one per channel.
            Default (None): the result's own :attr:`~CorrespondenceResult.fill`, 0.0 for a result
            made by hand.
        tile: images are enlarged to at least this many pixels, an int in 1..:data:`MAX_TILE`.

    Raises:
        TypeError: for a ``result`` that is not a :class:`CorrespondenceResult`, ``images`` that
            are not a tensor, ``parts`` that are not a mapping, a ``fill`` or ``tile`` of the
            wrong type, or a ``denormalize`` that is not callable.
        ValueError: when ``images`` is not (N, C, H, W), or it or a part's boxes does not have one
            entry per image of the result, when ``images`` are not the images the table was computed
            on (another size, order or images: the result records their shape and fingerprints),
            for no parts, a part the result does not have, a box ``correspondence`` refuses or
            that differs from the box the result scored, a ``fill`` with neither 1 nor C values or
            other than the one the result was computed with, or a ``tile`` out of range.
    """

    def __init__(
        self,
        result: CorrespondenceResult,
        images: torch.Tensor,
        parts: Mapping[str, Sequence[Sequence[int]]] | None = None,
        view: CorrespondenceView | None = None,
        *,
        denormalize: Denormalize | None = None,
        fill: float | Sequence[float] | None = None,
        tile: int = 128,
    ) -> None:
        _require(result, CorrespondenceResult, "result", "correspondence(...)")
        self.result, self.images = result, _image_batch(images, result, "table was", "correspondence(...)")
        if parts is None:
            if not result.boxes:
                raise ValueError("this result records no boxes (it was not made by correspondence()); "
                                 "give parts={part name: [box per image]}")
            parts = result.boxes
        if not isinstance(parts, Mapping):
            raise TypeError(f"parts must be a mapping {{part name: [one (x0, y0, x1, y1) box per image]}}, got "
                            f"{type(parts).__name__}")
        scored = [part for part in result.parts if part != RANDOM]
        if not parts:
            raise ValueError(f"parts is empty; give the boxes of the result's parts ({', '.join(map(repr, scored))}), "
                             "{part name: [box per image]}")
        unknown = [name for name in parts if name not in scored]
        if unknown:
            raise ValueError(f"part {unknown[0]!r} is not a part of the result; its parts are "
                             f"{', '.join(map(repr, scored))}")
        recorded = getattr(result, "fill", None)
        self.fill = check_fill(fill if fill is not None else recorded if recorded is not None else 0.0,
                               self.images.shape[1])
        if fill is not None and recorded is not None and not np.allclose(
                np.broadcast_to(np.asarray(self.fill, dtype=np.float64), (self.images.shape[1],)),
                np.broadcast_to(np.asarray(recorded, dtype=np.float64), (self.images.shape[1],))):
            raise ValueError(f"fill {self.fill} is not the fill the table was computed with, {recorded}; leave fill "
                             "out to show the result's own")
        self.parts: dict[str, list[tuple[int, int, int, int]]] = {}
        for name, boxes in parts.items():
            self.parts[name] = _part_boxes(name, boxes, self.images, "the result has")
            scored_boxes = result.boxes.get(name)
            if scored_boxes is not None:
                for i, (given, box) in enumerate(zip(self.parts[name], scored_boxes)):
                    if tuple(given) != tuple(box):
                        raise ValueError(f"part {name!r}, image {i}: box {given} is not the box the table was "
                                         f"computed with, {tuple(box)}; leave parts out to show the result's boxes")
        self.denormalize, self.tile = _denormalize(denormalize), _tile(tile)
        self.view = view if view is not None else CorrespondenceView()
        _attach(self, self.view)
        self.view.table_html = wrapped_text(scrolling(result.to_html()))
        self.view.parts = list(self.parts)
        self.view.observe(self.update, names=["part", "occluded"])
        self.update()

    @shown_in_view
    def update(self, change: Any = None) -> None:
        """Draw the images with the chosen part's boxes (all parts when none is chosen), the
        chosen part occluded when ``occluded`` is on (with all parts, the status says it has no
        effect)."""
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
        status = "parts: " + ", ".join(names)
        if view.occluded:
            status += (" (occluded)" if view.part is not None
                       else "; 'occluded' has no effect with all parts shown: pick one part to occlude it")
        view.show_image(_to_uint8(_strip([d.astype(np.float32) / 255 for d in drawn])), status)


def correspondence_view(
    result: CorrespondenceResult,
    images: torch.Tensor,
    parts: Mapping[str, Sequence[Sequence[int]]] | None = None,
    **options: Any,
) -> CorrespondenceView:
    """A ready correspondence view of ``result`` on ``images``, showing the result's part boxes (or
    the ``parts`` given, which must be those boxes). Options: see :class:`CorrespondenceController`,
    and what it raises; an unknown option, or ``view``, is a TypeError that names the options."""
    check_one_liner_options(options, CorrespondenceController, "correspondence_view")
    return open_view(CorrespondenceView, lambda view: CorrespondenceController(result, images, parts, view, **options))
