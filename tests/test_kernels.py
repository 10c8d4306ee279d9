"""Kernel view: weights as normalised tiles, the mosaic renderer, the view and its controller."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from traitlets import TraitError

from cnnwidgets import Probe
from cnnwidgets.app.filters import KernelController, kernel_view
from cnnwidgets.methods.kernels import conv_layer_names, kernels
from cnnwidgets.render.kernels import kernel_mosaic, signed_to_rgb, tile_grid
from cnnwidgets.widgets.filters import KernelView


def small_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
        nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 2),
    )


def test_first_layer_rgb_tiles_follow_the_weights_with_one_symmetric_scale():
    model = small_net()
    w = model[0].weight.detach().numpy()
    k = kernels(model, "0")
    assert k.layout == "rgb" and k.values.shape == (4, 3, 3, 3)
    # tile o, row y, column x, colour c is weight[o, c, y, x] / max|W|
    np.testing.assert_allclose(k.values, w.transpose(0, 2, 3, 1) / np.abs(w).max(), rtol=1e-6)
    assert np.abs(k.values).max() == pytest.approx(1.0)
    np.testing.assert_array_equal(k.weight, w)


def test_per_filter_normalisation_gives_each_filter_full_contrast():
    model = small_net()
    with torch.no_grad():
        model[0].weight[2] *= 0.01  # a weak filter
    k = kernels(model, "0", normalize="filter")
    np.testing.assert_allclose(np.abs(k.values).reshape(4, -1).max(axis=1), 1.0, rtol=1e-6)
    layer_scaled = kernels(model, "0", normalize="layer")
    assert np.abs(layer_scaled.values[2]).max() < 0.05


def test_deeper_layer_grid_slices_and_slice_normalisation():
    model = small_net()
    w = model[2].weight.detach().numpy()
    grid = kernels(model, "2")
    assert grid.layout == "grid" and grid.values.shape == (5, 4, 3, 3)
    np.testing.assert_allclose(grid.values, w / np.abs(w).max(), rtol=1e-6)
    one = kernels(model, "2", out_channel=3)
    assert one.layout == "slices" and one.out_channel == 3
    np.testing.assert_array_equal(one.values, grid.values[3])
    per_slice = kernels(model, "2", normalize="slice")
    np.testing.assert_allclose(np.abs(per_slice.values).max(axis=(2, 3)), 1.0, rtol=1e-6)
    # the first layer can be shown per input channel too
    assert kernels(model, "0", mode="channels").values.shape == (4, 3, 3, 3)
    assert kernels(model, "0", mode="channels").layout == "grid"


def test_the_layout_names_are_modes_too():
    model = small_net()
    grid = kernels(model, "2", mode="grid")
    assert grid.layout == "grid"
    np.testing.assert_array_equal(grid.values, kernels(model, "2", mode="channels").values)
    one = kernels(model, "2", mode="slices", out_channel=3)
    assert one.layout == "slices" and one.out_channel == 3
    np.testing.assert_array_equal(one.values, kernels(model, "2", out_channel=3).values)
    # on the first layer too, where "auto" gives "rgb"
    assert kernels(model, "0", mode="grid").layout == "grid"
    assert kernels(model, "0", mode="slices", out_channel=1).layout == "slices"
    assert kernels(model, "0", mode="rgb").layout == "rgb"
    with pytest.raises(ValueError, match="mode='slices'.*give out_channel"):
        kernels(model, "2", mode="slices")
    with pytest.raises(ValueError, match="mode='grid'.*no out_channel.*mode='slices'"):
        kernels(model, "2", mode="grid", out_channel=3)
    # the refusal lists every mode with the layout it gives
    with pytest.raises(ValueError, match=r"'tiles'.*'channels' -> layout 'grid', or 'slices' with out_channel"
                                         r".*'grid' -> layout 'grid'.*'slices' -> layout 'slices'"):
        kernels(model, "2", mode="tiles")


def test_zero_weights_stay_finite_and_map_to_gray():
    model = small_net()
    with torch.no_grad():
        model[0].weight.zero_()
    k = kernels(model, "0", normalize="filter")
    assert np.all(k.values == 0)
    mosaic = kernel_mosaic(k.values, k.layout, zoom=1, border=0)
    assert np.all(mosaic == 128)


def test_non_finite_weights_are_reported_not_drawn_unscaled():
    model = small_net()
    with torch.no_grad():
        model[0].weight[3, 1, 0, 0] = float("nan")
        model[0].weight[2, 0, 2, 2] = float("inf")
    with pytest.raises(ValueError, match=r"non-finite weights .* output channels \[2, 3\]"):
        kernels(model, "0")
    view = kernel_view(model)
    assert view.error and "non-finite weights" in view.status


def test_errors_name_what_is_accepted():
    model = small_net()
    with pytest.raises(ValueError, match=r"not a 2-D convolution.*0, 2"):
        kernels(model, "1")
    with pytest.raises(KeyError, match="Did you mean"):
        kernels(model, "20")
    with pytest.raises(ValueError, match="3 input channels"):
        kernels(model, "2", mode="rgb")
    with pytest.raises(IndexError, match="5 output channels"):
        kernels(model, "2", out_channel=5)
    with pytest.raises(ValueError, match="normalize"):
        kernels(model, "2", normalize="global")
    with pytest.raises(TypeError):
        kernels("not a model", "0")
    with pytest.raises(TypeError, match="got Conv2d; name the layer instead"):
        kernels(model, model[0])


def test_works_on_a_probe_and_on_torchvision_alexnet():
    model = torchvision.models.alexnet(weights=None)
    assert conv_layer_names(model) == [f"features.{i}" for i in (0, 3, 6, 8, 10)]
    with Probe(model) as probe:
        k = kernels(probe, "features.0")
    assert k.values.shape == (64, 11, 11, 3)
    np.testing.assert_array_equal(k.weight, model.features[0].weight.detach().numpy())
    mosaic = kernel_mosaic(k.values, k.layout)
    # 64 tiles -> 8 x 8, each 11 * 2 px (zoom 24 // 11 = 2) + 1 px border
    assert mosaic.shape == (8 * 23 + 1, 8 * 23 + 1, 3) and mosaic.dtype == np.uint8


def test_gray_and_diverging_colour_mapping():
    gray = signed_to_rgb(np.array([-1.0, 0.0, 1.0, 5.0]))
    np.testing.assert_array_equal(gray[:, 0], [0, 128, 255, 255])
    assert np.all(gray[:, 0:1] == gray)  # gray: R == G == B
    div = signed_to_rgb(np.array([-1.0, 0.0, 1.0]), "diverging")
    np.testing.assert_array_equal(div[1], [128, 128, 128])
    assert div[0, 2] > div[0, 0]  # negative: blue
    assert div[2, 0] > div[2, 2]  # positive: red
    with pytest.raises(ValueError, match="colormap"):
        signed_to_rgb(np.zeros(2), "jet")
    np.testing.assert_array_equal(signed_to_rgb(np.array([-1.0, 0.0, 1.0]), cmap="diverging"), div)


def test_kernel_mosaic_takes_cmap_like_the_other_renderers():
    values = np.linspace(-1, 1, 5 * 3 * 3).reshape(5, 3, 3)
    gray = kernel_mosaic(values, "slices")
    diverging = kernel_mosaic(values, "slices", cmap="diverging")
    assert not np.array_equal(gray, diverging)
    strongest = [230, 80, 20]  # the diverging colour of +1
    assert (diverging.reshape(-1, 3) == strongest).all(axis=1).any()
    assert not (gray.reshape(-1, 3) == strongest).all(axis=1).any()
    np.testing.assert_array_equal(kernel_mosaic(values, "slices", cmap="gray"), gray)
    with pytest.raises(ValueError, match="'jet'.*cmap must be one of"):
        kernel_mosaic(values, "slices", cmap="jet")


def test_mosaic_layout_borders_zoom_and_empty_slots():
    values = np.zeros((3, 1, 2, 3))
    values[0, ..., 0] = 1.0  # tile 0: red channel at +1
    values[2] = -1.0  # tile 2: black
    mosaic = kernel_mosaic(values, "rgb", zoom=2, border=1, border_color=(9, 9, 9))
    # 3 tiles -> 2 columns x 2 rows; each tile 2x4 px after zoom
    assert mosaic.shape == (2 * (2 + 1) + 1, 2 * (4 + 1) + 1, 3)
    np.testing.assert_array_equal(mosaic[1, 1], [255, 128, 128])
    np.testing.assert_array_equal(mosaic[2, 4], [255, 128, 128])
    np.testing.assert_array_equal(mosaic[1, 6], [128, 128, 128])  # tile 1: zeros
    np.testing.assert_array_equal(mosaic[4, 1], [0, 0, 0])  # tile 2
    np.testing.assert_array_equal(mosaic[4, 6], [9, 9, 9])  # empty 4th slot
    assert np.all(mosaic[0] == 9) and np.all(mosaic[:, 0] == 9) and np.all(mosaic[3] == 9)

    grid = kernel_mosaic(np.zeros((2, 5, 3, 3)), "grid", zoom=1, border=1)
    assert grid.shape == (2 * 4 + 1, 5 * 4 + 1, 3)
    slices = kernel_mosaic(np.zeros((5, 3, 3)), "slices", zoom=1, border=1, cols=5)
    assert slices.shape == (4 + 1, 5 * 4 + 1, 3)
    with pytest.raises(ValueError, match="layout"):
        kernel_mosaic(np.zeros((2, 3, 3)), "tiles")
    with pytest.raises(ValueError, match=r"\(T, h, w, 3\)"):
        kernel_mosaic(np.zeros((2, 3, 3)), "rgb")
    with pytest.raises(ValueError, match="shape"):
        tile_grid(np.zeros((2, 3, 3), np.uint8))


def test_view_and_controller_follow_the_layer_menu():
    model = small_net()
    view = kernel_view(model)
    assert view.layers == ["0", "2"] and view.layer == "0"
    # tiles of 48 px (3x3 weights at zoom 16) with 1 px borders
    assert view.image_shape == (2 * 49 + 1, 2 * 49 + 1, 3) and not view.error
    assert "set 'out ch.' to a channel to see only its slices" in view.status
    view.layer = "2"
    assert view.image_shape == (5 * 49 + 1, 4 * 49 + 1, 3)  # 5 x 4 grid
    view.out_channel = 1
    assert view.image_shape == (2 * 49 + 1, 2 * 49 + 1, 3) and "output channel 1" in view.status
    assert "set 'out ch.'" not in view.status
    with pytest.raises(TraitError, match=r"out_channel 9 is out of range: layer '2' has 5 output channels"):
        view.out_channel = 9  # refused at once: the box cannot hold it either
    with pytest.raises(Exception, match="unknown layer"):
        view.layer = "1"
    with pytest.raises(ValueError, match="not a convolution"):
        kernel_view(model, layer="1")
    with pytest.raises(ValueError, match=r"colormap must be one of \('gray', 'diverging'\) for kernel tiles, got 'viridis'"):
        kernel_view(model, colormap="viridis")  # refused at once, not when a slice is first drawn
    # the box in the browser cannot hold what the trait refuses (it would stay there unexplained)
    box = view._channel_box
    assert (box.min, box.max, box.value) == (-1, 4, view.out_channel)  # layer '2' has 5 output channels


def test_controller_limits_huge_grids_and_rejects_models_without_convs():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 64, 3))
    view = KernelView()
    KernelController(model, view, max_tiles=64)
    view.layer = "1"
    assert "showing output channels 0-7 of 64" in view.status
    assert view.image_shape[:2] == (8 * (16 * 3 + 1) + 1,) * 2  # 8 x 8 tiles of 48 px fit 480 px
    wide = KernelView()
    KernelController(nn.Sequential(nn.Conv2d(3, 200, 3), nn.Conv2d(200, 2, 3)), wide, width=480)
    wide.layer = "1"  # 200 input channels per row cannot fit 480 px: each output channel wraps into a block
    assert wide.image_shape[1] <= 480 and "a block of its 200 input slices" in wide.status
    with pytest.raises(ValueError, match="no Conv2d"):
        KernelController(nn.Sequential(nn.Linear(2, 2)))


def test_a_negative_output_channel_is_refused_not_counted_from_the_end():
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    with pytest.raises(IndexError, match=r"out_channel -1 is out of range: '0' has 4 output channels \(0\.\.3\)"):
        kernels(model, "0", out_channel=-1, mode="channels")


def test_out_channel_must_be_an_int_and_numpy_or_tensor_integers_are_ints():
    model = small_net()
    expected = kernels(model, "2", out_channel=1)
    for index in (np.int64(1), torch.tensor(1)):
        k = kernels(model, "2", out_channel=index)
        assert k.layout == "slices" and k.out_channel == 1 and type(k.out_channel) is int
        np.testing.assert_array_equal(k.values, expected.values)
    refused = ((True, "bool True"), (1.0, "float 1.0"), ("1", "str '1'"), (torch.tensor([1]), r"a tensor of shape \(1,\)"))
    for bad, got in refused:
        with pytest.raises(TypeError, match=rf"out_channel must be an int \(a Python int, .*\), got {got}"):
            kernels(model, "2", out_channel=bad)


def test_kernels_and_conv_layer_names_take_a_zoo_bundle_like_every_other_method():
    from cnnwidgets.methods import conv_layer_names, kernel_weights
    from cnnwidgets.zoo import load_default

    bundle = load_default()
    names = conv_layer_names(bundle)
    assert names == conv_layer_names(bundle.model) and names
    np.testing.assert_array_equal(kernel_weights(bundle, names[0]).values, kernel_weights(bundle.model, names[0]).values)
    with pytest.raises(TypeError, match="expected a torch.nn.Module, a zoo bundle .* or a cnnwidgets.Probe, got str"):
        conv_layer_names("resnet18")


# --- the view's state: refused values, failed changes, closing -------------------------------------------------


def test_out_of_range_or_missing_menu_choices_from_the_browser_go_to_the_status_line():
    view = kernel_view(small_net())
    picture = view._image.value
    view._layer_menu.set_state({"index": 99})  # what a browser could send: no TraitError out of the comm handler
    assert view.error and view.status == "layer: not changed (Invalid selection: index out of bounds)"
    assert (view.layer, view._layer_menu.index, view._image.value) == ("0", 0, picture)  # nothing changed
    view._normalize_menu.set_state({"index": 5})
    assert view.status.startswith("scale: not changed (Invalid selection") and view.normalize == "layer"
    view._layer_menu.set_state({"index": None})  # no choice at all: refused, not a layer of None
    assert view.error and "layer: not changed (no choice made; choose one of ['0', '2'])" in view.status
    assert (view.layer, view._layer_menu.value, view._image.value) == ("0", "0", picture)
    view._layer_menu.set_state({"index": 1})
    assert view.layer == "2" and not view.error and view.status.startswith("2: 5x4x3x3 weights")
    view.close()


def test_a_failed_change_takes_the_previous_picture_away(monkeypatch):
    import cnnwidgets.app.filters as filters

    view = kernel_view(small_net(), layer="2")
    view.out_channel = 4  # the last of the 5 output channels of '2'
    assert not view.error and view.image_shape != ()
    view.layer = "0"  # 4 output channels: channel 4 is not there, so all of '0' is shown
    assert view.out_channel == -1 and not view.error and view.image_shape != ()

    def broken(*args, **kwargs):
        raise RuntimeError("cannot draw these tiles")

    monkeypatch.setattr(filters, "kernel_mosaic", broken)
    view.out_channel = 1  # the drawing fails: the picture of the whole layer is taken away
    assert view.error and "cannot draw these tiles" in view.status
    assert view.image_shape == () and view._image.value == b"" and view._image.layout.display == "none"
    monkeypatch.undo()
    view.out_channel = 2
    assert not view.error and view.image_shape != () and view._image.layout.display is None
    view.layer = None  # from Python: nothing to show, and the view says why
    assert view.image_shape == () and view.status == "no layer chosen: pick a convolution layer in the menu"
    view.close()


def test_options_are_checked_when_the_view_is_made():
    model = small_net()
    for bad, error, message in [
        (dict(max_tiles=0), ValueError, r"max_tiles must be an int >= 1, got 0"),
        (dict(max_tiles=-5), ValueError, r"max_tiles must be an int >= 1, got -5"),
        (dict(max_tiles=2.5), TypeError, r"max_tiles must be an int >= 1, got float 2.5"),
        (dict(max_tiles="a"), TypeError, r"max_tiles must be an int >= 1, got str 'a'"),
        (dict(max_tiles=None), TypeError, r"max_tiles must be an int >= 1, got a NoneType"),
        (dict(tile=0), ValueError, r"tile must be an int in 1\.\.256, got 0"),
        (dict(tile=10**6), ValueError, r"tile must be an int in 1\.\.256, got 1000000"),
        (dict(width=-3), ValueError, r"width must be an int in 1\.\.4096, got -3"),
        (dict(width=10**6), ValueError, r"width must be an int in 1\.\.4096, got 1000000"),
    ]:
        with pytest.raises(error, match=message):
            kernel_view(model, **bad)
    # max_tiles cuts the full grid in whole rows, at least one: 4 input channels per row
    view = kernel_view(model, layer="2", max_tiles=3)
    assert view.image_shape[0] == 1 * 49 + 1 and "showing output channels 0-0 of 5" in view.status
    view.close()


def test_grouped_convolutions_say_their_columns_are_inputs_within_a_group():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=4), nn.Conv2d(8, 8, 3, groups=8))
    view = kernel_view(model, layer="1")
    assert "8x2x3x3 weights (rows: output, columns: input channel within the output's group of 2; 4 groups)" \
        in view.status
    view.out_channel = 3
    assert "(output channel 3, which reads input channels 2-3 (group 1 of 4))" in view.status
    view.layer = "2"
    assert "(output channel 3, which reads input channel 3 (group 3 of 8))" in view.status
    view.layer, view.out_channel = "0", -1
    assert "(RGB tiles)" in view.status  # a plain convolution keeps its words
    view.close()


def test_a_closed_view_refuses_new_settings_and_its_controller_stops_drawing():
    view = kernel_view(small_net())
    picture = view._image.value
    view.close()
    for name, value in (("layer", "2"), ("out_channel", 1), ("normalize", "filter")):
        with pytest.raises(Exception, match=rf"cannot set {name}: this view is closed; make a new one with kernel_view"):
            setattr(view, name, value)
    assert view.layer == "0" and view._image.value == picture
    other = KernelView()
    controller = KernelController(small_net(), other)
    controller.close()  # the controller alone: it stops following the view
    picture = other._image.value
    other.layer = "2"
    assert other._image.value == picture
    other.close()


def test_weights_on_the_meta_device_are_refused_saying_to_load_them():
    model = small_net()
    model[2].to("meta")
    with pytest.raises(ValueError, match=r"weight of layer '2' is on the meta device.*load the weights first.*to_empty"):
        kernels(model, "2")
    assert kernels(model, "0").weight.shape == (4, 3, 3, 3)  # the layers with values still show
