"""Saliency, guided backprop, deconvnet projections and the attribution renderer.

Oracles: hand-computed gradients of tiny nets, Captum's ``Saliency``, ``GuidedBackprop``,
``Deconvolution``, ``NeuronDeconvolution``, ``NeuronGuidedBackprop`` and ``NeuronGradient``
(run on copies with out-of-place ReLUs), and receptive-field geometry.

The Captum comparisons run our probe with ``channels_last=False``, the memory layout
Captum's forward uses, and then agree to the last bit or nearly. In another layout the
convolutions round differently; with random weights a few ReLU inputs lie within rounding
distance of zero and flip their gate, which moves a few gradient entries by up to ~0.5 %
of the map's maximum. That layout effect is tested on its own
(``test_memory_layout_changes_results_only_by_rounding``).
"""

from __future__ import annotations

import copy
import inspect
import json
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from cnnwidgets import ChannelActivation, ClassProbability, Probe
from cnnwidgets.core.hygiene import hook_count
from cnnwidgets.methods.gradients import (
    FunctionalReluWarning,
    InactiveChannelWarning,
    MixedActivationWarning,
    NoReluWarning,
    deconvnet,
    guided_backprop,
    project_channel,
    relu_report,
    relu_rule,
    saliency,
    strongest_unit,
)
from cnnwidgets.render.attribution import (
    attribution_overlay,
    attribution_to_rgb,
    colormap_lut,
    gradient_to_rgb,
    reduce_channels,
    robust_scale,
)
from tests.helpers import OutsideAutogradNet

captum_attr = pytest.importorskip("captum.attr")

# --------------------------------------------------------------------------- models


class SmallVGG(nn.Module):
    """conv-relu-pool twice, then a linear head: the deconvnet's home ground."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace), nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(inplace), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, 16), nn.ReLU(inplace), nn.Linear(16, 5))

    def forward(self, x):
        return self.classifier(self.features(x))


class TinyVGG(nn.Module):
    """CNN Explainer's TinyVGG (64x64 RGB in [0, 1], 10 classes), as described in shared/data/README.md."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_1_1 = nn.Conv2d(3, 10, 3)
        self.relu_1_1 = nn.ReLU()
        self.conv_1_2 = nn.Conv2d(10, 10, 3)
        self.relu_1_2 = nn.ReLU()
        self.pool_1 = nn.MaxPool2d(2)
        self.conv_2_1 = nn.Conv2d(10, 10, 3)
        self.relu_2_1 = nn.ReLU()
        self.conv_2_2 = nn.Conv2d(10, 10, 3)
        self.relu_2_2 = nn.ReLU()
        self.pool_2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.output = nn.Linear(10 * 13 * 13, 10)

    def forward(self, x):
        x = self.pool_1(self.relu_1_2(self.conv_1_2(self.relu_1_1(self.conv_1_1(x)))))
        x = self.pool_2(self.relu_2_2(self.conv_2_2(self.relu_2_1(self.conv_2_1(x)))))
        return self.output(self.flatten(x))


def load_tinyvgg(shared_data: Path) -> tuple[nn.Module, torch.Tensor, list[int]]:
    """The trained TinyVGG, its ten ``*_1.jpeg`` photos as a batch, and their labels."""
    from PIL import Image

    folder = shared_data / "tinyvgg-cnn-explainer"
    model = TinyVGG()
    state = torch.load(folder / "tinyvgg_state_dict.pth", weights_only=True, map_location="cpu")
    model.load_state_dict(state, strict=True)
    classes = json.loads((folder / "classes.json").read_text())
    prefixes = ["boat", "bug", "pizza", "pepper", "bus", "koala", "espresso", "panda", "orange", "car"]
    assert len(classes) == len(prefixes)
    images = []
    for prefix in prefixes:
        image = Image.open(folder / "images" / f"{prefix}_1.jpeg").convert("RGB").resize((64, 64))
        images.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1))
    return model.eval(), torch.stack(images), list(range(len(prefixes)))


def out_of_place(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every in-place flag off (what Captum's hooks need)."""
    clone = copy.deepcopy(model).eval()
    for module in clone.modules():
        if isinstance(getattr(module, "inplace", None), bool):
            module.inplace = False
    return clone


def assert_matches(ours: torch.Tensor, reference: torch.Tensor, rel: float = 1e-5) -> None:
    """Equal up to float rounding, relative to the reference's largest magnitude, and not trivially zero."""
    assert ours.shape == reference.shape
    scale = reference.abs().max().item()
    assert scale > 0, "degenerate comparison: the reference is all zero"
    error = (ours.detach().cpu() - reference.detach().cpu()).abs().max().item()
    assert error <= rel * scale, f"max difference {error:.3g} vs scale {scale:.3g}"


@pytest.fixture(scope="module")
def vgg11() -> nn.Module:
    """torchvision VGG-11 (in-place ReLUs, as shipped) with a small head.

    The 123M-parameter classifier is replaced by a 10-class one to keep copies and tests fast;
    the features - the part a deconvnet projection goes through - are untouched.
    """
    torch.manual_seed(11)
    model = torchvision.models.vgg11(weights=None)
    model.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 64), nn.ReLU(inplace=True), nn.Linear(64, 10))
    return model.eval()


@pytest.fixture(scope="module")
def alexnet() -> nn.Module:
    torch.manual_seed(12)
    return torchvision.models.alexnet(weights=None).eval()


@pytest.fixture(scope="module")
def references(vgg11, alexnet) -> dict[str, tuple[nn.Module, nn.Module, int]]:
    """arch -> (model as shipped, out-of-place copy for Captum, input size)."""
    torch.manual_seed(3)
    small = SmallVGG(inplace=True).eval()
    return {
        "small": (small, out_of_place(small), 16),
        "alexnet": (alexnet, out_of_place(alexnet), 64),
        "vgg11": (vgg11, out_of_place(vgg11), 64),
    }


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    torch.manual_seed(13)
    return torchvision.models.resnet18(weights=None).eval()


