"""Regression tests for gaps in the output checks, the number checks, the heatmap overlay, the
nearest-neighbour resampling, the part colours and the "penultimate" default layer."""

from __future__ import annotations

import decimal
import fractions
from collections import OrderedDict
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnwidgets.core.targets import as_tolerance, looks_like_independent_probabilities, output_tensor
from cnnwidgets.render import resample
from cnnwidgets.render.attribution import attribution_overlay, robust_scale
from cnnwidgets.render.grid import GridLayout
from cnnwidgets.render.occlusion import grid_to_pixels


# ============================================================================ 1. dict outputs
def _sigmoid_outputs() -> torch.Tensor:
    """Independent probabilities of a multi-label model: in (0, 1), rows not summing to 1."""
    logits = torch.randn(3, 5, generator=torch.Generator().manual_seed(1)) * 3
    return torch.sigmoid(logits)


def test_looks_like_independent_probabilities_reads_a_dict_output_as_the_targets_do():
    # was: OutputTypeError ("reads a tensor of class scores (N, classes), got a dict") for a dict or
    # ModelOutput-like output, which every target and method reads through output_tensor
    probabilities = _sigmoid_outputs()
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    distributions = torch.softmax(torch.randn(2, 4), 1)
    assert looks_like_independent_probabilities(probabilities)
    for scores in (probabilities, logits, distributions):
        containers = [
            {"logits": scores},
            {"out": scores, "aux": torch.zeros_like(scores)},
            OrderedDict(only=scores),
            SimpleNamespace(logits=scores),
        ]
        for container in containers:
            assert looks_like_independent_probabilities(container) == looks_like_independent_probabilities(
                output_tensor(container)
            ), container


def test_looks_like_independent_probabilities_is_false_for_outputs_with_no_tensor_to_read():
    # was: OutputTypeError for these; the test answers False for any output that is not class scores
    probabilities = _sigmoid_outputs()
    for output in (
        (probabilities, probabilities),  # a tuple: not guessed at, as output_tensor refuses it
        {"a": probabilities, "b": probabilities},  # several tensors, none under a known key
        {"logits": "not a tensor"},
        "probabilities",
    ):
        assert looks_like_independent_probabilities(output) is False


# ============================================================================ 2. tolerances
@pytest.mark.parametrize("value", [fractions.Fraction(1, 4), decimal.Decimal("0.25"), fractions.Fraction(0)])
def test_as_tolerance_accepts_fractions_and_decimals(value):
    # was: TypeError "rtol must be a finite number >= 0, got a Fraction" (and "... a Decimal")
    result = as_tolerance(value, "rtol")
    assert type(result) is float and result == float(value)


def test_as_tolerance_reads_a_tiny_negative_fraction_as_zero_and_keeps_its_precision():
    # was: TypeError for any Fraction
    assert as_tolerance(fractions.Fraction(1, 3), "atol") == 1 / 3
    tiny = as_tolerance(fractions.Fraction(-1, 10**400), "atol")
    assert tiny == 0.0 and np.copysign(1.0, tiny) == 1.0


@pytest.mark.parametrize("value", [
    decimal.Decimal("NaN"), decimal.Decimal("sNaN"), decimal.Decimal("Infinity"), decimal.Decimal("-Infinity"),
    decimal.Decimal("-0.5"), fractions.Fraction(-1, 2), decimal.Decimal("1e400"), fractions.Fraction(10**400, 3),
])
def test_as_tolerance_refuses_bad_fractions_and_decimals_with_the_usual_message(value):
    # was: TypeError for all of these (a Fraction or Decimal was not accepted at all)
    with pytest.raises(ValueError, match=r"^rtol must be a finite number >= 0, got "):
        as_tolerance(value, "rtol")


@pytest.mark.parametrize("value", [True, np.bool_(False), "0.1", 1j, None, torch.tensor(0.1)])
def test_as_tolerance_still_refuses_what_is_not_a_real_number(value):
    # was: the same TypeError; kept while Fraction and Decimal became accepted
    with pytest.raises(TypeError, match=r"^rtol must be a finite number >= 0, got "):
        as_tolerance(value, "rtol")


