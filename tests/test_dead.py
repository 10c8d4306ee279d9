"""Dead channels: forced-dead channels are found exactly, streaming equals one batch, one prefix pass per batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cnnwidgets import Probe
from cnnwidgets.methods.dead import dead_channels, default_dead_layers
from tests.helpers import capture_batch_sizes


def net_with_dead_channels() -> nn.Sequential:
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(6, 4, 3, padding=1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2),
    )
    with torch.no_grad():
        model[0].bias[[1, 4]] = -1e3  # never positive for inputs of moderate size
        model[2].bias[2] = -1e3
    return model


def test_forced_dead_channels_are_reported_exactly():
    model = net_with_dead_channels()
    x = torch.randn(8, 3, 12, 12)
    report = dead_channels(model, x, progress=False)
    assert list(report) == ["0", "1", "2", "3"]  # convs and ReLUs with spatial outputs, in order
    assert report["0"].dead == [1, 4] and report["1"].dead == [1, 4]
    assert report["2"].dead == [2] and report["3"].dead == [2]
    assert report["1"].num_channels == 6 and report["1"].dead_fraction == pytest.approx(2 / 6)
    assert np.all(report["0"].max_activation[[1, 4]] < -900)
    assert np.all(report["1"].max_activation[[1, 4]] == 0)
    assert np.all(report["1"].active_fraction[[1, 4]] == 0)
    alive = [0, 2, 3, 5]
    assert np.all(report["1"].max_activation[alive] > 0)
    assert report["1"].num_images == 8


class Permute(nn.Module):
    def __init__(self, *dims: int) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.permute(*self.dims)


def test_channels_last_activations_are_scanned_by_default_and_read_channels_first():
    # a ConvNeXt-style block: the pointwise layers and their activation work on (N, H, W, C)
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), Permute(0, 2, 3, 1), nn.Linear(4, 6), nn.GELU(), nn.Linear(6, 4),
        Permute(0, 3, 1, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2),
    )
    with torch.no_grad():
        model[2].bias[[0, 5]] = -1e3  # GELU(-1000) is 0
    x = torch.randn(4, 3, 16, 12)
    with Probe(model) as probe:
        probe.describe((3, 16, 12))
        assert probe.layers["3"].layout == "HWC"
        report = dead_channels(probe, x, progress=False)
    # the GELU; not the convolution, whose output the Permute hands to a Linear layer (which mixes
    # signs), nor the Linear layers, which are not activations
    assert list(report) == ["3"]
    gelu = report["3"]
    assert gelu.num_channels == 6 and gelu.dead == [0, 5]
    expected = model[:4](x).amax(dim=(0, 1, 2))
    np.testing.assert_allclose(gelu.max_activation, expected.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_statistics_match_a_direct_computation():
    model = net_with_dead_channels()
    x = torch.randn(5, 3, 10, 10)
    with torch.no_grad():
        conv = model[0](x)
    report = dead_channels(model, x, ["0"], threshold=0.25, progress=False)["0"]
    np.testing.assert_allclose(report.max_activation, conv.amax(dim=(0, 2, 3)).numpy(), rtol=1e-6)
    expected_fraction = (conv > 0.25).double().mean(dim=(0, 2, 3)).numpy()
    np.testing.assert_allclose(report.active_fraction, expected_fraction)
    assert report.threshold == 0.25
    assert report.dead == [int(i) for i in np.flatnonzero(conv.amax(dim=(0, 2, 3)).numpy() <= 0.25)]


def test_streaming_over_batches_equals_one_big_batch_and_accepts_a_dataloader():
    model = net_with_dead_channels()
    x = torch.randn(12, 3, 8, 8)
    whole = dead_channels(model, x, progress=False)
    chunks = dead_channels(model, [x[:5], x[5:9], x[9:]], progress=False)
    loader = DataLoader(TensorDataset(x, torch.zeros(12)), batch_size=4)
    loaded = dead_channels(model, loader, progress=False)
    for name in whole:
        for other in (chunks, loaded):
            np.testing.assert_allclose(other[name].max_activation, whole[name].max_activation, rtol=1e-6)
            np.testing.assert_allclose(other[name].active_fraction, whole[name].active_fraction)
            assert other[name].dead == whole[name].dead and other[name].num_images == 12


def test_one_prefix_forward_per_batch_for_all_layers():
    model = net_with_dead_channels()
    batches = [torch.randn(3, 3, 8, 8) for _ in range(4)]
    with Probe(model, input_size=(3, 8, 8)) as probe:
        probe.layers
        probe.reset_stats()
        dead_channels(probe, batches, ["0", "1", "2"], progress=False)
        assert probe.stats.forwards == 4
        assert probe.stats.full_forwards == 0  # stops after layer "2"
        assert probe.stats.modules_executed == 4 * 3  # modules 0, 1, 2 per batch


def test_passes_take_only_as_many_images_as_the_kept_maps_allow(monkeypatch):
    """Every requested layer's output is kept until its pass ends: 64 images of resnet50 at
    224x224 kept over 5 GB. Large batches (a tensor, or a loader's) are split into passes whose
    kept maps fit the budget, with the same statistics."""
    import cnnwidgets.methods.dead as dead

    model = net_with_dead_channels()
    x = torch.randn(12, 3, 8, 8)
    with Probe(model) as probe:
        whole = dead_channels(probe, x, progress=False)
        assert probe.stats.forwards == 1
        # the four default layers of one 8x8 image: (6 + 6 + 4 + 4) maps of 64 floats
        per_image = (6 + 6 + 4 + 4) * 64 * 4
        monkeypatch.setattr(dead, "_KEPT_BYTES", 5 * per_image)
        sizes = capture_batch_sizes(monkeypatch, probe)
        loader = DataLoader(TensorDataset(x, torch.zeros(12)), batch_size=12)
        # half-precision images make float32 maps in the copy too: the same passes
        for data in (x, loader, x.half()):
            sizes.clear()
            split = dead_channels(probe, data, progress=False)
            assert sizes == [5, 5, 2]
            if data is not loader and data.dtype == torch.float16:
                continue  # the same passes; the images themselves were rounded
            for name in whole:
                np.testing.assert_allclose(split[name].max_activation, whole[name].max_activation, rtol=1e-6)
                np.testing.assert_allclose(split[name].active_fraction, whole[name].active_fraction)
                assert split[name].num_images == 12


def test_threshold_and_layer_choice():
    model = net_with_dead_channels()
    x = torch.rand(4, 3, 8, 8)
    everything_dead = dead_channels(model, x, "1", threshold=1e6, progress=False)["1"]
    assert everything_dead.dead == list(range(6))
    with Probe(model, input_size=(3, 8, 8)) as probe:
        assert default_dead_layers(probe) == ["0", "1", "2", "3"]


def test_errors():
    model = net_with_dead_channels()
    with pytest.raises(ValueError, match="no batch"):
        dead_channels(model, [], progress=False)
    with pytest.raises(KeyError, match="unknown layer"):
        dead_channels(model, torch.randn(2, 3, 8, 8), ["7"], progress=False)
    with pytest.raises(TypeError, match="item 1 of the data is a str"):
        dead_channels(model, [torch.randn(2, 3, 8, 8), "x"], progress=False)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        dead_channels(model, torch.randn(3, 8, 8), progress=False)
    with pytest.raises(ValueError, match="layers is empty"):
        dead_channels(model, torch.randn(2, 3, 8, 8), [], progress=False)


def test_progress_bar_counts_images(capsys):
    model = net_with_dead_channels()
    dead_channels(model, [torch.randn(2, 3, 8, 8)] * 3, progress=True)
    assert "6/6" in capsys.readouterr().err


def test_a_scan_leaves_the_probe_cache_to_the_users_own_images():
    model = net_with_dead_channels()
    batches = [torch.randn(4, 3, 12, 12) for _ in range(3)]
    with Probe(model) as probe:
        mine = torch.randn(1, 3, 12, 12)
        probe.capture(mine, ["2"])  # the image the user is looking at
        dead_channels(probe, batches, progress=False)
        probe.reset_stats()
        probe.capture(batches[0], ["2"])
        assert probe.stats.cache_hits == 0 and probe.stats.cache_misses == 1  # data-set batches were not kept
        probe.capture(mine, ["2"])
        assert probe.stats.cache_hits == 1


def test_data_forms_are_those_of_scan_topk():
    model = net_with_dead_channels().eval()
    x = torch.randn(6, 3, 8, 8)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    whole = dead_channels(model, x, progress=False)
    for data in (
        (x, y),  # an (images, labels) pair, as scan_topk takes it
        (x, y.float()),  # targets that are not class indices
        [(x[:4], y[:4]), (x[4:], y[4:])],
        DataLoader(TensorDataset(x, y), batch_size=4),
        list(x),  # single images, grouped into batches
    ):
        report = dead_channels(model, data, progress=False)
        assert list(report) == list(whole)
        for name in whole:
            assert report[name].num_images == 6 and report[name].dead == whole[name].dead
            np.testing.assert_allclose(report[name].max_activation, whole[name].max_activation, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(report[name].active_fraction, whole[name].active_fraction)
    split = dead_channels(model, x, batch_size=4, progress=False)
    np.testing.assert_allclose(split["1"].active_fraction, whole["1"].active_fraction)
    for size in (np.int64(4), torch.tensor(4)):  # any int type, as every count
        np.testing.assert_allclose(dead_channels(model, x, batch_size=size, progress=False)["1"].active_fraction,
                                   split["1"].active_fraction)
    # a wrong type is a TypeError and a value below 1 a ValueError, checked before any batch (also for a loader)
    for size, error, message in ((True, TypeError, "got bool True"), (1.0, TypeError, "got float 1.0"),
                                 ("4", TypeError, "got str '4'"), (0, ValueError, "got 0")):
        for data in (x, iter([])):
            with pytest.raises(error, match=f"batch_size must be an int >= 1, {message}"):
                dead_channels(model, data, batch_size=size, progress=False)
    with pytest.raises(ValueError, match="6 images but 5 labels"):
        dead_channels(model, (x, y[:5]), progress=False)


def test_layers_must_be_names():
    model = net_with_dead_channels()
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(TypeError, match="layer names are strings, got ReLU"):
        dead_channels(model, x, model[3], progress=False)
    with pytest.raises(TypeError, match="layer names are strings, got int"):
        dead_channels(model, x, 3, progress=False)


def test_threshold_must_be_a_finite_number():
    model = net_with_dead_channels()
    x = torch.randn(2, 3, 8, 8)
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="threshold must be a finite number"):
            dead_channels(model, x, "1", threshold=bad, progress=False)
    for bad in ("0", None, True):
        with pytest.raises(TypeError, match="threshold must be a number"):
            dead_channels(model, x, "1", threshold=bad, progress=False)
    assert dead_channels(model, x, "1", threshold=np.float32(0.5), progress=False)["1"].threshold == 0.5


def test_non_finite_inputs_are_refused():
    model = net_with_dead_channels()
    x = torch.randn(3, 3, 8, 8)
    x[2, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="1 value that is not finite .* in image 2 of 3"):
        dead_channels(model, x, progress=False)


def test_token_layers_are_refused_like_the_other_channel_readers():
    # a transformer-like layer: 5 tokens of 6 features, (N, 5, 6), has no channel axis
    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch = nn.Conv2d(3, 6, 4, stride=4)
            self.mlp = nn.Linear(6, 6)
            self.act = nn.ReLU()
            self.head = nn.Linear(6, 2)

        def forward(self, x):
            tokens = self.patch(x).flatten(2).transpose(1, 2)
            tokens = torch.cat([tokens.mean(1, keepdim=True), tokens], dim=1)
            return self.head(self.act(self.mlp(tokens))[:, 0])

    torch.manual_seed(0)
    with Probe(Tokens(), input_size=(3, 8, 8)) as probe:
        assert probe.layers["act"].output_shape == (5, 6)
        with pytest.raises(ValueError, match=(
            r"layer 'act' has output shape \(5, 6\); a dead-channel scan needs a \(C,\) or \(C, H, W\) output"
        )):
            dead_channels(probe, torch.randn(2, 3, 8, 8), "act", progress=False)
        assert dead_channels(probe, torch.randn(2, 3, 8, 8), "patch", progress=False)["patch"].num_channels == 6
        # the patch convolution's output goes into functional code (flatten, cat): not known to be
        # zeroed by a ReLU, so it is scanned only when named (it was in the default set before)
        assert default_dead_layers(probe) == []


def test_channels_last_images_are_named_as_such_by_default_and_for_named_layers():
    model = net_with_dead_channels().eval()
    x = torch.randn(2, 3, 12, 12).permute(0, 2, 3, 1)  # (N, H, W, C)
    for data in (x, list(x), [x]):
        for layers in (None, "1"):
            with pytest.raises(ValueError, match=r"looks like \(N, H, W, C\) = \(2, 12, 12, 3\).*x.permute\(0, 3, 1, 2\)"):
                dead_channels(model, data, layers, progress=False)


def test_nan_activations_are_refused_not_reported_as_dead_channels():
    model = net_with_dead_channels().eval()
    with torch.no_grad():
        model[2].weight[0, 0, 0, 0] = float("nan")  # channel 0 of layer "2" (and "3") is NaN, not dead
    x = torch.randn(4, 3, 12, 12)
    assert dead_channels(model, x, "1", progress=False)["1"].dead == [1, 4]  # the layers before it are fine
    for layers in ("3", None):
        with pytest.raises(ValueError, match=r"a dead-channel scan needs finite activations, but the model's "
                                             r"activations at layer '(2|3)' are not finite .*has training diverged\?"):
            dead_channels(model, x, layers, progress=False)


def test_progress_must_be_a_bool():
    model = net_with_dead_channels()
    for bad in ("no", 0, None):
        with pytest.raises(TypeError, match="progress must be True or False, got"):
            dead_channels(model, torch.randn(2, 3, 8, 8), progress=bad)
    assert dead_channels(model, torch.randn(2, 3, 8, 8), "1", progress=np.bool_(False))["1"].num_images == 2


def test_a_layer_with_an_empty_feature_map_is_refused_and_left_out_of_the_default_scan():
    from tests.test_layer_geometry import EMPTY_ACT, empty_branch

    model, x = empty_branch(), torch.rand(4, 3, 32, 32)  # layer 'act' is (8, 0, 0) at 32 x 32
    with pytest.raises(ValueError, match=EMPTY_ACT):
        dead_channels(model, x, ["relu", "act"], progress=False)  # was a raw IndexError from amax
    # a loader whose later batch is smaller: refused at that batch's size
    loader = [torch.rand(2, 3, 64, 64), torch.rand(2, 3, 32, 32)]
    with pytest.raises(ValueError, match=EMPTY_ACT):
        dead_channels(model, loader, ["act"], progress=False)
    assert list(dead_channels(model, x, progress=False)) == ["conv", "relu"]  # 'act' has no unit to scan here
    assert "act" in dead_channels(model, torch.rand(2, 3, 64, 64), progress=False)


def test_a_default_scan_leaves_out_convolutions_that_feed_a_normalisation_layer():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),  # the BN shifts the conv's signs
        nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(),                      # no normalisation: the conv is scanned
        nn.Conv2d(5, 6, 3, padding=1), nn.GroupNorm(2, 6), nn.ReLU(),
    ).eval()
    with torch.no_grad():
        model[1].running_mean.fill_(-5.0)  # every conv channel may be negative, yet the ReLU after the BN fires
    x = torch.rand(4, 3, 12, 12)
    with Probe(model, input_size=(3, 12, 12)) as probe:
        assert default_dead_layers(probe) == ["2", "3", "4", "7"]
        report = dead_channels(probe, x, progress=False)
        assert list(report) == ["2", "3", "4", "7"]
        assert report["2"].dead == []  # fires after the BN
        explicit = dead_channels(probe, x, "0", progress=False)  # named, a conv feeding a BN is scanned
        assert explicit["0"].max_activation.shape == (4,)


def test_a_convolution_feeding_a_local_response_normalisation_is_scanned_since_it_keeps_signs():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.LocalResponseNorm(2), nn.ReLU()).eval()
    with Probe(model, input_size=(3, 8, 8)) as probe:
        assert default_dead_layers(probe) == ["0", "2"]


class SharedReluBlock(nn.Module):
    """A ResNet basic block as torchvision writes it: one ReLU module called twice, and an
    in-place residual addition between the second batch norm and that ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.conv2, self.bn2 = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.relu = nn.ReLU()
        self.negated = nn.Conv2d(3, 3, 1)
        self.last = nn.ReLU()

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        out = self.relu(out)
        return self.last(-self.negated(out))  # functional code between a layer and its ReLU


def test_zeroed_by_relu_follows_the_tensor_not_the_call_order():
    from cnnwidgets.methods.dead import zeroed_by_relu

    probe = Probe(SharedReluBlock().eval(), input_size=(3, 8, 8))
    try:
        layers = probe.layers
        assert layers["bn1"].feeds == "relu" and zeroed_by_relu(probe, "bn1")  # a shared ReLU's first call
        assert layers["conv1"].feeds == "bn1" and not zeroed_by_relu(probe, "conv1")
        # the residual addition (in place: the same tensor, a new version) comes before the ReLU
        assert layers["bn2"].feeds == "" and not zeroed_by_relu(probe, "bn2")
        assert layers["negated"].feeds == "" and not zeroed_by_relu(probe, "negated")  # negated first
        assert layers["last"].feeds == ""  # the end of the forward
    finally:
        probe.close()


def test_a_convolution_is_scanned_by_default_when_a_relu_zeroes_its_never_positive_channels():
    class Functional(nn.Module):  # a hand-written model: F.relu, which the layer table does not see
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            return torch.nn.functional.relu(self.conv(x)).mean(dim=(2, 3))

    cases = [
        # through modules that keep signs (pooling, dropout) to a ReLU: scanned
        (nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2), nn.Dropout(), nn.ReLU()), ["0", "3"]),
        # into a gate (squeeze-excitation) or a normalisation: left out, the activations after them scanned
        (nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sigmoid()), ["1"]),
        (nn.Sequential(nn.Conv2d(3, 4, 3), nn.Hardsigmoid()), ["1"]),
        (nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2), nn.BatchNorm2d(4), nn.ReLU()), ["3"]),
        # F.relu is functional code, which the layer table cannot tell from a residual addition: a
        # convolution whose output goes there is scanned only when named (it was in the default set before)
        (Functional(), []),
    ]
    for model, expected in cases:
        with Probe(model.eval(), input_size=(3, 8, 8)) as probe:
            assert default_dead_layers(probe) == expected, model
