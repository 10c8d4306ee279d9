"""Method inputs and outcomes that look like failures: the methods say what was wrong and what is
accepted, or warn when a result is right but looks broken (a blank map, an image of nothing)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from cnnwidgets import ChannelActivation, Probe
from cnnwidgets.methods.actmax import ZeroGradientWarning, maximize_activation
from cnnwidgets.methods.cam import layer_gradient, nearest_conv_layer
from cnnwidgets.methods.correspondence import correspondence
from cnnwidgets.methods.dead import dead_channels
from cnnwidgets.methods.gradients import EmptyMapWarning, empty_maps_quietly
from cnnwidgets.methods.occlusion import (
    NoOcclusionEffectWarning,
    grid_shape,
    grid_to_pixel_attribution,
    occlusion_map,
    occlusion_top_class,
)
from cnnwidgets.methods.topk import scan_topk


def tiny() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5),
    ).eval()


def dead_channel_net() -> nn.Sequential:
    """tiny() whose channel 1 of layer '3' (the second ReLU) is never active: its bias is -100."""
    model = tiny()
    with torch.no_grad():
        model[2].bias[1] = -100.0
    return model


def image(seed: int = 1) -> torch.Tensor:
    return torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def caught(kind: type[Warning], run):
    """``run()``'s result and the warnings of class ``kind`` it gave (every warning shown)."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = run()
    return result, [w for w in record if issubclass(w.category, kind)]


# ---------------------------------------------------------------------------- 1. activation maximisation


def test_a_channel_that_never_fires_warns_that_the_image_shows_nothing_of_it():
    model = dead_channel_net()
    with pytest.warns(ZeroGradientWarning) as record:
        result = maximize_activation(model, ChannelActivation("3", 1), input_size=(3, 32, 32), steps=24,
                                     progress=False)
    # the redirected ReLUs moved the image, but the channel stayed off: no zero-gradient case
    assert result.initial_activation == result.activation == 0.0
    (warning,) = record
    message = str(warning.message)
    assert warning.filename == __file__
    assert message.startswith("maximize_activation: the target did not rise above its starting value (it is 0 on "
                              "the starting image, 0 at the end, and never above 0 in any of the 24 steps), so the "
                              "image shows no feature of the target")
    assert "dead_channels" in message and "another channel" in message


def test_a_run_that_raises_the_target_gives_no_warning():
    model = tiny()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ZeroGradientWarning)
        result = maximize_activation(model, ChannelActivation("3", 4), size=16, steps=24, progress=False)
    assert result.activation > result.initial_activation


def test_a_cancelled_run_does_not_warn_that_the_target_did_not_rise():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ZeroGradientWarning)
        stopped = maximize_activation(dead_channel_net(), ChannelActivation("3", 1), input_size=(3, 16, 16),
                                      steps=24, progress=False, cancel=lambda: True)
    assert stopped.cancelled and stopped.steps == 0


# ---------------------------------------------------------------------------- 2. layer_gradient layout


def test_layer_gradient_returns_contiguous_tensors_in_the_standard_layout():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    activation, grad = layer_gradient(model, x, 0, "layer1")
    assert activation.shape == grad.shape == (2, 64, 16, 16)
    assert activation.is_contiguous() and grad.is_contiguous()
    assert activation.view(2, -1).shape == grad.view(2, -1).shape == (2, 64 * 16 * 16)
    with Probe(model, channels_last=False) as probe:
        plain, plain_grad = layer_gradient(probe, x, 0, "layer1")
    torch.testing.assert_close(activation, plain, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad, plain_grad, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------- 3. nothing changed


def test_an_occlusion_whose_fill_equals_the_image_warns_that_nothing_changed():
    result, record = caught(EmptyMapWarning, lambda: occlusion_map(tiny(), torch.zeros(1, 3, 16, 16), 0, window=4,
                                                                    stride=4, progress=False))
    assert result.complete and np.all(result.drop == 0)
    (warning,) = record
    assert warning.category is NoOcclusionEffectWarning and issubclass(NoOcclusionEffectWarning, EmptyMapWarning)
    assert warning.filename == __file__
    message = str(warning.message)
    assert message.startswith("occlusion_map: no occluder position changed the score")
    assert "the fill equals the image under every window" in message and "another fill" in message


def test_an_occlusion_of_a_channel_that_is_never_active_warns_that_the_target_ignores_the_image():
    result, record = caught(EmptyMapWarning, lambda: occlusion_map(dead_channel_net(), image(),
                                                                    ChannelActivation("3", 1), window=4, stride=4,
                                                                    progress=False))
    assert result.complete and np.all(result.grid == 0) and result.unoccluded == 0
    (warning,) = record
    assert warning.category is NoOcclusionEffectWarning and warning.filename == __file__
    message = str(warning.message)
    assert "does not depend on the image" in message and "never active" in message
    assert "fill equals the image" not in message  # the fill differs from the image: not a cause here


def test_occlusion_top_class_warns_too():
    _, record = caught(EmptyMapWarning, lambda: occlusion_top_class(tiny(), torch.zeros(1, 3, 16, 16), window=4,
                                                                     stride=4, progress=False))
    (warning,) = record
    assert str(warning.message).startswith("occlusion_top_class: no occluder position changed the score")
    assert warning.filename == __file__


def test_a_map_that_changes_and_a_cancelled_or_partial_scan_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmptyMapWarning)
        full = occlusion_map(tiny(), image(), 0, window=4, stride=4, progress=False)
        assert full.complete and np.any(full.drop != 0)
        zeros = torch.zeros(1, 3, 16, 16)
        cancelled = occlusion_map(tiny(), zeros, 0, window=4, stride=4, progress=False, cancel=lambda: True)
        assert cancelled.cancelled and cancelled.done == 0
        calls = []

        def stop_after_first_batch() -> bool:
            calls.append(1)
            return len(calls) > 2  # after the unoccluded pass and the first batch
        partial = occlusion_map(tiny(), zeros, 0, window=2, stride=2, batch_size=4, progress=False,
                                cancel=stop_after_first_batch)
        assert partial.cancelled and 0 < partial.done < partial.total


