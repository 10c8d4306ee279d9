"""CAM, Grad-CAM, Grad-CAM++, upsampling and the explorer's overlay registry.

Oracles: maps computed by hand for a conv -> ReLU -> GAP -> linear net, and
pytorch-grad-cam's ``GradCAM`` / ``GradCAMPlusPlus`` with ``ClassifierOutputTarget``.
pytorch-grad-cam returns ``s(cv2.resize(s(ReLU(L))))`` per image, where
``s(m) = (m - min m) / (max(m - min m) + 1e-7)``; :func:`like_pytorch_grad_cam` applies the
same conversion to our raw maps (with our bilinear :func:`upsample`, which equals
``cv2.resize`` for upsampling, see ``test_upsample_equals_cv2_resize``). As in
test_gradients.py, the comparisons run our probe in the contiguous memory layout the
library's forward uses.
"""

from __future__ import annotations

import copy

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from cnnwidgets import ChannelActivation, ClassProbability, Probe
from cnnwidgets.core.hygiene import hook_count
from cnnwidgets.methods.cam import cam, grad_cam, grad_cam_pp, layer_gradient, nearest_conv_layer, upsample
from cnnwidgets.methods.gradients import project_channel, saliency
from cnnwidgets.methods.overlays import OVERLAY_INPUTS, OVERLAYS, SIGNED_OVERLAYS, magnitude
from cnnwidgets.render.attribution import _resize_bilinear
from tests.helpers import batch_statistics_net
from tests.test_gradients import SmallVGG, load_tinyvgg

cv2 = pytest.importorskip("cv2")
gradcam_lib = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402


class GapNet(nn.Module):
    """conv -> ReLU -> conv -> ReLU -> global average pool -> linear: CAM's architecture."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 5, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(5, 4)

    def forward(self, x):
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


# Maps are min-max scaled to [0, 1]; float32 sums in another order (thread count, BLAS path)
# move single pixels by up to ~2e-5, so compare at 1e-4 of the map's range.
CAM_ATOL = 1e-4


def gap_net() -> nn.Module:
    torch.manual_seed(5)
    return GapNet().eval()


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    torch.manual_seed(13)
    return torchvision.models.resnet18(weights=None).eval()


def like_pytorch_grad_cam(raw: torch.Tensor, size) -> np.ndarray:
    """Our raw (rectified) maps (N, h, w) in pytorch-grad-cam's output convention."""

    def rescale(maps: torch.Tensor) -> torch.Tensor:
        maps = maps - maps.amin(dim=(1, 2), keepdim=True)
        return maps / (maps.amax(dim=(1, 2), keepdim=True) + 1e-7)

    return rescale(upsample(rescale(raw.clamp(min=0)), size)).cpu().numpy()


def library_map(kind, model: nn.Module, layer: str, x: torch.Tensor, classes: list[int]) -> np.ndarray:
    """pytorch-grad-cam's map, on a private copy (it calls eval() and backward() on its model)."""
    clone = copy.deepcopy(model)
    explainer = kind(clone, [dict(clone.named_modules())[layer]])
    return explainer(x, targets=[ClassifierOutputTarget(c) for c in classes])


def assert_informative(raw: torch.Tensor) -> None:
    """A map that min-max scaling would turn into zeros says nothing: reject such test cases."""
    flat = raw.flatten(1)
    assert ((flat.amax(1) - flat.amin(1)) > 0).all(), "degenerate test case: a constant map"


# --------------------------------------------------------------------------- by hand


def test_maps_by_hand_on_a_gap_linear_net():
    model = gap_net()
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        features = model.relu2(model.conv2(model.relu1(model.conv1(x))))  # (2, 5, 6, 6)
    weight = model.fc.weight.detach()
    z = 36
    for c in range(4):
        expected_cam = torch.einsum("k,nkhw->nhw", weight[c], features)
        assert torch.allclose(cam(model, x, c), expected_cam, atol=1e-6)
        assert torch.allclose(cam(model, x, c, layer="relu2", fc="fc"), expected_cam, atol=1e-6)
        # dy_c/dA_kij = W[c, k] / Z everywhere, so Grad-CAM is ReLU(CAM) / Z.
        assert torch.allclose(grad_cam(model, x, c, "relu2"), expected_cam.clamp(min=0) / z, atol=1e-7)
        # Grad-CAM++ with a constant gradient g_k: a_k = 1 / (2 + S_k g_k), w_k = Z a_k ReLU(g_k).
        g = weight[c] / z
        s = features.sum(dim=(2, 3))  # (N, K)
        w = z * g.clamp(min=0) / (2 + s * g)
        w = torch.where(g != 0, w, 0.0)
        expected_pp = torch.einsum("nk,nkhw->nhw", w, features).clamp(min=0)
        assert torch.allclose(grad_cam_pp(model, x, c, "relu2"), expected_pp, rtol=1e-5, atol=1e-7)


