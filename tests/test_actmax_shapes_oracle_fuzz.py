"""Oracle fuzz test: activation maximisation and the embedded shapes data.

Driven, part 1: :func:`maximize_activation` on small CNNs drawn from fixed seeds (random
convolutions with 1 or 3 input channels, batch norms with random running statistics, in-place and
out-of-place ReLUs, max and average pools, a pooled linear head; the user's model left in eval or in
training mode) with random documented options: steps, lr, ``size`` (an int or a pair) or
``input_size``, seed, mean/std (none, one value, or one per channel), ``"fourier"`` or ``"pixel"``
parametrisation with or without colour decorrelation, decay, blur, jitter / scale / rotate (all off
in some cases), init_sd (0 in some cases: a gray start), redirect_steps, and targets on a channel
(mean, sum, max, a unit) or a class.

Oracles, computed on a ``copy.deepcopy`` of the user's model in eval mode with in-place flags off
(the run goes through the probe's private copy, which is such a copy):

* ``result.image`` is ``(rgb - mean) / std`` of ``result.rgb`` (H, W, C, float32, in [0, 1]) with the
  mean and std the result reports, which are the ones given (or 0 and 1);
* ``activation`` is the target evaluated on ``result.image`` by a plain forward hook on the copy, and
  with ``init_sd=0`` ``initial_activation`` is that of the gray image ``sigmoid(0) = 0.5``;
* the callback sees, at every step, the objective the trace records and the image that step
  optimised; with the random transforms off, that objective is the target on that image;
* the trace of a run is the prefix of the trace of a longer run with the same seed, and, with the
  transforms off, the longer run's next entry is the shorter run's final ``activation``;
* a second run with the same seed is bit-identical, another seed gives another image; torch's global
  RNG state, the caller's grad mode and the user's model (hooks, tensors, training flags) are
  unchanged;
* the documented warnings: a :class:`ZeroGradientWarning` exactly when a run of one or more steps
  ends no higher than it started, a :class:`SaturatedImageWarning` exactly when 90 % of the image's
  values are within 1e-6 of 0 or 1.

Driven, part 2: the shapes data (:class:`ShapesDataset`, :func:`make_images`, :func:`make_batch`,
:func:`render_scene`) at several seeds, sizes and start indices. Oracles: the documented sizes,
dtypes and normalisation; images independent of length, start and reading order; dataset indexing
(negative indices too) equal to :func:`make_batch`; the label balance of a chunk; and the pixels:
:func:`render_scene` with a known background draws each :class:`ShapeSpec` exactly where its
documented geometry puts it (pixels deep inside the drawn outline have the shape's colour, pixels
well outside it the background's), and every dataset image holds a region of one colour (the shape)
whose area and outline, read from the pixels, fit the class its label names.
"""

from __future__ import annotations

import copy
import math
import random
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from cnnwidgets import ChannelActivation, ClassLogit
from cnnwidgets.methods.actmax import SaturatedImageWarning, ZeroGradientWarning, maximize_activation
from tests.helpers import UserModelSnapshot

# --------------------------------------------------------------------------- models


def random_cnn(rng: random.Random, channels: int) -> tuple[nn.Sequential, list[tuple[str, int, int]]]:
    """A small Sequential CNN and its spatial layers as (name, channels, stride so far)."""
    layers: list[nn.Module] = []
    spatial: list[tuple[str, int, int]] = []
    cin, stride = channels, 1
    for block in range(rng.randint(1, 3)):
        cout = rng.randint(2, 6)
        kernel = rng.choice([1, 3])
        layers.append(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=rng.random() < 0.7))
        spatial.append((str(len(layers) - 1), cout, stride))
        if rng.random() < 0.5:
            bn = nn.BatchNorm2d(cout)
            with torch.no_grad():
                bn.running_mean.uniform_(-0.3, 0.3)
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.2, 0.4)
            layers.append(bn)
            spatial.append((str(len(layers) - 1), cout, stride))
        layers.append(nn.ReLU(inplace=rng.random() < 0.5))
        spatial.append((str(len(layers) - 1), cout, stride))
        if block < 2 and rng.random() < 0.6:
            layers.append(rng.choice([nn.MaxPool2d(2), nn.AvgPool2d(2)]))
            stride *= 2
            spatial.append((str(len(layers) - 1), cout, stride))
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, rng.randint(2, 5))]
    return nn.Sequential(*layers), spatial


def oracle_copy(model: nn.Module) -> nn.Module:
    clone = copy.deepcopy(model).eval()
    for module in clone.modules():
        if isinstance(getattr(module, "inplace", None), bool):
            module.inplace = False
    return clone


