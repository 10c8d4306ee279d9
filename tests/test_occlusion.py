"""Occlusion sensitivity: geometry, known answers, Captum equality, streaming, cancel, rendering."""

from __future__ import annotations

import copy
import json
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from cnnwidgets import ChannelActivation, ClassLogit, ClassProbability, ModelSnapshot, Probe
from cnnwidgets.methods._fold import inference_copy
from cnnwidgets.methods.occlusion import (
    _axis_levels,
    PREVIEW_MIN,
    PREVIEW_SHARE,
    TopClassProbability,
    preview_count,
    grid_shape,
    grid_to_pixel_attribution,
    occlusion_map,
    occlusion_top_class,
    scan_order,
)
from cnnwidgets.render.occlusion import (
    fill_nearest,
    grid_to_pixels,
    label_colors,
    label_overlay,
    occlusion_overlay,
)
from tests.helpers import FailsAtTheLastPosition, HeadFirst, ScalesInPlace, batch_statistics_net

captum_attr = pytest.importorskip("captum.attr")


# ---------------------------------------------------------------------------- models


class RegionSum(nn.Module):
    """Class 0 scores the sum of x over a fixed region (all channels); class 1 is a constant."""

    def __init__(self, rows: tuple[int, int], cols: tuple[int, int], constant: float = 0.0) -> None:
        super().__init__()
        self.rows, self.cols, self.constant = rows, cols, constant

    def forward(self, x):
        s = x[:, :, self.rows[0]:self.rows[1], self.cols[0]:self.cols[1]].sum(dim=(1, 2, 3))
        return torch.stack([s, torch.full_like(s, self.constant)], dim=1)


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu1 = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 12, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(12)
        self.relu2 = nn.ReLU()
        self.head = nn.Linear(12, 5)

    def forward(self, x):
        x = self.pool(self.relu1(self.bn1(self.conv1(x))))
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.head(x.mean(dim=(2, 3)))


class TinyVGG(nn.Module):
    """CNN Explainer's TinyVGG (4 conv + linear, 64x64 input in [0, 1]), per shared/data/README.md."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_1_1 = nn.Conv2d(3, 10, 3)
        self.conv_1_2 = nn.Conv2d(10, 10, 3)
        self.conv_2_1 = nn.Conv2d(10, 10, 3)
        self.conv_2_2 = nn.Conv2d(10, 10, 3)
        self.output = nn.Linear(1690, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv_1_2(F.relu(self.conv_1_1(x)))), 2)
        x = F.max_pool2d(F.relu(self.conv_2_2(F.relu(self.conv_2_1(x)))), 2)
        return self.output(x.flatten(1))


def randomize_batchnorm(model: nn.Module) -> nn.Module:
    """Non-trivial eval statistics, so that folding batch norm actually changes the weights."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return model.eval()


def small_cnn() -> nn.Module:
    return randomize_batchnorm(SmallCNN())


def captum_occlusion(forward, x, target, window, stride, baseline, ppe=16) -> torch.Tensor:
    c = x.shape[1]
    return captum_attr.Occlusion(forward).attribute(
        x, sliding_window_shapes=(c, *window), strides=(c, *stride), baselines=baseline,
        target=target, perturbations_per_eval=ppe,
    )


def assert_matches_captum(result, captum: torch.Tensor) -> None:
    ours = torch.from_numpy(result.pixel_attribution())
    assert not torch.isnan(ours).any()
    scale = max(1.0, abs(result.unoccluded))
    for channel in range(captum.shape[1]):  # Captum repeats the value in every channel
        torch.testing.assert_close(ours, captum[0, channel], rtol=1e-4, atol=2e-5 * scale)
    assert captum.abs().max() > 1e-4 * scale, "the comparison must not be between two all-zero maps"


# ---------------------------------------------------------------------------- geometry


def test_grid_shape_keeps_windows_inside_the_image():
    assert grid_shape((224, 224), 32, 8) == (25, 25)
    assert grid_shape((224, 224), 32, 16) == (13, 13)
    assert grid_shape((10, 12), (3, 4), (2, 3)) == (4, 3)  # last corners (6, 6): windows end at 9 and 10
    assert grid_shape((5, 5), 5, 3) == (1, 1)


def test_position_convention_top_left_corner_at_i_times_stride():
    # A model that reads one pixel: only windows covering it change the score.
    y0, x0 = 7, 4
    model = RegionSum((y0, y0 + 1), (x0, x0 + 1))
    x = torch.zeros(1, 1, 12, 11)
    result = occlusion_map(model, x, 0, window=(3, 4), stride=(2, 3), fill=-1.0, progress=False)
    assert result.shape == (5, 3) and result.window == (3, 4) and result.stride == (2, 3)
    for i in range(5):
        for j in range(3):
            covers = i * 2 <= y0 < i * 2 + 3 and j * 3 <= x0 < j * 3 + 4
            assert result.grid[i, j] == (-1.0 if covers else 0.0), (i, j)
    assert (result.corners[4, 2] == (8, 6)).all()


@pytest.mark.parametrize("huge", [2**62, 2**63, 2**64])
def test_a_stride_beyond_the_image_gives_the_map_of_a_stride_of_the_image_size(huge):
    # One position on that axis either way; a stride past int64 once overflowed in the corner,
    # transposed-convolution and nearest-centre arithmetic.
    model = RegionSum((1, 2), (4, 5))  # a pixel the windows of the one row of positions cover
    x = torch.rand(1, 1, 12, 11)
    expected = occlusion_map(model, x, 0, window=(3, 4), stride=(12, 3), fill=-1.0, progress=False)
    result = occlusion_map(model, x, 0, window=(3, 4), stride=(huge, 3), fill=-1.0, progress=False)
    assert result.shape == (1, 3) and result.stride == (12, 3)
    assert np.ptp(expected.grid) > 0  # the map is not blank
    np.testing.assert_array_equal(result.grid, expected.grid)
    np.testing.assert_array_equal(result.pixel_attribution(), expected.pixel_attribution())
    for kwargs in ({"window": (3, 4), "stride": (huge, 3)}, {"window": (3, 4), "stride": (12, 3)}):
        attribution = grid_to_pixel_attribution(expected.grid, expected.unoccluded, image_size=(12, 11), **kwargs)
        np.testing.assert_array_equal(attribution, expected.pixel_attribution())
        for upsample in ("nearest", "mean"):
            pixels = grid_to_pixels(expected.grid, (12, 11), upsample=upsample, **kwargs)
            np.testing.assert_array_equal(
                pixels, grid_to_pixels(expected.grid, (12, 11), window=(3, 4), stride=(12, 3), upsample=upsample))


@pytest.mark.parametrize("layer", ["7", "3", 0, ""])
def test_the_top_class_target_refuses_a_layer(layer):
    # it reads the model's output; a layer once made it score that layer's activation silently
    with pytest.raises(ValueError, match=r"layer is always None; got layer=.*ChannelActivation"):
        TopClassProbability(layer=layer)
    assert TopClassProbability().layer is None and TopClassProbability(None).layer is None


def test_known_answer_linear_region_model():
    rows, cols = (3, 8), (5, 11)
    model = RegionSum(rows, cols)
    x = torch.ones(1, 3, 12, 14)
    window, stride = (3, 4), (2, 3)
    result = occlusion_map(model, x, ClassLogit(0), window=window, stride=stride, progress=False)
    area = (rows[1] - rows[0]) * (cols[1] - cols[0])
    assert result.unoccluded == 3 * area
    expected = np.zeros(result.shape, dtype=np.float32)
    for i in range(result.shape[0]):
        for j in range(result.shape[1]):
            dy = max(0, min(rows[1], i * 2 + 3) - max(rows[0], i * 2))
            dx = max(0, min(cols[1], j * 3 + 4) - max(cols[0], j * 3))
            expected[i, j] = 3 * (area - dy * dx)
    np.testing.assert_array_equal(result.grid, expected)
    assert result.complete and result.filled.all() and not result.cancelled
    np.testing.assert_array_equal(result.drop, 3 * area - expected)


