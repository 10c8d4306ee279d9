"""Feature invariance to translation, rotation and scaling (Zeiler & Fergus 2014, section 4, Fig. 5).

"Five sample images are translated, rotated and scaled by varying degrees while looking at
the changes in the feature vectors from the top and bottom layers of the model, relative
to the untransformed feature." For images ``x_n``, a transformation ``T_v`` with parameter
``v`` and a layer ``L`` with output ``phi_L`` (flattened), the curves are::

    d_L(v, n) = || phi_L(x_n) - phi_L(T_v x_n) ||_2                 (the paper's raw distance)
    d_L(v, n) = || phi_L(x_n) - phi_L(T_v x_n) ||_2 / || phi_L(x_n) ||_2    (normalize=True)
    p(v, n)   = softmax(f(T_v x_n))[y_n]                             (true-class probability)

``y_n`` is the given label, or the class the model predicts for the untransformed image.

Transformations (``torchvision.transforms.v2.functional`` on the preprocessed tensors):

* ``"translation"``: vertical shift by ``v`` pixels (positive: down), ``affine(translate=(0, v))``;
* ``"rotation"``: ``v`` degrees counter-clockwise about the centre, ``rotate(angle=v)``;
* ``"scale"``: zoom by the factor ``v`` about the centre, ``affine(scale=v)`` (``v > 1`` enlarges
  and crops, ``v < 1`` shrinks).

The canvas keeps its size. Pixels that come from outside the image are set to ``fill``, a
value in the *preprocessed* space: ``0.0`` (default) is the data set's mean colour for
mean/std-normalised inputs (the paper's ImageNet setting) and black for inputs in [0, 1].
``interpolation`` is bilinear by default (``"nearest"`` is also accepted); an integer shift
or a multiple of 90 degrees with ``"nearest"`` moves pixels exactly. The identity (shift 0,
angle 0, scale 1) returns the images unchanged, so its distance is exactly zero.

Default ranges follow the paper's axes, scaled to the image height ``H``: shifts of up to
``0.27 H`` either way (60 px of 224), angles 0 to 360 degrees in steps of 10, scales 1.0 to 1.8.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch import nn
from torchvision.transforms import InterpolationMode
from tqdm.auto import tqdm

from cnnwidgets.core.layers import LayerInfo
from cnnwidgets.core.probe import Probe, check_channel_axis, layer_names, probe_scope
from cnnwidgets.core.targets import (
    as_count, as_flag, as_index, check_finite_activation, class_probabilities, class_scores,
)
from cnnwidgets.methods._values import holds_bool
from cnnwidgets.methods.cam import nearest_conv_layer
from cnnwidgets.methods.gradients import readable_layer

__all__ = [
    "TRANSFORMS",
    "InvarianceResult",
    "default_feature_layers",
    "default_ranges",
    "describe_transform",
    "image_fingerprints",
    "images_mismatch",
    "invariance_curves",
    "transform_images",
]

TRANSFORMS: tuple[str, ...] = ("translation", "rotation", "scale")
_UNITS = {"translation": "pixels, + = down", "rotation": "degrees", "scale": "ratio"}
_IDENTITY = {"translation": 0.0, "rotation": 0.0, "scale": 1.0}
_INTERPOLATION = {"bilinear": InterpolationMode.BILINEAR, "nearest": InterpolationMode.NEAREST}


def describe_transform(kind: str, value: float) -> str:
    """What the parameter ``value`` of the transformation ``kind`` (one of :data:`TRANSFORMS`) does,
    in words: ``"12 px up"``, ``"30° counter-clockwise"``,
    ``"×1.4 (enlarged)"``; the identity reads ``"no shift"``, ``"no rotation"``, ``"original size"``.

    Raises:
        ValueError: for an unknown kind.
    """
    if kind not in TRANSFORMS:
        raise ValueError(f"unknown transformation {kind!r}; choose one of {TRANSFORMS}")
    value = float(value)
    if value == _IDENTITY[kind]:
        return {"translation": "no shift", "rotation": "no rotation", "scale": "original size"}[kind]
    if kind == "translation":
        return f"{abs(value):g} px {'down' if value > 0 else 'up'}"
    if kind == "rotation":
        return f"{value:g}° counter-clockwise" if value > 0 else f"{-value:g}° clockwise"
    return f"×{value:g} ({'enlarged' if value > 1 else 'shrunk'})"


def check_image_batch(images: object, what: str = "images") -> torch.Tensor:
    """``images`` if it is a non-empty preprocessed batch: a 4-D tensor (N, C, H, W).

    Raises:
        TypeError: for anything but a tensor (a numpy array, a list of images), saying how to
            make one. ValueError: for a tensor of another rank, or an empty batch.
    """
    if not isinstance(images, torch.Tensor):
        shape = getattr(images, "shape", None)
        given = type(images).__name__ + (f" of shape {tuple(shape)}" if shape is not None else "")
        raise TypeError(
            f"{what} must be a torch.Tensor batch (N, C, H, W), preprocessed as the model expects; got {given}: "
            "torch.from_numpy(array) makes one of an array ((N, H, W, C) pictures also need "
            ".permute(0, 3, 1, 2) and the model's preprocessing), torch.stack(list) one of a list of (C, H, W) tensors"
        )
    if images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"{what} must be a preprocessed batch (N, C, H, W) of at least one image, got shape "
                         f"{tuple(images.shape)}")
    return images


def image_fingerprints(images: torch.Tensor) -> np.ndarray:
    """A cheap fingerprint of each image of the batch ``images`` (N, C, H, W): per channel, the mean,
    the standard deviation and the mean of the values weighted by the horizontal, the vertical and
    the diagonal position (coordinates in [-1, 1]), so that images in another order, flipped,
    transposed or unrelated tell apart. One pass over a float32 CPU copy; NaN and infinite values
    give NaN or infinite entries.

    Returns:
        (N, 5 * C) float64, row n for image n.
    """
    batch = images.detach().to("cpu", torch.float32)
    n, c, height, width = batch.shape
    # coordinates in [-1, 1] (0 for a side of one pixel)
    v = torch.linspace(-1.0 if height > 1 else 0.0, 1.0 if height > 1 else 0.0, height, dtype=torch.float64)[:, None]
    u = torch.linspace(-1.0 if width > 1 else 0.0, 1.0 if width > 1 else 0.0, width, dtype=torch.float64)[None, :]
    rows = []
    for image in batch:  # one image at a time in float64, not a float64 copy of the whole batch
        x = image.double()
        rows.append(torch.cat([
            x.mean(dim=(1, 2)), x.std(dim=(1, 2), correction=0),
            (x * u).mean(dim=(1, 2)), (x * v).mean(dim=(1, 2)), (x * (u * v)).mean(dim=(1, 2)),
        ]))
    return torch.stack(rows).numpy() if rows else np.zeros((0, 5 * c))


def _same_fingerprint(given: np.ndarray, recorded: np.ndarray) -> bool:
    """Whether two rows of :func:`image_fingerprints` describe the same image, up to float32 rounding
    (images preprocessed again, on another device)."""
    scale = 1.0 + float(np.nanmax(np.abs(np.where(np.isfinite(recorded), recorded, 0.0)), initial=0.0))
    return bool(np.allclose(given, recorded, rtol=1e-4, atol=1e-5 * scale, equal_nan=True))


def images_mismatch(images: torch.Tensor, shape: Sequence[int] | None, fingerprints: np.ndarray | None,
                    computed: str) -> str:
    """What makes the batch ``images`` differ from the images a result was computed on; ``""``
    where they agree (in what the result records).

    Args:
        images: the (N, C, H, W) batch given.
        shape: the (N, C, H, W) the result records, or None (a result made before it was recorded).
        fingerprints: the :func:`image_fingerprints` the result records, or None (then only the
            shape is compared).
        computed: how the message names the result's computation, e.g. ``"the curves were computed"``.
    """
    given_shape = tuple(int(v) for v in images.shape)
    if shape is not None and given_shape != tuple(int(v) for v in shape):
        return (f"{computed} on images of shape {tuple(int(v) for v in shape)} (N, C, H, W), but images of shape "
                f"{given_shape} were given")
    if fingerprints is None:
        return ""
    recorded = np.asarray(fingerprints, dtype=np.float64)
    given = image_fingerprints(images)
    if given.shape != recorded.shape:
        return f"{computed} on images whose fingerprints have shape {recorded.shape}, the images given {given.shape}"
    differ = [i for i in range(len(given)) if not _same_fingerprint(given[i], recorded[i])]
    if not differ:
        return ""
    moved = {i: next((j for j in range(len(recorded)) if _same_fingerprint(given[i], recorded[j])), None)
             for i in differ}
    if all(j is not None for j in moved.values()):
        pairs = ", ".join(f"image {i} given is the result's image {j}" for i, j in list(moved.items())[:4])
        return f"{computed} on the same images in another order ({pairs}{' ...' if len(moved) > 4 else ''})"
    shown = ", ".join(str(i) for i in differ[:8]) + (" ..." if len(differ) > 8 else "")
    return (f"{computed} on other images: image{'s' if len(differ) > 1 else ''} {shown} of the {len(given)} given "
            f"{'are' if len(differ) > 1 else 'is'} not the result's (the per-channel means, spreads or positions "
            "of the values differ)")


def check_fill(fill: object, channels: int) -> float | list[float]:
    """``fill`` as one finite value, or a list of one per channel, for images with ``channels`` channels.

    Accepted: a number, or a sequence, array or tensor of 1 or ``channels`` numbers.

    Raises:
        TypeError: for something that is not numbers.
        ValueError: for a number of values other than 1 or ``channels``, or NaN / inf values.
    """
    if isinstance(fill, (str, bytes)) or not isinstance(fill, (numbers.Real, Sequence, np.ndarray, torch.Tensor)):
        raise TypeError(f"fill must be a number or one number per channel, got {type(fill).__name__}")
    if holds_bool(fill):  # True is not 1.0: bools are refused here, as by every number argument
        raise TypeError(f"fill must be a number or one number per channel, not booleans; got {fill!r}")
    try:
        values = np.asarray(fill.detach().cpu() if isinstance(fill, torch.Tensor) else fill, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"fill must be a number or one number per channel, got {fill!r}") from exc
    if values.ndim > 1:
        raise ValueError(f"fill must be a number or a flat list of one number per channel, got shape {values.shape}")
    if values.size not in (1, channels):
        raise ValueError(
            f"fill has {values.size} values, the images have {channels} channel{'s' if channels != 1 else ''}; "
            + ("give one value" if channels == 1 else f"give one value or {channels}")
        )
    if not all(math.isfinite(v) for v in values.ravel()):
        raise ValueError(f"fill must hold finite numbers, got {values.ravel().tolist()}")
    return float(values.ravel()[0]) if values.ndim == 0 else [float(v) for v in values]


def transform_images(
    images: torch.Tensor,
    kind: str,
    value: float,
    *,
    interpolation: str = "bilinear",
    fill: float | Sequence[float] = 0.0,
) -> torch.Tensor:
    """Apply one transformation to a batch (see the module notes for conventions).

    Args:
        images: preprocessed (N, C, H, W) batch.
        kind: ``"translation"`` (pixels, positive down), ``"rotation"`` (degrees, counter-clockwise) or
            ``"scale"`` (ratio > 0).
        value: the parameter.
        interpolation: ``"bilinear"`` or ``"nearest"``.
        fill: value (or one per channel) for pixels from outside the image, in preprocessed space.

    Returns:
        (N, C, H, W); the input itself for the identity.

    Raises:
        ValueError: unknown kind or interpolation, non-positive scale, bad batch, a ``fill`` with
            neither 1 nor C values or with values that are not finite.
        TypeError: a ``fill`` that is not numbers.
    """
    if kind not in TRANSFORMS:
        raise ValueError(f"unknown transformation {kind!r}; choose one of {TRANSFORMS}")
    if interpolation not in _INTERPOLATION:
        raise ValueError(f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError(f"expected a batch (N, C, H, W), got {getattr(images, 'shape', type(images).__name__)}")
    value = float(value)
    if kind == "scale" and value <= 0:
        raise ValueError(f"a scale factor must be > 0, got {value}")
    fill_arg = check_fill(fill, images.shape[1])
    if value == _IDENTITY[kind]:
        return images
    mode = _INTERPOLATION[interpolation]
    if kind == "rotation":
        return TF.rotate(images, value, interpolation=mode, fill=fill_arg)
    translate = [0.0, value] if kind == "translation" else [0.0, 0.0]
    scale = value if kind == "scale" else 1.0
    return TF.affine(images, angle=0.0, translate=translate, scale=scale, shear=[0.0, 0.0], interpolation=mode, fill=fill_arg)


def default_ranges(height: int) -> dict[str, np.ndarray]:
    """The paper's ranges scaled to an image of ``height`` pixels (see the module notes)."""
    reach = max(1, int(round(0.27 * height)))
    shifts = np.unique(np.round(np.linspace(-reach, reach, 13)))
    return {
        "translation": shifts.astype(np.float64),
        "rotation": np.arange(0.0, 361.0, 10.0),
        "scale": np.round(np.arange(1.0, 1.8001, 0.1), 2),
    }


