"""Invariance curves: zero at the identity, hand-computed distances on a pixel-identity layer,
batching-independent, and the figure and view on real models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cnnwidgets import Probe
from cnnwidgets.methods.invariance import (
    default_feature_layers,
    default_ranges,
    describe_transform,
    invariance_curves,
    transform_images,
)
from tests.helpers import small_classifier


class PixelNet(nn.Module):
    """``pixels`` is an identity layer, so its features are the input pixels themselves."""

    def __init__(self) -> None:
        super().__init__()
        self.pixels = nn.Identity()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 6)
        self.relu_fc = nn.ReLU()
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        x = self.pool(self.relu(self.conv(self.pixels(x)))).flatten(1)
        return self.out(self.relu_fc(self.fc(x)))


def images(n: int = 3, size: int = 12) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(7))


def test_identity_transform_gives_distance_zero_and_the_untransformed_probability():
    torch.manual_seed(0)
    model = PixelNet().eval()
    x = images()
    result = invariance_curves(model, x, [0, 1, 2], ["pixels", "relu", "relu_fc"],
                               transforms={"translation": [-2, 0, 3], "rotation": [0, 45, 360], "scale": [1.0, 1.5]},
                               progress=False)
    with torch.no_grad():
        logits = model(x)
    expected_p = torch.softmax(logits, dim=1)[torch.arange(3), torch.tensor([0, 1, 2])].double().numpy()
    for kind, at in (("translation", 1), ("rotation", 0), ("scale", 0)):
        for layer in result.layers:
            # zero up to float rounding: the untransformed images run in a batch of another size,
            # and on some CPUs (AVX-512) a linear layer then sums in another order
            np.testing.assert_allclose(result.distances[kind][layer][at], 0.0, atol=1e-6, err_msg=f"{kind} {layer}")
        np.testing.assert_allclose(result.probabilities[kind][at], expected_p, rtol=1e-6)
    for layer in ("pixels", "relu"):
        assert np.all(result.distances["translation"][layer][[0, 2]] > 0)
    # a full turn brings the pixels back (up to interpolation at the corners)
    np.testing.assert_allclose(result.distances["rotation"]["pixels"][2], 0.0, atol=1e-3)


def test_distances_equal_hand_computed_pixel_differences():
    model = PixelNet().eval()
    x = images(2, 10)
    result = invariance_curves(model, x, layers=["pixels"], interpolation="nearest", fill=0.5,
                               transforms={"translation": [2, -3], "rotation": [90]}, progress=False)
    down = torch.full_like(x, 0.5)
    down[:, :, 2:] = x[:, :, :-2]
    up = torch.full_like(x, 0.5)
    up[:, :, :-3] = x[:, :, 3:]
    for row, moved in enumerate([down, up]):
        expected = (x - moved).flatten(1).norm(dim=1).double().numpy()
        np.testing.assert_allclose(result.distances["translation"]["pixels"][row], expected, rtol=1e-6)
    expected = (x - torch.rot90(x, 1, (2, 3))).flatten(1).norm(dim=1).double().numpy()
    np.testing.assert_allclose(result.distances["rotation"]["pixels"][0], expected, rtol=1e-6)
    normalised = invariance_curves(model, x, layers=["pixels"], interpolation="nearest", fill=0.5, normalize=True,
                                   transforms={"translation": [2, -3]}, progress=False)
    np.testing.assert_allclose(normalised.distances["translation"]["pixels"],
                               result.distances["translation"]["pixels"] / x.flatten(1).norm(dim=1).double().numpy(),
                               rtol=1e-6)


def test_batch_grouping_does_not_change_the_curves_and_labels_default_to_predictions():
    torch.manual_seed(1)
    model = PixelNet().eval()
    x = images(3)
    a = invariance_curves(model, x, batch_size=3, progress=False)
    b = invariance_curves(model, x, batch_size=200, progress=False)
    assert a.layers == b.layers == ["relu", "relu_fc"]  # the paper's layer 1 and layer 7 counterparts
    assert list(a.values) == ["translation", "rotation", "scale"] and not a.labels_given
    with torch.no_grad():
        np.testing.assert_array_equal(a.labels, model(x).argmax(dim=1).numpy())
    for kind in a.values:
        for layer in a.layers:
            np.testing.assert_allclose(a.distances[kind][layer], b.distances[kind][layer], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a.probabilities[kind], b.probabilities[kind], rtol=1e-5, atol=1e-7)
    ranges = default_ranges(224)
    assert ranges["translation"][0] == -60 and ranges["translation"][-1] == 60
    assert ranges["rotation"][-1] == 360 and ranges["scale"][0] == 1.0 and ranges["scale"][-1] == 1.8


def test_each_batch_gives_its_features_and_scores_in_one_pass():
    model = PixelNet().eval()
    x = images(3)
    with Probe(model) as probe:
        probe.logits(x)  # describe the layers first; not counted below
        probe.reset_stats()
        invariance_curves(probe, x, layers=["relu"], transforms={"rotation": [0, 10, 20]}, batch_size=4,
                          progress=False)
        assert probe.stats.forwards > 0
        assert probe.stats.forwards == probe.stats.full_forwards  # no prefix run beside each full one


def test_transform_conventions_and_errors():
    x = images(1, 8)
    assert transform_images(x, "rotation", 0) is x
    moved = transform_images(x, "translation", 1, interpolation="nearest", fill=[1.0, 2.0, 3.0])
    assert torch.equal(moved[0, :, 0], torch.tensor([1.0, 2.0, 3.0])[:, None].expand(3, 8))
    zoomed = transform_images(x, "scale", 0.5, fill=-9.0)
    assert torch.all(zoomed[0, :, 0] == -9.0)
    with pytest.raises(ValueError, match="unknown transformation"):
        transform_images(x, "shear", 3)
    with pytest.raises(ValueError, match="> 0"):
        transform_images(x, "scale", 0)
    with pytest.raises(ValueError, match="interpolation"):
        transform_images(x, "scale", 2, interpolation="cubic")
    model = PixelNet()
    with pytest.raises(IndexError, match="labels"):
        invariance_curves(model, images(2), [0, 5], progress=False)
    with pytest.raises(ValueError, match="expected 2 labels"):
        invariance_curves(model, images(2), [0], progress=False)
    with pytest.raises(KeyError):
        invariance_curves(model, images(2), layers=["nope"], progress=False)
    with pytest.raises(ValueError, match="no values"):
        invariance_curves(model, images(2), transforms={"rotation": []}, progress=False)
    with pytest.raises(ValueError, match="must be finite"):
        invariance_curves(model, images(2), transforms={"scale": [1.0, float("nan")]}, progress=False)
    binary = PixelNet()
    binary.out = nn.Linear(6, 1)
    with pytest.raises(ValueError, match="single output unit"):
        invariance_curves(binary, images(2), transforms={"rotation": [0.0]}, progress=False)


def test_parameters_are_described_in_the_direction_the_image_moves():
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 4] = 1.0
    up = transform_images(x, "translation", -2, interpolation="nearest")
    assert up[0, 0, 2, 4] == 1.0 and describe_transform("translation", -2) == "2 px up"  # row 4 moved to row 2
    assert describe_transform("translation", 3.5) == "3.5 px down"
    x[0, 0, 4, 4], x[0, 0, 4, 8] = 0.0, 1.0  # a pixel right of the centre
    turned = transform_images(x, "rotation", 90, interpolation="nearest")
    assert turned[0, 0, 0, 4] == 1.0 and describe_transform("rotation", 90) == "90° counter-clockwise"  # went up
    assert describe_transform("rotation", -30) == "30° clockwise"
    assert describe_transform("scale", 1.5) == "×1.5 (enlarged)" and describe_transform("scale", 0.5) == "×0.5 (shrunk)"
    assert [describe_transform(k, v) for k, v in (("translation", 0), ("rotation", 0), ("scale", 1))] == [
        "no shift", "no rotation", "original size"]
    with pytest.raises(ValueError, match=r"unknown transformation 'shear'; choose one of"):
        describe_transform("shear", 1)


def test_summary_names_each_layer_on_its_own_line_with_its_largest_mean_distance():
    result = invariance_curves(PixelNet(), images(3), [0, 1, 2], ["pixels", "relu"],
                               transforms={"translation": [-2, 0, 2], "scale": [1.0, 1.5]}, normalize=True,
                               progress=False)
    lines = result.summary().splitlines()
    assert lines[0].startswith("Means over the 3 images. distance: the largest ||phi(x) - phi(T x)|| / ||phi(x)||")
    assert lines[2] == "translation, from 2 px up to 2 px down (3 steps):"
    for line, layer in zip(lines[3:5], ["pixels", "relu"]):
        assert line.split() == [layer, "distance", "up", "to", f"{result.distances['translation'][layer].mean(axis=1).max():.3g}"]
    p = result.probabilities["scale"].mean(axis=1)
    assert lines[-1].split()[-3:] == [f"{p.min():.2f}", "to", f"{p.max():.2f}"]
    assert lines[5].startswith("  P(true class)") and lines[6] == "scale, from original size to ×1.5 (enlarged) (2 steps):"
    assert max(len(line) for line in lines) <= 100


def test_one_transformation_by_name_and_per_channel_fills_as_arrays():
    model = PixelNet()
    one = invariance_curves(model, images(2), transforms="rotation", progress=False)
    assert list(one.values) == ["rotation"]
    x = images(1, 8)
    expected = transform_images(x, "translation", 1, interpolation="nearest", fill=[1.0, 2.0, 3.0])
    for fill in (np.array([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.0])):
        assert torch.equal(transform_images(x, "translation", 1, interpolation="nearest", fill=fill), expected)


def test_tinyvgg_curves_figure_and_view(shared_data):
    from cnnwidgets.app.experiments import invariance_view, plot_invariance
    from tests.test_topk import tinyvgg_and_images

    model, x, labels, names = tinyvgg_and_images(shared_data)
    pick = [names.index(n) for n in ("koala_1", "bus_1", "orange_1", "pizza_1", "car_1")]
    result = invariance_curves(model, x[pick], labels[pick], progress=False,
                               transforms={"translation": [-8, -4, 0, 4, 8], "rotation": [0, 30, 90, 180],
                                           "scale": [1.0, 1.4, 1.8]})
    with Probe(model, input_size=(3, 64, 64)) as probe:
        assert default_feature_layers(probe) == {"first": "relu_1_1", "last_conv": "relu_2_2", "penultimate": "pool_2"}
    assert result.layers == ["relu_1_1", "pool_2"]
    assert np.all(result.distances["translation"]["relu_1_1"][2] == 0)
    p0 = result.probabilities["rotation"][0]
    assert np.all((p0 > 0) & (p0 <= 1))
    fig = plot_invariance(result, x[pick], image_names=[names[i] for i in pick])
    assert len(fig.axes) == 3 * 4  # examples, two layers, probability
    view = invariance_view(result, x[pick], image_names=[names[i] for i in pick])
    view.transform = "rotation"
    view.step = 2
    assert "rotation: 90° counter-clockwise" in view.readout and not view.error


def test_shapesnet_identity_and_default_layers():
    from cnnwidgets.zoo import load_default, make_batch

    bundle = load_default()
    x, y = make_batch(30, seed=8)
    pick = [int((y == c).nonzero()[0]) for c in range(5)]  # one image per class
    result = invariance_curves(bundle.model, x[pick], y[pick], progress=False,
                               transforms={"translation": [-6, 0, 6], "rotation": [0, 45], "scale": [1.0, 1.3]})
    assert result.layers == ["features.relu1", "global_pool"]
    for kind, at in (("translation", 1), ("rotation", 0), ("scale", 0)):
        for layer in result.layers:
            assert np.all(result.distances[kind][layer][at] == 0)
    assert np.all(result.distances["translation"]["features.relu1"][[0, 2]] > 0)
    assert np.all(result.probabilities["translation"][1] > 0.5)  # the shipped model gets these right


def test_no_transforms_and_labels_that_are_not_class_indices_are_refused():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match="transforms is empty"):
        invariance_curves(model, x, transforms=[], progress=False)
    for labels, got in (([0.5, 1.9], "got float 0.5"), (["cat", "dog"], "got str 'cat'")):
        with pytest.raises(TypeError, match=r"labels\[0\] \(the class of image 0\) must be an int .*" + got):
            invariance_curves(model, x, labels=labels, transforms={"rotation": [0, 10]}, progress=False)
    for batch_size, error in ((0, ValueError), (-5, ValueError), (True, TypeError), (200.5, TypeError)):
        with pytest.raises(error, match="batch_size must be an int >= 1"):
            invariance_curves(model, x, transforms={"rotation": [0, 10]}, batch_size=batch_size, progress=False)


def test_scalars_where_sequences_belong_and_flags_that_are_not_bools_are_refused():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.rand(2, 3, 32, 32)
    run = lambda **kw: invariance_curves(model, x, progress=False, **kw)  # noqa: E731
    for kw, message in (
        ({"labels": 1, "transforms": {"rotation": [0, 10]}}, "labels must be one class index per image .* of 2 ints"),
        ({"labels": "12", "transforms": {"rotation": [0, 10]}}, "labels must be one class index per image"),
        ({"transforms": {"translation": 4}}, r"the values of 'translation' must be a sequence of numbers \(e.g. "),
        ({"transforms": {"translation": "048"}}, "the values of 'translation' must be a sequence of numbers"),
        ({"transforms": {"translation": [0, "a"]}}, "the values of 'translation' must be numbers"),
        ({"transforms": {"rotation": [0, 10]}, "normalize": "no"}, "normalize must be True or False, got str"),
    ):
        with pytest.raises(TypeError, match=message):
            run(**kw)
    plain = run(transforms={"rotation": [0, 10]}, normalize=np.bool_(False))
    assert not plain.normalized and run(transforms={"rotation": [0, 10]}, normalize=True).normalized


def test_fill_must_match_the_channels_and_be_finite():
    from cnnwidgets.methods.invariance import check_fill

    gray = torch.rand(2, 1, 12, 12)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    with pytest.raises(ValueError, match="fill has 3 values, the images have 1 channel; give one value"):
        invariance_curves(model, gray, fill=[0.0, 0.0, 0.0], progress=False)
    with pytest.raises(ValueError, match="fill has 2 values, the images have 3 channels; give one value or 3"):
        transform_images(images(), "rotation", 10, fill=(0.0, 1.0))
    with pytest.raises(ValueError, match="fill must hold finite numbers"):
        transform_images(images(), "rotation", 10, fill=float("nan"))
    with pytest.raises(TypeError, match="fill must be a number"):
        transform_images(images(), "rotation", 10, fill="grey")
    assert check_fill(0.5, 3) == 0.5 and check_fill(torch.tensor([0.0, 1.0, 2.0]), 3) == [0.0, 1.0, 2.0]
    assert check_fill(np.float32(1.0), 1) == 1.0 and check_fill([0.25], 3) == [0.25]
    result = invariance_curves(model, gray, fill=[0.5], transforms={"rotation": [0, 45]}, progress=False)
    assert result.distances["rotation"][result.layers[0]].shape == (2, 2)


def test_layers_must_be_names():
    model = PixelNet().eval()
    with pytest.raises(TypeError, match="layer names are strings, got ReLU"):
        invariance_curves(model, images(), layers=model.relu, progress=False)
    with pytest.raises(TypeError, match="layer names are strings, got int"):
        invariance_curves(model, images(), layers=3, progress=False)


def small_net() -> nn.Module:
    return small_classifier()


def test_labels_are_ints_as_for_class_targets_bools_and_whole_floats_are_refused():
    model, x = small_net(), torch.rand(3, 3, 32, 32)
    run = lambda labels: invariance_curves(model, x, labels, transforms={"rotation": [0, 10]}, progress=False)  # noqa: E731
    for labels, got in (
        ([True, False, True], "got bool True"),  # not classes [1, 0, 1]
        ([0.0, 1.0, 2.0], "got float 0.0"),
        ([0, 1, 2.0], "got float 2.0"),
        (torch.tensor([0.0, 1.0, 2.0]), "got a tensor of shape \\(\\) and dtype torch.float32"),
        (torch.tensor([True, False, True]), "dtype torch.bool"),
        (np.array([1.0, 2.0, 3.0]), "got float64 1.0"),
    ):
        with pytest.raises(TypeError, match=r"labels\[\d\] \(the class of image \d\) must be an int \(.*" + got):
            run(labels)
    with pytest.raises(ValueError, match="expected 3 labels .*got shape \\(1, 3\\)"):
        run(torch.tensor([[0, 1, 2]]))
    with pytest.raises(ValueError, match="expected 3 labels .*got 2"):
        run([0, 1])
    for labels in ([0, 1, 2], (4, 0, 1), np.array([0, 1, 2]), torch.tensor([2, 1, 0]), [np.int64(1), 0, 3]):
        assert run(labels).labels.tolist() == [int(v) for v in labels]


def test_images_laid_out_channels_last_are_named_as_such():
    model, x = small_net(), torch.rand(2, 3, 32, 32)
    for layers in (None, ["1"]):
        with pytest.raises(ValueError, match=r"looks like \(N, H, W, C\) = \(2, 32, 32, 3\).*x.permute\(0, 3, 1, 2\)"):
            invariance_curves(model, x.permute(0, 2, 3, 1), layers=layers, progress=False)


def test_images_that_are_not_a_tensor_are_refused_with_how_to_make_one():
    model, x = small_net(), torch.rand(2, 3, 32, 32)
    with pytest.raises(TypeError, match=r"got ndarray of shape \(2, 3, 32, 32\): torch.from_numpy"):
        invariance_curves(model, x.numpy(), layers=["1"], progress=False)
    with pytest.raises(TypeError, match=r"got list: .*torch.stack"):
        invariance_curves(model, [x[0], x[1]], layers=["1"], progress=False)
    with pytest.raises(ValueError, match=r"batch \(N, C, H, W\) of at least one image, got shape \(3, 32, 32\)"):
        invariance_curves(model, x[0], layers=["1"], progress=False)


def test_non_finite_features_from_non_finite_weights_are_refused_not_returned_as_nan():
    model, x = small_net(), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"invariance_curves needs finite activations, but the model's activations at "
                                         r"layer '1' are not finite .*has training diverged\?"):
        invariance_curves(model, x, transforms={"rotation": [0, 10]}, progress=False)
    model = small_net()
    with torch.no_grad():
        model[7].bias[0] = float("inf")  # the features are finite, the class scores are not
    with pytest.raises(ValueError, match=r"but the model's output is not finite \(2 of 10 values"):
        invariance_curves(model, x, layers=["1"], transforms={"rotation": [0, 10]}, progress=False)


def test_progress_must_be_a_bool():
    with pytest.raises(TypeError, match="progress must be True or False, got str 'no'"):
        invariance_curves(small_net(), torch.rand(2, 3, 32, 32), transforms={"rotation": [0, 10]}, progress="no")


def test_the_default_last_conv_layer_of_a_resnet_is_a_block_output_after_its_relu():
    """A BasicBlock calls one ReLU twice; ordered by its first call it sat before the block's last
    convolution, so "the last convolution's activation" was that raw convolution (half negative)."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.rand(1, 3, 64, 64)
    with Probe(model, input_size=(3, 64, 64)) as probe:
        layers = default_feature_layers(probe)
        assert layers == {"first": "relu", "last_conv": "layer4.1.relu", "penultimate": "avgpool"}
        captured = probe.capture(x, [layers["last_conv"], "layer4"])
    # its last call: the block's output after the residual sum, not the ReLU after conv1
    torch.testing.assert_close(captured["layer4.1.relu"], captured["layer4"])
    assert float(captured["layer4.1.relu"].min()) >= 0


