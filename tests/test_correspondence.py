"""Correspondence measure: zero for identical images and boxes, hand-computed on a pixel
layer, seeded control, table output, drawing helpers."""

from __future__ import annotations

import re
import numpy as np
import pytest
import torch
from torch import nn

from cnnwidgets.methods.correspondence import RANDOM, correspondence, occlude, random_boxes
from tests.helpers import capture_batch_sizes


class PixelNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pixels = nn.Identity()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(5 * 6 * 6, 7)
        self.relu_fc = nn.ReLU()
        self.out = nn.Linear(7, 2)

    def forward(self, x):
        x = self.pool(self.relu(self.conv(self.pixels(x)))).flatten(1)
        return self.out(self.relu_fc(self.fc(x)))


def test_identical_images_and_boxes_give_zero():
    torch.manual_seed(0)
    model = PixelNet().eval()
    image = torch.randn(1, 3, 12, 12)
    x = image.repeat(4, 1, 1, 1)
    parts = {"left eye": [(1, 2, 4, 5)] * 4, "nose": [(5, 6, 9, 10)] * 4}
    result = correspondence(model, x, parts, ["pixels", "relu", "relu_fc"], random_trials=4)
    for part in parts:
        for layer in result.layers:
            assert result.mean[part][layer] == 0.0 and result.total[part][layer] == 0.0
            assert np.all(result.pairwise[part][layer] == 0)
    assert result.parts == ["left eye", "nose", RANDOM]
    assert result.mean[RANDOM]["pixels"] > 0  # random boxes differ between images, so the control does not vanish


def test_opposite_images_give_the_occluded_fraction():
    """eps_i = x_i inside the box and 0 outside; with x_2 = -x_1 the signs differ exactly on the box."""
    model = PixelNet()
    x = torch.rand(1, 3, 12, 12) + 0.1
    pair = torch.cat([x, -x])
    box = (2, 3, 6, 8)  # 4 columns x 5 rows
    result = correspondence(model, pair, {"part": [box, box]}, ["pixels"], random_trials=0)
    assert result.mean["part"]["pixels"] == pytest.approx(4 * 5 / (12 * 12))
    assert result.std["part"]["pixels"] == 0.0
    assert result.total["part"]["pixels"] == 2 * 3 * 4 * 5  # both ordered pairs, all channels
    assert result.parts == ["part"] and result.feature_sizes == {"pixels": 3 * 12 * 12}


def test_control_is_seeded_and_sized_like_the_parts():
    model = PixelNet()
    x = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    parts = {"a": [(0, 0, 3, 3), (1, 1, 4, 4), (2, 2, 5, 5)], "b": [(4, 4, 9, 6)] * 3}
    one = correspondence(model, x, parts, ["relu"], random_trials=6, seed=1)
    two = correspondence(model, x, parts, ["relu"], random_trials=6, seed=1)
    other = correspondence(model, x, parts, ["relu"], random_trials=6, seed=2)
    assert one.mean[RANDOM] == two.mean[RANDOM]
    assert one.mean[RANDOM] != other.mean[RANDOM]
    rng = np.random.default_rng(0)
    for x0, y0, x1, y1 in random_boxes([(2, 5), (12, 1)], (12, 12), rng):
        assert 0 <= x0 < x1 <= 12 and 0 <= y0 < y1 <= 12
    assert [(y1 - y0, x1 - x0) for x0, y0, x1, y1 in random_boxes([(2, 5), (12, 1)], (12, 12), rng)] == [(2, 5), (12, 1)]


def test_table_text_and_html():
    model = PixelNet()
    x = torch.randn(3, 3, 12, 12)
    result = correspondence(model, x, {"eye": [(1, 1, 4, 4)] * 3}, random_trials=2)
    assert result.layers == ["relu", "relu_fc"]  # the paper's layer 5 and 7 counterparts
    text = str(result)
    assert "eye" in text and "random" in text and "relu_fc" in text and "±" in text and "3 image pairs" in text
    html = result.to_html()
    assert html.startswith("<table") and ">eye</td>" in result._repr_html_() and "over 3 image pairs" in html
    assert html.count("<tr>") == 1 + len(result.parts)  # the head and one row per part, random included