class _SignedNet(nn.Module):
    """conv (1x1, weight 1) -> global average pool -> fc with weights (+1, -1): a signed feature map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1, bias=False)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(1, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.fc.weight.copy_(torch.tensor([[1.0], [-1.0]]))

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.relu(self.conv(x))), 1) + self.conv(x).mean(dim=(2, 3)))


def test_grad_cam_pp_warns_when_a_signed_layer_turns_its_weights_over():
    model = _SignedNet().eval()
    # conv's sum S = -8.8 and its gradient g = 0.25 (the ReLU passes none of it): 2 + S g < 0, a_k < 0
    x = torch.tensor([[[[-1.0, -2.0], [-2.0, -3.8]]]])
    with pytest.warns(RuntimeWarning, match=r"signed.*1 channel.*activations >= 0"):
        grad_cam_pp(model, x, 0, "conv")
    # the ReLU after it (the paper's layer) is never signed: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        grad_cam_pp(model, x.abs(), 0, "relu")
        grad_cam_pp(model, x.abs(), 0, "conv")  # positive activations: a positive denominator


def test_grad_cam_on_a_1x1_layer_warns_and_names_the_layer_with_a_map(resnet18):
    x = torch.randn(1, 3, 64, 64)
    with pytest.warns(RuntimeWarning, match=r"'avgpool' has a 1x1 map .*gives 'layer4'"):
        flat = grad_cam(resnet18, x, 3, "avgpool")
    assert flat.shape == (1, 1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        grad_cam(resnet18, x, 3, "layer4")


def test_cam_without_a_linear_head_points_to_the_class_map_and_grad_cam():
    model = torchvision.models.squeezenet1_1(weights=None, num_classes=4).eval()
    with pytest.raises(ValueError, match=r"none found.*SqueezeNet.*Probe.capture.*grad_cam"):
        cam(model, torch.randn(1, 3, 64, 64), 1)


def test_cam_is_z_times_unrectified_grad_cam_on_resnet18(resnet18):
    x = torch.randn(2, 3, 64, 64)
    with Probe(resnet18) as probe:
        maps = cam(probe, x, 7)
        assert torch.allclose(maps, cam(probe, x, 7, layer="layer4", fc="fc"))
        activation, grad = layer_gradient(probe, x, 7, "layer4")
        z = activation.shape[2] * activation.shape[3]
        expected = z * torch.einsum("nk,nkhw->nhw", grad.mean(dim=(2, 3)), activation)
        assert maps.shape == (2, 2, 2)
        assert torch.allclose(maps, expected, rtol=1e-4, atol=1e-5 * maps.abs().max().item())
        assert (maps < 0).any(), "CAM is not rectified"


def test_the_cam_family_takes_the_layer_fourth_and_defaults_to_the_last_feature_map(resnet18):
    x = torch.randn(2, 3, 64, 64)
    with Probe(resnet18) as probe:
        # the layer in the same place in all three: positional or by keyword
        assert torch.equal(cam(probe, x, 7, "layer4"), cam(probe, x, 7, layer="layer4"))
        assert torch.equal(cam(probe, x, 7, "layer4", fc="fc"), cam(probe, x, 7))
        at_layer4 = grad_cam(probe, x, 7, "layer4")
        assert torch.equal(grad_cam(probe, x, 7, layer="layer4"), at_layer4)
        # left out, Grad-CAM takes the last feature map, as the explorer does for the classifier
        assert nearest_conv_layer(probe) == nearest_conv_layer(probe, "fc") == "layer4"
        assert torch.equal(grad_cam(probe, x, 7), at_layer4)
        assert torch.equal(grad_cam_pp(probe, x, 7), grad_cam_pp(probe, x, 7, "layer4"))
        assert torch.equal(grad_cam_pp(probe, x, 7, eps=1e-6), grad_cam_pp(probe, x, 7, "layer4", eps=1e-6))
        # a target at an internal layer: that layer when it is a feature map, else the last one before it
        channel = ChannelActivation("layer3", 2)
        assert torch.equal(grad_cam(probe, x, channel), grad_cam(probe, x, channel, "layer3"))
        pooled = ChannelActivation("avgpool", 2)
        assert torch.equal(grad_cam(probe, x, pooled), grad_cam(probe, x, pooled, "layer4"))
    small = torch.randn(1, 3, 32, 32)  # layer4 is 1x1 at this size: the default follows the input
    torch.testing.assert_close(grad_cam(resnet18, small, 3), grad_cam(resnet18, small, 3, "layer3"))
    model, ones = gap_net(), torch.ones(1, 3, 6, 6)
    torch.testing.assert_close(grad_cam(model, ones, 1), grad_cam(model, ones, 1, "relu2"))
    flat = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2)).eval()
    with pytest.raises(ValueError, match="no layer with a feature-map output larger than 1x1 .*runs in this model"):
        grad_cam(flat, torch.randn(1, 3, 4, 4), 0)


def test_layer_gradient_is_right_before_an_inplace_residual_add(resnet18):
    """At layer1.0.bn2 ResNet adds the shortcut in place; the gradient must be the pre-add one."""
    x = torch.randn(1, 3, 64, 64)
    with Probe(resnet18) as probe:
        a_bn2, g_bn2 = layer_gradient(probe, x, 3, "layer1.0.bn2")
        a_block, g_block = layer_gradient(probe, x, 3, "layer1.0")
        assert torch.equal(a_bn2, probe.capture(x, "layer1.0.bn2")["layer1.0.bn2"])
        # block = ReLU(bn2 + shortcut), so dy/d bn2 = dy/d block * [block > 0].
        assert torch.allclose(g_bn2, g_block * (a_block > 0))
        assert not torch.equal(a_bn2, a_block)
        assert all(p.grad is None for p in probe.model.parameters())


# --------------------------------------------------------------------------- pytorch-grad-cam


@pytest.mark.parametrize("layer", ["layer4", "layer3", "layer4.0.conv2", "layer2.1"])
def test_grad_cam_and_pp_equal_pytorch_grad_cam_on_resnet18(resnet18, layer):
    x = torch.randn(2, 3, 64, 64)
    with Probe(resnet18, channels_last=False) as probe:
        classes = probe.logits(x).argmax(dim=1).tolist()
        for i, c in enumerate(classes):
            xi = x[i : i + 1]
            raw = grad_cam(probe, xi, c, layer)
            assert_informative(raw)
            expected = library_map(gradcam_lib.GradCAM, resnet18, layer, xi, [c])
            np.testing.assert_allclose(like_pytorch_grad_cam(raw, xi.shape[-2:]), expected, atol=CAM_ATOL)
            raw_pp = grad_cam_pp(probe, xi, c, layer, eps=1e-6)
            assert_informative(raw_pp)
            expected_pp = library_map(gradcam_lib.GradCAMPlusPlus, resnet18, layer, xi, [c])
            np.testing.assert_allclose(like_pytorch_grad_cam(raw_pp, xi.shape[-2:]), expected_pp, atol=CAM_ATOL)


@pytest.mark.parametrize("layer", ["conv2", "relu2", "relu1"])
def test_grad_cam_and_pp_equal_pytorch_grad_cam_on_a_small_net(layer):
    model = gap_net()
    x = torch.randn(3, 3, 12, 12)
    with Probe(model, channels_last=False) as probe:
        classes = probe.logits(x).argmax(dim=1).tolist()
        for kind, ours in ((gradcam_lib.GradCAM, grad_cam), (gradcam_lib.GradCAMPlusPlus, grad_cam_pp)):
            expected = library_map(kind, model, layer, x, classes)
            kwargs = {"eps": 1e-6} if ours is grad_cam_pp else {}
            raw = torch.cat([ours(probe, x[i : i + 1], c, layer, **kwargs) for i, c in enumerate(classes)])
            assert_informative(raw)
            np.testing.assert_allclose(like_pytorch_grad_cam(raw, (12, 12)), expected, atol=CAM_ATOL)


def test_grad_cam_on_channels_last_layers_equals_pytorch_grad_cam_with_a_reshape():
    # Swin-style (N, H, W, C) outputs: pytorch-grad-cam needs a reshape_transform; ours reads the layout
    from tests.test_probe import channels_last_net

    torch.manual_seed(3)
    model = channels_last_net().eval()
    x = torch.randn(2, 3, 10, 14)
    with Probe(model, channels_last=False) as probe:
        classes = probe.logits(x).argmax(dim=1).tolist()
        for layer in ("1.mlp", "1.back"):
            assert probe.layers[layer].layout == "HWC"
            for kind, ours in ((gradcam_lib.GradCAM, grad_cam), (gradcam_lib.GradCAMPlusPlus, grad_cam_pp)):
                clone = copy.deepcopy(model)
                explainer = kind(clone, [dict(clone.named_modules())[layer]],
                                 reshape_transform=lambda t: t.permute(0, 3, 1, 2))
                expected = explainer(x, targets=[ClassifierOutputTarget(c) for c in classes])
                kwargs = {"eps": 1e-6} if ours is grad_cam_pp else {}
                raw = torch.cat([ours(probe, x[i : i + 1], c, layer, **kwargs) for i, c in enumerate(classes)])
                assert raw.shape == (2, 10, 14)
                assert_informative(raw)
                np.testing.assert_allclose(like_pytorch_grad_cam(raw, (10, 14)), expected, atol=CAM_ATOL)
        assert nearest_conv_layer(probe, "1.mlp") == "1.mlp"  # a map of its own, no need to fall back


# its convolutions' outputs are signed (before their ReLU): the same formula all the same, warned about
@pytest.mark.filterwarnings("ignore:grad_cam_pp. the layer's activations are signed:RuntimeWarning")
def test_grad_cam_equals_pytorch_grad_cam_on_trained_tinyvgg(shared_data):
    model, x, labels = load_tinyvgg(shared_data)
    with Probe(model, channels_last=False) as probe:
        for layer in ("conv_2_2", "relu_2_1"):
            for i in (0, 2, 5, 9):
                xi = x[i : i + 1]
                raw = grad_cam(probe, xi, labels[i], layer)
                assert_informative(raw)
                expected = library_map(gradcam_lib.GradCAM, model, layer, xi, [labels[i]])
                np.testing.assert_allclose(like_pytorch_grad_cam(raw, (64, 64)), expected, atol=CAM_ATOL)
                raw_pp = grad_cam_pp(probe, xi, labels[i], layer, eps=1e-6)
                expected_pp = library_map(gradcam_lib.GradCAMPlusPlus, model, layer, xi, [labels[i]])
                np.testing.assert_allclose(like_pytorch_grad_cam(raw_pp, (64, 64)), expected_pp, atol=CAM_ATOL)
        with pytest.raises(ValueError, match="no feature map with 1690 channels, average-pooled"):
            cam(probe, x[:1], 0)  # TinyVGG flattens; CAM is undefined


def test_upsample_equals_cv2_resize_and_the_numpy_renderer():
    maps = torch.rand(2, 5, 7)
    up = upsample(maps, (32, 28))
    assert up.shape == (2, 32, 28)
    for i in range(2):
        expected = cv2.resize(maps[i].numpy(), (28, 32), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(up[i].numpy(), expected, atol=1e-5)
        np.testing.assert_allclose(_resize_bilinear(maps[i].numpy(), (32, 28)), up[i].numpy(), atol=1e-5)


# --------------------------------------------------------------------------- invariants


def test_batching_does_not_change_maps(resnet18):
    x = torch.randn(3, 3, 64, 64)
    with Probe(resnet18) as probe:
        for method in (
            lambda b: grad_cam(probe, b, 4, "layer3"),
            lambda b: grad_cam_pp(probe, b, 4, "layer3"),
            lambda b: cam(probe, b, 4),
        ):
            together = method(x)
            alone = torch.cat([method(x[i : i + 1]) for i in range(3)])
            scale = together.abs().max().item()
            assert scale > 0 and (together - alone).abs().max().item() <= 1e-5 * scale


def test_channel_targets_run_only_the_prefix_and_order_is_checked(resnet18):
    x = torch.randn(1, 3, 64, 64)
    with Probe(resnet18) as probe:
        probe.layers
        probe.reset_stats()
        raw = grad_cam(probe, x, ChannelActivation("layer3.1.relu", 7, reduce="sum"), "layer2")
        assert raw.shape == (1, 8, 8)
        assert probe.stats.full_forwards == 0
        with pytest.raises(ValueError, match="before layer"):
            grad_cam(probe, x, ChannelActivation("layer1", 0), "layer3")


def test_hooks_are_removed_and_errors_are_clear(resnet18):
    x = torch.randn(1, 3, 64, 64)
    with Probe(resnet18, input_size=(3, 64, 64)) as probe:
        before = {name: hook_count(m) for name, m in probe.model.named_modules()}
        grad_cam(probe, x, 1, "layer4")
        cam(probe, x, 1)
        with pytest.raises(KeyError, match="layer4"):
            grad_cam(probe, x, 1, "layer5")
        with pytest.raises(IndexError, match="out of range"):
            grad_cam_pp(probe, x, 1000, "layer4")  # raises after the hook was added
        with pytest.raises(ValueError, match=r"\(C, H, W\)"):
            grad_cam(probe, x, 1, "fc")
        with pytest.raises(TypeError, match="class"):
            cam(probe, x, ClassProbability(1))
        with pytest.raises(ValueError, match="nn.Linear"):
            cam(probe, x, 1, fc="layer4")
        with pytest.raises(ValueError, match=r"\(N, h, w\)"):
            upsample(torch.zeros(2, 2), (4, 4))
        with pytest.raises(TypeError, match=r"size must be a \(height, width\) pair of ints, got int 64 \(for example x.shape"):
            upsample(torch.zeros(1, 2, 2), 64)
        with pytest.raises(TypeError, match="size height must be an int .*got float 64.7"):
            upsample(torch.zeros(1, 2, 2), (64.7, 64.2))
        with pytest.raises(TypeError, match=r"size must be a \(height, width\) pair of ints, got tuple \(64,\)"):
            upsample(torch.zeros(1, 2, 2), (64,))
        assert upsample(torch.zeros(1, 2, 2), torch.zeros(1, 3, 5, 7).shape[-2:]).shape == (1, 5, 7)
        with pytest.raises(ValueError, match="positive"):
            upsample(torch.zeros(1, 2, 2), (0, 4))
        assert upsample(torch.zeros(1, 2, 2), torch.zeros(1, 3, 5, 6).shape[-2:]).shape == (1, 5, 6)
        assert {name: hook_count(m) for name, m in probe.model.named_modules()} == before
        assert all(p.grad is None for p in probe.model.parameters())


class FunctionalHead(nn.Module):
    """DenseNet's ending: ``features`` -> F.relu (in place or not) -> functional global pooling -> linear;
    ``features`` also holds an ``nn.AvgPool2d`` that keeps a map larger than 1x1 (DenseNet's transitions)."""

    def __init__(self, inplace: bool) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.AvgPool2d(2), nn.Conv2d(6, 5, 3, padding=1))
        self.classifier = nn.Linear(5, 4)
        self.relu_in_place = inplace  # not `inplace`: the probe turns such module flags off

    def forward(self, x):
        out = F.relu(self.features(x), inplace=self.relu_in_place)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def test_cam_uses_the_maps_that_are_pooled_after_an_inplace_change():
    """f is the layer's output as the forward pass leaves it: ReLU'd in place, as the pooling reads it."""
    torch.manual_seed(2)
    model = FunctionalHead(inplace=True).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        own = model.features(x)
    assert (own < 0).any(), "degenerate test case: the ReLU changes nothing"
    weight = model.classifier.weight.detach()
    with Probe(model) as probe:
        for c in range(4):
            expected = torch.einsum("k,nkhw->nhw", weight[c], own.clamp(min=0))
            torch.testing.assert_close(cam(probe, x, c, layer="features"), expected)
            torch.testing.assert_close(cam(probe, x, c), expected)  # the default: features, not the AvgPool2d
        # Grad-CAM differentiates the layer's own output, which the in-place ReLU does not change
        activation, _ = layer_gradient(probe, x, 1, "features")
        torch.testing.assert_close(activation, own)
    with pytest.raises(ValueError, match="CAM is undefined"):
        # without the in-place change the layer's own output is not what is pooled
        cam(FunctionalHead(inplace=False).eval(), x, 1, layer="features")


