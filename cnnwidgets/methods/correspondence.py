"""Correspondence analysis (Zeiler & Fergus 2014, section 4.3, Table 1).

Does the network relate the same object part across different images? Take images
``x_1 .. x_N`` of one class, occlude the same part (say, the left eye) in each, and look at
how the feature vector at layer ``l`` changes::

    eps_i^l = x_i^l - x~_i^l          (features of the original minus those of the occluded image)

If the part is encoded consistently, the changes point the same way in every image. The
paper's consistency measure is::

    Delta_l = sum_{i != j} H(sign(eps_i^l), sign(eps_j^l))

with ``H`` the Hamming distance. Like the paper's Table 1, :func:`correspondence` reports it
normalised and averaged: the fraction of feature entries whose change has a different sign,
``h_ij = H(.,.) / D`` (``D`` = length of the flattened feature vector), averaged over the
``N (N - 1) / 2`` pairs, with its standard deviation over pairs (``total`` keeps the
un-normalised sum over ordered pairs, the formula above). Lower means more consistent.

The control (the paper's "random" row) occludes, in each image independently, a box of the
same size at a uniformly random position fully inside the image; ``random_trials`` draws
(seeded, private generator) are pooled. A part whose occlusion changes the features more
consistently than random occlusions suggests the model has an implicit notion of that part.

Boxes are ``(x0, y0, x1, y1)`` in whole pixels of the preprocessed image (ints, or floats
with integral values; fractional coordinates are refused rather than rounded), half-open: columns
``x0 .. x1-1`` and rows ``y0 .. y1-1`` are covered (the torchvision ``xyxy`` convention).
The occluder sets them to ``fill`` in preprocessed space (``0.0``: the mean colour of
mean/std-normalised inputs; the paper used a grey square).

Entries of ``eps`` with ``|eps| <= atol * s + rtol * |x|`` count as unchanged (sign 0), where
``s`` is the largest ``|x|`` of the layer on that image: the tolerance scales with the
features, so a model whose features are small (an untrained MobileNet's are around 1e-8) gets
the table its features' signs give, not one of zeros. With the default tolerances this only
absorbs floating-point rounding (a convolution may round differently when a distant pixel
changes), which would otherwise add random signs where nothing changed.
"""

from __future__ import annotations

import html
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from cnnwidgets.core.probe import Probe, probe_scope
from cnnwidgets.core.targets import as_count, as_flag, as_seed, as_tolerance
from cnnwidgets.methods.gradients import _EMPTY_QUIET
from cnnwidgets.methods.invariance import check_fill, check_image_batch, feature_layer_names, image_fingerprints
from cnnwidgets.methods.occlusion import NoOcclusionEffectWarning

__all__ = ["RANDOM", "CorrespondenceResult", "correspondence", "occlude", "random_boxes"]

#: Name of the control row.
RANDOM = "random"

BoxXYXY = tuple[int, int, int, int]


def _pixel(value: object) -> int | None:
    """``value`` as a whole pixel coordinate (an int, or a float or 0-d tensor with an integral value), else None."""
    if isinstance(value, torch.Tensor) and value.dim() == 0:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    number = float(value)
    return int(number) if math.isfinite(number) and number.is_integer() else None


def _check_box(box: Sequence[int], height: int, width: int, where: str) -> BoxXYXY:
    if isinstance(box, str) or not isinstance(box, (Sequence, np.ndarray, torch.Tensor)) or len(box) != 4:
        raise ValueError(f"{where}: a box is (x0, y0, x1, y1), got {box!r}")
    coords = [_pixel(v) for v in box]
    if any(c is None for c in coords):
        raise ValueError(f"{where}: box coordinates are whole pixels (ints), got {box!r}")
    x0, y0, x1, y1 = coords
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(
            f"{where}: box {(x0, y0, x1, y1)} must satisfy 0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height}"
        )
    return x0, y0, x1, y1


