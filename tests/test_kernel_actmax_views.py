"""The kernel view's layout, colour key and bounds, and the actmax view's probe, input space and bounds."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from cnnwidgets import Probe
from cnnwidgets.app.filters import (
    CLASS_TARGET,
    MIN_READABLE_TILE,
    actmax_view,
    kernel_view,
)


def wide_net() -> nn.Module:
    """Layers from few to many channels, and a depthwise one."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3),  # "0": RGB tiles
        nn.Conv2d(16, 64, 3),  # "1"
        nn.Conv2d(64, 512, 3),  # "2"
        nn.Conv2d(512, 512, 3),  # "3": 512 x 512 slices
        nn.Conv2d(512, 512, 3, groups=512),  # "4": depthwise, one slice per output channel
    )


def small_net() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3),
    )


def first_tile_width(image: np.ndarray) -> int:
    """Width of the first tile: the run of non-white pixels after the 1 px border (the diverging
    colormap never draws white)."""
    row = image[1 + 1, 1:]  # a row inside the first line of tiles
    white = np.all(row == 255, axis=-1)
    return int(np.argmax(white))


# --- kernel view: the picture fits `width` at readable tile sizes --------------------------------------------


@pytest.mark.parametrize("width", [480, 240])
def test_every_layer_fits_the_width_with_readable_tiles(width):
    view = kernel_view(wide_net(), width=width, colormap="diverging")
    try:
        for layer in view.layers:
            view.layer = layer
            assert not view.error, view.status
            height, picture_width, _ = view.image_shape
            assert picture_width <= width, (layer, view.image_shape)
            assert height <= 960, (layer, view.image_shape)
            assert first_tile_width(view.image) >= MIN_READABLE_TILE - 1, (layer, view.status)  # 3x3 at 4 px a weight
    finally:
        view.close()


def test_a_grid_too_big_shows_its_first_output_channels_and_says_how_to_see_the_rest():
    view = kernel_view(wide_net(), "3")
    try:
        shown = re.search(r"showing output channels 0-(\d+) of 512, pick one with 'out ch\.'", view.status)
        assert shown, view.status
        assert 1 <= int(shown.group(1)) + 1 < 512
        assert "each output channel is a block of its 512 input slices" in view.status
        view.out_channel = 300  # one output channel: all its 512 slices fit, wrapped
        assert view.image_shape[1] <= 480 and view.image_shape[0] <= 960
        assert "tiles: input slices in row-major order" in view.status and "showing" not in view.status
    finally:
        view.close()


def test_a_depthwise_layer_is_wrapped_not_one_column():
    view = kernel_view(wide_net(), "4")
    try:
        height, width, _ = view.image_shape
        assert width <= 480 and height <= 960 and width > 100  # was 1 tile wide and thousands of pixels tall
        assert "tiles: output channels in row-major order" in view.status
        assert "one tile per output channel" in view.status
    finally:
        view.close()


def test_a_small_layer_keeps_big_tiles():
    view = kernel_view(small_net(), colormap="diverging")  # 8 RGB tiles of 3x3
    try:
        assert first_tile_width(view.image) == 48  # the default tile size, 3 weights x 16 px
    finally:
        view.close()


# --- kernel view: colour key and colormap ------------------------------------------------------------------


def test_the_status_says_what_the_gray_levels_mean():
    model = wide_net()
    view = kernel_view(model, "1")
    try:
        top = float(model[1].weight.detach().abs().max())
        assert f"mid-gray = 0, black = -{top:.3g}, white = +{top:.3g}" in view.status
        view.out_channel = 2
        assert "tiles: input slices in row-major order" in view.status
    finally:
        view.close()


def test_slice_scaling_of_rgb_tiles_says_it_scales_as_filter_does():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    view = kernel_view(model, "0")
    try:
        assert "'slice' scales an RGB tile" not in view.status
        view.normalize = "slice"
        assert "a scale per filter" in view.status  # what is done
        assert "'slice' scales an RGB tile as 'filter' does: its three colours are the filter's slices" in view.status
    finally:
        view.close()


def test_the_colormap_is_a_trait_with_a_menu_that_redraws():
    view = kernel_view(wide_net(), "1")
    try:
        assert view.colormap == "gray" and list(view.colormaps) == ["gray", "diverging"]
        gray = view.png
        view.colormap = "diverging"
        assert view.png != gray and "blue = -" in view.status and "orange-red = +" in view.status and not view.error
        assert view._colormap_menu.value == "diverging"
        view._colormap_menu.set_state({"index": 0})  # from the browser
        assert view.colormap == "gray" and view.png == gray
        with pytest.raises(Exception, match="unknown colormap 'viridis'"):
            view.colormap = "viridis"
    finally:
        view.close()
    other = kernel_view(wide_net(), colormap="diverging")
    assert other.colormap == "diverging" and other.controller.colormap == "diverging"
    other.close()


# --- kernel view: `out ch.` bounded per layer -------------------------------------------------------------------


def test_out_channel_is_bounded_per_layer_and_reset_on_a_layer_change():
    view = kernel_view(wide_net(), "3")
    try:
        assert view._channel_box.max == 511 and view.out_channels == 512
        view.out_channel = 300
        view.layer = "1"  # 64 output channels: 300 is not there
        assert not view.error and view.image_shape != ()
        assert view.out_channel == -1 and view._channel_box.value == -1 and view._channel_box.max == 63
        with pytest.raises(Exception, match=r"out_channel 64 is out of range: layer '1' has 64 output channels"):
            view.out_channel = 64
        view.out_channel = 10
        view.layer = "2"  # 512 channels: 10 is kept
        assert view.out_channel == 10 and view._channel_box.max == 511 and "output channel 10" in view.status
    finally:
        view.close()