class StridedFunctionalPool(nn.Module):
    """MobileNet's ending on a small input: three stride-2 convolutions (a 1x1 map at 8x8), then
    pooling by a function (no pooling module) and a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU(), nn.Conv2d(4, 6, 3, 2, 1), nn.ReLU(),
                                      nn.Conv2d(6, 5, 3, 2, 1), nn.ReLU())
        self.classifier = nn.Linear(5, 3)

    def forward(self, x):
        return self.classifier(self.features(x).mean(dim=(2, 3)))


def test_cam_says_when_the_maps_have_shrunk_to_1x1_at_this_input_size():
    torch.manual_seed(0)
    model = StridedFunctionalPool().eval()
    with pytest.raises(ValueError, match=r"the last feature map with 5 channels before 'classifier', 'features', is "
                                         r"\(5, 1, 1\): 1x1 at this input size \(8x8\), where CAM is a single value, "
                                         r"not a map\. Use a larger input .* or pass layer='features'"):
        cam(model, torch.randn(1, 3, 8, 8), 1)
    with pytest.warns(RuntimeWarning, match="1x1 map .*try a larger input"):
        assert cam(model, torch.randn(1, 3, 8, 8), 1, "features").shape == (1, 1, 1)  # the value it offers
    assert cam(model, torch.randn(1, 3, 32, 32), 1).shape == (1, 4, 4)  # a larger input: a map
    # the same with a pooling module (ResNet's avgpool): its input is 1x1 at 8 px
    pooled = nn.Sequential(*model.features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3)).eval()
    with pytest.raises(ValueError, match=r"the input of '6' is \(5, 1, 1\); the last feature map with 5 channels "
                                         r"before '8', '5', is \(5, 1, 1\): 1x1 at this input size \(8x8\)"):
        cam(pooled, torch.randn(1, 3, 8, 8), 1)
    assert cam(pooled, torch.randn(1, 3, 32, 32), 1).shape == (1, 4, 4)


def test_cam_defaults_to_the_maps_pooled_by_a_function_in_densenet_and_mobilenet():
    torch.manual_seed(1)
    x = torch.randn(1, 3, 64, 64)
    for name, apply in (("densenet121", F.relu), ("mobilenet_v2", lambda t: t)):
        model = torchvision.models.__dict__[name](weights=None).eval()
        with torch.no_grad():
            features = apply(model.features(x))
        fc = model.classifier if name == "densenet121" else model.classifier[1]
        with Probe(model, input_size=(3, 64, 64)) as probe:
            maps = cam(probe, x, 5)
            expected = torch.einsum("k,nkhw->nhw", fc.weight[5].detach(), features)
            assert maps.shape == (1, 2, 2)
            torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())
            torch.testing.assert_close(cam(probe, x, 5, layer="features"), maps)
            if name == "densenet121":
                with pytest.raises(ValueError, match=r"512 channels.*pass layer='features' \(the last feature map "
                                                     r"with 1024 channels before 'classifier'\)"):
                    cam(probe, x, 5, layer="features.transition3")
                with pytest.raises(ValueError, match=r"CAM is undefined.*or pass layer='features'"):
                    cam(probe, x, 5, layer="features.denseblock4")  # before norm5 and the ReLU


def test_cam_errors_name_the_layer_to_try(resnet18):
    x = torch.randn(1, 3, 64, 64)
    with Probe(resnet18, input_size=(3, 64, 64)) as probe:
        with pytest.raises(ValueError, match=r"256 channels.*pass layer='layer4'"):
            cam(probe, x, 1, layer="layer3")
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 6), nn.Linear(6, 2))
    with pytest.raises(ValueError, match=r"no feature map with 6 channels, average-pooled.*'1', is \(4, 1, 1\)"):
        cam(model.eval(), torch.randn(1, 3, 8, 8), 1)


def test_cam_refuses_heads_that_are_not_gap_then_linear():
    class Bottleneck(nn.Module):
        """GAP -> Linear(5, 5) -> Linear(5, 4): the last linear does not see the pooled maps."""

        def __init__(self) -> None:
            super().__init__()
            self.body = GapNet()
            self.body.fc = nn.Linear(5, 5)
            self.fc = nn.Linear(5, 4)

        def forward(self, x):
            return self.fc(self.body(x))

    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(ValueError, match="CAM is undefined"):
        cam(Bottleneck().eval(), x, 1)
    with pytest.raises(ValueError, match="no feature map with 16 channels, average-pooled"):
        cam(SmallVGG().eval(), torch.randn(1, 3, 16, 16), 1)


def test_nearest_conv_layer(resnet18):
    with Probe(resnet18, input_size=(3, 64, 64)) as probe:
        assert nearest_conv_layer(probe, "layer4") == "layer4"
        assert nearest_conv_layer(probe, "layer3.0.relu") == "layer3.0.relu"
        # the block output that ends last before the layer, not the last convolution inside it
        assert nearest_conv_layer(probe, "avgpool") == "layer4"  # 1x1 output
        assert nearest_conv_layer(probe, "fc") == "layer4"
        with pytest.raises(KeyError):
            nearest_conv_layer(probe, "head")
    with Probe(resnet18, input_size=(3, 32, 32)) as probe:  # layer4 is 1x1 here: back to layer3
        assert nearest_conv_layer(probe, "fc") == "layer3"
    with Probe(resnet18, input_size=(3, 16, 16)) as probe:  # layer3 and layer4 are 1x1, layer2 2x2
        assert nearest_conv_layer(probe, "layer4") == "layer2"
    with Probe(nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2)), input_size=(3, 4, 4)) as probe:
        with pytest.raises(ValueError, match="no layer with a feature-map output larger than 1x1"):
            nearest_conv_layer(probe, "1")


class Never(nn.Module):
    """GapNet with a convolution it never runs."""

    def __init__(self) -> None:
        super().__init__()
        self.body = GapNet()
        self.unused = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return self.body(x)


def test_nearest_conv_layer_refuses_a_layer_that_never_runs():
    with Probe(Never().eval(), input_size=(3, 8, 8)) as probe:
        assert nearest_conv_layer(probe, "body.fc") == "body.relu2"
        with pytest.raises(ValueError, match="'unused' does not run"):
            nearest_conv_layer(probe, "unused")


@pytest.mark.parametrize(
    "name, size, layer, expected",
    [
        ("resnet18", 64, "avgpool", "layer4"),
        ("densenet121", 64, "classifier", "features"),  # not the last conv of the last dense layer
        ("mobilenet_v2", 64, "classifier.1", "features"),
        ("convnext_tiny", 64, "classifier.2", "features"),  # classifier.0 is a 1x1 LayerNorm2d map
    ],
)
def test_nearest_conv_layer_is_the_last_block_output_of_torchvision_models(name, size, layer, expected):
    torch.manual_seed(0)
    model = torchvision.models.__dict__[name](weights=None).eval()
    with Probe(model, input_size=(3, size, size)) as probe:
        assert nearest_conv_layer(probe, layer) == expected
        assert nearest_conv_layer(probe, expected) == expected
        assert nearest_conv_layer(probe) == expected  # the model's output: the last feature map


def test_grad_cam_overlay_of_resnet18_avgpool_equals_pytorch_grad_cam_at_layer4(resnet18):
    x = torch.randn(1, 3, 64, 64)
    with Probe(resnet18, channels_last=False) as probe:
        c = int(probe.logits(x).argmax())
        heat = OVERLAYS["grad-cam"](probe, x, layer="avgpool", channel=0, target=c)
        raw = grad_cam(probe, x, c, "layer4")
        assert_informative(raw)
        np.testing.assert_array_equal(heat, upsample(raw, (64, 64))[0].numpy())
        expected = library_map(gradcam_lib.GradCAM, resnet18, "layer4", x, [c])
        np.testing.assert_allclose(like_pytorch_grad_cam(raw, (64, 64)), expected, atol=CAM_ATOL)


class MeanHW(nn.Module):
    """Global average of a channels-last (N, H, W, C) map."""

    def forward(self, x):
        return x.mean(dim=(1, 2))


def test_grad_cam_fallback_to_a_channels_last_layer_equals_pytorch_grad_cam_with_a_reshape():
    torch.manual_seed(4)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), torchvision.ops.Permute([0, 2, 3, 1]), nn.LayerNorm(6), MeanHW(), nn.Linear(6, 3)
    ).eval()
    x = torch.randn(1, 3, 10, 14)
    with Probe(model, channels_last=False) as probe:
        assert probe.layers["2"].layout == "HWC"
        assert nearest_conv_layer(probe, "4") == "2"  # the channels-last LayerNorm, not the convolution
        c = int(probe.logits(x).argmax())
        raw = grad_cam(probe, x, c, "2")
        assert raw.shape == (1, 10, 14)
        assert_informative(raw)
        np.testing.assert_array_equal(OVERLAYS["grad-cam"](probe, x, layer="4", channel=0, target=c),
                                      upsample(raw, (10, 14))[0].numpy())
        clone = copy.deepcopy(model)
        explainer = gradcam_lib.GradCAM(clone, [clone[2]], reshape_transform=lambda t: t.permute(0, 3, 1, 2))
        expected = explainer(x, targets=[ClassifierOutputTarget(c)])
        np.testing.assert_allclose(like_pytorch_grad_cam(raw, (10, 14)), expected, atol=CAM_ATOL)


def test_grad_cam_overlay_of_swin_avgpool_is_grad_cam_at_its_last_map():
    # Swin's last map is channels-last (norm); permute makes it (C, H, W): the same Grad-CAM
    torch.manual_seed(0)
    model = torchvision.models.swin_t(weights=None).eval()
    x = torch.randn(1, 3, 128, 128)
    with Probe(model, channels_last=False, input_size=(3, 128, 128)) as probe:
        assert probe.layers["norm"].layout == "HWC"
        assert nearest_conv_layer(probe, "avgpool") == "permute"  # not the patch-embedding stem features.0.0
        assert nearest_conv_layer(probe, "head") == "permute"
        heat = OVERLAYS["grad-cam"](probe, x, layer="avgpool", channel=0, target=3)
        # pytorch-grad-cam needs a reshape_transform at norm; that equality is checked on a small net above
        raw = grad_cam(probe, x, 3, "norm")
        assert raw.shape == (1, 4, 4)
        assert_informative(raw)
        expected = upsample(raw, (128, 128))[0].numpy()
        np.testing.assert_allclose(heat, expected, rtol=1e-4, atol=1e-6 * float(expected.max()))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_maps_match_cpu(resnet18):
    x = torch.randn(2, 3, 64, 64)
    with Probe(resnet18, device="cpu") as cpu, Probe(resnet18, device="cuda") as gpu:
        for method in (
            lambda p, b: grad_cam(p, b, 3, "layer3"),
            lambda p, b: grad_cam_pp(p, b, 3, "layer3"),
            lambda p, b: cam(p, b, 3),
        ):
            a, b = method(cpu, x), method(gpu, x.cuda())
            assert b.device.type == "cuda"
            scale = a.abs().max().item()
            assert scale > 0 and (a - b.cpu()).abs().max().item() <= 2e-2 * scale


# --------------------------------------------------------------------------- overlays


def test_overlays_share_one_signature_and_shape(resnet18):
    assert set(OVERLAYS) == set(OVERLAY_INPUTS) == {"saliency", "guided backprop", "deconvnet", "grad-cam"}
    x = torch.randn(1, 3, 64, 64)
    with Probe(resnet18) as probe:
        for name, fn in OVERLAYS.items():
            heat = fn(probe, x, layer="layer2.1.relu", channel=3, target=5)
            assert isinstance(heat, np.ndarray) and heat.shape == (64, 64) and heat.dtype == np.float32, name
            assert np.isfinite(heat).all() and heat.min() >= 0 and heat.max() > 0, name
        with pytest.raises(ValueError, match="one image"):
            OVERLAYS["saliency"](probe, torch.randn(2, 3, 64, 64), layer="layer1", channel=0, target=0)
        with pytest.raises(KeyError):
            OVERLAYS["grad-cam"](probe, x, layer="layer9", channel=0, target=0)


def test_signed_overlays_are_the_signed_values_whose_strength_the_overlays_show(resnet18):
    assert set(SIGNED_OVERLAYS) == {"saliency", "guided backprop", "deconvnet"}
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    selections = {"layer": "layer2.1.relu", "channel": 3, "target": 5}
    with Probe(resnet18) as probe:
        for name, fn in SIGNED_OVERLAYS.items():
            values = fn(probe, x, **selections)
            assert isinstance(values, np.ndarray) and values.shape == (3, 64, 64), name
            assert values.dtype == np.float32 and np.isfinite(values).all(), name
            assert (values < 0).any() and (values > 0).any(), name  # the sign is kept
            np.testing.assert_array_equal(magnitude(values), OVERLAYS[name](probe, x, **selections), err_msg=name)
        want = saliency(probe, x, 5, absolute=False)[0].numpy()
        np.testing.assert_allclose(SIGNED_OVERLAYS["saliency"](probe, x, **selections), want, rtol=1e-5, atol=1e-7)


def test_overlays_depend_on_exactly_the_declared_selections(resnet18):
    x = torch.randn(1, 3, 64, 64)
    base = {"layer": "layer2.1.relu", "channel": 3, "target": 5}
    changed = {"layer": "layer3.0.relu", "channel": 8, "target": 9}
    with Probe(resnet18) as probe:
        busiest = int(probe.capture(x, "layer2.1.relu")["layer2.1.relu"].sum(dim=(2, 3)).argmax())
        assert busiest != base["channel"]
        changed["channel"] = busiest
        for name, fn in OVERLAYS.items():
            reference = fn(probe, x, **base)
            for key in ("layer", "channel", "target"):
                other = fn(probe, x, **{**base, key: changed[key]})
                if key in OVERLAY_INPUTS[name]:
                    assert not np.allclose(other, reference), f"{name} should depend on {key}"
                else:
                    assert np.array_equal(other, reference), f"{name} should not depend on {key}"


def test_overlay_values_are_the_documented_maps(resnet18):
    x = torch.randn(1, 3, 64, 64)
    with Probe(resnet18) as probe:
        heat = OVERLAYS["grad-cam"](probe, x, layer="fc", channel=0, target=2)
        expected = upsample(grad_cam(probe, x, 2, "layer4"), (64, 64))[0].numpy()
        np.testing.assert_array_equal(heat, expected)
        heat = OVERLAYS["deconvnet"](probe, x, layer="layer1.1.relu", channel=4, target=0)
        expected = project_channel(probe, x, "layer1.1.relu", 4, unit="max")[0].abs().amax(0).numpy()
        np.testing.assert_array_equal(heat, expected)


def test_batches_of_a_model_with_batch_statistics_are_explained_image_by_image():
    # the probe runs such a batch one image per forward pass; every map must be its image's own
    model = batch_statistics_net()
    torch.manual_seed(3)
    x = torch.randn(3, 3, 9, 11)
    with Probe(model) as probe:
        assert probe.batch_dependent
        activation, grad = layer_gradient(probe, x, 1, "0")
        assert activation.shape == grad.shape == (3, 4, 9, 11)
        for method in (lambda xs: grad_cam(probe, xs, 1, "0"), lambda xs: grad_cam_pp(probe, xs, 1, "0"),
                       lambda xs: cam(probe, xs, 1)):
            batch = method(x)
            alone = torch.cat([method(x[i:i + 1]) for i in range(3)])
            assert batch.shape == (3, 9, 11)
            torch.testing.assert_close(batch, alone)


@pytest.mark.parametrize("mode", ["no_grad", "set_grad_enabled(False)", "inference_mode"])
def test_maps_are_the_same_with_gradients_turned_off_and_the_mode_is_kept(mode):
    enter = {"no_grad": torch.no_grad, "set_grad_enabled(False)": lambda: torch.set_grad_enabled(False),
             "inference_mode": torch.inference_mode}[mode]
    model = gap_net()
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(6))
    calls = {
        "grad_cam": lambda x: grad_cam(model, x, 1, "relu2"),
        "grad_cam_pp": lambda x: grad_cam_pp(model, x, 2, "conv2"),
        "grad_cam_channel": lambda x: grad_cam(model, x, ChannelActivation("relu2", 3), "conv1"),
        "layer_gradient": lambda x: torch.stack(layer_gradient(model, x, ClassProbability(0), "relu1")),
        "cam": lambda x: cam(model, x, 3),
    }
    for name, call in calls.items():
        expected = call(x)
        with enter():
            result = call(x.clone())  # the copy is an inference tensor under inference_mode
            assert not torch.is_grad_enabled(), name
            assert torch.is_inference_mode_enabled() == (mode == "inference_mode"), name
        assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
        torch.testing.assert_close(result, expected, rtol=0, atol=0, msg=name)
    assert all(p.grad is None for p in model.parameters())


def test_a_negative_class_index_is_refused_not_read_from_the_end():
    model = gap_net()
    x = torch.randn(1, 3, 6, 6)
    for call in (lambda: cam(model, x, -1), lambda: grad_cam(model, x, -1, "relu2"),
                 lambda: layer_gradient(model, x, -4, "relu2")):
        with pytest.raises(IndexError, match=r"negative|accepted: 0\.\.3"):
            call()


def test_cam_reads_class_indices_as_every_method_does():
    model = gap_net()
    x = torch.randn(2, 3, 6, 6)
    with pytest.raises(IndexError, match=r"class index -1 is negative; accepted: 0\.\.C-1"):
        cam(model, x, -1)
    expected = cam(model, x, 2)
    for index in (np.int64(2), torch.tensor(2)):
        assert torch.equal(cam(model, x, index), expected)
        assert torch.equal(grad_cam(model, x, index, "relu2"), grad_cam(model, x, 2, "relu2"))
    for bad in (True, 2.0):
        with pytest.raises(TypeError):
            cam(model, x, bad)
    # one class per image: each image's map for its own class
    per_image = cam(model, x, torch.tensor([1, 2]))
    torch.testing.assert_close(per_image, torch.cat([cam(model, x[:1], 1), cam(model, x[1:], 2)]))
    with pytest.raises(ValueError, match=r"cam: 3 class indices \(one per image\) for a batch of 2 images"):
        cam(model, x, [0, 1, 2])


class Detached:
    """A target whose score is cut off from the graph."""

    layer = None

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return output.detach()[:, 0]


class Constant:
    layer = None

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return torch.ones(output.shape[0])


def test_a_score_that_does_not_depend_on_the_input_is_named_as_such():
    model = gap_net()
    x = torch.randn(2, 3, 6, 6)
    for target in (Detached(), Constant()):
        for method, call in (("grad_cam", grad_cam), ("grad_cam_pp", grad_cam_pp), ("layer_gradient", layer_gradient)):
            with pytest.raises(RuntimeError, match=f"^{method}: the target's score does not depend on the input"):
                call(model, x, target, "relu2")


def test_cam_with_non_finite_weights_says_so():
    model = gap_net()
    with torch.no_grad():
        model.conv2.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"cam: the score for class 1 .* is not finite \(NaN or inf\)"):
        cam(model, torch.randn(1, 3, 6, 6), 1)
    with torch.no_grad():
        model.conv2.weight[0, 0, 0, 0] = 0.0
        model.fc.weight[1, 0] = float("inf")
    with pytest.raises(ValueError, match="not finite"):
        cam(model, torch.randn(1, 3, 6, 6), 1)


def test_nearest_conv_layer_takes_a_model_too(resnet18):
    with Probe(resnet18) as probe:
        expected = nearest_conv_layer(probe, "fc")
    assert nearest_conv_layer(resnet18, "fc") == expected
    assert nearest_conv_layer(gap_net(), "fc") == "relu2"
    with pytest.raises(TypeError, match="expected a torch.nn.Module, a zoo bundle or a cnnwidgets.Probe, got str"):
        nearest_conv_layer("resnet18", "fc")


def test_upsample_says_it_needs_a_tensor():
    with pytest.raises(TypeError, match=r"a torch.Tensor of shape \(N, h, w\), got a numpy.ndarray; .*torch.from_numpy"):
        upsample(np.zeros((2, 8, 8)), (16, 16))
    with pytest.raises(TypeError, match="got a builtins.list"):
        upsample([[[0.0]]], (16, 16))
    assert upsample(torch.from_numpy(np.zeros((2, 8, 8))), (16, 16)).shape == (2, 16, 16)


def test_grad_cam_pp_refuses_a_negative_or_non_finite_eps():
    model = gap_net()
    x = torch.randn(1, 3, 6, 6)
    for eps in (-1, -1e-6, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"eps must be a finite number >= 0"):
            grad_cam_pp(model, x, 1, "relu2", eps=eps)
    for eps in ("1e-6", True, None):
        with pytest.raises(TypeError, match="eps must be a real number"):
            grad_cam_pp(model, x, 1, "relu2", eps=eps)
    assert torch.equal(grad_cam_pp(model, x, 1, "relu2", eps=0), grad_cam_pp(model, x, 1, "relu2"))
    assert grad_cam_pp(model, x, 1, "relu2", eps=1e-6).shape == (1, 6, 6)


class DictBody(nn.Module):
    """A backbone layer that returns a dict of feature maps (as torchvision's IntermediateLayerGetter)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return {"0": y, "1": F.max_pool2d(y, 2)}


class DictBodyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = DictBody()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.body(x)["1"].mean((2, 3)))