def occlude(images: torch.Tensor, boxes: Sequence[Sequence[int]], fill: float | Sequence[float] = 0.0) -> torch.Tensor:
    """A copy of ``images`` (N, C, H, W) with ``boxes[i]`` of image ``i`` set to ``fill``.

    Args:
        images: the batch.
        boxes: one ``(x0, y0, x1, y1)`` box per image, in whole pixels (ints, or floats with
            integral values).
        fill: one value, or one per channel.

    Raises:
        ValueError: wrong number of boxes, a box outside the image or with fractional
            coordinates, a ``fill`` with neither 1 nor C values (see
            :func:`~cnnwidgets.methods.invariance.check_fill`). TypeError: ``images`` that are not
            a tensor (see :func:`~cnnwidgets.methods.invariance.check_image_batch`).
    """
    check_image_batch(images)
    if len(boxes) != images.shape[0]:
        raise ValueError(f"expected one box per image ({images.shape[0]}), got {len(boxes)}")
    checked = [_check_box(box, images.shape[2], images.shape[3], f"image {i}") for i, box in enumerate(boxes)]
    out = images.detach().clone()
    value = torch.as_tensor(check_fill(fill, images.shape[1]), dtype=out.dtype, device=out.device).reshape(-1, 1, 1)
    for i, (x0, y0, x1, y1) in enumerate(checked):
        out[i, :, y0:y1, x0:x1] = value
    return out


def random_boxes(
    sizes: Sequence[tuple[int, int]], image_size: tuple[int, int], rng: np.random.Generator
) -> list[BoxXYXY]:
    """One box per (height, width) in ``sizes`` at a uniformly random position inside
    ``image_size`` = (H, W), drawn with the numpy generator ``rng``."""
    height, width = image_size
    boxes = []
    for h, w in sizes:
        y0 = int(rng.integers(0, height - h + 1))
        x0 = int(rng.integers(0, width - w + 1))
        boxes.append((x0, y0, x0 + w, y0 + h))
    return boxes