# ============================================================================ 4. overlay scale
def test_attribution_overlay_takes_its_scale_over_the_map_before_resizing():
    # was: the percentile was taken over the map resized to the image, so the same map had other
    # colours over a larger image (the resized map has other values, weighted by area)
    rng = np.random.default_rng(3)
    heat = rng.random((4, 4)).astype(np.float32)
    heat[1, 2] = 40.0  # one strong unit: the 90th percentile of 16 values and of their resizing differ
    small = np.zeros((4, 4, 3), np.uint8)
    large = np.zeros((12, 12, 3), np.uint8)  # 3x: output pixel 3i + 1 samples unit i at its centre
    shown_small = attribution_overlay(small, heat, alpha=1.0, percentile=90.0)
    shown_large = attribution_overlay(large, heat, alpha=1.0, percentile=90.0)
    assert np.array_equal(shown_large[1::3, 1::3], shown_small)
    # and that scale is the map's own: a unit at the map's percentile is at the top of the colormap
    top = attribution_overlay(small, np.full((4, 4), robust_scale(heat, 90.0), np.float32), alpha=1.0)
    at_scale = heat >= robust_scale(heat, 90.0)
    assert np.array_equal(shown_small[at_scale], top[at_scale])


# ============================================================================ 5. nearest ties
def _exact_nearest(n_in: int, n_out: int) -> np.ndarray:
    """floor((p + 1/2) * n_in / n_out) in exact rational arithmetic."""
    return np.array([int((fractions.Fraction(2 * p + 1, 2) * n_in / n_out).__floor__()) for p in range(n_out)])


def test_nearest_resize_breaks_exact_ties_the_same_way_for_every_size():
    # was: computed in floats, an output centre on the boundary of two source pixels went to the
    # lower pixel for some sizes (2 -> 49: pixel 24 took 0) and to the higher for others (2 -> 3)
    for n_in in range(1, 9):
        row = np.arange(n_in, dtype=np.int64)[None, :]
        for n_out in range(1, 200):
            got = resample.resize(row, (1, n_out), "nearest")[0]
            assert np.array_equal(got, _exact_nearest(n_in, n_out)), (n_in, n_out)
    assert resample.resize(np.array([[0, 1]]), (1, 49), "nearest")[0, 24] == 1  # the tie: the higher pixel