def test_a_layer_returning_a_dict_is_refused_with_a_message_that_reads():
    x = torch.randn(1, 3, 8, 8)
    with Probe(DictBodyNet(), input_size=(3, 8, 8)) as probe:
        with pytest.raises(ValueError, match=(
            r"grad_cam needs a layer with a \(C, H, W\) output; 'body' returns something other than one tensor "
            r"\(such as a dict or a tuple of feature maps\); choose a layer inside it that returns one"
        )) as info:
            grad_cam(probe, x, 1, "body")
        assert "output shape no tensor output" not in str(info.value)
        assert grad_cam(probe, x, 1, "body.conv").shape == (1, 8, 8)


@pytest.mark.filterwarnings("ignore:Using a non-tuple sequence")  # torch's reading of out["out"]
def test_grad_cam_with_a_target_that_fails_on_a_dict_output_says_what_the_target_got():
    class Segmenter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 5, 3, padding=1)

        def forward(self, x):
            return {"out": self.conv(x)}

    def target(out):
        return out["out"][:, 2].mean((1, 2))

    target.layer = None
    with Probe(Segmenter(), input_size=(3, 8, 8)) as probe:
        with pytest.raises(TypeError, match=(
            r"the target failed on the model's output, a tensor of shape \(1, 5, 8, 8\) \(a dict output is reduced "
            r"to its 'out' entry before targets see it\)"
        )):
            grad_cam(probe, torch.randn(1, 3, 8, 8), target, "conv")

        def fixed(out):
            return out[:, 2].mean((1, 2))

        fixed.layer = None
        assert grad_cam(probe, torch.randn(1, 3, 8, 8), fixed, "conv").shape == (1, 8, 8)