def oracle_score(clone: nn.Module, x: torch.Tensor, target) -> float:
    """The target on the (1, C, H, W) model input ``x``, by a plain forward hook."""
    with torch.no_grad():
        if isinstance(target, ClassLogit):
            return float(clone(x)[0, target.index])
        seen = {}
        module = dict(clone.named_modules())[target.layer]
        handle = module.register_forward_hook(lambda m, a, out: seen.__setitem__("out", out.clone()))
        try:
            clone(x)
        finally:
            handle.remove()
        values = seen["out"][0, target.channel]
        if target.position is not None:
            return float(values[target.position])
        return float({"mean": values.mean, "sum": values.sum, "max": values.max}[target.reduce]())


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-5)


# --------------------------------------------------------------------------- the actmax case


def draw_case(seed: int):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    channels = rng.choice([1, 3])
    model, spatial = random_cnn(rng, channels)
    if rng.random() < 0.3:
        model.train()
    else:
        model.eval()
    height, width = rng.randint(6, 12), rng.randint(6, 12)
    options: dict = dict(steps=rng.randint(1, 5), lr=rng.choice([0.02, 0.05, 0.2]), seed=rng.randint(0, 10**6),
                         progress=False, init_sd=rng.choice([0.0, 0.01, 0.3]))
    how = rng.choice(["size", "pair", "input_size"])
    if how == "size":
        width = height
        options["size"] = height
    elif how == "pair":
        options["size"] = (height, width)
    else:
        options["input_size"] = (channels, height, width)
    norm = rng.choice(["none", "scalar", "per channel"])
    mean, std = [0.0] * channels, [1.0] * channels
    if norm == "scalar":
        mean, std = [rng.uniform(0.2, 0.6)] * channels, [rng.uniform(0.2, 0.5)] * channels
        options["mean"], options["std"] = mean[0], std[0]
    elif norm == "per channel":
        mean = [rng.uniform(0.2, 0.6) for _ in range(channels)]
        std = [rng.uniform(0.2, 0.5) for _ in range(channels)]
        options["mean"], options["std"] = tuple(mean), tuple(std)
    options["parametrization"] = rng.choice(["fourier", "pixel"])
    options["decorrelate"] = rng.random() < 0.7
    if options["parametrization"] == "fourier":
        options["decay"] = rng.choice([0.0, 1.0, 1.5])
    elif rng.random() < 0.5:
        options["blur"] = rng.choice([0.5, 1.0, 3.0])
    if rng.random() < 0.4:
        options.update(jitter=0, scale=0.0, rotate=0.0)
    else:
        options.update(jitter=rng.randint(0, min(height, width) - 1), scale=rng.choice([0.0, 0.1]),
                       rotate=rng.choice([0.0, 10.0, 180.0]))
    options["redirect_steps"] = rng.choice([0, 2, 16])
    if rng.random() < 0.3:
        target = ClassLogit(rng.randrange(model[-1].out_features))
    else:
        name, cout, stride = rng.choice(spatial)
        position = None
        if rng.random() < 0.3:
            position = (rng.randrange(height // stride), rng.randrange(width // stride))
        target = ChannelActivation(name, rng.randrange(cout), reduce=rng.choice(["mean", "sum", "max"]),
                                   position=position)
    return model, target, options, (channels, height, width), mean, std


def run(model, target, options):
    seen = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = maximize_activation(model, target, callback=lambda s, v, rgb: seen.append((s, v, rgb.clone())),
                                     **options)
    kinds = {type(w.message) for w in caught}
    return result, seen, kinds


@pytest.mark.parametrize("seed", range(40))
def test_actmax_result_agrees_with_an_independent_run_of_its_image(seed):
    model, target, options, size, mean, std = draw_case(seed)
    channels, height, width = size
    snapshot = UserModelSnapshot.take(model)
    rng_state = torch.random.get_rng_state()
    clone = oracle_copy(model)

    result, seen, kinds = run(model, target, options)

    assert torch.equal(torch.random.get_rng_state(), rng_state)
    snapshot.assert_unchanged(model)
    assert torch.is_grad_enabled()
    # what the result says about itself
    assert result.input_size == size and result.seed == options["seed"]
    assert result.steps == options["steps"] == len(result.trace) and not result.cancelled
    assert result.trace.dtype == np.float64
    assert np.allclose(result.mean, mean, atol=1e-6) and np.allclose(result.std, std, atol=1e-6)
    assert result.rgb.shape == (height, width, channels) and result.rgb.dtype == np.float32
    assert result.rgb.min() >= 0 and result.rgb.max() <= 1
    assert result.image.shape == (1, channels, height, width) and result.image.device.type == "cpu"
    # the model input is the documented transform of the display image
    mean_t, std_t = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in (mean, std))
    rgb = torch.from_numpy(result.rgb).permute(2, 0, 1)[None]
    torch.testing.assert_close(result.image, (rgb - mean_t) / std_t, rtol=1e-5, atol=1e-5)
    # the reported value is the target on the returned model input
    assert close(result.activation, oracle_score(clone, result.image, target))
    if options["init_sd"] == 0:
        gray = (torch.full((1, channels, height, width), 0.5) - mean_t) / std_t
        assert close(result.initial_activation, oracle_score(clone, gray, target))
    # the callback: every step, the trace's value, the image that step optimised
    assert [s for s, _, _ in seen] == list(range(1, result.steps + 1))
    assert [v for _, v, _ in seen] == result.trace.tolist()
    for _, value, image in seen:
        assert image.shape == (channels, height, width) and float(image.min()) >= 0 and float(image.max()) <= 1
    transforms_off = options["jitter"] == 0 and options["scale"] == 0 and options["rotate"] == 0
    if transforms_off:
        for _, value, image in seen:
            assert close(value, oracle_score(clone, (image[None] - mean_t) / std_t, target))
        assert close(result.trace[0], result.initial_activation)
    # the documented warnings
    ended_no_higher = not result.activation > result.initial_activation
    assert (ZeroGradientWarning in kinds) == ended_no_higher
    share = float(np.mean((result.rgb <= 1e-6) | (result.rgb >= 1 - 1e-6)))
    assert (SaturatedImageWarning in kinds) == (share >= 0.9)

    # same seed: bit-identical; a longer run continues this one
    longer, _, _ = run(model, target, dict(options, steps=options["steps"] + 1))
    np.testing.assert_array_equal(longer.trace[:-1], result.trace)
    assert longer.initial_activation == result.initial_activation
    if transforms_off:
        assert close(longer.trace[-1], result.activation)
    again, _, _ = run(model, target, options)
    assert torch.equal(again.image, result.image)
    np.testing.assert_array_equal(again.rgb, result.rgb)
    np.testing.assert_array_equal(again.trace, result.trace)
    assert again.activation == result.activation
    if options["init_sd"] > 0 and share < 0.9:  # (two saturated images may well be the same)
        other, _, _ = run(model, target, dict(options, seed=options["seed"] + 1))
        assert not torch.equal(other.image, result.image)
    snapshot.assert_unchanged(model)
    assert torch.equal(torch.random.get_rng_state(), rng_state)


@pytest.mark.parametrize("seed", range(6))
def test_no_steps_give_the_starting_image(seed):
    model, target, options, size, mean, std = draw_case(100 + seed)
    clone = oracle_copy(model)
    result, seen, kinds = run(model, target, dict(options, steps=0))
    assert result.steps == 0 and result.trace.shape == (0,) and not seen
    assert not kinds & {ZeroGradientWarning, SaturatedImageWarning}
    assert result.activation == result.initial_activation
    assert close(result.activation, oracle_score(clone, result.image, target))
    if options["init_sd"] == 0:
        np.testing.assert_array_equal(result.rgb, np.full(result.rgb.shape, 0.5, np.float32))


# --------------------------------------------------------------------------- the shapes data

from cnnwidgets.zoo.shapes import (  # noqa: E402
    CHUNK, CLASSES, MEAN, STD, ShapeSpec, ShapesDataset, make_batch, make_images, render_scene,
)

DRAWN_RADIUS = {"circle": 0.8, "square": 0.95, "triangle": 1.1, "star": 1.1, "cross": 1.0}
"""The per-class factor on ``ShapeSpec.radius`` that its docstring gives."""


@pytest.mark.parametrize("seed", range(4))
def test_images_are_the_same_whatever_the_length_start_or_reading_order(seed):
    rng = random.Random(seed)
    size = rng.choice([16, 24, 40])
    data_seed = rng.randrange(2**64)
    n = rng.randint(CHUNK + 1, CHUNK + 40)
    images, labels = make_images(n, data_seed, size=size)
    assert images.shape == (n, size, size, 3) and images.dtype == np.uint8
    assert labels.shape == (n,) and labels.dtype == np.int64 and set(labels.tolist()) <= set(range(len(CLASSES)))
    # every chunk is balanced over the classes (a permutation of i % 5)
    assert np.bincount(labels[:CHUNK], minlength=len(CLASSES)).tolist() == [
        len(range(c, CHUNK, len(CLASSES))) for c in range(len(CLASSES))]
    start = rng.randint(1, n - 5)
    part, part_labels = make_images(n - start, data_seed, size=size, start=start)
    np.testing.assert_array_equal(part, images[start:])
    np.testing.assert_array_equal(part_labels, labels[start:])
    x, y = make_batch(n - start, data_seed, size=size, start=start)
    assert x.shape == (n - start, 3, size, size) and x.dtype == torch.float32 and y.dtype == torch.int64
    expected = (torch.from_numpy(part).permute(0, 3, 1, 2).float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(x, expected)
    assert torch.equal(y, torch.from_numpy(part_labels))
    dataset = ShapesDataset(n + 7, seed=data_seed, size=size)
    raw = ShapesDataset(n, seed=data_seed, size=size, normalized=False)
    order = list(range(n))
    rng.shuffle(order)
    for index in order[:30] + [n - 1, 0]:
        item, label = dataset[index]
        assert isinstance(label, int) and label == labels[index]
        torch.testing.assert_close(item, make_batch(1, data_seed, size=size, start=index)[0][0], rtol=0, atol=0)
        image, label = raw[index - n]  # a negative index counts from the end
        np.testing.assert_array_equal(image, images[index])
        assert label == labels[index]
    other, _ = make_images(8, data_seed + 1, size=size)
    assert not np.array_equal(other, images[:8])


def convex_polygon_distance(px, py, vertices):
    """Signed distance (> 0 inside) of points to the convex polygon ``vertices`` (counter-clockwise)."""
    best = None
    for (ax, ay), (bx, by) in zip(vertices, np.roll(vertices, -1, axis=0)):
        ex, ey = bx - ax, by - ay
        length = math.hypot(ex, ey)
        inward = (-(ey) * (px - ax) + ex * (py - ay)) / length  # left of the edge: inside for CCW
        best = inward if best is None else np.minimum(best, inward)
    return best


def spec_regions(spec: ShapeSpec, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(surely inside, surely outside) pixel masks of the drawn shape, 1.5 px from its outline,
    from the geometry the docstring of :class:`ShapeSpec` gives."""
    coords = np.arange(size) + 0.5
    px, py = np.meshgrid(coords, coords)
    # the shape's own frame: u along the direction the angle-0 tip points (right), v a quarter turn
    # counter-clockwise on screen (up, i.e. -y)
    a = math.radians(spec.angle)
    dx, dy = px - spec.center[0], -(py - spec.center[1])
    u = math.cos(a) * dx + math.sin(a) * dy
    v = -math.sin(a) * dx + math.cos(a) * dy
    outer = spec.radius * DRAWN_RADIUS[spec.kind]
    rho, phi = np.hypot(u, v), np.arctan2(v, u)
    margin = 1.5
    if spec.kind == "circle":
        return rho < outer - margin, rho > outer + margin
    if spec.kind in ("square", "triangle"):
        k = 4 if spec.kind == "square" else 3
        corners = np.array([(outer * math.cos(2 * math.pi * i / k), outer * math.sin(2 * math.pi * i / k))
                            for i in range(k)])
        dist = convex_polygon_distance(u, v, corners)
        return dist > margin, dist < -margin
    # star (tips at multiples of 72 degrees) and cross (arms at multiples of 90 degrees): only what the
    # documented outer radius and tip directions decide: near the centre and along a tip's ray inside,
    # beyond the tips and halfway between tips (at 0.9 of the outer radius) outside
    k = 5 if spec.kind == "star" else 4
    sector = 2 * math.pi / k
    off = np.abs((phi + sector / 2) % sector - sector / 2)  # angle to the nearest tip's ray
    along = rho * np.cos(off)
    across = rho * np.sin(off)
    inside = (rho < 0.2 * outer - margin) | ((across < 0.5) & (along < 0.6 * outer))
    between = (np.abs(off - sector / 2) * rho < 0.5) & (np.abs(rho - 0.9 * outer) < 0.5)
    outside = (rho > outer + margin) | between
    return inside & (rho > 0), outside


@pytest.mark.parametrize("seed", range(10))
def test_render_scene_draws_each_shape_where_its_spec_puts_it(seed):
    rng = random.Random(seed)
    size = rng.choice([32, 48, 64])
    background = tuple(rng.uniform(0.05, 0.25) for _ in range(3))
    specs = []
    for _ in range(rng.randint(1, 2)):
        kind = rng.choice(CLASSES)
        radius = rng.uniform(6, size / 3)
        specs.append(ShapeSpec(kind, (rng.uniform(radius, size - radius), rng.uniform(radius, size - radius)),
                               radius, rng.uniform(-360, 360), tuple(rng.uniform(0.8, 1.0) for _ in range(3))))
    image = render_scene(specs, size=size, seed=rng.randrange(1000), background=background)
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    pixels = image.astype(np.float64) / 255
    covered = np.zeros((size, size), bool)
    for spec in reversed(specs):  # later shapes lie on top of earlier ones
        inside, outside = spec_regions(spec, size)
        shown = inside & ~covered
        assert outside.any() and (shown.any() or covered.any())  # (the top one is seen; others may be hidden)
        # the shape's own colour, up to the pixel noise (sd 0.02: within 0.035) and rounding
        assert np.abs(pixels[shown] - np.asarray(spec.color)).max(initial=0) <= 0.04, spec
        covered |= ~outside
    # where no shape is: the background (base colour in [0.05, 0.25] plus a texture of at most
    # 0.18 and noise), nowhere near the shapes' colours of 0.8 and above
    assert pixels[~covered].max() < 0.65


def hull_area(points: np.ndarray) -> float:
    """Area of the convex hull of integer points (monotone chain)."""
    pts = sorted(set(map(tuple, points.tolist())))

    def turn(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    chain = []
    for sweep in (pts, pts[::-1]):
        half: list = []
        for p in sweep:
            while len(half) >= 2 and turn(half[-2], half[-1], p) <= 0:
                half.pop()
            half.append(p)
        chain += half[:-1]
    h = np.array(chain, float)
    return 0.5 * abs(np.dot(h[:, 0], np.roll(h[:, 1], -1)) - np.dot(h[:, 1], np.roll(h[:, 0], -1)))


def largest_region(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected region of ``mask``."""
    seen = np.zeros_like(mask)
    best: list = []
    height, width = mask.shape
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        seen[start] = True
        stack, region = [start], []
        while stack:
            y, x = stack.pop()
            region.append((y, x))
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        if len(region) > len(best):
            best = region
    out = np.zeros_like(mask)
    out[tuple(np.array(best).T)] = True
    return out


def shape_solidity(image: np.ndarray) -> float:
    """The shape's area over that of its convex hull, read from the pixels: two colour clusters (the
    background starting from the border's median colour, the shape from the colour farthest from it),
    on the image smoothed over 3 x 3 pixels against the noise; the shape is the largest region."""
    px = image.astype(np.float64) / 255
    padded = np.pad(px, ((1, 1), (1, 1), (0, 0)), mode="edge")
    px = sum(padded[i:i + px.shape[0], j:j + px.shape[1]] for i in range(3) for j in range(3)) / 9
    border = np.concatenate([px[0], px[-1], px[:, 0], px[:, -1]])
    back = np.median(border, axis=0)
    fore = px.reshape(-1, 3)[np.argmax(np.linalg.norm(px - back, axis=-1))]
    for _ in range(10):
        mask = np.linalg.norm(px - fore, axis=-1) < np.linalg.norm(px - back, axis=-1)
        fore, back = px[mask].mean(axis=0), px[~mask].mean(axis=0)
    ys, xs = np.nonzero(largest_region(mask))
    corners = np.concatenate([np.stack([xs + i, ys + j], 1) for i in (0, 1) for j in (0, 1)])
    return len(xs) / hull_area(corners)


@pytest.mark.parametrize("seed", [0, 12345])
def test_every_image_shows_a_shape_whose_outline_fits_its_label(seed):
    """Circles, squares and triangles are convex (their area nearly fills their convex hull: 0.85 and
    up, read from the pixels), stars and crosses are not (at most 0.8: 0.56 and 0.68 drawn exactly).
    The pixel reading misjudges a few images where the background's texture comes close to the
    shape's colour, so at most 3 % of them may disagree."""
    images, labels = make_images(250, seed, size=64)
    convex = np.array([shape_solidity(image) > 0.8 for image in images])
    expected = np.isin(labels, [CLASSES.index(k) for k in ("circle", "square", "triangle")])
    assert np.mean(convex != expected) <= 0.03, np.flatnonzero(convex != expected)
    for c in range(len(CLASSES)):
        assert np.mean(convex[labels == c] == expected[labels == c]) >= 0.9, CLASSES[c]