class _TwoBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.left = nn.Conv2d(6, 4, 1)
        self.right = nn.Conv2d(6, 4, 3, padding=1)

    def forward(self, x):
        return torch.cat([torch.relu(self.left(x)), torch.relu(self.right(x))], dim=1)


class _BranchNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.relu = nn.ReLU()
        self.block = _TwoBranch()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.pool(self.block(self.relu(self.stem(x)))).flatten(1))


def test_the_default_last_conv_layer_of_a_branching_block_is_the_block_not_its_last_branch():
    with Probe(_BranchNet().eval(), input_size=(3, 12, 12)) as probe:
        layers = default_feature_layers(probe)
    assert layers["first"] == "relu"
    assert layers["last_conv"] == "block"  # not "block.right", 4 of its 8 channels
    assert layers["penultimate"] == "pool"


def test_more_images_than_the_batch_size_run_in_batches_of_at_most_that_size():
    model = small_classifier()
    images = torch.rand(20, 3, 16, 16)
    with Probe(model, input_size=(3, 16, 16)) as probe:
        steps = {"translation": [-2.0, 0.0, 2.0]}
        whole = invariance_curves(probe, images, layers=["4"], transforms=steps, batch_size=64, progress=False)
        seen: list[int] = []
        handle = probe.model.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
        try:
            split = invariance_curves(probe, images, layers=["4"], transforms=steps, batch_size=8, progress=False)
        finally:
            handle.remove()
    assert seen and max(seen) <= 8
    np.testing.assert_allclose(split.distances["translation"]["4"], whole.distances["translation"]["4"], rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose(split.probabilities["translation"], whole.probabilities["translation"], rtol=1e-5)


def test_plot_invariance_shows_the_chosen_example_image_and_refuses_one_that_is_not_there():
    import matplotlib.pyplot as plt

    from cnnwidgets.app.experiments import display_image, plot_invariance

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    x = torch.rand(3, 3, 16, 16)
    result = invariance_curves(model, x, [0, 1, 2], progress=False, transforms={"rotation": [0, 90]})

    def first_row_pixels(fig):
        pictures = [im.get_array() for ax in fig.axes for im in ax.get_images()]
        return np.asarray(pictures[0])

    for example, index in ((0, 0), (2, 2), (-1, 2), ("b", 1)):
        fig = plot_invariance(result, x, image_names=["a", "b", "c"], example=example)
        expected = display_image(x[index])
        drawn = first_row_pixels(fig)
        # the drawn strip starts with the untransformed image (rotation 0) of the chosen one
        strip = drawn[..., :3].astype(np.float64)
        strip = strip / 255.0 if strip.max() > 1.0 else strip
        np.testing.assert_allclose(strip[: expected.shape[0], : expected.shape[1]], expected, atol=1 / 255 + 1e-6)
        plt.close(fig)
    with pytest.raises(ValueError, match=r"example 'z' names no image; the image names are \['a', 'b', 'c'\]"):
        plot_invariance(result, x, image_names=["a", "b", "c"], example="z")
    with pytest.raises(ValueError, match=r"example must be an image's index, 0..2"):
        plot_invariance(result, x, example=3)
    with pytest.raises(TypeError, match="example must be an int"):
        plot_invariance(result, x, example=1.0)