_ACTIVATIONS = ("ReLU", "LeakyReLU", "ELU", "GELU", "SiLU", "Tanh", "Sigmoid", "ReLU6", "Hardswish", "PReLU")
_RESHAPES = ("Flatten", "Unflatten", "Identity", "Dropout", "Dropout1d", "Dropout2d", "AlphaDropout")


def _last_feature_map(probe: Probe) -> str | None:
    """The last feature map larger than 1x1 the model computes (the Grad-CAM default layer), or
    None when there is none."""
    try:
        return nearest_conv_layer(probe)
    except ValueError:
        return None


def default_feature_layers(probe: Probe) -> dict[str, str]:
    """Layers that play the paper's "layer 1", "layer 5" and "layer 7" in another model (``probe``'s).

    Returns:
        ``{"first": ..., "last_conv": ..., "penultimate": ...}``: the first convolution's
        activation (or the convolution itself; normalisation layers in between are skipped),
        the last convolution's activation (or, where that convolution makes only some of the
        last block's channels, as in GoogLeNet's, Inception's and DenseNet's blocks, the output
        of that block: the last feature map, of the same size, with more channels; the same
        where no activation follows the last convolution, as ConvNeXt's depthwise convolution
        inside its blocks), and the feature vector the output layer
        classifies - the last module before the output layer that is not a reshape
        (``Flatten``), ``Dropout`` or ``Identity``; the paper's fc7 in a network with hidden
        linear layers, the global pooling in one without. Where that module is the last one to
        run inside a block with a ``forward`` of its own (not an ``nn.Sequential``), as the last
        branch of a block that concatenates its branches, "penultimate" is the block, whose output
        is what the layers after it read. Where that module is the last one of
        the ``nn.Sequential`` chosen as the last feature map (DenseNet's ``features.norm5``),
        both name the same tensor and "penultimate" is that feature map too.

        Only module outputs can be read. In a model that pools in its ``forward`` with a function
        rather than a module (``torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)`` before the last
        ``nn.Linear``, as DenseNet does), no module outputs the vector the output layer reads, and
        "penultimate" is the last module to run before that function: the last feature map, not
        pooled (N, C, H, W), the same layer as "last_conv" (listed once by the functions that
        take both), and a function applied after it (an ``F.relu``) is not included. Distances
        there compare whole maps, which moves more under translation than the pooled vector
        would. For the paper's layer 7 in such a model, make the pooling a module
        (``nn.AdaptiveAvgPool2d(1)`` followed by ``nn.Flatten()``) or name the layers. A hidden
        linear layer after the functional pooling is found as usual ("penultimate" is its
        activation).

    Raises:
        ValueError: for a model without a convolution.
    """
    # in the order their captured outputs are made: a module called several times (a ResNet
    # block's one ReLU, after its first convolution and again after the residual sum) sits at its
    # last call, so the ReLU after a block's last convolution is the block's output
    leaves = sorted(
        (i for i in probe.layers.values() if i.is_leaf and i.calls > 0 and i.output_shape is not None),
        key=lambda i: (i.last_call if i.last_call >= 0 else i.order),
    )
    convs = [k for k, i in enumerate(leaves) if i.type == "Conv2d"]
    if not convs:
        raise ValueError("the model has no Conv2d layer; name the layers explicitly")

    def activation_after(index: int) -> str:
        for follower in leaves[index + 1:index + 4]:
            if follower.type in _ACTIVATIONS and follower.output_shape == leaves[index].output_shape:
                return follower.name
            if follower.type not in ("BatchNorm2d", "GroupNorm", "LayerNorm"):
                break
        return leaves[index].name

    first, last_conv = activation_after(convs[0]), activation_after(convs[-1])
    # in a network of parallel branches (GoogLeNet, Inception) or of concatenated layers
    # (DenseNet), the last convolution makes a slice of the last block's channels: the block's
    # output, the last feature map before the head, stands for the stage instead
    last_map = _last_feature_map(probe)
    shape, last_shape = probe.layers[last_conv].map_shape, None if last_map is None else probe.layers[last_map].map_shape
    if last_shape is not None and shape is not None and last_shape[1:] == shape[1:] and (
        last_shape[0] > shape[0]
        # no activation after the last convolution: it sits inside a block (ConvNeXt's depthwise
        # convolution, before the block's norm, MLP and residual sum); the block's output stands for it
        or (last_shape[0] == shape[0] and probe.layers[last_conv].type == "Conv2d")
    ):
        last_conv = last_map
    penultimate = next((i.name for i in reversed(leaves[:-1]) if i.type not in _RESHAPES), last_conv)
    # the last leaf of a block with a forward of its own (branches concatenated, a residual sum) is not
    # what the block returns: the block is
    penultimate = _enclosing_block(probe, penultimate, leaves)
    if _ends(probe, last_conv, penultimate, leaves):
        penultimate = last_conv  # the same tensor (DenseNet's features end with norm5): one layer, not two
    return {"first": first, "last_conv": last_conv, "penultimate": penultimate}


