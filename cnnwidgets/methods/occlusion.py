"""Occlusion sensitivity: how a score changes when a window of the image is covered.

Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks" (ECCV 2014,
arXiv:1311.2901, 2013), section 4.2 "Occlusion Sensitivity": slide an occluder over the
image and record, for every occluder position, (a) the probability of the correct class,
(b) the total activation of a chosen feature map, or (c) the most probable class.

Definitions
-----------
For an image ``x`` of size (C, H, W), a window (wh, ww) and a stride (sh, sw), position
(i, j) places the window's top-left corner at pixel (i*sh, j*sw); the window always lies
fully inside the image, so the grid of positions has

    rows = (H - wh) // sh + 1,    cols = (W - ww) // sw + 1

entries (the same positions as Captum's ``Occlusion`` when (H - wh) and (W - ww) are
multiples of the stride; Captum then adds no clipped windows). With ``O_ij(x)`` the image
whose window at (i, j), in every channel, is replaced by the fill, and ``f`` the target
score (a :mod:`~cnnwidgets.core.targets` callable)::

    grid[i, j] = f(O_ij(x))            unoccluded = f(x)

Every position is a full forward pass of the occluded image (positions are batched; on a
CPU with several threads, batches of targets on the model output run side by side, one per
thread, which keeps every core on its own convolutions instead of splitting each small one).
Captum reports a per-pixel attribution instead: the mean, over the windows that cover a
pixel p, of the drop of the score,

    A(p) = mean_{(i, j): p in window(i, j)} ( f(x) - f(O_ij(x)) )

:func:`grid_to_pixel_attribution` converts our grid into exactly that.

Streaming
---------
Positions are evaluated in a coarse-to-fine order (:func:`scan_order`): first a lattice
that spans the image from edge to edge, then lattices twice as fine, until every position
is done. Each complete lattice is a full-coverage, lower-resolution map, so a heatmap drawn
from a partial result (unfilled positions are NaN; the renderer fills them from the
nearest computed one) is readable early and sharpens as the scan goes on. The order only
changes *when* a position is computed, never *whether*: every scan computes every position.

Other classes from the same scan
--------------------------------
With ``keep_class_probabilities=True`` a scan of a target on the model output also keeps, for
every position, the probabilities of all classes (as
:class:`~cnnwidgets.core.targets.ClassProbability` computes them):
:meth:`OcclusionResult.for_class` then gives the map of any other class without another scan.
They take ``rows * cols * classes * 4`` bytes, and are not kept beyond
:data:`KEPT_PROBABILITIES_BYTES`.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import threading
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cnnwidgets.core.probe import (
    Probe, check_batch, check_channel_axis, check_output_batch, model_error_text, probe_scope, set_memory_format,
)
from cnnwidgets.core.targets import (
    ClassProbability, SizeTypeError, Target, as_callback, as_cancel_check, as_count, as_flag, as_index, as_real,
    call_target, int_pair, class_probabilities, class_scores, logit_target, output_tensor, resolve_target, target_score,
)
from cnnwidgets.methods._fold import InferenceCopyReport, inference_copy, replace_module
from cnnwidgets.methods._values import holds_bool
from cnnwidgets.methods._quiet import QuietSwitch
from cnnwidgets.methods.gradients import _EMPTY_QUIET, EmptyMapWarning

__all__ = [
    "KEPT_PROBABILITIES_BYTES",
    "ONE_IMAGE_WARNING",
    "PREVIEW_MIN",
    "PREVIEW_SHARE",
    "NoOcclusionEffectWarning",
    "OcclusionResult",
    "SizeTypeError",
    "TopClassProbability",
    "grid_shape",
    "grid_to_pixel_attribution",
    "occlusion_map",
    "occlusion_top_class",
    "one_image_quietly",
    "preview_count",
    "scan_order",
]

#: The coarse preview holds at most this share of a grid's positions (see :func:`preview_count`),
#: so that it is on screen within about 5 % of the scan's time, the unoccluded forward included.
PREVIEW_SHARE = 0.04

#: ... but at least this many: the four corners and the centre (fewer only on smaller grids).
PREVIEW_MIN = 5

#: A scan with ``keep_class_probabilities`` keeps the probabilities of every class at every position
#: only when they take at most this many bytes (``rows * cols * classes * 4``): 256 MiB, e.g. a
#: 97 x 97 grid (stride 2 on a 224-pixel image, window 32) of 1000 classes takes 36 MiB.
KEPT_PROBABILITIES_BYTES = 256 * 2**20

_ORDERS = ("coarse_first", "raster")

Fill = Union[float, str, torch.Tensor, Sequence[float], Callable[[torch.Tensor], torch.Tensor]]
Cancel = Union[threading.Event, Callable[[], bool]]


class NoOcclusionEffectWarning(EmptyMapWarning):
    """Occluding changed nothing: a complete :func:`occlusion_map` (or :func:`occlusion_top_class`)
    scan in which no occluder position changed the score, so the map is blank (its drop is zero
    everywhere), or a :func:`~cnnwidgets.methods.correspondence.correspondence` part whose occluder
    changed no feature of any image, so its row reads 0 (which looks like perfect
    correspondence). It is the method's answer, but it looks like a failure.

    An :class:`~cnnwidgets.methods.gradients.EmptyMapWarning` (with ``zero_gradient`` False: no
    gradient is taken), so :func:`~cnnwidgets.methods.gradients.empty_maps_quietly` leaves it out
    too. ``message`` is the text; ``fill_equals_image`` is True when the cause is known to be the fill:
    it equals the image under every window (every box), so every occluded image is the image itself.
    Otherwise the target (the layer's features) does not depend on the pixels the occluder covers,
    e.g. a channel that is never active.
    """

    def __init__(self, message: str, fill_equals_image: bool = False) -> None:
        super().__init__(message, zero_gradient=False)
        self.fill_equals_image = fill_equals_image


@dataclass(frozen=True)
class TopClassProbability:
    """Target for mode (c): the probability of the most probable class, ``max_k softmax(y)_k``
    (see :func:`~cnnwidgets.core.targets.class_probabilities`).

    The class itself is reported per position in :attr:`OcclusionResult.labels`. ``layer`` is
    always None: the target reads the model's output.
    """

    layer: None = None

    def __post_init__(self) -> None:
        if self.layer is not None:
            raise ValueError(
                f"TopClassProbability reads the model's output, so its layer is always None; got layer={self.layer!r} "
                "(for a channel of a layer use ChannelActivation(layer, channel))"
            )

    def __call__(self, activation: torch.Tensor) -> torch.Tensor:
        return self.probability_score(activation)

    def probability_score(self, activation: torch.Tensor, final_activation: str | None = None) -> torch.Tensor:
        """The scores for the model output ``activation``, with the model's final activation
        ``final_activation`` (``"sigmoid"``, ``"softmax"`` or None) when a probe knows it (a model
        ending in ``nn.Sigmoid`` gives independent probabilities, taken as they are)."""
        what = "the most probable class and its probability"
        if class_scores(activation, what).shape[1] == 1:
            raise ValueError(
                f"{what} are undefined for a model with a single output unit: its one score gives "
                "p = sigmoid(logit) of one class, and the other class has no index; map that "
                "probability with occlusion_map(..., ClassProbability(0)) instead"
            )
        return class_probabilities(activation, what, final_activation=final_activation).amax(dim=1)


@dataclass(frozen=True, eq=False)
class OcclusionResult:
    """An occlusion map, complete or partial (see the module docstring for the definitions).

    Attributes:
        grid: (rows, cols) float32, ``grid[i, j]`` = target score with the window at
            position (i, j) occluded; NaN where the position has not been computed yet.
        filled: (rows, cols) bool, which positions are computed.
        unoccluded: the target score of the image without occlusion.
        labels: (rows, cols) int64, the most probable class with the window at (i, j), -1 where
            not computed; ``None`` when the target reads an internal layer or the model has a
            single output unit (it scores one class of two; the other has no index). A class
            index on a model that ends in an ``nn.Softmax`` or ``nn.Sigmoid`` module scores the
            logit that module reads, and the classes come from those logits (the same top class).
        unoccluded_label: the most probable class without occlusion (``None`` as for labels).
        window: (height, width) of the occluder in pixels.
        stride: (vertical, horizontal) step between positions in pixels.
        image_size: (H, W) of the image.
        target: the target that was evaluated.
        done: number of computed positions.
        preview_ready: whether the coarse preview (:func:`preview_count`) is computed, i.e. the
            partial map already covers the whole image coarsely (for ``order="raster"``: only
            once every position is).
        cancelled: the scan was stopped before every position was computed.
        unoccluded_probabilities: (classes,) float32, the probability of every class without
            occlusion, when the scan kept them (``keep_class_probabilities`` of
            :func:`occlusion_map`); None otherwise. See :attr:`class_probabilities` and
            :meth:`for_class`.
        one_image: the model failed on a batch of several occluded images and the scan went on
            one image per forward pass (see :data:`ONE_IMAGE_WARNING`).
    """

    grid: np.ndarray
    filled: np.ndarray
    unoccluded: float
    labels: np.ndarray | None
    unoccluded_label: int | None
    window: tuple[int, int]
    stride: tuple[int, int]
    image_size: tuple[int, int]
    target: Target
    done: int
    preview_ready: bool
    cancelled: bool = False
    unoccluded_probabilities: np.ndarray | None = None
    one_image: bool = False
    # (rows, cols, classes) float32, read-only, written by the scan as it goes (the snapshots of one
    # scan share it): only the entries of ``filled`` positions belong to this result
    _probabilities: np.ndarray | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the position grid."""
        return (int(self.grid.shape[0]), int(self.grid.shape[1]))

    @property
    def total(self) -> int:
        """Number of positions in the grid."""
        return int(self.grid.size)

    @property
    def complete(self) -> bool:
        """Every position is computed."""
        return self.done == self.total

    @property
    def drop(self) -> np.ndarray:
        """``unoccluded - grid``: how much covering each position lowers the score (NaN: not computed)."""
        return (np.float32(self.unoccluded) - self.grid).astype(np.float32)

    @property
    def corners(self) -> np.ndarray:
        """(rows, cols, 2) int array: the window's top-left pixel (y, x) at each position."""
        rows, cols = self.shape
        ii, jj = np.meshgrid(np.arange(rows) * self.stride[0], np.arange(cols) * self.stride[1], indexing="ij")
        return np.stack([ii, jj], axis=-1)

    def pixel_attribution(self) -> np.ndarray:
        """Captum's per-pixel attribution for this map; see :func:`grid_to_pixel_attribution`.

        A partial map gives NaN at the pixels that no computed position covers, as the grid does at
        the positions not computed: all NaN (without a warning) for a scan cancelled before its
        first batch (``done == 0``)."""
        return grid_to_pixel_attribution(
            self.grid, self.unoccluded, window=self.window, stride=self.stride, image_size=self.image_size
        )

    @property
    def class_probabilities(self) -> np.ndarray | None:
        """(rows, cols, classes) float32: the probability of every class with the window at (i, j)
        occluded, NaN where the position has not been computed; None when the scan did not keep
        them (see ``keep_class_probabilities`` of :func:`occlusion_map`). Read-only for a complete
        result; a partial one gives a copy."""
        kept = self._probabilities
        if kept is None or self.complete:
            return kept
        return np.where(self.filled[..., None], kept, np.float32(np.nan)).astype(np.float32, copy=False)

    def for_class(self, index: int) -> OcclusionResult:
        """This scan's map of the probability of class ``index``, without another scan.

        The result equals that of the same scan with the target
        ``ClassProbability(index, outputs=...)`` (the ``outputs`` of this result's target when it is
        a :class:`~cnnwidgets.core.targets.ClassProbability`, else ``"auto"``): its grid, unoccluded
        value and target; the positions computed, the top classes and the kept probabilities
        are this result's. A partial result gives a partial map of the same positions.

        Args:
            index: the class, ``0 <= index < classes`` (an int as
                :func:`~cnnwidgets.core.targets.as_index` accepts it).

        Returns:
            :class:`OcclusionResult` with ``target`` a ``ClassProbability(index, ...)``.

        Raises:
            ValueError: the scan kept no class probabilities (it was made without
                ``keep_class_probabilities=True``, its target reads an internal layer or an output
                that is not class scores, or they would have taken more than
                :data:`KEPT_PROBABILITIES_BYTES`).
            TypeError: ``index`` is not an int.
            IndexError: ``index`` is out of range.
        """
        kept = self._probabilities
        if kept is None or self.unoccluded_probabilities is None:
            raise ValueError(
                "this occlusion map kept no class probabilities: scan with occlusion_map(..., "
                "keep_class_probabilities=True) and a target on the model's output of class scores (they are "
                f"not kept when rows * cols * classes * 4 bytes exceed {KEPT_PROBABILITIES_BYTES // 2**20} MiB), "
                "or scan again with ClassProbability(index)"
            )
        index = as_index(index, "for_class: the class index")
        classes = int(kept.shape[-1])
        if not 0 <= index < classes:
            raise IndexError(
                f"for_class: class index {index} is out of range for {classes} classes; accepted: "
                f"0..{classes - 1} (negative indices are not accepted)"
            )
        grid = np.where(self.filled, kept[..., index], np.float32(np.nan)).astype(np.float32, copy=False)
        target = ClassProbability(index, outputs=_kept_outputs(self.target))
        return replace(self, grid=grid, unoccluded=float(self.unoccluded_probabilities[index]), target=target)


# ---------------------------------------------------------------------------- geometry


_WINDOW_ACCEPTED = "a positive int or a pair (height, width) of positive ints"
_STRIDE_ACCEPTED = "a positive int or a pair (vertical, horizontal) of positive ints"


def _pair(value: object, what: str, accepted: str) -> tuple[int, int]:
    """``value`` as two positive ints (see :func:`int_pair`); a ``ValueError`` for an entry below 1."""
    pair = int_pair(value, what, accepted)
    if min(pair) < 1:
        raise ValueError(f"{what} must be {accepted}, got {value!r}")
    return pair


def _image_size(image_size: object) -> tuple[int, int]:
    """``image_size`` as (H, W): two positive ints (a tuple, list, ``torch.Size`` or array)."""
    values = tuple(image_size) if isinstance(image_size, (Sequence, np.ndarray)) else ()
    if len(values) != 2 or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and v >= 1 for v in values
    ):
        hint = "; for an image x of shape (1, C, H, W) pass x.shape[-2:]" if len(values) in (3, 4) else ""
        raise ValueError(f"image_size must be (H, W), two positive ints; got {image_size!r}{hint}")
    return int(values[0]), int(values[1])


