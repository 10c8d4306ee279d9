"""The explorer's first layer (``default_layer``) for models whose blocks concatenate their maps
(DenseNet), and the same choice as before for the other architectures."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnwidgets.app import explorer
from cnnwidgets.app.explorer import _joining_blocks, default_layer
from cnnwidgets.core.layers import discover_layers

torchvision = pytest.importorskip("torchvision")


def layers_of(model: nn.Module, size: int = 224):
    return discover_layers(model.eval(), torch.zeros(1, 3, size, size))


def test_densenet_opens_on_a_transition_not_on_a_dense_layers_new_channels():
    layers = layers_of(torchvision.models.densenet121(weights=None))
    assert _joining_blocks(layers) == {f"features.denseblock{i}" for i in range(1, 5)}
    chosen = default_layer(layers)
    # before: features.denseblock3.denselayer11.conv2, the 32 channels one dense layer adds
    assert chosen == "features.transition1.conv"
    assert layers[chosen].map_shape == (128, 56, 56)
    assert ".denselayer" not in chosen


@pytest.mark.parametrize("size", [64, 160])
def test_densenet_at_other_input_sizes_opens_on_the_same_transition(size):
    layers = layers_of(torchvision.models.densenet121(weights=None), size)
    assert default_layer(layers) == "features.transition1.conv"


# what each model opened on before blocks that concatenate were counted as one layer
UNCHANGED = {
    "resnet18": "layer2.1.conv2",
    "resnet50": "layer2.3.conv2",
    "alexnet": "features.3",
    "vgg11": "features.3",
    "googlenet": "inception4c.branch2.0.conv",
    "squeezenet1_0": "features.8.squeeze",
    "mobilenet_v2": "features.9.conv.2",
    "shufflenet_v2_x1_0": "stage3.3.branch2.5",
    "efficientnet_b0": "features.4.2.block.3.0",
}


@pytest.mark.parametrize("name", sorted(UNCHANGED))
def test_other_architectures_keep_their_first_layer(name, monkeypatch):
    options = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
    layers = layers_of(getattr(torchvision.models, name)(weights=None, **options))
    # parallel branches joined without the block's input (Inception, SqueezeNet's fire modules,
    # ShuffleNet's split) and residual blocks are not concatenating blocks
    assert _joining_blocks(layers) == set()
    assert default_layer(layers) == UNCHANGED[name]
    # the rule without concatenating blocks (as it was before them) chooses the same
    monkeypatch.setattr(explorer, "_joining_blocks", lambda layers: set())
    assert default_layer(layers) == UNCHANGED[name]


def test_tinyvgg_and_the_embedded_model_keep_their_first_layer():
    from cnnwidgets.zoo import TinyVGG, load_default

    assert default_layer(layers_of(TinyVGG(), 64)) == "conv_2_1"
    bundle = load_default()
    assert default_layer(layers_of(bundle.model, 224)) == "features.conv3"


class Dense(nn.Module):
    """A block that concatenates its input with what each of its layers adds."""

    def __init__(self, width: int, growth: int, count: int) -> None:
        super().__init__()
        self.parts = nn.ModuleList(nn.Conv2d(width + k * growth, growth, 3, padding=1) for k in range(count))

    def forward(self, x):
        for part in self.parts:
            x = torch.cat([x, part(x)], 1)
        return x


class DenseParts(nn.Module):
    """The same, with the layers as the block's own attributes (as torchvision's dense blocks)."""

    def __init__(self, width: int, growth: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(width, growth, 3, padding=1)
        self.b = nn.Conv2d(width + growth, growth, 3, padding=1)

    def forward(self, x):
        x = torch.cat([x, self.a(x)], 1)
        return torch.cat([x, self.b(x)], 1)


class Branches(nn.Module):
    """Parallel branches joined without the input (Inception): each branch is a layer of its own."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.one = nn.Conv2d(width, 16, 1)
        self.three = nn.Conv2d(width, 16, 3, padding=1)

    def forward(self, x):
        return torch.cat([self.one(x), self.three(x)], 1)


def test_a_concatenating_block_counts_as_one_layer_in_place_of_its_convolutions():
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), DenseParts(16, 8), nn.Conv2d(32, 64, 1),
                          nn.MaxPool2d(2), DenseParts(64, 8), nn.Conv2d(80, 96, 1))
    layers = layers_of(model, 16)
    assert _joining_blocks(layers) == {"1", "4"}
    # candidates 0, 1, 2, 4, 5: the middle is "2"; the convolutions 1.a, 1.b (8 channels each)
    # would have made "1.b" the middle and the choice
    assert default_layer(layers) == "2"
    wide = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), DenseParts(16, 8), DenseParts(32, 8))
    assert default_layer(layers_of(wide, 16)) == "1"  # the middle of 0, 1, 2: a block itself


def test_a_module_list_inside_the_block_is_its_part_too_and_branches_are_not_joined():
    dense = layers_of(nn.Sequential(nn.Conv2d(3, 8, 1), Dense(8, 4, 3), nn.Conv2d(20, 8, 1)), 12)
    # the ModuleList never runs itself: its parts, one level down, are the block's
    assert _joining_blocks(dense) == {"1"}
    assert default_layer(dense) == "1"  # the middle of 0, 1, 2 (not 1.parts.0, of 4 channels)
    branches = layers_of(nn.Sequential(nn.Conv2d(3, 8, 1), Branches(8), nn.Conv2d(32, 8, 1)), 12)
    assert _joining_blocks(branches) == set()
    assert default_layer(branches) == "1.three"  # the middle of 0, 1.one, 1.three, 2, as before