def _enclosing_block(probe: Probe, name: str, leaves: Sequence[LayerInfo]) -> str:
    """The outermost module, other than an ``nn.Sequential`` (whose output is its last module's), of
    which layer ``name`` is the last leaf to run and whose output is one batch tensor; ``name``
    itself when there is none. Such a block computes what it returns after its last leaf (a
    concatenation of branches, a residual sum), so the layers after it read its output, not the leaf's."""
    parts = name.split(".")
    for depth in range(1, len(parts)):
        container = ".".join(parts[:depth])
        info = probe.layers.get(container)
        if (info is None or info.calls == 0 or info.output_shape is None or not info.batch_first
                or isinstance(probe.module(container), nn.Sequential)):
            continue
        inside = [i.name for i in leaves if i.name.startswith(container + ".")]
        if inside and inside[-1] == name:
            return container
    return name


def _ends(probe: Probe, container: str, name: str, leaves: Sequence[LayerInfo]) -> bool:
    """Whether layer ``name`` is the last module to run inside ``container``, an ``nn.Sequential``,
    so that both output the same tensor."""
    if not name.startswith(container + ".") or not isinstance(probe.module(container), nn.Sequential):
        return False
    inside = [i.name for i in leaves if i.name.startswith(container + ".")]
    return bool(inside) and inside[-1] == name


