"""Receptive-field geometry through the tensor functions a forward applies between modules."""

from __future__ import annotations

import threading
import weakref

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from cnnwidgets import Probe
from cnnwidgets.core.layers import discover_layers


def geometry(model: nn.Module, size: int = 16, channels: int = 3) -> dict[str, tuple]:
    """``{name: (receptive field, jump, start)}`` of every layer of ``model`` for a square input."""
    layers = discover_layers(model.eval(), torch.zeros(1, channels, size, size))
    return {name: (info.receptive_field, info.jump, info.start) for name, info in layers.items()}


def mode_stack_depth() -> int:
    """How many torch function modes are active in this thread."""
    return len(torch.overrides._get_current_function_mode_stack())


class Residual(nn.Module):
    """``x + conv(x)`` (out of place), then another convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, stride=2, padding=1)  # r = 3, j = 2, c = 0
        self.conv = nn.Conv2d(4, 4, 3, padding=1)  # r = 3 + 2 * 2 = 7
        self.head = nn.Conv2d(4, 4, 3, padding=1)  # after the add (r = 7): r = 7 + 2 * 2 = 11

    def forward(self, x):
        x = self.stem(x)
        return self.head(x + self.conv(x))


def test_out_of_place_residual_keeps_the_larger_receptive_field():
    geo = geometry(Residual())
    assert geo["conv"] == (7, 2, 0.0)
    assert geo["head"] == (11, 2, 0.0)


class InPlaceResidual(Residual):
    def forward(self, x):
        x = self.stem(x)
        out = self.conv(x)
        out += x  # the same tensor object as the conv's output
        return self.head(out.relu())


def test_in_place_residual_and_tensor_method():
    geo = geometry(InPlaceResidual())
    assert geo["conv"] == (7, 2, 0.0)
    assert geo["head"] == (11, 2, 0.0)


class SqueezeExcite(nn.Module):
    """``x * sigmoid(fc(pool(x)))``: the global branch is broadcast back over the map."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)  # r = 3, j = 1, c = 0
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(4, 4, 1)
        self.head = nn.Conv2d(4, 4, 3, padding=1)  # r = 3 + 2 = 5: the global branch does not count

    def forward(self, x):
        x = self.stem(x)
        return self.head(x * torch.sigmoid(self.fc(self.pool(x))))


def test_squeeze_and_excitation_scale_is_left_out():
    geo = geometry(SqueezeExcite())
    assert geo["pool"] == (None, None, None) and geo["fc"] == (None, None, None)
    assert geo["head"] == (5, 1, 0.0)


class Concat(nn.Module):
    """``torch.cat([a(x), b(x)], 1)`` followed by a 3 x 3 convolution."""

    def __init__(self, b: nn.Module) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 2, 3, stride=2, padding=1)  # r = 3, j = 2, c = 0
        self.b = b
        self.head = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.head(torch.cat([self.a(x), self.b(x)], 1))


def test_concatenation_merges_equal_grids_and_not_different_ones():
    # b: 5 x 5, stride 2, padding 2: r = 5, j = 2, c = 0 + (2 - 2) * 1 = 0, the same grid as a's
    geo = geometry(Concat(nn.Conv2d(3, 2, 5, stride=2, padding=2)))
    assert geo["a"] == (3, 2, 0.0) and geo["b"] == (5, 2, 0.0)
    assert geo["head"] == (5 + 2 * 2, 2, 0.0)
    # b: 2 x 2, stride 2, no padding: r = 2, j = 2, c = 0.5 (a's units are centred at 0, 2, ...)
    geo = geometry(Concat(nn.Conv2d(3, 2, 2, stride=2)))
    assert geo["a"] == (3, 2, 0.0) and geo["b"] == (2, 2, 0.5)
    assert geo["head"] == (None, None, None)
    # b: 9 x 9, stride 1, no padding: also an 8 x 8 map of a 16 x 16 input, but r = 9, j = 1, c = 4
    geo = geometry(Concat(nn.Conv2d(3, 2, 9)))
    assert geo["b"] == (9, 1, 4.0)
    assert geo["head"] == (None, None, None)