class _TokenHead(nn.Module):
    """Feature maps with fc's width, but fc reads a token taken at one position (as a ViT's
    class token): CAM is undefined, whatever fc's weights."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.fc = nn.Linear(5, 4)

    def forward(self, x):
        return self.fc(self.conv(x)[:, :, 0, 0])


def test_cam_is_refused_when_fc_does_not_read_the_average_even_with_a_zero_head():
    torch.manual_seed(0)
    model = _TokenHead().eval()
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():  # a head initialised to zero before fine-tuning scores every input alike
        model.fc.weight.zero_()
        model.fc.bias.zero_()
    with pytest.raises(ValueError, match=r"the input of 'fc' is not the global average of layer 'conv'.*use grad_cam"):
        cam(model, x, 1, layer="conv")


def test_cam_explains_the_logits_of_a_model_that_ends_in_a_softmax():
    model = gap_net()
    x = torch.randn(2, 3, 6, 6)
    wrapped = nn.Sequential(model, nn.Softmax(dim=1)).eval()
    expected = cam(model, x, 2)
    torch.testing.assert_close(cam(wrapped, x, 2), expected)
    assert expected.abs().sum() > 0


class _HiddenLinear(nn.Module):
    """Global average pooling, then two linear layers: the first reads the averaged maps, but
    only the second gives the model's class scores."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc1 = nn.Linear(8, 6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(self.conv(x).mean((2, 3)))))