@pytest.fixture(autouse=True)
def _quiet_captum():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU", category=UserWarning)
        warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require", category=UserWarning)
        yield


# --------------------------------------------------------------------------- hand-computed


def dense_net() -> nn.Module:
    """x (1x2x2, flattened) -> W1 (3x4) -> ReLU -> W2 (1x3): small enough to do by hand."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, bias=False), nn.ReLU(), nn.Linear(3, 1, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 1.0], [-1.0, 1.0, 2.0, 0.0], [0.5, 0.5, -1.0, 2.0]]))
        model[3].weight.copy_(torch.tensor([[2.0, -3.0, 1.0]]))
    return model


def test_linear_model_saliency_is_the_weight_row():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 2, 4))
    x = torch.randn(2, 3, 2, 2)
    for c in range(4):
        row = model[1].weight[c].detach().reshape(3, 2, 2)
        signed = saliency(model, x, c, absolute=False)
        assert torch.allclose(signed, row.expand(2, -1, -1, -1))
        assert torch.allclose(saliency(model, x, c), row.abs().expand(2, -1, -1, -1))
        channel_max = row.abs().amax(0, keepdim=True).expand(2, -1, -1, -1)
        assert torch.allclose(saliency(model, x, c, reduce="max"), channel_max)


def test_relu_rules_by_hand():
    model = dense_net()
    x = torch.tensor([[[[1.0, 1.0], [1.0, 1.0]]]])  # z = W1 x = [0.5, 2.0, 2.0]: all units on
    x2 = torch.tensor([[[[1.0, 2.0], [0.0, 0.0]]]])  # z = [-3, 1, 1.5]: unit 0 off
    w1 = model[1].weight.detach()
    w2 = model[3].weight.detach()[0]
    for inp in (x, x2):
        on = (w1 @ inp.flatten()) > 0
        expected = {
            "gradient": w1.T @ (w2 * on),
            "guided": w1.T @ (w2.clamp(min=0) * on),
            "deconvnet": w1.T @ w2.clamp(min=0),
        }
        assert torch.allclose(saliency(model, inp, 0, absolute=False).flatten(), expected["gradient"])
        assert torch.allclose(guided_backprop(model, inp, 0).flatten(), expected["guided"])
        assert torch.allclose(deconvnet(model, inp, 0).flatten(), expected["deconvnet"])
    # The three rules really differ here, so the assertions above can tell them apart.
    assert not torch.allclose(expected["gradient"], expected["guided"])
    assert not torch.allclose(expected["guided"], expected["deconvnet"])


# --------------------------------------------------------------------------- Captum


def small_vgg() -> nn.Module:
    torch.manual_seed(3)
    return SmallVGG().eval()


@pytest.mark.parametrize("arch", ["small", "alexnet", "vgg11"])
def test_class_attributions_equal_captum(arch, references):
    model, reference, size = references[arch]
    x = torch.randn(2, 3, size, size)
    cls = 3
    with Probe(model, channels_last=False) as probe:
        assert_matches(saliency(probe, x, cls), captum_attr.Saliency(reference).attribute(x, target=cls))
        assert_matches(
            saliency(probe, x, cls, absolute=False),
            captum_attr.Saliency(reference).attribute(x, target=cls, abs=False),
        )
        assert_matches(guided_backprop(probe, x, cls), captum_attr.GuidedBackprop(reference).attribute(x, target=cls))
        assert_matches(deconvnet(probe, x, cls), captum_attr.Deconvolution(reference).attribute(x, target=cls))


@pytest.mark.parametrize("labels", [[3, 1], torch.tensor([3, 1]), np.array([3, 1])])
def test_a_class_per_image_equals_captums_per_image_targets(labels, references):
    model, reference, size = references["small"]
    x = torch.randn(2, 3, size, size)
    with Probe(model, channels_last=False) as probe:
        assert_matches(saliency(probe, x, labels), captum_attr.Saliency(reference).attribute(x, target=[3, 1]))
        assert_matches(guided_backprop(probe, x, labels),
                       captum_attr.GuidedBackprop(reference).attribute(x, target=[3, 1]))
        with pytest.raises(ValueError, match=r"ClassLogits: 2 class indices \(one per image\) for a batch of 3 images"):
            saliency(probe, torch.randn(3, 3, size, size), labels)


@pytest.mark.parametrize(
    "arch, layer, channel",
    [
        ("small", "features.3", 2),  # conv output
        ("small", "features.4", 5),  # ReLU output
        ("alexnet", "features.3", 7),
        ("vgg11", "features.6", 9),
    ],
)
# some images of a batch have the unit inactive: their projections are zero, as Captum's, and said so
@pytest.mark.filterwarnings("ignore::cnnwidgets.methods.gradients.InactiveChannelWarning")
def test_unit_attributions_equal_captum_neuron_methods(arch, layer, channel, references):
    model, reference, size = references[arch]
    x = torch.randn(2, 3, size, size)
    ref_layer = dict(reference.named_modules())[layer]
    with Probe(model, channels_last=False) as probe:
        unit = tuple(strongest_unit(probe, x, layer, channel)[0].tolist())  # active in image 0
        neuron = (channel, *unit)
        target = ChannelActivation(layer, channel, position=unit)
        deconv_ref = captum_attr.NeuronDeconvolution(reference, ref_layer).attribute(x, neuron_selector=neuron)
        assert_matches(deconvnet(probe, x, target), deconv_ref)
        guided_ref = captum_attr.NeuronGuidedBackprop(reference, ref_layer).attribute(x, neuron_selector=neuron)
        assert_matches(guided_backprop(probe, x, target), guided_ref)
        grad_ref = captum_attr.NeuronGradient(reference, ref_layer).attribute(x, neuron_selector=neuron)
        assert_matches(saliency(probe, x, target, absolute=False), grad_ref)

        # The paper's projection seeds the unit with its rectified activation: by positive
        # homogeneity that is max(a, 0) times Captum's unit attribution.
        activation = probe.capture(x, layer)[layer][:, channel, unit[0], unit[1]].clamp(min=0)
        assert activation[0] > 0
        projected = project_channel(probe, x, layer, channel, unit=unit)
        assert_matches(projected, activation[:, None, None, None] * deconv_ref)


@pytest.mark.parametrize("arch, layer, channel", [("small", "features.3", 2), ("alexnet", "features.4", 11)])
def test_whole_map_projection_equals_captum_with_an_energy_selector(arch, layer, channel, references):
    """unit='all' seeds R = max(A_c, 0), the gradient of 0.5 * sum(max(A_c, 0)^2)."""
    model, reference, size = references[arch]
    x = torch.randn(2, 3, size, size)
    ref_layer = dict(reference.named_modules())[layer]

    def energy(output):
        return 0.5 * (output[:, channel].clamp(min=0) ** 2).sum(dim=(1, 2))

    expected = captum_attr.NeuronDeconvolution(reference, ref_layer).attribute(x, neuron_selector=energy)
    with Probe(model, channels_last=False) as probe:
        assert_matches(project_channel(probe, x, layer, channel, unit="all"), expected)


def test_resnet18_matches_captum_although_relu_modules_run_twice(resnet18):
    x = torch.randn(2, 3, 64, 64)
    reference = out_of_place(resnet18)
    with Probe(resnet18, channels_last=False) as probe:
        assert probe.layers["layer1.0.relu"].calls == 2
        assert_matches(guided_backprop(probe, x, 7), captum_attr.GuidedBackprop(reference).attribute(x, target=7))
        assert_matches(deconvnet(probe, x, 7), captum_attr.Deconvolution(reference).attribute(x, target=7))


class SharedRelu(nn.Module):
    """One ReLU module called twice, or two ReLU modules - otherwise identical."""

    def __init__(self, shared: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.relu_b = self.relu if shared else nn.ReLU()
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        x = self.relu(self.conv1(x))
        x = self.relu_b(self.conv2(x) - 0.1)
        return self.head(x.amax(dim=(2, 3)))


def test_a_relu_module_called_twice_gets_the_rule_at_both_calls():
    shared = SharedRelu(shared=True).eval()
    separate = SharedRelu(shared=False).eval()
    separate.load_state_dict(shared.state_dict())
    x = torch.randn(3, 3, 8, 8)
    for method in (guided_backprop, deconvnet):
        a = method(shared, x, 1)
        b = method(separate, x, 1)
        assert torch.allclose(a, b, atol=1e-7) and a.abs().max() > 0
    # ... and the rule is not the plain gradient, so the test can fail.
    assert not torch.allclose(deconvnet(shared, x, 1), saliency(shared, x, 1, absolute=False))


def test_memory_layout_changes_results_only_by_rounding(references):
    """channels_last (the CPU default) and contiguous runs differ only where rounding flips a gate."""
    model, _, size = references["alexnet"]
    x = torch.randn(2, 3, size, size)
    with Probe(model, channels_last=True) as fast, Probe(model, channels_last=False) as plain:
        for method in (saliency, guided_backprop, deconvnet):
            a, b = method(fast, x, 3), method(plain, x, 3)
            scale = b.abs().max()
            assert (a - b).abs().max() <= 1e-2 * scale
            assert ((a - b).abs() > 1e-4 * scale).float().mean() < 0.05
            assert F.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.9999


# --------------------------------------------------------------------------- ResNet geometry


@pytest.mark.parametrize("layer", ["layer1.1.relu", "layer2.0.conv1"])
def test_resnet18_projection_stays_inside_the_receptive_field(resnet18, layer):
    x = torch.randn(2, 3, 64, 64)
    with Probe(resnet18) as probe:
        projection = project_channel(probe, x, layer, 3, unit="max")
        units = strongest_unit(probe, x, layer, 3)
        info = probe.layers[layer]
    assert projection.shape == x.shape
    assert torch.isfinite(projection).all()
    assert info.receptive_field is not None and info.jump is not None and info.start is not None
    half = (info.receptive_field - 1) / 2
    for n, (row, col) in enumerate(units.tolist()):
        support = projection[n].abs().sum(dim=0) > 0
        assert support.any(), "the strongest unit must project to something"
        centre_r, centre_c = info.start + row * info.jump, info.start + col * info.jump
        inside = torch.zeros_like(support)
        r0, r1 = max(0, int(np.ceil(centre_r - half))), int(np.floor(centre_r + half))
        c0, c1 = max(0, int(np.ceil(centre_c - half))), int(np.floor(centre_c + half))
        inside[r0 : r1 + 1, c0 : c1 + 1] = True
        assert not (support & ~inside).any(), f"image {n}: projection leaks outside the receptive field"
        assert inside.sum() < inside.numel(), "the receptive field must not cover the whole image here"


def test_resnet18_all_methods_finite_and_nonzero(resnet18):
    x = torch.randn(1, 3, 64, 64)
    with Probe(resnet18) as probe:
        top_class = int(probe.logits(x).argmax())
        busiest = int(probe.capture(x, "layer4")["layer4"].sum(dim=(2, 3)).argmax())
        results = (
            saliency(probe, x, 2),
            guided_backprop(probe, x, ClassProbability(2)),
            deconvnet(probe, x, ChannelActivation("layer3.0.relu", 4, reduce="sum")),
            project_channel(probe, x, "layer4", busiest, unit="all"),
            project_channel(probe, x, "fc", top_class),  # a (C,) layer: the unit is the logit itself
        )
        for result in results:
            assert result.shape == x.shape and torch.isfinite(result).all() and result.abs().max() > 0
        # A unit whose activation is not positive has nothing to project (Zeiler & Fergus).
        bottom_class = int(probe.logits(x).argmin())
        assert probe.logits(x)[0, bottom_class] < 0
        with pytest.warns(InactiveChannelWarning, match=f"channel {bottom_class} of layer 'fc' is not active"):
            assert project_channel(probe, x, "fc", bottom_class).abs().max() == 0


# --------------------------------------------------------------------------- invariants


def test_batching_does_not_change_results():
    model = small_vgg()
    x = torch.randn(3, 3, 16, 16)
    with Probe(model) as probe:
        calls = [
            lambda b: saliency(probe, b, 1, reduce="max"),
            lambda b: guided_backprop(probe, b, ClassProbability(4)),
            lambda b: deconvnet(probe, b, ChannelActivation("features.4", 3, reduce="max")),
            lambda b: project_channel(probe, b, "features.3", 6, unit="max"),
            lambda b: project_channel(probe, b, "features.3", 6, unit="all"),
        ]
        for call in calls:
            together = call(x)
            alone = torch.cat([call(x[i : i + 1]) for i in range(3)])
            assert_matches(together, alone)


def test_inplace_relu_vgg_gives_the_same_result_as_out_of_place(references):
    vgg11, reference, _ = references["vgg11"]
    assert any(getattr(m, "inplace", False) for m in vgg11.modules())
    x = torch.randn(1, 3, 64, 64)
    for method in (
        lambda m: saliency(m, x, 5),
        lambda m: guided_backprop(m, x, 5),
        lambda m: deconvnet(m, x, 5),
        lambda m: project_channel(m, x, "features.8", 3, unit="max"),
    ):
        assert torch.equal(method(vgg11), method(reference))
    assert any(getattr(m, "inplace", False) for m in vgg11.modules()), "the user's flags stay as they were"


def test_channel_targets_run_only_the_prefix():
    model = small_vgg()
    x = torch.randn(2, 3, 16, 16)
    with Probe(model) as probe:
        probe.capture(x, "features.0")
        probe.reset_stats()
        saliency(probe, x, ChannelActivation("features.3", 1))
        guided_backprop(probe, x, ChannelActivation("features.3", 1, position=(2, 2)))
        project_channel(probe, x, "features.4", 1)
        assert probe.stats.forwards == 3 and probe.stats.full_forwards == 0


def test_hooks_are_removed_after_success_and_after_errors():
    model = small_vgg()
    x = torch.randn(1, 3, 16, 16)
    with Probe(model, input_size=(3, 16, 16)) as probe:
        before = {name: hook_count(m) for name, m in probe.model.named_modules()}
        guided_backprop(probe, x, 0)
        project_channel(probe, x, "features.3", 1)
        with pytest.raises(IndexError):
            project_channel(probe, x, "features.3", 99)  # raises while the ReLU hooks are on
        with pytest.raises(IndexError):
            deconvnet(probe, x, 17)
        after = {name: hook_count(m) for name, m in probe.model.named_modules()}
        assert after == before
        assert all(p.grad is None for p in probe.model.parameters())


def test_rules_apply_only_to_the_thread_that_set_them():
    model = small_vgg()
    x = torch.randn(1, 3, 16, 16)
    with Probe(model, input_size=(3, 16, 16)) as probe:
        plain = saliency(probe, x, 1, absolute=False)
        result = {}
        with relu_rule(probe.model, "deconvnet", method="test"):
            worker = threading.Thread(target=lambda: result.update(other=saliency(probe, x, 1, absolute=False)))
            worker.start()
            worker.join()
            mine = saliency(probe, x, 1, absolute=False)
        assert torch.equal(result["other"], plain)
        assert torch.equal(mine, deconvnet(probe, x, 1)) and not torch.allclose(mine, plain)


def test_functional_relus_are_reported():
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.relu = nn.ReLU()
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(F.relu(self.relu(self.conv(x)) - 0.1).mean(dim=(2, 3)))

    x = torch.randn(1, 3, 8, 8)
    with pytest.warns(FunctionalReluWarning, match="1 time"):
        guided_backprop(Functional(), x, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FunctionalReluWarning)
        guided_backprop(small_vgg(), torch.randn(1, 3, 16, 16), 0)  # modules only: silent
        saliency(Functional(), x, 0)  # the true gradient needs no rule


class NoReluNet(nn.Module):
    """Convolutions with ReLU6, SiLU, GELU and Hardswish modules: no ReLU for the rules to reach."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU6(), nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 8, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 16 * 16, 12), nn.Hardswish(), nn.Linear(12, 3))

    def forward(self, x):
        return self.head(self.features(x))