def feature_layer_names(
    probe: Probe, images: torch.Tensor, layers: str | Sequence[str] | None, defaults: Sequence[str]
) -> list[str]:
    """Describe the probe at the images' size and resolve the layers to compare.

    ``layers=None`` takes the :func:`default_feature_layers` named by ``defaults``; given names
    are checked (``KeyError`` with suggestions for unknown ones).

    Raises:
        ValueError: for an empty list of layers, or a layer whose feature map is empty at the
            images' size (see :func:`~cnnwidgets.core.layers.check_map_not_empty`): no feature to compare.
        TypeError: for layer names that are not strings.
    """
    if tuple(probe.input_size) != tuple(images.shape[1:]):
        probe.describe(tuple(images.shape[1:]))
    if layers is None:
        found = default_feature_layers(probe)
        names = list(dict.fromkeys(found[key] for key in defaults))
    else:
        names = layer_names(layers)
        if not names:
            raise ValueError("layers is empty")
    for name in names:
        readable_layer(probe, name)
    return names


@dataclass
class InvarianceResult:
    """Curves of feature distance and true-class probability under transformations.

    Attributes:
        values: ``{transform: (V,) parameters}``.
        units: ``{transform: unit of the parameter}``.
        layers: the layers measured.
        distances: ``{transform: {layer: (V, N) float64}}``, ``d_L(v, n)``.
        probabilities: ``{transform: (V, N) float64}``, ``p(v, n)``.
        predictions: ``{transform: (V, N) int64}``, the predicted class.
        labels: (N,) int64, the true (or predicted-at-identity) classes.
        labels_given: whether ``labels`` were given (else they are the model's predictions).
        normalized: whether distances are divided by ``||phi_L(x_n)||``.
        interpolation, fill: how the images were transformed.
        image_shape: (N, C, H, W) of the images the curves were computed on (None in a result
            made by hand, or before it was recorded).
        image_fingerprints: (N, 5 * C) float64, :func:`image_fingerprints` of those images, by
            which views refuse other images (None where not recorded: views then compare only the
            shape, or the number of images).
    """

    values: dict[str, np.ndarray]
    units: dict[str, str]
    layers: list[str]
    distances: dict[str, dict[str, np.ndarray]]
    probabilities: dict[str, np.ndarray]
    predictions: dict[str, np.ndarray]
    labels: np.ndarray
    labels_given: bool
    normalized: bool
    interpolation: str
    fill: float | Sequence[float]
    image_shape: tuple[int, ...] | None = None
    image_fingerprints: np.ndarray | None = field(default=None, repr=False)

    @property
    def transforms(self) -> list[str]:
        """The transformations measured, in the order they ran (the keys of ``values``)."""
        return list(self.values)

    def summary(self) -> str:
        """A short text: per transformation, the largest distance of each layer and the range of
        the true-class probability, both averaged over the images first."""
        n = len(self.labels)
        distance = "||phi(x) - phi(T x)|| / ||phi(x)||" if self.normalized else "||phi(x) - phi(T x)||"
        lines = [f"Means over the {n} image{'s' if n != 1 else ''}. distance: the largest {distance} over the range;",
                 "P(true class): the lowest and the highest probability of the true class."]
        width = max(len("P(true class)"), *(len(layer) for layer in self.layers))
        for kind, values in self.values.items():
            lines.append(f"{kind}, from {describe_transform(kind, values[0])} to "
                         f"{describe_transform(kind, values[-1])} ({len(values)} steps):")
            for layer in self.layers:
                d = self.distances[kind][layer].mean(axis=1)
                lines.append(f"  {layer.ljust(width)}  distance up to {d.max():.3g}")
            p = self.probabilities[kind].mean(axis=1)
            lines.append(f"  {'P(true class)'.ljust(width)}  {p.min():.2f} to {p.max():.2f}")
        return "\n".join(lines)