def test_nearest_indices_is_the_upscale_blocks_for_whole_factors():
    # was: not available; the rule lived in float arithmetic inside resize
    for n_in in range(1, 12):
        for factor in range(1, 60):
            assert np.array_equal(resample.nearest_indices(n_in, n_in * factor), np.arange(n_in * factor) // factor)
    with pytest.raises(ValueError, match="n_out"):
        resample.nearest_indices(3, 0)


def test_nearest_map_to_input_rounds_the_unit_position_half_up_without_float_slop():
    # was: floor(pos + 0.5): a position 0.49999999999999994 (nearer unit 0) went to unit 1, as the
    # sum rounds to 1.0
    fmap = np.array([[10.0, 20.0, 30.0]], np.float32)
    below_half = np.nextafter(0.5, 0.0)
    placed = resample.map_to_input(fmap, (1, 1), jump=1.0, start=-below_half, mode="nearest")
    assert placed[0, 0] == 10.0
    # an exact half goes up: pixel 1 lies halfway between units 0 and 1 (centres 0 and 2)
    placed = resample.map_to_input(fmap, (1, 5), jump=2.0, start=0.0, mode="nearest")
    assert placed[0].tolist() == [10.0, 20.0, 20.0, 30.0, 30.0]


@pytest.mark.parametrize("scale", [2, 3, 7, 49, 98])
def test_mosaic_map_position_names_the_unit_upscale_draws(scale):
    # was: a float step 1 / scale put the first pixel of some units in the unit before (scale 49:
    # pixel 49 of a tile read unit 0, where upscale draws unit 1)
    h, w = 3, 2
    layout = GridLayout(count=1, rows=1, cols=1, map_height=h, map_width=w, scale=scale, border=1)
    drawn = resample.upscale(np.arange(h * w).reshape(h, w), scale, color=False)
    x0, y0, tw, th = layout.tile_rect(0)
    for dy in range(th):
        for dx in range(tw):
            channel, row, col = layout.map_position(x0 + dx, y0 + dy)
            assert (channel, row * w + col) == (0, drawn[dy, dx]), (dy, dx)


@pytest.mark.parametrize("window", [1, 2, 3, 5])
def test_occlusion_tiles_and_nearest_resize_agree(window):
    # was: the same (an agreement check of the callers that rely on nearest): an occlusion grid of
    # non-overlapping tiles (stride = window) covering the image is shown as the tiles themselves,
    # which is what a nearest resize (and upscale) of that grid gives
    rng = np.random.default_rng(window)
    rows, cols = 4, 3
    grid = rng.random((rows, cols)).astype(np.float32)
    size = (rows * window, cols * window)
    pixels = grid_to_pixels(grid, size, window=window, stride=window, upsample="nearest")
    assert np.array_equal(pixels, resample.resize(grid, size, "nearest"))
    assert np.array_equal(pixels, resample.upscale(grid, window))


# ============================================================================ 6. part colours
def test_part_boxes_figure_takes_its_colours_from_part_colour(monkeypatch):
    # was: the figure read its own copy of the palette, so a change to part_colour (which draw_boxes
    # and the correspondence view use) left the figure's colours behind
    from cnnwidgets.render import figures

    palette = {0: (10, 200, 30), 1: (250, 5, 120)}
    monkeypatch.setattr(figures, "part_colour", lambda index: palette[index])
    image = np.full((8, 8, 3), 0.5, np.float32)
    parts = {"eye": [(1, 1, 3, 3)] * 2, "mouth": [(2, 4, 7, 7)] * 2}
    fig = figures.part_boxes_figure([image, image], parts)
    for ax in fig.axes[:2]:
        edges = [tuple(int(round(c * 255)) for c in patch.get_edgecolor()[:3]) for patch in ax.patches]
        assert edges == [palette[0], palette[1]]
    drawn = figures.draw_boxes(image, {"eye": parts["eye"][0], "mouth": parts["mouth"][0]})
    assert tuple(drawn[1, 1]) == palette[0] and tuple(drawn[4, 2]) == palette[1]


def test_a_part_has_the_same_colour_in_the_figure_and_the_correspondence_view():
    # was: the same colours (both indexed the one palette); checked here across the two paths so
    # that they cannot drift apart
    from cnnwidgets.app.experiments import CorrespondenceController, plot_part_boxes
    from cnnwidgets.methods.correspondence import CorrespondenceResult

    images = torch.full((2, 3, 12, 12), 0.5)
    parts = {"a": [(1, 1, 5, 5), (2, 2, 6, 6)], "b": [(6, 6, 11, 11), (5, 1, 10, 6)], "c": [(0, 7, 4, 12)] * 2}
    names = list(parts)
    zeros = {name: {"l": 0.0} for name in names}
    result = CorrespondenceResult(layers=["l"], parts=names, mean=zeros, std=zeros, total=zeros,
                                  pairwise={name: {"l": np.zeros((2, 2))} for name in names},
                                  num_images=2, random_trials=0, feature_sizes={"l": 1}, boxes=parts)
    figure = plot_part_boxes(images, parts)
    figure_colours = {name: tuple(int(round(c * 255)) for c in patch.get_edgecolor()[:3])
                      for name, patch in zip(names, figure.axes[0].patches)}
    controller = CorrespondenceController(result, images, tile=12)
    try:
        picture = controller.view.image
        for name in names:
            x0, y0, _, _ = parts[name][0]
            assert tuple(picture[y0, x0]) == figure_colours[name], name
        assert len(set(figure_colours.values())) == len(names)
    finally:
        controller.view.close()


# ============================================================================ 7. "penultimate"
class _FunctionalPooling(nn.Module):
    """Convolutions, then a global pooling written as a function in forward, then the classifier."""

    def __init__(self, hidden: bool = False) -> None:
        super().__init__()
        self.conv1, self.relu1 = nn.Conv2d(3, 4, 3), nn.ReLU()
        self.conv2, self.relu2 = nn.Conv2d(4, 6, 3), nn.ReLU()
        self.hidden = nn.Sequential(nn.Linear(6, 7), nn.ReLU()) if hidden else nn.Identity()
        self.fc = nn.Linear(7 if hidden else 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(self.hidden(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)))


class _ModulePooling(_FunctionalPooling):
    """The same network with the pooling as modules."""

    def __init__(self) -> None:
        super().__init__()
        self.pool, self.flatten = nn.AdaptiveAvgPool2d(1), nn.Flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x)))))))


def test_penultimate_of_a_model_with_functional_pooling_is_its_last_feature_map_as_documented():
    # was: the same layer, but the docstring promised "the feature vector the output layer classifies",
    # which no module outputs in such a model
    from cnnwidgets.core.probe import Probe
    from cnnwidgets.methods.invariance import default_feature_layers, invariance_curves

    torch.manual_seed(0)
    with Probe(_FunctionalPooling().eval(), input_size=(3, 16, 16)) as probe:
        found = default_feature_layers(probe)
        assert found["penultimate"] == found["last_conv"] == "relu2"
        assert probe.layers["relu2"].output_shape == (6, 12, 12)  # not pooled
    with Probe(_ModulePooling().eval(), input_size=(3, 16, 16)) as probe:
        assert default_feature_layers(probe)["penultimate"] == "pool"  # the vector the classifier reads
    with Probe(_FunctionalPooling(hidden=True).eval(), input_size=(3, 16, 16)) as probe:
        assert default_feature_layers(probe)["penultimate"] == "hidden.1"  # a hidden layer's activation, fc7
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    result = invariance_curves(_FunctionalPooling().eval(), images, transforms={"translation": [0, 2]},
                               progress=False)
    assert result.layers == ["relu1", "relu2"]  # "penultimate" is "last_conv" here: measured once