def test_stacking_along_channels_merges_like_concatenation():
    class Stack(Concat):
        def forward(self, x):
            stacked = torch.stack([self.a(x), self.b(x)], 1)  # (N, 2, 2, H, W)
            return self.head(stacked.flatten(1, 2))

    geo = geometry(Stack(nn.Conv2d(3, 2, 5, stride=2, padding=2)))
    assert geo["head"] == (9, 2, 0.0)


class FunctionalRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 5, stride=2, padding=2)  # r = 5, j = 2, c = 0
        self.conv2 = nn.Conv2d(4, 4, 3)  # r = 5 + 2 * 2 = 9, j = 2, c = 0 + (1 - 0) * 2 = 2

    def forward(self, x):
        return self.conv2(F.relu(self.conv1(x)))


def test_functional_activation_passes_geometry_to_the_next_convolution():
    assert geometry(FunctionalRelu())["conv2"] == (9, 2, 2.0)


class Pooled(nn.Module):
    """conv, ``F.relu``, conv, then ``pool`` and a last convolution."""

    def __init__(self, pool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)  # r = 3, j = 1, c = 0
        self.mid = nn.Conv2d(4, 4, 3, padding=1)  # r = 5
        self.pool = pool
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.conv2(self.pool(self.mid(F.relu(self.conv1(x)))))


@pytest.mark.parametrize(
    "pool",
    [
        lambda x: F.max_pool2d(x, 2),
        lambda x: F.max_pool2d(x, 3, stride=1, padding=1),  # keeps the size, still a window
        lambda x: torch.roll(x, 1, dims=3),  # keeps the size, moves the positions
        lambda x: F.interpolate(x, scale_factor=2.0),
    ],
    ids=["max_pool2d", "size-keeping max_pool2d", "roll", "interpolate"],
)
def test_functions_that_resize_or_move_positions_give_no_geometry(pool):
    geo = geometry(Pooled(pool))
    assert geo["mid"] == (5, 1, 0.0)
    assert geo["conv2"] == (None, None, None)


def test_pooling_module_keeps_its_rule():
    # mid: r = 5, j = 1; max pool 2, stride 2: r = 5 + 1 = 6, j = 2, c = 0.5; conv: r = 6 + 2 * 2 = 10
    geo = geometry(Pooled(nn.MaxPool2d(2)))
    assert geo["pool"] == (6, 2, 0.5)
    assert geo["conv2"] == (10, 2, 0.5)