def test_a_model_without_relu_warns_that_the_rules_give_the_plain_gradient():
    torch.manual_seed(0)
    model = NoReluNet().eval()
    x = torch.randn(1, 3, 64, 64)
    plain = saliency(model, x, 1, absolute=False)
    for method in (guided_backprop, deconvnet):
        with pytest.warns(NoReluWarning, match="no ReLU") as record:
            result = method(model, x, 1)
        assert torch.equal(result, plain)  # the numbers stay Captum's: only the user is told
        (warning,) = [w for w in record if w.category is NoReluWarning]
        message = str(warning.message)
        assert message.startswith(f"{method.__name__}: ") and "ReLU6, SiLU, GELU, Hardswish" in message
        assert "plain gradient" in message and warning.filename == __file__  # points at the call
    with pytest.warns(NoReluWarning, match="project_channel: .*ReLU6, SiLU, GELU, Hardswish"):
        project_channel(model, x, "features.5", 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoReluWarning)
        saliency(model, x, 1)  # the plain gradient is what it asks for


def test_models_with_relu_modules_do_not_get_the_no_relu_warning():
    x = torch.randn(1, 3, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoReluWarning)
        guided_backprop(small_vgg(), x, 0)
        deconvnet(small_vgg(), x, 0)
        project_channel(small_vgg(), x, "features.3", 1)
        project_channel(small_vgg(), x, "features.0", 1)  # before the first ReLU: nothing to rectify