def test_fill_options():
    model = RegionSum((2, 6), (3, 7))
    x = torch.rand(1, 3, 10, 10)
    run = lambda fill: occlusion_map(model, x, 0, window=3, stride=1, fill=fill, progress=False).grid  # noqa: E731
    means = x.mean(dim=(2, 3))[0]
    np.testing.assert_allclose(run("mean"), run(means), rtol=1e-6)
    np.testing.assert_allclose(run(means.tolist()), run(means.view(3, 1, 1)), rtol=1e-6)
    np.testing.assert_array_equal(run(lambda img: torch.zeros_like(img)), run(0.0))
    # A fill image: the window shows that image instead of x.
    other = torch.rand(3, 10, 10)
    by_hand = []
    for i in range(8):
        for j in range(8):
            occluded = x.clone()
            occluded[0, :, i:i + 3, j:j + 3] = other[:, i:i + 3, j:j + 3]
            by_hand.append(float(model(occluded)[0, 0]))
    np.testing.assert_allclose(run(other), np.array(by_hand).reshape(8, 8), rtol=1e-5)


@pytest.mark.parametrize("fill", [
    float("nan"), float("inf"), np.float32("-inf"), torch.tensor([0.0, float("nan"), 0.0]),
    lambda img: torch.full_like(img, float("nan")),
])
def test_a_fill_that_is_not_finite_is_refused_not_turned_into_a_map_of_nans(fill):
    model = RegionSum((2, 6), (3, 7))
    x = torch.rand(1, 3, 10, 10)
    with pytest.raises(ValueError, match="not finite|finite number"):
        occlusion_map(model, x, 0, window=3, stride=1, fill=fill, progress=False)
    with pytest.raises(ValueError, match="not finite|finite number"):
        occlusion_top_class(model, x, window=3, stride=1, fill=fill, progress=False)


def test_the_geometry_helpers_name_what_they_accept():
    grid = np.random.default_rng(0).random((4, 4))
    kw = {"window": 8, "stride": 8, "image_size": (32, 32)}
    with pytest.raises(ValueError, match="unoccluded must be a finite number, got nan"):
        grid_to_pixel_attribution(grid, float("nan"), **kw)
    with pytest.raises(TypeError, match="unoccluded must be a number, got str '1'"):
        grid_to_pixel_attribution(grid, "1", **kw)
    with pytest.raises(ValueError, match=r"image_size must be \(H, W\), two positive ints; got \(3, 32, 32\); "
                                         r"for an image x of shape \(1, C, H, W\) pass x.shape\[-2:\]"):
        grid_to_pixel_attribution(grid, 1.0, window=8, stride=8, image_size=(3, 32, 32))
    with pytest.raises(ValueError, match=r"image_size must be \(H, W\)"):
        grid_shape(32, 8, 8)
    assert grid_shape(torch.Size([32, 24]), 8, 8) == grid_shape(np.array([32, 24]), 8, 8) == (4, 3)
    assert np.isfinite(grid_to_pixel_attribution(grid, np.float32(1.0), **kw)).all()
    with pytest.raises(TypeError, match="rows must be an int >= 0, got float 2.5"):
        scan_order(2.5, 3)
    assert scan_order(np.int64(2), 3)[0].shape == (6, 2)


# ---------------------------------------------------------------------------- Captum


@pytest.mark.parametrize("fill", [0.0, 0.3, "per-channel"])
def test_equals_captum_on_small_cnn_logit_and_probability(fill):
    model = small_cnn()
    x = torch.randn(1, 3, 20, 20)
    if fill == "per-channel":
        fill = torch.tensor([0.2, -0.5, 1.0])
        baseline = fill.view(1, 3, 1, 1)
    else:
        baseline = fill
    window, stride = (4, 4), (2, 2)
    logit = occlusion_map(model, x, ClassLogit(1), window=window, stride=stride, fill=fill, progress=False)
    assert_matches_captum(logit, captum_occlusion(model, x, 1, window, stride, baseline))
    prob = occlusion_map(model, x, ClassProbability(2), window=window, stride=stride, fill=fill, progress=False)
    softmax = lambda t: torch.softmax(model(t), dim=1)  # noqa: E731
    assert_matches_captum(prob, captum_occlusion(softmax, x, 2, window, stride, baseline))


@pytest.mark.parametrize("fold", [True, False])
def test_equals_captum_on_resnet18(fold):
    model = randomize_batchnorm(torchvision.models.resnet18(weights=None))
    x = torch.randn(1, 3, 64, 64)
    result = occlusion_map(model, x, 7, window=16, stride=8, fold_batchnorm=fold, progress=False)
    assert result.shape == (7, 7)
    assert_matches_captum(result, captum_occlusion(model, x, 7, (16, 16), (8, 8), 0.0))


def test_equals_captum_on_tinyvgg_from_shared_data(shared_data):
    from PIL import Image

    folder = shared_data / "tinyvgg-cnn-explainer"
    model = TinyVGG()
    model.load_state_dict(torch.load(folder / "tinyvgg_state_dict.pth", weights_only=True, map_location="cpu"))
    model.eval()
    classes = json.loads((folder / "classes.json").read_text())
    image = np.asarray(Image.open(folder / "images" / "koala_1.jpeg").convert("RGB"), dtype=np.float32) / 255.0
    x = torch.from_numpy(image).permute(2, 0, 1)[None].contiguous()
    label = next(int(i) for i, name in classes.items() if name == "koala")
    result = occlusion_map(model, x, ClassProbability(label), window=8, stride=4, fill=0.5, progress=False)
    assert result.unoccluded_label == label  # the photo is classified correctly
    assert result.shape == (15, 15)
    softmax = lambda t: torch.softmax(model(t), dim=1)  # noqa: E731
    assert_matches_captum(result, captum_occlusion(softmax, x, label, (8, 8), (4, 4), 0.5, ppe=64))


# ---------------------------------------------------------------------------- batching and order