def test_cam_refuses_an_fc_whose_outputs_are_not_the_models_class_scores():
    torch.manual_seed(0)
    model = _HiddenLinear().eval()
    x = torch.randn(1, 3, 8, 8)
    for index in (1, 5):  # a class of the model, and a unit that only fc1 has
        with pytest.raises(ValueError, match=r"the model's output is not the output of 'fc1'.*use grad_cam"):
            cam(model, x, index, layer="conv", fc="fc1")
    # the default fc is the last linear layer, which does not read the maps
    with pytest.raises(ValueError, match=r"'fc2' takes 6 features but layer 'conv' has 8 channels"):
        cam(model, x, 1, layer="conv")


def test_cam_on_a_max_pooled_model_suggests_no_layer_where_it_fails_alike():
    from cnnwidgets.zoo import load_default

    model = load_default().model.eval()  # global max pooling before its classifier
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(ValueError, match=r"not the global average of layer 'features.relu4'.*nor is it that of "
                                         r"'features'.*max pooling say, and CAM is undefined") as refused:
        cam(model, x, 1, layer="features.relu4")
    assert "pass layer=" not in str(refused.value)
    with pytest.raises(ValueError, match="not the global average") as direct:
        cam(model, x, 1, layer="features")
    assert "pass layer=" not in str(direct.value)