class FunctionalOnlyNet(nn.Module):
    """Every ReLU applied as a function, none as a module (as in torchvision's GoogLeNet and Inception v3)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 8, 3, padding=1)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x = F.relu(self.conv2(F.max_pool2d(F.relu(self.conv1(x)), 2)))
        return self.head(x.mean(dim=(2, 3)))


def test_a_model_with_functional_relus_only_warns_that_the_result_is_the_plain_gradient():
    torch.manual_seed(0)
    model = FunctionalOnlyNet().eval()
    x = torch.randn(2, 3, 16, 16)
    plain = saliency(model, x, 1, absolute=False)
    for method in (guided_backprop, deconvnet):
        with pytest.warns(FunctionalReluWarning) as record:
            result = method(model, x, 1)
        assert torch.equal(result, plain)  # no ReLU got the rule
        (warning,) = record
        message = str(warning.message)
        assert message.startswith(f"{method.__name__}: the model applied ReLU only as a function (2 time(s)")
        assert "ran no nn.ReLU module" in message and "the result is the plain input gradient" in message
        assert warning.filename == __file__
    with pytest.warns(FunctionalReluWarning, match="project_channel: .*1 time.*plain input gradient"):
        project_channel(model, x, "conv2", 0)


class MixedNet(nn.Module):
    """ReLU modules with Hardswish and Hardsigmoid modules, as in MobileNetV3 (the Hardswish runs twice),
    and a Sigmoid on the output, as in a multi-label classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.relu1 = nn.Conv2d(3, 6, 3, padding=1), nn.ReLU()
        self.conv2, self.swish = nn.Conv2d(6, 6, 3, padding=1), nn.Hardswish()
        self.conv3, self.relu2 = nn.Conv2d(6, 6, 3, padding=1), nn.ReLU()
        self.gate_conv, self.gate = nn.Conv2d(6, 6, 1), nn.Hardsigmoid()
        self.conv4 = nn.Conv2d(6, 8, 3, padding=1)
        self.head, self.sigmoid = nn.Linear(8, 3), nn.Sigmoid()

    def forward(self, x):
        x = self.swish(self.conv2(self.relu1(self.conv1(x))))
        x = self.relu2(self.conv3(x))
        x = x * self.gate(self.gate_conv(x.mean(dim=(2, 3), keepdim=True)))
        x = self.swish(self.conv4(x))
        return self.sigmoid(self.head(x.mean(dim=(2, 3))))