def test_occlude_and_errors():
    x = torch.zeros(2, 3, 6, 6)
    out = occlude(x, [(0, 0, 2, 3), (4, 4, 6, 6)], fill=[1.0, 2.0, 3.0])
    assert out[0, 2, :3, :2].eq(3.0).all() and out[0, :, 3:].eq(0).all() and out[1, 0, 4:, 4:].eq(1.0).all()
    assert x.eq(0).all()
    model = PixelNet()
    xs = torch.randn(2, 3, 12, 12)
    with pytest.raises(ValueError, match="at least 2"):
        correspondence(model, xs[:1], {"p": [(0, 0, 2, 2)]})
    with pytest.raises(TypeError, match=r"got ndarray of shape \(2, 3, 12, 12\): torch.from_numpy"):
        correspondence(model, xs.numpy(), {"p": [(0, 0, 2, 2)] * 2})
    with pytest.raises(TypeError, match="torch.Tensor batch"):
        occlude(xs.numpy(), [(0, 0, 2, 2)] * 2)
    with pytest.raises(ValueError, match="one per image"):
        correspondence(model, xs, {"p": [(0, 0, 2, 2)]})
    with pytest.raises(ValueError, match="x1 <= 12"):
        correspondence(model, xs, {"p": [(0, 0, 2, 2), (10, 0, 13, 2)]})
    with pytest.raises(ValueError, match="control"):
        correspondence(model, xs, {RANDOM: [(0, 0, 2, 2)] * 2})
    parts = {"p": [(0, 0, 2, 2)] * 2}
    for name, value, error, message in (
        ("random_trials", 2.5, TypeError, "random_trials must be an int >= 0, got float 2.5"),
        ("random_trials", "3", TypeError, "random_trials must be an int >= 0, got str '3'"),
        ("random_trials", True, TypeError, "random_trials must be an int >= 0, got bool True"),
        ("random_trials", -1, ValueError, "random_trials must be an int >= 0, got -1"),
        ("seed", 1.5, TypeError, "seed must be an int in [0, 2**64), got float 1.5"),
            ("seed", -1, ValueError, "seed must be an int in [0, 2**64), got -1"),
        ("rtol", -1.0, ValueError, "rtol must be a finite number >= 0, got -1.0"),
        ("rtol", float("inf"), ValueError, "rtol must be a finite number >= 0, got inf"),
        ("atol", float("nan"), ValueError, "atol must be a finite number >= 0, got nan"),
        ("atol", "0", TypeError, "atol must be a finite number >= 0, got str '0'"),
    ):
        with pytest.raises(error, match=re.escape(message)):
            correspondence(model, xs, parts, **{name: value})
    # a count and a seed take the same int types: Python and numpy ints and 0-d integer tensors
    plain = correspondence(model, xs, parts, random_trials=2, seed=1)
    for trials, seed in ((np.int64(2), np.int64(1)), (torch.tensor(2), torch.tensor(1))):
        other = correspondence(model, xs, parts, random_trials=trials, seed=seed)
        assert other.random_trials == 2 and other.mean == plain.mean
    with pytest.raises(TypeError, match=re.escape("seed must be an int in [0, 2**64), got a tensor of shape (2,)")):
        correspondence(model, xs, parts, seed=torch.tensor([1, 2]))