def test_grad_cam_refuses_a_layer_with_an_empty_feature_map():
    from tests.test_layer_geometry import EMPTY_ACT, empty_branch

    model, x = empty_branch(), torch.rand(2, 3, 32, 32)  # layer 'act' is (8, 0, 0) at 32 x 32
    with pytest.raises(ValueError, match=EMPTY_ACT):
        grad_cam(model, x, 0, "act")  # was a (2, 0, 0) map, silently
    with pytest.raises(ValueError, match=EMPTY_ACT):
        grad_cam_pp(model, x, 0, "act")
    with pytest.raises(ValueError, match=EMPTY_ACT):
        layer_gradient(model, x, 0, "act")
    with pytest.raises(ValueError, match=EMPTY_ACT):  # a channel target on it, at a layer before it
        grad_cam(model, x, ChannelActivation("act", 0, reduce="sum"), "pool")
    # the default layer is one with maps; so is 'act' at 64 x 64
    with Probe(model, input_size=(3, 32, 32)) as probe:
        assert nearest_conv_layer(probe) == "pool"
    assert grad_cam(model, x, 0).shape == (2, 16, 16)
    assert grad_cam(model, torch.rand(1, 3, 64, 64), 0, "act").shape == (1, 12, 12)


def test_an_adaptive_pooling_that_only_copies_a_smaller_map_out_is_not_the_default_grad_cam_layer():
    torch.manual_seed(0)
    model = torchvision.models.alexnet(weights=None).eval()
    with Probe(model, input_size=(3, 64, 64)) as probe:
        # at 64 px the last real map is 3x3; avgpool copies the 1x1 map after it out to 6x6
        assert probe.layers["features.12"].output_shape == (256, 1, 1)
        assert probe.layers["avgpool"].output_shape == (256, 6, 6)
        assert nearest_conv_layer(probe) == "features.11"
        assert nearest_conv_layer(probe, "avgpool") == "features.11"
        x = torch.randn(1, 3, 64, 64)
        default = grad_cam(probe, x, 3)
        torch.testing.assert_close(default, grad_cam(probe, x, 3, "features.11"))
        assert default.shape == (1, 3, 3)
    with Probe(model, input_size=(3, 224, 224)) as probe:
        assert nearest_conv_layer(probe) == "avgpool"  # at its design size avgpool keeps a 6x6 map as it is


