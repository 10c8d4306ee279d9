"""Top-k dataset patches per channel (Zeiler & Fergus 2014, section 4, Fig. 2).

"For each feature map we show the top 9 activations across the validation data, each
projected separately down to pixel space ... alongside the corresponding image patches."
This module finds those activations in one streaming pass over a data set, crops the
receptive-field patch of each, and projects each one back to pixel space.

What is kept
------------
For every channel ``c`` of every chosen layer ``L`` the scan keeps the ``k`` largest entries
of the set

* ``per_image=True`` (default, the paper's figures): ``{(max_{h,w} a_L(x_n)[c, h, w], n, argmax) : n}``,
  each image's strongest unit, so the ``k`` entries come from ``k`` different images;
* ``per_image=False``: ``{(a_L(x_n)[c, h, w], n, (h, w)) : n, h, w}``, every unit, so one
  image may appear several times (neighbouring units of one strong response).

Entries are ordered by value, largest first; ties go to the smaller image index, then to the
first position in row-major order, so the result does not depend on how the data is split
into batches. A layer with a (C,) output (a linear layer) has one unit per image at
position (0, 0).

Memory is bounded by ``k`` x channels, not by the data set: after each batch the ``k`` kept
entries and the batch's candidates are merged and cut back to ``k``. With
``keep_images=True`` the scan also keeps a copy of every source image still referenced by a
kept entry (at most ``k`` x total channels images, usually far fewer), so patches and
projections can be drawn without the data set - the only way when a shuffling
``DataLoader`` cannot reproduce an image from its index.

Receptive-field patches and padding
-----------------------------------
Unit ``(h, w)`` of a layer with receptive field ``r``, jump ``j`` and start ``s`` (see
:class:`~cnnwidgets.core.layers.LayerInfo`) sees the input square whose top-left pixel is
``(t + h j, t + w j)`` with ``t = s - (r - 1) / 2`` (an integer for conv/pool chains) and whose
side is ``r``. Units near the border see past the image edge, into the zero padding of the
convolutions. :func:`crop_receptive_field` returns the full ``r x r`` square, with the part
outside the image filled with ``fill`` and marked in a ``valid`` mask, so the unit always sits
at the centre of its patch; renderers grey out the invalid part. Layers whose geometry is
unknown (after a linear layer, adaptive pooling, ...) get the whole image as their patch.
The receptive field is the classic one: in a network with squeeze-and-excitation blocks
(EfficientNet, MobileNetV3, RegNetY) every unit also depends weakly on the whole image through
the pooled scales, which the patch leaves out. A layer that concatenates branches (a DenseNet
block, an Inception block, a SqueezeNet Fire module) gets the receptive field of its widest
branch: the channels that come from a shorter branch (a DenseNet block's input channels, a 1x1
branch) see less of the image than their patches show.

Saving and resuming
-------------------
:meth:`TopKActivations.save` writes plain tensors and JSON metadata with ``torch.save``;
:meth:`TopKActivations.load` reads them with ``weights_only=True``. The state records how
many items were consumed, so :func:`scan_topk` with a ``checkpoint`` path continues an
interrupted scan (skipping the consumed items without running the model on them) and
returns a finished one without scanning again.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from cnnwidgets.core.layers import LayerInfo, check_map_not_empty
from cnnwidgets.core.probe import Probe, check_batch, check_channel_axis, layer_names, not_a_model_hint, probe_scope, takes_as_model
from cnnwidgets.core.targets import _describe_value, as_callback, as_count, as_flag, as_index, check_finite_activation

__all__ = [
    "Box",
    "Patch",
    "Projector",
    "TopKActivations",
    "TopKEntry",
    "crop_receptive_field",
    "deconvnet_projector",
    "default_projector",
    "model_fingerprint",
    "receptive_field_box",
    "resolve_projector",
    "scan_topk",
]

_FORMAT = "cnnwidgets.topk/1"

Projector = Callable[[Probe, torch.Tensor, str, torch.Tensor, torch.Tensor], torch.Tensor]
"""``fn(probe, images (N, C, H, W), layer, channels (N,) long, units (N, 2) long) -> (N, C, H, W)``.