def test_a_model_mixing_relu_with_other_activations_warns_once_naming_them():
    torch.manual_seed(0)
    model = MixedNet().eval()
    x = torch.randn(1, 3, 16, 16)
    for method in (guided_backprop, deconvnet):
        with pytest.warns(MixedActivationWarning) as record:
            result = method(model, x, 1)
        assert result.abs().sum() > 0
        (warning,) = record  # one warning per call, not one per module
        message = str(warning.message)
        # the Sigmoid on the output only rescales the score: not counted
        assert message.startswith(f"{method.__name__}: the modified backward rule was applied at 2 nn.ReLU "
                                  "modules, while 1 Hardswish and 1 Hardsigmoid modules kept their true gradient")
        assert "mixes the two rules" in message and "Sigmoid" not in message and warning.filename == __file__
    with pytest.warns(MixedActivationWarning, match="project_channel: .*1 nn.ReLU module, while 1 Hardswish module "):
        project_channel(model, x, "conv3", 0)
    with relu_report() as report, warnings.catch_warnings():
        warnings.simplefilter("error", MixedActivationWarning)  # the report holds it instead
        guided_backprop(model, x, 1)
    assert report.mixed.startswith("the modified backward rule was applied at 2 nn.ReLU modules")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        saliency(model, x, 1)  # the true gradient needs no rule
        # the activation the target reads only gates its own values
        project_channel(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Hardswish()), x, "3", 0)
        project_channel(model, x, "conv1", 0)  # nothing ran but a convolution


def test_relu_models_with_a_sigmoid_or_softmax_on_the_output_do_not_get_the_mixed_warning():
    x = torch.randn(1, 3, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MixedActivationWarning)
        for last in (nn.Sigmoid(), nn.Softmax(dim=1), nn.Identity()):
            model = nn.Sequential(small_vgg(), last).eval()
            guided_backprop(model, x, 0)
            deconvnet(model, x, 0)
            project_channel(model, x, "0.features.3", 1)


def one_by_one_net() -> nn.Module:
    """Channel 0 of ``conv`` is ``red - 0.5``: not active on an image whose red values are all below 0.5."""
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]).reshape(2, 3, 1, 1))
        model[0].bias.copy_(torch.tensor([-0.5, 0.0]))
    return model.eval()