def grid_shape(
    image_size: Sequence[int], window: int | Sequence[int], stride: int | Sequence[int]
) -> tuple[int, int]:
    """Number of occluder positions (rows, cols) for an (H, W) image.

    ``rows = (H - wh) // sh + 1`` and ``cols = (W - ww) // sw + 1``: position (i, j) has its
    top-left corner at (i*sh, j*sw) and the window lies fully inside the image.

    Args:
        image_size: (H, W) of the image.
        window: (wh, ww) of the occluder in pixels, or one int for a square.
        stride: (sh, sw) between positions in pixels, or one int for both.

    Raises:
        ValueError: if image_size is not (H, W), window or stride are below 1, or the window does
            not fit in the image.
        SizeTypeError: (a ``TypeError`` and a ``ValueError``) if window or stride are not ints or
            pairs of ints (each a Python int, a numpy integer or a 0-d integer tensor).
    """
    height, width = _image_size(image_size)
    wh, ww = _pair(window, "window", _WINDOW_ACCEPTED)
    sh, sw = _pair(stride, "stride", _STRIDE_ACCEPTED)
    if wh > height or ww > width:
        raise ValueError(f"window {(wh, ww)} must fit inside the image of size (H, W) = {(height, width)}")
    return ((height - wh) // sh + 1, (width - ww) // sw + 1)


def _axis_levels(n: int) -> np.ndarray:
    """Level at which each index of an axis of length n joins the coarse-to-fine lattices.

    Lattice m holds ``round((n - 1) * t / 2**m)`` for t = 0 .. 2**m: level 0 is both ends,
    each next level halves the spacing, and lattice m is contained in lattice m + 1.
    """
    levels = np.full(n, -1, dtype=np.int64)
    level = 0
    while (levels < 0).any():
        t = np.arange(2**level + 1, dtype=np.int64)
        index = ((n - 1) * t * 2 + 2**level) // 2 ** (level + 1)  # round half up
        new = index[levels[index] < 0]
        levels[new] = level
        level += 1
    return levels


def scan_order(rows: int, cols: int, order: str = "coarse_first") -> tuple[np.ndarray, np.ndarray]:
    """The order in which the positions of a (rows, cols) grid are evaluated.

    ``"coarse_first"``: position (i, j) belongs to lattice level ``max(level(i), level(j))``,
    where an axis's lattice m has ``2**m + 1`` evenly spread indices from the first to the
    last (see :func:`_axis_levels`); positions are taken level by level. Within a level the
    cell centres (new on both axes: the middle of each cell of the previous lattice) come
    first, then the edge midpoints, each row-major. Every prefix that ends at a level boundary
    is a complete lattice spanning the whole grid, and the prefix that ends after a level's
    centres refines every cell of the previous lattice once (after 4 corners: the centre).
    ``"raster"``: row-major.

    Args:
        rows: rows of the grid.
        cols: columns of the grid.
        order: ``"coarse_first"`` or ``"raster"``.

    Returns:
        ``(positions, levels)``: (N, 2) int64 array of (i, j), and the (N,) lattice level of
        each (all zeros for ``"raster"``). Every position appears exactly once.

    Raises:
        ValueError: for an unknown order or an empty grid. TypeError: rows or cols not ints.
    """
    if order not in _ORDERS:
        raise ValueError(f"order must be one of {_ORDERS}, got {order!r}")
    rows, cols = as_count(rows, "rows", minimum=0), as_count(cols, "cols", minimum=0)
    if rows < 1 or cols < 1:
        raise ValueError(f"the grid must have at least one position, got {(rows, cols)}")
    ii, jj = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    ii, jj = ii.ravel(), jj.ravel()
    if order == "raster":
        return np.stack([ii, jj], axis=1), np.zeros(ii.size, dtype=np.int64)
    row_levels, col_levels = _axis_levels(rows)[ii], _axis_levels(cols)[jj]
    levels = np.maximum(row_levels, col_levels)
    edge = row_levels != col_levels  # new on one axis only
    perm = np.lexsort((jj, ii, edge, levels))
    return np.stack([ii[perm], jj[perm]], axis=1), levels[perm]


def _preview_stops(rows: int, cols: int) -> np.ndarray:
    """Prefix lengths of the coarse-first order that end after a level's centres or at its end.

    Counted from the axis levels alone: the positions up to level m are the product of the
    rows and the columns up to m, and a level's centres those of the rows and columns new at m.
    """
    row_levels, col_levels = _axis_levels(rows), _axis_levels(cols)
    stops = []
    for level in range(int(max(row_levels.max(), col_levels.max())) + 1):
        before = int((row_levels < level).sum() * (col_levels < level).sum())
        stops.append(before + int((row_levels == level).sum() * (col_levels == level).sum()))
        stops.append(int((row_levels <= level).sum() * (col_levels <= level).sum()))
    return np.unique(np.array(stops))


def preview_count(rows: int, cols: int) -> int:
    """How many positions of the coarse-first order make the preview of a (``rows``, ``cols``) grid.

    The longest prefix of :func:`scan_order` that ends at a clean stop (after a level's cell
    centres, or at the end of a level) and holds at most :data:`PREVIEW_SHARE` of the
    positions, but at least :data:`PREVIEW_MIN` (the four corners and the centre) or the
    whole grid if it is smaller. For the 25 x 25 grid of a 224-pixel image, window 32,
    stride 8, that is the 5 x 5 lattice (25 positions, 4 %); at stride 16 (13 x 13) the
    corners and the centre (5 positions, 3 %).
    """
    total = rows * cols
    stops = _preview_stops(rows, cols)
    floor = int(stops[stops >= min(PREVIEW_MIN, total)][0])
    fitting = stops[stops <= PREVIEW_SHARE * total]
    return max(floor, int(fitting[-1]) if fitting.size else 0)


def grid_to_pixel_attribution(
    grid: np.ndarray,
    unoccluded: float,
    *,
    window: int | Sequence[int],
    stride: int | Sequence[int],
    image_size: Sequence[int],
) -> np.ndarray:
    """Convert a per-position grid into Captum's per-pixel occlusion attribution.

    ``A(p) = mean over the computed positions (i, j) whose window covers pixel p of
    (unoccluded - grid[i, j])``. For a complete grid whose windows tile the image without
    remainder, this equals ``captum.attr.Occlusion(f).attribute(x, sliding_window_shapes=
    (C, wh, ww), strides=(C, sh, sw), baselines=fill)`` in every channel (up to float rounding).

    Args:
        grid: (rows, cols) scores; NaN positions (not computed) are left out of the mean.
        unoccluded: the score of the unoccluded image.
        window, stride: as given to :func:`occlusion_map`.
        image_size: (H, W).

    Returns:
        (H, W) float32 array; NaN for pixels no computed window covers (all of them, without a
        warning, for a grid that is all NaN: a scan cancelled before its first batch).

    Raises:
        ValueError: if the grid shape does not match image_size, window and stride; an
            image_size that is not (H, W); a window or stride below 1; an unoccluded score that
            is NaN or infinite.
        TypeError: an unoccluded score that is not a number (a string, a bool, a tensor); a
            window or stride that is not an int or a pair of ints (a :class:`SizeTypeError`, also a
            ``ValueError``).
    """
    unoccluded = as_real(unoccluded, "unoccluded")
    grid = np.asarray(grid, dtype=np.float64)
    expected = grid_shape(image_size, window, stride)
    if grid.shape != expected:
        raise ValueError(
            f"grid of shape {grid.shape} does not match image_size={tuple(image_size)}, window={window}, "
            f"stride={stride} (expected {expected})"
        )
    wh, ww = _pair(window, "window", _WINDOW_ACCEPTED)
    sh, sw = _pair(stride, "stride", _STRIDE_ACCEPTED)
    height, width = _image_size(image_size)
    # A stride beyond the image leaves one position on that axis, as a stride of the image's size
    # does; clamped, it stays within the integers the transposed convolution takes.
    sh, sw = min(sh, height), min(sw, width)
    known = np.isfinite(grid)
    drop = np.where(known, float(unoccluded) - grid, 0.0)
    kernel = torch.ones(1, 1, wh, ww, dtype=torch.float64)
    # A transposed convolution with a ones kernel adds each position's value over its window.
    total = F.conv_transpose2d(torch.from_numpy(drop)[None, None], kernel, stride=(sh, sw))[0, 0]
    count = F.conv_transpose2d(torch.from_numpy(known.astype(np.float64))[None, None], kernel, stride=(sh, sw))[0, 0]
    out = np.full((height, width), np.nan, dtype=np.float64)
    h, w = total.shape
    count_np = count.numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        out[:h, :w] = np.where(count_np > 0, total.numpy() / count_np, np.nan)
    return out.astype(np.float32)


# ---------------------------------------------------------------------------- evaluation


def _prepare_image(x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        try:
            check_batch(x)  # the methods' shared message: what x is, and how to make the tensor from an image
        except TypeError as exc:
            raise TypeError(f"{exc}; occlusion explains one image at a time, so N = 1: (1, C, H, W)") from None
    if x.dim() == 3:
        raise ValueError(f"x must have shape (1, C, H, W), got {tuple(x.shape)}; add the batch dimension with x.unsqueeze(0)")
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(
            f"x must be one image of shape (1, C, H, W), got {tuple(x.shape)}; occlusion explains one image "
            "at a time (its occluded copies are batched internally), so loop over the images of a batch"
        )
    if not x.is_floating_point():
        raise ValueError(f"x must be a float tensor (preprocessed image), got dtype {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"x has no pixels: its shape is {tuple(x.shape)}; channels, height and width must be >= 1")
    if x.is_meta:
        raise ValueError("x is on the meta device, which holds shapes but no values; give a tensor with data")
    return x.detach()


def _check_channel_axis(model_or_probe: object, x: torch.Tensor) -> None:
    """Refuse an image laid out as (1, H, W, C) before the scan is set up (see
    :func:`~cnnwidgets.core.probe.check_channel_axis`)."""
    if isinstance(model_or_probe, Probe):
        model = None if model_or_probe.closed else model_or_probe.model
    else:
        model = model_or_probe if isinstance(model_or_probe, nn.Module) else getattr(model_or_probe, "model", None)
    if isinstance(model, nn.Module):
        check_channel_axis(model, x)  # (for anything else, the probe scope names what is wrong)


def _fill_image(fill: Fill, x: torch.Tensor) -> torch.Tensor:
    """The values an occluded window takes, as a tensor broadcastable to x (1, C, H, W)."""
    channels, height, width = x.shape[1:]
    accepted = (
        "a number (constant in the model's input space, e.g. 0.0 = the dataset mean after normalisation), "
        "'mean' (the image's per-channel mean), per-channel values of shape (C,), a tensor of shape "
        "(C, 1, 1), (C, H, W) or (1, C, H, W), or a callable x -> such a tensor"
    )
    if not callable(fill) and holds_bool(fill):  # True is not 1.0, here as in every method
        raise ValueError(f"fill must be {accepted}; got {fill!r}, which holds booleans, not values")
    if isinstance(fill, (int, float, np.number)):
        if not math.isfinite(float(fill)):
            raise ValueError(f"fill must be a finite number, got {fill!r}; accepted: {accepted}")
        return torch.full((1, channels, 1, 1), float(fill), dtype=x.dtype, device=x.device)
    if isinstance(fill, str):
        if fill == "mean":
            return x.mean(dim=(2, 3), keepdim=True)
        raise ValueError(f"fill must be {accepted}; got {fill!r}")
    if callable(fill) and not isinstance(fill, torch.Tensor):
        value = fill(x.clone())
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"a fill callable must return a tensor ({accepted}); got {type(value).__name__}")
    else:
        try:
            value = torch.as_tensor(fill)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"fill must be {accepted}; got {fill!r}") from exc
    if value.dtype == torch.bool:  # True is not 1.0: a bool fill is a mistake (a mask passed as the fill?)
        made = "the fill callable returned" if callable(fill) and not isinstance(fill, torch.Tensor) else "got"
        raise ValueError(f"fill must be {accepted}; {made} booleans (shape {tuple(value.shape)}), which are not values")
    value = value.detach().to(device=x.device, dtype=x.dtype)
    if not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        made = "the fill callable returned" if callable(fill) and not isinstance(fill, torch.Tensor) else "fill holds"
        raise ValueError(f"{made} {bad} values that are not finite (NaN or infinite): an occluded window must "
                         "hold finite values")
    shape = tuple(value.shape)
    if shape == (channels,):
        return value.view(1, channels, 1, 1)
    if shape in ((channels, 1, 1), (channels, height, width)):
        return value.unsqueeze(0)
    if shape in ((1, channels, 1, 1), (1, channels, height, width)):
        return value
    raise ValueError(f"fill must be {accepted}, for C={channels}, H={height}, W={width}; got shape {shape}")


class _OccludedBatches:
    """Builds batches of occluded copies of x in one reused buffer.

    Each slot of the buffer keeps the image; for a new batch only the window written last
    time into a slot is restored from x before the new window is filled, so building a batch
    costs O(batch * window) instead of a full copy of the batch. A model that changed its
    input in place (``x.sub_(mean)``, ``x /= 255``) leaves the buffer's version counter
    ahead of the one it had when the batch was handed out; the buffer is then copied from x
    in full before the next batch. (A write through ``tensor.data`` bypasses the counter and
    is not noticed.)
    """

    def __init__(self, x: torch.Tensor, fill: torch.Tensor, window: tuple[int, int], capacity: int,
                 memory_format: torch.memory_format) -> None:
        self.x = x
        self.fill = fill
        self.window = window
        # a normal tensor even under the caller's inference mode: inference tensors have no
        # version counter, which is how a model writing its input is noticed
        with torch.inference_mode(False):
            self.buffer = torch.empty((capacity, *x.shape[1:]), dtype=x.dtype, device=x.device,
                                      memory_format=memory_format)
        self.written: list[tuple[int, int] | None] = []
        self._refill()

    def _refill(self) -> None:
        """Copy the image into every slot (no window written)."""
        self.buffer.copy_(self.x.expand_as(self.buffer))
        self.written = [None] * self.buffer.shape[0]
        self.version = self.buffer._version

    def batch(self, corners: np.ndarray) -> torch.Tensor:
        if self.buffer._version != self.version:  # the model wrote into the last batch
            self._refill()
        wh, ww = self.window
        image = self.x[0]
        full_fill = self.fill.shape[-1] > 1 or self.fill.shape[-2] > 1
        for slot, (top, left) in enumerate(corners.tolist()):
            previous = self.written[slot]
            if previous is not None:
                pt, pl = previous
                self.buffer[slot, :, pt:pt + wh, pl:pl + ww].copy_(image[:, pt:pt + wh, pl:pl + ww])
            source = self.fill[0, :, top:top + wh, left:left + ww] if full_fill else self.fill[0]
            self.buffer[slot, :, top:top + wh, left:left + ww].copy_(source)
            self.written[slot] = (top, left)
        self.version = self.buffer._version
        return self.buffer[: len(corners)]


def _covered(count: int, window: int, stride: int) -> np.ndarray:
    """The indices along one axis that some of ``count`` windows covers."""
    return np.unique((np.arange(count)[:, None] * stride + np.arange(window)[None, :]).ravel())


def _fill_is_the_image(image: torch.Tensor, fill: torch.Tensor, window: tuple[int, int],
                       stride: tuple[int, int], shape: tuple[int, int]) -> bool:
    """Whether the fill equals ``image`` (1, C, H, W) at every pixel a window of the grid covers, in
    every channel: then every occluded image is the image itself. One comparison of the image."""
    rows = torch.from_numpy(_covered(shape[0], window[0], stride[0])).to(image.device)
    cols = torch.from_numpy(_covered(shape[1], window[1], stride[1])).to(image.device)
    same = (fill.expand_as(image) == image)[0].all(dim=0)
    return bool(same.index_select(0, rows).index_select(1, cols).all())


#: A complete scan counts as unchanged when every score is within this share of the largest
#: score's magnitude from the unoccluded one (float32 rounding of the same value on two paths).
_UNCHANGED_RTOL = 1e-6


def _no_effect_warning(result: OcclusionResult, fill_is_image: bool, method: str) -> NoOcclusionEffectWarning | None:
    """The :class:`NoOcclusionEffectWarning` of a complete scan in which no position changed the
    score (or whose fill equals the image under every window), else None."""
    grid = result.grid.astype(np.float64)
    base = float(result.unoccluded)
    scale = max(abs(base), float(np.abs(grid).max()))
    if not fill_is_image and not float(np.abs(grid - base).max()) <= _UNCHANGED_RTOL * scale:
        return None
    start = (f"{method}: no occluder position changed the score (it is {base:.4g} without occlusion and at "
             f"all {result.total} positions), so the map is blank (its drop is 0 everywhere): ")
    if fill_is_image:
        why = ("the fill equals the image under every window, so every occluded image is the image itself; "
               "give another fill, one the image does not have there (a number, per-channel values, or a blurred "
               "copy of the image)")
    else:
        why = ("the target does not depend on the image, or not on the pixels the windows cover: a channel that "
               "is never active on it (behind a ReLU whose input stays below 0, a dead channel) is 0 with any "
               "occluder, and so is the score of a classifier head initialised to zero; try another channel, "
               "layer or class" + ("; a stride larger than the window leaves pixels that no window covers"
                                   if any(s > w for s, w in zip(result.stride, result.window)) else ""))
    return NoOcclusionEffectWarning(start + why, fill_equals_image=fill_is_image)


def _model_failed(exc: BaseException, batch: torch.Tensor) -> RuntimeError:
    return RuntimeError(f"the model failed on an occluded batch of shape {tuple(batch.shape)}: {model_error_text(exc)}")


# Per thread: whether a scan that falls back to one image per forward leaves the warning out
# (set by a caller that shows OcclusionResult.one_image itself, as the explorer's method panel).
_ONE_IMAGE_QUIET = QuietSwitch()


def one_image_quietly() -> contextlib.AbstractContextManager[list[Warning]]:
    """Within this block, on this thread, a scan that falls back to one image per forward pass does
    not warn (:data:`ONE_IMAGE_WARNING`); its result says so in :attr:`OcclusionResult.one_image`.
    For callers that show that themselves, as the explorer's method panel does."""
    return _ONE_IMAGE_QUIET.quietly()


#: The warning of a scan that goes on one image per forward pass (see ``_scan_with_probe``).
ONE_IMAGE_WARNING = (
    "the model failed on a batch of several occluded images but runs on one: it seems to take one image "
    "per forward pass, so this occlusion map runs image by image, which is slower; pass batch_size=1 "
    "to silence this warning"
)


def _out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a device running out of memory: a batch too large
    for the memory left, not a model that takes one image per forward pass."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, torch.OutOfMemoryError) or "out of memory" in str(seen).lower():
            return True
        seen = seen.__cause__
    return False


def _kept_outputs(target: Target) -> str:
    """How the class probabilities a scan of ``target`` keeps are read from the model's output (see
    :func:`~cnnwidgets.core.targets.class_probabilities`): as the target reads them when it is a
    ``ClassProbability``, else ``"auto"``."""
    return target.outputs if isinstance(target, ClassProbability) else "auto"


def _keeps_probabilities(output: object, positions: int) -> bool:
    """Whether a scan of ``positions`` positions keeps the class probabilities of the model output
    ``output``: it must be class scores, and all of them must fit in :data:`KEPT_PROBABILITIES_BYTES`."""
    try:
        classes = class_scores(output_tensor(output)).shape[1]
    except (TypeError, ValueError):  # not class scores: there are no classes to keep
        return False
    return positions * classes * 4 <= KEPT_PROBABILITIES_BYTES


_Scores = tuple[torch.Tensor, Union[torch.Tensor, None], Union[torch.Tensor, None]]
"""What a runner gives for a batch: the target's scores (N,), the top class of each image (N,) or
None, and the probabilities of every class (N, classes) when they are kept, else None."""


class _OutputRunner:
    """Scores (and top classes) of targets on the model output, from a fast private copy (run
    in inference mode) or the probe's own copy (:class:`_ProbeOutput`, run outside it: the probe
    copies each batch and runs its model in plain mode, where a model that changes its input in
    place could not write an inference tensor). With ``keep``, the probabilities of every class too,
    read from the output as ``ClassProbability(..., outputs=keep)`` reads them.

    A fast copy that uses the memory of the probe's copy (see :class:`_Shares`) is checked after
    every batch: once the probe's copy was written into (it took the user's new weights), the
    batch and every later one run through the probe's own copy, each batch with the weights the
    probe has when it runs (as a scan of a layer target does; the newest, if training goes on),
    where the fast copy would mix its folded layers' old weights with the others' new ones."""

    def __init__(
        self, model: Callable[[torch.Tensor], object], target: Target, probe: Probe, keep: str | None = None,
        cut: _LogitsCut | None = None,
    ) -> None:
        self.model = model
        self.target = target
        self.probe = probe  # the model's final activation and output reduction, for the target
        self.keep = keep
        self.cut = cut  # the model runs without its final activation: its output is the logits
        self.inference = not isinstance(model, _ProbeOutput)
        self.shares = _shares_of(model)
        self.fallback: _ProbeOutput | None = None  # set when the fast copy's weights were overwritten

    def _output(self, batch: torch.Tensor) -> object:
        if self.fallback is None:
            output = self.model(batch)  # in __call__'s mode: inference mode for a fast copy
            if self.shares is None or self.shares.unchanged(self.probe):
                return output
            self.fallback = _ProbeOutput(self.probe, self.cut)
        with torch.inference_mode(False):
            return self.fallback(batch)

    def __call__(self, batch: torch.Tensor) -> _Scores:
        with torch.inference_mode(self.inference):
            try:
                output = self._output(batch)
            except Exception as exc:  # noqa: BLE001 - the model's own KeyError, ValueError ... too,
                # named as the model's failure, not to be taken for a KeyError of an unknown layer
                raise _model_failed(exc, batch) from exc
            try:
                # a model that takes one image per forward may fold a batch into one output row
                check_output_batch(output_tensor(output), batch.shape[0])
            except TypeError:  # not a tensor: scores() names it
                pass
            except ValueError as exc:
                raise _model_failed(exc, batch) from exc
        return self.scores(output)

    def scores(self, output: object) -> _Scores:
        output = output_tensor(output)
        with torch.inference_mode():
            scores = call_target(self.target, output, probe=self.probe)
            try:
                classes = class_scores(output)
            except ValueError:  # not class scores (a custom target reads this output): no top class
                classes = None
            # a single output unit scores one class of two: there is no class index to name
            labels = classes.argmax(dim=1) if classes is not None and classes.shape[1] > 1 else None
            probabilities = None
            if self.keep is not None and classes is not None and self.cut is not None:
                probabilities = self.cut.probabilities(classes)
            elif self.keep is not None and classes is not None:
                # as ClassProbability reads them (call_target gives it the model's final activation)
                probabilities = class_probabilities(
                    classes, outputs=self.keep, final_activation=self.probe.output_activation
                )
        return scores, labels, probabilities


@dataclass(frozen=True)
class _LogitsCut:
    """A model that ends in an ``nn.Softmax`` or ``nn.Sigmoid`` module ``module`` (``activation``:
    ``"softmax"`` or ``"sigmoid"``), run without it: its output is then the output of ``layer``,
    the logits that module reads (what a class index scores on such a model)."""

    module: str
    layer: str
    activation: str

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """What the final module makes of class scores ``logits`` (N, classes): the model's own output."""
        return logits.softmax(dim=1) if self.activation == "softmax" else logits.sigmoid()


def _logits_cut(probe: Probe) -> _LogitsCut | None:
    """The :class:`_LogitsCut` of ``probe``'s model, when its final activation module is known (run
    once, fed by the scores layer), else None."""
    layer, activation = probe.scores_layer, probe.output_activation
    module = probe.layers[layer].feeds if layer is not None and layer in probe.layers else ""
    if not module or activation is None:
        return None
    return _LogitsCut(module, layer, activation)


def _without_module(model: nn.Module, name: str) -> bool:
    """Put an ``nn.Identity`` in place of ``model``'s submodule ``name``, under every name it has (see
    :func:`~cnnwidgets.methods._fold.replace_module`); False where it has none."""
    try:
        module = model.get_submodule(name)
    except AttributeError:
        return False
    replace_module(model, module, nn.Identity())
    return True


class _ProbeOutput:
    """The probe's own copy of the model as a callable (hooks idle, nothing cached); with ``cut``,
    the output of the layer the model's final activation reads (the logits)."""

    def __init__(self, probe: Probe, cut: _LogitsCut | None = None) -> None:
        self.probe = probe
        self.cut = cut

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        try:
            if self.cut is not None:
                layer = self.cut.layer
                return self.probe.capture(batch, [layer], cache=False, channels_first=True)[layer]
            return self.probe.logits(batch, cache=False)
        except RuntimeError as exc:
            if exc.__cause__ is None:
                raise
            # the model's own error: the runner names the batch once
            raise exc.__cause__ from None


class _LayerRunner:
    """Scores of a target on an internal layer: prefix-only forward passes through the probe."""

    def __init__(self, probe: Probe, target: Target) -> None:
        self.probe = probe
        self.target = target

    def __call__(self, batch: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        layer = self.target.layer
        # Occluded batches are used once; caching them would evict the user's cached activations.
        activation = self.probe.capture(batch, [layer], cache=False, channels_first=True)[layer]
        with torch.no_grad():
            scores = call_target(self.target, activation, probe=self.probe)
        return scores.detach(), None, None


# One fast inference copy per (probe, fold setting), rebuilt when the probe's copy changes.
# Keyed by the fold setting, and (fold, cut) for a copy without the model's final activation.
_FAST_COPIES: weakref.WeakKeyDictionary[Probe, dict[Any, tuple[tuple, nn.Module, bool]]] = weakref.WeakKeyDictionary()
_FAST_COPIES_LOCK = threading.Lock()


@dataclass(eq=False)
class _Shares:
    """The parameters and buffers of a probe's copy that a fast copy was made from, with their
    version counters and the probe's :attr:`~Probe.write_sequence` at that time.

    The fast copy uses the memory of every tensor it does not change (only folded convolutions
    have their own), and the probe takes the user's new weights by writing them into its copy in
    place (``copy_``). While the probe's write sequence is where it was, no such write has begun
    since, and the fast copy computes with one set of weights; once it moved, its unfolded layers
    may have the new weights and its folded ones the old, and it must not be used. The counters
    catch writes into the probe's copy made past the probe (``probe.model`` written directly).
    """

    # Weak references: a tensor the probe dropped since (it copied the user's model afresh, or moved
    # its copy to another device) is written by no one, and the fast copy keeps the memory it
    # computes with alive itself.
    tensors: tuple[weakref.ref[torch.Tensor], ...]
    versions: tuple[int, ...]
    sequence: int

    @classmethod
    def take(cls, model: nn.Module, sequence: int) -> _Shares:
        """The tensors of ``model``, the probe's copy, whose write sequence was ``sequence``
        before any of their values was read."""
        # inference tensors have no version counter; inference_copy copies them instead of sharing
        tensors = [t for t in (*model.parameters(), *model.buffers()) if not t.is_inference()]
        return cls(tuple(weakref.ref(t) for t in tensors), tuple(t._version for t in tensors), sequence)

    def unchanged(self, probe: Probe) -> bool:
        """Whether nothing was written into the shared tensors since :meth:`take`.

        Called after a batch ran, it also says that no write of the probe overlapped the batch
        (a sequence lock: the probe's write sequence is odd while it writes, and two further on
        after), without waiting for the probe's lock, which a live view may hold for a capture.
        """
        if self.sequence % 2 or probe.write_sequence != self.sequence:
            return False
        for ref, version in zip(self.tensors, self.versions):
            t = ref()
            if t is not None and t._version != version:
                return False
        return True


# What each fast copy shares with the probe's copy it was made from.
_SHARES: weakref.WeakKeyDictionary[nn.Module, _Shares] = weakref.WeakKeyDictionary()


def _shares_of(model: object) -> _Shares | None:
    if not isinstance(model, nn.Module):
        return None
    with _FAST_COPIES_LOCK:
        return _SHARES.get(model)


def _inference_copy(probe: Probe, fold: bool, cut: _LogitsCut | None = None) -> tuple[nn.Module, InferenceCopyReport]:
    """``inference_copy`` of ``probe.model`` (BN folded and activations in place if ``fold``) that
    uses the memory of every parameter and buffer it does not change, in the probe's layout.

    The probe's write sequence is read before the copy reads any value: a refresh under way while
    it is made, or begun since, moves it, so the copy is never taken for one set of weights when it
    read two. ``set_memory_format`` gives a tensor in another layout a new tensor of the copy's own
    (it rebinds the alias, not the probe's parameter), and none when the layout is already right,
    as the probe's copy has it: its tensors stay shared. With ``cut``, the copy runs without the
    model's final activation module (an ``nn.Identity`` in its place).

    Raises:
        LookupError: when ``cut``'s module is not a submodule of the copy.
    """
    sequence = probe.write_sequence
    source = probe.model
    shares = _Shares.take(source, sequence)
    model, report = inference_copy(source, fold_batchnorm=fold, inplace_activations=fold, share=True)
    if cut is not None and not _without_module(model, cut.module):
        raise LookupError(f"the copy has no module {cut.module!r}")
    if probe.channels_last:
        set_memory_format(model, True)
    with _FAST_COPIES_LOCK:
        _SHARES[model] = shares
    return model, report


def _copy_key(probe: Probe) -> tuple:
    # the probe's version grows whenever its copy takes new weights from the user's model
    return (id(probe.model), str(probe.device), probe.channels_last, probe.version)


def _cached_fast_model(probe: Probe, fold: bool, cut: _LogitsCut | None = None) -> tuple[nn.Module, bool] | None:
    """The inference copy :func:`_fast_model` made earlier and that is still valid, with its
    ``traced`` flag; None when one must be made."""
    probe.sync()
    key = _copy_key(probe)
    with _FAST_COPIES_LOCK:
        cached = _FAST_COPIES.get(probe, {}).get(fold if cut is None else (fold, cut))
    if cached is None or cached[0] != key:
        return None
    shares = _shares_of(cached[1])
    if shares is not None and not shares.unchanged(probe):  # written into without a refresh (probe.model directly)
        return None
    return cached[1], cached[2]


def _fast_model(
    probe: Probe, fold: bool, x: torch.Tensor, reference: torch.Tensor, reference_version: int,
    cut: _LogitsCut | None = None,
) -> tuple[nn.Module, torch.Tensor | None, bool]:
    """A hook-free inference copy of ``probe.model`` (BN folded if ``fold``), checked once against it.

    The copy uses the memory of every tensor of the probe's copy that it does not change (see
    :class:`_Shares`): only folded convolutions take memory of their own.

    ``reference`` is the probe's output for ``x`` when its :attr:`~Probe.version` was
    ``reference_version``. The copy takes the probe's weights as they are now (it syncs first),
    so a rewritten copy is checked against the output of those same weights: when the user's
    weights changed in between (training while a map is computed), the reference is computed
    again through the probe.

    The copy runs on a clone of ``x``, so a model that changes its input in place leaves ``x``
    alone. When the reference holds NaN or inf, the rewrite cannot be checked on this image:
    the model then runs unmodified for this scan, without a warning, and nothing is kept (the
    next scan checks the rewrite on its own image).

    With ``cut``, the copy runs without the model's final activation, and ``reference`` is the
    output of ``cut.layer`` (the logits).

    Returns the copy; when it was just built and checked, its output for ``x`` (so the caller
    need not run it again), else None; and whether the copy was rewritten from a ``torch.fx``
    trace (its forward is then a plain graph of module calls, safe to run from several
    threads at once).
    """
    cached = _cached_fast_model(probe, fold, cut)
    if cached is not None:
        return cached[0], None, cached[1]
    key = _copy_key(probe)
    try:
        model, report = _inference_copy(probe, fold, cut)
    except LookupError:  # a rewritten copy without the module by that name: the plain copy has it
        model, report = _inference_copy(probe, False, cut)
    traced = report.traced
    check = None
    if report.folded or report.inplace or cut is not None:
        with torch.inference_mode():
            try:
                check = output_tensor(model(x.clone()))
            except Exception:  # noqa: BLE001 - a rewrite that breaks the model is not used
                check = None
        # a refresh on another thread may have written into the probe's copy while this one was made
        # or checked: its output then mixes the folded layers' old weights with the others' new
        # ones, which says nothing of the rewrite
        shares = _shares_of(model)
        mixed = shares is not None and not shares.unchanged(probe)
        if probe.version != reference_version:
            reference = _ProbeOutput(probe, cut)(x)  # the output of the weights the copy took
        # an output that is not floating point (a thresholded bool) cannot be compared within a
        # tolerance either: the model runs unmodified, and the target reads the output or refuses it
        if not reference.is_floating_point() or not bool(torch.isfinite(reference).all()):
            return _unmodified_copy(probe, cut), None, False  # not kept: see above
        if mixed or _copy_key(probe) != key:
            # The weights changed again while the reference was computed (or while the copy was
            # made): there is no output of the copy's weights to check it against, so the model
            # runs unmodified (not a failure of the rewrite: no warning).
            model, check, traced = _unmodified_copy(probe, cut), None, False
            key = _copy_key(probe)
        else:
            scale = float(reference.abs().max()) if reference.numel() else 1.0
            rtol, atol = _agreement_tolerance(reference.device)
            if not (
                isinstance(check, torch.Tensor)
                and check.shape == reference.shape
                and torch.allclose(check, reference, rtol=rtol, atol=atol * max(1.0, scale))
            ):
                warnings.warn(
                    "folding batch norm changed this model's output; occlusion runs the model unmodified instead",
                    RuntimeWarning,
                    stacklevel=4,
                )
                model, check, traced = _unmodified_copy(probe, cut), None, False
    with _FAST_COPIES_LOCK:
        first = probe not in _FAST_COPIES
        _FAST_COPIES.setdefault(probe, {})[fold if cut is None else (fold, cut)] = (key, model, traced)
    if first:
        probe.on_close(functools.partial(_forget_fast_copies, weakref.ref(probe)))
    return model, check, traced


def _agreement_tolerance(device: torch.device) -> tuple[float, float]:
    """(rtol, atol relative to the output's scale) within which the rewritten copy must agree with
    the probe's copy: float32 rounding, or on CUDA with TensorFloat-32 convolutions or matrix
    products (PyTorch's default for convolutions on Ampere and newer GPUs) that format's 10-bit
    mantissa, whose rounding grows through a deep network to about 1e-2 of the output's scale.
    A broken rewrite changes the output by far more."""
    tf32 = device.type == "cuda" and (torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32)
    return (3e-2, 2e-2) if tf32 else (1e-3, 1e-4)


def _unmodified_copy(probe: Probe, cut: _LogitsCut | None = None) -> nn.Module:
    """A hook-free inference copy of ``probe.model`` as it is (nothing folded, nothing in place;
    without its final activation with ``cut``), which uses the memory of all its tensors (it
    changes none)."""
    return _inference_copy(probe, False, cut)[0]



def _forget_fast_copies(probe_ref: weakref.ref) -> None:
    """Drop the copies made for a probe that was closed (it may stay referenced for long)."""
    probe = probe_ref()
    if probe is not None:
        with _FAST_COPIES_LOCK:
            _FAST_COPIES.pop(probe, None)


# Largest activation tensor (all images of a batch) we let a CPU batch create. glibc serves
# blocks above its mmap threshold (at most 32 MiB on 64-bit) with fresh pages that the kernel
# must fault in and zero on every batch; below it, freed activations are reused. Measured on
# resnet18 at 224x224: batches of 9 (28 MiB stem output) fault no pages, batches of 16 spend
# about 5 ms per image in page faults (~8 % of the forward).
_CPU_TENSOR_BYTES = 28 * 2**20


# Largest activation tensor a GPU batch may create; on CUDA also at most an eighth of the memory
# free when the scan starts (a forward holds a few activations of that size at once, and VGG16's
# first layers at 224 x 224 take 12.8 MB per image: 128 images would need 1.6 GB each).
_GPU_TENSOR_BYTES = 512 * 2**20


def _gpu_tensor_budget(device: torch.device) -> int:
    budget = _GPU_TENSOR_BYTES
    if device.type == "cuda":
        try:
            free, _total = torch.cuda.mem_get_info(device)
        except (RuntimeError, AssertionError):  # no driver answer: the fixed bound alone
            return budget
        budget = min(budget, free // 8)
    return budget


def _auto_batch_size(probe: Probe, image: torch.Tensor) -> int:
    """Images per forward pass, bounded by the bytes of the largest activation a batch makes:
    28 MiB on the CPU (see ``_CPU_TENSOR_BYTES``), 512 MiB and an eighth of the free memory on a GPU;
    at most 64 images on the CPU and 128 on a GPU."""
    largest = image[0].numel()
    for info in probe.layers.values():  # described at this image size by the unoccluded run
        if info.output_shape:
            largest = max(largest, int(np.prod(info.output_shape)))
    per_image = largest * 4  # the copy computes in float32
    if probe.device.type != "cpu":
        return int(min(128, max(1, _gpu_tensor_budget(probe.device) // per_image)))
    return int(min(64, max(1, _CPU_TENSOR_BYTES // per_image)))


def _batches(total: int, batch_size: int, cut: int) -> list[tuple[int, int]]:
    """[start, end) ranges of at most batch_size that also end exactly at ``cut``."""
    ranges = []
    start = 0
    while start < total:
        end = min(total, start + batch_size)
        if start < cut < end:
            end = cut
        ranges.append((start, end))
        start = end
    return ranges


# Positions in the first batch of a scan whose preview the CPU workers share (at least two: the
# first batch also finds models that take one image per forward pass).
_FIRST_BATCH = 3


def _preview_plan(total: int, batch_size: int, cut: int, workers: int) -> list[tuple[int, int]]:
    """The ranges of :func:`_batches`, with the first ``cut`` positions (the preview) split so that
    ``workers`` CPU workers finish it together: a first batch of :data:`_FIRST_BATCH` (it runs alone,
    where an image costs more wall time than on a worker of its own), then one range per worker,
    of up to twice ``batch_size`` (an automatic size, which bounds memory with room to spare). As
    :func:`_batches` where they would have to be larger, or with one worker."""
    first = min(batch_size, _FIRST_BATCH)
    share = math.ceil((cut - first) / max(1, workers))
    if workers <= 1 or cut <= batch_size or share > 2 * batch_size:
        return _batches(total, batch_size, cut)
    ranges = [(0, first)]
    for start in range(first, cut, share):
        ranges.append((start, min(cut, start + share)))
    return ranges + [(start + cut, end + cut) for start, end in _batches(total - cut, batch_size, 0)]


# At most this many CPU workers; beyond it each worker gets several intra-op threads.
_MAX_CPU_WORKERS = 8


def _cpu_workers(probe: Probe, parallel_safe: bool) -> tuple[int, int]:
    """(workers, intra-op threads per worker) for a scan.

    On CPU, batches of a plain graph run best side by side, one per core: a convolution on
    one thread needs no synchronisation between cores, which the many small layers deep in a
    CNN pay for on every call when one batch is split over all threads (resnet18 at 224x224 on
    2 cores: maps 4 % faster in the median of paired runs, 0-12 % per run). Everything else
    runs one batch at a time on all of torch's threads.
    """
    threads = torch.get_num_threads()
    if probe.device.type != "cpu" or not parallel_safe or threads < 2:
        return 1, threads
    workers = min(threads, _MAX_CPU_WORKERS)
    return workers, max(1, threads // workers)


def _run_batches(
    plan: list[tuple[int, int]],
    make_batch: Callable[[_OccludedBatches | None, int, int], tuple[_OccludedBatches, torch.Tensor]],
    runner: Callable[[torch.Tensor], _Scores],
    handle: Callable[[int, int, torch.Tensor, torch.Tensor | None, torch.Tensor | None], None],
    cancelled: Callable[[], bool],
    workers: int,
    threads_per_worker: int,
) -> bool:
    """Runs ``runner`` on every range of ``plan`` and calls ``handle`` with the results, in plan order.

    ``make_batch(buffers, start, end)`` builds the occluded batch in a buffer (made on first use,
    one per thread). With one worker the ranges run in the calling thread; with several they run
    side by side, up to two per worker in flight, and results are handed on in plan order, so a
    partial result always holds a prefix of the scan order. (The scan's first range, the coarse
    preview, runs before this, in the calling thread on all of torch's threads, which puts it on
    screen soonest.)
    ``cancelled`` is checked before every range; ranges already running then finish, and their
    results are dropped. Returns whether the scan was cancelled.
    """
    if workers <= 1 or not plan:
        buffers = None
        for start, end in plan:
            if cancelled():
                return True
            buffers, batch = make_batch(buffers, start, end)
            handle(start, end, *runner(batch))
        return False

    local = threading.local()

    def work(start: int, end: int) -> _Scores:
        local.buffers, batch = make_batch(getattr(local, "buffers", None), start, end)
        return runner(batch)

    threads = torch.get_num_threads()
    ranges: Iterator[tuple[int, int]] = iter(plan)
    pending: deque[tuple[tuple[int, int], Future]] = deque()
    try:
        with ThreadPoolExecutor(
            workers, thread_name_prefix="cnnwidgets-occlusion", initializer=torch.set_num_threads,
            initargs=(threads_per_worker,),
        ) as pool:
            try:
                if cancelled():
                    return True
                for nxt in itertools.islice(ranges, 2 * workers):
                    pending.append((nxt, pool.submit(work, *nxt)))
                while pending:
                    (start, end), future = pending.popleft()
                    handle(start, end, *future.result())
                    if pending and cancelled():
                        return True
                    nxt = next(ranges, None)
                    if nxt is not None:
                        pending.append((nxt, pool.submit(work, *nxt)))
                return False
            finally:
                for _, future in pending:
                    future.cancel()
    finally:
        # A thread that starts using torch later takes the count set last; give it the caller's.
        torch.set_num_threads(threads)


def _scan(
    model_or_probe: nn.Module | Probe,
    x: torch.Tensor,
    target: Target | int,
    *,
    window: int | Sequence[int],
    stride: int | Sequence[int],
    fill: Fill,
    batch_size: int | None,
    progress: bool,
    order: str,
    callback: Callable[[OcclusionResult], None] | None,
    cancel: Cancel | None,
    device: str | torch.device | None,
    fold_batchnorm: bool,
    keep_class_probabilities: bool = False,
    method: str = "occlusion_map",
) -> OcclusionResult:
    # Cheap checks first, before any model work.
    x = _prepare_image(x)
    _check_channel_axis(model_or_probe, x)
    window = _pair(window, "window", _WINDOW_ACCEPTED)
    stride = _pair(stride, "stride", _STRIDE_ACCEPTED)
    rows, cols = grid_shape(x.shape[2:], window, stride)
    # A stride beyond the image leaves one position on that axis, as a stride of the image's size
    # does (the result holds the stride that way, and its corners stay within int64).
    stride = (min(stride[0], int(x.shape[2])), min(stride[1], int(x.shape[3])))
    if order not in _ORDERS:
        raise ValueError(f"order must be one of {_ORDERS}, got {order!r}")
    if batch_size is not None:
        batch_size = as_count(batch_size, "batch_size (None: automatic)")
    progress = as_flag(progress, "progress")
    fold_batchnorm = as_flag(fold_batchnorm, "fold_batchnorm")
    keep_class_probabilities = as_flag(keep_class_probabilities, "keep_class_probabilities")
    as_callback(callback, "callback", "(it receives the partial OcclusionResult)")
    cancelled = as_cancel_check(cancel)
    target = resolve_target(target)

    if isinstance(model_or_probe, Probe) and device is not None:
        raise ValueError(
            f"device applies only when a model is passed; this Probe computes on {model_or_probe.device} "
            "(switch it with probe.to(device))"
        )
    with probe_scope(model_or_probe, device=device) as probe:  # None: Probe's default, "auto"
        return _scan_with_probe(
            probe, x, target, rows=rows, cols=cols, window=window, stride=stride, fill=fill,
            batch_size=batch_size, progress=progress, order=order, callback=callback,
            cancelled=cancelled, fold_batchnorm=fold_batchnorm, keep_class_probabilities=keep_class_probabilities,
            method=method,
        )


def _scan_with_probe(
    probe: Probe,
    x: torch.Tensor,
    target: Target,
    *,
    rows: int,
    cols: int,
    window: tuple[int, int],
    stride: tuple[int, int],
    fill: Fill,
    batch_size: int | None,
    progress: bool,
    order: str,
    callback: Callable[[OcclusionResult], None] | None,
    cancelled: Callable[[], bool],
    fold_batchnorm: bool,
    keep_class_probabilities: bool,
    method: str = "occlusion_map",
) -> OcclusionResult:
    # A private copy: the model only ever sees copies of it (a model may change its input in place).
    image = x.to(device=probe.device, dtype=torch.float32, copy=True)
    # The unoccluded run first: it also describes the layers at this image size (for the batch
    # size), and settles the memory layout (a model that needs contiguous activations gets them).
    keep: str | None = None  # how the kept class probabilities are read, None: none kept
    logits_cut: _LogitsCut | None = None  # set when the model runs without its final activation
    output_target = target  # what the runners of the model's output score
    if target.layer is None:
        reference = probe.logits(image)  # refreshes the probe's copy; cached for the caller too
        reference_version = probe.version  # of the weights that computed it
        # a class index scores the logit also where a final softmax or sigmoid module follows it
        target = logit_target(probe, target, image)
        logits_cut = _logits_cut(probe) if target.layer is not None else None
        if logits_cut is not None:
            # the model runs without that module: its output is the logits the target reads, and
            # the classes (and their probabilities) come from them too
            reference = _ProbeOutput(probe, logits_cut)(image)
            output_target = replace(target, layer=None)
    on_output = target.layer is None or logits_cut is not None
    if on_output:
        if keep_class_probabilities and _keeps_probabilities(reference, rows * cols):
            keep = _kept_outputs(target)
    else:
        scores = target_score(probe, image, target)
    memory_format = torch.channels_last if probe.channels_last else torch.contiguous_format
    image = image.contiguous(memory_format=memory_format)
    fill_image = _fill_image(fill, image)
    positions, levels = scan_order(rows, cols, order)
    total = len(positions)
    preview = preview_count(rows, cols) if order == "coarse_first" else total
    corners = positions * np.array(stride)
    size = min(int(batch_size or _auto_batch_size(probe, image)), total)
    if probe.batch_dependent:
        size = 1  # batch statistics would let the positions of one batch change each other's scores
    # the first batches end exactly at the preview, unless it is a large part of a small grid anyway
    cut = preview if 4 * preview <= total else total
    plan = _batches(total, size, cut)

    # The unoccluded score, through the same path as the occluded ones.
    unoccluded_label: int | None = None
    copy_after_preview = False
    # stopped before the first batch: the unoccluded value (already computed) is all there is, and
    # no fast copy (about two forward passes) is made for a scan that will not run
    stopped_early = cancelled()
    if on_output:
        copy_after_preview = not stopped_early and (
            len(plan) > 1 and plan[0][1] == preview and _cached_fast_model(probe, fold_batchnorm, logits_cut) is None
        )
        if copy_after_preview or stopped_early:
            # First scan on this probe, with a preview of one batch: the preview runs through the
            # probe's own copy, like the reference, and the fast copy is prepared after it. (Its
            # preparation and check cost about two forward passes; the probe's copy runs each
            # image about a third slower, which a single small batch does not outweigh.)
            parallel_safe = False
            runner: _OutputRunner | _LayerRunner = _OutputRunner(
                _ProbeOutput(probe, logits_cut), output_target, probe, keep, logits_cut
            )
            scores, labels, probabilities = runner.scores(reference)
        else:
            model, output, parallel_safe = _fast_model(
                probe, fold_batchnorm, image, reference, reference_version, logits_cut
            )
            runner = _OutputRunner(model, output_target, probe, keep, logits_cut)
            scores, labels, probabilities = runner(image.clone()) if output is None else runner.scores(output)
        if labels is not None:
            unoccluded_label = int(labels[0])
    else:
        # Prefix runs go through the probe's hooks, which serve one forward at a time.
        parallel_safe = False
        runner = _LayerRunner(probe, target)
        labels = probabilities = None
    if plan[0][1] < preview and batch_size is None and not probe.batch_dependent:
        # the preview takes several batches of an automatic size: the workers share it
        plan = _preview_plan(total, size, cut, _cpu_workers(probe, parallel_safe)[0])
    if scores.shape != (1,):
        raise ValueError(f"a target must return one score per image; got shape {tuple(scores.shape)}")
    unoccluded = float(scores[0])
    with_labels = labels is not None

    grid = np.full((rows, cols), np.nan, dtype=np.float32)
    filled = np.zeros((rows, cols), dtype=bool)
    label_grid = np.full((rows, cols), -1, dtype=np.int64) if with_labels else None
    # The probabilities of every class: one array that the snapshots share (read-only views, each
    # reading only the positions it holds as filled); each position is written once, when computed.
    kept = kept_view = unoccluded_probabilities = None
    if probabilities is not None:
        unoccluded_probabilities = probabilities[0].float().cpu().numpy()
        unoccluded_probabilities.flags.writeable = False
        kept = np.full((rows, cols, unoccluded_probabilities.shape[0]), np.nan, dtype=np.float32)
        kept_view = kept.view()
        kept_view.flags.writeable = False
    done = 0
    stopped = False
    one_image = False  # set when the scan falls back to one image per forward pass

    def snapshot() -> OcclusionResult:
        return OcclusionResult(
            grid=grid.copy(), filled=filled.copy(), unoccluded=unoccluded,
            labels=None if label_grid is None else label_grid.copy(), unoccluded_label=unoccluded_label,
            window=window, stride=stride, image_size=(int(x.shape[2]), int(x.shape[3])), target=target,
            done=done, preview_ready=done >= preview, cancelled=stopped,
            unoccluded_probabilities=unoccluded_probabilities, _probabilities=kept_view, one_image=one_image,
        )

    def make_batch(buffers: _OccludedBatches | None, start: int, end: int) -> tuple[_OccludedBatches, torch.Tensor]:
        if buffers is None or buffers.buffer.shape[0] < end - start:  # the preview's ranges may be larger
            buffers = _OccludedBatches(image, fill_image, window, max(size, end - start), memory_format)
        return buffers, buffers.batch(corners[start:end])

    def handle(start: int, end: int, scores: torch.Tensor, labels: torch.Tensor | None,
               probabilities: torch.Tensor | None) -> None:
        nonlocal done
        if scores.shape != (end - start,):
            raise ValueError(f"a target must return one score per image; got shape {tuple(scores.shape)}")
        ii, jj = positions[start:end, 0], positions[start:end, 1]
        grid[ii, jj] = scores.float().cpu().numpy()
        if label_grid is not None and labels is not None:
            label_grid[ii, jj] = labels.cpu().numpy()
        if kept is not None and probabilities is not None:
            kept[ii, jj] = probabilities.float().cpu().numpy()
        filled[ii, jj] = True
        done = end
        bar.update(end - start)
        if callback is not None:
            callback(snapshot())

    def run_first_batch() -> None:
        """Runs the plan's first batch in the calling thread, before any worker starts.

        A model may take only one image per forward pass (``x.view(1, -1)``, an assert on the
        batch): the unoccluded image ran, but a batch of several fails. The scan then goes on
        as a scan with ``batch_size=1`` runs from its start (the same copy of the model, order
        and workers, so the same map), with a warning. When the first image alone fails too,
        the batch's own error is raised: one image is retried, once per scan.
        """
        nonlocal size, plan, runner, parallel_safe, copy_after_preview, one_image
        nonlocal unoccluded, unoccluded_label, unoccluded_probabilities
        start, end = plan[0]
        try:
            result = runner(make_batch(None, start, end)[1])
        except Exception as exc:  # noqa: BLE001 - retried below on one image, else raised again
            if end - start == 1 or _out_of_memory(exc):
                raise
            error = exc
        else:
            handle(start, end, *result)
            return
        one_plan = _batches(total, 1, cut)
        start, end = one_plan[0]
        try:
            one_runner, one_safe, first = runner, parallel_safe, None
            if copy_after_preview:
                # a scan at batch_size=1 makes the fast copy first and takes the unoccluded score from it
                model, output, one_safe = _fast_model(
                    probe, fold_batchnorm, image, reference, reference_version, logits_cut
                )
                one_runner = _OutputRunner(model, output_target, probe, keep, logits_cut)
                first = one_runner(image.clone()) if output is None else one_runner.scores(output)
            size = 1  # the buffers of the batches made from now on hold one image
            result = one_runner(make_batch(None, start, end)[1])
        except Exception:  # noqa: BLE001 - not a matter of the batch size: the batch's own error
            raise error from error.__cause__
        if first is not None:
            first_scores, first_labels, first_probabilities = first
            unoccluded = float(first_scores[0])
            if first_labels is not None:
                unoccluded_label = int(first_labels[0])
            if first_probabilities is not None and unoccluded_probabilities is not None:
                unoccluded_probabilities = first_probabilities[0].float().cpu().numpy()
                unoccluded_probabilities.flags.writeable = False
        plan, runner, parallel_safe, copy_after_preview = one_plan, one_runner, one_safe, False
        one_image = True
        warning = RuntimeWarning(ONE_IMAGE_WARNING)
        _ONE_IMAGE_QUIET.warn(warning, stacklevel=5)
        handle(start, end, *result)

    bar = tqdm(total=total, desc="occlusion", unit="pos", disable=not progress)
    try:
        stopped = stopped_early or cancelled()
        if not stopped:
            run_first_batch()  # may re-plan the scan at one image per forward
        if not stopped and copy_after_preview:
            stopped = cancelled()  # no fast copy (about two forward passes) for a scan that stops
            if not stopped:
                model, _, parallel_safe = _fast_model(
                    probe, fold_batchnorm, image, reference, reference_version, logits_cut
                )
                runner = _OutputRunner(model, output_target, probe, keep, logits_cut)
        if not stopped:
            workers, threads_per_worker = _cpu_workers(probe, parallel_safe)
            stopped = _run_batches(plan[1:], make_batch, runner, handle, cancelled, workers, threads_per_worker)
    finally:
        bar.close()
    result = snapshot()
    if result.complete and not result.cancelled:  # a partial map says nothing of the positions not computed
        warning = _no_effect_warning(result, _fill_is_the_image(image, fill_image, window, stride, (rows, cols)),
                                     method)
        if warning is not None:
            _EMPTY_QUIET.warn(warning, stacklevel=4)  # _scan_with_probe <- _scan <- occlusion_map ... <- its caller
    return result


# ---------------------------------------------------------------------------- public API


def occlusion_map(
    model_or_probe: nn.Module | Probe,
    x: torch.Tensor,
    target: Target | int,
    *,
    window: int | Sequence[int],
    stride: int | Sequence[int],
    fill: Fill = 0.0,
    batch_size: int | None = None,
    progress: bool = True,
    order: str = "coarse_first",
    callback: Callable[[OcclusionResult], None] | None = None,
    cancel: Cancel | None = None,
    device: str | torch.device | None = None,
    fold_batchnorm: bool = True,
    keep_class_probabilities: bool = False,
) -> OcclusionResult:
    """Occlusion sensitivity map of one image (Zeiler & Fergus 2013, section 4.2).

    For every position (i, j) of the occluder (top-left corner at (i*sh, j*sw), window fully
    inside the image) the window is replaced by ``fill`` in every channel and the target is
    evaluated on the whole occluded image::

        grid[i, j] = f(O_ij(x)),   unoccluded = f(x)

    Low values of a class probability mark the regions the classifier relies on (the paper's
    mode (a)); ``ChannelActivation(layer, c, reduce="sum")`` gives the total activation of a
    feature map (mode (b)), computed prefix-only (the model stops after ``layer``); for mode (c)
    see :func:`occlusion_top_class`. Every position is a full forward pass of its occluded image;
    positions are batched. On CPU, batches of output targets run side by side, one per torch
    thread (up to 8 at once), after the first batch; layer targets and models that ``torch.fx``
    cannot trace run one batch at a time on all threads.

    Args:
        model_or_probe: a model (a temporary :class:`~cnnwidgets.core.probe.Probe` is made and
            closed) or a Probe (its private copy is used; the model is never changed).
        x: one preprocessed image of shape (1, C, H, W) (normalised as the model expects).
            Batches of several images are not accepted: explain one image at a time.
        target: a class index (its logit), ``ClassLogit(i)``, ``ClassProbability(i)``,
            ``ChannelActivation(layer, channel, reduce=...)``, or any callable: of the model's output
            (``lambda y: y[:, 3] - y[:, 5]``), or with a ``layer`` attribute (see
            :func:`~cnnwidgets.core.targets.resolve_target`).
        window: occluder size, an int or (height, width), at most the image size (each int a
            Python int, a numpy integer or a 0-d integer tensor, as for every count here).
        stride: step between positions in pixels, an int or (vertical, horizontal), ints as for
            ``window``. A stride larger than the window leaves pixels that no window covers; one
            larger than the image leaves one position on that axis and is held as the image's size.
        fill: what covers the window, in the model's input space. A number is a constant in all
            channels; 0.0 (default) is the dataset mean, i.e. gray, for mean/std-normalised
            inputs. ``"mean"``: the image's own per-channel mean. Per-channel values of shape
            (C,) (e.g. a colour in normalised space), a tensor of shape (C, 1, 1), (C, H, W) or
            (1, C, H, W) (the window then shows that image, e.g. a blurred copy), or a callable
            ``fill(x) -> tensor`` of one of those shapes, called once with a copy of x.
        batch_size: occluded images per forward pass (always 1 for models with batch-norm
            layers that use batch statistics in evaluation mode, see
            :attr:`~cnnwidgets.Probe.batch_dependent`); ``None`` picks one: on CPU the largest that
            keeps every activation tensor under 28 MiB, which the allocator then reuses instead
            of mapping fresh pages per batch (9 for resnet18 at 224x224), at most 64; on GPUs up
            to 128. The map does not depend on it. A model that takes one image per forward
            pass (``x.view(1, -1)``, an assert on the batch) fails on the first batch of several
            images: the scan then goes on one image at a time, with a ``RuntimeWarning`` (pass
            ``batch_size=1`` for such a model).
        progress: show a tqdm progress bar (``tqdm.auto``: a widget in notebooks); True or False.
        order: ``"coarse_first"`` (default, see :func:`scan_order`) or ``"raster"``.
        callback: called after every batch with a snapshot :class:`OcclusionResult` (unfilled
            positions NaN); exceptions it raises stop the scan and propagate.
        cancel: a ``threading.Event`` or a callable returning True; checked after the
            unoccluded pass (before the inference copy for the scan is prepared) and before
            every batch. When it fires, the scan stops and the partial result is returned with
            ``cancelled=True``.
        device: the device of the temporary probe, only when a model is passed: None (default)
            or ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``. With a
            Probe, leave it None: the scan runs on the probe's device (switch it with ``probe.to``).
        fold_batchnorm: for targets on the model output, run a private copy in which eval-mode
            batch norm is folded into the preceding convolution and private activations run
            in place (same output up to float rounding, checked once against the probe's copy;
            faster). ``False`` runs an unmodified copy. Either copy is kept with the probe
            (rebuilt when the model changes), so repeated maps do not pay for it again. The
            first map on a probe computes its coarse preview through the probe's own copy and
            prepares this one after it, so that the preview is not kept waiting.
        keep_class_probabilities: for a target on the model output whose output is class scores
            (also a class index on a model ending in an ``nn.Softmax`` or ``nn.Sigmoid`` module,
            whose map reads the logits before it),
            also keep the probability of every class at every position
            (:attr:`OcclusionResult.class_probabilities`, read as the target reads them when it
            is a ``ClassProbability``, else with ``outputs="auto"``), so that
            :meth:`OcclusionResult.for_class` gives the map of any class without another scan.
            They take ``rows * cols * classes * 4`` bytes and are not kept (None, without a
            warning) beyond :data:`KEPT_PROBABILITIES_BYTES` (256 MiB), nor for other targets.
            True or False (default).

    Returns:
        :class:`OcclusionResult` (grid, unoccluded score, per-position top class for output
        targets, window, stride ...). Use :meth:`OcclusionResult.pixel_attribution` for Captum's
        per-pixel convention and :mod:`cnnwidgets.render.occlusion` to draw it.

    Example:
        >>> result = occlusion_map(model, x, ClassProbability(281), window=32, stride=8)
        >>> from cnnwidgets.render.occlusion import occlusion_overlay
        >>> rgb = occlusion_overlay(result.grid, image, window=result.window, stride=result.stride)

    Raises:
        TypeError: x is not a tensor, the target is not a class index or target callable,
            cancel / callback are of the wrong kind, batch_size is neither None nor an int (a
            Python int, a numpy integer or a 0-d integer tensor; not a bool or a float), or
            progress / fold_batchnorm / keep_class_probabilities are not True or False; window or
            stride are not such ints or pairs of them (a :class:`SizeTypeError`, which is a
            ``ValueError`` too).
        ValueError: x is not (1, C, H, W) floats (including an x laid out as (1, H, W, C), told
            apart by the model's first convolution); window or stride are below 1,
            or the window is larger than the image; bad fill (also one with NaN or infinite values),
            order, or a batch_size below 1; a device given with a Probe, or an unknown or
            unavailable one; a target that does not return one score per image, or scores that
            are NaN or infinite (a model with non-finite weights, say).
        KeyError: the target names a layer the model does not have (with suggestions).
        IndexError: a class or channel index out of range.
        RuntimeError: the model fails on the image.

    Warns:
        NoOcclusionEffectWarning: (an :class:`~cnnwidgets.methods.gradients.EmptyMapWarning`) when a
            complete scan finds that no position changed the score, so the map is blank: the fill
            equals the image under every window, or the target does not depend on the image (a
            channel that is never active on it). Not for a cancelled (partial) scan; left out within
            :func:`~cnnwidgets.methods.gradients.empty_maps_quietly`.
        RuntimeWarning: when the model takes one image per forward pass (see ``batch_size``), or
            when folding batch norm changed the model's output (the model then runs unmodified).
    """
    return _scan(
        model_or_probe, x, target, window=window, stride=stride, fill=fill, batch_size=batch_size,
        progress=progress, order=order, callback=callback, cancel=cancel, device=device,
        fold_batchnorm=fold_batchnorm, keep_class_probabilities=keep_class_probabilities,
    )


def occlusion_top_class(
    model_or_probe: nn.Module | Probe,
    x: torch.Tensor,
    *,
    window: int | Sequence[int],
    stride: int | Sequence[int],
    fill: Fill = 0.0,
    batch_size: int | None = None,
    progress: bool = True,
    order: str = "coarse_first",
    callback: Callable[[OcclusionResult], None] | None = None,
    cancel: Cancel | None = None,
    device: str | torch.device | None = None,
    fold_batchnorm: bool = True,
) -> OcclusionResult:
    """The most probable class as a function of the occluder position (Zeiler & Fergus 2013, 4.2 (c)).

    ``labels[i, j] = argmax_k y_k(O_ij(x))`` and ``grid[i, j] = max_k softmax(y(O_ij(x)))_k``,
    the probability of that class. Streaming and cancellation are as in :func:`occlusion_map`.

    Args:
        model_or_probe: a model (a temporary Probe is made and closed) or a Probe; the model's
            output must be class scores (N, classes).
        x: one preprocessed image of shape (1, C, H, W).
        window, stride, fill, batch_size, progress, order, callback, cancel, device, fold_batchnorm:
            as in :func:`occlusion_map`.

    Returns:
        :class:`OcclusionResult` with ``labels`` set and ``target`` a :class:`TopClassProbability`.

    Raises:
        As :func:`occlusion_map`; also ``ValueError`` when the model output is not (N, classes).

    Warns:
        As :func:`occlusion_map` (a :class:`NoOcclusionEffectWarning` when no position changed the
        top class's probability).
    """
    return _scan(
        model_or_probe, x, TopClassProbability(), window=window, stride=stride, fill=fill,
        batch_size=batch_size, progress=progress, order=order, callback=callback, cancel=cancel,
        device=device, fold_batchnorm=fold_batchnorm, method="occlusion_top_class",
    )