def test_batch_size_and_order_do_not_change_the_map():
    model = small_cnn()
    x = torch.randn(1, 3, 24, 24)
    kwargs = dict(window=6, stride=3, progress=False)
    reference = occlusion_map(model, x, ClassProbability(3), batch_size=1, **kwargs)
    for batch_size in (7, 64, None):
        other = occlusion_map(model, x, ClassProbability(3), batch_size=batch_size, **kwargs)
        np.testing.assert_allclose(other.grid, reference.grid, rtol=1e-5, atol=1e-7)
    raster = occlusion_map(model, x, ClassProbability(3), order="raster", batch_size=5, **kwargs)
    np.testing.assert_allclose(raster.grid, reference.grid, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(raster.labels, reference.labels)


RAN_ON: list[str] = []  # module level: the private copies occlusion runs share it with the test


class ThreadRecorder(nn.Module):
    """A small CNN whose forward notes the thread it runs on (traceable: no data-dependent flow)."""

    def __init__(self, traceable: bool = True) -> None:
        super().__init__()
        self.net = small_cnn()
        self.traceable = traceable

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        RAN_ON.append(threading.current_thread().name)
        if not self.traceable and x.sum() > 1e9:  # a branch on data: torch.fx cannot trace it
            x = x * 0
        return self.net(x)


def test_cpu_batches_run_side_by_side_and_give_the_serial_map():
    x = torch.randn(1, 3, 24, 24)
    kwargs = dict(window=6, stride=3, batch_size=4, progress=False)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        model = ThreadRecorder()
        RAN_ON.clear()
        serial = occlusion_map(model, x, ClassProbability(3), **kwargs)
        assert RAN_ON and not any(name.startswith("cnnwidgets-occlusion") for name in RAN_ON)
        torch.set_num_threads(2)
        RAN_ON.clear()
        parallel = occlusion_map(model, x, ClassProbability(3), **kwargs)
        workers = {name for name in RAN_ON if name.startswith("cnnwidgets-occlusion")}
        assert len(workers) == 2  # two batches at a time, each on its own worker
        np.testing.assert_allclose(parallel.grid, serial.grid, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(parallel.labels, serial.labels)
        assert parallel.complete and parallel.done == serial.done
        # the caller keeps its thread count, and so do threads started later
        assert torch.get_num_threads() == 2
        later = []
        thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
        thread.start()
        thread.join()
        assert later == [2]
        # a model torch.fx cannot trace may keep state in its forward: it runs one batch at a time
        RAN_ON.clear()
        occlusion_map(ThreadRecorder(traceable=False), x, ClassProbability(3), **kwargs)
        assert RAN_ON and not any(name.startswith("cnnwidgets-occlusion") for name in RAN_ON)
    finally:
        torch.set_num_threads(before)


class LooksUpOnOccluded(nn.Module):
    """Runs on the image; on an occluded one (a fill of -100) its own dict lookup fails (a KeyError)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)
        self.scales = {False: 1.0}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean(dim=(2, 3))) * self.scales[bool((x < -50).any())]


def test_a_model_error_of_any_type_on_an_occluded_batch_is_named_as_the_models():
    """A bare KeyError from the model read like the package's own "unknown layer" KeyError."""
    x = torch.randn(1, 3, 12, 12)
    with pytest.raises(RuntimeError, match=r"the model failed on an occluded batch of shape .*: KeyError: True") as info:
        occlusion_map(LooksUpOnOccluded().eval(), x, 0, window=4, stride=2, fill=-100.0, batch_size=4, progress=False)
    assert isinstance(info.value.__cause__, KeyError)


def test_errors_in_parallel_batches_and_callbacks_propagate(cpu_threads):
    x = torch.rand(1, 3, 12, 12) + 0.25  # no zeros: only the occluder makes the corner 0
    with pytest.raises(RuntimeError, match="the model failed on an occluded batch of shape") as info:
        occlusion_map(FailsAtTheLastPosition().eval(), x, 0, window=4, stride=2, fill=0.0, order="raster",
                      batch_size=4, progress=False)
    assert isinstance(info.value.__cause__, KeyError)

    def callback(result):
        raise KeyError("from the callback")

    with pytest.raises(KeyError, match="from the callback"):
        occlusion_map(small_cnn(), x, 0, window=4, stride=2, batch_size=4, progress=False, callback=callback)
    assert torch.get_num_threads() == cpu_threads


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (2, 2), (3, 40), (13, 13), (17, 5), (25, 25), (64, 63)])
def test_coarse_first_order_covers_every_position_once_and_spans_the_image_early(shape):
    rows, cols = shape
    positions, levels = scan_order(rows, cols)
    assert len(positions) == rows * cols
    assert len({(int(i), int(j)) for i, j in positions}) == rows * cols
    assert (np.diff(levels) >= 0).all()
    for level in range(int(levels.max()) + 1):
        prefix = positions[levels <= level]
        used_rows, used_cols = np.unique(prefix[:, 0]), np.unique(prefix[:, 1])
        # each level prefix is a full lattice from edge to edge, evenly refined
        assert len(prefix) == len(used_rows) * len(used_cols)
        assert used_rows[0] == 0 and used_rows[-1] == rows - 1
        assert used_cols[0] == 0 and used_cols[-1] == cols - 1
        for used, n in ((used_rows, rows), (used_cols, cols)):
            if n > 1:
                assert np.diff(used).max() <= -(-(n - 1) // 2**level)
    assert len(positions[levels <= 2]) == min(rows, 5) * min(cols, 5)
    # within a level, the cell centres (new on both axes) come before the edge midpoints
    row_levels, col_levels = _axis_levels(rows), _axis_levels(cols)
    for level in range(1, int(levels.max()) + 1):
        at = positions[levels == level]
        centre = (row_levels[at[:, 0]] == level) & (col_levels[at[:, 1]] == level)
        assert not (np.diff(centre.astype(int)) > 0).any()
    # the preview is a prefix no longer than its share, but at least corners and centre
    count = preview_count(rows, cols)
    assert min(PREVIEW_MIN, rows * cols) <= count <= max(PREVIEW_MIN, PREVIEW_SHARE * rows * cols)
    assert count <= rows * cols


def test_coarse_preview_for_the_standard_grids():
    # stride 8 on a 224 image, window 32: the 5 x 5 lattice, 4 % of the positions
    positions, _ = scan_order(25, 25)
    assert preview_count(25, 25) == 25
    preview = positions[:25]
    assert sorted({int(i) for i in preview[:, 0]}) == [0, 6, 12, 18, 24]
    assert len({(int(i), int(j)) for i, j in preview}) == 25
    # stride 16: a 3 x 3 lattice would be 5.3 %; the four corners and the centre are 3 %
    positions, _ = scan_order(13, 13)
    assert preview_count(13, 13) == 5
    assert sorted(map(tuple, positions[:5].tolist())) == [(0, 0), (0, 12), (6, 6), (12, 0), (12, 12)]
    # then the rest of the 3 x 3 lattice, then the quarter points before the other 5 x 5 points
    assert sorted(map(tuple, positions[5:9].tolist())) == [(0, 6), (6, 0), (6, 12), (12, 6)]
    assert sorted(map(tuple, positions[9:13].tolist())) == [(3, 3), (3, 9), (9, 3), (9, 9)]
    # tiny grids preview with everything they have, up to the corners and the centre
    assert preview_count(1, 1) == 1 and preview_count(2, 2) == 4 and preview_count(3, 3) == 5
    raster, _ = scan_order(3, 4, "raster")
    assert raster.tolist() == [[i, j] for i in range(3) for j in range(4)]


def test_streaming_callbacks_and_preview(cpu_threads):
    model = small_cnn()
    x = torch.randn(1, 3, 40, 40)
    seen = []
    final = occlusion_map(model, x, ClassProbability(0), window=8, stride=2, batch_size=16,
                          callback=seen.append, progress=False)
    total = final.total  # 17 x 17
    assert [r.done for r in seen][-1] == total and seen[-1].complete
    assert all(a.done < b.done for a, b in zip(seen, seen[1:]))
    # 5 x 5 would be 8.7 % of these 289 positions: the 3 x 3 lattice (3.1 %) is the preview,
    # and the batch that completes it ends exactly there
    assert preview_count(17, 17) == 9
    first_ready = next(r for r in seen if r.preview_ready)
    assert first_ready.done == 9 and seen[0] is first_ready
    assert first_ready.filled.sum() == 9 and np.isnan(first_ready.grid).sum() == total - 9
    np.testing.assert_array_equal(first_ready.grid[first_ready.filled], final.grid[first_ready.filled])
    assert (first_ready.labels[~first_ready.filled] == -1).all()
    # the partial map renders over the whole image
    image = np.zeros((40, 40, 3), dtype=np.uint8)
    pixels = grid_to_pixels(first_ready.grid, (40, 40), window=8, stride=2)
    assert not np.isnan(pixels).any()
    assert occlusion_overlay(first_ready.grid, image, window=8, stride=2).shape == (40, 40, 3)


def test_a_first_scan_shows_its_preview_before_preparing_the_fast_copy(cpu_threads, monkeypatch):
    import cnnwidgets.methods.occlusion as occlusion

    events: list[str] = []
    prepare = occlusion._fast_model

    def recording_fast_model(*args, **kwargs):
        events.append("copy")
        return prepare(*args, **kwargs)

    def callback(result):
        if result.preview_ready and "preview" not in events:
            events.append("preview")

    monkeypatch.setattr(occlusion, "_fast_model", recording_fast_model)
    model = small_cnn()  # batch norm with real statistics: the fast copy folds it
    x = torch.randn(1, 3, 40, 40)
    kwargs = dict(window=8, stride=2, batch_size=16, progress=False, callback=callback)
    with Probe(model) as probe:
        first = occlusion_map(probe, x, ClassProbability(0), **kwargs)
        assert events == ["preview", "copy"]  # the preview came through the probe's own copy
        events.clear()
        again = occlusion_map(probe, x, ClassProbability(0), **kwargs)
        assert events == ["copy", "preview"]  # the copy is ready: it computes the preview too
    assert first.complete and again.complete
    np.testing.assert_allclose(first.grid, again.grid, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(first.labels, again.labels)
    assert first.unoccluded == pytest.approx(again.unoccluded, rel=1e-4, abs=1e-6)
    # on a grid too small for a separate preview the copy is prepared first, as before
    events.clear()
    with Probe(model) as probe:
        occlusion_map(probe, x, ClassProbability(0), window=30, stride=5, progress=False, callback=callback)
    assert events == ["copy", "preview"]


def test_each_position_is_scored_on_its_own_when_the_model_uses_batch_statistics(cpu_threads):
    model = batch_statistics_net()
    x = torch.randn(1, 3, 12, 12)
    result = occlusion_map(model, x, ClassLogit(0), window=4, stride=4, batch_size=9, progress=False)
    expected = np.zeros((3, 3), dtype=np.float32)
    with torch.no_grad():
        for i in range(3):
            for j in range(3):
                occluded = x.clone()
                occluded[:, :, 4 * i:4 * i + 4, 4 * j:4 * j + 4] = 0.0
                expected[i, j] = model(occluded)[0, 0]
    np.testing.assert_allclose(result.grid, expected, rtol=1e-5, atol=1e-6)


def test_cancel_returns_a_partial_result_marked_with_nans(cpu_threads):
    model = small_cnn()
    x = torch.randn(1, 3, 24, 24)
    stop = threading.Event()
    full = occlusion_map(model, x, 1, window=4, stride=2, progress=False)
    partial = occlusion_map(model, x, 1, window=4, stride=2, batch_size=10, progress=False,
                            cancel=stop, callback=lambda r: stop.set())
    assert partial.cancelled and not partial.complete
    assert partial.done == 5  # the first batch ends where the preview (corners, centre) of the 11 x 11 grid is complete
    assert np.isnan(partial.grid).sum() == partial.total - 5
    np.testing.assert_array_equal(partial.filled, ~np.isnan(partial.grid))
    np.testing.assert_allclose(partial.grid[partial.filled], full.grid[partial.filled], rtol=1e-6)
    covered = np.zeros((24, 24), dtype=bool)  # pixels under a computed window
    for i, j in zip(*np.nonzero(partial.filled)):
        covered[2 * i:2 * i + 4, 2 * j:2 * j + 4] = True
    np.testing.assert_array_equal(~np.isnan(partial.pixel_attribution()), covered)
    nothing = occlusion_map(model, x, 1, window=4, stride=2, cancel=lambda: True, progress=False)
    assert nothing.cancelled and nothing.done == 0 and np.isnan(nothing.grid).all()
    assert nothing.unoccluded == pytest.approx(full.unoccluded, rel=1e-5)


# a 3 x 3 grid runs as one batch, and the inference copy is made before it; an 11 x 11 grid makes
# it after the preview batch
@pytest.mark.parametrize("stride", [8, 2])
def test_a_scan_cancelled_before_it_starts_prepares_no_inference_copy(cpu_threads, monkeypatch, stride):
    from cnnwidgets.methods import occlusion as occ

    made = []
    real = occ._fast_model
    monkeypatch.setattr(occ, "_fast_model", lambda *a, **k: made.append(1) or real(*a, **k))
    model, x = small_cnn(), torch.randn(1, 3, 24, 24)
    with Probe(model) as probe:
        full = occlusion_map(probe, x, 1, window=4, stride=stride, progress=False)
        assert made  # the scan does make one
        occ._FAST_COPIES.pop(probe, None)  # forgotten: a new scan would make it again
        made.clear()
        nothing = occlusion_map(probe, x, 1, window=4, stride=stride, progress=False, cancel=lambda: True)
    assert not made and nothing.cancelled and nothing.done == 0 and np.isnan(nothing.grid).all()
    assert nothing.unoccluded == pytest.approx(full.unoccluded, rel=1e-5)


# ---------------------------------------------------------------------------- targets


def test_channel_target_at_an_internal_layer_runs_prefix_only():
    model = small_cnn()
    x = torch.randn(1, 3, 16, 16)
    target = ChannelActivation("conv2", 5, reduce="sum")
    with Probe(model) as probe:
        probe.describe((3, 16, 16))
        probe.reset_stats()
        result = occlusion_map(probe, x, target, window=4, stride=4, batch_size=8, progress=False)
        assert probe.stats.full_forwards == 0
        assert probe.stats.forwards == 1 + 2  # unoccluded + 16 positions in 2 batches
        assert probe.stats.cache_misses == 1  # occluded batches are not cached
        assert result.labels is None and result.unoccluded_label is None
        expected = []
        for i in range(4):
            for j in range(4):
                occluded = x.clone()
                occluded[:, :, 4 * i:4 * i + 4, 4 * j:4 * j + 4] = 0.0
                expected.append(float(target(probe.capture(occluded, "conv2")["conv2"])[0]))
    np.testing.assert_allclose(result.grid.ravel(), expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        conv2 = model.conv2(model.pool(model.relu1(model.bn1(model.conv1(x)))))
    assert result.unoccluded == pytest.approx(float(target(conv2)[0]), rel=1e-5)
    # on a new probe the layers are described once, at the image's size (not at a default size)
    for any_target in (target, ClassProbability(1)):
        with Probe(model) as probe:
            occlusion_map(probe, x, any_target, window=4, stride=4, progress=False)
            assert probe.stats.discoveries == 1 and probe.input_size == (3, 16, 16)


def test_top_class_per_position():
    rows, cols = (2, 6), (2, 6)
    area = 16
    model = RegionSum(rows, cols, constant=3 * area - 1.5)  # class 1 wins once any pixel of the region is covered
    x = torch.ones(1, 3, 10, 10)
    result = occlusion_top_class(model, x, window=2, stride=2, progress=False)
    assert result.unoccluded_label == 0
    for i in range(5):
        for j in range(5):
            covers = max(0, min(rows[1], 2 * i + 2) - max(rows[0], 2 * i)) * max(0, min(cols[1], 2 * j + 2) - max(cols[0], 2 * j))
            assert result.labels[i, j] == (1 if covers else 0)
    logits = torch.tensor([[3.0 * area, 3 * area - 1.5]])
    assert result.unoccluded == pytest.approx(float(torch.softmax(logits, 1).max()))
    assert (result.grid >= 0.5).all()


def test_a_single_output_unit_has_no_top_class():
    # one logit scores one class of two (p = sigmoid): "the most probable class" has no index to report
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1)).eval()
    x = torch.randn(1, 3, 12, 12)
    with pytest.raises(ValueError, match=r"single output unit.*ClassProbability\(0\)"):
        occlusion_top_class(model, x, window=4, stride=4, progress=False)
    result = occlusion_map(model, x, ClassProbability(0), window=4, stride=4, progress=False)
    assert result.labels is None and result.unoccluded_label is None
    with torch.no_grad():
        assert result.unoccluded == pytest.approx(float(torch.sigmoid(model(x))[0, 0]), rel=1e-5)


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(window=0, stride=1), ValueError, "window must be a positive int or a pair"),
        (dict(window=(3,), stride=1), ValueError, "window must be"),
        (dict(window=2.5, stride=1), ValueError, "window must be"),
        (dict(window=True, stride=1), ValueError, "window must be"),
        (dict(window=(20, 3), stride=1), ValueError, "must fit inside the image"),
        (dict(window=3, stride=0), ValueError, "stride must be a positive int or a pair"),
        (dict(window=3, stride=(1, 1.5)), ValueError, "stride must be"),
        (dict(window=3, stride=1, order="random"), ValueError, "order must be one of"),
        (dict(window=3, stride=1, batch_size=0), ValueError, r"batch_size \(None: automatic\) must be an int >= 1, got 0"),
        # a wrong type is a TypeError, as for every count
        (dict(window=3, stride=1, batch_size=True), TypeError, "batch_size .*must be an int >= 1, got bool True"),
        (dict(window=3, stride=1, batch_size=1.0), TypeError, "batch_size .*must be an int >= 1, got float 1.0"),
        (dict(window=3, stride=1, fold_batchnorm=1), TypeError, "fold_batchnorm must be True or False, got int 1"),
        (dict(window=3, stride=1, fill="gray"), ValueError, "fill must be"),
        (dict(window=3, stride=1, fill=torch.zeros(2)), ValueError, "got shape"),
        (dict(window=3, stride=1, cancel=5), TypeError, "cancel must be a threading.Event"),
    ],
)
def test_bad_arguments_raise_specific_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        occlusion_map(small_cnn(), torch.randn(1, 3, 12, 12), 0, progress=False, **kwargs)


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (torch.randn(3, 12, 12), "unsqueeze"),
        (torch.randn(2, 3, 12, 12), "one image"),
        (torch.zeros(1, 3, 12, 12, dtype=torch.uint8), "float"),
    ],
)
def test_bad_input_raises(x, message):
    with pytest.raises(ValueError, match=message):
        occlusion_map(small_cnn(), x, 0, window=3, stride=1, progress=False)


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("cat", TypeError),
        (ClassLogit(99), IndexError),
        (ChannelActivation("conv9", 0), KeyError),
        (ChannelActivation("conv2", 99, reduce="sum"), IndexError),
    ],
)
def test_bad_targets_raise(target, error):
    with pytest.raises(error):
        occlusion_map(small_cnn(), torch.randn(1, 3, 12, 12), target, window=3, stride=3, progress=False)


