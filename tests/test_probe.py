"""The hook manager: prefix-only runs, correctness, caching, devices, errors."""

from __future__ import annotations

import copy
import os
import sys
import threading
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from cnnwidgets import ModelSnapshot, Probe
from cnnwidgets.core.device import release_memory, resolve_device
from cnnwidgets.core.probe import StopForward
from tests.helpers import HeadFirst, OutsideAutogradNet, batch_statistics_net, reference_outputs

EXECUTED: list[str] = []


class Recorder(nn.Module):
    """Identity module that records (in a module-level list) that it ran."""

    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag

    def forward(self, x):
        EXECUTED.append(self.tag)
        return x


def chain() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), Recorder("a"), nn.ReLU(inplace=True),
        nn.Conv2d(4, 4, 3, padding=1), Recorder("b"), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3), Recorder("c"),
    )


def test_prefix_stops_right_after_the_deepest_requested_layer():
    model = chain()
    x = torch.randn(2, 3, 16, 16)
    with Probe(model, channels_last=False, input_size=(3, 16, 16)) as probe:
        probe.layers  # discovery runs the whole model once; not counted below
        EXECUTED.clear()
        probe.reset_stats()
        out = probe.capture(x, ["0", "3"])
        assert EXECUTED == ["a"]  # modules 4.. never ran
        assert probe.stats.modules_executed == 4  # 0, 1, 2, 3
        assert probe.stats.full_forwards == 0
        EXECUTED.clear()
        probe.logits(x)
        assert EXECUTED == ["a", "b", "c"]
        assert probe.stats.full_forwards == 1
    assert set(out) == {"0", "3"}


def test_stop_signal_cannot_be_swallowed_by_except_exception():
    class Guarded(nn.Module):
        def __init__(self):
            super().__init__()
            self.first = nn.Conv2d(3, 2, 3)
            self.second = Recorder("second")

        def forward(self, x):
            try:
                x = self.first(x)
            except Exception:  # a user's broad handler must not eat the stop signal
                x = x * 0
            return self.second(x)

    assert issubclass(StopForward, BaseException) and not issubclass(StopForward, Exception)
    with Probe(Guarded(), channels_last=False, input_size=(3, 8, 8)) as probe:
        probe.layers
        EXECUTED.clear()
        out = probe.capture(torch.randn(1, 3, 8, 8), "first")["first"]
    assert EXECUTED == []
    assert out.abs().sum() > 0


@pytest.mark.parametrize("channels_last", [False, True])
def test_resnet18_captures_equal_full_forward(channels_last):
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(2, 3, 96, 96)
    names = ["conv1", "layer1.0.bn2", "layer2.1", "layer3.0.downsample.0", "layer4", "fc"]
    ref = reference_outputs(model, x, names)
    with torch.no_grad():
        logits = model(x)
    with Probe(model, channels_last=channels_last) as probe:
        got = probe.capture(x, names)
        out = probe.logits(x)
    for name in names:
        if channels_last:
            torch.testing.assert_close(got[name], ref[name], rtol=1e-4, atol=1e-4)
        else:
            assert torch.equal(got[name], ref[name]), name
    torch.testing.assert_close(got["fc"], logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out, logits, rtol=1e-4, atol=1e-4)


def test_vgg16_conv_output_is_not_overwritten_by_inplace_relu():
    model = torchvision.models.vgg16(weights=None).eval()
    assert model.features[1].inplace  # the conv at features.0 is followed by ReLU(inplace=True)
    x = torch.randn(1, 3, 64, 64)
    conv = model.features[0]
    with torch.no_grad():
        expected = F.conv2d(x, conv.weight, conv.bias, padding=1)
    with Probe(model, channels_last=False) as probe:
        got = probe.capture(x, ["features.0", "features.1", "features.2"])
    assert (got["features.0"] < 0).any(), "negative conv responses must survive the in-place ReLU"
    torch.testing.assert_close(got["features.0"], expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(got["features.1"], got["features.0"].clamp(min=0))
    conv2 = model.features[2]
    with torch.no_grad():
        expected2 = F.conv2d(got["features.1"], conv2.weight, conv2.bias, padding=1)
    torch.testing.assert_close(got["features.2"], expected2, rtol=1e-5, atol=1e-5)


class _KeepsOutput(nn.Conv2d):
    """A convolution that remembers the tensor it returned last."""

    def forward(self, x):
        self.last_output = super().forward(x)
        return self.last_output


def test_prefix_capture_hands_over_the_deepest_layer_without_a_copy():
    # The pass stops right after the deepest requested layer, so nothing can write into its
    # output: copying it (megabytes for early layers of big nets) would be wasted on every drag step.
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True),
                          nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(inplace=True))
    x = torch.randn(1, 3, 8, 8)
    with Probe(model, channels_last=False) as probe:
        made = {}
        for name in ("0", "2"):  # ahead of the probe's own hooks: the tensors the pass made
            probe.module(name).register_forward_hook(
                lambda m, a, out, name=name: made.__setitem__(name, out.data_ptr()), prepend=True)
        got = probe.capture(x, ["0", "2"], cache=False)
        # the deepest layer is the pass's own tensor; the earlier one is a copy, as layers that
        # ran after it may have written into the original
        assert got["2"].data_ptr() == made["2"]
        assert got["0"].data_ptr() != made["0"]
        assert (got["0"] < 0).any()
    # a module that keeps the tensor it returns (as an attribute) gets a copy, also when deepest
    keeper = nn.Sequential(_KeepsOutput(3, 4, 3, padding=1))
    with Probe(keeper, channels_last=False) as probe:
        got = probe.capture(x, ["0"], cache=False)["0"]
        assert got.data_ptr() != probe.module("0").last_output.data_ptr()
        torch.testing.assert_close(got, probe.module("0").last_output)


def test_resnet_block_output_survives_inplace_residual_add():
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    block = model.layer1[0]
    with Probe(model, channels_last=False) as probe:
        got = probe.capture(x, ["maxpool", "layer1.0.bn2", "layer1.0.relu", "layer1.0"])
    with torch.no_grad():
        h = got["maxpool"]
        expected_bn2 = block.bn2(block.conv2(F.relu(block.bn1(block.conv1(h)))))
    # bn2's output is modified in place by `out += identity` in BasicBlock.forward.
    torch.testing.assert_close(got["layer1.0.bn2"], expected_bn2)
    # The block's ReLU runs twice; the capture is its last call, i.e. the block's output.
    assert probe.closed
    assert torch.equal(got["layer1.0.relu"], got["layer1.0"])
    torch.testing.assert_close(got["layer1.0"], F.relu(expected_bn2 + h))


def test_cache_hits_misses_and_invalidation():
    model = torchvision.models.resnet18(weights=None)
    x = torch.randn(1, 3, 64, 64)
    with Probe(model) as probe:
        first = probe.capture(x, ["layer1", "layer2"])
        probe.reset_stats()
        again = probe.capture(x.clone(), ["layer2", "layer1"])  # same content, new tensor object
        assert probe.stats.forwards == 0 and probe.stats.cache_hits == 2
        assert torch.equal(again["layer1"], first["layer1"])
        probe.capture(x, ["layer3"])  # deeper layer: a forward, earlier ones still cached
        assert probe.stats.forwards == 1 and probe.stats.cache_misses == 1
        changed = x.clone()
        changed[0, 0, 10, 10] += 1.0
        probe.capture(changed, ["layer1"])
        assert probe.stats.forwards == 2
        x[0, 1, 5, 5] += 1.0  # in-place change of the very tensor that was cached
        fresh = probe.capture(x, ["layer1"])["layer1"]
        assert probe.stats.forwards == 3
        assert not torch.equal(fresh, first["layer1"])
        probe.logits(x)
        probe.logits(x)
        assert probe.stats.full_forwards == 1


def test_first_output_at_a_new_size_comes_from_the_discovery_pass():
    model = chain()
    with Probe(model, channels_last=False) as probe:
        x = torch.randn(1, 3, 16, 16)
        expected = model(x)
        EXECUTED.clear()
        out = probe.logits(x)
        assert EXECUTED == ["a", "b", "c"]  # one pass: it described the layers and gave the output
        assert probe.stats.discoveries == 1
        assert probe.layers["3"].output_shape == (4, 16, 16)
        torch.testing.assert_close(out, expected)
        EXECUTED.clear()
        hits = probe.stats.cache_hits
        assert torch.equal(probe.logits(x), out) and EXECUTED == []  # and it was cached
        assert probe.stats.cache_hits == hits + 1
        # a batch of two at another size: discovery runs on one image of zeros, then the batch
        y = torch.randn(2, 3, 20, 20)
        expected = model(y)
        EXECUTED.clear()
        torch.testing.assert_close(probe.logits(y, cache=False), expected)
        assert EXECUTED == ["a", "b", "c", "a", "b", "c"] and probe.stats.discoveries == 2
        # capture wants layer outputs, which discovery does not keep: it still runs its prefix
        z = torch.randn(1, 3, 12, 12)
        expected = model[:4](z)
        EXECUTED.clear()
        torch.testing.assert_close(probe.capture(z, "3")["3"], expected)
        assert EXECUTED == ["a", "b", "c", "a"]  # discovery, then the prefix up to layer "3"
        # gradients are never served from the discovery pass
        w = torch.randn(1, 3, 14, 14, requires_grad=True)
        probe.logits(w, grad=True).sum().backward()
        assert w.grad is not None and w.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_models_kept_in_another_precision_are_inspected_in_float32(dtype):
    torch.manual_seed(0)
    model = chain().to(dtype)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(1, 3, 16, 16)
    same_weights = copy.deepcopy(model).float()
    expected_logits, expected_map = same_weights(x), same_weights[:4](x)
    with Probe(model) as probe:
        out = probe.logits(x)
        act = probe.capture(x, "3")["3"]
    assert out.dtype == act.dtype == torch.float32
    torch.testing.assert_close(out, expected_logits)
    torch.testing.assert_close(act, expected_map)
    assert {p.dtype for p in model.parameters()} == {dtype}  # the user's model keeps its precision
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


