"""The methods' default choices on modern torchvision architectures (MobileNet, EfficientNet, ConvNeXt,
RegNet, DenseNet, GoogLeNet ...), beyond the VGG and ResNet families most tests use.

Random weights (``weights=None``) with a fixed seed and small inputs keep each test to a few seconds on CPU.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

torchvision = pytest.importorskip("torchvision")

from cnnwidgets import Probe  # noqa: E402
from cnnwidgets.methods import dead_channels, grad_cam  # noqa: E402
from cnnwidgets.methods.dead import zeroed_by_relu  # noqa: E402
from cnnwidgets.methods.invariance import default_feature_layers  # noqa: E402


def _model(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(torchvision.models, name)(weights=None, **kwargs).eval()


def _images(n: int = 2, size: int = 64) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------------------- dead channels
def test_dead_channels_default_on_googlenet_does_not_claim_the_model_has_no_convolution():
    """GoogLeNet (and Inception v3) apply every ReLU as F.relu after a BatchNorm, so the default set of
    dead.default_dead_layers is empty. The error says why and how to name layers, and does not claim that
    the model has no convolution (GoogLeNet has 57)."""
    model = _model("googlenet", aux_logits=False, init_weights=True)
    with pytest.raises(ValueError, match=r"no layer to scan by default: .* applied as functions \(F\.relu\).*"
                                         r"layers=\[\.\.\.\], such as 'conv1'") as info:
        dead_channels(model, _images(), progress=False)
    assert "no convolution" not in str(info.value)


def test_dead_channels_default_does_not_report_se_gate_logits_as_dead():
    """The squeeze-excitation ``fc2`` convolutions of MobileNetV3 (followed by Hardsigmoid) and EfficientNet
    (followed by Sigmoid) are not scanned by default: a channel whose gate logit is <= 0 is not "dead", the
    gate after it (0.1..0.5) passes that channel on. A default conv layer's dead channel is one a ReLU zeroes."""
    model = _model("mobilenet_v3_small")
    with Probe(model) as probe:
        result = dead_channels(probe, _images(), progress=False)
        wrong = {
            name: (len(report.dead), type(probe.module(probe.layers[name].feeds)).__name__)
            for name, report in result.items()
            if report.dead and isinstance(probe.module(name), nn.Conv2d) and not zeroed_by_relu(probe, name)
        }
    assert not wrong, f"conv channels reported dead although no ReLU follows them (layer: (count, next)): {wrong}"


# ---------------------------------------------------------------------------- default feature layers
def test_default_last_conv_of_convnext_is_a_stage_output_not_a_branch_inside_a_block():
    """For ConvNeXt the "last_conv" counterpart (correspondence's default "layer 5") is the representation
    the network has at that point (the last stage's output), not 'features.7.2.block.0', the depthwise
    convolution inside the last block's residual branch (before its LayerNorm, MLP and residual sum)."""
    model = _model("convnext_tiny")
    with Probe(model) as probe:
        probe.describe((3, 64, 64))
        name = default_feature_layers(probe)["last_conv"]
    assert ".block." not in name, f"last_conv is {name!r}, a layer inside a ConvNeXt block's residual branch"


def test_default_feature_layers_of_densenet_are_not_the_same_tensor_twice():
    """On DenseNet 'features' (last_conv) ends with 'features.norm5', the last module before the head: the
    defaults must not name that tensor twice, or correspondence() reports two identical columns under two
    names (Zeiler & Fergus compare two different depths)."""
    model = _model("densenet121")
    x = _images(1)
    with Probe(model) as probe:
        probe.describe(tuple(x.shape[1:]))
        found = default_feature_layers(probe)
        names = list(dict.fromkeys(found[key] for key in ("last_conv", "penultimate")))
        maps = probe.capture(x, names, channels_first=True)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not (maps[a].shape == maps[b].shape and torch.equal(maps[a], maps[b])), (
                f"default layers {a!r} and {b!r} are the same feature map"
            )


# ---------------------------------------------------------------------------- silent all-zero maps
def test_grad_cam_warns_when_the_map_is_all_zero():
    """When sum_k w_k A_k <= 0 at every position the ReLU makes the whole map 0: a blank heatmap needs a
    hint, as the analogous zero results elsewhere have (InactiveChannelWarning, ZeroGradientWarning).
    On this untrained RegNet and input, class 0 already gives one."""
    model = _model("regnet_x_400mf")
    x = _images(1)
    with Probe(model) as probe:
        for cls in range(60):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                cam_map = grad_cam(probe, x, cls)
            if float(cam_map.max()) == 0.0:
                break
        else:
            pytest.skip("no class with an all-zero map among the first 60")
    from cnnwidgets.methods.cam import EmptyMapWarning

    assert any(issubclass(w.category, EmptyMapWarning) for w in caught), (
        f"grad_cam returned an all-zero map for class {cls} without a warning"
    )