class Transposed(nn.Module):
    """An 8 x 8 map with 8 channels, so that moving the channels last keeps every size."""

    def __init__(self, swap: tuple[int, int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)  # r = 3, j = 1, c = 0
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.swap = swap

    def forward(self, x):
        return self.conv2(self.conv1(x).transpose(*self.swap))


def test_views_keep_geometry_only_with_the_map_dimensions_last():
    # a square map transposed: unit (i, j) then sees the box of (j, i), which no geometry describes
    assert geometry(Transposed((2, 3)), size=8)["conv2"] == (None, None, None)
    assert geometry(Transposed((1, 3)), size=8)["conv2"] == (None, None, None)  # channels moved last


def test_module_output_keeps_the_module_rule():
    class Windowed(nn.Module):
        """A leaf whose forward applies a size-keeping function: the module's own rule decides."""

        kernel_size = 3

        def forward(self, x):
            return x * 2.0

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.act = nn.ReLU()
            self.windowed = Windowed()

        def forward(self, x):
            y = self.act(self.conv(x) * 2.0)
            return self.windowed(y)

    geo = geometry(Model())
    assert geo["act"] == (3, 1, 0.0)
    assert geo["windowed"] == (None, None, None)


class Fails(nn.Module):
    """A residual model that raises (after some functions ran) unless the input is 16 wide."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = Residual()
        self.depths: list[int] = []

    def forward(self, x):
        self.depths.append(mode_stack_depth())
        y = self.inner(x)
        if x.shape[-1] != 16:
            raise ValueError("this model takes 16 x 16 inputs only")
        return y


def test_discovery_mode_is_exited_when_the_model_raises_and_absent_from_captures():
    model = Fails().eval()
    before = mode_stack_depth()
    with pytest.raises(ValueError, match="16 x 16"):
        discover_layers(model, torch.zeros(1, 3, 20, 20))
    assert mode_stack_depth() == before
    assert model.depths == [before + 1]  # active during discovery

    with Probe(model, input_size=(3, 20, 20), channels_last=False) as probe:
        with pytest.raises(RuntimeError, match="failed"):
            probe.layers
        assert mode_stack_depth() == before
        layers = probe.describe((3, 16, 16))
        assert (layers["inner.head"].receptive_field, layers["inner.head"].jump) == (11, 2)
        probe.model.depths.clear()
        probe.capture(torch.rand(2, 3, 16, 16), "inner.head")
        assert probe.model.depths == [before]  # no mode (no overhead) in a normal capture


def test_other_threads_are_not_affected_during_discovery():
    seen: list[int] = []

    class Spawns(Residual):
        def forward(self, x):
            thread = threading.Thread(target=lambda: seen.append(mode_stack_depth()))
            thread.start()
            thread.join()
            return super().forward(x)

    assert geometry(Spawns())["head"] == (11, 2, 0.0)
    assert seen == [0]


def test_mobilenet_v2_deep_layers_compose_through_residual_adds():
    geo = geometry(torchvision.models.mobilenet_v2(weights=None), size=64)
    # Each inverted residual adds (3 - 1) * j at its depthwise 3 x 3 convolution (padding 1, so
    # the start stays 0) and then multiplies j by its stride; 1 x 1 convolutions change nothing.
    #   stem s2: r = 3, j = 2;  features.1: 3 + 4 = 7;  .2 (s2): 7 + 4 = 11, j = 4;  .3: 19
    #   .4 (s2): 27, j = 8;  .5: 43;  .6: 59;  .7 (s2): 75, j = 16;  .8: 107;  .9: 139;  .10: 171
    #   .11: 203;  .12: 235;  .13: 267;  .14 (s2): 299, j = 32;  .15: 363;  .16: 427;  .17: 491
    assert geo["features.3.conv.3"] == (19, 4, 0.0)
    assert geo["features.4.conv.0.0"] == (19, 4, 0.0)  # the input of block 4 is block 3's add
    assert geo["features.16"] == (427, 32, 0.0)  # the output of a residual add
    assert geo["features.17.conv.1.0"] == (491, 32, 0.0)
    assert geo["features.18"] == (491, 32, 0.0)


def test_efficientnet_b0_keeps_geometry_past_squeeze_and_excitation():
    geo = geometry(torchvision.models.efficientnet_b0(weights=None), size=64)
    assert geo["features.1.0.block.1"] == (7, 2, 0.0)  # SE output: x * scale
    assert geo["features.1.0.block.2.0"] == (7, 2, 0.0)  # the 1 x 1 projection after it
    assert geo["features.1.0.block.1.fc1"] == (None, None, None)  # the pooled branch has none
    r, j, c = geo["features.8"]
    assert r is not None and r > 200 and j == 32 and c == 0.0


class _Blur(nn.Module):
    """A custom leaf that mixes neighbouring positions with a function (no window attribute)."""

    def forward(self, x):
        return F.avg_pool2d(x, 7, 1, 3)


class _PadInForward(nn.Conv2d):
    """A convolution that pads itself in forward ("same" padding of ported TF models): its
    ``padding`` attribute (0) is not what it applies."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, padding=0, **kwargs)

    def forward(self, x):
        k = self.kernel_size[0]
        return F.conv2d(F.pad(x, [k // 2, k - 1 - k // 2] * 2), self.weight, self.bias)


class _ChannelsNorm(nn.LayerNorm):
    """A LayerNorm over channels that permutes around F.layer_norm (as ConvNeXt's LayerNorm2d)."""

    def forward(self, x):
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias).permute(0, 3, 1, 2)


def test_reflected_padding_wider_than_half_the_window_gives_no_geometry():
    assert geometry(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")))["0"] == (3, 1, 0.0)
    assert geometry(nn.Sequential(nn.Conv2d(3, 4, 3, padding=2, padding_mode="reflect")))["0"] == (None, None, None)
    assert geometry(nn.Sequential(nn.Conv2d(3, 4, 3, padding=2)))["0"] == (3, 1, -1.0)  # zeros: no pixel beyond


def test_leaves_whose_forward_mixes_positions_get_no_geometry_from_the_module_rule():
    assert geometry(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), _Blur(), nn.Conv2d(4, 4, 1)))["2"] == (None, None, None)
    # a Linear applied to an NCHW map mixes along its width
    assert geometry(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Linear(16, 16)))["1"] == (None, None, None)
    # the module rule would read padding=0 and shift every box; what the forward does is not followed
    assert geometry(nn.Sequential(_PadInForward(3, 4, 3), _PadInForward(4, 4, 5)))["1"] == (None, None, None)
    # normalisations are per position whatever their forward does with the layout
    assert geometry(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), _ChannelsNorm(4), nn.Conv2d(4, 4, 3, padding=1)))[
        "2"] == (5, 1, 0.0)