@dataclass
class CorrespondenceResult:
    """Table 1 of the paper for one set of images.

    Attributes:
        layers: the layers (columns).
        parts: the occluded parts (rows), the control ``"random"`` last when computed.
        mean: ``{part: {layer: mean h_ij over pairs}}`` (the table's numbers).
        std: ``{part: {layer: standard deviation of h_ij over pairs}}``.
        total: ``{part: {layer: Delta_l = sum_{i != j} H_ij}}`` (un-normalised, ordered pairs;
            for the control, averaged over trials).
        pairwise: ``{part: {layer: (N, N) h_ij}}`` (control: mean over trials).
        num_images, random_trials: sizes used.
        feature_sizes: ``{layer: D}``.
        boxes: ``{part: [one (x0, y0, x1, y1) box per image]}``, the boxes that were scored (the
            control's random boxes are not kept); empty for a result made by hand.
        fill: the occluder value the boxes were filled with (one, or one per channel, in
            preprocessed space); None for a result made by hand.
        image_shape: (N, C, H, W) of the images the table was computed on (None in a result made
            by hand, or before it was recorded).
        image_fingerprints: (N, 5 * C) float64,
            :func:`~cnnwidgets.methods.invariance.image_fingerprints` of those images, by which views
            refuse other images (None where not recorded: views then compare only the shape, or the
            number of images).
    """

    layers: list[str]
    parts: list[str]
    mean: dict[str, dict[str, float]]
    std: dict[str, dict[str, float]]
    total: dict[str, dict[str, float]]
    pairwise: dict[str, dict[str, np.ndarray]]
    num_images: int
    random_trials: int
    feature_sizes: dict[str, int]
    boxes: dict[str, list[BoxXYXY]] = field(default_factory=dict)
    fill: float | list[float] | None = None
    image_shape: tuple[int, ...] | None = None
    image_fingerprints: np.ndarray | None = field(default=None, repr=False)

    def cell(self, part: str, layer: str, precision: int = 3) -> str:
        """One cell of the table as text, ``"mean ± std"`` with ``precision`` decimals.

        Args:
            part: a row: a part name, or :data:`RANDOM` for the control (when ``random_trials > 0``).
            layer: a column, one of ``layers``.
            precision: decimals shown.

        Raises:
            KeyError: for a part or layer the result does not hold.
        """
        return f"{self.mean[part][layer]:.{precision}f} ± {self.std[part][layer]:.{precision}f}"

    def table(self, precision: int = 3) -> str:
        """The table as aligned text: rows parts, columns layers, cells ``mean ± std`` with
        ``precision`` decimals."""
        header = ["occluded part", *self.layers]
        rows = [[part, *(self.cell(part, layer, precision) for layer in self.layers)] for part in self.parts]
        widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]
        lines = ["  ".join(text.ljust(w) for text, w in zip(r, widths)).rstrip() for r in [header, *rows]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        note = (  # two lines: one ran past a notebook output's width
            "mean sign-change Hamming distance, as a fraction of the features "
            f"({', '.join(f'{l}: {d}' for l, d in self.feature_sizes.items())}),\n"
            f"over {self.num_images * (self.num_images - 1) // 2} image pairs; lower = more consistent"
        )
        return "\n".join([*lines, note])

    def to_html(self, precision: int = 3) -> str:
        """The table as an HTML ``<table>`` with its explanation in a paragraph below; ``precision``
        decimals per number."""
        cell = 'style="padding:1px 10px;text-align:left;white-space:nowrap"'
        head = "".join(f"<th {cell}>{html.escape(l)}</th>" for l in self.layers)
        body = "".join(
            f"<tr><td {cell}>{html.escape(part)}</td>"
            + "".join(f"<td {cell}>{html.escape(self.cell(part, l, precision))}</td>" for l in self.layers)
            + "</tr>"
            for part in self.parts
        )
        pairs = self.num_images * (self.num_images - 1) // 2
        note = (
            "Mean feature sign change: the normalised Hamming distance, over "
            f"{pairs} image pair{'s' if pairs != 1 else ''}, of sign(φ(x) - φ(x~)), where φ(x) is the layer's features of "
            "an image and φ(x~) those of the image with the part covered; ± its standard deviation; lower = more "
            "consistent."
        )
        return (
            f'<table style="border-collapse:collapse"><thead><tr><th {cell}>occluded part</th>{head}</tr></thead>'
            f'<tbody>{body}</tbody></table><p style="margin:4px 0 0 0">{html.escape(note)}</p>'
        )

    def _repr_html_(self) -> str:
        return self.to_html()

    def __str__(self) -> str:
        return self.table()


def _signs(original: torch.Tensor, occluded: torch.Tensor, rtol: float, atol: float) -> torch.Tensor:
    """The signs of ``original - occluded`` (N, D), 0 within ``atol`` times each image's largest
    ``|original|`` plus ``rtol * |original|``."""
    eps = original - occluded
    scale = original.abs().amax(dim=1, keepdim=True)
    small = eps.abs() <= atol * scale + rtol * original.abs()
    return torch.where(small, torch.zeros_like(eps), torch.sign(eps)).to(torch.int8)


def _pairwise(signs: torch.Tensor) -> torch.Tensor:
    """(N, N) Hamming distances (counts) between the rows of ``signs`` (N, D)."""
    n = signs.shape[0]
    out = torch.zeros((n, n), dtype=torch.float64)
    for i in range(n):
        out[i] = (signs[i:i + 1] != signs).sum(dim=1).to(torch.float64)
    return out


def _layers_text(layers: Sequence[str]) -> str:
    return f"layer {layers[0]!r}" if len(layers) == 1 else f"layers {', '.join(map(repr, layers))}"


def _unchanged_warning(unchanged: dict[str, list[str]], fill_is_image: dict[str, bool]) -> NoOcclusionEffectWarning:
    """The warning for the rows (parts, :data:`RANDOM`) whose occluder changed no feature of any image
    at the layers listed for them; ``fill_is_image``: whether a row's fill equals the images in its boxes."""
    rows = [("the random control" if row == RANDOM else f"part {row!r}") + f" (at {_layers_text(layers)})"
            for row, layers in unchanged.items()]
    listed = rows[0] if len(rows) == 1 else ", ".join(rows[:-1]) + " and " + rows[-1]
    causes = []
    if any(fill_is_image[row] for row in unchanged):
        causes.append("the fill equals the images inside the boxes, so the occluded images are the images "
                      "themselves (give another fill)")
    if not all(fill_is_image[row] for row in unchanged):
        causes.append("the layer does not depend on the boxed pixels (they lie outside its units' receptive "
                      "fields, or its units are switched off there, as a channel that is never active)")
    return NoOcclusionEffectWarning(
        f"correspondence: occluding changed no feature of any image for {listed}, so "
        f"{'its row reads' if len(rows) == 1 else 'their rows read'} 0 there (0.000 ± 0.000), which is not perfect "
        f"correspondence: there is no change to compare. Likely cause: {'; or '.join(causes)}",
        fill_equals_image=all(fill_is_image[row] for row in unchanged),
    )


def correspondence(
    model_or_probe: nn.Module | Probe,
    images: torch.Tensor,
    parts: Mapping[str, Sequence[Sequence[int]]],
    layers: str | Sequence[str] | None = None,
    *,
    random_trials: int = 10,
    fill: float | Sequence[float] = 0.0,
    seed: int = 0,
    rtol: float = 1e-5,
    atol: float = 1e-7,
    batch_size: int = 64,
    progress: bool = True,
) -> CorrespondenceResult:
    """The paper's correspondence measure for occluded parts, with a random-occlusion control.

    See the module notes for the formula (Zeiler & Fergus 2014, section 4.3, Table 1).

    Args:
        model_or_probe: a model (used through a temporary probe) or a probe.
        images: preprocessed (N, C, H, W), N >= 2 images of one class (the paper: 5 dogs).
        parts: ``{part name: one (x0, y0, x1, y1) box per image}``, in whole pixels.
        layers: layer names; ``None``: the counterparts of the paper's layers 5 and 7 (last
            convolution's activation and the classifier's input, see
            :func:`~cnnwidgets.methods.invariance.default_feature_layers`).
        random_trials: random-occlusion draws for the control (0: no control). Trial ``t``
            uses, in image ``i``, the size of the box of part ``t mod P`` in image ``i``.
        fill: occluder value in preprocessed space: one, or one per channel.
        seed: seed of the control's private generator, an int in [0, 2**64).
        rtol, atol: changes within ``atol * s + rtol * |x|`` count as no change, ``s`` being the
            largest ``|x|`` of the layer on that image (so the tolerance follows the features' scale).
        batch_size: images per forward pass (each pass of the N images runs in batches of this many;
            the result does not depend on it).
        progress: show a progress bar over the occluded passes (one per part, one per random
            trial).

    Returns:
        A :class:`CorrespondenceResult` (print it, or show it in a notebook, for the table).

    Raises:
        ValueError: fewer than 2 images, no parts, wrong number of boxes, a box outside the image
            or with fractional coordinates, a ``fill`` with neither 1 nor C values or with values
            that are not finite, a negative ``random_trials``, a ``seed`` outside [0, 2**64), an ``rtol`` or ``atol``
            that is negative, NaN or infinite, a ``batch_size`` below 1.
        KeyError: unknown layer.
        TypeError: ``images`` that are not a tensor (see
            :func:`~cnnwidgets.methods.invariance.check_image_batch`), ``parts`` that is not a
            mapping, layer names that are not strings, a ``fill``
            that is not numbers, ``random_trials``, ``seed`` or ``batch_size`` not an int (a Python int, a numpy
            integer or a 0-d integer tensor are; a bool or a float is not), ``rtol`` or ``atol``
            not a number, ``progress`` not True or False.

    Warns:
        NoOcclusionEffectWarning: (an :class:`~cnnwidgets.methods.gradients.EmptyMapWarning`) when
            a part's occluder (or every random trial of the control) changed no feature of any image
            at a layer: its row reads 0 there, which would look like perfect correspondence. The
            message names the rows and layers and the likely cause (the fill equals the images in
            the boxes, or the layer does not depend on the boxed pixels). Left out within
            :func:`~cnnwidgets.methods.gradients.empty_maps_quietly`.
    """
    check_image_batch(images)
    n, _, height, width = images.shape
    if n < 2:
        raise ValueError(f"correspondence needs at least 2 images, got {n}")
    if not isinstance(parts, Mapping):
        raise TypeError(f"parts must be a mapping {{part name: [one (x0, y0, x1, y1) box per image]}}, got "
                        f"{type(parts).__name__}")
    if not parts:
        raise ValueError("parts is empty; give {part name: [box per image]}")
    if RANDOM in parts:
        raise ValueError(f"{RANDOM!r} is the name of the control row; rename that part")
    random_trials = as_count(random_trials, "random_trials", minimum=0)
    seed = as_seed(seed)
    rtol, atol = as_tolerance(rtol, "rtol"), as_tolerance(atol, "atol")
    batch_size = as_count(batch_size, "batch_size", minimum=1)
    progress = as_flag(progress, "progress")
    fill = check_fill(fill, images.shape[1])
    for name, boxes in parts.items():
        first = boxes[0] if len(boxes) else None
        if first is not None and (isinstance(first, str) or not isinstance(first, (Sequence, np.ndarray, torch.Tensor))):
            raise ValueError(
                f"part {name!r} must be one (x0, y0, x1, y1) box per image ({n}), a list of boxes; "
                f"got {boxes!r}, which looks like a single box"
            )
    checked = {
        name: [_check_box(b, height, width, f"part {name!r}, image {i}") for i, b in enumerate(boxes)]
        for name, boxes in parts.items()
    }
    for name, boxes in checked.items():
        if len(boxes) != n:
            raise ValueError(f"part {name!r} has {len(boxes)} boxes; expected one per image ({n})")
    fingerprints = image_fingerprints(images)  # by which views know these images again
    with probe_scope(model_or_probe) as probe:
        images = images.detach()
        names = feature_layer_names(probe, images, layers, ("last_conv", "penultimate"))

        def features(x: torch.Tensor) -> dict[str, torch.Tensor]:
            pieces: dict[str, list[torch.Tensor]] = {k: [] for k in names}
            for start in range(0, x.shape[0], batch_size):
                acts = probe.capture(x[start:start + batch_size], names, cache=False)
                for k, v in acts.items():
                    pieces[k].append(v.reshape(v.shape[0], -1).float().cpu())
            return {k: torch.cat(chunks) for k, chunks in pieces.items()}

        reference = features(images)
        sizes = {k: int(v.shape[1]) for k, v in reference.items()}
        pair_mask = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)

        bar = tqdm(total=len(checked) + random_trials, disable=not progress, desc="correspondence", unit="pass")

        # per row (part or RANDOM): the layers at which its occluder changed no feature of any image,
        # and whether its fill equals the images in every box (its occluded images are the images)
        unchanged: dict[str, list[str]] = {}
        fill_is_image: dict[str, bool] = {}

        def measure(boxes: list[BoxXYXY], row: str) -> dict[str, torch.Tensor]:
            occluded_images = occlude(images, boxes, fill)
            occluded = features(occluded_images)
            bar.update(1)
            signs = {k: _signs(reference[k], occluded[k], rtol, atol) for k in names}
            same = bool(torch.equal(occluded_images, images))
            still = [k for k in names if not bool(signs[k].any())]
            if row not in unchanged:  # the first pass of the row (the control's first trial)
                unchanged[row], fill_is_image[row] = still, same
            else:  # a further trial of the control: unchanged only where every trial changed nothing
                unchanged[row] = [k for k in unchanged[row] if k in still]
                fill_is_image[row] = fill_is_image[row] and same
            return {k: _pairwise(v) for k, v in signs.items()}

        try:
            mean: dict[str, dict[str, float]] = {}
            std: dict[str, dict[str, float]] = {}
            total: dict[str, dict[str, float]] = {}
            pairwise: dict[str, dict[str, np.ndarray]] = {}
            for name, boxes in checked.items():
                counts = measure(boxes, name)
                mean[name], std[name], total[name], pairwise[name] = {}, {}, {}, {}
                for layer in names:
                    fraction = counts[layer] / sizes[layer]
                    values = fraction[pair_mask]
                    mean[name][layer] = float(values.mean())
                    std[name][layer] = float(values.std(unbiased=False))
                    total[name][layer] = float(counts[layer].sum())
                    pairwise[name][layer] = fraction.numpy()
            part_names = list(checked)
            if random_trials:
                rng = np.random.default_rng(seed)
                trials: dict[str, list[torch.Tensor]] = {layer: [] for layer in names}
                for t in range(random_trials):
                    template = checked[part_names[t % len(part_names)]]
                    boxes = random_boxes([(y1 - y0, x1 - x0) for x0, y0, x1, y1 in template], (height, width), rng)
                    for layer, counts in measure(boxes, RANDOM).items():
                        trials[layer].append(counts)
                mean[RANDOM], std[RANDOM], total[RANDOM], pairwise[RANDOM] = {}, {}, {}, {}
                for layer in names:
                    stacked = torch.stack(trials[layer]) / sizes[layer]  # (T, N, N)
                    values = stacked[:, pair_mask].flatten()
                    mean[RANDOM][layer] = float(values.mean())
                    std[RANDOM][layer] = float(values.std(unbiased=False))
                    total[RANDOM][layer] = float(torch.stack(trials[layer]).sum(dim=(1, 2)).mean())
                    pairwise[RANDOM][layer] = stacked.mean(dim=0).numpy()
                part_names.append(RANDOM)
        finally:
            bar.close()
    unchanged = {row: layers for row, layers in unchanged.items() if layers}
    if unchanged:
        warning = _unchanged_warning(unchanged, fill_is_image)
        _EMPTY_QUIET.warn(warning, stacklevel=2)
    return CorrespondenceResult(
        layers=names,
        parts=part_names,
        mean=mean,
        std=std,
        total=total,
        pairwise=pairwise,
        num_images=n,
        random_trials=random_trials,
        feature_sizes=sizes,
        boxes={name: list(boxes) for name, boxes in checked.items()},
        fill=fill,
        image_shape=tuple(int(v) for v in images.shape),
        image_fingerprints=fingerprints,
    )