def test_tinyvgg_koalas_table_boxes_and_view(shared_data):
    from cnnwidgets.app.experiments import correspondence_view, plot_part_boxes
    from tests.test_topk import tinyvgg_and_images

    model, x, _, names = tinyvgg_and_images(shared_data)
    pick = [names.index(n) for n in ("koala_1", "koala_2")]  # the two frontal koala faces
    # boxes placed by hand on the 64x64 photos (image left/right)
    parts = {"left eye": [(15, 29, 25, 39), (11, 13, 21, 23)], "right eye": [(48, 29, 58, 39), (40, 16, 50, 26)],
             "nose": [(35, 37, 45, 47), (29, 25, 39, 35)]}
    result = correspondence(model, x[pick], parts, random_trials=5)
    assert result.layers == ["relu_2_2", "pool_2"]  # last conv activation, the classifier's input
    for part in result.parts:
        assert 0 < result.mean[part]["relu_2_2"] < 1
    fig = plot_part_boxes(x[pick], parts, titles=[names[i] for i in pick])
    assert len(fig.axes) == 2 and len(fig.axes[0].patches) == 3
    view = correspondence_view(result, x[pick], parts)
    assert "<table" in view.table_html and "over 1 image pair," in view.table_html
    view.part = "nose"
    view.occluded = True
    assert "nose (occluded)" in view.status and not view.error


def test_tinyvgg_red_pandas_three_pairs_with_a_random_control(shared_data):
    from tests.test_topk import tinyvgg_and_images

    model, x, _, names = tinyvgg_and_images(shared_data)
    pick = [names.index(n) for n in ("panda_1", "panda_2", "panda_5")]  # red pandas, faces visible

    def box(cx, cy, r):
        return (cx - r, cy - r, cx + r, cy + r)

    # placed by hand on the 64x64 photos (image left/right); panda_2's face is small, so its boxes are
    parts = {"left eye": [box(12, 36, 4), box(26, 6, 3), box(13, 35, 4)],
             "right eye": [box(28, 36, 4), box(37, 6, 3), box(36, 44, 4)],
             "nose": [box(19, 43, 4), box(31, 10, 3), box(19, 55, 4)]}
    layers = ["relu_1_1", "relu_2_1", "relu_2_2", "pool_2"]
    result = correspondence(model, x[pick], parts, layers=layers, random_trials=8)
    assert result.num_images == 3 and result.parts == ["left eye", "right eye", "nose", RANDOM]
    for part in result.parts:
        for layer in layers:
            h = result.pairwise[part][layer]
            assert h.shape == (3, 3)
            np.testing.assert_allclose(h, h.T, atol=1e-12)  # h_ij = h_ji
            assert np.all(np.diag(h) == 0)
            pairs = h[np.triu_indices(3, k=1)]
            assert np.all((pairs > 0) & (pairs < 1))  # every occlusion flips some signs, never all
            assert result.mean[part][layer] == pytest.approx(pairs.mean())
    # the control draws different boxes per trial, so its pairs vary
    assert result.std[RANDOM]["relu_2_2"] > 0


def upright_stars(n: int, seed: int = 3):
    """``n`` generated five-pointed stars, tip up, and boxes on three tips and the centre."""
    from cnnwidgets.zoo.shapes import ShapeSpec, normalize, render_scene

    rng = np.random.default_rng(seed)
    images, parts = [], {"top tip": [], "left tip": [], "right tip": [], "centre": []}
    for i in range(n):
        cx, cy, radius = rng.uniform(27, 37), rng.uniform(27, 37), rng.uniform(15, 19)
        colour = tuple(float(v) for v in rng.uniform(0.2, 1.0, 3))
        images.append(normalize(render_scene([ShapeSpec("star", (cx, cy), radius, 90.0, colour)], seed=100 + i)))
        tip = 1.1 * radius * 0.8  # drawn outer radius is 1.1 x nominal; boxes sit at 80 % of it

        def box(angle):
            px, py = cx + tip * np.cos(np.deg2rad(angle)), cy - tip * np.sin(np.deg2rad(angle))
            return (round(px - 5), round(py - 5), round(px + 5), round(py + 5))

        parts["top tip"].append(box(90))
        parts["left tip"].append(box(162))
        parts["right tip"].append(box(18))
        parts["centre"].append((round(cx - 5), round(cy - 5), round(cx + 5), round(cy + 5)))
    return torch.stack(images), parts


