"""The methods on each accelerator present (CUDA, MPS) agree with the CPU.

Skipped where there is none. MPS has no float64: a method that casts device tensors to float64
fails there and nowhere else, so these cover every method that keeps float64 sums, and models
that keep constants as plain tensor attributes (which ``Module.to`` does not move).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cnnwidgets import ChannelActivation, Probe
from cnnwidgets.core.targets import class_probabilities
from cnnwidgets.methods import (
    correspondence,
    dead_channels,
    deconvnet,
    grad_cam,
    guided_backprop,
    invariance_curves,
    maximize_activation,
    occlusion_map,
    saliency,
    scan_topk,
)

ACCELERATORS = [
    name for name, present in (("cuda", torch.cuda.is_available()), ("mps", torch.backends.mps.is_available()))
    if present
]
pytestmark = pytest.mark.skipif(not ACCELERATORS, reason="needs a CUDA or MPS device")
# the test names carry "device", so that conftest lets them see the accelerators
on_device = pytest.mark.parametrize("device", ACCELERATORS or ["none"])


class BatchNormNet(nn.Module):
    """Conv + batch norm pairs (folded for occlusion maps), a softmax head (its outputs are a
    distribution) and a normalisation kept as plain tensor attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.mean = torch.tensor([0.45, 0.5, 0.55]).view(1, 3, 1, 1)
        self.std = torch.tensor([0.25, 0.2, 0.3]).view(1, 3, 1, 1)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 12, 3, padding=1, bias=False), nn.BatchNorm2d(12), nn.ReLU(),
        )
        self.features.shared = self.mean  # one tensor, seen from two modules
        self.register_buffer("shift", torch.zeros(1, 3, 1, 1))
        self.features.shift = self.shift  # a plain attribute naming a buffer
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 4), nn.Softmax(dim=1))

    def forward(self, x):
        return self.head(self.features((x - self.mean) / self.std))


def _model() -> BatchNormNet:
    torch.manual_seed(0)
    model = BatchNormNet()
    with torch.no_grad():  # statistics that are not the identity, so folding changes the weights
        for bn in (model.features[1], model.features[4]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    return model.eval()


def _images(n: int = 3) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(n, 3, 16, 16)


@on_device
def test_device_probe_moves_plain_tensor_attributes_and_matches_the_cpu(device):
    model, x = _model(), _images()
    with Probe(model, device="cpu") as cpu, Probe(model, device=device) as acc:
        assert acc.model.mean.device.type == device
        torch.testing.assert_close(acc.logits(x).cpu(), cpu.logits(x), rtol=1e-4, atol=1e-5)
        acc.to("cpu")
        assert acc.model.mean.device.type == "cpu"
        acc.to(device)
        assert acc.model.std.device.type == device
        assert acc.model.features.shared is acc.model.mean  # still one tensor after the moves
        assert acc.model.features.shift is acc.model.shift  # and still the buffer it named
        torch.testing.assert_close(acc.logits(x).cpu(), cpu.logits(x), rtol=1e-4, atol=1e-5)


@on_device
def test_device_distribution_check_and_class_probabilities(device):
    # a softmax output with no Softmax module seen: told from logits by its rows summing to 1
    with torch.no_grad():
        expected = _model()(_images())
    got = class_probabilities(expected.to(device))
    torch.testing.assert_close(got.cpu(), expected)


@on_device
def test_device_occlusion_map_with_folded_batch_norm_matches_the_cpu(device):
    model, x = _model(), _images(1)
    cpu = occlusion_map(model, x, 1, window=4, stride=4, device="cpu", progress=False)
    acc = occlusion_map(model, x, 1, window=4, stride=4, device=device, progress=False)
    np.testing.assert_allclose(acc.grid, cpu.grid, rtol=1e-4, atol=1e-5)


@on_device
def test_device_dead_channels_match_the_cpu(device):
    model, x = _model(), _images(4)
    cpu = dead_channels(Probe(model, device="cpu"), x, ["features.2", "features.5"], progress=False)
    acc = dead_channels(Probe(model, device=device), x.to(device), ["features.2", "features.5"], progress=False)
    for name in cpu:
        np.testing.assert_allclose(acc[name].active_fraction, cpu[name].active_fraction, rtol=0, atol=1e-12)
        np.testing.assert_allclose(acc[name].max_activation, cpu[name].max_activation, rtol=1e-4, atol=1e-5)


@on_device
def test_device_invariance_curves_match_the_cpu(device):
    model, x = _model(), _images(2)
    kwargs = {"layers": ["features.5"], "transforms": {"rotation": [-10.0, 0.0, 10.0]}, "progress": False}
    cpu = invariance_curves(Probe(model, device="cpu"), x, **kwargs)
    acc = invariance_curves(Probe(model, device=device), x.to(device), **kwargs)
    np.testing.assert_allclose(acc.probabilities["rotation"], cpu.probabilities["rotation"], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(acc.distances["rotation"]["features.5"], cpu.distances["rotation"]["features.5"],
                               rtol=1e-3, atol=1e-4)


@on_device
def test_device_correspondence_matches_the_cpu(device):
    model, x = _model(), _images(3)
    parts = {"corner": [[0, 0, 5, 5]] * 3}
    cpu = correspondence(Probe(model, device="cpu"), x, parts, ["features.5"], random_trials=2, progress=False)
    acc = correspondence(Probe(model, device=device), x.to(device), parts, ["features.5"], random_trials=2,
                         progress=False)
    assert acc.mean["corner"]["features.5"] == pytest.approx(cpu.mean["corner"]["features.5"], abs=1e-3)


@on_device
def test_device_top_k_scan_finds_the_cpu_s_entries_and_resumes_on_the_cpu(device):
    model, x = _model(), _images(6)
    cpu = scan_topk(Probe(model, device="cpu"), x, ["features.5"], k=2, batch_size=2, progress=False)
    half = scan_topk(Probe(model, device=device), x.to(device), ["features.5"], k=2, batch_size=2, stop_after=2,
                     progress=False)
    # the data's checksums are the same whatever device it is read on, so the scan resumes here
    done = scan_topk(Probe(model, device="cpu"), x, ["features.5"], k=2, batch_size=2, resume=half, progress=False)
    for channel in range(12):
        assert [e.image_index for e in done.entries("features.5", channel)] == \
            [e.image_index for e in cpu.entries("features.5", channel)]


@on_device
def test_device_gradient_methods_and_activation_maximisation_run(device):
    model, x = _model(), _images(1)
    torch.testing.assert_close(saliency(model, x.to(device), 2).cpu(), saliency(model, x, 2), rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(grad_cam(model, x.to(device), 2, layer="features.5").cpu(),
                               grad_cam(model, x, 2, layer="features.5"), rtol=1e-3, atol=1e-5)
    with Probe(model, device=device) as probe:
        result = maximize_activation(probe, 1, steps=4, size=16, progress=False)
    assert np.isfinite(result.trace).all()


@on_device
def test_device_projections_and_channel_occlusion_match_the_cpu(device):
    model, x = _model(), _images(1)
    target = ChannelActivation("features.5", 3)
    for method in (deconvnet, guided_backprop):
        torch.testing.assert_close(method(model, x.to(device), target).cpu(), method(model, x, target),
                                   rtol=1e-3, atol=1e-5)
    cpu = occlusion_map(model, x, target, window=4, stride=4, device="cpu", progress=False)
    acc = occlusion_map(model, x, target, window=4, stride=4, device=device, progress=False)
    np.testing.assert_allclose(acc.grid, cpu.grid, rtol=1e-4, atol=1e-4)