def test_an_inactive_channel_projects_to_zero_with_a_warning():
    model = one_by_one_net()
    dark = torch.full((1, 3, 4, 4), 0.25)
    dark[0, 0, 1, 2] = 0.3  # channel 0 peaks at -0.2 there
    bright = torch.full((1, 3, 4, 4), 1.0)
    for unit in ("max", "all", (1, 1)):
        with pytest.warns(InactiveChannelWarning, match=r"channel 0 of layer '0' is not active on the image "
                                                        r"\(its largest value is -0\.2\)") as record:
            result = project_channel(model, dark, "0", 0, unit=unit)
        assert torch.equal(result, torch.zeros_like(dark)) and record[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error", InactiveChannelWarning)
        assert project_channel(model, bright, "0", 0).abs().sum() > 0
        assert project_channel(model, dark, "0", 1).abs().sum() > 0  # another channel, active
        # a unit target is sent back whatever its value: not zero, and no warning
        assert deconvnet(model, dark, ChannelActivation("0", 0, position=(1, 2))).abs().sum() > 0
    with pytest.warns(InactiveChannelWarning, match=r"not active on images 1, 2 \(largest values -0\.2, -0\.2\)"):
        batch = project_channel(model, torch.cat([bright, dark, dark]), "0", 0)
    assert batch[0].abs().sum() > 0 and torch.equal(batch[1:], torch.zeros_like(batch[1:]))
    with pytest.warns(InactiveChannelWarning, match=r"on image 1 of the batch \(its largest value is -0\.2\)"):
        project_channel(model, torch.cat([bright, dark]), "0", 0)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda m, x: saliency(m, x, 5), IndexError, "out of range"),
        (lambda m, x: saliency(m, x, 1, reduce="mean"), ValueError, "reduce"),
        (lambda m, x: guided_backprop(m, x, ChannelActivation("features.33", 0)), KeyError, "features.3"),
        (lambda m, x: deconvnet(m, x, "cat"), TypeError, "target"),
        (lambda m, x: project_channel(m, x, "feature.3", 0), KeyError, "features.3"),
        (lambda m, x: project_channel(m, x, "features.3", 8), IndexError, "8 channels"),
        (lambda m, x: project_channel(m, x, "features.3", 0, unit=(9, 0)), IndexError, "outside"),
        (lambda m, x: project_channel(m, x, "features.3", 0, unit="top"), ValueError, "unit"),
        (lambda m, x: saliency(m, x[0], 1), ValueError, "unsqueeze"),
        (lambda m, x: saliency(m, x.numpy(), 1), TypeError, "Tensor"),
        (lambda m, x: saliency("model", x, 1), TypeError, "nn.Module"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, error, message):
    with pytest.raises(error, match=message):
        call(small_vgg(), torch.randn(1, 3, 16, 16))


# --------------------------------------------------------------------------- TinyVGG (trained)


def test_tinyvgg_guided_backprop_and_deconvnet_equal_captum(shared_data):
    model, x, labels = load_tinyvgg(shared_data)
    x, labels = x[:4], labels[:4]
    with Probe(model, channels_last=False) as probe:
        assert probe.logits(x).argmax(dim=1).tolist() == labels  # the shipped weights classify these
        for i, label in enumerate(labels):
            xi = x[i : i + 1]
            guided = captum_attr.GuidedBackprop(model).attribute(xi, target=label)
            assert_matches(guided_backprop(probe, xi, label), guided)
            assert_matches(deconvnet(probe, xi, label), captum_attr.Deconvolution(model).attribute(xi, target=label))
        neuron = captum_attr.NeuronDeconvolution(model, model.conv_2_1).attribute(x, neuron_selector=(4, 10, 12))
        assert_matches(deconvnet(probe, x, ChannelActivation("conv_2_1", 4, position=(10, 12))), neuron)
        projection = project_channel(probe, x, "relu_2_2", 4)
        assert torch.isfinite(projection).all() and (projection.flatten(1).abs().amax(1) > 0).all()


# --------------------------------------------------------------------------- CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(resnet18):
    x = torch.randn(2, 3, 64, 64)
    with Probe(resnet18, device="cpu") as cpu, Probe(resnet18, device="cuda") as gpu:
        for method in (
            lambda p, b: saliency(p, b, 3),
            lambda p, b: guided_backprop(p, b, 3),
            lambda p, b: project_channel(p, b, "layer2.0.relu", 5),
        ):
            on_cpu = method(cpu, x)
            on_gpu = method(gpu, x.cuda())
            assert on_gpu.device.type == "cuda"
            # TF32 and other kernels: compare loosely, relative to the magnitude.
            assert_matches(on_gpu.cpu(), on_cpu, rel=2e-2)


# --------------------------------------------------------------------------- renderer


def test_signed_attribution_is_centred_on_zero():
    values = np.zeros((4, 5), np.float32)
    values[0, 0], values[0, 1] = 3.0, -3.0
    rgb = attribution_to_rgb(values, signed=True, percentile=100)
    lut = colormap_lut("RdBu_r")
    assert rgb.shape == (4, 5, 3) and rgb.dtype == np.uint8
    assert (rgb[0, 0] == lut[255]).all() and (rgb[0, 1] == lut[0]).all() and (rgb[2, 2] == lut[128]).all()


def test_unsigned_attribution_uses_magnitudes_and_robust_scale():
    values = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    values[0, 0] = 1000.0  # one outlier must not wash out the rest
    rgb = attribution_to_rgb(values, signed=False, percentile=95)
    lut = colormap_lut("inferno")
    assert (rgb[0, 0] == lut[255]).all()
    assert (rgb[9, 9] == lut[255]).all()  # beyond the 95th percentile: saturated
    assert not (rgb[5, 0] == lut[255]).all()  # the middle keeps its contrast
    # (C, H, W) unsigned: largest magnitude over channels.
    stack = np.stack([values, -2 * values])
    assert np.allclose(reduce_channels(stack, "max_abs"), 2 * values)
    assert np.allclose(reduce_channels(stack, "sum"), -values)
    assert robust_scale(np.zeros((3, 3))) == 1.0