def test_cam_on_a_model_that_normalises_the_pooled_features_says_so_rather_than_asking_for_a_larger_input():
    torch.manual_seed(0)
    model = torchvision.models.convnext_tiny(weights=None).eval()
    with pytest.raises(ValueError) as caught:
        cam(model, torch.randn(1, 3, 64, 64), 3)
    message = str(caught.value)
    assert "CAM is undefined here, use grad_cam" in message
    assert "a layer between 'avgpool' and 'classifier.2', a normalisation say, changes the pooled features" in message
    assert "larger input" not in message and "classifier.0" not in message


def test_a_branch_inside_a_reduction_block_that_ends_at_1x1_is_not_the_default_grad_cam_layer():
    model = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False).eval()
    with Probe(model, input_size=(3, 96, 96)) as probe:
        # Mixed_7a reduces its 4x4 input to 1x1; its branch convs before the last one are 4x4 but
        # hold 192 of its 1280 channels: the block before it is the whole representation
        assert probe.layers["Mixed_7a"].map_shape[1:] == (1, 1)
        assert probe.layers["Mixed_7a.branch7x7x3_3"].map_shape == (192, 4, 4)
        assert nearest_conv_layer(probe) == "Mixed_6e"
        assert nearest_conv_layer(probe, "fc") == "Mixed_6e"
    with Probe(model, input_size=(3, 160, 160)) as probe:
        assert nearest_conv_layer(probe) == "Mixed_7c"


def _no_evidence_net() -> nn.Sequential:
    """Class 0's weights are all negative on non-negative (post-ReLU) features: its Grad-CAM weights
    are all negative, so the map is zero everywhere; class 1's are all positive."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(6, 2)).eval()
    with torch.no_grad():
        model[4].weight[0] = -model[4].weight[0].abs() - 0.1
        model[4].weight[1] = model[4].weight[1].abs() + 0.1
    return model


def test_an_all_zero_grad_cam_map_warns_naming_the_images_and_a_map_with_evidence_does_not():
    from cnnwidgets.methods.cam import EmptyMapWarning, empty_maps_quietly

    model, x = _no_evidence_net(), torch.rand(3, 3, 10, 10)
    for method in (grad_cam, grad_cam_pp):
        with pytest.warns(EmptyMapWarning, match=r"images \[0, 1, 2\] is zero everywhere at layer '1'"):
            maps = method(model, x, 0, layer="1")
        assert float(maps.abs().max()) == 0.0
        with warnings.catch_warnings():
            warnings.simplefilter("error", EmptyMapWarning)
            assert float(method(model, x, 1, layer="1").max()) > 0  # evidence: no warning
            with empty_maps_quietly():  # a caller that says it itself
                method(model, x, 0, layer="1")
    # per image: only the images whose map is empty are named (a list of classes, one per image)
    with pytest.warns(EmptyMapWarning, match=r"images \[0, 2\] is zero"):
        grad_cam(model, x, [0, 1, 0], layer="1")


def test_an_empty_grad_cam_map_says_whether_the_gradient_at_the_layer_is_zero_too():
    from cnnwidgets.methods.cam import EmptyMapWarning, empty_maps_quietly
    from tests.test_gradients import _zero_head_net

    x = torch.rand(2, 3, 10, 10)
    with pytest.warns(EmptyMapWarning, match=r"images \[0, 1\] is zero everywhere at layer '1': the target's "
                      r"gradient at the layer is zero at every unit") as caught:
        grad_cam(_zero_head_net(), x, 0, layer="1")
    assert [w.message.zero_gradient for w in caught if issubclass(w.category, EmptyMapWarning)] == [True]
    with pytest.warns(EmptyMapWarning, match="no positive evidence") as caught:
        grad_cam(_no_evidence_net(), x, 0, layer="1")
    assert [w.message.zero_gradient for w in caught if issubclass(w.category, EmptyMapWarning)] == [False]
    # a caller that says it itself gets the warnings it left out, and nothing is issued
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmptyMapWarning)
        with empty_maps_quietly() as left_out:
            grad_cam_pp(_zero_head_net(), x, 0, layer="1")
            with empty_maps_quietly() as inner:
                grad_cam(_no_evidence_net(), x, 0, layer="1")
        assert [w.zero_gradient for w in left_out] == [True]
        assert [w.zero_gradient for w in inner] == [False]
        assert grad_cam(_no_evidence_net(), x, 1, layer="1").max() > 0  # evidence: nothing to leave out


def test_a_batch_sized_target_on_a_batch_statistics_model_is_told_why_it_sees_one_image():
    model, x = batch_statistics_net(), torch.randn(4, 3, 8, 8)
    labels = torch.tensor([0, 1, 2, 0])
    # was: only "the target failed on the model's output, a tensor of shape (1, 3): IndexError ...",
    # leaving the user to guess why a batch of 4 gave an output of one image
    with pytest.raises(IndexError, match=r"shape \(1, 3\).*layers '1' use batch statistics, so each of the 4 images "
                                         r"is explained alone.*any batch size"):
        grad_cam(model, x, lambda out: out[torch.arange(4), labels], layer="0")
    # the same target written for any batch size, and one class per image, explain the batch
    per_image = grad_cam(model, x, [0, 1, 2, 0], layer="0")
    by_column = torch.cat([grad_cam(model, x[i:i + 1], lambda out, k=k: out[:, k], layer="0")
                           for i, k in enumerate([0, 1, 2, 0])])
    torch.testing.assert_close(per_image, by_column)
