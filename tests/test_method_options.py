"""Options that make no sense, or give a blank result, are said: a warning at the caller's line or an error."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from cnnwidgets import ChannelActivation
from cnnwidgets.methods.actmax import SaturatedImageWarning, maximize_activation, zero_gradient_quietly
from cnnwidgets.methods.evolution import FeatureEvolutionRecorder
from cnnwidgets.methods.gradients import InactiveChannelWarning, project_channel
from cnnwidgets.methods.invariance import invariance_curves

FAST = dict(size=16, steps=8, progress=False)


def identity_net() -> nn.Module:
    """conv (1x1, weight 1, bias 0) -> ReLU -> conv: layer '0' is the input itself, signed."""
    model = nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU(), nn.Conv2d(1, 2, 1))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.zero_()
        model[2].weight.fill_(1.0)
        model[2].bias.zero_()
    return model.eval()


def small_net() -> nn.Module:
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3),
    )
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)
    return model.eval()


def _signed_image() -> torch.Tensor:
    x = torch.ones(1, 1, 4, 4)
    x[0, 0, 0, 0] = -0.5  # the one unit that is not active
    return x


# --------------------------------------------------------------------------- 1. project_channel's unit


def test_inactive_unit_warns_and_projects_zero():
    with pytest.warns(InactiveChannelWarning) as record:
        line = _line() + 1
        result = project_channel(identity_net(), _signed_image(), "0", 0, unit=(0, 0))
    assert torch.equal(result, torch.zeros_like(result))
    found = [w for w in record if issubclass(w.category, InactiveChannelWarning)]
    assert len(found) == 1
    message = str(found[0].message)
    assert "unit (0, 0)" in message and "-0.5" in message and "zero" in message and "channel 0" in message
    assert (found[0].filename, found[0].lineno) == (__file__, line)  # the caller's line


def test_active_unit_and_inactive_channel_warn_once_or_not_at_all():
    with warnings.catch_warnings():
        warnings.simplefilter("error", InactiveChannelWarning)
        assert project_channel(identity_net(), _signed_image(), "0", 0, unit=(1, 1)).abs().max() > 0
    # a channel that is not active anywhere: the channel's warning only, not a second one for the unit
    with pytest.warns(InactiveChannelWarning) as record:
        project_channel(identity_net(), -torch.ones(1, 1, 4, 4), "0", 0, unit=(1, 1))
    found = [str(w.message) for w in record if issubclass(w.category, InactiveChannelWarning)]
    assert len(found) == 1 and "channel 0 of layer '0' is not active" in found[0]


def test_inactive_unit_in_a_batch_names_the_images():
    x = torch.cat([_signed_image(), torch.ones(1, 1, 4, 4), _signed_image()])
    with pytest.warns(InactiveChannelWarning, match=r"unit \(0, 0\).*images 0, 2") as record:
        result = project_channel(identity_net(), x, "0", 0, unit=(0, 0))
    assert result[0].abs().max() == 0 and result[1].abs().max() > 0 and result[2].abs().max() == 0
    assert len([w for w in record if issubclass(w.category, InactiveChannelWarning)]) == 1


# --------------------------------------------------------------------------- 2. maximize_activation


@pytest.mark.parametrize("jitter", [16, 100])
def test_jitter_not_smaller_than_the_image_is_refused(jitter):
    with pytest.raises(ValueError, match=r"jitter.*16x16"):
        maximize_activation(small_net(), 1, jitter=jitter, **FAST)


@pytest.mark.filterwarnings("ignore::cnnwidgets.methods.actmax.ZeroGradientWarning")  # 2 steps need not rise
def test_jitter_below_the_image_side_runs():
    result = maximize_activation(small_net(), 1, jitter=15, size=(16, 20), steps=2, progress=False)
    assert result.rgb.shape == (16, 20, 3)
    with pytest.raises(ValueError, match=r"jitter.*16x20"):
        maximize_activation(small_net(), 1, jitter=16, size=(16, 20), steps=2, progress=False)


@pytest.mark.filterwarnings("ignore::cnnwidgets.methods.actmax.ZeroGradientWarning")  # 2 steps need not rise
def test_rotate_beyond_a_full_turn_is_refused():
    with pytest.raises(ValueError, match=r"rotate.*360.*1000"):
        maximize_activation(small_net(), 1, rotate=1000, **FAST)
    maximize_activation(small_net(), 1, rotate=360, **FAST)  # a full turn either way is accepted


def test_saturating_lr_warns_at_the_callers_line():
    with pytest.warns(SaturatedImageWarning) as record:
        line = _line() + 1
        result = maximize_activation(small_net(), ChannelActivation("3", 2), lr=1e30, **FAST)
    assert np.isin(result.rgb, (0.0, 1.0)).mean() > 0.9  # the 2-colour image the warning is about
    found = [w for w in record if issubclass(w.category, SaturatedImageWarning)]
    assert len(found) == 1
    message = str(found[0].message)
    assert "lr=1e+30" in message and "smaller lr" in message and "saturated" in message
    assert (found[0].filename, found[0].lineno) == (__file__, line)


def test_default_lr_does_not_warn_of_saturation():
    with warnings.catch_warnings():
        warnings.simplefilter("error", SaturatedImageWarning)
        maximize_activation(small_net(), ChannelActivation("3", 2), size=16, steps=64, progress=False)


def test_saturation_warning_is_left_out_in_the_quiet_block():
    with warnings.catch_warnings():
        warnings.simplefilter("error", SaturatedImageWarning)
        with zero_gradient_quietly() as left_out:
            maximize_activation(small_net(), ChannelActivation("3", 2), lr=1e30, **FAST)
    assert any(isinstance(w, SaturatedImageWarning) for w in left_out)


# --------------------------------------------------------------------------- 3. invariance_curves


def test_translation_beyond_the_image_warns():
    images = torch.randn(2, 3, 16, 16)
    with pytest.warns(UserWarning, match=r"translation") as record:
        line = _line() + 1
        invariance_curves(small_net(), images, transforms={"translation": [0, 4, 1000, -16]}, progress=False)
    found = [w for w in record if "translation" in str(w.message)]
    assert len(found) == 1
    message = str(found[0].message)
    assert "1000" in message and "-16" in message and "16" in message and "4," not in message
    assert (found[0].filename, found[0].lineno) == (__file__, line)


def test_translation_inside_the_image_is_quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        invariance_curves(small_net(), torch.randn(2, 3, 16, 16), transforms={"translation": [-15, 0, 15]},
                          progress=False)


# --------------------------------------------------------------------------- 4. FeatureEvolutionRecorder


def test_duplicate_channels_are_refused():
    with pytest.raises(ValueError, match=r"layer '3'.*duplicate.*\[1\]"):
        FeatureEvolutionRecorder(small_net(), torch.randn(4, 3, 16, 16), {"3": [1, 2, 1]}, device="cpu")


def test_a_count_above_the_layers_channels_warns():
    with pytest.warns(UserWarning, match=r"layer '3' has 8 channels.*100") as record:
        line = _line() + 1
        recorder = FeatureEvolutionRecorder(small_net(), torch.randn(4, 3, 16, 16), {"3": 100}, device="cpu")
    with recorder:
        assert recorder.channels == {"3": list(range(8))}
    found = [w for w in record if "100" in str(w.message)]
    assert (found[0].filename, found[0].lineno) == (__file__, line)


def test_the_default_count_is_clamped_quietly():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with FeatureEvolutionRecorder(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), torch.randn(2, 3, 8, 8), ["1"],
                                      device="cpu") as recorder:
            assert recorder.channels == {"1": [0, 1, 2, 3]}


def _line() -> int:
    """The line of the caller."""
    import inspect

    return inspect.currentframe().f_back.f_lineno