def test_an_occlusion_that_changed_nothing_is_left_out_in_a_quiet_block():
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmptyMapWarning)
        with empty_maps_quietly() as left_out:
            occlusion_map(tiny(), torch.zeros(1, 3, 16, 16), 0, window=4, stride=4, progress=False)
    (warning,) = left_out
    assert isinstance(warning, NoOcclusionEffectWarning) and "no occluder position changed" in str(warning)


def test_correspondence_warns_when_the_occluder_changed_no_feature():
    images = torch.zeros(3, 3, 16, 16)
    result, record = caught(EmptyMapWarning, lambda: correspondence(tiny(), images, {"eye": [(0, 0, 4, 4)] * 3},
                                                                    random_trials=2, progress=False))
    assert result.cell("eye", "3") == "0.000 ± 0.000"
    (warning,) = record
    assert warning.category is NoOcclusionEffectWarning and warning.filename == __file__
    message = str(warning.message)
    assert message.startswith("correspondence: occluding changed no feature of any image")
    assert "part 'eye' (at layers '3', '4')" in message and "the random control" in message
    assert "not perfect correspondence" in message and "fill equals the images" in message
    # occluders that change the features: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmptyMapWarning)
        correspondence(tiny(), torch.rand(3, 3, 16, 16), {"eye": [(0, 0, 4, 4)] * 3}, random_trials=1,
                       progress=False)


# ---------------------------------------------------------------------------- 4. nearest_conv_layer


def test_nearest_conv_layer_of_a_model_it_cannot_run_says_to_pass_a_probe():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5)).eval()
    with pytest.raises(RuntimeError) as info:
        nearest_conv_layer(model)
    message = str(info.value)
    assert message.startswith("nearest_conv_layer: the model ran on none of the input sizes tried")
    assert "nearest_conv_layer takes no input_size" in message
    assert "nearest_conv_layer(Probe(model, input_size=(C, H, W)))" in message
    assert "e.g. input_size=(C, H, W)" not in message
    with pytest.raises(RuntimeError, match=r"nearest_conv_layer\(Probe\(model, input_size=\(C, H, W\)\), '1'\)"):
        nearest_conv_layer(model, "1")


def test_nearest_conv_layer_of_a_model_without_feature_maps_names_itself():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5)).eval()
    with Probe(model, input_size=(3, 8, 8)) as probe:
        with pytest.raises(ValueError) as info:
            nearest_conv_layer(probe)
        with pytest.raises(ValueError) as before:
            nearest_conv_layer(probe, "1")
    for error in (info.value, before.value):
        message = str(error)
        assert message.startswith("nearest_conv_layer: no layer with a feature-map output larger than 1x1")
        assert "no layer with a spatial map" in message and "Grad-CAM needs" not in message


# ---------------------------------------------------------------------------- 5. TopKActivations arguments


@pytest.fixture(scope="module")
def scanned():
    model = tiny()
    return model, scan_topk(model, torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(2)), ["1"],
                            k=2, progress=False)


def test_projections_with_the_arguments_in_the_order_of_entries_say_the_order(scanned):
    model, result = scanned
    with pytest.raises(TypeError) as info:
        result.projections("1", 0, model)
    message = str(info.value)
    assert "expected a torch.nn.Module, a zoo bundle or a cnnwidgets.Probe, got str" in message
    assert "projections(model, layer, channel)" in message and "entries(layer, channel)" in message


def test_box_refuses_what_is_not_an_entry(scanned):
    _, result = scanned
    with pytest.raises(TypeError, match=r"box: entry must be a TopKEntry, .*entries\(layer, channel\).*got int 5"):
        result.box("1", 5)
    entry = result.entries("1", 0)[0]
    assert result.box("1", entry).as_tuple() == result.box("1", entry).as_tuple()


# ---------------------------------------------------------------------------- 6. data that is not images