def test_shapesnet_stars():
    from cnnwidgets.zoo import load_default

    model = load_default().model
    x, parts = upright_stars(3)
    result = correspondence(model, x, parts, random_trials=4)
    assert result.layers == ["features.relu4", "global_pool"]
    for part in result.parts:
        for layer in result.layers:
            assert 0 < result.mean[part][layer] < 1
    same = correspondence(model, x[:1].repeat(3, 1, 1, 1), {"top tip": [parts["top tip"][0]] * 3}, random_trials=0)
    assert all(v == 0 for v in same.mean["top tip"].values())


def test_view_errors_reach_its_status_line_and_the_view_goes_on(monkeypatch):
    import cnnwidgets.app.experiments as experiments
    from cnnwidgets.app.experiments import correspondence_view

    torch.manual_seed(0)
    model = PixelNet().eval()
    x = torch.rand(2, 3, 12, 12)
    parts = {"eye": [(1, 2, 4, 5), (2, 2, 5, 5)]}
    result = correspondence(model, x, parts, ["pixels"], random_trials=2)
    with pytest.raises(ValueError):  # two fill values for three channels: refused up front
        correspondence_view(result, x, parts, fill=[0.0, 0.0])
    view = correspondence_view(result, x, parts)
    assert not view.error

    def broken(*args, **kwargs):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(experiments, "occlude", broken)
    view.part, view.occluded = "eye", True  # drawing the occluded images fails
    assert view.error and view.status
    view.occluded = False
    assert not view.error and "eye" in view.status


def test_a_single_box_instead_of_one_per_image_is_named():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    with pytest.raises(ValueError, match=r"part 'eye' must be one \(x0, y0, x1, y1\) box per image \(4\)"):
        correspondence(model, torch.rand(4, 3, 32, 32), {"eye": (10, 10, 20, 20)})
    # the boxes without their part's name: a list where the mapping belongs
    with pytest.raises(TypeError, match=r"parts must be a mapping \{part name: \[one \(x0, y0, x1, y1\) box"):
        correspondence(model, torch.rand(4, 3, 32, 32), [[(0, 0, 16, 16)] * 4])


class GAPNet(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


def test_fill_must_have_one_value_or_one_per_channel():
    torch.manual_seed(0)
    images = torch.rand(2, 1, 16, 16)
    parts = {"p": [(0, 0, 8, 8)] * 2}
    with pytest.raises(ValueError, match="fill has 3 values, the images have 1 channel"):
        correspondence(GAPNet(1).eval(), images, parts, fill=[0.0, 0.0, 0.0], random_trials=1)
    with pytest.raises(ValueError, match="fill has 2 values, the images have 1 channel"):
        occlude(images, [(0, 0, 8, 8)] * 2, fill=[0.0, 1.0])
    model = GAPNet(1).eval()
    one = correspondence(model, images, parts, fill=[0.5], random_trials=1)
    same = correspondence(model, images, parts, fill=0.5, random_trials=1)
    assert one.mean == same.mean
    color = occlude(torch.zeros(1, 3, 4, 4), [(1, 1, 3, 3)], fill=(1.0, 2.0, 3.0))
    assert color[0, :, 1, 1].tolist() == [1.0, 2.0, 3.0] and color[0, :, 0, 0].tolist() == [0.0, 0.0, 0.0]


def test_box_coordinates_are_whole_pixels():
    images = torch.rand(2, 3, 12, 12)
    exact = occlude(images, [(0, 0, 8, 8), (2, 2, 6, 6)])
    as_floats = occlude(images, [(0.0, 0.0, 8.0, 8.0), np.array([2.0, 2.0, 6.0, 6.0])])
    as_tensor = occlude(images, torch.tensor([[0, 0, 8, 8], [2, 2, 6, 6]]))
    assert torch.equal(exact, as_floats) and torch.equal(exact, as_tensor)
    with pytest.raises(ValueError, match=r"box coordinates are whole pixels \(ints\), got \(0, 0, 7.6, 8\)"):
        occlude(images, [(0, 0, 7.6, 8), (2, 2, 6, 6)])
    with pytest.raises(ValueError, match="whole pixels"):
        correspondence(PixelNet().eval(), images, {"p": [(0, 0, 8, 8), (2.5, 2, 6, 6)]}, random_trials=0)


def test_progress_bar_counts_the_occluded_passes(capsys):
    torch.manual_seed(0)
    x = torch.randn(3, 3, 12, 12)
    parts = {"left eye": [(1, 2, 4, 5)] * 3, "nose": [(5, 6, 9, 10)] * 3}
    correspondence(PixelNet().eval(), x, parts, ["relu"], random_trials=5)
    assert "7/7" in capsys.readouterr().err  # two parts and five random trials
    correspondence(PixelNet().eval(), x, parts, ["relu"], random_trials=5, progress=False)
    assert "correspondence" not in capsys.readouterr().err
    with pytest.raises(TypeError, match="progress"):
        correspondence(PixelNet().eval(), x, parts, ["relu"], progress="yes")


class _Scaled(nn.Module):
    """``model`` on its input times ``factor``: a positively homogeneous model's features all
    scale by ``factor``, and every sign of every change stays the same."""

    def __init__(self, model: nn.Module, factor: float) -> None:
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, x):
        return self.model(x * self.factor)