def test_an_in_place_function_on_a_view_changes_the_geometry_of_the_tensor_it_views():
    class AddIntoSlice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.big, self.out = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 2, 9, padding=4), nn.Conv2d(4, 4, 1)

        def forward(self, x):
            y = self.a(x)
            y[:, :2].add_(self.big(x))  # no __setitem__: the slice is changed where it lies
            return self.out(y)

    assert geometry(AddIntoSlice())["out"] == (9, 1, 0.0)



# ---------------------------------------------------------------- memory of the discovery pass
class _Chain(nn.Module):
    """Convolutions with a functional ReLU after each; at the end of its forward it notes which of the
    outputs in ``seen`` (weak references, to the convolutions' outputs and the ReLUs') are still alive."""

    def __init__(self, depth: int = 6) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(3 if i == 0 else 8, 8, 3, padding=1) for i in range(depth))
        self.seen: list[weakref.ref] = []
        self.alive: list[bool] = []

    def forward(self, x):
        for conv in self.convs:
            x = torch.relu(conv(x))
            self.seen.append(weakref.ref(x))
        self.alive = [ref() is not None for ref in self.seen]
        return x


def test_discovery_frees_each_activation_once_the_model_is_done_with_it():
    model = _Chain().eval()
    for conv in model.convs:
        conv.register_forward_hook(lambda module, args, output: model.seen.append(weakref.ref(output)))
    x = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        model(x)
    plain = model.alive
    assert plain == [False] * 11 + [True]  # a plain forward: only the tensor it returns is left
    model.seen.clear()
    layers = discover_layers(model, x)
    # the pass holds no module's or function's output beyond what the model holds, so it peaks
    # at a plain forward's memory, not at the sum of all activations
    assert model.alive == plain
    assert [layers[f"convs.{i}"].receptive_field for i in range(6)] == [3, 5, 7, 9, 11, 13]


class _ReusedId(nn.Module):
    """Frees a convolution's output, then passes a constant (not computed from the input) through an
    ``nn.Identity``: CPython usually gives the constant the freed output's id. ``outcomes`` holds,
    per round, whether the output was freed and whether the constant got its id."""

    def __init__(self, rounds: int = 16) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(3, 4, 3, padding=1) for _ in range(rounds))
        self.constants = nn.ModuleList(nn.Identity() for _ in range(rounds))
        self.outcomes: list[tuple[bool, bool]] = []

    def forward(self, x):
        for conv, constant in zip(self.convs, self.constants):
            values = np.zeros((1, 4, 8, 8), np.float32)
            y = conv(x)
            freed, ref = id(y), weakref.ref(y)
            del y
            c = torch.from_numpy(values)  # made after the free, with no other object in between
            self.outcomes.append((ref() is None, id(c) == freed))
            constant(c)
        return x