class Returns:
    """A target callable on the model output that returns whatever ``fn`` makes of it."""

    layer = None

    def __init__(self, fn) -> None:
        self.fn = fn

    def __call__(self, activation):
        return self.fn(activation)


@pytest.mark.parametrize(
    ("fn", "error", "message"),
    [
        (lambda a: 1.0, TypeError, "must return a tensor .* got a float"),
        (lambda a: a[:, 0].numpy(), TypeError, "must return a tensor .* got a ndarray"),
        (lambda a: a.flatten(1)[:, :1], ValueError, r"one score per image, shape \(1,\); got \(1, 1\)"),
        (lambda a: a[:, 0].sum(), ValueError, r"shape \(1,\); got \(\)"),
    ],
)
def test_target_results_that_are_not_one_score_per_image_are_named(fn, error, message):
    for layer_target in (False, True):
        target = Returns(fn)
        if layer_target:
            target.layer = "conv2"
        with pytest.raises(error, match=message):
            occlusion_map(small_cnn(), torch.randn(1, 3, 12, 12), target, window=3, stride=3, progress=False)


def test_device_argument_belongs_to_the_model_form():
    with Probe(small_cnn()) as probe, pytest.raises(ValueError, match="probe.to"):
        occlusion_map(probe, torch.randn(1, 3, 8, 8), 0, window=4, stride=4, device="cpu", progress=False)
    # None (the default) is "auto" for a model, and the probe's own device for a probe
    model, x = small_cnn().eval(), torch.randn(1, 3, 8, 8)
    auto = occlusion_map(model, x, 0, window=4, stride=4, device="auto", progress=False)
    default = occlusion_map(model, x, 0, window=4, stride=4, progress=False)
    np.testing.assert_allclose(auto.grid, default.grid, rtol=1e-5, atol=1e-6)
    with Probe(model) as probe:
        np.testing.assert_allclose(occlusion_map(probe, x, 0, window=4, stride=4, progress=False).grid, default.grid,
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scan", [occlusion_map, occlusion_top_class])
def test_progress_must_be_a_bool_like_every_other_progress_flag(scan, capsys):
    target = (0,) if scan is occlusion_map else ()
    for bad in ("no", 0, None):
        with pytest.raises(TypeError, match="progress must be True or False, got"):
            scan(small_cnn(), torch.randn(1, 3, 8, 8), *target, window=4, stride=4, progress=bad)
    scan(small_cnn(), torch.randn(1, 3, 8, 8), *target, window=4, stride=4, progress=np.bool_(False))
    assert "pos" not in capsys.readouterr().err


# ---------------------------------------------------------------------------- inference copy


def test_folded_resnet_matches_and_leaves_the_original_alone():
    model = randomize_batchnorm(torchvision.models.resnet18(weights=None))
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    snapshot = ModelSnapshot.take(model)
    folded, report = inference_copy(model)
    snapshot.assert_unchanged(model)
    assert report.traced and len(report.folded) == 20  # 17 conv + bn pairs, 3 downsample pairs
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert "layer1.0.relu" in report.inplace
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)