def test_gradient_image_and_overlay():
    grad = np.zeros((3, 4, 4), np.float32)
    grad[0, 1, 1] = 1.0
    image = gradient_to_rgb(grad, percentile=100)
    assert image.shape == (4, 4, 3) and image[0, 0].tolist() == [128, 128, 128] and image[1, 1, 0] == 255
    photo = np.full((8, 8, 3), 40, np.uint8)
    heat = np.zeros((4, 4), np.float32)
    heat[0, 0] = 1.0
    assert np.array_equal(attribution_overlay(photo, heat, alpha=0.0), photo)
    full = attribution_overlay(photo, heat, alpha=1.0, cmap="gray", percentile=100)
    assert full.shape == (8, 8, 3)
    assert full[0, 0, 0] == 255 and full[7, 7, 0] == 0  # heat upsampled to the image, corner stays hot
    transparent = attribution_overlay(photo, heat, alpha=1.0, weight_by_value=True, percentile=100)
    assert np.array_equal(transparent[7, 7], photo[7, 7])
    as_float = attribution_overlay(photo / 255.0, heat, alpha=0.0)
    assert np.array_equal(as_float, photo)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: attribution_to_rgb(np.zeros(5)), "shape"),
        (lambda: attribution_to_rgb(np.zeros((2, 2)), cmap="nope"), "colormap"),
        (lambda: attribution_to_rgb(np.zeros((2, 2)), percentile=0), "percentile"),
        (lambda: gradient_to_rgb(np.zeros((2, 4, 4))), r"\(3, H, W\)"),
        (lambda: attribution_overlay(np.zeros((4, 4)), np.zeros((4, 4))), "image"),
        (lambda: attribution_overlay(np.zeros((4, 4, 3)), np.zeros((4, 4)), alpha=2), "alpha"),
        (lambda: reduce_channels(np.zeros((2, 2, 2)), "mean"), "how"),
    ],
)
def test_renderer_rejects_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --------------------------------------------------------------------------- caller's grad mode

GRAD_OFF_MODES = {
    "no_grad": torch.no_grad,
    "set_grad_enabled(False)": lambda: torch.set_grad_enabled(False),
    "inference_mode": torch.inference_mode,
}


@pytest.mark.parametrize("mode", GRAD_OFF_MODES)
@pytest.mark.parametrize(
    "method",
    [
        lambda m, x: saliency(m, x, 1),
        lambda m, x: saliency(m, x, ChannelActivation("features.3", 2), absolute=False),
        lambda m, x: guided_backprop(m, x, 1),
        lambda m, x: deconvnet(m, x, ChannelActivation("features.4", 1, position=(3, 3))),
        lambda m, x: project_channel(m, x, "features.4", 1),
        lambda m, x: project_channel(m, x, "classifier.2", 3, unit="all"),
        lambda m, x: strongest_unit(m, x, "features.4", 1),
    ],
    ids=["saliency", "saliency-channel", "guided_backprop", "deconvnet", "project_channel", "project_dense",
         "strongest_unit"],
)
@pytest.mark.filterwarnings("ignore::cnnwidgets.methods.gradients.InactiveChannelWarning")  # project_dense, image 0
def test_methods_work_with_gradients_turned_off_and_leave_the_mode_as_it_was(method, mode):
    model = small_vgg()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    expected = method(model, x)
    with GRAD_OFF_MODES[mode]():
        inside = x.clone()  # made in the mode: an inference tensor under inference_mode
        result = method(model, inside)
        assert not torch.is_grad_enabled()
        assert torch.is_inference_mode_enabled() == (mode == "inference_mode")
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    torch.testing.assert_close(result, expected, rtol=0, atol=0)
    assert all(p.grad is None for p in model.parameters())


def test_relu_rule_enables_gradients_only_within_its_block():
    with Probe(small_vgg()) as probe, torch.no_grad():
        for rule in ("gradient", "guided", "deconvnet"):
            with relu_rule(probe.model, rule, method="test"):
                assert torch.is_grad_enabled()
            assert not torch.is_grad_enabled()
            with pytest.raises(ZeroDivisionError), relu_rule(probe.model, rule, method="test"):
                1 / 0
            assert not torch.is_grad_enabled()


@pytest.mark.filterwarnings("ignore::cnnwidgets.methods.gradients.InactiveChannelWarning")  # units chosen for their types
def test_numpy_and_tensor_indices_are_ints_and_other_types_are_refused():
    model = small_vgg()
    x = torch.randn(2, 3, 16, 16)
    expected = saliency(model, x, 1)
    for index in (np.int64(1), torch.tensor(1)):
        assert torch.equal(saliency(model, x, index), expected)
        assert torch.equal(guided_backprop(model, x, index), guided_backprop(model, x, 1))
    # one class per image: the same maps as image by image
    per_image = saliency(model, x, torch.tensor([1, 2]))
    for i, cls in enumerate((1, 2)):
        torch.testing.assert_close(per_image[i:i + 1], saliency(model, x[i:i + 1], cls))
    projected = project_channel(model, x, "features.3", 2, unit=(1, 2))
    assert torch.equal(project_channel(model, x, "features.3", np.int64(2), unit=(np.int64(1), torch.tensor(2))),
                       projected)
    assert torch.equal(strongest_unit(model, x, "features.3", np.int64(2)), strongest_unit(model, x, "features.3", 2))
    # a unit as a list, an array or a row of strongest_unit's own result is the same pair
    found = strongest_unit(model, x, "features.3", 2)[0]
    at_found = project_channel(model, x, "features.3", 2, unit=tuple(int(v) for v in found))
    for unit in (found, found.numpy(), [int(found[0]), int(found[1])]):
        assert torch.equal(project_channel(model, x, "features.3", 2, unit=unit), at_found)
    for unit, got in ((torch.tensor([1, 2, 3]), r"a tensor of shape \(3,\)"), ((1, 2, 3), r"tuple \(1, 2, 3\)"),
                      (None, "a NoneType")):
        with pytest.raises(TypeError, match=r"unit must be 'max', 'all' or a \(row, col\) pair of ints, got " + got):
            project_channel(model, x, "features.3", 2, unit=unit)
    with pytest.raises(ValueError, match=r"unit must be 'max', 'all' or a \(row, col\) pair of ints, got 'top'"):
        project_channel(model, x, "features.3", 2, unit="top")
    for unit, message in (((1.5, 2), "unit row must be an int .*got float 1.5"),
                          ((1, True), "unit column must be an int .*got bool True")):
        with pytest.raises(TypeError, match=message):
            project_channel(model, x, "features.3", 2, unit=unit)
    for channel, got in ((True, "bool True"), (2.0, "float 2.0")):
        with pytest.raises(TypeError, match=f"channel must be an int .*got {got}"):
            project_channel(model, x, "features.3", channel)
        with pytest.raises(TypeError, match=f"channel must be an int .*got {got}"):
            strongest_unit(model, x, "features.3", channel)


