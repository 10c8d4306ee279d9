"""Dead-channel default layers around residual additions, functional code, the model's output
and shared ReLU modules; and ReLU-like functions that guided backprop and the deconvnet cannot reach."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnwidgets import Probe
from cnnwidgets.methods import dead_channels
from cnnwidgets.methods.dead import default_dead_layers, zeroed_by_relu
from cnnwidgets.methods.gradients import (
    FunctionalReluWarning,
    NoReluWarning,
    deconvnet,
    guided_backprop,
)


# ------------------------------------------------------------------ dead channels: functional code
class Residual(nn.Module):
    """conv2's output goes into a residual addition (functional code), head's into ``.mean``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)
        with torch.no_grad():
            self.conv2.bias.fill_(-50.0)  # never positive alone, yet the sum it goes into is

    def forward(self, x):
        h = F.relu(self.stem(x))
        h = F.relu(self.conv2(h) + h + 100)
        return self.head(h).mean((2, 3))


class ResidualWithModules(Residual):
    """The same with a ReLU module in the stem, so that a default scan has a layer to scan."""

    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU()

    def forward(self, x):
        h = self.relu(self.stem(x))
        h = F.relu(self.conv2(h) + h + 100)
        return self.head(h).mean((2, 3))


def test_a_convolution_feeding_a_residual_addition_or_the_output_is_not_scanned_by_default():
    torch.manual_seed(0)
    model, x = ResidualWithModules().eval(), torch.randn(16, 3, 16, 16)
    # the explicit scan of conv2 does see it never positive: the default must not call it dead
    assert dead_channels(model, x, ["conv2"], progress=False)["conv2"].dead == list(range(8))
    report = dead_channels(model, x, progress=False)
    # was: conv2 8/8 dead and head 2/4 dead (every conv whose output went to functional code was scanned)
    assert "conv2" not in report and "head" not in report
    assert list(report) == ["stem", "relu"]  # stem goes into a ReLU module
    with Probe(model, input_size=(3, 16, 16)) as probe:
        for name in ("stem", "conv2", "head"):  # one rule: the default set agrees with zeroed_by_relu
            assert (name in default_dead_layers(probe)) == zeroed_by_relu(probe, name), name
        assert zeroed_by_relu(probe, "stem") and not zeroed_by_relu(probe, "conv2")


def test_a_model_with_only_functional_activations_has_no_default_layer_and_is_told_why():
    model = Residual().eval()
    with Probe(model, input_size=(3, 16, 16)) as probe:
        # was: ["stem", "conv2", "head"]
        assert default_dead_layers(probe) == []
    with pytest.raises(ValueError, match=r"functional code.*layers=\["):
        dead_channels(model, torch.randn(4, 3, 16, 16), progress=False)


def test_a_segmentation_head_is_left_out_of_the_default_scan():
    from torchvision.models.segmentation import fcn_resnet50

    torch.manual_seed(0)
    model = fcn_resnet50(weights=None, weights_backbone=None, num_classes=5, aux_loss=False).eval()
    with Probe(model, input_size=(3, 64, 64)) as probe:
        layers = default_dead_layers(probe)
        # was: included 'classifier.4', the class-score map that goes to F.interpolate and the output
        assert "classifier.4" not in layers
        assert "classifier.2" in layers  # the ReLU before it is still scanned
        assert all(zeroed_by_relu(probe, name) for name in layers if isinstance(probe.module(name), nn.Conv2d))


# ------------------------------------------------------------------ dead channels: a shared ReLU
def _resnet18_with_dead_bn1():
    from torchvision.models import resnet18

    torch.manual_seed(0)
    model = resnet18(weights=None).eval()
    with torch.no_grad():
        model.layer2[0].bn1.bias[:32] = -100.0  # 32 channels that the block's first ReLU call zeroes
    return model


def test_the_layer_before_an_earlier_call_of_a_shared_relu_is_scanned_by_default():
    model = _resnet18_with_dead_bn1()
    x = torch.randn(4, 3, 64, 64)
    report = dead_channels(model, x, progress=False)
    # was: layer2.0.bn1 not scanned; only 'layer2.0.relu' (its last call, after the residual addition)
    assert "layer2.0.bn1" in report
    assert set(range(32)) <= set(report["layer2.0.bn1"].dead)
    explicit = dead_channels(model, x, ["layer2.0.bn1"], progress=False)["layer2.0.bn1"]
    assert report["layer2.0.bn1"].dead == explicit.dead
    with Probe(model, input_size=(3, 64, 64)) as probe:
        layers = default_dead_layers(probe)
        for block in ("layer1.0", "layer1.1", "layer2.0", "layer4.1"):
            assert f"{block}.bn1" in layers and f"{block}.relu" in layers
            assert f"{block}.bn2" not in layers  # goes into the residual addition first
        assert "bn1" not in layers  # the stem's ReLU runs once: its own output is scanned
        assert layers.index("layer2.0.bn1") < layers.index("layer2.0.relu")  # execution order


class SharedRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.relu = nn.ReLU()

    def forward(self, x):
        x = self.relu(self.pool(self.bn1(self.conv1(x))))  # first call, through a pooling
        return self.relu(self.bn2(self.conv2(x)))          # last call: the module's own output


def test_a_layer_reaching_an_earlier_shared_relu_call_through_a_pooling_is_scanned():
    with Probe(SharedRelu().eval(), input_size=(3, 8, 8)) as probe:
        layers = default_dead_layers(probe)
        # was: ['relu'] only
        assert layers == ["bn1", "pool", "relu"]
        assert "bn2" not in layers  # feeds the call whose output is captured: the relu covers it


# ------------------------------------------------------------------ guided backprop: ReLU-like functions
class Functional(nn.Module):
    def __init__(self, act) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.mid = nn.ReLU()
        self.fc = nn.Linear(4, 3)
        self.act = act

    def forward(self, x):
        h = self.act(self.mid(self.conv(x)) - 0.1)
        return self.fc(h.mean((2, 3)))


RELU_LIKE = {
    "Tensor.clamp(min=0)": lambda t: t.clamp(min=0),
    "torch.clamp(t, min=0)": lambda t: torch.clamp(t, min=0),
    "torch.clamp(t, 0, 1)": lambda t: torch.clamp(t, 0, 1),
    "clamp_min(0)": lambda t: t.clamp_min(0),
    "F.relu6": F.relu6,
    "F.hardtanh": F.hardtanh,
    "F.leaky_relu": F.leaky_relu,
    "F.relu": F.relu,
}


@pytest.mark.parametrize("kind", sorted(RELU_LIKE))
@pytest.mark.parametrize("method", [guided_backprop, deconvnet])
def test_relu_like_functions_are_reported(kind, method):
    torch.manual_seed(0)
    model, x = Functional(RELU_LIKE[kind]).eval(), torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        method(model, x, 0)
    functional = [w for w in caught if issubclass(w.category, FunctionalReluWarning)]
    # was: no warning for clamp, relu6, hardtanh and leaky_relu (the plain gradient kept silently there)
    assert len(functional) == 1, [str(w.message) for w in caught]
    assert "1 time(s)" in str(functional[0].message)  # one call in the one batched pass


def test_clamps_that_are_no_relu_and_activation_modules_are_not_counted():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    for act in (lambda t: t.clamp(min=-1), lambda t: t.clamp(max=0), lambda t: torch.clamp(t, 0.5),
                nn.ReLU6(), nn.Hardtanh(), nn.LeakyReLU(), nn.Identity()):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            guided_backprop(Functional(act).eval(), x, 0)
        assert not [w for w in caught if issubclass(w.category, FunctionalReluWarning)], act
    # the rules' own clamp calls (forward and backward) are not the model's
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        deconvnet(Functional(nn.Identity()).eval(), x, 0)
    assert not [w for w in caught if issubclass(w.category, (FunctionalReluWarning, NoReluWarning))]
    # a model with no ReLU of any kind is still told so by NoReluWarning
    no_relu = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 36, 2))
    with pytest.warns(NoReluWarning):
        guided_backprop(no_relu.eval(), x, 0)


class OnlyClamp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv(x).clamp(min=0).mean((2, 3)))


def test_a_model_with_clamp_as_its_only_relu_is_told_that_the_result_is_the_plain_gradient():
    torch.manual_seed(0)
    with pytest.warns(FunctionalReluWarning, match="plain input gradient") as caught:
        guided_backprop(OnlyClamp().eval(), torch.randn(1, 3, 6, 6), 0)
    # was: NoReluWarning "the model applied no ReLU"
    assert not [w for w in caught if issubclass(w.category, NoReluWarning)]
    assert "clamp with min=0" in str(caught[0].message)


def test_the_methods_own_clamp_around_the_forward_is_not_counted_as_the_models():
    from cnnwidgets.methods.gradients import project_channel

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        project_channel(model, torch.randn(1, 3, 8, 8), "2", 0)  # rectifies the channel with clamp(min=0)
    assert not [w for w in caught if issubclass(w.category, FunctionalReluWarning)], [str(w.message) for w in caught]