def test_tracing_for_the_fold_leaves_forward_passes_on_other_threads_alone():
    # torch.fx patches nn.Module.__call__ process-wide while it traces; the explorer's workers
    # (and the user's own code) keep running models on other threads meanwhile
    tracing, release = threading.Event(), threading.Event()

    class Pause(nn.Module):
        def forward(self, x):  # traced through (not a torch.nn module): runs during the trace
            tracing.set()
            release.wait(10)
            return x

    traced = randomize_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), Pause(), nn.ReLU()))
    other = SmallCNN().eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        expected = other(x)
    done: dict = {}
    worker = threading.Thread(target=lambda: done.update(result=inference_copy(traced)))
    worker.start()
    try:
        assert tracing.wait(10)
        with torch.no_grad():
            during = other(x)  # while the trace is under way
    finally:
        release.set()
        worker.join(10)
    torch.testing.assert_close(during, expected)
    _, report = done["result"]
    assert report.traced and report.folded == [("0", "1")]


def test_fold_skips_shared_outputs_and_untraceable_models():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.bn = nn.BatchNorm2d(4)
            self.relu = nn.ReLU()

        def forward(self, x):
            y = self.conv(x)
            return self.relu(self.bn(y)) + y  # conv output read twice: no fold; bn output private

    class Dynamic(SmallCNN):
        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow cannot be traced
                x = -x
            return super().forward(x)

    shared = randomize_batchnorm(Shared())
    copy_, report = inference_copy(shared)
    assert report.folded == [] and report.inplace == ["relu"]
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(copy_(x), shared(x))
    dynamic = randomize_batchnorm(Dynamic())
    copy_, report = inference_copy(dynamic)
    assert not report.traced and report.folded == [] and report.reason
    with torch.no_grad():
        torch.testing.assert_close(copy_(x.repeat(1, 1, 2, 2)), dynamic(x.repeat(1, 1, 2, 2)))