def test_saliency_refuses_a_flag_that_is_not_a_bool():
    model = small_vgg()
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(TypeError, match="saliency: absolute must be True or False, got str 'no'"):
        saliency(model, x, 1, absolute="no")
    assert torch.equal(saliency(model, x, 1, absolute=np.bool_(False)), saliency(model, x, 1, absolute=False))


def test_channels_last_images_are_refused_by_every_gradient_method_with_a_clear_error():
    from cnnwidgets.methods.cam import cam, grad_cam

    torch.manual_seed(0)
    model = small_vgg().eval()
    hwc = torch.rand(1, 16, 16, 3)
    pooled = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    calls = {
        "saliency": lambda: saliency(model, hwc, 0),
        "guided backprop": lambda: guided_backprop(model, hwc, 0),
        "deconvnet projection": lambda: project_channel(model, hwc, "features.0", 0),
        "grad-cam": lambda: grad_cam(model, hwc, 0, "features.0"),
        "cam": lambda: cam(pooled, hwc, 0),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=r"looks like \(N, H, W, C\).*x.permute\(0, 3, 1, 2\)"):
            call()
    # the same image the right way round works, and a probe refuses it too
    assert saliency(model, hwc.permute(0, 3, 1, 2), 0).shape == (1, 3, 16, 16)
    with Probe(model) as probe, pytest.raises(ValueError, match="permute"):
        probe.capture(hwc, "features.0")


def test_a_layer_with_an_empty_feature_map_is_refused_with_one_clear_message():
    from tests.test_layer_geometry import EMPTY_ACT, empty_branch

    model, x = empty_branch(), torch.rand(2, 3, 32, 32)  # layer 'act' is (8, 0, 0) at 32 x 32
    with pytest.raises(ValueError, match=EMPTY_ACT):
        project_channel(model, x, "act", 0)  # was a raw IndexError from argmax
    with pytest.raises(ValueError, match=EMPTY_ACT):
        project_channel(model, x, "act", 0, unit="all")
    with pytest.raises(ValueError, match=EMPTY_ACT):
        strongest_unit(model, x, "act", 0)
    # a channel target there: a mean over no position is NaN, a sum 0, a maximum fails
    for reduce in ("mean", "sum", "max"):
        with pytest.raises(ValueError, match=EMPTY_ACT):
            saliency(model, x, ChannelActivation("act", 0, reduce=reduce))
    with pytest.raises(ValueError, match=EMPTY_ACT):
        guided_backprop(model, x, ChannelActivation("act", 0))
    # the layers before it, and class scores, work as ever; at 64 x 64 the layer has maps
    assert project_channel(model, x, "pool", 0).shape == x.shape
    assert saliency(model, x, 0).shape == x.shape
    assert project_channel(model, torch.rand(1, 3, 64, 64), "act", 0).shape == (1, 3, 64, 64)


def test_a_model_that_leaves_autograd_gets_a_clear_error_from_the_deconvnet_too():
    model = OutsideAutogradNet(torch.no_grad).eval()
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(RuntimeError, match=r"project_channel: the output of layer 'relu' does not depend on the input"
                                           r".*torch.no_grad\(\)"):
        project_channel(model, x, "relu", 0)
    with pytest.raises(RuntimeError, match=r"saliency: the target's score does not depend.*torch.inference_mode\(\)"):
        saliency(model, x, 0)


def _zero_head_net() -> nn.Module:
    """A conv net whose classifier head is zero for class 0 (as torchvision initialises ViT's head):
    class 0's score is constant, class 1's is not."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(6, 2)).eval()
    with torch.no_grad():
        model[4].weight[0] = 0.0
        model[4].weight[1] = model[4].weight[1].abs() + 0.1
    return model


@pytest.mark.parametrize("method", ["saliency", "guided_backprop", "deconvnet"])
def test_an_input_gradient_that_is_zero_at_every_pixel_warns_and_one_that_is_not_does_not(method):
    from cnnwidgets.methods import EmptyMapWarning
    from cnnwidgets.methods.gradients import empty_maps_quietly

    fn = {"saliency": saliency, "guided_backprop": guided_backprop, "deconvnet": deconvnet}[method]
    model, x = _zero_head_net(), torch.rand(3, 3, 10, 10)
    with pytest.warns(EmptyMapWarning, match=rf"{method}: the gradient for images \[0, 1, 2\] is zero at every pixel") as caught:
        line, grad = inspect.currentframe().f_lineno, fn(model, x, 0)
    assert (caught[0].filename, caught[0].lineno) == (__file__, line)  # the warning names the caller's line
    assert float(grad.abs().max()) == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmptyMapWarning)
        assert float(fn(model, x, 1).abs().max()) > 0  # a score that follows the pixels: no warning
        with empty_maps_quietly():  # a caller that says it itself
            fn(model, x, 0)
    with pytest.warns(EmptyMapWarning, match=r"image 1 is zero"):  # only the images concerned are named
        fn(model, x, [1, 0, 1])