def _feature_batches(
    probe: Probe, x: torch.Tensor, layers: list[str], batch_size: int
) -> Iterator[tuple[int, dict[str, torch.Tensor], torch.Tensor]]:
    """``(start, features, scores)`` for ``x`` run ``batch_size`` images at a time: the flattened
    float32 features of ``layers`` and the float64 class scores of images ``start, start + 1, ...``
    on the CPU; refused when not finite (NaN distances and probabilities would otherwise be
    returned without a word). One piece at a time, so memory holds one batch's features, not N's."""
    for start in range(0, x.shape[0], batch_size):
        piece = x[start:start + batch_size]
        acts, logits = probe.capture_with_logits(piece, layers, cache=False)  # one pass for both
        # to the CPU (MPS has no float64); distances are taken in float64 there
        feats = {name: act.reshape(act.shape[0], -1).float().cpu() for name, act in acts.items()}
        scores = class_scores(logits, "invariance curves").float().cpu().double()
        for name, feat in feats.items():
            check_finite_activation(feat, name, "invariance_curves", model=probe.model)
        check_finite_activation(scores, None, "invariance_curves", model=probe.model)
        yield start, feats, scores


def _label_array(labels: object, n: int) -> np.ndarray:
    """``labels`` as (n,) int64 class indices: a sequence, array or 1-D tensor of ints, each
    checked by :func:`~cnnwidgets.core.targets.as_index` (bools and floats, whole ones too, are
    refused, as class targets refuse them)."""
    if isinstance(labels, (str, bytes)) or not isinstance(labels, (torch.Tensor, Iterable)):
        raise TypeError(f"labels must be one class index per image (a sequence or 1-D tensor of {n} ints), "
                        f"got {type(labels).__name__}")
    if isinstance(labels, (torch.Tensor, np.ndarray)) and labels.ndim != 1:
        raise ValueError(f"expected {n} labels (one class index per image), got shape {tuple(labels.shape)}")
    items = list(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
    if len(items) != n:
        raise ValueError(f"expected {n} labels (one class index per image), got {len(items)}")
    return np.array([as_index(v, f"labels[{i}] (the class of image {i})") for i, v in enumerate(items)], dtype=np.int64)


def _transform_values(kind: object, values: object) -> np.ndarray:
    """The values of one transformation in ``transforms={kind: values}``, as floats."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"the values of {kind!r} must be a sequence of numbers (e.g. [0, 4, 8]), got "
                        f"{type(values).__name__} {values!r}")
    if not isinstance(values, (torch.Tensor, np.ndarray)):
        values = list(values)  # read once (a generator, say)
    if holds_bool(values):  # True is not 1.0
        raise TypeError(f"the values of {kind!r} must be numbers, not booleans; got {values!r}")
    try:
        return np.asarray(list(values), dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the values of {kind!r} must be numbers, got {list(values)!r}") from exc


def invariance_curves(
    model_or_probe: nn.Module | Probe,
    images: torch.Tensor,
    labels: Sequence[int] | torch.Tensor | None = None,
    layers: str | Sequence[str] | None = None,
    *,
    transforms: Mapping[str, Sequence[float]] | Sequence[str] | None = None,
    normalize: bool = False,
    interpolation: str = "bilinear",
    fill: float | Sequence[float] = 0.0,
    batch_size: int = 64,
    progress: bool = True,
) -> InvarianceResult:
    """Distance of transformed images' features from the original's, and the true-class probability.

    Formulas and transformations: see the module notes (Zeiler & Fergus 2014, section 4, Fig. 5).

    Args:
        model_or_probe: a model (used through a temporary probe) or a probe.
        images: preprocessed (N, C, H, W); the paper uses 5 images.
        labels: true class per image, as ints (a sequence, array or 1-D tensor of N class
            indices; bools and floats are refused, as by the class targets); ``None``: the
            prediction on the untransformed image.
        layers: layer names; ``None``: the paper's "layer 1" and "layer 7" counterparts (see
            :func:`default_feature_layers`: first conv activation, the classifier's input; in a
            model whose global pooling is a function in ``forward``, the last feature map instead).
        transforms: ``{kind: values}``, or kinds with default ranges; ``None``: all three with
            the defaults of :func:`default_ranges`. A translation of at least the images' height
            ``H`` either way moves every pixel out (the image becomes all ``fill``): such values are
            computed, with a ``UserWarning`` naming them.
        normalize: divide each distance by ``||phi_L(x_n)||`` (0 where that norm is 0).
        interpolation, fill: see :func:`transform_images`.
        batch_size: images per forward pass (transform values are grouped to fill it).
        progress: show a progress bar.

    Memory: the untransformed images' features are kept for the whole run (N x D float32 per
    layer, D the layer's values per image), the transformed images' features one batch at a time.

    Returns:
        An :class:`InvarianceResult`.

    Raises:
        KeyError: unknown layer. ValueError: bad images (also images laid out (N, H, W, C)),
        a number of labels other than N, bad transforms, ranges or ``fill`` (see
        :func:`check_fill`), a ``batch_size`` below 1, features or class scores that are not
        finite (NaN or inf: non-finite weights). IndexError: a label outside the model's classes.
        TypeError: ``images`` that are not a tensor (see :func:`check_image_batch`), layer names
        that are not strings, a ``fill`` that is not numbers, a
        ``batch_size`` that is not an int, a ``normalize`` or ``progress`` that is not True or
        False, ``labels`` that are not a sequence or hold something other than ints (a bool, a
        float, a string), transform values that are not a sequence of numbers.

    Warns:
        UserWarning: for translations of at least ``H`` pixels either way (the message names them
            and ``H``): those images are all ``fill``.
    """
    check_image_batch(images)
    batch_size = as_count(batch_size, "batch_size")
    check_fill(fill, images.shape[1])
    n = images.shape[0]
    ranges = default_ranges(images.shape[2])
    if isinstance(transforms, str):
        transforms = [transforms]  # one kind, not its letters
    if transforms is None:
        chosen = dict(ranges)
    elif isinstance(transforms, Mapping):
        chosen = {kind: _transform_values(kind, values) for kind, values in transforms.items()}
    else:
        chosen = {kind: ranges[kind] if kind in ranges else None for kind in transforms}
    if not chosen:
        raise ValueError(f"transforms is empty; choose some of {TRANSFORMS} (or None for all)")
    normalize = as_flag(normalize, "normalize")
    progress = as_flag(progress, "progress")
    label_array = None if labels is None else _label_array(labels, n)
    for kind, values in chosen.items():
        if kind not in TRANSFORMS:
            raise ValueError(f"unknown transformation {kind!r}; choose from {TRANSFORMS}")
        if values is None or len(values) == 0:
            raise ValueError(f"no values for transformation {kind!r}")
        if not np.isfinite(values).all():
            raise ValueError(f"the values of {kind!r} must be finite numbers, got {list(values)}")
    height = images.shape[2]
    outside = [v for v in chosen.get("translation", ()) if abs(v) >= height]
    if outside:
        shown = ", ".join(f"{v:g}" for v in outside[:8]) + (" ..." if len(outside) > 8 else "")
        warnings.warn(
            f"invariance_curves: the translations {shown} are at least the images' height ({height} px): they "
            "shift every pixel out of the image, so those transformed images are all fill, not the image moved",
            UserWarning,
            stacklevel=2,
        )
    fingerprints = image_fingerprints(images)  # by which views know these images again
    with probe_scope(model_or_probe) as probe:
        images = images.detach()
        check_channel_axis(probe.model, images)  # before the layers are described at the images' size
        names = feature_layer_names(probe, images, layers, ("first", "penultimate"))
        # the originals' features stay float32 (what the model computed), N x D each
        parts: dict[str, list[torch.Tensor]] = {name: [] for name in names}
        score_parts = []
        for _, feats, scores in _feature_batches(probe, images, names, batch_size):
            for name in names:
                parts[name].append(feats[name])
            score_parts.append(scores)
        reference = {name: torch.cat(chunks) for name, chunks in parts.items()}
        del parts
        logits = torch.cat(score_parts)
        if logits.shape[1] == 1:
            raise ValueError(
                "invariance curves follow the probability of each image's class among the model's classes; a model "
                "with a single output unit scores one class of two (p = sigmoid(logit)) and the other has no index"
            )
        if label_array is None:
            label_array = logits.argmax(dim=1).numpy()
        else:
            if label_array.min() < 0 or label_array.max() >= logits.shape[1]:
                raise IndexError(f"labels must lie in 0..{logits.shape[1] - 1}, got {label_array.tolist()}")
        norms = {name: feat.double().norm(dim=1) for name, feat in reference.items()}
        index = torch.as_tensor(label_array)
        distances: dict[str, dict[str, np.ndarray]] = {}
        probabilities: dict[str, np.ndarray] = {}
        predictions: dict[str, np.ndarray] = {}
        per_chunk = max(1, batch_size // n)
        total = sum(len(v) for v in chosen.values())
        with tqdm(total=total, disable=not progress, desc="invariance", unit="step") as bar:
            for kind, values in chosen.items():
                dist = {name: np.zeros((len(values), n)) for name in names}
                prob = np.zeros((len(values), n))
                pred = np.zeros((len(values), n), dtype=np.int64)
                for start in range(0, len(values), per_chunk):
                    chunk = values[start:start + per_chunk]
                    batch = torch.cat(
                        [transform_images(images, kind, v, interpolation=interpolation, fill=fill) for v in chunk]
                    )
                    for first, feats, out in _feature_batches(probe, batch, names, batch_size):
                        # batch row r holds image r % n transformed by the chunk's value r // n
                        flat = np.arange(first, first + out.shape[0])
                        rows, cols = start + flat // n, flat % n
                        taken = torch.from_numpy(cols)
                        for name in names:
                            d = (feats[name].double() - reference[name][taken].double()).norm(dim=1)
                            if normalize:
                                norm = norms[name][taken]
                                d = torch.where(norm > 0, d / norm.clamp(min=1e-300), torch.zeros_like(d))
                            dist[name][rows, cols] = d.numpy()
                        soft = class_probabilities(out, final_activation=probe.output_activation)
                        prob[rows, cols] = soft.gather(1, index[taken][:, None])[:, 0].numpy()
                        pred[rows, cols] = soft.argmax(dim=1).numpy()
                    bar.update(len(chunk))
                distances[kind], probabilities[kind], predictions[kind] = dist, prob, pred
    return InvarianceResult(
        values={kind: np.asarray(v, dtype=np.float64) for kind, v in chosen.items()},
        units={kind: _UNITS[kind] for kind in chosen},
        layers=names,
        distances=distances,
        probabilities=probabilities,
        predictions=predictions,
        labels=label_array,
        labels_given=labels is not None,
        normalized=normalize,
        interpolation=interpolation,
        fill=fill,
        image_shape=tuple(int(v) for v in images.shape),
        image_fingerprints=fingerprints,
    )