def test_a_tensor_that_reuses_a_freed_outputs_id_gets_none_of_its_geometry():
    model = _ReusedId().eval()
    layers = discover_layers(model, torch.zeros(1, 3, 8, 8))
    assert all(freed for freed, _ in model.outcomes)
    assert layers["convs.0"].receptive_field == 3
    # the constants are not computed from the input: no geometry, also when one has a freed output's id
    assert [layers[f"constants.{i}"].receptive_field for i in range(16)] == [None] * 16
    if not any(reused for _, reused in model.outcomes):
        pytest.skip("no constant got a freed output's id in this run (allocator layout)")

def test_input_channels_reads_the_first_convolution_of_any_dimension():
    from cnnwidgets.core.layers import input_channels

    assert input_channels(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 8, 3))) == 1
    assert input_channels(nn.Sequential(nn.Conv1d(3, 4, 3), nn.Conv2d(4, 8, 3))) == 3  # a 1-D stem
    assert input_channels(nn.Sequential(nn.Conv3d(2, 4, 3), nn.Conv2d(4, 8, 3))) == 2  # a 3-D stem
    assert input_channels(nn.Sequential(nn.Linear(4, 4))) is None
    assert input_channels(nn.Sequential(nn.LazyConv2d(8, 3), nn.Conv2d(8, 8, 3))) is None  # not known before it runs


def test_discovery_runs_under_the_callers_inference_mode():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = discover_layers(model, x)
    with torch.inference_mode():
        assert discover_layers(model, x) == expected