def test_relu_reading_a_shared_tensor_stays_out_of_place():
    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.relu = nn.ReLU()

        def forward(self, x):
            y = self.conv(x)
            return self.relu(y) - y

    model = Branch().eval()
    copy_, report = inference_copy(model)
    assert report.inplace == []
    x = torch.randn(1, 3, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(copy_(x), model(x))


def test_probe_copy_is_refreshed_after_the_user_changes_the_model():
    model = small_cnn()
    x = torch.randn(1, 3, 12, 12)
    with Probe(model) as probe:
        before = occlusion_map(probe, x, 2, window=4, stride=4, progress=False)
        with torch.no_grad():
            model.head.bias.add_(1.0)
        after = occlusion_map(probe, x, 2, window=4, stride=4, progress=False)
    np.testing.assert_allclose(after.grid, before.grid + 1.0, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    model = small_cnn()
    x = torch.randn(1, 3, 24, 24)
    cpu = occlusion_map(model, x, ClassProbability(1), window=6, stride=3, device="cpu", progress=False)
    gpu = occlusion_map(model, x, ClassProbability(1), window=6, stride=3, device="cuda", progress=False)
    np.testing.assert_allclose(gpu.grid, cpu.grid, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------- rendering


def test_pixel_attribution_equals_the_renderers_mean_upsampling():
    rng = np.random.default_rng(0)
    for size, window, stride in [((20, 20), (4, 4), (2, 2)), ((23, 19), (5, 3), (4, 4)), ((16, 16), 2, 5)]:
        rows, cols = grid_shape(size, window, stride)
        grid = rng.random((rows, cols)).astype(np.float32)
        a = grid_to_pixel_attribution(grid, 0.25, window=window, stride=stride, image_size=size)
        b = grid_to_pixels(0.25 - grid, size, window=window, stride=stride, upsample="mean")
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(a[~np.isnan(a)], b[~np.isnan(b)], rtol=1e-5, atol=1e-6)
    # stride 5 > window 2 leaves pixels no window covers
    assert np.isnan(a).any()


def test_nearest_upsampling_assigns_each_pixel_to_the_nearest_window_centre():
    grid = np.arange(4, dtype=np.float32).reshape(2, 2)
    pixels = grid_to_pixels(grid, (8, 8), window=4, stride=4)
    expected = np.kron(grid, np.ones((4, 4), dtype=np.float32))
    np.testing.assert_array_equal(pixels, expected)
    # overlapping windows: centres at 1.5, 3.5, 5.5 for window 4 stride 2 on 8 pixels
    row = grid_to_pixels(np.array([[0.0, 1.0, 2.0]]), (4, 8), window=4, stride=2)[0]
    np.testing.assert_array_equal(row, [0, 0, 0, 1, 1, 2, 2, 2])


def test_fill_nearest_and_partial_overlays():
    grid = np.full((5, 5), np.nan, dtype=np.float32)
    grid[0, 0], grid[0, 4], grid[4, 0], grid[4, 4] = 1, 2, 3, 4
    filled = fill_nearest(grid)
    assert filled[1, 1] == 1 and filled[1, 3] == 2 and filled[3, 1] == 3 and filled[3, 4] == 4
    image = np.full((20, 20, 3), 100, dtype=np.uint8)
    overlay = occlusion_overlay(grid, image, window=4, stride=4, alpha=1.0)
    assert overlay.dtype == np.uint8 and overlay.shape == (20, 20, 3)
    assert len({tuple(c) for c in overlay.reshape(-1, 3)}) == 4  # four colours, no hole
    empty = occlusion_overlay(np.full((5, 5), np.nan), image, window=4, stride=4)
    np.testing.assert_array_equal(empty, image)
    centred = occlusion_overlay(grid - 2.5, image / 255.0, window=4, stride=4, center=0.0, alpha=1.0)
    assert centred.shape == (20, 20, 3)


def test_label_overlay_colours_each_class():
    labels = np.array([[0, 0, 3], [-1, 3, 3], [5, -1, -1]])
    image = np.zeros((12, 12, 3), dtype=np.uint8)
    overlay = label_overlay(labels, image, window=4, stride=4, alpha=1.0)
    colours = label_colors(labels)
    assert set(colours) == {0, 3, 5}
    assert tuple(overlay[0, 0]) == colours[0] and tuple(overlay[0, 11]) == colours[3]
    assert tuple(overlay[11, 0]) == colours[5]


def test_render_errors_are_specific():
    grid = np.zeros((3, 3))
    with pytest.raises(ValueError, match="upsample must be one of"):
        grid_to_pixels(grid, (12, 12), window=4, stride=4, upsample="cubic")
    with pytest.raises(ValueError, match="does not match"):
        grid_to_pixels(grid, (16, 16), window=4, stride=4)
    with pytest.raises(ValueError, match="image must be"):
        occlusion_overlay(grid, np.zeros((12, 12, 5)), window=4, stride=4)
    with pytest.raises(ValueError, match="unknown matplotlib colormap"):
        occlusion_overlay(grid, np.zeros((12, 12, 3)), window=4, stride=4, cmap="nope")


def test_result_is_a_snapshot_not_a_live_view(cpu_threads):
    model = small_cnn()
    x = torch.randn(1, 3, 12, 12)
    seen = []
    occlusion_map(model, x, 0, window=4, stride=2, batch_size=4, callback=seen.append, progress=False)
    first = seen[0]
    assert first.done == 4 and first.filled.sum() == 4  # later batches did not write into it
    assert copy.deepcopy(first).grid.shape == first.shape


def test_a_closed_probe_keeps_no_copy_for_occlusion():
    import cnnwidgets.methods.occlusion as occlusion_module

    probe = Probe(randomize_batchnorm(SmallCNN()))
    occlusion_map(probe, torch.randn(1, 3, 16, 16), 0, window=8, stride=8, progress=False)
    assert probe in occlusion_module._FAST_COPIES  # kept for the next map of this probe
    probe.close()  # the probe itself may stay referenced in a notebook
    assert probe not in occlusion_module._FAST_COPIES and probe._model is None and probe._user_model is None


def test_models_that_flatten_with_view_are_scanned_in_the_standard_layout(cpu_threads):
    class ViewNet(nn.Module):  # x.view after a convolution fails on channels-last activations
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, stride=2)
            self.fc = nn.Linear(4 * 7 * 7, 3)

        def forward(self, x):
            return self.fc(F.relu(self.conv(x)).view(x.shape[0], -1))

    torch.manual_seed(0)
    model = ViewNet().eval()
    x = torch.rand(1, 3, 16, 16)
    result = occlusion_map(model, x, ClassLogit(1), window=4, stride=4, batch_size=3, progress=False)
    with torch.no_grad():
        for i, j in [(0, 0), (1, 2), (3, 3)]:
            occluded = x.clone()
            occluded[..., 4 * i : 4 * i + 4, 4 * j : 4 * j + 4] = 0
            assert result.grid[i, j] == pytest.approx(float(model(occluded)[0, 1]), abs=1e-5)


# ---------------------------------------------------------------------------- unusual models and inputs


def hand_occluded(model: nn.Module, x: torch.Tensor, window: int, stride: int) -> torch.Tensor:
    """(rows, cols, classes) outputs of ``model`` for each occluded copy of x (fill 0), each on a copy of its own."""
    rows, cols = grid_shape(x.shape[2:], window, stride)
    out = []
    with torch.no_grad():
        for i in range(rows):
            for j in range(cols):
                occluded = x.clone()
                occluded[..., i * stride : i * stride + window, j * stride : j * stride + window] = 0
                out.append(model(occluded)[0])
    return torch.stack(out).view(rows, cols, -1)


class NormalizesInPlace(nn.Module):
    """Normalises its input in place before ``model``, as some deployed models do."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor([0.4, 0.5, 0.3]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.2, 0.3, 0.25]).view(1, 3, 1, 1))

    def forward(self, x):
        x.sub_(self.mean).div_(self.std)
        return self.model(x)


@pytest.mark.parametrize("batch_size", [None, 1, 3])
@pytest.mark.parametrize("channels_last", [True, False])
def test_models_that_change_their_input_in_place_get_the_scores_of_their_occluded_images(
    cpu_threads, channels_last, batch_size
):
    torch.manual_seed(0)
    model = NormalizesInPlace(ScalesInPlace(small_cnn())).eval()
    x = torch.rand(1, 3, 16, 16)
    x0 = x.clone()
    expected = hand_occluded(model, x, 4, 2)
    probabilities = torch.softmax(expected, dim=-1)
    with Probe(model, channels_last=channels_last) as probe:
        for _ in range(2):  # the same probe again: its kept copy must not have kept a written input
            logit = occlusion_map(probe, x, 2, window=4, stride=2, batch_size=batch_size, progress=False)
            probability = occlusion_map(probe, x, ClassProbability(4), window=4, stride=2, batch_size=batch_size,
                                        progress=False)
            top = occlusion_top_class(probe, x, window=4, stride=2, batch_size=batch_size, progress=False)
            torch.testing.assert_close(torch.from_numpy(logit.grid), expected[..., 2], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(torch.from_numpy(probability.grid), probabilities[..., 4], rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(torch.from_numpy(top.grid), probabilities.amax(-1), rtol=1e-4, atol=1e-6)
            assert (torch.from_numpy(top.labels) == expected.argmax(-1)).all()
            with torch.no_grad():
                assert logit.unoccluded == pytest.approx(float(model(x0.clone())[0, 2]), rel=1e-4, abs=1e-5)
            assert torch.equal(x, x0), "the caller's image must never be written"


class Conv3dStem(nn.Module):
    """A 3-D convolution over (channel, height, width), then 2-D layers: 5-D weights among 4-D ones."""

    def __init__(self) -> None:
        super().__init__()
        self.conv3d = nn.Conv3d(1, 4, 3, padding=1)
        self.conv = nn.Conv2d(12, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        n, _, h, w = x.shape
        y = F.relu(self.conv3d(x[:, None])).reshape(n, -1, h, w)
        return self.fc(F.relu(self.bn(self.conv(y))).mean(dim=(2, 3)))


@pytest.mark.parametrize("channels_last", ["auto", True, False])
@pytest.mark.parametrize("fold", [True, False])
def test_models_with_3d_convolutions_are_scanned(channels_last, fold):
    torch.manual_seed(0)
    model = randomize_batchnorm(Conv3dStem())
    x = torch.rand(1, 3, 16, 16)
    expected = hand_occluded(model, x, 4, 4)[..., 1]
    with Probe(model, channels_last=channels_last) as probe:
        for _ in range(2):  # the first map previews through the probe's copy, the second uses only the kept one
            result = occlusion_map(probe, x, 1, window=4, stride=4, batch_size=3, fold_batchnorm=fold, progress=False)
            torch.testing.assert_close(torch.from_numpy(result.grid), expected, rtol=1e-4, atol=1e-5)


def test_channel_last_images_are_refused_with_a_clear_error():
    with pytest.raises(ValueError, match=r"looks like \(N, H, W, C\).*x.permute\(0, 3, 1, 2\)"):
        occlusion_map(small_cnn(), torch.rand(1, 32, 32, 3), 0, window=8, stride=8, progress=False)
    gray = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with Probe(gray) as probe, pytest.raises(ValueError, match="permute"):
        occlusion_top_class(probe, torch.rand(1, 28, 28, 1), window=7, stride=7, progress=False)
    # a valid input whose width happens to equal the first registered convolution's channels is accepted
    torch.manual_seed(0)
    model = HeadFirst().eval()  # the 16-channel head is registered before the 3-channel stem
    x = torch.rand(1, 3, 20, 16)
    result = occlusion_map(model, x, 0, window=4, stride=4, progress=False)
    expected = hand_occluded(model, x, 4, 4)[..., 0]
    torch.testing.assert_close(torch.from_numpy(result.grid), expected, rtol=1e-4, atol=1e-5)


def test_maps_are_made_under_the_callers_inference_mode():
    torch.manual_seed(0)
    model = NormalizesInPlace(small_cnn()).eval()
    x = torch.rand(1, 3, 16, 16)
    expected = hand_occluded(model, x, 4, 4)[..., 1]
    with torch.inference_mode():
        result = occlusion_map(model, x, 1, window=4, stride=4, batch_size=3, progress=False)
        top = occlusion_top_class(model, x, window=4, stride=4, batch_size=3, progress=False)
    torch.testing.assert_close(torch.from_numpy(result.grid), expected, rtol=1e-4, atol=1e-5)
    assert (torch.from_numpy(top.labels) == hand_occluded(model, x, 4, 4).argmax(-1)).all()


class NotFinite(nn.Module):
    """Batch norm to fold, and an output that is NaN for every input."""

    def __init__(self) -> None:
        super().__init__()
        self.net = small_cnn()

    def forward(self, x):
        return self.net(x) * float("nan")


def test_a_non_finite_output_does_not_blame_the_batch_norm_fold():
    import warnings

    import cnnwidgets.methods.occlusion as occlusion_module

    with Probe(NotFinite().eval()) as probe, warnings.catch_warnings():
        warnings.simplefilter("error")  # no "folding batch norm changed this model's output"
        # the model's own output is not finite: said so, rather than a map that is NaN everywhere
        with pytest.raises(ValueError, match=r"output itself is not finite for a finite input"):
            occlusion_map(probe, torch.rand(1, 3, 16, 16), 0, window=4, stride=4, batch_size=4, progress=False)
        assert probe not in occlusion_module._FAST_COPIES  # the fold was not checked, so no copy is kept


def test_a_model_ending_in_a_sigmoid_module_is_mapped_in_its_own_probabilities():
    torch.manual_seed(0)
    model = nn.Sequential(small_cnn(), nn.Sigmoid()).eval()  # independent probabilities (multi-label)
    x = torch.rand(1, 3, 16, 16)
    expected = hand_occluded(model, x, 4, 4)  # already probabilities: not to be softmaxed again
    with Probe(model) as probe:
        for _ in range(2):  # the first map previews through the probe's copy, the second uses the kept one
            result = occlusion_map(probe, x, ClassProbability(3), window=4, stride=4, batch_size=3, progress=False)
            top = occlusion_top_class(probe, x, window=4, stride=4, batch_size=3, progress=False)
            torch.testing.assert_close(torch.from_numpy(result.grid), expected[..., 3], rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(torch.from_numpy(top.grid), expected.amax(-1), rtol=1e-4, atol=1e-6)
        assert probe.output_activation == "sigmoid"


def test_the_rewrite_check_allows_tensorfloat32_rounding_only_where_it_is_on():
    from cnnwidgets.methods.occlusion import _agreement_tolerance

    cudnn, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        cpu = _agreement_tolerance(torch.device("cpu"))
        torch.backends.cudnn.allow_tf32 = True
        assert _agreement_tolerance(torch.device("cuda")) > cpu  # TF32's 10-bit mantissa
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        assert _agreement_tolerance(torch.device("cuda")) == cpu == (1e-3, 1e-4)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = cudnn, matmul


# ---------------------------------------------------------------------------- other classes from one scan


def test_for_class_equals_a_scan_of_that_class(cpu_threads):
    model = small_cnn()
    x = torch.randn(1, 3, 20, 20)
    kw = dict(window=6, stride=2, batch_size=7, progress=False)
    with Probe(model) as probe:
        kept = occlusion_map(probe, x, ClassProbability(1), keep_class_probabilities=True, **kw)
        probabilities = kept.class_probabilities
        assert probabilities.shape == (*kept.shape, 5) and probabilities.dtype == np.float32
        assert not probabilities.flags.writeable and not kept.unoccluded_probabilities.flags.writeable
        np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, rtol=1e-5)  # softmax of the logits
        np.testing.assert_array_equal(probabilities.argmax(axis=-1), kept.labels)
        for k in (0, 3, 1):
            fresh = occlusion_map(probe, x, ClassProbability(k), **kw)
            looked_up = kept.for_class(k)
            assert looked_up.target == ClassProbability(k)
            np.testing.assert_allclose(looked_up.grid, fresh.grid, rtol=1e-5, atol=1e-7)
            assert looked_up.unoccluded == pytest.approx(fresh.unoccluded, rel=1e-5)
            np.testing.assert_array_equal(looked_up.labels, fresh.labels)
            assert looked_up.complete and looked_up.unoccluded_label == fresh.unoccluded_label
            assert np.ptp(looked_up.grid) > 0  # the maps compared are not constant
        assert kept.for_class(3).for_class(1).grid.tobytes() == kept.for_class(1).grid.tobytes()
        # a logit target keeps the probabilities too; a probability target's outputs kind is kept
        logit = occlusion_map(probe, x, ClassLogit(2), keep_class_probabilities=True, **kw)
        np.testing.assert_allclose(logit.for_class(4).grid, kept.for_class(4).grid, rtol=1e-5, atol=1e-7)
        multilabel = occlusion_map(probe, x, ClassProbability(0, outputs="multilabel_logits"),
                                   keep_class_probabilities=True, **kw)
        fresh = occlusion_map(probe, x, ClassProbability(2, outputs="multilabel_logits"), **kw)
        assert multilabel.for_class(2).target == ClassProbability(2, outputs="multilabel_logits")
        np.testing.assert_allclose(multilabel.for_class(2).grid, fresh.grid, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("last", [nn.Softmax(dim=1), nn.Sigmoid()], ids=["softmax", "sigmoid"])
def test_for_class_reads_a_model_ending_in_probabilities_as_they_are(last):
    torch.manual_seed(0)
    model = nn.Sequential(small_cnn(), last).eval()
    x = torch.rand(1, 3, 16, 16)
    expected = hand_occluded(model, x, 4, 4)  # already probabilities: not to be softmaxed again
    with Probe(model) as probe:
        kept = occlusion_map(probe, x, ClassProbability(0), window=4, stride=4, batch_size=3, progress=False,
                             keep_class_probabilities=True)
        torch.testing.assert_close(torch.tensor(kept.class_probabilities), expected, rtol=1e-4, atol=1e-6)
        for k in (2, 4):
            fresh = occlusion_map(probe, x, ClassProbability(k), window=4, stride=4, batch_size=3, progress=False)
            np.testing.assert_allclose(kept.for_class(k).grid, fresh.grid, rtol=1e-5, atol=1e-7)
            with torch.no_grad():
                assert kept.for_class(k).unoccluded == pytest.approx(float(model(x)[0, k]), rel=1e-5)


def test_partial_results_keep_the_probabilities_of_their_own_positions_only(cpu_threads):
    model = small_cnn()
    x = torch.randn(1, 3, 24, 24)
    seen = []
    final = occlusion_map(model, x, ClassProbability(0), window=4, stride=2, batch_size=10, progress=False,
                          callback=seen.append, keep_class_probabilities=True)
    first = seen[0]
    assert 0 < first.done < first.total
    probabilities = first.class_probabilities  # read after the whole scan ran
    assert np.isnan(probabilities[~first.filled]).all() and not np.isnan(probabilities[first.filled]).any()
    np.testing.assert_array_equal(probabilities[first.filled], final.class_probabilities[first.filled])
    partial = first.for_class(3)
    np.testing.assert_array_equal(partial.filled, first.filled)
    assert np.isnan(partial.grid[~first.filled]).all()
    np.testing.assert_array_equal(partial.grid[first.filled], final.for_class(3).grid[first.filled])


def test_for_class_says_when_no_probabilities_were_kept_and_checks_the_index(monkeypatch):
    import cnnwidgets.methods.occlusion as occlusion

    model = small_cnn()
    x = torch.randn(1, 3, 12, 12)
    kw = dict(window=4, stride=4, progress=False)  # 3 x 3 positions of 5 classes: 180 bytes
    plain = occlusion_map(model, x, ClassProbability(0), **kw)
    assert plain.class_probabilities is None and plain.unoccluded_probabilities is None
    with pytest.raises(ValueError, match=r"kept no class probabilities.*keep_class_probabilities=True"):
        plain.for_class(0)
    layer = occlusion_map(model, x, ChannelActivation("conv2", 0), keep_class_probabilities=True, **kw)
    assert layer.class_probabilities is None  # a target inside the model: no classes read
    with pytest.raises(ValueError, match="kept no class probabilities"):
        layer.for_class(0)
    kept = occlusion_map(model, x, ClassProbability(0), keep_class_probabilities=True, **kw)
    with pytest.raises(IndexError, match=r"class index 5 is out of range for 5 classes; accepted: 0\.\.4"):
        kept.for_class(5)
    with pytest.raises(IndexError, match="class index -1 is out of range"):
        kept.for_class(-1)
    with pytest.raises(TypeError, match="for_class: the class index must be an int"):
        kept.for_class(1.0)
    assert kept.for_class(np.int64(4)).target == ClassProbability(4)
    with pytest.raises(TypeError, match="keep_class_probabilities must be True or False"):
        occlusion_map(model, x, 0, keep_class_probabilities=1, **kw)
    # kept up to the byte limit, not beyond it
    monkeypatch.setattr(occlusion, "KEPT_PROBABILITIES_BYTES", 9 * 5 * 4)
    assert occlusion_map(model, x, 0, keep_class_probabilities=True, **kw).class_probabilities is not None
    monkeypatch.setattr(occlusion, "KEPT_PROBABILITIES_BYTES", 9 * 5 * 4 - 1)
    too_large = occlusion_map(model, x, 0, keep_class_probabilities=True, **kw)
    assert too_large.class_probabilities is None and too_large.complete
    with pytest.raises(ValueError, match="kept no class probabilities"):
        too_large.for_class(0)


def test_an_output_that_is_not_class_scores_keeps_no_probabilities():
    model = nn.Conv2d(3, 2, 3, padding=1).eval()  # a per-pixel map (N, 2, H, W)

    def target(out):
        return out[:, 1].mean(dim=(1, 2))

    target.layer = None
    result = occlusion_map(model, torch.randn(1, 3, 8, 8), target, window=4, stride=4, progress=False,
                           keep_class_probabilities=True)
    assert result.complete and result.class_probabilities is None and result.unoccluded_probabilities is None