def test_the_table_does_not_depend_on_the_scale_of_the_features():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(6, 8, 3, padding=1, bias=False), nn.ReLU()).eval()
    x = torch.randn(4, 3, 16, 16)
    parts = {"corner": [(0, 0, 6, 6)] * 4, "middle": [(5, 5, 11, 11), (4, 6, 10, 12), (6, 4, 12, 10), (5, 5, 11, 11)]}
    plain = correspondence(model, x, parts, ["4"], random_trials=3, progress=False)
    tiny = correspondence(_Scaled(model, 1e-8), x, parts, ["model.4"], random_trials=3, progress=False)
    for row in (*parts, RANDOM):
        assert plain.mean[row]["4"] > 0  # the occluders change the features
        assert tiny.mean[row]["model.4"] == pytest.approx(plain.mean[row]["4"], abs=1e-12)


def test_batches_give_the_result_of_one_pass_and_run_in_passes_of_that_many_images(monkeypatch):
    from cnnwidgets import Probe

    torch.manual_seed(0)
    model = PixelNet().eval()
    x = torch.randn(5, 3, 12, 12, generator=torch.Generator().manual_seed(4))
    parts = {"a": [(0, 0, 4, 4)] * 5, "b": [(5, 5, 9, 9)] * 5}
    whole = correspondence(model, x, parts, ["relu", "relu_fc"], random_trials=2, progress=False)
    with Probe(model) as probe:
        sizes = capture_batch_sizes(monkeypatch, probe)
        split = correspondence(probe, x, parts, ["relu", "relu_fc"], random_trials=2, batch_size=2, progress=False)
    assert set(sizes) == {2, 1} and sizes.count(1) == 1 + 2 + 2  # the reference, two parts, two trials
    for part in whole.parts:
        for layer in whole.layers:
            assert split.mean[part][layer] == pytest.approx(whole.mean[part][layer], abs=1e-12)
    with pytest.raises(ValueError, match="batch_size"):
        correspondence(model, x, parts, ["relu"], batch_size=0)


def test_the_view_shows_the_occluder_the_table_was_computed_with():
    from cnnwidgets.app.experiments import correspondence_view

    torch.manual_seed(0)
    model = PixelNet().eval()
    x = torch.rand(2, 3, 12, 12)
    parts = {"eye": [(1, 2, 4, 5), (2, 2, 5, 5)]}
    result = correspondence(model, x, parts, ["pixels"], random_trials=2, fill=-1.5)
    assert result.fill == -1.5
    view = correspondence_view(result, x, parts)  # the result's own fill, not 0.0
    try:
        assert view.controller.fill == -1.5
        view.part, view.occluded = "eye", True
        assert not view.error
    finally:
        view.close()
    with pytest.raises(ValueError, match=r"fill 0.0 is not the fill the table was computed with, -1.5"):
        correspondence_view(result, x, parts, fill=0.0)
    same = correspondence_view(result, x, parts, fill=[-1.5, -1.5, -1.5])  # the same value per channel
    assert same.controller.fill == [-1.5, -1.5, -1.5]
    same.close()