# --- actmax view -----------------------------------------------------------------------------------------------


def test_actmax_view_leaves_the_users_probe_as_it_was():
    probe = Probe(small_net(), input_size=(3, 16, 16))
    view = actmax_view(probe, size=24, steps=2, background=False)
    view.running = True
    assert not view.error and view.controller.result.rgb.shape[:2] == (24, 24)
    view.close()
    assert probe.input_size == (3, 16, 16)
    assert probe.layers["3"].output_shape == (8, 8, 8)  # still open and described at 16 x 16
    same = actmax_view(probe, size=16, steps=2, background=False)  # at its own size it is used as it is
    assert same.controller.probe is probe
    same.close()
    probe.close()


def test_a_run_that_finds_nothing_says_so_in_the_status_line_without_a_warning():
    import warnings

    from cnnwidgets.methods.actmax import ZeroGradientWarning

    model = small_net()
    with torch.no_grad():
        model[3].bias[1] = -100.0  # channel 1 of "4" is never above 0
    view = actmax_view(model, size=16, steps=24, background=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", ZeroGradientWarning)  # none from the view's run
            view.layer, view.channel = "4", 1
            view.running = True
        assert not view.error and view.controller.result is not None
        assert "the target did not rise above its starting value" in view.status
        assert "never above 0" in view.status and "done after 24 steps" in view.status
        view.channel = 2
        view.running = True
        assert "did not rise" not in view.status  # a channel that rises: no such words
    finally:
        view.close()


def test_the_status_says_which_input_space_runs_use():
    plain = actmax_view(small_net(), size=16, steps=2, background=False)
    assert "no input normalisation: pass mean= and std= (or the bundle)" in plain.status
    plain.running = True
    assert "done after 2 steps" in plain.status and "no input normalisation" in plain.status
    plain.close()
    given = actmax_view(small_net(), size=16, steps=2, background=False, mean=(0.5, 0.4, 0.3), std=0.25)
    assert "input normalised with mean (0.5, 0.4, 0.3), std 0.25" in given.status
    given.running = True
    assert "input normalised with mean (0.5, 0.4, 0.3), std 0.25" in given.status
    given.close()


def test_the_channel_box_is_bounded_to_the_target_and_classes_are_named():
    view = actmax_view(small_net(), size=16, steps=2, background=False, classes=["cat", "dog", "fox"])
    try:
        view.layer = "3"
        assert view.channels == 8 and view._channel_box.max == 7
        view.channel = 7
        view.layer = CLASS_TARGET  # 3 classes: 7 becomes the last one
        assert view.channels == 3 and view._channel_box.max == 2 and view.channel == 2
        assert view.channel_names == ["cat", "dog", "fox"] and view._channel_name.value == "fox"
        with pytest.raises(Exception, match=r"channel 5 is out of range for target 'class logits \(output\)': accepted 0\.\.2"):
            view.channel = 5
        view.channel = 1
        assert view._channel_name.value == "dog"
        view.running = True
        assert not view.error and "for class 1 ('dog')" in view.status
        view.layer = "0"
        assert view.channel_names == [] and view._channel_name.value == ""
    finally:
        view.close()


def test_a_bundle_names_its_classes():
    from cnnwidgets import zoo

    bundle = zoo.load_default()
    view = actmax_view(bundle, size=16, steps=2, background=False)
    try:
        view.layer = CLASS_TARGET
        assert view.channels == len(bundle.classes) and view.channel_names == list(bundle.classes)
        view.channel = 1
        view.running = True
        assert f"class 1 ({bundle.classes[1]!r})" in view.status
        assert ": its logit went from" in view.status  # a class target is a logit, not an activation
    finally:
        view.close()


def test_a_background_run_error_reads_as_the_other_errors(monkeypatch):
    from cnnwidgets.app import filters

    view = actmax_view(small_net(), size=16, steps=2)

    def failing(*args, **kwargs):
        raise ValueError("the run failed here")

    monkeypatch.setattr(filters, "maximize_activation", failing)
    try:
        view.controller.start()
        view.controller.wait(30)
        assert view.error and view.status == "the run failed here"
    finally:
        view.close()


def test_the_status_says_the_image_size_and_where_it_came_from():
    # the size was left out of the status: a bare model's run at an assumed 224x224 did not say so
    assumed = actmax_view(small_net(), steps=1, background=False)
    try:
        size = "x".join(str(v) for v in assumed.controller.probe.input_size)
        assert f"images {size}, a size assumed: the model does not say its input size (pass size= for another)" \
            in assumed.status
        assumed.running = True
        assert "done after 1 steps" in assumed.status and f"images {size}, a size assumed" in assumed.status
    finally:
        assumed.close()
    given = actmax_view(small_net(), size=(16, 20), steps=1, background=False)
    try:
        given.running = True
        assert "images 3x16x20" in given.status and "assumed" not in given.status
        assert tuple(given.controller.result.input_size) == (3, 16, 20)
    finally:
        given.close()
    probe = Probe(small_net(), input_size=(3, 24, 24))
    from_probe = actmax_view(probe, steps=1, background=False)
    try:
        assert "images 3x24x24, the probe's input size" in from_probe.status
    finally:
        from_probe.close()
        probe.close()
    trained = small_net()
    trained.pretrained_cfg = {"input_size": (3, 32, 32)}
    said = actmax_view(trained, steps=1, background=False)
    try:
        assert "images 3x32x32, the size the model says it was trained at" in said.status
    finally:
        said.close()