@pytest.mark.parametrize("scan", ["dead_channels", "scan_topk"])
def test_a_numpy_array_or_a_path_as_data_says_what_to_do(scan):
    model = tiny()

    def run(data):
        if scan == "dead_channels":
            return dead_channels(model, data, progress=False)
        return scan_topk(model, data, ["1"], progress=False)

    what = "data"  # dead_channels reads its inputs as scan_topk reads its data
    array = np.random.rand(6, 3, 16, 16).astype("f4")
    with pytest.raises(TypeError, match=rf"^{what} is a numpy array of shape \(6, 3, 16, 16\).*torch.from_numpy"):
        run(array)
    with pytest.raises(TypeError, match=rf"^{what} is a str \('images/'\): paths are not accepted; load the "
                                        r"images first \(e.g. a torchvision ImageFolder dataset"):
        run("images/")
    with pytest.raises(TypeError, match=rf"^item 0 of the {what} is a numpy array .*torch.from_numpy"):
        run([array[0], array[1]])
    with pytest.raises(TypeError, match=rf"^item 0 of the {what} is a str \('a.jpg'\): paths are not accepted"):
        run(["a.jpg", "b.jpg"])


# ---------------------------------------------------------------------------- 7. nothing computed yet


def test_the_pixel_attribution_of_a_scan_cancelled_before_its_first_batch_is_all_nan_without_noise():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = occlusion_map(tiny(), image(), 0, window=4, stride=4, progress=False, cancel=lambda: True)
        pixels = result.pixel_attribution()
        direct = grid_to_pixel_attribution(np.full((4, 4), np.nan), 0.5, window=4, stride=4, image_size=(16, 16))
    for values in (pixels, direct):
        assert values.shape == (16, 16) and values.dtype == np.float32 and np.isnan(values).all()


# ---------------------------------------------------------------------------- 8. fill


def test_a_fill_that_is_not_finite_reads_cleanly():
    with pytest.raises(ValueError) as info:
        occlusion_map(tiny(), image(), 0, window=4, stride=4, progress=False, fill=float("nan"))
    message = str(info.value)
    assert message.startswith("fill must be a finite number, got nan; accepted: a number")
    assert message.count("a number") == 1 and "(or" not in message


# ---------------------------------------------------------------------------- 9. sizes as ints


def test_window_and_stride_take_what_other_integer_arguments_take():
    x = image()
    plain = occlusion_map(tiny(), x, 0, window=4, stride=2, progress=False)
    for window, stride in [(torch.tensor(4), torch.tensor(2)), (np.int64(4), 2), ((torch.tensor(4), 4), [2, 2]),
                           (torch.tensor([4, 4]), np.array([2, 2]))]:
        other = occlusion_map(tiny(), x, 0, window=window, stride=stride, progress=False)
        assert other.window == (4, 4) and other.stride == (2, 2)
        np.testing.assert_array_equal(other.grid, plain.grid)
    assert grid_shape((16, 16), torch.tensor(4), torch.tensor(4)) == (4, 4)


@pytest.mark.parametrize("value, shown", [("4", "str '4'"), (True, "bool True"), (2.5, "float 2.5"),
                                          ((4, 1.5), r"tuple \(4, 1.5\)"), (torch.tensor(4.0), "a tensor of shape ()")])
def test_a_window_of_the_wrong_type_is_a_type_error(value, shown):
    with pytest.raises(TypeError, match=r"window must be a positive int or a pair \(height, width\) of positive "
                                        rf"ints \(.*0-d integer tensor.*\), got .*{shown}") as info:
        occlusion_map(tiny(), image(), 0, window=value, stride=4, progress=False)
    assert isinstance(info.value, ValueError)  # refused with a ValueError before: code catching that still does
    with pytest.raises(TypeError, match=r"stride must be a positive int or a pair"):
        occlusion_map(tiny(), image(), 0, window=4, stride=value, progress=False)


def test_a_window_below_one_is_a_value_error_only():
    with pytest.raises(ValueError, match=r"window must be a positive int .*got 0") as info:
        occlusion_map(tiny(), image(), 0, window=0, stride=4, progress=False)
    assert not isinstance(info.value, TypeError)


def test_maximize_activation_size_takes_a_0d_integer_tensor_and_refuses_other_types_with_a_type_error():
    model = tiny()
    result = maximize_activation(model, 0, size=torch.tensor(8), steps=0, progress=False)
    assert result.image.shape == (1, 3, 8, 8)
    pair = maximize_activation(model, 0, size=(torch.tensor(8), np.int32(10)), steps=0, progress=False)
    assert pair.image.shape == (1, 3, 8, 10)
    for value, shown in [(True, "True"), ("8", "'8'"), (8.0, "8.0"), ((16.5, 16), r"\(16.5, 16\)")]:
        with pytest.raises(TypeError, match=rf"size must be an int H or a pair \(H, W\) of ints >= 2.*0-d integer "
                                            rf"tensor\); got {shown}$") as info:
            maximize_activation(model, 0, size=value, steps=1, progress=False)
        assert isinstance(info.value, ValueError)  # as before, for code that catches that
    with pytest.raises(ValueError, match=r"size must be an int H or a pair \(H, W\) of ints >= 2.*got 1") as info:
        maximize_activation(model, 0, size=1, steps=1, progress=False)
    assert not isinstance(info.value, TypeError)