# ---------------------------------------------------------------- empty feature maps
class EmptyBranch(nn.Module):
    """A branch whose maps are empty at 32 x 32: after the pooling (16 x 16) it keeps rows and columns
    20 on, nothing. Torch runs it; at 64 x 64 it keeps 12 x 12. The head reads the pooled maps (and the
    branch's sums, 0 over no position), so class scores have gradients."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.crop = Crop()
        self.act = nn.ReLU()
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.pool(self.relu(self.conv(x)))
        return self.fc(x.mean(dim=(2, 3)) + self.act(self.crop(x)).sum(dim=(2, 3)))


class Crop(nn.Module):
    def forward(self, x):
        return x[:, :, 20:, 20:]


#: What the methods say about ``EmptyBranch``'s layer ``act`` at 32 x 32.
EMPTY_ACT = (r"layer 'act' has an empty feature map \(8, 0, 0\) at this input size \(32x32\): pick an earlier "
             r"layer or a larger input")


def empty_branch() -> nn.Module:
    torch.manual_seed(0)
    return EmptyBranch().eval()


def test_empty_feature_maps_are_flagged_and_refused_naming_the_input_size():
    from cnnwidgets.core.layers import check_map_not_empty

    layers = discover_layers(empty_branch(), torch.zeros(1, 3, 32, 32))
    act = layers["act"]
    assert act.output_shape == act.map_shape == (8, 0, 0)  # the shape as it is, flagged below
    assert act.empty_map and layers["crop"].empty_map
    assert not layers["pool"].empty_map and not layers["fc"].empty_map
    with pytest.raises(ValueError, match=EMPTY_ACT):
        check_map_not_empty(act, (3, 32, 32))
    assert check_map_not_empty(layers["pool"], (3, 32, 32)) is layers["pool"]
    assert not discover_layers(empty_branch(), torch.zeros(1, 3, 64, 64))["act"].empty_map  # 12 x 12 there


def test_feature_comparisons_refuse_an_empty_feature_map():
    from cnnwidgets.methods import correspondence, invariance_curves

    model, x = empty_branch(), torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match=EMPTY_ACT):
        invariance_curves(model, x, [0, 1], layers=["act"], progress=False)
    with pytest.raises(ValueError, match=EMPTY_ACT):
        correspondence(model, x, {"eye": [(0, 0, 8, 8), (0, 0, 8, 8)]}, layers=["act"])  # was NaN, silently
    assert invariance_curves(model, x, [0, 1], layers=["pool"], progress=False).layers == ["pool"]


# ---------------------------------------------------------------- names of wrapped models
def test_a_wrappers_prefix_in_a_layer_name_is_named_with_the_inner_name():
    from cnnwidgets.core.layers import unknown_layer_error
    from cnnwidgets.methods import grad_cam

    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(KeyError, match="layer names are those of the wrapped model: use 'pool'"):
        grad_cam(nn.DataParallel(empty_branch()), x, 0, "module.pool")
    with Probe(torch.compile(empty_branch()), device="cpu") as probe:
        with pytest.raises(KeyError, match=r"unknown layer '_orig_mod.conv': .* torch.compile .* use 'conv'"):
            probe.check_layer("_orig_mod.conv")
    # no hint when the rest is no layer, or when the model's own layers carry the prefix
    assert "Did you mean" in str(unknown_layer_error("module.convv", ["conv", "relu"]))
    assert "wrapped" not in str(unknown_layer_error("module.convv", ["conv", "relu"]))
    assert "wrapped" not in str(unknown_layer_error("module.3", ["module", "module.0", "3"]))


class _ChannelsLastBlock(nn.Module):
    """A ConvNeXt block written with tensor methods: a depthwise 7x7 convolution, then per position
    (channels last) a LayerNorm and an MLP, a layer scale, and the residual sum."""

    def __init__(self, channels: int = 4) -> None:
        super().__init__()
        self.dw = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.up, self.down = nn.Linear(channels, 4 * channels), nn.Linear(4 * channels, channels)
        self.scale = nn.Parameter(torch.full((channels, 1, 1), 0.1))

    def forward(self, x):
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.down(F.gelu(self.up(self.norm(y))))
        return x + self.scale * y.permute(0, 3, 1, 2)


def test_channels_last_maps_keep_their_positions_through_permutes_norms_and_linear_layers():
    model = nn.Sequential(nn.Conv2d(3, 4, 2, stride=2), _ChannelsLastBlock(), nn.Conv2d(4, 4, 3, padding=1))
    geo = geometry(model, size=32)
    block = (2 + 6 * 2, 2, 0.5)  # the stem's 2x2 stride-2 windows, then 7x7 on that grid
    for name in ("1.dw", "1.norm", "1.up", "1.down", "1"):
        assert geo[name] == block, name
    assert geo["2"] == (block[0] + 2 * 2, 2, 0.5)  # the next convolution builds on the block's geometry
    # torchvision's ConvNeXt: stage outputs have receptive fields again (the stem alone: 4x4 stride 4)
    geo = geometry(torchvision.models.convnext_tiny(weights=None), size=64)
    assert geo["features.0"] == (4, 4, 1.5)
    assert geo["features.1.0.block.3"] == (28, 4, 1.5)  # the first Linear, channels last
    assert geo["features.1"] == (4 + 3 * 6 * 4, 4, 1.5)
    r, j, _ = geo["features"]
    assert r is not None and r > 1000 and j == 32


def test_permutes_that_move_positions_otherwise_lose_them():
    class Moves(nn.Module):
        def __init__(self, order: tuple[int, ...]) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.order = order
            self.norm = nn.LayerNorm(4)

        def forward(self, x):
            return self.norm(self.conv(x).permute(0, 2, 3, 1).permute(*self.order))

    assert geometry(Moves((0, 1, 2, 3)))["norm"] == (3, 1, 0.0)  # no move at all
    assert geometry(Moves((0, 2, 1, 3)))["norm"] == (None, None, None)  # rows and columns swapped
    # a Linear over the positions of a channels-last map (its width is not last) mixes them
    layer = nn.Linear(16, 16)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), torchvision.ops.misc.Permute([0, 2, 3, 1]),
                          torchvision.ops.misc.Permute([0, 3, 1, 2]), layer)
    assert geometry(model)["3"] == (None, None, None)


def test_a_channels_last_gate_broadcast_over_the_positions_keeps_the_geometry():
    class Gate(nn.Module):  # a squeeze-excitation gate written channels last, as ConvNeXt V2's GRN
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.lin = nn.Linear(4, 4)
            self.after = nn.LayerNorm(4)

        def forward(self, x):
            y = self.lin(self.conv(x).permute(0, 2, 3, 1))
            y = y * torch.sigmoid(y.mean((1, 2), keepdim=True))  # (N, 1, 1, C) over (N, H, W, C)
            return self.after(y).permute(0, 3, 1, 2)

    assert geometry(Gate())["after"] == (3, 1, 0.0)