Projects, for each image ``n``, the activation of channel ``channels[n]`` at unit
``units[n] = (row, col)`` of ``layer`` to pixel space (rows are independent, so one call
can project different channels of one layer at once).
"""


# ---------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class Box:
    """A rectangle of input pixels: rows ``top .. top+height-1``, columns ``left .. left+width-1``.

    May extend past the image (a border unit's receptive field); see :meth:`clip`.

    Attributes:
        top: the first row (negative above the image).
        left: the first column (negative left of the image).
        height: number of rows.
        width: number of columns.
    """

    top: int
    left: int
    height: int
    width: int

    @property
    def bottom(self) -> int:
        """One past the last row."""
        return self.top + self.height

    @property
    def right(self) -> int:
        """One past the last column."""
        return self.left + self.width

    def clip(self, height: int, width: int) -> Box:
        """The part inside an image of ``height`` x ``width`` (possibly empty)."""
        top, left = max(self.top, 0), max(self.left, 0)
        bottom, right = min(self.bottom, height), min(self.right, width)
        return Box(top, left, max(bottom - top, 0), max(right - left, 0))

    def as_tuple(self) -> tuple[int, int, int, int]:
        """``(top, left, height, width)``: rows first, as the fields. For the explorer's
        ``box``, which is ``(x, y, w, h)``, use :meth:`xywh`."""
        return (self.top, self.left, self.height, self.width)

    def xywh(self) -> tuple[int, int, int, int]:
        """``(x, y, w, h)`` = ``(left, top, width, height)``: the order of the explorer's ``box``
        (``explorer.box = entry_box.clip(h, w).xywh()`` puts the occluder on this patch)."""
        return (self.left, self.top, self.width, self.height)


def receptive_field_box(info: LayerInfo | None, row: int, col: int, image_size: Sequence[int]) -> Box:
    """The input square that unit ``(row, col)`` of a layer sees.

    Top-left corner ``(t + row * j, t + col * j)`` with ``t = start - (r - 1) / 2``, side ``r``
    (receptive field ``r``, jump ``j``, see :mod:`cnnwidgets.core.layers`). Not clipped.

    Args:
        info: the layer's :class:`LayerInfo`; ``None``, or a layer without known geometry or
            spatial output, gives the whole image.
        row, col: the unit.
        image_size: (H, W) or (C, H, W) of the input.

    Returns:
        The box (unclipped: it may extend past the image border).
    """
    height, width = int(image_size[-2]), int(image_size[-1])
    if info is None or info.receptive_field is None or info.jump is None or info.start is None or info.map_shape is None:
        return Box(0, 0, height, width)
    r, j = int(info.receptive_field), int(info.jump)
    top = int(round(info.start - (r - 1) / 2))
    return Box(top + int(row) * j, top + int(col) * j, r, r)


@dataclass(frozen=True)
class Patch:
    """A receptive-field crop.

    Attributes:
        pixels: (C, h, w) float tensor; pixels outside the source image hold the fill value.
        valid: (h, w) bool tensor, ``True`` where the pixel lies inside the source image.
        box: the unclipped box in source-image coordinates (``box.clip(H, W)`` is the part inside).
    """

    pixels: torch.Tensor
    valid: torch.Tensor
    box: Box


def crop_receptive_field(image: torch.Tensor, box: Box, fill: float = 0.0) -> Patch:
    """Crop ``box`` from ``image`` (C, H, W), padding what lies outside with ``fill``.

    Raises:
        ValueError: if ``image`` is not (C, H, W).
    """
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        raise ValueError(f"expected one image (C, H, W), got {getattr(image, 'shape', type(image).__name__)}")
    channels, height, width = image.shape
    inside = box.clip(height, width)
    pixels = torch.full((channels, box.height, box.width), float(fill), dtype=image.dtype, device=image.device)
    valid = torch.zeros((box.height, box.width), dtype=torch.bool, device=image.device)
    if inside.height and inside.width:
        rows = slice(inside.top - box.top, inside.top - box.top + inside.height)
        cols = slice(inside.left - box.left, inside.left - box.left + inside.width)
        pixels[:, rows, cols] = image[:, inside.top:inside.bottom, inside.left:inside.right]
        valid[rows, cols] = True
    return Patch(pixels=pixels, valid=valid, box=box)


# ---------------------------------------------------------------------------- projections
def deconvnet_projector(
    probe: Probe, images: torch.Tensor, layer: str, channels: torch.Tensor, units: torch.Tensor
) -> torch.Tensor:
    """Deconvnet projection (Zeiler & Fergus 2014, section 2.1) of one unit per image, in one pass.

    The same projection as :func:`cnnwidgets.methods.gradients.project_channel` with a
    ``(row, col)`` unit: the signal at ``layer`` is ``max(a, 0)`` at unit
    ``(channels[n], units[n])`` of image ``n`` and zero elsewhere, sent down with the
    deconvnet rules (unpooling through the max-pool switches, ReLU on the signal,
    transposed filters): ``P = D^T R``. All images go through one forward and one backward
    pass, whatever channels they project. For a (C,) layer ``units`` is ignored.

    Args:
        probe: the probe on the model.
        images: the input batch (N, C, H, W).
        layer: the layer of the units.
        channels: (N,) int tensor, the channel to project for each image.
        units: (N, 2) int tensor, the ``(row, col)`` of the unit for each image.

    Returns:
        (N, C, H, W) signed projections, float32 on ``images``' device.

    Raises:
        ValueError: for a layer whose output is not (C,) or (C, H, W), or a unit outside the map.
    """
    from cnnwidgets.methods.gradients import input_leaf, relu_rule, require_graph

    leaf = input_leaf(probe, images)
    with relu_rule(probe.model, "deconvnet", method="deconvnet projection"):
        activation = probe.capture(leaf, [layer], grad=True, channels_first=True, contiguous=False)[layer]
        n = torch.arange(images.shape[0], device=activation.device)
        channel = channels.to(device=activation.device, dtype=torch.long)
        seed = torch.zeros_like(activation)
        if activation.dim() == 2:
            seed[n, channel] = activation.detach()[n, channel].clamp(min=0)
        elif activation.dim() == 4:
            rows, cols = units.to(device=activation.device, dtype=torch.long).unbind(dim=1)
            height, width = activation.shape[2:]
            if rows.min() < 0 or rows.max() >= height or cols.min() < 0 or cols.max() >= width:
                raise ValueError(f"a unit lies outside the {height}x{width} map of layer {layer!r}")
            seed[n, channel, rows, cols] = activation.detach()[n, channel, rows, cols].clamp(min=0)
        else:
            raise ValueError(f"layer {layer!r} has output shape {tuple(activation.shape[1:])}; expected (C,) or (C, H, W)")
        require_graph(activation, "deconvnet_projector", f"the output of layer {layer!r}")
        (grad,) = torch.autograd.grad(activation, leaf, grad_outputs=seed)
    return grad.detach().to(images.device)


def default_projector() -> Projector | None:
    """The deconvnet projector when :mod:`cnnwidgets.methods.gradients` is installed, else ``None``."""
    try:
        import cnnwidgets.methods.gradients  # noqa: F401
    except ImportError:
        return None
    return deconvnet_projector


def resolve_projector(projection: str | Projector | None) -> Projector | None:
    """Turn ``projection`` (``"auto"``, ``"deconvnet"``, ``"patch"``/``None`` or a callable) into a projector.

    ``"auto"`` is the deconvnet when available and ``None`` (patches only) otherwise.

    Raises:
        ValueError: for another string, or ``"deconvnet"`` when it is not available.
        TypeError: for something that is neither a string nor callable.
    """
    if projection is None or projection == "patch":
        return None
    if projection == "auto":
        return default_projector()
    if projection == "deconvnet":
        found = default_projector()
        if found is None:
            raise ValueError("the deconvnet projection (cnnwidgets.methods.gradients) is not available")
        return found
    if isinstance(projection, str):
        raise ValueError(f"projection must be 'auto', 'deconvnet', 'patch', None or a callable, got {projection!r}")
    if not callable(projection):
        raise TypeError(f"projection must be a string or a callable, got {type(projection).__name__}")
    return projection


# ---------------------------------------------------------------------------- helpers
def _indexable(images: Any) -> Any:
    """``images`` as something that gives the scanned images by index: a ``DataLoader`` that
    reads its data set in order stands for that data set.

    Raises:
        TypeError: for a shuffling (or otherwise reordering) loader, or an object without indexing.
    """
    if isinstance(images, (str, bytes)):  # indexable, but letters: no images
        raise TypeError(f"images must give the scanned images by index (a tensor, a list or a data set), got "
                        f"{type(images).__name__} {images!r:.40}")
    if images is None or hasattr(images, "__getitem__"):
        return images
    if isinstance(images, torch.utils.data.DataLoader):
        if isinstance(images.sampler, torch.utils.data.SequentialSampler):
            return images.dataset
        raise TypeError(
            "images is a DataLoader that does not read its data set in order (shuffle or a custom sampler), so "
            "the scan's image indices do not name its items; pass the data set itself (loader.dataset) if the "
            "scan read it in order, or scan with keep_images=True"
        )
    raise TypeError(
        f"images must give the scanned images by index (a tensor, a list or a data set), got {type(images).__name__}"
    )


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of the parameters and buffers of ``model``."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _labels_tensor(labels: Any, n: int) -> torch.Tensor | None:
    if isinstance(labels, torch.Tensor) and labels.dim() == 1 and labels.shape[0] == n and not labels.is_floating_point():
        return labels.to(torch.long).cpu()
    if isinstance(labels, np.ndarray) and labels.ndim == 1 and labels.shape[0] == n and labels.dtype.kind in "iu":
        return torch.from_numpy(labels.astype(np.int64))
    if isinstance(labels, (list, tuple)) and len(labels) == n and all(isinstance(v, int) for v in labels):
        return torch.tensor(labels, dtype=torch.long)
    return None


def _pair_length(data: Any) -> int | None:
    """For ``(images (N, C, H, W), targets)``, with targets one entry per image (class labels, a
    (N,) or (N, K) tensor or array, a list of numbers): the number of targets; else ``None``.

    A tuple of two batches of images is not a pair: its items are read as batches.
    """
    if not (isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor) and data[0].dim() == 4):
        return None
    targets = data[1]
    if isinstance(targets, (torch.Tensor, np.ndarray)) and targets.ndim in (1, 2):
        return int(targets.shape[0])
    if isinstance(targets, (list, tuple)) and targets and all(
        isinstance(v, numbers.Number) and not isinstance(v, torch.Tensor) for v in targets
    ):
        return len(targets)
    return None


def _not_images(value: Any, what: str) -> str | None:
    """What to do instead, when ``value`` (``what``: ``"data"``, ``"item 3 of the data"``) is a numpy
    array, a path or a sparse tensor, which :func:`iter_batches` does not read; None for anything else."""
    if isinstance(value, torch.Tensor) and value.layout != torch.strided:
        return (f"{what} is a tensor of layout {value.layout} and shape {tuple(value.shape)}: give a dense tensor "
                "(tensor.to_dense())")
    if isinstance(value, np.ndarray):
        return (f"{what} is a numpy array of shape {tuple(value.shape)} and dtype {value.dtype}: use "
                "torch.from_numpy(array) to make it a tensor ((N, H, W, C) or (H, W, C) pictures also need "
                "the channels moved first, .permute(0, 3, 1, 2) or .permute(2, 0, 1), and the model's preprocessing)")
    if isinstance(value, (str, bytes, os.PathLike)):
        shown = value if isinstance(value, (str, bytes)) else os.fspath(value)
        return (f"{what} is a {type(value).__name__} ({shown!r}): paths are not accepted; load the images first "
                "(e.g. a torchvision ImageFolder dataset with the model's preprocessing as its transform, or a "
                "DataLoader of one)")
    return None


def iter_batches(data: Any, batch_size: int = 64) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Normalise the accepted data forms into ``(images (N, C, H, W), labels (N,) or None)``.

    Accepted: a tensor (N, C, H, W) (split into ``batch_size`` chunks); a pair
    ``(images, labels)`` of images (N, C, H, W) and one label or target per image (a tensor or
    array (N,) or (N, K), or a list of N numbers; split like a tensor); any iterable (a
    ``DataLoader``, a list, a generator, a map-style ``Dataset``) yielding batches (N, C, H, W),
    ``(batch, labels, ...)`` tuples, single images (C, H, W) or ``(image, label)`` pairs - single
    images are grouped into batches. Labels are kept when they are integer class indices, one
    per image. :func:`scan_topk` and :func:`~cnnwidgets.methods.dead.dead_channels` read their
    data through this function.

    Raises:
        TypeError: for data or an item that is not one of these (a numpy array is told to go
            through ``torch.from_numpy``, a sparse tensor to be made dense, and a path, a string, to
            be loaded first: paths are not read), or a ``batch_size`` that is not an int (see
            :func:`~cnnwidgets.core.targets.as_count`).
        ValueError: for a tensor that is not 3-D or 4-D, a ``batch_size`` below 1, or a pair whose
            labels are not one per image.
    """
    batch_size = as_count(batch_size, "batch_size")
    refused = _not_images(data, "data")  # an array or a string would be read item by item
    if refused is not None:
        raise TypeError(refused)
    pair_length = _pair_length(data)
    if pair_length is not None:
        images = data[0]
        if pair_length != images.shape[0]:
            raise ValueError(
                f"the (images, labels) pair holds {images.shape[0]} images but {pair_length} labels; "
                "give one label per image"
            )
        labels = _labels_tensor(data[1], images.shape[0])
        for start in range(0, images.shape[0], batch_size):
            part = labels[start:start + batch_size] if labels is not None else None
            yield images[start:start + batch_size], part
        return
    if isinstance(data, torch.Tensor):
        if data.dim() != 4:
            raise ValueError(f"expected a batch of images (N, C, H, W), got a tensor of shape {tuple(data.shape)}")
        for start in range(0, data.shape[0], batch_size):
            yield data[start:start + batch_size], None
        return
    if not isinstance(data, Iterable) and not hasattr(data, "__getitem__"):
        raise TypeError(
            f"data must be a tensor (N, C, H, W), an (images, labels) pair or an iterable of batches, "
            f"got {type(data).__name__}"
        )
    pending: list[torch.Tensor] = []
    pending_labels: list[int | None] = []

    def flush() -> tuple[torch.Tensor, torch.Tensor | None]:
        sizes = sorted({tuple(image.shape) for image in pending})
        if len(sizes) > 1:
            raise ValueError(
                f"single images of different sizes {sizes} cannot be batched; resize them to one size first "
                "(a scan describes every layer at one input size)"
            )
        images = torch.stack(pending)
        labels = None if any(v is None for v in pending_labels) else torch.tensor(pending_labels, dtype=torch.long)
        pending.clear()
        pending_labels.clear()
        return images, labels

    for position, item in enumerate(data):
        labels: Any = None
        if isinstance(item, (tuple, list)) and item and isinstance(item[0], torch.Tensor):
            images, labels = item[0], (item[1] if len(item) > 1 else None)
        elif isinstance(item, torch.Tensor):
            images = item
        else:
            refused = _not_images(item, f"item {position} of the data")
            raise TypeError(
                refused or f"item {position} of the data is a {type(item).__name__}; expected a tensor (N, C, H, W) "
                "or (C, H, W), or a tuple whose first element is one (e.g. (images, labels))"
            )
        if images.layout != torch.strided:
            raise TypeError(_not_images(images, f"item {position} of the data"))
        if images.dim() == 4:
            if pending:
                yield flush()
            yield images, _labels_tensor(labels, images.shape[0])
        elif images.dim() == 3:
            pending.append(images)
            if isinstance(labels, torch.Tensor) and labels.numel() == 1 and not labels.is_floating_point():
                labels = int(labels)
            elif isinstance(labels, np.integer):  # labels read from a numpy array
                labels = int(labels)
            pending_labels.append(labels if isinstance(labels, int) and not isinstance(labels, bool) else None)
            if len(pending) == batch_size:
                yield flush()
        else:
            raise ValueError(f"item {position} holds a tensor of shape {tuple(images.shape)}; expected (N, C, H, W) or (C, H, W)")
    if pending:
        yield flush()


def data_size(data: Any) -> int | None:
    """Number of images in ``data`` (a form :func:`iter_batches` reads) when it can be known
    without iterating."""
    if isinstance(data, torch.Tensor):
        return int(data.shape[0])
    if _pair_length(data) is not None:
        return int(data[0].shape[0])
    if isinstance(data, (list, tuple)):
        firsts = [item[0] if isinstance(item, (tuple, list)) and item else item for item in data]
        if all(isinstance(t, torch.Tensor) and t.dim() in (3, 4) for t in firsts):
            return sum(int(t.shape[0]) if t.dim() == 4 else 1 for t in firsts)
        return None
    if isinstance(data, torch.utils.data.DataLoader):
        try:
            if data.batch_size is None or isinstance(data.dataset, torch.utils.data.IterableDataset):
                return None
            return len(data) * data.batch_size if data.drop_last else len(data.sampler)
        except TypeError:
            return None
    dataset = getattr(data, "dataset", None)
    if dataset is not None and hasattr(dataset, "__len__") and getattr(data, "drop_last", False) is False:
        return len(dataset)
    return None


def _checksum(image: torch.Tensor) -> list:
    """A cheap identity of one image: shape and float64 sum (detects a reshuffled data set).

    Summed on the CPU whatever device the data is on: MPS has no float64, and the same image
    must give the same sum when a scan is resumed with the data on another device.
    """
    return [list(image.shape), float(image.detach().cpu().double().sum())]


# ---------------------------------------------------------------------------- the state
@dataclass(frozen=True)
class TopKEntry:
    """One kept activation.

    Attributes:
        rank: 0 for the strongest.
        value: the activation ``a_L(x_n)[c, h, w]``.
        image_index: ``n``, the position of the image in the scanned data (0-based).
        row, col: the unit ``(h, w)``; (0, 0) for a (C,) layer.
        label: the image's class label when the data carried one, else ``None``.
    """

    rank: int
    value: float
    image_index: int
    row: int
    col: int
    label: int | None


#: What :meth:`TopKActivations._check` is given when there is no channel to check.
_NO_CHANNEL = object()


class TopKActivations:
    """The ``k`` strongest activations of every channel of some layers over a data set.

    Build one with :func:`scan_topk` (one line) or, for a custom loop, create it and feed
    batches with :meth:`update`. Arrays per layer (CPU tensors, read them with the accessors):

    * ``values[layer]``: float32 (C, k), descending per channel; ``-inf`` in unused slots.
    * ``image_indices[layer]``: int64 (C, k), ``-1`` in unused slots.
    * ``positions[layer]``: int64 (C, k, 2), (row, col) of the unit.
    * ``labels[layer]``: int64 (C, k), ``-1`` when unknown.

    Args:
        layers: layer names (see ``probe.layers``); each must output (C,) or (C, H, W).
        k: entries kept per channel.
        per_image: keep at most one entry (the strongest unit) per image and channel.
        keep_images: keep a copy of each source image a kept entry refers to (see module notes).

    Raises:
        ValueError: for no layers, duplicate layers or a ``k`` below 1. TypeError: for layer
            names that are not strings, a ``k`` that is not an int (a Python int, a numpy integer
            or a 0-d integer tensor; not a bool or a float), or a ``per_image`` or ``keep_images``
            that is not True or False.
    """

    def __init__(self, layers: str | Sequence[str], k: int = 9, *, per_image: bool = True, keep_images: bool = True) -> None:
        names = layer_names(layers)
        if not names:
            raise ValueError("layers is empty; name at least one layer")
        if len(set(names)) != len(names):
            raise ValueError(f"layers contains duplicates: {names}")
        k = as_count(k, "k")
        self.layers: list[str] = names
        self.k = k
        self.per_image = as_flag(per_image, "per_image")
        self.keep_images = as_flag(keep_images, "keep_images")
        self.consumed = 0
        self.batches = 0
        self.complete = False
        self.input_size: tuple[int, ...] | None = None
        self.fingerprint: str | None = None
        self.first_item: list | None = None
        self.geometry: dict[str, dict[str, Any]] = {}
        self.values: dict[str, torch.Tensor] = {}
        self.image_indices: dict[str, torch.Tensor] = {}
        self.positions: dict[str, torch.Tensor] = {}
        self.labels: dict[str, torch.Tensor] = {}
        self.images: dict[int, torch.Tensor] = {}

    # ---------------------------------------------------------------- updating
    def _start(self, probe: Probe, batch: torch.Tensor) -> None:
        check_channel_axis(probe.model, batch)  # before the layers are described at the batch's size
        check_batch(batch)  # an empty, non-float, meta or non-finite batch is refused before anything is kept
        self.input_size = tuple(int(s) for s in batch.shape[1:])
        probe.sync()  # the fingerprint below must describe the weights the activations come from
        infos = probe.layers if tuple(probe.input_size) == self.input_size else probe.describe(self.input_size)
        for name in self.layers:
            if name not in infos:
                probe.check_layer(name)  # raises KeyError with suggestions
            info = infos[name]
            if info.calls == 0:
                raise ValueError(f"layer {name!r} does not run in this model's forward pass (in evaluation "
                                 "mode; auxiliary heads run only in training)")
            shape = info.map_shape or info.output_shape  # channels first, whatever the layer's layout
            if shape is None or not info.batch_first or len(shape) not in (1, 3):
                raise ValueError(
                    f"layer {name!r} has output shape {info.shape_text}; top-k patches need a (C,) or (C, H, W) "
                    "output per image"
                )
            check_map_not_empty(info, self.input_size)
            self.geometry[name] = {
                "type": info.type,
                "conv": info.is_conv,
                "output_shape": list(shape),
                "receptive_field": info.receptive_field,
                "jump": info.jump,
                "start": info.start,
            }
            channels = shape[0]
            self.values[name] = torch.full((channels, self.k), -math.inf, dtype=torch.float32)
            self.image_indices[name] = torch.full((channels, self.k), -1, dtype=torch.long)
            self.positions[name] = torch.full((channels, self.k, 2), -1, dtype=torch.long)
            self.labels[name] = torch.full((channels, self.k), -1, dtype=torch.long)
        self.fingerprint = model_fingerprint(probe.model)
        self.first_item = _checksum(batch[0])

    def update(self, probe: Probe, batch: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Merge one batch: one prefix-only ``probe.capture`` for all layers, then a top-k merge.

        The batch's images get indices ``consumed .. consumed + N - 1``. The update is atomic:
        if it raises, the state is unchanged.

        Args:
            probe: the :class:`~cnnwidgets.core.probe.Probe` of the scanned model (the same one,
                or one of the same weights, for every batch).
            batch: preprocessed images (N, C, H, W), all of the first batch's size.
            labels: one class label per image, an integer tensor (N,), or None (unknown: stored
                as -1). Labels of another length are ignored.

        Raises:
            ValueError: for a batch that is not (N, C, H, W) floats (one laid out (N, H, W, C) is
                named as such), has another image size than the first batch, a layer without a
                (C,) / (C, H, W) output, or activations that are not finite (NaN or inf).
            KeyError: for an unknown layer.
        """
        if not isinstance(batch, torch.Tensor) or batch.dim() != 4:
            raise ValueError(f"expected a batch (N, C, H, W), got {getattr(batch, 'shape', type(batch).__name__)}")
        if self.input_size is None:
            self._start(probe, batch)
        elif tuple(batch.shape[1:]) != self.input_size:
            raise ValueError(
                f"all images must have the size of the first batch {self.input_size}; got {tuple(batch.shape[1:])}"
            )
        n = batch.shape[0]
        start = self.consumed
        # each batch is seen once; the merge reads any memory layout
        acts = probe.capture(batch, self.layers, cache=False, channels_first=True, contiguous=False)
        for name, act in acts.items():
            # NaN would sort as the strongest activation
            check_finite_activation(act, name, "a top-k scan", model=probe.model)
        label_row = (
            labels.to(torch.long).cpu() if labels is not None and labels.shape[0] == n else torch.full((n,), -1, dtype=torch.long)
        )
        new: dict[str, tuple[torch.Tensor, ...]] = {}
        for name, act in acts.items():
            new[name] = self._merge(name, act.detach(), start, label_row)
        kept = None
        if self.keep_images:  # staged: nothing below changes the state until the commit
            referenced = set(torch.cat([new[name][1].flatten() for name in self.layers]).tolist())
            kept = {i: img for i, img in self.images.items() if i in referenced}
            for index in referenced:
                if start <= index < start + n and index not in kept:
                    kept[index] = batch[index - start].detach().to("cpu", torch.float32).clone()
        # commit (nothing above changed the state)
        for name, (values, indices, positions, lab) in new.items():
            self.values[name], self.image_indices[name] = values, indices
            self.positions[name], self.labels[name] = positions, lab
        if kept is not None:
            self.images = kept
        self.consumed += n
        self.batches += 1

    def _merge(
        self, name: str, act: torch.Tensor, start: int, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        n, channels = act.shape[0], act.shape[1]
        if channels != self.values[name].shape[0]:
            raise ValueError(f"layer {name!r} changed its number of channels ({channels}) between batches")
        if act.dim() == 2:
            act = act[:, :, None, None]
        elif act.dim() != 4:
            raise ValueError(f"layer {name!r} output has shape {tuple(act.shape[1:])}; expected (C,) or (C, H, W)")
        width = act.shape[3]
        flat = act.float().permute(1, 0, 2, 3).reshape(channels, n, -1)  # (C, N, H*W)
        device = flat.device
        if self.per_image:
            cand_values, where = flat.max(dim=2)  # first maximum in row-major order
            cand_images = torch.arange(n, device=device).expand(channels, n)
        else:
            cand_values = flat.reshape(channels, -1)  # image-major, then row-major
            units = torch.arange(cand_values.shape[1], device=device)
            cand_images = (units // flat.shape[2]).expand(channels, -1)
            where = (units % flat.shape[2]).expand(channels, -1)
        cand_rows, cand_cols = where // width, where % width
        cand_labels = labels.to(device)[cand_images]
        values = torch.cat([self.values[name].to(device), cand_values], dim=1)
        order = torch.sort(values, dim=1, descending=True, stable=True).indices[:, : self.k]

        def pick(old: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
            return torch.cat([old.to(device), cand], dim=1).gather(1, order).cpu()

        positions = torch.stack(
            [
                pick(self.positions[name][..., 0], cand_rows),
                pick(self.positions[name][..., 1], cand_cols),
            ],
            dim=2,
        )
        return (
            values.gather(1, order).cpu(),
            pick(self.image_indices[name], cand_images + start),
            positions,
            pick(self.labels[name], cand_labels),
        )

    # ---------------------------------------------------------------- reading
    def _check(self, layer: str, channel: Any = _NO_CHANNEL) -> None:
        """Refuse a ``layer`` that was not scanned (a ``KeyError``, a ``TypeError`` for one that is
        no name) and, when one is given, a ``channel`` that is no index of it (``None`` included)."""
        if not isinstance(layer, str):
            raise TypeError(f"layer must be a scanned layer's name (a str), got {_describe_value(layer)}; "
                            f"scanned layers: {self.layers}")
        if layer not in self.layers:
            raise KeyError(f"layer {layer!r} was not scanned; scanned layers: {self.layers}")
        if layer not in self.values:
            raise ValueError("nothing was scanned yet")
        if channel is not _NO_CHANNEL:
            channels = self.values[layer].shape[0]
            channel = as_index(channel, "channel")
            if not 0 <= channel < channels:
                raise IndexError(f"channel {channel!r} is out of range: layer {layer!r} has {channels} channels")

    def num_channels(self, layer: str) -> int:
        """Number of channels of the scanned ``layer``."""
        self._check(layer)
        return int(self.values[layer].shape[0])

    def layer_info(self, layer: str) -> LayerInfo:
        """A :class:`LayerInfo` for the scanned ``layer``, rebuilt from the stored geometry (for
        :func:`receptive_field_box`)."""
        self._check(layer)
        g = self.geometry[layer]
        return LayerInfo(
            name=layer, type=g["type"], output_shape=tuple(g["output_shape"]), num_params=0,
            receptive_field=g["receptive_field"], jump=g["jump"], start=g["start"], calls=1, order=0,
            block=layer.split(".")[0], is_leaf=True,
            # scans saved before the flag was stored: torch's own convolution class names
            conv=bool(g.get("conv", g["type"] in ("Conv1d", "Conv2d", "Conv3d"))),
        )

    def entries(self, layer: str, channel: int) -> list[TopKEntry]:
        """The filled entries of ``channel`` of the scanned ``layer``, strongest first (fewer than ``k`` if
        fewer units were seen)."""
        self._check(layer, channel)
        out = []
        for rank in range(self.k):
            index = int(self.image_indices[layer][channel, rank])
            if index < 0:
                break
            row, col = (int(v) for v in self.positions[layer][channel, rank])
            label = int(self.labels[layer][channel, rank])
            out.append(TopKEntry(rank, float(self.values[layer][channel, rank]), index, row, col, label if label >= 0 else None))
        return out

    def box(self, layer: str, entry: TopKEntry) -> Box:
        """The receptive-field box of ``entry``, an entry of the scanned ``layer``, in its source image.

        Raises:
            TypeError: for an ``entry`` that is not a :class:`TopKEntry` (a channel or rank index).
            KeyError: for a layer that was not scanned.
        """
        if not isinstance(entry, TopKEntry):
            raise TypeError(
                f"box: entry must be a TopKEntry, an item of entries(layer, channel), got {_describe_value(entry)}; "
                "the boxes of a channel's entries are [result.box(layer, e) for e in result.entries(layer, channel)]"
            )
        assert self.input_size is not None
        return receptive_field_box(self.layer_info(layer), entry.row, entry.col, self.input_size)

    def source_images(self, layer: str, channel: int, images: Any = None) -> torch.Tensor:
        """The source images of a channel's entries, (n, C, H, W) in rank order.

        Args:
            layer: a scanned layer.
            channel: a channel index of that layer (see :func:`~cnnwidgets.core.targets.as_index`).
            images: where to read images from when they were not kept: a tensor (N, C, H, W)
                indexed by image index, or a map-style dataset whose item ``i`` is an image or an
                ``(image, label)`` pair. ``None``: use the kept images.

        Raises:
            ValueError: when the images were not kept and no source is given, or an image of
                ``images`` does not have the scanned images' shape.
            IndexError: when ``images`` has no item at an entry's image index (not the data set
                that was scanned).
        """
        entries = self.entries(layer, channel)
        images = _indexable(images)
        if images is not None and self.first_item is not None and entries:
            item0 = images[0]
            item0 = item0[0] if isinstance(item0, (tuple, list)) else item0
            item0 = torch.as_tensor(item0)  # in its own dtype, as the scan summed it
            if list(item0.shape) == self.first_item[0] and _checksum(item0) != self.first_item:
                raise ValueError("images does not start with the first scanned image: not the data that was scanned, "
                                 "in the same order (a shuffling loader? scan with keep_images=True)")
        picked = []
        for entry in entries:
            if images is None:
                if entry.image_index not in self.images:
                    raise ValueError(
                        "the source images were not kept (keep_images=False); pass images=<tensor or dataset> "
                        "that yields the scanned images by index"
                    )
                picked.append(self.images[entry.image_index])
            else:
                try:
                    item = images[entry.image_index]
                except IndexError as exc:
                    raise IndexError(
                        f"images holds no item {entry.image_index}, which the scan's entry for {layer!r} channel "
                        f"{channel} comes from ({self.consumed} images were scanned); pass the data set that was "
                        "scanned, in the same order"
                    ) from exc
                if isinstance(item, (tuple, list)):
                    item = item[0]
                item = torch.as_tensor(item).to(torch.float32).cpu()
                if self.input_size is not None and tuple(item.shape) != tuple(self.input_size):
                    raise ValueError(
                        f"images item {entry.image_index} has shape {tuple(item.shape)}, the scanned images "
                        f"{tuple(self.input_size)}; pass the data set that was scanned, in the same order"
                    )
                picked.append(item)
        if not picked:
            assert self.input_size is not None
            return torch.zeros((0, *self.input_size))
        return torch.stack(picked)

    def patches(self, layer: str, channel: int, images: Any = None, fill: float = 0.0) -> list[Patch]:
        """Receptive-field patches of a channel's entries, strongest first (see :func:`crop_receptive_field`).

        Args:
            layer: a scanned layer.
            channel: a channel index of that layer (see :func:`~cnnwidgets.core.targets.as_index`).
            images: where to read the source images from when they were not kept (see
                :meth:`source_images`); None: the kept images.
            fill: the value of the pixels of a receptive field that lie outside the image.

        Raises:
            KeyError, IndexError, ValueError: as :meth:`source_images`.
        """
        sources = self.source_images(layer, channel, images)
        return [crop_receptive_field(src, self.box(layer, e), fill) for src, e in zip(sources, self.entries(layer, channel))]

    def projections(
        self,
        model_or_probe: nn.Module | Probe,
        layer: str,
        channel: int,
        *,
        projection: str | Projector = "auto",
        images: Any = None,
    ) -> list[Patch] | None:
        """Pixel-space projections of a channel's entries, cropped to their receptive fields.

        Args:
            model_or_probe: the scanned model (or its probe).
            layer: a scanned layer.
            channel: a channel index of that layer (see :func:`~cnnwidgets.core.targets.as_index`).
            projection: ``"auto"`` / ``"deconvnet"`` (Zeiler & Fergus 2014, 2.1), a
                :data:`Projector`, or ``"patch"`` / ``None`` for none.
            images: see :meth:`source_images`.

        Returns:
            One :class:`Patch` of signed projection values per entry, or ``None`` without a projector.

        Raises:
            TypeError: if ``model_or_probe`` is not a model, a zoo bundle or a probe (as when the
                arguments are given in the order of :meth:`entries`, ``(layer, channel)``: the
                model comes first here).
            ValueError: if the model's weights differ from the scanned ones.
            KeyError, IndexError: as :meth:`source_images`.

        Warns:
            InactiveChannelWarning: with the deconvnet projection, when entries have values <= 0
                (the channel is not active there, as often before a ReLU or for a dead channel):
                the deconvnet projects ``max(a, 0)``, so their patches are zero.
        """
        self._check_model(model_or_probe)
        projector = resolve_projector(projection)
        if projector is None:
            return None
        entries = self.entries(layer, channel)
        sources = self.source_images(layer, channel, images)
        if not entries:
            return []
        with probe_scope(model_or_probe) as probe:
            probe.sync()
            if self.fingerprint is not None and model_fingerprint(probe.model) != self.fingerprint:
                raise ValueError("the model's weights differ from the ones the scan was made with")
            inactive = [e for e in entries if not e.value > 0]
            if inactive and projector is deconvnet_projector:
                from cnnwidgets.methods.gradients import InactiveChannelWarning

                warnings.warn(
                    f"channel {channel} of {layer!r}: {len(inactive)} of its {len(entries)} top entries have values "
                    f"<= 0 (the strongest is {entries[0].value:.3g}), so their deconvnet projections are zero; the "
                    "channel is not active there (a layer before its ReLU, or a dead channel): try the ReLU after it",
                    InactiveChannelWarning,
                    stacklevel=2,
                )
            units = torch.tensor([[e.row, e.col] for e in entries], dtype=torch.long)
            channels = torch.full((len(entries),), channel, dtype=torch.long)
            projected = projector(probe, sources.to(probe.device), layer, channels, units).detach().cpu()
        return [crop_receptive_field(p, self.box(layer, e), 0.0) for p, e in zip(projected, entries)]

    def _check_model(self, model_or_probe: Any) -> None:
        """Refuse a ``model_or_probe`` that is no model, bundle or probe before the layer is read: a
        call in the order of :meth:`entries`, ``projections(layer, channel, model)``, would otherwise
        be told that its channel is no scanned layer."""
        if takes_as_model(model_or_probe):
            return
        if isinstance(model_or_probe, str) and model_or_probe in self.layers:
            hint = f" {model_or_probe!r}, a scanned layer's name"
        else:
            hint = not_a_model_hint(model_or_probe)
        raise TypeError(
            f"projections: expected a torch.nn.Module, a zoo bundle or a cnnwidgets.Probe, got "
            f"{type(model_or_probe).__name__}{hint}; the model comes first: projections(model, layer, channel), while "
            "entries(layer, channel) and patches(layer, channel) take no model"
        )

    # ---------------------------------------------------------------- disk
    def _meta(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "layers": self.layers,
            "k": self.k,
            "per_image": self.per_image,
            "keep_images": self.keep_images,
            "consumed": self.consumed,
            "batches": self.batches,
            "complete": self.complete,
            "input_size": list(self.input_size) if self.input_size else None,
            "fingerprint": self.fingerprint,
            "first_item": self.first_item,
            "geometry": self.geometry,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the state (plain tensors + JSON metadata) atomically to ``path``.

        Returns:
            The path written.
        """
        path = Path(path)
        tensors: dict[str, torch.Tensor] = {}
        for name in self.values:
            tensors[f"values/{name}"] = self.values[name]
            tensors[f"image_indices/{name}"] = self.image_indices[name]
            tensors[f"positions/{name}"] = self.positions[name]
            tensors[f"labels/{name}"] = self.labels[name]
        if self.images:
            order = sorted(self.images)
            tensors["images/index"] = torch.tensor(order, dtype=torch.long)
            tensors["images/pixels"] = torch.stack([self.images[i] for i in order])
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "wb") as file:
                torch.save({"meta": json.dumps(self._meta()), "tensors": tensors}, file)
                file.flush()
                os.fsync(file.fileno())  # on disk before it replaces the last good file
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # no half-written file left next to the checkpoint
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> TopKActivations:
        """Read a state written by :meth:`save` (``torch.load(..., weights_only=True)``).

        Raises:
            FileNotFoundError: no such file. IsADirectoryError: ``path`` is a folder.
            ValueError: the file is not a top-k state (another torch file, or a file that
                ``torch.load`` cannot read: text, a truncated file ...).
        """
        if Path(path).is_dir():
            raise IsADirectoryError(
                f"{str(path)!r} is a folder, not a cnnwidgets top-k file; pass a file path such as "
                f"{str(Path(path) / 'topk.pt')!r}"
            )
        not_topk = (
            f"{path} is not a cnnwidgets top-k file (one written by TopKActivations.save or "
            "scan_topk(checkpoint=...))"
        )
        try:
            blob = torch.load(Path(path), map_location="cpu", weights_only=True)
        except OSError:
            raise  # no such file, no permission: the system's message says it
        except Exception as exc:  # noqa: BLE001 - what an unreadable file raises depends on its bytes
            raise ValueError(f"{not_topk}: torch.load cannot read it ({type(exc).__name__}: {exc})"[:600]) from exc
        if not isinstance(blob, dict) or "meta" not in blob or "tensors" not in blob:
            raise ValueError(not_topk)
        try:
            meta = json.loads(blob["meta"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{not_topk}: its metadata is not JSON") from exc
        if not isinstance(meta, dict):
            raise ValueError(f"{not_topk}: its metadata is not a JSON object")
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{path} has format {meta.get('format')!r}; expected {_FORMAT!r}")
        missing = [key for key in ("layers", "k", "per_image", "keep_images", "consumed", "batches", "complete",
                                   "input_size", "fingerprint", "first_item", "geometry") if key not in meta]
        if missing:
            raise ValueError(f"{not_topk}: its metadata lacks {missing}")
        state = cls(meta["layers"], meta["k"], per_image=meta["per_image"], keep_images=meta["keep_images"])
        state.consumed, state.batches, state.complete = meta["consumed"], meta["batches"], meta["complete"]
        state.input_size = tuple(meta["input_size"]) if meta["input_size"] else None
        state.fingerprint, state.first_item, state.geometry = meta["fingerprint"], meta["first_item"], meta["geometry"]
        tensors = blob["tensors"]
        for name in state.layers:
            if f"values/{name}" in tensors:
                state.values[name] = tensors[f"values/{name}"]
                state.image_indices[name] = tensors[f"image_indices/{name}"]
                state.positions[name] = tensors[f"positions/{name}"]
                state.labels[name] = tensors[f"labels/{name}"]
        if "images/index" in tensors:
            state.images = dict(zip(tensors["images/index"].tolist(), tensors["images/pixels"].unbind(0)))
        return state

    def __repr__(self) -> str:
        state = "complete" if self.complete else "partial"
        return f"TopKActivations(layers={self.layers}, k={self.k}, {self.consumed} images, {state})"


# ---------------------------------------------------------------------------- one-liner
def _fixed_order(data: Any) -> bool:
    """Whether iterating ``data`` again yields the same images in the same order: a tensor, a
    sequence or a map-style dataset, or a DataLoader that samples in order (not a shuffling one,
    nor an iterator, which a second pass would consume)."""
    if isinstance(data, torch.utils.data.DataLoader):
        return isinstance(data.sampler, torch.utils.data.SequentialSampler) and not isinstance(
            data.dataset, torch.utils.data.IterableDataset)
    if isinstance(data, torch.Tensor):
        return True
    try:
        return iter(data) is not data
    except TypeError:
        return False


def _check_finished_scan_data(state: TopKActivations, data: Any, batch_size: int) -> None:
    """Refuse to hand back a finished scan for other data: another number of images, or (where the
    data comes in a fixed order) another first image. A shuffling loader's first image changes from
    pass to pass, so there only the count is compared."""
    total = data_size(data)
    if total is not None and total != state.consumed:
        raise ValueError(f"the finished scan in the checkpoint covered {state.consumed} images; this data has "
                         f"{total}: use another checkpoint path for other data")
    if state.first_item is None or not _fixed_order(data):
        return
    first = next(iter(iter_batches(data, batch_size)), None)
    if first is not None and _checksum(first[0][0]) != state.first_item:
        raise ValueError("the data does not start with the same image as the finished scan in the checkpoint; "
                         "use another checkpoint path for other data")


def _check_resumable(state: TopKActivations, layers: list[str], k: int, per_image: bool, where: str,
                     keep_images: bool | None = None) -> None:
    if keep_images is not None and state.keep_images != keep_images:
        raise ValueError(f"{where} holds a scan with keep_images={state.keep_images}; this call asks for "
                         f"keep_images={keep_images}. Use another checkpoint path, or delete the file to start over.")
    if state.layers != layers or state.k != k or state.per_image != per_image:
        raise ValueError(
            f"{where} holds a scan of layers={state.layers}, k={state.k}, per_image={state.per_image}; "
            f"this call asks for layers={layers}, k={k}, per_image={per_image}. "
            + ("Use another checkpoint path, or delete the file to start over." if where != "resume" else
               "Resume with the arguments of that scan, or leave resume out to start over.")
        )


def scan_topk(
    model_or_probe: nn.Module | Probe,
    data: Any,
    layers: str | Sequence[str],
    k: int = 9,
    *,
    per_image: bool = True,
    keep_images: bool = True,
    batch_size: int = 64,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 50,
    resume: TopKActivations | None = None,
    stop_after: int | None = None,
    progress: bool = True,
    callback: Callable[[TopKActivations], None] | None = None,
) -> TopKActivations:
    """Scan a data set once and keep, per channel, the ``k`` strongest activations (Zeiler & Fergus 2014, Fig. 2).

    Each batch runs one prefix-only forward pass up to the deepest chosen layer; then, per
    layer and channel, the kept entries and the batch's candidates are merged and cut back to
    ``k`` (see the module notes for what an entry is and how ties are broken).

    Args:
        model_or_probe: a model (inspected through a temporary probe, never changed) or a probe.
        data: a tensor (N, C, H, W), an ``(images, labels)`` pair, or an iterable / ``DataLoader``
            of batches, ``(images, labels)`` tuples or single images (see :func:`iter_batches`).
            Images must be preprocessed for the model and all of one size. To resume, ``data``
            must yield the same items in the same order (not a shuffling loader).
        layers: layer names with (C,) or (C, H, W) outputs.
        k: entries kept per channel (the paper shows 9).
        per_image: one entry (the strongest unit) per image and channel.
        keep_images: keep copies of the referenced source images in the result.
        batch_size: grouping for tensors and single images (batches from a loader are used as given).
        checkpoint: a file path. If it holds a finished scan with the same layers, ``k``,
            ``per_image`` and model weights, it is loaded and returned without scanning; if it
            holds an unfinished one, the scan continues after the consumed items. The state is
            written every ``checkpoint_every`` batches, at the end, and when the scan is
            interrupted (``KeyboardInterrupt`` or an error), before the exception propagates.
        checkpoint_every: batches between two writes of ``checkpoint``, an int >= 1.
        resume: an unfinished result to continue in memory (instead of a checkpoint).
        stop_after: stop (unfinished) once this many items in total have been consumed.
        progress: show a progress bar.
        callback: called with the state after every batch.

    Returns:
        The :class:`TopKActivations` (``complete`` is ``False`` when stopped by ``stop_after``).

    Raises:
        KeyError: unknown layer. ValueError: bad arguments, a checkpoint of another scan, a model
        whose weights differ from the checkpoint's, data that does not start with the same image
        as the scan being resumed, a checkpoint file that is not a top-k file (see
        :meth:`TopKActivations.load`), images laid out (N, H, W, C) instead of (N, C, H, W), or a
        model whose activations at a scanned layer are not finite (NaN or inf: non-finite
        weights), a layer whose feature map is empty at the images' size (see
        :func:`~cnnwidgets.core.layers.check_map_not_empty`); a ``k`` or ``batch_size`` below 1. TypeError: unsupported
        data (a numpy array is told to go through ``torch.from_numpy``; a path, a string, to be loaded
        first: see :func:`iter_batches`), or layer names that are not strings (a module, an index); a ``k``, ``batch_size``,
        ``checkpoint_every`` or ``stop_after`` that is not an int (a Python int, a numpy integer
        or a 0-d integer tensor; ``stop_after`` < 1 is a ValueError); a ``per_image``,
        ``keep_images`` or ``progress`` that is not True or False; a ``resume`` that is not a
        :class:`TopKActivations`, a ``checkpoint`` that is not a path, a ``callback`` that is not
        callable (all checked before scanning). FileNotFoundError: a checkpoint path in a folder
        that does not exist (checked before scanning). IsADirectoryError: a checkpoint path that
        is a folder.
    """
    names = layer_names(layers)
    k = as_count(k, "k")
    batch_size = as_count(batch_size, "batch_size")
    per_image = as_flag(per_image, "per_image")
    keep_images = as_flag(keep_images, "keep_images")
    progress = as_flag(progress, "progress")
    as_callback(callback, "callback", "(it receives the TopKActivations state after every batch)")
    if resume is not None and not isinstance(resume, TopKActivations):
        raise TypeError(
            f"resume must be None or an unfinished TopKActivations (a scan_topk result stopped by stop_after), "
            f"got {type(resume).__name__}; to continue from a file, pass its path as checkpoint="
        )
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be None or a file path (a str or a Path), got {type(checkpoint).__name__}")
    state = resume
    if checkpoint is not None and not Path(checkpoint).parent.is_dir():
        # checked up front: the first save comes after the scan's first batches (or its end)
        raise FileNotFoundError(
            f"checkpoint {str(checkpoint)!r}: the folder {str(Path(checkpoint).parent)!r} does not exist; "
            "create it or pass a path in an existing folder"
        )
    if checkpoint is not None and Path(checkpoint).exists():
        if state is not None:
            raise ValueError("pass either resume= or a checkpoint path that exists, not both")
        state = TopKActivations.load(checkpoint)
        _check_resumable(state, names, k, per_image, f"checkpoint {checkpoint}", keep_images)
    elif state is not None:
        _check_resumable(state, names, k, per_image, "resume", keep_images)
    if state is None:
        state = TopKActivations(names, k, per_image=per_image, keep_images=keep_images)
    checkpoint_every = as_count(checkpoint_every, "checkpoint_every")
    if stop_after is not None:
        stop_after = as_count(stop_after, "stop_after (None: scan everything)")
    with probe_scope(model_or_probe) as probe:
        if state.fingerprint is not None:
            probe.sync()
            if model_fingerprint(probe.model) != state.fingerprint:
                raise ValueError(
                    "the model's weights differ from the ones the saved scan was made with; "
                    "use another checkpoint path or delete the file to start over"
                )
        if state.complete:
            _check_finished_scan_data(state, data, batch_size)
            return state
        skip = state.consumed
        seen = 0
        total = data_size(data)
        bar = tqdm(total=total, initial=min(skip, total or skip), disable=not progress, desc="top-k scan", unit="img")
        last_saved = state.batches
        try:
            for images, labels in iter_batches(data, batch_size):
                n = images.shape[0]
                if skip and seen < skip:
                    if seen == 0 and state.first_item is not None and _checksum(images[0]) != state.first_item:
                        raise ValueError(
                            "the data does not start with the same image as the scan being resumed; resuming needs "
                            "the same items in the same order (a shuffling DataLoader cannot be resumed)"
                        )
                    if seen + n <= skip:
                        seen += n
                        continue
                    cut = skip - seen
                    images, labels = images[cut:], (labels[cut:] if labels is not None else None)
                    seen, n = skip, n - cut
                if stop_after is not None and state.consumed + n > stop_after:
                    room = stop_after - state.consumed
                    if room <= 0:
                        break
                    images, labels = images[:room], (labels[:room] if labels is not None else None)
                    n = room
                state.update(probe, images, labels)
                seen += n
                bar.update(n)
                if callback is not None:
                    callback(state)
                if checkpoint is not None and state.batches - last_saved >= checkpoint_every:
                    state.save(checkpoint)
                    last_saved = state.batches
                if stop_after is not None and state.consumed >= stop_after:
                    break
            else:
                if state.input_size is None:
                    raise ValueError("the data holds no images")
                if seen < skip:
                    raise ValueError(
                        f"the data holds {seen} images but the scan being resumed had consumed {skip}; "
                        "is it the same data?"
                    )
                state.complete = True
        except BaseException:
            if checkpoint is not None and state.consumed > 0 and state.batches != last_saved:
                state.save(checkpoint)
            raise
        finally:
            bar.close()
        if checkpoint is not None:
            state.save(checkpoint)
    return state