class TiedNet(nn.Module):
    """Two convolutions that share one weight, a batch norm (integer buffer) and a plain attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.b.weight = self.a.weight
        self.bn = nn.BatchNorm2d(4)
        self.scale = torch.tensor(2.0, dtype=torch.float64)  # not registered: deepcopy copies it as it is

    def forward(self, x):
        return self.bn(self.b(self.a(x))) * self.scale


@pytest.mark.parametrize("channels_last", [True, False])
def test_the_private_copy_is_converted_once_and_keeps_the_models_structure(channels_last):
    torch.manual_seed(0)
    model = TiedNet().double().eval()
    model.a.weight.grad = torch.ones_like(model.a.weight)
    model.bn.running_mean.normal_()
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        expected = model(x.double()).float()
    with Probe(model, channels_last=channels_last) as probe:
        copy_ = probe.model
        assert copy_.a.weight is copy_.b.weight  # weight tying survives the copy
        assert copy_.a.weight is not model.a.weight and copy_.a.weight.data_ptr() != model.a.weight.data_ptr()
        assert copy_.a.weight.grad is None and not copy_.a.weight.requires_grad
        assert copy_.a.weight.dtype == copy_.bn.running_mean.dtype == torch.float32
        assert copy_.bn.num_batches_tracked.dtype == torch.long
        assert copy_.a.weight.is_contiguous(memory_format=torch.channels_last) == channels_last
        torch.testing.assert_close(probe.logits(x), expected, rtol=1e-5, atol=1e-5)
        with torch.no_grad():
            copy_.a.weight.zero_()  # the copy is the probe's own
    assert model.a.weight.abs().sum() > 0 and model.a.weight.dtype == torch.float64
    assert torch.equal(model.a.weight.grad, torch.ones_like(model.a.weight))  # the user's gradient is untouched


def test_compiled_and_data_parallel_models_are_inspected_through_the_module_they_wrap():
    model = chain()
    x = torch.randn(1, 3, 16, 16)
    expected = model(x)
    for wrapped in (torch.compile(model), nn.DataParallel(model), nn.DataParallel(torch.compile(model))):
        with Probe(wrapped, device="cpu") as probe:
            assert list(probe.layers) == [name for name, _ in model.named_modules() if name]  # no "_orig_mod."
            torch.testing.assert_close(probe.logits(x), expected)
            assert probe.capture(x, "3")["3"].shape == (1, 4, 16, 16)
        assert getattr(wrapped, "_orig_mod", getattr(wrapped, "module", None)) is not None  # left as it was


def test_torchscript_models_are_refused_with_the_reason():
    from cnnwidgets.methods import kernel_weights

    model = chain()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch deprecates tracing; users still have such models
        traced = torch.jit.trace(model, torch.randn(1, 3, 16, 16))
    for use in (Probe, lambda m: kernel_weights(m, "0")):
        with pytest.raises(TypeError, match="TorchScript module .* neither hooked nor read .* Pass the original"):
            use(traced)
    assert kernel_weights(model, "0").weight.shape[:2] == (4, 3)


def test_a_batch_of_a_model_with_batch_statistics_gives_each_image_its_own_outputs():
    model = batch_statistics_net()
    x = torch.randn(3, 3, 8, 8)
    alone = [model(x[i:i + 1]) for i in range(3)]
    assert not torch.allclose(model(x), torch.cat(alone), atol=1e-4)  # the model itself mixes the batch
    with Probe(model) as probe:
        assert probe.batch_dependent == ("1",)
        torch.testing.assert_close(probe.logits(x, cache=False), torch.cat(alone))
        torch.testing.assert_close(probe.capture(x, "1")["1"], torch.cat([model[:2](x[i:i + 1]) for i in range(3)]))
        leaf = x.clone().requires_grad_(True)
        probe.logits(leaf, grad=True)[:, 0].sum().backward()
        single = x[1:2].clone().requires_grad_(True)
        model(single)[:, 0].sum().backward()
        torch.testing.assert_close(leaf.grad[1:2], single.grad)  # gradients stay per image too
    with Probe(chain()) as probe:
        assert probe.batch_dependent == ()


def test_cache_is_invalidated_when_the_users_weights_change():
    model = chain()
    x = torch.randn(1, 3, 16, 16)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    with Probe(model) as probe:
        before = probe.logits(x).clone()
        assert probe.version == 0 and not probe.user_model_changed()
        loss = model(x).sum()
        loss.backward()
        optimizer.step()
        assert probe.user_model_changed() and probe.version == 0  # noticed, not yet refreshed
        after = probe.logits(x)
        assert probe.stats.refreshes == 1 and probe.version == 1 and not probe.user_model_changed()
        with torch.no_grad():
            torch.testing.assert_close(after, model.eval()(x))
        assert not torch.allclose(before, after)
        model.load_state_dict(chain().state_dict())
        probe.logits(x)
        assert probe.stats.refreshes == 2


def test_replaced_modules_are_noticed_and_attribute_changes_need_a_refresh():
    torch.manual_seed(0)
    model = chain()
    x = torch.randn(1, 3, 16, 16)
    with Probe(model) as probe:
        probe.logits(x)
        model[1] = nn.Tanh()  # no parameters change: only the module's identity
        with torch.no_grad():
            torch.testing.assert_close(probe.logits(x), model(x))
        assert probe.layers["1"].type == "Tanh" and probe.version == 1
        model[0].stride = (2, 2)  # an attribute changed in place cannot be noticed ...
        assert not probe.user_model_changed()
        probe.refresh()  # ... and is taken with a refresh
        with torch.no_grad():
            torch.testing.assert_close(probe.logits(x), model(x))
        assert probe.capture(x, "0")["0"].shape[-1] == 8 and probe.version == 2


def test_pruned_models_and_non_persistent_buffers_are_copied_and_followed():
    from torch.nn.utils import prune

    class Normalised(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.zeros(1, 3, 1, 1), persistent=False)  # not in state_dict
            self.body = chain()

        def forward(self, x):
            return self.body(x - self.mean)

    torch.manual_seed(0)
    model = Normalised().eval()
    prune.l1_unstructured(model.body[0], "weight", amount=0.5)  # weight = weight_orig * mask, by a pre-hook
    x = torch.randn(1, 3, 16, 16)

    def expected():
        with torch.no_grad():
            return model(x)

    with Probe(model) as probe:  # a freshly pruned weight is part of an autograd graph
        torch.testing.assert_close(probe.logits(x), expected())
        with torch.no_grad():
            model.body[0].weight_orig.mul_(3.0)  # a fine-tuning step of the pruned model
        torch.testing.assert_close(probe.logits(x), expected())
        with torch.no_grad():
            model.mean.fill_(0.5)
        torch.testing.assert_close(probe.logits(x), expected())
        assert probe.stats.refreshes == 2


def test_unknown_layer_names_suggest_close_names():
    with Probe(torchvision.models.resnet18(weights=None)) as probe:
        with pytest.raises(KeyError, match="layer1.0.conv1"):
            probe.capture(torch.randn(1, 3, 64, 64), "layer1.0.cnv1")
        with pytest.raises(KeyError, match="unknown layer"):
            probe.check_layer("nothing_like_it")
        # named_modules() names the model itself '': said so, with the layers to pick from
        with pytest.raises(KeyError, match=r"layer '' is the whole model \(its output\), not one of its layers; "
                                           r"pick a layer: conv1, bn1"):
            probe.capture(torch.randn(1, 3, 64, 64), "")


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (torch.randn(3, 64, 64), ValueError, "unsqueeze"),
        (torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8), ValueError, "float"),
        ([[1.0]], TypeError, "torch.Tensor"),
        # was: torch's conv error and a generic question; now what to change, from the first convolution
        (torch.randn(1, 1, 64, 64), RuntimeError, r"has 1 channel, but the model's first convolution takes 3: give inputs \(N, 3, H, W\)"),
        (torch.empty(1, 3, 64, 64, device="meta"), ValueError, "meta device"),
    ],
)
def test_bad_inputs_raise_clear_errors(bad, error, message):
    with Probe(torchvision.models.resnet18(weights=None)) as probe:
        with pytest.raises(error, match=message):
            probe.capture(bad, "layer1")


def test_device_auto_is_cpu_here_and_switching_works():
    model = chain()
    x = torch.randn(1, 3, 16, 16)
    with Probe(model, device="auto") as probe:
        expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
        assert probe.device.type == expected
        probe.to("cpu")
        out = probe.capture(x, "3")["3"]
        assert out.device.type == "cpu"
    with pytest.raises(ValueError, match="not available|unknown device"):
        Probe(model, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            Probe(model, device="cuda")
    # torch takes "cpu:1" and runs on the one CPU anyway: refused, as a second GPU that is not there is
    with pytest.raises(ValueError, match=r"device 'cpu:1' does not exist: there is one cpu device, 'cpu' \(or 'cpu:0'\)"):
        Probe(model, device="cpu:1")
    with Probe(model, device="cpu:0") as probe:
        assert probe.device.type == "cpu"
    # a name in capitals is the same device (was: "unknown device 'CPU'", which torch refuses)
    with Probe(model, device=" CPU ") as probe:
        assert probe.device == torch.device("cpu")
    assert resolve_device("Auto") == resolve_device("auto")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_capture_matches_cpu():
    model = torchvision.models.resnet18(weights=None)
    x = torch.randn(1, 3, 64, 64)
    with Probe(model, device="cpu", channels_last=False) as probe:
        cpu = probe.capture(x, "layer2")["layer2"]
        probe.to("cuda")
        gpu = probe.capture(x, "layer2")["layer2"]
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-3)


def test_closed_probe_refuses_work():
    probe = Probe(chain())
    probe.close()
    probe.close()
    with pytest.raises(RuntimeError, match="closed"):
        probe.capture(torch.randn(1, 3, 8, 8), "0")


def test_layers_report_shapes_params_and_receptive_fields():
    model = torchvision.models.alexnet(weights=None)
    with Probe(model, input_size=(3, 224, 224)) as probe:
        layers = probe.layers
    names = list(layers)
    assert names.index("features.0") < names.index("features.3") < names.index("classifier.6")
    conv1 = layers["features.0"]
    assert conv1.type == "Conv2d" and conv1.output_shape == (64, 55, 55)
    assert conv1.num_params == 3 * 64 * 11 * 11 + 64
    assert (conv1.receptive_field, conv1.jump) == (11, 4)
    # conv 11/4 -> pool 3/2 -> conv 5/1 -> pool 3/2: r = 11 + 2*4 = 19, +4*8 = 51, +2*8 = 67
    assert (layers["features.2"].receptive_field, layers["features.2"].jump) == (19, 8)
    assert (layers["features.3"].receptive_field, layers["features.3"].jump) == (51, 8)
    assert (layers["features.5"].receptive_field, layers["features.5"].jump) == (67, 16)
    assert layers["classifier.6"].receptive_field is None
    assert layers["classifier.6"].output_shape == (1000,)
    assert layers["features"].block == "features" and not layers["features"].is_leaf


def test_receptive_field_start_matches_padding():
    model = nn.Sequential(nn.Conv2d(3, 2, 5, stride=2, padding=2), nn.MaxPool2d(2))
    with Probe(model, input_size=(3, 32, 32)) as probe:
        conv, pool = probe.layers["0"], probe.layers["1"]
    assert (conv.receptive_field, conv.jump, conv.start) == (5, 2, 0.0)
    assert (pool.receptive_field, pool.jump, pool.start) == (7, 4, 1.0)


def test_size_preserving_windowed_modules_do_not_pass_the_receptive_field_through():
    # a transposed convolution (or LP pooling) that keeps the map's size still mixes a neighbourhood
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ConvTranspose2d(4, 4, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(4, 4, 3, padding=1), nn.LPPool2d(2, 3, stride=1), nn.BatchNorm2d(4))
    with Probe(model, input_size=(3, 16, 16)) as probe:
        layers = probe.layers
    assert layers["0"].receptive_field == 3
    assert all(layers[name].receptive_field is None for name in ("1", "2", "3"))  # unknown, not too small
    wraps = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular"), nn.ReLU(),
                          nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"))
    with Probe(wraps, input_size=(3, 16, 16)) as probe:
        assert probe.layers["0"].receptive_field is None  # a border unit reads the opposite edge
    reflect = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), nn.Conv2d(4, 4, 3, padding=1))
    with Probe(reflect, input_size=(3, 16, 16)) as probe:
        assert probe.layers["1"].receptive_field == 5  # reflected pixels lie inside the window's box
    sizes = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Dropout(), nn.BatchNorm2d(4))
    with Probe(sizes, input_size=(3, 16, 16)) as probe:
        assert [probe.layers[n].receptive_field for n in ("0", "1", "2", "3")] == [3, 3, 3, 3]


ARCHITECTURES = ["resnet18", "vgg16", "alexnet", "mobilenet_v3_small", "densenet121", "efficientnet_b0"]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_torchvision_architectures(arch):
    model = getattr(torchvision.models, arch)(weights=None).eval()
    x = torch.randn(1, 3, 96, 96)
    snapshot = ModelSnapshot.take(model)
    with Probe(model) as probe:
        layers = probe.layers
        assert all(info.batch_first for info in layers.values())  # every output is one result per image
        convs = [n for n, info in layers.items() if info.is_conv and info.calls]
        middle = convs[len(convs) // 2]
        ref = reference_outputs(model, x, [middle])
        probe.reset_stats()
        got = probe.capture(x, middle)[middle]
        partial = probe.stats.modules_executed
        probe.logits(x)
        full = probe.stats.modules_executed - partial
    torch.testing.assert_close(got, ref[middle], rtol=1e-4, atol=1e-4)
    assert partial < full
    snapshot.assert_unchanged(model)


def test_probe_scope_reuses_a_probe_or_owns_a_temporary_one():
    from cnnwidgets.core import probe_scope

    model = chain()
    with Probe(model) as mine:
        with probe_scope(mine) as used:
            assert used is mine
        assert not mine.closed
    with probe_scope(model, channels_last=False) as temporary:
        assert not temporary.channels_last
    assert temporary.closed
    with pytest.raises(TypeError, match="nn.Module, a zoo bundle or a cnnwidgets.Probe"):
        with probe_scope("resnet"):
            pass


def test_probe_scope_refuses_options_it_cannot_apply_to_a_probe():
    from cnnwidgets.core import probe_scope
    from cnnwidgets.core.device import resolve_device

    model = chain()
    with Probe(model, device="cpu") as mine:
        # an existing probe keeps its settings: options that would change it are refused, not ignored
        for options in ({"device": "bogus"}, {"device": "cpu"}, {"channels_last": True}, {"input_size": (3, 8, 8)}):
            name = next(iter(options))
            with pytest.raises(ValueError, match=f"{name}=.* applies only when a model is passed; this Probe is made"):
                with probe_scope(mine, **options):
                    pass
        with probe_scope(mine, device=None, input_size=None) as used:  # None: nothing asked for
            assert used is mine
        with pytest.raises(TypeError, match=r"unknown Probe option\(s\) \['devices'\]; accepted: \['device'"):
            with probe_scope(mine, devices="cpu"):
                pass
        assert not mine.closed
    # for a model, None is the Probe's default and other values are checked by Probe itself
    with probe_scope(model, device=None, input_size=None) as temporary:
        assert temporary.device == resolve_device("auto")
    with pytest.raises(ValueError, match="unknown device 'bogus'"):
        with probe_scope(model, device="bogus"):
            pass


def test_sync_updates_the_private_copy_without_clearing_an_unchanged_cache():
    model = chain()
    x = torch.randn(1, 3, 16, 16)
    with Probe(model) as probe:
        probe.logits(x)
        probe.sync()
        probe.reset_stats()
        probe.logits(x)
        assert probe.stats.cache_hits == 1
        with torch.no_grad():
            model[0].weight.mul_(2)
        probe.sync()
        assert torch.equal(probe.model[0].weight, model[0].weight)


def test_synced_block_checks_the_users_model_once_per_thread():
    model = chain()
    x = torch.randn(1, 3, 16, 16)
    with Probe(model) as probe:
        probe.logits(x, cache=False)
        checks = []
        real = probe._user_fingerprint

        def counted():
            checks.append(threading.get_ident())
            return real()

        probe._user_fingerprint = counted
        with probe.synced():
            assert checks == []  # nothing checked until a call needs it
            first = probe.logits(x, cache=False)
            probe.capture(x, "3", cache=False)
            with torch.no_grad():
                model[0].weight.mul_(2)
            # taken as current inside the block: this thread still sees the weights of the check
            torch.testing.assert_close(probe.logits(x, cache=False), first)
            assert len(checks) == 1 and probe.version == 0
            # another thread checks as usual, and brings the copy up to date
            worker = threading.Thread(target=probe.capture, args=(x, "3"), kwargs={"cache": False})
            worker.start()
            worker.join()
            assert len(checks) == 2 and checks[1] != threading.get_ident() and probe.version == 1
        with torch.no_grad():
            model[0].weight.mul_(2)
        after = probe.logits(x, cache=False)  # out of the block: checked again
        assert len(checks) == 3 and probe.version == 2
        with torch.no_grad():
            torch.testing.assert_close(after, model(x))
        with probe.synced(), probe.synced():
            probe.logits(x, cache=False)
            with torch.no_grad():
                model[0].weight.mul_(2)
            probe.refresh()  # always copies afresh, also inside a block
            assert torch.equal(probe.model[0].weight, model[0].weight)
            assert len(checks) == 5  # the nested blocks' first call, and the refresh


def test_a_method_checks_the_users_model_once_not_once_per_layer_it_looks_up():
    """CAM and the dead-channel scan look up every layer; each lookup walked the user's whole
    model again (quadratic: 145 ms of lookups around efficientnet_b0's 22 ms forward). Methods
    that call back into the user's code (occlusion, activation maximisation) keep checking at
    every call: a callback may train the model."""
    from cnnwidgets.methods import cam, dead_channels

    layers = []
    for _ in range(12):
        layers += [nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()]
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    x = torch.randn(2, 3, 16, 16)
    with Probe(model) as probe:
        probe.logits(x)
        checks = []
        real = probe._user_fingerprint

        def counted():
            checks.append(1)
            return real()

        probe._user_fingerprint = counted
        for run in (lambda: cam(probe, x, 1), lambda: dead_channels(probe, x, progress=False)):
            checks.clear()
            run()
            assert len(checks) == 1
        with torch.no_grad():
            model[0].weight.mul_(2)
        # the next call sees the change
        torch.testing.assert_close(cam(probe, x, 1), cam(model, x, 1))


def test_uncached_capture_leaves_the_cache_alone():
    model = chain()
    x, other = torch.randn(1, 3, 16, 16), torch.randn(4, 3, 16, 16)
    with Probe(model, cache_size=1) as probe:
        kept = probe.capture(x, "3")["3"]
        once = probe.capture(other, "3", cache=False)["3"]
        probe.reset_stats()
        again = probe.capture(x, "3")["3"]
        assert probe.stats.forwards == 0 and torch.equal(again, kept)
        ref = reference_outputs(model, other, ["3"])["3"]
        logits_once = probe.logits(other, cache=False)
        probe.reset_stats()
        assert torch.equal(probe.capture(x, "3")["3"], kept) and probe.stats.forwards == 0
        with torch.no_grad():
            torch.testing.assert_close(logits_once, model(other), rtol=1e-5, atol=1e-5)
        probe.logits(other, cache=False)
        assert probe.stats.forwards == 1 and probe.stats.cache_misses == 0
    torch.testing.assert_close(once, ref, rtol=1e-5, atol=1e-5)


def test_capture_with_logits_runs_the_model_once_and_reuses_the_cache():
    model = chain()
    x, other = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    with Probe(model, channels_last=False, input_size=(3, 16, 16)) as probe:
        probe.layers
        ref = reference_outputs(model, x, ["0", "3"])
        with torch.no_grad():
            want = model(x)
        probe.reset_stats()
        EXECUTED.clear()
        acts, logits = probe.capture_with_logits(x, ["3", "0"])
        assert EXECUTED == ["a", "b", "c"]  # one pass gave both layers and the output
        assert probe.stats.forwards == 1 and probe.stats.full_forwards == 1
        assert list(acts) == ["3", "0"]
        for name in ("0", "3"):
            torch.testing.assert_close(acts[name], ref[name], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(logits, want, rtol=1e-5, atol=1e-5)
        # both are cached: capture and logits of the same input run nothing ...
        probe.reset_stats()
        assert torch.equal(probe.capture(x, "3")["3"], acts["3"]) and torch.equal(probe.logits(x), logits)
        assert probe.stats.forwards == 0
        # ... the logits handed out are the caller's own (changing them leaves the cache alone)
        logits.add_(1)
        _, again = probe.capture_with_logits(x, "0")
        assert probe.stats.forwards == 0 and torch.allclose(again, want, atol=1e-5)
        # with the output cached and a layer missing, only the prefix runs
        probe.logits(other)
        probe.reset_stats()
        EXECUTED.clear()
        acts, _ = probe.capture_with_logits(other, "3")
        assert EXECUTED == ["a"]  # stopped right after layer 3, before "b"
        assert probe.stats.forwards == 1 and probe.stats.full_forwards == 0
        assert probe.stats.cache_hits == 1 and probe.stats.cache_misses == 1
        # uncached: one full pass, and the cache is neither consulted nor filled
        fresh = torch.randn(2, 3, 16, 16)
        probe.reset_stats()
        acts, logits = probe.capture_with_logits(fresh, ["0"], cache=False, channels_first=True)
        assert probe.stats.full_forwards == 1 and probe.stats.cache_hits == probe.stats.cache_misses == 0
        probe.capture_with_logits(fresh, ["0"], cache=False)
        assert probe.stats.full_forwards == 2
        torch.testing.assert_close(acts["0"], reference_outputs(model, fresh, ["0"])["0"], rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match="at least one layer"):
            probe.capture_with_logits(x, [])
        with pytest.raises(KeyError):
            probe.capture_with_logits(x, "nope")


def test_capture_with_logits_names_an_output_that_is_not_a_tensor():
    class PairOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3)

        def forward(self, x):
            y = self.conv(x)
            return y, y.mean()

    with Probe(PairOut(), input_size=(3, 8, 8)) as probe:
        with pytest.raises(TypeError, match="one tensor"):
            probe.capture_with_logits(torch.randn(1, 3, 8, 8), "conv", cache=False)
        assert probe.capture(torch.randn(1, 3, 8, 8), "conv")["conv"].shape == (1, 2, 6, 6)


def test_a_zoo_bundle_is_accepted_with_its_own_input_size():
    from cnnwidgets import zoo
    from cnnwidgets.methods import occlusion_map

    bundle = zoo.load_default()
    with Probe(bundle, device="cpu") as probe:
        assert probe.input_size == tuple(bundle.input_size)  # 64 x 64, not the 224 default
        assert probe.layers["features.conv1"].output_shape[1:] == (64, 64)
    with Probe(bundle, device="cpu", input_size=(3, 32, 32)) as probe:
        assert probe.input_size == (3, 32, 32)  # an explicit size wins
    x = bundle.preprocess(zoo.sample_image("star")).unsqueeze(0)
    a = occlusion_map(bundle, x, 0, window=16, stride=16, progress=False, device="cpu")
    b = occlusion_map(bundle.model, x, 0, window=16, stride=16, progress=False, device="cpu")
    assert torch.equal(torch.from_numpy(a.grid), torch.from_numpy(b.grid))
    with pytest.raises(TypeError, match="bundle with a .model"):
        Probe(object())


def test_fit_input_size_describes_the_first_size_the_model_runs_on():
    from cnnwidgets.core.layers import input_channels

    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
    assert input_channels(model) == 1 and input_channels(nn.Linear(3, 3)) is None
    before = ModelSnapshot.take(model)
    with Probe(model) as probe:
        size = probe.fit_input_size([(1, 224, 224), (1, 224, 224), (3, 28, 28), (1, 28, 28), (1, 32, 32)])
        assert size == (1, 28, 28) and probe.input_size == (1, 28, 28)
        assert probe.layers["3"].output_shape == (10,)
        assert probe.stats.discoveries == 1  # only the size that worked was described
        with pytest.raises(RuntimeError, match=r"none of the input sizes tried: RuntimeError: mat1.*\(at \(1, 32, 32\)\)\..*input_size="):
            probe.fit_input_size([(1, 32, 32), (1, 32, 32)])
        assert probe.input_size == (1, 28, 28)  # a failed search keeps the last good description
        with pytest.raises(ValueError, match="at least one candidate"):
            probe.fit_input_size([])
    assert before.differences(model) == []


@pytest.mark.parametrize(("channels", "side"), [(1, 28), (3, 32), (3, 224)])
def test_without_an_input_size_the_probe_finds_the_one_the_model_runs_on(channels, side):
    from cnnwidgets.methods import model_summary

    model = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(4 * (side // 2) ** 2, 10))
    with Probe(model) as probe:
        assert probe.input_size[0] == channels  # a first guess, confirmed by describing the layers
        assert probe.layers["4"].output_shape == (10,)
        assert probe.input_size == (channels, side, side)
    assert model_summary(model).input_size == (channels, side, side)
    with Probe(model, input_size=(channels, 64, 64)) as probe:
        with pytest.raises(RuntimeError, match=rf"input of size \({channels}, 64, 64\)"):
            probe.layers  # a size given is used as is, never replaced by a guess


class ChannelsLastBlock(nn.Module):
    """ConvNeXt-style: a depthwise conv, then LayerNorm and Linear per position in (H, W, C) layout."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.dw = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.mlp = nn.Linear(channels, 2 * channels)
        self.back = nn.Linear(2 * channels, channels)

    def forward(self, x):
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.back(torch.relu(self.mlp(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


def channels_last_net(channels: int = 8, fixed: int | None = None) -> nn.Sequential:
    head = [nn.Flatten(), nn.Linear(channels * fixed * fixed, 3)] if fixed else [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 3)]
    return nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), ChannelsLastBlock(channels), *head)


@pytest.mark.parametrize("size", [(3, 20, 20), (3, 24, 40), (3, 8, 8)])
def test_channels_last_outputs_are_recognised(size):
    from cnnwidgets.methods import grad_cam, model_summary

    with Probe(channels_last_net(), input_size=size) as probe:
        layers = probe.layers
        h, w = size[1:]
        assert layers["1.dw"].layout == "CHW" and layers["1.dw"].is_spatial
        for name, width in (("1.norm", 8), ("1.mlp", 16), ("1.back", 8)):  # (8, 8, 8) at size 8 is settled by shapes
            assert layers[name].output_shape == (h, w, width)
            assert layers[name].layout == "HWC" and not layers[name].is_spatial, name
        assert layers["1"].layout == "CHW" and layers["1"].is_spatial  # the block's output is (C, H, W) again
        assert grad_cam(probe, torch.rand(1, *size), 0, layer="1.mlp").shape == (1, h, w)  # read channels first
    assert "(HWC)" in model_summary(channels_last_net(), input_size=size).to_text()


@pytest.mark.filterwarnings("ignore::cnnwidgets.methods.NoReluWarning")  # a GELU model: the rule has no ReLU
def test_channel_readers_see_channels_last_layers_channels_first():
    from cnnwidgets import ChannelActivation
    from cnnwidgets.core.targets import target_score
    from cnnwidgets.methods import dead_channels, occlusion_map, project_channel, scan_topk, strongest_unit

    torch.manual_seed(0)
    model = channels_last_net().eval()
    x = torch.rand(2, 3, 12, 20)
    with Probe(model, input_size=(3, 12, 20)) as probe:
        info = probe.layers["1.mlp"]
        assert info.output_shape == (12, 20, 16) and info.map_shape == (16, 12, 20)
        assert probe.layers["1.dw"].map_shape == (8, 12, 20) and probe.layers["3"].map_shape is None
        raw = probe.capture(x, ["1.mlp"])["1.mlp"]  # what the layer outputs: (N, H, W, C)
        maps = probe.channels_first("1.mlp", raw)
        assert maps.shape == (2, 16, 12, 20) and maps.data_ptr() == raw.data_ptr()  # a view
        torch.testing.assert_close(maps[:, 5], raw[..., 5])
        dw = probe.capture(x, ["1.dw"], contiguous=False)["1.dw"]  # the cached map, as computed
        assert probe.channels_first("1.dw", dw) is dw
        taken = probe.capture(x, ["1.mlp", "1.dw"], channels_first=True)  # the same, in one call
        assert taken["1.mlp"].shape == (2, 16, 12, 20) and taken["1.mlp"].data_ptr() == raw.data_ptr()
        assert taken["1.dw"] is dw
        # channel 5 is the layer's 6th feature, not row 5 of the map
        scores = target_score(probe, x, ChannelActivation("1.mlp", 5, reduce="max"))
        torch.testing.assert_close(scores, raw[..., 5].amax(dim=(1, 2)))
        with pytest.raises(IndexError, match="has 16 channels"):
            target_score(probe, x, ChannelActivation("1.mlp", 16))
        flat = raw[..., 5].reshape(2, -1).argmax(dim=1)
        torch.testing.assert_close(strongest_unit(probe, x, "1.mlp", 5), torch.stack([flat // 20, flat % 20], dim=1))
        # no ReLU lies between the input and 1.mlp: the deconvnet projection is a plain gradient
        c = int(raw[0].amax(dim=(0, 1)).argmax())  # a channel with positive units
        projection = project_channel(probe, x[:1], "1.mlp", c, unit="all")
        leaf = x[:1].clone().requires_grad_(True)
        a = model[1].mlp(model[1].norm(model[1].dw(model[0](leaf)).permute(0, 2, 3, 1)))[..., c]
        (expected,) = torch.autograd.grad((a.detach().clamp(min=0) * a).sum(), leaf)
        assert expected.abs().sum() > 0
        torch.testing.assert_close(projection, expected, rtol=1e-4, atol=1e-6)
        dead = dead_channels(probe, x, "1.mlp", progress=False)["1.mlp"]
        assert dead.num_channels == 16
        torch.testing.assert_close(torch.from_numpy(dead.max_activation), raw.amax(dim=(0, 1, 2)))
        assert dead.dead == torch.nonzero(raw.amax(dim=(0, 1, 2)) <= 0).flatten().tolist()
        result = occlusion_map(probe, x[:1], ChannelActivation("1.mlp", 5, reduce="sum"), window=4, stride=4,
                               progress=False)
        assert result.unoccluded == pytest.approx(float(raw[0, ..., 5].sum()), rel=1e-5)
        top = scan_topk(probe, x, "1.mlp", k=1, progress=False)
        assert top.num_channels("1.mlp") == 16
        best = top.entries("1.mlp", 5)[0]
        assert best.value == pytest.approx(float(raw[..., 5].max()), rel=1e-5)
        assert float(raw[best.image_index, best.row, best.col, 5]) == pytest.approx(best.value, rel=1e-5)


def test_a_model_of_one_size_keeps_the_layouts_the_shapes_show():
    # the second, larger pass fails at the head; the layers before it still tell their layout
    with Probe(channels_last_net(fixed=12), input_size=(3, 12, 12)) as probe:
        layers = probe.layers
        assert layers["1.mlp"].layout == "HWC" and layers["1.norm"].layout == "HWC"
        assert layers["0"].is_spatial and layers["1"].is_spatial
        assert probe.logits(torch.rand(1, 3, 12, 12)).shape == (1, 3)


def test_convnext_blocks_inner_layers_are_channels_last():
    model = torchvision.models.convnext_tiny(weights=None).eval()
    with Probe(model, input_size=(3, 64, 64)) as probe:
        layers = probe.layers
        assert layers["features.1.0.block.0"].is_spatial  # depthwise conv, (C, H, W)
        assert layers["features.1.0.block.3"].output_shape == (16, 16, 384)
        assert layers["features.1.0.block.3"].layout == "HWC" and not layers["features.1.0.block.3"].is_spatial
        assert layers["features.1.0"].is_spatial and layers["features.1.0"].output_shape == (96, 16, 16)


class Doubling(nn.Module):
    """Doubles its input in place before a convolution (a model that writes into its input)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        x.mul_(2)
        return self.conv(x).mean(dim=(2, 3))


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_users_input_is_never_written_and_captures_equal_one_forward(channels_last):
    torch.manual_seed(0)
    model = Doubling().eval()
    x = torch.randn(1, 3, 8, 8)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    original = x.clone()
    with torch.no_grad():
        expected = model(original.clone())
    with Probe(model, channels_last=channels_last) as probe:
        torch.testing.assert_close(probe.logits(x), expected)  # first output: from the discovery pass
        torch.testing.assert_close(probe.capture(x, "conv")["conv"].mean(dim=(2, 3)), expected)
        assert torch.equal(x, original)
        x.add_(1.0)  # the user changes the tensor: the cache must not answer for the old values
        with torch.no_grad():
            torch.testing.assert_close(probe.logits(x), model(x.clone()))
        scores = probe.logits(x)
        scores.zero_()  # the caller's own tensor: the cached output stays
        assert probe.logits(x).abs().sum() > 0 and probe.stats.cache_hits >= 2


def test_a_model_writing_its_input_runs_under_the_callers_inference_mode():
    torch.manual_seed(0)
    model = Doubling().eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = model(x.clone())
    with Probe(model) as probe, torch.inference_mode():
        probe.logits(x[:1])  # describes the layers
        torch.testing.assert_close(probe.logits(x, cache=False), expected)
        torch.testing.assert_close(probe.capture(x, "conv")["conv"].mean(dim=(2, 3)), expected)


def test_memory_format_changes_leave_weights_of_other_ranks_alone():
    from cnnwidgets.core.probe import set_memory_format

    model = nn.Sequential(nn.Conv3d(1, 2, 3), nn.Flatten(1, 2), nn.Conv2d(2 * 4, 4, 3))
    with pytest.raises(RuntimeError, match="rank 4"):
        copy.deepcopy(model).to(memory_format=torch.channels_last)  # why the probe does not use this
    set_memory_format(model, True)
    assert model[2].weight.is_contiguous(memory_format=torch.channels_last)
    assert model[0].weight.dim() == 5 and model[0].weight.is_contiguous()
    set_memory_format(model, False)
    assert model[2].weight.is_contiguous()


def test_the_callers_inference_mode_autocast_and_default_dtype_do_not_reach_the_copy():
    model = chain()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        expected = model(x)
    with torch.inference_mode():
        probe = Probe(model)  # made inside inference mode ...
        probe.logits(x)
    try:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        model(x).sum().backward()
        optimizer.step()  # ... and refreshed in place outside it
        with torch.no_grad():
            expected = model(x)
        torch.testing.assert_close(probe.logits(x), expected)
        w = x.clone().requires_grad_(True)
        probe.logits(w, grad=True).sum().backward()  # usable for gradients
        assert w.grad is not None
        probe.clear_cache()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            inside = probe.capture(x, "3")["3"]
        assert inside.dtype == torch.float32 and probe.capture(x, "3")["3"].dtype == torch.float32
    finally:
        probe.close()
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with Probe(chain()) as probe:
            assert "3" in probe.layers  # described on a float32 blank image
    finally:
        torch.set_default_dtype(default)


def test_sizes_a_model_asserts_against_are_skipped_and_a_changed_precision_is_noticed():
    class SizeChecked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            assert x.shape[-1] == 32, f"expected 32 pixels, got {x.shape[-1]}"
            return self.conv(x).mean(dim=(2, 3))

    with Probe(SizeChecked()) as probe:
        assert probe.layers and probe.input_size == (3, 32, 32)
    model = chain()
    x = torch.randn(1, 3, 16, 16)
    with Probe(model) as probe:
        probe.logits(x)
        model.half()  # swaps each parameter's storage without a version bump
        assert probe.user_model_changed()
        with torch.no_grad():
            torch.testing.assert_close(probe.logits(x), model.float()(x), rtol=1e-3, atol=1e-3)


class _ViewFlattenNet(nn.Module):
    """The PyTorch tutorials' CIFAR-10 network: ``x.view`` needs contiguous activations."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.pool, self.conv2 = nn.Conv2d(3, 6, 5), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5)
        self.fc = nn.Linear(16 * 5 * 5, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        return self.fc(x.view(-1, 16 * 5 * 5))


def test_models_that_need_contiguous_activations_run_in_the_standard_layout():
    torch.manual_seed(0)
    model = _ViewFlattenNet().eval()
    x = torch.rand(2, 3, 32, 32)
    with Probe(model, device="cpu") as probe:
        assert probe.channels_last  # "auto" on CPU: until the model shows it cannot
        out = probe.capture(x, ["conv2"])["conv2"]
        assert not probe.channels_last
        with torch.no_grad():
            assert torch.allclose(probe.logits(x), model(x), atol=1e-6)
            assert torch.allclose(out, model.conv2(model.pool(F.relu(model.conv1(x)))), atol=1e-6)
        probe.refresh()  # a fresh copy keeps the standard layout
        assert not probe.channels_last
        with torch.no_grad():
            assert torch.allclose(probe.logits(x + 1), model(x + 1), atol=1e-6)
    with Probe(model, device="cpu", channels_last=True) as probe:
        with pytest.raises(RuntimeError, match="channels_last=False"):
            probe.capture(x, ["conv2"])


class _GrayViewNet(nn.Module):
    """The PyTorch MNIST example: one input channel, flattened with ``x.view``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 10, 5), nn.Conv2d(10, 20, 5)
        self.fc1, self.fc2 = nn.Linear(320, 50), nn.Linear(50, 10)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
        return self.fc2(F.relu(self.fc1(x.view(-1, 320))))


def test_a_grayscale_model_that_needs_contiguous_activations_falls_back_too():
    # With one input channel a channels-last weight also counts as contiguous, so asking for
    # the standard layout must rewrite its strides, or every activation stays channels-last.
    torch.manual_seed(0)
    model = _GrayViewNet().eval()
    x = torch.rand(1, 1, 28, 28)
    with Probe(model, device="cpu") as probe:
        out = probe.capture(x, ["conv2"])["conv2"]
        assert not probe.channels_last
        with torch.no_grad():
            torch.testing.assert_close(probe.logits(x), model(x))
            torch.testing.assert_close(probe.logits(x.repeat(3, 1, 1, 1)), model(x.repeat(3, 1, 1, 1)))
            torch.testing.assert_close(out, model.conv2(F.max_pool2d(F.relu(model.conv1(x)), 2).relu()))


def test_lazy_modules_must_have_run_once():
    model = nn.Sequential(nn.LazyConv2d(4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(ValueError, match=r"lazy modules .* not initialised yet \(0, 3\); run one forward pass"):
        Probe(model)
    model(torch.zeros(1, 3, 16, 16))
    with Probe(model) as probe:
        assert probe.capture(torch.rand(1, 3, 16, 16), ["0"])["0"].shape == (1, 4, 14, 14)


class _ViewsBatchesOnly(nn.Module):
    """Flattens with ``view`` only for batches of several images: the discovery pass (one image)
    runs channels-last, a batch later needs the standard layout."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 14 * 14, 3)

    def forward(self, x):
        y = F.relu(self.conv(x))
        return self.fc(y.view(x.shape[0], -1) if x.shape[0] > 1 else y.reshape(1, -1))


def test_a_forward_that_needs_the_standard_layout_later_switches_to_it():
    torch.manual_seed(0)
    model = _ViewsBatchesOnly().eval()
    with Probe(model, device="cpu") as probe:
        probe.capture(torch.rand(1, 3, 16, 16), ["conv"])
        assert probe.channels_last
        x = torch.rand(3, 3, 16, 16)
        with torch.no_grad():
            assert torch.allclose(probe.logits(x), model(x), atol=1e-6)
        assert not probe.channels_last


def test_an_explicit_channels_last_that_fails_is_not_reported_as_a_size_problem():
    with pytest.raises(RuntimeError, match="channels_last=False") as info:
        Probe(_ViewFlattenNet().eval(), device="cpu", channels_last=True).layers
    assert "input sizes tried" not in str(info.value)


def test_a_probe_is_not_wrapped_in_another_probe():
    from cnnwidgets.core.probe import probe_scope, unwrap_model
    from cnnwidgets.methods import dead_channels

    model = chain().eval()
    x = torch.rand(2, 3, 16, 16)
    with Probe(model) as probe:
        with pytest.raises(TypeError, match="already a Probe; pass the model, or use the probe directly"):
            Probe(probe)
        with pytest.raises(TypeError, match="already a Probe"):
            unwrap_model(probe)
        with probe_scope(probe) as used:  # functions that take a model or a probe use it as it is
            assert used is probe
        before = dead_channels(probe, x, "0", progress=False)["0"].max_activation
        with torch.no_grad():
            model[0].bias += 5.0  # the probe follows the user's model, not a copy of its copy
        after = dead_channels(probe, x, "0", progress=False)["0"].max_activation
        np.testing.assert_allclose(after, before + 5.0, rtol=1e-5)


def test_batches_with_nan_or_inf_are_refused_saying_how_many_values_and_which_images():
    from cnnwidgets.core.probe import check_batch

    x = torch.rand(4, 3, 8, 8)
    assert check_batch(x) is x
    x[1, 0, 2, 2] = float("nan")
    x[3, 2, 0, 0] = float("inf")
    x[3, 1, 5, 5] = -float("inf")
    with pytest.raises(ValueError, match=r"3 values that are not finite \(NaN or inf\), in images 1, 3 of 4"):
        check_batch(x)
    one = torch.zeros(2, 3, 8, 8)
    one[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="1 value that is not finite .* in image 0 of 2"):
        check_batch(one)
    with Probe(chain().eval(), input_size=(3, 8, 8)) as probe:
        with pytest.raises(ValueError, match="not finite"):
            probe.capture(x, ["0"])
        with pytest.raises(ValueError, match="not finite"):
            probe.logits(x)
        with pytest.raises(ValueError, match="not finite"):
            probe.capture(x.requires_grad_(True), ["0"], grad=True)
        assert probe.stats.forwards == 0


def test_layers_given_as_modules_or_indices_are_refused_with_the_shared_message():
    from cnnwidgets.core.probe import layer_names

    model = chain().eval()
    assert layer_names("0") == ["0"] and layer_names(("0", "3")) == ["0", "3"] and layer_names([]) == []
    with Probe(model, input_size=(3, 8, 8)) as probe:
        x = torch.rand(1, 3, 8, 8)
        with pytest.raises(TypeError, match="layer names are strings, got Conv2d; name the layer instead"):
            probe.capture(x, model[0])
        with pytest.raises(TypeError, match="layer names are strings, got Sequential"):
            probe.capture(x, model)
        with pytest.raises(TypeError, match="layer names are strings, got int"):
            probe.capture(x, 3)
        with pytest.raises(TypeError, match="layer names are strings, got int"):
            probe.capture(x, ["0", 3])


def test_capture_returns_the_standard_layout_unless_a_fast_path_asks_for_the_computed_one():
    model = chain().eval()
    x = torch.rand(2, 3, 16, 16)
    with Probe(model, device="cpu", channels_last=True, input_size=(3, 16, 16)) as probe:
        acts = probe.capture(x, ["0", "2"])
        for act in acts.values():
            assert act.is_contiguous()
            assert act.view(2, -1).shape == (2, 4 * 16 * 16)  # as with any tensor
        torch.testing.assert_close(acts["0"], model[0](x))
        # fast paths (explorer frames, scans) read the cached map as computed: no copy per call
        cached = probe.capture(x, ["0"], contiguous=False)["0"]
        assert cached.is_contiguous(memory_format=torch.channels_last) and not cached.is_contiguous()
        assert probe.capture(x, ["0"], contiguous=False)["0"] is cached
        assert probe.capture(x, ["0"], channels_first=True)["0"] is cached  # channels_first returns views
        assert probe.capture(x, ["0"], channels_first=True, contiguous=True)["0"].is_contiguous()
        assert probe.capture(x, ["0"], cache=False)["0"].is_contiguous()
        leaf = x.clone().requires_grad_(True)
        assert probe.capture(leaf, ["0"], grad=True)["0"].is_contiguous()
    fully_convolutional = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    with Probe(fully_convolutional, device="cpu", channels_last=True) as probe:
        for cache in (True, False):
            out = probe.logits(x, cache=cache)
            assert out.is_contiguous() and out.view(2, -1).shape == (2, 2 * 16 * 16)
        assert probe.logits(torch.rand(1, 3, 12, 12), cache=False).is_contiguous()  # the discovery pass's output
        assert probe.logits(x, grad=True).is_contiguous()


def test_a_head_registered_before_the_stem_is_described_at_an_rgb_size():
    from cnnwidgets.core.probe import default_input_sizes

    model = HeadFirst().eval()
    sizes = list(default_input_sizes(model))
    assert sizes[0] == (16, 28, 28) and (3, 224, 224) in sizes and (1, 28, 28) in sizes
    with Probe(model) as probe:
        assert probe.layers["stem"].output_shape == (16, 224, 224)
        assert probe.input_size == (3, 224, 224)



class Volume(nn.Module):
    """A 1-channel Conv3d model: given (1, 1, 28, 28) it reads one unbatched volume (C=1, D=1, 28, 28)."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv3d(1, 8, 3, padding=1)
        self.r = nn.ReLU()
        self.p = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.p(self.r(self.c(x))).reshape(-1, 8))


def test_layers_whose_first_dimension_is_not_the_batch_are_recorded_and_refused():
    from cnnwidgets.core.probe import NotABatchError
    from cnnwidgets.methods import model_summary

    x = torch.randn(1, 1, 28, 28)
    with Probe(Volume()) as probe:
        layers = probe.layers
        for name in ("c", "r", "p"):
            info = layers[name]
            assert not info.batch_first and info.map_shape is None and not info.is_spatial, name
        assert layers["c"].output_shape == (8, 1, 28, 28)  # the whole output: none of it is the batch
        assert "first dimension is not the batch" in layers["c"].shape_text
        assert layers["fc"].batch_first and layers["fc"].output_shape == (3,)
        with pytest.raises(NotABatchError, match=(
            r"layer 'r' returns a tensor whose first dimension \(8\) is not the batch's \(1\): .*one result per "
            r"image.*video/volume model \(its first convolution is Conv3d\)"
        )) as info:
            probe.capture(x, ["r"])
        assert isinstance(info.value, ValueError)
        assert probe.capture(x, ["fc"])["fc"].shape == (1, 3)
        assert probe.logits(x).shape == (1, 3)
    assert "8 x 1 x 28 x 28 (not batched)" in model_summary(Volume()).to_text()


def test_a_layer_that_drops_the_batch_on_larger_batches_is_refused_when_captured():
    from cnnwidgets.core.probe import NotABatchError

    class First(nn.Module):
        def forward(self, x):
            return x[:1]  # one image whatever the batch

    model = nn.Sequential(nn.Conv2d(3, 4, 3), First(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    with Probe(model, input_size=(3, 8, 8)) as probe:
        assert probe.layers["1"].batch_first  # a pass on one image cannot tell
        assert probe.capture(torch.randn(1, 3, 8, 8), ["1"])["1"].shape == (1, 4, 6, 6)
        with pytest.raises(NotABatchError, match=r"layer '1' returns a tensor whose first dimension \(1\) is not the batch's \(3\)"):
            probe.capture(torch.randn(3, 3, 8, 8), ["1"])


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x, y):
        return self.fc((self.c(x) + self.c(y)).mean((2, 3)))


class Video(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv3d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.stem(x).mean((2, 3, 4)))


@pytest.mark.parametrize(("model", "message"), [
    (TwoInputs(), r"TwoInputs.forward takes 2 inputs \(x, y\); cnnwidgets calls model\(x\) with one input: wrap the "
                  r"model so that it takes one tensor.*missing 1 required positional argument: 'y'"),
    (Video(), r"this looks like a video/volume model \(its first convolution is Conv3d\); cnnwidgets takes image "
              r"models called as model\(x\) with x of shape \(N, C, H, W\)"),
])
def test_models_that_take_another_kind_of_input_are_named_as_such(model, message):
    from cnnwidgets.core.probe import InputKindError

    with Probe(model) as probe:
        with pytest.raises(InputKindError, match=message) as info:
            probe.layers
        assert "none of the input sizes" not in str(info.value)  # no size can help: one try, not fourteen
        assert isinstance(info.value, RuntimeError)
    with Probe(model, input_size=(3, 32, 32)) as probe:
        with pytest.raises(InputKindError, match=message):
            probe.layers


def test_input_size_given_as_a_tensor_is_named_by_its_shape():
    from cnnwidgets.core.probe import check_input_size

    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(ValueError, match=r"got a tensor of shape \(1, 3, 16, 16\); for the size of a batch x pass "
                                         r"tuple\(x.shape\[1:\]\)") as info:
        check_input_size(x)
    assert "tensor(" not in str(info.value)
    with pytest.raises(ValueError, match=r"got a numpy array of shape \(3,\)"):
        check_input_size(np.zeros(3))
    assert check_input_size(np.array([3, 16, 16])) == (3, 16, 16)


def test_a_size_nothing_fits_reports_the_failure_at_the_likeliest_size():
    model = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 100 * 100, 2)).eval()
    with Probe(model) as probe, pytest.raises(RuntimeError) as info:
        probe.layers
    message = str(info.value)
    # the model's own error first: the size problem at RGB 224 x 224, not a gray candidate's channel mismatch
    assert message.startswith("the model ran on none of the input sizes tried: RuntimeError: ")
    assert "mat1 and mat2" in message and "(at (3, 224, 224);" in message and "(1, 28, 28)" in message


class _AttentionFirst(nn.Module):
    """A CIFAR-sized image model whose channel attention (a Conv1d) is registered before its stem."""

    def __init__(self) -> None:
        super().__init__()
        self.attention = nn.Conv1d(1, 1, 3, padding=1)
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 32 * 32, 10)

    def forward(self, x):
        y = torch.relu(self.stem(x))
        weights = torch.sigmoid(self.attention(y.mean(dim=(2, 3))[:, None]))[:, 0]
        return self.fc((y * weights[:, :, None, None]).flatten(1))


def test_an_image_model_registering_a_1d_convolution_first_is_still_sized():
    with Probe(_AttentionFirst().eval()) as probe:
        assert probe.layers["stem"].output_shape == (8, 32, 32) and probe.input_size == (3, 32, 32)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the resident memory from /proc (Linux)")
def test_closing_a_probe_gives_the_memory_of_its_copy_back_to_the_system():
    def resident_mib() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    # many small weight tensors (64 KiB each, about 190 MiB): the heap, not mmap, holds their copies
    model = nn.Sequential(*[nn.Conv2d(64, 64, 2, bias=False) for _ in range(3000)]).eval()
    release_memory()  # free heap pages left by earlier tests go first: the copy must take new ones
    before = resident_mib()
    probe = Probe(model)
    grown = resident_mib() - before
    assert grown > 100  # the private copy
    probe.close()
    assert resident_mib() - before < grown / 4


def test_a_model_that_says_its_trained_size_is_described_at_it():
    from cnnwidgets.core.probe import default_input_sizes, trained_input_size

    inception = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False).eval()
    assert trained_input_size(inception) == (3, 299, 299)
    with Probe(inception) as probe:
        assert probe.input_size == (3, 299, 299)  # not 224, which it also runs on

    class Cfg(nn.Sequential):  # a timm-style model with its pretrained configuration
        pretrained_cfg = {"input_size": (3, 96, 96)}

    model = Cfg(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    assert next(default_input_sizes(model)) == (3, 96, 96)
    with Probe(model) as probe:
        assert probe.input_size == (3, 96, 96)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    assert trained_input_size(plain) is None
    with Probe(plain) as probe:
        assert probe.layers and probe.input_size == (3, 224, 224)


def test_the_probes_size_and_cache_arguments_are_checked_when_it_is_made():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    for kw, error, message in (
        ({"input_size": ("a", "b", "c")}, ValueError, r"input_size must be \(C, H, W\).*got \('a', 'b', 'c'\)"),
        ({"input_size": 64}, ValueError, r"input_size must be \(C, H, W\)"),
        ({"input_size": (1, 3, 64, 64)}, ValueError, r"input_size must be \(C, H, W\)"),
        ({"input_size": (0, 64, 64)}, ValueError, r"input_size must be \(C, H, W\)"),
        ({"cache_size": "8"}, TypeError, "cache_size must be an int >= 1, got str"),
        ({"cache_size": 2.5}, TypeError, "cache_size must be an int >= 1"),
        ({"cache_size": 0}, ValueError, "cache_size must be an int >= 1, got 0"),
        ({"cache_bytes": -1}, ValueError, "cache_bytes must be an int >= 0, got -1"),
        ({"cache_bytes": 1e6}, TypeError, "cache_bytes must be an int >= 0"),
    ):
        with pytest.raises(error, match=message):
            Probe(model, **kw)
    with Probe(model, input_size=[np.int64(3), 8, 8], cache_size=np.int64(2), cache_bytes=0) as probe:
        assert probe.input_size == (3, 8, 8)
    with Probe(model, input_size=(3, 8, 8), cache_size=torch.tensor(2), cache_bytes=torch.tensor(0)) as probe:
        assert probe.input_size == (3, 8, 8)  # sizes take the int types of every count


def test_channels_last_is_a_bool_or_auto_and_capture_flags_are_bools():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    for value, error, message in (
        (1, TypeError, r"channels_last must be True or False, got int 1 \(or 'auto'\)"),
        (None, TypeError, r"channels_last must be True or False, got a NoneType \(or 'auto'\)"),
        ("yes", ValueError, "channels_last must be True, False or 'auto', got 'yes'"),
    ):
        with pytest.raises(error, match=message):
            Probe(model, channels_last=value)
    with Probe(model, input_size=(3, 8, 8), channels_last=np.bool_(True)) as probe:
        assert probe.channels_last is True
        x = torch.rand(1, 3, 8, 8)
        for kw in ({"grad": "no"}, {"cache": 0}, {"channels_first": "yes"}, {"contiguous": 1}):
            name = next(iter(kw))
            with pytest.raises(TypeError, match=f"{name} must be True or False"):
                probe.capture(x, "1", **kw)
        for kw in ({"grad": 1}, {"cache": "no"}):
            with pytest.raises(TypeError, match=f"{next(iter(kw))} must be True or False"):
                probe.logits(x, **kw)
        assert probe.capture(x, "1", contiguous=None, channels_first=np.bool_(True))["1"].shape == (1, 4, 6, 6)


def test_grad_results_stay_in_the_graph_under_no_grad():
    """The channels-last result was copied to the standard layout after the forward, under the
    caller's no_grad, which cut it off from the graph without a word."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 2))
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    with Probe(model, input_size=(3, 16, 16), channels_last=True) as probe, torch.no_grad():
        act = probe.capture(x, "1", grad=True)["1"]
        out = probe.logits(x, grad=True)
    assert act.requires_grad and out.requires_grad
    (grad,) = torch.autograd.grad(act.sum(), x)
    assert grad.abs().sum() > 0


class _NoReturn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        self.conv(x)  # the return statement is missing


class _BatchSum(_NoReturn):
    def forward(self, x):
        return self.conv(x).mean((2, 3)).sum(0, keepdim=True)


class _OwnErrors(_NoReturn):
    def forward(self, x):
        if x.shape[0] > 1:
            raise ValueError("expected a batch of 1")
        return self.conv(x).mean((2, 3))


@pytest.mark.parametrize("cache", [True, False])
def test_model_outputs_and_errors_are_named_as_the_models(cache):
    with Probe(_NoReturn()) as probe:
        with pytest.raises(TypeError, match=r"forward returned None \(is a return statement missing\?\)"):
            probe.logits(torch.rand(2, 3, 16, 16), cache=cache)
        assert probe.capture(torch.rand(2, 3, 16, 16), ["conv"], cache=cache)["conv"].shape == (2, 4, 14, 14)
    with Probe(_BatchSum()) as probe, pytest.raises(ValueError, match=r"output has shape \(1, 4\) for a batch of 2 "
                                                                     r"images: its first dimension must be the batch"):
        probe.logits(torch.rand(2, 3, 16, 16), cache=cache)
    # the model's own ValueError is not the probe's (bad input): it comes as the model's failure
    with Probe(_OwnErrors()) as probe:
        with pytest.raises(RuntimeError, match=r"model failed on an input of shape \(2, 3, 16, 16\): ValueError: "
                                               r"expected a batch of 1"):
            probe.logits(torch.rand(2, 3, 16, 16), cache=cache)
        assert probe.logits(torch.rand(1, 3, 16, 16), cache=cache).shape == (1, 4)


def test_a_keyerror_of_the_model_while_layers_are_found_is_not_an_unknown_layer():
    class Lookup(_NoReturn):
        def forward(self, x):
            return {"a": self.conv(x)}["missing"]

    # a missing key is the model's own bug: the size is not blamed for it
    with pytest.raises(RuntimeError, match=r"failed on an input of size \(3, 16, 16\): KeyError: 'missing'"):
        Probe(Lookup(), input_size=(3, 16, 16)).layers

    class WrongWidth(_NoReturn):
        def forward(self, x):
            return self.conv(x).flatten(1) @ torch.ones(7, 2)

    # a shape error may well be the input size's fault: the message asks
    with pytest.raises(RuntimeError, match=r"size \(3, 16, 16\): RuntimeError: mat1.*If the error is about the input, is \(3, 16, 16\) the size and number of channels it expects\?"):
        Probe(WrongWidth(), input_size=(3, 16, 16)).layers


def test_a_module_registered_twice_is_told_by_its_listed_name_and_empty_sides_are_refused():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 3)
            self.d = self.c  # the same module under a second name: listed once, as 'c'

        def forward(self, x):
            return self.d(x).mean((2, 3))

    with Probe(Twice()) as probe:
        with pytest.raises(KeyError, match=r"layer 'd' is the same module as 'c', the name it is listed under"):
            probe.capture(torch.rand(1, 3, 8, 8), ["d"])
        with pytest.raises(KeyError, match=r"unknown layer 'e'"):
            probe.capture(torch.rand(1, 3, 8, 8), ["e"])
        with pytest.raises(ValueError, match=r"the batch has no pixels: its shape is \(1, 3, 0, 8\)"):
            probe.capture(torch.rand(1, 3, 0, 8), ["c"])


class _LockedRecorder:
    """Hooks bound to an object that cannot be copied (it holds a lock), as a logger or a metrics recorder may."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[str] = []

    def hook(self, *args, **kwargs):
        self.calls.append("hook")


def test_the_users_hooks_are_neither_copied_nor_run_and_stay_on_the_users_model():
    recorder = _LockedRecorder()
    model = chain().eval()
    plain = copy.deepcopy(model)
    layer = model[8]  # no in-place activation follows it: full backward hooks allow none
    handles = [
        layer.register_forward_hook(recorder.hook),
        layer.register_forward_hook(recorder.hook, with_kwargs=True),
        layer.register_forward_hook(recorder.hook, always_call=True),
        layer.register_forward_pre_hook(recorder.hook),
        layer.register_forward_pre_hook(recorder.hook, with_kwargs=True),
        layer.register_full_backward_hook(recorder.hook),
        layer.register_full_backward_pre_hook(recorder.hook),
        layer.register_state_dict_pre_hook(recorder.hook),
        layer._register_state_dict_hook(recorder.hook),
        layer.register_load_state_dict_pre_hook(recorder.hook),
        layer.register_load_state_dict_post_hook(recorder.hook),
    ]
    hook_dicts = [name for name, value in vars(layer).items() if name.startswith("_") and "hooks" in name and value]
    before = {name: dict(getattr(layer, name)) for name in hook_dicts}
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = plain(x)
    with Probe(model, device="cpu") as probe:  # a lock cannot be copied
        torch.testing.assert_close(probe.logits(x), expected)
        assert probe.capture(x, "8")["8"].shape == (2, 3)
        probe.logits(x.requires_grad_(True), grad=True).sum().backward()
        copied = probe.model[8]
        assert not any(set(getattr(copied, name)) & set(before[name]) for name in hook_dicts)  # no user hook
        probe.model.load_state_dict(probe.model.state_dict())
    assert recorder.calls == []
    assert {name: dict(getattr(layer, name)) for name in hook_dicts} == before  # all the user's hooks kept
    model(x).sum().backward()
    assert len(recorder.calls) == 7  # the user's own passes still run the 5 forward and 2 backward hooks
    for handle in handles:
        handle.remove()


def test_a_hook_holding_a_large_object_is_not_copied():
    class Holder:
        def __init__(self) -> None:
            self.table = torch.zeros(8)

        def hook(self, *args):
            pass

        def __deepcopy__(self, memo):
            raise AssertionError("the hook's object was copied")

    model = chain()
    model[0].register_forward_hook(Holder().hook)
    model[0].register_load_state_dict_post_hook(Holder().hook)
    with Probe(model, device="cpu") as probe:
        assert probe.capture(torch.randn(1, 3, 16, 16), "0")["0"].shape == (1, 4, 16, 16)


@pytest.mark.parametrize("kind", ["weight_norm", "spectral_norm", "legacy weight_norm", "legacy spectral_norm"])
def test_weight_and_spectral_norm_keep_working_on_the_copy(kind):
    from torch.nn.utils import parametrizations, spectral_norm, weight_norm

    wrap = {
        "weight_norm": parametrizations.weight_norm, "spectral_norm": parametrizations.spectral_norm,
        "legacy weight_norm": weight_norm, "legacy spectral_norm": spectral_norm,
    }[kind]
    torch.manual_seed(0)
    model = chain()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the legacy functions are deprecated
        model[0], model[3] = wrap(model[0]), wrap(model[3])
    model.eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = model(x)
    snapshot = ModelSnapshot.take(model)
    with Probe(model, device="cpu", channels_last=False) as probe:
        torch.testing.assert_close(probe.logits(x), expected)
        state = probe.model.state_dict()  # the hooks torch registered for the state dict stay with the layer
        assert state.keys() == model.state_dict().keys()
        probe.model.load_state_dict(state)
        torch.testing.assert_close(probe.logits(x, cache=False), expected)
    snapshot.assert_unchanged(model)


def test_a_torchscript_submodule_is_refused_by_its_name():
    model = chain()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch deprecates scripting; users still have such models
        model[3] = torch.jit.script(model[3])
    snapshot = ModelSnapshot.take(model)
    with pytest.raises(TypeError, match=r"holds a TorchScript module, '3' .* Put the original nn.Module"):
        Probe(model)
    snapshot.assert_unchanged(model)


def test_parameters_on_the_meta_device_are_refused_saying_to_load_the_weights():
    model = chain()
    model[8].to("meta")
    with pytest.raises(ValueError, match=r"on the meta device.*\('8.weight', '8.bias'\); load the weights first"):
        Probe(model)
    with pytest.raises(ValueError, match=r"'0.weight', '0.bias', '3.weight', '3.bias' and 2 more.*to_empty"):
        Probe(chain().to("meta"))
    model = chain()
    x = torch.randn(1, 3, 16, 16)
    with Probe(model, device="cpu") as probe:
        probe.logits(x)
        model[3].to("meta")  # after the copy was made: nothing to refresh it from
        with pytest.raises(ValueError, match=r"\('3.weight', '3.bias'\); load the weights first"):
            probe.logits(x)


def test_global_module_hooks_fire_on_the_copy_and_are_documented():
    from torch.nn.modules import module as torch_module

    seen: list[str] = []
    handle = torch_module.register_module_forward_hook(lambda module, args, output: seen.append("global"))
    try:
        with Probe(chain(), device="cpu") as probe:
            seen.clear()
            probe.logits(torch.randn(1, 3, 16, 16))
    finally:
        handle.remove()
    assert seen  # process-wide: the probe leaves them alone
    assert "register_module_forward_hook" in " ".join(Probe.__doc__.split())


def test_a_pruning_method_that_cannot_be_copied_is_refused_with_the_probe_s_own_error():
    from torch.nn.utils import prune as torch_prune

    class LockedPruning(torch_prune.BasePruningMethod):
        """A user's pruning method holding a lock: the copy needs it, and cannot copy it."""

        PRUNING_TYPE = "unstructured"

        def __init__(self) -> None:
            self.lock = threading.Lock()

        def compute_mask(self, t, default_mask):
            return default_mask

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    LockedPruning.apply(model[0], "weight")
    with pytest.raises(TypeError, match=r"cannot copy the model for safe inspection \(TypeError: cannot pickle.*"
                                        r"in this attribute: 0\._forward_pre_hooks\[\d+\] \(.*LockedPruning\)"):
        Probe(model).layers


def test_an_image_instead_of_a_tensor_is_told_how_to_make_the_tensor():
    from PIL import Image

    with Probe(chain()) as probe:
        for image in (Image.new("RGB", (16, 16)), "cat.jpg"):
            with pytest.raises(TypeError, match=r"got (Image|str); make one with the model's own preprocessing, "
                                                r"e\.g\. bundle\.batch\(image\)"):
                probe.capture(image, ["1"])


def test_a_state_dict_or_a_weights_file_instead_of_a_model_is_told_what_to_do(tmp_path):
    from cnnwidgets.methods import kernel_weights, saliency

    model = chain()
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    for not_a_model, advice in ((model.state_dict(), "this is a state dict"), (str(path), "a file of weights is not a model")):
        for call in (lambda m: Probe(m), lambda m: saliency(m, torch.randn(1, 3, 16, 16), 0), lambda m: kernel_weights(m, "0")):
            with pytest.raises(TypeError, match=rf"{advice}.*model\.load_state_dict"):
                call(not_a_model)


def test_an_input_size_given_as_height_width_channels_is_named_as_such():
    with pytest.raises(RuntimeError, match=r"\(224, 224, 3\) looks like \(H, W, C\); did you mean \(3, 224, 224\)\?"):
        Probe(chain(), input_size=(224, 224, 3)).layers


def test_a_model_whose_forward_runs_in_inference_mode_is_described_and_captured():
    torch.manual_seed(0)
    model = OutsideAutogradNet(torch.inference_mode).eval()
    x = torch.rand(2, 3, 16, 16)
    with Probe(model, input_size=(3, 16, 16)) as probe:
        assert probe.layers["conv"].output_shape == (4, 16, 16)
        captured = probe.capture(x, ["relu"])["relu"]
        torch.testing.assert_close(captured, F.relu(model.conv(x)))
        torch.testing.assert_close(probe.logits(x), model(x))


def test_the_layer_table_a_probe_hands_out_cannot_change_its_own():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    with Probe(model, input_size=(3, 8, 8)) as probe:
        layers = probe.layers
        # was: the probe's own dict; deleting or replacing an entry made "0" an unknown layer
        with pytest.raises(TypeError):
            del layers["0"]
        with pytest.raises(TypeError):
            layers["0"] = layers["1"]
        mine = dict(layers)
        mine.pop("0")
        assert list(probe.layers) == ["0", "1"] and probe.layers["0"].output_shape == (4, 6, 6)
        assert probe.capture(torch.rand(1, 3, 8, 8), "0")["0"].shape == (1, 4, 6, 6)


@pytest.mark.parametrize("given", [None, "resnet18", {"weight": torch.zeros(1)}, 3])
def test_the_model_helpers_refuse_values_that_are_no_model(given):
    from cnnwidgets.core import probe as P

    # was: AttributeError ('NoneType' object has no attribute 'modules'), or an answer for a non-model
    for helper in (P.channel_guesses, P.trained_input_size, P.default_input_sizes, P.plain_module,
                   P.input_kind_problem):
        with pytest.raises(TypeError, match=rf"{helper.__name__} takes a torch\.nn\.Module, got {type(given).__name__}"):
            helper(given)
    with pytest.raises(TypeError, match=rf"class_count takes a cnnwidgets\.Probe, got {type(given).__name__}"):
        P.class_count(given)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.LazyLinear(4))
    assert P.channel_guesses(model) == (1, 3) and next(P.default_input_sizes(model)) == (1, 28, 28)
    assert P.plain_module(model) is model and P.trained_input_size(model) is None
    assert P.input_kind_problem(model) is None
